"""SESF-Fuse inference baseline: strict converter, post-processing, module API, Lytro sanity, CLIs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lightning_modules.sesf.module import SESF, InferenceOnlyError
from lightning_modules.sesf.network import SESFNet
from lightning_modules.sesf.official import (OfficialWeightsError, convert_state_dict, load_official,
                                             read_official, to_official)
from lightning_modules.sesf.postprocess import (binary_closing, binary_opening, channel_sum_guided_filter,
                                                consistency_verification, disk, remove_small_regions)
from mfif.config import ConfigError, load_config
from mfif.io import load_image, save_image
from mfif.ops.guided_filter import guided_filter


@pytest.fixture(scope="module")
def weights(shared_dir):
    return shared_dir / "weights" / "sesf_official.pkl"


@pytest.fixture(scope="module")
def module(weights):
    m = SESF(load_config("sesf.yaml", []))
    m.load_official_weights(str(weights))
    return m.eval()


@pytest.fixture(scope="module")
def lytro(shared_dir):
    d = shared_dir / "data" / "lytro"
    return torch.stack([load_image(d / "lytro-01-A.jpg"), load_image(d / "lytro-01-B.jpg")])[None]


def _official_layout() -> dict:
    """A state dict with the released key names and shapes (from a fresh network)."""
    return {to_official(k): v.clone() for k, v in SESFNet().state_dict().items()}


# ----------------------------------------------------------------------------- converter
def test_released_weights_load_strictly(weights):
    raw = read_official(weights)
    assert len(raw) == 64  # the released SESFuseNet('cse') state dict, decoder included
    net = load_official(SESFNet(), weights)
    sd = net.state_dict()
    assert torch.equal(sd["encoder.blocks.2.conv.weight"], raw["conv_encode_2.0.weight"])
    assert torch.equal(sd["decoder.3.bn.running_var"], raw["conv_decode_4.2.running_var"])
    # the decoder reconstructs the normalised gray input: the encoder/decoder mapping and the
    # released normalisation are right (a wrong mapping gives an MSE of the order of the variance)
    x = torch.linspace(0, 1, 48 * 48).view(1, 1, 48, 48) ** 2
    with torch.no_grad():
        err = (net.eval().reconstruct(x) - net.normalise(x)).square().mean()
    assert err < 0.01 * net.normalise(x).var()


@pytest.mark.parametrize("change, needle", [
    (lambda d: d.pop("conv_encode_2.0.weight"), "missing key(s) 'conv_encode_2.0.weight'"),
    (lambda d: d.__setitem__("se_4.fc.0.weight", torch.zeros(2, 16)), "unexpected key(s) 'se_4.fc.0.weight'"),
    (lambda d: d.__setitem__("features.0.weight", torch.zeros(16, 3, 3, 3)),
     "'features.0.weight' (16, 3, 3, 3) (expected (16, 1, 3, 3))"),
])
def test_converter_refuses_wrong_layouts(change, needle):
    good = _official_layout()
    assert len(convert_state_dict(good, SESFNet().state_dict())) == 64
    bad = dict(good)
    change(bad)
    with pytest.raises(OfficialWeightsError) as e:
        convert_state_dict(bad, SESFNet().state_dict(), source="x.pkl")
    assert needle in str(e.value) and str(e.value).startswith("x.pkl")
    assert isinstance(e.value, KeyError)  # the CLIs report KeyErrors in one line


def test_read_official_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="sesf_official.pkl"):
        read_official(tmp_path / "nope.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(OfficialWeightsError, match="junk.pkl: cannot read"):
        read_official(tmp_path / "junk.pkl")
    torch.save([torch.zeros(1)], tmp_path / "list.pkl")
    with pytest.raises(OfficialWeightsError, match="expected a state dict"):
        read_official(tmp_path / "list.pkl")


# ----------------------------------------------------------------------------- post-processing
def _skimage_released_ops():
    """The scikit-image calls of the released code (binary_* are deprecated from 0.26 on)."""
    import skimage.morphology as skm

    opening = getattr(skm, "binary_opening", skm.opening)
    closing = getattr(skm, "binary_closing", skm.closing)
    return skm.disk, opening, closing, skm.remove_small_holes


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_disk_and_morphology_match_scikit_image():
    sk_disk, opening, closing, _ = _skimage_released_ops()

    assert torch.equal(disk(5).bool(), torch.from_numpy(sk_disk(5).astype(bool)))
    assert int(disk(5).sum()) == 81
    g = torch.Generator().manual_seed(0)
    d = (torch.nn.functional.interpolate(torch.rand(1, 1, 8, 9, generator=g), size=(70, 77), mode="bilinear") > 0.5)
    d = (d ^ (torch.rand(d.shape, generator=g) > 0.95)).float()  # blobs plus salt-and-pepper, touching the border
    ref = d[0, 0].bool().numpy()
    assert np.array_equal(binary_opening(d, disk(5))[0, 0].bool().numpy(), opening(ref, sk_disk(5)))
    assert np.array_equal(binary_closing(d, disk(5))[0, 0].bool().numpy(), closing(ref, sk_disk(5)))


def test_remove_small_regions_threshold_and_connectivity():
    d = torch.zeros(1, 1, 10, 10)
    d[0, 0, 0:2, 0:2] = 1  # 4 pixels, touching the border
    d[0, 0, 5, 5] = d[0, 0, 6, 6] = 1  # diagonal neighbours: two 1-pixel regions (4-connectivity)
    out = remove_small_regions(d, 1, 4)  # strictly smaller than 4 pixels is removed
    assert out[0, 0, 0:2, 0:2].eq(1).all() and out[0, 0, 5, 5] == 0 and out[0, 0, 6, 6] == 0
    assert remove_small_regions(d, 1, 5).sum() == 0
    assert torch.equal(remove_small_regions(1 - d, 0, 4), 1 - out)  # holes: the same rule on the 0s
    with pytest.raises(ValueError, match="only 0 and 1"):
        remove_small_regions(d * 0.5, 1, 4)
    with pytest.raises(ValueError, match="value must be 0 or 1"):
        remove_small_regions(d, 2, 4)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_consistency_verification_synthetic_map():
    d = torch.zeros(1, 1, 200, 200)  # 0.01 * H * W = 400 pixels
    d[0, 0, :, :100] = 1  # big focused region (kept)
    d[0, 0, 40:55, 140:155] = 1  # 15 x 15 island: survives the opening, 225 < 400 -> removed
    d[0, 0, 40:55, 40:55] = 0  # 15 x 15 hole in the region: survives the closing, removed
    d[0, 0, 120:150, 30:60] = 0  # 30 x 30 hole, 900 >= 400 -> kept
    d[0, 0, 180, 150] = 1  # salt: removed by the opening
    out = consistency_verification(d, radius=5, area_ratio=0.01)
    assert out[0, 0, :, 100:].sum() == 0
    assert out[0, 0, 40:55, 40:55].eq(1).all()
    assert out[0, 0, 125:145, 35:55].eq(0).all() and out[0, 0, 120:150, 30:60].eq(0).sum() > 0.9 * 900
    assert out[0, 0, :120, :100].eq(1).all()
    # the released sequence with scikit-image, step by step
    sk_disk, opening, closing, remove_small_holes = _skimage_released_ops()
    ref = opening(d[0, 0].bool().numpy(), sk_disk(5))
    ref = ~remove_small_holes(~ref, 400)
    ref = remove_small_holes(closing(ref, sk_disk(5)), 400)
    assert np.array_equal(out[0, 0].bool().numpy(), ref)


def test_channel_sum_guided_filter():
    g = torch.Generator().manual_seed(1)
    guide, p = torch.rand(2, 1, 20, 24, generator=g), (torch.rand(2, 1, 20, 24, generator=g) > 0.5).float()
    he = guided_filter(guide.double(), p.double(), 4, 1e-3, border="clip").float()
    assert torch.allclose(channel_sum_guided_filter(guide, p, 4, 1e-3), he, atol=1e-6)  # gray: He's filter
    rgb = torch.rand(2, 3, 20, 24, generator=g)
    const = torch.full_like(p, 0.7)
    assert torch.allclose(channel_sum_guided_filter(rgb, const, 4, 0.1), const, atol=1e-6)  # cov = 0
    with pytest.raises(ValueError, match="with the same B, H, W"):
        channel_sum_guided_filter(rgb[:, :, :10], p, 4, 0.1)
    with pytest.raises(ValueError, match="eps > 0"):
        channel_sum_guided_filter(rgb, p, 4, 0.0)


# ----------------------------------------------------------------------------- module
def test_module_shapes_errors_and_gradients():
    cfg = load_config("sesf.yaml", [])
    m = SESF(cfg).eval()  # random weights: shapes and contracts only
    g = torch.Generator().manual_seed(2)
    rgb = torch.rand(2, 3, 3, 30, 34, generator=g, requires_grad=True)  # N = 3: serial fusion
    out = m.fuse(rgb)
    assert out.fused.shape == (2, 3, 30, 34) and out.maps.shape == (2, 3, 1, 30, 34)
    assert out.extras["initial"].shape == (2, 2, 1, 30, 34)
    assert torch.allclose(out.maps.sum(1), torch.ones(2, 1, 30, 34), atol=1e-5)
    out.fused.sum().backward()  # maps are constants: d fused / d source_n = map_n where not clipped
    inside = ((out.fused > 0) & (out.fused < 1)).unsqueeze(1)
    assert inside.float().mean() > 0.9
    assert torch.allclose(rgb.grad, out.maps * inside, atol=1e-6)
    gray = m.fuse(torch.rand(1, 2, 1, 25, 25, generator=g))
    assert gray.fused.shape == (1, 1, 25, 25) and gray.maps.shape == (1, 2, 1, 25, 25)
    with pytest.raises(ValueError, match="N >= 2"):
        m.fuse(torch.rand(1, 1, 3, 8, 8))
    with pytest.raises(ValueError, match="C=3"):
        m.fuse(torch.rand(1, 2, 2, 8, 8))
    m.train()
    assert not m.net.training  # BatchNorm keeps running statistics
    for call in (lambda: m.training_step({"sources": rgb}, 0), m.configure_optimizers):
        with pytest.raises(InferenceOnlyError, match="inference-only baseline") as e:
            call()
        assert isinstance(e.value, NotImplementedError) and isinstance(e.value, ConfigError)
    with pytest.raises(ValueError, match="area_ratio"):
        SESF(OmegaConf.merge(cfg, {"model": {"area_ratio": 2.0}}))
    with pytest.raises(ValueError, match="model.gray must be one of"):
        SESF(OmegaConf.merge(cfg, {"model": {"gray": "rgb"}}))


def test_gray_conversion_option():
    from lightning_modules.sesf.module import RELEASED_GRAY
    from mfif.ops.colour import rgb_to_gray

    g = torch.Generator().manual_seed(4)
    pair = torch.rand(1, 2, 3, 28, 30, generator=g)
    for name, gray in (("released", (pair * torch.tensor(RELEASED_GRAY).view(1, 1, 3, 1, 1)).sum(2, keepdim=True)),
                       ("matlab", rgb_to_gray(pair))):
        m = SESF(OmegaConf.merge(load_config("sesf.yaml", []), {"model": {"gray": name}})).eval()
        assert torch.equal(m.fuse(pair).extras["initial"][:, 0], m.net.decision(gray[:, 0], gray[:, 1]))


def test_serial_fusion_is_pairwise_fusion_in_series():
    cfg = OmegaConf.merge(load_config("sesf.yaml", []), {"model": {"refine": False}})  # binary weights
    m = SESF(cfg).eval()
    g = torch.Generator().manual_seed(3)
    src = torch.rand(1, 3, 3, 36, 40, generator=g)
    out = m.fuse(src)
    first = m.fuse(src[:, :2]).fused
    second = m.fuse(torch.stack([first, src[:, 2]], 1))
    assert torch.allclose(out.fused, second.fused, atol=1e-6)  # Sec. 3.1: "one by one, in series"
    assert torch.equal(out.maps[:, 2], second.maps[:, 1])
    assert set(out.maps.unique().tolist()) <= {0.0, 1.0} and torch.equal(out.maps.sum(1), torch.ones(1, 1, 36, 40))


@pytest.mark.slow  # 15-30 s of real data: in make test, not make test-fast
def test_lytro_output_sanity(module, lytro):
    from mfif.metrics.gradient import q_g

    with torch.no_grad():
        out = module.fuse(lytro)
    w, init, verified = out.maps[0, 0], out.extras["initial"][0, 0], out.extras["verified"][0, 0]
    assert 0.2 < init.mean() < 0.6  # lytro-01: the near-focused source wins about a third of the scene
    assert (verified != init).float().mean() < 0.03  # consistency verification: local fixes (1.0 % here)
    # weights: binary away from the focus boundary (measured: 3.9 % of pixels in (0.1, 0.9))
    assert ((w > 0.1) & (w < 0.9)).float().mean() < 0.08
    # Q_G of the fusion (0.754 measured) well above either source alone (0.621, 0.573)
    qg = q_g(out.fused, lytro).item()
    assert qg > 0.74 and qg > max(q_g(lytro[:, 0], lytro).item(), q_g(lytro[:, 1], lytro).item()) + 0.1


# ----------------------------------------------------------------------------- CLIs
def test_fuse_and_convert_cli(weights, lytro, tmp_path, capsys):
    from experiments import convert_official, fuse

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    save_image(lytro[0, 0, :, 200:296, 180:300], a)
    save_image(lytro[0, 1, :, 200:296, 180:300], b)
    out = tmp_path / "f.png"
    assert fuse.main([str(a), str(b), "-o", str(out), "--method", "sesf", "--weights", str(weights),
                      "--save-map", "--device", "cpu"]) == 0
    assert load_image(out).shape == (3, 96, 120) and (tmp_path / "f_map0.png").is_file()
    ckpt = tmp_path / "sesf.ckpt"
    assert convert_official.main(["sesf", str(weights), "-o", str(ckpt)]) == 0
    out2 = tmp_path / "g.png"
    assert fuse.main([str(a), str(b), "-o", str(out2), "--checkpoint", str(ckpt), "--device", "cpu"]) == 0
    assert torch.equal(load_image(out), load_image(out2))
    bad = tmp_path / "bad.pkl"
    raw = dict(read_official(weights))
    raw.pop("se_2.fc.0.weight")
    torch.save(raw, bad)
    capsys.readouterr()
    assert fuse.main([str(a), str(b), "-o", str(tmp_path / "h.png"), "--method", "sesf", "--weights", str(bad)]) == 2
    assert "missing key(s) 'se_2.fc.0.weight'" in capsys.readouterr().err
    assert not (tmp_path / "h.png").exists()
    assert convert_official.main(["sesf", str(bad), "-o", str(tmp_path / "bad.ckpt")]) == 2
    assert not (tmp_path / "bad.ckpt").exists()


def test_run_fit_is_refused(tmp_path, capsys):
    from experiments.run import main as run_main

    with pytest.raises(SystemExit) as e:
        run_main(["--config", "sesf.yaml", "profile=smoke", f"run_dir={tmp_path / 'run'}", "logger.wandb=false"])
    assert e.value.code == 2
    assert "inference-only baseline" in capsys.readouterr().err
