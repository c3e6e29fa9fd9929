"""Throughput mode for fusing whole benchmarks: equal-size scenes batched, decoding in DataLoader
workers and encoding in writer threads, both overlapping the network.

Real benchmarks mix sizes (Lytro is all 520 x 520, MFFW and MFI-WHU are not), so a batch holds
scenes of one shape only: :class:`SameShapeBatchSampler` groups them from the file headers
(no decoding) and keeps the folder order inside each group. Used by ``run.py mode=predict``
(through :func:`scene_loader`, batch ``data.val_batch_size``, workers ``data.num_workers``);
:func:`fuse_scenes` is the same loop without Lightning, writing as it goes, for tools that fuse
folders of scenes with released weights (the parity tool, ``bench_throughput.py``). A batch gives the same images as one scene at a time:
every method fuses each item of a batch independently (eval-mode BatchNorm, per-item maps).
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Sampler

from mfif.io import image_channels, image_size, save_image
from mfif.scenes import Scene


def scene_shape(scene: Scene) -> tuple:
    """``(N, C, H, W, has_gt)`` of a scene from the file headers: scenes with equal keys stack."""
    files = list(scene.sources) + ([scene.gt] if scene.gt else [])
    w, h = image_size(scene.sources[0])
    return len(scene.sources), max(image_channels(p) for p in files), h, w, scene.gt is not None


def same_shape_batches(keys: Sequence, batch: int) -> list[list[int]]:
    """Indices grouped by equal key, in order of first appearance, in chunks of at most ``batch``.

    Example:
        >>> same_shape_batches(["a", "b", "a", "a", "b"], 2)
        [[0, 2], [3], [1, 4]]
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    groups: dict = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return [idx[s : s + batch] for idx in groups.values() for s in range(0, len(idx), batch)]


class SameShapeBatchSampler(Sampler[list[int]]):
    """Batches of at most ``batch`` scenes that share :func:`scene_shape` (a fixed order)."""

    def __init__(self, scenes: Sequence[Scene], batch: int):
        self.batches = same_shape_batches([scene_shape(s) for s in scenes], batch)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def scene_loader(dataset, batch: int = 1, workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over a :class:`~datamodules.benchmark.BenchmarkDataset` with equal-shape batches.

    Items are stacked by the default collate: ``sources`` ``[B, N, C, H, W]``, ``name`` a list,
    ``gt`` ``[B, C, H, W]`` where the scenes have one.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    return DataLoader(dataset, batch_sampler=SameShapeBatchSampler(dataset.scenes, batch), num_workers=workers,
                      pin_memory=pin_memory, prefetch_factor=2 if workers else None)


@dataclass
class FuseStats:
    """What :func:`fuse_scenes` did: scenes fused, batches run and the wall time of the loop."""

    scenes: int
    batches: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.scenes / self.seconds if self.seconds > 0 else float("inf")


def fuse_scenes(module, scenes: Sequence[Scene], out_dir: Path, batch: int = 1, workers: int = 0,
                overwrite: bool = False, on_scene: Optional[Callable[[str], None]] = None) -> FuseStats:
    """Fuse every scene with ``module`` into ``out_dir/<scene>.png``, batched and overlapped.

    Args:
        module: a FusionModule in eval mode, on the device it should run on.
        scenes: the scenes (:func:`mfif.scenes.discover_scenes`); ground truth is not read.
        out_dir: output folder (created); one PNG per scene, written atomically.
        batch: scenes per network call (equal shapes only, :class:`SameShapeBatchSampler`).
        workers: DataLoader processes decoding the next batches, and threads encoding the
            previous ones, while the network runs (0: everything in this thread, in turn).
        overwrite: replace existing outputs; otherwise any existing one is a FileExistsError
            raised before the first scene is read.
        on_scene: called with each scene name once its image is written.

    Returns:
        :class:`FuseStats` (``images_per_second`` over the whole loop, reading to last write).
    """
    from mfif.scenes import BenchmarkDataset

    out_dir = Path(out_dir)
    targets = {s.name: out_dir / f"{s.name}.png" for s in scenes}
    clash = [p for p in targets.values() if p.exists()] if not overwrite else []
    if clash:
        raise FileExistsError(f"{clash[0]} exists ({len(clash)} of the outputs do); pass overwrite to replace")
    dataset = BenchmarkDataset([Scene(s.name, list(s.sources)) for s in scenes])
    device = next(iter(module.parameters()), torch.empty(0)).device
    loader = scene_loader(dataset, batch, workers, pin_memory=device.type == "cuda")
    pending: list[Future] = []
    start, batches = time.perf_counter(), 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as writer, torch.inference_mode():
        for item in loader:
            fused = module.fuse(item["sources"].to(device, non_blocking=True)).fused.cpu()
            batches += 1
            for name, img in zip(item["name"], fused):
                if workers:
                    pending.append(writer.submit(_write, img, targets[name], name, on_scene))
                else:
                    _write(img, targets[name], name, on_scene)
            while len(pending) > 2 * max(1, workers) * batch:  # bound the images held in memory
                pending.pop(0).result()
        for f in pending:
            f.result()
    return FuseStats(len(scenes), batches, time.perf_counter() - start)


def _write(img: torch.Tensor, path: Path, name: str, on_scene: Optional[Callable[[str], None]]) -> None:
    save_image(img, path)
    if on_scene is not None:
        on_scene(name)
