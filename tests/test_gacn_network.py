"""GACN network, multi-image strategies and the module's fuse API (shapes, equivalences, counts)."""
from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from lightning_modules.gacn.module import GACN, GACNConfig
from lightning_modules.gacn.multi import (
    calibration_maps,
    decision_volume,
    fuse_maps,
    one_hot_argmax,
    serial_maps,
)
from lightning_modules.gacn.network import GACNNet
from mfif.config import DataConfig, ExperimentConfig
from mfif.ops.activity import spatial_frequency_activity


def make_module(**model) -> GACN:
    cfg = OmegaConf.structured(ExperimentConfig(method="gacn", model=GACNConfig(**model), data=DataConfig(),
                                                metrics=["psnr"]))
    return GACN(cfg)


@pytest.fixture(scope="module")
def net() -> GACNNet:
    torch.manual_seed(0)
    n = GACNNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics so eval differs from train
        for m in n.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return n.eval()


def test_parameter_count_matches_released_checkpoint():
    # ../shared/weights/README.md: 68,820 learnable parameters
    assert sum(p.numel() for p in GACNNet().parameters()) == 68820


def test_inference_fast_path_equals_autograd_path(net):
    a, b = torch.rand(1, 1, 29, 35), torch.rand(1, 1, 29, 35)
    with torch.no_grad():
        fast = net(a, b)
    slow = net(a.requires_grad_(), b)  # gradient mode: plain convolutions, out-of-place ops
    torch.testing.assert_close(fast.logits, slow.logits.detach(), rtol=1e-3, atol=1e-2)
    torch.testing.assert_close(fast.final, slow.final.detach(), rtol=0, atol=1e-4)


def test_eval_batches_sources_train_keeps_them_apart(net):
    a, b = torch.rand(2, 1, 20, 20), torch.rand(2, 1, 20, 20)
    with torch.no_grad():
        fa, fb = net.pair_features(a, b)
        for got, want in zip(fa + fb, net.features.layers(a) + net.features.layers(b)):
            torch.testing.assert_close(got, want)
        assert torch.cat(fa, 1).shape == (2, 64, 20, 20)


def test_activity_from_layers_equals_concatenated_features(net):
    net64 = copy.deepcopy(net).double()  # float64: the k = 1000 sigmoid magnifies float32 rounding
    a, b = torch.rand(1, 1, 37, 41, dtype=torch.float64), torch.rand(1, 1, 37, 41, dtype=torch.float64)
    with torch.no_grad():
        fa, fb = net64.pair_features(a, b)
        from_layers = net64.activity(fa, fb)
        ca, cb = torch.cat(fa, 1), torch.cat(fb, 1)
        from_cat = net64.activity(ca, cb)
        # Eqs. 1-2 + Sec. 3.1.1 literally: sigmoid(k * (SF_A - SF_B)) of the concatenated features
        literal = torch.sigmoid(1000.0 * (spatial_frequency_activity(ca, 5) - spatial_frequency_activity(cb, 5)))
    assert 0.05 < literal.mean() < 0.95  # both sources win somewhere
    torch.testing.assert_close(from_layers, from_cat, rtol=0, atol=1e-10)
    torch.testing.assert_close(from_layers, literal, rtol=0, atol=1e-10)


@pytest.mark.parametrize("h,w", [(17, 23), (33, 31)])
def test_pair_decision_shapes_and_ranges(net, h, w):
    with torch.no_grad():
        d = net(torch.rand(2, 1, h, w), torch.rand(2, 1, h, w))
    for t in (d.logits, d.initial, d.final, d.boundary):
        assert t.shape == (2, 1, h, w)
    assert d.initial.min() >= 0 and d.initial.max() <= 1
    assert d.final.min() >= -1e-5 and d.final.max() <= 1 + 1e-5
    with pytest.raises(ValueError, match="gray"):
        net(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


# ----------------------------------------------------------------------------- Eq. 19
def test_decision_volume_eq19_known_values():
    p2 = torch.tensor([0.8, 0.3])
    p3 = torch.tensor([0.5, 0.9])
    pair = torch.stack([p2, p3]).view(1, 2, 1, 1, 2)
    dv = decision_volume(pair, eps=0.0)
    expected = torch.stack([p2, 1 - p2, p2 * (1 - p3) / p3]).view(1, 3, 1, 1, 2)
    torch.testing.assert_close(dv, expected)
    hard = one_hot_argmax(dv)
    torch.testing.assert_close(hard[0, :, 0, 0], torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="N-1"):
        decision_volume(torch.rand(1, 1, 4, 4))


def test_calibration_with_two_sources_equals_pairwise(net):
    s = torch.rand(1, 2, 1, 21, 19)
    with torch.no_grad():
        maps, volume = calibration_maps(net, s)
        p = net(s[:, 0], s[:, 1]).final
    torch.testing.assert_close(maps[:, 0], p, rtol=0, atol=1e-5)
    torch.testing.assert_close(maps[:, 1], 1 - p, rtol=0, atol=1e-5)
    torch.testing.assert_close(volume, maps)
    with torch.no_grad():
        torch.testing.assert_close(fuse_maps(net, s, "calibration"), fuse_maps(net, s, "serial"))


class _CountFeatureImages:
    """Counts the images that go through the dense feature path (wraps ``net.features.layers``)."""

    def __init__(self, net: GACNNet):
        self.net, self.seen, self.original = net, [], net.features.layers

    def __enter__(self) -> list:
        def counting(x):
            self.seen.append(x.shape[0])
            return self.original(x)

        self.net.features.layers = counting
        return self.seen

    def __exit__(self, *exc) -> None:
        del self.net.features.layers


@pytest.mark.parametrize("n", [3, 4])
def test_calibration_runs_each_source_once_serial_twice(net, n):
    s = torch.rand(1, n, 1, 16, 16)
    with _CountFeatureImages(net) as seen, torch.no_grad():
        maps, _ = calibration_maps(net, s)
        assert sum(seen) == n  # Sec. 3.3: N feature-path runs
        seen.clear()
        serial = serial_maps(net, s)
        assert sum(seen) == 2 * (n - 1)  # 2 (N - 1) for the one-by-one strategy
    assert set(maps.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(maps.sum(1), torch.ones(1, 1, 16, 16))
    torch.testing.assert_close(serial.sum(1), torch.ones(1, 1, 16, 16))


def test_serial_maps_equal_sequential_pairwise_fusion(net):
    s = torch.rand(1, 3, 1, 18, 18)
    with torch.no_grad():
        w = serial_maps(net, s)
        m1 = net(s[:, 0], s[:, 1]).final
        f1 = m1 * s[:, 0] + (1 - m1) * s[:, 1]
        m2 = net(f1, s[:, 2]).final
        f2 = m2 * f1 + (1 - m2) * s[:, 2]
    torch.testing.assert_close((w * s).sum(1), f2, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- module fuse API
@pytest.mark.parametrize("strategy", ["calibration", "serial"])
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_module_fuse_shapes_gray_and_rgb(strategy, n):
    module = make_module(multi_strategy=strategy).eval()
    for c in (1, 3):
        src = torch.rand(1, n, c, 19, 27)
        with torch.no_grad():
            out = module.fuse(src)
        assert out.fused.shape == (1, c, 19, 27)
        assert out.maps.shape == (1, n, 1, 19, 27)
        torch.testing.assert_close(out.maps.sum(1), torch.ones(1, 1, 19, 27), rtol=0, atol=1e-5)
        # gray_map policy: the maps are applied to every channel of the original sources
        torch.testing.assert_close(out.fused, (out.maps * src).sum(1).clamp(0, 1))


def test_module_config_errors():
    with pytest.raises(ValueError, match="multi_strategy"):
        make_module(multi_strategy="pyramid")
    with pytest.raises(ValueError, match="map_loss"):
        make_module(map_loss="l2")
    with pytest.raises(ValueError, match="box_method"):
        make_module(box_method="fft")
