"""Shared machinery of the synthetic generators (gaussian_voc, mean_filter_duts, coco_defocus).

A generated sample is made in two steps:

1. :meth:`SyntheticDataset.recipe` (CPU, in the loader workers): read and resize the image and
   its focus mask and draw *every* random number of the sample from
   ``sample_rng(seed, index, split, epoch)`` (blur sizes, crops, noise ...). Cheap.
2. :meth:`SyntheticDataset.synthesize` (batched, device-agnostic): blur and blend. By default it
   runs inside ``__getitem__`` on a batch of one; with ``gpu_synthesis=true`` the loader yields
   the recipes and :meth:`GeneratorDataModule.on_after_batch_transfer` runs it on the whole
   batch on the accelerator (kornia), so blurring never costs loader CPU time.

Recipe keys that start with ``_`` are private parameters consumed by ``synthesize``. Since every
random draw is in the recipe, results do not depend on ``num_workers`` (and GPU synthesis equals
CPU synthesis up to float rounding).

Epochs: with ``resample_each_epoch=true`` the train sampler offsets indices by ``epoch * len``
so every epoch draws new blurs/crops (online augmentation); otherwise every epoch sees the same
fixed set, like the papers' pre-generated training sets.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.base import EpochShuffleSampler, FusionDataModule, ResumableLoader, collate, sample_rng
from mfif.io import BenchmarkError, ImageReadError, _open, image_size, load_image
from mfif.config import DataConfig
from mfif.scenes import keep_valid
from mfif.ops.colour import rgb_to_gray

log = logging.getLogger(__name__)


@dataclass
class SyntheticDataConfig(DataConfig):
    """Keys shared by the synthetic generators (each adds its paper's own)."""

    image_size: int = 256  # images (and masks) are resized to image_size x image_size
    val_fraction: float = 0.1  # share of the (subset of the) images used for validation/test
    subset_size: Optional[int] = None  # use a seeded random subset of this many images
    skip_invalid: bool = False  # log and count bad image/mask pairs instead of raising
    resample_each_epoch: bool = False  # new random draws every epoch (online augmentation)
    gpu_synthesis: bool = False  # blur/blend batched on the training device (kornia)
    num_val_samples: Optional[int] = None  # cap the val/test split (None: all of it)
    # where images and focus masks come from: the paper's set (coco | voc | duts, per generator)
    # or bsds500 (regions of human segmentations, datamodules/bsds500.py)
    source: str = "native"
    bsds_dir: str = "."  # bsds500: the BSDS500 folder, relative to data.root
    bsds_splits: List[str] = field(default_factory=lambda: ["train", "val", "test"])  # bsds500: splits read
    region_area: List[float] = field(default_factory=lambda: [0.07, 0.60])  # bsds500: GACN Sec. 4.1.1's 20k-170k px at COCO size (bsds500.py)
    region_union_p: float = 0.5  # bsds500: chance of trying a union of touching regions first (ours)


# ----------------------------------------------------------------------------- files
@dataclass
class Pair:
    """An image and its focus-mask source (a mask file, or an annotation for COCO)."""

    name: str
    image: Optional[Path]
    mask: Any
    error: Optional[str] = None  # a listing problem (e.g. "image has no mask"), raised or skipped


def check_pair(pair: Pair, decode: bool) -> None:
    """Raise naming the file if the image or mask file is missing, unreadable or of another size."""
    if pair.error:
        raise BenchmarkError(pair.error)
    size = image_size(pair.image)
    if isinstance(pair.mask, Path):
        msize = image_size(pair.mask)
        if msize != size:
            raise BenchmarkError(f"{pair.mask}: mask size {msize[0]}x{msize[1]} differs from its image "
                                 f"{pair.image} ({size[0]}x{size[1]})")
    elif isinstance(pair.mask, dict) and "width" in pair.mask:  # annotation (COCO): its recorded size
        if (pair.mask["width"], pair.mask["height"]) != size:
            raise BenchmarkError(f"{pair.image}: size {size[0]}x{size[1]} differs from its annotation "
                                 f"({pair.mask['width']}x{pair.mask['height']})")
    if decode:
        load_image(pair.image)
        if isinstance(pair.mask, Path):
            load_image(pair.mask)


def validate_pairs(pairs: list[Pair], skip_invalid: bool) -> tuple[list[Pair], list[tuple[str, str]]]:
    """Header-check every pair (``skip_invalid``: also decode, and drop bad ones with a log line)."""
    return keep_valid(pairs, lambda p: check_pair(p, decode=skip_invalid), skip_invalid)


def split_items(items: Sequence, seed: int, val_fraction: float, subset_size: Optional[int]) -> dict[str, list]:
    """Seeded subset then train/val split; ``test`` is the val part (unless ``data.benchmark``)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng([int(seed), 424242]).permutation(len(items))
    if subset_size is not None:
        if subset_size > len(items):
            log.warning("data.subset_size=%d > %d available images; using all", subset_size, len(items))
        order = order[:subset_size]
    n_val = int(round(len(order) * val_fraction))
    if val_fraction > 0 and len(order) > 1:
        n_val = min(max(n_val, 1), len(order) - 1)
    val = sorted(order[len(order) - n_val :].tolist())
    train = sorted(order[: len(order) - n_val].tolist())
    return {"train": [items[i] for i in train], "val": [items[i] for i in val], "test": [items[i] for i in val]}


def read_image(path: Path, size: Optional[int], gray: bool, resample=Image.BICUBIC) -> Tensor:
    """Image file -> float32 ``[C, S, S]`` in [0, 1], resized on uint8 with PIL (fast, antialiased)."""
    with _open(path) as im:
        try:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), resample)
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageReadError(f"cannot decode image {path} (truncated or corrupt): {e}") from e
        t = torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div_(255.0)
    return rgb_to_gray(t) if gray else t


def crop_origin(rng: Optional[np.random.Generator], size: int, patch: int) -> tuple[int, int]:
    """Top-left ``(y, x)`` of a ``patch`` crop in a ``size`` square: random, or centred if ``rng`` is None."""
    if patch > size:
        raise ValueError(f"data.patch_size {patch} > data.image_size {size}")
    if rng is None:
        return (size - patch) // 2, (size - patch) // 2
    return int(rng.integers(0, size - patch + 1)), int(rng.integers(0, size - patch + 1))


def resize_mask(mask: np.ndarray, size: Optional[int]) -> Tensor:
    """Binary ``[H, W]`` mask -> float ``[1, S, S]`` in {0, 1} (bilinear resize, threshold 0.5)."""
    m = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255)
    if size is not None and m.size != (size, size):
        m = m.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.array(m) >= 128).float()[None]


# ----------------------------------------------------------------------------- dataset
class SyntheticDataset(Dataset):
    """Generated pairs from a list of :class:`Pair`; subclasses write ``recipe`` and ``synthesize``."""

    def __init__(self, cfg, split: str, pairs: list[Pair]):
        if not pairs and split == "train":  # val/test may be empty (val_fraction=0)
            raise BenchmarkError(f"no images for the '{split}' split (data.root={cfg.root})")
        self.cfg, self.split, self.pairs = cfg, split, pairs
        self.defer = bool(cfg.gpu_synthesis)
        n = len(pairs)
        if split != "train" and cfg.num_val_samples is not None:
            n = min(n, int(cfg.num_val_samples))
        self.length = n

    def __len__(self) -> int:
        return self.length

    def recipe(self, index: int, rng: np.random.Generator) -> dict:
        raise NotImplementedError

    @staticmethod
    def synthesize(batch: dict) -> dict:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        item, epoch = index % len(self), index // len(self)
        r = self.recipe(item, sample_rng(self.cfg.seed, item, self.split, epoch))
        if self.defer:
            return r
        out = self.synthesize(collate([r]))
        return {k: (v[0] if isinstance(v, (Tensor, list)) else v) for k, v in out.items()}


def is_recipe(batch: Any) -> bool:
    return isinstance(batch, dict) and any(str(k).startswith("_") for k in batch)


class EpochOffsetSampler(EpochShuffleSampler):
    """The base's seeded per-epoch order, yielding ``epoch * n + i`` so datasets redraw each epoch.

    The epoch comes from Lightning's ``set_epoch`` call; failing that (e.g. under a distributed
    sampler wrapper) from the attached trainer, and without a trainer from a local counter.
    """

    def __init__(self, n: int, seed: int, datamodule: Optional[FusionDataModule] = None, offset: bool = True):
        super().__init__(n, seed)
        self.dm, self.offset = datamodule, offset
        self._told, self._count = False, 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self._told = True

    def __iter__(self):
        if not self._told:
            trainer = getattr(self.dm, "trainer", None) if self.dm is not None else None
            self.epoch = int(trainer.current_epoch) if trainer is not None else self._count
        self._count += 1
        base = self.epoch * self.n if self.offset else 0
        return iter([base + i for i in super().__iter__()])


def epoch_train_loader(dm: FusionDataModule) -> DataLoader:
    """Train loader over ``dm.datasets["train"]`` with :class:`EpochOffsetSampler`.

    Datasets map an index to ``(index % len, epoch = index // len)``; with
    ``cfg.resample_each_epoch`` false the epoch is always 0 (a fixed training set).
    """
    ds, cfg = dm.datasets["train"], dm.cfg
    bs = int(cfg.batch_size)
    sampler = EpochOffsetSampler(len(ds), cfg.seed, dm, offset=bool(getattr(cfg, "resample_each_epoch", False)))
    return ResumableLoader(ds, batch_size=bs, sampler=sampler, num_workers=int(cfg.num_workers), collate_fn=collate,
                           persistent_workers=int(cfg.num_workers) > 0, drop_last=len(ds) > bs)


class GeneratorDataModule(FusionDataModule):
    """FusionDataModule for :class:`SyntheticDataset` subclasses (set ``dataset_cls``)."""

    dataset_cls: type = SyntheticDataset
    native_source: str = "native"  # the value of data.source that reads the paper's own data set

    def __init__(self, cfg):
        super().__init__(cfg)
        self._splits: Optional[dict[str, list]] = None
        self.skipped: list[tuple[str, str]] = []
        self.no_region: list[str] = []  # bsds500: image ids dropped for want of an admissible region

    def list_pairs(self) -> list[Pair]:
        """All candidate pairs of ``cfg.root`` in the paper's own layout, in a fixed order."""
        raise NotImplementedError

    def candidate_pairs(self) -> list[Pair]:
        """:meth:`list_pairs`, or with ``data.source=bsds500`` images + chosen BSDS500 regions."""
        source = str(getattr(self.cfg, "source", self.native_source))
        if source in (self.native_source, "native"):
            return self.list_pairs()
        if source != "bsds500":
            raise ValueError(f"data.source must be {self.native_source} or bsds500, got '{source}'")
        from datamodules.bsds500 import bsds500_pairs

        pairs, self.no_region = bsds500_pairs(self.cfg, Pair)
        return pairs

    def splits(self) -> dict[str, list]:
        if self._splits is None:
            if not self.cfg.root:
                raise ValueError(f"data.root must point to the dataset folder for data.name={self.cfg.name}")
            pairs, self.skipped = validate_pairs(self.candidate_pairs(), bool(self.cfg.skip_invalid))
            if not pairs:
                raise BenchmarkError(f"no valid image/mask pairs under {self.cfg.root}")
            self._splits = split_items(pairs, self.cfg.seed, self.cfg.val_fraction, self.cfg.subset_size)
        return self._splits

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def build_dataset(self, split: str) -> Dataset:
        return self.dataset_cls(self.cfg, split, self.splits()[split])

    def train_dataloader(self) -> DataLoader:
        return epoch_train_loader(self)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Run the deferred (``gpu_synthesis``) blur/blend on the device, then the module's hook."""
        if is_recipe(batch):
            batch = self.dataset_cls.synthesize(batch)
        trainer = getattr(self, "trainer", None)
        module = trainer.lightning_module if trainer is not None else None
        if module is not None and is_overridden("on_after_batch_transfer", module):
            batch = module.on_after_batch_transfer(batch, dataloader_idx)  # Lightning calls only ours
        return batch


class EpochConcat(Dataset):
    """Training sets one after the other, each repeated ``times`` per epoch with fresh draws.

    Every part maps an index to ``(index % len, epoch = index // len)`` (:class:`SyntheticDataset`,
    the UFA sample set); so does this concatenation, and repeat ``r`` of a part in epoch ``e``
    reads that part's epoch ``e * times + r``: repeats are new random draws (level, flip, crop),
    not copies. Items keep only ``keys`` (the keys every part has).
    """

    def __init__(self, parts: Sequence[tuple[Dataset, int]], keys: Sequence[str]):
        if not parts or any(int(t) < 1 or len(d) == 0 for d, t in parts):
            raise ValueError("EpochConcat needs non-empty parts, each repeated at least once")
        self.parts = [(d, int(t)) for d, t in parts]
        self.keys = tuple(keys)
        self.ends = np.cumsum([len(d) * t for d, t in self.parts]).tolist()

    def __len__(self) -> int:
        return int(self.ends[-1])

    def __getitem__(self, index: int) -> dict:
        epoch, i = divmod(int(index), len(self))
        k = next(j for j, end in enumerate(self.ends) if i < end)
        part, times = self.parts[k]
        r, local = divmod(i - (self.ends[k - 1] if k else 0), len(part))
        item = part[(epoch * times + r) * len(part) + local]
        return {key: item[key] for key in self.keys}


def blend(sharp: Tensor, blurred: Tensor, weight: Tensor) -> Tensor:
    """``sharp * weight + blurred * (1 - weight)``: the compositing step of every generator."""
    return sharp * weight + blurred * (1.0 - weight)
