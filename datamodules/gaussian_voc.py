"""MSASN training data (Sec. 4.1.1): VOC2012 images + object masks, Gaussian blur at three levels.

The paper: "We randomly selected 2900 images and their corresponding masks from the VOC2012
dataset ... standardized their dimensions to 256 x 256 ... applied Gaussian filtering three
times to the adjusted images, each time using a different kernel size". Each selected image
therefore gives one near/far pair per kernel size (``expand_levels``), with ground truth (the
image) and mask (the objects: in focus in the near source, source 0).

Works on any folder laid out like PASCAL VOC2012: ``JPEGImages/<id>.jpg`` and
``SegmentationObject/<id>.png`` (or ``SegmentationClass/``; palette PNGs, 0 = background,
255 = void/boundary). Only images that have a segmentation PNG are used (VOC2012 has 2913).

Choices the paper leaves open (documented deviations):

* kernel sizes are not given: default ``[5, 9, 15]`` with OpenCV's sigma for ``sigma=0``
  (``0.3 * ((k - 1) / 2 - 1) + 0.8`` = 1.1, 1.7, 2.6 px); set ``kernel_sigmas`` to override.
* the void (255) band around objects counts as foreground (``void_as_foreground``).
* train/val split ratio is not given: ``val_fraction`` 0.1 of the 2900.

``data.source=bsds500`` (no VOC2012 masks here): images and masks come from BSDS500,
``data.root / data.bsds_dir`` in the layout of :mod:`datamodules.bsds500`, one region or union of
touching regions per image (7-60 % of it, ``data.region_area``) standing in for the VOC object
mask; resizing and the three Gaussian levels are unchanged. BSDS500 has 500 images, so
``subset_size`` (2900) takes them all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from datamodules._augment import apply_aligned, crop_flip
from datamodules._blur import gaussian_blur, opencv_sigma
from datamodules.bsds500 import mask_of
from datamodules._synth import (
    GeneratorDataModule,
    Pair,
    SyntheticDataConfig,
    SyntheticDataset,
    crop_origin,
    read_image,
    resize_mask,
)
from mfif.io import BenchmarkError, _open
from mfif.registry import register_datamodule

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


@dataclass
class GaussianVOCConfig(SyntheticDataConfig):
    source: str = "voc"  # Sec. 4.1.1: VOC2012 images + masks | bsds500 (BSDS500 regions, module docstring)
    subset_size: Optional[int] = 2900  # Sec. 4.1.1: "randomly selected 2900 images"
    image_size: int = 256  # Sec. 4.1.1: resized to 256 x 256
    patch_size: int = 256  # random crop after resizing (= image_size: no crop)
    kernel_sizes: List[int] = field(default_factory=lambda: [5, 9, 15])  # Sec. 4.1.1: three sizes (values ours)
    kernel_sigmas: Optional[List[float]] = None  # None: OpenCV's sigma for each size
    expand_levels: bool = True  # one pair per kernel size per image (else one random level)
    mask_dir: str = "auto"  # SegmentationObject | SegmentationClass | auto (Object first)
    void_as_foreground: bool = True  # VOC 255 (object boundary band) counts as object
    hflip: bool = False  # not in the paper


def voc_mask(path: Path, void_as_foreground: bool = True) -> np.ndarray:
    """VOC segmentation PNG -> boolean object mask ``[H, W]`` (any object index is foreground).

    Palette PNGs are read as indices (0 background, 1..254 objects/classes, 255 void); plain
    gray/RGB masks count every non-black pixel as foreground.
    """
    with _open(path) as im:
        try:
            a = np.array(im if im.mode in ("P", "L", "I", "I;16") else im.convert("L"))
        except (OSError, SyntaxError, ValueError) as e:
            raise BenchmarkError(f"cannot decode mask {path} (truncated or corrupt): {e}") from e
    fg = a > 0
    return fg if void_as_foreground else fg & (a != 255)


def near_far_pair(image: Tensor, blurred: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Complementary defocus pair: near = sharp where ``mask``, far = sharp elsewhere.

    ``near = I * M + B * (1 - M)``, ``far = B * M + I * (1 - M)`` (MSASN Sec. 4.1.1; the same
    blend as UFA-Fuse Eq. 11).

    Shape:
        - image, blurred: :math:`(B, C, H, W)`
        - mask: :math:`(B, 1, H, W)` in [0, 1]
        - output: two :math:`(B, C, H, W)`
    """
    return image * mask + blurred * (1 - mask), blurred * mask + image * (1 - mask)


class GaussianVOCDataset(SyntheticDataset):
    """One near/far pair per (image, kernel size); see the module docstring."""

    def __init__(self, cfg, split, pairs):
        super().__init__(cfg, split, pairs)
        ks = list(cfg.kernel_sizes)
        if not ks or any(k < 1 or k % 2 == 0 for k in ks):
            raise ValueError(f"data.kernel_sizes must be odd positive sizes, got {ks}")
        sig = list(cfg.kernel_sigmas) if cfg.kernel_sigmas is not None else [opencv_sigma(k) for k in ks]
        if len(sig) != len(ks):
            raise ValueError(f"data.kernel_sigmas needs {len(ks)} values (one per kernel size), got {sig}")
        crop_origin(None, cfg.image_size, cfg.patch_size)  # checks patch_size <= image_size
        self.levels = list(zip(ks, sig))
        if cfg.expand_levels:
            self.length = min(self.length * len(ks), len(pairs) * len(ks))

    def recipe(self, index: int, rng: np.random.Generator) -> dict:
        cfg = self.cfg
        if cfg.expand_levels:
            pair, level = self.pairs[index // len(self.levels)], index % len(self.levels)
        else:
            pair, level = self.pairs[index], int(rng.integers(len(self.levels)))
        img = read_image(pair.image, cfg.image_size, cfg.gray, Image.BILINEAR)
        mask = resize_mask(mask_of(pair.mask, lambda m: voc_mask(m, cfg.void_as_foreground)), cfg.image_size)
        (img,), mask = apply_aligned(crop_flip(int(cfg.patch_size), bool(cfg.hflip)), rng, [img], mask)
        k, sigma = self.levels[level]
        return {"gt": img.contiguous(), "mask": mask.contiguous(), "_radius": torch.tensor(k // 2),
                "_sigma": torch.tensor(float(sigma)), "name": f"{pair.name}_k{k}"}

    @staticmethod
    def synthesize(batch: dict) -> dict:
        gt, mask = batch["gt"], batch["mask"]
        blurred = gaussian_blur(gt, batch["_sigma"], batch["_radius"])
        near, far = near_far_pair(gt, blurred, mask)
        return {"sources": torch.stack([near, far], 1), "gt": gt, "mask": mask, "name": batch["name"]}


@register_datamodule("gaussian_voc", GaussianVOCConfig)
class GaussianVOCDataModule(GeneratorDataModule):
    """MSASN's Gaussian multi-level pairs from a VOC2012-layout folder (``data.root``)."""

    dataset_cls = GaussianVOCDataset
    native_source = "voc"

    def _voc_root(self) -> Path:
        root = Path(self.cfg.root)
        if not (root / "JPEGImages").is_dir() and (root / "VOC2012" / "JPEGImages").is_dir():
            root = root / "VOC2012"  # data.root may be VOCdevkit/
        if not (root / "JPEGImages").is_dir():
            raise FileNotFoundError(f"{root}: no JPEGImages/ folder (expected the VOC2012 layout)")
        return root

    def list_pairs(self) -> list[Pair]:
        root = self._voc_root()
        names = ["SegmentationObject", "SegmentationClass"] if self.cfg.mask_dir == "auto" else [self.cfg.mask_dir]
        mask_dir = next((root / n for n in names if (root / n).is_dir()), None)
        if mask_dir is None:
            raise FileNotFoundError(f"{root}: no mask folder among {names}")
        masks = sorted(p for p in mask_dir.iterdir() if p.suffix.lower() == ".png")
        if not masks:
            raise BenchmarkError(f"{mask_dir} holds no .png masks")
        pairs = []
        for m in masks:
            cands = [root / "JPEGImages" / (m.stem + e) for e in IMAGE_EXTS]
            img = next((c for c in cands if c.is_file()), None)
            err = None if img else f"{m}: mask has no image {cands[0]}"
            pairs.append(Pair(m.stem, img, m, err))
        return pairs
