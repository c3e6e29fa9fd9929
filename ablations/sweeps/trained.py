"""Trained here: each paper's model trained with its ``cpu`` profile, scored beside its yardsticks.

Usage::

    python ablations/trained.py --paper gacn --data DATA --weights WEIGHTS --out runs/trained [--profile cpu] [--budget 1.0]
    python ablations/trained.py --paper msasn --study table8 ... # + a sweep on the trained model
    python ablations/trained.py --paper msasn --study table6 --study-budget 0.25 ...  # training study, 1/4 steps a point
    python ablations/trained.py --paper udpnet --budget 2 --resume-from runs/trained ... --out runs/trained_2x  # 2x, continued
    python ablations/trained.py --out runs/trained --report ablations/trained.md [--longer runs/trained_2x]  # the committed report
    make trained DATA=... WEIGHTS=... [PAPER=gacn] [TRAINED_OUT=runs/trained]

Per paper (the table :data:`ablations.sweeps.trained_specs.PAPERS`: stages, data mapping, test
set, the side file whose columns and printed rows are used):

1. **Train** every stage with ``experiments/run.py --config <paper>.yaml profile=cpu <data mapping>
   run_dir=OUT/<paper>/<stage>`` as a child process (the command is printed; its output goes to
   ``OUT/<paper>/train.log``), through the sweep runner (:mod:`ablations.sweeps.runner`: a lock,
   Ctrl-C/SIGTERM to its process group, no orphan). ``--budget`` scales the profile's
   ``trainer.max_steps``. A stage whose run finished (``DONE``) is reused, never retrained; one
   killed half-way resumes with ``ckpt_path=last``; a finished or half-done run with other settings
   is an error (use another ``--out``). ``run.py fit`` tests the selected checkpoint and writes
   ``metrics.csv`` with the paper's columns: that is the ``cpu`` row. ``--resume-from DIR`` (a
   longer run at the cost of its extra steps) starts each stage from ``DIR/<paper>/<stage>``'s
   finished ``last.ckpt`` instead of step 0, when that run's settings differ from this one's in the
   run length ``--budget`` scales only: every cpu profile's learning-rate schedule (``step`` or
   ``none``) steps per epoch and does not depend on the run length, so the continued run follows the schedule of one trained from scratch to
   the larger budget (its data order after the resume may differ). A ``checkpoint.monitor`` run
   then selects its best among the continued steps' validation points (Lightning does not carry
   the best score into a new checkpoint folder).
2. **Reference rows** from the same config, data and report code (``mfif.reporting``): ``init``,
   the untrained initialisation (same seed, 0 steps, as ``run.py`` builds it), and ``average``,
   the plain mean of the sources. The model must beat both on the paper's main column.
3. **Yardsticks** on the same test scenes (those the run wrote to ``run/fused/``) with
   :mod:`ablations.sweeps.parity`: released weights through the fuse path, published fused images,
   the printed rows of the side file.
4. Writes ``OUT/<paper>/trained.csv`` (``paper,table,dataset,row,metric,ours,printed,rel_diff``;
   ``row``: ``cpu``, ``init``, ``average``, ``released`` (``released:<method>`` for another
   method's weights), ``published:<M>``, ``printed``), ``trained.json``, ``trained.md`` and
   ``learning_curve.png`` (:mod:`ablations.sweeps.trained_report`), then the ``--study`` sweeps
   (:mod:`ablations.sweeps.trained_studies`).

Bad input (unknown paper or study, a missing ``--data`` folder or weights file, a config key the
profile does not know) stops with one line naming it, exit code 2, before anything is written.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from ablations.sweeps.collect import is_done, last_checkpoint, mark_done, point_metrics, read_point_info, write_point_info
from ablations.sweeps.grid import ROOT
from ablations.sweeps.parity import ParityError, check_inputs, method_available, use_scored_images
from ablations.sweeps.trained_scoring import (TrainedError, TrainingFailed, cached, cells_for, reference_rows, scene_view,
                                              selected_checkpoint, side_file, side_metrics, test_scenes, write_csv,
                                              yardstick_name, yardstick_rows)
from ablations.sweeps.trained_specs import PAPERS, STUDIES, Stage, data_paths, expand, needs_checkpoint

RUN_PY = ROOT / "experiments" / "run.py"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def stage_overrides(st: Stage, profile: str, data: Path, ckpts: Optional[dict] = None) -> list:
    """``profile=P`` and the stage's data mapping, filled in (``{ckpt:...}`` left out when ``ckpts`` is None)."""
    own = [o for o in st.overrides if ckpts is not None or not needs_checkpoint(o)]
    return [f"profile={profile}"] + [expand(o, data, ckpts) for o in own]


def budget_overrides(cfg, budget: float) -> list:
    """``trainer.max_steps`` (else ``max_epochs``) of the profile scaled by ``budget`` (1.0: none)."""
    if budget == 1.0:
        return []
    if int(cfg.trainer.max_steps) > 0:
        return [f"trainer.max_steps={max(1, round(int(cfg.trainer.max_steps) * budget))}"]
    return [f"trainer.max_epochs={max(1, round(int(cfg.trainer.max_epochs) * budget))}"]


def check_paper(paper: str, specs: dict, data: Path, weights: Path, profile: str, budget: float,
                root: Path, skip_released: bool) -> tuple:
    """Everything a paper needs, before anything is written: ``(spec, side, yardstick rows, {stage: budget overrides})``.

    Raises:
        TrainedError: unknown paper, missing folder or weights file, a config the profile rejects.
    """
    from mfif.config import ConfigError, load_config

    if paper not in specs:
        raise TrainedError(f"--paper {paper}: unknown; papers: {', '.join(sorted(specs))}")
    spec = specs[paper]
    for key, path in data_paths(spec, data):
        if not path.is_dir():
            raise TrainedError(f"--data {data}: missing folder {path} (needed by {paper}: {key})")
    for sub in spec.needs:
        if not (data / sub).is_dir():
            raise TrainedError(f"--data {data}: missing folder {sub} (needed by {paper}'s training data)")
    side = side_file(paper, spec, root)
    rows = yardstick_rows(paper, spec, root, skip_released)
    use_scored_images(rows, data)  # the images the paper scored replace a regeneration (parity)
    try:
        check_inputs(rows, data, weights)
    except ParityError as e:
        raise TrainedError(str(e)) from e
    budgets = {}
    for st in spec.stages:
        try:
            cfg = load_config(st.config, stage_overrides(st, profile, data))
        except ConfigError as e:
            raise TrainedError(f"{paper} stage '{st.name}' ({st.config} profile={profile}): {e}") from e
        budgets[st.name] = budget_overrides(cfg, budget)
    return spec, side, rows, budgets


def _global_step(path: Optional[Path]) -> int:
    from mfif.checkpoints import CheckpointError, read_checkpoint

    try:
        return int(read_checkpoint(path).get("global_step", 0)) if path else 0
    except CheckpointError:
        return 0


def _settings(argv: Sequence[str], out: Path) -> list:
    """A command's ``key=value`` settings as a rerun compares them (the output folder written as ``OUT``)."""
    return [a.replace(str(out), "OUT") for a in argv if "=" in a and not a.startswith("ckpt_path=")]


def _without_length(settings: list) -> list:
    """``settings`` less the run length ``--budget`` scales (:func:`budget_overrides`)."""
    return [s for s in settings if not s.startswith(("trainer.max_steps=", "trainer.max_epochs="))]


def continue_from(paper: str, st: Stage, settings: list, source: Path, rd: Path) -> Path:
    """Copy the finished ``source/<paper>/<stage>`` run's ``last.ckpt`` into ``rd`` (``--resume-from``).

    Returns the source run folder. Raises:
        TrainedError: no finished run there, one with other settings than the run length
            (``trainer.max_steps``/``max_epochs``), or one that already trained the steps this run asks for.
    """
    from mfif.io import atomic_write_bytes

    src = Path(source) / paper / st.name
    ckpt = src / "checkpoints" / "last.ckpt"
    if not is_done(src) or not ckpt.is_file():
        raise TrainedError(f"--resume-from {source}: no finished run with checkpoints/last.ckpt in {src}")
    theirs = json.loads((src / "DONE").read_text()).get("settings") or []
    if _without_length(theirs) != _without_length(settings):
        raise TrainedError(f"--resume-from {source}: {src} was trained with other settings than the run length "
                           f"({shlex.join(theirs)}); only a longer run of the same recipe can continue it")
    have = _global_step(ckpt)
    want = next((int(s.split("=", 1)[1]) for s in settings if s.startswith("trainer.max_steps=")), None)
    if want is not None and have >= want:
        raise TrainedError(f"--resume-from {source}: {src} already trained {have} steps (this run asks for {want})")
    atomic_write_bytes(rd / "checkpoints" / "last.ckpt", ckpt.read_bytes())
    return src


def train_stage(paper: str, st: Stage, argv: list, out: Path, say: Callable[[str], None],
                resume_from: Optional[Path] = None) -> dict:
    """Run (or reuse, or resume) one stage; returns its record (command, seconds, steps, reused, ...).

    ``resume_from``: a folder of finished runs to continue (``--resume-from``) when this stage has
    not started yet.

    Raises:
        TrainedError: the run folder holds a run with other settings, or the training failed.
    """
    from ablations.sweeps.runner import Job, run_jobs

    rd = out / paper / st.name
    settings = _settings(argv, out)
    if is_done(rd):
        done = json.loads((rd / "DONE").read_text())
        if done.get("settings") != settings:
            raise TrainedError(f"{rd} finished with other settings ({shlex.join(done.get('settings') or [])}); "
                               f"use another --out, or delete that folder to train again")
        say(f"{paper} {st.name}: reusing the finished run in {rd} (trained {done.get('seconds', '?')} s)")
        return {**done, "reused": True}
    ckpt = last_checkpoint(rd)
    old = read_point_info(rd)
    if ckpt is not None and old and old.get("settings") != settings:
        raise TrainedError(f"{rd} holds an unfinished run with other settings; use another --out, or delete that folder")
    source = None
    if ckpt is None and resume_from is not None:
        source = continue_from(paper, st, settings, resume_from, rd)
        ckpt = last_checkpoint(rd)
    start_step = _global_step(ckpt)
    cmd = list(argv) + (["ckpt_path=last"] if ckpt is not None else [])
    rd.mkdir(parents=True, exist_ok=True)
    info = {"stage": st.name, "command": shlex.join(cmd), "settings": settings, "resumed_from_step": start_step,
            **({"continued_from": str(source.resolve())} if source is not None else {})}
    say(f"$ {shlex.join(cmd)}" + (f"   # resuming from {ckpt.name} (step {start_step})" if ckpt is not None else ""))

    def on_start() -> Optional[str]:
        write_point_info(rd, info)
        return None

    def check(run_dir: Path) -> tuple:
        return (0, "") if point_metrics(run_dir) else (1, "exit 0 but no test metrics (interrupted?)")

    def on_done(seconds: float) -> None:
        mark_done(rd, {**info, "seconds": round(seconds, 1), "steps": _global_step(rd / "checkpoints" / "last.ckpt")})

    log = out / paper / ("train.log" if st.name == "run" else f"train-{st.name}.log")
    results, sig = run_jobs([Job(f"{paper}/{st.name}", cmd, rd, check, on_done, on_start, log=log)], say=say)
    if sig is not None or results[0].status != "done":
        r = results[0]
        why = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if "error:" in ln.lower()] if log.is_file() else []
        raise TrainingFailed(f"{paper} stage '{st.name}' {r.status} (exit {r.returncode}{', ' + r.note if r.note else ''})"
                             f"{': ' + why[-1] if why else ''}; see {log}")
    return {**json.loads((rd / "DONE").read_text()), "reused": False}


def run_paper(paper: str, checked: tuple, args, out: Path, root: Path, say: Callable[[str], None]) -> dict:
    """Train, score and write one paper's outputs; returns its ``trained.json`` record."""
    from ablations.sweeps.parity import run as parity_run
    from ablations.sweeps.trained_report import stage_figures, write_paper_outputs
    from mfif.config import load_config

    spec, side, rows, budgets = checked
    data, weights = Path(args.data), Path(args.weights)
    python, program = sys.executable, str(Path(args.program) if args.program else RUN_PY)
    t0, ckpts, stages = time.monotonic(), {}, []
    resume = Path(args.resume_from).resolve() if getattr(args, "resume_from", None) else None
    for st in spec.stages:
        over = stage_overrides(st, args.profile, data, ckpts) + budgets[st.name]
        argv = [python, program, "--config", st.config, *over, f"run_dir={out / paper / st.name}"]
        rec = train_stage(paper, st, argv, out, say, resume)
        cfg = load_config(st.config, over)
        ckpts[st.name] = selected_checkpoint(out / paper / st.name)
        batch = int(cfg.data.batch_size) * int(cfg.trainer.accumulate_grad_batches)
        stage = {**rec, "config": st.config, "seed": int(cfg.seed), "batch_size": batch,
                 "checkpoint": str(ckpts[st.name]), "max_steps": int(cfg.trainer.max_steps)}
        stages.append({**stage, **stage_figures(stage)})  # steps, steps/s, samples seen
    last, run_dir = spec.stages[-1], out / paper / spec.stages[-1].name
    metrics = side_metrics(side)
    from mfif.metrics import missing_metric_weights

    unscored = sorted(missing_metric_weights(metrics))
    metrics = [m for m in metrics if m not in unscored]
    say(f"{paper}: init and average rows ({', '.join(metrics)})")
    over = stage_overrides(last, args.profile, data, ckpts) + budgets[last.name]
    refs = reference_rows(last.config, over, metrics, out / paper / "reference", run_dir)
    ours = {"cpu": refs.pop("cpu", None) or point_metrics(run_dir), **refs}
    yard, names, notes = [], {}, list(spec.notes)
    if rows:
        scenes = test_scenes(run_dir, data, spec.dataset)
        view = scene_view(data, spec.dataset, scenes, out / paper)
        missing = sorted({r.method for r in rows if r.method and not r.use_scored and not method_available(r.method)})
        rows = [r for r in rows if (r.use_scored or r.method not in missing) and getattr(r, "available", True)]
        notes += [f"not run (method not available in this checkout): {', '.join(missing)}"] if missing else []
        say(f"{paper}: yardsticks on {len(scenes)} scenes of {spec.dataset}")
        yard = cached(out / paper / "yardsticks.json",
                      {"rows": [(r.label, r.source_key, r.metrics) for r in rows], "scenes": [x.name for x in scenes],
                       "data": str(data.resolve()), "weights": str(weights.resolve())},
                      lambda: parity_run(rows, view, weights, out / paper, say=say))
        names = {r.label: yardstick_name(r, paper) for r in rows}
    cells = cells_for(paper, spec, side, metrics, ours, yard, names)
    rec = {"paper": paper, "table": spec.table, "dataset": spec.dataset or "test split", "row": spec.row,
           "main": spec.main, "metrics": metrics, "unscored": unscored, "profile": args.profile, "budget": args.budget,
           "stages": stages, "paper_samples": spec.paper_samples, "samples_note": spec.samples_note,
           "fraction_of_paper_samples": stages[-1]["samples"] / spec.paper_samples,
           "notes": notes, "citation": str(side.get("citation") or "").strip(),
           # the folders the commands name; the report prints them as DATA/WEIGHTS/OUT
           "data": str(data.resolve()), "weights": str(weights.resolve()), "out": str(out.resolve()),
           **({"resumed_from": str(resume)} if resume else {}),
           "seconds_total": round(time.monotonic() - t0, 1), "cells": cells}
    old = out / paper / "trained.json"
    if old.is_file():  # studies of earlier calls stay in the record
        try:
            rec["studies"] = json.loads(old.read_text()).get("studies") or {}
        except (OSError, ValueError):
            pass
    write_csv(cells, out / paper / "trained.csv")
    write_paper_outputs(rec, out / paper)
    say(f"{paper}: wrote {out / paper / 'trained.csv'}, trained.md, trained.json and learning_curve.png")
    return rec


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--paper", action="append", help=f"paper to train (repeatable; default: all of {', '.join(PAPERS)})")
    p.add_argument("--data", help="data folder (train/bsds500, train/mf_voc, lytro/, gacn_test26/, baselines/)")
    p.add_argument("--weights", help="folder with gacn_official.pkl, ufa_official.pth, sesf_official.pkl")
    p.add_argument("--out", default="runs/trained", help="output folder: OUT/<paper>/ (default runs/trained)")
    p.add_argument("--profile", default="cpu", help="config profile the runs use (default cpu)")
    p.add_argument("--budget", type=float, default=1.0, help="fraction of the profile's trainer.max_steps (default 1.0)")
    p.add_argument("--study", action="append", help=f"also run a study on the trained model: {', '.join(STUDIES)}")
    p.add_argument("--study-budget", type=float, default=None,
                   help="fraction of the profile's trainer.max_steps each point of a training study trains "
                        "(default: --budget); the trained model keeps --budget")
    p.add_argument("--resume-from", help="continue the finished runs in this folder (another --out of the same profile) "
                                         "to --budget instead of training from step 0")
    p.add_argument("--report", help="write this Markdown report from every OUT/<paper>/trained.json (figures beside it)")
    p.add_argument("--longer", action="append", default=[],
                   help="with --report: a folder of runs at another --budget (e.g. 2), shown beside each paper's row "
                        "as a second point of its learning curve (repeatable)")
    p.add_argument("--skip-released", action="store_true", help="leave out the released-weights rows")
    p.add_argument("--program", help="entry script instead of experiments/run.py (one that registers extra methods)")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None, specs: Optional[dict] = None, root: Path = ROOT) -> int:
    """The ``mfif-trained`` command (``specs``/``root``: a stand-in table and side-file root for tests)."""
    from ablations.sweeps.trained_report import ReportError, build_report, write_paper_outputs
    from ablations.sweeps.trained_studies import check_studies, run_study

    a = parse_args(argv)
    specs = PAPERS if specs is None else specs
    out = Path(a.out)
    try:
        if out.exists() and not out.is_dir():
            raise TrainedError(f"--out {out}: exists and is not a folder")
        for flag, v in (("--budget", a.budget), ("--study-budget", a.study_budget)):
            if v is not None and not (v > 0):
                raise TrainedError(f"{flag} {v}: expected a fraction > 0")
        studies = check_studies(a.study or [], a.paper or [], specs, root, Path(a.data) if a.data else None)
        if a.paper or studies:  # --study alone: its paper
            papers = list(dict.fromkeys((a.paper or []) + [STUDIES[s].paper for s in studies]))
        else:  # nothing named: every paper, unless only the report is asked for
            papers = [] if a.report and not a.data else list(specs)
        checked = {}
        if papers:
            if not a.data or not a.weights:
                raise TrainedError("--data and --weights are required to train (only --out/--report to build the report)")
            for f, what in ((a.data, "--data"), (a.weights, "--weights")):
                if not Path(f).is_dir():
                    raise TrainedError(f"{what} {f}: no such folder")
            for paper in papers:
                checked[paper] = check_paper(paper, specs, Path(a.data), Path(a.weights), a.profile, a.budget, root,
                                             a.skip_released)
        if a.resume_from:
            if Path(a.resume_from).resolve() == out.resolve():
                raise TrainedError(f"--resume-from {a.resume_from}: the same folder as --out (continue into another)")
            if not papers or not Path(a.resume_from).is_dir():
                raise TrainedError(f"--resume-from {a.resume_from}: " + ("no such folder" if papers else "needs --paper"))
        if a.longer and not a.report:
            raise TrainedError("--longer: only with --report")
        if a.report and not papers and not list(out.glob("*/trained.json")):
            raise TrainedError(f"--out {out}: no <paper>/trained.json to report (train first)")
    except TrainedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from experiments.fuse import FuseError
    from mfif.io import BenchmarkError
    from mfif.metrics.evaluation import EvaluationError

    try:
        for paper in papers:
            rec = run_paper(paper, checked[paper], a, out, root, _say)
            ckpts = {st["stage"]: st["checkpoint"] for st in rec["stages"]}
            for s in (s for s in studies if STUDIES[s].paper == paper):
                rec.setdefault("studies", {})[s] = run_study(s, checked[paper][0], a, out, root, ckpts, _say)
                write_paper_outputs(rec, out / paper)
        if a.report:
            _say(f"wrote {build_report(out, Path(a.report), [Path(d) for d in a.longer])}")
    except TrainingFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (TrainedError, ParityError, ReportError, FuseError, BenchmarkError, EvaluationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def cli() -> int:
    """Console entry point: :func:`main` with the CLI process settings (:mod:`mfif.runtime`)."""
    from mfif.runtime import run_cli

    return run_cli(main)


if __name__ == "__main__":
    sys.exit(cli())
