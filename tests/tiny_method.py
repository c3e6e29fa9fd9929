"""A deliberately tiny registered method for testing the framework's mechanics (trainer, DDP,
EMA, resume, configs) quickly; it is not a paper and never a main job."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.base import FusionModule, FusionOutput
from mfif.config import ModelConfig
from mfif.registry import register_method


@dataclass
class TinyConfig(ModelConfig):
    width: int = 4
    # divergence tests (tests/test_divergence.py): from this step on the loss (or only its
    # gradient) is NaN, on every rank or only on rank ``nan_rank``
    nan_at_step: int = -1
    nan_in: str = "loss"  # loss | gradient
    nan_rank: int = -1


class _NaNGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose gradient is not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


@register_method("tiny", TinyConfig)
class TinyModule(FusionModule):
    colour_policy = "gray_map"
    pad_multiple = 2

    def __init__(self, cfg):
        super().__init__(cfg)
        w = cfg.model.width
        self.net = nn.Sequential(nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, 1, 3, padding=1))

    def fuse_working(self, sources):
        b, n = sources.shape[:2]
        logits = self.net(sources.flatten(0, 1)).view(b, n, 1, *sources.shape[-2:])
        maps = logits.softmax(1)
        return FusionOutput(fused=None, maps=maps)

    def _loss(self, batch):
        out = self.fuse(batch["sources"])
        return F.l1_loss(out.fused, batch["gt"])

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        m = self.cfg.model
        if 0 <= m.nan_at_step <= self.global_step and m.nan_rank in (-1, self.global_rank):
            loss = loss * float("nan") if m.nan_in == "loss" else _NaNGradient.apply(loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["sources"].shape[0])
        return loss

    def validation_loss(self, batch):
        return self._loss(batch)
