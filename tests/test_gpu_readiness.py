"""GPU readiness (issue 16): ``trainer.deterministic=auto``, any ``lightning.Trainer`` argument
through ``trainer.*`` (checked against its signature), and ``make gpu-smoke`` (its CPU dry run)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import ROOT, python_env
from mfif.config import ConfigError, load_config
from mfif.trainer import build_trainer, resolve_deterministic

SMOKE = ["profile=smoke", "logger.wandb=false", "trainer.progress=none"]


def test_deterministic_auto_is_true_on_cpu_only(monkeypatch):
    cfg = load_config("gacn.yaml", SMOKE)
    assert cfg.trainer.deterministic == "auto"
    t = cfg.trainer
    for accelerator, expected in (("cpu", True), ("gpu", False), ("cuda", False)):
        t.accelerator = accelerator
        assert resolve_deterministic(t) is expected
    t.accelerator = "auto"
    for cuda in (True, False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda c=cuda: c)
        assert resolve_deterministic(t) is (not cuda)
    for value in ("warn", True, False):
        t.deterministic = value
        assert resolve_deterministic(t) == value
    with pytest.raises(ConfigError, match="trainer.deterministic must be auto, true, false or warn, got 'sometimes'"):
        load_config("gacn.yaml", [*SMOKE, "trainer.deterministic=sometimes"])


def test_any_trainer_argument_passes_through(tmp_path):
    cfg = load_config("gacn.yaml", [*SMOKE, "trainer.gradient_clip_algorithm=value", "trainer.gradient_clip_val=0.5",
                                    "trainer.min_steps=2", "trainer.detect_anomaly=false"])
    trainer = build_trainer(cfg, tmp_path)
    assert trainer.gradient_clip_algorithm == "value" and trainer.gradient_clip_val == 0.5
    assert trainer.fit_loop.min_steps == 2
    with pytest.raises(ConfigError, match=r"command line: unknown key 'trainer\.benchmrk'.*did you mean 'trainer\.benchmark'"):
        load_config("gacn.yaml", [*SMOKE, "trainer.benchmrk=true"])
    with pytest.raises(ConfigError, match=r"trainer\.callbacks is set by the project"):
        load_config("gacn.yaml", [*SMOKE, "trainer.callbacks=[]"])
    assert load_config("gacn.yaml", [*SMOKE, "trainer.benchmark=true"]).trainer.benchmark is True


def test_gpu_smoke_without_cuda_says_skipped(monkeypatch, capsys):
    from experiments.benchmarks import gpu_smoke

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_smoke.main([]) == 0
    assert capsys.readouterr().out.strip() == "skipped: no CUDA device"
    with pytest.raises(SystemExit):
        gpu_smoke.main(["--steps", "2", "--warmup", "2"])


@pytest.mark.slow
def test_gpu_smoke_cpu_dry_run():
    # the eager compile backend keeps the dry run short (inductor's C++ build takes minutes on CPU)
    cmd = [sys.executable, str(ROOT / "experiments/benchmarks/gpu_smoke.py"), "--cpu", "--methods", "ufafuse",
           "--steps", "3", "--warmup", "1", "--compile-backend", "eager"]
    r = subprocess.run(cmd, cwd=ROOT, env=python_env(), capture_output=True, text=True, timeout=300)
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert lines[0].split() == ["method", "devices", "steps/s", "samples/s", "peak", "MiB", "result"]
    method, devices, rate, samples, peak, result = lines[1].split()
    assert (method, devices, result) == ("ufafuse", "1", "pass") and float(rate) > 0 and float(peak) > 0
    assert float(samples) == pytest.approx(2 * float(rate), abs=0.06)  # smoke profile: batch 2, one device (printed .1f)
