"""Training-step memory layout: NCHW (PyTorch's default) against ``channels_last`` (NHWC), same math.

Issue 25 asks whether channels_last in training (the inference fast paths already run NHWC) buys
the UFA-Fuse step the speed its convolutions leave no other room for (89 % of the step is 3x3
64-channel convolution). Both sides are the same module (same seed, same weights), the same
batch and the same Adam step; the NHWC side converts the module (``module.to(memory_format=
torch.channels_last)``, what ``trainer.channels_last=true`` does in ``run.py``) and feeds NHWC
sources. The sides alternate round by round (who goes first rotates); the losses are printed so
a reader sees they agree (float rounding only). Example::

    python experiments/benchmarks/bench_train_layout.py --config ufafuse.yaml --batch 8 --crop 256 --rounds 3

Measured 2026-12-07 (AMD EPYC, AVX2, 2 threads, torch 2.13 CPU), UFA-Fuse 8 x 256: NCHW 35.9 s,
NHWC 51.0 s per step (median of 3): channels_last is 0.70x, slower, so training stays NCHW.
This script keeps glibc's default allocator on both sides; ``bench_train.py``'s freed-memory
retention (:mod:`mfif.runtime`) makes the NCHW step faster (its bare loop: 24 s on this machine).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mfif import registry  # noqa: E402
from mfif.config import load_config  # noqa: E402


def build(config: str, nhwc: bool, seed: int):
    """The paper's module (default config) and its Adam optimiser, optionally in channels_last."""
    cfg = load_config(config, [])
    torch.manual_seed(seed)
    module = registry.method_class(cfg.method)(cfg)
    if nhwc:
        module = module.to(memory_format=torch.channels_last)
    return module, torch.optim.Adam(module.parameters(), lr=1e-4)


def step(module, opt, sources: torch.Tensor, gt: torch.Tensor, nhwc: bool) -> float:
    """One training step (loss, backward, Adam) on ``sources`` ``[B, K, C, H, W]``; returns the loss."""
    if nhwc:  # NHWC per source image; the 5-D view keeps those strides
        b, k, c, h, w = sources.shape
        sources = sources.reshape(b * k, c, h, w).contiguous(memory_format=torch.channels_last).view(b, k, c, h, w)
    opt.zero_grad(set_to_none=True)
    loss = module.compute_loss({"sources": sources, "gt": gt})[0]
    loss.backward()
    opt.step()
    return float(loss)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--config", default="ufafuse.yaml", help="a supervised paper's config (compute_loss on sources + gt)")
    p.add_argument("--batch", type=int, default=8, help="batch size (UFA-Fuse's paper batch: 8)")
    p.add_argument("--crop", type=int, default=256, help="square crop side (UFA-Fuse's paper crop: 256)")
    p.add_argument("--sources", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    sources = torch.rand(a.batch, a.sources, 3, a.crop, a.crop, generator=g)
    gt = torch.rand(a.batch, 3, a.crop, a.crop, generator=g)
    sides = {"nchw": build(a.config, False, 0), "nhwc": build(a.config, True, 0)}
    times: dict = {k: [] for k in sides}
    for k, (m, o) in sides.items():  # untimed first step (allocations, oneDNN primitive caches)
        print(f"{k}: warm-up loss {step(m, o, sources, gt, k == 'nhwc'):.6f}", flush=True)
    for r in range(a.rounds):
        for k in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            t = time.perf_counter()
            loss = step(*sides[k], sources, gt, k == "nhwc")
            times[k].append(time.perf_counter() - t)
            print(f"round {r} {k}: {times[k][-1]:.2f} s, loss {loss:.6f}", flush=True)
    for k, v in times.items():
        print(f"{k}: median {statistics.median(v):.2f} s/step [{min(v):.2f}-{max(v):.2f}]")
    print(f"channels_last speed-up (NCHW time / NHWC time): {statistics.median(times['nchw']) / statistics.median(times['nhwc']):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
