"""UFA-Fuse released weights: strict load, parity with the official formulas, Lytro plausibility."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lightning_modules.ufafuse.module import UFAFuseModule
from lightning_modules.ufafuse.network import UFAFuseNet
from lightning_modules.ufafuse.official import (
    OFFICIAL_NUM_PARAMS,
    OFFICIAL_NUM_TENSORS,
    load_official_into,
    load_official_state_dict,
)
from mfif.config import load_config

from conftest import released_weights


@pytest.fixture(scope="module")
def weights(shared_dir):
    return released_weights(shared_dir, "ufa_official.pth")


@pytest.fixture(scope="module")
def official_net(weights) -> UFAFuseNet:
    net = UFAFuseNet(official_quirk=True).eval()
    load_official_into(net, weights)
    return net


def reference_forward(sd: dict, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """The released model written out with raw tensor ops from ../shared/NOTES.md (independent check)."""
    act = lambda t: F.leaky_relu(t, 0.01)  # noqa: E731
    conv = lambda t, n, p=1: F.conv2d(t, sd[f"{n}.weight"], sd.get(f"{n}.bias"), padding=p)  # noqa: E731

    def features(x):
        f = act(conv(x, "conv1.0"))
        for i in (1, 2, 3):
            f = conv(act(conv(f, f"rb{i}.body.0")), f"rb{i}.body.2")
        return act(conv(f, "sc4.conv1.body.0"))

    f1, f2 = features(x1), features(x2)
    c1, c2 = f1.mean((2, 3), keepdim=True).exp(), f2.mean((2, 3), keepdim=True).exp()
    f1, f2 = f1 * c1 / (c1 + c2 + 1e-10), f2 * c2 / (c1 + c2 + 1e-10)
    desc = lambda f: torch.cat([f.mean(1, keepdim=True), f.max(1, keepdim=True)[0]], 1)  # noqa: E731
    a1 = conv(desc(f1), "sc4.att_sp.att1.conv", 3).exp()
    a2 = conv(desc(f2), "sc4.att_sp.att2.conv", 3).exp()
    f1, f2 = f1 * a1 / (a2 + a2 + 1e-10), f2 * a2 / (a1 + a2 + 1e-10)  # the official quirk
    f1, f2 = act(conv(f1, "sc4.conv2.body.0")), act(conv(f2, "sc4.conv2.body.0"))
    y = conv(torch.cat([f1, f2], 1), "fusion", 0)
    for i in range(4):
        y = act(conv(y, f"EX3.{i}.body.0"))
    return torch.sigmoid(conv(y, "restruction"))


def test_strict_load_and_counts(weights, official_net):
    sd = load_official_state_dict(weights)
    assert len(sd) == OFFICIAL_NUM_TENSORS
    assert sum(v.numel() for v in sd.values()) == OFFICIAL_NUM_PARAMS
    assert sum(p.numel() for p in official_net.parameters()) == OFFICIAL_NUM_PARAMS
    torch.testing.assert_close(official_net.fusion.weight, sd["fusion.weight"])


def test_quirk_mode_matches_official_formulas(weights, official_net):
    sd = load_official_state_dict(weights)
    torch.manual_seed(0)
    x = torch.rand(1, 2, 3, 40, 44)
    with torch.no_grad():
        ours, ref = official_net(x), reference_forward(sd, x[:, 0], x[:, 1])
        correct = UFAFuseNet(official_quirk=False).eval()
        load_official_into(correct, weights)
        fixed = correct(x)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert (fixed - ref).abs().max() > 1e-5  # the correct softmax is a different model


def test_module_loader_warns_without_quirk(weights):
    cfg = load_config("ufafuse.yaml", ["profile=smoke", "metrics=[psnr]"])
    with pytest.warns(UserWarning, match="official_quirk"):
        UFAFuseModule(cfg).load_official_weights(str(weights))
    cfg.model.official_quirk = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        UFAFuseModule(cfg).load_official_weights(str(weights))


def test_loader_errors(tmp_path, weights):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_official_state_dict(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save([1, 2, 3], bad)
    with pytest.raises(ValueError, match="state_dict"):
        load_official_state_dict(bad)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_official_into(UFAFuseNet(features=8), weights)


def _lytro(shared_dir, i: int, crop: int = 256) -> torch.Tensor:
    """Centre crop of Lytro pair ``i`` as ``[1, 2, 3, crop, crop]`` (crop keeps the test fast)."""
    imgs = []
    for side in "AB":
        path = shared_dir / "data" / "lytro" / f"lytro-{i:02d}-{side}.jpg"
        if not path.is_file():
            pytest.skip(f"{path} not present")
        a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        t = (a.shape[0] - crop) // 2, (a.shape[1] - crop) // 2
        imgs.append(torch.from_numpy(a[t[0]:t[0] + crop, t[1]:t[1] + crop]).permute(2, 0, 1))
    return torch.stack(imgs)[None]


def _score(name: str, fused: torch.Tensor, sources: torch.Tensor) -> float:
    from mfif.metrics import build_metric

    m = build_metric(name)
    m.update(fused, sources)
    return float(m.compute())


@pytest.mark.parametrize("pair", [1, 2])
def test_lytro_output_is_plausibly_all_in_focus(shared_dir, official_net, pair):
    from mfif.metrics import metric_names

    missing = {"q_g", "avg"} - set(metric_names())
    if missing:
        pytest.skip(f"metrics {sorted(missing)} not registered yet (metrics issue)")
    sources = _lytro(shared_dir, pair)
    with torch.inference_mode():
        fused = official_net(sources)
    mean_img = sources.mean(1)  # the naive fusion baseline
    for name in ("q_g", "avg"):
        f = _score(name, fused, sources)
        base = _score(name, mean_img, sources)
        each = [_score(name, sources[:, k], sources) for k in range(2)]
        assert f > base and f > max(each), (name, f, base, each)
