"""run.py modes test / predict / evaluate on a benchmark folder, with the tiny test method."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

import tiny_method  # noqa: F401
from conftest import ROOT
from datamodules.default import compose_sources, load_photo, procedural_regions
from experiments.run import main

CFG = str(ROOT / "tests/configs_tiny.yaml")
QUIET = ["logger.wandb=false", "trainer.progress=none"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    for k, name in enumerate(["cat", "dog"]):
        img = load_photo("chelsea")[40 * k : 40 * k + 45, 60:113]
        src = compose_sources(img, procedural_regions(np.random.default_rng(k), 45, 53, 2, 6.0), [2.0, 2.0], 1.0)
        for i, s in enumerate(src):
            Image.fromarray((s * 255 + 0.5).astype(np.uint8)).save(d / f"{name}-{'AB'[i]}.png")
    return d


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return tiny_checkpoint  # the session's smoke fit (tests/conftest.py)


def test_predict_then_evaluate(bench, ckpt, tmp_path):
    out = tmp_path / "fused"
    assert main(["--config", CFG, "profile=smoke", "mode=predict", f"data.benchmark={bench}", f"out={out}",
                 f"ckpt_path={ckpt}", f"run_dir={tmp_path / 'p'}", *QUIET]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["cat.png", "dog.png"]
    assert Image.open(out / "cat.png").size == (53, 45)
    ev = tmp_path / "e"
    assert main(["--config", CFG, "mode=evaluate", f"data.benchmark={bench}", f"out={out}", f"run_dir={ev}",
                 "metrics=[q_g,avg,sen]"]) == 0
    rows = list(csv.DictReader((ev / "metrics.csv").open()))
    assert [r["image"] for r in rows] == ["cat", "dog", "mean"]
    assert all(0 < float(r["q_g"]) < 1 and float(r["avg"]) > 0 for r in rows)


def test_test_mode_on_benchmark(bench, ckpt, tmp_path):
    assert main(["--config", CFG, "profile=smoke", "mode=test", f"data.benchmark={bench}", f"ckpt_path={ckpt}",
                 f"run_dir={tmp_path}", "metrics=[q_g]", *QUIET]) == 0
    rows = list(csv.DictReader((tmp_path / "csv/metrics.csv").open()))
    assert 0 < float(rows[-1]["test/q_g"]) < 1


def test_mode_errors(bench, tmp_path, capsys):
    for args, msg in [(["mode=predict", f"data.benchmark={bench}"], "needs out="),
                      (["mode=evaluate", f"out={tmp_path}"], "needs out=FUSED_DIR and data.benchmark"),
                      (["mode=evaluate", f"out={tmp_path}", f"data.benchmark={bench}"], "no fused image for scene 'cat'"),
                      (["mode=test", "ckpt_path=/nonexistent.ckpt"], "does not exist")]:
        with pytest.raises(SystemExit) as e:
            main(["--config", CFG, "profile=smoke", f"run_dir={tmp_path / 'r'}", *QUIET, *args])
        assert e.value.code == 2
        assert msg in capsys.readouterr().err
