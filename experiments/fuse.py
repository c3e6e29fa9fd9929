"""Fuse your own focus stack with any trained or released model.

Usage::

    python experiments/fuse.py a.jpg b.jpg [c.jpg ...] -o fused.png --checkpoint run/checkpoints/last.ckpt
    python experiments/fuse.py "stack/*.jpg" -o fused.png --method gacn --weights gacn_official.pkl
    python experiments/fuse.py stack_dir/ -o fused.png --checkpoint X.ckpt --tile 512 --overlap 128 \
        model.multi_strategy=serial

Keeps the original size and colour; ``--save-map`` also writes the decision map(s) of
decision-map methods; trailing ``key=value`` arguments override the model's config exactly as
in ``run.py``. Bad input (fewer than 2 images, different sizes, unreadable files, an existing
output without ``--overwrite``) is an error that names the file, and nothing is written.
"""
from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path


import torch  # noqa: E402

from mfif.config import ConfigError, config_from_dict, load_config, parse_overrides  # noqa: E402

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class FuseError(RuntimeError):
    """Bad user input for the fuse CLI."""


def expand_sources(items: list[str]) -> list[Path]:
    """Files, folders (all images inside, sorted) and glob patterns -> sorted list of paths."""
    paths: list[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise FuseError(f"{p}: folder contains no images ({sorted(IMAGE_EXTS)})")
            paths += found
        elif any(ch in it for ch in "*?["):
            found = sorted(Path(q) for q in glob.glob(it))
            if not found:
                raise FuseError(f"pattern '{it}' matches no file")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise FuseError(f"{p}: no such file or folder")
    return paths


def load_sources(paths: list[Path]) -> torch.Tensor:
    """Read and check the sources: ``[1, N, C, H, W]`` in [0, 1]."""
    from mfif.io import load_image

    if len(paths) < 2:
        raise FuseError(f"fusion needs at least 2 source images, got {len(paths)}: {[str(p) for p in paths]}")
    imgs = []
    for p in paths:
        try:
            imgs.append(load_image(p))
        except Exception as e:  # noqa: BLE001 - re-raised with the file named
            raise FuseError(f"{p}: cannot read image ({e})") from e
    h, w = imgs[0].shape[-2:]
    for p, im in zip(paths, imgs):
        if im.shape[-2:] != (h, w):
            raise FuseError(f"{p}: size {im.shape[-1]}x{im.shape[-2]} differs from {paths[0]} ({w}x{h}); sources must be aligned")
    c = max(im.shape[0] for im in imgs)
    imgs = [im.expand(c, -1, -1) if im.shape[0] != c else im for im in imgs]
    return torch.stack(imgs)[None]


def load_module(checkpoint: str | None, method: str | None, weights: str | None, overrides: list[str]):
    """A FusionModule from a Lightning checkpoint or from a method's released weights."""
    from mfif import registry

    if checkpoint:
        if not Path(checkpoint).is_file():
            raise FuseError(f"--checkpoint {checkpoint}: no such file")
        ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if "hyper_parameters" not in ck or "config" not in ck["hyper_parameters"]:
            raise FuseError(f"--checkpoint {checkpoint}: not a checkpoint written by experiments/run.py (no config)")
        from omegaconf import OmegaConf

        cfg = config_from_dict(ck["hyper_parameters"]["config"])
        cfg = OmegaConf.merge(cfg, parse_overrides(overrides))
        module = registry.method_class(cfg.method)(cfg)
        module.load_state_dict(ck["state_dict"], strict=True)
    else:
        if not method or not weights:
            raise FuseError("give --checkpoint X.ckpt, or --method NAME --weights FILE")
        if not Path(weights).is_file():
            raise FuseError(f"--weights {weights}: no such file")
        cfg = load_config(f"{method}.yaml", overrides)
        module = registry.method_class(cfg.method)(cfg)
        module.load_official_weights(weights)
    return module.eval()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.inference_mode()
def fuse_stack(module, sources: torch.Tensor, tile: int = 0, overlap: int = 0):
    """Run ``module.fuse`` whole or tile by tile (``mfif.ops.tiling``)."""
    if tile and max(sources.shape[-2:]) > tile:
        from mfif.ops.tiling import tiled_apply

        fused = tiled_apply(lambda s: module.fuse(s).fused, sources, tile=tile, overlap=overlap or tile // 4)
        return fused, None
    out = module.fuse(sources)
    return out.fused, out.maps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="source images, a folder, a glob; then optional key=value overrides")
    p.add_argument("-o", "--out", required=True, help="output image path")
    p.add_argument("--checkpoint", help="Lightning checkpoint written by run.py (any paper)")
    p.add_argument("--method", help="method name, with --weights (released weights)")
    p.add_argument("--weights", help="official released weights file")
    p.add_argument("--save-map", action="store_true", help="also write <out>_map<i>.png decision maps")
    p.add_argument("--tile", type=int, default=0, help="tile size for large images (0 = whole image)")
    p.add_argument("--overlap", type=int, default=0, help="tile overlap (default tile/4)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = p.parse_intermixed_args(argv)  # key=value overrides may follow the options
    from mfif.io import save_image

    try:
        overrides = [a for a in args.inputs if "=" in a and not Path(a).exists()]
        srcs = [a for a in args.inputs if a not in overrides]
        out = Path(args.out)
        if out.exists() and not args.overwrite:
            raise FuseError(f"{out} exists (use --overwrite to replace it)")
        if out.suffix.lower() not in IMAGE_EXTS:
            raise FuseError(f"-o {out}: unknown image extension (use one of {sorted(IMAGE_EXTS)})")
        paths = expand_sources(srcs)
        sources = load_sources(paths)
        device = pick_device(args.device)
        module = load_module(args.checkpoint, args.method, args.weights, overrides).to(device)
        fused, maps = fuse_stack(module, sources.to(device), args.tile, args.overlap)
    except (FuseError, ConfigError, NotImplementedError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    save_image(fused[0].cpu(), out)
    if args.save_map:
        if maps is None:
            print("note: this method (or tiled mode) produces no decision map", file=sys.stderr)
        else:
            for i in range(maps.shape[1]):
                save_image(maps[0, i].cpu(), out.with_name(f"{out.stem}_map{i}{out.suffix}"))
    print(f"fused {len(paths)} images -> {out}")
    return 0


def cli() -> int:
    """Console entry point: :func:`main` with the CLI process settings (:mod:`mfif.runtime`)."""
    from mfif.runtime import run_cli

    return run_cli(main)


if __name__ == "__main__":
    sys.exit(cli())
