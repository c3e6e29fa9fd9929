"""Colour handling shared by every method: gray conversion, YCbCr, chroma fusion, policies.

A paper module declares one :data:`ColourPolicy`; :func:`to_working_space` and
:func:`from_working_space` implement them once for all methods:

* ``"rgb"``: the network sees RGB; gray sources are replicated to 3 channels and the result
  averaged back to one channel (UFA-Fuse, VAEEDOF).
* ``"gray_map"``: the network sees gray and returns decision maps, which are applied to every
  channel of the original sources (GACN Sec. 3, MSASN Eq. 10).
* ``"y_channel"``: the network fuses the Y channel of YCbCr; Cb/Cr are fused by the usual
  chroma-saliency weighting (UDPNet Sec. IV).
"""
from __future__ import annotations

from typing import Literal

import kornia.color as KC
import torch
from torch import Tensor

from mfif.ops.checks import check_shape

ColourPolicy = Literal["rgb", "gray_map", "y_channel"]
POLICIES = ("rgb", "gray_map", "y_channel")

# MATLAB rgb2gray weights at full precision: the inverse of the NTSC YIQ transform's first row
# as MATLAB's rgb2gray computes it (MathWorks, "rgb2gray" documentation; used by the metric
# toolboxes that the papers score with).
MATLAB_GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)


def _check_image(x: Tensor, name: str = "input") -> None:
    check_shape(x, name, "* C:1|3 H W")


def rgb_to_gray(x: Tensor) -> Tensor:
    """Gray with MATLAB's rgb2gray weights; single-channel input is returned unchanged.

    ``kornia.color.rgb_to_grayscale`` with :data:`MATLAB_GRAY` as ``rgb_weights`` (same values as a
    weighted channel sum up to one rounding step).

    Shape:
        - x: :math:`(*, C, H, W)`, C in {1, 3}
        - output: :math:`(*, 1, H, W)`
    """
    _check_image(x)
    if x.shape[-3] == 1:
        return x
    return KC.rgb_to_grayscale(x, rgb_weights=torch.tensor(MATLAB_GRAY, dtype=x.dtype, device=x.device))


def rgb_to_ycbcr(x: Tensor) -> Tensor:
    """RGB in [0,1] -> YCbCr (BT.601 full range, Cb/Cr centred at 0.5). Shape :math:`(*, 3, H, W)`."""
    _check_image(x)
    return KC.rgb_to_ycbcr(x)


def ycbcr_to_rgb(x: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_ycbcr`. Shape :math:`(*, 3, H, W)`."""
    return KC.ycbcr_to_rgb(x)


def fuse_chroma(chroma: Tensor, eps: float = 1e-6) -> Tensor:
    """Fuse Cb (or Cr) of N sources weighting each by its saturation ``|c - 0.5|``.

    The standard rule of Y-channel fusion methods: the more saturated source dominates;
    equal (gray) chroma gives the plain mean.

    Shape:
        - chroma: :math:`(B, N, 1, H, W)` in [0, 1]
        - output: :math:`(B, 1, H, W)`
    """
    w = (chroma - 0.5).abs()
    wsum = w.sum(1)
    mean = chroma.mean(1)
    weighted = (w * chroma).sum(1) / wsum.clamp_min(eps)
    return torch.where(wsum > eps, weighted, mean)


def to_working_space(sources: Tensor, policy: ColourPolicy) -> Tensor:
    """Convert sources ``[B, N, C, H, W]`` to what the network of ``policy`` consumes."""
    if policy == "rgb":
        return sources if sources.shape[2] == 3 else sources.expand(-1, -1, 3, -1, -1)
    if policy == "gray_map":
        return rgb_to_gray(sources)
    if policy == "y_channel":
        return sources if sources.shape[2] == 1 else rgb_to_ycbcr(sources)[:, :, :1]
    raise ValueError(f"unknown colour policy '{policy}'; expected one of {POLICIES}")


def from_working_space(
    fused: Tensor | None, maps: Tensor | None, sources: Tensor, policy: ColourPolicy
) -> Tensor:
    """Build the fused image in the sources' colour space from the network's output.

    Args:
        fused: network output ``[B, c, H, W]`` in the working space (may be None for
            ``gray_map`` when only maps are produced).
        maps: decision maps ``[B, N, 1, H, W]`` summing to 1 over N (``gray_map``).
        sources: the original sources ``[B, N, C, H, W]``.
        policy: the colour policy.

    Returns:
        Fused image ``[B, C, H, W]``.
    """
    c = sources.shape[2]
    if policy == "rgb":
        return fused if c == 3 else fused.mean(1, keepdim=True)
    if policy == "gray_map":
        if maps is None:
            raise ValueError("colour policy 'gray_map' needs decision maps from the network")
        return (maps * sources).sum(1)
    if policy == "y_channel":
        if c == 1:
            return fused
        ycc = rgb_to_ycbcr(sources)
        cb = fuse_chroma(ycc[:, :, 1:2])
        cr = fuse_chroma(ycc[:, :, 2:3])
        return ycbcr_to_rgb(torch.cat([fused, cb, cr], 1)).clamp(0, 1)
    raise ValueError(f"unknown colour policy '{policy}'; expected one of {POLICIES}")
