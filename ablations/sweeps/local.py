"""The local side of ``ablations/sweep.py``: plan every point's command, then run the points.

Planning (:func:`plan_points`, also used for the SLURM script) checks every point before anything
runs (:func:`ablations.sweeps.grid.validate`: names, types, values) and applies two rules:

* ``profile=smoke`` runs anywhere, on a fresh clone: the sweep's data and weight paths
  (:data:`PATH_KEYS`) are reset, so each point trains and tests on the built-in data of its
  config's smoke profile; metrics whose weight files are absent (LPIPS, DISTS, PieAPP) are
  dropped with a note, so their table cells show "–".
* otherwise missing metric weights stop the sweep before any training (exit 2), with one message
  naming the files and ``MFIF_WEIGHTS_DIR``.

Running (:func:`run_points`, :func:`run_search`) goes through :func:`ablations.sweeps.runner.run_jobs`
(locks, signals, progress). A point that is not ``DONE`` runs again; a training point that left a
checkpoint resumes from it (``ckpt_path=last``), unless it ran with other settings. ``random`` /
``bayes`` sweeps ask W&B's engine (:mod:`ablations.sweeps.engine`) for ``workers`` points at a time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from ablations.sweeps.collect import (has_test_metrics, is_done, last_checkpoint, mark_done, point_dir, point_metrics,
                               read_point_info, write_point_info)
from ablations.sweeps.grid import Point, Sweep, SweepError, build_command, validate
from ablations.sweeps.runner import Job, Result, run_jobs

#: config keys naming the user's data or weight files: reset by ``profile=smoke`` (built-in data)
PATH_KEYS = ("data.root", "data.benchmark", "data.gt_dir", "data.test_root", "weights", "ckpt_path",
             "model.vae_checkpoint")


def point_tail(sweep: Sweep, point: Point, runs_root: Path) -> list[str]:
    """Settings every point gets last: its fixed folder and W&B group (and name, for configs).

    A config program gets ``run_dir=... logger.group=... logger.name=...``; a program taking
    flags gets ``--run_dir=... --wandb_group=...`` (:func:`ablations.sweeps.grid.build_command` adds the
    hyphens) and writes ``results.json`` there (``ablations/point_results.py``).
    """
    rd = point_dir(runs_root, sweep.name, point.id)
    if not sweep.takes_overrides:
        return [f"run_dir={rd}", f"wandb_group={sweep.name}"]
    return [f"run_dir={rd}", f"logger.group={sweep.name}", f"logger.name={point.id}"]


def needs_test_metrics(cfg) -> bool:
    """A fit/test run is complete only once it has test metrics (an interrupted fit exits 0);
    a benchmark program (no config) only once it has written ``results.json``."""
    return cfg is None or cfg.mode in ("fit", "test")


def profile_of(overrides: Sequence[str]) -> Optional[str]:
    """The ``profile=`` among the user's ``key=value`` (the last one wins, as in the configs)."""
    vals = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("-") == "profile"]
    return vals[-1] if vals else None


@dataclass
class Plan:
    """Every point's config and how to build its command; notes to print before running."""

    cfgs: dict
    command: Callable[[Point, Sequence[str]], list]  # (point, settings before yours) -> argv
    notes: list = field(default_factory=list)


def plan_points(sweep: Sweep, points: Sequence[Point], program: Path, runs_root: Path, overrides: Sequence[str],
                python: str, settings: Optional[Callable[[Point, object], list]] = None,
                trusted: bool = False, strict_weights: bool = True) -> Plan:
    """Validate ``points`` and apply the smoke / metric-weight rules (module docstring).

    Args:
        settings: per-point settings placed before ``overrides`` (the SLURM ones).
        trusted: the user trusts the sweep's import hooks: validation builds them and every
            config program gets ``--trust-config``.
        strict_weights: missing metric weights are an error (else a note: a SLURM task may see
            another ``MFIF_WEIGHTS_DIR``; ``run.py`` checks them again before training).

    Raises:
        SweepError: a bad key or value, or metric weights missing outside the smoke profile.
    """
    smoke = profile_of(overrides) == "smoke"
    resets = [f"{k}=null" for k in sweep.parameters if k in PATH_KEYS] if smoke and sweep.takes_overrides else []
    extra = [*resets, *overrides]
    tail = lambda p: point_tail(sweep, p, runs_root)  # noqa: E731
    cfgs = validate(sweep, points, extra, program=program, tail=tail, trusted=trusted)
    trust = ["--trust-config"] if trusted and sweep.takes_overrides else []
    notes = [f"profile=smoke: built-in data instead of the sweep's {', '.join(r.split('=')[0] for r in resets)}"] if resets else []
    drops = _metric_weights(sweep, cfgs, smoke, notes, strict_weights)

    def command(p: Point, before: Sequence[str] = ()) -> list:
        pre = [*(settings(p, cfgs.get(p.id)) if settings else []), *before]
        return build_command(sweep, p, python=python, program=program, extra=[*pre, *extra],
                             tail=[*tail(p), *drops.get(p.id, [])]) + trust

    return Plan(cfgs, command, notes)


def _metric_weights(sweep: Sweep, cfgs: dict, smoke: bool, notes: list, strict: bool = True) -> dict:
    """``{point id: [metrics=...]}`` dropping metrics without weight files (smoke), else raise
    (``strict``) or add a note."""
    from mfif.metrics import MetricWeightsError, check_metric_weights, missing_metric_weights

    names = list(dict.fromkeys(m for cfg in cfgs.values() for m in cfg.metrics))
    missing = missing_metric_weights(names)
    if not missing:
        return {}
    if not smoke:
        try:
            check_metric_weights(names)
        except MetricWeightsError as e:
            if strict:
                raise SweepError(f"{sweep.path}: {e}") from e
            notes.append(f"warning: {e} (here; each task checks again before training)")
            return {}
    files = sorted({str(f) for fs in missing.values() for f in fs})
    notes.append(f"profile=smoke: dropping metrics {sorted(missing)} (weight files not found: {', '.join(files)}; "
                 "set MFIF_WEIGHTS_DIR to score them); their table cells show '–'")
    return {pid: [f"metrics=[{','.join(m for m in cfg.metrics if m not in missing)}]"]
            for pid, cfg in cfgs.items() if any(m in missing for m in cfg.metrics)}


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


def make_job(sweep: Sweep, p: Point, plan: Plan, runs_root: Path, overrides: Sequence[str]) -> Job | Result:
    """The job of a point that is not ``DONE`` (a ``failed`` result when its folder cannot resume)."""
    rd = point_dir(runs_root, sweep.name, p.id)
    cfg = plan.cfgs.get(p.id)
    info = _jsonable({"point": p.id, "index": p.index, "overrides": p.overrides, "extra": list(overrides)})
    ckpt = None
    if cfg is not None and cfg.mode == "fit" and not any(o.startswith("ckpt_path=") for o in overrides):
        ckpt = last_checkpoint(rd)
    old = read_point_info(rd)
    if ckpt is not None and old and (old.get("overrides"), old.get("extra")) != (info["overrides"], info["extra"]):
        return Result(p.id, "failed", None, 0.0, rd / "log.txt",
                      f"{rd} holds an unfinished run with other settings ({old.get('extra') or 'no key=value'}); "
                      "use another --runs-root, or delete that folder to start the point over")
    check_tests = needs_test_metrics(cfg)

    def check(run_dir: Path) -> tuple[int, str]:
        try:
            if check_tests and not has_test_metrics(run_dir):
                return 1, "exit 0 but no test metrics or results (interrupted?)"
        except SweepError as e:  # an unreadable results.json
            return 1, str(e)
        return 0, ""

    def on_start() -> Optional[str]:
        if is_done(rd):
            return "DONE meanwhile (another runner)"
        write_point_info(rd, info)
        return None

    def on_done(seconds: float) -> None:
        mark_done(rd, {"point": p.id, "args": p.args(), "extra": list(overrides), "seconds": round(seconds, 1)})

    argv = plan.command(p, ["ckpt_path=last"] if ckpt is not None else [])
    note = f"resuming from {ckpt.relative_to(rd)}" if ckpt is not None else ""
    return Job(p.id, argv, rd, check, on_done, on_start, note)


def _skip_done(sweep: Sweep, p: Point, runs_root: Path, overrides: Sequence[str], say) -> Optional[Result]:
    rd = point_dir(runs_root, sweep.name, p.id)
    if not is_done(rd):
        return None
    try:
        ran_with = json.loads((rd / "DONE").read_text()).get("extra")
    except (OSError, ValueError, AttributeError):
        ran_with = None
    if ran_with is not None and ran_with != list(overrides):
        say(f"warning: {p.id} is DONE from a run with {ran_with or 'no key=value'}, not {list(overrides)}; "
            f"skipped (use another --runs-root, or delete {rd / 'DONE'} to run it again)")
    return Result(p.id, "skipped", None, 0.0, rd / "log.txt", "DONE marker")


def run_points(sweep: Sweep, points: Sequence[Point], plan: Plan, runs_root: Path, overrides: Sequence[str],
               workers: int, say=print, grace: float = 20.0) -> tuple[list[Result], Optional[int]]:
    """Run the points that are not ``DONE``; returns (results in point order, the stop signal or None)."""
    results, jobs = {}, []
    for p in points:
        r = _skip_done(sweep, p, runs_root, overrides, say)
        if r is None:
            r = make_job(sweep, p, plan, runs_root, overrides)
        if isinstance(r, Job):
            jobs.append(r)
        else:
            results[p.id] = r
    for note in plan.notes:
        say(note)
    say(f"sweep {sweep.name}: {len(points)} points, {sum(r.status == 'skipped' for r in results.values())} already done, "
        f"running {len(jobs)} ({workers} at a time) under {runs_root / sweep.name}")
    ran, sig = run_jobs(jobs, workers, grace=grace, say=say)
    results.update({r.key: r for r in ran})
    return [results[p.id] for p in points], sig


def past_points(sweep: Sweep, runs_root: Path) -> list[tuple[Point, str, Optional[float]]]:
    """The points a ``random``/``bayes`` sweep ran so far (from their ``point.json``), in order,
    with their state for the engine (finished / failed) and the sweep's metric."""
    metric = str((sweep.metric or {}).get("name") or "")
    metric = metric[len("test/"):] if metric.startswith("test/") else metric
    out = []
    for f in sorted((Path(runs_root) / sweep.name).glob("*/point.json")):
        info = read_point_info(f.parent)
        if not isinstance(info.get("index"), int) or not isinstance(info.get("overrides"), dict):
            continue
        p = Point(info["index"], f.parent.name, info["overrides"], sweep.varying)
        done = is_done(f.parent)
        value = point_metrics(f.parent).get(metric) if done and metric else None
        out.append((p, "finished" if done else "failed", value))
    return sorted(out, key=lambda t: t[0].index)


def next_points(sweep: Sweep, runs_root: Path, count: int, batch: int, seed: int, retried: set) -> list[Point]:
    """The next batch of a ``random``/``bayes`` sweep: unfinished points first (once per
    invocation), then new proposals of W&B's engine until ``count`` points exist."""
    from ablations.sweeps.engine import PastRun, propose

    past = past_points(sweep, runs_root)
    again = [p for p, state, _ in past if state != "finished" and p.id not in retried][:batch]
    if again or len(past) >= count:
        return again
    runs = [PastRun(p.id, p.overrides, state, value) for p, state, value in past]
    k = len(past)
    new = propose(sweep.doc or {}, runs, min(batch, count - k), seed)
    return [Point(k + i, f"{sweep.method}-{k + i:03d}", ov, sweep.varying) for i, ov in enumerate(new)]


def run_search(sweep: Sweep, make_plan: Callable[[Sequence[Point]], Plan], runs_root: Path, overrides: Sequence[str],
               workers: int, count: int, seed: int = 0, say=print,
               grace: float = 20.0) -> tuple[list[tuple[Point, Result]], Optional[int]]:
    """A ``random``/``bayes`` sweep: ``workers`` proposals at a time until ``count`` points ran."""
    done: list[tuple[Point, Result]] = []
    retried: set = set()
    while True:
        todo = next_points(sweep, runs_root, count, max(1, workers), seed, retried)
        if not todo:
            return done, None
        retried |= {p.id for p in todo}
        for p in todo:
            say(f"{p.id}: {' '.join(f'{k}={p.overrides[k]}' for k in sweep.varying)}")
        results, sig = run_points(sweep, todo, make_plan(todo), runs_root, overrides, workers, say, grace)
        done += list(zip(todo, results))
        if sig is not None:
            return done, sig
