"""GPU smoke check: every paper's smoke profile with the GPU features on, then DDP; one table.

For each config (default: the five papers' configs), in its own process:
``experiments/run.py --config <paper>.yaml profile=smoke`` on one GPU with ``bf16-mixed``, EMA on,
``channels_last`` and ``torch.compile`` of the inner networks (fit, test, report), then the same on
2 GPUs with DDP when the machine has two. Prints one row per run: method, devices, training
steps/s and samples/s (all devices: steps/s x ``data.batch_size`` x devices; after ``--warmup``
steps, so compilation is not counted), peak memory, pass/fail.

Usage::

    make gpu-smoke                                        # = python experiments/benchmarks/gpu_smoke.py
    python experiments/benchmarks/gpu_smoke.py --methods gacn udpnet --steps 20
    python experiments/benchmarks/gpu_smoke.py --cpu --methods gacn --steps 3 --warmup 1   # dry run

Without a CUDA device it prints ``skipped: no CUDA device`` and exits 0. ``--cpu`` runs the same
code path on the CPU (bf16 autocast, EMA, channels_last, compile; peak memory is the process's
max RSS) so the script itself is tested where no GPU exists. Exit code 1 when a run failed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


#: The five papers' configs (SESF-Fuse is an inference-only baseline; vaeedof_vae a stage).
PAPERS = ("gacn", "msasn", "udpnet", "ufafuse", "vaeedof")


def child_overrides(args, run_dir: Path) -> list[str]:
    """The settings a smoke run gets on top of ``profile=smoke``."""
    return ["profile=smoke", f"trainer.accelerator={'cpu' if args.cpu else 'gpu'}", f"trainer.devices={args.devices}",
            "trainer.precision=bf16-mixed", "ema.enabled=true", "ema.start_step=0", "trainer.channels_last=true",
            f"trainer.compile={args.compile_backend}", f"trainer.max_steps={args.steps}", "trainer.max_epochs=1000",
            "logger.wandb=false", "trainer.progress=none",
            f"run_dir={run_dir}", *(["trainer.strategy=ddp"] if args.devices > 1 else [])]


class StepTimer:
    """Lightning callback factory: training steps/s and samples/s (``batch_size`` per device) after
    ``warmup`` steps (the time inside the training steps only: validation, checkpoints and data
    loading are not counted), peak memory."""

    @staticmethod
    def make(warmup: int, result: Path, cuda: bool, batch_size: int = 1):
        from lightning.pytorch.callbacks import Callback

        class _Timer(Callback):
            def __init__(self):
                self.t0, self.steps, self.secs = 0.0, 0, 0.0

            def _now(self) -> float:
                if cuda:
                    torch.cuda.synchronize()
                return time.perf_counter()

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                self.t0 = self._now()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if trainer.global_step > warmup:
                    self.steps, self.secs = self.steps + 1, self.secs + self._now() - self.t0

            def on_train_end(self, trainer, pl_module):
                secs = self.secs
                if cuda:
                    peak = torch.cuda.max_memory_allocated() / 2**20
                else:
                    import resource

                    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                if trainer.is_global_zero:
                    rate = self.steps / secs if self.steps and secs > 0 else float("nan")
                    result.write_text(json.dumps({"steps_per_s": rate, "samples_per_s": rate * batch_size * trainer.world_size,
                                                  "timed_steps": self.steps, "peak_mib": peak}))

        return _Timer()


def child(args) -> int:
    """One smoke run in this process (the DDP launcher re-runs this for the other ranks)."""
    from experiments.run import run
    from mfif.config import load_config

    cfg = load_config(f"{args.child}.yaml", child_overrides(args, Path(args.run_dir)))
    timer = StepTimer.make(args.warmup, Path(args.result), cuda=not args.cpu, batch_size=int(cfg.data.batch_size))
    run(cfg, callbacks=[timer])
    return 0


def one_run(args, method: str, devices: int, work: Path) -> dict:
    result = work / f"{method}-{devices}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--devices", str(devices),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--result", str(result),
           "--run-dir", str(work / f"{method}-{devices}"), "--compile-backend", args.compile_backend,
           *(["--cpu"] if args.cpu else [])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    row = {"method": method, "devices": devices, "steps_per_s": float("nan"), "samples_per_s": float("nan"),
           "peak_mib": float("nan"), "ok": False}
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
        ok, note = r.returncode == 0 and result.is_file(), error_line(r.stderr + r.stdout)
        if not ok and args.log:
            (Path(args.log) / f"{method}-{devices}.log").write_text(r.stdout + r.stderr)
    except subprocess.TimeoutExpired:
        ok, note = False, f"timed out after {args.timeout} s"
    if result.is_file():
        row.update(json.loads(result.read_text()))
    row["ok"], row["note"] = ok, "" if ok else note
    return row


def error_line(output: str) -> str:
    """The most telling line of a failed run's output (its last exception message)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception|Unsupported)\b", ln) or "got RuntimeError" in ln]
    return (errors or lines or ["failed"])[-1][:160]


def print_table(rows: list[dict]) -> None:
    print(f"{'method':<12} {'devices':>7} {'steps/s':>9} {'samples/s':>9} {'peak MiB':>9}  result")
    for r in rows:
        note = "pass" if r["ok"] else f"FAIL {r['note']}"
        print(f"{r['method']:<12} {r['devices']:>7} {r['steps_per_s']:>9.2f} {r['samples_per_s']:>9.1f} "
              f"{r['peak_mib']:>9.0f}  {note}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=None, help="config names (default: the five papers)")
    p.add_argument("--steps", type=int, default=20, help="training steps per run (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="steps not timed (compilation), default 5")
    p.add_argument("--cpu", action="store_true", help="dry run of the same path on the CPU")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    p.add_argument("--timeout", type=int, default=900, help="seconds per run")
    p.add_argument("--log", default=None, help="folder for the full output of failed runs")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps <= args.warmup:
        p.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")
    if args.child:
        return child(args)
    if not args.cpu and not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    counts = [1] + ([2] if not args.cpu and torch.cuda.device_count() >= 2 else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as work:
        for devices in counts:
            for method in args.methods or PAPERS:
                rows.append(one_run(args, method, devices, Path(work)))
    print_table(rows)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
