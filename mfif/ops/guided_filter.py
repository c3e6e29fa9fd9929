"""Guided filter (He et al., TPAMI 2013) and boundary-guided refinement of decision maps.

:func:`guided_filter` is the box-filter form of the guided filter for a gray guidance ``I`` and
an input ``p`` (any number of channels)::

    a = cov(I, p) / (var(I) + eps),  b = mean(p) - a * mean(I),  q = mean(a) * I + mean(b)

with all means over ``(2r+1) x (2r+1)`` windows. Two border conventions:

* ``border="clip"`` (default): windows are clipped at the image border and means divide by the
  number of pixels inside (``boxfilter(x) / boxfilter(ones)``). This is the definition of He's
  reference MATLAB code and of the released GACN/SESF code; kornia has no such border mode,
  so it is computed here with :func:`mfif.ops.activity.box_sum`.
* any kornia border type (``"reflect"``, ``"replicate"``, ``"constant"``, ``"circular"``):
  delegates to :func:`kornia.filters.guided_blur` (also for colour guidance).

:func:`boundary_guided_refinement` is GACN's boundary-guided filter (Sec. 3.1.2, released code):
the guided filter replaces the map only in a band around the focus boundary found by blurring
the map; elsewhere the initial map is kept. Both are differentiable.
"""
from __future__ import annotations

import kornia.filters as KF
import torch
from torch import Tensor, nn

from mfif.ops.activity import BoxMethod, box_sum

KORNIA_BORDERS = ("reflect", "replicate", "constant", "circular")


def _window_count(h: int, w: int, radius: int, like: Tensor) -> Tensor:
    """Number of in-image pixels of each clipped window, ``[1, 1, H, W]`` (separable counts)."""

    def counts(n: int) -> Tensor:
        i = torch.arange(n, device=like.device)
        return ((i + radius).clamp(max=n - 1) - (i - radius).clamp(min=0) + 1).to(like.dtype)

    return (counts(h)[:, None] * counts(w)[None, :]).view(1, 1, h, w)


def box_mean_clipped(x: Tensor, radius: int, method: BoxMethod = "conv") -> Tensor:
    """Mean over ``(2r+1) x (2r+1)`` windows clipped at the border (He's ``boxfilter(x)/N``).

    Shape:
        - x: :math:`(B, C, H, W)`
        - output: :math:`(B, C, H, W)`
    """
    return box_sum(x, radius, method) / _window_count(x.shape[-2], x.shape[-1], radius, x)


def guided_filter(
    guidance: Tensor, input: Tensor, radius: int, eps: float, border: str = "clip", method: BoxMethod = "conv"
) -> Tensor:
    """Guided filter, box-filter form (He et al. 2013, Alg. 1).

    Args:
        guidance: guidance image ``I`` ``[B, 1, H, W]`` (``[B, C, H, W]`` only with a kornia border).
        input: image to filter ``p`` ``[B, Cp, H, W]``.
        radius: window radius ``r`` (window ``2r+1``).
        eps: regularisation ``epsilon`` (> 0).
        border: ``"clip"`` (reference definition) or a kornia border type.
        method: box-sum method for ``"clip"`` (see :func:`mfif.ops.activity.box_sum`).

    Returns:
        The filtered input ``q``, shape of ``input``.

    Shape:
        - guidance: :math:`(B, 1, H, W)`
        - input: :math:`(B, C_p, H, W)`
        - output: :math:`(B, C_p, H, W)`
    """
    for name, t in (("guidance", guidance), ("input", input)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a [B, C, H, W] tensor, got "
                             f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
    if guidance.shape[0] != input.shape[0] or guidance.shape[-2:] != input.shape[-2:]:
        raise ValueError(f"guidance {tuple(guidance.shape)} and input {tuple(input.shape)} must share B, H, W")
    if not isinstance(radius, int) or radius < 1:
        raise ValueError(f"radius must be a positive int, got {radius!r}")
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if border in KORNIA_BORDERS:
        return KF.guided_blur(guidance, input, 2 * radius + 1, eps, border_type=border)
    if border != "clip":
        raise ValueError(f"border must be 'clip' or one of {KORNIA_BORDERS}, got '{border}'")
    if guidance.shape[1] != 1:
        raise ValueError(f"border='clip' needs a gray guidance [B, 1, H, W], got {tuple(guidance.shape)}; "
                         f"use a kornia border type for colour guidance")
    n = _window_count(guidance.shape[-2], guidance.shape[-1], radius, guidance)
    stack = torch.cat([guidance, input, guidance * input, guidance * guidance], 1)
    means = box_sum(stack, radius, method) / n  # one box-sum call for all four statistics
    cp = input.shape[1]
    mean_i, mean_p = means[:, :1], means[:, 1:1 + cp]
    corr_ip, corr_ii = means[:, 1 + cp:1 + 2 * cp], means[:, -1:]
    a = (corr_ip - mean_i * mean_p) / (corr_ii - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    mean_ab = box_sum(torch.cat([a, b], 1), radius, method) / n
    return mean_ab[:, :cp] * guidance + mean_ab[:, cp:]


def gaussian_blur_zero_padded(x: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """Normalised Gaussian blur with zero padding (the released ``GaussBlur``).

    ``kornia.filters.gaussian_blur2d`` with ``border_type="constant"`` (separable; equal to the
    2-D ``conv2d`` of the outer-product kernel up to float rounding, ~4e-7, and 5-20x faster on
    CPU). Keep-Passion/GACN ``nets/nets_utility.py:GaussBlur``: ``conv2d`` with zero padding.

    Shape:
        - x: :math:`(B, C, H, W)`
        - output: :math:`(B, C, H, W)`
    """
    if kernel_size % 2 != 1 or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
    if x.dim() != 4:
        raise ValueError(f"x must be [B, C, H, W], got {tuple(x.shape)}")
    return KF.gaussian_blur2d(x, kernel_size, (float(sigma), float(sigma)), border_type="constant")


def boundary_weight(blurred: Tensor, low: float = 0.1, high: float = 0.8) -> Tensor:
    """GACN's boundary weight from the blurred initial map ``g`` (Sec. 3.1.2, released code).

    Pixels with ``low <= g <= high`` are the boundary band (weight 1, Sec. 3.1.2: "[0.1, 0.8]").
    Outside the band the released code keeps a soft fall-off instead of 0, reproduced exactly::

        g > high:  1 - |2 g^2 - g|          (0.52 at g = 0.8, 0 at g = 1)
        g < low:   1 - |3 g - 2 g^2 - 1|    (0.28 at g = 0.1, 0 at g = 0)

    Shape:
        - blurred: :math:`(*)`
        - output: :math:`(*)` in [0, 1]
    """
    if not low < high:
        raise ValueError(f"need low < high, got low={low}, high={high}")
    g = blurred
    above = 1 - (2 * g * g - g).abs()
    below = 1 - (3 * g - 2 * g * g - 1).abs()
    return torch.where(g > high, above, torch.where(g < low, below, torch.ones_like(g)))


def boundary_guided_refinement(
    initial: Tensor,
    guidance: Tensor,
    sigma: float = 8.0,
    kernel_size: int = 9,
    low: float = 0.1,
    high: float = 0.8,
    radius: int = 3,
    eps: float = 0.1,
    method: BoxMethod = "conv",
) -> tuple[Tensor, Tensor]:
    """Refine a decision map at its focus boundary with a guided filter (GACN Sec. 3.1.2).

    ``g = Gaussian(initial)`` (zero padding, as released); ``w = boundary_weight(g)``;
    ``final = w * GF(guidance, initial) + (1 - w) * initial`` with the clipped-window guided filter.
    Defaults are GACN's: Gaussian sigma 8 on a 9x9 kernel, band [0.1, 0.8], r = 3, eps = 0.1.

    Args:
        initial: initial decision map ``[B, 1, H, W]`` in [0, 1].
        guidance: gray guidance ``[B, 1, H, W]`` (GACN: ``initial * A + (1 - initial) * B``).

    Returns:
        ``(final, weight)``: refined map and boundary weight, both ``[B, 1, H, W]``.

    Shape:
        - initial: :math:`(B, 1, H, W)`; guidance: :math:`(B, 1, H, W)`
        - output: two :math:`(B, 1, H, W)`
    """
    if initial.dim() != 4 or initial.shape[1] != 1:
        raise ValueError(f"initial must be a [B, 1, H, W] map, got {tuple(initial.shape)}")
    blurred = gaussian_blur_zero_padded(initial, kernel_size, sigma)
    weight = boundary_weight(blurred, low, high)
    smooth = guided_filter(guidance, initial, radius, eps, border="clip", method=method)
    # One dtype for lerp: under bf16 autocast the box sums come back in bf16, the map stays fp32.
    return torch.lerp(initial, smooth.to(initial.dtype), weight.to(initial.dtype)), weight


class GuidedFilter(nn.Module):
    """Module form of :func:`guided_filter` (no parameters)."""

    def __init__(self, radius: int, eps: float, border: str = "clip"):
        super().__init__()
        self.radius, self.eps, self.border = radius, eps, border

    def forward(self, guidance: Tensor, input: Tensor) -> Tensor:
        return guided_filter(guidance, input, self.radius, self.eps, self.border)

    def extra_repr(self) -> str:
        return f"radius={self.radius}, eps={self.eps}, border={self.border}"
