"""Information-theory fusion metrics: Q_NMI, Q_TE, Q_NCIE (Zheng Liu's toolbox) and MI (VIFB).

All use 256-bin (joint) histograms built with one ``bincount`` per batch.
FMI (feature mutual information) lives in :mod:`mfif.metrics.fmi`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from mfif.metrics._base import NoReferenceMetric
from mfif.metrics._common import (
    fold_channels,
    joint_histogram,
    mean_over_pairs,
    normalize1,
    per_channel,
    round_half_away,
    xlog,
    yuliu_gray,
)
from mfif.metrics.registry import register_metric

__all__ = [
    "mutual_info_bits",
    "q_nmi",
    "q_te",
    "q_ncie",
    "mutual_information",
    "QNMI",
    "QTE",
    "QNCIE",
    "MI",
]

TSALLIS_Q = 1.85  # Cvejic's constant (metricMI.m, sw = 2)


def _probabilities(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Joint and marginal probabilities of two 0..255 level images ``[B, H, W]``.

    Returns ``(h, pa, pb)``: ``h[i, j] = P(a = i, b = j)``, ``pa``/``pb`` its marginals.
    """
    h = joint_histogram(a, b)
    h = h / h.sum((-2, -1), keepdim=True)
    return h, h.sum(-1), h.sum(-2)


def _entropies(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(H(a), H(b), H(a, b)) in bits, as ``mutual_info.m``."""
    h, pa, pb = _probabilities(a, b)
    return -xlog(pa).sum(-1), -xlog(pb).sum(-1), -xlog(h).sum((-2, -1))


def mutual_info_bits(a: Tensor, b: Tensor) -> Tensor:
    """Plain MI in bits of two 0..255 level images (``mutual_info.m``). Shape ``[B, H, W] -> [B]``."""
    ha, hb, hab = _entropies(a, b)
    return ha + hb - hab


def _nmi_pair(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    def term(x: Tensor) -> Tensor:
        hx, hf, hxf = _entropies(x, f)
        den = hx + hf
        # Both images constant: 0/0 in the toolbox; defined here as 0 (no information).
        return torch.where(den > 0, (hx + hf - hxf) / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))

    return 2 * (term(a) + term(b))


def q_nmi(fused: Tensor, sources: Tensor) -> Tensor:
    """Q_NMI, Hossny's normalised mutual information (``metricMI(A, B, F, 1)``).

    ``Q = 2 [MI(A,F) / (H(A) + H(F)) + MI(B,F) / (H(B) + H(F))]``, log2, 256-bin
    histograms of ``normalize1`` images (``yuliu_gray``). Source: M. Hossny et al.,
    Electronics Letters 44(18) 2008; toolbox ``metricMI.m``. Range [0, 2] (Lytro ~1.1),
    higher is better. N > 2 sources: mean over source pairs.
    """
    f = normalize1(yuliu_gray(fused, "fused"))
    s = [normalize1(x) for x in yuliu_gray(sources, "sources").unbind(1)]
    return mean_over_pairs(_nmi_pair, f, s)


def _tsallis(x: Tensor, f: Tensor, q: float) -> Tensor:
    h, px, pf = _probabilities(x, f)
    # tsallis.m divides h(i, j) by im1_marg(i) * im2_marg(j) where im1_marg = sum(h) is the
    # marginal of the *second* image and im2_marg = sum(h') that of the first: the
    # marginals are swapped with respect to h's indices. We reproduce the toolbox.
    denom = pf.unsqueeze(-1) * px.unsqueeze(-2)
    ok = denom != 0
    terms = h.pow(q) / torch.where(ok, denom, torch.ones_like(denom)).pow(q - 1)
    result = torch.where(ok, terms, torch.zeros_like(terms)).sum((-2, -1))
    return (1 - result) / (1 - q)


def q_te(fused: Tensor, sources: Tensor, q: float = TSALLIS_Q) -> Tensor:
    """Q_TE, Tsallis-entropy mutual information (``metricMI(A, B, F, 2)``, Cvejic et al.).

    ``Q = I_q(A, F) + I_q(B, F)``, ``I_q = (1 - sum h^q / (p p')^(q-1)) / (1 - q)``,
    q = 1.85, on ``normalize1`` ``yuliu_gray`` images. The toolbox's ``tsallis.m`` pairs
    ``h(i, j)`` with swapped marginals (see code); reproduced for comparability.
    Source: N. Cvejic et al., Electronics Letters 42(11) 2006. Unbounded, higher is better.
    N > 2 sources: mean over source pairs.
    """
    f = normalize1(yuliu_gray(fused, "fused"))
    s = [normalize1(x) for x in yuliu_gray(sources, "sources").unbind(1)]
    return mean_over_pairs(lambda a, b, x: _tsallis(a, x, q) + _tsallis(b, x, q), f, s)


def _ncc(x: Tensor, y: Tensor) -> Tensor:
    # NCC.m: entropies in base 256 (b = 256 bins), NCC = H(x) + H(y) - H(x, y).
    hx, hy, hxy = _entropies(x, y)
    lb = math.log2(256)
    return hx / lb + hy / lb - hxy / lb


def _ncie_pair(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    n_ab, n_af, n_bf = _ncc(a, b), _ncc(a, f), _ncc(b, f)
    one = torch.ones_like(n_ab)
    r = torch.stack(
        [torch.stack([one, n_ab, n_af], -1), torch.stack([n_ab, one, n_bf], -1), torch.stack([n_af, n_bf, one], -1)],
        -2,
    )
    ev = torch.linalg.eigvalsh(r)
    k = 3.0
    # metricWang.m: HR = -sum(r/K log2(r/K)) / log2(256); eigenvalues <= 0 (rounding)
    # contribute 0 (0 log 0 = 0) instead of the toolbox's complex logarithm.
    hr = -xlog(ev.clamp_min(0) / k).sum(-1) / math.log2(256)
    return 1 - hr


def q_ncie(fused: Tensor, sources: Tensor) -> Tensor:
    """Q_NCIE, nonlinear correlation information entropy (``metricWang.m``).

    Correlation matrix of the nonlinear correlation coefficients of (A, B, F) (256-bin
    histograms, log base 256, ``normalize1`` ``yuliu_gray`` images); ``Q = 1 - H_R`` with
    ``H_R = -sum (lambda_i / 3) log_256(lambda_i / 3)`` over its eigenvalues.
    Source: Q. Wang et al., in Image Fusion: Algorithms and Applications (2008), Ch. 19.
    Range [0, 1], higher is better. N > 2 sources: mean over source pairs.
    """
    f = normalize1(yuliu_gray(fused, "fused"))
    s = [normalize1(x) for x in yuliu_gray(sources, "sources").unbind(1)]
    return mean_over_pairs(_ncie_pair, f, s)


def _vifb_levels(x: Tensor) -> Tensor:
    # metricsMutinf.m: min-max to [0, 1] (constant -> 0), then int16(x * 255) (MATLAB
    # conversion rounds half away from zero).
    flat = x.reshape(x.shape[0], -1)
    mn = flat.min(1).values.view(-1, 1, 1)
    rng = flat.max(1).values.view(-1, 1, 1) - mn
    y = (x - mn) / torch.where(rng > 0, rng, torch.ones_like(rng))
    return round_half_away(torch.where(rng > 0, y, torch.zeros_like(y)) * 255)


def _mi_nats(a: Tensor, b: Tensor) -> Tensor:
    h, pa, pb = _probabilities(a, b)
    return -xlog(pa, torch.log).sum(-1) - xlog(pb, torch.log).sum(-1) + xlog(h, torch.log).sum((-2, -1))


def mutual_information(fused: Tensor, sources: Tensor) -> Tensor:
    """MI = MI(A, F) + MI(B, F) in **nats** (VIFB ``metricsMutinf.m``), per channel, averaged.

    Each channel is min-max normalised and quantised to 256 bins (``int16(x*255)``);
    natural logarithm. Source: G. Qu et al., Electronics Letters 38(7) 2002. Range >= 0,
    higher is better. N > 2 sources: mean over source pairs.
    """
    f, s = per_channel(fused, sources)
    f = _vifb_levels(f)
    srcs = [_vifb_levels(x) for x in s.unbind(1)]
    vals = mean_over_pairs(lambda a, b, x: _mi_nats(a, x) + _mi_nats(b, x), f, srcs)
    return fold_channels(vals, fused.shape[0])


@register_metric("q_nmi", "nr", higher_is_better=True)
class QNMI(NoReferenceMetric):
    """Q_NMI (Hossny), see :func:`q_nmi`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return q_nmi(fused, sources)


@register_metric("q_te", "nr", higher_is_better=True)
class QTE(NoReferenceMetric):
    """Q_TE (Tsallis entropy, q = 1.85), see :func:`q_te`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return q_te(fused, sources)


@register_metric("q_ncie", "nr", higher_is_better=True)
class QNCIE(NoReferenceMetric):
    """Q_NCIE (Wang), see :func:`q_ncie`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return q_ncie(fused, sources)


@register_metric("mi", "nr", higher_is_better=True)
class MI(NoReferenceMetric):
    """MI in nats (VIFB), see :func:`mutual_information`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return mutual_information(fused, sources)
