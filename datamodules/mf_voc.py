"""MF-VOC: ready-made multi-focus training triplets with ground truth, and their focus masks.

MF-VOC (CAOTING1022/MF-VOC; made from PASCAL VOC2012 segmentation images with the method of
Guo et al., Neural Computation 30(7), 2018, plus random crop/rotation) stores pixel-aligned
224 x 224 JPEG triplets::

    ROOT/sourceA/<voc_id>_<k>.jpg       near focus (the VOC object sharp, the rest defocused)
    ROOT/sourceB/<voc_id>_<k>.jpg       far focus (the complement)
    ROOT/groundtruth/<voc_id>_<k>.jpg   all in focus

``k`` numbers the crops of one VOC image (the full set has k = 1..5; the copy in the project's
test data has crop 1 of every second image id, 1,457 triplets). No masks are stored:
:func:`focus_mask` recovers one per pixel.

**Splits** (fixed, by VOC image id, so no crop of a test image is ever trained on):

* ``test``: the ids in :data:`HELDOUT_IDS`, every crop of them. This is the full-reference test
  set wherever a paper's table used ground truth that is not available here (Real-MFF, MFI-WHU
  with GT, MattingMFIF renders): say so beside such numbers.
* ``val``: ``num_val`` of the other triplets, evenly spaced in sorted order (not trained on).
* ``train``: the rest; random ``patch_size`` crop and horizontal flip (``hflip``), drawn from
  ``sample_rng(seed, index, "train", epoch)`` (new draws each epoch with ``resample_each_epoch``).

Val and test samples are whole triplets (the full-reference metrics need no crop; MS-SSIM needs
more than 160 px). Every sample has ``sources`` (``[N, C, H, W]``: A, B, padded to
``num_sources`` by cyclic duplication as VAEEDOF Sec. 3 does,
:func:`datamodules.matting_mfif.pad_order`), ``gt``, ``mask`` (1 where source A is in focus) and
``name``; ``gray`` converts sources and gt after the mask is recovered in RGB.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules._augment import apply_aligned, crop_flip
from datamodules._synth import epoch_train_loader
from datamodules.base import FusionDataModule, sample_rng
from datamodules.matting_mfif import pad_order
from mfif.config import DataConfig
from mfif.io import BenchmarkError, load_image
from mfif.naming import is_image
from mfif.ops.colour import rgb_to_gray
from mfif.registry import register_datamodule
from mfif.scenes import Scene, check_scene, keep_valid

log = logging.getLogger(__name__)

#: MF-VOC's three folders, in the order (source A, source B, ground truth).
FOLDERS = ("sourceA", "sourceB", "groundtruth")

# Every 10th VOC id (indices 0, 10, 20, ...) of the 1,457 ids of the project's MF-VOC copy in
# sorted order (ravikumarmn/MFIF @ 2b65497 ``dataset/``: crop 1 of every second VOC2012
# segmentation id). Written out, not computed, so the list stays the same in any copy of MF-VOC.
_HELDOUT = {
    "2007": "000032 000346 000661 000876 001397 001677 001960 002268 002539 002852 003137 003431 003714 004052 "
            "004459 004810 005144 005368 005813 006086 006444 006680 007048 007415 007688 007947 008339 008778 "
            "009084 009413 009618 009817",
    "2008": "000075 000223 000348 000515 000676 000853 001112 001283 001510 001716 002064 002240 002492 002778 "
            "003034 003210 003500 003782 004069 004416 004687 005006 005338 005668 005904 006215 006482 006877 "
            "007242 007581 008193 008521",
    "2009": "000039 000250 000440 000626 000732 000935 001108 001270 001433 001664 001818 002019 002204 002362 "
            "002527 002626 002844 002988 003087 003304 003494 003636 003804 003971 004191 004336 004561 004738 "
            "004939 005089 005231",
    "2010": "000110 000285 000503 000724 000918 001120 001273 001451 001656 001852 002039 002228 002418 002625 "
            "002870 003093 003252 003453 003696 003899 004071 004283 004472 004625 004808 005016 005187 005428 "
            "005575 005723 005860 006034",
    "2011": "000149 000258 000436 000550 000661 000888 001047 001263 001447 001619 001748 001902 002098 002246 "
            "002385 002559 002730 002956 003146",
}
#: The 146 held-out VOC image ids (``YYYY_NNNNNN``): the MF-VOC full-reference test set.
HELDOUT_IDS = tuple(f"{year}_{n}" for year, ids in _HELDOUT.items() for n in ids.split())


@dataclass
class MFVOCConfig(DataConfig):
    patch_size: int = 224  # train: random crop (MF-VOC triplets are 224 x 224); val/test: whole triplets
    hflip: bool = True  # train: random horizontal flip of the whole triplet (ours)
    num_val: int = 32  # training triplets set aside for validation, evenly spaced in sorted order (ours)
    num_test: Optional[int] = None  # cap on the held-out test triplets (None: all 146 here)
    mask_box: int = 5  # box filter (px) on |S - GT| before comparing, against JPEG noise (focus_mask)
    mask_tol: float = 1.0  # 8-bit levels: |d_A - d_B| <= tol is undecided (flat areas), see focus_mask
    resample_each_epoch: bool = True  # new crops/flips every epoch
    skip_invalid: bool = False  # log and drop triplets with a missing or mismatched file instead of raising


def focus_mask(sources: Tensor, gt: Tensor, box: int = 5, tol: float = 1.0 / 255) -> Tensor:
    """Which of two aligned sources is in focus at each pixel, recovered from the ground truth.

    ``d_k = box(mean_c |S_k - GT|)`` (a ``box`` x ``box`` mean, reflected borders, against JPEG
    noise); the mask is 1 where ``d_A < d_B``. Pixels with ``|d_A - d_B| <= tol`` are undecided:
    flat areas, where both sources equal the ground truth up to noise, so either choice is right.
    They take the label of the nearest decided pixel (Euclidean distance; ties as
    ``scipy.ndimage.distance_transform_edt`` breaks them), so a flat area inside an object joins
    the object. With no decided pixel at all, the mask is all ones (source A).

    Args:
        sources: the two sources, A then B, in [0, 1] (CPU tensors: the fill runs in SciPy).
        gt: the all-in-focus image.
        box: odd box size (1: no filter).
        tol: undecided band, in the images' units (1/255 = one 8-bit level).

    Returns:
        Float mask in {0, 1}, 1 where source A is in focus.

    Shape:
        - sources: :math:`(2, C, H, W)`; gt: :math:`(C, H, W)`
        - output: :math:`(1, H, W)`
    """
    if sources.dim() != 4 or sources.shape[0] != 2 or gt.shape != sources.shape[1:]:
        raise ValueError(f"focus_mask needs sources (2, C, H, W) and gt (C, H, W) of the same size, got "
                         f"{tuple(sources.shape)} and {tuple(gt.shape)}")
    if box < 1 or box % 2 == 0 or tol < 0:
        raise ValueError(f"focus_mask needs an odd box >= 1 and tol >= 0, got box={box}, tol={tol}")
    import kornia.filters as KF  # imported on use: listing a dataset needs no kornia

    diff = (sources - gt).abs().mean(1, keepdim=True)  # (2, 1, H, W)
    if box > 1:
        diff = KF.box_blur(diff, (box, box), border_type="reflect")
    d = (diff[0, 0] - diff[1, 0]).numpy()
    decided = np.abs(d) > tol
    if not decided.any():
        return torch.ones(1, *gt.shape[-2:])
    label = d < 0
    if not decided.all():  # nearest decided pixel: the distance transform of the undecided set
        iy, ix = distance_transform_edt(~decided, return_distances=False, return_indices=True)
        label = label[iy, ix]
    return torch.from_numpy(label.astype(np.float32))[None]


def voc_id(stem: str) -> str:
    """VOC image id of a triplet name: ``2007_000032_1`` -> ``2007_000032`` (crop number dropped)."""
    head, _, tail = stem.rpartition("_")
    return head if head and tail.isdigit() and head.count("_") >= 1 else stem


def list_triplets(root: str, skip_invalid: bool = False) -> tuple[list[Scene], list[tuple[str, str]]]:
    """Every triplet of an MF-VOC folder, sorted by name, as ``Scene(name, [A, B], gt)``.

    Raises:
        BenchmarkError: a missing folder, a file without its partner in another folder, files of
            different sizes (the message names the file). With ``skip_invalid`` such triplets are
            logged and returned in the second list instead.
    """
    base = Path(root)
    if not base.is_dir():
        raise BenchmarkError(f"data.root={root} is not a folder (MF-VOC layout: {'/, '.join(FOLDERS)}/)")
    files = {}
    for sub in FOLDERS:
        d = base / sub
        if not d.is_dir():
            raise BenchmarkError(f"{d}: missing folder (MF-VOC layout: {'/, '.join(FOLDERS)}/ under data.root)")
        files[sub] = {p.stem: p for p in d.iterdir() if is_image(p)}
    names = sorted(set().union(*(f.keys() for f in files.values())))
    if not names:
        raise BenchmarkError(f"{base}: no images in {'/, '.join(FOLDERS)}/")
    triplets = []
    for n in names:
        have = [files[sub].get(n) for sub in FOLDERS]
        first = next(p for p in have if p is not None)
        problem = next((f"{base / sub / first.name}: missing (partner of {first})"
                        for sub, p in zip(FOLDERS, have) if p is None), None)
        triplets.append(Scene(n, have[:2], have[2]) if problem is None else _Broken(n, problem))

    def check(t):
        if isinstance(t, _Broken):
            raise BenchmarkError(t.problem)
        check_scene(t, decode=skip_invalid)

    return keep_valid(triplets, check, skip_invalid, "MF-VOC triplet '{}'")


@dataclass
class _Broken:
    """A triplet with a file missing (raised or skipped by :func:`list_triplets`)."""

    name: str
    problem: str


def split_triplets(triplets: list[Scene], num_val: int) -> dict[str, list[Scene]]:
    """Fixed ``train``/``val``/``test``: test = :data:`HELDOUT_IDS`, val = ``num_val`` evenly spaced others."""
    held = set(HELDOUT_IDS)
    test = [t for t in triplets if voc_id(t.name) in held]
    rest = [t for t in triplets if voc_id(t.name) not in held]
    if not 1 <= num_val < len(rest):
        raise ValueError(f"data.num_val={num_val} must be in [1, {len(rest) - 1}] ({len(rest)} non-held-out triplets)")
    pick = set(np.linspace(0, len(rest) - 1, num_val).round().astype(int).tolist())
    if len(pick) < num_val:  # too close to len(rest) for distinct rounded positions
        raise ValueError(f"data.num_val={num_val} is too large for {len(rest)} non-held-out triplets")
    return {"train": [t for i, t in enumerate(rest) if i not in pick],
            "val": [t for i, t in enumerate(rest) if i in pick], "test": test}


class MFVOCDataset(Dataset):
    """MF-VOC triplets with their recovered focus masks; see the module docstring."""

    def __init__(self, cfg, split: str, triplets: list[Scene]):
        if not triplets:
            what = (f"none of the {len(HELDOUT_IDS)} held-out ids (mf_voc.HELDOUT_IDS)" if split == "test"
                    else "no triplets")
            raise BenchmarkError(f"data.root={cfg.root}: {what} for the MF-VOC '{split}' split")
        if split == "test" and cfg.num_test is not None:
            triplets = triplets[: int(cfg.num_test)]
        self.cfg, self.split, self.triplets = cfg, split, triplets
        self.slots = pad_order(2, int(cfg.num_sources))  # A, B, A, B, ... (VAEEDOF Sec. 3 duplication)

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int) -> dict:
        index, epoch = index % len(self), index // len(self)
        cfg, t = self.cfg, self.triplets[index]
        rng = sample_rng(cfg.seed, index, self.split, epoch)  # train draws only
        a, b, gt = (load_image(p) for p in (*t.sources, t.gt))
        a, b, gt = (x.expand(3, -1, -1) for x in (a, b, gt))  # a gray file: replicate (MF-VOC is RGB)
        mask = focus_mask(torch.stack([a, b]), gt, int(cfg.mask_box), float(cfg.mask_tol) / 255.0)
        if self.split == "train":
            p = int(cfg.patch_size)
            if p > min(gt.shape[-2:]):
                raise BenchmarkError(f"{t.gt}: triplet {t.name} ({gt.shape[-1]}x{gt.shape[-2]}) is smaller than "
                                     f"data.patch_size={p}")
            (a, b, gt), mask = apply_aligned(crop_flip(p, bool(cfg.hflip)), rng, [a, b, gt], mask)
        sources = torch.stack([(a, b)[k] for k in self.slots])
        if cfg.gray:
            sources, gt = rgb_to_gray(sources), rgb_to_gray(gt)
        return {"sources": sources, "gt": gt, "mask": mask, "name": t.name}


@register_datamodule("mf_voc", MFVOCConfig)
class MFVOCDataModule(FusionDataModule):
    """MF-VOC triplets under ``data.root`` with the fixed held-out test list."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._splits: Optional[dict[str, list[Scene]]] = None
        self.skipped: list[tuple[str, str]] = []

    def splits(self) -> dict[str, list[Scene]]:
        if self._splits is None:
            if not self.cfg.root:
                raise ValueError("data.root must point to an MF-VOC folder (sourceA/, sourceB/, groundtruth/)")
            triplets, self.skipped = list_triplets(self.cfg.root, bool(self.cfg.skip_invalid))
            self._splits = split_triplets(triplets, int(self.cfg.num_val))
        return self._splits

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def build_dataset(self, split: str) -> Dataset:
        return MFVOCDataset(self.cfg, split, self.splits()[split])

    def train_dataloader(self) -> DataLoader:
        return epoch_train_loader(self)
