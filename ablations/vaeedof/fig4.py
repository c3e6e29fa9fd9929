"""VAEEDOF Fig. 4: fusion quality vs patch difficulty (Sec. 4).

"We divided the image into smaller patches and computed a difficulty score for each patch. This
score was assigned by comparing the GT patch with the corresponding input patches, capturing
the disparity between the available information and the ideal fusion outcome" (Sec. 4).

Here: images are cut into non-overlapping ``--patch`` patches; a patch's **difficulty** is the
disparity (mean absolute difference, or MSE) between the ground-truth patch and the *best*
available source patch (the minimum over sources): 0 when some source already is the answer,
large where no source holds the information (occlusions, every source defocused). Each method's
fused patch is scored with a registered full-reference metric (Fig. 4 shows LPIPS: ``--metric
lpips``). For thresholds ``t`` the plot shows the mean metric over patches with difficulty >= t,
the marker size the number of such patches (as in Fig. 4). Writes ``<out>.csv`` and ``<out>.png``.

Usage::

    python ablations/vaeedof/fig4.py --data-config vaeedof.yaml data.root=RENDERS \\
        --checkpoint vaeedof=runs/vaeedof/.../best.ckpt --checkpoint gacn=runs/gacn/.../best.ckpt \\
        --metric lpips --patch 64 --out fig4
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence


import torch  # noqa: E402
from torch import Tensor  # noqa: E402

DISPARITIES = ("l1", "mse")


def to_patches(x: Tensor, patch: int) -> Tensor:
    """Non-overlapping ``patch`` x ``patch`` tiles (the border remainder is dropped).

    Shape:
        - x: :math:`(*, C, H, W)`
        - output: :math:`(P, *, C, patch, patch)` with P = (H // patch) * (W // patch)
    """
    h, w = x.shape[-2] // patch, x.shape[-1] // patch
    if h == 0 or w == 0:
        raise ValueError(f"image {tuple(x.shape[-2:])} is smaller than --patch {patch}")
    x = x[..., : h * patch, : w * patch]
    x = x.unflatten(-2, (h, patch)).unflatten(-1, (w, patch))  # (*, C, h, p, w, p)
    x = x.movedim(-4, 0).movedim(-2, 1)  # (h, w, *, C, p, p)
    return x.flatten(0, 1)


def patch_difficulty(sources: Tensor, gt: Tensor, patch: int, disparity: str = "l1") -> Tensor:
    """Disparity between each GT patch and the best source patch (Sec. 4, Fig. 4).

    Shape:
        - sources: :math:`(N, C, H, W)`; gt: :math:`(C, H, W)`
        - output: :math:`(P,)`
    """
    if disparity not in DISPARITIES:
        raise ValueError(f"disparity must be one of {DISPARITIES}, got '{disparity}'")
    diff = to_patches(sources, patch) - to_patches(gt, patch)[:, None]  # (P, N, C, p, p)
    d = diff.abs() if disparity == "l1" else diff.square()
    return d.flatten(2).mean(-1).min(1).values


def patch_scores(fused: Tensor, gt: Tensor, patch: int, metric: str) -> Tensor:
    """A registered full-reference metric on every patch (one metric instance, reset per patch).

    Shape:
        - fused, gt: :math:`(C, H, W)`
        - output: :math:`(P,)`
    """
    from mfif.metrics import build_metric, metric_spec

    if metric_spec(metric).kind != "fr":
        raise ValueError(f"--metric must be full-reference (fused vs gt), '{metric}' is no-reference")
    m = build_metric(metric)
    out = []
    for f, g in zip(to_patches(fused, patch), to_patches(gt, patch)):
        m.update(fused=f[None], gt=g[None])
        out.append(float(m.compute()))
        m.reset()
    return torch.tensor(out, dtype=torch.float64)


def difficulty_curve(difficulty: Tensor, scores: Tensor, thresholds: Sequence[float]) -> list[dict]:
    """Mean score of the patches with difficulty >= t, and their count, for each threshold t.

    Non-finite scores (e.g. PSNR of an exact patch) are left out of the mean, not of the count.
    """
    rows = []
    for t in thresholds:
        sel = difficulty >= t
        vals = scores[sel]
        vals = vals[torch.isfinite(vals)]
        rows.append({"threshold": float(t), "count": int(sel.sum()),
                     "mean": float(vals.mean()) if len(vals) else math.nan})
    return rows


def analyse(batches: Iterable[dict], methods: dict[str, Callable[[Tensor], Tensor]], patch: int, metric: str,
            disparity: str = "l1", num_thresholds: int = 10) -> list[dict]:
    """Fig. 4 rows ``{method, threshold, count, mean}`` for every method over all scenes.

    ``methods`` maps a label to ``fuse(sources [1, N, C, H, W]) -> fused [1, C, H, W]``.
    Thresholds are quantiles of the difficulty (0 %, ..., 90 %), so every point holds patches.
    """
    diffs, scores = [], {k: [] for k in methods}
    for batch in batches:
        if batch.get("gt") is None:
            raise ValueError(f"scene {batch.get('name')}: Fig. 4 needs ground truth ('gt')")
        for b in range(batch["sources"].shape[0]):
            src, gt = batch["sources"][b].float(), batch["gt"][b].float()
            diffs.append(patch_difficulty(src, gt, patch, disparity).double())
            for label, fn in methods.items():
                fused = fn(src[None])[0].clamp(0, 1).float().cpu()
                scores[label].append(patch_scores(fused, gt, patch, metric))
    if not diffs:
        raise ValueError("no scenes to analyse")
    d = torch.cat(diffs)
    q = torch.linspace(0, 0.9, num_thresholds, dtype=torch.float64)
    thresholds = torch.quantile(d, q).tolist()
    rows = []
    for label in methods:
        for r in difficulty_curve(d, torch.cat(scores[label]), thresholds):
            rows.append({"method": label, **r})
    return rows


def plot(rows: list[dict], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    total = max(r["count"] for r in rows) or 1
    for label in dict.fromkeys(r["method"] for r in rows):
        rr = [r for r in rows if r["method"] == label]
        xs, ys = [r["threshold"] for r in rr], [r["mean"] for r in rr]
        ax.plot(xs, ys, "-", alpha=0.6)
        ax.scatter(xs, ys, s=[20 + 180 * r["count"] / total for r in rr], label=label)
    ax.set_xlabel("difficulty threshold (patches with difficulty >= t)")
    ax.set_ylabel(metric)
    ax.set_title("Metric vs patch difficulty (VAEEDOF Fig. 4)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="key=value overrides of --data-config (data.root=..., data.benchmark=...)")
    p.add_argument("--data-config", default="vaeedof.yaml", help="config whose data section gives the test scenes")
    p.add_argument("--checkpoint", action="append", default=[], metavar="LABEL=CKPT", help="a method to analyse")
    p.add_argument("--official", action="append", default=[], metavar="LABEL=METHOD:WEIGHTS",
                   help="a method with released weights")
    p.add_argument("--metric", default="psnr", help="full-reference metric (Fig. 4 uses lpips)")
    p.add_argument("--disparity", default="l1", choices=DISPARITIES)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--tile", type=int, default=0, help="tiled fusion for large scenes (0 = whole image)")
    p.add_argument("--max-scenes", type=int, default=0)
    p.add_argument("--out", default="fig4", help="output prefix (writes .csv and .png)")
    args = p.parse_args(argv)

    from experiments.fuse import fuse_stack, load_module
    from mfif import registry
    from mfif.config import load_config

    specs = {}
    for item in args.checkpoint:
        label, _, ckpt = item.partition("=")
        specs[label] = load_module(ckpt, None, None, [])
    for item in args.official:
        label, _, rest = item.partition("=")
        method, _, weights = rest.partition(":")
        specs[label] = load_module(None, method, weights, [])
    if not specs:
        p.error("give at least one --checkpoint LABEL=CKPT or --official LABEL=METHOD:WEIGHTS")
    methods = {k: (lambda s, m=m: fuse_stack(m, s, args.tile)[0]) for k, m in specs.items()}

    cfg = load_config(args.data_config, args.overrides)
    dm = registry.datamodule_class(cfg.data.name)(cfg.data)
    dm.setup("test")

    def batches():
        for i, batch in enumerate(dm.test_dataloader()):
            if args.max_scenes and i >= args.max_scenes:
                break
            yield batch

    with torch.inference_mode():
        rows = analyse(batches(), methods, args.patch, args.metric, args.disparity)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["method", "threshold", "count", "mean"])
        w.writeheader()
        w.writerows(rows)
    plot(rows, args.metric, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
