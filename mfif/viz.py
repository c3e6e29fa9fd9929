"""Pictures for reports and loggers: image grids, decision maps, metric curves.

* :func:`make_grid` - one row per sample, ``source_1 .. source_N | fused | ground truth``;
* :func:`make_map_grid` - one row per sample, the decision map (weight) of every source, white
  where that source is taken (decision-map methods: GACN, MSASN, UFA-Fuse, UDPNet's masks);
* :func:`curve_figure` - metric curves against a swept setting (threshold, window size), ours
  and the paper's, one panel per metric (``ablations/tables.py``);
* :func:`metric_table_rows` - per-image test metrics as the columns and rows of a ``wandb.Table``.

The grids are ``uint8`` arrays ``[H, W, 3]`` (what ``wandb.Image`` and PIL take).
"""
from __future__ import annotations

from typing import Optional, Sequence

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


def tile_rows(rows: Sequence[Sequence[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Lay out rows of equally sized ``[H, W, 3]`` uint8 tiles with white gaps between them.

    Shape:
        - rows: R rows of K tiles :math:`(H, W, 3)` each
        - output: :math:`(R \\cdot (H + gap) - gap, K \\cdot (W + gap) - gap, 3)`
    """
    if not rows or not rows[0]:
        raise ValueError("tile_rows needs at least one row with one tile")
    h, w = rows[0][0].shape[:2]
    if any(t.shape[:2] != (h, w) for r in rows for t in r):
        raise ValueError(f"all tiles must be {h}x{w}, got {sorted({t.shape[:2] for r in rows for t in r})}")
    k = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + gap) - gap, k * (w + gap) - gap, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, t in enumerate(r):
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = t
    return out


def make_grid(sources: Tensor, fused: Tensor, gt: Optional[Tensor] = None, gap: int = 4) -> np.ndarray:
    """Rows of ``source_1 .. source_N | fused | gt`` for a batch.

    Shape:
        - sources: :math:`(B, N, C, H, W)`; fused, gt: :math:`(B, C, H, W)`
        - output: :math:`(B \\cdot (H + gap) - gap, K \\cdot (W + gap) - gap, 3)` uint8, K = N + 1 (+1 with gt)
    """
    rows = []
    for b in range(sources.shape[0]):
        tiles = [to_uint8(s) for s in sources[b]] + [to_uint8(fused[b])]
        rows.append(tiles + ([to_uint8(gt[b])] if gt is not None else []))
    return tile_rows(rows, gap)


def make_map_grid(maps: Tensor, gap: int = 4) -> np.ndarray:
    """Rows of ``map_1 .. map_N`` (gray, white = that source is taken) for a batch.

    Shape:
        - maps: :math:`(B, N, 1, H, W)` in [0, 1]
        - output: :math:`(B \\cdot (H + gap) - gap, N \\cdot (W + gap) - gap, 3)` uint8
    """
    if not isinstance(maps, Tensor) or maps.dim() != 5 or maps.shape[2] != 1:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"maps must be [B, N, 1, H, W], got {shape}")
    return tile_rows([[to_uint8(m) for m in maps[b]] for b in range(maps.shape[0])], gap)


def curve_figure(x: Sequence, series: dict, metrics: Sequence[str], title: str = "", xlabel: str = "",
                 panel_notes: Optional[dict] = None):
    """A matplotlib figure: one panel per metric, value against ``x``, one line per series.

    Args:
        x: the swept setting's values (numbers, or labels plotted at equal spacing).
        series: ``{label: {metric: [value or None per x]}}`` (e.g. ``ours`` and ``paper``);
            missing values (None / NaN) leave gaps, never zeros.
        metrics: the panels, in order.
        panel_notes: ``{metric: note}`` added to a panel's title (e.g. ``lower is better``).

    Returns:
        The ``matplotlib.figure.Figure`` (Agg backend; the caller saves and closes it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x)
    xs = list(x) if numeric else list(range(len(x)))
    cols = min(3, max(1, len(metrics)))
    nrows = -(-len(metrics) // cols) if metrics else 1
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        for label, vals in series.items():
            ys = [np.nan if v is None else float(v) for v in vals.get(m, [None] * len(xs))]
            if not all(np.isnan(ys)):
                ax.plot(xs, ys, marker="o", label=label)
        note = (panel_notes or {}).get(m)
        ax.set_title(f"{m} ({note})" if note else m)
        ax.set_xlabel(xlabel)
        if not numeric:
            ax.set_xticks(xs, [str(v) for v in x], rotation=30, ha="right")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    if title:  # wrapped to the figure's width (citations are long)
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, 55 * cols)), fontsize=10)
    fig.tight_layout()
    return fig


def metric_table_rows(rows: Sequence[dict]) -> tuple[list, list]:
    """``(columns, data)`` of a per-image metric table (``wandb.Table``): ``image`` first, then
    every metric in first-seen order; a value an image lacks is None."""
    columns = ["image"] + list(dict.fromkeys(k for r in rows for k in r if k != "image"))
    return columns, [[r.get(c) for c in columns] for r in rows]


def stack_batches(items: list[Tensor]) -> Tensor:
    return torch.cat(items, 0)
