"""SESF-Fuse consistency verification and guided-filter refinement (Sec. 3.3.2).

The released ``SESF_Fuse.fuse`` (Keep-Passion/SESF-Fuse, ``nets/sesf_net.py``) turns the initial
map ``D`` (Eq. 8) into fusion weights in this order, reproduced exactly here::

    D = opening(D, disk(5))                       scikit-image binary_opening
    D = remove 1-regions  < 0.01 H W              remove_small_holes(D == 0, 0.01 H W)
    D = closing(D, disk(5))                       scikit-image binary_closing
    D = remove 0-regions  < 0.01 H W              remove_small_holes(D == 1, 0.01 H W)
    W = GF(I = D * A + (1 - D) * B, p = D, r = 4, eps = 0.1)   on 0-255 intensities

Details taken from the released code and scikit-image (constants in ``SESFConfig``):

* structuring element ``disk(r)``: the pixels with ``x^2 + y^2 <= r^2`` (81 pixels for r = 5);
  Sec. 3.3.2: its radius equals the SF kernel radius. Pixels outside the image are ignored by the
  erosion and the dilation (scikit-image's border handling).
* region removal: 4-connected regions (``connectivity=1``) *strictly* smaller than
  ``0.01 H W`` pixels, regions touching the border included (Sec. 3.3.2).
* guided filter (He et al. [7]): guidance = the initial fused image (Sec. 3.3.2), in 8-bit units
  as the release reads it (``eps = 0.1`` is relative to 0-255, i.e. ``0.1 / 255^2`` on [0, 1]).
  For RGB guidance the release filters each channel separately and sums them
  (:func:`channel_sum_guided_filter`); for gray guidance this is He's filter. The filtered weights
  are not clipped (they may leave [0, 1] by a little at edges; the fused image is clipped).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mfif.ops.decision import component_areas
from mfif.ops.guided_filter import box_mean_clipped


def _check_binary(d: Tensor, name: str = "decision") -> None:
    if not isinstance(d, Tensor) or d.dim() != 4 or d.shape[1] != 1:
        got = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
        raise ValueError(f"{name} must be a [B, 1, H, W] map, got {got}")
    if not bool(((d == 0) | (d == 1)).all()):
        raise ValueError(f"{name} must contain only 0 and 1")


def disk(radius: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Disk structuring element ``x^2 + y^2 <= r^2`` (scikit-image ``disk``), ``[2r+1, 2r+1]``."""
    if not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius must be a non-negative int, got {radius!r}")
    i = torch.arange(-radius, radius + 1, device=device)
    return ((i[:, None] ** 2 + i[None, :] ** 2) <= radius * radius).to(dtype)


def _hits(d: Tensor, footprint: Tensor) -> Tensor:
    """Number of footprint pixels set in ``d`` around every pixel (zero outside the image)."""
    k = footprint.to(d)[None, None]
    return F.conv2d(d, k, padding=(k.shape[-2] // 2, k.shape[-1] // 2))


def binary_dilation(d: Tensor, footprint: Tensor) -> Tensor:
    """1 where the (symmetric) footprint centred on the pixel meets a 1 of ``d``.

    Shape:
        - d: :math:`(B, 1, H, W)` in {0, 1}; output: same
    """
    return (_hits(d, footprint) > 0.5).to(d.dtype)


def binary_erosion(d: Tensor, footprint: Tensor) -> Tensor:
    """1 where every in-image pixel under the footprint is 1 (outside pixels are ignored).

    Shape:
        - d: :math:`(B, 1, H, W)` in {0, 1}; output: same
    """
    return (_hits(1 - d, footprint) < 0.5).to(d.dtype)


def binary_opening(d: Tensor, footprint: Tensor) -> Tensor:
    """Erosion then dilation (removes 1-structures thinner than the footprint). Shape as ``d``."""
    return binary_dilation(binary_erosion(d, footprint), footprint)


def binary_closing(d: Tensor, footprint: Tensor) -> Tensor:
    """Dilation then erosion (fills 0-gaps thinner than the footprint). Shape as ``d``."""
    return binary_erosion(binary_dilation(d, footprint), footprint)


def remove_small_regions(d: Tensor, value: int, min_area: float) -> Tensor:
    """Flip the 4-connected regions of ``value`` with fewer than ``min_area`` pixels.

    ``value=1`` is scikit-image's ``remove_small_holes(d == 0, min_area)`` (small 1-islands
    become 0); ``value=0`` is ``remove_small_holes(d == 1, min_area)`` (small 0-holes become 1).
    Regions touching the image border count like any other.

    Shape:
        - d: :math:`(B, 1, H, W)` in {0, 1}; output: same
    """
    _check_binary(d)
    if value not in (0, 1):
        raise ValueError(f"value must be 0 or 1, got {value!r}")
    region = d == value
    small = region & (component_areas(region, connectivity=4) < min_area)
    return torch.where(small, torch.full_like(d, 1 - value), d)


def consistency_verification(d: Tensor, radius: int = 5, area_ratio: float = 0.01) -> Tensor:
    """The released post-processing of the initial map (Sec. 3.3.2), see the module docstring.

    Args:
        d: initial decision map in {0, 1}.
        radius: disk radius of the opening and closing (released ``ks = 5``).
        area_ratio: region-removal threshold as a fraction of ``H * W`` (released 0.01).

    Returns:
        The verified binary map, same dtype.

    Shape:
        - d: :math:`(B, 1, H, W)`; output: :math:`(B, 1, H, W)`
    """
    _check_binary(d)
    if not 0.0 <= float(area_ratio) <= 1.0:
        raise ValueError(f"area_ratio must lie in [0, 1], got {area_ratio}")
    min_area = float(area_ratio) * d.shape[-2] * d.shape[-1]
    se = disk(radius, d.dtype, d.device)
    d = remove_small_regions(binary_opening(d, se), 1, min_area)
    return remove_small_regions(binary_closing(d, se), 0, min_area)


def channel_sum_guided_filter(guidance: Tensor, p: Tensor, radius: int, eps: float) -> Tensor:
    """The released SESF guided filter: per-channel coefficients, summed over the guidance channels.

    With window means over clipped ``(2r+1)^2`` windows (He's ``boxfilter(x) / N``)::

        a_c = cov(I_c, p) / (var(I_c) + eps)
        b   = mean(p) - sum_c a_c mean(I_c)
        q   = sum_c mean(a_c) I_c + mean(b)

    For a single-channel guidance this is He et al.'s guided filter
    (:func:`mfif.ops.guided_filter.guided_filter` with ``border="clip"``). Computed in float64:
    ``eps`` is tiny next to the variance scale of 8-bit guidance, where float32 cancellation in
    ``E[I^2] - E[I]^2`` would matter; the result has ``p``'s dtype.

    Args:
        guidance: ``I`` ``[B, C, H, W]`` (C = 1 or 3).
        p: map to filter ``[B, 1, H, W]``.
        radius: window radius r (> 0).
        eps: regularisation (> 0), in the units of ``guidance`` squared.

    Shape:
        - guidance: :math:`(B, C, H, W)`; p: :math:`(B, 1, H, W)`
        - output: :math:`(B, 1, H, W)`
    """
    shapes_ok = guidance.dim() == 4 and p.dim() == 4 and p.shape[1] == 1
    if not shapes_ok or guidance.shape[0] != p.shape[0] or guidance.shape[-2:] != p.shape[-2:]:
        raise ValueError(f"guidance must be [B, C, H, W] and p [B, 1, H, W] with the same B, H, W, got "
                         f"{tuple(guidance.shape)} and {tuple(p.shape)}")
    if not (isinstance(radius, int) and radius >= 1 and eps > 0):
        raise ValueError(f"need an int radius >= 1 and eps > 0, got radius={radius!r}, eps={eps}")
    i, q = guidance.double(), p.double()
    c = i.shape[1]
    means = box_mean_clipped(torch.cat([i, q, i * q, i * i], 1), radius)
    mean_i, mean_p, mean_ip, mean_ii = means[:, :c], means[:, c:c + 1], means[:, c + 1:2 * c + 1], means[:, -c:]
    a = (mean_ip - mean_i * mean_p) / (mean_ii - mean_i * mean_i + eps)
    b = mean_p - (a * mean_i).sum(1, keepdim=True)
    mean_ab = box_mean_clipped(torch.cat([a, b], 1), radius)
    return ((mean_ab[:, :c] * i).sum(1, keepdim=True) + mean_ab[:, c:]).to(p.dtype)
