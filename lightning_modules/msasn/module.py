"""MSASN LightningModule (Zhai et al., "Multi-focus image fusion via multi-scale attention and Siamese networks").

Inference (Sec. 3.5): gray sources -> :class:`~lightning_modules.msasn.network.MSASNNet` ->
decision logits -> binarisation (Eq. 8) -> small-area filter (Eq. 9) -> maps ``[D, 1 - D]``,
which the ``gray_map`` colour policy applies to every channel of the original sources (Eq. 10).

N > 2 sources (Sec. 4.3.2 fuses three Lytro images without saying how): pairwise sequential
fusion, ``F_1 = fuse(S_0, S_1)``, ``F_k = fuse(F_{k-1}, S_k)``, each step post-processed; the
per-source maps are the products of the step maps (:func:`mfif.ops.decision.compose_sequential_maps`),
binary and summing to 1. Training uses pairs (N = 2).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import torch
from omegaconf import DictConfig
from torch import Tensor

from lightning_modules.base import FusionModule, FusionOutput
from lightning_modules.msasn.loss import MSASNLoss
from lightning_modules.msasn.network import VARIANTS, MSASNNet
from mfif.config import ModelConfig
from mfif.ops.colour import to_working_space
from mfif.ops.decision import binarise, compose_sequential_maps, small_area_filter
from mfif.registry import register_method


@dataclass
class MSASNConfig(ModelConfig):
    """Model, post-processing and loss hyper-parameters of MSASN."""

    # Table 7 row: baseline | dca | dca_siamese | dca_residual_dfeb | full (Sec. 4.4.2);
    # Fig. 15 (a)-(c): no_dca | no_siamese | no_dfeb (full minus one part; (d) = dca_residual_dfeb).
    variant: str = "full"
    width: int = 32  # first-stage encoder width per branch (not in the paper; ours)
    window_size: int = 16  # LAM window in input pixels: our reading of Table 6's "window size" (best 16x16)
    gcb_width: int = 64  # GCB = DnCNN [64]: 64 feature maps
    gcb_depth: int = 17  # Sec. 3.3: 17 conv layers, 3x3, padding 1
    gcb_residual: bool = True  # DnCNN residual learning, clean = x - noise (ours; see network.py)
    dca_rates: List[int] = field(default_factory=lambda: [1, 2, 4])  # Sec. 3.2: dilation rates 1, 2, 4
    attention_reduction: int = 16  # CBAM [57] reduction ratio r of the LAM/DCA MLPs
    cga_hidden: int = 16  # Sec. 3.4: W_c bottleneck "reduced to a constant value of 16"
    threshold: float = 0.5  # Eq. 8 (Sec. 3.5.1); Table 8 sweeps 0, 0.25, 0.5, 0.75, 1
    area_ratio: float = 0.01  # Eq. 9 (Sec. 3.5.2): regions < 0.01 * H * W are flipped
    connectivity: int = 8  # connected regions of Eq. 9: 8 (kornia) or 4 (scikit-image)
    # Loss: not in the paper (see loss.py for the reasoning).
    map_loss: str = "bce"  # bce | dice | bce_dice | none, decision map vs batch["mask"]
    image_loss: str = "l1_ssim"  # l1 | ssim | l1_ssim | none, soft-map fused image vs batch["gt"]
    map_loss_weight: float = 1.0
    image_loss_weight: float = 1.0
    ssim_window: int = 11
    gcb_loss: str = "mse"  # Sec. 3.3: GCB output vs ground truth, "MSE loss and SSIM loss" | ssim | mse_ssim | none
    gcb_loss_weight: float = 1.0  # not in the paper (ours)
    gcb_pretrain_epochs: int = 0  # Sec. 3.3 "the trained GCB": >0 trains only the GCB objective for these first epochs


def build_network(m: DictConfig | MSASNConfig) -> MSASNNet:
    """The decision-map network of a model config (``variant`` picks the Table 7 components)."""
    if m.variant not in VARIANTS:
        raise ValueError(f"model.variant must be one of {sorted(VARIANTS)}, got '{m.variant}'")
    if m.window_size < 1:
        raise ValueError(f"model.window_size must be >= 1, got {m.window_size}")
    return MSASNNet(
        comp=VARIANTS[m.variant], width=m.width, window=m.window_size, gcb_width=m.gcb_width,
        gcb_depth=m.gcb_depth, gcb_residual=m.gcb_residual, dca_rates=tuple(m.dca_rates),
        reduction=m.attention_reduction, cga_hidden=m.cga_hidden, in_channels=1,
    )


@register_method("msasn", MSASNConfig)
class MSASN(FusionModule):
    """MSASN: decision maps from a Siamese attention network, hard maps by Eqs. 8-9, fusion by Eq. 10."""

    colour_policy = "gray_map"  # Sec. 3.5.3: one map, applied to R, G and B independently
    # No padding: the decoder upsamples to the exact skip sizes, and Eq. 9's area threshold must
    # see the true H x W (padded borders would enlarge border regions).
    pad_multiple = 1

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        m = self.cfg.model  # cfg may be a checkpoint's dict (load_from_checkpoint)
        self.net = build_network(m)
        if m.connectivity not in (4, 8):
            raise ValueError(f"model.connectivity must be 4 or 8, got {m.connectivity}")
        for key in ("threshold", "area_ratio"):
            if not 0.0 <= float(m[key]) <= 1.0:
                raise ValueError(f"model.{key} must lie in [0, 1], got {m[key]}")
        self.criterion = MSASNLoss(m)  # MSASNConfig is the one source of the loss hyper-parameters

    # ------------------------------------------------------------------ inference
    def fuse_working(self, sources: Tensor) -> FusionOutput:
        """Sequential pairwise fusion of gray sources ``[B, N, 1, H, W]`` (see the module docstring).

        Returns maps ``[B, N, 1, H, W]`` (binary, summing to 1), the gray fused image, and
        extras ``soft`` (sigmoid maps) and ``binary`` (Eq. 8 maps before Eq. 9), ``[B, N-1, 1, H, W]``.
        """
        running = sources[:, 0]
        step_maps, soft, binary = [], [], []
        for k in range(1, sources.shape[1]):
            logits = self.net(running, sources[:, k])
            # Eq. 8 on the logits: exact all-one / all-zero maps at thresholds 0 / 1.
            b = binarise(logits, self.cfg.model.threshold, from_logits=True)
            d = small_area_filter(b, self.cfg.model.area_ratio, self.cfg.model.connectivity)  # Eq. 9
            soft.append(torch.sigmoid(logits))
            binary.append(b)
            step_maps.append(d)
            running = d * running + (1 - d) * sources[:, k]  # Eq. 10
        maps = compose_sequential_maps(step_maps)
        return FusionOutput(running, maps, {"soft": torch.stack(soft, 1), "binary": torch.stack(binary, 1)})

    # ------------------------------------------------------------------ training
    def _loss(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        sources = batch["sources"]
        if sources.dim() != 5 or sources.shape[1] != 2:
            raise ValueError(f"MSASN trains on pairs: batch['sources'] must be [B, 2, C, H, W], got {tuple(sources.shape)}")
        gray = to_working_space(sources, self.colour_policy)
        logits, clean = self.net(gray[:, 0], gray[:, 1], return_clean=True)
        gt = batch.get("gt")
        has_gcb = self.net.comp.gcb and self.cfg.model.gcb_loss != "none"
        clean_gt = to_working_space(gt.unsqueeze(1), self.colour_policy)[:, 0] if has_gcb and gt is not None else None
        clean = torch.stack(clean.chunk(2, 0), 1) if has_gcb else None  # [B, 2, 1, H, W], Sec. 3.3
        total, parts = self.criterion(logits, sources, gt, batch.get("mask"), clean, clean_gt)
        if has_gcb and self.training and self.current_epoch < int(self.cfg.model.gcb_pretrain_epochs):
            total = self.criterion.gcb_weight * parts["gcb"]  # GCB pre-training stage: its objective alone
        return total, parts

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, parts = self._loss(batch)
        bs = batch["sources"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for name, value in parts.items():
            self.log(f"train/loss_{name}", value, batch_size=bs)
        return loss

    def validation_loss(self, batch: dict) -> Optional[Tensor]:
        """Training loss on a validation batch: Sec. 4.1.3's early stopping monitors it."""
        return self._loss(batch)[0]
