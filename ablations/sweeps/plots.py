"""Curve figures of the swept-setting tables (threshold, window size, loss pairs) and W&B logging.

A side file with a ``plot`` key is also drawn as a figure next to its tables
(``<out>/<paper>/<table>.png``): each metric against the swept setting, ours and the paper's::

    plot: {x: model.threshold, xlabel: "threshold (Eq. 8)"}                  # MSASN Table 8
    plot: {x: model.morph_window, series: model.refiner, metrics: [q_g]}    # UDPNet Fig. 7
    plot: {x: label}                                                        # GACN Fig. 9 (one tick per row)

``x`` is an override key of the rows (numbers are sorted) or ``label``; ``series`` splits the
rows into lines by another key; ``metrics`` defaults to the table's columns, else every metric
our runs have. Missing values leave gaps; a panel's title carries Kendall's tau of our ordering
against the printed one where the table has it (:func:`ablations.sweeps.tables.shape_comparison`). :func:`ablations.sweeps.tables.log_tables_to_wandb` puts the
figures and the tables (one ``wandb.Table`` each) into one W&B run (``ablations/tables.py --wandb``).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

from ablations.sweeps.grid import SweepError


def _num(v) -> Optional[float]:
    from ablations.sweeps.point_results import finite

    return finite(v)


def curve_data(table, side: dict) -> tuple[list, dict, list]:
    """``(x values, {series label: {metric: [value per x]}}, metrics)`` of a side file's ``plot``.

    Raises:
        SweepError: ``plot`` is malformed or names a key some row does not set.
    """
    spec = side.get("plot")
    if not isinstance(spec, dict) or not spec.get("x"):
        raise SweepError(f"{side['path']}: 'plot' must be {{x: <override key or label>, series: ..., metrics: [...]}}")
    xkey, skey = str(spec["x"]), spec.get("series")
    overrides = {str(r["label"]): dict(r.get("overrides") or {}) for r in side["rows"]}
    rows = [r for r in table.rows if r.ours is not None and r.label in overrides]

    def value(r, key):
        if key == "label":
            return r.label
        if key not in overrides[r.label]:
            raise SweepError(f"{side['path']}: plot key '{key}' is not in the overrides of row '{r.label}'")
        return overrides[r.label][key]

    xs = list(dict.fromkeys(value(r, xkey) for r in rows))
    if all(_num(x) is not None and not isinstance(x, bool) for x in xs) and xkey != "label":
        xs = sorted(xs, key=float)
    metrics = [str(m) for m in spec.get("metrics") or table.metrics]
    if not metrics:
        metrics = sorted({m for r in rows for m in r.ours})
    series: dict = {}
    for r in rows:
        name = f"{value(r, skey)}" if skey else ""
        for who, vals in (("ours", r.ours), ("paper", r.paper)):
            label = f"{who}: {name}" if name else who
            line = series.setdefault(label, {m: [None] * len(xs) for m in metrics})
            for m in metrics:
                line[m][xs.index(value(r, xkey))] = _num(vals.get(m))
    series = {k: v for k, v in series.items() if any(x is not None for vals in v.values() for x in vals)}
    drawn = [m for m in metrics if any(x is not None for v in series.values() for x in v[m])]
    return xs, series, drawn or metrics  # a panel no row has a value for is left out (e.g. PSNR without ground truth)


def draw_curves(table, side: dict, png: Path) -> Optional[Path]:
    """Draw the side file's ``plot`` to ``png`` (atomically); None when it has no ``plot``."""
    if not side.get("plot"):
        return None
    import matplotlib.pyplot as plt

    from mfif.io import atomic_write_bytes
    from mfif.viz import curve_figure

    xs, series, metrics = curve_data(table, side)
    spec = side["plot"]
    notes = {}
    for m in metrics:
        key = table.keys.get(m)
        if key is not None and key(1.0) < key(0.0):  # as ablations/tables.py: lower, or an ideal value
            notes[m] = "lower is better" if key(-1.0) > key(0.0) else "closest to the ideal value is best"
        shape = (getattr(table, "shape", None) or {}).get(m)
        if shape and shape["tau"] is not None:  # tables.shape_comparison: ordering of ours vs printed
            notes[m] = f"{notes[m] + '; ' if m in notes else ''}Kendall τ {shape['tau']:.2f}"
    fig = curve_figure(xs, series, metrics, title=table.title, xlabel=str(spec.get("xlabel") or spec["x"]),
                       panel_notes=notes)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(png), buf.getvalue())
    return Path(png)
