"""GACN training data (Sec. 4.1.1, 4.2 and ``../shared/NOTES.md``): COCO instances, defocus spread.

Selection (Sec. 4.1.1): COCO images with exactly one annotated instance (no crowd regions) whose
foreground is 20,000..170,000 px (the annotation's ``area``, in original pixels); 5786 images in
the paper, split 7:3 into train/val.

Per sample (official code facts, NOTES.md): gray, resized to 256 x 256 and randomly cropped to
156 x 156 (Sec. 4.2); blur = Gaussian, sigma 2, radius uniform in 1..7;

* near-focused source (hard edge): ``near = M * I + (1 - M) * blur``
* far-focused source, defocus-spread model of [32]: ``M2 = Gaussian(M, sigma 8, radius 45)``,
  ``far = I * (1 - M2) + blur * M2`` (the blurred foreground spreads over the sharp background)

Augmentations: horizontal/vertical flips, rotations in 30-degree steps, a +-2 px offset of one
source (p 0.5), Gaussian noise with std ~ U(0, 0.1) on both sources, and a random swap of the
sources with the mask inverted (p 0.5). Targets: ``mask`` (decision map) and ``gt`` (the image).

Implementation choices (documented deviations):

* geometry is applied to the 256 x 256 image/mask before blurring (blurs are isotropic, so
  this equals blurring first up to interpolation); non-right-angle rotations use reflection
  padding and the crop is drawn inside the rotated image's inscribed square, so crops never
  contain padding. Right angles use exact ``rot90``.
* blurs run on the whole 256 x 256 image and the crop is taken afterwards, so the crop border
  sees real context (a +-2 px offset source is cut from the shifted window of the same image).
* val/test samples are not augmented (``augment_val``); crop position and blur radius stay random
  (seeded per index).
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

from datamodules._blur import gaussian_blur
from datamodules._synth import GeneratorDataModule, Pair, SyntheticDataConfig, SyntheticDataset, blend, read_image, resize_mask
from mfif.io import BenchmarkError
from mfif.registry import register_datamodule


@dataclass
class COCODefocusConfig(SyntheticDataConfig):
    annotation_file: str = "annotations/instances_train2014.json"  # relative to data.root (COCO 2014, Sec. 4.1.1)
    image_dir: str = "train2014"  # relative to data.root
    min_area: float = 20000.0  # Sec. 4.1.1: foreground between 20,000 ...
    max_area: float = 170000.0  # ... and 170,000 pixels
    val_fraction: float = 0.3  # Sec. 4.1.1: train/val 7:3
    gray: bool = True  # Sec. 4.2: gray-scale training
    image_size: int = 256  # Sec. 4.2: resized to 256 x 256
    patch_size: int = 156  # Sec. 4.2: random crop 156 x 156
    blur_sigma: float = 2.0  # NOTES.md: Gaussian sigma 2 ...
    blur_radius: List[int] = field(default_factory=lambda: [1, 7])  # ... radius uniform in 1..7
    spread_sigma: float = 8.0  # NOTES.md: defocus-spread mask, Gaussian sigma 8 ...
    spread_radius: int = 45  # ... radius 45
    mask_threshold: float = 0.5  # NOTES.md: mask binarised at 0.5
    rotation_step: int = 30  # NOTES.md: rotations in 30-degree steps (0: none)
    hflip: bool = True  # NOTES.md: flips
    vflip: bool = True
    offset_max: int = 2  # NOTES.md: +-2 px offset of one source ...
    offset_p: float = 0.5  # ... with probability 0.5
    noise_std_max: float = 0.1  # NOTES.md: Gaussian noise, std ~ U(0, 0.1)
    swap_p: float = 0.5  # NOTES.md: swap sources + invert mask, p 0.5
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


def inscribed_side(size: int, angle_deg: float) -> int:
    """Side of the largest axis-aligned square inside a ``size`` square rotated by ``angle_deg``."""
    a = math.radians(angle_deg)
    return int(math.floor(size / (abs(math.cos(a)) + abs(math.sin(a))) + 1e-9))


def rotate_stack(x: Tensor, angle_deg: int) -> Tensor:
    """Rotate ``[C, H, W]`` about its centre: ``rot90`` for right angles, else bilinear + reflection."""
    if angle_deg % 90 == 0:
        return torch.rot90(x, (angle_deg // 90) % 4, dims=(-2, -1))
    from kornia.geometry.transform import rotate

    return rotate(x[None], torch.tensor([float(angle_deg)]), padding_mode="reflection")[0]


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
        mask = resize_mask(coco_mask(pair.mask), s)
        aug = self.augment
        angle = int(rng.integers(0, 360 // cfg.rotation_step)) * cfg.rotation_step if aug and cfg.rotation_step else 0
        stack = torch.cat([img, mask])
        if angle:
            stack = rotate_stack(stack, angle)
        if aug and cfg.hflip and rng.random() < 0.5:
            stack = stack.flip(-1)
        if aug and cfg.vflip and rng.random() < 0.5:
            stack = stack.flip(-2)
        img, mask = stack[:-1], (stack[-1:] >= cfg.mask_threshold).float()
        side = inscribed_side(s, angle)
        lo, hi = (s - side) // 2 + m, (s + side) // 2 - m - p
        y, x = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        offset = torch.zeros(2, 2, dtype=torch.long)  # per source (dy, dx)
        if aug and m > 0 and rng.random() < cfg.offset_p:
            offset[int(rng.integers(2))] = torch.from_numpy(rng.integers(-m, m + 1, size=2))
        std = float(rng.uniform(0.0, cfg.noise_std_max)) if aug else 0.0
        noise = torch.from_numpy(rng.standard_normal((2, img.shape[0], p, p), dtype=np.float32)) if aug else torch.zeros(2, img.shape[0], p, p)
        swap = bool(aug and rng.random() < cfg.swap_p)
        radius = int(rng.integers(int(cfg.blur_radius[0]), int(cfg.blur_radius[1]) + 1))
        return {
            "gt": img.contiguous(), "mask": mask.contiguous(), "name": pair.name,
            "_radius": torch.tensor(radius), "_sigma": torch.tensor(float(cfg.blur_sigma)),
            "_spread": torch.tensor([float(cfg.spread_sigma), float(cfg.spread_radius)]),
            "_crop": torch.tensor([y, x, p]), "_offset": offset, "_noise": noise * std, "_swap": torch.tensor(swap),
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
        sources = (torch.stack(srcs) + batch["_noise"].to(gt)).clamp_(0.0, 1.0)
        mask_c = torch.stack(masks)
        swap = batch["_swap"].to(gt.device).view(-1, 1, 1, 1)
        sources = torch.where(swap[:, None], sources.flip(1), sources)
        mask_c = torch.where(swap, 1.0 - mask_c, mask_c)
        return {"sources": sources, "gt": torch.stack(gts), "mask": mask_c, "name": batch["name"]}


@register_datamodule("coco_defocus", COCODefocusConfig)
class COCODefocusDataModule(GeneratorDataModule):
    """GACN's defocus-spread pairs from a COCO-layout folder (``data.root``)."""

    dataset_cls = COCODefocusDataset

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
