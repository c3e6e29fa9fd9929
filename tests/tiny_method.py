"""A deliberately tiny registered method for testing the framework's mechanics (trainer, DDP,
EMA, resume, configs) quickly; it is not a paper and never a main job."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from lightning_modules.base import FusionModule, FusionOutput
from mfif.config import ModelConfig
from mfif.registry import register_method


@dataclass
class TinyConfig(ModelConfig):
    width: int = 4


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
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["sources"].shape[0])
        return loss

    def validation_loss(self, batch):
        return self._loss(batch)
