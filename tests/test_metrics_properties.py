"""Invariances and contracts of the metric suite on small synthetic images (no ../shared needed)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import mfif.metrics as M
from mfif.metrics import GACN_LOSS, PETROVIC, build_metric, build_metric_collections, metric_spec, q_abf
from mfif.metrics._base import NoReferenceMetric

NR = M.NO_REFERENCE_METRICS
H, W = 48, 56


def _scene(seed: int, c: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """A sharp uint8 image and two complementary defocused sources ``[1, 2, C, H, W]``."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    base = 0.5 + 0.25 * torch.sin(12 * xx + 3 * seed) * torch.cos(9 * yy) + 0.15 * torch.rand(H, W, generator=g)
    sharp = torch.stack([base * (0.8 + 0.1 * k) for k in range(c)]).clamp(0, 1)
    blur = F.avg_pool2d(sharp[None], 5, stride=1, padding=2, count_include_pad=False)[0]
    mask = (xx < 0.5).float()
    a = sharp * mask + blur * (1 - mask)
    b = sharp * (1 - mask) + blur * mask
    to8 = lambda t: (t * 255).round().to(torch.uint8)  # noqa: E731
    return to8(sharp)[None], torch.stack([to8(a), to8(b)])[None]


def _score(name: str, fused: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    return build_metric(name).score(fused, sources)


@pytest.fixture(scope="module")
def scene():
    return _scene(0)


# ----------------------------------------------------------------------------- registry
def test_every_metric_is_registered_with_its_direction():
    expected = {
        "q_g", "q_nmi", "mi", "q_ncie", "q_te", "fmi_edge", "fmi_dct", "q_m", "q_sf", "q_p", "q_piella",
        "q_piella_w", "q_piella_e", "q_c", "q_y", "q_cb", "q_cv", "viff", "sen", "std", "avg", "sf", "ei",
    }
    assert expected == set(NR)
    for name in ("psnr", "ssim", "ms_ssim", "mse", "iw_ssim", "haarpsi", "mdsi", "ms_gmsd", "lpips", "dists", "pieapp"):
        assert metric_spec(name).kind == "fr"
    assert metric_spec("q_cv").higher_is_better is False
    assert metric_spec("q_sf").optimum == 0.0
    assert metric_spec("q_sf").rank_key(-0.01) > metric_spec("q_sf").rank_key(-0.1)
    assert metric_spec("q_sf").rank_key(0.01) > metric_spec("q_sf").rank_key(-0.1)
    assert metric_spec("q_cv").rank_key(1.0) > metric_spec("q_cv").rank_key(2.0)
    for name in NR:
        assert isinstance(build_metric(name), NoReferenceMetric)


def test_unknown_metric_name_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown metric 'q_gg'.*did you mean 'q_g'"):
        build_metric("q_gg")
    with pytest.raises(KeyError, match="q_piela"):
        build_metric_collections(["q_g", "q_piela"])


# ----------------------------------------------------------------------------- invariances
def test_identical_inputs_give_the_ideal_values(scene):
    f, _ = scene
    s = torch.stack([f, f], 1)
    k = (PETROVIC.gamma_g / (1 + math.exp(PETROVIC.k_g * (1 - PETROVIC.sigma_g)))) * (
        PETROVIC.gamma_a / (1 + math.exp(PETROVIC.k_a * (1 - PETROVIC.sigma_a)))
    )
    ideal = {
        "q_g": k, "q_nmi": 2.0, "q_sf": 0.0, "q_piella": 1.0, "q_piella_w": 1.0, "q_piella_e": 1.0,
        "q_c": 1.0, "q_y": 1.0, "q_cb": 1.0, "q_cv": 0.0, "q_m": 3.0, "fmi_edge": 1.0, "fmi_dct": 1.0,
    }
    for name, want in ideal.items():
        got = float(_score(name, f, s))
        assert got == pytest.approx(want, abs=1e-9), name
    # Q_P correlates masked feature maps: where a local variance E[x^2] - mu^2 rounds below
    # zero, (s + C) / (|s| + C) < 1, so identical inputs give slightly less than 1.
    assert 0.99 < float(_score("q_p", f, s)) <= 1.0
    assert float(_score("viff", f, s)) == pytest.approx(1.0, abs=1e-6)
    # MI(A, F) + MI(B, F) = 2 H(F) in nats, per channel.
    two_h = 2 * float(M.statistics.entropy(f)) * math.log(2)
    assert float(_score("mi", f, s)) == pytest.approx(two_h, rel=1e-9)


def test_q_g_with_f_equal_to_a_source(scene):
    """F = A preserves all of A's edges: Q_G(A, B, A) beats a blurred F and Q_G(A, A, A) is the
    constant Q_g(1) Q_a(1) of the sigmoids; the A term alone is that constant on every pixel."""
    f, s = scene
    a = s[:, 0]
    blurred = F.avg_pool2d(f.double(), 3, stride=1, padding=1).round().to(torch.uint8)
    assert float(_score("q_g", a, s)) > float(_score("q_g", blurred, s))
    ga = M.gradient.yuliu_gray(a)
    k = float(q_abf(ga, ga, ga))
    assert float(q_abf(ga, M.gradient.yuliu_gray(s[:, 1]), ga)) < k


@pytest.mark.parametrize("name", NR)
def test_symmetric_in_the_sources(name, scene):
    f, s = scene
    ab = float(_score(name, f, s))
    ba = float(_score(name, f, s.flip(1)))
    # Q_G's 1e-5 zero guards are applied in the toolbox's (asymmetric) order.
    assert ab == pytest.approx(ba, rel=1e-6 if name == "q_g" else 1e-10, abs=1e-12), name


@pytest.mark.parametrize("name", NR)
def test_constant_images_give_finite_values(name, scene):
    f, s = scene
    const_f = torch.full_like(f, 128)
    const_s = torch.full_like(s, 77)
    for ff, ss in ((const_f, torch.full_like(s, 128)), (const_f, s), (f, const_s), (torch.zeros_like(f), torch.zeros_like(s))):
        v = _score(name, ff, ss)
        assert torch.isfinite(v).all(), f"{name} gave {v}"


@pytest.mark.parametrize("name", NR)
def test_uint8_and_float_inputs_agree(name, scene):
    f, s = scene
    u = float(_score(name, f, s))
    fl = float(_score(name, f.float() / 255, s.float() / 255))
    assert u == pytest.approx(fl, rel=1e-12, abs=1e-12), name


@pytest.mark.parametrize("name", NR)
def test_gray_and_replicated_rgb_agree(name):
    f, s = _scene(3, c=1)
    gray = float(_score(name, f, s))
    rgb = float(_score(name, f.expand(-1, 3, -1, -1), s.expand(-1, -1, 3, -1, -1)))
    assert gray == pytest.approx(rgb, rel=1e-12, abs=1e-12), name


@pytest.mark.parametrize("name", NR)
def test_batched_equals_per_image(name):
    (f1, s1), (f2, s2) = _scene(1), _scene(2)
    both = _score(name, torch.cat([f1, f2]), torch.cat([s1, s2]))
    single = torch.cat([_score(name, f1, s1), _score(name, f2, s2)])
    assert both.shape == (2,)
    torch.testing.assert_close(both, single, rtol=1e-12, atol=1e-12)


def test_more_than_two_sources_average_the_source_pairs(scene):
    f, s = scene
    c = (s[:, :1].int() + s[:, 1:].int()).div(2, rounding_mode="floor").to(torch.uint8)
    s3 = torch.cat([s, c], 1)
    for name in ("q_g", "q_nmi", "q_piella"):
        pairs = [float(_score(name, f, s3[:, [i, j]])) for i, j in ((0, 1), (0, 2), (1, 2))]
        assert float(_score(name, f, s3)) == pytest.approx(sum(pairs) / 3, rel=1e-12)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_metric_accumulates_the_mean_over_images():
    (f1, s1), (f2, s2) = _scene(1), _scene(2)
    m = build_metric("q_nmi")
    m.update(f1, s1)
    m.update(torch.cat([f2, f2]), torch.cat([s2, s2]))
    v1, v2 = float(_score("q_nmi", f1, s1)), float(_score("q_nmi", f2, s2))
    assert float(m.compute()) == pytest.approx((v1 + 2 * v2) / 3, rel=1e-12)
    m.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        m.compute()


def test_metric_collection_takes_keyword_batches(scene):
    f, s = scene
    nr, fr = build_metric_collections(["q_g", "sen", "psnr"])
    nr.update(fused=f.float() / 255, sources=s.float() / 255)
    fr.update(fused=f.float() / 255, gt=f.float() / 255)
    out = nr.compute()
    assert set(out) == {"q_g", "sen"} and all(torch.isfinite(v) for v in out.values())
    assert math.isinf(float(fr.compute()["psnr"]))  # identical images


def test_bad_inputs_are_clear_errors(scene):
    f, s = scene
    m = build_metric("q_g")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.update(f.float(), s.float())  # 0..255 floats
    with pytest.raises(ValueError, match="N >= 2"):
        m.update(f, s[:, :1])
    with pytest.raises(ValueError, match="fused must have shape"):
        m.update(f[0], s)
    with pytest.raises(ValueError, match="share batch size"):
        m.update(f[..., :40], s)


# ----------------------------------------------------------------------------- Q^AB/F loss
def test_q_abf_is_differentiable_with_finite_gradients():
    _, s = _scene(4, c=1)
    a, b = s[:, 0].double() / 255, s[:, 1].double() / 255
    a[..., :10, :10] = 0.3  # flat patch: zero gradient strength
    f = ((a + b) / 2).clone().requires_grad_(True)
    for kw in ({}, {"soft_k": 1000.0}, {"soft_k": 1000.0, "orientation": "smooth"}, {"constants": GACN_LOSS}):
        f.grad = None
        q = q_abf(a, b, f, **kw)
        assert q.shape == (1,) and 0 < float(q.detach()) < 1
        (1 - q).sum().backward()
        assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0, kw


def test_soft_q_abf_tends_to_the_hard_one():
    f8, s8 = _scene(5, c=1)
    a, b, f = (x.double() for x in (s8[:, 0], s8[:, 1], f8))
    hard = float(q_abf(a, b, f))
    gaps = [abs(float(q_abf(a, b, f, soft_k=k)) - hard) for k in (0.1, 1.0, 10.0, 1e4)]
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3] and gaps[3] < 1e-6
    smooth = float(q_abf(a, b, f, orientation="smooth", orientation_k=1e6))
    assert smooth == pytest.approx(hard, abs=1e-6)
    assert float(q_abf(a, b, f, constants=GACN_LOSS)) != pytest.approx(hard, abs=1e-3)
    with pytest.raises(ValueError, match="orientation_k"):
        q_abf(a, b, f, orientation="smooth")
    with pytest.raises(ValueError, match="single-channel"):
        q_abf(a.expand(1, 3, -1, -1), b, f)


def test_ssim_helper_wraps_kornia():
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    assert float(M.ssim(x.detach(), x.detach())) == pytest.approx(1.0, abs=1e-5)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    loss = 1 - M.ssim(x, y)
    loss.backward()
    assert 0 < float(loss.detach()) < 1 and torch.isfinite(x.grad).all()
    assert M.ssim(x, y, reduction="none").shape == (2,)


# ----------------------------------------------------------------------------- full reference
def test_weight_free_full_reference_metrics_run():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 3, 176, 176, generator=g)
    f = (gt + 0.05 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
    for name in M.FULL_REFERENCE_METRICS:
        m = build_metric(name)
        m.update(f, gt)
        bad = float(m.compute())
        m.reset()
        m.update(gt, gt)
        perfect = float(m.compute())
        assert math.isfinite(bad), name
        better = perfect >= bad if metric_spec(name).higher_is_better else perfect <= bad
        assert better, (name, perfect, bad)
    m = build_metric("psnr")
    m.update((f * 255).round().to(torch.uint8), (gt * 255).round().to(torch.uint8))  # uint8 accepted
    assert 20 < float(m.compute()) < 40


def _no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"attempted download: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.mark.parametrize("name", ["lpips", "dists", "pieapp"])
def test_network_metrics_without_weights_name_the_missing_file(name, tmp_path, monkeypatch):
    _no_download(monkeypatch)
    monkeypatch.setenv("MFIF_WEIGHTS_DIR", str(tmp_path))
    expected = {"lpips": "lpips_weights.pt", "dists": "dists_weights.pt", "pieapp": "PieAPPv0.1.pth"}[name]
    with pytest.raises(FileNotFoundError, match=expected) as err:
        build_metric(name)
    assert str(tmp_path / "checkpoints") in str(err.value)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """Right-shaped weight files that are tiny: every tensor is a stride-0 expansion of one value."""
    from mfif.metrics._piq import WEIGHT_FILES, import_piq, vgg16_features

    piq = import_piq()
    root = tmp_path_factory.mktemp("weights")
    ck = root / "checkpoints"
    ck.mkdir()

    def const(shape, v):
        return torch.full((1,), v).expand(*shape) if len(shape) else torch.tensor(v)

    with torch.device("meta"):
        feats, pie = vgg16_features(), piq.pieapp.PieAPPModel()
    torch.save({f"features.{k}": const(p.shape, 0.01) for k, p in feats.state_dict().items()}, ck / WEIGHT_FILES["vgg16"][0])
    torch.save([const((1, c, 1, 1), 0.1) for c in (64, 128, 256, 512, 512)], ck / WEIGHT_FILES["lpips"][0])
    torch.save({"alpha": const((1, 1475, 1, 1), 0.1), "beta": const((1, 1475, 1, 1), 0.1)}, ck / WEIGHT_FILES["dists"][0])
    sd = {k: const(p.shape, 0.001) for k, p in pie.state_dict().items()}
    sd["ref_score_subtract.weight"] = const((1,), 0.001)  # stored 1-D upstream; piq unsqueezes it
    torch.save(sd, ck / WEIGHT_FILES["pieapp"][0])
    assert all(p.stat().st_size < 100_000 for p in ck.iterdir())
    return root


@pytest.mark.parametrize("name", ["lpips", "dists", "pieapp"])
def test_network_metrics_load_local_weights(name, tiny_weights, monkeypatch):
    _no_download(monkeypatch)
    monkeypatch.setenv("MFIF_WEIGHTS_DIR", str(tiny_weights))
    hub_before = torch.hub.get_dir()
    m = build_metric(name)
    assert torch.hub.get_dir() == hub_before  # the hub dir is only borrowed
    first = next(m.net.parameters())
    assert torch.allclose(first.flatten()[:3], torch.full((3,), 0.01 if name != "pieapp" else 0.001))
    g = torch.Generator().manual_seed(0)
    f, gt = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    m.update(f, gt)
    m.update(f[:, :1], gt[:, :1])  # gray is replicated to RGB
    assert math.isfinite(float(m.compute()))
    # The explicit argument wins over the environment.
    monkeypatch.setenv("MFIF_WEIGHTS_DIR", "/nonexistent")
    assert type(m)(weights_dir=tiny_weights) is not None


def test_wrong_shaped_weights_are_rejected(tiny_weights, tmp_path, monkeypatch):
    _no_download(monkeypatch)
    from mfif.metrics._piq import WEIGHT_FILES

    (tmp_path / "checkpoints").mkdir()
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "checkpoints" / WEIGHT_FILES["vgg16"][0])
    (tmp_path / "checkpoints" / WEIGHT_FILES["lpips"][0]).write_bytes((tiny_weights / "checkpoints" / WEIGHT_FILES["lpips"][0]).read_bytes())
    with pytest.raises(RuntimeError, match="size mismatch|Missing key"):
        M.full_reference.LPIPS(weights_dir=tmp_path)


# ----------------------------------------------------------------------------- hand-written helpers
def test_filter2_matches_conv2d_and_matlab_padding():
    from mfif.metrics._common import filter2, filter2_sep, fspecial_gaussian, gaussian_1d

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 13, 17, dtype=torch.float64, generator=g)
    k = torch.rand(3, 4, dtype=torch.float64, generator=g)  # even width: MATLAB 'same' centring
    ref = F.conv2d(F.pad(x[:, None], (1, 2, 1, 1)), k[None, None])[:, 0]
    torch.testing.assert_close(filter2(x, k, "same"), ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(filter2(x, k, "valid"), F.conv2d(x[:, None], k[None, None])[:, 0], rtol=1e-13, atol=1e-13)
    box = torch.full((3, 3), 1 / 9, dtype=torch.float64)  # box kernels go through avg_pool2d
    torch.testing.assert_close(filter2(x, box, "valid"), F.conv2d(x[:, None], box[None, None])[:, 0], rtol=1e-13, atol=1e-13)
    rep = filter2(x, k, "same", padding="replicate")
    torch.testing.assert_close(rep, F.conv2d(F.pad(x[:, None], (1, 2, 1, 1), mode="replicate"), k[None, None])[:, 0])
    gg = gaussian_1d(7, 1.5)
    torch.testing.assert_close(torch.outer(gg, gg), fspecial_gaussian(7, 1.5), rtol=1e-14, atol=1e-17)
    centre = 1 / sum(math.exp(-(u * u) / 4.5) for u in range(-3, 4)) ** 2  # exp(0) / sum(h), h separable
    assert float(fspecial_gaussian(7, 1.5)[3, 3]) == pytest.approx(centre, rel=1e-13)
    torch.testing.assert_close(filter2_sep(x, gg, gg), filter2(x, fspecial_gaussian(7, 1.5)), rtol=1e-13, atol=1e-13)


def test_dct2_and_haar_known_values():
    from mfif.metrics.fmi import dct2
    from mfif.metrics.multiscale import haar_level

    x = torch.full((1, 4, 6), 3.0, dtype=torch.float64)
    d = dct2(x)
    assert float(d[0, 0, 0]) == pytest.approx(3.0 * math.sqrt(24))  # orthonormal: DC = mean * sqrt(HW)
    assert float(d.abs().sum() - d[0, 0, 0].abs()) == pytest.approx(0.0, abs=1e-12)
    y = torch.rand(2, 8, 10, dtype=torch.float64)
    assert float((dct2(y) ** 2).sum()) == pytest.approx(float((y**2).sum()), rel=1e-12)  # Parseval
    block = torch.tensor([[[1.0, 2.0, 9.0], [3.0, 4.0, 9.0], [9.0, 9.0, 9.0]]], dtype=torch.float64)
    lolo, (lohi, hilo, hihi) = haar_level(block)  # odd last row/column dropped (corrDn)
    assert lolo.shape == (1, 1, 1)
    assert [float(v) for v in (lolo, lohi, hilo, hihi)] == pytest.approx([5.0, 2.0, 1.0, 0.0])
