"""What a run leaves behind for people: fused images, per-image metric tables, an image grid."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import torch
from omegaconf import DictConfig
from torch import Tensor

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


def score_image(metrics: list[str], fused: Tensor, sources: Tensor, gt: Optional[Tensor]) -> dict:
    """Every named metric on one image (``nan`` for a full-reference metric without gt)."""
    row = {}
    for m in metrics:
        spec = metric_spec(m)
        metric = build_metric(m)
        # forward() returns the batch value without any cross-rank sync (this runs on rank 0 only)
        if spec.kind == "fr":
            row[m] = float("nan") if gt is None else float(metric(fused=fused[None], gt=gt[None]))
        else:
            row[m] = float(metric(fused=fused[None], sources=sources[None]))
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


def write_predictions(preds: Iterable[dict], out_dir: Path, overwrite: bool = False, save_maps: bool = False) -> list[Path]:
    """One fused PNG per scene, named after the scene (ready for ``mode=evaluate``)."""
    paths = []
    for it in _unbatch(preds):
        path = Path(out_dir) / f"{it['name']}.png"
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists (pass overwrite to replace it)")
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
    rows = [{"image": it["name"], **score_image(metrics, it["fused"], it["sources"], it["gt"])} for it in items]
    write_metric_tables(rows, metrics, run_dir / "metrics")
    grid_items = [it for it in items if it["fused"].shape == items[0]["fused"].shape][:max_grid_rows]
    gt = torch.stack([it["gt"] for it in grid_items]) if all(it["gt"] is not None for it in grid_items) else None
    grid = make_grid(torch.stack([it["sources"] for it in grid_items]), torch.stack([it["fused"] for it in grid_items]), gt)
    save_image(grid, run_dir / "grid.png")
    return {"rows": rows, "grid": run_dir / "grid.png"}


def evaluate_folder(cfg: DictConfig, fused_dir: Path, run_dir: Path) -> dict:
    """Score the fused images in ``fused_dir`` against the scenes of ``cfg.data.benchmark``.

    Writes ``run_dir/metrics.csv`` and ``.md`` (the format of ``experiments/evaluate.py``).
    """
    from mfif.scenes import discover_scenes
    from mfif.config import ConfigError
    from mfif.metrics.evaluation import EvaluationError, score_folder, write_tables

    scenes = discover_scenes(cfg.data.benchmark, gt_dir=cfg.data.gt_dir)
    try:
        per_image = score_folder(fused_dir, scenes, list(cfg.metrics))
        write_tables({Path(fused_dir).name: per_image}, run_dir / "metrics.csv", overwrite=True)
    except EvaluationError as e:
        raise ConfigError(str(e)) from e
    return per_image
