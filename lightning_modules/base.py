"""The LightningModule every paper derives from: one ``fuse`` API, shared val/test/predict.

A paper module supplies three things:

* ``colour_policy`` and ``pad_multiple`` (class attributes);
* :meth:`FusionModule.fuse_working` - the network's inference on sources already in the
  working colour space and padded to ``pad_multiple``;
* :meth:`FusionModule.training_step` (and optionally :meth:`FusionModule.validation_loss`).

Everything else - colour handling, padding, metrics, optimiser and LR schedule from the config,
logging of a few fused images - lives here once.

Batch contract (every DataModule yields dicts)::

    sources: float [B, N, C, H, W] in [0, 1]      (N >= 2, C in {1, 3})
    gt:      float [B, C, H, W]                   (optional: all-in-focus ground truth)
    mask:    float [B, 1, H, W] in {0, 1}         (optional: 1 where source 0 is in focus)
    name:    list[str]                            (scene names)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from mfif.metrics import build_metric_collections
from mfif.ops.colour import ColourPolicy, from_working_space, to_working_space
from mfif.ops.padding import crop_to, pad_to_multiple


@dataclass
class FusionOutput:
    """Result of :meth:`FusionModule.fuse`.

    Attributes:
        fused: fused image ``[B, C, H, W]`` in the sources' colour space, in [0, 1].
        maps: per-source decision maps/weights ``[B, N, 1, H, W]`` or None (end-to-end methods).
        extras: method-specific tensors (e.g. initial maps) for visualisation.
    """

    fused: Tensor
    maps: Optional[Tensor] = None
    extras: Optional[dict] = None


def check_sources(sources: Tensor) -> None:
    """Validate the ``[B, N, C, H, W]`` source tensor with a clear message."""
    if not isinstance(sources, Tensor):
        raise TypeError(f"sources must be a torch.Tensor, got {type(sources).__name__}")
    if sources.dim() != 5:
        raise ValueError(f"sources must have shape [B, N, C, H, W], got {tuple(sources.shape)}")
    if sources.shape[1] < 2:
        raise ValueError(f"fusion needs N >= 2 sources, got N = {sources.shape[1]}")
    if sources.shape[2] not in (1, 3):
        raise ValueError(f"sources must be gray (C=1) or RGB (C=3), got C = {sources.shape[2]}")


class FusionModule(L.LightningModule):
    """Base class of the five paper modules. See the module docstring for the contract."""

    colour_policy: ClassVar[ColourPolicy] = "rgb"
    pad_multiple: ClassVar[int] = 1
    method_name: ClassVar[str] = "?"

    def __init__(self, cfg: DictConfig):
        super().__init__()
        self.cfg = cfg
        # The whole merged config travels in the checkpoint so any paper module can be rebuilt.
        self.save_hyperparameters({"config": OmegaConf.to_container(cfg, resolve=True)})
        nr, fr = build_metric_collections(list(cfg.metrics))
        self.val_nr, self.val_fr = nr.clone(prefix="val/"), fr.clone(prefix="val/")
        self.test_nr, self.test_fr = nr.clone(prefix="test/"), fr.clone(prefix="test/")

    # ------------------------------------------------------------------ inference API
    def fuse_working(self, sources: Tensor) -> FusionOutput:
        """Network inference in the working colour space.

        Args:
            sources: ``[B, N, c, H, W]`` with c = 3 (``rgb``) or 1 (``gray_map``/``y_channel``),
                H and W multiples of ``pad_multiple``.

        Returns:
            FusionOutput with ``fused`` ``[B, c, H, W]`` (may be None for ``gray_map``) and
            ``maps`` ``[B, N, 1, H, W]`` for decision-map methods.
        """
        raise NotImplementedError

    def fuse(self, sources: Tensor) -> FusionOutput:
        """Fuse N >= 2 aligned sources of any size, gray or RGB.

        Shape:
            - sources: :math:`(B, N, C, H, W)` in [0, 1], C in {1, 3}
            - output.fused: :math:`(B, C, H, W)`; output.maps: :math:`(B, N, 1, H, W)` or None
        """
        check_sources(sources)
        work = to_working_space(sources, self.colour_policy)
        padded, size = pad_to_multiple(work, self.pad_multiple)
        out = self.fuse_working(padded)
        fused = crop_to(out.fused, size) if out.fused is not None else None
        maps = crop_to(out.maps, size) if out.maps is not None else None
        final = from_working_space(fused, maps, sources, self.colour_policy)
        return FusionOutput(final.clamp(0, 1), maps, out.extras)

    def forward(self, sources: Tensor) -> Tensor:
        return self.fuse(sources).fused

    def load_official_weights(self, path: str) -> None:
        """Load the authors' released checkpoint (strict keys) into this module's network.

        Papers with released weights override this (converter in ``<paper>/official.py``).
        """
        raise NotImplementedError(f"method '{self.method_name}' has no official-weight converter")

    # ------------------------------------------------------------------ training hooks
    def validation_loss(self, batch: dict) -> Optional[Tensor]:
        """Loss on a validation batch (default: the training loss without logging)."""
        return None

    def _shared_eval(self, batch: dict, stage: str) -> FusionOutput:
        out = self.fuse(batch["sources"])
        nr, fr = (self.val_nr, self.val_fr) if stage == "val" else (self.test_nr, self.test_fr)
        bs = batch["sources"].shape[0]
        if len(nr):
            nr.update(fused=out.fused, sources=batch["sources"])
            self.log_dict(nr, on_epoch=True, batch_size=bs, sync_dist=True)
        if "gt" in batch and len(fr):
            fr.update(fused=out.fused, gt=batch["gt"])
            self.log_dict(fr, on_epoch=True, batch_size=bs, sync_dist=True)
        return out

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = self.validation_loss(batch)
        if loss is not None:
            self.log("val/loss", loss, prog_bar=True, batch_size=batch["sources"].shape[0], sync_dist=True)
        out = self._shared_eval(batch, "val")
        if batch_idx == 0:
            self._log_images(batch, out)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._shared_eval(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        out = self.fuse(batch["sources"])
        return {"name": batch.get("name"), "fused": out.fused.cpu(), "sources": batch["sources"].cpu(),
                "maps": None if out.maps is None else out.maps.cpu(),
                "gt": batch["gt"].cpu() if "gt" in batch else None}

    def _log_images(self, batch: dict, out: FusionOutput) -> None:
        n = int(self.cfg.logger.log_images)
        loggers = [lg for lg in self.loggers if lg.__class__.__name__ == "WandbLogger"]
        if n <= 0 or not loggers or self.global_rank != 0:
            return
        from mfif.viz import make_grid

        grid = make_grid(batch["sources"][:n], out.fused[:n], batch.get("gt", None))
        loggers[0].log_image("val/examples", [grid], step=self.global_step)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        """Optimiser and LR schedule from ``cfg.optim`` (each paper yaml cites its section)."""
        o = self.cfg.optim
        params = [p for p in self.parameters() if p.requires_grad]
        if o.name == "adam":
            opt = torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        elif o.name == "adamw":
            opt = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        elif o.name == "sgd":
            opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        else:
            raise ValueError(f"optim.name must be adam, adamw or sgd, got '{o.name}'")
        if o.scheduler == "none":
            return opt
        if o.scheduler == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=o.step_size, gamma=o.gamma)
        elif o.scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.cfg.trainer.max_epochs))
        else:
            raise ValueError(f"optim.scheduler must be none, step or cosine, got '{o.scheduler}'")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
