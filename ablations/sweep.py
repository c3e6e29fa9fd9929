"""Run a W&B grid sweep file locally (resumable), on SLURM (array job) or online (W&B agent).

One sweep file, three ways to run it (details and a worked example in ``ablations/README.md``)::

    # 1. local / offline: expand the grid here, K points at a time, W&B runs offline, grouped
    python ablations/sweep.py ablations/udpnet/table4.yaml --workers 2 profile=smoke
    python ablations/sweep.py ablations/udpnet/table4.yaml --dry-run          # commands only

    # 2. SLURM: an sbatch array script, task i = grid point i (fixed run folder and W&B id,
    #    requeue on SIGUSR1 90 s before the limit, resume from ckpt_path=last)
    python ablations/sweep.py ablations/udpnet/table4.yaml --slurm [--submit] data.root=/data/lytro

    # 3. online: W&B's own controller and agents. Our runs log offline unless told otherwise,
    #    so export a copy of the sweep with logger.mode=online (and your key=value settings):
    python ablations/sweep.py ablations/udpnet/table4.yaml --export runs/udpnet-table4.wandb.yaml data.root=/data/lytro
    wandb sweep --project mfif runs/udpnet-table4.wandb.yaml      # prints ENTITY/mfif/SWEEP_ID
    wandb agent ENTITY/mfif/SWEEP_ID                               # on as many machines as you like
    python ablations/sweep.py ablations/udpnet/table4.yaml --slurm --online ENTITY/mfif/SWEEP_ID  # agents on SLURM

Each point runs as ``python experiments/run.py --config <cfg from the command> <point overrides>
<your key=value> run_dir=<runs-root>/<sweep name>/<point id> logger.group=<sweep name>
logger.name=<point id>``; a benchmark program taking flags (``${args}``) runs as ``python PROGRAM
--key=value ... --run_dir=<that folder> --wandb_group=<sweep name>`` and writes its figures to
``<run_dir>/results.json``. Every point's overrides are checked against the real config schema
(a benchmark's keys against its ``--options``) before anything runs. A point whose run folder has
a ``DONE`` marker is skipped; a failed point is reported (exit code and ``<run_dir>/log.txt``)
and the others go on; the exit code is 1 when any point failed, 2 for a bad sweep file or key.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence


import yaml  # noqa: E402

from ablations.collect import DEFAULT_RUNS_ROOT, has_test_metrics, is_done, mark_done, point_dir  # noqa: E402
from ablations.grid import Point, Sweep, SweepError, build_command, load_sweep, resolve_program, validate  # noqa: E402

_PY = "\0PYTHON\0"  # placeholder for the interpreter in SLURM scripts (``$PYTHON`` there)


@dataclass
class Outcome:
    point: Point
    status: str  # done | skipped | failed
    returncode: Optional[int]
    seconds: float
    log: Path
    note: str = ""


def point_tail(sweep: Sweep, point: Point, runs_root: Path) -> list[str]:
    """Settings every point gets last: its fixed folder and W&B group (and name, for configs).

    A config program gets ``run_dir=... logger.group=... logger.name=...``; a program taking
    flags gets ``--run_dir=... --wandb_group=...`` (:func:`ablations.grid.build_command` adds the
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


def run_point(argv: list[str], run_dir: Path, check_tests: bool) -> tuple[int, str]:
    """Run one point with stdout + stderr in ``<run_dir>/log.txt``; returns (exit code, note)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(run_dir / "log.txt", "w") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    try:
        if rc == 0 and check_tests and not has_test_metrics(run_dir):
            return 1, "exit 0 but no test metrics or results (interrupted?)"
    except SweepError as e:  # an unreadable results.json
        return 1, str(e)
    return rc, ""


def _done_with_other_settings(run_dir: Path, extra: Sequence[str]) -> Optional[list]:
    """The ``key=value`` a DONE point was run with, when they differ from ``extra`` (else None)."""
    try:
        info = json.loads((run_dir / "DONE").read_text())
    except (OSError, ValueError):
        return None
    return info["extra"] if "extra" in info and info["extra"] != list(extra) else None


def run_local(sweep: Sweep, points: Sequence[Point], argvs: dict, runs_root: Path, workers: int,
              check: dict, extra: Sequence[str] = ()) -> list[Outcome]:
    """Run the points not yet ``DONE``, ``workers`` at a time; never stops at a failure."""
    outcomes, todo = {}, []
    for p in points:
        rd = point_dir(runs_root, sweep.name, p.id)
        if is_done(rd):
            outcomes[p.id] = Outcome(p, "skipped", None, 0.0, rd / "log.txt", "DONE marker")
            other = _done_with_other_settings(rd, extra)
            if other is not None:
                print(f"warning: {p.id} is DONE from a run with {other or 'no key=value'}, not {list(extra)}; "
                      f"skipped (use another --runs-root, or delete {rd / 'DONE'} to run it again)", flush=True)
        else:
            todo.append(p)
    n = len(points)
    print(f"sweep {sweep.name}: {n} points, {n - len(todo)} already done, running {len(todo)} "
          f"({workers} at a time) under {runs_root / sweep.name}", flush=True)

    def one(p: Point) -> Outcome:
        rd = point_dir(runs_root, sweep.name, p.id)
        t0 = time.time()
        rc, note = run_point(argvs[p.id], rd, check[p.id])
        if rc == 0:
            mark_done(rd, {"point": p.id, "args": p.args(), "extra": list(extra), "seconds": round(time.time() - t0, 1)})
        return Outcome(p, "done" if rc == 0 else "failed", rc, time.time() - t0, rd / "log.txt", note)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(one, p): p for p in todo}
        for k, fut in enumerate(as_completed(futures), 1):
            o = fut.result()
            outcomes[o.point.id] = o
            why = "" if o.status == "done" else f" (exit {o.returncode}{', ' + o.note if o.note else ''}; see {o.log})"
            print(f"[{k}/{len(todo)}] {o.point.id}: {o.status} in {o.seconds:.0f}s{why}", flush=True)
    return [outcomes[p.id] for p in points]


def summary(outcomes: Sequence[Outcome]) -> str:
    """A plain-text table: point, status, exit code, seconds, log file."""
    head = ("#", "point", "status", "exit", "time", "log")
    rows = [(str(o.point.index), o.point.id, o.status, "" if o.returncode is None else str(o.returncode),
             f"{o.seconds:.0f}s", str(o.log) if o.status == "failed" else "") for o in outcomes]
    w = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in [head, *rows]]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    return "\n".join(lines + [", ".join(f"{v} {k}" for k, v in counts.items())])


def _q(tok: str) -> str:
    return '"$PYTHON"' if tok == _PY else shlex.quote(tok)


def slurm_script(sweep: Sweep, points: Sequence[Point], argvs: dict, runs_root: Path, check: dict,
                 args: argparse.Namespace) -> str:
    """An sbatch array script: task i runs grid point i (or one W&B agent run with ``--online``)."""
    n = len(points)
    root = runs_root.resolve() / sweep.name
    throttle = f"%{args.workers}" if args.workers else ""
    head = [
        "#!/bin/bash",
        f"# Generated by ablations/sweep.py from {sweep.path} ({n} grid points): one array task per point.",
        "# Submit: sbatch THIS_FILE. Task i runs grid point i in a fixed run folder with a fixed W&B id;",
        "# 90 s before the time limit SLURM sends SIGUSR1, Lightning saves an HPC checkpoint and requeues",
        "# the task, which resumes from ckpt_path=last. A point with a DONE marker is skipped.",
        f"#SBATCH --job-name={sweep.name}",
        f"#SBATCH --array=0-{n - 1}{throttle}",
        "#SBATCH --nodes=1",
        f"#SBATCH --gpus-per-node={args.gpus}",
        f"#SBATCH --ntasks-per-node={args.gpus}",  # Lightning's SLURMEnvironment: one task per GPU
        f"#SBATCH --cpus-per-task={args.cpus}",
        f"#SBATCH --time={args.time}",
        "#SBATCH --signal=SIGUSR1@90",
        "#SBATCH --requeue",
        f"#SBATCH --output={root}/slurm-%A_%a.out",
        *([f"#SBATCH --partition={args.partition}"] if args.partition else []),
        *[f"#SBATCH {a}" for a in args.sbatch_arg],
        "",
        "set -euo pipefail",
        f"cd {shlex.quote(str(Path.cwd()))}",
        f"PYTHON=${{PYTHON:-{shlex.quote(sys.executable)}}}",
        'TASK=${SLURM_ARRAY_TASK_ID:?submit this script with sbatch (it is an array job)}',
    ]
    if args.online:
        return "\n".join(head + [
            "# Online: the W&B sweep controller hands each agent the next point (no fixed run folder).",
            f'srun "$PYTHON" -m wandb agent --count 1 {shlex.quote(args.online)}', ""])
    body = ['case "$TASK" in']
    for p in points:
        body += [f"  {p.index}) POINT={shlex.quote(p.id)}; CHECK_TESTS={int(check[p.id])}",
                 f"     CMD=({' '.join(_q(t) for t in argvs[p.id])}) ;;"]
    body += ['  *) echo "no grid point $TASK (this sweep has ' + str(n) + ')" >&2; exit 1 ;;', "esac",
             f'RUN_DIR={shlex.quote(str(root))}/"$POINT"',
             'if [ -f "$RUN_DIR/DONE" ]; then echo "point $POINT is done already"; exit 0; fi',
             'mkdir -p "$RUN_DIR"',
             'srun "${CMD[@]}" 2>&1 | tee -a "$RUN_DIR/log.txt"',
             "# Mark done only when the run reached its test stage (a requeued fit can exit 0 first).",
             "# (a benchmark: once its results.json holds a metric)",
             'if [ "$CHECK_TESTS" = 0 ] || [ -f "$RUN_DIR/metrics.csv" ] || grep -qs "test/" "$RUN_DIR/csv/metrics.csv" \\',
             '   || { [ -f "$RUN_DIR/results.json" ] && ! grep -qs \'"metrics": {}\' "$RUN_DIR/results.json"; }; then',
             '  printf \'{"point": "%s", "slurm_job": "%s"}\\n\' "$POINT" "${SLURM_ARRAY_JOB_ID:-}_$TASK" > "$RUN_DIR/DONE.tmp"',
             '  mv -f "$RUN_DIR/DONE.tmp" "$RUN_DIR/DONE"',
             "else",
             '  echo "point $POINT stopped before its test stage; not marked done" >&2',
             "fi", ""]
    return "\n".join(head + body)


def slurm_settings(sweep: Sweep, point: Point, cfg, gpus: int) -> list[str]:
    """Per-point cluster settings (before your key=value, so yours win): fixed W&B id, resume, GPU."""
    if not sweep.takes_overrides:
        return []
    wid = f"{sweep.name}-{point.id}".replace(".", "_")[:120]
    resume = ["ckpt_path=last"] if cfg is not None and cfg.mode == "fit" else []
    return [f"logger.id={wid}", *resume, "trainer.accelerator=gpu", f"trainer.devices={gpus}", "trainer.progress=plain"]


def export_online(sweep: Sweep, extra: Sequence[str], out: Path) -> None:
    """A copy of the sweep file for ``wandb sweep``: W&B online, grouped by sweep, plus your settings."""
    d = yaml.safe_load(sweep.path.read_text())
    params = d["parameters"]
    consts = {"logger.mode": "online", "logger.group": sweep.name}
    if not sweep.takes_overrides:  # a benchmark (flags) logs online under an agent by itself (point_results.py)
        consts = {"wandb_group": sweep.name}
    consts.update(dict(e.split("=", 1) for e in extra))  # kept as strings: the agent passes them verbatim
    for k, v in consts.items():
        params[k] = {"value": v}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# W&B-ready copy of {sweep.path} written by ablations/sweep.py --export\n"
                   + yaml.safe_dump(d, sort_keys=False))


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="sweep file, e.g. ablations/udpnet/table4.yaml")
    p.add_argument("overrides", nargs="*", help="key=value applied to every point (e.g. profile=smoke data.root=DIR)")
    p.add_argument("--workers", type=int, default=None, help="points run at once (local: default 1; SLURM: array throttle)")
    p.add_argument("--runs-root", default=DEFAULT_RUNS_ROOT, help=f"run folders go to RUNS_ROOT/<sweep name>/<point id> (default {DEFAULT_RUNS_ROOT})")
    p.add_argument("--program", default=None, help="entry script instead of the sweep's `program` (e.g. tests/run_tiny.py)")
    p.add_argument("--dry-run", action="store_true", help="validate and print every point's command; run nothing")
    p.add_argument("--export", metavar="PATH", help="write a W&B-ready copy of the sweep (online logging) and exit")
    g = p.add_argument_group("SLURM")
    g.add_argument("--slurm", action="store_true", help="write an sbatch array script (one task per point)")
    g.add_argument("--submit", action="store_true", help="with --slurm: submit it with sbatch")
    g.add_argument("--online", metavar="SWEEP_ID", help="with --slurm: each task runs `wandb agent --count 1 SWEEP_ID`")
    g.add_argument("--script", help="script path (default RUNS_ROOT/<sweep name>/sweep.sbatch)")
    g.add_argument("--time", default="24:00:00")
    g.add_argument("--gpus", type=int, default=1, help="GPUs per point (DDP when > 1)")
    g.add_argument("--cpus", type=int, default=8, help="CPUs per task")
    g.add_argument("--partition", default=None)
    g.add_argument("--sbatch-arg", action="append", default=[], help="extra '#SBATCH' line, e.g. --sbatch-arg=--account=abc")
    a = p.parse_intermixed_args(argv)
    bad = [o for o in a.overrides if "=" not in o]
    if bad:
        p.error(f"overrides must be key=value, got {bad}")
    if (a.submit or a.online) and not a.slurm:
        p.error("--submit and --online go with --slurm")
    if a.online and a.gpus != 1:
        p.error("--online runs one W&B agent per task: use --gpus 1 (srun would start one agent per GPU)")
    return a


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    # SLURM tasks may start elsewhere: give them absolute run folders
    runs_root = Path(args.runs_root).resolve() if args.slurm else Path(args.runs_root)
    try:
        sweep = load_sweep(args.file)
        if args.export:
            export_online(sweep, args.overrides, Path(args.export))
            print(f"wrote {args.export}; next: wandb sweep --project mfif {args.export}")
            return 0
        program = resolve_program(args.program or sweep.program)
        points = sweep.points()
        cfgs = validate(sweep, points, args.overrides, program=program,
                        tail=lambda p: point_tail(sweep, p, runs_root))
    except SweepError as e:
        print(f"sweep error: {e}", file=sys.stderr)
        return 2
    check = {p.id: needs_test_metrics(cfgs.get(p.id)) for p in points}
    python = _PY if args.slurm else sys.executable
    argvs = {p.id: build_command(
        sweep, p, python=python, program=program,
        extra=[*(slurm_settings(sweep, p, cfgs.get(p.id), args.gpus) if args.slurm else []), *args.overrides],
        tail=point_tail(sweep, p, runs_root)) for p in points}

    if args.slurm:
        script = Path(args.script or runs_root / sweep.name / "sweep.sbatch")
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(slurm_script(sweep, points, argvs, runs_root, check, args))
        print(f"wrote {script} ({len(points)} array tasks)")
        if args.submit:
            try:
                return subprocess.run(["sbatch", str(script)]).returncode
            except FileNotFoundError:
                print("sbatch not found: submit the script on a SLURM login node", file=sys.stderr)
                return 1
        return 0
    if args.dry_run:
        for p in points:
            state = "DONE" if is_done(point_dir(runs_root, sweep.name, p.id)) else "todo"
            print(f"[{p.index}] {p.id} ({state})\n    {shlex.join(argvs[p.id])}")
        return 0
    outcomes = run_local(sweep, points, argvs, runs_root, args.workers or 1, check, args.overrides)
    print(summary(outcomes))
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
