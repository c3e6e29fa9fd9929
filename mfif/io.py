"""Image files: reading (any 8/16-bit format -> float tensors, EXIF orientation applied, errors
that name the file) and writing atomically (never a half-written file, the umask's mode) in the
format the extension names, 16-bit where the format allows; plus small table helpers."""
from __future__ import annotations

import csv
import os
import secrets
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from mfif.viz import to_uint8

PathLike = Union[str, Path]

#: Output formats by extension (Pillow's names). PNG and TIFF also store 16 bits per channel.
WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
                 ".tiff": "TIFF", ".webp": "WEBP"}
SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")
#: Encoder settings: WebP lossless (a fused image is a result, not a preview); JPEG quality 95
#: (Pillow's default of 75 visibly blurs the in-focus detail fusion is about); PNG at zlib level 1,
#: OpenCV's default and the level of our 16-bit PNGs (lossless at any level; on a 520x520 Lytro
#: result 20 ms instead of Pillow's level 6 at 95 ms, for an 11 % larger file).
_SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}, "PNG": {"compress_level": 1}}
_EXIF_ORIENTATION = 0x0112


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


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1-8; 1 = stored upright), 1 when absent or unreadable.

    PNG: only an eXIf chunk before the image data is read (one after it would need a full
    decode just to look; writers put it first).
    """
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        value = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the pixels unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def apply_orientation(img: Tensor, orientation: int) -> Tensor:
    """Turn an image stored with EXIF ``orientation`` upright (as ``PIL.ImageOps.exif_transpose``).

    Args:
        img: image ``[..., H, W]``.
        orientation: EXIF tag 0x0112 value, 1-8 (TIFF 6.0 / EXIF 2.3, "Orientation").

    Returns:
        The upright image; H and W are swapped for orientations 5-8.

    Shape:
        - img: :math:`(*, H, W)`
        - output: :math:`(*, H, W)` for 1-4, :math:`(*, W, H)` for 5-8
    """
    if orientation not in range(1, 9):
        raise ValueError(f"EXIF orientation must be 1..8, got {orientation}")
    t = img.transpose(-1, -2) if orientation in (5, 6, 7, 8) else img
    flip = {2: (-1,), 3: (-1, -2), 4: (-2,), 6: (-1,), 7: (-1, -2), 8: (-2,)}.get(orientation)
    return t.flip(flip) if flip else t


def _is_16bit(im: Image.Image) -> bool:
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        return True
    for tile in im.tile or ():
        raw = tile[3] if len(tile) > 3 else None  # (codec, box, offset, args)
        raw = raw[0] if isinstance(raw, tuple) and raw else raw
        if isinstance(raw, str) and ";16" in raw:
            return True
    return False


def image_bit_depth(path: PathLike) -> int:
    """Bits per channel of an image file, 8 or 16 (anything deeper than 8 bits counts as 16)."""
    with _open(Path(path)) as im:
        return 16 if _is_16bit(im) else 8


def image_channels(path: PathLike) -> int:
    """Channels :func:`load_image` gives for a file, 1 (gray) or 3, from the header (no decoding)."""
    with _open(Path(path)) as im:
        return 1 if im.mode in _GRAY_MODES else 3


def image_size(path: PathLike) -> tuple[int, int]:
    """Upright ``(width, height)`` from the file header (no decoding); errors name the file."""
    with _open(Path(path)) as im:
        w, h = im.size
        return (h, w) if _orientation(im) >= 5 else (w, h)


_GRAY_MODES = ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I", "F")


def _to_tensor(im: Image.Image) -> Tensor:
    """Decoded PIL image -> float32 ``[C, H, W]`` in [0, 1], C in {1, 3}."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        t = torch.from_numpy(np.asarray(im, dtype=np.float32) / 65535.0)  # 16-bit gray PNG/TIFF
    elif mode == "F":
        t = torch.from_numpy(np.asarray(im, dtype=np.float32))
    else:  # 8-bit: L, 1, LA (alpha dropped); RGB, RGBA (alpha dropped), P, CMYK, YCbCr ...
        im = im.convert("L" if mode in ("1", "L", "LA") else "RGB")
        t = torch.from_numpy(np.array(im)).float().div_(255.0)
    t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
    return t.clamp_(0.0, 1.0).contiguous()


def _decode_16bit_colour(path: Path) -> Tensor:
    """16-bit RGB(A) PNG/TIFF, which Pillow only decodes to 8 bits: read with OpenCV instead."""
    import cv2  # opencv-python-headless (a dependency of albumentations)

    arr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)  # no EXIF rotation
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageReadError(f"cannot decode 16-bit colour image {path}")
    rgb = np.ascontiguousarray(arr[..., 2::-1])  # BGR(A) -> RGB, alpha dropped
    return torch.from_numpy(rgb.astype(np.float32) / 65535.0).permute(2, 0, 1).contiguous()


def load_image(path: PathLike, gray: bool = False) -> Tensor:
    """Read an image file as float32 ``[C, H, W]`` in [0, 1], upright.

    Gray files give C = 1, colour files C = 3 (alpha is dropped, palettes expanded, 16-bit
    scaled by 65535, 16-bit colour kept at full precision). The EXIF orientation is applied, so
    a portrait photo stored sideways comes out as shown by viewers. ``gray=True`` converts colour
    with MATLAB's rgb2gray weights.

    Raises:
        ImageReadError: missing, unreadable or truncated file (the message names it).

    Shape:
        - output: :math:`(C, H, W)`, C in {1, 3}
    """
    path = Path(path)
    with _open(path) as im:
        orientation = _orientation(im)
        colour16 = im.mode in ("RGB", "RGBA") and _is_16bit(im)
        try:
            if colour16:
                t = _decode_16bit_colour(path)
            else:
                im.load()
                t = _to_tensor(im)
        except (OSError, SyntaxError, ValueError) as e:  # "image file is truncated", broken data
            raise ImageReadError(f"cannot decode image {path} (truncated or corrupt): {e}") from e
    t = apply_orientation(t, orientation).contiguous() if orientation != 1 else t
    if gray:
        from mfif.ops.colour import rgb_to_gray  # kornia: imported only when needed

        t = rgb_to_gray(t)
    return t


# ----------------------------------------------------------------------------- writing
def image_format(path: PathLike) -> str:
    """Pillow format name for an output path's extension; ValueError naming the path if unknown."""
    fmt = WRITE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported image extension '{Path(path).suffix}' "
                         f"(use one of {', '.join(sorted(WRITE_FORMATS))})")
    return fmt


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename.

    A kill, Ctrl-C or full disk leaves the old file (or none), never a partial one. The file
    gets the mode a plain ``open(path, "w")`` would give (0666 minus the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies, unlike mkstemp
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def encode_image(img: Tensor | np.ndarray, fmt: str, bits: int = 8) -> bytes:
    """Encode ``[C, H, W]`` float in [0, 1] (or ``[H, W, 3]`` uint8) as ``fmt`` bytes.

    Args:
        img: the image; single-channel tensors are written as gray.
        fmt: a Pillow format name from :data:`WRITE_FORMATS`.
        bits: 8, or 16 for PNG/TIFF (values rounded to ``round(x * 65535)``).

    Shape:
        - img: :math:`(C, H, W)` with C in {1, 3}, or :math:`(H, W, 3)` uint8
    """
    import io

    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    if bits == 16:
        if fmt not in SIXTEEN_BIT_FORMATS or not isinstance(img, Tensor):
            raise ValueError(f"16-bit output needs a tensor and one of {SIXTEEN_BIT_FORMATS}, got {fmt}")
        import cv2

        x = img.detach().float().cpu().clamp(0, 1).mul(65535.0).add_(0.5).to(torch.int32).numpy().astype(np.uint16)
        arr = x[0] if x.shape[0] == 1 else np.ascontiguousarray(x.transpose(1, 2, 0)[..., ::-1])  # RGB -> BGR
        ok, buf = cv2.imencode(".png" if fmt == "PNG" else ".tiff", arr)
        if not ok:
            raise ValueError(f"OpenCV could not encode a 16-bit {fmt} image of shape {arr.shape}")
        return buf.tobytes()
    if isinstance(img, Tensor):
        arr = to_uint8(img)
        if img.shape[0] == 1:
            arr = arr[..., 0]
    else:
        arr = img
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))
    return buf.getvalue()


def save_image(img: Tensor | np.ndarray, path: PathLike, bits: int = 8) -> None:
    """Save ``[C, H, W]`` float in [0, 1] (or ``[H, W, 3]`` uint8) atomically, in the format of
    the extension (:data:`WRITE_FORMATS`; others are a ValueError), 16-bit with ``bits=16``
    (PNG/TIFF). Single-channel images are written as gray."""
    path = Path(path)
    atomic_write_bytes(path, encode_image(img, image_format(path), bits))


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
