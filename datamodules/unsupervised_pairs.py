"""UDPNet training data (Sec. IV-A): 60 x 60 patch pairs cut from real source pairs, no GT.

Sec. IV-A: "Following [56], [60], the training set contains 66264 cropped image patch pairs of
size 60 x 60, and the test set contains 10 image pairs" of Lytro ([56] FusionDN, [60] U2Fusion,
both by H. Xu et al.); colour images are fused on the Y channel of YCbCr (Sec. IV).

``data.root`` is any benchmark folder :func:`mfif.scenes.discover_scenes` reads (e.g. Lytro,
``lytro-NN-A/B.jpg``). **Split** (``data.split``):

* ``fusiondn`` (default): the 10 test pairs :data:`FUSIONDN_TEST`, the other scenes train. No
  released list names UDPNet's 10 pairs; the choice and its evidence are at :data:`FUSIONDN_TEST`.
* ``last``: the last ``holdout_scenes`` scenes by name are held out (any other folder).

Val and test are the held-out scenes, whole (RGB or gray as stored; the module's colour policy
handles them). **Patches** (training, Y channel, BT.601, when ``y_channel``; C = 1):

* ``patch_stride`` set (default 10): a fixed set cut on a stride grid, offsets ``0, s, 2s, ...``
  up to ``H - p`` in each training scene, each taken as is and (``grid_flips``) flipped up-down
  and left-right. The set is put in a seeded order (``seed``) and its first ``num_patches`` kept;
  the loader reshuffles it every epoch. On Lytro (10 training pairs of 520 x 520, p = 60,
  s = 10): 47 x 47 offsets x 3 x 10 = 66,270 patches. This reproduces the paper's 66,264: the
  released patch writer of FusionDN/U2Fusion's author (hanna-xu/utils, ``create *.h5
  file/create_h5_file.m``: stride loop ``1:stride:(H-size_input+1)``, optional up-down and
  left-right flipped copies, random order, then written in chunks of ``chunksz = 12``) keeps
  floor(66,270 / 12) x 12 = 66,264, so ``num_patches: 66264`` drops the last 6 of the order, as
  it does. (Stride and flips are not in the paper: with p = 60, 10 or 20 pairs, flips or not,
  stride 10 with flips on 10 pairs is the only setting whose count rounds down to 66,264.)
* ``patch_stride: null``: ``num_patches`` patches at seeded random positions (patch ``i`` from
  ``sample_rng(seed, i)``: a scene weighted by its number of positions, a position, random
  ``hflip``/``vflip`` applied to both sources).

Scenes are decoded once at set-up and kept in memory (10 Lytro pairs, Y channel: 11 MB), so a
patch costs a slice, not a JPEG decode.
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
from datamodules.benchmark import BenchmarkDataset
from mfif.config import DataConfig
from mfif.io import BenchmarkError, load_image
from mfif.naming import _squash
from mfif.ops.colour import rgb_to_ycbcr
from mfif.registry import register_datamodule
from mfif.scenes import Scene, discover_scenes

log = logging.getLogger(__name__)

#: UDPNet Sec. IV-A: the 10 Lytro test pairs "following [56], [60]" (names as ``lytro-NN``; any
#: separator matches, e.g. the MFIF benchmark's ``lytro_NN``). Which 10 is not published: the
#: released test folder of FusionDN (hanna-xu/FusionDN ``test_imgs/far_near/{near,far}/1..20.jpg``)
#: holds all 20 Lytro pairs, byte-identical to ``lytro-NN-{A,B}.jpg``, renumbered in the order
#: 01, 02, 03, 09, 05, 06, 07, 12, 11, 10, 20, 19, 18, 04, 17, 16, 15, 08, 13, 14; U2Fusion
#: (hanna-xu/U2Fusion ``test_imgs/multi-focus/``) ships 3 of them (FusionDN's 1, 4, 3 =
#: lytro-01, -09, -03) and MFF-GAN of the same group, also tested on 10 Lytro pairs
#: (HaoZhang1018/MFF-GAN ``Test_near/``, ``Test_far/``), ships lytro-01, -05, -11 (FusionDN's 1,
#: 5, 9). Our fixed choice: FusionDN's first ten, which hold every pair those repositories show.
FUSIONDN_TEST = ("lytro-01", "lytro-02", "lytro-03", "lytro-05", "lytro-06",
                 "lytro-07", "lytro-09", "lytro-10", "lytro-11", "lytro-12")
SPLITS = ("fusiondn", "last")


@dataclass
class UnsupervisedPairsConfig(DataConfig):
    patch_size: int = 60  # Sec. IV-A: 60 x 60 patch pairs
    split: str = "fusiondn"  # Sec. IV-A "following [56], [60]": fusiondn (FUSIONDN_TEST) | last (holdout_scenes)
    holdout_scenes: int = 10  # split=last: the last N scenes by name (Sec. IV-A: 10 test pairs)
    patch_stride: Optional[int] = 10  # grid stride (the 66,264 of Sec. IV-A, module docstring); null: random positions
    grid_flips: bool = True  # grid: each patch also flipped up-down and left-right (x3)
    num_patches: Optional[int] = 66264  # Sec. IV-A: 66,264 training patch pairs (grid: first N of the order; null: all)
    y_channel: bool = True  # Sec. IV: colour fused on the Y channel of YCbCr
    hflip: bool = True  # random positions only: identical flips for both sources
    vflip: bool = True
    batch_size: int = 16  # Sec. IV: batch size 16
    skip_invalid: bool = False  # log and count bad scenes instead of raising


def grid_offsets(size: int, patch: int, stride: int) -> list[int]:
    """Patch origins ``0, stride, 2 stride, ...`` that fit in ``size`` (MATLAB ``1:stride:size-patch+1``)."""
    if stride < 1:
        raise ValueError(f"data.patch_stride must be >= 1, got {stride}")
    return list(range(0, size - patch + 1, stride))


def grid_patches(sizes: list[tuple[int, int]], patch: int, stride: int, flips: bool) -> np.ndarray:
    """Every grid patch of every scene as rows ``(scene, y, x, flip)``, flip 0 none, 1 up-down, 2 left-right.

    Row order: scene, then y, then x, then flip (the order the released writer visits them).
    """
    rows = [(k, y, x, f) for k, (h, w) in enumerate(sizes) for y in grid_offsets(h, patch, stride)
            for x in grid_offsets(w, patch, stride) for f in (range(3) if flips else range(1))]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


class PatchPairDataset(Dataset):
    """Aligned patch pairs from in-memory training scenes (grid or random); see the module docstring."""

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
        self.grid: Optional[np.ndarray] = None
        if cfg.patch_stride is not None:
            grid = grid_patches([tuple(t.shape[-2:]) for t in self.images], p, int(cfg.patch_stride), bool(cfg.grid_flips))
            n = len(grid) if cfg.num_patches is None else int(cfg.num_patches)
            if not 1 <= n <= len(grid):
                raise ValueError(f"data.num_patches={cfg.num_patches} must be in [1, {len(grid)}]: the stride-"
                                 f"{cfg.patch_stride} grid over {len(self.images)} training scenes of {cfg.root} has "
                                 f"{len(grid)} patches (set data.num_patches=null to use all)")
            order = np.random.default_rng([int(cfg.seed), 66264]).permutation(len(grid))  # the writer's random order
            self.grid = grid[order[:n]]
        elif cfg.num_patches is None:
            raise ValueError("data.num_patches must be set when data.patch_stride is null (random positions)")
        positions = np.array([(t.shape[-2] - p + 1) * (t.shape[-1] - p + 1) for t in self.images], dtype=np.float64)
        self.weights = positions / positions.sum()

    def __len__(self) -> int:
        return len(self.grid) if self.grid is not None else int(self.cfg.num_patches)

    def __getitem__(self, index: int) -> dict:
        if self.grid is not None:
            return self._grid_item(index)
        cfg, p = self.cfg, int(self.cfg.patch_size)
        rng = sample_rng(cfg.seed, index, "train")
        k = int(rng.choice(len(self.images), p=self.weights))
        img = self.images[k]
        y = int(rng.integers(0, img.shape[-2] - p + 1))
        x = int(rng.integers(0, img.shape[-1] - p + 1))
        geometry = crop_flip(p, bool(cfg.hflip), vflip=bool(cfg.vflip), at=(y, x))  # same crop/flips for both
        patch, _ = apply_aligned(geometry, rng, list(img))
        return {"sources": torch.stack(patch), "name": f"{self.names[k]}_y{y}_x{x}"}

    def _grid_item(self, index: int) -> dict:
        k, y, x, f = (int(v) for v in self.grid[index])
        p = int(self.cfg.patch_size)
        patch = self.images[k][..., y:y + p, x:x + p]
        if f:
            patch = patch.flip(-2 if f == 1 else -1)  # 1: up-down (flipud), 2: left-right (fliplr)
        return {"sources": patch.contiguous(), "name": f"{self.names[k]}_y{y}_x{x}" + ("", "_ud", "_lr")[f]}


def split_scenes(scenes: list[Scene], cfg) -> tuple[list[Scene], list[Scene]]:
    """``(train, held_out)`` scenes for ``data.split`` (errors name the key and the missing scenes)."""
    if cfg.split not in SPLITS:
        raise ValueError(f"data.split must be one of {SPLITS}, got '{cfg.split}'")
    if cfg.split == "last":
        k = int(cfg.holdout_scenes)
        if not 0 <= k < len(scenes):
            raise ValueError(f"data.holdout_scenes={k} must leave training scenes ({len(scenes)} "
                             f"{cfg.num_sources}-source scenes in {cfg.root})")
        return scenes[: len(scenes) - k], scenes[len(scenes) - k:]
    wanted = {_squash(n) for n in FUSIONDN_TEST}
    held = [s for s in scenes if _squash(s.name) in wanted]
    found = {_squash(s.name) for s in held}
    missing = [n for n in FUSIONDN_TEST if _squash(n) not in found]
    if missing:
        raise BenchmarkError(f"data.split=fusiondn needs the Lytro test pairs {', '.join(FUSIONDN_TEST)} in "
                             f"data.root={cfg.root}; missing: {', '.join(missing)} (other folders: data.split=last)")
    train = [s for s in scenes if _squash(s.name) not in wanted]
    if not train:
        raise BenchmarkError(f"data.root={cfg.root} has only the 10 test pairs of data.split=fusiondn: no training scenes")
    return train, held


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
            train, held = split_scenes(scenes, cfg)
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
