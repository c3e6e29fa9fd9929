"""Human-perception fusion metrics: Q_CB (Chen-Blum), Q_CV (Chen-Varshney), VIFF (Han et al.)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mfif.metrics._base import NoReferenceMetric
from mfif.metrics._common import (
    filter2,
    filter2_sep,
    fold_channels,
    gaussian_1d,
    mean_over_pairs,
    normalize1,
    per_channel,
    yuliu_gray,
)
from mfif.metrics.registry import register_metric

__all__ = ["q_cb", "q_cv", "viff", "QCB", "QCV", "VIFF"]


def _freqspace(h: int, w: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """MATLAB ``[u, v] = freqspace([h, w], 'meshgrid')``: u along columns, v along rows."""
    fu = (torch.arange(w, dtype=like.dtype, device=like.device) - w // 2) * (2.0 / w)
    fv = (torch.arange(h, dtype=like.dtype, device=like.device) - h // 2) * (2.0 / h)
    v, u = torch.meshgrid(fv, fu, indexing="ij")
    return u, v


def _filter_centered_spectrum(x: Tensor, centered_filter: Tensor) -> Tensor:
    """``real(ifft2(ifftshift(fftshift(fft2(x)) .* S)))`` (= multiply by ``ifftshift(S)``).

    The filters used here are even in frequency, so the result is real up to rounding
    (the toolbox keeps the ~1e-16 imaginary part; we drop it).
    """
    spec = torch.fft.fft2(x) * torch.fft.ifftshift(centered_filter, dim=(-2, -1))
    return torch.fft.ifft2(spec).real


# ----------------------------------------------------------------------------- Q_CB
# metricChenBlum.m constants: CSF (DoG) f0, f1, a; masking k, h, p, q, Z.
_CB_F0, _CB_F1, _CB_A = 15.3870, 1.3456, 0.7622
_CB_K, _CB_H, _CB_P, _CB_Q, _CB_Z = 1.0, 1.0, 3.0, 2.0, 1e-4


def _gaussian2d_sep(sigma: float, like: Tensor) -> tuple[Tensor, Tensor]:
    # gaussian2d in metricChenBlum.m: exp(-(x^2+y^2)/(2 s^2)) / (2 pi s^2) on -15:15, not
    # normalised; written as the product of two 1-D factors.
    ax = torch.arange(-15, 16, dtype=like.dtype, device=like.device)
    g = torch.exp(-(ax * ax) / (2 * sigma * sigma))
    return g / (2 * math.pi * sigma * sigma), g


def _cb_masked_contrast(x: Tensor, g1: tuple[Tensor, Tensor], g2: tuple[Tensor, Tensor]) -> Tensor:
    c = (filter2_sep(x, *g1) / filter2_sep(x, *g2) - 1).abs()
    return (_CB_K * c.pow(_CB_P)) / (_CB_H * c.pow(_CB_Q) + _CB_Z)


def _ratio_min_max(x: Tensor, y: Tensor) -> Tensor:
    # (x/y) where x < y else (y/x); 0/0 (both zero) -> 1.
    small, big = torch.minimum(x, y), torch.maximum(x, y)
    return torch.where(big > 0, small / torch.where(big > 0, big, torch.ones_like(big)), torch.ones_like(big))


def _cb_pair(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    h, w = f.shape[-2:]
    u, v = _freqspace(h, w, f)
    u, v = u * (w / 30), v * (h / 30)  # DoG1: LL = lie/30, HH = hang/30
    r = torch.sqrt(u * u + v * v)
    sd = torch.exp(-((r / _CB_F0) ** 2)) - _CB_A * torch.exp(-((r / _CB_F1) ** 2))
    x = _filter_centered_spectrum(torch.stack([a, b, f], 1), sd)
    g1, g2 = _gaussian2d_sep(2.0, f), _gaussian2d_sep(4.0, f)
    cp = _cb_masked_contrast(x, g1, g2)
    c1, c2, cf = cp.unbind(1)
    q1, q2 = _ratio_min_max(c1, cf), _ratio_min_max(c2, cf)
    s1, s2 = c1 * c1, c2 * c2
    den = s1 + s2
    safe = torch.where(den > 0, den, torch.ones_like(den))
    lam1 = torch.where(den > 0, s1 / safe, torch.full_like(den, 0.5))
    lam2 = torch.where(den > 0, s2 / safe, torch.full_like(den, 0.5))
    return (lam1 * q1 + lam2 * q2).mean((-2, -1))


def q_cb(fused: Tensor, sources: Tensor) -> Tensor:
    """Q_CB, Chen & Blum's perceptual metric (``metricChenBlum.m``).

    DoG contrast-sensitivity filter in frequency (f0 = 15.3870, f1 = 1.3456, a = 0.7622,
    grid ``freqspace`` scaled by (W/30, H/30)); local contrast from 31x31 Gaussians with
    sigma 2 and 4; masking ``C^3 / (C^2 + 1e-4)``; contrast-preservation ratio weighted by
    the sources' saliency ``C^2``. ``normalize1`` ``yuliu_gray`` images.
    Source: Y. Chen & R. Blum, Image and Vision Computing 27 (2009) 1421-1432.
    Range [0, 1], higher is better. Deviation: 0/0 cases (zero masked contrast) are
    defined (ratio 1, equal saliency weights) instead of NaN. N > 2: mean over pairs.
    """
    f = normalize1(yuliu_gray(fused, "fused"))
    s = [normalize1(x) for x in yuliu_gray(sources, "sources").unbind(1)]
    return mean_over_pairs(_cb_pair, f, s)


# ----------------------------------------------------------------------------- Q_CV
_CV_WINDOW = 16  # metricChen.m: local regions of 16 x 16
_CV_ALPHA = 5.0  # saliency exponent (alpha = 5 in metricChen.m)
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)


def _block_sum(x: Tensor, n: int) -> Tensor:
    # blkproc(x, [n n], fun) with MATLAB's zero padding to whole blocks; sums per block.
    h, w = x.shape[-2:]
    ph, pw = (-h) % n, (-w) % n
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    hb, wb = x.shape[-2] // n, x.shape[-1] // n
    return x.reshape(*x.shape[:-2], hb, n, wb, n).sum((-3, -1))


def _cv_pair(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    h, w = f.shape[-2:]
    sx = _SOBEL_X.to(f)
    sy = sx.t().contiguous()

    def strength(x: Tensor) -> Tensor:
        gx, gy = filter2(x, sx), filter2(x, sy)
        return torch.sqrt(gx * gx + gy * gy)

    lam1 = _block_sum(strength(a).pow(_CV_ALPHA), _CV_WINDOW)
    lam2 = _block_sum(strength(b).pow(_CV_ALPHA), _CV_WINDOW)
    u, v = _freqspace(h, w, f)
    u, v = u * (w / 8), v * (h / 8)  # "length 3": lie/8, hang/8
    r = torch.sqrt(u * u + v * v)
    theta_m = 2.6 * (0.0192 + 0.144 * r) * torch.exp(-((0.144 * r) ** 1.1))  # Mannos-Sakrison CSF
    diff = _filter_centered_spectrum(torch.stack([a - f, b - f], 1), theta_m)
    d = _block_sum(diff * diff, _CV_WINDOW) / (_CV_WINDOW * _CV_WINDOW)  # mean2 over padded block
    d1, d2 = d.unbind(1)
    num = (lam1 * d1 + lam2 * d2).sum((-2, -1))
    den = (lam1 + lam2).sum((-2, -1))
    # Sources without any edge: sum(lambda) = 0; fall back to equal block weights.
    uniform = (d1 + d2).mean((-2, -1))
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), uniform)


def q_cv(fused: Tensor, sources: Tensor) -> Tensor:
    """Q_CV, Chen & Varshney's regional perceptual metric (``metricChen.m``). **Lower is better.**

    Sobel strength saliency ``sum(G^5)`` per 16x16 block (zero-padded like ``blkproc``);
    differences A-F, B-F filtered with the Mannos-Sakrison CSF on the ``freqspace`` grid
    scaled by (W/8, H/8); block means of the squared filtered difference;
    ``Q = sum(l_A D_A + l_B D_B) / sum(l_A + l_B)``. ``normalize1`` ``yuliu_gray`` images.
    Source: H. Chen & P. Varshney, Information Fusion 8 (2007) 193-207. Range >= 0
    (0 = F equal to the sources where they are salient), lower is better. The toolbox
    returns a complex number with |imag| < 1e-15; this is its real part. Deviation: if
    neither source has any edge (sum of saliencies 0) blocks are weighted equally.
    N > 2 sources: mean over source pairs.
    """
    f = normalize1(yuliu_gray(fused, "fused"))
    s = [normalize1(x) for x in yuliu_gray(sources, "sources").unbind(1)]
    return mean_over_pairs(_cv_pair, f, s)


# ----------------------------------------------------------------------------- VIFF
_VIFF_NOISE = 0.005 * 255 * 255  # visual noise sq (metricsVIF.m)
_VIFF_C = 1e-7  # error comparison parameter
_VIFF_P = (1.0 / 2.15, 0.0, 0.15 / 2.15, 1.0 / 2.15)  # p = [1, 0, 0.15, 1] ./ 2.15


def _viff_scale_stats(ref: Tensor, dist: Tensor, scale: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """ComVidVindG's local statistics at one scale: (sigma1^2, sigma2^2, sigma12, ref, dist)."""
    n = 2 ** (4 - scale + 1) + 1  # window N = 17, 9, 5, 3; fspecial('gaussian', N, N/5)
    g1 = gaussian_1d(n, n / 5.0, dtype=ref.dtype, device=ref.device)
    if scale > 1:
        ref = filter2_sep(ref, g1, g1, "valid")[..., ::2, ::2]
        dist = filter2_sep(dist, g1, g1, "valid")[..., ::2, ::2]
    m = filter2_sep(torch.stack([ref, dist, ref * ref, dist * dist, ref * dist], 1), g1, g1, "valid")
    mu1, mu2, e11, e22, e12 = m.unbind(1)
    return e11 - mu1 * mu1, e22 - mu2 * mu2, e12 - mu1 * mu2, ref, dist


def _viff_terms(s1: Tensor, s2: Tensor, s12: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(VID map, VIND map, gain g) from the local statistics, with metricsVIF.m's clamps."""
    s1 = s1.clamp_min(0)
    s2 = s2.clamp_min(0)
    g = s12 / (s1 + 1e-10)
    sv = s2 - g * s12
    small1 = s1 < 1e-10
    g = torch.where(small1, torch.zeros_like(g), g)
    sv = torch.where(small1, s2, sv)
    s1 = torch.where(small1, torch.zeros_like(s1), s1)
    small2 = s2 < 1e-10
    g = torch.where(small2, torch.zeros_like(g), g)
    sv = torch.where(small2, torch.zeros_like(sv), sv)
    neg = g < 0
    sv = torch.where(neg, s2, sv)
    g = torch.where(neg, torch.zeros_like(g), g)
    sv = torch.where(sv <= 1e-10, torch.full_like(sv, 1e-10), sv)
    vid = torch.log10(1 + g * g * s1 / (sv + _VIFF_NOISE))
    vind = torch.log10(1 + s1 / _VIFF_NOISE)
    return vid, vind, g


def _viff_pair(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    # ComVidVindG(A, F) and ComVidVindG(B, F), both sources processed in one stack.
    ref, dist = torch.stack([a, b], 1), torch.stack([f, f], 1)
    total = torch.zeros(f.shape[0], dtype=f.dtype, device=f.device)
    for scale, p in zip(range(1, 5), _VIFF_P):
        s1, s2, s12, ref, dist = _viff_scale_stats(ref, dist, scale)
        vid, vind, g = _viff_terms(s1, s2, s12)
        pick_a = g[:, 0] < g[:, 1]  # L = M_G1 < M_G2: take the source with the smaller gain
        num = torch.where(pick_a, vid[:, 0], vid[:, 1]).add(_VIFF_C).sum((-2, -1))
        den = torch.where(pick_a, vind[:, 0], vind[:, 1]).add(_VIFF_C).sum((-2, -1))
        total = total + p * (num / den)
    return total


def viff(fused: Tensor, sources: Tensor) -> Tensor:
    """VIFF, visual information fidelity for fusion (MEFB ``metricsVIF.m``), per channel.

    4 scales, Gaussian windows N = 2^(5-s)+1, sigma N/5 ('valid'), downsampling by 2;
    visual noise 0.005 * 255^2; C = 1e-7; scale weights [1, 0, 0.15, 1] / 2.15; per pixel
    the source with the smaller gain g is used. Computed on R, G, B separately and averaged
    (the Lab branch of the original is not reached through the MEFB wrapper).
    Source: Y. Han et al., Information Fusion 14 (2013) 127-135. Range >= 0 (about [0, 1]),
    higher is better. N > 2 sources: mean over source pairs.
    """
    f, s = per_channel(fused, sources)
    return fold_channels(mean_over_pairs(_viff_pair, f, list(s.unbind(1))), fused.shape[0])


@register_metric("q_cb", "nr", higher_is_better=True)
class QCB(NoReferenceMetric):
    """Chen-Blum Q_CB, see :func:`q_cb`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return q_cb(fused, sources)


@register_metric("q_cv", "nr", higher_is_better=False)
class QCV(NoReferenceMetric):
    """Chen-Varshney Q_CV, see :func:`q_cv`. **Lower is better.**"""

    higher_is_better = False

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return q_cv(fused, sources)


@register_metric("viff", "nr", higher_is_better=True)
class VIFF(NoReferenceMetric):
    """VIFF (Han et al.), see :func:`viff`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return viff(fused, sources)
