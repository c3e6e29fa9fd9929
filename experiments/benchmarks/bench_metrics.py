"""Benchmark the no-reference metric suite on the 20 Lytro pairs (CPU by default).

For each pair a fused image is made in the script (max-abs-Laplacian pixel selection, a
simple decision-map fusion; ``--fusion average`` for the plain mean), then every metric
scores it. Reports seconds per pair per metric, the total, and peak memory (Python heap via
``tracemalloc`` and process max RSS via ``resource``).

    python experiments/benchmarks/bench_metrics.py [--data data/lytro] [--pairs 20]
        [--metrics q_g,...] [--threads 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path


import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def fuse_pair(sources: torch.Tensor, mode: str) -> torch.Tensor:
    """Fuse ``[N, C, H, W]`` sources: pixel-wise max |Laplacian| (on gray) or the mean."""
    if mode == "average":
        return sources.mean(0)
    gray = sources.mean(1, keepdim=True)
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    act = F.avg_pool2d(F.conv2d(gray, lap, padding=1).abs(), 7, stride=1, padding=3)
    pick = act.argmax(0, keepdim=True)  # [1, 1, H, W]
    return torch.gather(sources, 0, pick.expand(1, *sources.shape[1:]))[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="data/lytro")
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--metrics", default=None, help="comma-separated (default: every no-reference metric)")
    p.add_argument("--fusion", choices=("laplacian", "average"), default="laplacian")
    # One thread by default: on the shared 2-core machine, OpenMP with 2 threads was 5-10x
    # slower for these many small element-wise ops whenever other jobs used the CPU.
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="also write the figures as JSON")
    args = p.parse_args(argv)

    from mfif.io import load_image
    from mfif.scenes import discover_scenes
    from mfif.metrics import NO_REFERENCE_METRICS, build_metric

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    names = args.metrics.split(",") if args.metrics else list(NO_REFERENCE_METRICS)
    scenes = discover_scenes(args.data)[: args.pairs]
    if not scenes:
        print(f"no scenes in {args.data}", file=sys.stderr)
        return 2
    metrics = {n: build_metric(n).to(args.device) for n in names}
    data = []
    for s in scenes:
        src = torch.stack([load_image(x) for x in s.sources])
        data.append((s.name, fuse_pair(src, args.fusion).to(args.device), src.to(args.device)))

    load = os.getloadavg()[0]
    times = {n: 0.0 for n in names}
    cpu = {n: 0.0 for n in names}
    values = {n: [] for n in names}
    tracemalloc.start()
    t_all, c_all = time.perf_counter(), time.process_time()
    for _, fused, src in data:
        for n, m in metrics.items():
            t0, c0 = time.perf_counter(), time.process_time()
            m.reset()
            m.update(fused[None], src[None])
            values[n].append(float(m.compute()))
            if args.device != "cpu":
                torch.cuda.synchronize()
            times[n] += time.perf_counter() - t0
            cpu[n] += time.process_time() - c0
    total, total_cpu = time.perf_counter() - t_all, time.process_time() - c_all
    _, peak_heap = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux

    n_pairs = len(data)
    print(f"{n_pairs} pairs {tuple(data[0][1].shape)}, fusion={args.fusion}, threads={torch.get_num_threads()}, "
          f"device={args.device}, 1-min load average at start {load:.2f}")
    print(f"{'metric':12s} {'s/pair':>8s} {'total s':>8s} {'CPU s/pair':>10s} {'mean value':>12s}")
    for n in sorted(names, key=lambda k: -times[k]):
        print(f"{n:12s} {times[n] / n_pairs:8.3f} {times[n]:8.2f} {cpu[n] / n_pairs:10.3f} {sum(values[n]) / n_pairs:12.5f}")
    print(f"{'TOTAL':12s} {total / n_pairs:8.3f} {total:8.2f} {total_cpu / n_pairs:10.3f}")
    print(f"1-min load average at end {os.getloadavg()[0]:.2f} (wall time includes waiting for the shared CPU)")
    print(f"peak Python heap (tracemalloc) {peak_heap / 2**20:.1f} MiB; max RSS {rss:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "pairs": n_pairs, "threads": torch.get_num_threads(), "load_average": load, "total_s": total,
            "total_cpu_s": total_cpu, "seconds_per_pair": {n: times[n] / n_pairs for n in names},
            "cpu_seconds_per_pair": {n: cpu[n] / n_pairs for n in names},
            "mean_values": {n: sum(values[n]) / n_pairs for n in names},
            "peak_heap_mib": peak_heap / 2**20, "max_rss_mib": rss,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
