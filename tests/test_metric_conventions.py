"""Per-paper metric variants (mfif.metrics.conventions): known values, contracts, paper values.

Known values come from three independent sources:

* the Octave runs of the original toolboxes in ../shared/reference/metrics_octave.json
  (Zheng Liu's original ``metricXydeas.m``, MEFB's ``metricsQabf.m``, ``mutual_info.m``);
* small NumPy re-derivations from the formulas on tiny images, written here loop by loop;
* printed paper values reproduced on Yu Liu's published fused images (UFA-Fuse Table V).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import mfif.metrics as M
from mfif.metrics import conventions as C
from mfif.metrics import q_abf
from mfif.metrics.gradient import GACN_LOSS

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = sorted(n for n in M.metric_names() if M.metric_spec(n).variant_of is not None)


def _rand_pair(seed: int, h: int = 24, w: int = 28, c: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = [torch.randint(0, 256, (1, c, h, w), generator=g, dtype=torch.uint8) for _ in range(3)]
    return x[0], torch.stack([x[1], x[2]], 1)


@pytest.fixture(scope="module")
def reference(shared_dir):
    from PIL import Image

    root = shared_dir / "reference"
    if not (root / "metrics_octave.json").is_file():
        pytest.skip(f"{root / 'metrics_octave.json'} not present")
    out = {}
    for t in json.loads((root / "metrics_octave.json").read_text())["triples"]:
        ims = [torch.from_numpy(np.array(Image.open(root / t[k]))) for k in "ABF"]
        ims = [x.permute(2, 0, 1) if x.dim() == 3 else x[None] for x in ims]
        out[t["name"]] = (ims[2][None], torch.stack(ims[:2])[None], t)
    return out


# ----------------------------------------------------------------------------- registry
def test_variants_are_registered_apart_from_the_canonical_set():
    assert len(VARIANTS) == 20
    for name in VARIANTS:
        spec = M.metric_spec(name)
        assert spec.kind == "nr" and spec.variant_of in M.NO_REFERENCE_METRICS
        assert name not in M.NO_REFERENCE_METRICS  # the default (canonical) set is unchanged
        assert M.build_metric(name).__doc__.startswith(f"``{name}``")
    with pytest.raises(ValueError, match="variant_of='nope'"):
        M.register_metric("x_test", "nr", variant_of="nope")


def test_paper_conventions_name_registered_metrics_used_by_configs_and_side_files():
    known = set(M.metric_names())
    for paper, cols in C.PAPER_CONVENTIONS.items():
        assert set(cols.values()) <= known, paper
        cfg = yaml.safe_load((ROOT / "experiments" / "configs" / f"{paper}.yaml").read_text())
        assert set(cfg["metrics"]) <= set(cols.values()), f"{paper}.yaml metrics"
        for side in sorted((ROOT / "ablations" / paper).glob("table*.paper.yaml")):
            columns = yaml.safe_load(side.read_text())["columns"]
            metrics = [c for c in columns if c in known and M.metric_spec(c).kind == "nr"]
            if metrics:
                assert set(metrics) <= set(cols.values()), side.name


# ----------------------------------------------------------------------------- colour
def test_colour_planes_known_pixels():
    px = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], dtype=torch.uint8).t()
    x = px.reshape(1, 3, 1, 4)
    assert C.to_plane(x, "first_channel")[0, 0].tolist() == [255, 0, 0, 255]
    assert C.to_plane(x, "skimage_gray")[0, 0].tolist() == pytest.approx([54.1875, 182.427, 18.3855, 255.0], abs=1e-9)
    assert C.to_plane(x, "yuliu_gray")[0, 0].tolist() == [76, 150, 29, 255]  # MATLAB rgb2gray
    gray = torch.randint(0, 256, (2, 1, 5, 6), dtype=torch.uint8)
    for colour in C.COLOURS:  # a single-channel image is used as it is
        assert torch.equal(C.to_plane(gray, colour), gray[:, 0].double())
    assert C.to_plane(torch.rand(2, 4, 3, 5, 6), "skimage_gray").shape == (2, 4, 5, 6)


def test_colour_errors_are_clear():
    with pytest.raises(ValueError, match="colour must be one of"):
        C.to_plane(torch.zeros(1, 3, 4, 4), "lab")
    with pytest.raises(ValueError, match=r"shape \[..., C, H, W\]"):
        C.to_plane(torch.zeros(1, 2, 4, 4), "first_channel")
    with pytest.raises(ValueError, match="floating images must lie in"):
        C.to_plane(torch.full((1, 3, 4, 4), 7.0), "skimage_gray")


# ----------------------------------------------------------------------------- Octave values
def test_q_g_zl_matches_the_original_toolbox_in_octave(reference):
    for name, (f, s, t) in reference.items():
        assert float(C.q_g_zl(f, s)[0]) == pytest.approx(t["metrics"]["Q_G_zl_original"], rel=1e-10), name


def test_q_g_mefb_matches_mefb_metricsqabf_in_octave(reference):
    for name, (f, s, t) in reference.items():
        gray = float(C.q_g_mefb(f, s, colour="yuliu_gray")[0])  # analysis_Qabf on the gray image
        assert gray == pytest.approx(t["metrics"]["Q_G_thfylsty_0_255"], rel=1e-9), name
        per_channel = np.mean([float(C.q_g_mefb(f[:, k : k + 1], s[:, :, k : k + 1])[0]) for k in range(f.shape[1])])
        assert per_channel == pytest.approx(t["metrics"]["Q_G_mefb"], rel=1e-9), name  # MEFB wrapper


def test_mi_bits_is_the_toolbox_mutual_info_in_bits(reference):
    for name, (f, s, t) in reference.items():
        assert float(C.mi_bits(f, s, colour="yuliu_gray")[0]) == pytest.approx(t["metrics"]["MI_liu_bits"], rel=1e-10), name


def test_exact_flat_variants_equal_the_toolbox_without_flat_windows_and_stay_below_1(reference):
    for name, (f, s, t) in reference.items():
        flat = any(v > 0 for v in t["flat_7x7_windows_gray"].values())
        q_y, q_c = float(C.q_y_exact(f, s)[0]), float(C.q_c_exact(f, s)[0])
        assert q_y <= 1.0 and q_c <= 1.0, name
        if not flat:
            assert q_y == pytest.approx(t["metrics"]["Q_Y"], rel=1e-10), name
            assert q_c == pytest.approx(t["metrics"]["Q_C"], rel=1e-10), name
    f, s, _ = reference["lab_cnn"]  # 19816 windows flat in A, B and F: the canonical Q_Y is 72
    assert float(M.build_metric("q_y").score(f, s)[0]) > 1.5
    assert 0.95 < float(C.q_y_exact(f, s)[0]) <= 1.0


def test_exact_flat_variants_on_constant_images():
    f = torch.full((1, 1, 16, 16), 100, dtype=torch.uint8)
    s = torch.stack([f, f], 1)
    assert float(C.q_y_exact(f, s)[0]) == 1.0  # exact arithmetic: SSIM of equal constant windows is 1
    assert float(C.q_c_exact(f, s)[0]) == 1.0
    s2 = torch.stack([f, torch.full_like(f, 40)], 1)  # A == F constant, B another constant
    assert 0.0 <= float(C.q_y_exact(f, s2)[0]) <= 1.0


def _np_ssim_yang_sesf(x: np.ndarray, y: np.ndarray, eps: float = 1e-10):
    """SSIM map of the SESF-Fuse ``metricYang.m`` (7x7 Gaussian 1.5, C = 2e-16, + eps), loop by loop."""
    r = np.arange(7) - 3
    w = np.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * 1.5**2))
    w /= w.sum()
    h, wd = x.shape[0] - 6, x.shape[1] - 6
    m, vx, vy = np.zeros((h, wd)), np.zeros((h, wd)), np.zeros((h, wd))
    for i in range(h):
        for j in range(wd):
            px, py = x[i : i + 7, j : j + 7], y[i : i + 7, j : j + 7]
            mx, my = (w * px).sum(), (w * py).sum()
            sx, sy = (w * px * px).sum() - mx * mx, (w * py * py).sum() - my * my
            sxy = (w * px * py).sum() - mx * my
            c = 2e-16
            m[i, j] = (2 * mx * my + c) * (2 * sxy + c) / ((mx * mx + my * my + c) * (sx + sy + c) + eps)
            vx[i, j], vy[i, j] = sx, sy
    return m, vx, vy


def test_q_y_sesf_known_values():
    """GACN's Q_Y (SESF-Fuse evaluation code): images in [0, 1], 1e-10 in the denominators."""
    f, s = _rand_pair(11, 12, 13)
    a, b, x = (t[0, 0].numpy().astype(float) / 255 for t in (s[:, 0], s[:, 1], f))
    m_ab, va, vb = _np_ssim_yang_sesf(a, b)
    m_af, _, _ = _np_ssim_yang_sesf(a, x)
    m_bf, _, _ = _np_ssim_yang_sesf(b, x)
    lam = va / (va + vb + 1e-10)
    want = np.where(m_ab >= 0.75, lam * m_af + (1 - lam) * m_bf, np.maximum(m_af, m_bf)).mean()
    assert float(M.build_metric("q_y_sesf_sk").score(f, s)[0]) == pytest.approx(want, rel=1e-9)
    # Black images: every mean and variance is exactly 0, so SSIM = C^2 / (C^2 + 1e-10) ~ 4e-22
    # (the exact-flat variant says 1, the canonical toolbox divides rounding noise).
    z = torch.zeros(1, 1, 16, 16, dtype=torch.uint8)
    c2 = 2e-16 * 2e-16
    assert float(C.q_y_sesf(z, torch.stack([z, z], 1))[0]) == pytest.approx(c2 / (c2 + 1e-10), rel=1e-12)
    assert float(C.q_y_exact(z, torch.stack([z, z], 1))[0]) == 1.0
    # F = A = B, not flat: SSIM = 1 - 1e-10 / den with den ~ 1e-2, lambda ~ 0.5 -> Q_Y ~ 1 - 1e-8.
    assert float(C.q_y_sesf(f, torch.stack([f, f], 1))[0]) == pytest.approx(1.0, abs=1e-6)


def test_fmi_edge_matlab_uses_matlab_edge_on_unit_gray():
    from mfif.metrics.edges import matlab_sobel_edges
    from mfif.metrics.fmi import _fmi_single

    f, s = _rand_pair(12, 20, 22)
    got = float(M.build_metric("fmi_edge_matlab_sk").score(f, s)[0])
    a, b, x = (t[:, 0, 0].to(torch.float64) / 255 for t in (s[:, :1], s[:, 1:], f[:, None]))
    want = _fmi_single(matlab_sobel_edges(a), matlab_sobel_edges(b), matlab_sobel_edges(x))
    assert got == pytest.approx(float(want[0]), rel=1e-12)
    # A step between equal columns: MATLAB keeps one edge column, Octave's strict rule none.
    step = torch.zeros(1, 1, 16, 20, dtype=torch.uint8)
    step[..., 10:] = 200
    ramp = (torch.arange(20, dtype=torch.float64) * 12).to(torch.uint8).expand(1, 1, 16, 20)
    pair = torch.stack([step, ramp], 1)
    assert float(M.build_metric("fmi_edge_matlab_sk").score(ramp, pair)[0]) != pytest.approx(
        float(M.build_metric("fmi_edge_sk").score(ramp, pair)[0]), rel=1e-6)
    assert float(M.build_metric("fmi_edge_matlab_sk").score(f, torch.stack([f, f], 1))[0]) == 1.0  # F = A = B


# ----------------------------------------------------------------------------- formulas (NumPy)
def _np_hist_probs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h = np.zeros((256, 256))
    for i, j in zip(x.ravel().astype(int), y.ravel().astype(int)):
        h[i, j] += 1
    return h / h.sum()


def _np_normalize1(x: np.ndarray) -> np.ndarray:
    x = x.astype(float)
    return np.floor((x - x.min()) / (x.max() - x.min()) * 255 + 0.5)


def _np_tsallis(x: np.ndarray, y: np.ndarray, q: float) -> float:
    h = _np_hist_probs(x, y)
    m1, m2 = h.sum(0), h.sum(1)  # tsallis.m: im1_marg = sum(h), im2_marg = sum(h')
    total = 0.0
    for i in range(256):
        for j in range(256):
            if m1[i] * m2[j] != 0:
                total += h[i, j] ** q / (m1[i] * m2[j]) ** (q - 1)
    return (1 - total) / (1 - q)


def _np_entropy(x: np.ndarray) -> float:
    p = np.bincount(x.ravel().astype(int), minlength=256) / x.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def test_q_te_nava_known_value_from_the_formula():
    f, s = _rand_pair(1, 12, 14)
    a, b, x = (_np_normalize1(t[0, 0].numpy()) for t in (s[:, 0], s[:, 1], f))
    q = 0.43137
    den = _np_entropy(a) ** q + _np_entropy(b) ** q + _np_tsallis(a, b, q)
    want = (_np_tsallis(a, x, q) + _np_tsallis(b, x, q)) / den
    assert float(C.q_te_nava(f, s)[0]) == pytest.approx(want, rel=1e-10)


def _np_gauss(n: int, sigma: float) -> np.ndarray:
    ax = np.arange(n) - (n - 1) / 2
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma * sigma))
    return g / g.sum()


def test_q_piella_zl_known_value_from_the_formula():
    f, s = _rand_pair(2, 15, 13)
    a, b, x = (t[0, 0].numpy().astype(float) for t in (s[:, 0], s[:, 1], f))
    w = _np_gauss(11, 1.5)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb, pf = (t[i : i + 11, j : j + 11] for t in (a, b, x))
            mu = {k: (w * p).sum() for k, p in (("a", pa), ("b", pb), ("f", pf))}
            var = {k: (w * p * p).sum() - mu[k] ** 2 for k, p in (("a", pa), ("b", pb), ("f", pf))}
            cov = {k: (w * pf * p).sum() - mu["f"] * mu[k] for k, p in (("a", pa), ("b", pb))}

            def ssim(k):
                return ((2 * mu["f"] * mu[k] + c1) * (2 * cov[k] + c2)) / ((mu["f"] ** 2 + mu[k] ** 2 + c1) * (var["f"] + var[k] + c2))

            lam = var["a"] / (var["a"] + var["b"])
            vals.append(lam * ssim("a") + (1 - lam) * ssim("b"))
    assert float(C.q_piella_zl(f, s)[0]) == pytest.approx(np.mean(vals), rel=1e-10)


def test_avg_forward_known_value_on_a_ramp_and_channel_choice():
    yy, xx = torch.meshgrid(torch.arange(9.0), torch.arange(11.0), indexing="ij")
    ramp = (2 * xx + 3 * yy).to(torch.uint8)
    f = torch.stack([ramp, torch.zeros_like(ramp), 255 - ramp])[None]  # red = the ramp
    assert float(C.avg_forward(f)[0]) == pytest.approx(math.sqrt((4 + 9) / 2), rel=1e-12)
    assert float(C.avg_forward(f, colour="skimage_gray")[0]) != pytest.approx(math.sqrt(6.5))
    with pytest.raises(ValueError, match="at least 2x2"):
        C.avg_forward(torch.zeros(1, 1, 1, 5, dtype=torch.uint8))


def test_std_and_sen_of_the_red_channel():
    g = torch.Generator().manual_seed(3)
    f = torch.randint(0, 256, (2, 3, 10, 12), generator=g, dtype=torch.uint8)
    red = f[:, :1].double()
    assert torch.allclose(C.std_channel(f), red.std((-2, -1), unbiased=False).flatten(), rtol=1e-12)
    p = torch.stack([torch.bincount(f[i, 0].flatten().long(), minlength=256) for i in range(2)]).double() / 120
    ent = -(torch.where(p > 0, p * torch.log2(p), torch.zeros_like(p))).sum(1)
    assert torch.allclose(C.sen_channel(f), ent, rtol=1e-12)


def _np_viff(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """VIFF_Public.m / ComVidVindG written out with SciPy correlation ('valid')."""
    from scipy.signal import correlate2d

    def stats(ref, dist, scale):
        n = 2 ** (4 - scale + 1) + 1
        w = _np_gauss(n, n / 5)
        if scale > 1:
            ref, dist = (correlate2d(x, w, "valid")[::2, ::2] for x in (ref, dist))
        m1, m2 = correlate2d(ref, w, "valid"), correlate2d(dist, w, "valid")
        s1 = np.maximum(correlate2d(ref * ref, w, "valid") - m1 * m1, 0)
        s2 = np.maximum(correlate2d(dist * dist, w, "valid") - m2 * m2, 0)
        s12 = correlate2d(ref * dist, w, "valid") - m1 * m2
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        sv[s1 < 1e-10], g[s1 < 1e-10], s1[s1 < 1e-10] = s2[s1 < 1e-10], 0, 0
        g[s2 < 1e-10], sv[s2 < 1e-10] = 0, 0
        sv[g < 0], g[g < 0] = s2[g < 0], 0
        sv[sv <= 1e-10] = 1e-10
        nsq = 0.005 * 255 * 255
        return np.log10(1 + g * g * s1 / (sv + nsq)), np.log10(1 + s1 / nsq), g, ref, dist

    total, ra, rb, fa, fb = 0.0, a, b, f, f
    for scale, p in zip(range(1, 5), (1 / 2.15, 0, 0.15 / 2.15, 1 / 2.15)):
        va, da, ga, ra, fa = stats(ra, fa, scale)
        vb, db, gb, rb, fb = stats(rb, fb, scale)
        pick = ga < gb
        total += p * (np.where(pick, va, vb) + 1e-7).sum() / (np.where(pick, da, db) + 1e-7).sum()
    return total


def test_viff_unit_known_value_from_the_formula():
    f, s = _rand_pair(4, 64, 64, c=3)
    gray = [C.to_plane(t, "yuliu_gray")[0].numpy() / 255 for t in (s[:, 0], s[:, 1], f)]  # im2double(rgb2gray)
    want = _np_viff(*gray)
    assert float(C.viff_unit(f, s)[0]) == pytest.approx(want, rel=1e-9)
    assert abs(float(M.build_metric("viff").score(f, s)[0]) - want) > 1e-3  # the 0..255 VIFF differs


def _np_haar(x: np.ndarray):
    lo = (x[0::2] + x[1::2]) / math.sqrt(2)
    hi = (x[1::2] - x[0::2]) / math.sqrt(2)
    ll, lh = (lo[:, 0::2] + lo[:, 1::2]) / math.sqrt(2), (hi[:, 0::2] + hi[:, 1::2]) / math.sqrt(2)
    hl, hh = (lo[:, 1::2] - lo[:, 0::2]) / math.sqrt(2), (hi[:, 1::2] - hi[:, 0::2]) / math.sqrt(2)
    return ll, (lh, hl, hh)


def test_q_m_unit_known_value_from_the_formula():
    f, s = _rand_pair(5, 8, 8, c=3)
    a, b, x = (t[0, 0].numpy().astype(float) / 255 for t in (s[:, 0], s[:, 1], f))  # red channel, [0, 1]
    q = 1.0
    for alpha in (2 / 3, 1 / 3):
        (a, da), (b, db), (x, dx) = _np_haar(a), _np_haar(b), _np_haar(x)
        wa, wb = sum(d * d for d in da), sum(d * d for d in db)
        ea = sum(np.exp(-np.abs(d - e)) for d, e in zip(da, dx))
        eb = sum(np.exp(-np.abs(d - e)) for d, e in zip(db, dx))
        q *= ((ea * wa + eb * wb).sum() / (wa + wb).sum()) ** alpha
    assert float(C.q_m_unit(f, s)[0]) == pytest.approx(q, rel=1e-10)


def test_sk_variants_equal_the_canonical_metrics_on_gray_images():
    f, s = _rand_pair(6, 20, 20)
    pairs = (("q_ncie_sk", "q_ncie"), ("q_cb_sk", "q_cb"), ("fmi_dct_sk", "fmi_dct"), ("q_y_exact_sk", "q_y_exact"))
    for variant, canonical in pairs:
        want = M.build_metric(canonical).score(f, s)
        assert torch.allclose(M.build_metric(variant).score(f, s), want, rtol=1e-12), variant


# ----------------------------------------------------------------------------- q_abf options
def test_q_abf_options_keep_the_default_and_are_differentiable():
    g = torch.Generator().manual_seed(7)
    a, b, f = (torch.rand(2, 1, 12, 12, generator=g, dtype=torch.float64) * 255 for _ in range(3))
    assert torch.equal(q_abf(a, b, f), q_abf(a, b, f, alignment="eq4", pooling="global", guards="toolbox"))
    f.requires_grad_(True)
    v = q_abf(a, b, f, GACN_LOSS, alignment="liu", pooling="pixel")
    assert v.shape == (2,) and bool(((v >= 0) & (v <= 1)).all())
    v.sum().backward()
    assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="alignment/pooling/guards"):
        q_abf(a, b, f, pooling="mean")
    with pytest.raises(ValueError, match="hard comparison"):
        q_abf(a, b, f, guards="mefb", soft_k=1000.0)


def test_every_variant_scores_a_batch_and_checks_its_inputs():
    f, s = _rand_pair(8, 64, 64, c=3)  # VIFF needs about 41 px or more (4 scales)
    f2, s2 = torch.cat([f, f.flip(-1)]), torch.cat([s, s.flip(-1)])
    for name in VARIANTS:
        m = M.build_metric(name)
        v = m.score(f2, s2)
        assert v.shape == (2,) and torch.isfinite(v).all(), name
        m.update(f2, s2)
        assert float(m.compute()) == pytest.approx(float(v.mean()), rel=1e-12), name
        with pytest.raises(ValueError, match="sources must"):
            m.update(f, s[:, :1])


# ----------------------------------------------------------------------------- paper values
def test_ufafuse_table5_dsift_row_on_published_images(shared_dir):
    """UFA-Fuse Table V, DSIFT row (Yu Liu's published DSIFT fusions of the 20 Lytro pairs)."""
    from PIL import Image

    root = shared_dir / "data"
    if not (root / "baselines" / "lytro" / "dsift").is_dir():
        pytest.skip("published baseline images not present")
    sums = {"avg_fwd_r": 0.0, "std_r": 0.0, "sen_r": 0.0}
    for i in range(1, 21):
        f = torch.from_numpy(np.array(Image.open(root / "baselines" / "lytro" / "dsift" / f"lytro-{i:02d}.png")))
        f = f.permute(2, 0, 1)[None]
        for name in sums:  # these depend on F only
            sums[name] += float(M.build_metric(name).score(f, torch.stack([f, f], 1))[0]) / 20
    printed = {"avg_fwd_r": 8.3142, "std_r": 62.3776, "sen_r": 7.5675}
    for name, want in printed.items():  # within one unit of the last printed decimal
        assert sums[name] == pytest.approx(want, abs=1.5e-4), name
