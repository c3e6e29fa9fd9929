"""UFA-Fuse network, attention and loss: shapes, softmax properties, official quirk, K > 2."""
from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.ufafuse.attention import (
    OFFICIAL_EPS,
    channel_attention_weights,
    softmax_across_sources,
    spatial_attention_weights,
    spatial_descriptor,
)
from lightning_modules.ufafuse.loss import UFALoss, ufa_loss
from lightning_modules.ufafuse.network import ATTENTION_MODES, UFAFuseNet, pair_slots


def small_net(**kw) -> UFAFuseNet:
    torch.manual_seed(0)
    return UFAFuseNet(features=8, **kw)


# ----------------------------------------------------------------------------- attention functions
@pytest.mark.parametrize("k", [2, 3, 5])
def test_softmax_across_sources_sums_to_one(k):
    logits = torch.randn(2, k, 4, 6, 7) * 5
    w = softmax_across_sources(logits)
    torch.testing.assert_close(w.sum(1), torch.ones(2, 4, 6, 7))
    torch.testing.assert_close(w, torch.softmax(logits, 1))


def test_quirk_known_value_k2():
    # a0 = log 2, a1 = 0: official mask1 = 2 / (1 + 1 + eps) = 1, mask2 = 1 / (2 + 1 + eps) = 1/3.
    logits = torch.tensor([math.log(2.0), 0.0]).view(1, 2, 1, 1, 1)
    w = softmax_across_sources(logits, official_quirk=True)
    assert w[0, 0].item() == pytest.approx(1.0, rel=1e-6)
    assert w[0, 1].item() == pytest.approx(1.0 / 3.0, rel=1e-6)


def test_quirk_reproduces_official_formula():
    torch.manual_seed(1)
    a = torch.randn(3, 2, 1, 5, 5)
    w = spatial_attention_weights(a, official_quirk=True)
    e1, e2 = a[:, 0].exp(), a[:, 1].exp()
    torch.testing.assert_close(w[:, 0], e1 / (e2 + e2 + OFFICIAL_EPS))
    torch.testing.assert_close(w[:, 1], e2 / (e1 + e2 + OFFICIAL_EPS))
    assert not torch.allclose(w.sum(1), torch.ones_like(w[:, 0]))  # the quirk breaks normalisation


def test_quirk_generalised_k3():
    a = torch.randn(1, 3, 1, 4, 4)
    w = softmax_across_sources(a, official_quirk=True)
    e = a.exp()
    torch.testing.assert_close(w[:, 0], e[:, 0] / (2 * e[:, 1] + e[:, 2] + OFFICIAL_EPS))
    torch.testing.assert_close(w[:, 2], e[:, 2] / (e.sum(1) + OFFICIAL_EPS))


@pytest.mark.parametrize("official", [False, True])
def test_channel_attention_sums_to_one(official):
    feats = torch.randn(2, 3, 8, 5, 6)
    w = channel_attention_weights(feats, official=official)
    assert w.shape == (2, 3, 8, 1, 1)
    torch.testing.assert_close(w.sum(1), torch.ones(2, 8, 1, 1))
    # Eq. 7-8 by hand for one channel
    pooled = feats[0, :, 3].mean((-2, -1))
    torch.testing.assert_close(w[0, :, 3, 0, 0], torch.softmax(pooled, 0))


def test_spatial_descriptor_known_values():
    x = torch.tensor([1.0, 3.0, 8.0]).view(3, 1, 1).expand(3, 2, 2)
    d = spatial_descriptor(x)
    assert d.shape == (2, 2, 2)
    assert torch.all(d[0] == 4.0) and torch.all(d[1] == 8.0)


def test_attention_input_errors():
    with pytest.raises(ValueError, match="K >= 2"):
        channel_attention_weights(torch.randn(2, 1, 4, 3, 3))
    with pytest.raises(ValueError, match="source axis"):
        softmax_across_sources(torch.randn(2, 1, 3))


# ----------------------------------------------------------------------------- network
@pytest.mark.parametrize("k", [2, 3])
def test_network_attention_weights_sum_to_one(k):
    net = small_net().eval()
    with torch.no_grad():
        out, w = net(torch.rand(2, k, 3, 19, 23), return_attention=True)
    assert out.shape == (2, 3, 19, 23)
    assert w["channel"].shape == (2, k, 8, 1, 1) and w["spatial"].shape == (2, k, 1, 19, 23)
    torch.testing.assert_close(w["channel"].sum(1), torch.ones(2, 8, 1, 1))  # every channel
    torch.testing.assert_close(w["spatial"].sum(1), torch.ones(2, 1, 19, 23))  # every position


def test_network_quirk_mode_uses_stated_formula():
    net = small_net(official_quirk=True).eval()
    scores = {}
    net.sc4.att_sp.register_forward_hook(lambda m, i, o: scores.setdefault("a", o))
    with torch.no_grad():
        _, w = net(torch.rand(1, 2, 3, 16, 16), return_attention=True)
    a1, a2 = scores["a"][:, 0].exp(), scores["a"][:, 1].exp()
    torch.testing.assert_close(w["spatial"][:, 0], a1 / (a2 + a2 + OFFICIAL_EPS))
    torch.testing.assert_close(w["spatial"][:, 1], a2 / (a1 + a2 + OFFICIAL_EPS))


@pytest.mark.parametrize("k,h,w", [(2, 17, 31), (3, 20, 9), (4, 12, 12)])
def test_network_shapes_any_k_and_size(k, h, w):
    net = small_net().eval()
    with torch.no_grad():
        out = net(torch.rand(1, k, 3, h, w))
    assert out.shape == (1, 3, h, w)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_pair_slots_k2_is_concat_and_k3_sums_rest():
    f = torch.randn(1, 3, 4, 2, 2)
    torch.testing.assert_close(pair_slots(f[:, :2]), torch.cat([f[:, 0], f[:, 1]], 1))
    torch.testing.assert_close(pair_slots(f), torch.cat([f[:, 0], f[:, 1] + f[:, 2]], 1))


def test_k3_invariant_to_order_of_non_reference_sources():
    net = small_net().eval()
    x = torch.rand(1, 3, 3, 16, 16)
    with torch.no_grad():
        a, b = net(x), net(x[:, [0, 2, 1]])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_variants_disable_the_right_attention():
    x = torch.rand(1, 2, 3, 12, 12)
    keys = {"ufa": {"channel", "spatial"}, "no_sa": {"channel"}, "no_ca": {"spatial"}, "none": set()}
    for mode in ATTENTION_MODES:
        _, w = small_net(attention=mode)(x, return_attention=True)
        assert set(w) == keys[mode], mode
    net = small_net(attention="none").eval()  # NO-UFA ignores the spatial convs entirely
    with torch.no_grad():
        before = net(x)
        net.sc4.att_sp.att1.conv.weight.add_(1.0)
        torch.testing.assert_close(net(x), before)


def test_network_gradients_reach_every_parameter_k3():
    net = small_net()
    out = net(torch.rand(2, 3, 3, 16, 16))
    out.mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_network_input_errors():
    net = small_net()
    with pytest.raises(ValueError, match="K >= 2"):
        net(torch.rand(1, 1, 3, 8, 8))
    with pytest.raises(ValueError, match="3 channels"):
        net(torch.rand(1, 2, 1, 8, 8))
    with pytest.raises(ValueError, match="attention must be one of"):
        UFAFuseNet(attention="cbam")


def test_official_parameter_count():
    assert sum(p.numel() for p in UFAFuseNet().parameters()) == 455_111  # ../shared/weights/README.md


# ----------------------------------------------------------------------------- loss
def test_loss_known_values():
    zero, one = torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16)
    # constant 0 vs constant 1: L1 = 1, SSIM = C1 / (1 + C1) with C1 = 1e-4 (sigma terms cancel)
    total, parts = ufa_loss(zero, one, lam=0.2)
    ssim = 1e-4 / (1 + 1e-4)
    assert parts["l1"].item() == pytest.approx(1.0)
    assert parts["ssim"].item() == pytest.approx(1 - ssim, abs=1e-5)
    assert total.item() == pytest.approx(0.2 + 0.8 * (1 - ssim), abs=1e-5)
    x = torch.rand(2, 3, 16, 16)
    assert ufa_loss(x, x)[0].item() == pytest.approx(0.0, abs=1e-5)


def test_loss_lambda_extremes_and_gradient():
    p = torch.rand(2, 3, 16, 16, requires_grad=True)
    t = torch.rand(2, 3, 16, 16)
    l1_only, parts = UFALoss(lam=1.0)(p, t)
    torch.testing.assert_close(l1_only, parts["l1"])
    ssim_only, parts = UFALoss(lam=0.0)(p, t)
    torch.testing.assert_close(ssim_only, parts["ssim"])
    ssim_only.backward()
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_loss_errors():
    with pytest.raises(ValueError, match="lambda"):
        UFALoss(lam=1.5)
    with pytest.raises(ValueError, match="same shape"):
        ufa_loss(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 15))
