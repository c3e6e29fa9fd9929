"""Image files: reading (any 8/16-bit format -> float tensors, errors that name the file) and
writing atomically (never a half-written file), plus small table helpers."""
from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from mfif.ops.colour import rgb_to_gray
from mfif.viz import to_uint8

PathLike = Union[str, Path]


class BenchmarkError(ValueError):
    """A benchmark folder, scene or image that cannot be used; the message names the file or folder."""


class ImageReadError(BenchmarkError):
    """An image file that is missing, unreadable or truncated."""


# ----------------------------------------------------------------------------- reading
def _open(path: Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}")
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as e:
        raise ImageReadError(f"cannot read image {path}: {e}") from e


def image_size(path: PathLike) -> tuple[int, int]:
    """``(width, height)`` from the file header (no decoding); errors name the file."""
    with _open(Path(path)) as im:
        return im.size


def _to_tensor(im: Image.Image) -> Tensor:
    """Decoded PIL image -> float32 ``[C, H, W]`` in [0, 1], C in {1, 3}."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        t = torch.from_numpy(np.asarray(im, dtype=np.float32) / 65535.0)  # 16-bit PNG/TIFF
    elif mode == "F":
        t = torch.from_numpy(np.asarray(im, dtype=np.float32))
    else:  # 8-bit: L, 1, LA (alpha dropped); RGB, RGBA (alpha dropped), P, CMYK, YCbCr ...
        im = im.convert("L" if mode in ("1", "L", "LA") else "RGB")
        t = torch.from_numpy(np.array(im)).float().div_(255.0)
    t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
    return t.clamp_(0.0, 1.0).contiguous()


def load_image(path: PathLike, gray: bool = False) -> Tensor:
    """Read an image file as float32 ``[C, H, W]`` in [0, 1].

    Gray files give C = 1, colour files C = 3 (alpha is dropped, palettes expanded, 16-bit
    scaled by 65535). ``gray=True`` converts colour with MATLAB's rgb2gray weights.

    Raises:
        ImageReadError: missing, unreadable or truncated file (the message names it).
    """
    path = Path(path)
    with _open(path) as im:
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as e:  # "image file is truncated", broken data
            raise ImageReadError(f"cannot decode image {path} (truncated or corrupt): {e}") from e
        t = _to_tensor(im)
    return rgb_to_gray(t) if gray else t


# ----------------------------------------------------------------------------- writing


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_image(img: Tensor | np.ndarray, path: Path) -> None:
    """Save ``[C, H, W]`` float in [0, 1] (or ``[H, W, 3]`` uint8) as PNG/JPEG atomically.

    Single-channel images are written as 8-bit gray.
    """
    import io

    if isinstance(img, Tensor):
        arr = to_uint8(img)
        if img.shape[0] == 1:
            arr = arr[..., 0]
    else:
        arr = img
    buf = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}.get(Path(path).suffix.lower(), "PNG")
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format=fmt)
    atomic_write_bytes(Path(path), buf.getvalue())


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    atomic_write_bytes(Path(path), buf.getvalue().encode())


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], floatfmt: str = ".4f") -> str:
    def fmt(v):
        if isinstance(v, float):
            return "–" if v != v else format(v, floatfmt)
        return "–" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
