"""Image grids for reports and loggers: one row per sample, ``sources | fused | ground truth``."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor


def to_uint8(img: Tensor) -> np.ndarray:
    """``[C, H, W]`` float in [0, 1] -> ``[H, W, 3]`` uint8 (gray replicated)."""
    if img.dim() != 3:
        raise ValueError(f"expected [C, H, W], got {tuple(img.shape)}")
    x = img.detach().float().cpu().clamp(0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return (x.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def make_grid(sources: Tensor, fused: Tensor, gt: Optional[Tensor] = None, gap: int = 4) -> np.ndarray:
    """Rows of ``source_1 .. source_N | fused | gt`` for a batch.

    Shape:
        - sources: :math:`(B, N, C, H, W)`; fused, gt: :math:`(B, C, H, W)`
        - output: :math:`(B \\cdot (H + gap) - gap, K \\cdot (W + gap) - gap, 3)` uint8, K = N + 1 (+1 with gt)
    """
    rows = []
    for b in range(sources.shape[0]):
        tiles = [to_uint8(s) for s in sources[b]] + [to_uint8(fused[b])]
        if gt is not None:
            tiles.append(to_uint8(gt[b]))
        h = tiles[0].shape[0]
        sep = np.full((h, gap, 3), 255, np.uint8)
        row = tiles[0]
        for t in tiles[1:]:
            row = np.concatenate([row, sep, t], axis=1)
        rows.append(row)
    sep = np.full((gap, rows[0].shape[1], 3), 255, np.uint8)
    grid = rows[0]
    for r in rows[1:]:
        grid = np.concatenate([grid, sep, r], axis=0)
    return grid


def stack_batches(items: list[Tensor]) -> Tensor:
    return torch.cat(items, 0)
