"""FMI, Haghighat's feature mutual information (fast-FMI as in MEFB ``metricsFMI.m``).

Every 3x3 window of the feature images becomes two 9-bin marginal PDFs; their joint PDF
is Nelsen's mix of the Frechet bound and independence that matches their correlation;
``FMI = mean over windows of (NMI(A,F) + NMI(B,F)) / 2``. The toolbox loops over windows
in MATLAB (minutes per image); here all windows are processed at once, in chunks.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mfif.metrics._base import NoReferenceMetric
from mfif.metrics._common import filter2, fold_channels, mean_over_pairs, per_channel
from mfif.metrics.registry import register_metric

__all__ = ["dct2", "octave_sobel_edges", "fmi_features", "fmi", "fmi_edge", "fmi_dct", "FMIEdge", "FMIDct"]

Feature = Literal["edge", "dct", "none", "gradient"]
_CHUNK = 32768  # windows per chunk: 32768 x 18 float64 = 4.7 MB per temporary


def _dct_matrix(n: int, like: Tensor) -> Tensor:
    k = torch.arange(n, dtype=like.dtype, device=like.device).view(-1, 1)
    i = torch.arange(n, dtype=like.dtype, device=like.device).view(1, -1)
    c = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    c[0] = c[0] / math.sqrt(2.0)
    return c


def dct2(x: Tensor) -> Tensor:
    """Orthonormal 2-D DCT-II (MATLAB / Octave ``dct2``). Shape :math:`(*, H, W)`.

    CPU: ``scipy.fft.dctn`` (O(N log N)); other devices: two matrix products.
    """
    if x.device.type == "cpu":
        import scipy.fft

        y = scipy.fft.dctn(x.detach().numpy(), type=2, norm="ortho", axes=(-2, -1), workers=torch.get_num_threads())
        return torch.from_numpy(y).to(x.dtype)
    ch, cw = _dct_matrix(x.shape[-2], x), _dct_matrix(x.shape[-1], x)
    return ch @ x @ cw.t()


# fspecial('sobel'); Octave divides it by sum(|h|) = 8, which the scale-invariant automatic
# threshold makes irrelevant, so we keep integer taps (see octave_sobel_edges).
_EDGE_SOBEL = torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]], dtype=torch.float64)


def octave_sobel_edges(x: Tensor) -> Tensor:
    """Octave image-2.14 ``edge(x, 'sobel')`` with its automatic threshold and thinning.

    ``fspecial('sobel')`` and its transpose via ``imfilter(..., 'replicate')``;
    ``thresh^2 = 4 mean(g^2)``; ``simple_thinning`` keeps pixels strictly greater than both
    horizontal or both vertical neighbours. The result does not depend on the scale of
    ``x`` (nor on Octave's /8 kernel normalisation), so on 0..255 integer levels we
    compute the strengths in exact integer arithmetic: neighbours with mathematically
    equal strength then tie exactly (neither survives thinning) instead of being decided
    by rounding. This reproduces the Octave reference on all 6 reference triples, where
    the float computation on ``x / 255`` flips 3 pixels of one image.
    MATLAB's ``edge`` thins along the gradient direction instead, so MATLAB and Octave
    edge maps (and FMI_edge values) differ (:func:`mfif.metrics.edges.matlab_sobel_edges`).

    Shape:
        - x: :math:`(B, H, W)` -> binary float :math:`(B, H, W)`
    """
    k = _EDGE_SOBEL.to(x)
    s2 = filter2(x, k, padding="replicate") ** 2 + filter2(x, k.t().contiguous(), padding="replicate") ** 2
    thresh2 = 4 * s2.mean((-2, -1), keepdim=True)
    s2 = torch.where(s2 <= thresh2, torch.zeros_like(s2), s2)
    z = torch.zeros_like(s2)
    left = torch.cat([z[..., :, :1], s2[..., :, :-1]], -1)
    right = torch.cat([s2[..., :, 1:], z[..., :, :1]], -1)
    up = torch.cat([z[..., :1, :], s2[..., :-1, :]], -2)
    down = torch.cat([s2[..., 1:, :], z[..., :1, :]], -2)
    bw = ((s2 > left) & (s2 > right)) | ((s2 > up) & (s2 > down))
    return bw.to(x.dtype)


def fmi_features(x: Tensor, feature: Feature, thinning: str = "octave") -> Tensor:
    """Feature image of 0..255 levels ``[B, H, W]`` as in ``FMI(..., feature)``.

    ``thinning`` picks the ``edge`` of the ``'edge'`` feature (:func:`mfif.metrics.edges.sobel_edges`):
    ``"octave"`` (the canonical reference), ``"matlab"``, ``"bwmorph"`` or ``"none"``.
    """
    if feature == "none":
        return x
    if feature == "dct":
        return dct2(x)
    if feature == "edge":
        if thinning != "octave":
            from mfif.metrics.edges import sobel_edges

            return sobel_edges(x, thinning).to(x.dtype)
        # The reference calls edge(x / 255) (Octave's edge() needs [0, 1]); the scale is
        # irrelevant and integer levels keep the computation exact.
        return octave_sobel_edges(x)
    if feature == "gradient":
        # MATLAB gradient(x) with one output: the x (column) derivative only.
        n = x.shape[-1]
        first, last = x[..., 1:2] - x[..., 0:1], x[..., n - 1 : n] - x[..., n - 2 : n - 1]
        return torch.cat([first, (x[..., 2:] - x[..., :-2]) / 2, last], -1)
    raise ValueError(f"feature must be 'edge', 'dct', 'none' or 'gradient', got '{feature}'")


def _seq_sum(x: Tensor) -> Tensor:
    """Left-to-right sum over the last dim (MATLAB's loop order): the last element of the
    sequential scan ``cumsum``."""
    return torch.cumsum(x, -1)[..., -1]


# MATLAB's aSub(:) is column-major: F.unfold's row-major 3x3 order permuted.
_COLUMN_MAJOR_3x3 = [0, 3, 6, 1, 4, 7, 2, 5, 8]


def _windows(x: Tensor) -> Tensor:
    """All 3x3 windows in column-major order: ``[B, H, W] -> [B, (H-2)(W-2), 9]``."""
    u = F.unfold(x.unsqueeze(1), 3)  # [B, 9, L]
    return u[:, _COLUMN_MAJOR_3x3].transpose(1, 2)


def _unit_range(x: Tensor) -> Tensor:
    mx, mn = x.max(-1, keepdim=True).values, x.min(-1, keepdim=True).values
    rng = mx - mn
    return torch.where(rng == 0, torch.ones_like(x), (x - mn) / torch.where(rng == 0, torch.ones_like(rng), rng))


_INV_LN2 = 1.0 / math.log(2.0)
_TINY = 1e-300  # denominator floor where the numerator is 0 whenever the denominator is


def _phi(x: Tensor) -> Tensor:
    # -x log2|x| with 0 at 0: MATLAB's real(-jpdf .* log2(jpdf)), skipped where jpdf == 0.
    return torch.xlogy(x, x.abs()).mul_(-_INV_LN2)


class _WindowStats:
    """Marginal PDF statistics of normalised 3x3 windows ``[W, 9]`` (``FMI`` in MEFB)."""

    def __init__(self, x: Tensor) -> None:
        n = x.shape[-1]
        # pdf = x / sum(sum(x)) and mean(pdf) summed in MATLAB's order: the correlation
        # test "sum(aTemp .* fTemp) == 0" below is exact on binary (edge) windows, and a
        # different rounding there would switch branches (phi = 0 vs c / corrUp).
        col = _seq_sum(x.view(-1, 3, 3))
        self.pdf = x / _seq_sum(col).unsqueeze(-1)
        self.cdf = torch.cumsum(self.pdf, -1)
        self.tmp = self.pdf - (_seq_sum(self.pdf) / n).unsqueeze(-1)  # pdf - mean(pdf)
        idx = torch.arange(1, n + 1, dtype=x.dtype, device=x.device)
        e, e2 = (idx * self.pdf).sum(-1), (idx * idx * self.pdf).sum(-1)
        self.sd = torch.sqrt((e2 - e * e).clamp_min(0))  # population sd of the bin index
        self.entropy = _phi(self.pdf).sum(-1)

    def select(self, rows: Tensor) -> "_WindowStats":
        out = object.__new__(_WindowStats)
        for k in ("pdf", "cdf", "tmp", "sd", "entropy"):
            setattr(out, k, getattr(self, k)[rows])
        return out


def _merged_bound(f_cdf: Tensor, s_cdf: Tensor, upper: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Frechet-bound coupling of two 9-bin CDFs from one sort of their 18 breakpoints.

    The upper (comonotone) bound puts mass ``|(F_{i-1}, F_i] n (S_{j-1}, S_j]|`` on cell
    (i, j) - exactly the reference's inclusion-exclusion ``U(i,j) - U(i-1,j) - U(i,j-1) +
    U(i-1,j-1)`` with ``U = min(F_i, S_j)``; the lower (countermonotone) bound uses
    ``G = 1 - S`` reversed (``W = max(F_i + S_j - 1, 0) = F_i - min(F_i, 1 - S_j)``).
    Walking the merged breakpoints visits every cell with mass (at most 18); every other
    cell has none. Breakpoint comparisons use the values themselves, never ``1 - (1 - S)``.

    Args:
        f_cdf, s_cdf: ``[W, 9]`` non-decreasing CDFs (fused, source).
        upper: ``[W]`` bool, True where the upper bound is used (correlation >= 0).

    Returns:
        ``(i, j, mass, bound_sum)``: cells ``[W, 18]`` (i indexes F, j the source), their
        masses, and ``sum_ij U(i,j)`` (upper) or ``sum_ij W(i,j)`` (lower) per window.
    """
    n = f_cdf.shape[-1]
    g = torch.where(upper.unsqueeze(-1), s_cdf, (1 - s_cdf).flip(-1))
    t, order = torch.cat([f_cdf, g], -1).sort(dim=-1, stable=True)
    from_f = order < n
    f_before = torch.cumsum(from_f, -1) - from_f.long()  # F breakpoints strictly before (ties: F first)
    pos = torch.arange(1, 2 * n + 1, device=t.device)
    g_before = pos - 1 - f_before
    lo = F.pad(t[:, :-1], (1, 0))
    mass = (t - lo).clamp_min_(0)
    # For the first breakpoint of a tie group "before" = "strictly smaller": the cell of the
    # interval (lo, t]. Later members of a tie group close zero-length intervals (no mass).
    i = f_before.clamp_max(n - 1)
    j = torch.where(upper.unsqueeze(-1), g_before, n - g_before).clamp_max_(n - 1)
    # sum_{i,m} min(F_i, G_m): each pair counted once, by its earlier (smaller) member.
    other_after = n - torch.where(from_f, g_before, f_before)
    usum = (t * other_after).sum(-1)
    bound_sum = torch.where(upper, usum, n * f_cdf.sum(-1) - usum)
    return i, j, mass, bound_sum


def _nmi_windows(sx: _WindowStats, sf: _WindowStats) -> Tensor:
    """Normalised feature MI per window pair (source ``sx``, fused ``sf``), ``-> [W]``.

    Same quantities as the reference's loops over the 81 cells of the joint PDF, computed
    from the <= 18 cells where the Frechet bound has mass (the other cells are the
    independence term only, whose entropy has a closed form). Differences are rounding.
    """
    cnum = _seq_sum(sx.tmp * sf.tmp)
    cden = torch.sqrt((sx.tmp * sx.tmp).sum(-1) * (sf.tmp * sf.tmp).sum(-1))
    c = cnum / cden.clamp_min(_TINY)  # cnum == 0 -> c = 0 (cden == 0 implies cnum == 0)
    i, j, mass, bsum = _merged_bound(sf.cdf, sx.cdf, c >= 0)
    cov = bsum - sf.cdf.sum(-1) * sx.cdf.sum(-1)  # sum_ij (bound(i,j) - F_i S_j)
    corr = cov / (sf.sd * sx.sd).clamp_min(_TINY)
    degenerate = (sx.sd == 0) | (sf.sd == 0) | (c == 0)  # phi = 0 / theta = 0 cases
    k = torch.where(degenerate, torch.zeros_like(c), c / corr)
    one_k = 1 - k
    # Independence part over all 81 cells: -sum (1-k) f_i s_j log2|(1-k) f_i s_j|.
    tot_f, tot_s = sf.pdf.sum(-1), sx.pdf.sum(-1)
    h_prod = -one_k * (torch.log2(one_k.abs()).nan_to_num(0.0, 0.0, 0.0) * tot_f * tot_s - tot_s * sf.entropy - tot_f * sx.entropy)
    # Cells where the bound has mass: replace the independence term by the mixture.
    p = (one_k.unsqueeze(-1) * sf.pdf.gather(1, i)) * sx.pdf.gather(1, j)
    x = k.unsqueeze(-1) * mass + p
    joint = h_prod + (_phi(x) - _phi(p)).sum(-1)
    hs, hf = sx.entropy, sf.entropy
    # mi == 0 -> 0 as in the toolbox (0 / den); den = 0 only for two one-hot PDFs (mi = 0).
    return 2 * (hs + hf - joint) / (hs + hf).clamp_min(_TINY)


def _fmi_single(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    """FMI(ima, imb, imf) of feature images ``[B, H, W]`` -> ``[B]`` (MEFB's FMI function)."""
    wa, wb, wf = _windows(a), _windows(b), _windows(f)
    n_img, n_win = wa.shape[:2]
    wa, wb, wf = wa.reshape(-1, 9), wb.reshape(-1, 9), wf.reshape(-1, 9)
    out = torch.empty(wa.shape[0], dtype=a.dtype, device=a.device)
    for start in range(0, wa.shape[0], _CHUNK):
        sl = slice(start, start + _CHUNK)
        sa, sb, sf = wa[sl], wb[sl], wf[sl]
        eq_a = (sa == sf).all(-1)
        f_norm = _unit_range(sf)
        # The toolbox overwrites fSub with its normalised version in the A branch, so the
        # B branch compares bSub with the *normalised* fSub whenever aSub != fSub. (Its
        # renormalisation in the B branch is the identity, so F's statistics are shared.)
        eq_b = (sb == torch.where(eq_a.unsqueeze(-1), sf, f_norm)).all(-1)
        total = eq_a.to(a.dtype) + eq_b.to(a.dtype)  # identical windows: FMI = 1
        need = ~(eq_a & eq_b)
        if bool(need.all()):
            st_f, sub = _WindowStats(f_norm), None
        else:
            sub = need.nonzero().squeeze(-1)
            st_f = _WindowStats(f_norm[sub])
        for src, eq in ((sa, eq_a), (sb, eq_b)):
            todo = ~eq if sub is None else ~eq[sub]
            if not bool(todo.any()):
                continue
            rows = sub if sub is not None else torch.arange(sa.shape[0], device=a.device)
            if bool(todo.all()):
                vals = _nmi_windows(_WindowStats(_unit_range(src[rows])), st_f)
                total.index_add_(0, rows, vals)
            else:
                k = todo.nonzero().squeeze(-1)
                vals = _nmi_windows(_WindowStats(_unit_range(src[rows[k]])), st_f.select(k))
                total.index_add_(0, rows[k], vals)
        out[sl] = total / 2
    return out.view(n_img, n_win).mean(-1)


def _center_crop(x: Tensor, size: Optional[int]) -> Tensor:
    if size is None:
        return x
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"FMI crop {size} is larger than the image {h}x{w}")
    r0, c0 = (h - size) // 2, (w - size) // 2
    return x[..., r0 : r0 + size, c0 : c0 + size]


def fmi(fused: Tensor, sources: Tensor, feature: Feature = "edge", crop: Optional[int] = None) -> Tensor:
    """FMI (Haghighat et al.), fast-FMI with 3x3 windows, per channel and averaged (MEFB).

    Features: ``'edge'`` (Octave's Sobel ``edge`` on x/255, see
    :func:`octave_sobel_edges`), ``'dct'`` (orthonormal ``dct2`` of the whole image),
    ``'none'`` (pixels) or ``'gradient'`` (MATLAB ``gradient``'s x-derivative).
    Per window: NMI of the window PDFs with Nelsen's joint PDF;
    ``FMI = mean((FMI_AF + FMI_BF) / 2)``. Every quirk of the reference code is kept
    (column-major window order, identical windows -> 1, the B branch comparing with the
    already normalised F window).

    Sources: M. Haghighat et al., Comput. Electr. Eng. 37 (2011) 744-756; Haghighat &
    Razian, AICT 2014 (fast-FMI); code MEFB ``metricsFMI.m``. Range [0, 1], higher is better.

    Args:
        fused, sources: images (uint8 or float in [0, 1]).
        feature: feature extractor.
        crop: if set, evaluate on the ``crop x crop`` centre crop (rows/cols
            ``[(H-crop)//2 :][:crop]``), as the reference values do (``crop=64``). Note the
            DCT feature is global, so cropping changes the value, not just its noise.

    Shape:
        - fused: :math:`(B, C, H, W)`, sources: :math:`(B, N, C, H, W)` -> :math:`(B,)`
    """
    f, s = per_channel(_center_crop(fused, crop), _center_crop(sources, crop))
    if min(f.shape[-2:]) < 3:
        raise ValueError(f"FMI needs images of at least 3x3 pixels, got {tuple(f.shape[-2:])}")
    ff = fmi_features(f, feature)
    fs = [fmi_features(x, feature) for x in s.unbind(1)]
    return fold_channels(mean_over_pairs(_fmi_single, ff, fs), fused.shape[0])


def fmi_edge(fused: Tensor, sources: Tensor, crop: Optional[int] = None) -> Tensor:
    """FMI with edge features, see :func:`fmi`."""
    return fmi(fused, sources, "edge", crop)


def fmi_dct(fused: Tensor, sources: Tensor, crop: Optional[int] = None) -> Tensor:
    """FMI with DCT features, see :func:`fmi`."""
    return fmi(fused, sources, "dct", crop)


class _FMIMetric(NoReferenceMetric):
    feature: Feature = "edge"

    def __init__(self, crop: Optional[int] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if crop is not None and crop < 3:
            raise ValueError(f"crop must be >= 3 or None, got {crop}")
        self.crop = crop

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return fmi(fused, sources, self.feature, self.crop)


@register_metric("fmi_edge", "nr", higher_is_better=True)
class FMIEdge(_FMIMetric):
    """FMI with edge features (whole image by default), see :func:`fmi`. Higher is better."""

    feature = "edge"


@register_metric("fmi_dct", "nr", higher_is_better=True)
class FMIDct(_FMIMetric):
    """FMI with DCT features (whole image by default), see :func:`fmi`. Higher is better."""

    feature = "dct"
