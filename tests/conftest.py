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

SHARED = Path(os.environ.get("MFIF_SHARED", ROOT.parent / "shared"))

import torch  # noqa: E402

# Tests use tiny tensors: one intra-op thread avoids oversubscribing the shared 2-core CI machine
# (measured 5-10x slower with 2 threads under load). Subprocess tests are unaffected.
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
