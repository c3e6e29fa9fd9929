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

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from mfif.checkpoints import is_metric_key
from mfif.ops.colour import ColourPolicy, from_working_space, to_working_space
from mfif.ops.conv import PRECISIONS, inference_precision
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


# The metric collections (mfif.checkpoints.METRIC_ATTRS) are rebuilt by every run and never saved.


def _drop_metric_state(module, state_dict: dict, prefix: str, local_metadata) -> None:
    """``state_dict`` post-hook: remove the metric networks (LPIPS/DISTS/PieAPP VGGs, ...)."""
    for key in [k for k in state_dict if k.startswith(prefix) and is_metric_key(k[len(prefix):])]:
        del state_dict[key]


def _ignore_metric_keys(module, incompatible_keys) -> None:
    """``load_state_dict`` post-hook: metric networks are neither expected nor loaded from a
    checkpoint (older checkpoints that hold them still load, strictly for every other key)."""
    for keys in (incompatible_keys.missing_keys, incompatible_keys.unexpected_keys):
        keys[:] = [k for k in keys if not is_metric_key(k)]


# ----------------------------------------------------------------------------- Lightning on demand
# Importing Lightning takes ~1.9 s (it imports torch._dynamo), six times a GACN fusion, and the
# metric collections (torchmetrics, SciPy) about as much again. A process that only fuses (fuse.py,
# the parity tool, mfif.batching) needs neither,
# so FusionModule is defined on torch.nn.Module and turns into a lightning.LightningModule - its
# base class is swapped once per process, every paper subclass follows - as soon as Lightning is
# in use: when a module is built outside `inference_only()`, when Lightning is already imported,
# or when a Lightning-only class attribute (`load_from_checkpoint`, ...) is asked for. Training,
# test and predict through the Trainer therefore see ordinary LightningModules.
_inference_only_depth = 0


@contextlib.contextmanager
def inference_only() -> Iterator[None]:
    """Build FusionModules for inference without importing Lightning (when it is not loaded yet).

    Such a module fuses, loads weights and moves between devices like any ``nn.Module``; it has no
    metrics, hyper-parameters or logging and must not be handed to a ``lightning.Trainer``. In a
    process that has imported Lightning the block changes nothing.
    """
    global _inference_only_depth
    _inference_only_depth += 1
    try:
        yield
    finally:
        _inference_only_depth -= 1


def use_lightning() -> None:
    """Make :class:`FusionModule` (and every paper module) a ``lightning.LightningModule``; idempotent."""
    import lightning

    if FusionModule.__bases__ != (lightning.LightningModule,):
        FusionModule.__bases__ = (lightning.LightningModule,)


def lightning_enabled() -> bool:
    """Whether :class:`FusionModule` is a ``lightning.LightningModule`` in this process."""
    return FusionModule.__bases__ != (torch.nn.Module,)


class _LightningOnDemand(type):
    """Metaclass: a class attribute only Lightning has (``Module.load_from_checkpoint``) turns
    Lightning on first (:func:`use_lightning`)."""

    def __getattr__(cls, name: str):
        if name.startswith("__") or lightning_enabled():
            raise AttributeError(f"type object '{cls.__name__}' has no attribute '{name}'")
        use_lightning()
        return getattr(cls, name)


class FusionModule(torch.nn.Module, metaclass=_LightningOnDemand):
    """Base class of the five paper modules. See the module docstring for the contract.

    A ``lightning.LightningModule`` except in an :func:`inference_only` block of a process that
    has not imported Lightning (see "Lightning on demand" above).

    Args:
        cfg: the merged experiment config (:func:`mfif.config.load_config`), or its plain-dict
            form as stored in a checkpoint's hyper-parameters, so that Lightning's standard
            ``<Module>.load_from_checkpoint(path)`` works for every paper. A dict is validated
            against the schema and its import hooks are refused
            (:func:`mfif.config.check_import_hooks`); to trust a checkpoint's hooks use
            :func:`mfif.checkpoints.load_module` with ``trust_config=True``.
    """

    colour_policy: ClassVar[ColourPolicy] = "rgb"
    pad_multiple: ClassVar[int] = 1
    method_name: ClassVar[str] = "?"
    # Inference precision of fuse(): "fp32" or "bf16" (the CPU fast paths' convolutions in bfloat16,
    # mfif.ops.conv.inference_precision; README "CPU speed" has the measured quality per method).
    # A method may change its default; an instance's ``fuse_precision`` (fuse.py --precision) wins.
    precision_default: ClassVar[str] = "fp32"

    def __new__(cls, *args: Any, **kwargs: Any) -> "FusionModule":
        if _inference_only_depth == 0 or "lightning" in sys.modules:
            use_lightning()
        return super().__new__(cls)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None,
                             weights_only: bool = True, **kwargs):
        """Lightning's loader, reading tensors only by default (a checkpoint runs no pickled code;
        Lightning's own default is ``weights_only=False``). ``cfg=<DictConfig>`` replaces the
        stored config (e.g. to trust its import hooks)."""
        use_lightning()
        if "cfg" not in kwargs and isinstance(checkpoint_path, (str, os.PathLike)) and os.path.isfile(checkpoint_path):
            from mfif.checkpoints import read_checkpoint  # tensors only, memory-mapped: cheap

            hp = read_checkpoint(checkpoint_path).get("hyper_parameters") or {}
            if "cfg" not in hp and isinstance(hp.get("config"), dict):  # written before it was named cfg
                kwargs["cfg"] = hp["config"]
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, hparams_file=hparams_file,
                                            strict=strict, weights_only=weights_only, **kwargs)

    def __init__(self, cfg: DictConfig | dict):
        super().__init__()
        if not isinstance(cfg, DictConfig):
            from mfif.config import config_from_dict

            cfg = config_from_dict(dict(cfg))
        self.cfg = cfg
        if lightning_enabled():  # training/test machinery; an inference_only() module has none
            from mfif.metrics import build_metric_collections

            # The whole merged config travels in the checkpoint as the ``cfg`` argument.
            self.save_hyperparameters({"cfg": OmegaConf.to_container(cfg, resolve=True)})
            nr, fr = build_metric_collections(list(cfg.metrics))
            self.val_nr, self.val_fr = nr.clone(prefix="val/"), fr.clone(prefix="val/")
            self.test_nr, self.test_fr = nr.clone(prefix="test/"), fr.clone(prefix="test/")
        self.register_state_dict_post_hook(_drop_metric_state)
        self.register_load_state_dict_post_hook(_ignore_metric_keys)

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
        precision = getattr(self, "fuse_precision", self.precision_default)
        if precision not in PRECISIONS:
            raise ValueError(f"fuse_precision must be one of {PRECISIONS}, got '{precision}'")
        with inference_precision(precision):  # bf16: the fast paths' convolutions (mfif.ops.conv)
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
        rows = getattr(self, "_test_rows", None) if stage == "test" else None
        per_image = [{} for _ in range(bs)]
        for coll, other in ((nr, "sources"), (fr, "gt")):
            if not len(coll) or other not in batch:
                continue
            if rows is None:
                coll.update(fused=out.fused, **{other: batch[other]})
            else:  # one sample at a time: each forward returns that image's values, the epoch state is the same
                for i in range(bs):
                    vals = coll(fused=out.fused[i:i + 1], **{other: batch[other][i:i + 1]})
                    per_image[i].update({k.split("/", 1)[1]: float(v) for k, v in vals.items()})
            self.log_dict(coll, on_epoch=True, batch_size=bs, sync_dist=True)
        if rows is not None:
            names = list(batch.get("name") or [f"{len(rows) + i}" for i in range(bs)])
            rows += [{"image": str(n), **v} for n, v in zip(names, per_image)]
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

    def on_test_epoch_start(self) -> None:
        # per-image test metrics for W&B's table (collected only when a W&B logger is attached)
        self._test_rows = [] if self._wandb_logger() is not None else None

    def on_test_epoch_end(self) -> None:
        rows, self._test_rows = getattr(self, "_test_rows", None), None
        if rows is None:
            return
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        logger = self._wandb_logger()
        if self.global_rank == 0 and rows and logger is not None:
            from mfif.viz import metric_table_rows

            columns, data = metric_table_rows(rows)
            logger.log_table("test/per_image", columns=columns, data=data)

    def _wandb_logger(self):
        """The attached ``WandbLogger`` (None without one, or outside a Trainer)."""
        try:
            loggers = self.loggers
        except RuntimeError:
            return None
        return next((lg for lg in loggers if lg.__class__.__name__ == "WandbLogger"), None)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        out = self.fuse(batch["sources"])
        return {"name": batch.get("name"), "fused": out.fused.cpu(), "sources": batch["sources"].cpu(),
                "maps": None if out.maps is None else out.maps.cpu(),
                "gt": batch["gt"].cpu() if "gt" in batch else None}

    def _log_images(self, batch: dict, out: FusionOutput) -> None:
        """W&B, first validation batch: ``val/examples`` (sources | fused | GT) and, for
        decision-map methods, ``val/decision_maps`` (each source's map, white = taken)."""
        n = int(self.cfg.logger.log_images)
        logger = self._wandb_logger()
        if n <= 0 or logger is None or self.global_rank != 0:
            return
        from mfif.viz import make_grid, make_map_grid

        gt = batch["gt"][:n] if "gt" in batch else None
        logger.log_image("val/examples", [make_grid(batch["sources"][:n], out.fused[:n], gt)], step=self.global_step)
        if out.maps is not None:
            logger.log_image("val/decision_maps", [make_map_grid(out.maps[:n])], step=self.global_step)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        """Optimiser and LR schedule from ``cfg.optim`` (each paper yaml cites its section)."""
        o = self.cfg.optim
        params = [p for p in self.parameters() if p.requires_grad]
        if o.name not in OPTIMIZERS:
            raise ValueError(f"optim.name must be one of {', '.join(OPTIMIZERS)}, got '{o.name}'")
        if o.scheduler != "none" and o.scheduler not in SCHEDULERS:
            raise ValueError(f"optim.scheduler must be none or one of {', '.join(SCHEDULERS)}, got '{o.scheduler}'")
        opt = OPTIMIZERS[o.name](params, o)
        if o.scheduler == "none":
            return opt
        sched = SCHEDULERS[o.scheduler](opt, self.cfg)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


#: ``optim.name`` -> optimiser factory ``(params, cfg.optim)``; add an entry to support another one.
OPTIMIZERS: dict[str, Any] = {
    "adam": lambda params, o: torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay),
    "adamw": lambda params, o: torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay),
    "sgd": lambda params, o: torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay),
}
#: ``optim.scheduler`` -> epoch-wise LR scheduler factory ``(optimiser, cfg)`` ("none": no scheduler).
SCHEDULERS: dict[str, Any] = {
    "step": lambda opt, cfg: torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.optim.step_size, gamma=cfg.optim.gamma),
    "cosine": lambda opt, cfg: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.trainer.max_epochs)),
}


if "lightning" in sys.modules:  # already paid for: be a LightningModule from the start
    use_lightning()
