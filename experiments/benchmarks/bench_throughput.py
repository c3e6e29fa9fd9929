"""Throughput of whole-benchmark fusion (:func:`mfif.batching.fuse_scenes`): images/s per method,
one scene at a time (decode, fuse, encode in turn) against equal-shape batches with DataLoader
workers decoding and writer threads encoding while the network runs.

Methods with released weights load them (``--weights DIR`` holding ``gacn_official.pkl``,
``ufa_official.pth``, ``sesf_official.pkl``); the others run from their initial weights, which
costs the same time. One line per figure, with the allocator state and thread count.

Usage::

    python experiments/benchmarks/bench_throughput.py LYTRO_DIR --weights WEIGHTS_DIR \
        [--methods gacn ufafuse sesf udpnet msasn] [--batch 4] [--workers 2] [--threads 2] [--scenes 20]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

RELEASED = {"gacn": "gacn_official.pkl", "ufafuse": "ufa_official.pth", "sesf": "sesf_official.pkl"}


def build(method: str, weights_dir: Path | None):
    """An inference module of ``method`` with its released weights where they exist."""
    from lightning_modules.base import inference_only
    from mfif import registry
    from mfif.config import load_config

    cfg = load_config(f"{method}.yaml", data=False)
    with inference_only():
        module = registry.method_class(method)(cfg)
    source = "initial weights"
    if method in RELEASED and weights_dir is not None and (weights_dir / RELEASED[method]).is_file():
        module.load_official_weights(str(weights_dir / RELEASED[method]))
        source = RELEASED[method]
    return module.eval(), source


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmark", help="folder of aligned source sets (e.g. Lytro)")
    p.add_argument("--weights", type=Path, help="folder with the released weights files")
    p.add_argument("--methods", nargs="+", default=["gacn", "ufafuse", "sesf", "udpnet", "msasn"])
    p.add_argument("--batch", type=int, default=4, help="scenes per network call in throughput mode")
    p.add_argument("--workers", type=int, default=2, help="decode processes and encode threads")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--scenes", type=int, default=0, help="use the first N scenes (0 = all)")
    args = p.parse_args(argv)

    import torch

    from mfif.batching import fuse_scenes
    from mfif.runtime import retain_freed_memory
    from mfif.scenes import discover_scenes

    alloc = "retain-freed-memory" if retain_freed_memory() else "default"
    torch.set_num_threads(args.threads)
    scenes = discover_scenes(args.benchmark)
    scenes = scenes[: args.scenes] if args.scenes else scenes
    name = Path(args.benchmark).name
    for method in args.methods:
        try:
            module, source = build(method, args.weights)
        except Exception as e:  # noqa: BLE001 - e.g. VAEEDOF without its VAE weights: report, go on
            print(f"throughput {method} | skipped: {str(e).splitlines()[0][:160]}")
            continue
        fuse_scenes(module, scenes[:1], Path(tempfile.mkdtemp()), overwrite=True)  # warm-up, untimed
        rates = {}
        for label, batch, workers in (("one-at-a-time", 1, 0), (f"batch{args.batch}-workers{args.workers}", args.batch, args.workers)):
            with tempfile.TemporaryDirectory() as out:
                stats = fuse_scenes(module, scenes, Path(out), batch=batch, workers=workers)
            rates[label] = stats.images_per_second
            print(f"throughput {method} ({source}) {name} x{stats.scenes} | {label:22s} | allocator={alloc} | "
                  f"threads={args.threads} | {stats.images_per_second:.2f} images/s ({stats.seconds:.1f} s, "
                  f"{stats.batches} network calls)")
        one, many = rates.values()
        print(f"throughput {method} | speed-up of throughput mode | {many / one:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
