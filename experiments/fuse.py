"""Fuse your own focus stack with any trained or released model.

Usage::

    python experiments/fuse.py a.jpg b.jpg [c.jpg ...] -o fused.png --checkpoint run/checkpoints/last.ckpt
    python experiments/fuse.py "stack/*.jpg" -o fused.png --method gacn --weights gacn_official.pkl
    python experiments/fuse.py stack_dir/ -o fused.png --checkpoint X.ckpt --tile 512 --overlap 128 \
        model.multi_strategy=serial

Keeps the original size, colour and orientation (EXIF applied), and 16 bits per channel when a
source has them and the output is PNG/TIFF; the extension picks the format (PNG, JPEG, BMP,
TIFF, WebP lossless). ``--save-map`` also writes the decision map(s) of decision-map methods as
``<out>_map<i><ext>``; trailing ``key=value`` arguments override the model's config exactly as in
``run.py``. Bad input (fewer than 2 images, different sizes, unreadable files, unreadable or
mismatched weights, an existing output or map without ``--overwrite``, an output that is an
input or a folder, bad ``--tile/--overlap/--device``) is a one-line error naming the file or
option (exit code 2), and nothing is written.

Start-up imports only the requested method: no Lightning (nor ``torch._dynamo``), no other paper,
no DataModule (``experiments/benchmarks/bench_cli.py`` times whole processes).
"""
from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import torch

from mfif.config import ConfigError, check_import_hooks, load_config

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}  # read from folders


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
    """Read and check the sources: ``[1, N, C, H, W]`` in [0, 1], upright (EXIF orientation)."""
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


def load_module(checkpoint: str | None, method: str | None, weights: str | None, overrides: list[str],
                trust_config: bool = False):
    """A FusionModule from a Lightning checkpoint or from a method's released weights.

    Both build the module for inference only (:func:`lightning_modules.base.inference_only`: no
    Lightning import); a checkpoint goes through :func:`mfif.checkpoints.load_module` (tensors
    only, strict keys, the stored config's import hooks refused unless ``trust_config``).
    """
    from lightning_modules.base import inference_only
    from mfif import registry

    if checkpoint:
        from mfif.checkpoints import load_module as load_checkpoint

        with inference_only():  # a checkpoint is tensors + config: no Lightning needed to fuse with it
            return load_checkpoint(checkpoint, trust_config=trust_config, overrides=overrides)
    if not method or not weights:
        raise FuseError("give --checkpoint X.ckpt, or --method NAME --weights FILE")
    if not Path(weights).is_file():
        raise FuseError(f"--weights {weights}: no such file")
    cfg = load_config(f"{method}.yaml", overrides, data=False)  # fusion reads no training data
    check_import_hooks(cfg, "the command line", trust_config)  # *_target keys run code: --trust-config
    try:
        with inference_only():
            module = registry.method_class(cfg.method)(cfg)
    except (ValueError, TypeError) as e:
        raise FuseError(f"{method}: bad model configuration: {e}") from e
    try:
        module.load_official_weights(weights)
    except NotImplementedError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt, truncated or another method's file
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FuseError(f"--weights {weights}: not usable as released {method} weights ({reason})") from e
    return module.eval()


def pick_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda[:i]`` | ``mps``; an unavailable device is a :class:`FuseError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise FuseError(f"--device {name}: not a device name (use auto, cpu, cuda, cuda:1, ...)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FuseError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise FuseError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise FuseError(f"--device {name}: MPS is not available on this machine (use --device cpu)")
    return dev


def check_tiling(tile: int, overlap: int) -> None:
    """``--tile`` >= 0 (0 = whole image); ``--overlap`` in [0, tile) and only with ``--tile``."""
    if tile < 0:
        raise FuseError(f"--tile {tile}: must be >= 1 (or 0 for the whole image)")
    if overlap < 0:
        raise FuseError(f"--overlap {overlap}: must be >= 0")
    if overlap and not tile:
        raise FuseError(f"--overlap {overlap} needs --tile")
    if tile and overlap >= tile:
        raise FuseError(f"--overlap {overlap}: must be smaller than --tile {tile}")


def plan_outputs(out: Path, sources: list[Path], save_map: bool, overwrite: bool) -> list[Path]:
    """Check every file the run will write before any work; returns the decision-map paths.

    Refused: an output that is a folder, has an unsupported extension, is one of the sources,
    or exists without ``overwrite`` (the fused image and each ``<out>_map<i>`` alike).
    """
    from mfif.io import image_format

    if out.is_dir():
        raise FuseError(f"-o {out}: is a folder; give an image file name (e.g. {out / 'fused.png'})")
    try:
        image_format(out)
    except ValueError as e:
        raise FuseError(f"-o {e}") from e
    maps = [out.with_name(f"{out.stem}_map{i}{out.suffix}") for i in range(len(sources))] if save_map else []
    inputs = {p.resolve() for p in sources}
    for target in [out, *maps]:
        if target.resolve() in inputs:
            raise FuseError(f"{target}: is one of the source images; choose another output name")
        if target.is_dir():
            raise FuseError(f"{target}: is a folder")
        if target.exists() and not overwrite:
            raise FuseError(f"{target} exists (use --overwrite to replace it)")
    return maps


def output_bits(sources: list[Path], out: Path) -> int:
    """16 when a source has 16 bits per channel and the output format stores them, else 8."""
    from mfif.io import SIXTEEN_BIT_FORMATS, image_bit_depth, image_format

    deep = any(image_bit_depth(p) > 8 for p in sources)
    if deep and image_format(out) not in SIXTEEN_BIT_FORMATS:
        print(f"note: 16-bit sources, but {out.suffix} stores 8 bits; use .png or .tif to keep 16", file=sys.stderr)
        return 8
    return 16 if deep else 8


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
    p.add_argument("--method", help="method name, with --weights (released weights: gacn, ufafuse, sesf)")
    p.add_argument("--weights", help="official released weights file")
    p.add_argument("--save-map", action="store_true", help="also write <out>_map<i><ext> decision maps")
    p.add_argument("--tile", type=int, default=0, help="tile size for large images (0 = whole image)")
    p.add_argument("--overlap", type=int, default=0, help="tile overlap (default tile/4)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="CPU inference precision (default: the method's, fp32; bf16: the fast paths' "
                        "convolutions in bfloat16, see README 'CPU speed')")
    p.add_argument("--trust-config", action="store_true",
                   help="allow import hooks (keys ending in _target) stored in --checkpoint: they run code")
    args = p.parse_intermixed_args(argv)  # key=value overrides may follow the options
    from mfif.io import save_image

    try:  # every check that needs no model comes first: a bad option costs no loading
        overrides = [a for a in args.inputs if "=" in a and not Path(a).exists()]
        srcs = [a for a in args.inputs if a not in overrides]
        out = Path(args.out)
        check_tiling(args.tile, args.overlap)
        device = pick_device(args.device)
        paths = expand_sources(srcs)
        map_paths = plan_outputs(out, paths, args.save_map, args.overwrite)
        sources = load_sources(paths)
        bits = output_bits(paths, out)
        module = load_module(args.checkpoint, args.method, args.weights, overrides,
                             trust_config=getattr(args, "trust_config", False)).to(device)
        if args.precision:
            module.fuse_precision = args.precision
        fused, maps = fuse_stack(module, sources.to(device), args.tile, args.overlap)
    except (FuseError, ConfigError, NotImplementedError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        save_image(fused[0].cpu(), out, bits=bits)
        if args.save_map and maps is None:
            print("note: this method (or tiled mode) produces no decision map", file=sys.stderr)
        elif args.save_map:
            for i, path in enumerate(map_paths):
                save_image(maps[0, i].cpu(), path, bits=bits)
    except OSError as e:  # full disk, no permission: the file keeps its old content (atomic write)
        print(f"error: cannot write {e.filename or out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"fused {len(paths)} images -> {out}")
    return 0


def cli() -> int:
    """Console entry point: :func:`main` with the CLI process settings (:mod:`mfif.runtime`)."""
    from mfif.runtime import run_cli

    return run_cli(main, fast_exit=True)


if __name__ == "__main__":
    sys.exit(cli())
