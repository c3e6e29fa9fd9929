"""Per-paper metric conventions: the metric variant each paper printed, registered by name.

The canonical metrics (``q_g``, ``q_y``, ``mi``, ...) reproduce Yu Liu's corrected MATLAB
toolbox and the MEFB/VIFB wrappers exactly; they stay as they are. The five papers scored
their tables with other code: Zheng Liu's original toolbox (constants Yu Liu later
corrected), images converted to gray another way, the red channel only, images in [0, 1].
Each variant here is that metric under one paper's convention, found by reproducing the
printed rows from published fused images (the evidence is in each docstring; the residuals
and the conventions tried are in ``ablations/README.md``, "Metric conventions per paper").
A paper uses one convention per column, for every row and dataset: never a per-row fix.

Colour conventions (how a colour image becomes the 2-D image a metric sees), all on
0..255 levels in float64 (:func:`mfif.metrics._common.to_levels`):

* ``yuliu_gray``: MATLAB ``rgb2gray``, rounded (the canonical metrics);
* ``skimage_gray``: ``skimage.color.rgb2gray`` (ITU-R BT.709 luminance
  0.2125 R + 0.7154 G + 0.0721 B), not rounded (GACN's Python code);
* ``first_channel``: channel 0 (red) of an RGB image (the MEFB wrappers' branch for gray
  sources and a colour fused image, ``fused(:,:,1)``, applied to every image).

Single-channel images are used as they are under every convention. Two-source metrics
average over source pairs for N > 2 (:func:`mfif.metrics._common.mean_over_pairs`).
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor

from mfif.metrics._base import NoReferenceMetric
from mfif.metrics._common import mean_over_pairs, normalize1, to_levels, yuliu_gray
from mfif.metrics.edges import Thinning
from mfif.metrics.fmi import _fmi_single, fmi_features
from mfif.metrics.gradient import GACN_LOSS, q_abf
from mfif.metrics.information import _entropies, _ncie_pair, _tsallis, mutual_info_bits
from mfif.metrics.multiscale import _qm_pair
from mfif.metrics.perceptual import _cb_pair, _viff_pair
from mfif.metrics.registry import register_metric
from mfif.metrics.statistics import entropy, standard_deviation
from mfif.metrics.structural import _cvejic_pair, _piella_pair, _yang_pair

Colour = Literal["yuliu_gray", "skimage_gray", "first_channel"]
COLOURS = ("yuliu_gray", "skimage_gray", "first_channel")

#: skimage.color.rgb2gray weights (ITU-R BT.709 luminance).
SKIMAGE_GRAY = (0.2125, 0.7154, 0.0721)
#: Zheng Liu's original metricXydeas.m constants (Gamma = 1, k = -10 / -20, sigma = 0.5 /
#: 0.75): the same values as GACN's loss (Ma et al. 2022, Sec. 3.2).
LIU_CONSTANTS = GACN_LOSS
#: Nava's constant of metricMI.m sw = 3 (Tsallis-entropy fusion metric).
NAVA_Q = 0.43137

__all__ = [
    "COLOURS", "SKIMAGE_GRAY", "LIU_CONSTANTS", "NAVA_Q", "SESF_DEN_EPS", "PAPER_CONVENTIONS",
    "to_plane", "q_g_zl", "q_g_mefb", "q_te_nava", "q_piella_zl", "q_y_exact", "q_y_sesf", "q_c_exact", "mi_bits",
    "q_ncie_colour", "q_cb_colour", "fmi_colour", "avg_forward", "std_channel", "sen_channel", "viff_unit",
    "q_m_unit",
]


# ----------------------------------------------------------------------------- colour
def to_plane(x: Tensor, colour: Colour = "yuliu_gray", name: str = "input") -> Tensor:
    """One 2-D plane of 0..255 levels (float64) per image, under a colour convention.

    Args:
        x: images, uint8 or float in [0, 1].
        colour: one of :data:`COLOURS` (module docstring).
        name: used in error messages.

    Shape:
        - x: :math:`(*, C, H, W)`, C in {1, 3}
        - output: :math:`(*, H, W)`
    """
    if colour not in COLOURS:
        raise ValueError(f"colour must be one of {COLOURS}, got '{colour}'")
    if x.dim() < 3 or x.shape[-3] not in (1, 3):
        raise ValueError(f"{name} must have shape [..., C, H, W] with C in (1, 3), got {tuple(x.shape)}")
    if colour == "yuliu_gray":
        return yuliu_gray(x, name)
    lv = to_levels(x, name)
    if lv.shape[-3] == 1:
        return lv.squeeze(-3)
    r, g, b = lv.unbind(-3)
    if colour == "first_channel":
        return r
    return r * SKIMAGE_GRAY[0] + g * SKIMAGE_GRAY[1] + b * SKIMAGE_GRAY[2]


def _as_uint8(plane: Tensor) -> Tensor:
    """``[B, H, W]`` levels -> ``[B, 1, H, W]`` uint8 (exact for integer levels, else rounded)."""
    return torch.round(plane).clamp(0, 255).to(torch.uint8).unsqueeze(-3)


def _planes(fused: Tensor, sources: Tensor, colour: Colour) -> tuple[Tensor, list[Tensor]]:
    return to_plane(fused, colour, "fused"), list(to_plane(sources, colour, "sources").unbind(1))


def _pairwise(pair: Callable[[Tensor, Tensor, Tensor], Tensor], fused: Tensor, sources: Tensor, colour: Colour,
              scale: float = 1.0, normalise: bool = False) -> Tensor:
    """``pair(a, b, f)`` on the planes of ``colour`` (times ``scale``, or ``normalize1``-ed)."""
    f, s = _planes(fused, sources, colour)
    if normalise:
        f, s = normalize1(f), [normalize1(x) for x in s]
    elif scale != 1.0:
        f, s = f * scale, [x * scale for x in s]
    return mean_over_pairs(pair, f, s)


# ----------------------------------------------------------------------------- variants
def q_g_zl(fused: Tensor, sources: Tensor, colour: Colour = "yuliu_gray") -> Tensor:
    """Q^AB/F as Zheng Liu's original toolbox computes it (before Yu Liu's corrections).

    zhengliu6699/imageFusionMetrics ``metricXydeas.m``: constants Gamma = 1, k = -10 / -20,
    sigma = 0.5 / 0.75; alignment ``||a_S - a_F| - pi/2| 2/pi``; per-pixel normalisation
    ``mean2((Q_AF w_A + Q_BF w_B) ./ (w_A + w_B))`` (:func:`~mfif.metrics.gradient.q_abf`
    with ``alignment="liu", pooling="pixel"``). Evidence: MSASN Table 2 (Zhai et al.), CNN
    and GFF rows, 0.70791 / 0.70489 printed, 0.70792 / 0.70489 ours on the fused images
    of the MFIF benchmark of X. Zhang (xingchenzhang/MFIF) with ``yuliu_gray``; GACN Table 1
    (Ma et al. 2022, which cites this toolbox), GACN row, 0.7169 printed, 0.71687 ours with
    ``skimage_gray`` (0.71690 on the authors' published outputs). Range [0, 1], higher is better.

    Shape:
        - fused: :math:`(B, C, H, W)`, sources: :math:`(B, N, C, H, W)` -> :math:`(B,)`
    """
    return _pairwise(lambda a, b, f: q_abf(a, b, f, LIU_CONSTANTS, alignment="liu", pooling="pixel"), fused, sources, colour)


def q_g_mefb(fused: Tensor, sources: Tensor, colour: Colour = "first_channel") -> Tensor:
    """Q^AB/F as MEFB/VIFB ``metricsQabf.m`` computes it (Petrovic's constants).

    ``conv2`` Sobel, angle ``pi/2`` where ``g_x == 0``, ratio ``g_F`` where ``g_S == g_F``,
    no zero guards (:func:`~mfif.metrics.gradient.q_abf` with ``guards="mefb"``).
    Evidence: UFA-Fuse Table V (Zang et al.), "Q^abf" column, DSIFT row 0.7555 printed and
    ours on Yu Liu's published DSIFT images, red channel (``first_channel``). Range [0, 1].

    Shape:
        - fused: :math:`(B, C, H, W)`, sources: :math:`(B, N, C, H, W)` -> :math:`(B,)`
    """
    return _pairwise(lambda a, b, f: q_abf(a, b, f, guards="mefb"), fused, sources, colour)


def q_te_nava(fused: Tensor, sources: Tensor, colour: Colour = "yuliu_gray") -> Tensor:
    """Tsallis-entropy metric of ``metricMI(A, B, F, 3)`` (Nava's constant q = 0.43137).

    ``(I_q(A,F) + I_q(B,F)) / (H(A)^q + H(B)^q + I_q(A,B))`` with the toolbox's Tsallis
    ``I_q`` (``tsallis.m``, swapped marginals as in :func:`~mfif.metrics.information.q_te`)
    and Shannon entropies H in bits, on ``normalize1`` images. Source: Zheng Liu's toolbox
    ``metricMI.m`` sw = 3. Evidence: MSASN Tables 1-4 print "Q_TE" about 0.40 (the sw = 2
    Q_TE of the canonical ``q_te`` is about 80); CNN / GFF rows of Table 2: 0.39628 /
    0.39404 printed, 0.39629 / 0.39405 ours (MFIF-benchmark fused images). Higher is better.

    Shape:
        - fused: :math:`(B, C, H, W)`, sources: :math:`(B, N, C, H, W)` -> :math:`(B,)`
    """

    def pair(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
        h_a, h_b, _ = _entropies(a, b)
        den = h_a.pow(NAVA_Q) + h_b.pow(NAVA_Q) + _tsallis(a, b, NAVA_Q)
        return (_tsallis(a, f, NAVA_Q) + _tsallis(b, f, NAVA_Q)) / den

    return _pairwise(pair, fused, sources, colour, normalise=True)


def q_piella_zl(fused: Tensor, sources: Tensor, colour: Colour = "yuliu_gray") -> Tensor:
    """Piella's Q_S as Zheng Liu's original ``metricPeilla(A, B, F, 1)`` computes it.

    As the canonical ``q_piella`` but SSIM with ``ssim_index.m``'s defaults: 11x11 Gaussian
    window (sigma 1.5), K = (0.01, 0.03), L = 255, instead of Yu Liu's 8x8 box with K = 1e-6.
    Evidence: MSASN "Q_Piella", Table 2 CNN / GFF rows 0.94513 / 0.94519 printed,
    0.94513 / 0.94520 ours (MFIF-benchmark fused images). Range [-1, 1], higher is better.

    Shape:
        - fused: :math:`(B, C, H, W)`, sources: :math:`(B, N, C, H, W)` -> :math:`(B,)`
    """
    return _pairwise(lambda a, b, f: _piella_pair(a, b, f, "s", "gauss11"), fused, sources, colour)


def q_y_exact(fused: Tensor, sources: Tensor, colour: Colour = "yuliu_gray") -> Tensor:
    """Yang's Q_Y with flat windows in exact arithmetic (never above 1).

    The canonical ``q_y`` (Yu Liu's ``metricYang.m``, C1 = C2 = 2e-16) computes local
    variances as E[x^2] - mu^2: in a window where an image is constant that is rounding
    noise, and SSIM becomes a ratio of noise (one Lytro pair scores 3.2). Here the variance
    and covariances of a constant window are exactly 0, as in exact arithmetic, so every SSIM
    is at most 1; other windows are unchanged. Evidence: the papers print Q_Y < 1 for every
    method; UDPNet Table III, DCNN row (Lytro) 0.9870 printed, 0.9875 ours (canonical 1.1045).
    Range [0, 1], higher is better.

    Shape:
        - fused: :math:`(B, C, H, W)`, sources: :math:`(B, N, C, H, W)` -> :math:`(B,)`
    """
    return _pairwise(lambda a, b, f: _yang_pair(a, b, f, exact_flat=True), fused, sources, colour)


#: The NaN guard of the SESF-Fuse evaluation code (Keep-Passion/SESF-Fuse ``evaluation.py``:
#: "we add 1e-10 on denominator in each division" of ``metricYang.m`` / ``metricCvejic.m``).
SESF_DEN_EPS = 1e-10


def q_y_sesf(fused: Tensor, sources: Tensor, colour: Colour = "skimage_gray") -> Tensor:
    """Yang's Q_Y as the SESF-Fuse / GACN evaluation code computes it: images in [0, 1].

    Keep-Passion/SESF-Fuse ``evaluation.py`` converts every image with ``skimage``
    (``rgb2gray``, i.e. ``img_as_float``: [0, 1]) and calls its copy of Zheng Liu's
    ``metricYang.m`` through the MATLAB engine, in which ``1e-10`` is added to every SSIM
    denominator and to lambda's (:data:`SESF_DEN_EPS`); SSIM keeps C1 = C2 = 2e-16 and the 7x7
    Gaussian window. On [0, 1] images the 1e-10 dominates wherever a window is flat, so SSIM
    there is ~0 instead of a ratio of rounding noise (the canonical ``q_y``) or 1 (:func:`q_y_exact`).
    Evidence: GACN Table 1 (Ma et al. 2022, same group and code), GACN row, 0.97769 printed,
    0.977694 on the authors' published outputs (Keep-Passion/GACN ``data/result``, first
    commit), 26 pairs; ``q_y_exact`` on skimage gray gives +0.3 % there. Range [0, 1], higher is better.

    Shape:
        - fused: :math:`(B, C, H, W)`, sources: :math:`(B, N, C, H, W)` -> :math:`(B,)`
    """
    return _pairwise(lambda a, b, f: _yang_pair(a, b, f, den_eps=SESF_DEN_EPS), fused, sources, colour, scale=1.0 / 255.0)


def q_c_exact(fused: Tensor, sources: Tensor, colour: Colour = "yuliu_gray") -> Tensor:
    """Cvejic's Q_C with flat windows in exact arithmetic (see :func:`q_y_exact`).

    Source: ``metricCvejic(A, B, F, 2)`` (Zheng Liu's toolbox; MEFB ``metricsQc.m``).
    Evidence: UFA-Fuse Table V column "Q^c" (cited there as Chen-Blum [48], but its values
    are Cvejic's): rows DSIFT / MWGF / NSCT / DTCWT 0.8139 / 0.8119 / 0.8160 / 0.8077
    printed, within 1 % ours on Yu Liu's published images (Chen-Blum is 8 % off on NSCT).
    Range [0, 1], higher is better.

    Shape:
        - fused: :math:`(B, C, H, W)`, sources: :math:`(B, N, C, H, W)` -> :math:`(B,)`
    """
    return _pairwise(lambda a, b, f: _cvejic_pair(a, b, f, exact_flat=True), fused, sources, colour)


def mi_bits(fused: Tensor, sources: Tensor, colour: Colour = "skimage_gray") -> Tensor:
    """MI = MI(A, F) + MI(B, F) in **bits** (``mutual_info.m``, 256-bin, ``normalize1``).

    The canonical ``mi`` is VIFB's, in nats, per channel. UDPNet Table III's MI (quoted from
    Wang et al., IJCV 2023) is in bits (its MI/NMI ratio is about 7.5), and of the colour
    conventions tried ``skimage_gray`` reproduces it best: DCNN (Lytro) 8.4749 printed,
    8.4568 ours; GACN (Lytro / MFFW) 8.6112 / 7.3923 printed, 8.6070 / 7.4164 ours
    (``yuliu_gray`` gives +2.0 % / +4.5 %). Range [0, 16], higher is better.

    Shape:
        - fused: :math:`(B, C, H, W)`, sources: :math:`(B, N, C, H, W)` -> :math:`(B,)`
    """
    return _pairwise(lambda a, b, f: mutual_info_bits(a, f) + mutual_info_bits(b, f), fused, sources, colour, normalise=True)


def q_ncie_colour(fused: Tensor, sources: Tensor, colour: Colour = "skimage_gray") -> Tensor:
    """The canonical Q_NCIE (``metricWang.m``) on another colour convention.

    Evidence (``skimage_gray``): GACN Table 1, GACN row 0.8411 printed, 0.84120 ours.

    Shape:
        - fused: :math:`(B, C, H, W)`, sources: :math:`(B, N, C, H, W)` -> :math:`(B,)`
    """
    return _pairwise(_ncie_pair, fused, sources, colour, normalise=True)


def q_cb_colour(fused: Tensor, sources: Tensor, colour: Colour = "skimage_gray") -> Tensor:
    """The canonical Q_CB (``metricChenBlum.m``) on another colour convention.

    Evidence (``skimage_gray``): GACN Table 1, GACN row 0.7948 printed, 0.79512 ours (0.79480 on
    the authors' published outputs, Keep-Passion/GACN ``data/result``).

    Shape:
        - fused: :math:`(B, C, H, W)`, sources: :math:`(B, N, C, H, W)` -> :math:`(B,)`
    """
    return _pairwise(_cb_pair, fused, sources, colour, normalise=True)


def fmi_colour(fused: Tensor, sources: Tensor, feature: Literal["edge", "dct"], colour: Colour = "skimage_gray",
               thinning: Thinning = "octave", unit: bool = False) -> Tensor:
    """The canonical fast-FMI (:func:`~mfif.metrics.fmi.fmi`) on one gray plane, whole image.

    ``thinning`` picks the edge map of the ``"edge"`` feature (:func:`mfif.metrics.edges.sobel_edges`);
    ``unit`` scores planes in [0, 1] (``img_as_float``) instead of 0..255 (it only moves MATLAB
    ``edge``'s 100-eps direction tolerance). Evidence (``skimage_gray``): GACN Table 1, GACN row,
    FMI_DCT 0.4058 printed, 0.40592 ours (released weights); FMI_EDGE 0.897806 printed, with
    MATLAB's ``edge`` (``thinning="matlab"``) 0.8978068 on the authors' published outputs
    (Keep-Passion/GACN ``data/result``), against 0.8911 with Octave's thinning and 0.8826 with
    ``bwmorph`` thinning. GACN's evaluation code (Keep-Passion/SESF-Fuse ``evaluation.py``) runs
    ``analysis_fmi.m`` (Haghighat's fast-FMI, ``edge(x)``) in MATLAB on ``rgb2gray`` images.

    Shape:
        - fused: :math:`(B, C, H, W)`, sources: :math:`(B, N, C, H, W)` -> :math:`(B,)`
    """
    f, s = _planes(fused, sources, colour)
    if unit:
        f, s = f / 255.0, [x / 255.0 for x in s]
    if min(f.shape[-2:]) < 3:
        raise ValueError(f"FMI needs images of at least 3x3 pixels, got {tuple(f.shape[-2:])}")
    return mean_over_pairs(_fmi_single, fmi_features(f, feature, thinning), [fmi_features(x, feature, thinning) for x in s])


def avg_forward(fused: Tensor, sources: Tensor | None = None, colour: Colour = "first_channel") -> Tensor:
    """Average gradient with forward differences (the classical AG definition).

    ``AG = sum_{i<H, j<W} sqrt(((F(i,j+1) - F(i,j))^2 + (F(i+1,j) - F(i,j))^2) / 2) /
    ((H-1)(W-1))``; the canonical ``avg`` (MEFB) uses MATLAB ``gradient``'s central
    differences, 17 % lower. Evidence: UFA-Fuse Table V, AVG column, DSIFT / MWGF rows
    8.3142 / 8.1591 printed and ours (red channel of Yu Liu's published images). Range >= 0,
    higher is better. Depends on F only.

    Shape:
        - fused: :math:`(B, C, H, W)` -> :math:`(B,)`
    """
    x = to_plane(fused, colour, "fused")
    if min(x.shape[-2:]) < 2:
        raise ValueError(f"avg needs images of at least 2x2 pixels, got {tuple(x.shape[-2:])}")
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    return torch.sqrt((dx * dx + dy * dy) / 2).mean((-2, -1))


def std_channel(fused: Tensor, sources: Tensor | None = None, colour: Colour = "first_channel") -> Tensor:
    """The canonical STD (MEFB ``metricsSD.m``) of one plane of F.

    Evidence (``first_channel``): UFA-Fuse Table V, STD, DSIFT / MWGF / Proposed rows
    62.3776 / 62.2509 / 62.7020 printed and ours (Yu Liu's images; the authors' published
    outputs, ReckonerInheritor/UFA-Fusion ``Code/result/Lytro``). Planes are rounded to 8 bits.

    Shape:
        - fused: :math:`(B, C, H, W)` -> :math:`(B,)`
    """
    return standard_deviation(_as_uint8(to_plane(fused, colour, "fused")))


def sen_channel(fused: Tensor, sources: Tensor | None = None, colour: Colour = "first_channel") -> Tensor:
    """The canonical SEN (MEFB ``metricsEntropy.m``) of one plane of F.

    Evidence (``first_channel``): UFA-Fuse Table V, SEN, DSIFT / MWGF / Proposed rows
    7.5675 / 7.5700 / 7.5791 printed and ours (images as for :func:`std_channel`).

    Shape:
        - fused: :math:`(B, C, H, W)` -> :math:`(B,)`
    """
    return entropy(_as_uint8(to_plane(fused, colour, "fused")))


def viff_unit(fused: Tensor, sources: Tensor, colour: Colour = "yuliu_gray") -> Tensor:
    """VIFF (Han et al. 2013) on images in [0, 1] (``im2double``) with the 0..255 noise constant.

    The visual-noise variance 0.005 * 255^2 of ``VIFF_Public.m`` / MEFB ``metricsVIF.m``
    assumes 0..255 images; fed [0, 1] images it changes the value. Evidence: UFA-Fuse
    Table V, VIFF, DSIFT / MWGF / CNN rows 0.9657 / 0.9598 / 0.9580 printed, 0.9657 /
    0.9599 / 0.9576 ours (``yuliu_gray``; the canonical per-channel VIFF is 2-3 % lower).

    Shape:
        - fused: :math:`(B, C, H, W)`, sources: :math:`(B, N, C, H, W)` -> :math:`(B,)`
    """
    return _pairwise(_viff_pair, fused, sources, colour, scale=1.0 / 255.0)


def q_m_unit(fused: Tensor, sources: Tensor, colour: Colour = "first_channel") -> Tensor:
    """Q_M (``metricPWW.m``) on images in [0, 1]: near its maximum 3 (the canonical is ~2.4).

    Evidence (``first_channel``): UFA-Fuse Table V, "Q^m", DSIFT / MWGF rows 2.9726 /
    2.9666 printed, 2.9732 / 2.9669 ours. Range [0, 3], higher is better.

    Shape:
        - fused: :math:`(B, C, H, W)`, sources: :math:`(B, N, C, H, W)` -> :math:`(B,)`
    """
    if min(fused.shape[-2:]) < 4:
        raise ValueError(f"q_m needs images of at least 4x4 pixels for 2 Haar levels, got {tuple(fused.shape[-2:])}")
    return _pairwise(_qm_pair, fused, sources, colour, scale=1.0 / 255.0)


# ----------------------------------------------------------------------------- registry
class _Variant(NoReferenceMetric):
    """A registered convention variant: ``fn(fused, sources)`` (see the function's docstring)."""

    fn: Callable[[Tensor, Tensor], Tensor]

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return type(self).fn(fused, sources)


def _register(name: str, variant_of: str, fn: Callable[[Tensor, Tensor], Tensor], doc: str) -> None:
    cls = type(f"Variant_{name}", (_Variant,), {"fn": staticmethod(fn), "__doc__": doc, "__module__": __name__})
    register_metric(name, "nr", higher_is_better=True, variant_of=variant_of)(cls)


_VARIANTS = {
    # name: (canonical metric, function, colour convention)
    "q_g_zl": ("q_g", q_g_zl, "yuliu_gray"),
    "q_g_zl_sk": ("q_g", q_g_zl, "skimage_gray"),
    "q_g_mefb_r": ("q_g", q_g_mefb, "first_channel"),
    "q_te_nava": ("q_te", q_te_nava, "yuliu_gray"),
    "q_piella_zl": ("q_piella", q_piella_zl, "yuliu_gray"),
    "q_y_exact": ("q_y", q_y_exact, "yuliu_gray"),
    "q_y_exact_sk": ("q_y", q_y_exact, "skimage_gray"),
    "q_c_exact": ("q_c", q_c_exact, "yuliu_gray"),
    "mi_bits_sk": ("mi", mi_bits, "skimage_gray"),
    "q_ncie_sk": ("q_ncie", q_ncie_colour, "skimage_gray"),
    "q_cb_sk": ("q_cb", q_cb_colour, "skimage_gray"),
    "q_y_sesf_sk": ("q_y", q_y_sesf, "skimage_gray"),
    "fmi_edge_sk": ("fmi_edge", lambda f, s, colour: fmi_colour(f, s, "edge", colour), "skimage_gray"),
    "fmi_edge_matlab_sk": ("fmi_edge", lambda f, s, colour: fmi_colour(f, s, "edge", colour, "matlab", unit=True),
                           "skimage_gray"),
    "fmi_dct_sk": ("fmi_dct", lambda f, s, colour: fmi_colour(f, s, "dct", colour), "skimage_gray"),
    "avg_fwd_r": ("avg", avg_forward, "first_channel"),
    "std_r": ("std", std_channel, "first_channel"),
    "sen_r": ("sen", sen_channel, "first_channel"),
    "viff_unit": ("viff", viff_unit, "yuliu_gray"),
    "q_m_unit_r": ("q_m", q_m_unit, "first_channel"),
}
for _name, (_canon, _fn, _colour) in _VARIANTS.items():
    _base = fmi_colour if _name.startswith("fmi_") else _fn
    _register(_name, _canon, (lambda fn, c: lambda f, s: fn(f, s, colour=c))(_fn, _colour),
              f"``{_name}``: {(_base.__doc__ or '').strip().splitlines()[0]} Colour: ``{_colour}``.")

#: Paper -> {printed column label: registered metric}. The side files
#: ``ablations/<paper>/*.paper.yaml`` and the configs' ``metrics:`` use these names.
PAPER_CONVENTIONS: dict[str, dict[str, str]] = {
    # Ma et al., Neurocomputing 2022, Table 1 / 2, Fig. 8-9 (Sec. 4.3; Zheng Liu's toolbox [45]).
    # Its evaluation code is the group's Keep-Passion/SESF-Fuse evaluation.py (skimage rgb2gray
    # in [0, 1], the toolbox's .m files in MATLAB; Q_Y with a 1e-10 guard, FMI with MATLAB's edge).
    "gacn": {"Q_g": "q_g_zl_sk", "Q_y": "q_y_sesf_sk", "Q_ncie": "q_ncie_sk", "Q_cb": "q_cb_sk",
             "FMI_EDGE": "fmi_edge_matlab_sk", "FMI_DCT": "fmi_dct_sk"},
    # Zhai et al., Tables 1-4, 6-8 (Sec. 4.2.2): Zheng Liu's original toolbox on rgb2gray.
    "msasn": {"Q_NMI": "q_nmi", "Q_G": "q_g_zl", "Q_CB": "q_cb", "Q_TE": "q_te_nava", "Q_SF": "q_sf",
              "Q_Piella": "q_piella_zl"},
    # Quan et al., Tables II, III, V (Sec. IV); Table III's values are quoted from [28].
    "udpnet": {"NMI": "q_nmi", "Q_NCIE": "q_ncie", "Q_G": "q_g_zl", "Q_M": "q_m", "Q_P": "q_p", "Q_C": "q_c_exact",
               "Q_Y": "q_y_exact", "Q_CB": "q_cb", "MI": "mi_bits_sk", "VIF": "viff"},
    # Zang et al., Tables III-V (Sec. IV).
    "ufafuse": {"AVG": "avg_fwd_r", "STD": "std_r", "SEN": "sen_r", "VIFF": "viff_unit", "Q^abf": "q_g_mefb_r",
                "Q^c": "q_c_exact", "Q^m": "q_m_unit_r"},
}
