"""UDPNet benchmark: seconds per 512x512 pair, parameters, peak memory, training steps/s.

Usage::

    python ablations/udpnet/table1_cost.py [--threads 2] [--size 512] [--runs 3] [--device cpu]

* inference: ``module.fuse`` on one RGB source pair (Y-channel path, Sec. IV) under
  ``torch.inference_mode``, one warm-up, median of ``--runs``; the paper reports 0.022 s on a
  GTX 1080Ti and 0.392 M parameters (Table I);
* training: full steps (forward, Eq. 16 loss, backward, Adam) at the paper's patch size and batch
  (60 x 60, batch 16, Sec. IV) on random Y-channel pairs; median of ``--train-steps``;
* both wall-clock and process CPU seconds are reported: on a shared host the wall time includes
  waiting for a core; with ``--threads 1`` the CPU seconds approximate the time on an idle core;
* peak memory: the process's peak resident set (``resource.getrusage``) on CPU, or
  ``torch.cuda.max_memory_allocated`` on GPU.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time


import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from lightning_modules.udpnet import UDPNetConfig, UDPNetModule  # noqa: E402
from lightning_modules.udpnet.network import count_parameters  # noqa: E402
from mfif.config import DataConfig, ExperimentConfig  # noqa: E402


def build(variant: str = "full") -> UDPNetModule:
    cfg = OmegaConf.structured(ExperimentConfig(method="udpnet", model=UDPNetConfig(variant=variant),
                                                data=DataConfig(), metrics=[]))
    return UDPNetModule(cfg)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn()``; CPU time stays meaningful on a busy host."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def time_inference(module: UDPNetModule, size: int, runs: int, device: torch.device) -> list[tuple[float, float]]:
    pair = torch.rand(1, 2, 3, size, size, device=device)

    def once():
        module.fuse(pair)
        _sync(device)

    with torch.inference_mode():
        once()  # warm-up
        return [_timed(once) for _ in range(runs)]


def time_training(module: UDPNetModule, patch: int, batch: int, steps: int,
                  device: torch.device) -> list[tuple[float, float]]:
    module.train()
    opt = torch.optim.Adam(module.parameters(), lr=2e-4)  # Sec. IV
    data = {"sources": torch.rand(batch, 2, 1, patch, patch, device=device)}

    def step():
        loss = module.compute_losses(data)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)

    step()  # warm-up
    return [_timed(step) for _ in range(steps)]


def _med(pairs: list[tuple[float, float]], i: int) -> float:
    return statistics.median(p[i] for p in pairs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (CPU)")
    p.add_argument("--size", type=int, default=512, help="side of the test pair (Table I: 512)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--patch", type=int, default=60, help="training patch side (Sec. IV-A: 60)")
    p.add_argument("--batch", type=int, default=16, help="training batch (Sec. IV: 16)")
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--wandb", action="store_true", help="log the figures to W&B (sweep ablations/udpnet/table1_cost.yaml)")
    from ablations.sweeps.point_results import add_point_arguments, apply_profile

    # --run_dir, --wandb_group (sweep runner); --profile smoke: a 64x64 pair, one timed run
    add_point_arguments(p, smoke={"size": 64, "runs": 1, "train_steps": 0, "threads": 1})
    args = apply_profile(p.parse_args(argv))
    if args.threads < 1 or args.size < 8 or args.runs < 1 or args.train_steps < 0:
        p.error("--threads and --runs must be >= 1, --train-steps >= 0 (0: no training timing) and --size >= 8")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    module = build().to(device).eval()
    params = {"G (inference model)": count_parameters(module.fuser),
              "F (training only)": count_parameters(module.predictor),
              "w/o unrolling CNN": count_parameters(build("wo_unrolling").fuser)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    inf = time_inference(module, args.size, args.runs, device)
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    train = time_training(module, args.patch, args.batch, args.train_steps, device) if args.train_steps else []

    rows = [("device", f"{device} ({args.threads} threads)" if device.type == "cpu" else str(torch.cuda.get_device_name(device))),
            *[(f"parameters: {k}", f"{v:,}") for k, v in params.items()],
            (f"inference s / {args.size}x{args.size} RGB pair, wall (median of {args.runs})", f"{_med(inf, 0):.3f}"),
            (f"inference s / {args.size}x{args.size} RGB pair, process CPU", f"{_med(inf, 1):.3f}"),
            ("peak memory (MiB, " + ("CUDA allocated" if device.type == "cuda" else "process RSS") + ")", f"{peak:.0f}")]
    if train:
        rows += [(f"training steps/s, wall (batch {args.batch}, {args.patch}x{args.patch}, median of {args.train_steps})",
                  f"{1 / _med(train, 0):.3f}"), ("training steps / process-CPU second", f"{1 / _med(train, 1):.3f}")]
    width = max(len(r[0]) for r in rows)
    print("UDPNet benchmark (paper, Table I: 0.392 M parameters, 0.022 s per 512x512 pair on a GTX 1080Ti)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    from ablations.sweeps.point_results import record

    # Table I columns: #Para. (M) of G (the inference model) and Time (s) per 512x512 pair
    record(args, {"params": params["G (inference model)"] / 1e6, "time": _med(inf, 0), "cpu_time": _med(inf, 1)},
           "ablations/udpnet/table1_cost.py", details={"parameters": params, "device": rows[0][1], "size": args.size})
    return 0


if __name__ == "__main__":
    sys.exit(main())
