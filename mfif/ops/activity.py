"""Focus activity measures: box sums and spatial frequency (SF), written once for all papers.

* :func:`box_sum` - per-channel sum over a ``(2r+1) x (2r+1)`` window with zero padding, for
  any number of channels in one call (no per-channel Python loops).
* :func:`spatial_frequency_activity` - the pixel-wise SF of deep features used by SESF-Fuse and
  GACN (GACN Eqs. 1-3, Sec. 3.1.1): squared differences to the neighbouring pixel in each
  direction, summed over the window.
* :func:`spatial_frequency` - the classic image-level SF of Eskicioglu & Fisher (1995) used as a
  fusion metric and as the activity of SF-based fusion (Li et al. 2001).

The pixel-wise SF follows the released GACN/SESF code rather than the literal Eq. 3:
``normalize=False`` (default) returns the raw window sum ``RF^2 + CF^2``, without the square
root and the ``1/(2r+1)^2`` factor; the decision ``sigmoid(k * (SF_A - SF_B))`` of the released
weights was trained on that scale. ``normalize=True`` gives Eq. 3 exactly.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BoxMethod = Literal["conv", "cumsum"]


def _check_4d(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape [B, C, H, W], got {tuple(x.shape)}")


def box_sum(x: Tensor, radius: int, method: BoxMethod = "conv") -> Tensor:
    """Sum of each channel over a ``(2r+1) x (2r+1)`` window, zero padding (same output size).

    Both methods give the same values (up to float rounding) for all channels at once:

    * ``"conv"``: one depthwise convolution with a ones kernel, exact window sums without
      cancellation. The fastest CPU path measured (torch 2.13, 2 threads, 2x64x520x520, r = 5,
      CPU seconds): depthwise conv 0.44 (0.32 channels_last), float32 summed-area table 0.65,
      float64 table 1.3, shifted adds 0.69, separable ``avg_pool2d`` 2.4;
    * ``"cumsum"``: summed-area table (two cumulative sums and differences), cost independent of
      the radius; float32 tables lose precision by cancellation as the side grows, so float32
      (and half) inputs are summed in float64 and cast back.

    Args:
        x: input ``[B, C, H, W]``.
        radius: window radius ``r >= 0``.
        method: ``"conv"`` or ``"cumsum"``.

    Returns:
        Window sums, same shape and dtype as ``x`` (``x`` itself when ``radius == 0``).

    Shape:
        - x: :math:`(B, C, H, W)`
        - output: :math:`(B, C, H, W)`
    """
    _check_4d(x, "x")
    if not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius must be a non-negative int, got {radius!r}")
    if radius == 0:
        return x
    k = 2 * radius + 1
    if method == "conv":
        c = x.shape[1]
        weight = x.new_ones(c, 1, k, k)
        return F.conv2d(x, weight, padding=radius, groups=c)
    if method == "cumsum":
        work = x if x.dtype == torch.float64 else x.double()
        p = F.pad(work, (radius + 1, radius, radius + 1, radius))  # a leading zero row/col for the table
        s = p.cumsum(-1)
        s = s[..., k:] - s[..., :-k]
        s = s.cumsum(-2)
        s = s[..., k:, :] - s[..., :-k, :]
        return s.to(x.dtype)
    raise ValueError(f"method must be 'conv' or 'cumsum', got '{method}'")


def neighbour_energy(x: Tensor, direction: Literal["backward", "forward"] = "backward") -> Tensor:
    """Per-pixel ``dr^2 + dc^2``: squared differences to the horizontal and vertical neighbour.

    ``"backward"`` (GACN Eqs. 1-2 and the released GACN/SESF code): ``dr = x[m, n] - x[m, n-1]``,
    ``dc = x[m, n] - x[m-1, n]``, the missing neighbour of the first column/row being 0 (zero
    padding). ``"forward"``: ``x[m, n+1] - x[m, n]`` and ``x[m+1, n] - x[m, n]`` (right/lower
    neighbour), 0 beyond the last column/row. Keeps the memory format (channels_last stays so).

    Shape:
        - x: :math:`(B, C, H, W)`
        - output: :math:`(B, C, H, W)`
    """
    _check_4d(x, "x")
    if direction not in ("backward", "forward"):
        raise ValueError(f"direction must be 'backward' or 'forward', got '{direction}'")
    e = x.square()  # the border terms: difference to a zero neighbour
    if direction == "backward":
        e[..., :, 1:] = (x[..., :, 1:] - x[..., :, :-1]).square_()
        e[..., 1:, :] += (x[..., 1:, :] - x[..., :-1, :]).square_()
        e[..., 0, :] += x[..., 0, :].square()
    else:
        e[..., :, :-1] = (x[..., :, 1:] - x[..., :, :-1]).square_()
        e[..., :-1, :] += (x[..., 1:, :] - x[..., :-1, :]).square_()
        e[..., -1, :] += x[..., -1, :].square()
    return e


def spatial_frequency_activity(
    x: Tensor,
    radius: int = 5,
    normalize: bool = False,
    direction: Literal["backward", "forward"] = "backward",
    method: BoxMethod = "conv",
) -> Tensor:
    """Pixel-wise spatial frequency of every channel (GACN Eqs. 1-3, Sec. 3.1.1; r = 5 there).

    ``RF^2 + CF^2`` = window sum of :func:`neighbour_energy`. With ``normalize=True`` the result
    is Eq. 3: ``sqrt((RF^2 + CF^2) / (2r+1)^2)``.

    Comparing two sources: the window sum is linear, so ``SF_A - SF_B`` (``normalize=False``)
    equals ``box_sum(E_A - E_B)``, one box sum instead of two (what GACN does).

    Args:
        x: features ``[B, C, H, W]``.
        radius: window radius ``r`` (GACN: 5).
        normalize: apply Eq. 3's square root and ``1/(2r+1)^2`` (default False = released code).
        direction: neighbour used for the differences (see :func:`neighbour_energy`).
        method: box-sum method (see :func:`box_sum`).

    Shape:
        - x: :math:`(B, C, H, W)`
        - output: :math:`(B, C, H, W)`
    """
    energy = box_sum(neighbour_energy(x, direction), radius, method)
    if normalize:
        return (energy / float((2 * radius + 1) ** 2)).clamp_min(0).sqrt()
    return energy


def spatial_frequency(x: Tensor) -> Tensor:
    """Image spatial frequency ``SF = sqrt(RF^2 + CF^2)`` (Eskicioglu & Fisher 1995) per channel.

    ``RF^2`` is the mean of the squared horizontal differences ``x[m, n] - x[m, n-1]`` over the
    ``H x (W-1)`` valid pairs, ``CF^2`` the same for vertical differences (no padding).

    Shape:
        - x: :math:`(B, C, H, W)` with H, W >= 2
        - output: :math:`(B, C)`
    """
    _check_4d(x, "x")
    if x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"x must be at least 2x2 pixels, got {tuple(x.shape[-2:])}")
    rf2 = (x[..., :, 1:] - x[..., :, :-1]).square().mean(dim=(-2, -1))
    cf2 = (x[..., 1:, :] - x[..., :-1, :]).square().mean(dim=(-2, -1))
    return (rf2 + cf2).sqrt()


class SpatialFrequencyActivity(nn.Module):
    """Module form of :func:`spatial_frequency_activity` (no parameters)."""

    def __init__(self, radius: int = 5, normalize: bool = False, direction: str = "backward",
                 method: BoxMethod = "conv"):
        super().__init__()
        self.radius, self.normalize, self.direction, self.method = radius, normalize, direction, method

    def forward(self, x: Tensor) -> Tensor:
        return spatial_frequency_activity(x, self.radius, self.normalize, self.direction, self.method)

    def extra_repr(self) -> str:
        return f"radius={self.radius}, normalize={self.normalize}, direction={self.direction}, method={self.method}"
