"""Full-reference metrics (fused vs ground truth), taken from torchmetrics / piq, not re-implemented.

All take ``update(fused, gt)`` with ``[B, C, H, W]`` images, float in [0, 1] or uint8, and
report the mean of per-image values. Used by VAEEDOF Table 1 (DISTS, PieAPP, HaarPSI,
IW-SSIM, LPIPS, MDSI, MSE, MS-SSIM, MS-GMSD, PSNR, SSIM) and UDPNet Table 1 (PSNR, SSIM, LPIPS).

LPIPS, DISTS and PieAPP need network weights that are never downloaded here: they are read
from a torch-hub style folder (``$MFIF_WEIGHTS_DIR/checkpoints/<file>``, or the
``weights_dir`` argument); see :mod:`mfif.metrics._piq` for the file names. A missing file
raises :class:`FileNotFoundError` naming it, at metric construction.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.image import (
    MultiScaleStructuralSimilarityIndexMeasure,
    PeakSignalNoiseRatio,
    StructuralSimilarityIndexMeasure,
)
from torchmetrics.regression import MeanSquaredError

from mfif.metrics._piq import hub_dir, import_piq, require_weights
from mfif.metrics.registry import register_metric

__all__ = [
    "PSNR",
    "SSIM",
    "MSSSIM",
    "MSE",
    "IWSSIM",
    "HaarPSI",
    "MDSI",
    "MSGMSD",
    "LPIPS",
    "DISTS",
    "PieAPP",
]


def _unit(x: Tensor, name: str) -> Tensor:
    """[B, C, H, W] float in [0, 1] (uint8 is divided by 255; floats are clamped)."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have shape [B, C, H, W] with C in (1, 3), got {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        return x.float() / 255.0
    return x.clamp(0, 1)


def _check_pair(fused: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    f, g = _unit(fused, "fused"), _unit(gt, "gt")
    if f.shape != g.shape:
        raise ValueError(f"fused {tuple(f.shape)} and gt {tuple(g.shape)} must have the same shape")
    return f, g.to(f.dtype)


class _FR:
    """Adapts a torchmetrics (preds, target) metric to the ``update(fused, gt)`` contract."""

    def update(self, fused: Tensor, gt: Tensor) -> None:  # torchmetrics filters kwargs by these names
        f, g = _check_pair(fused, gt)
        super().update(f, g)


class PSNR(_FR, PeakSignalNoiseRatio):
    """PSNR in dB (torchmetrics), data range 1, **mean of per-image PSNR**. Higher is better."""

    def __init__(self) -> None:
        super().__init__(data_range=1.0, dim=(1, 2, 3))


class SSIM(_FR, StructuralSimilarityIndexMeasure):
    """SSIM (torchmetrics; Gaussian 11x11, sigma 1.5, K = 0.01/0.03), data range 1. Higher is better."""

    def __init__(self) -> None:
        super().__init__(data_range=1.0)


class MSSSIM(_FR, MultiScaleStructuralSimilarityIndexMeasure):
    """MS-SSIM (torchmetrics, 5 scales; images must exceed 160 px per side). Higher is better."""

    def __init__(self) -> None:
        super().__init__(data_range=1.0)


class MSE(_FR, MeanSquaredError):
    """Mean squared error on the [0, 1] scale (torchmetrics). Lower is better."""

    def __init__(self) -> None:
        super().__init__()


class _PerImageFR(Metric):
    """Mean over images of a per-image full-reference value :meth:`value` ``-> [B]``."""

    is_differentiable = False
    full_state_update = False
    _rgb = False  # replicate gray images to RGB (networks trained on RGB)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, fused: Tensor, gt: Tensor) -> None:
        f, g = _check_pair(fused, gt)
        if self._rgb and f.shape[1] == 1:
            # VGG / PieAPP networks take RGB: gray images are replicated to 3 channels.
            f, g = f.expand(-1, 3, -1, -1), g.expand(-1, 3, -1, -1)
        with torch.no_grad():
            v = self.value(f, g).reshape(-1)
        self.total += v.sum().to(self.total)
        self.count += v.numel()

    def compute(self) -> Tensor:
        if int(self.count) == 0:
            raise RuntimeError(f"{type(self).__name__}.compute() called before any update()")
        return self.total / self.count

    def value(self, fused: Tensor, gt: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class IWSSIM(_PerImageFR):
    """Information-weighted SSIM (piq ``information_weighted_ssim``). Higher is better."""

    higher_is_better = True

    def value(self, fused: Tensor, gt: Tensor) -> Tensor:
        return import_piq().information_weighted_ssim(fused, gt, data_range=1.0, reduction="none")


class HaarPSI(_PerImageFR):
    """HaarPSI (piq ``haarpsi``). Higher is better."""

    higher_is_better = True

    def value(self, fused: Tensor, gt: Tensor) -> Tensor:
        return import_piq().haarpsi(fused, gt, data_range=1.0, reduction="none")


class MDSI(_PerImageFR):
    """Mean deviation similarity index (piq ``mdsi``, RGB). Lower is better."""

    higher_is_better = False
    _rgb = True

    def value(self, fused: Tensor, gt: Tensor) -> Tensor:
        return import_piq().mdsi(fused, gt, data_range=1.0, reduction="none")


class MSGMSD(_PerImageFR):
    """Multi-scale gradient magnitude similarity deviation (piq ``multi_scale_gmsd``). Lower is better."""

    higher_is_better = False

    def value(self, fused: Tensor, gt: Tensor) -> Tensor:
        return import_piq().multi_scale_gmsd(fused, gt, data_range=1.0, reduction="none")


class _NetworkFR(_PerImageFR):
    """A piq network metric whose weights come from a local torch-hub folder (no download)."""

    higher_is_better = False
    _rgb = True
    _weights: tuple[str, ...] = ()

    def __init__(self, weights_dir: Optional[Union[str, Path]] = None) -> None:
        root = require_weights(self._weights, weights_dir)  # raises before piq can download
        piq = import_piq()
        super().__init__()
        with hub_dir(root):
            self.net = self._build(piq).eval()  # registered submodule: moves with .to(device)

    def _build(self, piq):  # pragma: no cover - abstract
        raise NotImplementedError

    def value(self, fused: Tensor, gt: Tensor) -> Tensor:
        return self.net(fused, gt)


class LPIPS(_NetworkFR):
    """LPIPS-VGG (piq ``LPIPS``; needs ``vgg16-397923af.pth`` and ``lpips_weights.pt``). Lower is better."""

    _weights = ("vgg16", "lpips")

    def _build(self, piq):
        return piq.LPIPS(reduction="none")


class DISTS(_NetworkFR):
    """DISTS (piq ``DISTS``; needs ``vgg16-397923af.pth`` and ``dists_weights.pt``). Lower is better."""

    _weights = ("vgg16", "dists")

    def _build(self, piq):
        return piq.DISTS(reduction="none")


class PieAPP(_NetworkFR):
    """PieAPP (piq ``PieAPP``, stride 27; needs ``PieAPPv0.1.pth``). Lower is better."""

    _weights = ("pieapp",)

    def _build(self, piq):
        return piq.PieAPP(reduction="none", data_range=1.0, stride=27)


register_metric("psnr", "fr", higher_is_better=True)(PSNR)
register_metric("ssim", "fr", higher_is_better=True)(SSIM)
register_metric("ms_ssim", "fr", higher_is_better=True)(MSSSIM)
register_metric("mse", "fr", higher_is_better=False)(MSE)
register_metric("iw_ssim", "fr", higher_is_better=True)(IWSSIM)
register_metric("haarpsi", "fr", higher_is_better=True)(HaarPSI)
register_metric("mdsi", "fr", higher_is_better=False)(MDSI)
register_metric("ms_gmsd", "fr", higher_is_better=False)(MSGMSD)
register_metric("lpips", "fr", higher_is_better=False)(LPIPS)
register_metric("dists", "fr", higher_is_better=False)(DISTS)
register_metric("pieapp", "fr", higher_is_better=False)(PieAPP)
