"""run.py's clean errors (issue 17 items 7-8, issue 16 metric weights): exit code 2, one line
naming the file or key, and nothing created - no run folder, no fused image, no config.yaml."""
from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

import tiny_method  # noqa: F401  (registers the "tiny" method)
from conftest import ROOT
from experiments.run import main
from test_run_modes import bench  # noqa: F401  (the two-scene benchmark fixture)
from mfif.metrics import MetricWeightsError, check_metric_weights, missing_metric_weights

CFG = str(ROOT / "tests/configs_tiny.yaml")
QUIET = ["profile=smoke", "logger.wandb=false", "trainer.progress=none"]


def _fails(capsys, *args: str, config: str = CFG) -> str:
    """Run run.py expecting exit code 2; return its one-line error."""
    with pytest.raises(SystemExit) as e:
        main(["--config", config, *QUIET, *args])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return tiny_checkpoint  # the session's smoke fit (tests/conftest.py)


def test_predict_keeps_existing_outputs(bench, ckpt, tmp_path, capsys):
    out, run_dir = tmp_path / "fused", tmp_path / "run"
    out.mkdir()
    (out / "cat.png").write_bytes(b"my own file")
    common = ["mode=predict", f"data.benchmark={bench}", f"out={out}", f"ckpt_path={ckpt}", f"run_dir={run_dir}"]
    err = _fails(capsys, *common)
    assert "cat.png exists" in err and "overwrite=true" in err
    assert (out / "cat.png").read_bytes() == b"my own file" and not (out / "dog.png").exists() and not run_dir.exists()
    assert main(["--config", CFG, *QUIET, *common, "overwrite=true"]) == 0
    assert Image.open(out / "cat.png").size == (53, 45) and (out / "dog.png").is_file()


def test_predict_refuses_out_inside_the_benchmark(bench, ckpt, tmp_path, capsys):
    before = sorted(p.name for p in bench.iterdir())
    for out in (bench, bench / "fused"):
        err = _fails(capsys, "mode=predict", f"data.benchmark={bench}", f"out={out}", f"ckpt_path={ckpt}",
                     f"run_dir={tmp_path / 'run'}")
        assert "inside data.benchmark" in err
    assert sorted(p.name for p in bench.iterdir()) == before and not (tmp_path / "run").exists()
    assert "runs on one device" in _fails(capsys, "mode=predict", f"data.benchmark={bench}", f"out={tmp_path / 'o'}",
                                          f"ckpt_path={ckpt}", "trainer.devices=2", f"run_dir={tmp_path / 'run'}")
    assert not (tmp_path / "run").exists() and not (tmp_path / "o").exists()


def test_missing_or_empty_data_folders(ckpt, tmp_path, capsys):
    run_dir, empty, junk = tmp_path / "run", tmp_path / "empty", tmp_path / "junk"
    empty.mkdir()
    junk.mkdir()
    (junk / "notes.txt").write_text("no images here")
    test = ["mode=test", f"ckpt_path={ckpt}", f"run_dir={run_dir}"]
    assert "data.benchmark=/nonexistent: no such folder" in _fails(capsys, *test, "data.benchmark=/nonexistent")
    assert f"data.benchmark={empty}: the folder is empty" in _fails(capsys, *test, f"data.benchmark={empty}")
    assert str(junk) in _fails(capsys, *test, f"data.benchmark={junk}")  # no scene found: named by discovery
    pairs = ["profile=null", "data.name=unsupervised_pairs", f"run_dir={run_dir}"]
    assert f"data.root={empty}: the folder is empty" in _fails(capsys, *pairs, f"data.root={empty}")
    assert "data (unsupervised_pairs):" in _fails(capsys, *pairs, f"data.root={junk}")
    assert "data.root must point" in _fails(capsys, *pairs)
    assert not run_dir.exists()


def test_bad_scene_hint_names_a_real_key(bench, ckpt, tmp_path, capsys):
    d = shutil.copytree(bench, tmp_path / "bench")
    (d / "bad-A.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    shutil.copy(d / "cat-B.png", d / "bad-B.png")
    test = ["mode=test", f"data.benchmark={d}", f"ckpt_path={ckpt}", f"run_dir={tmp_path / 'run'}", "metrics=[q_g]"]
    err = _fails(capsys, *test)
    assert "bad-A.png" in err and "set data.skip_invalid=true" in err and "skip_invalid=True" not in err
    assert not (tmp_path / "run").exists()
    assert main(["--config", CFG, *QUIET, *test, "data.skip_invalid=true"]) == 0  # the hint works


def test_checkpoint_of_another_method_or_model_or_corrupt(ckpt, tmp_path, capsys):
    run_dir = tmp_path / "run"
    bad = tmp_path / "truncated.ckpt"
    bad.write_bytes(ckpt.read_bytes()[:1000])
    common = ["mode=test", f"run_dir={run_dir}"]
    assert "a checkpoint of method 'tiny', but this run's method is 'gacn'" in _fails(
        capsys, *common, f"ckpt_path={ckpt}", config="gacn.yaml")
    assert "do not fit this tiny model" in _fails(capsys, *common, f"ckpt_path={ckpt}", "model.width=8")
    assert f"{bad}: not a readable checkpoint" in _fails(capsys, *common, f"ckpt_path={bad}")
    assert not run_dir.exists()


def _weights_dir_with(tmp_path, *names: str):
    from mfif.metrics._piq import WEIGHT_FILES

    (tmp_path / "checkpoints").mkdir(parents=True, exist_ok=True)
    for n in names:
        (tmp_path / "checkpoints" / WEIGHT_FILES[n][0]).write_bytes(b"")
    return tmp_path


def test_missing_metric_weights_reported_before_the_run(tmp_path, monkeypatch, capsys):
    wdir = _weights_dir_with(tmp_path / "w", "vgg16")  # LPIPS also needs lpips_weights.pt
    monkeypatch.setenv("MFIF_WEIGHTS_DIR", str(wdir))
    assert missing_metric_weights(["psnr", "lpips", "dists"]) == {
        "lpips": [wdir / "checkpoints/lpips_weights.pt"], "dists": [wdir / "checkpoints/dists_weights.pt"]}
    check_metric_weights(["psnr", "q_g"])  # no network metric: nothing to check
    with pytest.raises(MetricWeightsError, match=r"\['lpips'\].*lpips_weights\.pt.*MFIF_WEIGHTS_DIR"):
        check_metric_weights(["psnr", "lpips"])
    err = _fails(capsys, "metrics=[psnr,lpips]", f"run_dir={tmp_path / 'run'}")
    assert "lpips_weights.pt" in err and "MFIF_WEIGHTS_DIR" in err and "vgg16" not in err
    assert not (tmp_path / "run").exists()
    assert "unknown metric 'lpipz'" in _fails(capsys, "metrics=[lpipz]", f"run_dir={tmp_path / 'run'}")


def test_report_builds_each_metric_once(monkeypatch, tmp_path):
    import mfif.reporting as reporting
    from mfif.config import load_config

    built = []
    real = reporting.build_metric
    monkeypatch.setattr(reporting, "build_metric", lambda name: built.append(name) or real(name))
    g = torch.Generator().manual_seed(0)
    preds = [{"name": [f"s{i}", f"t{i}"], "fused": torch.rand(2, 3, 16, 16, generator=g),
              "sources": torch.rand(2, 2, 3, 16, 16, generator=g), "gt": torch.rand(2, 3, 16, 16, generator=g)}
             for i in range(3)]
    cfg = load_config(CFG, ["metrics=[psnr,ssim,q_g]"])
    out = reporting.write_report(cfg, None, preds, tmp_path)
    assert sorted(built) == ["psnr", "q_g", "ssim"] and len(out["rows"]) == 6
    one = reporting.score_image(reporting.build_metrics(["psnr"]), preds[1]["fused"][0], preds[1]["sources"][0],
                                preds[1]["gt"][0])
    mse = torch.mean((preds[1]["fused"][0] - preds[1]["gt"][0]) ** 2)
    assert one["psnr"] == pytest.approx(float(10 * torch.log10(1 / mse)), rel=1e-5)
    assert out["rows"][2]["psnr"] == pytest.approx(one["psnr"], rel=1e-6)  # no state carried between images
