"""Score folders of fused images (one folder per method) against a benchmark set.

Example::

    python experiments/evaluate.py --sources data/lytro \\
        --fused results/gacn --fused results/udpnet --metrics q_nmi,q_g,q_cb --out lytro.csv

Scenes are discovered in ``--sources`` (``mfif.scenes.discover_scenes``, e.g.
``lytro-01-A.jpg``/``-B.jpg`` -> scene ``lytro-01``); the fused image of a scene is
``<scene>.<png|jpg|...>`` in each ``--fused`` folder, whose name is the method name. Writes a
CSV (one row per method x image, one column per metric, a ``mean`` row per method, an
``arank`` column when several methods are scored) and a Markdown file beside it, and prints
the summary. Any bad input (missing folder, unmatched scene, unknown metric, unreadable
image, existing output without ``--overwrite``) stops with a message naming it, exit code 2,
and nothing is written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", required=True, help="benchmark folder with the source images")
    p.add_argument("--fused", required=True, action="append", help="folder of fused images (repeat per method)")
    p.add_argument("--metrics", default=None, help="comma-separated metric names (default: every no-reference metric)")
    p.add_argument("--gt", default=None, help="ground-truth folder (enables full-reference metrics)")
    p.add_argument("--out", required=True, help="output CSV path (Markdown is written beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--device", default="cpu", help="torch device for the metrics")
    p.add_argument("--fmi-crop", type=int, default=None, help="evaluate FMI on the centre NxN crop (reference: 64)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default; 1 is often fastest on a busy CPU)")
    p.add_argument("--quiet", action="store_true", help="no per-image progress lines")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse(argv)
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from mfif.io import BenchmarkError
    from mfif.scenes import discover_scenes
    from mfif.metrics import FULL_REFERENCE_METRICS, NO_REFERENCE_METRICS, build_metric, metric_spec
    from mfif.metrics.evaluation import EvaluationError, arank, format_markdown, method_means, score_folder, write_tables

    try:
        out = Path(args.out)
        for p in (out, out.with_suffix(".md")):
            if p.exists() and not args.overwrite:
                raise EvaluationError(f"output exists: {p} (pass --overwrite to replace it)")
        if not out.parent.is_dir():
            raise EvaluationError(f"output folder does not exist: {out.parent}")
        src = Path(args.sources)
        if not src.is_dir():
            raise EvaluationError(f"sources folder not found: {src}")
        if args.gt is not None and not Path(args.gt).is_dir():
            raise EvaluationError(f"ground-truth folder not found: {args.gt}")
        fused_dirs = [Path(f) for f in args.fused]
        for f in fused_dirs:
            if not f.is_dir():
                raise EvaluationError(f"fused folder not found: {f}")
        names = [f.name for f in fused_dirs]
        if len(set(names)) != len(names):
            raise EvaluationError(f"method names (fused folder names) must be unique, got {names}")
        if args.metrics:
            metric_names = [m.strip() for m in args.metrics.split(",") if m.strip()]
        else:
            metric_names = list(NO_REFERENCE_METRICS) + (list(FULL_REFERENCE_METRICS) if args.gt else [])
        metrics = {}
        for n in metric_names:
            try:
                metric_spec(n)
            except KeyError as e:
                raise EvaluationError(e.args[0]) from e
            kwargs = {"crop": args.fmi_crop} if n.startswith("fmi_") and args.fmi_crop else {}
            metrics[n] = (metric_spec(n).factory(**kwargs) if kwargs else build_metric(n)).to(args.device)
        scenes = discover_scenes(src, gt_dir=args.gt)
        if not scenes:
            raise EvaluationError(f"no scenes found in {src}")
        say = None if args.quiet else (lambda line: print(line, flush=True))
        results = {f.name: score_folder(f, scenes, metric_names, args.device, metrics, say) for f in fused_dirs}
        ranks = arank({m: method_means(r) for m, r in results.items()}) if len(results) > 1 else None
        csv_path, md_path = write_tables(results, out, ranks, overwrite=args.overwrite)
    except (EvaluationError, BenchmarkError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_markdown(results, ranks).split("\n## ")[1].split("\n", 1)[1])
    print(f"wrote {csv_path} and {md_path}")
    return 0


def cli() -> int:
    """Console entry point: :func:`main` with the CLI process settings (:mod:`mfif.runtime`)."""
    from mfif.runtime import run_cli

    return run_cli(main, fast_exit=True)


if __name__ == "__main__":
    sys.exit(cli())
