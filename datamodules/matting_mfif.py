"""VAEEDOF's MattingMFIF scenes (Sec. 3, Algorithm 1) as written by ``blender/`` (issue 9).

Layout read (one folder per scene)::

    ROOT/scene_000000/focus_0.png .. focus_5.png   renders focused on plane 0..5
                      gt.png                       all-in-focus render (DOF disabled)
                      mask_0.png .. mask_5.png     uint8 0/255, plane i visible
                      depth.npy, scene.json        (not used here)

Training samples are random aligned ``patch_size`` crops (Sec. 3: 512 x 512 patches) of every
focus render, the ground truth and ``mask_0``. The fusion module takes seven inputs (Sec. 3):
"In cases where fewer than seven images are available, existing images can be duplicated".
Padding order (``pad_mode``): ``cycle`` repeats the renders in order, ``0, 1, .., n-1, 0, 1, ..``
(every render appears once before any appears twice); ``repeat_last`` appends copies of the last
one. With ``shuffle_sources`` the renders are permuted (seeded) before padding, and the mask is
the one of the render that ends up first. Val uses the centre crop.

Test protocol (VAEEDOF Table 1, Sec. 4): the paper scores *full-resolution* renders of held-out
subjects (AM-2k / LIU4K test images, 4096 x 4096) with the tiled inference of Sec. 3 / Fig. 3.
``test_full_size`` (default true) reads the test scenes whole (one scene per batch), so the
module's tiling (``model.tile_size``/``tile_overlap``) runs on them; ``test_root`` points at a
separately rendered test set (``blender/render_mattingmfif.py --subjects <test subjects> --out
<test_root>``); without it the test split is the held-out ``val_fraction`` of ``root``.

4K PNG decoding dominates the cost (PNG has no partial decode): use several loader workers.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.base import FusionDataModule, sample_rng
from mfif.io import BenchmarkError, _open, image_size
from datamodules._synth import epoch_train_loader, split_items
from mfif.config import DataConfig
from mfif.ops.colour import rgb_to_gray
from mfif.registry import register_datamodule

log = logging.getLogger(__name__)
_FOCUS = re.compile(r"^focus_(\d+)\.png$")


@dataclass
class MattingMFIFConfig(DataConfig):
    patch_size: int = 512  # Sec. 3: trained on 512 x 512 patches
    num_sources: int = 7  # Sec. 3: up to seven inputs; fewer are padded by duplication
    pad_mode: str = "cycle"  # cycle | repeat_last (see module docstring)
    shuffle_sources: bool = False  # permute renders per sample (not in the paper)
    with_mask: bool = True  # also return mask_<k> of the first source (needs the mask files)
    scene_glob: str = "scene_*"
    val_fraction: float = 0.05
    batch_size: int = 8  # Sec. 3: global batch 32 over 4 GPUs
    skip_invalid: bool = False  # log and count bad scenes instead of raising
    resample_each_epoch: bool = True  # new random crops every epoch
    test_root: Optional[str] = None  # Table 1: separately rendered full-size test scenes (None: held-out split of root)
    test_full_size: bool = True  # Table 1 scores full-resolution renders (tiled inference); false: centre crops


@dataclass
class MattingScene:
    name: str
    focus: list[Path]
    gt: Path
    masks: list[Optional[Path]]


def pad_order(n: int, target: int, mode: str = "cycle") -> list[int]:
    """Indices of the ``n`` available sources filling ``target`` slots (Sec. 3 duplication)."""
    if n < 1 or n > target:
        raise ValueError(f"need 1 <= available sources ({n}) <= num_sources ({target})")
    if mode == "cycle":
        return [i % n for i in range(target)]
    if mode == "repeat_last":
        return list(range(n)) + [n - 1] * (target - n)
    raise ValueError(f"data.pad_mode must be 'cycle' or 'repeat_last', got '{mode}'")


def read_scene(folder: Path, num_sources: int, with_mask: bool) -> MattingScene:
    """List and check one scene folder; errors name the file."""
    focus = sorted(((int(m.group(1)), p) for p in folder.iterdir() if (m := _FOCUS.match(p.name))))
    if len(focus) < 2:
        raise BenchmarkError(f"{folder}: scene has {len(focus)} focus_<i>.png render(s); need >= 2")
    if len(focus) > num_sources:
        raise BenchmarkError(f"{folder}: {len(focus)} focus renders exceed data.num_sources={num_sources}")
    gt = folder / "gt.png"
    masks = [folder / f"mask_{i}.png" for i, _ in focus] if with_mask else [None] * len(focus)
    files = [p for _, p in focus] + [gt] + [m for m in masks if m is not None]
    size0 = None
    for f in files:
        if not f.is_file():
            raise BenchmarkError(f"{f}: missing ({'mask' if 'mask_' in f.name else 'ground truth'} of scene {folder.name})")
        size = image_size(f)
        if size0 is not None and size != size0:
            raise BenchmarkError(f"{f}: size {size} differs from {files[0].name} {size0} in scene {folder.name}")
        size0 = size
    return MattingScene(folder.name, [p for _, p in focus], gt, masks)


def _crop(path: Path, box: tuple[int, int, int, int], mode: str) -> Tensor:
    with _open(path) as im:
        try:
            a = np.array(im.convert(mode).crop(box))
        except (OSError, SyntaxError, ValueError) as e:
            raise BenchmarkError(f"cannot decode image {path} (truncated or corrupt): {e}") from e
    t = torch.from_numpy(a).float().div_(255.0)
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1)


class MattingMFIFDataset(Dataset):
    """Aligned crops of MattingMFIF scenes padded to ``num_sources``; see the module docstring."""

    def __init__(self, cfg, split: str, scenes: list[MattingScene]):
        if not scenes and split == "train":  # val/test may be empty (val_fraction=0)
            raise BenchmarkError(f"no MattingMFIF scenes for the '{split}' split under {cfg.root}")
        self.cfg, self.split, self.scenes = cfg, split, scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict:
        index, epoch = index % len(self), index // len(self)
        cfg, sc = self.cfg, self.scenes[index]
        rng = sample_rng(cfg.seed, index, self.split, epoch)
        w, h = image_size(sc.gt)
        p = int(cfg.patch_size)
        if self.split == "test" and cfg.test_full_size:
            box = (0, 0, w, h)  # Table 1: whole render, tiled by the module
        elif p > min(w, h):
            raise BenchmarkError(f"{sc.gt}: scene {sc.name} ({w}x{h}) is smaller than data.patch_size={p}")
        elif self.split == "train":
            y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
            box = (x, y, x + p, y + p)
        else:
            y, x = (h - p) // 2, (w - p) // 2
            box = (x, y, x + p, y + p)
        order = list(range(len(sc.focus)))
        if cfg.shuffle_sources:
            order = rng.permutation(len(sc.focus)).tolist()
        order = [order[i] for i in pad_order(len(order), int(cfg.num_sources), cfg.pad_mode)]
        renders = {i: _crop(sc.focus[i], box, "RGB") for i in set(order)}
        sources = torch.stack([renders[i] for i in order])
        gt = _crop(sc.gt, box, "RGB")
        if cfg.gray:
            sources, gt = rgb_to_gray(sources), rgb_to_gray(gt)
        item = {"sources": sources, "gt": gt, "name": sc.name}
        if cfg.with_mask:
            item["mask"] = (_crop(sc.masks[order[0]], box, "L") >= 0.5).float()
        return item


@register_datamodule("matting_mfif", MattingMFIFConfig)
class MattingMFIFDataModule(FusionDataModule):
    """Reader of the Blender MattingMFIF renders under ``data.root``."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._splits: Optional[dict] = None
        self.skipped: list[tuple[str, str]] = []

    def _scenes(self, folder: Optional[str], key: str) -> list[MattingScene]:
        """Every valid scene folder under ``folder`` (the config key ``key`` names it in errors)."""
        cfg = self.cfg
        root = Path(folder) if folder else None
        if root is None or not root.is_dir():
            raise FileNotFoundError(f"data.{key}={folder} is not a folder of MattingMFIF scenes")
        folders = sorted(p for p in root.glob(cfg.scene_glob) if p.is_dir())
        if not folders:
            raise BenchmarkError(f"{root}: no scene folders matching '{cfg.scene_glob}' (data.{key})")
        scenes = []
        for f in folders:
            try:
                scenes.append(read_scene(f, int(cfg.num_sources), bool(cfg.with_mask)))
            except BenchmarkError as e:
                if not cfg.skip_invalid:
                    raise
                log.warning("skipping scene %s: %s", f, e)
                self.skipped.append((f.name, str(e)))
        if not scenes:
            raise BenchmarkError(f"{root}: no valid scene ({len(self.skipped)} skipped)")
        return scenes

    def splits(self) -> dict:
        if self._splits is None:
            cfg = self.cfg
            self._splits = split_items(self._scenes(cfg.root, "root"), cfg.seed, cfg.val_fraction, None)
            if cfg.test_root:  # Table 1: a separately rendered test set
                self._splits["test"] = self._scenes(cfg.test_root, "test_root")
        return self._splits

    def test_dataloader(self) -> DataLoader:
        """Full-size test scenes (``test_full_size``) may differ in size: one scene per batch."""
        if self.cfg.test_full_size and not self.cfg.benchmark:
            return self._loader("test", False, 1)
        return super().test_dataloader()

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def build_dataset(self, split: str) -> Dataset:
        return MattingMFIFDataset(self.cfg, split, self.splits()[split])

    def train_dataloader(self) -> DataLoader:
        return epoch_train_loader(self)
