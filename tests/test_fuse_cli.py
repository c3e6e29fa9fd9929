"""`experiments/fuse.py`: fusing built-in images with a trained checkpoint, and every bad input."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import tiny_method  # noqa: F401
from conftest import ROOT
from datamodules.default import compose_sources, load_photo, procedural_regions
from experiments import fuse as fuse_cli
from experiments.run import main as run_main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tinyrun")
    run_main(["--config", str(ROOT / "tests/configs_tiny.yaml"), "profile=smoke", f"run_dir={run_dir}",
              "logger.wandb=false", "trainer.progress=none"])
    ck = run_dir / "checkpoints/last.ckpt"
    assert ck.is_file()
    return ck


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
