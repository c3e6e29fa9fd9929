"""MSASN training loss (our choice: the paper does not state one).

The paper trains on VOC2012 images blurred three times with Gaussian filters, and its training
set holds "ground truths and masks" (Sec. 4.1.1, Fig. 6); it also says the GCB learns "by
minimizing the loss function between the predicted image and the ground truth image. Commonly
used loss functions include MSE loss and SSIM loss" (Sec. 3.3). We therefore use both targets:

* **map loss** on the soft decision map ``d = sigmoid(z)`` against the generator's focus mask
  (1 where source 0 is sharp): binary cross-entropy on the logits (default; the map is a
  per-pixel two-class decision that Eq. 8 thresholds at 0.5, and BCE is calibrated for that
  threshold), soft Dice (overlap-based, insensitive to class imbalance), or their sum;
* **image loss** on the map-fused image ``F = d * A + (1 - d) * C`` (Eq. 10 with the soft map,
  so it is differentiable) against the all-in-focus ground truth: L1 (robust pixel fidelity),
  ``1 - SSIM`` (structure, as named in Sec. 3.3; kornia's 11x11 Gaussian window), or their sum
  (default). It weights the map errors by how much they cost in the image: a wrong decision on a
  flat region, where both sources agree, costs nothing.

Total: ``map_weight * L_map + image_weight * L_image``. Either part may be "none".
"""
from __future__ import annotations

import kornia.metrics
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mfif.ops.decision import fuse_with_maps

MAP_LOSSES = ("bce", "dice", "bce_dice", "none")
IMAGE_LOSSES = ("l1", "ssim", "l1_ssim", "none")


def soft_dice_loss(prob: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """``1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s)`` per sample, averaged over the batch.

    Shape:
        - prob, target: :math:`(B, 1, H, W)` in [0, 1]
        - output: scalar
    """
    inter = (prob * target).flatten(1).sum(1)
    total = prob.flatten(1).sum(1) + target.flatten(1).sum(1)
    return (1 - (2 * inter + smooth) / (total + smooth)).mean()


def decision_map_loss(logits: Tensor, mask: Tensor, kind: str = "bce") -> Tensor:
    """Map loss of the decision logits against the focus mask (see the module docstring).

    Shape:
        - logits, mask: :math:`(B, 1, H, W)`, mask in {0, 1}
        - output: scalar
    """
    if kind not in MAP_LOSSES:
        raise ValueError(f"model.map_loss must be one of {MAP_LOSSES}, got '{kind}'")
    if logits.shape != mask.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must match the decision map {tuple(logits.shape)}")
    zero = logits.sum() * 0
    bce = F.binary_cross_entropy_with_logits(logits, mask) if kind in ("bce", "bce_dice") else zero
    dice = soft_dice_loss(torch.sigmoid(logits), mask) if kind in ("dice", "bce_dice") else zero
    return bce + dice


def fused_image_loss(fused: Tensor, gt: Tensor, kind: str = "l1_ssim", ssim_window: int = 11) -> Tensor:
    """Image loss of the fused image against the ground truth (see the module docstring).

    Shape:
        - fused, gt: :math:`(B, C, H, W)` in [0, 1]
        - output: scalar
    """
    if kind not in IMAGE_LOSSES:
        raise ValueError(f"model.image_loss must be one of {IMAGE_LOSSES}, got '{kind}'")
    if fused.shape != gt.shape:
        raise ValueError(f"gt {tuple(gt.shape)} must match the fused image {tuple(fused.shape)}")
    zero = fused.sum() * 0
    l1 = F.l1_loss(fused, gt) if kind in ("l1", "l1_ssim") else zero
    dssim = (1 - kornia.metrics.ssim(fused, gt, ssim_window).mean()) if kind in ("ssim", "l1_ssim") else zero
    return l1 + dssim


class MSASNLoss(nn.Module):
    """``map_weight * L_map(d, mask) + image_weight * L_image(d * A + (1 - d) * C, gt)``.

    Args:
        map_loss: "bce" | "dice" | "bce_dice" | "none".
        image_loss: "l1" | "ssim" | "l1_ssim" | "none".
        map_weight, image_weight: weights of the two parts.
        ssim_window: SSIM Gaussian window size.

    Shape:
        - logits: :math:`(B, 1, H, W)`; sources: :math:`(B, 2, C, H, W)`;
          gt: :math:`(B, C, H, W)` or None; mask: :math:`(B, 1, H, W)` or None
        - output: (scalar total, dict of the parts)
    """

    def __init__(self, map_loss: str = "bce", image_loss: str = "l1_ssim", map_weight: float = 1.0,
                 image_weight: float = 1.0, ssim_window: int = 11):
        super().__init__()
        if map_loss not in MAP_LOSSES:
            raise ValueError(f"model.map_loss must be one of {MAP_LOSSES}, got '{map_loss}'")
        if image_loss not in IMAGE_LOSSES:
            raise ValueError(f"model.image_loss must be one of {IMAGE_LOSSES}, got '{image_loss}'")
        if map_loss == "none" and image_loss == "none":
            raise ValueError("model.map_loss and model.image_loss cannot both be 'none'")
        self.map_loss, self.image_loss = map_loss, image_loss
        self.map_weight, self.image_weight = float(map_weight), float(image_weight)
        self.ssim_window = int(ssim_window)

    def forward(self, logits: Tensor, sources: Tensor, gt: Tensor | None = None,
                mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        parts: dict[str, Tensor] = {}
        total = logits.sum() * 0
        if self.map_loss != "none":
            if mask is None:
                raise ValueError(f"model.map_loss='{self.map_loss}' needs batch['mask']; set model.map_loss=none")
            parts["map"] = decision_map_loss(logits, mask.to(logits.dtype), self.map_loss)
            total = total + self.map_weight * parts["map"]
        if self.image_loss != "none":
            if gt is None:
                raise ValueError(f"model.image_loss='{self.image_loss}' needs batch['gt']; set model.image_loss=none")
            d = torch.sigmoid(logits)
            fused = fuse_with_maps(sources, torch.stack([d, 1 - d], 1))  # Eq. 10 with the soft map
            parts["image"] = fused_image_loss(fused, gt, self.image_loss, self.ssim_window)
            total = total + self.image_weight * parts["image"]
        return total, parts
