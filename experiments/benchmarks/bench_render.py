"""Benchmark of the MattingMFIF Blender renderer: seconds per scene and noise at given samples.

Usage::

    python experiments/benchmarks/bench_render.py [--resolutions 256 512] [--samples 32] [--seed 0]
        [--extrapolate 4096] [--noise] [--lighting baked|pathtraced] [--out DIR]

For each resolution one full scene (n + 1 focus renders, ground truth, probe, masks/depth) is
rendered with the real renderer and its wall-clock seconds are reported, per pass and in total.
``--extrapolate R`` fits ``seconds = a + b * pixels`` (wall and CPU) on the measured resolutions
(least squares; needs two or more) and predicts resolution ``R`` -- a measured extrapolation, not
a render at ``R``. ``--noise`` renders the same scene a second time with another Cycles seed at
the largest resolution: the per-pixel noise standard deviation of one render is
``std(a - b) / sqrt(2)`` (8-bit levels), reported for the ground truth and the focus renders.

Needs ``bpy`` (``pip install -e .[blender]``); prints a JSON summary as the last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


from blender.assets import load_catalogs  # noqa: E402
from blender.progress import Reporter  # noqa: E402
from blender.render_mattingmfif import DEFAULT_SAMPLES  # noqa: E402
from blender.scene import SceneConfig, sample_scene  # noqa: E402


def _render(cfg, seed, samples, lighting, denoise, out_dir, seed_offset=0):
    """Render scene 0 of ``seed`` into ``out_dir``; return its scene.json dict."""
    from blender.render_scene import render_scene

    subjects, backgrounds, hdris = load_catalogs(None, None, None)
    plan = sample_scene(cfg, seed, 0, subjects, backgrounds, [])
    plan = dataclasses.replace(plan, render_seed=plan.render_seed + seed_offset)
    args = argparse.Namespace(
        samples=samples, denoise=denoise, threads=0, device="cpu", verbose=False, lighting=lighting
    )
    reporter = Reporter(1, cfg.num_planes + 4, stream=open(os.devnull, "w"))
    final = render_scene(plan, cfg, args, (subjects, backgrounds, hdris), Path(out_dir), reporter)
    return json.loads((final / "scene.json").read_text()), final


def _load(folder: Path, name: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(folder / name), dtype=np.float64)


def noise_std(a: Path, b: Path, names: list[str]) -> dict[str, float]:
    """Per-pixel noise std (8-bit levels) of one render from two independently seeded ones."""
    return {n: float(np.std(_load(a, n) - _load(b, n)) / np.sqrt(2)) for n in names}


def fit_extrapolate(points: dict[int, float], target: int) -> float:
    """Least-squares ``a + b * res**2`` through ``{res: seconds}``, evaluated at ``target``."""
    res = np.array(sorted(points), dtype=np.float64)
    sec = np.array([points[int(r)] for r in res])
    a_mat = np.stack([np.ones_like(res), res**2], axis=1)
    (a, b), *_ = np.linalg.lstsq(a_mat, sec, rcond=None)
    return float(max(a, 0.0) + b * target**2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resolutions", type=int, nargs="+", default=[512])
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lighting", choices=("baked", "pathtraced"), default="baked")
    p.add_argument("--no-denoise", action="store_true")
    p.add_argument("--extrapolate", type=int, default=None, help="predict this resolution")
    p.add_argument("--noise", action="store_true", help="measure noise at the largest resolution")
    p.add_argument("--out", default=None, help="keep renders here (default: a temp folder)")
    args = p.parse_args(argv)

    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-render-"))
    root.mkdir(parents=True, exist_ok=True)
    summary = {"samples": args.samples, "lighting": args.lighting, "denoise": not args.no_denoise,
               "seed": args.seed, "per_resolution": {}}
    totals, totals_cpu = {}, {}
    for res in args.resolutions:
        cfg = SceneConfig(resolution=res)
        folder = root / f"res{res}"
        folder.mkdir(exist_ok=True)
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        meta, final = _render(cfg, args.seed, args.samples, args.lighting, not args.no_denoise,
                              folder)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        secs = meta["render_seconds"]
        totals[res] = wall
        totals_cpu[res] = cpu
        summary["per_resolution"][res] = {
            "scene_seconds": round(wall, 2),
            "cpu_seconds": round(cpu, 2),  # all threads; ~2x wall on an idle 2-core machine
            "load_average_1min_before": round(load0, 2),
            "passes": secs,
        }
        print(f"{res}x{res}: {wall:.1f} s/scene wall, {cpu:.1f} CPU-s ({args.samples} spp, "
              f"load avg {load0:.1f}) passes={secs}", flush=True)
        summary["blender_version"] = meta["blender_version"]
    if args.extrapolate and len(totals) >= 2:
        pred = fit_extrapolate(totals, args.extrapolate)
        pred_cpu = fit_extrapolate(totals_cpu, args.extrapolate)
        summary["extrapolated"] = {"resolution": args.extrapolate, "scene_seconds": round(pred, 1),
                                   "cpu_seconds": round(pred_cpu, 1), "from": sorted(totals)}
        print(f"{args.extrapolate}x{args.extrapolate}: ~{pred:.0f} s/scene wall, "
              f"~{pred_cpu:.0f} CPU-s (extrapolated from {sorted(totals)})")
    if args.noise:
        res = max(args.resolutions)
        cfg = SceneConfig(resolution=res)
        folder = root / f"res{res}_seed2"
        folder.mkdir(exist_ok=True)
        _, second = _render(cfg, args.seed, args.samples, args.lighting, not args.no_denoise,
                            folder, seed_offset=1)
        names = ["gt.png"] + [f"focus_{i}.png" for i in range(cfg.num_planes + 1)]
        first = root / f"res{res}" / "scene_000000"
        noise = noise_std(first, second, names)
        summary["noise_std_8bit"] = {"resolution": res,
                                     **{k: round(v, 3) for k, v in noise.items()}}
        print(f"noise std (8-bit levels) at {res}px, {args.samples} spp: {noise}")
    summary["output"] = str(root)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
