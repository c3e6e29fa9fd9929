"""UFA-Fuse training data (Sec. III-C, Eq. 11): DUTS saliency images, mean-filter defocus.

Steps of Sec. III-C: (i) blur the source image I_s with a mean filter -> I_b, the filter size
drawn from one of four intervals [2, 3], [4, 5], [5, 7], [8, 10] ("four groups of images with
different levels of blur"); (ii) threshold the saliency label to a binary focus map I_f;
(iii) Eq. 11::

    I_near = I_s * I_f + I_b * (1 - I_f)
    I_far  = I_b * I_f + I_s * (1 - I_f)

The ground truth is I_s. The paper counts 84,424 training images = 10,553 DUTS-TR images x 4 blur
groups x 2 sources (Sec. IV-A). An *epoch* follows the released loader (ReckonerInheritor/UFA-Fusion,
``Code/data_loader.py:SalObjDataset``): one sample per image, its blur group drawn at random
(``random.randint(0, 3)``) each time, so an epoch is 10,553 pairs and the learning-rate drop
"every 200 epochs" (Sec. IV-A) and the 50-epoch ablations count those epochs. Defaults:
``expand_levels=false`` and ``resample_each_epoch=true`` (a new group, filter size and flip per
epoch); ``expand_levels=true`` makes every (image, group) one sample (4x longer epochs).
Training images are 256 x 256 (Sec. IV-A); the released loader resizes with bicubic
interpolation and flips horizontally (``Code/data_loader.py``).

Layout: ``DUTS-TR-Image/<id>.jpg`` + ``DUTS-TR-Mask/<id>.png`` under ``data.root`` (or
``data.root/DUTS-TR/``). Every image needs its mask (else an error naming the image).

Deviation: the released sample set (``ufa_trainset``) looks blurred at native resolution before
the 256 x 256 resize; here images are resized first and blurred at 256 x 256 so a batch can be
blurred at once (optionally on the GPU). Filter sizes are integers drawn uniformly within the
interval, inclusive; even sizes use ``cv2.blur``'s anchor (see :mod:`datamodules._blur`).

``data.source=bsds500`` (no DUTS copy here): images and focus maps come from BSDS500,
``data.root / data.bsds_dir`` in the layout of :mod:`datamodules.bsds500`: one region or union of
touching regions per image (7-60 % of it, ``data.region_area``) stands in for the thresholded
saliency label of step (ii); steps (i) and (iii) are unchanged.

``data.ufa_trainset_dir`` (relative to ``data.root``) adds the released sample set
(ReckonerInheritor/UFA-Fusion ``Code/DataSet/TrainSet``, :mod:`datamodules.ufa_trainset`: 18
scenes, 4 levels, blurred by the authors) to the *training* split: an epoch is the generated
train pairs followed by ``data.ufa_trainset_repeat`` passes over its scenes, each drawing a
level and flip anew as the released loader does (:class:`datamodules._synth.EpochConcat`).
Validation stays on generated pairs. Sizes follow ``image_size``/``patch_size``/``hflip``; the
released triplets carry no focus mask, so training items keep ``sources``, ``gt``, ``name``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from datamodules._augment import apply_aligned, crop_flip
from datamodules._blur import box_blur
from datamodules.bsds500 import mask_of
from datamodules._synth import (
    GeneratorDataModule,
    Pair,
    SyntheticDataConfig,
    EpochConcat,
    SyntheticDataset,
    crop_origin,
    read_image,
    resize_mask,
)
from mfif.io import BenchmarkError, load_image
from mfif.registry import register_datamodule

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class MeanFilterDUTSConfig(SyntheticDataConfig):
    source: str = "duts"  # Sec. III-C: DUTS images + saliency labels | bsds500 (module docstring)
    image_dir: str = "DUTS-TR-Image"  # relative to data.root
    mask_dir: str = "DUTS-TR-Mask"
    image_size: int = 256  # Sec. IV-A: 256 x 256 training images
    patch_size: int = 256  # random crop after resizing (= image_size: no crop)
    # Sec. III-C: mean filter sizes from four intervals (inclusive)
    size_intervals: List[List[int]] = field(default_factory=lambda: [[2, 3], [4, 5], [5, 7], [8, 10]])
    expand_levels: bool = False  # released data_loader.py: one random blur group per image per epoch
    resample_each_epoch: bool = True  # released loader draws the group/flip anew every epoch
    mask_threshold: float = 0.5  # Sec. III-C (ii): saliency label -> binary focus map
    hflip: bool = True  # official loader: random horizontal flip
    val_fraction: float = 0.05  # not given in the paper
    ufa_trainset_dir: Optional[str] = None  # + the released sample set (relative to data.root) in training
    ufa_trainset_repeat: int = 1  # passes over its scenes per epoch (each a new level/flip draw)


def eq11_pair(source: Tensor, blurred: Tensor, focus: Tensor) -> tuple[Tensor, Tensor]:
    """UFA-Fuse Eq. 11: ``near = Is*If + Ib*(1-If)``, ``far = Ib*If + Is*(1-If)``.

    Shape:
        - source (I_s), blurred (I_b): :math:`(B, C, H, W)`
        - focus (I_f): :math:`(B, 1, H, W)` in {0, 1}
        - output: ``(near, far)``, each :math:`(B, C, H, W)`
    """
    near = source * focus + blurred * (1 - focus)
    far = blurred * focus + source * (1 - focus)
    return near, far


def saliency_to_focus(label: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Sec. III-C (ii): saliency label (uint8 0..255 or float 0..1) -> boolean focus map."""
    a = np.asarray(label, dtype=np.float32)
    if a.ndim == 3:
        a = a.mean(-1)
    if a.max() > 1.0:
        a = a / 255.0
    return a >= threshold


class MeanFilterDUTSDataset(SyntheticDataset):
    """One Eq. 11 pair per (image, interval); see the module docstring."""

    def __init__(self, cfg, split, pairs):
        super().__init__(cfg, split, pairs)
        iv = [list(map(int, x)) for x in cfg.size_intervals]
        if not iv or any(len(x) != 2 or x[0] < 1 or x[0] > x[1] for x in iv):
            raise ValueError(f"data.size_intervals must be [lo, hi] pairs with 1 <= lo <= hi, got {iv}")
        self.intervals = iv
        crop_origin(None, cfg.image_size, cfg.patch_size)  # checks patch_size <= image_size
        if cfg.expand_levels:
            self.length = min(self.length * len(iv), len(pairs) * len(iv))

    def recipe(self, index: int, rng: np.random.Generator) -> dict:
        cfg = self.cfg
        if cfg.expand_levels:
            pair, group = self.pairs[index // len(self.intervals)], index % len(self.intervals)
        else:
            pair, group = self.pairs[index], int(rng.integers(len(self.intervals)))
        lo, hi = self.intervals[group]
        size = int(rng.integers(lo, hi + 1))
        img = read_image(pair.image, cfg.image_size, cfg.gray, Image.BICUBIC)
        focus = mask_of(pair.mask, lambda m: saliency_to_focus(load_image(m, gray=True)[0].numpy(), cfg.mask_threshold))
        mask = resize_mask(focus, cfg.image_size)
        (img,), mask = apply_aligned(crop_flip(int(cfg.patch_size), bool(cfg.hflip)), rng, [img], mask)
        return {"gt": img.contiguous(), "mask": mask.contiguous(), "_size": torch.tensor(size),
                "name": f"{pair.name}_m{size}"}

    @staticmethod
    def synthesize(batch: dict) -> dict:
        gt, mask = batch["gt"], batch["mask"]
        near, far = eq11_pair(gt, box_blur(gt, batch["_size"]), mask)
        return {"sources": torch.stack([near, far], 1), "gt": gt, "mask": mask, "name": batch["name"]}


def released_trainset(cfg) -> Dataset:
    """Every scene of ``data.root / data.ufa_trainset_dir`` as a training set, one random level per sample."""
    from datamodules.ufa_trainset import UFATrainsetConfig, UFATrainsetDataModule, UFATrainsetDataset

    ucfg = UFATrainsetConfig(
        name="ufa_trainset", root=str(Path(cfg.root) / cfg.ufa_trainset_dir), image_size=int(cfg.image_size),
        patch_size=int(cfg.patch_size), hflip=bool(cfg.hflip), gray=bool(cfg.gray), seed=int(cfg.seed),
        num_sources=int(cfg.num_sources), skip_invalid=bool(cfg.skip_invalid), random_level=True,
        val_fraction=0.0, resample_each_epoch=bool(cfg.resample_each_epoch))
    if not Path(ucfg.root).is_dir():
        raise FileNotFoundError(f"data.ufa_trainset_dir: {ucfg.root} is not a folder")
    return UFATrainsetDataset(ucfg, "train", UFATrainsetDataModule(ucfg).splits()["train"])


@register_datamodule("mean_filter_duts", MeanFilterDUTSConfig)
class MeanFilterDUTSDataModule(GeneratorDataModule):
    """UFA-Fuse's mean-filter Eq. 11 pairs from a DUTS-layout folder (``data.root``)."""

    dataset_cls = MeanFilterDUTSDataset
    native_source = "duts"

    def build_dataset(self, split: str) -> Dataset:
        """The generated split; ``train`` joined by the released sample set when ``ufa_trainset_dir`` is set."""
        ds = super().build_dataset(split)
        cfg = self.cfg
        if split != "train" or not cfg.ufa_trainset_dir:
            return ds
        if cfg.gpu_synthesis:
            raise ValueError("data.ufa_trainset_dir needs data.gpu_synthesis=false (the released "
                             "pairs are images, not recipes to blur on the device)")
        if int(cfg.ufa_trainset_repeat) < 1:
            raise ValueError(f"data.ufa_trainset_repeat must be >= 1, got {cfg.ufa_trainset_repeat}")
        released = released_trainset(cfg)
        return EpochConcat([(ds, 1), (released, int(cfg.ufa_trainset_repeat))], keys=("sources", "gt", "name"))

    def list_pairs(self) -> list[Pair]:
        root = Path(self.cfg.root)
        if not (root / self.cfg.image_dir).is_dir() and (root / "DUTS-TR" / self.cfg.image_dir).is_dir():
            root = root / "DUTS-TR"
        img_dir, mask_dir = root / self.cfg.image_dir, root / self.cfg.mask_dir
        for d in (img_dir, mask_dir):
            if not d.is_dir():
                raise FileNotFoundError(f"{d} is not a folder (expected the DUTS layout {self.cfg.image_dir}/ + {self.cfg.mask_dir}/)")
        images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not images:
            raise BenchmarkError(f"{img_dir} holds no images")
        masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS}
        return [Pair(p.stem, p, masks.get(p.stem), None if p.stem in masks else f"{p}: image has no mask in {mask_dir}")
                for p in images]
