"""Trainer mechanics with the tiny test method: DDP on 2 CPU processes with EMA, checkpoint
resume giving the same weights as an uninterrupted run, W&B offline run directories."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, python_env

SMOKE = ["profile=smoke", "trainer.progress=plain", "data.num_train=8", "data.batch_size=2"]


def _run(run_dir: Path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "tests/run_tiny.py"), "--config", str(ROOT / "tests/configs_tiny.yaml"), *SMOKE,
           f"run_dir={run_dir}", *overrides]
    r = subprocess.run(cmd, cwd=ROOT, env=python_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_ddp_two_cpu_processes_with_ema(tmp_path):
    run_dir = tmp_path / "ddp"
    # 8 samples / batch 2 / 2 ranks = 2 steps per epoch: validation (and the best checkpoint) at
    # step 2, training stops at step 3, last.ckpt is written at train end.
    _run(run_dir, "trainer.devices=2", "trainer.accelerator=cpu", "trainer.strategy=ddp",
         "trainer.max_steps=3", "trainer.max_epochs=5", "ema.enabled=true", "ema.decay=0.5", "optim.lr=0.01")
    ckpts = sorted(c.name for c in run_dir.rglob("*.ckpt"))
    assert ckpts == ["best-0-2.ckpt", "last.ckpt"], ckpts  # each written once (rank 0), no duplicates
    wandb_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1 and list(wandb_runs[0].glob("*.wandb")), wandb_runs
    mid = torch.load(run_dir / "checkpoints/best-0-2.ckpt", map_location="cpu", weights_only=False)
    assert mid["global_step"] == 2
    ema, raw = mid["state_dict"], mid["current_model_state"]
    assert ema.keys() == raw.keys() and any(k.startswith("net.") for k in ema)
    assert all(not torch.equal(ema[k], raw[k]) for k in ema if k.endswith("weight")), "EMA weights equal raw weights"
    last = torch.load(run_dir / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    # one EMA update per optimizer step so far
    assert int(last["averaging_state"]["n_averaged"]) == last["global_step"] >= 2
    rows = (run_dir / "csv/metrics.csv").read_text().splitlines()
    col = rows[0].split(",").index("train/loss")
    losses = [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]]
    assert len(losses) >= 2 and all(torch.isfinite(torch.tensor(losses)))


def _final_weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)


def test_resume_from_last_matches_uninterrupted(tmp_path, capsys):
    """At an epoch boundary; in this process (the runs only fit the tiny method). Mid-epoch, after
    SIGTERM and a SLURM requeue: tests/test_resume_exact.py, tests/test_slurm.py."""
    import tiny_method  # noqa: F401  (registers "tiny")
    from experiments.run import main

    def fit(run_dir, *overrides) -> str:
        argv = ["--config", str(ROOT / "tests/configs_tiny.yaml"), *SMOKE, f"run_dir={run_dir}", *overrides]
        assert main([*argv, "trainer.max_steps=-1", "checkpoint.monitor=null", "logger.wandb=false",
                     "trainer.deterministic=true"]) == 0
        return capsys.readouterr().out

    full, part = tmp_path / "full", tmp_path / "part"
    fit(full, "trainer.max_epochs=2")
    fit(part, "trainer.max_epochs=1")  # "interrupted" after one epoch (4 steps)
    assert _final_weights(part)["global_step"] == 4
    out = fit(part, "trainer.max_epochs=2", "ckpt_path=last")
    a, b = _final_weights(full), _final_weights(part)
    assert a["global_step"] == b["global_step"] == 8
    assert "[epoch 1 step 5" in out, "resumed run did not continue at step 4 -> 5"
    for k in a["state_dict"]:
        assert torch.allclose(a["state_dict"][k], b["state_dict"][k], atol=1e-7), k
