"""Does bf16 change what a paper's table prints? fp32 against ``--precision bf16`` per method.

For every two-source scene of a benchmark (Lytro: 20 pairs) the method fuses at fp32 and with
``fuse_precision = "bf16"`` (:func:`mfif.ops.conv.inference_precision`); both results are scored
as ``fuse.py`` saves them (8 bit) with the columns of the paper's own table (the metric variants
it printed, ``ablations/<paper>/*.paper.yaml``). One line per column: the two means, their
difference and whether the 4 printed decimals differ; then the share of 8-bit pixels that changed
and the wall time per pair of each precision (interleaved, after one warm-up).

This is the evidence behind the default precision (README "CPU speed", bf16): a method may run
bf16 by default only where no column changes.

Usage::

    python experiments/benchmarks/bench_bf16_metrics.py --lytro data/lytro --weights weights \\
        [--methods gacn ufafuse] [--pairs 20] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

#: the paper table whose columns score each method (released weights exist for these)
TABLES = {"gacn": "ablations/gacn/table1.paper.yaml", "ufafuse": "ablations/ufafuse/table5.paper.yaml",
          "sesf": "ablations/msasn/table2.paper.yaml"}


def columns(method: str) -> list[str]:
    """The registered-metric columns of the method's paper table (``time``/``arank`` dropped)."""
    import yaml

    from mfif.metrics import metric_spec

    root = Path(__file__).resolve().parents[2]
    cols = yaml.safe_load((root / TABLES[method]).read_text())["columns"]
    out = []
    for c in cols:
        try:
            metric_spec(str(c))
            out.append(str(c))
        except KeyError:
            continue
    return out


def compare(method: str, scenes: list, weights: Path) -> list[str]:
    """Fuse every scene at both precisions, score both; returns the report lines."""
    from experiments.benchmarks.bench_inference import build
    from experiments.fuse import fuse_stack, load_sources
    from mfif.metrics import build_metric
    from mfif.viz import to_uint8

    module, source = build(method, weights)
    names = columns(method)
    metrics = {n: build_metric(n) for n in names}
    values = {p: {n: [] for n in names} for p in ("fp32", "bf16")}
    secs, changed = {"fp32": [], "bf16": []}, []
    for i, scene in enumerate(scenes):
        sources = load_sources(list(scene.sources))
        saved = {}
        for precision in ("fp32", "bf16"):
            module.fuse_precision = precision
            if i == 0:
                fuse_stack(module, sources)  # warm-up: oneDNN kernels are built on first use
            t = time.perf_counter()
            fused, _ = fuse_stack(module, sources)
            secs[precision].append(time.perf_counter() - t)
            saved[precision] = torch.from_numpy(to_uint8(fused[0])).permute(2, 0, 1).float().div_(255)
            for n, m in metrics.items():
                m.reset()
                m.update(saved[precision][None], sources)
                values[precision][n].append(float(m.compute()))
        changed.append(float((saved["fp32"] != saved["bf16"]).any(0).float().mean()))
    lines = []
    for n in names:
        a, b = (statistics.fmean(values[p][n]) for p in ("fp32", "bf16"))
        lines.append(f"bf16 {method:8s} {n:14s} fp32 {a:.5f}  bf16 {b:.5f}  diff {b - a:+.2e}  "
                     f"printed 4 decimals {'differ' if round(a, 4) != round(b, 4) else 'equal'}")
    f32, b16 = (statistics.median(secs[p]) for p in ("fp32", "bf16"))
    lines.append(f"bf16 {method:8s} weights={source} | 8-bit pixels changed {statistics.fmean(changed):.2%} | "
                 f"wall median fp32 {f32:.3f} s  bf16 {b16:.3f} s  speed-up {f32 / b16:.2f}x | {len(scenes)} pairs, "
                 f"{torch.get_num_threads()} threads")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lytro", type=Path, default=Path("data/lytro"), help="benchmark folder (Lytro)")
    p.add_argument("--weights", type=Path, default=Path("weights"), help="folder with the released weights")
    p.add_argument("--methods", nargs="+", default=["gacn", "ufafuse"], choices=sorted(TABLES))
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    from mfif.runtime import retain_freed_memory
    from mfif.scenes import discover_scenes

    retain_freed_memory()
    torch.set_num_threads(args.threads)
    scenes = [s for s in discover_scenes(args.lytro) if len(s.sources) == 2][: args.pairs]
    for method in args.methods:
        for line in compare(method, scenes, args.weights):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
