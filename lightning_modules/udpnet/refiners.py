"""Alternatives to the blind-spot mask predictor (Sec. IV-C, Fig. 7): non-learned mask refiners.

Fig. 7 replaces the blind-spot refiner F by other ways of denoising the initial masks:

* ``opening`` / ``closing``: morphological opening or closing of each initial mask with a square
  window of side ``s`` (``model.morph_window``; kornia.morphology).
* ``sam``: a pre-trained segmentation network (SAM [87]) segments an out-of-focus source into
  regions; each region is assigned to the source whose initial mask covers most of it
  (:class:`SegmentVoteRefiner`).
* ``restormer``: a pre-trained denoiser (Restormer [88]) is applied to each initial mask
  (:class:`DenoiserRefiner`).

SAM and Restormer are plug-ins: nothing is downloaded. Set ``model.refiner_target`` to an import
path ``"package.module:attribute"`` of *your* code and ``model.refiner_kwargs`` to its keyword
arguments. The attribute is called once with ``**refiner_kwargs`` to build the model, e.g. a
factory that loads your SAM checkpoint. The object it returns must be callable as:

* for ``sam``: ``segmenter(image) -> labels`` with image ``[B, 3, H, W]`` in [0, 1] (source 0, the
  Y channel repeated 3 times) and ``labels`` an integer region map ``[B, 1, H, W]`` (e.g. the
  index of the SAM mask covering each pixel, from ``SamAutomaticMaskGenerator``);
* for ``restormer``: ``denoiser(image) -> image`` on ``[B, 3, H, W]`` in [0, 1].

All refiners are used as a frozen mask source (``M^F``) without gradients: F is not built and
L_mask^F is zero (Sec. IV-C: they *replace* the blind-spot refiner).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Optional

import kornia.morphology as KM
import torch
from torch import Tensor

REFINERS = ("blind_spot", "opening", "closing", "sam", "restormer")


def morphological_refine(masks: Tensor, op: str, window: int) -> Tensor:
    """Opening or closing of every mask with a ``window x window`` square (Fig. 7 (c)).

    Shape:
        - masks: :math:`(B, K, 1, H, W)` -> output: same shape.
    """
    if op not in ("opening", "closing"):
        raise ValueError(f"op must be 'opening' or 'closing', got '{op}'")
    if window < 1:
        raise ValueError(f"morph_window (s) must be >= 1, got {window}")
    b, k, _, h, w = masks.shape
    kernel = torch.ones(window, window, dtype=masks.dtype, device=masks.device)
    fn = KM.opening if op == "opening" else KM.closing
    return fn(masks.reshape(b * k, 1, h, w), kernel).reshape(b, k, 1, h, w)


def region_vote(masks: Tensor, labels: Tensor) -> Tensor:
    """Assign every region of ``labels`` to the source whose mask has the largest mean in it.

    Shape:
        - masks: :math:`(B, K, 1, H, W)`; labels: :math:`(B, 1, H, W)` integer region ids
        - output: :math:`(B, K, 1, H, W)` one-hot over K (sums to 1, Eq. 2)
    """
    b, k, _, h, w = masks.shape
    if labels.shape != (b, 1, h, w):
        raise ValueError(f"labels must have shape {(b, 1, h, w)}, got {tuple(labels.shape)}")
    lab = labels.long().reshape(b, -1)
    lab = lab - lab.amin(dim=1, keepdim=True)  # non-negative ids per image
    key = lab + torch.arange(b, device=lab.device).unsqueeze(1) * (int(lab.max()) + 1)
    _, inv = torch.unique(key.reshape(-1), return_inverse=True)
    flat = masks.permute(0, 3, 4, 1, 2).reshape(-1, k)  # [B*H*W, K]
    sums = torch.zeros(int(inv.max()) + 1, k, dtype=masks.dtype, device=masks.device).index_add_(0, inv, flat)
    winner = sums.argmax(dim=1)[inv]  # region mean argmax == region sum argmax
    onehot = torch.nn.functional.one_hot(winner, k).to(masks.dtype)
    return onehot.reshape(b, h, w, k, 1).permute(0, 3, 4, 1, 2)


class SegmentVoteRefiner:
    """SAM-style refiner (Fig. 7 (a)): segment source 0, vote each region with the initial masks."""

    def __init__(self, segmenter: Callable[[Tensor], Tensor]):
        self.segmenter = segmenter

    def __call__(self, masks: Tensor, sources: Tensor) -> Tensor:
        image = sources[:, 0].expand(-1, 3, -1, -1)
        return region_vote(masks, self.segmenter(image).to(masks.device))


class DenoiserRefiner:
    """Restormer-style refiner (Fig. 7 (b)): a pre-trained image denoiser applied to each mask."""

    def __init__(self, denoiser: Callable[[Tensor], Tensor]):
        self.denoiser = denoiser

    def __call__(self, masks: Tensor, sources: Tensor) -> Tensor:
        b, k, _, h, w = masks.shape
        out = self.denoiser(masks.reshape(b * k, 1, h, w).expand(-1, 3, -1, -1))
        return out.mean(dim=1, keepdim=True).clamp(0, 1).reshape(b, k, 1, h, w)


def load_user_callable(target: str, kwargs: Optional[Mapping[str, Any]] = None) -> Callable:
    """Import ``"package.module:attribute"`` and call it with ``kwargs`` to build the user's model."""
    if not target or ":" not in target:
        raise ValueError(f"model.refiner_target must look like 'package.module:attribute', got {target!r}")
    mod_name, attr = target.split(":", 1)
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"model.refiner_target {target!r} cannot be imported: {e}") from e
    model = obj(**dict(kwargs or {}))
    if not callable(model):
        raise TypeError(f"model.refiner_target {target!r} built a {type(model).__name__}, which is not callable")
    return model


def build_refiner(name: str, window: int = 5, target: Optional[str] = None,
                  kwargs: Optional[Mapping[str, Any]] = None) -> Optional[Callable[[Tensor, Tensor], Tensor]]:
    """Mask refiner ``(init_masks, sources) -> masks`` for ``model.refiner``; None for ``blind_spot``."""
    if name not in REFINERS:
        raise ValueError(f"model.refiner must be one of {REFINERS}, got '{name}'")
    if name == "blind_spot":
        return None
    if name in ("opening", "closing"):
        return lambda masks, sources: morphological_refine(masks, name, window)
    if target is None:
        raise ValueError(f"model.refiner={name} needs model.refiner_target (your {name} model; see refiners.py)")
    model = load_user_callable(target, kwargs)
    return SegmentVoteRefiner(model) if name == "sam" else DenoiserRefiner(model)
