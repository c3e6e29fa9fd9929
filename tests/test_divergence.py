"""A non-finite loss or gradient stops training cleanly (mfif.trainer.DivergenceGuard): one line
naming the step and the last finite checkpoint, exit code 3, no traceback, the checkpoint kept."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mfif.checkpoints import read_checkpoint

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def run_tiny(tmp_path: Path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(TESTS / "run_tiny.py"), "--config", str(TESTS / "configs_tiny.yaml"), "profile=smoke",
           "logger.wandb=false", f"run_dir={tmp_path / 'run'}", *overrides]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_nan_loss_stops_with_one_line_and_keeps_the_last_finite_checkpoint(tmp_path):
    # smoke: 8 training samples, batch 2 -> 4 steps per epoch, last.ckpt at each epoch's validation
    r = run_tiny(tmp_path, "trainer.max_epochs=3", "trainer.max_steps=-1", "model.nan_at_step=5")
    assert r.returncode == 3, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    lines = [ln for ln in r.stderr.splitlines() if "diverged" in ln]
    assert lines == [f"error: training diverged at step 5: non-finite loss; last finite checkpoint: {ckpt} (kept)"]
    state = read_checkpoint(ckpt)
    assert state["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "metrics.csv").exists()  # no test/report after a divergence


def test_nan_gradient_before_any_checkpoint(tmp_path):
    r = run_tiny(tmp_path, "model.nan_at_step=0", "model.nan_in=gradient")
    assert r.returncode == 3, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert "error: training diverged at step 0: non-finite gradient; no checkpoint was written before it" in r.stderr
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))


@pytest.mark.slow
def test_nan_on_one_ddp_rank_stops_both(tmp_path):
    """Rank 1 alone sees a NaN loss: both ranks stop at the same step (no hang in the all-reduce)."""
    r = run_tiny(tmp_path, "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
                 "trainer.max_epochs=3", "trainer.max_steps=-1", "model.nan_at_step=3", "model.nan_rank=1",
                 timeout=240)
    assert r.returncode == 3, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert r.stderr.count("training diverged at step 3: non-finite loss") == 1  # printed by rank 0 only
