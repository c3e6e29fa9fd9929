"""Base DataModule: splits, seeded loaders and the real-benchmark test/predict set, written once.

Subclasses implement :meth:`FusionDataModule.build_dataset` for ``train``/``val``/``test``.
When ``data.benchmark`` is set, ``test`` and ``predict`` read that folder of real aligned
source sets (:mod:`datamodules.benchmark`) instead of the generated test split, in the colours
the files have (``data.gray`` only shapes the generated training data).

Determinism: datasets derive every random draw from ``(seed, index)`` (see
:func:`sample_rng`), so batches are byte-identical across runs and across ``num_workers``, and a
DataLoader worker's own random generators hold nothing a resumed run needs. The train loader is a
:class:`ResumableLoader`: Lightning (2.2+) stores its position within the epoch in every checkpoint
and restores it, so a run resumed from a mid-epoch checkpoint sees exactly the batches an
uninterrupted run would (the RNG streams of the training steps are restored by
:class:`mfif.trainer.ExactResume`).
"""
from __future__ import annotations

from typing import Iterator, Optional

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

    Lightning calls :meth:`set_epoch` at every epoch start (also through its distributed
    wrapper, and before a resumed run's first batch), so the order of any epoch is known without
    replaying the ones before it. The position within the epoch is the loader's
    (:class:`ResumableLoader`): under DDP Lightning wraps this sampler and shards its order, so
    only whole batches of a rank can be skipped consistently.
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


class _SkipFirst:
    """The batches of ``index_sampler`` without the first ``loader._skip`` ones.

    The count is read at each pass: torch iterates this object twice while it builds a worker
    iterator, and persistent workers iterate it again in later epochs (when the count is 0).
    """

    def __init__(self, loader: "ResumableLoader", index_sampler):
        self.loader, self.index_sampler = loader, index_sampler

    def __iter__(self):
        it = iter(self.index_sampler)
        for _ in range(self.loader._skip):
            if next(it, None) is None:
                break
        return it

    def __len__(self) -> int:
        return len(self.index_sampler)


class ResumableLoader(DataLoader):
    """A ``DataLoader`` whose position within the epoch goes into Lightning checkpoints.

    Lightning 2.2+ saves ``state_dict()`` of every train loader that has one (``loops.fit_loop.
    combined_loader`` in the checkpoint) and calls ``load_state_dict()`` before a resumed run's
    first batch. The state is the sampler's epoch and the number of batches this loader has
    handed out in it (Lightning fetches no batch ahead of a loader with a length, so that is
    the number of batches trained on when a checkpoint is written between steps). The next pass
    over the same epoch then skips those batches by their *indices*: no skipped sample is read,
    and under DDP (Lightning's ``DistributedSamplerWrapper``) each rank skips its own share.
    A checkpoint of another epoch (written at its end) skips nothing.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._served = 0
        self._epoch: Optional[int] = None
        self._resume: Optional[dict] = None
        self._skip = 0

    def _sampler_epoch(self) -> Optional[int]:
        epoch = getattr(self.sampler, "epoch", None)  # ours, or Lightning's distributed wrapper
        return int(epoch) if epoch is not None else None

    def state_dict(self) -> dict:
        n = len(self)
        served = self._served if self._served < n else 0  # a finished epoch resumes at the next one
        return {"epoch": self._epoch if served else None, "batches": served}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or "batches" not in state:
            raise ValueError(f"ResumableLoader state: expected a dict with 'batches', got {state!r}")
        self._resume = dict(state)

    @property
    def _index_sampler(self):  # torch's DataLoader iterators draw their batches of indices here
        base = super()._index_sampler
        return _SkipFirst(self, base) if self._skip else base

    def __iter__(self) -> Iterator:
        # a generator: runs at the first next(), after Lightning's set_epoch for this epoch
        epoch, resume, self._resume = self._sampler_epoch(), self._resume, None
        skip = 0
        if resume and resume["batches"] and (resume.get("epoch") is None or resume["epoch"] == epoch):
            skip = min(int(resume["batches"]), len(self))
        self._skip, self._epoch, self._served = skip, epoch, skip
        try:
            it = super().__iter__()
        finally:
            self._skip = 0
        for batch in it:
            self._served += 1
            yield batch


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
        return (ResumableLoader if shuffle else DataLoader)(  # the train loader resumes mid-epoch
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
