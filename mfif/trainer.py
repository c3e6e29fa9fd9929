"""The one place where a Lightning ``Trainer`` is assembled from an experiment config.

Cross-cutting concerns are callbacks, never code in the paper modules:

* EMA of weights: Lightning's own ``EMAWeightAveraging`` (validation/test and checkpoints use
  the averaged weights);
* checkpoints: ``last.ckpt`` plus the best by the paper's monitored metric;
* early stopping when the paper uses it (MSASN: patience 6 on the validation loss);
* progress: Rich bar in a terminal, plain periodic log lines otherwise (SLURM logs);
* loggers: a CSV logger always, W&B (offline unless configured online).

Strategy: ``trainer.strategy=auto`` picks DDP when more than one device or node is used; a
SLURM allocation is detected by Lightning's ``SLURMEnvironment`` (``srun`` with
``--ntasks-per-node`` = devices), which also requeues on ``SIGUSR1`` (``--signal``).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
)
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf


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


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    loggers: list = [CSVLogger(save_dir=str(run_dir), name="csv", version="")]
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


def build_callbacks(cfg: DictConfig, run_dir: Path, has_logger: bool) -> list:
    ck = cfg.checkpoint
    callbacks: list = [
        ModelCheckpoint(
            dirpath=str(run_dir / "checkpoints"),
            filename="best-{epoch}-{step}",
            monitor=ck.monitor,
            mode=ck.mode,
            save_top_k=ck.save_top_k if ck.monitor else 0,
            save_last=ck.save_last,
            every_n_train_steps=ck.every_n_train_steps,
            auto_insert_metric_name=False,
        )
    ]
    if cfg.ema.enabled:
        callbacks.append(EMAWeightAveraging(decay=cfg.ema.decay, update_starting_at_step=cfg.ema.start_step))
    es = cfg.trainer.early_stopping
    if es.enabled:
        callbacks.append(EarlyStopping(monitor=es.monitor, mode=es.mode, patience=es.patience))
    if has_logger:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    if use_rich(cfg.trainer.progress):
        callbacks.append(RichProgressBar())
    elif cfg.trainer.progress != "none":
        callbacks.append(PlainProgress(cfg.trainer.log_every_n_steps))
    return callbacks


def build_trainer(cfg: DictConfig, run_dir: Path, **overrides: Any) -> L.Trainer:
    """Assemble the Trainer for ``cfg`` writing everything under ``run_dir``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t = cfg.trainer
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
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
        deterministic=t.deterministic,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        limit_test_batches=t.limit_test_batches,
        val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        log_every_n_steps=t.log_every_n_steps,
        num_sanity_val_steps=t.num_sanity_val_steps,
        logger=loggers,
        callbacks=build_callbacks(cfg, run_dir, bool(loggers)),
        enable_progress_bar=use_rich(t.progress),
        enable_model_summary=False,
    )
    kwargs.update(overrides)
    return L.Trainer(**{k: v for k, v in kwargs.items() if v is not None})
