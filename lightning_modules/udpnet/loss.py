"""UDPNet losses (Sec. III-B, III-C, III-D): no ground truth appears anywhere.

Scale: the paper writes squared Frobenius norms and an l1 norm (sums). We divide every term by
the same constant, the number of pixels ``B * H * W`` of the batch, so the relative weights of
Eqs. 5 and 16 are exactly the paper's while the magnitude does not depend on patch or batch size.

All masks are ``[B, K, 1, H, W]`` (K >= 2, Remark 1), images ``[B, 1, H, W]``.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor


def _pixels(x: Tensor) -> int:
    return x.shape[0] * x.shape[-2] * x.shape[-1]


def blind_spot_mask_loss(pred: Tensor, init: Tensor, keep: Tensor, alpha: float = 0.4) -> Tensor:
    """L_mask^F (Eq. 5): masked reconstruction on the perturbed pixels + alpha * complementarity.

    ``sum_k ||(1 - B_k) (F(M_B(M~_k)) - M~_k)||^2 + alpha ||sum_k F(M_B(M~_k)) - 1||^2``.

    Args:
        pred: F's output on the blind-spot-perturbed masks.
        init: the initial masks ``M~`` (Eq. 3).
        keep: the keep-mask ``B`` of Eq. 4 (1 = kept, 0 = perturbed).
        alpha: weight of the complementarity term (Sec. IV: 0.4).

    Shape:
        - pred, init, keep: :math:`(B, K, 1, H, W)` -> output: scalar.
    """
    recon = ((1 - keep) * (pred - init)).pow(2).sum()
    comp = (pred.sum(dim=1) - 1).pow(2).sum()
    return (recon + alpha * comp) / _pixels(pred)


def self_reconstruction_loss(pred: Tensor, init: Tensor) -> Tensor:
    """"w/o BS" replacement of L_mask^F (Sec. IV-C (c)): ``sum_k ||F(M~_k) - M~_k||^2``.

    Shape:
        - pred, init: :math:`(B, K, 1, H, W)` -> output: scalar.
    """
    return (pred - init).pow(2).sum() / _pixels(pred)


def stage_mask_loss(stage_masks: Sequence[Tensor], target: Tensor, base: float = 2.0,
                    first_stage: int = 1) -> Tensor:
    """L_mask^G (Eq. 13): ``sum_t omega_t ||M^(t) - M^F||^2`` with ``omega_t = base^t`` (2^t).

    ``target`` must already be detached (Sec. III-C: F is detached in this loss).

    Args:
        stage_masks: ``M^(t)`` for t = first_stage, first_stage + 1, ...
        target: the supervising masks ``M^F``.
        base: omega_t = base ** t.
        first_stage: index t of ``stage_masks[0]`` (1 for G; T for the one-shot ablation).

    Shape:
        - stage_masks[i], target: :math:`(B, K, 1, H, W)` -> output: scalar.
    """
    if len(stage_masks) == 0:
        raise ValueError("stage_masks is empty")
    total = sum(base ** (first_stage + i) * (m - target).pow(2).sum() for i, m in enumerate(stage_masks))
    return total / _pixels(target)


def fusion_consistency_loss(fused_f: Tensor, fused_g: Tensor) -> Tensor:
    """L_fusion^{F,G} (Eq. 15): ``||A_F - A_G||_1``.

    Shape:
        - fused_f, fused_g: :math:`(B, 1, H, W)` -> output: scalar.
    """
    if fused_f.shape != fused_g.shape:
        raise ValueError(f"A_F and A_G must have the same shape, got {tuple(fused_f.shape)} and {tuple(fused_g.shape)}")
    return (fused_f - fused_g).abs().sum() / _pixels(fused_f)
