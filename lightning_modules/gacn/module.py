"""GACN LightningModule (Ma et al., "End-to-end learning for simultaneously generating decision
map and multi-focus image fusion result", Neurocomputing 470, 2022).

Inference: gray sources (``gray_map`` colour policy: the map is computed on gray and applied to
every RGB channel, Sec. 4.2) -> :class:`~lightning_modules.gacn.network.GACNNet` -> final decision
maps; N >= 3 sources with ``model.multi_strategy`` = ``calibration`` (Sec. 3.3, Eq. 19) or
``serial`` (:mod:`lightning_modules.gacn.multi`). No post-processing (Sec. 3.1.2).

Training (Sec. 4.2): pairs with a ground-truth decision map ``mask``; loss Dice + lambda (1 - Q_G)
(Eq. 6) or the Fig. 9 alternatives (:mod:`lightning_modules.gacn.loss`).

Where we differ from the paper or the released code (and why):

* gray conversion uses the project's MATLAB rgb2gray weights (``gray_map`` policy), the release
  skimage's (0.2125, 0.7154, 0.0721): one convention for every method; maps on colour images can
  differ from the release at a few boundary pixels.
* SF (Eqs. 1-3) as released: raw window sums of squared *backward* differences (Eqs. 1-2), no
  square root / ``1/(2r+1)^2`` of Eq. 3 - the released weights expect that scale.
* the Q_G loss is the project's single Q^AB/F (:func:`mfif.metrics.gradient.q_abf`): Eq. 11 as
  printed (``1 - |a_A - a_F| 2/pi``; the released loss used ``||a_A - a_F| - pi/2| 2/pi``), the
  toolbox's 1e-5 guards as floors (``qg_loss``: an exact-zero guard lets the backward pass overflow
  to NaN on near-flat fused images; the released loss adds 1e-6 to F's x-derivative instead),
  k = 1000 from Eq. 12 (released default 1e5).
* Eq. 19 divides by ``p^j + 1e-4`` (released); for N = 2 the soft pairwise map is returned by
  both strategies (the argmax of a two-source volume would only drop the guided-filter boundary).
* EG and ST (Fig. 9) are our formulations of [21] and [19] (see ``loss.py``); Dice sums over the
  whole batch and BatchNorm sees each source as its own batch in training, as released.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import DictConfig
from torch import Tensor

from lightning_modules.base import FusionModule, FusionOutput
from lightning_modules.gacn.loss import IMAGE_LOSSES, MAP_LOSSES, GACNLoss
from lightning_modules.gacn.multi import STRATEGIES, fuse_maps
from lightning_modules.gacn.network import GACNNet, fuse_pair
from mfif.config import ModelConfig
from mfif.ops.colour import to_working_space
from mfif.registry import register_method


@dataclass
class GACNConfig(ModelConfig):
    """Every GACN hyper-parameter with the paper's (or the released code's) default."""

    growth: int = 16  # Sec. 3.1.1 / released: 16 channels per dense layer, 4 layers -> 64
    cse_reduction: int = 8  # released: CSELayer(16, 8)
    sse_kernel: int = 7  # Sec. 3.1.2: k_s = 7
    sf_radius: int = 5  # Sec. 3.1.1, Eqs. 1-3: r = 5
    sharpness: float = 1000.0  # Eq. 4: k = 1000 (also the SF-difference sigmoid, released)
    blur_sigma: float = 8.0  # released: GaussBlur(sigma 8, radius 4) finds the boundary band
    blur_kernel: int = 9  # released: 9 x 9 kernel
    band_low: float = 0.1  # Sec. 3.1.2: boundary region = blurred map in [0.1, 0.8]
    band_high: float = 0.8
    gf_radius: int = 3  # released: GuidedFilter(3, 0.1) (Sec. 3.1.2 cites [22], no values)
    gf_eps: float = 0.1
    refine: bool = True  # Sec. 3.1.2 boundary-guided filter (false: final map = initial map)
    box_method: str = "conv"  # box sums of SF/guided filter: conv | cumsum (same values)
    # Loss (Sec. 3.2, Eq. 6) and the Fig. 9 study (Sec. 4.5.1).
    map_loss: str = "dice"  # dice (Eq. 7) | focal [54] | bce (balanced, [55])
    image_loss: str = "qg"  # qg (Eqs. 8-18) | eg [21] | st [19] | none
    image_loss_weight: Optional[float] = None  # lambda; null = paper: 1 for qg (Eq. 6), 1e-4 for eg/st (Sec. 4.5.1)
    qg_k: float = 1000.0  # Eq. 12: k = 1000 (released GALoss default: 1e5)
    orientation: str = "abs"  # Table 2: abs (Eq. 11) | smooth (Eq. 14)
    focal_alpha: float = 0.25  # focal loss [54] defaults
    focal_gamma: float = 2.0
    # N >= 3 sources (Sec. 3.3): calibration (Eq. 19) | serial (one by one).
    multi_strategy: str = "calibration"
    calibration_eps: float = 1e-4  # released: denominator guard of Eq. 19


def build_network(m: DictConfig | GACNConfig) -> GACNNet:
    """The GACN network of a model config."""
    if m.box_method not in ("conv", "cumsum"):
        raise ValueError(f"model.box_method must be 'conv' or 'cumsum', got '{m.box_method}'")
    return GACNNet(
        growth=m.growth, cse_reduction=m.cse_reduction, sse_kernel=m.sse_kernel, sf_radius=m.sf_radius,
        sharpness=m.sharpness, blur_sigma=m.blur_sigma, blur_kernel=m.blur_kernel, band_low=m.band_low,
        band_high=m.band_high, gf_radius=m.gf_radius, gf_eps=m.gf_eps, refine=m.refine, box_method=m.box_method,
    )


@register_method("gacn", GACNConfig)
class GACN(FusionModule):
    """GACN: decision maps from SF activity of Siamese dense features, boundary-guided filter, Eq. 5."""

    colour_policy = "gray_map"  # Sec. 4.2: map from the gray images, applied to RGB
    pad_multiple = 1  # fully convolutional, no pooling (Sec. 3.1.1)

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        m = self.cfg.model  # cfg may be a checkpoint's dict (load_from_checkpoint)
        if m.multi_strategy not in STRATEGIES:
            raise ValueError(f"model.multi_strategy must be one of {STRATEGIES}, got '{m.multi_strategy}'")
        if m.map_loss not in MAP_LOSSES or m.image_loss not in IMAGE_LOSSES:
            raise ValueError(f"model.map_loss must be in {MAP_LOSSES} and model.image_loss in {IMAGE_LOSSES}, "
                             f"got '{m.map_loss}', '{m.image_loss}'")
        self.net = build_network(m)
        self.criterion = GACNLoss(m)  # GACNConfig is the one source of the loss hyper-parameters

    # ------------------------------------------------------------------ inference
    def fuse_working(self, sources: Tensor) -> FusionOutput:
        """Maps for gray sources ``[B, N, 1, H, W]`` (N = 2: the pairwise final map ``[p, 1 - p]``).

        In eval mode this is pure inference (``torch.inference_mode``: no autograd graph, the
        network's in-place fast paths); in training mode the graph is kept.

        Returns the gray fusion ``sum_n maps_n * sources_n`` and ``maps`` ``[B, N, 1, H, W]``.
        """
        with torch.inference_mode(not self.training):
            maps = fuse_maps(self.net, sources, self.cfg.model.multi_strategy)
            return FusionOutput((maps * sources).sum(1), maps, None)

    def load_official_weights(self, path: str) -> None:
        """Load ``gacn_official.pkl`` (strict keys after renaming, see :mod:`.official`)."""
        from lightning_modules.gacn.official import load_official

        load_official(self.net, path)

    # ------------------------------------------------------------------ training
    def _loss(self, batch: dict) -> dict[str, Tensor]:
        sources = batch["sources"]
        if sources.dim() != 5 or sources.shape[1] != 2:
            raise ValueError(f"GACN trains on pairs: batch['sources'] must be [B, 2, C, H, W], got {tuple(sources.shape)}")
        if "mask" not in batch:
            raise ValueError("GACN training needs batch['mask'] (ground-truth decision map, Sec. 3.2 Eq. 7)")
        gray = to_working_space(sources, self.colour_policy)
        a, b = gray[:, 0], gray[:, 1]
        d = self.net(a, b)
        fused = fuse_pair(d.final, a, b)  # Eq. 5 with the final map (released GALoss)
        gt = batch.get("gt")
        gt = to_working_space(gt.unsqueeze(1), self.colour_policy)[:, 0] if gt is not None else None
        return self.criterion(d.logits, d.initial, fused, gray, batch["mask"], gt)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        parts = self._loss(batch)
        bs = batch["sources"].shape[0]
        self.log("train/loss", parts["loss"], prog_bar=True, batch_size=bs)
        self.log("train/loss_map", parts["map"], batch_size=bs)
        self.log("train/loss_image", parts["image"], batch_size=bs)
        return parts["loss"]

    def validation_loss(self, batch: dict) -> Optional[Tensor]:
        """The training loss on a validation batch (released code keeps the best-val-loss model)."""
        if "mask" not in batch:
            return None
        return self._loss(batch)["loss"]
