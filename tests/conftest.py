"""Shared test set-up: offline W&B, small thread counts, the ../shared folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent  # tests/ is importable via pytest's `pythonpath` (pyproject)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("PYTHONUNBUFFERED", "1")
# One thread per process, subprocesses included (CLI runs, DDP ranks, SLURM jobs inherit it): make
# test runs 2 xdist workers on 2 cores, and an OpenMP pool of 2 threads per process spin-waits
# against the other worker (a UDPNet smoke run took 22 CPU-s with 2 threads, 1.6 s with 1).
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED = Path(os.environ.get("MFIF_SHARED", ROOT.parent / "shared"))

import torch  # noqa: E402

# Tests use tiny tensors: one intra-op thread avoids oversubscribing the shared 2-core CI machine
# (measured 5-10x slower with 2 threads under load); OMP_NUM_THREADS above does it for subprocesses.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder (real data, weights, references); skip if absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present")
    return SHARED


def released_weights(shared: Path, name: str) -> Path:
    """``shared/weights/<name>`` (an authors' released file); skip the test if it is absent."""
    path = shared / "weights" / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


def python_env() -> dict:
    """Environment for subprocess runs of the CLIs (repo + tests importable, W&B offline)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env["WANDB_MODE"] = "offline"
    return env


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """``last.ckpt`` of ONE smoke fit of the tiny test method (``tests/configs_tiny.yaml``), made once
    per test session (per xdist worker) and shared by the tests that only read a trained
    checkpoint (predict, test, fuse, error messages). Read-only: tests write in their own folders."""
    import tiny_method  # noqa: F401  (registers "tiny")
    from experiments.run import main

    run_dir = tmp_path_factory.mktemp("tiny-smoke") / "run"
    assert main(["--config", str(ROOT / "tests/configs_tiny.yaml"), "profile=smoke", f"run_dir={run_dir}",
                 "logger.wandb=false", "trainer.progress=none"]) == 0
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    ckpt.chmod(0o444)
    return ckpt


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A one-node SLURM cluster for the session (tests/slurm_cluster.py). Fails, never skips, when
    SLURM or root is missing; teardown raises if any of its processes (by PID) survives."""
    from slurm_cluster import ClusterError, SlurmCluster

    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except ClusterError as e:
        cluster.stop()
        pytest.fail(str(e), pytrace=False)
    yield cluster
    cluster.stop()
