"""Geometric augmentations of the generators with albumentations, seeded per sample.

Every generator draws all of a sample's random numbers from ``sample_rng(seed, index, split,
epoch)`` (:mod:`datamodules.base`) so batches do not depend on the worker count. The
albumentations pipelines keep that property: :func:`apply_aligned` reseeds the pipeline from the
sample's generator right before the call, so the draws inside albumentations are a function of
the sample alone (not of the worker process or of the samples seen before).

albumentations contacts the network on import unless ``NO_ALBUMENTATIONS_UPDATE`` is set; it is
set here before the import (nothing may download at run time).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402
import cv2  # noqa: E402  (albumentations' backend)


def crop_flip(patch: int, hflip: bool, random_crop: bool = True, vflip: bool = False,
              at: Optional[tuple[int, int]] = None) -> A.Compose:
    """``patch`` x ``patch`` crop (random, centred, or with its top-left corner ``at = (y, x)``),
    then optional random flips (p 0.5 each)."""
    if at is not None:
        crop = A.Crop(x_min=at[1], y_min=at[0], x_max=at[1] + patch, y_max=at[0] + patch, p=1.0)
    else:
        crop = A.RandomCrop(patch, patch, p=1.0) if random_crop else A.CenterCrop(patch, patch, p=1.0)
    return A.Compose([crop, A.HorizontalFlip(p=0.5 if hflip else 0.0), A.VerticalFlip(p=0.5 if vflip else 0.0)])


def rotate_flip(angle: float, hflip: bool, vflip: bool) -> A.Compose:
    """Rotation by exactly ``angle`` degrees (counter-clockwise, reflected border), then random flips.

    Right angles are exact pixel permutations; other angles interpolate bilinearly, the mask too
    (threshold it afterwards).
    """
    steps = [A.Rotate(limit=(angle, angle), p=1.0, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_LINEAR,
                      border_mode=cv2.BORDER_REFLECT_101)] if angle % 360 else []
    return A.Compose(steps + [A.HorizontalFlip(p=0.5 if hflip else 0.0), A.VerticalFlip(p=0.5 if vflip else 0.0)])


def apply_aligned(pipeline: A.Compose, rng: np.random.Generator, images: Sequence[Tensor],
                  mask: Optional[Tensor] = None) -> tuple[list[Tensor], Optional[Tensor]]:
    """Apply one draw of ``pipeline`` to several aligned images (and a mask), seeded from ``rng``.

    Args:
        pipeline: an albumentations ``Compose`` (e.g. :func:`crop_flip`, :func:`rotate_flip`).
        rng: the sample's generator; one integer is drawn from it to seed the pipeline.
        images: float tensors of equal height and width.
        mask: optional float mask; geometric transforms move it with the images.

    Returns:
        The transformed images (same order) and mask, as contiguous float32 tensors.

    Shape:
        - images: each :math:`(C_i, H, W)`; mask: :math:`(1, H, W)`
        - output: each :math:`(C_i, H', W')`; mask :math:`(1, H', W')`
    """
    if not images:
        raise ValueError("apply_aligned needs at least one image")
    size = images[0].shape[-2:]
    if any(t.dim() != 3 or t.shape[-2:] != size for t in images) or (mask is not None and mask.shape != (1, *size)):
        raise ValueError(f"images must be [C, H, W] of one size and mask [1, H, W]; got "
                         f"{[tuple(t.shape) for t in images]}, {None if mask is None else tuple(mask.shape)}")
    pipeline.set_random_seed(int(rng.integers(0, 2**31 - 1)))
    names = ["image"] + [f"image{i}" for i in range(1, len(images))]
    pipeline.add_targets({n: "image" for n in names[1:]})
    kw = {n: t.permute(1, 2, 0).numpy() for n, t in zip(names, images)}
    if mask is not None:
        kw["mask"] = mask[0].numpy()
    out = pipeline(**kw)
    res = [torch.from_numpy(np.ascontiguousarray(out[n])).reshape(out[n].shape[0], out[n].shape[1], -1).permute(2, 0, 1)
           .contiguous().float() for n in names]
    m = torch.from_numpy(np.ascontiguousarray(out["mask"])).float()[None] if mask is not None else None
    return res, m
