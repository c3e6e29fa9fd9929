"""Bit-exact resume (issue 26 item 3): RNG streams of the training steps in the checkpoint
(mfif/resume.py), the train loader's position within the epoch (datamodules/base.py), SIGTERM
saving at a step end; UDPNet (random blind-spot masks) killed mid-epoch and resumed.

The SLURM forms (time-limit requeue mid-epoch, 1 and 2 ranks) are in tests/test_slurm.py."""
from __future__ import annotations

import os
import random
import signal
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch

from datamodules.base import EpochShuffleSampler, ResumableLoader
from experiments import run as R
from mfif.resume import ExactResume, rng_state, set_rng_state

CPU = torch.device("cpu")


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


# --- RNG state -----------------------------------------------------------------------------

def test_rng_state_round_trip_through_a_tensors_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.randn()  # cached Gaussians are part of the state
    state = rng_state()
    expected = _draws() + (random.gauss(0, 1), float(np.random.randn()))
    torch.save(state, tmp_path / "s.pt")
    _draws()  # move on, then restore from the file as a resume reads it (no pickled objects)
    set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True))
    assert _draws() + (random.gauss(0, 1), float(np.random.randn())) == expected
    assert all(torch.is_tensor(state[k]) for k in ("python", "numpy", "torch"))
    assert state["python"].shape == (625,) and state["numpy"].shape == (624,) and "cuda" not in state


def _trainer(**kw) -> SimpleNamespace:
    return SimpleNamespace(global_rank=0, world_size=1, received_sigterm=False,
                           _accelerator_connector=SimpleNamespace(cluster_environment=None), **kw)


def _step(cb: ExactResume, trainer) -> float:
    cb.on_train_batch_start(trainer, SimpleNamespace(device=CPU), None, 0)
    x = float(torch.rand(()))  # what a training step draws (UDPNet's masks)
    cb.on_train_batch_end(trainer, SimpleNamespace(device=CPU), None, None, 0)
    return x


def test_step_stream_ignores_draws_between_steps_and_resumes_from_its_state():
    module, trainer = SimpleNamespace(device=CPU), _trainer()
    torch.manual_seed(0)
    a = ExactResume()
    a.on_train_start(trainer, module)
    first = _step(a, trainer)
    saved = a.state_dict()
    torch.rand(5)  # e.g. a validation loader's iterator takes a seed here
    uninterrupted = [_step(a, trainer) for _ in range(2)]
    assert uninterrupted[0] != first

    torch.manual_seed(123)  # a resumed process: other global state, other draws before training
    b = ExactResume()
    b.load_state_dict(saved)
    b.on_train_start(trainer, module)
    outer = torch.get_rng_state()
    assert [_step(b, trainer) for _ in range(2)] == uninterrupted
    assert torch.equal(torch.get_rng_state(), outer), "the outer stream must not move with the steps"
    with pytest.raises(ValueError, match="'rng' as a list"):
        b.load_state_dict({"rng": None})


def test_sigterm_saves_last_at_the_step_end_and_exits_143(tmp_path):
    saved = []
    trainer = _trainer(save_checkpoint=saved.append)
    cb = ExactResume(tmp_path / "last.ckpt")
    cb.on_train_start(trainer, SimpleNamespace(device=CPU))
    _step(cb, trainer)
    assert saved == []
    trainer.received_sigterm = True
    with pytest.raises(SystemExit) as e:
        _step(cb, trainer)
    assert e.value.code == 143 and saved == [tmp_path / "last.ckpt"]


def test_time_limit_signal_is_handled_at_the_end_of_the_step(tmp_path):
    """SLURM auto-requeue: the signal only notes; Lightning's handler runs at the step end, then the
    attempt ends (143); the handler in place before training is back afterwards."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    calls = []
    lightning_handler = lambda signum, frame: calls.append(signum)  # noqa: E731  (stands for Lightning's)
    previous = signal.signal(signal.SIGUSR1, lightning_handler)
    try:
        trainer = _trainer()
        trainer._accelerator_connector.cluster_environment = SLURMEnvironment(auto_requeue=True)
        cb = ExactResume(tmp_path / "last.ckpt")
        cb.on_train_start(trainer, SimpleNamespace(device=CPU))
        cb.on_train_batch_start(trainer, SimpleNamespace(device=CPU), None, 0)
        os.kill(os.getpid(), signal.SIGUSR1)  # lands mid-step
        assert cb.requeue_pending and calls == []
        with pytest.raises(SystemExit) as e:
            cb.on_train_batch_end(trainer, SimpleNamespace(device=CPU), None, None, 0)
        assert e.value.code == 143 and calls == [signal.SIGUSR1] and not cb.requeue_pending
        cb.on_exception(trainer, None, e.value)
        assert signal.getsignal(signal.SIGUSR1) is lightning_handler
    finally:
        signal.signal(signal.SIGUSR1, previous)


# --- the train loader's position ----------------------------------------------------------

@pytest.mark.parametrize("workers", [0, 2])
def test_loader_resumes_mid_epoch_without_reading_skipped_samples(workers):
    def loader():
        return ResumableLoader(list(range(10)), batch_size=2, sampler=EpochShuffleSampler(10, seed=3),
                               num_workers=workers, persistent_workers=workers > 0)

    a = loader()
    a.sampler.set_epoch(1)
    full = [b.tolist() for b in a]
    it = iter(a)
    head = [next(it).tolist() for _ in range(3)]
    state = a.state_dict()
    assert state == {"epoch": 1, "batches": 3}

    b = loader()
    b.load_state_dict(state)
    b.sampler.set_epoch(1)  # Lightning sets the epoch before the first batch
    assert head + [x.tolist() for x in b] == full
    assert [x.tolist() for x in b] == full  # the next pass is whole again (persistent workers too)

    c = loader()
    c.load_state_dict(state)
    c.sampler.set_epoch(2)  # a checkpoint of another epoch skips nothing
    assert len([x for x in c]) == len(c) == 5
    assert c.state_dict() == {"epoch": None, "batches": 0}  # a finished epoch resumes at the next one
    with pytest.raises(ValueError, match="'batches'"):
        c.load_state_dict({"epoch": 1})


# --- UDPNet, killed by SIGTERM mid-epoch, resumed -----------------------------------------

class _SigtermAt(L.Callback):
    """Sends this process SIGTERM during the step at ``global_step == step`` (a `kill` from outside
    lands the same way: Lightning's handler notes it, the step finishes)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


# UDPNet smoke sizes: 4 training pairs, batch 2 = 2 steps per epoch; 3 epochs, no monitor (last weights)
UDPNET = ["--config", "udpnet.yaml", "profile=smoke", "trainer.max_steps=-1", "trainer.max_epochs=3",
          "checkpoint.monitor=null", "logger.wandb=false", "trainer.progress=none", "metrics=[psnr]"]


def _fit(run_dir, *extra, callbacks=()) -> int:
    run = R.run
    R.run = lambda cfg, **kw: run(cfg, **kw, callbacks=list(callbacks))
    try:
        return R.main([*UDPNET, f"run_dir={run_dir}", *extra])
    finally:
        R.run = run


def _weights(run_dir) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.slow  # three UDPNet smoke fits
def test_udpnet_killed_mid_epoch_by_sigterm_resumes_bit_exact(tmp_path):
    assert _fit(tmp_path / "full") == 0
    with pytest.raises(SystemExit) as e:
        _fit(tmp_path / "cut", callbacks=[_SigtermAt(2)])  # the 1st of the 2 steps of epoch 1
    assert e.value.code == 143
    cut = _weights(tmp_path / "cut")
    assert (cut["epoch"], cut["global_step"]) == (1, 3)  # saved at the end of that step, mid-epoch
    assert cut["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 1}]
    assert _fit(tmp_path / "cut", "ckpt_path=last") == 0
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert a["global_step"] == b["global_step"] == 6 and a["state_dict"].keys() == b["state_dict"].keys()
    diff = {k: (a["state_dict"][k] - b["state_dict"][k]).abs().max().item() for k in a["state_dict"]}
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"]), diff
    assert (tmp_path / "cut" / "metrics.csv").read_text() == (tmp_path / "full" / "metrics.csv").read_text()
