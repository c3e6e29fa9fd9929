"""UDPNet training data (Sec. IV): random 60 x 60 patch pairs cut from real source pairs, no GT.

Sec. IV-A: "Following [56], [60], the training set contains 66264 cropped image patch pairs of
size 60 x 60, and the test set contains 10 image pairs" of Lytro; colour images are fused on the
Y channel of YCbCr (Sec. IV, implementation details).

``data.root`` is any benchmark folder :func:`mfif.scenes.discover_scenes` reads (e.g.
``data/lytro``). The last ``holdout_scenes`` scenes (sorted by name) are the val/test
scenes, returned whole (RGB or gray as stored: the module's colour policy handles them); the
others give the training patches. Patch ``i`` is drawn from ``sample_rng(seed, i)``: a scene
(weighted by its number of patch positions, i.e. uniform over all patch positions), a position,
and horizontal/vertical flips applied identically to both sources. Training patches are the
Y channel (BT.601, :func:`mfif.ops.colour.rgb_to_ycbcr`) when ``y_channel`` (C = 1).

The paper's split of Lytro is not given ("following [56], [60]"): which 10 pairs are held out is
our choice (the last 10 by name). Scenes are decoded once at set-up and kept in memory
(Lytro: 10 pairs of 520 x 520 -> 22 MB), so a patch costs a slice, not a JPEG decode.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules._augment import apply_aligned, crop_flip
from datamodules.base import FusionDataModule, sample_rng
from mfif.io import BenchmarkError, load_image
from mfif.scenes import Scene, discover_scenes
from datamodules.benchmark import BenchmarkDataset
from mfif.config import DataConfig
from mfif.ops.colour import rgb_to_ycbcr
from mfif.registry import register_datamodule

log = logging.getLogger(__name__)


@dataclass
class UnsupervisedPairsConfig(DataConfig):
    patch_size: int = 60  # Sec. IV-A: 60 x 60 patch pairs
    num_patches: int = 66264  # Sec. IV-A: 66,264 training patch pairs
    holdout_scenes: int = 10  # Sec. IV-A: 10 Lytro pairs for test (which ones: ours, the last by name)
    y_channel: bool = True  # Sec. IV: colour fused on the Y channel of YCbCr
    hflip: bool = True  # identical flips for both sources
    vflip: bool = True
    batch_size: int = 16  # Sec. IV: batch size 16
    skip_invalid: bool = False  # log and count bad scenes instead of raising


class PatchPairDataset(Dataset):
    """Random aligned patch pairs from in-memory training scenes; see the module docstring."""

    def __init__(self, cfg, scenes: list[Scene]):
        self.cfg = cfg
        p = int(cfg.patch_size)
        self.images, self.names = [], []
        for s in scenes:
            srcs = torch.stack([load_image(f, gray=bool(cfg.gray)) for f in s.sources])
            if srcs.shape[1] == 3 and cfg.y_channel and not cfg.gray:
                srcs = rgb_to_ycbcr(srcs)[:, :1].contiguous()
            h, w = srcs.shape[-2:]
            if h < p or w < p:
                raise BenchmarkError(f"{s.sources[0]}: scene '{s.name}' ({w}x{h}) is smaller than the {p}px patch")
            self.images.append(srcs)
            self.names.append(s.name)
        chans = {t.shape[1] for t in self.images}
        if len(chans) > 1:  # mixed gray/colour sets: replicate gray to RGB
            self.images = [t.expand(-1, 3, -1, -1).contiguous() if t.shape[1] == 1 else t for t in self.images]
        positions = np.array([(t.shape[-2] - p + 1) * (t.shape[-1] - p + 1) for t in self.images], dtype=np.float64)
        self.weights = positions / positions.sum()

    def __len__(self) -> int:
        return int(self.cfg.num_patches)

    def __getitem__(self, index: int) -> dict:
        cfg, p = self.cfg, int(self.cfg.patch_size)
        rng = sample_rng(cfg.seed, index, "train")
        k = int(rng.choice(len(self.images), p=self.weights))
        img = self.images[k]
        y = int(rng.integers(0, img.shape[-2] - p + 1))
        x = int(rng.integers(0, img.shape[-1] - p + 1))
        geometry = crop_flip(p, bool(cfg.hflip), vflip=bool(cfg.vflip), at=(y, x))  # same crop/flips for both
        patch, _ = apply_aligned(geometry, rng, list(img))
        return {"sources": torch.stack(patch), "name": f"{self.names[k]}_y{y}_x{x}"}


@register_datamodule("unsupervised_pairs", UnsupervisedPairsConfig)
class UnsupervisedPairsDataModule(FusionDataModule):
    """UDPNet's unsupervised patch pairs from a real benchmark folder (``data.root``)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._scenes: Optional[dict[str, list[Scene]]] = None
        self.skipped: list = []

    def scene_split(self) -> dict[str, list[Scene]]:
        if self._scenes is None:
            cfg = self.cfg
            if not cfg.root:
                raise ValueError("data.root must point to a folder of real source pairs (e.g. a Lytro copy)")
            scenes = discover_scenes(cfg.root, skip_invalid=bool(cfg.skip_invalid), skipped=self.skipped)
            n = int(cfg.num_sources)
            if any(len(s.sources) != n for s in scenes):
                log.info("unsupervised_pairs: using the %d-source scenes only (data.num_sources)", n)
                scenes = [s for s in scenes if len(s.sources) == n]
            k = int(cfg.holdout_scenes)
            if not 0 <= k < len(scenes):
                raise ValueError(f"data.holdout_scenes={k} must leave training scenes ({len(scenes)} {n}-source scenes in {cfg.root})")
            train, held = scenes[: len(scenes) - k], scenes[len(scenes) - k :]
            self._scenes = {"train": train, "val": held or train, "test": held or train}
        return self._scenes

    def build_dataset(self, split: str) -> Dataset:
        scenes = self.scene_split()[split]
        if split == "train":
            return PatchPairDataset(self.cfg, scenes)
        ds = BenchmarkDataset(scenes, gray=bool(self.cfg.gray), skip_invalid=bool(self.cfg.skip_invalid))
        self.skipped.extend(ds.skipped)
        return ds

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def val_dataloader(self):
        return self._loader("val", False, 1)  # full scenes differ in size

    def test_dataloader(self):
        return self._loader("test", False, 1)
