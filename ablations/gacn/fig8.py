"""GACN Fig. 8 (Sec. 4.5.1): how each fusion metric degrades when the fused results are blurred.

The paper blurs its fused test results with Gaussians of increasing standard deviation and finds
that Q_G drops fastest - the argument for Q_G as the training loss. This script does the same:

1. fused images: GACN (``--weights``, the released checkpoint or a Lightning ``.ckpt``) on every
   scene of ``--sources`` (any benchmark folder layout, :func:`mfif.scenes.discover_scenes`),
   or the images already in ``--fused`` (``<scene name>.png``/``.jpg``/...);
2. each fused image blurred with a Gaussian of sigma in ``--sigmas`` (0 = unblurred; kernel side
   ``2 * ceil(3 sigma) + 1``, reflect border, kornia);
3. every metric of ``--metrics`` (metric registry names; default the paper's six) against the
   sources; the mean over scenes and its ratio to the unblurred value.

Outputs in ``--out`` (default: ``--run_dir``, the sweep point's folder): ``fig8.csv`` (sigma,
metric, mean, relative) and ``fig8.png`` (relative value vs sigma, one line per metric); with
``--run_dir`` also ``results.json`` (:func:`record_curves`).

Usage::

    python ablations/gacn/fig8.py --sources data/lytro \\
        --weights weights/gacn_official.pkl --out runs/gacn_fig8 [--pairs 20]
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import torch


PAPER_METRICS = ["q_g", "q_y", "q_ncie", "q_cb", "fmi_edge", "fmi_dct"]  # Sec. 4.3
DEFAULT_SIGMAS = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0]


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``[B, C, H, W]`` (sigma 0: unchanged)."""
    if sigma <= 0:
        return x
    import kornia.filters as KF

    k = 2 * math.ceil(3 * sigma) + 1
    return KF.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect")


def build_gacn(weights: str):
    """A GACN module with the released ``.pkl`` weights or a Lightning ``.ckpt``.

    A ``.ckpt`` is rebuilt from its own stored config, read as tensors only (no pickled code
    runs) and loaded with strict keys (:func:`mfif.checkpoints.load_module`); a checkpoint of
    another method is refused.
    """
    if weights.endswith(".ckpt"):
        from mfif.checkpoints import load_module

        return load_module(weights, method="gacn")
    from omegaconf import OmegaConf

    from lightning_modules.gacn.module import GACN, GACNConfig
    from mfif.config import DataConfig, ExperimentConfig

    cfg = OmegaConf.structured(ExperimentConfig(method="gacn", model=GACNConfig(), data=DataConfig(), metrics=[]))
    model = GACN(cfg)
    model.load_official_weights(weights)
    return model.eval()


def fused_images(args, scenes) -> list[torch.Tensor]:
    from mfif.io import load_image

    if args.fused:
        out = []
        for s in scenes:
            hits = sorted(Path(args.fused).glob(f"{s.name}.*"))
            if not hits:
                raise SystemExit(f"no fused image for scene '{s.name}' in {args.fused}")
            out.append(load_image(hits[0])[None])
        return out
    if not args.weights:
        raise SystemExit("give --weights (GACN) or --fused (a folder of fused images)")
    model = build_gacn(args.weights)
    out = []
    with torch.inference_mode():
        for s in scenes:
            src = torch.stack([load_image(p) for p in s.sources])[None]
            out.append(model.fuse(src).fused)
            print(f"  fused {s.name}", flush=True)
    return out


def run(args) -> list[dict]:
    from mfif.io import load_image
    from mfif.scenes import discover_scenes
    from mfif.metrics import build_metric

    scenes = discover_scenes(args.sources)[: args.pairs]
    fused = fused_images(args, scenes)
    sources = [torch.stack([load_image(p) for p in s.sources])[None] for s in scenes]
    rows = []
    for sigma in args.sigmas:
        for name in args.metrics:
            metric = build_metric(name)
            for f, src in zip(fused, sources):
                metric.update(blur(f, sigma).clamp(0, 1), src)
            rows.append({"sigma": sigma, "metric": name, "mean": float(metric.compute())})
        print(f"  sigma={sigma}: " + ", ".join(f"{r['metric']}={r['mean']:.4f}" for r in rows if r["sigma"] == sigma),
              flush=True)
    base = {r["metric"]: r["mean"] for r in rows if r["sigma"] == args.sigmas[0]}
    for r in rows:
        b = base[r["metric"]]
        r["relative"] = r["mean"] / b if b else float("nan")
    return rows


def write_outputs(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "fig8.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["sigma", "metric", "mean", "relative"])
        w.writeheader()
        w.writerows(rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["metric"] for r in rows):
        pts = [(r["sigma"], r["relative"]) for r in rows if r["metric"] == name]
        ax.plot(*zip(*pts), marker="o", label=name)
    ax.set_xlabel("Gaussian blur sigma of the fused image")
    ax.set_ylabel("metric / unblurred value")
    ax.set_title("GACN Fig. 8: metric degradation under blur")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fig8.png", dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sources", required=True, help="benchmark folder of source sets")
    p.add_argument("--weights", default=None, help="gacn_official.pkl or a GACN .ckpt")
    p.add_argument("--fused", default=None, help="folder of fused images <scene>.<ext> (instead of --weights)")
    p.add_argument("--sigmas", type=lambda s: [float(v) for v in s.split(",")], default=DEFAULT_SIGMAS,
                   help="comma-separated blur sigmas, first one the reference (default 0,...,5)")
    p.add_argument("--metrics", type=lambda s: s.split(","), default=PAPER_METRICS, help="comma-separated metric names")
    p.add_argument("--pairs", type=int, default=None, help="use only the first N scenes")
    p.add_argument("--out", default=None, help="output folder for fig8.csv, fig8.png (default RUN_DIR, else runs/gacn_fig8)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--wandb", action="store_true", help="log the curves to W&B (sweep fig8.yaml)")
    from ablations.sweeps.point_results import add_point_arguments, apply_profile, builtin_scenes_option

    # --run_dir, --wandb_group (sweep runner); --profile smoke: built-in scenes, their GT as the fused images
    add_point_arguments(p, smoke={"sources": builtin_scenes_option(), "fused": builtin_scenes_option("fused"),
                                  "weights": None, "pairs": 2, "sigmas": [0.0, 1.0], "metrics": ["q_g"]})
    args = apply_profile(p.parse_args(argv))
    torch.set_num_threads(args.threads)
    out = Path(args.out or args.run_dir or "runs/gacn_fig8")
    from mfif.config import ConfigError

    try:
        rows = run(args)
    except ConfigError as e:  # e.g. an unreadable or non-GACN checkpoint: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    write_outputs(rows, out)
    print(f"wrote {out / 'fig8.csv'} and {out / 'fig8.png'}")
    record_curves(args, rows)


def record_curves(args, rows: list[dict]) -> None:
    """The curves to ``--run_dir``/results.json and W&B (the point of ablations/gacn/fig8.yaml):
    ``<metric>`` = value at the largest sigma / unblurred value (the table's row), and
    ``<metric>@<sigma>`` every point of the curve."""
    from ablations.sweeps.point_results import record

    last = max(args.sigmas)
    metrics = {r["metric"]: r["relative"] for r in rows if r["sigma"] == last}
    metrics.update({f"{r['metric']}@{r['sigma']:g}": r["relative"] for r in rows})
    history = [{"sigma": s, **{f"fig8/{r['metric']}": r["relative"] for r in rows if r["sigma"] == s}}
               for s in args.sigmas]
    record(args, metrics, "ablations/gacn/fig8.py", details={"rows": rows, "largest_sigma": last}, history=history)


if __name__ == "__main__":
    main()
