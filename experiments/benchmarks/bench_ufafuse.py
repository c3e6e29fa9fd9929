"""Benchmark UFA-Fuse inference: CPU seconds per Lytro pair, parameters, peak memory.

Paper (Table V, Sec. IV-C): 0.26 s per image on a GTX 2070 Super GPU; 455,111 parameters in
the released checkpoint. Example::

    python experiments/benchmarks/bench_ufafuse.py --threads 2 --runs 3
    python experiments/benchmarks/bench_ufafuse.py --lytro ../shared/data/lytro --pairs 3 --device cuda

Inputs: the first ``--pairs`` Lytro pairs (``lytro-NN-A/B.jpg``, 520x520) when ``--lytro`` exists,
else random 520x520 RGB pairs (timing of a fully convolutional net does not depend on content).
The wall time is the median over ``--runs`` timed passes (after one warm-up) of ``module.fuse`` under
``torch.inference_mode`` - the whole public inference path (colour policy + network); the
process CPU time (summed over threads) is printed too, as it is less sensitive to other load.
Peak memory: process max RSS (``resource.getrusage``) on CPU; ``torch.cuda.max_memory_allocated``
on CUDA.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf


from lightning_modules.ufafuse.module import UFAFuseConfig, UFAFuseModule  # noqa: E402
from mfif.config import DataConfig, ExperimentConfig  # noqa: E402

PAPER_SECONDS = 0.26  # Table V, GTX 2070 Super
OFFICIAL_PARAMS = 455_111


def load_pairs(folder: Path, n: int, size: int) -> list[torch.Tensor]:
    """``n`` source pairs ``[1, 2, 3, H, W]``: Lytro files if present, else seeded random images."""
    from PIL import Image

    pairs = []
    for i in range(1, n + 1):
        files = [folder / f"lytro-{i:02d}-{s}.jpg" for s in "AB"]
        if all(f.is_file() for f in files):
            imgs = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0)
                    .permute(2, 0, 1) for f in files]
            pairs.append(torch.stack(imgs)[None])
        else:
            pairs.append(torch.rand(1, 2, 3, size, size, generator=torch.Generator().manual_seed(i)))
    return pairs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lytro", default="data/lytro", help="Lytro folder")
    p.add_argument("--weights", default="weights/ufa_official.pth",
                   help="official weights (optional; timing is the same with random weights)")
    p.add_argument("--pairs", type=int, default=2, help="number of pairs to time")
    p.add_argument("--runs", type=int, default=3, help="timed passes per pair (median reported)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--size", type=int, default=520, help="side of random pairs when Lytro is absent")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)

    torch.set_num_threads(a.threads)
    cfg = OmegaConf.structured(ExperimentConfig(method="ufafuse", model=UFAFuseConfig(official_quirk=True),
                                                data=DataConfig(), metrics=[]))
    module = UFAFuseModule(cfg)
    weights = "random init"
    if Path(a.weights).is_file():
        module.load_official_weights(a.weights)
        weights = "official"
    module = module.to(a.device).eval()
    n_params = sum(p.numel() for p in module.net.parameters())

    pairs = load_pairs(Path(a.lytro), a.pairs, a.size)
    times, cpu_times = [], []
    with torch.inference_mode():
        for src in pairs:
            src = src.to(a.device)
            module.fuse(src)  # warm-up
            for _ in range(a.runs):
                if a.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0, c0 = time.perf_counter(), time.process_time()
                module.fuse(src)
                if a.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
                cpu_times.append(time.process_time() - c0)
    if a.device.startswith("cuda"):
        peak = f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB (CUDA allocated)"
    else:
        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (max RSS)"

    h, w = pairs[0].shape[-2:]
    rows = [
        ("device", f"{a.device} ({a.threads} threads)"),
        ("input", f"{len(pairs)} pair(s) of {h}x{w} RGB, {weights} weights"),
        ("seconds per pair (median)", f"{statistics.median(times):.3f}  [min {min(times):.3f}, max {max(times):.3f}]"),
        ("process CPU seconds per pair", f"{statistics.median(cpu_times):.3f} (all threads; wall x threads on an idle machine)"),
        ("paper (GTX 2070 Super)", f"{PAPER_SECONDS:.2f}"),
        ("parameters", f"{n_params:,} (official: {OFFICIAL_PARAMS:,})"),
        ("peak memory", peak),
    ]
    width = max(len(k) for k, _ in rows)
    print("UFA-Fuse inference benchmark")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
