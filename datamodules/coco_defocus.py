"""GACN training data (Ma et al., Neurocomputing 470, 2022, Sec. 4.1.1, 4.2): COCO instances, defocus spread.

Selection (Sec. 4.1.1): COCO images with exactly one annotated instance (no crowd regions) whose
foreground is 20,000..170,000 px (the annotation's ``area``, in original pixels); 5786 images in
the paper, split 7:3 into train/val.

Per sample (released code, Keep-Passion/GACN ``nets/coco_dataset.py`` and ``nets/nets_utility.py``):
gray, resized to 256 x 256 and randomly cropped to 156 x 156 (Sec. 4.2); blur = Gaussian, sigma 2,
radius uniform in 1..7;

* near-focused source (hard edge): ``near = M * I + (1 - M) * blur``
* far-focused source, defocus-spread model of [32]: ``M2 = Gaussian(M, sigma 8, radius 45)``,
  ``far = I * (1 - M2) + blur * M2`` (the blurred foreground spreads over the sharp background)

Augmentations: horizontal/vertical flips, rotations in 30-degree steps, a +-2 px offset of one
source (p 0.5), Gaussian noise (:func:`mix_noise`) and a random swap of the sources with the mask
inverted (p 0.5). Targets: ``mask`` (decision map) and ``gt`` (the image).

Noise as the released training code (Keep-Passion/GACN, ``nets/nets_utility.py:gaussian_noise``,
called from ``nets/coco_dataset.py:DataAugment``): ``x' = 0.95 x + 0.05 n`` with one field
``n ~ N(0, sigma)`` shared by both sources and ``sigma ~ U(0, 0.1)``; no clipping. The release
draws sigma once per batch, we draw it per sample (so batches do not depend on the batch size or
the worker count).

Implementation choices (documented deviations):

* geometry (albumentations ``Rotate`` + flips, :mod:`datamodules._augment`) is applied to the
  256 x 256 image/mask before blurring (blurs are isotropic, so this equals blurring first up to
  interpolation); non-right-angle rotations use reflection padding and the crop is drawn inside
  the rotated image's inscribed square, so crops never contain padding. Right angles are exact.
* blurs run on the whole 256 x 256 image and the crop is taken afterwards, so the crop border
  sees real context (a +-2 px offset source is cut from the shifted window of the same image).
* val/test samples are not augmented (``augment_val``); crop position and blur radius stay random
  (seeded per index).

``data.source=bsds500`` (no COCO copy here): images and masks come from BSDS500 instead,
``data.root / data.bsds_dir`` in the layout of :mod:`datamodules.bsds500`, one region or union of
touching regions per image covering 7-60 % of it (Sec. 4.1.1's 20,000-170,000 px scaled from COCO
to the image, ``data.region_area``); the per-sample steps above are unchanged (the 481x321 images
are resized to 256 x 256 like COCO's).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from datamodules._augment import apply_aligned, rotate_flip
from datamodules._blur import gaussian_blur
from datamodules.bsds500 import mask_of
from datamodules._synth import GeneratorDataModule, Pair, SyntheticDataConfig, SyntheticDataset, blend, read_image, resize_mask
from mfif.io import BenchmarkError
from mfif.registry import register_datamodule


@dataclass
class COCODefocusConfig(SyntheticDataConfig):
    source: str = "coco"  # Sec. 4.1.1: COCO 2014 instances | bsds500 (BSDS500 regions, see the module docstring)
    annotation_file: str = "annotations/instances_train2014.json"  # relative to data.root (COCO 2014, Sec. 4.1.1)
    image_dir: str = "train2014"  # relative to data.root
    min_area: float = 20000.0  # Sec. 4.1.1: foreground between 20,000 ...
    max_area: float = 170000.0  # ... and 170,000 pixels
    val_fraction: float = 0.3  # Sec. 4.1.1: train/val 7:3
    gray: bool = True  # Sec. 4.2: gray-scale training
    image_size: int = 256  # Sec. 4.2: resized to 256 x 256
    patch_size: int = 156  # Sec. 4.2: random crop 156 x 156
    blur_sigma: float = 2.0  # released random_blurred: Gaussian sigma 2 ...
    blur_radius: List[int] = field(default_factory=lambda: [1, 7])  # ... radius uniform in 1..7
    spread_sigma: float = 8.0  # released random_blurred: defocus-spread mask gauss_blur(mask, 8, 45) ...
    spread_radius: int = 45  # ... radius 45
    mask_threshold: float = 0.5  # released COCODataset: mask binarised at 0.5
    rotation_step: int = 30  # released COCODataset._rand_rotate: 30-degree steps (0: none)
    hflip: bool = True  # released COCODataset._rand_flip: horizontal and vertical, p 0.5 each
    vflip: bool = True
    offset_max: int = 2  # released random_offset(.., 2, 2): +-2 px offset of one source ...
    offset_p: float = 0.5  # ... with probability 0.5
    noise_std_max: float = 0.1  # released DataAugment: sigma ~ U(0, 0.1) (torch.rand(1) * 0.1); 0: no noise step
    noise_rate: float = 0.05  # released gaussian_noise(rate=0.05): x' = (1 - rate) x + rate n
    swap_p: float = 0.5  # released DataAugment: swap sources + invert mask, p 0.5
    augment_val: bool = False  # apply the augmentations to val/test too
    resample_each_epoch: bool = True  # online augmentation (the official loader draws per epoch)


def coco_mask(ann: dict) -> np.ndarray:
    """Binary ``[H, W]`` mask of one COCO annotation (polygons, RLE or uncompressed RLE)."""
    from pycocotools import mask as mask_utils

    h, w, segm = ann["height"], ann["width"], ann["segmentation"]
    if isinstance(segm, list):  # polygons, possibly several parts: merge them
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    elif isinstance(segm.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segm, h, w)
    else:
        rle = segm
    return mask_utils.decode(rle).astype(bool)


def defocus_spread_far(image: Tensor, blurred: Tensor, spread_mask: Tensor) -> Tensor:
    """Far-focused source of the defocus-spread model: ``I * (1 - M2) + blur * M2``.

    Shape:
        - image, blurred: :math:`(B, C, H, W)`
        - spread_mask (M2 = Gaussian(M, sigma 8, radius 45)): :math:`(B, 1, H, W)`
        - output: :math:`(B, C, H, W)`
    """
    return image * (1 - spread_mask) + blurred * spread_mask


def mix_noise(sources: Tensor, noise: Tensor, rate: float | Tensor) -> Tensor:
    """Released GACN noise: ``(1 - rate) * x + rate * n`` with one field ``n`` for every source.

    Keep-Passion/GACN, ``nets/nets_utility.py:gaussian_noise`` (``rate`` 0.05, ``n ~ N(0, sigma)``
    drawn once and added to both images, no clipping).

    Shape:
        - sources: :math:`(B, N, C, H, W)`
        - noise: :math:`(B, 1, C, H, W)` (or broadcastable to ``sources``)
        - rate: a float, or a tensor broadcastable to ``sources`` (per-sample rates)
        - output: :math:`(B, N, C, H, W)`
    """
    if not torch.is_tensor(rate) and not 0.0 <= rate <= 1.0:
        raise ValueError(f"data.noise_rate must lie in [0, 1], got {rate}")
    return sources * (1.0 - rate) + noise * rate


def inscribed_side(size: int, angle_deg: float) -> int:
    """Side of the largest axis-aligned square inside a ``size`` square rotated by ``angle_deg``."""
    a = math.radians(angle_deg)
    return int(math.floor(size / (abs(math.cos(a)) + abs(math.sin(a))) + 1e-9))


class COCODefocusDataset(SyntheticDataset):
    """GACN pairs; see the module docstring."""

    def __init__(self, cfg, split, pairs):
        super().__init__(cfg, split, pairs)
        lo, hi = (int(v) for v in cfg.blur_radius)
        if not 1 <= lo <= hi:
            raise ValueError(f"data.blur_radius must be [lo, hi] with 1 <= lo <= hi, got {list(cfg.blur_radius)}")
        need = cfg.patch_size + 2 * cfg.offset_max
        if need > inscribed_side(cfg.image_size, 45 if cfg.rotation_step % 90 else 0):
            raise ValueError(f"data.patch_size {cfg.patch_size} + 2*offset_max does not fit a rotated "
                             f"{cfg.image_size} image; lower patch_size or set rotation_step=0")
        self.augment = split == "train" or bool(cfg.augment_val)

    def recipe(self, index: int, rng: np.random.Generator) -> dict:
        cfg, pair = self.cfg, self.pairs[index]
        s, p, m = int(cfg.image_size), int(cfg.patch_size), int(cfg.offset_max)
        img = read_image(pair.image, s, cfg.gray, Image.BILINEAR)
        mask = resize_mask(mask_of(pair.mask, coco_mask), s)
        aug = self.augment
        angle = int(rng.integers(0, 360 // cfg.rotation_step)) * cfg.rotation_step if aug and cfg.rotation_step else 0
        if aug:  # albumentations, seeded from this sample's rng (datamodules._augment)
            geometry = rotate_flip(angle, bool(cfg.hflip), bool(cfg.vflip))
            (img,), mask = apply_aligned(geometry, rng, [img], mask)
        mask = (mask >= cfg.mask_threshold).float()
        side = inscribed_side(s, angle)
        lo, hi = (s - side) // 2 + m, (s + side) // 2 - m - p
        y, x = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        offset = torch.zeros(2, 2, dtype=torch.long)  # per source (dy, dx)
        if aug and m > 0 and rng.random() < cfg.offset_p:
            offset[int(rng.integers(2))] = torch.from_numpy(rng.integers(-m, m + 1, size=2))
        std = float(rng.uniform(0.0, cfg.noise_std_max)) if aug else 0.0
        # one field for both sources (released gaussian_noise); sigma ~ U(0, noise_std_max)
        shape = (1, img.shape[0], p, p)
        noise = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)) if aug else torch.zeros(shape)
        swap = bool(aug and rng.random() < cfg.swap_p)
        radius = int(rng.integers(int(cfg.blur_radius[0]), int(cfg.blur_radius[1]) + 1))
        return {
            "gt": img.contiguous(), "mask": mask.contiguous(), "name": pair.name,
            "_radius": torch.tensor(radius), "_sigma": torch.tensor(float(cfg.blur_sigma)),
            "_spread": torch.tensor([float(cfg.spread_sigma), float(cfg.spread_radius)]),
            "_crop": torch.tensor([y, x, p]), "_offset": offset, "_noise": noise * std, "_swap": torch.tensor(swap),
            "_noise_rate": torch.tensor(float(cfg.noise_rate) if aug and cfg.noise_std_max > 0 else 0.0),
        }

    @staticmethod
    def synthesize(batch: dict) -> dict:
        gt, mask = batch["gt"], batch["mask"]
        blurred = gaussian_blur(gt, batch["_sigma"], batch["_radius"])
        spread_sigma, spread_radius = batch["_spread"][0].tolist()
        spread = gaussian_blur(mask, spread_sigma, int(spread_radius))
        full = torch.stack([blend(gt, blurred, mask), defocus_spread_far(gt, blurred, spread)], 1)
        srcs, gts, masks = [], [], []
        for b in range(gt.shape[0]):
            y, x, p = batch["_crop"][b].tolist()
            (dy0, dx0), (dy1, dx1) = batch["_offset"][b].tolist()
            srcs.append(torch.stack([full[b, 0, :, y + dy0 : y + dy0 + p, x + dx0 : x + dx0 + p],
                                     full[b, 1, :, y + dy1 : y + dy1 + p, x + dx1 : x + dx1 + p]]))
            gts.append(gt[b, :, y : y + p, x : x + p])
            masks.append(mask[b, :, y : y + p, x : x + p])
        rate = batch["_noise_rate"].to(gt).view(-1, 1, 1, 1, 1)
        sources = mix_noise(torch.stack(srcs), batch["_noise"].to(gt), rate)
        mask_c = torch.stack(masks)
        swap = batch["_swap"].to(gt.device).view(-1, 1, 1, 1)
        sources = torch.where(swap[:, None], sources.flip(1), sources)
        mask_c = torch.where(swap, 1.0 - mask_c, mask_c)
        return {"sources": sources, "gt": torch.stack(gts), "mask": mask_c, "name": batch["name"]}


@register_datamodule("coco_defocus", COCODefocusConfig)
class COCODefocusDataModule(GeneratorDataModule):
    """GACN's defocus-spread pairs from a COCO-layout folder (``data.root``)."""

    dataset_cls = COCODefocusDataset
    native_source = "coco"

    def list_pairs(self) -> list[Pair]:
        from pycocotools.coco import COCO

        cfg, root = self.cfg, Path(self.cfg.root)
        ann_file = Path(cfg.annotation_file) if os.path.isabs(cfg.annotation_file) else root / cfg.annotation_file
        img_dir = root / cfg.image_dir
        if not ann_file.is_file():
            raise FileNotFoundError(f"COCO annotation file {ann_file} not found (data.annotation_file)")
        if not img_dir.is_dir():
            raise FileNotFoundError(f"COCO image folder {img_dir} not found (data.image_dir)")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                coco = COCO(str(ann_file))
        except Exception as e:  # malformed json
            raise BenchmarkError(f"cannot read COCO annotations {ann_file}: {e}") from e
        pairs = []
        for img_id in sorted(coco.getImgIds()):
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=None))
            if len(anns) != 1 or anns[0].get("iscrowd", 0):  # Sec. 4.1.1: one instance only
                continue
            if not cfg.min_area <= float(anns[0]["area"]) <= cfg.max_area:  # Sec. 4.1.1: 20k..170k px
                continue
            info = coco.imgs[img_id]
            ann = {"segmentation": anns[0]["segmentation"], "height": info["height"], "width": info["width"]}
            path = img_dir / info["file_name"]
            pairs.append(Pair(Path(info["file_name"]).stem, path, ann, None if path.is_file() else f"{path}: image listed in {ann_file} is missing"))
        if not pairs:
            raise BenchmarkError(f"{ann_file}: no single-instance image with {cfg.min_area:g}..{cfg.max_area:g} px foreground")
        return pairs
