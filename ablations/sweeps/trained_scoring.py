"""Scoring for ``ablations/trained.py``: the reference rows, the yardsticks' scenes and the CSV cells.

* ``cpu``: the run's own test metrics (``run.py fit`` tests the selected checkpoint and writes
  ``metrics.csv``; :func:`ablations.sweeps.collect.point_metrics` reads it); when the profile
  scored other columns than the side file's, the selected checkpoint is scored here with the same
  report code;
* ``init`` and ``average`` (:func:`reference_rows`): the run's config and test set through
  ``run.py``'s own builders and :func:`mfif.reporting.write_report`, so the three rows share one
  convention;
* the yardsticks: :mod:`ablations.sweeps.parity` on exactly the scenes the run was tested on
  (:func:`test_scenes`, :func:`scene_view`);
* :func:`cells_for` / :func:`write_csv`: ``trained.csv`` (``paper,table,dataset,row,metric,ours,printed,rel_diff``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from ablations.sweeps.collect import point_metrics
from ablations.sweeps.grid import ROOT, SweepError, load_side
from ablations.sweeps.parity import CSV_HEADER, DATASETS, ParityError, parity_rows
from ablations.sweeps.tables import _num
from ablations.sweeps.trained_specs import PaperSpec


class TrainedError(ValueError):
    """Bad input for the trained-results command; the message names the paper, folder, file or key."""


class TrainingFailed(TrainedError):
    """A training stage failed or was stopped (exit code 1: the input was fine)."""


def side_file(paper: str, spec: PaperSpec, root: Path = ROOT) -> dict:
    try:
        return load_side(Path(root) / "ablations" / paper / f"{spec.table}.paper.yaml")
    except (SweepError, OSError) as e:
        raise TrainedError(f"{paper}: {e}") from e


def side_metrics(side: dict) -> list:
    """The side file's columns that are registered metrics (``time``/``arank`` are not scored)."""
    from mfif.metrics import metric_names

    known = set(metric_names())
    return [str(c) for c in side["columns"] if str(c) in known]


def yardstick_rows(paper: str, spec: PaperSpec, root: Path, skip_released: bool) -> list:
    """The side file's regenerable rows (:func:`ablations.sweeps.parity.parity_rows`) on the paper's test dataset."""
    if spec.dataset is None:
        return []
    try:
        rows = [r for r in parity_rows(None, root) if r.paper == paper and r.table == spec.table and r.dataset == spec.dataset]
    except ParityError as e:
        raise TrainedError(str(e)) from e
    return [r for r in rows if not (skip_released and r.method)]


def selected_checkpoint(run_dir: Path) -> Path:
    """The checkpoint the run's test used: the best of ``checkpoint.monitor``, else the final ``last.ckpt``."""
    from mfif.checkpoints import CheckpointError, best_checkpoint

    try:
        return best_checkpoint(run_dir)
    except CheckpointError:
        last = run_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            return last
        raise TrainedError(f"{run_dir}: no checkpoint (the run did not finish)")


def reference_rows(cfg_path: str, overrides: list, metrics: list, out_dir: Path, run_dir: Path) -> dict:
    """``{"init": {...}, "average": {...}}`` (and ``"cpu"`` when the run's report lacks columns):
    each scored by ``run.py``'s report code (:func:`mfif.reporting.write_report`) on the run's test
    set with ``metrics``, into ``out_dir/<row>/``.

    ``init`` is the module exactly as ``run.py`` builds it before training (the run's config, its
    seed, no step); ``average`` fuses every scene by the mean of its sources. The rows are kept in
    ``out_dir/rows.json`` with what made them: a rerun with the same config, metrics and checkpoint
    reads them instead of scoring again.
    """
    ckpt = selected_checkpoint(run_dir)
    key = {"config": cfg_path, "overrides": list(overrides), "metrics": list(metrics), "checkpoint": str(ckpt),
           "checkpoint_mtime_ns": ckpt.stat().st_mtime_ns}
    return cached(out_dir / "rows.json", key, lambda: _score_references(cfg_path, overrides, metrics, out_dir, run_dir, ckpt))


def cached(path: Path, key: dict, compute: Callable[[], object]):
    """``compute()``, kept in ``path`` (JSON) with ``key``: a later call with the same key reads it back."""
    import json

    from mfif.io import atomic_write_bytes

    try:
        doc = json.loads(path.read_text())
        if doc.get("key") == json.loads(json.dumps(key)) and "value" in doc:
            return doc["value"]
    except (OSError, ValueError, AttributeError):
        pass
    value = compute()
    atomic_write_bytes(path, (json.dumps({"key": key, "value": value}, indent=1) + "\n").encode())
    return value


def _score_references(cfg_path: str, overrides: list, metrics: list, out_dir: Path, run_dir: Path, ckpt: Path) -> dict:
    import lightning as L
    import torch
    from omegaconf import OmegaConf

    from experiments.run import build_datamodule, build_module, predict_local, prepare_data
    from mfif.checkpoints import load_module
    from mfif.config import load_config
    from mfif.reporting import write_report

    cfg = load_config(cfg_path, [*overrides, "mode=test", "trainer.compile=false"])
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)  # as run.py: before the weights are initialised
    module, dm = build_module(cfg), build_datamodule(cfg)
    prepare_data(cfg, dm)
    scored = OmegaConf.merge(cfg, {"metrics": list(metrics)})
    preds = predict_local(module, dm)
    write_report(scored, module, preds, out_dir / "init")
    write_report(scored, module, [{**p, "fused": p["sources"].mean(1), "maps": None} for p in preds], out_dir / "average")
    rows = {"init": point_metrics(out_dir / "init"), "average": point_metrics(out_dir / "average")}
    if any(m not in point_metrics(run_dir) for m in metrics):  # the profile scored other columns: score its checkpoint here
        trained = load_module(ckpt)
        with torch.inference_mode():
            write_report(scored, trained, predict_local(trained, dm), out_dir / "cpu_eval")
        rows["cpu"] = point_metrics(out_dir / "cpu_eval")
    return rows


def test_scenes(run_dir: Path, data: Path, dataset: str) -> list:
    """The two-source scenes of ``dataset`` the run was tested on (its ``fused/<scene>.png``)."""
    from mfif.scenes import discover_scenes

    names = {p.stem for p in (run_dir / "fused").glob("*.png")}
    scenes = [s for s in discover_scenes(data / DATASETS[dataset][0]) if len(s.sources) == 2 and s.name in names]
    if not scenes:
        raise TrainedError(f"{run_dir / 'fused'}: none of the scenes of {data / DATASETS[dataset][0]} (was the run "
                           f"tested on another set?)")
    return scenes


def scene_view(data: Path, dataset: str, scenes: list, out_dir: Path) -> Path:
    """``data`` itself when ``scenes`` are all of the dataset, else a folder of links holding only
    those scenes (and ``baselines/``), so that parity scores exactly the scenes our run saw."""
    from mfif.scenes import discover_scenes

    src = DATASETS[dataset][0]
    every = {s.name for s in discover_scenes(data / src) if len(s.sources) == 2}
    if every == {s.name for s in scenes}:
        return data
    view = out_dir / "testset"
    folder = view / src
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for s in scenes:
        for f in s.sources:
            (folder / Path(f).name).symlink_to(Path(f).resolve())
    if (data / "baselines").is_dir() and not (view / "baselines").exists():
        (view / "baselines").symlink_to((data / "baselines").resolve())
    return view


def yardstick_name(row, paper_method: str) -> str:
    if row.use_scored:
        return f"published:{row.scored}"
    if row.published:
        return f"published:{row.published}"
    return "released" if row.method == paper_method else f"released:{row.method}"


def cells_for(paper: str, spec: PaperSpec, side: dict, metrics: list, ours: dict, yard: list, names: dict) -> list:
    """The ``trained.csv`` cells: our rows (``cpu`` against the printed row), the yardsticks, ``printed``."""
    own = next((r for r in side["rows"] if str(r["label"]) == spec.row), None)
    if own is None:
        raise TrainedError(f"{side['path']}: no row '{spec.row}' (the paper's own row)")
    printed = {m: _num((own.get("paper") or {}).get(m)) for m in metrics}
    ds = spec.dataset or "test split"
    base = dict(paper=paper, table=spec.table, dataset=ds)
    cells = []
    for row, vals in ours.items():
        for m in metrics:
            o, p = _num(vals.get(m)), printed[m] if row == "cpu" else None
            rel = (o - p) / abs(p) if o is not None and p not in (None, 0) else None
            cells.append({**base, "row": row, "metric": m, "ours": o, "printed": p, "rel_diff": rel})
    for c in yard:
        cells.append({**c, "row": names[c["row"]], "dataset": ds})
    cells += [{**base, "row": "printed", "metric": m, "ours": None, "printed": printed[m], "rel_diff": None}
              for m in metrics if printed[m] is not None]
    return cells


def write_csv(cells: list, path: Path) -> None:
    from mfif.io import write_csv as _write

    fmt = lambda v: "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else (f"{v:.6g}" if isinstance(v, float) else v)  # noqa: E731
    _write(path, CSV_HEADER, [[fmt(c[k]) for k in CSV_HEADER] for c in cells])
