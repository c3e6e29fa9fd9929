"""UFA-Fuse LightningModule (Zang et al., "UFA-FUSE: a novel deep supervised and hybrid model
for multi-focus image fusion"): end-to-end supervised fusion with unity fusion attention.

Network: :mod:`lightning_modules.ufafuse.network`; loss (Eq. 1): :mod:`.loss`; released
weights: :mod:`.official` (``weights=weights/ufa_official.pth
model.official_quirk=true`` reproduces the authors' outputs). Config:
``experiments/configs/ufafuse.yaml``; ablations: ``ablations/ufafuse/``.

Colour: policy ``"rgb"`` - the network always sees 3 channels. Single-channel sources are
replicated to RGB and the fused RGB output is averaged back to one channel, so gray image
pairs work without retraining.

Infrared-visible (Table VI) and medical CT/MR (Table VII) fusion - no data ships here; point
the benchmark loader at your folder of aligned pairs and read them as gray::

    python experiments/run.py --config ufafuse.yaml mode=test \\
        weights=/path/ufa_official.pth model.official_quirk=true \\
        data.benchmark=/path/TNO data.gray=true metrics=[avg,std,viff,q_g]

(``mode=predict out=DIR`` writes the fused images). The folder uses any convention of the
benchmark loader, e.g. ``<scene>_1.png``/``<scene>_2.png``, ``<scene>-A``/``<scene>-B``, one
sub-folder per scene, or ``source_1/``, ``source_2/`` sub-folders with matching names; put the
infrared (resp. CT) image as source 1 and the visible (resp. MR) image as source 2 to follow
the paper's figure order. Use ``data.gray=true`` for TNO/CT/MR, which are single-channel;
pseudo-colour PET/SPECT can be read as RGB (``data.gray=false``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from omegaconf import DictConfig
from torch import Tensor

from lightning_modules.base import FusionModule, FusionOutput, check_sources
from lightning_modules.ufafuse.loss import UFALoss
from lightning_modules.ufafuse.network import ATTENTION_MODES, UFAFuseNet
from lightning_modules.ufafuse.official import load_official_into
from mfif.config import ModelConfig
from mfif.ops.colour import to_working_space
from mfif.registry import register_method

INITS = ("xavier_normal", "default")


@dataclass
class UFAFuseConfig(ModelConfig):
    """UFA-Fuse model and loss hyper-parameters (defaults = the paper / official code)."""

    features: int = 64  # Table II: 64 channels everywhere (the released weights need 64)
    negative_slope: float = 0.01  # LeakyReLU slope (Table II "LeakyRelu"; 0.01 in the official code)
    spatial_kernel: int = 7  # Eq. 9: f^{7x7}
    attention: str = "ufa"  # Table IV rows: ufa | no_sa | no_ca | none (NO-UFA)
    official_quirk: bool = False  # True: official spatial softmax bug, for parity with released weights
    loss_lambda: float = 0.2  # Eq. 1, Sec. III-A: L = lambda*L1 + (1-lambda)*L_SSIM; Table III sweeps it
    ssim_window: int = 11  # SSIM Gaussian window (sigma 1.5), official training code
    init: str = "xavier_normal"  # official train.py: Xavier-normal conv weights | default (PyTorch)


@register_method("ufafuse", UFAFuseConfig)
class UFAFuseModule(FusionModule):
    """UFA-Fuse: K >= 2 RGB (or gray) sources -> fused image, trained with Eq. 1 against GT."""

    colour_policy = "rgb"
    pad_multiple = 1  # fully convolutional, stride 1

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        m = self.cfg.model  # cfg may be a checkpoint's dict (load_from_checkpoint)
        if m.attention not in ATTENTION_MODES:
            raise ValueError(f"model.attention must be one of {ATTENTION_MODES}, got '{m.attention}'")
        if m.init not in INITS:
            raise ValueError(f"model.init must be one of {INITS}, got '{m.init}'")
        self.net = UFAFuseNet(
            in_channels=3, features=m.features, negative_slope=m.negative_slope,
            spatial_kernel=m.spatial_kernel, attention=m.attention, official_quirk=m.official_quirk,
        )
        if m.init == "xavier_normal":
            self.net.reset_parameters_xavier()
        self.criterion = UFALoss(m.loss_lambda, m.ssim_window)

    # ------------------------------------------------------------------ inference
    def fuse_working(self, sources: Tensor) -> FusionOutput:
        fused, weights = self.net(sources, return_attention=True)
        extras = {f"{name}_attention": w for name, w in weights.items()}  # Fig. 3 visualisation
        return FusionOutput(fused, None, extras)

    def load_official_weights(self, path: str) -> None:
        """Load ``ufa_official.pth`` (strict). Outputs match the authors' only with the quirk on."""
        load_official_into(self.net, path)
        if not self.net.sc4.official_quirk:
            warnings.warn("UFA-Fuse official weights were trained with the official spatial-softmax "
                          "quirk; set model.official_quirk=true to reproduce the authors' outputs")

    # ------------------------------------------------------------------ training
    def compute_loss(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 1 between the fused working-space output and the ground truth (RGB-replicated)."""
        if batch.get("gt") is None:
            raise ValueError("UFA-Fuse is supervised (Eq. 1): the batch needs 'gt' [B, C, H, W]; "
                             "use a data.name that provides ground truth (e.g. mean_filter_duts)")
        sources = batch["sources"]
        check_sources(sources)
        pred = self.net(to_working_space(sources, self.colour_policy))
        gt = to_working_space(batch["gt"].unsqueeze(1), self.colour_policy).squeeze(1)
        return self.criterion(pred, gt)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, parts = self.compute_loss(batch)
        bs = batch["sources"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log_dict({f"train/{k}": v for k, v in parts.items()}, batch_size=bs)
        return loss

    def validation_loss(self, batch: dict):
        return self.compute_loss(batch)[0] if batch.get("gt") is not None else None
