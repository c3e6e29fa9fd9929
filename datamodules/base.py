"""Base DataModule: splits, seeded loaders and the real-benchmark test/predict set, written once.

Subclasses implement :meth:`FusionDataModule.build_dataset` for ``train``/``val``/``test``.
When ``data.benchmark`` is set, ``test`` and ``predict`` read that folder of real aligned
source sets (:mod:`datamodules.benchmark`) instead of the generated test split, in the colours
the files have (``data.gray`` only shapes the generated training data).

Determinism: datasets derive every random draw from ``(seed, index)`` (see
:func:`sample_rng`), so batches are byte-identical across runs and across ``num_workers``.
"""
from __future__ import annotations

from typing import Optional

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

SPLIT_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_029}


def sample_rng(seed: int, index: int, split: str = "train", epoch: int = 0) -> np.random.Generator:
    """A numpy Generator that depends only on (seed, split, index, epoch)."""
    return np.random.default_rng([int(seed), SPLIT_OFFSET.get(split, 7), int(index), int(epoch)])


class EpochShuffleSampler(Sampler[int]):
    """Random order that depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` at every epoch start, so a run resumed from a checkpoint
    at an epoch boundary sees exactly the batches an uninterrupted run would.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def collate(samples: list[dict]) -> dict:
    """Stack tensors, keep strings as lists; every sample must have the same keys."""
    keys = samples[0].keys()
    out = {}
    for k in keys:
        vals = [s[k] for s in samples]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


class FusionDataModule(L.LightningDataModule):
    """Shared loader logic; ``cfg`` is the ``data`` sub-config (a ``DataConfig`` subclass)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.datasets: dict[str, Dataset] = {}

    def build_dataset(self, split: str) -> Dataset:
        """Return the dataset of ``split`` in {"train", "val", "test"}."""
        raise NotImplementedError

    def benchmark_dataset(self) -> Optional[Dataset]:
        if not self.cfg.benchmark:
            return None
        from mfif.scenes import discover_scenes
        from datamodules.benchmark import BenchmarkDataset

        skip = bool(getattr(self.cfg, "skip_invalid", False))  # data.skip_invalid: log and drop bad scenes
        scenes = discover_scenes(self.cfg.benchmark, gt_dir=self.cfg.gt_dir, skip_invalid=skip)
        # Read as stored: ``data.gray`` describes the training data only. The module's colour
        # policy decides what its network sees (a gray decision map applied to every RGB
        # channel, the Y channel, RGB), so a colour benchmark gives colour results in test and
        # predict alike, as the released GACN and SESF-Fuse code fuse colour pairs (issue 15).
        return BenchmarkDataset(scenes, gray=False, skip_invalid=skip)

    def setup(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit", "validate"):
            self.datasets.setdefault("train", self.build_dataset("train"))
            self.datasets.setdefault("val", self.build_dataset("val"))
        if stage in (None, "test", "predict"):
            bench = self.benchmark_dataset()
            self.datasets["test"] = bench if bench is not None else self.build_dataset("test")

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        ds = self.datasets[split]
        return DataLoader(
            ds,
            batch_size=batch_size,
            sampler=EpochShuffleSampler(len(ds), self.cfg.seed) if shuffle else None,
            num_workers=int(self.cfg.num_workers),
            collate_fn=collate,
            persistent_workers=int(self.cfg.num_workers) > 0,
            drop_last=shuffle and len(self.datasets[split]) > batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, int(self.cfg.batch_size))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, int(self.cfg.val_batch_size))

    def test_dataloader(self) -> DataLoader:
        # real benchmark images differ in size: one scene per batch
        return self._loader("test", False, 1 if self.cfg.benchmark else int(self.cfg.val_batch_size))

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
