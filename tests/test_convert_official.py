"""`convert_official.py` + `fuse.py` with released weights (needs ../shared/weights)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from experiments import convert_official, fuse as fuse_cli


@pytest.fixture()
def lytro_crop(shared_dir, tmp_path):
    paths = []
    for s in "AB":
        im = Image.open(shared_dir / f"data/lytro/lytro-03-{s}.jpg").crop((100, 120, 197, 201))  # odd 97x81
        paths.append(tmp_path / f"crop-{s}.png")
        im.save(paths[-1])
    return paths


def test_convert_gacn_then_fuse_with_checkpoint_and_weights(shared_dir, lytro_crop, tmp_path, capsys):
    weights = shared_dir / "weights/gacn_official.pkl"
    out = tmp_path / "gacn.ckpt"
    assert convert_official.main(["gacn", str(weights), "-o", str(out)]) == 0
    ck = torch.load(out, map_location="cpu", weights_only=True)
    assert ck["hyper_parameters"]["config"]["method"] == "gacn"
    assert convert_official.main(["gacn", str(weights), "-o", str(out)]) == 2  # exists, no --overwrite
    assert "exists" in capsys.readouterr().err
    f1, f2 = tmp_path / "f1.png", tmp_path / "f2.png"
    assert fuse_cli.main([*map(str, lytro_crop), "-o", str(f1), "--checkpoint", str(out), "--save-map"]) == 0
    assert fuse_cli.main([*map(str, lytro_crop), "-o", str(f2), "--method", "gacn", "--weights", str(weights)]) == 0
    a, b = np.asarray(Image.open(f1)).astype(int), np.asarray(Image.open(f2)).astype(int)
    assert a.shape == (81, 97, 3) and np.abs(a - b).max() <= 1  # same model either way
    m = np.asarray(Image.open(tmp_path / "f1_map0.png"))
    assert m.min() < 64 and m.max() > 192  # both sources chosen somewhere


def test_convert_bad_inputs(tmp_path, capsys):
    assert convert_official.main(["gacn", str(tmp_path / "nope.pkl"), "-o", str(tmp_path / "x.ckpt")]) == 2
    assert "nope.pkl: no such weights file" in capsys.readouterr().err
    assert convert_official.main(["nomethod", str(tmp_path), "-o", str(tmp_path / "x.ckpt")]) == 2
    assert not (tmp_path / "x.ckpt").exists()
