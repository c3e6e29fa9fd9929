"""`experiments/fuse.py`: fusing built-in images with a trained checkpoint, and every bad input."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_method  # noqa: F401
from conftest import released_weights
from datamodules.default import compose_sources, load_photo, procedural_regions
from experiments import fuse as fuse_cli


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint  # the session's smoke fit (tests/conftest.py)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two complementary defocused versions of a built-in photo (odd size 75x61)."""
    d = tmp_path_factory.mktemp("pair")
    img = load_photo("astronaut")[100:161, 150:225]
    labels = procedural_regions(np.random.default_rng(0), *img.shape[:2], 2, 8.0)
    src = compose_sources(img, labels, [2.0, 2.0], 1.0)
    paths = []
    for i, s in enumerate(src):
        p = d / f"scene-{'AB'[i]}.png"
        Image.fromarray((s * 255 + 0.5).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def test_fuse_two_images_keeps_size_and_colour(checkpoint, pair, tmp_path):
    out = tmp_path / "fused.png"
    assert fuse_cli.main([str(pair[0]), str(pair[1]), "-o", str(out), "--checkpoint", str(checkpoint), "--save-map"]) == 0
    fused = np.asarray(Image.open(out))
    a, b = (np.asarray(Image.open(p)).astype(float) for p in pair)
    assert fused.shape == a.shape == (61, 75, 3)
    # a decision-map fusion lies between the sources at every pixel
    lo, hi = np.minimum(a, b) - 1, np.maximum(a, b) + 1
    assert ((fused >= lo) & (fused <= hi)).all()
    m0, m1 = (np.asarray(Image.open(tmp_path / f"fused_map{i}.png")).astype(int) for i in (0, 1))
    assert m0.shape == (61, 75) and np.abs(m0 + m1 - 255).max() <= 1  # maps sum to 1


def test_fuse_folder_glob_tiles_and_override(checkpoint, pair, tmp_path):
    whole, tiled = tmp_path / "whole.png", tmp_path / "tiled.png"
    assert fuse_cli.main([str(pair[0].parent), "-o", str(whole), "--checkpoint", str(checkpoint)]) == 0
    pattern = str(pair[0].parent / "scene-*.png")
    assert fuse_cli.main([pattern, "-o", str(tiled), "--checkpoint", str(checkpoint), "--tile", "32",
                          "--overlap", "8", "model.width=4"]) == 0
    w, t = (np.asarray(Image.open(p)).astype(int) for p in (whole, tiled))
    assert w.shape == t.shape and np.abs(w - t).mean() < 3  # tiling only changes border context


def _fails(args, capsys, match):
    assert fuse_cli.main(args) == 2
    err = capsys.readouterr().err
    assert match in err, err


def test_bad_inputs_clear_errors_and_nothing_written(checkpoint, pair, tmp_path, capsys):
    out = tmp_path / "o.png"
    ck = ["--checkpoint", str(checkpoint)]
    _fails([str(pair[0]), "-o", str(out), *ck], capsys, "at least 2 source images")
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(small)
    _fails([str(pair[0]), str(small), "-o", str(out), *ck], capsys, "small.png: size 12x10 differs")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    _fails([str(pair[0]), str(junk), "-o", str(out), *ck], capsys, "junk.png: cannot read image")
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(pair[1].read_bytes()[:200])
    _fails([str(pair[0]), str(trunc), "-o", str(out), *ck], capsys, "trunc.png")
    _fails([str(pair[0]), str(tmp_path / "missing.png"), "-o", str(out), *ck], capsys, "missing.png: no such file")
    _fails([str(pair[0]), str(pair[1]), "-o", str(out)], capsys, "give --checkpoint")
    _fails([str(pair[0]), str(pair[1]), "-o", str(out), *ck, "model.nope=1"], capsys, "model.nope")
    assert not out.exists()
    out.write_bytes(b"keep")
    _fails([str(pair[0]), str(pair[1]), "-o", str(out), *ck], capsys, "exists (use --overwrite")
    assert out.read_bytes() == b"keep"
    assert fuse_cli.main([str(pair[0]), str(pair[1]), "-o", str(out), *ck, "--overwrite"]) == 0
    assert Image.open(out).size == (75, 61)
    assert not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------------------------------- issue 17, items 7-9
@pytest.fixture(scope="module")
def gacn_weights(shared_dir):
    return released_weights(shared_dir, "gacn_official.pkl")


def _gacn(pair, out, weights, *extra):
    return [str(pair[0]), str(pair[1]), "-o", str(out), "--method", "gacn", "--weights", str(weights), *extra]


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def test_save_map_and_output_never_replace_files_without_overwrite(pair, gacn_weights, tmp_path, capsys):
    """Item 7: maps were overwritten silently; ``-o`` equal to a source was accepted."""
    out = tmp_path / "f.png"
    (tmp_path / "f_map1.png").write_bytes(b"my map")
    assert fuse_cli.main(_gacn(pair, out, gacn_weights, "--save-map")) == 2
    _one_line_error(capsys, "f_map1.png exists", "--overwrite")
    assert (tmp_path / "f_map1.png").read_bytes() == b"my map" and not out.exists()
    assert fuse_cli.main(_gacn(pair, out, gacn_weights, "--save-map", "--overwrite")) == 0
    assert Image.open(tmp_path / "f_map1.png").size == (75, 61)
    before = pair[1].read_bytes()
    assert fuse_cli.main(_gacn(pair, pair[1], gacn_weights, "--overwrite")) == 2
    _one_line_error(capsys, "scene-B.png", "is one of the source images")
    assert pair[1].read_bytes() == before


@pytest.mark.parametrize("case", ["junk", "truncated", "other_method", "tile", "overlap", "overlap_no_tile",
                                  "out_folder", "bad_device", "cuda", "checkpoint"])
def test_bad_weights_and_options_are_one_line_errors(case, pair, gacn_weights, tmp_path, capsys):
    """Item 8: each case exits 2 with one line naming the file or option, and creates nothing."""
    work = tmp_path / "work"
    work.mkdir()
    out, args = work / "f.png", None
    if case == "junk":
        (work / "w.pkl").write_bytes(b"\x00not a torch file")
        args, needles = _gacn(pair, out, work / "w.pkl"), ["w.pkl", "not usable as released gacn weights"]
    elif case == "truncated":
        (work / "w.pkl").write_bytes(gacn_weights.read_bytes()[:5000])
        args, needles = _gacn(pair, out, work / "w.pkl"), ["w.pkl", "not usable"]
    elif case == "other_method":  # UFA-Fuse given GACN's file
        args = [str(pair[0]), str(pair[1]), "-o", str(out), "--method", "ufafuse", "--weights", str(gacn_weights)]
        needles = ["gacn_official.pkl", "released ufafuse weights"]
    elif case == "checkpoint":
        (work / "c.ckpt").write_bytes(b"PK\x03\x04 truncated zip")
        args, needles = [str(pair[0]), str(pair[1]), "-o", str(out), "--checkpoint", str(work / "c.ckpt")], ["c.ckpt"]
    else:
        if case == "cuda" and torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        opt = {"tile": ["--tile", "-4"], "overlap": ["--tile", "32", "--overlap", "32"],
               "overlap_no_tile": ["--overlap", "8"], "out_folder": [], "bad_device": ["--device", "gpu7"],
               "cuda": ["--device", "cuda"]}[case]
        if case == "out_folder":
            out = work
        args = _gacn(pair, out, gacn_weights, *opt)
        needles = {"tile": ["--tile -4"], "overlap": ["--overlap 32", "--tile 32"], "overlap_no_tile": ["--overlap 8 needs --tile"],
                   "out_folder": ["is a folder"], "bad_device": ["--device gpu7"], "cuda": ["--device cuda", "CUDA is not available"]}[case]
    listing = sorted(work.iterdir())
    assert fuse_cli.main(args) == 2
    _one_line_error(capsys, *needles)
    assert sorted(work.iterdir()) == listing  # nothing created


def test_exif_16bit_webp_and_file_mode(pair, gacn_weights, tmp_path):
    """Item 9: EXIF orientation applied, 16-bit kept, WebP really WebP, files get the umask's mode."""
    import cv2
    from mfif.io import image_bit_depth, load_image

    ref = tmp_path / "upright.png"
    assert fuse_cli.main(_gacn(pair, ref, gacn_weights)) == 0
    # the same pair stored turned by 90 degrees with EXIF orientation 8: read upright -> same result
    turned = []
    for p in pair:
        im = Image.open(p).transpose(Image.Transpose.ROTATE_270)  # what a camera stores for tag 8
        exif = im.getexif()
        exif[0x0112] = 8
        turned.append(tmp_path / f"turned-{p.name}")
        im.save(turned[-1], exif=exif)
    rot = tmp_path / "rot.png"
    assert fuse_cli.main([*map(str, turned), "-o", str(rot), "--method", "gacn", "--weights", str(gacn_weights)]) == 0
    assert np.array_equal(np.asarray(Image.open(rot)), np.asarray(Image.open(ref)))
    # 16-bit sources -> 16-bit PNG and TIFF; WebP is WebP (lossless: same pixels as the PNG)
    deep = []
    for p in pair:
        a = np.asarray(Image.open(p)).astype(np.uint16) * 257 + np.random.default_rng(0).integers(0, 200, (61, 75, 3)).astype(np.uint16)
        deep.append(tmp_path / f"deep-{p.name}")
        cv2.imwrite(str(deep[-1]), a[..., ::-1])
    old = os.umask(0o027)
    try:
        for ext in (".png", ".tif"):
            out = tmp_path / f"deep{ext}"
            assert fuse_cli.main([*map(str, deep), "-o", str(out), "--method", "gacn", "--weights", str(gacn_weights)]) == 0
            assert image_bit_depth(out) == 16
            v = load_image(out).numpy() * 65535
            assert (np.abs(v - np.round(v / 257) * 257) > 0.5).any()  # real 16-bit values, not 8-bit x 257
            assert stat.S_IMODE(out.stat().st_mode) == 0o640
        webp = tmp_path / "f.webp"
        assert fuse_cli.main(_gacn(pair, webp, gacn_weights)) == 0
    finally:
        os.umask(old)
    assert Image.open(webp).format == "WEBP"
    assert np.array_equal(np.asarray(Image.open(webp).convert("RGB")), np.asarray(Image.open(ref)))
    assert fuse_cli.main(_gacn(pair, tmp_path / "f.gif", gacn_weights)) == 2
    assert not (tmp_path / "f.gif").exists()
