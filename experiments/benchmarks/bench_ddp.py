"""DDP scaling on this CPU (issue 25, item 3): one paper, run.py's Trainer, 1 process against
2 gloo processes sharing the same cores, with ``sync_batchnorm`` and a small gradient bucket.

Every setting trains ``1 + --steps`` steps on pre-built batches of the built-in generator
(``bench_train.make_batch``) with the same global batch (2 processes: half the batch each) and
``--threads`` cores in total (``OMP_NUM_THREADS`` = threads / processes), in its own process; the
DDP runs use Lightning's ``ddp`` launcher, which starts this same command again for rank 1 (the
``--child`` form). The step time is rank 0's, between two ``on_train_batch_end`` calls (the
gradient all-reduce included); samples/s = global batch / median step.

Usage::

    python experiments/benchmarks/bench_ddp.py --paper gacn --crop 96 --steps 3
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from experiments.benchmarks.bench_train import (PAPERS, add_size_arguments, fit_steps, make_batch, make_clock,
                                                run_config, shapes)

#: (label, processes, sync_batchnorm, bucket_cap_mb); None = DDP's default bucket (25 MB)
RUNS = (("1 process", 1, False, None), ("2 gloo processes", 2, False, None),
        ("2, sync_batchnorm", 2, True, None), ("2, 0.1 MB buckets", 2, False, 0.1))


def child(a) -> int:
    """One setting; Lightning's DDP launcher runs this same command again for rank 1."""
    from lightning.pytorch.strategies import DDPStrategy

    from experiments.run import build_module

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    batch_size, crop = shapes(a.child, a.size, a.batch, a.crop)
    per_rank = batch_size // a.devices  # the global batch of one process
    cfg = run_config(a.child, a.size, [f"data.batch_size={per_rank}", f"data.patch_size={crop}", "logger.wandb=false",
                                       f"trainer.threads={max(1, a.threads // a.devices)}"])
    torch.manual_seed(int(cfg.seed))
    module, batch = build_module(cfg), make_batch(a.child, a.size, per_rank, crop)
    clock = make_clock()
    bucket = {"bucket_cap_mb": a.bucket_mb} if a.bucket_mb else {}
    strategy = DDPStrategy(process_group_backend="gloo", **bucket) if a.devices > 1 else "auto"
    fit_steps(cfg, module, batch, a.steps, Path(a.result).parent / "run", clock, devices=a.devices,
              strategy=strategy, sync_batchnorm=a.sync_bn)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        Path(a.result).write_text(json.dumps({**clock.times(), "global_batch": per_rank * a.devices}))
    return 0


def bench(a) -> list[list]:
    """The rows of :data:`RUNS` for ``a.paper``."""
    rows, base = [], None
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as work:
        for i, (label, devices, sync_bn, bucket) in enumerate(RUNS):
            result = Path(work) / str(i) / "result.json"
            result.parent.mkdir()
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", a.paper, "--devices", str(devices),
                   "--size", a.size, "--steps", str(a.steps), "--result", str(result),
                   *(["--sync-bn"] if sync_bn else []), *(["--bucket-mb", str(bucket)] if bucket else []),
                   *(["--batch", str(a.batch)] if a.batch else []), *(["--crop", str(a.crop)] if a.crop else [])]
            env = dict(os.environ, OMP_NUM_THREADS=str(max(1, a.threads // devices)))
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
            if r.returncode != 0 or not result.is_file():
                errors = [ln for ln in r.stderr.splitlines() if "Error" in ln] or r.stderr.splitlines() or ["?"]
                rows.append([label, "failed: " + errors[-1].strip()[:140], "–", "–"])
            else:
                t = json.loads(result.read_text())
                wall, cpu = statistics.median(t["step_wall"]), statistics.median(t["step_cpu"])
                rate = t["global_batch"] / wall
                base = base or rate
                rows.append([label, f"{rate:.2f}", f"{rate / base:.2f}", f"{wall:.2f} s wall, {cpu:.2f} s cpu"])
            print(f"  {a.paper} {label}: {rows[-1][1]}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paper", choices=PAPERS, default="gacn")
    add_size_arguments(p, 3, "cores shared by the processes (default 2)")  # --batch: the global batch
    p.add_argument("--timeout", type=int, default=1800, help="seconds per setting")
    p.add_argument("--child", choices=PAPERS, help=argparse.SUPPRESS)
    p.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--sync-bn", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bucket-mb", type=float, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.steps < 1 or a.threads < 1 or (a.batch is not None and a.batch < 2):
        p.error("--steps and --threads must be >= 1 and --batch >= 2 (it is split over 2 processes)")
    if a.child:
        return child(a)
    from mfif.io import markdown_table

    print(f"# DDP on this CPU: {a.paper}, size {a.size}, {a.threads} cores in total, {a.steps} timed steps", flush=True)
    print(markdown_table(["setting", "samples/s", "vs 1 process", "median step (rank 0)"], bench(a)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
