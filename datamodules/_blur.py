"""Batched Gaussian and mean (box) blurs with per-sample kernels, for the data generators.

Every generator blurs with OpenCV's conventions (the papers' reference code is OpenCV based):
``BORDER_REFLECT_101`` borders (``dcb|abcd|cba``, scipy's ``mode="mirror"``) and, for even
mean-filter sizes, the anchor at ``k // 2`` (``cv2.blur``). The border is built by index
arithmetic, so it works for any padding width (PyTorch's ``reflect`` needs pad < size; the GACN
spread kernel has radius 45, wider than the tiny test images).

The filters take one kernel *per sample*: kernels of different sizes are zero-padded to a
common odd length around their anchor, which gives exactly the same result as the smaller
kernel (the extra taps are zero). So a whole batch with random radii/sizes is blurred in one
:func:`kornia.filters.filter2d_separable` call, on CPU inside a worker or on the GPU after the
batch transfer (``gpu_synthesis``).
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from kornia.filters import filter2d_separable
from torch import Tensor

IntOrSeq = Union[int, Sequence[int], Tensor]
FloatOrSeq = Union[float, Sequence[float], Tensor]


def opencv_sigma(ksize: int) -> float:
    """Sigma OpenCV derives from an odd kernel size when ``sigma=0`` (``cv2.getGaussianKernel``)."""
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"Gaussian kernel size must be odd and >= 1, got {ksize}")
    return 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8


def _per_sample(v, b: int, dtype, device) -> Tensor:
    t = torch.as_tensor(v, dtype=dtype, device=device).flatten()
    if t.numel() == 1:
        t = t.expand(b)
    if t.numel() != b:
        raise ValueError(f"expected a scalar or {b} per-sample values, got {t.numel()}")
    return t


def reflect101_index(n: int, before: int, after: int, device=None) -> Tensor:
    """Source indices of a length-``n`` axis padded with ``BORDER_REFLECT_101`` (any widths)."""
    idx = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= n, period - idx, idx)


def pad_reflect101(x: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
    """Pad ``x`` ``[..., H, W]`` by reflection without repeating the edge pixel, any width."""
    h, w = x.shape[-2:]
    if max(top, bottom) < h and max(left, right) < w and x.dim() == 4:
        return F.pad(x, (left, right, top, bottom), mode="reflect")  # same rule, faster
    x = x.index_select(-2, reflect101_index(h, top, bottom, x.device))
    return x.index_select(-1, reflect101_index(w, left, right, x.device))


def gaussian_kernels1d(sigma: FloatOrSeq, radius: IntOrSeq, batch: int, device=None, dtype=torch.float32) -> Tensor:
    """Normalised 1-D Gaussian kernels, one per sample, zero-padded to ``2 * max(radius) + 1``.

    Args:
        sigma: standard deviation(s), scalar or ``[B]``.
        radius: half width(s) ``r`` (kernel size ``2r + 1``), scalar or ``[B]``.
        batch: B.

    Returns:
        Kernels ``[B, 2R + 1]`` with ``R = max(radius)``; each sums to 1.
    """
    s = _per_sample(sigma, batch, torch.float64, device)
    r = _per_sample(radius, batch, torch.int64, device)
    if (s <= 0).any() or (r < 0).any():
        raise ValueError(f"need sigma > 0 and radius >= 0, got sigma={s.tolist()} radius={r.tolist()}")
    big_r = int(r.max())
    x = torch.arange(-big_r, big_r + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 * (x[None] / s[:, None]) ** 2) * (x.abs()[None] <= r[:, None])
    return (k / k.sum(1, keepdim=True)).to(dtype)


def box_kernels1d(size: IntOrSeq, batch: int, device=None, dtype=torch.float32) -> Tensor:
    """Mean-filter kernels, one per sample, as used by ``cv2.blur`` (anchor ``k // 2``).

    A size-``k`` kernel covers offsets ``-(k // 2) .. (k - 1) // 2``; all are embedded in an odd
    length ``2 * max(k // 2) + 1`` centred on the anchor.

    Returns:
        Kernels ``[B, L]``, each summing to 1.
    """
    k = _per_sample(size, batch, torch.int64, device)
    if (k < 1).any():
        raise ValueError(f"mean filter sizes must be >= 1, got {k.tolist()}")
    half = int((k // 2).max())
    off = torch.arange(-half, half + 1, device=device)
    inside = (off[None] >= -(k // 2)[:, None]) & (off[None] <= ((k - 1) // 2)[:, None])
    ker = inside.to(torch.float64)
    return (ker / ker.sum(1, keepdim=True)).to(dtype)


def separable_filter(x: Tensor, kernels: Tensor) -> Tensor:
    """Correlate each sample of ``x`` with its own odd-length separable kernel, REFLECT_101 borders.

    Shape:
        - x: :math:`(B, C, H, W)`
        - kernels: :math:`(B, L)`, L odd
        - output: :math:`(B, C, H, W)`
    """
    if x.dim() != 4:
        raise ValueError(f"x must be [B, C, H, W], got {tuple(x.shape)}")
    if kernels.dim() != 2 or kernels.shape[0] != x.shape[0] or kernels.shape[1] % 2 == 0:
        raise ValueError(f"kernels must be [B={x.shape[0]}, odd L], got {tuple(kernels.shape)}")
    p = kernels.shape[1] // 2
    k = kernels.to(device=x.device, dtype=x.dtype)
    if p == 0:
        return x * k[:, :1, None, None]
    return filter2d_separable(pad_reflect101(x, p, p, p, p), k, k, padding="valid")


def gaussian_blur(x: Tensor, sigma: FloatOrSeq, radius: IntOrSeq) -> Tensor:
    """Gaussian blur with kernel size ``2r + 1`` = ``cv2.GaussianBlur(x, (2r+1, 2r+1), sigma)``.

    Equal to ``scipy.ndimage.gaussian_filter(x, sigma, radius=r, mode="mirror")`` per channel.

    Args:
        x: images ``[B, C, H, W]``.
        sigma: scalar or per-sample ``[B]`` standard deviation.
        radius: scalar or per-sample ``[B]`` half width.

    Shape:
        - x: :math:`(B, C, H, W)`
        - output: :math:`(B, C, H, W)`
    """
    return separable_filter(x, gaussian_kernels1d(sigma, radius, x.shape[0], x.device, x.dtype))


def box_blur(x: Tensor, size: IntOrSeq) -> Tensor:
    """Mean filter of (per-sample) size ``k`` x ``k`` = ``cv2.blur(x, (k, k))``, even k allowed.

    Shape:
        - x: :math:`(B, C, H, W)`
        - output: :math:`(B, C, H, W)`
    """
    return separable_filter(x, box_kernels1d(size, x.shape[0], x.device, x.dtype))
