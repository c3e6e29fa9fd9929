"""Zhao's phase-congruency fusion metric Q_P (``metricZhao.m`` + ``myphasecong3.m``).

Not to be confused with Piella's index, which some papers also call Q_P: that one is
``q_piella`` in :mod:`mfif.metrics.structural`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mfif.metrics._base import NoReferenceMetric
from mfif.metrics._common import filter2_sep, gaussian_1d, mean_over_pairs, yuliu_gray
from mfif.metrics.registry import register_metric

__all__ = ["PhaseCongruencyParams", "phase_congruency", "q_p", "QP"]


@dataclass(frozen=True)
class PhaseCongruencyParams:
    """Kovesi's phasecong3 defaults as used by the toolbox (``myphasecong3.m`` checkargs)."""

    nscale: int = 4
    norient: int = 6
    min_wavelength: float = 3.0
    mult: float = 2.1
    sigma_onf: float = 0.55
    d_theta_on_sigma: float = 1.2
    k: float = 2.0
    cut_off: float = 0.5
    g: float = 10.0
    epsilon: float = 1e-4


def _filters_uncached(rows: int, cols: int, p: PhaseCongruencyParams, dt: torch.dtype, dev: torch.device) -> tuple[list[Tensor], list[Tensor]]:
    """Log-Gabor radial parts (per scale) and angular spreads (per orientation), FFT order."""
    if cols % 2:
        xr = (torch.arange(cols, dtype=dt, device=dev) - (cols - 1) / 2) / (cols - 1)
    else:
        xr = (torch.arange(cols, dtype=dt, device=dev) - cols / 2) / cols
    if rows % 2:
        yr = (torch.arange(rows, dtype=dt, device=dev) - (rows - 1) / 2) / (rows - 1)
    else:
        yr = (torch.arange(rows, dtype=dt, device=dev) - rows / 2) / rows
    y, x = torch.meshgrid(yr, xr, indexing="ij")
    radius = torch.sqrt(x * x + y * y)
    radius[rows // 2, cols // 2] = 1.0  # avoid log(0); Zheng Liu's FLOOR fix
    theta = torch.atan2(-y, x)
    radius = torch.fft.ifftshift(radius)
    theta = torch.fft.ifftshift(theta)
    sin_t, cos_t = torch.sin(theta), torch.cos(theta)

    # lowpassfilter([rows, cols], .45, 15), built with fftshift as in the original.
    lx = (torch.arange(1, cols + 1, dtype=dt, device=dev) - (cols // 2 + 1)) / cols
    ly = (torch.arange(1, rows + 1, dtype=dt, device=dev) - (rows // 2 + 1)) / rows
    lyy, lxx = torch.meshgrid(ly, lx, indexing="ij")
    lp = torch.fft.fftshift(1.0 / (1.0 + (torch.sqrt(lxx * lxx + lyy * lyy) / 0.45) ** (2 * 15)))

    log_gabor = []
    for s in range(p.nscale):
        fo = 1.0 / (p.min_wavelength * p.mult**s)
        lg = torch.exp(-(torch.log(radius / fo) ** 2) / (2 * math.log(p.sigma_onf) ** 2)) * lp
        lg[0, 0] = 0.0
        log_gabor.append(lg)
    theta_sigma = math.pi / p.norient / p.d_theta_on_sigma
    spread = []
    for o in range(p.norient):
        ang = o * math.pi / p.norient
        ds = sin_t * math.cos(ang) - cos_t * math.sin(ang)
        dc = cos_t * math.cos(ang) + sin_t * math.sin(ang)
        dtheta = torch.atan2(ds, dc).abs()
        spread.append(torch.exp(-(dtheta * dtheta) / (2 * theta_sigma**2)))
    return log_gabor, spread


_BANK_CACHE: dict = {}


def _filter_bank(rows: int, cols: int, p: PhaseCongruencyParams, like: Tensor) -> list[dict]:
    """Per orientation: the scale filters and the noise-model constants (image independent).

    Cached per (size, params, dtype, device): the filters and their inverse FFTs only
    depend on the image size.
    """
    key = (rows, cols, p, like.dtype, str(like.device))
    if key not in _BANK_CACHE:
        if len(_BANK_CACHE) > 16:
            _BANK_CACHE.clear()
        log_gabor, spread = _filters_uncached(rows, cols, p, like.dtype, like.device)
        bank = []
        for o in range(p.norient):
            filts = [log_gabor[s] * spread[o] for s in range(p.nscale)]
            ifft_filts = [torch.fft.ifft2(f).real * math.sqrt(rows * cols) for f in filts]
            est_sum_an2 = sum(f * f for f in ifft_filts).sum()
            est_sum_aiaj = torch.zeros((), dtype=like.dtype, device=like.device)
            for si in range(p.nscale - 1):
                for sj in range(si + 1, p.nscale):
                    est_sum_aiaj = est_sum_aiaj + (ifft_filts[si] * ifft_filts[sj]).sum()
            bank.append(
                {"stack": torch.stack(filts), "em_n": (filts[0] * filts[0]).sum(), "an2": est_sum_an2, "aiaj": est_sum_aiaj}
            )
        _BANK_CACHE[key] = bank
    return _BANK_CACHE[key]


def _median(x: Tensor, square: bool = False) -> Tensor:
    """MATLAB ``median`` of each row (of ``x^2`` if ``square``, for ``x >= 0``): the mean of the
    two middle values for an even count. Two order statistics by selection (``kthvalue``)."""
    n = x.shape[-1]
    upper = x.kthvalue(n // 2 + 1, -1).values
    upper = upper * upper if square else upper
    if n % 2:
        return upper
    lower = x.kthvalue(n // 2, -1).values
    lower = lower * lower if square else lower
    return (lower + upper) / 2


def phase_congruency(im: Tensor, params: PhaseCongruencyParams = PhaseCongruencyParams()) -> tuple[Tensor, Tensor, Tensor]:
    """Kovesi's phase congruency as modified in Zheng Liu's ``myphasecong3.m``.

    Returns ``(pc, M, m)``: phase congruency (``totalEnergy / (totalSumAn + eps)``), the
    maximum and the minimum moment of the PC covariance.

    Shape:
        - im: :math:`(B, H, W)` float64
        - outputs: :math:`(B, H, W)` each
    """
    p = params
    rows, cols = im.shape[-2:]
    bank = _filter_bank(rows, cols, p, im)
    image_fft = torch.fft.fft2(im)
    eps = p.epsilon
    total_energy = torch.zeros_like(im)
    total_sum_an = torch.zeros_like(im)
    covx2 = torch.zeros_like(im)
    covy2 = torch.zeros_like(im)
    covxy = torch.zeros_like(im)
    for o in range(p.norient):
        ang = o * math.pi / p.norient
        # All scales of this orientation at once: EO{s,o} = ifft2(imagefft .* filter).
        eo = torch.view_as_real(torch.fft.ifft2(image_fft.unsqueeze(1) * bank[o]["stack"]))  # [B, S, H, W, 2]
        e, od = eo[..., 0], eo[..., 1]  # even / odd filter responses
        an = torch.linalg.vector_norm(eo, dim=-1)  # amplitude abs(EO) (MATLAB's hypot, to rounding)
        sum_an, sum_e, sum_o = an.sum(1), e.sum(1), od.sum(1)
        max_an = an.max(1).values
        x_energy = torch.sqrt(sum_e * sum_e + sum_o * sum_o) + eps
        mean_e, mean_o = (sum_e / x_energy).unsqueeze(1), (sum_o / x_energy).unsqueeze(1)
        # sum_s E.*MeanE + O.*MeanO - |E.*MeanO - O.*MeanE|, the first two terms summed first.
        energy = (sum_e * mean_e[:, 0] + sum_o * mean_o[:, 0]) - (e * mean_o - od * mean_e).abs().sum(1)
        # median(abs(EO{1,o}).^2): squaring is monotonic, so square the middle amplitudes.
        median_e2n = _median(an[:, 0].reshape(im.shape[0], -1), square=True)
        mean_e2n = -median_e2n / math.log(0.5)
        noise_power = mean_e2n / bank[o]["em_n"]
        est_noise_energy2 = 2 * noise_power * bank[o]["an2"] + 4 * noise_power * bank[o]["aiaj"]
        tau = torch.sqrt(est_noise_energy2 / 2)  # Rayleigh parameter
        est_noise_energy = tau * math.sqrt(math.pi / 2)
        est_noise_sigma = torch.sqrt((2 - math.pi / 2) * tau * tau)
        t = (est_noise_energy + p.k * est_noise_sigma) / 1.7  # PC_2 empirical rescaling
        energy = torch.clamp(energy - t.view(-1, 1, 1), min=0)
        width = sum_an / (max_an + eps) / p.nscale
        weight = 1.0 / (1 + torch.exp((p.cut_off - width) * p.g))
        energy_o = weight * energy
        total_sum_an = total_sum_an + sum_an
        total_energy = total_energy + energy_o
        # A constant image has no filter response (0/0, NaN in the toolbox): PC = 0 there.
        pc_o = torch.where(sum_an > 0, weight * energy / torch.where(sum_an > 0, sum_an, torch.ones_like(sum_an)), torch.zeros_like(sum_an))
        covx, covy = pc_o * math.cos(ang), pc_o * math.sin(ang)
        covx2 = covx2 + covx * covx
        covy2 = covy2 + covy * covy
        covxy = covxy + covx * covy
    pc = total_energy / (total_sum_an + eps)
    covx2 = covx2 / (p.norient / 2)
    covy2 = covy2 / (p.norient / 2)
    covxy = covxy / p.norient
    denom = torch.sqrt(covxy * covxy + (covx2 - covy2) ** 2) + eps
    big_m = (covy2 + covx2 + denom) / 2
    small_m = (covy2 + covx2 - denom) / 2
    return pc, big_m, small_m


_FEATURE_THRESHOLD = 0.1  # fea_threshold in metricZhao.m
_ZHAO_C = 1e-4  # C1 = C2 = C3


def _corr_coeff(x1: Tensor, x2: Tensor, xmax: Tensor, xf: Tensor, m1: Tensor, m2: Tensor, m3: Tensor) -> Tensor:
    g = gaussian_1d(11, 1.5, dtype=xf.dtype, device=xf.device)  # fspecial('gaussian', 11, 1.5)
    x1, x2, xmax = m1 * x1, m2 * x2, m3 * xmax

    def filt(v: Tensor) -> Tensor:
        return filter2_sep(v, g, g, "same")

    mu1, mu2, muf, mum = filt(x1), filt(x2), filt(xf), filt(xmax)
    s1 = filt(x1 * x1) - mu1 * mu1
    s2 = filt(x2 * x2) - mu2 * mu2
    sm = filt(xmax * xmax) - mum * mum
    sf = filt(xf * xf) - muf * muf
    s1f = filt(x1 * xf) - mu1 * muf
    s2f = filt(x2 * xf) - mu2 * muf
    smf = filt(xmax * xf) - mum * muf

    def rho(sxf: Tensor, sx: Tensor, mask: Tensor) -> Tensor:
        r = (sxf + _ZHAO_C) / (torch.sqrt((sx * sf).abs()) + _ZHAO_C)
        return torch.where(mask, r, torch.zeros_like(r))

    result = torch.maximum(torch.maximum(rho(s1f, s1, m1), rho(s2f, s2, m2)), rho(smf, sm, m3))
    a3 = m3.sum((-2, -1)).to(result.dtype)
    # No feature pixel at all (e.g. constant images): 0/0 in the toolbox; reported as 0.
    return torch.where(a3 > 0, result.sum((-2, -1)) / a3.clamp_min(1), torch.zeros_like(a3))


def _zhao_pair(a: Tensor, b: Tensor, f: Tensor, params: PhaseCongruencyParams) -> Tensor:
    pc, big_m, small_m = phase_congruency(torch.stack([a, b, f], 1).flatten(0, 1), params)
    pc, big_m, small_m = (x.unflatten(0, (a.shape[0], 3)).unbind(1) for x in (pc, big_m, small_m))
    (pc1, pc2, pcf), (bm1, bm2, bmf), (sm1, sm2, smf) = pc, big_m, small_m
    take1 = pc1 > pc2
    pc_max = torch.where(take1, pc1, pc2)
    bm_max = torch.where(take1, bm1, bm2)
    sm_max = torch.where(take1, sm1, sm2)
    m1, m2, m3 = pc1 > _FEATURE_THRESHOLD, pc2 > _FEATURE_THRESHOLD, pc_max > _FEATURE_THRESHOLD
    r_pc = _corr_coeff(pc1, pc2, pc_max, pcf, m1, m2, m3)
    r_bm = _corr_coeff(bm1, bm2, bm_max, bmf, m1, m2, m3)
    r_sm = _corr_coeff(sm1, sm2, sm_max, smf, m1, m2, m3)
    return r_pc * r_bm * r_sm


def q_p(fused: Tensor, sources: Tensor, params: PhaseCongruencyParams = PhaseCongruencyParams()) -> Tensor:
    """Q_P, **Zhao's** phase-congruency metric (``metricZhao.m``, function pc_assessFusion).

    Phase congruency (Kovesi, 4 scales, 6 orientations) with its maximum and minimum
    moments; at feature pixels (PC > 0.1) local correlation coefficients (11x11 Gaussian,
    sigma 1.5, C = 1e-4) between F and A, B and their PC-wise maximum;
    ``Q = P_pc * P_M * P_m``. ``yuliu_gray`` images.
    Source: J. Zhao et al., IJICIC 3(6A) 2007 1433-1447. Range [0, 1], higher is better.
    Deviation: no feature pixel at all (0/0 in the toolbox) gives 0.
    N > 2 sources: mean over source pairs.
    """
    f = yuliu_gray(fused, "fused")
    s = yuliu_gray(sources, "sources").unbind(1)
    return mean_over_pairs(lambda a, b, x: _zhao_pair(a, b, x, params), f, s)


@register_metric("q_p", "nr", higher_is_better=True)
class QP(NoReferenceMetric):
    """Zhao's phase-congruency Q_P, see :func:`q_p`. Higher is better."""

    def score(self, fused: Tensor, sources: Tensor) -> Tensor:
        return q_p(fused, sources)
