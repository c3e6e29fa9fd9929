"""Conventions shared by the no-reference fusion metrics (Yu Liu's MATLAB toolbox, yuliu316316/MFIF-Metrics).

The canonical MATLAB toolbox works on 8-bit images. Every metric here therefore starts from
**integer grey levels 0..255 in float64**:

* ``uint8`` (or any integer dtype) input is taken as it is;
* floating input must lie in [0, 1] (up to 0.05 of overshoot, clipped); it is quantised
  like saving to an 8-bit file would, ``floor(255 * x + 0.5)`` (MATLAB's ``im2uint8``
  rounding). This makes ``x / 255`` and ``x`` (uint8) give identical scores, and it is
  what the toolbox sees when it reads a saved 8-bit fused image.

Two colour conventions follow the reference code:

* ``yuliu_gray`` (:func:`yuliu_gray`): RGB -> MATLAB ``rgb2gray`` with the full-precision
  weights of :data:`mfif.ops.colour.MATLAB_GRAY`, rounded half away from zero to 0..255
  (Yu Liu's ``evaluate_*.m``); the metric is computed on the gray image;
* ``per_channel_mean`` (:func:`per_channel`): the metric is computed on R, G and B separately
  and the three values are averaged (MEFB wrappers).

Filtering helpers reproduce MATLAB ``filter2`` (correlation, zero padding, ``'same'`` /
``'valid'``) and ``fspecial('gaussian')``.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mfif.ops.colour import MATLAB_GRAY

__all__ = [
    "check_nr_inputs",
    "to_levels",
    "yuliu_gray",
    "per_channel",
    "normalize1",
    "round_half_away",
    "filter2",
    "filter2_sep",
    "fspecial_gaussian",
    "gaussian_1d",
    "joint_histogram",
    "histogram",
    "xlog",
    "source_pairs",
    "mean_over_pairs",
]


# ----------------------------------------------------------------------------- input checks
def check_nr_inputs(fused: Tensor, sources: Tensor) -> None:
    """Validate the ``update(fused, sources)`` contract of the no-reference metrics.

    Shape:
        - fused: :math:`(B, C, H, W)`, C in {1, 3}
        - sources: :math:`(B, N, C', H, W)`, N >= 2, C' in {1, 3}
    """
    if not isinstance(fused, Tensor) or not isinstance(sources, Tensor):
        raise TypeError("fused and sources must be torch.Tensor")
    if fused.dim() != 4 or fused.shape[1] not in (1, 3):
        raise ValueError(f"fused must have shape [B, C, H, W] with C in (1, 3), got {tuple(fused.shape)}")
    if sources.dim() != 5 or sources.shape[2] not in (1, 3):
        raise ValueError(f"sources must have shape [B, N, C, H, W] with C in (1, 3), got {tuple(sources.shape)}")
    if sources.shape[1] < 2:
        raise ValueError(f"sources must hold N >= 2 images, got N={sources.shape[1]}")
    if sources.shape[0] != fused.shape[0] or sources.shape[-2:] != fused.shape[-2:]:
        raise ValueError(
            f"fused {tuple(fused.shape)} and sources {tuple(sources.shape)} must share batch size and H, W"
        )


def round_half_away(x: Tensor) -> Tensor:
    """MATLAB ``round``: halves away from zero (``torch.round`` rounds halves to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


# Unclipped network outputs may overshoot [0, 1] slightly; such values are clipped (as saving
# to an 8-bit file would). Anything further out is almost surely 0..255 data: an error.
_RANGE_SLACK = 0.05


def to_levels(x: Tensor, name: str = "input") -> Tensor:
    """Integer grey levels 0..255 as float64 (see the module docstring).

    Raises:
        ValueError: floating input outside [0, 1] (e.g. already scaled to 0..255).
    """
    if x.dtype == torch.bool:
        raise TypeError(f"{name}: boolean images are not supported")
    if not torch.is_floating_point(x):
        return x.to(torch.float64)
    lo, hi = float(x.min()), float(x.max())
    if lo < -_RANGE_SLACK or hi > 1.0 + _RANGE_SLACK or math.isnan(lo) or math.isnan(hi):
        raise ValueError(
            f"{name}: floating images must lie in [0, 1] (got min {lo:.4g}, max {hi:.4g}); "
            "pass uint8 for 0..255 data"
        )
    return torch.floor(x.to(torch.float64).clamp(0, 1) * 255.0 + 0.5)


def _gray_levels(levels: Tensor) -> Tensor:
    """rgb2gray on 0..255 levels ``[..., 3, H, W]`` -> rounded levels ``[..., 1, H, W]``."""
    r, g, b = levels.unbind(-3)
    # Same summation order as MATLAB's weighted sum; rounded half away from zero (README).
    y = r * MATLAB_GRAY[0] + g * MATLAB_GRAY[1] + b * MATLAB_GRAY[2]
    return torch.floor(y + 0.5).unsqueeze(-3)


def yuliu_gray(x: Tensor, name: str = "input") -> Tensor:
    """The ``yuliu_gray`` convention: gray 0..255 levels in float64.

    Shape:
        - x: :math:`(*, C, H, W)`, C in {1, 3}, uint8 or float in [0, 1]
        - output: :math:`(*, H, W)` float64
    """
    lv = to_levels(x, name)
    if lv.shape[-3] == 3:
        lv = _gray_levels(lv)
    return lv.squeeze(-3)


def per_channel(fused: Tensor, sources: Tensor) -> tuple[Tensor, Tensor]:
    """The ``per_channel_mean`` convention: 0..255 levels with channels folded into the batch.

    If fused and sources disagree in channel count (RGB vs gray), the RGB side is converted
    to gray with MATLAB's weights first (the MEFB wrappers would silently use the red
    channel instead; we do not reproduce that).

    Shape:
        - fused: :math:`(B, C, H, W)`, sources: :math:`(B, N, C, H, W)`
        - output: fused :math:`(B C, H, W)`, sources :math:`(B C, N, H, W)` in float64;
          average the per-image results over C with :func:`fold_channels`.
    """
    f = to_levels(fused, "fused")
    s = to_levels(sources, "sources")
    if f.shape[1] != s.shape[2]:
        if f.shape[1] == 3:
            f = _gray_levels(f)
        else:
            s = _gray_levels(s)
    b, n, c, h, w = s.shape
    return f.reshape(b * c, h, w), s.permute(0, 2, 1, 3, 4).reshape(b * c, n, h, w)


def fold_channels(values: Tensor, batch: int) -> Tensor:
    """Mean over channels of per-(image, channel) values ``[B*C]`` -> ``[B]``."""
    return values.reshape(batch, -1).mean(1)


def normalize1(x: Tensor) -> Tensor:
    """Zheng Liu's ``normalize1``: per-image min-max to 0..255, rounded (MATLAB ``round``).

    Deviation: a constant non-zero image (0/0 in the toolbox, NaN) maps to zeros.

    Shape:
        - x: :math:`(B, H, W)` -> :math:`(B, H, W)`
    """
    flat = x.reshape(x.shape[0], -1)
    mx = flat.max(1).values.view(-1, 1, 1)
    mn = flat.min(1).values.view(-1, 1, 1)
    rng = mx - mn
    out = torch.floor((x - mn) / torch.where(rng > 0, rng, torch.ones_like(rng)) * 255 + 0.5)
    out = torch.where(rng > 0, out, torch.zeros_like(out))
    all_zero = (mx == 0) & (mn == 0)
    return torch.where(all_zero, x, out)


# ----------------------------------------------------------------------------- filtering
def fspecial_gaussian(size: int, sigma: float, dtype=torch.float64, device=None) -> Tensor:
    """MATLAB ``fspecial('gaussian', size, sigma)`` (normalised, tiny values zeroed)."""
    r = (size - 1) / 2.0
    ax = torch.arange(size, dtype=dtype, device=device) - r
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    h = torch.exp(-(xx * xx + yy * yy) / (2.0 * sigma * sigma))
    h = torch.where(h < torch.finfo(dtype).eps * h.max(), torch.zeros_like(h), h)
    return h / h.sum()


def gaussian_1d(size: int, sigma: float, dtype=torch.float64, device=None) -> Tensor:
    """Normalised 1-D Gaussian whose outer product equals :func:`fspecial_gaussian` (to rounding)."""
    r = (size - 1) / 2.0
    ax = torch.arange(size, dtype=dtype, device=device) - r
    g = torch.exp(-(ax * ax) / (2.0 * sigma * sigma))
    return g / g.sum()


def _pad_for(mode: str, kh: int, kw: int) -> tuple[int, int, int, int]:
    if mode == "valid":
        return (0, 0, 0, 0)
    if mode == "same":
        # MATLAB 'same' keeps the central part of the full correlation: for even kernels
        # the extra row/column is taken from the bottom/right side.
        top, left = (kh - 1) // 2, (kw - 1) // 2
        return (left, kw - 1 - left, top, kh - 1 - top)
    raise ValueError(f"mode must be 'same' or 'valid', got '{mode}'")


def _padded(x: Tensor, mode: str, kh: int, kw: int, padding: str) -> Tensor:
    pad = _pad_for(mode, kh, kw)
    if not any(pad):
        return x
    if padding == "zeros":
        return F.pad(x, pad)
    if padding == "replicate":
        return F.pad(x.unsqueeze(1), pad, mode="replicate").squeeze(1)
    raise ValueError(f"padding must be 'zeros' or 'replicate', got '{padding}'")


def _shift_add(x: Tensor, taps: list[tuple[int, int, float]], kh: int, kw: int) -> Tensor:
    # 'valid' correlation as a sum of shifted slices. On CPU this is 3-5x faster than
    # float64 F.conv2d (which takes the slow im2col path) and agrees to rounding.
    h, w = x.shape[-2] - kh + 1, x.shape[-1] - kw + 1
    if h < 1 or w < 1:
        raise ValueError(f"image {tuple(x.shape[-2:])} is smaller than the {kh}x{kw} window")
    out = None
    for i, j, c in taps:
        sl = x[..., i : i + h, j : j + w]
        if out is None:
            out = sl * c
        else:
            out = out.add_(sl, alpha=c) if not out.requires_grad else out + sl * c
    if out is None:
        return x.new_zeros(*x.shape[:-2], h, w)
    return out


def filter2(x: Tensor, kernel: Tensor, mode: str = "same", padding: str = "zeros") -> Tensor:
    """MATLAB ``filter2(kernel, x, mode)`` (2-D correlation), batched.

    Box kernels use ``avg_pool2d``; other kernels a sum of shifted slices (zero taps
    skipped). Agrees with MATLAB up to float rounding (summation order).

    Args:
        x: images.
        kernel: 2-D kernel ``[kh, kw]`` (small: every tap is one pass over the image).
        mode: ``'same'`` or ``'valid'``.
        padding: ``'zeros'`` (filter2) or ``'replicate'`` (``imfilter(..., 'replicate')``).

    Shape:
        - x: :math:`(*, H, W)`
        - output: :math:`(*, H, W)` (same) or :math:`(*, H-kh+1, W-kw+1)` (valid)
    """
    kh, kw = kernel.shape
    xp = _padded(x, mode, kh, kw, padding)
    kv = kernel.detach().cpu().to(torch.float64)
    if bool((kv == kv[0, 0]).all()) and float(kv[0, 0]) != 0.0:
        lead = xp.shape[:-2]
        pooled = F.avg_pool2d(xp.reshape(-1, 1, *xp.shape[-2:]), (kh, kw), stride=1)
        scale = float(kv[0, 0]) * kh * kw
        pooled = pooled if scale == 1.0 else pooled * scale
        return pooled.reshape(*lead, *pooled.shape[-2:])
    taps = [(i, j, float(kv[i, j])) for i in range(kh) for j in range(kw) if float(kv[i, j]) != 0.0]
    return _shift_add(xp, taps, kh, kw)


def filter2_sep(x: Tensor, k_rows: Tensor, k_cols: Tensor, mode: str = "same") -> Tensor:
    """Separable :func:`filter2` with kernel ``outer(k_rows, k_cols)`` (zero padding).

    Agrees with the 2-D correlation up to float rounding (~1e-16 relative); used for the
    Gaussian windows (11x11 ... 31x31), where it is 5-15x faster.
    """
    kh, kw = k_rows.numel(), k_cols.numel()
    xp = _padded(x, mode, kh, kw, "zeros")
    kr = k_rows.detach().cpu().to(torch.float64).tolist()
    kc = k_cols.detach().cpu().to(torch.float64).tolist()
    rows = _shift_add(xp, [(i, 0, c) for i, c in enumerate(kr) if c != 0.0], kh, 1)
    return _shift_add(rows, [(0, j, c) for j, c in enumerate(kc) if c != 0.0], 1, kw)


# ----------------------------------------------------------------------------- histograms
def histogram(x: Tensor, bins: int = 256) -> Tensor:
    """Per-image histogram of integer levels ``[B, P]`` in [0, bins) -> counts ``[B, bins]``."""
    b = x.shape[0]
    idx = x.reshape(b, -1).long() + torch.arange(b, device=x.device).view(-1, 1) * bins
    return torch.bincount(idx.reshape(-1), minlength=b * bins).view(b, bins).to(torch.float64)


def joint_histogram(a: Tensor, b: Tensor, bins: int = 256) -> Tensor:
    """Per-image joint histogram ``h[i, j] = #{a == i, b == j}`` via one ``bincount``.

    Shape:
        - a, b: :math:`(B, *)` integer levels in [0, bins)
        - output: :math:`(B, bins, bins)` float64 counts
    """
    n = a.shape[0]
    base = torch.arange(n, device=a.device).view(-1, 1) * (bins * bins)
    idx = a.reshape(n, -1).long() * bins + b.reshape(n, -1).long() + base
    return torch.bincount(idx.reshape(-1), minlength=n * bins * bins).view(n, bins, bins).to(torch.float64)


def xlog(p: Tensor, log: Callable[[Tensor], Tensor] = torch.log2) -> Tensor:
    """``p * log(p)`` with the convention ``0 log 0 = 0`` (MATLAB ``p.*log2(p+(p==0))``)."""
    return p * log(torch.where(p > 0, p, torch.ones_like(p)))


# ----------------------------------------------------------------------------- N sources
def source_pairs(n: int) -> list[tuple[int, int]]:
    """All unordered source pairs ``(i, j), i < j`` - how two-source metrics treat N > 2."""
    return list(itertools.combinations(range(n), 2))


def mean_over_pairs(fn: Callable[[Tensor, Tensor, Tensor], Tensor], fused: Tensor, sources: Sequence[Tensor]) -> Tensor:
    """Apply a two-source metric ``fn(a, b, f) -> [B]`` to every source pair and average.

    For N = 2 this is exactly ``fn(sources[0], sources[1], fused)``. For N > 2 the
    toolbox has no definition; we report the mean over the N(N-1)/2 unordered pairs.
    """
    n = len(sources)
    vals = [fn(sources[i], sources[j], fused) for i, j in source_pairs(n)]
    return vals[0] if len(vals) == 1 else torch.stack(vals, 0).mean(0)
