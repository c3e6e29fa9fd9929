"""The released UFA-Fusion sample training set (ReckonerInheritor/UFA-Fusion ``Code/DataSet/TrainSet``) and its layout.

Layout: ``ROOT/<scene>/<level>/<scene>_1.jpg, <scene>_2.jpg, <scene>_ground.jpg`` with the
levels ``23``, ``45``, ``57``, ``810`` named after the mean-filter intervals of Sec. III-C
([2,3], [4,5], [5,7], [8,10]); ``_1``/``_2`` are complementary partly defocused sources and
``_ground`` is the ground truth (the same image at every level).

The official loader (ReckonerInheritor/UFA-Fusion ``Code/data_loader.py``) resizes every image to
256 x 256 with bicubic interpolation, flips horizontally at random, and picks one level at random
per sample, so an epoch has one sample per scene (``random_level``). With
``random_level=false`` every (scene, level) is one sample. Scenes are read with
:func:`mfif.scenes.discover_scenes`, so any folder of ground-truth pairs works (a
flat folder counts as a single level). The split is by scene, so no image is in both splits.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import List, Optional

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from datamodules._augment import apply_aligned, crop_flip
from datamodules._synth import crop_origin, epoch_train_loader, read_image, split_items
from datamodules.base import FusionDataModule, sample_rng
from mfif.io import BenchmarkError
from mfif.scenes import Scene, check_scene, discover_scenes
from mfif.config import DataConfig
from mfif.registry import register_datamodule


@dataclass
class UFATrainsetConfig(DataConfig):
    image_size: int = 256  # official loader: bicubic resize to 256 x 256
    patch_size: int = 256  # crop after resizing (train: random, val/test: centre; = image_size: none)
    random_level: bool = True  # official loader: one blur level drawn per sample
    levels: Optional[List[str]] = None  # restrict to these level folders (None: all)
    hflip: bool = True  # official loader: random horizontal flip
    val_fraction: float = 0.1  # share of scenes for val/test (not given upstream)
    skip_invalid: bool = False  # log and count bad scenes instead of raising
    resample_each_epoch: bool = True  # new level/flip draws every epoch (the official loader is online)


class UFATrainsetDataset(Dataset):
    """Samples of (scene, level) with ground truth; see the module docstring."""

    def __init__(self, cfg, split: str, scenes: list[tuple[str, list[Scene]]]):
        if not scenes and split == "train":  # val/test may be empty (val_fraction=0)
            raise BenchmarkError(f"no UFA scenes for the '{split}' split under {cfg.root}")
        self.cfg, self.split, self.scenes = cfg, split, scenes
        self.items = [(i, None) for i in range(len(scenes))] if cfg.random_level else [
            (i, j) for i, (_, lv) in enumerate(scenes) for j in range(len(lv))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        cfg = self.cfg
        index, epoch = index % len(self), index // len(self)
        rng = sample_rng(cfg.seed, index, self.split, epoch)
        i, j = self.items[index]
        levels = self.scenes[i][1]
        sc = levels[int(rng.integers(len(levels))) if j is None else j]
        s = int(cfg.image_size)
        srcs = torch.stack([read_image(p, s, cfg.gray, Image.BICUBIC) for p in sc.sources])
        gt = read_image(sc.gt, s, cfg.gray, Image.BICUBIC)
        crop_origin(None, s, int(cfg.patch_size))  # checks patch_size <= image_size
        train = self.split == "train"  # val/test: centre crop, no flip
        geometry = crop_flip(int(cfg.patch_size), bool(cfg.hflip) and train, random_crop=train)
        out, _ = apply_aligned(geometry, rng, [*srcs, gt])
        return {"sources": torch.stack(out[:-1]), "gt": out[-1], "name": sc.name}


@register_datamodule("ufa_trainset", UFATrainsetConfig)
class UFATrainsetDataModule(FusionDataModule):
    """Pairs + ground truth in the UFA-Fusion release layout under ``data.root``."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._splits: Optional[dict] = None
        self.skipped: list = []

    def splits(self) -> dict:
        if self._splits is None:
            cfg = self.cfg
            if not cfg.root:
                raise ValueError("data.root must point to a folder in the UFA-Fusion release layout "
                                 "(<scene>/<level>/<scene>_1|_2|_ground.jpg)")
            found = discover_scenes(cfg.root, skip_invalid=bool(cfg.skip_invalid), skipped=self.skipped)
            by_scene: dict[str, list[Scene]] = defaultdict(list)
            for sc in found:
                scene, _, level = sc.name.rpartition("/") if "/" in sc.name else (sc.name, "", "")
                if cfg.levels is not None and level not in list(cfg.levels):
                    continue
                try:
                    if sc.gt is None:
                        raise BenchmarkError(f"{sc.sources[0]}: scene '{sc.name}' has no _ground image")
                    if len(sc.sources) != int(cfg.num_sources):
                        raise BenchmarkError(f"{sc.sources[0]}: scene '{sc.name}' has {len(sc.sources)} sources, "
                                             f"data.num_sources={cfg.num_sources}")
                    check_scene(sc, decode=bool(cfg.skip_invalid))
                except BenchmarkError as e:
                    if not cfg.skip_invalid:
                        raise
                    self.skipped.append((sc.name, str(e)))
                    continue
                by_scene[scene].append(sc)
            if not by_scene:
                raise BenchmarkError(f"{cfg.root}: no usable scenes (levels={cfg.levels})")
            self._splits = split_items(sorted(by_scene.items()), cfg.seed, cfg.val_fraction, None)
        return self._splits

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def build_dataset(self, split: str) -> Dataset:
        return UFATrainsetDataset(self.cfg, split, self.splits()[split])

    def train_dataloader(self) -> DataLoader:
        return epoch_train_loader(self)
