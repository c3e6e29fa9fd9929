"""`mfif.io`: EXIF orientation, 16-bit reading and writing, formats by extension, atomic writes
with the umask's mode (issue 17 item 9)."""
from __future__ import annotations

import os
import stat

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from mfif import io as mio


def _rgb(h=5, w=7, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation, ext):
    path = tmp_path / f"o{orientation}{ext}"
    im = Image.fromarray(_rgb())
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, exif=exif, **({"quality": 100} if ext == ".jpg" else {}))
    ref = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    got = mio.load_image(path)
    assert got.shape == (3, *ref.shape[:2])
    assert torch.equal((got * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(ref.copy()))
    assert mio.image_size(path) == (ref.shape[1], ref.shape[0])  # (width, height), upright


def test_apply_orientation_shapes_and_errors():
    x = torch.arange(6.0).reshape(1, 2, 3)
    assert mio.apply_orientation(x, 1) is x
    assert mio.apply_orientation(x, 6).shape == (1, 3, 2)
    # 6 = stored rotated 90 degrees counter-clockwise: viewers turn it clockwise
    assert mio.apply_orientation(x, 6)[0, :, 0].tolist() == [3.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="orientation must be 1..8"):
        mio.apply_orientation(x, 9)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_colour_and_gray_round_trip_exactly(tmp_path, ext):
    rng = np.random.default_rng(1)
    rgb16 = rng.integers(0, 65536, (6, 9, 3), dtype=np.uint16)
    gray16 = rng.integers(0, 65536, (6, 9), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / f"c{ext}"), rgb16[..., ::-1])  # OpenCV stores BGR
    cv2.imwrite(str(tmp_path / f"g{ext}"), gray16)
    for name, ref in (("c", rgb16), ("g", gray16)):
        src = tmp_path / f"{name}{ext}"
        assert mio.image_bit_depth(src) == 16
        t = mio.load_image(src)
        want = torch.from_numpy(ref.astype(np.float64) / 65535.0)
        want = want.permute(2, 0, 1) if ref.ndim == 3 else want[None]
        assert torch.allclose(t.double(), want, atol=1e-7)  # not truncated to 8 bits
        out = tmp_path / f"{name}_out{ext}"
        mio.save_image(t, out, bits=16)
        back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
        back = back[..., ::-1] if back.ndim == 3 else back
        assert back.dtype == np.uint16 and np.array_equal(back, ref)
        assert mio.image_bit_depth(out) == 16


def test_8bit_files_report_8_bits(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    assert mio.image_bit_depth(tmp_path / "a.png") == 8


@pytest.mark.parametrize("ext,fmt", [(".png", "PNG"), (".jpg", "JPEG"), (".jpeg", "JPEG"), (".bmp", "BMP"),
                                     (".tif", "TIFF"), (".tiff", "TIFF"), (".webp", "WEBP")])
def test_save_image_writes_the_extensions_format(tmp_path, ext, fmt):
    img = torch.rand(3, 8, 10)
    path = tmp_path / f"x{ext}"
    mio.save_image(img, path)
    with Image.open(path) as im:
        assert im.format == fmt and im.size == (10, 8)
        if fmt in ("PNG", "BMP", "TIFF", "WEBP"):  # lossless (WebP written lossless)
            assert np.array_equal(np.asarray(im.convert("RGB")), mio.to_uint8(img))


def test_unsupported_extension_and_16bit_jpeg_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"x\.gif: unsupported image extension '\.gif'"):
        mio.save_image(torch.rand(3, 4, 4), tmp_path / "x.gif")
    with pytest.raises(ValueError, match="16-bit output needs"):
        mio.save_image(torch.rand(3, 4, 4), tmp_path / "x.jpg", bits=16)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_write_uses_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        mio.atomic_write_bytes(tmp_path / "a.bin", b"data")
        mio.save_image(torch.rand(1, 4, 4), tmp_path / "m.png")
    finally:
        os.umask(old)
    for name in ("a.bin", "m.png"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "keep.png"
    target.write_bytes(b"old")

    def full_disk(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mio.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        mio.save_image(torch.rand(3, 4, 4), target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]
