"""Gradient-based fusion metrics: Q_G (Q^AB/F, also GACN's loss), Q_SF, AVG, SF, EI.

:func:`q_abf` is the single implementation of Xydeas-Petrovic's edge-preservation measure;
the metric ``q_g`` and GACN's loss (Ma et al., Eqs. 8-18) both call it, with different
constants and optional smooth (sigmoid) replacements of the non-differentiable steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor

from mfif.metrics._base import NoReferenceMetric
from mfif.metrics._common import (
    filter2,
    fold_channels,
    mean_over_pairs,
    per_channel,
    yuliu_gray,
)
from mfif.metrics.registry import register_metric

__all__ = [
    "QabfConstants",
    "PETROVIC",
    "GACN_LOSS",
    "q_abf",
    "q_g",
    "q_sf",
    "average_gradient",
    "spatial_frequency",
    "edge_intensity",
    "QG",
    "QSF",
    "AVG",
    "SF",
    "EI",
]

# Sobel templates exactly as filter2 uses them in metricXydeas.m (correlation).
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)
_SOBEL_Y = _SOBEL_X.t().contiguous()
# MATLAB fspecial('sobel') (used with imfilter by MEFB's edge intensity).
_FSPECIAL_SOBEL = torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]], dtype=torch.float64)


@dataclass(frozen=True)
class QabfConstants:
    """Sigmoid constants of Q^AB/F (Xydeas & Petrovic 2000, Eqs. 5-6; Ma et al. Eqs. 15-16)."""

    gamma_g: float
    k_g: float
    sigma_g: float
    gamma_a: float
    k_a: float
    sigma_a: float


#: Petrovic's constants, restored by Yu Liu in the toolbox's metricXydeas.m (the metric).
PETROVIC = QabfConstants(0.9994, -15.0, 0.5, 0.9879, -22.0, 0.8)
#: GACN's loss constants (Ma et al., Sec. 3.2 after Eq. 16: Gamma=1, k_g=-10, k_a=-20,
#: sigma_g=0.5, sigma_a=0.75), also the original Zheng Liu toolbox values.
GACN_LOSS = QabfConstants(1.0, -10.0, 0.5, 1.0, -20.0, 0.75)


def _as_gray_stack(x: Tensor, name: str) -> Tensor:
    if x.dim() == 4:
        if x.shape[1] != 1:
            raise ValueError(f"{name} must be single-channel [B, 1, H, W] (convert to gray first), got {tuple(x.shape)}")
        return x[:, 0]
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape [B, 1, H, W] or [B, H, W], got {tuple(x.shape)}")
    return x


def _safe_sqrt(x: Tensor) -> Tensor:
    # sqrt with a finite (zero) gradient at 0, identical values.
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))


def _sobel(x: Tensor) -> tuple[Tensor, Tensor]:
    return filter2(x, _SOBEL_X.to(x)), filter2(x, _SOBEL_Y.to(x))


def _guard(x: Tensor, eps: float) -> Tensor:
    # metricXydeas.m: x = x + (x == 0) * 1e-5
    return torch.where(x == 0, x + eps, x)


def _floor(x: Tensor, eps: float) -> Tensor:
    """``x`` moved away from 0 to at least ``eps`` in magnitude, sign kept (0 -> +eps).

    The toolbox's guard (:func:`_guard`) only replaces exact zeros. On 8-bit images at 0..255
    a Sobel response is an integer, so a nonzero strength is >= 1 and the guard is enough; on the
    continuous images a loss sees, F's gradient can be 1e-20 without being 0, and then the
    strength ratio ``g_S / g_F`` (derivative ``g_S / g_F^2``) and the orientation
    ``atan(g_y / g_x)`` (derivative ``~ 1 / g_F``) overflow in the backward pass; a sigmoid
    weight that underflows to exactly 0 turns ``0 * inf`` into NaN. With the floor both
    derivatives stay below ``~1 / eps`` and the floored values pass no gradient.
    """
    return torch.where(x.abs() < eps, torch.copysign(torch.full_like(x, eps), x), x)


def q_abf(
    a: Tensor,
    b: Tensor,
    f: Tensor,
    constants: QabfConstants = PETROVIC,
    L: float = 1.0,
    soft_k: Optional[float] = None,
    orientation: Literal["abs", "smooth"] = "abs",
    orientation_k: Optional[float] = None,
    eps: float = 1e-5,
    alignment: Literal["eq4", "liu"] = "eq4",
    pooling: Literal["global", "pixel"] = "global",
    guards: Literal["toolbox", "mefb", "floor"] = "toolbox",
) -> Tensor:
    """Q^AB/F edge-information preservation (Xydeas & Petrovic 2000), differentiable.

    With the defaults this is Yu Liu's corrected ``metricXydeas.m`` exactly (Sobel via
    ``filter2`` with zero padding, ``atan(gy/gx)`` with ``gx == 0 -> 1e-5``, min/max
    strength ratio with ``1e-5`` zero guards applied in the toolbox's order, alignment
    ``1 - |a_A - a_F| 2/pi`` (Eq. 4), weights ``g^L`` and the global normalisation of Eq. 8).

    GACN's loss (Ma et al. 2022) uses ``constants=GACN_LOSS`` and
    ``soft_k`` = k of Eq. 12 (the paper uses 1000): the Heaviside choice of Eq. 10 becomes
    the sigmoid blend of Eq. 13. ``orientation="smooth"`` replaces ``|.|`` in Eq. 11 by
    Eq. 14 (``d (2 sigmoid(k d) - 1)``, k = ``orientation_k`` or ``soft_k``); the paper's
    Table 2 prefers ``"abs"`` (autograd handles |.|). As ``soft_k`` grows, the soft value
    tends to the hard one.

    Range [0, 1] with the Petrovic constants (upper bound 0.9994 * 0.9879); higher is better.
    Inputs are used at their own scale: the metric uses gray levels 0..255 (the strength
    ratio's zero guard is not scale invariant in Yu Liu's MATLAB toolbox, yuliu316316/MFIF-Metrics).

    Args:
        a, b: source images.
        f: fused image.
        constants: sigmoid constants, :data:`PETROVIC` (metric) or :data:`GACN_LOSS`.
        L: weight exponent, ``w = g^L`` (Eq. 18, gamma = 1).
        soft_k: None for the exact (hard) comparison of Eq. 10, else k of Eq. 12-13.
        orientation: ``"abs"`` (Eq. 11) or ``"smooth"`` (Eq. 14).
        orientation_k: k of Eq. 14 (defaults to ``soft_k``).
        eps: the toolbox's zero guard (1e-5).
        alignment: ``"eq4"`` (``1 - |a_S - a_F| 2/pi``, Eq. 4, Yu Liu's correction) or
            ``"liu"`` (``||a_S - a_F| - pi/2| 2/pi``, Zheng Liu's original ``metricXydeas.m``).
        pooling: ``"global"`` (Eq. 8: sums of ``Q w`` over sums of ``w``) or ``"pixel"``
            (the original toolbox's ``mean2((Q_AF w_A + Q_BF w_B) ./ (w_A + w_B))``).
        guards: ``"toolbox"`` (the ``1e-5`` zero guards above) or ``"mefb"`` (MEFB/VIFB
            ``metricsQabf.m``: ``conv2`` Sobel, angle ``pi/2`` where ``g_x == 0``, strength
            ratio ``g_F`` where ``g_S == g_F``, unguarded weights; hard comparison only) or
            ``"floor"`` (the loss's guards: every guarded quantity - ``g_x`` of the orientation,
            the strengths in the ratios and weights - is at least ``eps`` in magnitude, so
            gradients stay finite on flat, saturated and identical images; :func:`_floor`). On
            8-bit images at 0..255 (integer Sobel responses) ``"floor"`` equals ``"toolbox"``.

    Returns:
        Per-image Q^AB/F ``[B]``.

    Shape:
        - a, b, f: :math:`(B, 1, H, W)` or :math:`(B, H, W)`
        - output: :math:`(B,)`
    """
    a, b, f = _as_gray_stack(a, "a"), _as_gray_stack(b, "b"), _as_gray_stack(f, "f")
    if not (a.shape == b.shape == f.shape):
        raise ValueError(f"a, b, f must share a shape, got {tuple(a.shape)}, {tuple(b.shape)}, {tuple(f.shape)}")
    if orientation not in ("abs", "smooth"):
        raise ValueError(f"orientation must be 'abs' or 'smooth', got '{orientation}'")
    ok = orientation_k if orientation_k is not None else soft_k
    if orientation == "smooth" and ok is None:
        raise ValueError("orientation='smooth' needs orientation_k (or soft_k), Eq. 14")
    if alignment not in ("eq4", "liu") or pooling not in ("global", "pixel") or guards not in ("toolbox", "mefb", "floor"):
        raise ValueError(
            f"alignment/pooling/guards must be eq4|liu, global|pixel, toolbox|mefb|floor; got {alignment}, {pooling}, {guards}"
        )
    if guards == "mefb" and soft_k is not None:
        raise ValueError("guards='mefb' reproduces a metric: use the hard comparison (soft_k=None)")

    def strength_angle(x: Tensor) -> tuple[Tensor, Tensor]:
        gx, gy = _sobel(x)
        g = _safe_sqrt(gx * gx + gy * gy)  # Eq. 8
        if guards == "mefb":
            # conv2 with [-1 0 1; -2 0 2; -1 0 1] is minus our filter2 x-derivative; pi/2 where gx == 0.
            gx = -gx
            flat = gx == 0
            angle = torch.atan(gy / torch.where(flat, torch.ones_like(gx), gx))
            return g, torch.where(flat, torch.full_like(gx, math.pi / 2), angle)
        return g, torch.atan(gy / guard(gx, eps))  # Eq. 9 with the toolbox's gx guard

    guard = _floor if guards == "floor" else _guard
    g_a, al_a = strength_angle(a)
    g_b, al_b = strength_angle(b)
    g_f, al_f = strength_angle(f)
    c = constants

    def preservation(g_s: Tensor, al_s: Tensor, g_f_cmp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if guards == "mefb":
            return _mefb_preservation(g_s, al_s - al_f, g_f_cmp, c, alignment), g_s, g_f_cmp
        # Toolbox order: compare with F's strength as it stands, then guard the source,
        # then guard F (the guarded F is what the second source is compared with).
        g_s_g = guard(g_s, eps)
        r_down = g_f_cmp / g_s_g  # used where g_S > g_F
        g_f_g = guard(g_f_cmp, eps)
        r_up = g_s_g / g_f_g
        if soft_k is None:
            rel = torch.where(g_s > g_f_cmp, r_down, r_up)  # Eq. 10
        else:
            w = torch.sigmoid(soft_k * (g_s - g_f_cmp))  # Eqs. 12-13
            rel = w * r_down + (1 - w) * r_up
        d = al_s - al_f
        if alignment == "liu":
            align = (d.abs() - math.pi / 2).abs() * 2 / math.pi  # Zheng Liu's original metricXydeas.m
        elif orientation == "abs":
            align = 1 - d.abs() * 2 / math.pi  # Eq. 11 (Eq. 4 of Xydeas & Petrovic)
        else:
            align = 1 - d * (2 * torch.sigmoid(ok * d) - 1) * 2 / math.pi  # Eq. 14
        q_g = c.gamma_g / (1 + torch.exp(c.k_g * (rel - c.sigma_g)))  # Eq. 15
        q_a = c.gamma_a / (1 + torch.exp(c.k_a * (align - c.sigma_a)))  # Eq. 16
        return q_g * q_a, g_s_g, g_f_g  # Eq. 17

    q_af, g_a_w, g_f_guarded = preservation(g_a, al_a, g_f)
    q_bf, g_b_w, _ = preservation(g_b, al_b, g_f_guarded)
    w_a, w_b = g_a_w**L, g_b_w**L  # Eq. 18 weights, w = g^gamma
    if pooling == "pixel":  # original toolbox: per-pixel normalisation, then the mean
        return ((q_af * w_a + q_bf * w_b) / (w_a + w_b)).mean((-2, -1))
    num = (q_af * w_a + q_bf * w_b).sum((-2, -1))
    return num / (w_a + w_b).sum((-2, -1))  # Eq. 18 / Eq. 8 (global normalisation)


def _mefb_preservation(g_s: Tensor, d: Tensor, g_f: Tensor, c: QabfConstants, alignment: str) -> Tensor:
    """Q^SF of MEFB's ``metricsQabf.m``: no zero guards, ratio ``g_F`` where ``g_S == g_F``."""
    one = torch.ones_like(g_s)
    down = g_f / torch.where(g_s > 0, g_s, one)  # g_S > g_F >= 0
    up = g_s / torch.where(g_f > 0, g_f, one)  # g_S < g_F
    rel = torch.where(g_s > g_f, down, torch.where(g_s == g_f, g_f, up))
    align = 1 - d.abs() * 2 / math.pi if alignment == "eq4" else (d.abs() - math.pi / 2).abs() * 2 / math.pi
    return c.gamma_g / (1 + torch.exp(c.k_g * (rel - c.sigma_g))) * c.gamma_a / (1 + torch.exp(c.k_a * (align - c.sigma_a)))


def q_g(fused: Tensor, sources: Tensor) -> Tensor:
    """Q_G = Q^AB/F, Yu Liu's corrected ``metricXydeas`` on ``yuliu_gray`` images.

    Source: Xydeas & Petrovic, Electronics Letters 36(4) 2000; toolbox
    yuliu316316/MFIF ``metricXydeas.m``. Range [0, 1], higher is better.
    N > 2 sources: mean over source pairs.

    Shape:
        - fused: :math:`(B, C, H, W)`, sources: :math:`(B, N, C, H, W)` -> :math:`(B,)`
    """
    f = yuliu_gray(fused, "fused")
    s = yuliu_gray(sources, "sources").unbind(1)
    return mean_over_pairs(lambda a, b, x: q_abf(a, b, x), f, s)


def q_sf(fused: Tensor, sources: Tensor) -> Tensor:
    """Q_SF, Zheng et al.'s ratio of spatial-frequency error (``metricZheng.m``).

    Source: Y. Zheng et al., Information Fusion 8 (2007) 177-192, as coded in
    zhengliu6699/imageFusionMetrics ``metricZheng.m`` (4 directions, diagonal weight
    sqrt(2)/2, sums divided by H*W; reference from the per-pixel max |gradient| of the
    sources). ``yuliu_gray`` images. Value ``(SF_F - SF_R) / SF_R``: ideal 0 (usually
    negative); **closer to 0 is better**. If both sources are constant (SF_R = 0) the
    ratio is undefined; we report 0. N > 2 sources: the reference gradient is the max
    over all N sources (the metric's own definition generalises directly).

    Shape:
        - fused: :math:`(B, C, H, W)`, sources: :math:`(B, N, C, H, W)` -> :math:`(B,)`
    """
    f = yuliu_gray(fused, "fused")
    s = yuliu_gray(sources, "sources")
    hw = f.shape[-1] * f.shape[-2]
    wd = math.sqrt(2) / 2

    def diffs(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        rf = x[..., :, 1:] - x[..., :, :-1]
        cf = x[..., 1:, :] - x[..., :-1, :]
        md = x[..., 1:, 1:] - x[..., :-1, :-1]  # im(i,j) - im(i-1,j-1)
        sd = x[..., 1:, :-1] - x[..., :-1, 1:]  # im(i,j) - im(i-1,j+1)
        return rf, cf, md, sd

    def ssum(x: Tensor) -> Tensor:
        return (x * x).sum((-2, -1))

    rf, cf, md, sd = diffs(f)
    rf_, cf_ = torch.sqrt(ssum(rf) / hw), torch.sqrt(ssum(cf) / hw)
    mdf, sdf = torch.sqrt(wd * ssum(md) / hw), torch.sqrt(wd * ssum(sd) / hw)
    sf_f = torch.sqrt(rf_ * rf_ + cf_ * cf_ + mdf * mdf + sdf * sdf)
    ref = [d.abs().max(1).values for d in diffs(s)]  # max |gradient| over the sources
    sf_r = torch.sqrt(ssum(ref[0]) / hw + ssum(ref[1]) / hw + wd * ssum(ref[2]) / hw + wd * ssum(ref[3]) / hw)
    safe = torch.where(sf_r > 0, sf_r, torch.ones_like(sf_r))
    return torch.where(sf_r > 0, (sf_f - sf_r) / safe, torch.zeros_like(sf_r))


def average_gradient(fused: Tensor, sources: Optional[Tensor] = None) -> Tensor:
    """AVG, average gradient (MEFB ``metricsAvg_gradient.m``), per channel then averaged.

    MATLAB ``gradient`` (central differences inside, one-sided at the border),
    ``s = sqrt((gx^2 + gy^2) / 2)``, ``AG = sum(s) / ((H-1)(W-1))``. Range >= 0, higher is
    better. Depends on F only (``sources`` only fixes the colour convention).
    """
    f, b = _fused_channels(fused, sources)

    def grad(x: Tensor, dim: int) -> Tensor:
        n = x.shape[dim]
        first = x.narrow(dim, 1, 1) - x.narrow(dim, 0, 1)
        last = x.narrow(dim, n - 1, 1) - x.narrow(dim, n - 2, 1)
        mid = (x.narrow(dim, 2, n - 2) - x.narrow(dim, 0, n - 2)) / 2
        return torch.cat([first, mid, last], dim)

    gx, gy = grad(f, -1), grad(f, -2)
    s = torch.sqrt((gx * gx + gy * gy) / 2)
    h, w = f.shape[-2:]
    return fold_channels(s.sum((-2, -1)) / ((h - 1) * (w - 1)), b)


def spatial_frequency(fused: Tensor, sources: Optional[Tensor] = None) -> Tensor:
    """SF, spatial frequency (MEFB ``metricsSpatial_frequency.m``), per channel then averaged.

    ``sqrt(RF^2 + CF^2)``, squared neighbour differences summed and divided by H*W.
    Range >= 0, higher is better.
    """
    f, b = _fused_channels(fused, sources)
    hw = f.shape[-1] * f.shape[-2]
    rf = (f[..., :, 1:] - f[..., :, :-1]).pow(2).sum((-2, -1)) / hw
    cf = (f[..., 1:, :] - f[..., :-1, :]).pow(2).sum((-2, -1)) / hw
    return fold_channels(torch.sqrt(rf + cf), b)


def edge_intensity(fused: Tensor, sources: Optional[Tensor] = None) -> Tensor:
    """EI, edge intensity (MEFB ``metricsEdge_intensity.m``).

    ``imfilter`` with ``fspecial('sobel')`` and its transpose, replicate padding; mean of
    ``sqrt(gx^2 + gy^2)`` over pixels and channels. Range >= 0, higher is better.
    """
    f, b = _fused_channels(fused, sources)
    k = _FSPECIAL_SOBEL.to(f)
    gx = filter2(f, k, padding="replicate")
    gy = filter2(f, k.t().contiguous(), padding="replicate")
    return fold_channels(torch.sqrt(gx * gx + gy * gy).mean((-2, -1)), b)


def _fused_channels(fused: Tensor, sources: Optional[Tensor]) -> tuple[Tensor, int]:
    if sources is None:
        sources = fused.unsqueeze(1).expand(-1, 2, -1, -1, -1)
    f, _ = per_channel(fused, sources)
    return f, fused.shape[0]


# ----------------------------------------------------------------------------- Metric classes
@register_metric("q_g", "nr", higher_is_better=True)
class QG(NoReferenceMetric):
    """Q_G (Q^AB/F), see :func:`q_g`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return q_g(fused, sources)


@register_metric("q_sf", "nr", higher_is_better=True, optimum=0.0)
class QSF(NoReferenceMetric):
    """Q_SF, see :func:`q_sf`. Closer to 0 is better (usually negative)."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return q_sf(fused, sources)


@register_metric("avg", "nr", higher_is_better=True)
class AVG(NoReferenceMetric):
    """Average gradient, see :func:`average_gradient`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return average_gradient(fused, sources)


@register_metric("sf", "nr", higher_is_better=True)
class SF(NoReferenceMetric):
    """Spatial frequency, see :func:`spatial_frequency`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return spatial_frequency(fused, sources)


@register_metric("ei", "nr", higher_is_better=True)
class EI(NoReferenceMetric):
    """Edge intensity, see :func:`edge_intensity`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return edge_intensity(fused, sources)
