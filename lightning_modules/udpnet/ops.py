"""UDPNet's non-learned operations: initial masks, blind-spot perturbation, the energy h and its gradients.

Everything works on K >= 2 sources (Remark 1, Eq. 12) stacked on dim 1:
sources and masks are ``[B, K, 1, H, W]`` (the Y channel, Sec. IV), the fused image is ``[B, 1, H, W]``.

Reference: Quan et al., "Dual-Path Deep Unsupervised Learning for Multi-Focus Image Fusion"
(UDPNet), Sec. III-B (Eqs. 3-4) and Sec. III-C (Eqs. 7, 10-12).
"""
from __future__ import annotations

from typing import Optional

import kornia.filters as KF
import torch
import torch.nn.functional as F
from torch import Tensor

from mfif.ops.checks import check_shape


def _check_stack(x: Tensor, name: str) -> None:
    check_shape(x, name, "B K 1 H W", K=2)  # one channel per source, K >= 2 sources


def gradient_magnitude(sources: Tensor) -> Tensor:
    """Per-pixel gradient magnitude ``|grad S_k|`` (normalised Sobel, kornia) of every source.

    Eq. 3 does not name the gradient operator; the Sobel magnitude is the usual choice of
    max-gradient fusion rules and is symmetric in x and y.

    Shape:
        - sources: :math:`(B, K, 1, H, W)`
        - output: :math:`(B, K, 1, H, W)`
    """
    _check_stack(sources, "sources")
    b, k, _, h, w = sources.shape
    return KF.sobel(sources.reshape(b * k, 1, h, w), normalized=True).reshape(b, k, 1, h, w)


def initial_masks(sources: Tensor) -> Tensor:
    """Initial fusion masks by the maximal-gradient principle (Eq. 3, Sec. III-B).

    ``M~_k = 1`` where source k has the largest gradient magnitude among the K sources, else 0.

    Deviation (typo fix): Eq. 3 as printed, ``sgn(max(|grad S_1|, |grad S_2|) - |grad S_k|)``, is 1
    where S_k is *not* the sharpest; the text ("the gradient of a focused pixel is usually larger")
    means its complement, which is what we compute. Ties (flat regions where several sources have
    exactly the same gradient) are split evenly among the tied sources so the initial masks obey
    Eq. 2 (sum to 1); everywhere else they are binary as Sec. III-B assumes.

    Shape:
        - sources: :math:`(B, K, 1, H, W)`
        - output: :math:`(B, K, 1, H, W)`, values in {0, 1/n_ties, 1}, summing to 1 over K.
    """
    g = gradient_magnitude(sources)
    winners = (g == g.amax(dim=1, keepdim=True)).to(sources.dtype)
    return winners / winners.sum(dim=1, keepdim=True)


def neighbour_share(masks: Tensor) -> Tensor:
    """Share of ones among the eight neighbours of every pixel (``p^k_{x,y}`` of Eq. 4).

    For non-binary values this is the mean of the neighbours. At the image border only the
    neighbours that exist are counted (the paper does not say; this keeps ``p`` a true share).

    Shape:
        - masks: :math:`(*, 1, H, W)`
        - output: same shape, values in [0, 1].
    """
    if masks.dim() < 3 or masks.shape[-3] != 1:
        raise ValueError(f"masks must have shape [..., 1, H, W], got {tuple(masks.shape)}")
    lead, (h, w) = masks.shape[:-3], masks.shape[-2:]
    flat = masks.reshape(-1, 1, h, w)
    ring = torch.ones(1, 1, 3, 3, dtype=flat.dtype, device=flat.device)
    ring[0, 0, 1, 1] = 0  # the eight neighbours, not the pixel itself
    total = F.conv2d(flat, ring, padding=1)
    count = F.conv2d(torch.ones_like(flat[:1]), ring, padding=1)
    return (total / count).reshape(*lead, 1, h, w)


def blind_spot(masks: Tensor, keep_prob: float = 0.9, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """Blind-spot perturbation of initial masks (Eq. 4, Sec. III-B).

    ``M_B(M~_k) = B_k * M~_k + (1 - B_k) * N_k`` with ``B_k ~ Bernoulli(p)`` (p = 0.9) and
    ``N_k ~ Bernoulli(p^k_{x,y})``, ``p^k_{x,y}`` the share of ones among the eight neighbours of
    ``M~_k[x, y]`` (:func:`neighbour_share`). Every source gets its own independent draws.

    Args:
        masks: initial masks ``M~``.
        keep_prob: ``p`` of Eq. 4 (probability that a pixel is kept).
        generator: optional torch.Generator for reproducible draws.

    Returns:
        ``(perturbed, keep)``: the perturbed masks and the keep-mask ``B`` (1 = kept).

    Shape:
        - masks: :math:`(B, K, 1, H, W)`
        - outputs: :math:`(B, K, 1, H, W)` each.
    """
    if not 0.0 <= keep_prob <= 1.0:
        raise ValueError(f"keep_prob must be in [0, 1], got {keep_prob}")
    share = neighbour_share(masks)
    keep = torch.bernoulli(torch.full_like(masks, keep_prob), generator=generator)
    noise = torch.bernoulli(share.clamp(0, 1), generator=generator)
    return keep * masks + (1 - keep) * noise, keep


def normalise_masks(masks: Tensor, eps: float = 1e-6) -> Tensor:
    """Make K masks non-negative and sum to 1 over dim 1 (Eq. 2); all-zero pixels become 1/K.

    Shape:
        - masks: :math:`(B, K, 1, H, W)`
        - output: same shape.
    """
    m = masks.clamp_min(0) + eps
    return m / m.sum(dim=1, keepdim=True)


def compose(masks: Tensor, sources: Tensor) -> Tensor:
    """Fused image ``A = sum_k M_k * S_k`` (Eq. 1 / Eq. 14 for K sources, Eq. 12).

    Shape:
        - masks, sources: :math:`(B, K, C, H, W)` (masks may have C = 1)
        - output: :math:`(B, C, H, W)`
    """
    return (masks * sources).sum(dim=1)


def energy_h(fused: Tensor, masks: Tensor, sources: Tensor, lam: float = 1.0) -> Tensor:
    """Smooth part h of the unrolled model (Eq. 7; K sources, Eq. 12), one value per batch item.

    ``h(A, M) = lam * ||A - sum_k M_k S_k||_F^2 + ||1 - sum_k M_k||_F^2``.

    Shape:
        - fused: :math:`(B, 1, H, W)`; masks, sources: :math:`(B, K, 1, H, W)`
        - output: :math:`(B,)`
    """
    r = fused - compose(masks, sources)
    c = 1 - masks.sum(dim=1)
    return lam * r.pow(2).flatten(1).sum(1) + c.pow(2).flatten(1).sum(1)


def grad_h_masks(fused: Tensor, masks: Tensor, sources: Tensor, lam: float = 1.0) -> Tensor:
    """``grad_M h`` (Eq. 10): ``-2 lam S_k (A - sum_j M_j S_j) - 2 (1 - sum_j M_j)`` for every k.

    Shape:
        - fused: :math:`(B, 1, H, W)`; masks, sources: :math:`(B, K, 1, H, W)`
        - output: :math:`(B, K, 1, H, W)`
    """
    r = (fused - compose(masks, sources)).unsqueeze(1)  # Sigma^T broadcasts the residual to every k
    c = (1 - masks.sum(dim=1)).unsqueeze(1)
    return -2 * lam * sources * r - 2 * c


def grad_h_image(fused: Tensor, masks: Tensor, sources: Tensor, lam: float = 1.0) -> Tensor:
    """``grad_A h`` (Eq. 11): ``2 lam (A - sum_k M_k S_k)``.

    Shape:
        - fused: :math:`(B, 1, H, W)`; masks, sources: :math:`(B, K, 1, H, W)`
        - output: :math:`(B, 1, H, W)`
    """
    return 2 * lam * (fused - compose(masks, sources))
