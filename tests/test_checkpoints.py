"""Checkpoints (issue 16 "Checkpoints and evaluation", issue 17 items 3 and 4), with the tiny method.

* after fit, test and report use the checkpoint ``checkpoint.monitor`` selects;
* ``ckpt_path=best|last|<file>`` in fit/test/predict, and clear errors without a run folder;
* a reused run folder keeps ``csv/metrics.csv`` rows and ``config.yaml`` (17.3);
* checkpoints are written in their folder and renamed: a full ``$TMPDIR``, a failing write or a
  SIGKILL never leaves a truncated checkpoint, and ``ckpt_path=last`` skips an unreadable one (17.4).
"""
from __future__ import annotations

import contextlib
import csv
import errno
import io
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import torch

import tiny_method  # noqa: F401  (registers the "tiny" method)
from conftest import ROOT, python_env
from experiments.run import main
from mfif.checkpoints import (CheckpointError, CheckpointWarning, atomic_torch_save, remove_partial_writes,
                              resolve_ckpt_path)
from mfif.trainer import AtomicCheckpointIO

CFG = str(ROOT / "tests/configs_tiny.yaml")
QUIET = ["logger.wandb=false", "trainer.progress=none", "profile=smoke"]
# 8 samples / batch 2 = 4 steps per epoch, 2 epochs. Monitoring "epoch" (min) makes the first
# epoch's checkpoint the best one, so best and last hold different weights.
FIT = ["trainer.max_steps=-1", "trainer.max_epochs=2", "checkpoint.monitor=epoch", "checkpoint.mode=min", "optim.lr=0.01"]


def _main(*args: str) -> int:
    return main(["--config", CFG, *QUIET, *args])


def _rows(run_dir) -> list[dict]:
    with (run_dir / "csv/metrics.csv").open() as f:
        return list(csv.DictReader(f))


def _test_psnr(run_dir) -> float:
    return [float(r["test/psnr"]) for r in _rows(run_dir) if r.get("test/psnr")][-1]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fit") / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert _main(*FIT, f"run_dir={run_dir}") == 0
    return run_dir, out.getvalue()


def test_fit_tests_and_reports_the_monitored_checkpoint(fitted, tmp_path):
    run_dir, stdout = fitted
    best, last = run_dir / "checkpoints/best-0-4.ckpt", run_dir / "checkpoints/last.ckpt"
    assert best.is_file() and last.is_file()
    assert f"test and report use {best}" in stdout
    for name, ck in (("best", best), ("last", last)):
        assert _main("mode=test", f"ckpt_path={ck}", f"run_dir={tmp_path / name}") == 0
    assert _test_psnr(run_dir) == pytest.approx(_test_psnr(tmp_path / "best"), abs=1e-6)
    assert abs(_test_psnr(tmp_path / "last") - _test_psnr(tmp_path / "best")) > 1e-4  # else the check is void
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    assert state and not [k for k in state if k.startswith(("val_", "test_"))]  # no metric state saved


def test_reused_run_folder_keeps_logs_and_config(fitted, tmp_path, capsys):
    run_dir = shutil.copytree(fitted[0], tmp_path / "run")
    rows, config = _rows(run_dir), (run_dir / "config.yaml").read_text()

    def kept() -> list[dict]:
        now = _rows(run_dir)
        assert [{k: r[k] for k in rows[0]} for r in now[: len(rows)]] == rows  # old rows, in order
        assert (run_dir / "config.yaml").read_text() == config
        return now

    # a command that fails its checks changes nothing (config.yaml used to be rewritten first)
    with pytest.raises(SystemExit):
        _main("mode=test", "ckpt_path=/nonexistent.ckpt", f"run_dir={run_dir}")
    assert len(kept()) == len(rows) and not list(run_dir.glob("config-*.yaml"))
    # test with the best checkpoint of the folder: rows are added, config recorded beside
    assert _main("mode=test", "ckpt_path=best", f"run_dir={run_dir}") == 0
    assert len(kept()) == len(rows) + 1 and len(list(run_dir.glob("config-test-*.yaml"))) == 1
    # predict with the folder's last checkpoint
    out = tmp_path / "fused"
    assert _main("mode=predict", "ckpt_path=last", f"out={out}", f"run_dir={run_dir}") == 0
    assert len(list(out.glob("*.png"))) == 2
    # fit resumed from the best checkpoint (epoch 0, step 4) continues at step 5, rows appended
    capsys.readouterr()
    assert main(["--config", CFG, "logger.wandb=false", "trainer.progress=plain", "profile=smoke", *FIT,
                 "ckpt_path=best", f"run_dir={run_dir}"]) == 0
    assert "[epoch 1 step 5 " in capsys.readouterr().out
    assert len(kept()) > len(rows) + 1


def test_ckpt_path_errors(fitted, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    only_last = tmp_path / "only_last"
    (only_last / "checkpoints").mkdir(parents=True)
    shutil.copy(fitted[0] / "checkpoints/last.ckpt", only_last / "checkpoints")
    for args, msg in [(["mode=test", "ckpt_path=last"], "ckpt_path=last needs run_dir="),
                      (["mode=fit", "ckpt_path=last"], "ckpt_path=last needs run_dir="),
                      (["mode=test", "ckpt_path=best"], "ckpt_path=best needs run_dir="),
                      (["mode=test", "ckpt_path=best", f"run_dir={only_last}"], "no best checkpoint in"),
                      (["mode=test", "ckpt_path=last", f"run_dir={tmp_path / 'empty'}"], "is not a folder")]:
        with pytest.raises(SystemExit) as e:
            _main(*args)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()  # no run folder was started


def test_last_skips_a_truncated_checkpoint(fitted, tmp_path):
    run_dir = shutil.copytree(fitted[0], tmp_path / "run")
    last = run_dir / "checkpoints/last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # killed mid-copy
    with pytest.warns(CheckpointWarning, match="last.ckpt"):
        assert resolve_ckpt_path("last", run_dir, "test") == str(run_dir / "checkpoints/best-0-4.ckpt")
    with pytest.warns(CheckpointWarning):
        assert _main("mode=test", "ckpt_path=last", f"run_dir={run_dir}") == 0
    best = run_dir / "checkpoints/best-0-4.ckpt"
    best.write_bytes(b"not a checkpoint")
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointError, match="all unreadable"):
        resolve_ckpt_path("last", run_dir, "test")


def _full_tmpdir(monkeypatch):
    """``$TMPDIR`` out of space: a temporary file in the default folder cannot be created."""
    real = tempfile.mkstemp

    def mkstemp(*a, **k):
        if k.get("dir") is None and (len(a) < 3 or a[2] is None):
            raise OSError(errno.ENOSPC, "No space left on device (fake full $TMPDIR)")
        return real(*a, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_checkpoints_do_not_need_tmpdir(tmp_path, monkeypatch):
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    _full_tmpdir(monkeypatch)
    state = {"state_dict": {"w": torch.arange(6.0)}}
    with pytest.raises(OSError, match="No space left"):  # Lightning's default goes through $TMPDIR
        TorchCheckpointIO().save_checkpoint(state, tmp_path / "lightning.ckpt")
    AtomicCheckpointIO().save_checkpoint(state, tmp_path / "ours.ckpt")
    assert torch.equal(torch.load(tmp_path / "ours.ckpt", weights_only=True)["state_dict"]["w"], torch.arange(6.0))


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1, "w": torch.ones(1000)}, path)
    real_save = torch.save

    def disk_full(obj, f, *a, **k):
        f.write(b"PK\x03\x04" + bytes(100))  # a few bytes get out, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_torch_save({"step": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left


CHILD = """
import sys, torch
from mfif.checkpoints import atomic_torch_save
w = torch.randn(2_000_000)
for i in range(10_000):
    atomic_torch_save({"step": i, "w": w}, sys.argv[1])
    print(i, flush=True)
"""


def test_sigkill_during_writes_leaves_a_whole_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=python_env())
    try:
        assert p.stdout.readline().strip() == "0"  # one checkpoint is complete
        time.sleep(0.3)  # the next ones are being written
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    ck = torch.load(path, weights_only=True)
    assert ck["step"] >= 0 and ck["w"].shape == (2_000_000,)
    remove_partial_writes(tmp_path)  # what run.py does before training in this folder
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_metric_networks_stay_out_of_checkpoints(tmp_path, monkeypatch):
    """LPIPS's VGG is a registered submodule of the val and test metrics, but no checkpoint holds it."""
    from mfif.config import load_config
    from mfif.metrics._piq import WEIGHT_FILES, vgg16_features

    ck = tmp_path / "checkpoints"
    ck.mkdir()
    with torch.device("meta"):
        shapes = {f"features.{k}": p.shape for k, p in vgg16_features().state_dict().items()}
    torch.save({k: torch.full((1,), 0.01).expand(*s) for k, s in shapes.items()}, ck / WEIGHT_FILES["vgg16"][0])
    torch.save([torch.full((1, c, 1, 1), 0.1) for c in (64, 128, 256, 512, 512)], ck / WEIGHT_FILES["lpips"][0])
    monkeypatch.setenv("MFIF_WEIGHTS_DIR", str(tmp_path))
    module = tiny_method.TinyModule(load_config(CFG, ["metrics=[psnr,lpips]"]))
    names = [n for n, _ in module.named_parameters()]
    assert any(n.startswith("val_fr.lpips.net.") for n in names) and any(n.startswith("test_fr.") for n in names)
    state = module.state_dict()
    assert sorted(state) == ["net.0.bias", "net.0.weight", "net.2.bias", "net.2.weight"]
    old = {**state, **{f"{n}": p.detach() for n, p in module.named_parameters() if n.startswith("val_fr.")}}
    module.load_state_dict(old, strict=True)  # a checkpoint from before the fix still loads
    with pytest.raises(RuntimeError, match="Missing key"):
        module.load_state_dict({k: v for k, v in state.items() if k != "net.0.bias"}, strict=True)


@pytest.mark.parametrize("method", ["gacn", "msasn", "udpnet", "ufafuse", "vaeedof"])
def test_load_from_checkpoint_every_paper(method, tmp_path):
    """Lightning's standard ``<Module>.load_from_checkpoint(path)`` rebuilds each paper's module."""
    import lightning as L
    from omegaconf import OmegaConf

    from mfif import registry
    from mfif.config import load_config

    cfg = load_config(f"{method}.yaml", ["profile=smoke", "metrics=[psnr,q_g]"])
    cls = registry.method_class(method)
    module = cls(cfg)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu",
                        devices=1, plugins=[AtomicCheckpointIO()])
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = cls.load_from_checkpoint(tmp_path / "m.ckpt")
    assert type(loaded) is cls and OmegaConf.to_container(loaded.cfg) == OmegaConf.to_container(cfg, resolve=True)
    a, b = module.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if method == "gacn":  # a checkpoint from before the hyper-parameter was named cfg still loads
        ck = torch.load(tmp_path / "m.ckpt", weights_only=True)
        ck["hyper_parameters"] = {"config": ck["hyper_parameters"]["cfg"]}
        torch.save(ck, tmp_path / "old.ckpt")
        c = cls.load_from_checkpoint(tmp_path / "old.ckpt").state_dict()
        assert c.keys() == a.keys() and all(torch.equal(a[k], c[k]) for k in a)
