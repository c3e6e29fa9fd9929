"""Writing images atomically (never a half-written file) and small table helpers."""
from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from torch import Tensor

from mfif.viz import to_uint8


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
