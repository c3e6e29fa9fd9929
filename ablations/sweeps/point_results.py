"""Figures of a benchmark program run as a sweep point: ``results.json`` and W&B.

``ablations/sweep.py`` runs a sweep whose program takes flags (``${args}`` in the sweep's
``command``: ``ablations/gacn/table3.py``, ``ablations/vaeedof/fig6.py``, ``ablations/udpnet/table1_cost.py``,
``ablations/gacn/fig8.py``) as::

    python PROGRAM --key=value ... [--wandb] --run_dir=<runs-root>/<sweep>/<point> --wandb_group=<sweep>

Such a program declares ``--run_dir`` and ``--wandb_group`` (:func:`add_point_arguments`) and hands its figures to
:func:`record`, which

* writes ``<run_dir>/results.json`` atomically (the run-folder contract of
  ``ablations/collect.py``)::

      {"program": "ablations/gacn/table3.py",
       "metrics": {"time_per_image": 0.49, ...},    # finite numbers only: what the tables read
       "details": {...}}                             # anything else (settings, per-N rows, notes)

* with ``--wandb``, logs one W&B run: ``history`` rows as steps and every metric as the summary
  value ``test/<name>`` (what ``ablations/tables.py --source wandb`` reads), in group
  ``--wandb_group``, named after the run folder (the point id) and stored in it.

W&B mode: ``WANDB_MODE`` when set; else ``online`` under a W&B agent (it sets
``WANDB_SWEEP_ID``); else ``offline``, the default of the training configs (``logger.mode``).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

RESULTS = "results.json"


def finite(v: Any) -> Optional[float]:
    """``float(v)`` when it is a finite number, else None (a missing value, never 0)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def finite_metrics(metrics: dict) -> dict:
    """``{name: float}`` without the values that are missing or not finite (never written as 0)."""
    return {str(k): f for k, f in ((k, finite(v)) for k, v in metrics.items()) if f is not None}


def add_point_arguments(parser, smoke: Optional[dict] = None) -> None:
    """The options the sweep runner passes to every point of a benchmark program.

    Args:
        parser: the program's ``argparse`` parser.
        smoke: what ``--profile smoke`` sets (the sweep runner passes it with ``profile=smoke``):
            ``{dest: value}``, a value may be a callable ``f(args) -> value`` (e.g.
            :func:`builtin_scenes_option`). Smoke values replace the given ones in
            :func:`apply_profile`, so the point runs in seconds on built-in data, without weight
            files. Without ``smoke`` the program has no ``--profile`` option.
    """
    parser.add_argument("--run_dir", default=None, help="write the figures to RUN_DIR/results.json (sweep runner)")
    parser.add_argument("--wandb_group", default=None, help="W&B group of the run (the sweep's name)")
    if smoke is not None:
        parser.add_argument("--profile", choices=["smoke"], default=None,
                            help="smoke: seconds on built-in data with random weights (" +
                                 ", ".join(f"{k}={'built-in' if callable(v) else v}" for k, v in smoke.items()) + ")")
        parser.set_defaults(_smoke_profile=dict(smoke))


def apply_profile(args: Any) -> Any:
    """With ``--profile smoke``, set the program's smoke values (see :func:`add_point_arguments`)."""
    smoke = getattr(args, "_smoke_profile", None)
    if getattr(args, "profile", None) == "smoke" and smoke:
        for key, value in smoke.items():
            setattr(args, key, value(args) if callable(value) else value)
        print("profile=smoke: " + ", ".join(f"{k}={getattr(args, k)}" for k in smoke), flush=True)
    return args


def write_builtin_scenes(folder: str | Path, scenes: int = 2, size: int = 48, sources: int = 2) -> Path:
    """Write focus sets of the built-in data (``datamodules.default``, test split: photos that ship
    with scikit-image) as a benchmark folder: ``smoke-NN-A.png``, ``-B.png`` ..., the ground truth
    ``smoke-NN-GT.png`` (found by :func:`mfif.scenes.discover_scenes`) and ``fused/smoke-NN.png``
    (the ground truth again: a stand-in for a folder of fused results). Returns ``folder``."""
    from datamodules.default import DefaultDataConfig, DefaultFocusDataset
    from mfif.io import save_image

    folder = Path(folder)
    ds = DefaultFocusDataset(DefaultDataConfig(num_test=scenes, test_size=size, num_sources=sources), "test")
    for i in range(scenes):
        item = ds[i]
        for k, src in enumerate(item["sources"]):
            save_image(src, folder / f"smoke-{i:02d}-{chr(ord('A') + k)}.png")
        save_image(item["gt"], folder / f"smoke-{i:02d}-GT.png")
        save_image(item["gt"], folder / "fused" / f"smoke-{i:02d}.png")
    return folder


def builtin_scenes_option(part: str = "", scenes: int = 2, size: int = 48, sources: int = 2):
    """A smoke value for :func:`add_point_arguments`: built-in scenes written once to
    ``<run_dir or a temporary folder>/smoke_data/`` (``part``: a sub-path such as ``fused``)."""

    def make(args: Any) -> str:
        import tempfile

        base = Path(getattr(args, "run_dir", None) or tempfile.mkdtemp(prefix="mfif-smoke-")) / f"smoke_data_{sources}"
        if not (base / "fused").is_dir():
            write_builtin_scenes(base, scenes, size, sources)
        return str(base / part) if part else str(base)

    return make


def write_results(run_dir: str | Path, metrics: dict, details: Optional[dict] = None,
                  program: Optional[str] = None) -> Path:
    """Write ``<run_dir>/results.json`` atomically; returns its path.

    Args:
        run_dir: the point's folder (created when missing).
        metrics: figure name -> value; ``None`` / NaN values are left out.
        details: JSON-serialisable extras (settings, per-combination rows, notes).
        program: the program's path, for the reader.
    """
    from mfif.io import atomic_write_bytes

    path = Path(run_dir) / RESULTS
    doc = {"program": program, "metrics": finite_metrics(metrics), "details": details or {}}
    atomic_write_bytes(path, (json.dumps(doc, indent=1, default=str) + "\n").encode())
    return path


def wandb_mode() -> str:
    """``WANDB_MODE``, else ``online`` under a W&B agent, else ``offline`` (module docstring)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_SWEEP_ID") else "offline"


def log_wandb(metrics: dict, config: dict, run_dir: Optional[str | Path] = None, group: Optional[str] = None,
              history: Sequence[dict] = ()) -> None:
    """One W&B run: ``history`` rows logged as steps, ``test/<metric>`` summary values."""
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    folder = Path(run_dir) if run_dir else None
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project="mfif", config=config, mode=wandb_mode(), group=group,
                     name=folder.name if folder else None, dir=str(folder) if folder else None)
    for row in history:
        run.log(dict(row))
    for k, v in finite_metrics(metrics).items():
        run.summary[f"test/{k}"] = v
    run.finish()


def record(args: Any, metrics: dict, program: str, details: Optional[dict] = None,
           history: Sequence[dict] = ()) -> None:
    """``results.json`` when ``args.run_dir`` is set, a W&B run when ``args.wandb`` is.

    Args:
        args: the program's parsed arguments (``run_dir``, ``wandb_group``, ``wandb``; the
            whole namespace becomes the W&B config).
        metrics: the figures the tables show, e.g. ``{"time_per_image": 0.49}``.
        program: the program's path relative to the repository root.
    """
    if getattr(args, "run_dir", None):
        print(f"wrote {write_results(args.run_dir, metrics, details, program)}")
    if getattr(args, "wandb", False):
        log_wandb(metrics, dict(vars(args)), args.run_dir, getattr(args, "wandb_group", None), history)
