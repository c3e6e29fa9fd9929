"""What a run leaves behind for people: fused images, per-image metric tables, an image grid."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import torch
from omegaconf import DictConfig
from torch import Tensor
from torchmetrics import Metric

from mfif.io import markdown_table, save_image, write_csv
from mfif.metrics import build_metric, metric_spec
from mfif.viz import make_grid


def _unbatch(preds: Iterable[dict]) -> list[dict]:
    items = []
    for p in preds:
        for i, name in enumerate(p["name"]):
            items.append({
                "name": name,
                "fused": p["fused"][i],
                "sources": p["sources"][i],
                "maps": None if p.get("maps") is None else p["maps"][i],
                "gt": None if p.get("gt") is None else p["gt"][i],
            })
    return items


def build_metrics(metrics: Iterable[str]) -> dict[str, Metric]:
    """One metric object per name, built once for a whole report (network metrics load weights)."""
    return {m: build_metric(m) for m in metrics}


def score_image(metrics: dict[str, Metric], fused: Tensor, sources: Tensor, gt: Optional[Tensor]) -> dict:
    """Every metric of ``metrics`` (:func:`build_metrics`) on one image (``nan``: full-reference without gt).

    Shape:
        - fused: :math:`(C, H, W)`; sources: :math:`(N, C, H, W)`; gt: :math:`(C, H, W)` or None
    """
    row = {}
    for name, metric in metrics.items():
        # forward() returns this image's value without any cross-rank sync (rank 0 only); reset()
        # drops the accumulated state so memory does not grow with the number of images
        if metric_spec(name).kind == "fr":
            row[name] = float("nan") if gt is None else float(metric(fused=fused[None], gt=gt[None]))
        else:
            row[name] = float(metric(fused=fused[None], sources=sources[None]))
        metric.reset()
    return row


def write_metric_tables(rows: list[dict], metrics: list[str], out_stem: Path, label: str = "image") -> None:
    """``<stem>.csv`` and ``<stem>.md``: one row per image plus a mean row."""
    header = [label] + metrics
    table = [[r[label]] + [r[m] for m in metrics] for r in rows]
    means = []
    for m in metrics:
        vals = torch.tensor([r[m] for r in rows], dtype=torch.float64)
        vals = vals[~torch.isnan(vals)]
        means.append(float(vals.mean()) if len(vals) else float("nan"))
    table.append(["mean"] + means)
    write_csv(out_stem.with_suffix(".csv"), header, table)
    from mfif.io import atomic_write_bytes

    atomic_write_bytes(out_stem.with_suffix(".md"), markdown_table(header, table).encode())


def existing_outputs(names: Iterable[str], out_dir: Path, save_maps: bool = False) -> list[Path]:
    """The files :func:`write_predictions` would replace for scenes ``names``."""
    out_dir = Path(out_dir)
    files = [out_dir / f"{n}.png" for n in names] + ([out_dir / f"{n}_map.png" for n in names] if save_maps else [])
    return [p for p in files if p.exists()]


def write_predictions(preds: Iterable[dict], out_dir: Path, overwrite: bool = False, save_maps: bool = False) -> list[Path]:
    """One fused PNG per scene, named after the scene (ready for ``mode=evaluate``).

    Raises:
        FileExistsError: some output exists and ``overwrite`` is false; checked for every scene
            before the first file is written, so nothing is half-done.
    """
    items = _unbatch(preds)
    clash = [] if overwrite else existing_outputs([it["name"] for it in items], out_dir, save_maps)
    if clash:
        more = f" (and {len(clash) - 1} more)" if len(clash) > 1 else ""
        raise FileExistsError(f"{clash[0]} exists{more}; set overwrite=true to replace")
    paths = []
    for it in items:
        path = Path(out_dir) / f"{it['name']}.png"
        save_image(it["fused"], path)
        if save_maps and it["maps"] is not None:
            save_image(it["maps"][0], Path(out_dir) / f"{it['name']}_map.png")
        paths.append(path)
    return paths


def write_report(cfg: DictConfig, module, preds: list[dict], run_dir: Path, max_grid_rows: int = 4) -> dict:
    """Fused images, ``metrics.csv``/``metrics.md`` and ``grid.png`` in ``run_dir``."""
    items = _unbatch(preds)
    write_predictions(preds, run_dir / "fused", overwrite=True)
    metrics = list(cfg.metrics)
    built = build_metrics(metrics)
    rows = [{"image": it["name"], **score_image(built, it["fused"], it["sources"], it["gt"])} for it in items]
    write_metric_tables(rows, metrics, run_dir / "metrics")
    grid_items = [it for it in items if it["fused"].shape == items[0]["fused"].shape][:max_grid_rows]
    gt = torch.stack([it["gt"] for it in grid_items]) if all(it["gt"] is not None for it in grid_items) else None
    grid = make_grid(torch.stack([it["sources"] for it in grid_items]), torch.stack([it["fused"] for it in grid_items]), gt)
    save_image(grid, run_dir / "grid.png")
    return {"rows": rows, "grid": run_dir / "grid.png"}


def evaluate_folder(cfg: DictConfig, fused_dir: Path, run_dir: Path, stem: str = "metrics") -> dict:
    """Score the fused images in ``fused_dir`` against the scenes of ``cfg.data.benchmark``.

    Writes ``run_dir/<stem>.csv`` and ``.md`` (the format of ``experiments/evaluate.py``).
    """
    from mfif.scenes import discover_scenes
    from mfif.config import ConfigError
    from mfif.metrics.evaluation import EvaluationError, score_folder, write_tables

    scenes = discover_scenes(cfg.data.benchmark, gt_dir=cfg.data.gt_dir)
    try:
        per_image = score_folder(fused_dir, scenes, list(cfg.metrics))
        run_dir.mkdir(parents=True, exist_ok=True)  # only once everything is scored
        write_tables({Path(fused_dir).name: per_image}, run_dir / f"{stem}.csv", overwrite=True)
    except EvaluationError as e:
        raise ConfigError(str(e)) from e
    return per_image
