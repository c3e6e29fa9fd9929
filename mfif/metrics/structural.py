"""Structural-similarity fusion metrics: Piella (Q_S / Q_W / Q_E), Cvejic (Q_C), Yang (Q_Y).

Also the plain SSIM helper the papers' losses use (:func:`ssim`, wrapping kornia).

Naming: "Q_P" is *Zhao's* phase-congruency metric in the toolbox (:mod:`mfif.metrics.phase`);
Piella's index is registered as ``q_piella`` (Q_S), ``q_piella_w`` (Q_W), ``q_piella_e`` (Q_E).
"""
from __future__ import annotations

from typing import Literal

import kornia.metrics
import torch
import torch.nn.functional as F
from torch import Tensor

from mfif.metrics._base import NoReferenceMetric
from mfif.metrics._common import filter2, filter2_sep, gaussian_1d, mean_over_pairs, yuliu_gray
from mfif.metrics.registry import register_metric

__all__ = [
    "ssim",
    "piella",
    "q_piella",
    "q_piella_w",
    "q_piella_e",
    "q_c",
    "q_y",
    "QPiella",
    "QPiellaW",
    "QPiellaE",
    "QC",
    "QY",
]


# ----------------------------------------------------------------------------- plain SSIM
def ssim(
    x: Tensor,
    y: Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    """SSIM (Wang et al. 2004) with a Gaussian window, for training losses (differentiable).

    Wraps :func:`kornia.metrics.ssim` (11x11 window, sigma 1.5 by default, K = 0.01 / 0.03,
    reflect padding inside kornia). UFA-Fuse's loss uses ``1 - ssim(x, y)`` with this window.

    Args:
        x, y: images in ``[0, data_range]``.
        window_size: odd Gaussian window size.
        sigma: Gaussian standard deviation.
        data_range: dynamic range of the images.
        reduction: ``"mean"`` (scalar) or ``"none"`` (per image ``[B]``).

    Shape:
        - x, y: :math:`(B, C, H, W)`
        - output: scalar or :math:`(B,)`
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"x and y must share a [B, C, H, W] shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if window_size % 2 != 1:
        raise ValueError(f"window_size must be odd, got {window_size}")
    if sigma != 1.5:
        # kornia fixes sigma = 1.5; any other value would silently be ignored.
        raise ValueError("kornia.metrics.ssim uses sigma = 1.5; other sigmas are not supported")
    m = kornia.metrics.ssim(x, y, window_size, max_val=data_range)
    per_image = m.mean((1, 2, 3))
    return per_image.mean() if reduction == "mean" else per_image


# ----------------------------------------------------------------------------- toolbox SSIM
# Piella & Heijmans (ICIP 2003) via metricPeilla.m: UIQI approximated by SSIM with tiny K,
# 8x8 box window, L = 255 (Sec. 2 of the paper; toolbox comments).
_PIELLA_WINDOW = torch.full((8, 8), 1.0 / 64, dtype=torch.float64)
_PIELLA_C = (1e-6 * 255) ** 2
# Prewitt-like edge kernels of metricPeilla.m sw = 3 (filter2, 'same').
_PIELLA_EX = torch.tensor([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]], dtype=torch.float64)
_PIELLA_EY = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]], dtype=torch.float64)
# Cvejic / Yang: ssim_yang with a 7x7 Gaussian (sigma 1.5), C1 = C2 = 2e-16.
_YANG_C = 2e-16


# Zheng Liu's original metricPeilla.m calls ssim_index(img1, img2) with its defaults:
# 11x11 Gaussian window (sigma 1.5), K = [0.01 0.03], L = 255 (Wang et al. 2004).
_SSIM_DEFAULT_C = ((0.01 * 255) ** 2, (0.03 * 255) ** 2)


def _box_stats(a: Tensor, b: Tensor, f: Tensor, window: str = "box8") -> dict[str, Tensor]:
    """Window means of every product ssim_index.m needs for (A,B), (F,A), (F,B), in one pass.

    ``window``: ``"box8"`` (8x8 box, Yu Liu's metricPeilla.m) or ``"gauss11"`` (11x11
    Gaussian, sigma 1.5: ssim_index.m's default, Zheng Liu's original metricPeilla.m).
    """
    stack = torch.stack([a, b, f, a * a, b * b, f * f, f * a, f * b], 1)
    if window == "box8":
        m = filter2(stack, _PIELLA_WINDOW.to(a), "valid")
    elif window == "gauss11":
        g = gaussian_1d(11, 1.5, dtype=a.dtype, device=a.device)
        m = filter2_sep(stack, g, g, "valid")
    else:
        raise ValueError(f"window must be 'box8' or 'gauss11', got '{window}'")
    return dict(zip(("a", "b", "f", "aa", "bb", "ff", "fa", "fb"), m.unbind(1)))


def _ssim_from(mx: Tensor, my: Tensor, mxx: Tensor, myy: Tensor, mxy: Tensor, c: float, c2: float | None = None,
               den_eps: float = 0.0) -> Tensor:
    # ssim_index.m with C1 = c, C2 = c2 (default c): variances as E[x^2] - mu^2, exactly as MATLAB.
    # den_eps > 0: "+ 1e-10" added to the denominator (the SESF-Fuse evaluation copy of ssim_yang).
    c2 = c if c2 is None else c2
    mx_sq, my_sq, mxy_ = mx * mx, my * my, mx * my
    sx, sy, sxy = mxx - mx_sq, myy - my_sq, mxy - mxy_
    den = (mx_sq + my_sq + c) * (sx + sy + c2)
    return ((2 * mxy_ + c) * (2 * sxy + c2)) / (den + den_eps if den_eps else den)


def _piella_terms(a: Tensor, b: Tensor, f: Tensor, window: str = "box8") -> tuple[Tensor, Tensor, Tensor]:
    """(lambda-weighted SSIM map, max-variance weights, lambda) of metricPeilla.m."""
    st = _box_stats(a, b, f, window)
    sa = st["aa"] - st["a"] * st["a"]
    sb = st["bb"] - st["b"] * st["b"]
    both_zero = (sa + sb) == 0
    sa = torch.where(both_zero, sa + 0.5, sa)  # Yu Liu's guard against 0/0
    sb = torch.where(both_zero, sb + 0.5, sb)
    lam = sa / (sa + sb)
    c1, c2 = (_PIELLA_C, _PIELLA_C) if window == "box8" else _SSIM_DEFAULT_C
    m_a = _ssim_from(st["f"], st["a"], st["ff"], st["aa"], st["fa"], c1, c2)  # ssim_index(F, A)
    m_b = _ssim_from(st["f"], st["b"], st["ff"], st["bb"], st["fb"], c1, c2)  # ssim_index(F, B)
    q_map = lam * m_a + (1 - lam) * m_b
    return q_map, torch.maximum(sa, sb), lam


def _weighted(q_map: Tensor, cw: Tensor) -> Tensor:
    tot = cw.sum((-2, -1), keepdim=True)
    # All windows flat in both sources: sum(Cw) = 0; fall back to uniform weights.
    cw = torch.where(tot > 0, cw / torch.where(tot > 0, tot, torch.ones_like(tot)), torch.full_like(cw, 1.0 / cw[0].numel()))
    return (cw * q_map).sum((-2, -1))


def _edges(x: Tensor) -> Tensor:
    gx = filter2(x, _PIELLA_EX.to(x), "same")
    gy = filter2(x, _PIELLA_EY.to(x), "same")
    return torch.sqrt(gx * gx + gy * gy)


def _piella_pair(a: Tensor, b: Tensor, f: Tensor, variant: str, window: str = "box8") -> Tensor:
    q_map, cw, _ = _piella_terms(a, b, f, window)
    if variant == "s":
        return q_map.mean((-2, -1))
    q_w = _weighted(q_map, cw)
    if variant == "w":
        return q_w
    q_map_e, cw_e, _ = _piella_terms(_edges(a), _edges(b), _edges(f), window)
    alpha = 1.0  # metricPeilla.m: Qe = Q * Qw^alpha, alpha = 1
    return q_w * _weighted(q_map_e, cw_e) ** alpha


def piella(fused: Tensor, sources: Tensor, variant: Literal["s", "w", "e"] = "s") -> Tensor:
    """Piella & Heijmans' fusion quality index (Yu Liu's ``metricPeilla.m``, sw = 1/2/3).

    ``Q_S = mean(lambda SSIM(F,A) + (1 - lambda) SSIM(F,B))``, lambda = var_A / (var_A + var_B)
    (0.5 where both are 0); ``Q_W`` weights windows by ``max(var_A, var_B)`` normalised;
    ``Q_E = Q_W(A,B,F) * Q_W(A', B', F')`` on Prewitt-like edge images (alpha = 1).
    SSIM with an 8x8 box window, K = 1e-6, L = 255 (UIQI limit), ``yuliu_gray`` images.
    Source: G. Piella & H. Heijmans, ICIP 2003. Range [-1, 1] nominal, higher is better.
    Deviation: if every window is flat in both sources, Q_W/Q_E use uniform weights
    instead of 0/0. N > 2 sources: mean over source pairs.
    """
    if variant not in ("s", "w", "e"):
        raise ValueError(f"variant must be 's', 'w' or 'e', got '{variant}'")
    f = yuliu_gray(fused, "fused")
    s = yuliu_gray(sources, "sources").unbind(1)
    return mean_over_pairs(lambda a, b, x: _piella_pair(a, b, x, variant), f, s)


def q_piella(fused: Tensor, sources: Tensor) -> Tensor:
    """Piella's Q_S (sw = 1). See :func:`piella`."""
    return piella(fused, sources, "s")


def q_piella_w(fused: Tensor, sources: Tensor) -> Tensor:
    """Piella's weighted Q_W (sw = 2). See :func:`piella`."""
    return piella(fused, sources, "w")


def q_piella_e(fused: Tensor, sources: Tensor) -> Tensor:
    """Piella's edge-dependent Q_E (sw = 3). See :func:`piella`."""
    return piella(fused, sources, "e")


def _gauss7_stats(a: Tensor, b: Tensor, f: Tensor, exact_flat: bool = False) -> dict[str, Tensor]:
    """7x7 Gaussian (sigma 1.5) 'valid' means of every product ssim_yang needs, in one pass.

    ``fspecial('gaussian', 7, 1.5)`` is applied as two 1-D passes (rounding-level
    difference from MATLAB's 2-D ``filter2``). ``exact_flat``: in a window where an image is
    constant its second moments are set to ``mu^2`` (and ``mu_x mu_y`` with any other image),
    so its variance and covariances are exactly 0 as in exact arithmetic, instead of
    rounding noise (every tap of the window is non-zero, so "constant" is max == min).
    """
    g = gaussian_1d(7, 1.5, dtype=a.dtype, device=a.device)
    stack = torch.stack([a, b, f, a * a, b * b, f * f, a * b, a * f, b * f], 1)
    m = filter2_sep(stack, g, g, "valid")
    st = dict(zip(("a", "b", "f", "aa", "bb", "ff", "ab", "af", "bf"), m.unbind(1)))
    if exact_flat:
        img = torch.stack([a, b, f], 1)
        hi = F.max_pool2d(img, 7, stride=1)
        flat = dict(zip("abf", (hi == -F.max_pool2d(-img, 7, stride=1)).unbind(1)))
        for x, y in ("aa", "bb", "ff", "ab", "af", "bf"):
            snap = flat[x] | flat[y]
            st[x + y] = torch.where(snap, st[x] * st[y], st[x + y])
    return st


def _cvejic_pair(a: Tensor, b: Tensor, f: Tensor, exact_flat: bool = False) -> Tensor:
    st = _gauss7_stats(a, b, f, exact_flat)
    m_af = _ssim_from(st["a"], st["f"], st["aa"], st["ff"], st["af"], _YANG_C)
    m_bf = _ssim_from(st["b"], st["f"], st["bb"], st["ff"], st["bf"], _YANG_C)
    c_af = st["af"] - st["a"] * st["f"]
    c_bf = st["bf"] - st["b"] * st["f"]
    den = c_af + c_bf
    # 0/0 (flat windows) gives NaN in metricCvejic.m; we use s = 0.5 there.
    s = torch.where(den != 0, c_af / torch.where(den != 0, den, torch.ones_like(den)), torch.full_like(den, 0.5))
    sim = s * m_af + (1 - s) * m_bf
    sim = torch.where(s < 0, torch.zeros_like(sim), sim)  # index = find(simXYF < 0); sim = 0
    sim = torch.where(s > 1, torch.ones_like(sim), sim)  # index = find(simXYF > 1); sim = 1
    return sim.mean((-2, -1))


def q_c(fused: Tensor, sources: Tensor) -> Tensor:
    """Q_C, Cvejic's covariance-weighted SSIM metric (``metricCvejic(A, B, F, 2)``).

    ``s = cov(A,F) / (cov(A,F) + cov(B,F))``; ``Q = mean(s SSIM(A,F) + (1-s) SSIM(B,F))``
    with the map set to 0 where s < 0 and to 1 where s > 1. SSIM with a 7x7 Gaussian
    (sigma 1.5), C1 = C2 = 2e-16, ``yuliu_gray`` images. Source: N. Cvejic et al.,
    Int. J. Information and Communication Engineering 2(3) 2006. Range [0, 1] nominal,
    higher is better. Deviation: where cov(A,F) + cov(B,F) == 0 (flat windows) the
    toolbox returns NaN; we use s = 0.5. With C = 2e-16 SSIM in flat windows is a ratio of
    rounding noise, so values on images with flat regions are implementation-dependent.
    N > 2 sources: mean over source pairs.
    """
    f = yuliu_gray(fused, "fused")
    s = yuliu_gray(sources, "sources").unbind(1)
    return mean_over_pairs(_cvejic_pair, f, s)


def _yang_pair(a: Tensor, b: Tensor, f: Tensor, exact_flat: bool = False, den_eps: float = 0.0) -> Tensor:
    """Q_Y of one source pair. ``den_eps``: the SESF-Fuse evaluation code's NaN guard (``+ den_eps``
    in every SSIM denominator and in lambda's, Keep-Passion/SESF-Fuse ``metricYang.m``) in place
    of Yu Liu's (lambda = 0.5 where both variances are 0)."""
    st = _gauss7_stats(a, b, f, exact_flat)
    m_ab = _ssim_from(st["a"], st["b"], st["aa"], st["bb"], st["ab"], _YANG_C, den_eps=den_eps)
    m_af = _ssim_from(st["a"], st["f"], st["aa"], st["ff"], st["af"], _YANG_C, den_eps=den_eps)
    m_bf = _ssim_from(st["b"], st["f"], st["bb"], st["ff"], st["bf"], _YANG_C, den_eps=den_eps)
    sa = st["aa"] - st["a"] * st["a"]
    sb = st["bb"] - st["b"] * st["b"]
    if den_eps:
        lam = sa / (sa + sb + den_eps)
    else:
        both_zero = (sa + sb) == 0
        sa = torch.where(both_zero, sa + 0.5, sa)  # Yu Liu's NaN guard
        sb = torch.where(both_zero, sb + 0.5, sb)
        lam = sa / (sa + sb)
    use_weighted = m_ab >= 0.75
    q = torch.where(use_weighted, lam * m_af + (1 - lam) * m_bf, torch.maximum(m_af, m_bf))
    return q.mean((-2, -1))


def q_y(fused: Tensor, sources: Tensor) -> Tensor:
    """Q_Y, Yang et al.'s SSIM-based metric (Yu Liu's ``metricYang.m``).

    Where SSIM(A,B) >= 0.75: ``lambda SSIM(A,F) + (1-lambda) SSIM(B,F)`` with
    lambda = var_A / (var_A + var_B) (0.5 where both 0); elsewhere ``max(SSIM(A,F), SSIM(B,F))``;
    mean over the map. SSIM with a 7x7 Gaussian (sigma 1.5), C1 = C2 = 2e-16,
    ``yuliu_gray`` images. Source: C. Yang et al., Information Fusion 9 (2008) 156-160.
    Range [0, 1] nominal, higher is better. In flat windows SSIM with C = 2e-16 is a ratio
    of rounding noise: images with flat regions give implementation-dependent values
    (Yu Liu's MATLAB fusion-metric toolbox, yuliu316316/MFIF-Metrics). N > 2 sources: mean over source pairs.
    """
    f = yuliu_gray(fused, "fused")
    s = yuliu_gray(sources, "sources").unbind(1)
    return mean_over_pairs(_yang_pair, f, s)


@register_metric("q_piella", "nr", higher_is_better=True)
class QPiella(NoReferenceMetric):
    """Piella's Q_S, see :func:`piella`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return q_piella(fused, sources)


@register_metric("q_piella_w", "nr", higher_is_better=True)
class QPiellaW(NoReferenceMetric):
    """Piella's Q_W, see :func:`piella`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return q_piella_w(fused, sources)


@register_metric("q_piella_e", "nr", higher_is_better=True)
class QPiellaE(NoReferenceMetric):
    """Piella's Q_E, see :func:`piella`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return q_piella_e(fused, sources)


@register_metric("q_c", "nr", higher_is_better=True)
class QC(NoReferenceMetric):
    """Cvejic's Q_C, see :func:`q_c`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return q_c(fused, sources)


@register_metric("q_y", "nr", higher_is_better=True)
class QY(NoReferenceMetric):
    """Yang's Q_Y, see :func:`q_y`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return q_y(fused, sources)
