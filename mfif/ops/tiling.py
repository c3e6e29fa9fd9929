"""Tiled inference with gradient alpha blending, for images of any size (VAEEDOF Sec. 3, Fig. 3).

VAEEDOF fuses 4K renders patch by patch: "each patch overlaps with its adjacent patch by 1/4 of
the patch size. Across these overlapping regions, a gradient alpha mask is applied to ensure
seamless transitions" (Sec. 3, Fig. 3). The op is generic: any callable that maps a tile of
sources ``[b, N, C, h, w]`` to a fused tile ``[b, C', h, w]`` can be run this way, so the fuse
CLI uses it for every method.

How the blend works (written once here, tested in ``tests/test_ops_tiling.py``):

* Tile origins along each axis are spread evenly between 0 and ``L - tile`` with as few tiles as
  keep every overlap >= ``overlap``; an axis shorter than the tile is one tile of the whole axis.
* Each tile's weight is separable, ``w(y, x) = a(y) * b(x)``: 1 inside, and a linear ramp
  (the "gradient alpha mask") across the whole overlap with each neighbour, rising on one tile
  exactly as it falls on the other, so two overlapping tiles cross-fade with weights summing to 1.
  Image borders get no ramp. Ramp values lie strictly inside (0, 1), so every pixel has weight.
* The output is ``sum_t w_t * f(tile_t) / sum_t w_t``. Because the weights are separable and the
  tiles form a grid, the normaliser is the outer product of two 1-D sums: no image-sized weight
  buffer is needed. A function that returns its input (or a constant) is reproduced exactly.

Memory: tiles are cut, processed and accumulated ``tile_batch`` at a time into one float64
output buffer ``[B, C', H, W]`` (the only image-sized allocation besides the input); what ``fn`` needs (activations) is bounded by the tile batch, not the
image size. Run under ``torch.inference_mode()`` so no autograd graph accumulates.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from mfif.progress import Progress

TileFn = Callable[[Tensor], Tensor]

#: tiles from which :func:`tiled_apply` shows its progress by default (not in the paper)
PROGRESS_MIN_TILES = 16

# Sec. 3: "each patch overlaps with its adjacent patch by 1/4 of the patch size".
DEFAULT_TILE = 512  # Sec. 3: the model is trained and applied on 512x512 patches
OVERLAP_FRACTION = 0.25


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Origins of the tiles along one axis, evenly spread, each overlap >= ``overlap``.

    Args:
        length: size of the axis.
        tile: tile size along the axis.
        overlap: minimum overlap between neighbouring tiles (``0 <= overlap < tile``).

    Returns:
        Sorted origins; the first is 0 and the last is ``length - tile`` (``[0]`` when the axis
        is not longer than the tile).
    """
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / (tile - overlap)) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def blend_ramps(starts: list[int], size: int) -> list[Tensor]:
    """1-D blending weights of each tile along one axis (linear ramps across every overlap).

    Over the overlap ``o`` between two neighbours the left tile falls as ``(o - i) / (o + 1)`` and
    the right tile rises as ``(i + 1) / (o + 1)``, ``i = 0..o-1``: they sum to exactly 1.

    Shape:
        - output: a list of ``len(starts)`` tensors of shape :math:`(size,)`, values in (0, 1].
    """
    ramps = []
    for k, s in enumerate(starts):
        w = torch.ones(size, dtype=torch.float64)
        if k > 0:  # rising ramp across the overlap with the previous tile
            o = starts[k - 1] + size - s
            up = torch.arange(1, o + 1, dtype=torch.float64) / (o + 1)
            w[:o] = torch.minimum(w[:o], up)
        if k < len(starts) - 1:  # falling ramp across the overlap with the next tile
            o = s + size - starts[k + 1]
            down = torch.arange(o, 0, -1, dtype=torch.float64) / (o + 1)
            w[size - o:] = torch.minimum(w[size - o:], down)
        ramps.append(w)
    return ramps


def _axis_normaliser(starts: list[int], ramps: list[Tensor], size: int, length: int) -> Tensor:
    """Sum of the 1-D weights of all tiles at every position of the axis. Shape :math:`(length,)`."""
    total = torch.zeros(length, dtype=torch.float64)
    for s, w in zip(starts, ramps):
        total[s : s + size] += w
    return total


def _accumulator_dtype(device: torch.device) -> torch.dtype:
    # float64 accumulation makes the blend exact to float32 precision (an identity fn round-trips
    # bit for bit); MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def tiled_apply(
    fn: TileFn,
    sources: Tensor,
    tile: int = DEFAULT_TILE,
    overlap: Optional[int] = None,
    tile_batch: int = 1,
    device: Optional[torch.device | str] = None,
    progress: Optional[bool] = None,
) -> Tensor:
    """Apply ``fn`` tile by tile and blend the tiles with gradient alpha masks (Sec. 3, Fig. 3).

    Args:
        fn: maps sources tiles ``[b, N, C, h, w]`` to output tiles ``[b, C', h, w]`` (same h, w).
            It may pad internally (e.g. ``lambda s: module.fuse(s).fused``).
        sources: the full-size sources ``[B, N, C, H, W]``.
        tile: tile size (square); an image side not longer than ``tile`` is one tile.
        overlap: minimum overlap between neighbouring tiles; default ``tile // 4`` (Sec. 3).
        tile_batch: tiles per call of ``fn``; peak activation memory scales with it.
        device: where ``fn`` runs (tiles are moved there and results moved back); default the
            device of ``sources``. The output stays on the device of ``sources``.
        progress: show ``[k/n] tiles ... ETA`` on stderr (:class:`mfif.progress.Progress`);
            None: when there are at least :data:`PROGRESS_MIN_TILES` tiles (a 4K image at 512 px
            tiles has 121), unless ``MFIF_PROGRESS=0``.

    Returns:
        The blended output ``[B, C', H, W]`` (float32, or ``fn``'s floating dtype if wider),
        accumulated in float64 so that overlapping identical tiles reproduce their values exactly.

    Raises:
        ValueError: bad shapes or parameters, or ``fn`` returned a tile of the wrong shape.

    Shape:
        - sources: :math:`(B, N, C, H, W)`
        - output: :math:`(B, C', H, W)`

    Example:
        >>> x = torch.rand(1, 2, 3, 70, 50)
        >>> y = tiled_apply(lambda s: s.mean(1), x, tile=32, overlap=8)
        >>> torch.allclose(y, x.mean(1), atol=1e-6)
        True
    """
    if not isinstance(sources, Tensor) or sources.dim() != 5:
        shape = tuple(sources.shape) if isinstance(sources, Tensor) else type(sources).__name__
        raise ValueError(f"tiled_apply: sources must be a tensor [B, N, C, H, W], got {shape}")
    if not callable(fn):
        raise ValueError(f"tiled_apply: fn must be callable, got {type(fn).__name__}")
    tile, tile_batch = int(tile), int(tile_batch)
    if tile < 1:
        raise ValueError(f"tiled_apply: tile must be >= 1, got {tile}")
    overlap = int(tile * OVERLAP_FRACTION) if overlap is None else int(overlap)
    if not 0 <= overlap < tile:
        raise ValueError(f"tiled_apply: overlap must be in [0, tile={tile}), got {overlap}")
    if tile_batch < 1:
        raise ValueError(f"tiled_apply: tile_batch must be >= 1, got {tile_batch}")

    B, _, _, H, W = sources.shape
    th, tw = min(tile, H), min(tile, W)
    ys, xs = tile_starts(H, th, overlap), tile_starts(W, tw, overlap)
    ry, rx = blend_ramps(ys, th), blend_ramps(xs, tw)
    # separable weights on a tile grid -> the normaliser is an outer product of two 1-D sums
    norm_y, norm_x = _axis_normaliser(ys, ry, th, H), _axis_normaliser(xs, rx, tw, W)
    out_device = sources.device
    run_device = torch.device(device) if device is not None else out_device

    jobs = [(b, i, j) for b in range(B) for i in range(len(ys)) for j in range(len(xs))]
    out: Optional[Tensor] = None
    bar = Progress(len(jobs), "tiles", enabled=len(jobs) >= PROGRESS_MIN_TILES if progress is None else progress)
    for start in range(0, len(jobs), tile_batch):
        chunk = jobs[start : start + tile_batch]
        batch = torch.stack([sources[b, :, :, ys[i] : ys[i] + th, xs[j] : xs[j] + tw] for b, i, j in chunk])
        res = fn(batch.to(run_device))
        if not isinstance(res, Tensor) or res.dim() != 4 or res.shape[0] != len(chunk) or res.shape[-2:] != (th, tw):
            got = tuple(res.shape) if isinstance(res, Tensor) else type(res).__name__
            raise ValueError(f"tiled_apply: fn must return [{len(chunk)}, C, {th}, {tw}] for a tile batch "
                             f"{tuple(batch.shape)}, got {got}")
        if out is None:
            out_dtype = torch.promote_types(res.dtype, torch.float32) if res.is_floating_point() else torch.float32
            out = torch.zeros(B, res.shape[1], H, W, dtype=_accumulator_dtype(out_device), device=out_device)
        res = res.to(device=out_device, dtype=out.dtype)
        for k, (b, i, j) in enumerate(chunk):
            w = (ry[i][:, None] * rx[j][None, :]).to(device=out_device, dtype=out.dtype)
            out[b, :, ys[i] : ys[i] + th, xs[j] : xs[j] + tw].addcmul_(res[k], w)
        del batch, res
        bar.update(len(chunk))
    bar.close()
    assert out is not None  # at least one tile always exists
    norm = (norm_y[:, None] * norm_x[None, :]).to(device=out_device, dtype=out.dtype)
    return out.div_(norm).to(out_dtype)


class TiledApply(nn.Module):
    """Thin module around :func:`tiled_apply` for a fixed callable (e.g. a fusion module).

    Args:
        fn: the tile function, ``[b, N, C, h, w] -> [b, C', h, w]``.
        tile: tile size (default 512, Sec. 3).
        overlap: minimum overlap (default ``tile // 4``, Sec. 3).
        tile_batch: tiles per call of ``fn``.

    Shape:
        - input: :math:`(B, N, C, H, W)`
        - output: :math:`(B, C', H, W)`
    """

    def __init__(self, fn: TileFn, tile: int = DEFAULT_TILE, overlap: Optional[int] = None, tile_batch: int = 1):
        super().__init__()
        self.fn, self.tile, self.overlap, self.tile_batch = fn, tile, overlap, tile_batch

    def forward(self, sources: Tensor) -> Tensor:
        return tiled_apply(self.fn, sources, self.tile, self.overlap, self.tile_batch)
