"""VAEEDOF training loss. The paper does not state its loss; this is our documented choice.

``L = w_latent * |z_fused - E(gt)|  +  w_l1 * |D(z_fused) - gt|  +  w_ssim * (1 - SSIM(D(z_fused), gt))``

Why:

* **Latent term** (L1 by default, L2 selectable): the FM's output lives in the frozen VAE's
  latent space, and the best fused latent one can hope for is the latent of the all-in-focus
  ground truth, ``E(gt)`` - its decoding is exactly the VAE-limited optimum Sec. 4 speaks of
  ("achieving maximum pixel-level similarity is not possible with our approach"). It is cheap
  (no decoder pass) and well conditioned. L1 rather than L2: robust to the few saturated
  latents (the decoder soft-clamps at +-3) and it does not over-smooth.
* **Image terms through the frozen decoder**: latent errors are not equally visible after the
  non-linear decoder; supervising the decoded image aligns training with what is evaluated
  (Table 1: PSNR/SSIM/LPIPS... on images). L1 + (1 - SSIM) is the usual pixel/structure pair.
  Gradients flow *through* the decoder to the FM; the decoder's own weights stay frozen.
  Set both image weights to 0 to skip decoding (much less memory at 512 px, batch 32).
"""
from __future__ import annotations

from typing import Optional

import kornia.metrics
import torch.nn.functional as F
from torch import Tensor, nn

LATENT_KINDS = ("l1", "l2")


def latent_loss(pred: Tensor, target: Tensor, kind: str = "l1") -> Tensor:
    """Mean L1 or L2 distance between latents.

    Shape:
        - pred, target: :math:`(B, C, h, w)`
        - output: scalar
    """
    if pred.shape != target.shape:
        raise ValueError(f"latent_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "l2":
        return F.mse_loss(pred, target)
    raise ValueError(f"latent_loss: kind must be one of {LATENT_KINDS}, got '{kind}'")


def ssim_loss(img: Tensor, gt: Tensor, window: int = 11) -> Tensor:
    """``1 - mean SSIM`` (kornia, Gaussian window ``window``, sigma 1.5). Shape: :math:`(B, C, H, W)` each."""
    return 1.0 - kornia.metrics.ssim(img, gt, window_size=window, max_val=1.0).mean()


class VAEEDOFLoss(nn.Module):
    """Weighted sum of the latent term and the decoded-image terms (module docstring).

    Args:
        latent_kind: ``l1`` or ``l2``.
        w_latent: weight of the latent term.
        w_image_l1: weight of the image L1 term.
        w_image_ssim: weight of the image (1 - SSIM) term.

    Shape:
        - z_pred, z_gt: :math:`(B, C, h, w)`
        - img_pred, gt: :math:`(B, 3, H, W)` (needed only when an image weight is > 0)
        - output: scalar total and a dict of the unweighted parts
    """

    def __init__(self, latent_kind: str = "l1", w_latent: float = 1.0, w_image_l1: float = 1.0,
                 w_image_ssim: float = 0.5):
        super().__init__()
        if latent_kind not in LATENT_KINDS:
            raise ValueError(f"model.latent_loss must be one of {LATENT_KINDS}, got '{latent_kind}'")
        if min(w_latent, w_image_l1, w_image_ssim) < 0 or w_latent + w_image_l1 + w_image_ssim == 0:
            raise ValueError("loss weights must be >= 0 and not all 0 "
                             f"(w_latent={w_latent}, w_image_l1={w_image_l1}, w_image_ssim={w_image_ssim})")
        self.latent_kind, self.w_latent, self.w_l1, self.w_ssim = latent_kind, w_latent, w_image_l1, w_image_ssim

    @property
    def needs_image(self) -> bool:
        return self.w_l1 > 0 or self.w_ssim > 0

    def forward(self, z_pred: Tensor, z_gt: Tensor, img_pred: Optional[Tensor] = None,
                gt: Optional[Tensor] = None) -> tuple[Tensor, dict[str, Tensor]]:
        parts: dict[str, Tensor] = {}
        total = z_pred.new_zeros(())
        if self.w_latent > 0:
            parts["latent"] = latent_loss(z_pred, z_gt, self.latent_kind)
            total = total + self.w_latent * parts["latent"]
        if self.needs_image:
            if img_pred is None or gt is None:
                raise ValueError("VAEEDOFLoss: image weights > 0 need the decoded image and the ground truth")
            if self.w_l1 > 0:
                parts["image_l1"] = F.l1_loss(img_pred, gt)
                total = total + self.w_l1 * parts["image_l1"]
            if self.w_ssim > 0:
                parts["image_ssim"] = ssim_loss(img_pred, gt)
                total = total + self.w_ssim * parts["image_ssim"]
        return total, parts
