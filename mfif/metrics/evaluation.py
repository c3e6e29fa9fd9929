"""Score folders of fused images against a benchmark set; ARank; CSV / Markdown tables.

Used by ``experiments/evaluate.py`` and by ``run.py mode=evaluate``. A *method* is a folder of
fused images; the fused image of scene ``name`` is ``<name>.<image ext>`` in that folder
(scenes come from :func:`mfif.scenes.discover_scenes`).
"""
from __future__ import annotations

import csv
import io
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor

from mfif.metrics.registry import build_metric, metric_spec
from mfif.progress import duration, eta_seconds

__all__ = ["EvaluationError", "find_fused", "score_scene", "score_folder", "method_means", "arank", "write_tables", "format_markdown"]

PathLike = Union[str, Path]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm", ".pnm")
MEAN_ROW = "mean"


class EvaluationError(ValueError):
    """Bad evaluation input; the message names the file, folder, scene or metric."""


def find_fused(fused_dir: PathLike, scene_name: str) -> Path:
    """The fused file ``<scene_name>.<image ext>`` in ``fused_dir`` (exactly one).

    Scene names with a ``/`` (nested benchmark layouts) map to sub-folders.
    """
    base = Path(fused_dir) / scene_name
    folder = base.parent
    files = folder.iterdir() if folder.is_dir() else []
    hits = [p for p in files if p.stem == base.name and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    if not hits:
        raise EvaluationError(f"no fused image for scene '{scene_name}' in {fused_dir} (expected {base}.<png|jpg|...>)")
    if len(hits) > 1:
        raise EvaluationError(f"several fused images for scene '{scene_name}': {sorted(str(h) for h in hits)}")
    return hits[0]


def _load(path: Path) -> Tensor:
    from mfif.io import BenchmarkError, load_image

    try:
        return load_image(path)
    except BenchmarkError as e:
        raise EvaluationError(str(e)) from e


def score_scene(
    fused: Tensor,
    sources: Tensor,
    metrics: dict,
    gt: Optional[Tensor] = None,
) -> dict[str, float]:
    """Score one fused image.

    Args:
        fused: ``[C, H, W]`` in [0, 1] (or uint8).
        sources: ``[N, C, H, W]``.
        metrics: name -> metric object (from :func:`mfif.metrics.build_metric`).
        gt: ``[C, H, W]``, required by full-reference metrics.
    """
    out = {}
    for name, m in metrics.items():
        spec = metric_spec(name)
        m.reset()
        if spec.kind == "nr":
            m.update(fused[None], sources[None])
        else:
            if gt is None:
                raise EvaluationError(f"metric '{name}' needs a ground truth image")
            m.update(fused[None], gt[None])
        out[name] = float(m.compute())
    return out


def score_folder(
    fused_dir: PathLike,
    scenes: Sequence,
    metric_names: Sequence[str],
    device: Union[str, torch.device] = "cpu",
    metrics: Optional[dict] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> dict[str, dict[str, float]]:
    """Score every scene's fused image in ``fused_dir``.

    Args:
        fused_dir: folder of fused images, one per scene (``<scene name>.<ext>``).
        scenes: objects with ``.name``, ``.sources`` (paths) and ``.gt`` (path or None).
        metric_names: registered metric names.
        device: where the metrics run.
        metrics: pre-built metric objects (reused across folders), else built here.
        progress: optional callback receiving a line per scored image:
            ``[k/n] <folder>/<scene>: <metric>=<value>, ...  (ETA 1m05s)``.

    Returns:
        ``{scene name: {metric: value}}`` in scene order.

    Raises:
        EvaluationError: missing folder, missing/ambiguous/unreadable fused file, size
            mismatch, full-reference metric without ground truth.
    """
    fused_dir = Path(fused_dir)
    if not fused_dir.is_dir():
        raise EvaluationError(f"fused folder not found: {fused_dir}")
    if metrics is None:
        metrics = build_metrics(metric_names, device)
    needs_gt = [n for n in metric_names if metric_spec(n).kind == "fr"]
    paths = {s.name: find_fused(fused_dir, s.name) for s in scenes}  # fail before any work
    if needs_gt:
        missing = [s.name for s in scenes if s.gt is None]
        if missing:
            raise EvaluationError(f"full-reference metrics {needs_gt} need a ground truth; none for scenes {missing[:5]} (pass --gt)")
    results: dict[str, dict[str, float]] = {}
    t0 = time.monotonic()
    for scene in scenes:
        fused = _load(paths[scene.name]).to(device)
        srcs = [_load(Path(p)).to(device) for p in scene.sources]
        if len(srcs) < 2:
            raise EvaluationError(f"scene '{scene.name}' has {len(srcs)} source(s); at least 2 are needed")
        shapes = {tuple(s.shape[-2:]) for s in srcs}
        if len(shapes) != 1 or tuple(fused.shape[-2:]) not in shapes:
            raise EvaluationError(
                f"size mismatch in scene '{scene.name}': fused {paths[scene.name]} is "
                f"{tuple(fused.shape[-2:])}, sources are {sorted(shapes)}"
            )
        chans = {s.shape[0] for s in srcs}
        if len(chans) != 1:
            # Mixed gray/colour sources: compare in gray (MATLAB weights).
            from mfif.ops.colour import rgb_to_gray

            srcs = [rgb_to_gray(s) for s in srcs]
        gt = None
        if needs_gt:
            gt = _load(Path(scene.gt)).to(device)
            if gt.shape != fused.shape:
                raise EvaluationError(f"ground truth {scene.gt} has shape {tuple(gt.shape)}, fused {tuple(fused.shape)}")
        results[scene.name] = score_scene(fused, torch.stack(srcs, 0), metrics, gt)
        if progress is not None:
            k, n = len(results), len(scenes)
            eta = eta_seconds(k, n, time.monotonic() - t0)
            progress(f"[{k}/{n}] {fused_dir.name}/{scene.name}: " + ", ".join(f"{m}={v:.4g}" for m, v in results[scene.name].items())
                     + (f"  (ETA {duration(eta)})" if eta is not None else ""))
    return results


def build_metrics(metric_names: Iterable[str], device: Union[str, torch.device] = "cpu") -> dict:
    """Build the named metrics (unknown names raise :class:`EvaluationError` with a hint)."""
    out = {}
    for n in metric_names:
        try:
            metric_spec(n)
        except KeyError as e:
            raise EvaluationError(e.args[0]) from e
        out[n] = build_metric(n).to(device)
    return out


def method_means(per_image: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the images of one method (NaNs ignored)."""
    names = list(next(iter(per_image.values())).keys()) if per_image else []
    out = {}
    for n in names:
        vals = [r[n] for r in per_image.values() if not math.isnan(r[n])]
        out[n] = sum(vals) / len(vals) if vals else float("nan")
    return out


def arank(table: dict[str, dict[str, float]]) -> dict[str, float]:
    """ARank (UDPNet, Sec. IV-B): average over metrics of each method's rank.

    Per metric the methods are ranked on their mean value, rank 1 = best according to the
    metric's direction (``higher_is_better``, or the distance to ``optimum`` for Q_SF);
    ties share the average of their ranks; a NaN ranks last. Lower ARank is better.

    Args:
        table: ``{method: {metric: mean value}}``.

    Returns:
        ``{method: ARank}``.
    """
    methods = list(table)
    metrics = sorted({m for row in table.values() for m in row})
    if not methods or not metrics:
        return {}
    total = {m: 0.0 for m in methods}
    for name in metrics:
        spec = metric_spec(name)
        keys = {}
        for m in methods:
            v = table[m].get(name, float("nan"))
            keys[m] = -math.inf if math.isnan(v) else spec.rank_key(v)
        ordered = sorted(methods, key=lambda m: -keys[m])
        i = 0
        while i < len(ordered):
            j = i
            while j + 1 < len(ordered) and keys[ordered[j + 1]] == keys[ordered[i]]:
                j += 1
            for k in range(i, j + 1):
                total[ordered[k]] += (i + j) / 2 + 1  # average rank of the tie group
            i = j + 1
    return {m: total[m] / len(metrics) for m in methods}


def _arrow(name: str) -> str:
    spec = metric_spec(name)
    if spec.optimum is not None:
        return f" (->{spec.optimum:g})"
    return " ↑" if spec.higher_is_better else " ↓"


def format_markdown(results: dict[str, dict[str, dict[str, float]]], ranks: Optional[dict[str, float]] = None) -> str:
    """Markdown: a summary table (method means, ARank) and a per-image table per method."""
    methods = list(results)
    names = list(next(iter(next(iter(results.values())).values())).keys())
    means = {m: method_means(results[m]) for m in methods}
    lines = ["# Fusion metrics", "", "## Mean per method", ""]
    head = ["method"] + [n + _arrow(n) for n in names] + (["ARank ↓"] if ranks else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        row = [m] + [f"{means[m][n]:.4f}" for n in names] + ([f"{ranks[m]:.2f}"] if ranks else [])
        lines.append("| " + " | ".join(row) + " |")
    for m in methods:
        lines += ["", f"## {m}", "", "| image | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
        for img, row in results[m].items():
            lines.append(f"| {img} | " + " | ".join(f"{row[n]:.4f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def _csv_text(results: dict[str, dict[str, dict[str, float]]], ranks: Optional[dict[str, float]]) -> str:
    names = list(next(iter(next(iter(results.values())).values())).keys())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "image"] + names + (["arank"] if ranks else []))
    for m, per_image in results.items():
        for img, row in per_image.items():
            w.writerow([m, img] + [repr(row[n]) for n in names] + ([""] if ranks else []))
        mean = method_means(per_image)
        w.writerow([m, MEAN_ROW] + [repr(mean[n]) for n in names] + ([repr(ranks[m])] if ranks else []))
    return buf.getvalue()


def _atomic_write(path: Path, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return Path(tmp)


def write_tables(
    results: dict[str, dict[str, dict[str, float]]],
    out_csv: PathLike,
    ranks: Optional[dict[str, float]] = None,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write the CSV (one row per method x image, a ``mean`` row per method, ARank column
    when given) and the Markdown file beside it (same stem, ``.md``).

    Both files are written to temporary files first and renamed only when both are
    complete, so an error never leaves a half-written table.

    Raises:
        EvaluationError: an output exists and ``overwrite`` is False, or its folder is missing.
    """
    if not results or not any(results.values()):
        raise EvaluationError("nothing to write: no scored images")
    out_csv = Path(out_csv)
    out_md = out_csv.with_suffix(".md")
    if not out_csv.parent.is_dir():
        raise EvaluationError(f"output folder does not exist: {out_csv.parent}")
    for p in (out_csv, out_md):
        if p.exists() and not overwrite:
            raise EvaluationError(f"output exists: {p} (pass --overwrite to replace it)")
    tmp_csv = _atomic_write(out_csv, _csv_text(results, ranks))
    try:
        tmp_md = _atomic_write(out_md, format_markdown(results, ranks))
    except BaseException:
        tmp_csv.unlink(missing_ok=True)
        raise
    os.replace(tmp_csv, out_csv)
    os.replace(tmp_md, out_md)
    return out_csv, out_md
