"""The one place where a Lightning ``Trainer`` is assembled from an experiment config.

Cross-cutting concerns are callbacks, never code in the paper modules:

* EMA of weights: Lightning's own ``EMAWeightAveraging`` (validation/test and checkpoints use
  the averaged weights);
* checkpoints: ``last.ckpt`` plus the best by the paper's monitored metric, written crash-safe
  in their folder (:class:`AtomicCheckpointIO`, :func:`mfif.checkpoints.atomic_torch_save`);
* early stopping when the paper uses it (MSASN: patience 6 on the validation loss);
* divergence: a non-finite loss or gradient stops training before the step (:class:`DivergenceGuard`);
* exact resume: the RNG streams of the training steps go into every checkpoint, SIGTERM and SLURM's
  time-limit signal save at the end of the current step (:class:`mfif.resume.ExactResume`; the
  train loader's position is restored by Lightning, :class:`datamodules.base.ResumableLoader`);
* progress: Rich bar in a terminal, plain periodic log lines otherwise (SLURM logs);
* loggers: a CSV logger always (appending: a resumed run or a test in a training folder adds
  rows to ``csv/metrics.csv``, never replaces it), W&B (offline unless configured online).

``trainer.deterministic=auto`` is true on CPU (bit-exact resume) and false on GPU, where some
backward kernels used by the losses (``ReflectionPad2d``, bilinear ``interpolate``) have no
deterministic CUDA version. Any other ``trainer.*`` key is passed to ``lightning.Trainer``.

Strategy: ``trainer.strategy=auto`` picks DDP when more than one device or node is used; a
SLURM allocation is detected by Lightning's ``SLURMEnvironment`` (``srun`` with
``--ntasks-per-node`` = devices), which also requeues on ``SIGUSR1`` (``--signal``).
"""
from __future__ import annotations

import csv
import io
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
)
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig, OmegaConf

from mfif.checkpoints import atomic_torch_save
from mfif.config import TrainerConfig
from mfif.io import atomic_write_bytes
from mfif.resume import ExactResume


class PlainProgress(Callback):
    """One log line every ``every`` training steps (for non-TTY output such as SLURM logs)."""

    def __init__(self, every: int = 10):
        self.every = max(1, every)
        self._t0 = time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if trainer.is_global_zero and step % self.every == 0:
            m = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
            items = " ".join(f"{k}={v:.4g}" for k, v in sorted(m.items()))
            print(f"[epoch {trainer.current_epoch} step {step} {time.time() - self._t0:.0f}s] {items}", flush=True)

    def on_validation_end(self, trainer, pl_module):
        if trainer.is_global_zero and not trainer.sanity_checking:
            m = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            print(f"[epoch {trainer.current_epoch} validation] " + " ".join(f"{k}={v:.4g}" for k, v in sorted(m.items())), flush=True)


class TrainingDiverged(RuntimeError):
    """Training stopped at a non-finite loss or gradient (:class:`DivergenceGuard`); the weights
    are those before the step, the checkpoints on disk are the last finite ones."""

    def __init__(self, step: int, what: str, checkpoint: Optional[str]):
        self.step, self.what, self.checkpoint = step, what, checkpoint
        kept = f"last finite checkpoint: {checkpoint} (kept)" if checkpoint else "no checkpoint was written before it"
        super().__init__(f"training diverged at step {step}: non-finite {what}; {kept}")


class DivergenceGuard(Callback):
    """Stop training at the first non-finite loss or gradient, before the optimiser step.

    Checked on every step: the loss before backward and the gradients before the optimiser step
    (one reduction, one host sync). Under DDP the decision is taken jointly (a rank whose loss is
    finite would otherwise wait for the others' gradients forever). Raises
    :class:`TrainingDiverged`, which ``run.py`` turns into one line and exit code 3; nothing is
    saved after the non-finite step, so the newest checkpoint in the run folder stays the last
    finite one.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def _check(self, trainer, finite: torch.Tensor, what: str) -> None:
        bad = not bool(finite)
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            from mfif.checkpoints import newest_checkpoint  # the rule of ckpt_path=last

            path = newest_checkpoint(self.run_dir)
            raise TrainingDiverged(trainer.global_step, what, str(path) if path else None)

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._check(trainer, torch.isfinite(loss.detach()).all(), "loss")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if grads:
            self._check(trainer, torch.isfinite(torch.stack(torch._foreach_norm(grads))).all(), "gradient")


def count_devices(devices: Any, accelerator: str) -> int:
    """Number of processes per node implied by the ``devices`` setting."""
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    if isinstance(devices, int) or (isinstance(devices, str) and devices.isdigit()):
        n = int(devices)
        return torch.cuda.device_count() if n == -1 else n
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.device_count()
    return 1


def resolve_strategy(cfg: DictConfig) -> str:
    t = cfg.trainer
    if t.strategy != "auto":
        return t.strategy
    multi = count_devices(t.devices, t.accelerator) > 1 or int(t.num_nodes) > 1
    return "ddp" if multi else "auto"


def use_rich(progress: str) -> bool:
    if progress in ("rich", "plain", "none"):
        return progress == "rich"
    return sys.stdout.isatty() and not os.environ.get("SLURM_JOB_ID")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` writing with :func:`mfif.checkpoints.atomic_torch_save` (in the
    destination folder, fsync, rename; never via ``$TMPDIR``); loading as Lightning does."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_torch_save(checkpoint, path)


class AppendingCSVWriter(ExperimentWriter):
    """Lightning's CSV writer that keeps an existing ``metrics.csv`` and adds to it.

    Lightning's deletes the file when its folder is reused (resume, or ``mode=test`` in a
    training folder). Here the existing header is read back, new rows are appended, and a new
    column rewrites the file through a temporary file and a rename. ``hparams.yaml`` is
    written once (``config.yaml`` in the run folder records each run's settings).
    """

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir=log_dir)
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])

    def _check_log_dir_exists(self) -> None:  # never delete earlier logs
        pass

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            rows = list(csv.DictReader(f))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(Path(self.metrics_file_path), buf.getvalue().encode())

    def log_hparams(self, params: dict[str, Any]) -> None:
        if not self._fs.isfile(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)):
            super().log_hparams(params)


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` with :class:`AppendingCSVWriter`."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingCSVWriter:
        if self._experiment is None:
            get_filesystem(self.root_dir).makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingCSVWriter(log_dir=self.log_dir)
        return self._experiment


def resolve_deterministic(t: DictConfig) -> bool | str:
    """``trainer.deterministic`` for Lightning: ``auto`` -> true on CPU, false on an accelerator."""
    if t.deterministic != "auto":
        return t.deterministic
    gpu = t.accelerator in ("gpu", "cuda", "mps") or (t.accelerator == "auto" and torch.cuda.is_available())
    return not gpu


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    loggers: list = [AppendingCSVLogger(save_dir=str(run_dir), name="csv", version="")]
    lg = cfg.logger
    if lg.wandb and lg.mode != "disabled":
        os.environ.setdefault("WANDB_SILENT", "true")
        wb = WandbLogger(
            save_dir=str(run_dir),
            project=lg.project,
            entity=lg.entity,
            group=lg.group,
            name=lg.name or run_dir.name,
            id=lg.id,
            tags=list(lg.tags),
            offline=lg.mode == "offline",
            config=OmegaConf.to_container(cfg, resolve=True),
        )
        loggers.append(wb)
    return loggers


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` at every save point (each validation, or ``every_n_train_steps``) and at the
    end of training.

    Lightning 2.6's ``save_last=True`` refreshes ``last.ckpt`` only when a monitored checkpoint
    improves, so a run whose validation loss stalls would resume (and ``ckpt_path=last`` would
    test) weights from the last improvement. This is an unmonitored checkpoint named ``last``
    instead, plus a save at train end when training stopped between save points (``max_steps``).
    """

    def __init__(self, dirpath: str, every_n_train_steps: Optional[int] = None):
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, save_last=False,
                         every_n_train_steps=every_n_train_steps, enable_version_counter=False)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer):  # Lightning 2.6 API (pinned < 2.7)
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))


def build_callbacks(cfg: DictConfig, run_dir: Path, has_logger: bool) -> list:
    ck, dirpath = cfg.checkpoint, str(run_dir / "checkpoints")
    callbacks: list = [DivergenceGuard(run_dir)]
    if ck.monitor:  # first: trainer.checkpoint_callback is the one that knows the best checkpoint
        callbacks.append(ModelCheckpoint(dirpath=dirpath, filename="best-{epoch}-{step}", monitor=ck.monitor,
                                         mode=ck.mode, save_top_k=ck.save_top_k, save_last=False,
                                         every_n_train_steps=ck.every_n_train_steps, auto_insert_metric_name=False))
    if ck.save_last:
        callbacks.append(LastCheckpoint(dirpath, ck.every_n_train_steps))
    if cfg.ema.enabled and cfg.mode == "fit":  # test/predict load the averaged weights from the checkpoint
        callbacks.append(EMAWeightAveraging(decay=cfg.ema.decay, update_starting_at_step=cfg.ema.start_step))
    # after EMA: a step-end save (SIGTERM, SLURM requeue) must hold the step's EMA update
    callbacks.append(ExactResume(run_dir / "checkpoints" / "last.ckpt" if ck.save_last else None))
    es = cfg.trainer.early_stopping
    if es.enabled:
        # checked after each validation only: a run stopped by max_steps mid-epoch has no val/loss yet
        callbacks.append(EarlyStopping(monitor=es.monitor, mode=es.mode, patience=es.patience,
                                       check_on_train_epoch_end=False))
    if has_logger:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    if use_rich(cfg.trainer.progress):
        callbacks.append(RichProgressBar())
    elif cfg.trainer.progress != "none":
        callbacks.append(PlainProgress(cfg.trainer.log_every_n_steps))
    return callbacks


def build_trainer(cfg: DictConfig, run_dir: Path, extra_callbacks: Sequence[Callback] = (), **overrides: Any) -> L.Trainer:
    """Assemble the Trainer for ``cfg`` writing everything under ``run_dir``.

    Args:
        cfg: the experiment config; ``trainer.*`` keys beyond :class:`~mfif.config.TrainerConfig`
            are passed to ``lightning.Trainer`` (checked by :func:`mfif.config.check_trainer_keys`).
        run_dir: the run folder (created).
        extra_callbacks: added after the project's callbacks (e.g. a benchmark's timer).
        overrides: Trainer arguments that win over the config.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t = cfg.trainer
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if t.threads:  # before any training work (oneDNN's results depend on the thread count)
        torch.set_num_threads(int(t.threads))
    loggers = build_loggers(cfg, run_dir)
    kwargs = dict(
        default_root_dir=str(run_dir),
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=resolve_strategy(cfg),
        precision=t.precision,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        gradient_clip_val=t.gradient_clip_val,
        accumulate_grad_batches=t.accumulate_grad_batches,
        deterministic=resolve_deterministic(t),
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        limit_test_batches=t.limit_test_batches,
        val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        log_every_n_steps=t.log_every_n_steps,
        num_sanity_val_steps=t.num_sanity_val_steps,
        logger=loggers,
        callbacks=build_callbacks(cfg, run_dir, bool(loggers)) + list(extra_callbacks),
        enable_progress_bar=use_rich(t.progress),
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
    )
    extra = OmegaConf.to_container(t, resolve=True)
    kwargs.update({k: v for k, v in extra.items() if k not in TrainerConfig.__dataclass_fields__})  # Trainer args
    kwargs.update(overrides)
    return L.Trainer(**{k: v for k, v in kwargs.items() if v is not None})
