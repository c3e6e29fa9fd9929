"""Bit-exact resume at any training step: the RNG streams of the training steps in the checkpoint,
and a stop on SIGTERM or SLURM's time-limit signal at the end of a step.

A resumed run trains on the same batches as an uninterrupted one (the train loader's position is
:class:`datamodules.base.ResumableLoader`'s, restored by Lightning) and must also draw the same
random numbers (UDPNet's blind-spot masks, VAEEDOF's source order, dropout). Lightning stores no
RNG state, and the global generators are also drawn from *between* steps (every DataLoader
iterator takes a seed from torch's generator, the sanity check and validation create iterators),
differently in a resumed run. So :class:`ExactResume` gives the training steps a stream of their
own: before each training step it swaps in the step stream (Python ``random``, NumPy's global
generator, torch's CPU generator and, on a GPU, the device's), after it swaps the outer state
back. The step stream's state between two steps is exactly the next step's, whenever a
checkpoint is written, and every rank's goes into the checkpoint (gathered under DDP).

DataLoader workers: the datasets draw every random number from ``sample_rng(seed, split, index,
epoch)`` (:mod:`datamodules.base`), never from a worker's generators, so those hold nothing a
resumed run needs; the loader skips the batches already trained on by their indices.

Checkpoints are consistent only between steps: Lightning saves SLURM's ``hpc_ckpt`` inside the
signal handler, wherever the signal lands (mid-step, it would hold the step's update but replay
the step). Here the time-limit signal is only noted, and at the end of the current step every
rank saves together, ``scontrol requeue`` is called (Lightning's handler) and the process ends.
SIGTERM (``kill``, ``scancel``) likewise saves ``last.ckpt`` at the end of the current step and
ends the run with exit code 143, instead of Lightning's default of finishing the epoch unsaved.
A time-limit signal that arrives during validation is handled at the next step's end, one after
the last step when training ends.
"""
from __future__ import annotations

import random
import signal
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

EXIT_SIGTERM = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM


def rng_state(device: Optional[torch.device] = None) -> dict:
    """The global RNG states as tensors and numbers (checkpoints are read with ``weights_only``).

    Args:
        device: a CUDA device whose generator is included; None or a CPU device: CPU only.
    """
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    if name != "MT19937":
        raise ValueError(f"NumPy's global generator is {name}, expected MT19937")
    state = {"python": torch.tensor(mt, dtype=torch.int64), "python_version": int(version), "python_gauss": gauss,
             "numpy": torch.from_numpy(keys.astype(np.int64)), "numpy_pos": int(pos),
             "numpy_has_gauss": int(has_gauss), "numpy_gauss": float(cached), "torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: Optional[torch.device] = None) -> None:
    """Restore what :func:`rng_state` returned (the CUDA generator only when ``device`` is CUDA)."""
    random.setstate((state["python_version"], tuple(state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    torch.set_rng_state(state["torch"])
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class ExactResume(Callback):
    """RNG streams of the training steps in checkpoints; SIGTERM / SLURM requeue at a step end.

    Put it after the callbacks that act at a batch end (EMA): its ``on_train_batch_end`` may
    save a checkpoint, which must hold their update of that step.

    Args:
        last_ckpt: where a SIGTERM saves (the run's ``last.ckpt``); None: stop without saving.
    """

    def __init__(self, last_ckpt: Optional[Path] = None):
        self.last_ckpt = Path(last_ckpt) if last_ckpt is not None else None
        self._trainer = None
        self._device: Optional[torch.device] = None
        self._steps: Optional[dict] = None  # the step stream between steps
        self._outer: Optional[dict] = None  # the global state outside steps, during a step
        self._loaded: Optional[list] = None  # per rank, from a checkpoint
        self._requeue: Optional[tuple] = None  # (signal, Lightning's handler)
        self._requeue_noted = False

    # ------------------------------------------------------------------ checkpoint state
    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        mine = self._steps if self._steps is not None else rng_state(self._device)
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1 and torch.distributed.is_initialized():
            # Lightning writes rank 0's checkpoint; every rank calls this while saving (a collective)
            ranks: list = [None] * trainer.world_size
            torch.distributed.all_gather_object(ranks, {k: v.cpu() if torch.is_tensor(v) else v for k, v in mine.items()})
            return {"rng": ranks}
        return {"rng": [mine]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict.get("rng")
        if not isinstance(ranks, list) or not ranks:
            raise ValueError(f"{type(self).__name__} state: expected 'rng' as a list of per-rank states, got {ranks!r}")
        self._loaded = ranks

    # ------------------------------------------------------------------ the step stream
    def on_train_start(self, trainer, pl_module) -> None:
        self._device = pl_module.device if pl_module.device.type == "cuda" else None
        rank = trainer.global_rank
        if self._loaded is not None and rank < len(self._loaded):
            self._steps = self._loaded[rank]
        else:  # a fresh run (or more ranks than the checkpoint had): the state seed_everything left
            self._steps = rng_state(self._device)
        self._loaded = None
        self._defer_requeue_signal(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._outer = rng_state(self._device)
        set_rng_state(self._steps, self._device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._steps = rng_state(self._device)
        set_rng_state(self._outer, self._device)
        self._outer = None
        self._stop_if_asked(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        requeue, pending = self._requeue, self._agreed(trainer)[1]
        self._restore_requeue_signal()
        if pending and requeue is not None:  # noted after the last step: save and requeue now
            self._requeue_noted = False
            requeue[1](requeue[0], None)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore_requeue_signal()

    # ------------------------------------------------------------------ SIGTERM / requeue
    @property
    def requeue_pending(self) -> bool:
        """True once SLURM's time-limit signal arrived and until the step-end save handles it."""
        return self._requeue_noted

    def _defer_requeue_signal(self, trainer) -> None:
        env = getattr(trainer._accelerator_connector, "cluster_environment", None)  # what Lightning's signal connector reads
        if not (isinstance(env, SLURMEnvironment) and env.auto_requeue) or threading.current_thread() is not threading.main_thread():
            return
        sig = env.requeue_signal or signal.SIGUSR1
        handler = signal.getsignal(sig)
        if callable(handler):
            self._requeue = (sig, handler)
            signal.signal(sig, self._note_requeue)

    def _note_requeue(self, signum, frame) -> None:
        self._requeue_noted = True

    def _restore_requeue_signal(self) -> None:
        if self._requeue is not None and threading.current_thread() is threading.main_thread():
            signal.signal(*self._requeue)
        self._requeue = None

    def _agreed(self, trainer) -> tuple[bool, bool]:
        """(SIGTERM received, time-limit signal noted) on any rank: all ranks act at the same step
        (saving is a collective)."""
        term, requeue = bool(getattr(trainer, "received_sigterm", False)), self._requeue_noted
        if trainer.world_size > 1:
            flags = torch.tensor([float(term), float(requeue)], device=trainer.strategy.root_device)
            flags = trainer.strategy.reduce(flags, reduce_op="max")
            term, requeue = bool(flags[0] > 0), bool(flags[1] > 0)
        return term, requeue

    def _stop_if_asked(self, trainer) -> None:
        term, requeue = self._agreed(trainer)
        if requeue and self._requeue is not None:
            self._requeue_noted = False
            sig, handler = self._requeue
            handler(sig, None)  # Lightning's: hpc_ckpt_N.ckpt, then `scontrol requeue` from rank 0
            raise SIGTERMException(EXIT_SIGTERM)  # SLURM ends this attempt anyway; train no further
        if term:
            if self.last_ckpt is not None:
                trainer.save_checkpoint(self.last_ckpt)
            raise SIGTERMException(EXIT_SIGTERM)
