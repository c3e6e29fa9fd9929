"""Q_M, Wang & Liu's multiscale (Haar wavelet) edge-preservation metric (``metricPWW.m``)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from mfif.metrics._base import NoReferenceMetric
from mfif.metrics._common import mean_over_pairs, yuliu_gray
from mfif.metrics.registry import register_metric

__all__ = ["haar_level", "q_m", "QM"]

_LEVELS = 2  # N = 2 decomposition levels
_ALPHAS = (2.0 / 3.0, 1.0 / 3.0)  # alpha1 = 2/3, alpha2 = 1/3


def haar_level(x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """One level of matlabPyrTools ``buildWpyr(x, 1, 'haar')`` (edges ``reflect1``).

    The Haar taps are ``[1, 1] / sqrt(2)`` and ``modulateFlip`` -> ``[-1, 1] / sqrt(2)``;
    ``corrDn`` starts at the second sample (even-length filter, ``stag = 2``), so each output
    combines samples ``(2i, 2i+1)`` and no boundary extension is ever used; an odd last
    row/column is dropped (as ``corrDn``'s output size ``floor(n / 2)`` implies).

    Returns ``(lowpass, (lohi, hilo, hihi))``.

    Shape:
        - x: :math:`(B, H, W)` -> each output :math:`(B, \\lfloor H/2 \\rfloor, \\lfloor W/2 \\rfloor)`
    """
    h2, w2 = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h2, :w2]
    c = 1.0 / math.sqrt(2.0)
    even_r, odd_r = x[..., 0::2, :], x[..., 1::2, :]
    lo = even_r * c + odd_r * c  # along rows ("x" is MATLAB's inner index)
    hi = odd_r * c - even_r * c
    ev_lo, od_lo = lo[..., 0::2], lo[..., 1::2]
    ev_hi, od_hi = hi[..., 0::2], hi[..., 1::2]
    lolo = ev_lo * c + od_lo * c
    lohi = ev_hi * c + od_hi * c
    hilo = od_lo * c - ev_lo * c
    hihi = od_hi * c - ev_hi * c
    return lolo, (lohi, hilo, hihi)


def _qm_pair(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    q = torch.ones(f.shape[0], dtype=f.dtype, device=f.device)
    for level in range(_LEVELS):
        a, (ha, va, da) = haar_level(a)
        b, (hb, vb, db) = haar_level(b)
        f, (hf, vf, df) = haar_level(f)
        w1 = ha * ha + va * va + da * da
        w2 = hb * hb + vb * vb + db * db
        ep1 = torch.exp(-(ha - hf).abs()) + torch.exp(-(va - vf).abs()) + torch.exp(-(da - df).abs())
        ep2 = torch.exp(-(hb - hf).abs()) + torch.exp(-(vb - vf).abs()) + torch.exp(-(db - df).abs())
        num = (ep1 * w1 + ep2 * w2).sum((-2, -1))
        den = (w1 + w2).sum((-2, -1))
        # No detail energy in either source at this level: 0/0 in the toolbox; we use the
        # unweighted mean of the edge-preservation terms instead.
        q_l = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), ((ep1 + ep2) / 2).mean((-2, -1)))
        q = q * q_l ** _ALPHAS[level]
    return q


def q_m(fused: Tensor, sources: Tensor) -> Tensor:
    """Q_M, Wang & Liu's multiscale metric (``metricPWW.m``, 2-level Haar pyramid).

    Per level: ``EP = sum_{H,V,D} exp(-|c_S - c_F|)``, weights ``W = H^2 + V^2 + D^2``,
    ``Q_l = sum(EP_A W_A + EP_B W_B) / sum(W_A + W_B)``; ``Q = Q_1^(2/3) Q_2^(1/3)``.
    ``yuliu_gray`` images (0..255). Source: P.-W. Wang & B. Liu, ICSP 2008, pp. 965-968.
    Range [0, 3] as coded (three exp terms per pixel), higher is better.
    N > 2 sources: mean over source pairs.
    """
    f = yuliu_gray(fused, "fused")
    s = yuliu_gray(sources, "sources").unbind(1)
    if min(f.shape[-2:]) < 4:
        raise ValueError(f"q_m needs images of at least 4x4 pixels for 2 Haar levels, got {tuple(f.shape[-2:])}")
    return mean_over_pairs(_qm_pair, f, s)


@register_metric("q_m", "nr", higher_is_better=True)
class QM(NoReferenceMetric):
    """Wang-Liu multiscale Q_M, see :func:`q_m`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return q_m(fused, sources)
