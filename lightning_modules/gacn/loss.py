"""GACN losses (Sec. 3.2) and the alternatives of the loss study (Sec. 4.5.1, Fig. 9).

``L = L_map(initial map, GT mask) + lambda * L_image(fused, sources)``   (Eq. 6, lambda = 1)

Map losses (on the initial map ``sigmoid(k x)``, as released):

* ``dice``  - Eq. 7 (V-Net [28]), smooth 1, squared sums over the whole batch (released code);
* ``focal`` - focal loss [54] ``-alpha_t (1 - p_t)^gamma log p_t`` (alpha 0.25, gamma 2), on the
  logits ``k x`` (numerically stable; kornia);
* ``bce``   - class-balanced cross entropy of HED [55]:
  ``-beta sum_{Y+} log p - (1 - beta) sum_{Y-} log(1 - p)`` with ``beta = |Y-| / |Y|`` per image,
  averaged over pixels (HED sums; the mean keeps the scale of the other losses).

Image losses (on the fused image of Eq. 5 with the final map):

* ``qg`` - ``1 - Q_G`` with the differentiable Q^AB/F of :func:`mfif.metrics.gradient.q_abf`
  (Eqs. 8-18; GACN constants, soft comparison k of Eq. 12, orientation ``abs`` Eq. 11 or
  ``smooth`` Eq. 14). The metric ``q_g`` and this loss share that one implementation.
* ``eg`` - edge-preserving gradient loss of DRPL [21]. GACN describes it as a gradient-intensity
  term without orientation; we use the L1 distance between Sobel gradient magnitudes of the fused
  image and the all-in-focus ground truth (or, without ground truth, the per-pixel maximum
  magnitude over the sources). Our formulation: the paper gives no equation.
* ``st`` - structure-tensor loss of DIF-Net [19]: the fused image's structure tensor
  ``grad F grad F^T`` should equal the multi-channel (Di Zenzo) tensor of the sources
  ``sum_n grad S_n grad S_n^T``; squared Frobenius distance averaged over pixels (no extra
  smoothing of the tensor: our simplification).

Sec. 4.5.1: for EG and ST the weight lambda was tuned to 1e-4 ("pick the best performance with
lambda = 0.0001"); :func:`default_image_loss_weight` returns these paper defaults.
"""
from __future__ import annotations

from typing import Optional

import kornia.filters as KF
import kornia.losses as KL
import torch
from torch import Tensor, nn



def dice_loss(pred: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """Eq. 7: ``1 - (2 sum p g + 1) / (sum p^2 + sum g^2 + 1)`` over all pixels of the batch.

    Shape:
        - pred, target: :math:`(B, 1, H, W)` in [0, 1]
        - output: scalar
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have one shape")
    target = target.to(pred.dtype)
    inter = (pred * target).sum()
    return 1 - (2 * inter + smooth) / (pred.square().sum() + target.square().sum() + smooth)


def focal_loss(logits: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Binary focal loss [54] on logits, mean over pixels (kornia implementation).

    Shape:
        - logits, target: :math:`(B, 1, H, W)`
        - output: scalar
    """
    return KL.binary_focal_loss_with_logits(logits, target.to(logits.dtype), alpha=alpha, gamma=gamma,
                                            reduction="mean")


def balanced_bce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Class-balanced BCE of HED [55], ``beta = |Y-|/|Y|`` per image, mean over pixels.

    Shape:
        - logits, target: :math:`(B, 1, H, W)`, target in {0, 1}
        - output: scalar
    """
    target = target.to(logits.dtype)
    beta = 1 - target.mean(dim=(1, 2, 3), keepdim=True)  # fraction of negatives
    weight = torch.where(target > 0.5, beta, 1 - beta)
    return nn.functional.binary_cross_entropy_with_logits(logits, target, weight=weight)


def qg_loss(a: Tensor, b: Tensor, fused: Tensor, soft_k: float = 1000.0, orientation: str = "abs") -> Tensor:
    """``L_Qg = 1 - Q_G`` (Eq. 18) with the soft comparison of Eqs. 12-13 and GACN's constants.

    The zero guards are floors (``guards="floor"`` of :func:`~mfif.metrics.gradient.q_abf`):
    the toolbox's exact-zero test leaves F's gradient strength free to be 1e-20 on continuous
    images, where the ratio ``g_S / g_F`` of Eq. 10 and the orientation of Eq. 9 have overflowing
    derivatives, and the soft blend of Eq. 13 evaluates both ratios everywhere (a weight that
    underflows to 0 times an infinite derivative is NaN). The released loss (Keep-Passion/GACN
    ``nets/ga_loss.py``) avoids the singularity differently, by adding 1e-6 to F's x-derivative
    before taking strength and orientation; the floor bounds every derivative by construction
    and leaves 8-bit-valued gradients (0 or >= 1/255 per step) as the toolbox guard does.

    Shape:
        - a, b, fused: :math:`(B, 1, H, W)` gray in [0, 1]
        - output: scalar
    """
    from mfif.metrics.gradient import GACN_LOSS, q_abf  # training only: keeps torchmetrics off the fuse path

    return 1 - q_abf(a, b, fused, constants=GACN_LOSS, soft_k=soft_k, orientation=orientation, guards="floor").mean()


def _sobel(x: Tensor) -> tuple[Tensor, Tensor]:
    g = KF.spatial_gradient(x, mode="sobel", normalized=False)  # [B, C, 2, H, W]
    return g[:, :, 0], g[:, :, 1]


def _magnitude(x: Tensor, eps: float = 1e-12) -> Tensor:
    gx, gy = _sobel(x)
    return (gx.square() + gy.square() + eps).sqrt()


def edge_preserving_loss(fused: Tensor, sources: Tensor, gt: Optional[Tensor] = None) -> Tensor:
    """Gradient-magnitude (edge-preserving) loss after DRPL [21]; see the module docstring.

    Shape:
        - fused: :math:`(B, 1, H, W)`; sources: :math:`(B, N, 1, H, W)`; gt: :math:`(B, 1, H, W)`
        - output: scalar
    """
    if gt is not None:
        target = _magnitude(gt)
    else:
        b, n = sources.shape[:2]
        target = _magnitude(sources.flatten(0, 1)).unflatten(0, (b, n)).amax(1)
    return (_magnitude(fused) - target).abs().mean()


def structure_tensor(x: Tensor) -> Tensor:
    """Per-pixel structure tensor entries ``(gx^2, gx gy, gy^2)`` summed over channels (Di Zenzo).

    Shape:
        - x: :math:`(B, C, H, W)`
        - output: :math:`(B, 3, H, W)`
    """
    gx, gy = _sobel(x)
    return torch.stack([(gx * gx).sum(1), (gx * gy).sum(1), (gy * gy).sum(1)], 1)


def structure_tensor_loss(fused: Tensor, sources: Tensor) -> Tensor:
    """DIF-Net [19] structure-tensor loss: ``mean ||Z_F - Z_S||_F^2`` (off-diagonal counted twice).

    Shape:
        - fused: :math:`(B, 1, H, W)`; sources: :math:`(B, N, 1, H, W)`
        - output: scalar
    """
    zf = structure_tensor(fused)
    zs = structure_tensor(sources.flatten(1, 2))  # the N sources as channels of one image
    d = zf - zs
    return (d[:, 0].square() + 2 * d[:, 1].square() + d[:, 2].square()).mean()


def default_image_loss_weight(image_loss: str) -> float:
    """Paper's lambda: 1 for Q_G (Sec. 3.2, Eq. 6), 1e-4 for EG and ST (Sec. 4.5.1)."""
    return {"qg": 1.0, "eg": 1e-4, "st": 1e-4, "none": 0.0}[image_loss]


class GACNLoss(nn.Module):
    """``L = L_map + lambda L_image`` (Eq. 6) with the variants of Fig. 9.

    Args:
        m: the model config (:class:`lightning_modules.gacn.module.GACNConfig`, the one place that
            holds the defaults and their sources), read for
            ``map_loss`` (``dice`` Eq. 7 | ``focal`` | ``bce``), ``image_loss`` (``qg`` Eq. 18 | ``eg`` |
            ``st`` | ``none``), ``image_loss_weight`` (lambda; None = :func:`default_image_loss_weight`),
            ``qg_k`` (k of Eq. 12), ``orientation`` (``abs`` Eq. 11 | ``smooth`` Eq. 14) and
            ``focal_alpha``, ``focal_gamma`` (focal-loss constants of [54]).
    """

    def __init__(self, m):
        super().__init__()
        map_loss, image_loss, orientation = m.map_loss, m.image_loss, m.orientation
        image_loss_weight = m.image_loss_weight
        if map_loss not in MAP_LOSSES:
            raise ValueError(f"model.map_loss must be one of {MAP_LOSSES}, got '{map_loss}'")
        if image_loss not in IMAGE_LOSSES:
            raise ValueError(f"model.image_loss must be one of {IMAGE_LOSSES}, got '{image_loss}'")
        if orientation not in ("abs", "smooth"):
            raise ValueError(f"model.orientation must be 'abs' or 'smooth', got '{orientation}'")
        self.map_loss, self.image_loss, self.orientation = map_loss, image_loss, orientation
        self.weight = default_image_loss_weight(image_loss) if image_loss_weight is None else float(image_loss_weight)
        self.qg_k, self.focal_alpha, self.focal_gamma = float(m.qg_k), float(m.focal_alpha), float(m.focal_gamma)

    def forward(self, logits: Tensor, initial: Tensor, fused: Tensor, sources: Tensor, mask: Tensor,
                gt: Optional[Tensor] = None) -> dict[str, Tensor]:
        """Loss parts.

        Args:
            logits, initial: pre-sigmoid ``k x`` and initial map ``[B, 1, H, W]``.
            fused: Eq. 5 fusion with the final map ``[B, 1, H, W]``.
            sources: gray pair ``[B, 2, 1, H, W]``.
            mask: ground-truth decision map ``[B, 1, H, W]`` (1 where source A is in focus).
            gt: all-in-focus gray image ``[B, 1, H, W]`` (EG only; optional).

        Returns:
            dict with ``loss`` (total), ``map`` and ``image``.
        """
        l_map = MAP_LOSS_FNS[self.map_loss](self, logits, initial, mask)
        l_img = IMAGE_LOSS_FNS[self.image_loss](self, fused, sources, gt)
        return {"loss": l_map + self.weight * l_img, "map": l_map, "image": l_img}


#: ``model.map_loss`` -> ``(GACNLoss, logits, initial map, GT mask) -> loss`` (Fig. 9 mask losses).
MAP_LOSS_FNS = {
    "dice": lambda c, logits, initial, mask: dice_loss(initial, mask),  # Eq. 7 on the initial map
    "focal": lambda c, logits, initial, mask: focal_loss(logits, mask, c.focal_alpha, c.focal_gamma),
    "bce": lambda c, logits, initial, mask: balanced_bce_loss(logits, mask),
}
#: ``model.image_loss`` -> ``(GACNLoss, fused, sources, gt) -> loss`` (Fig. 9 gradient losses).
IMAGE_LOSS_FNS = {
    "qg": lambda c, fused, sources, gt: qg_loss(sources[:, 0], sources[:, 1], fused, c.qg_k, c.orientation),  # Eq. 18
    "eg": lambda c, fused, sources, gt: edge_preserving_loss(fused, sources, gt),
    "st": lambda c, fused, sources, gt: structure_tensor_loss(fused, sources),
    "none": lambda c, fused, sources, gt: fused.new_zeros(()),
}
MAP_LOSSES = tuple(MAP_LOSS_FNS)  # ("dice", "focal", "bce")
IMAGE_LOSSES = tuple(IMAGE_LOSS_FNS)  # ("qg", "eg", "st", "none")
