"""Built-in default data: focus sets made from the photos that ship inside scikit-image.

Needs no download, so every config runs anywhere (``data.name=default``; the ``smoke`` and
``demo`` profiles use it). Deterministic for a seed: sample ``i`` of a split depends only on
``(seed, split, i)``.

How a sample is made (N >= 2 sources):

* **Procedural focus regions.** A smooth random field (Gaussian-filtered white noise) is cut
  into N regions by its quantiles; source ``k`` is sharp in region ``k`` and defocused
  elsewhere by a Gaussian of sigma ~ U(``blur_min``, ``blur_max``). The blend uses a slightly
  softened mask, so region borders look like real defocus transitions rather than cut-outs.
* **Depth-dependent defocus** (``motorcycle`` stereo pair): the bundled disparity map gives
  depth; each source focuses on one depth band and the blur grows with the disparity distance
  to that band (thin-lens circle of confusion is ~linear in disparity difference).

Splits use disjoint photos: train/val patches are random crops; the test split is centre crops
of held-out photos (including the stereo scene). Samples carry ``gt`` (the photo) and ``mask``
(1 where source 0 is in focus).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import List

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch.utils.data import Dataset

from datamodules.base import FusionDataModule, sample_rng
from mfif.config import DataConfig
from mfif.registry import register_datamodule

TRAIN_IMAGES = ["astronaut", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                "retina", "camera", "brick", "grass", "gravel", "moon", "page", "coins", "cell"]
VAL_IMAGES = ["coffee", "text"]
TEST_IMAGES = ["motorcycle", "coffee", "astronaut", "chelsea", "camera", "moon"]


@dataclass
class DefaultDataConfig(DataConfig):
    num_train: int = 256  # samples per epoch
    num_val: int = 8
    num_test: int = 6
    test_size: int = 256  # side of the centre crop used for test scenes
    blur_min: float = 1.0  # Gaussian sigma range of the defocus
    blur_max: float = 3.0
    field_sigma: float = 12.0  # smoothness (px) of the procedural focus field
    edge_softness: float = 1.0  # sigma (px) softening the focus-region border
    stereo: bool = True  # use the motorcycle disparity map for depth-dependent defocus


def _to_float_rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    return (img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else max(1.0, float(img.max()))))


@lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as float32 ``[H, W, 3]`` in [0, 1] (gray ones replicated)."""
    import skimage.data as skd

    if name == "motorcycle":
        left, _right, _disp = skd.stereo_motorcycle()
        return _to_float_rgb(left)
    return _to_float_rgb(getattr(skd, name)())


@lru_cache(maxsize=None)
def load_disparity() -> np.ndarray:
    import skimage.data as skd

    disp = skd.stereo_motorcycle()[2].astype(np.float32)
    finite = np.isfinite(disp)  # occluded pixels are inf: treat them as the farthest depth
    return np.where(finite, disp, disp[finite].min())


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter(img, sigma=(sigma, sigma, 0), mode="reflect")


def procedural_regions(rng: np.random.Generator, h: int, w: int, n: int, field_sigma: float) -> np.ndarray:
    """Label map ``[H, W]`` with values 0..n-1 cut from a smooth random field by quantiles."""
    field = gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), field_sigma, mode="wrap")
    qs = np.quantile(field, np.linspace(0, 1, n + 1)[1:-1])
    return np.digitize(field, qs).astype(np.int64)


def compose_sources(img: np.ndarray, labels: np.ndarray, sigmas: List[float], softness: float) -> np.ndarray:
    """Source k = sharp inside region k, blurred with ``sigmas[k]`` elsewhere.

    Returns ``[N, H, W, 3]``.
    """
    out = []
    for k, s in enumerate(sigmas):
        m = (labels == k).astype(np.float32)
        if softness > 0:
            m = gaussian_filter(m, softness)
        m = m[..., None]
        out.append(img * m + _blur(img, s) * (1 - m))
    return np.stack(out)


def depth_defocus(img: np.ndarray, disp: np.ndarray, n: int, gain: float, levels: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Depth-dependent defocus: source k focuses on depth band k; blur ~ |disparity difference|.

    Disparity is quantised into ``levels`` layers, each blurred with its own sigma and composed.
    Returns sources ``[N, H, W, 3]`` and the band label map ``[H, W]``.
    """
    d = (disp - disp.min()) / max(1e-6, float(disp.max() - disp.min()))
    layer = np.minimum((d * levels).astype(np.int64), levels - 1)
    band_of_layer = np.minimum((np.arange(levels) * n) // levels, n - 1)
    labels = band_of_layer[layer]
    centres = [(np.arange(levels)[band_of_layer == k].mean() + 0.5) / levels for k in range(n)]
    out = []
    for c in centres:
        acc = np.zeros_like(img)
        for li in range(levels):
            m = (layer == li).astype(np.float32)[..., None]
            sigma = gain * abs((li + 0.5) / levels - c) * levels / 2
            acc += m * (_blur(img, sigma) if sigma > 0.05 else img)
        out.append(acc)
    return np.stack(out), labels


def _crop(arr: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
    return arr[y : y + size, x : x + size]


class DefaultFocusDataset(Dataset):
    """Focus sets from bundled photos; see the module docstring."""

    def __init__(self, cfg: DefaultDataConfig, split: str):
        self.cfg, self.split = cfg, split
        self.photos = {"train": TRAIN_IMAGES, "val": VAL_IMAGES, "test": TEST_IMAGES}[split]
        self.length = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}[split]
        if cfg.num_sources < 2:
            raise ValueError(f"data.num_sources must be >= 2, got {cfg.num_sources}")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        cfg = self.cfg
        rng = sample_rng(cfg.seed, i, self.split)
        name = self.photos[i % len(self.photos)]
        img = load_photo(name)
        n = int(cfg.num_sources)
        size = cfg.patch_size if self.split != "test" else cfg.test_size
        h, w = img.shape[:2]
        size = min(size, h, w)
        if self.split == "test":
            y, x = (h - size) // 2, (w - size) // 2
        else:
            y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        sigmas = rng.uniform(cfg.blur_min, cfg.blur_max, size=n).tolist()
        if name == "motorcycle" and cfg.stereo:
            src, labels = depth_defocus(img, load_disparity(), n, gain=float(np.mean(sigmas)))
            src, labels, gt = _crop(src.transpose(1, 2, 0, 3), y, x, size).transpose(2, 0, 1, 3), _crop(labels, y, x, size), _crop(img, y, x, size)
        else:
            gt = _crop(img, y, x, size)
            labels = procedural_regions(rng, size, size, n, cfg.field_sigma)
            src = compose_sources(gt, labels, sigmas, cfg.edge_softness)
        if self.split == "train" and rng.random() < 0.5:  # horizontal flip, same for all
            src, gt, labels = src[:, :, ::-1], gt[:, ::-1], labels[:, ::-1]
        sources = torch.from_numpy(np.ascontiguousarray(src.transpose(0, 3, 1, 2))).float().clamp(0, 1)
        gt_t = torch.from_numpy(np.ascontiguousarray(gt.transpose(2, 0, 1))).float()
        mask = torch.from_numpy(np.ascontiguousarray(labels == 0)).float()[None]
        if cfg.gray:
            from mfif.ops.colour import rgb_to_gray

            sources, gt_t = rgb_to_gray(sources), rgb_to_gray(gt_t)
        return {"sources": sources, "gt": gt_t, "mask": mask, "name": f"{self.split}_{i:04d}_{name}"}


@register_datamodule("default", DefaultDataConfig)
class DefaultDataModule(FusionDataModule):
    """Built-in focus sets from scikit-image photos (no download)."""

    def build_dataset(self, split: str) -> Dataset:
        return DefaultFocusDataset(self.cfg, split)
