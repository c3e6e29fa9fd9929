"""A sweep's results: the test metrics of each grid point, from local run folders or from W&B.

Run-folder contract (written by ``ablations/sweep.py``, one folder per point)::

    <runs-root>/<sweep name>/<point id>/
        DONE              written atomically after the point succeeded (the runner skips it next time)
        point.json        the point's parameters and your key=value settings, written when it starts
        LOCK              held (flock) by the runner running the point: PID and host (ablations/runner.py)
        log.txt           stdout + stderr of the point (appended to by every attempt)
        checkpoints/      a training point's checkpoints: an unfinished point resumes from last.ckpt
        metrics.csv       experiments/run.py's report: one row per test image + a ``mean`` row
        csv/metrics.csv   Lightning's CSV logger: ``test/<metric>`` columns
        results.json      a benchmark program's figures (programs taking flags, e.g.
                          ablations/gacn/table3.py): ``{"metrics": {name: number}, ...}``,
                          written by :func:`ablations.sweeps.point_results.record` from ``--run_dir``

A point's values are those of all three; where two name the same value, ``results.json`` wins,
then the report's ``mean`` row, then Lightning's ``test/*``. Values that are missing or not finite
(e.g. a full-reference metric without ground truth) are left out, so the tables show them as
missing, never as zero.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from ablations.sweeps.grid import Point, SweepError, point_matches
from ablations.sweeps.point_results import RESULTS, finite, finite_metrics

DONE = "DONE"
POINT = "point.json"
DEFAULT_RUNS_ROOT = "runs/sweeps"


def point_dir(runs_root: str | Path, sweep_name: str, point_id: str) -> Path:
    return Path(runs_root) / sweep_name / point_id


def is_done(run_dir: Path) -> bool:
    return (Path(run_dir) / DONE).is_file()


def mark_done(run_dir: Path, info: dict) -> None:
    """Write the ``DONE`` marker atomically (a crash never leaves a half-written marker)."""
    from mfif.io import atomic_write_bytes

    info = {"finished": _dt.datetime.now().isoformat(timespec="seconds"), **info}
    atomic_write_bytes(Path(run_dir) / DONE, (json.dumps(info, indent=1) + "\n").encode())


def write_point_info(run_dir: Path, info: dict) -> None:
    """Write ``point.json`` (the parameters a point runs with) atomically."""
    from mfif.io import atomic_write_bytes

    atomic_write_bytes(Path(run_dir) / POINT, (json.dumps(info, indent=1, default=str) + "\n").encode())


def read_point_info(run_dir: Path) -> dict:
    """The ``point.json`` of a run folder ({} when missing or unreadable)."""
    try:
        info = json.loads((Path(run_dir) / POINT).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def last_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest ``checkpoints/last*.ckpt`` or SLURM requeue ``hpc_ckpt_*.ckpt`` of a run folder, or None."""
    run_dir = Path(run_dir)
    cands = [*run_dir.glob("hpc_ckpt_*.ckpt"), *(run_dir / "checkpoints").glob("last*.ckpt")]
    return max(cands, key=lambda p: p.stat().st_mtime) if cands else None


def read_report_means(path: Path) -> dict:
    """The ``mean`` row of a report ``metrics.csv`` (first column = image name) as {metric: value}."""
    if not Path(path).is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return {}
    header = rows[0]
    for r in rows[1:]:
        if r and r[0] == "mean":
            return {m: v for m, v in ((m, finite(x)) for m, x in zip(header[1:], r[1:])) if v is not None}
    return {}


def read_lightning_tests(path: Path) -> dict:
    """The last logged value of every ``test/<metric>`` column of Lightning's ``csv/metrics.csv``."""
    if not Path(path).is_file():
        return {}
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if k and k.startswith("test/") and finite(v) is not None:
                    out[k[len("test/"):]] = finite(v)
    return out


def read_results_json(path: Path) -> dict:
    """The finite ``metrics`` of a benchmark program's ``results.json`` as {name: value}.

    Raises:
        SweepError: the file exists but is not a JSON object with a ``metrics`` mapping.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SweepError(f"{path}: cannot read results ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), dict):
        raise SweepError(f"{path}: expected a JSON object with a 'metrics' mapping {{name: number}}")
    return finite_metrics(doc["metrics"])


def point_metrics(run_dir: Path) -> dict:
    """Test metrics of one run folder: ``results.json``, the report's ``mean`` row, Lightning's ``test/*``."""
    run_dir = Path(run_dir)
    return {**read_lightning_tests(run_dir / "csv" / "metrics.csv"), **read_report_means(run_dir / "metrics.csv"),
            **read_results_json(run_dir / RESULTS)}


def has_test_metrics(run_dir: Path) -> bool:
    """True when a run reached its test stage (an interrupted fit has no ``test/*`` values) or a
    benchmark wrote its figures."""
    return bool(point_metrics(run_dir))


def local_results(runs_root: str | Path, sweep_name: str, points: Sequence[Point]) -> dict:
    """{point id: {metric: value}} for the points whose run folder holds test metrics."""
    out = {}
    for p in points:
        m = point_metrics(point_dir(runs_root, sweep_name, p.id))
        if m:
            out[p.id] = m
    return out


def _flatten(d: Any, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _run_point(run, points: Sequence[Point]) -> Optional[Point]:
    """The point of a W&B run: by name (local runs are named after the point), else by its config."""
    for p in points:
        if run.name == p.id:
            return p
    flat = _flatten(dict(run.config))
    for p in points:
        if all(k in flat for k in p.varying) and point_matches(p, {k: flat[k] for k in p.varying}):
            return p
    return None


def wandb_results(sweep_name: str, points: Sequence[Point], path: Optional[str] = None, api: Any = None) -> dict:
    """{point id: {metric: value}} from finished W&B runs in group ``sweep_name`` (needs network + login).

    Args:
        path: ``entity/project`` (default: the API's default entity, project ``mfif``).
        api: a ``wandb.Api`` instance (made here when omitted).
    """
    if api is None:
        import wandb

        api = wandb.Api()
    path = path or f"{api.default_entity}/mfif"
    runs = sorted(api.runs(path, filters={"group": sweep_name}), key=lambda r: str(getattr(r, "created_at", "")))
    out = {}
    for run in runs:  # oldest first: a later run of the same point wins
        p = _run_point(run, points) if getattr(run, "state", "finished") == "finished" else None
        if p is None:
            continue
        vals = {k[len("test/"):]: finite(v) for k, v in dict(run.summary).items() if str(k).startswith("test/")}
        vals = {k: v for k, v in vals.items() if v is not None}
        if vals:
            out[p.id] = vals
    return out
