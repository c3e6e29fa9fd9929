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

* **GCB loss** (Sec. 3.3, the one target the paper does state): the GCB "is trained using the
  multi-focus image sequence, learning the image reconstruction task by minimizing the loss
  function between the predicted image and the ground truth image. Commonly used loss functions
  include Mean Squared Error (MSE) loss and Structural Similarity (SSIM) loss". We add it as an
  auxiliary loss on the GCB output of *each* source against the gray ground truth: ``mse``
  (default), ``ssim`` (``1 - SSIM``), ``mse_ssim`` or ``none``. The paper does not say whether
  the GCB is pre-trained or trained jointly; the auxiliary form trains both at once (default),
  ``model.gcb_pretrain_epochs = N`` first trains the GCB objective alone for N epochs (module.py).

Total: ``map_weight * L_map + image_weight * L_image + gcb_weight * L_GCB``. Any part may be
"none" (not all three).
"""
from __future__ import annotations

import kornia.metrics
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mfif.ops.decision import fuse_with_maps

MAP_LOSSES = ("bce", "dice", "bce_dice", "none")
IMAGE_LOSSES = ("l1", "ssim", "l1_ssim", "none")
GCB_LOSSES = ("mse", "ssim", "mse_ssim", "none")


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


def gcb_loss(clean: Tensor, gt: Tensor, kind: str = "mse", ssim_window: int = 11) -> Tensor:
    """Sec. 3.3 GCB objective: reconstruction of the ground truth from every source.

    ``mse``: mean of ``(GCB(S_n) - GT)^2`` over the sources and pixels; ``ssim``: mean of
    ``1 - SSIM(GCB(S_n), GT)``; ``mse_ssim``: their sum.

    Shape:
        - clean: :math:`(B, N, C, H, W)`, the GCB outputs of the N sources
        - gt: :math:`(B, C, H, W)`
        - output: scalar
    """
    if kind not in GCB_LOSSES:
        raise ValueError(f"model.gcb_loss must be one of {GCB_LOSSES}, got '{kind}'")
    if clean.dim() != 5 or clean.shape[:1] + clean.shape[2:] != gt.shape:
        raise ValueError(f"GCB outputs {tuple(clean.shape)} must be [B, N, *gt.shape[1:]] for gt {tuple(gt.shape)}")
    target = gt.unsqueeze(1).expand_as(clean)
    zero = clean.sum() * 0
    mse = F.mse_loss(clean, target) if kind in ("mse", "mse_ssim") else zero
    flat = lambda t: t.flatten(0, 1)  # noqa: E731
    use_ssim = kind in ("ssim", "mse_ssim")
    dssim = (1 - kornia.metrics.ssim(flat(clean), flat(target), ssim_window).mean()) if use_ssim else zero
    return mse + dssim


class MSASNLoss(nn.Module):
    """``map_weight * L_map(d, mask) + image_weight * L_image(d * A + (1 - d) * C, gt) + gcb_weight * L_GCB``.

    Args:
        m: the model config (:class:`lightning_modules.msasn.module.MSASNConfig`, the one place that
            holds the defaults and their sources), read for ``map_loss`` ("bce" | "dice" | "bce_dice" |
            "none"), ``image_loss`` ("l1" | "ssim" | "l1_ssim" | "none"), ``map_loss_weight``,
            ``image_loss_weight``, ``ssim_window`` (SSIM Gaussian window), ``gcb_loss`` ("mse" | "ssim" |
            "mse_ssim" | "none", Sec. 3.3, :func:`gcb_loss`) and ``gcb_loss_weight``.

    Shape:
        - logits: :math:`(B, 1, H, W)`; sources: :math:`(B, 2, C, H, W)`;
          gt: :math:`(B, C, H, W)` or None; mask: :math:`(B, 1, H, W)` or None;
          clean: GCB outputs :math:`(B, 2, 1, H, W)` or None (no GCB); clean_gt: gray gt :math:`(B, 1, H, W)`
        - output: (scalar total, dict of the parts)
    """

    def __init__(self, m):
        super().__init__()
        map_loss, image_loss, gcb = m.map_loss, m.image_loss, m.gcb_loss
        if gcb not in GCB_LOSSES:
            raise ValueError(f"model.gcb_loss must be one of {GCB_LOSSES}, got '{gcb}'")
        self.gcb, self.gcb_weight = gcb, float(m.gcb_loss_weight)
        if map_loss not in MAP_LOSSES:
            raise ValueError(f"model.map_loss must be one of {MAP_LOSSES}, got '{map_loss}'")
        if image_loss not in IMAGE_LOSSES:
            raise ValueError(f"model.image_loss must be one of {IMAGE_LOSSES}, got '{image_loss}'")
        if map_loss == "none" and image_loss == "none":
            raise ValueError("model.map_loss and model.image_loss cannot both be 'none'")
        self.map_loss, self.image_loss = map_loss, image_loss
        self.map_weight, self.image_weight = float(m.map_loss_weight), float(m.image_loss_weight)
        self.ssim_window = int(m.ssim_window)

    def forward(self, logits: Tensor, sources: Tensor, gt: Tensor | None = None, mask: Tensor | None = None,
                clean: Tensor | None = None, clean_gt: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
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
        if self.gcb != "none" and clean is not None:  # no GCB in the network (Table 7 rows 1-4): skipped
            if clean_gt is None:
                raise ValueError(f"model.gcb_loss='{self.gcb}' needs batch['gt'] (Sec. 3.3); set model.gcb_loss=none")
            parts["gcb"] = gcb_loss(clean, clean_gt.to(clean.dtype), self.gcb, self.ssim_window)
            total = total + self.gcb_weight * parts["gcb"]
        return total, parts
