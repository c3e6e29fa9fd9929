"""Pad images to a network's stride and crop back (any H x W works with every method)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def pad_to_multiple(x: Tensor, multiple: int, mode: str = "reflect") -> tuple[Tensor, tuple[int, int]]:
    """Pad the last two dims of ``x`` on the bottom/right up to a multiple of ``multiple``.

    Reflect padding needs the pad to be smaller than the side; replicate is used otherwise.

    Shape:
        - x: :math:`(*, H, W)`
        - output: :math:`(*, H', W')` with H', W' multiples of ``multiple``; plus ``(H, W)``.
    """
    h, w = x.shape[-2:]
    if multiple <= 1:
        return x, (h, w)
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    out = F.pad(flat, (0, pw, 0, ph), mode=mode)
    return out.reshape(*lead, *out.shape[-3:]), (h, w)


def crop_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Crop the last two dims back to ``size`` (inverse of :func:`pad_to_multiple`)."""
    return x[..., : size[0], : size[1]]
