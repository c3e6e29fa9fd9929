"""VAEEDOF CPU benchmark: 7 real 1600x1200 frames, and the peak memory of a 4096x4096 7-input case.

Cases (each in a fresh subprocess so that its peak RSS is its own):

* ``stack``: 7 frames of ``data/stack_v4`` (Keep-Passion/GACN data/material/V-4) (evenly spaced over the 65-frame focus
  sweep) fused at full 1600x1200 with the paper's tiling (512 px tiles, 1/4 overlap, Sec. 3):
  seconds (median of ``--repeats`` after a small warm-up) and peak RSS.
* ``4096``: 7 random 4096x4096 sources, tiled (``--tile-batch`` tiles per pass). The full run
  is 121 tiles (11 x 11), about 10x the stack case, too long for a shared 2-core CPU, so by
  default the run stops after ``--max-tiles`` tile batches: every image-sized buffer (input,
  float64 output accumulator) is allocated before the first tile and each tile batch needs the
  same activations, so the peak memory is already reached; the full-run time is extrapolated
  from the per-tile time (stated as such). ``--max-tiles 0`` runs it completely.

Weights do not change speed or memory: a random VAE is used (``model.allow_random_vae``) unless
``--vae-weights`` is given. The fusion U-Net is the paper configuration (vaeedof.yaml).

Usage::

    python experiments/benchmarks/bench_vaeedof.py [--threads 2] [--repeats 1] [--max-tiles 2] [--cases stack 4096]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


import torch  # noqa: E402

STACK = Path("data/stack_v4")  # the GACN repository's V-4 microscope stack (Keep-Passion/GACN, data/material/V-4)
NUM_FRAMES = 7  # Sec. 3: seven inputs


class _StopAfter(Exception):
    pass


def rss_mb() -> float:
    """Current resident set size (MiB) from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def build(vae_weights: str | None, tile_batch: int):
    from mfif import registry
    from mfif.config import load_config

    ov = ["metrics=[psnr]", f"model.tile_batch={tile_batch}"]
    ov += [f"model.vae_weights={vae_weights}"] if vae_weights else ["model.allow_random_vae=true"]
    cfg = load_config("vaeedof.yaml", ov)
    return registry.method_class("vaeedof")(cfg).eval()


def load_stack(folder: Path) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    frames = sorted(folder.glob("V*.jpg"))
    if len(frames) < NUM_FRAMES:
        raise SystemExit(f"{folder}: expected the 65 stack_v4 frames, found {len(frames)}")
    idx = np.linspace(0, len(frames) - 1, NUM_FRAMES).round().astype(int)
    imgs = [torch.from_numpy(np.asarray(Image.open(frames[i]).convert("RGB"))).permute(2, 0, 1) for i in idx]
    return (torch.stack(imgs).float() / 255)[None]


def worker(case: str, args) -> dict:
    torch.set_num_threads(args.threads)
    module = build(args.vae_weights, args.tile_batch)
    n_params = {"unet": sum(p.numel() for p in module.net.unet.parameters()),
                "vae_encoder": sum(p.numel() for p in module.net.vae.encoder.parameters()),
                "vae_decoder": sum(p.numel() for p in module.net.vae.decoder.parameters())}
    with torch.inference_mode():
        module.fuse(torch.rand(1, NUM_FRAMES, 3, 64, 64))  # warm-up (small)
    x = load_stack(Path(args.stack)) if case == "stack" else torch.rand(1, NUM_FRAMES, 3, args.size, args.size)
    calls = {"n": 0}
    inner = module._fuse_tile
    limit = 0 if case == "stack" else args.max_tiles

    def counted(t):
        if limit and calls["n"] >= limit:
            raise _StopAfter
        calls["n"] += 1
        return inner(t)

    module._fuse_tile = counted
    before = rss_mb()
    times, cpu_times, complete = [], [], True
    for _ in range(args.repeats if case == "stack" else 1):
        calls["n"] = 0
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            with torch.inference_mode():
                out = module.fuse(x)
            assert out.fused.shape[-2:] == x.shape[-2:]
        except _StopAfter:
            complete = False
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)  # CPU seconds of all threads: robust to a shared machine
    from mfif.ops.tiling import tile_starts

    h, w = (-(-s // module.pad_multiple) * module.pad_multiple for s in x.shape[-2:])
    m = module.cfg.model
    tiles = len(tile_starts(h, m.tile_size, m.tile_overlap)) * len(tile_starts(w, m.tile_size, m.tile_overlap))
    sec = statistics.median(times)
    per_tile = sec / max(1, calls["n"])
    return {"case": case, "size": f"{x.shape[-1]}x{x.shape[-2]}", "inputs": NUM_FRAMES, "threads": args.threads,
            "tiles_total": tiles, "tiles_run": calls["n"] * m.tile_batch if not complete else tiles,
            "complete": complete, "seconds": sec if complete else None,
            "seconds_extrapolated": None if complete else per_tile * tiles / m.tile_batch,
            "seconds_per_tile": sec / tiles if complete else per_tile / m.tile_batch,
            "cpu_seconds": statistics.median(cpu_times), "load_avg": os.getloadavg()[0],
            "input_mb": x.numel() * 4 / 2**20, "rss_before_fuse_mb": before, "peak_rss_mb": peak_rss_mb(),
            "params": n_params}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="*", default=["stack", "4096"], choices=["stack", "4096"])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=1, help="runs of the stack case (median)")
    p.add_argument("--size", type=int, default=4096, help="side of the synthetic case")
    p.add_argument("--tile-batch", type=int, default=1)
    p.add_argument("--max-tiles", type=int, default=2, help="tile batches run in the synthetic case (0 = all)")
    p.add_argument("--vae-weights", default=None)
    p.add_argument("--stack", default=str(STACK), help="folder of the stack_v4 frames")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args)), flush=True)
        return 0
    if "stack" in args.cases and not Path(args.stack).is_dir():
        print(f"skip stack case: {args.stack} not found", file=sys.stderr)
        args.cases = [c for c in args.cases if c != "stack"]
    results = []
    for case in args.cases:
        cmd = [sys.executable, __file__, "--worker", case] + [a for a in (argv or sys.argv[1:]) if a != "--worker"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode or not line:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"case {case} failed (exit {proc.returncode})")
        results.append(json.loads(line[0][7:]))
    params = results[0]["params"]
    print(f"VAEEDOF parameters: fusion U-Net {params['unet']:,}; frozen VAE encoder {params['vae_encoder']:,}, "
          f"decoder {params['vae_decoder']:,}")
    print("| case | size | inputs | threads | tiles run/total | seconds | s/tile | CPU s (run) | load avg | input MiB "
          "| RSS before fuse MiB | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        sec = f"{r['seconds']:.1f}" if r["complete"] else f"~{r['seconds_extrapolated']:.0f} (extrapolated)"
        print(f"| {r['case']} | {r['size']} | {r['inputs']} | {r['threads']} | {r['tiles_run']}/{r['tiles_total']} | {sec} | "
              f"{r['seconds_per_tile']:.2f} | {r['cpu_seconds']:.0f} | {r['load_avg']:.1f} | {r['input_mb']:.0f} | {r['rss_before_fuse_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
