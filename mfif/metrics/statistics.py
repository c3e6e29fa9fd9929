"""Statistics of the fused image alone: SEN (Shannon entropy) and STD (MEFB wrappers).

AVG, SF and EI (gradient statistics of F) live in :mod:`mfif.metrics.gradient`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from mfif.metrics._base import NoReferenceMetric
from mfif.metrics._common import fold_channels, histogram, per_channel, xlog
from mfif.metrics.registry import register_metric

__all__ = ["entropy", "standard_deviation", "SEN", "STD"]


def _fused_levels(fused: Tensor, sources: Optional[Tensor]) -> Tensor:
    if sources is None:
        sources = fused.unsqueeze(1).expand(-1, 2, -1, -1, -1)
    return per_channel(fused, sources)[0]


def entropy(fused: Tensor, sources: Optional[Tensor] = None) -> Tensor:
    """SEN, Shannon entropy of F in bits (MEFB ``metricsEntropy.m``), per channel, averaged.

    256-bin histogram of the 8-bit levels, log2. Source: J. van Aardt, J. Appl. Remote
    Sens. 2(1) 2008. Range [0, 8], higher is better.

    Shape:
        - fused: :math:`(B, C, H, W)` -> :math:`(B,)`
    """
    f = _fused_levels(fused, sources)
    p = histogram(f) / (f.shape[-1] * f.shape[-2])
    return fold_channels(-xlog(p).sum(-1), fused.shape[0])


def standard_deviation(fused: Tensor, sources: Optional[Tensor] = None) -> Tensor:
    """STD, population standard deviation of F in grey levels (MEFB ``metricsSD.m``).

    Per channel, averaged. Range >= 0, higher is better (more contrast).
    """
    f = _fused_levels(fused, sources)
    mean = f.mean((-2, -1), keepdim=True)
    sd = torch.sqrt(((f - mean) ** 2).sum((-2, -1)) / (f.shape[-1] * f.shape[-2]))
    return fold_channels(sd, fused.shape[0])


@register_metric("sen", "nr", higher_is_better=True)
class SEN(NoReferenceMetric):
    """Shannon entropy of F, see :func:`entropy`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return entropy(fused, sources)


@register_metric("std", "nr", higher_is_better=True)
class STD(NoReferenceMetric):
    """Standard deviation of F, see :func:`standard_deviation`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return standard_deviation(fused, sources)
