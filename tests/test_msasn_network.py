"""MSASN network blocks (lightning_modules/msasn/network.py): shapes, known values, gradients."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_modules.msasn.network import (
    VARIANTS,
    ContentGuidedAttention,
    DeepFeatureExtraction,
    DilatedConvAttention,
    GenCleanBlock,
    LocalAttention,
    MSASNNet,
)


TINY = dict(width=4, gcb_width=8, gcb_depth=4, window=8)


def test_gcb_is_dncnn_with_17_convs_and_starts_as_identity():
    gcb = GenCleanBlock(1)  # Sec. 3.3 defaults
    convs = [m for m in gcb.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 17 and all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert convs[-1].out_channels == 1 and sum(isinstance(m, nn.ReLU) for m in gcb.modules()) == 16
    x = torch.rand(2, 1, 9, 11)
    assert torch.equal(gcb(x), x)  # residual learning with a zero last layer
    plain = GenCleanBlock(3, width=8, depth=3, residual=False)
    assert plain(torch.rand(1, 3, 7, 5)).shape == (1, 3, 7, 5)
    with pytest.raises(ValueError, match="depth"):
        GenCleanBlock(1, depth=1)


def test_local_attention_global_window_equals_cbam_channel_attention():
    torch.manual_seed(0)
    lam = LocalAttention(8, window=64)
    x = torch.randn(2, 8, 13, 10)
    w = torch.sigmoid(lam.mlp(x.mean((2, 3), keepdim=True)) + lam.mlp(x.amax((2, 3), keepdim=True)))
    assert torch.allclose(lam(x), x * w, atol=1e-6)


def test_local_attention_windows_are_local():
    torch.manual_seed(0)
    lam = LocalAttention(4, window=1)  # 1x1 windows: avg = max = x
    x = torch.randn(1, 4, 5, 6)
    assert torch.allclose(lam(x), x * torch.sigmoid(2 * lam.mlp(x)), atol=1e-6)
    lam4 = LocalAttention(4, window=4)
    x = torch.randn(1, 4, 7, 9)
    y = lam4(x)
    assert y.shape == x.shape
    # changing one window leaves the weights of the other windows unchanged
    x2 = x.clone()
    x2[..., :4, :4] += 5
    y2 = lam4(x2)
    assert torch.equal(y2[..., 4:, :], y[..., 4:, :]) and torch.equal(y2[..., :4, 4:], y[..., :4, 4:])
    with pytest.raises(ValueError, match="window"):
        LocalAttention(4, window=0)


def _pick(cga: ContentGuidedAttention, slot: int) -> None:
    """Make the grouped 7x7 conv copy channel ``slot`` (0: X, 1: W_coa) of each shuffled pair."""
    with torch.no_grad():
        cga.refine.weight.zero_()
        cga.refine.bias.zero_()
        cga.refine.weight[:, slot, 3, 3] = 1.0


def test_cga_channel_shuffle_and_eqs_5_to_7():
    torch.manual_seed(0)
    c = 6
    cga = ContentGuidedAttention(c)
    assert cga.channel[0].out_channels == 16  # Sec. 3.4: bottleneck of 16 channels
    assert cga.refine.groups == c and cga.refine.in_channels == 2 * c
    x = torch.randn(2, c, 11, 9)
    _pick(cga, 0)
    assert torch.allclose(cga(x), torch.sigmoid(x), atol=1e-6)  # the pair of channel i starts with X_i
    _pick(cga, 1)
    w_c = cga.channel(x.mean((2, 3), keepdim=True))
    pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
    w_s = cga.spatial(nn.functional.pad(pooled, (3, 3, 3, 3), mode="reflect"))
    assert torch.allclose(cga(x), torch.sigmoid(w_c + w_s), atol=1e-5)  # Eqs. 5-7


def test_dfeb_residual_and_shape():
    dfeb = DeepFeatureExtraction(8)
    x = torch.randn(1, 8, 6, 5)  # smaller than the reflect pad + 1: falls back to replicate
    assert dfeb(x).shape == x.shape
    with torch.no_grad():
        dfeb.reduce.weight.zero_()
        dfeb.reduce.bias.zero_()
    assert torch.equal(dfeb(x), x)  # output = y * W + x with y = 0


def test_dca_shapes_dilations_and_gradient():
    dca = DilatedConvAttention(12, 8, rates=(1, 2, 4))
    assert [b.dilation for b in dca.branches] == [(1, 1), (2, 2), (4, 4)]  # Sec. 3.2
    x = torch.randn(2, 12, 9, 7, requires_grad=True)
    y = dca(x)
    assert y.shape == (2, 8, 9, 7) and bool((y >= 0).all())
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "variant, size", [(v, (21, 19)) for v in sorted(VARIANTS)] + [("full", (4, 4)), ("full", (5, 9))]
)
def test_net_shapes_for_odd_sizes(variant, size):
    net = MSASNNet(VARIANTS[variant], **TINY).eval()
    a, c = torch.rand(2, 1, *size), torch.rand(2, 1, *size)
    with torch.no_grad():
        assert net(a, c).shape == (2, 1, *size)


def test_net_structure_follows_variants():
    full, base = MSASNNet(VARIANTS["full"], **TINY), MSASNNet(VARIANTS["baseline"], **TINY)
    assert full.encoder.stages[0][0][0].in_channels == 1  # Siamese: one gray source per branch
    assert base.encoder.stages[0][0][0].in_channels == 2  # single stream over the stacked pair
    assert isinstance(full.dec0, DilatedConvAttention) and not isinstance(base.dec0, DilatedConvAttention)
    assert isinstance(full.gcb, GenCleanBlock) and isinstance(base.gcb, nn.Identity)
    kinds = {type(m).__name__ for m in full.modules()}
    assert {"LocalAttention", "ResidualBlock", "DeepFeatureExtraction", "ContentGuidedAttention"} <= kinds
    no_res = {type(m).__name__ for m in MSASNNet(VARIANTS["dca_siamese"], **TINY).modules()}
    assert "LocalAttention" in no_res and "ResidualBlock" not in no_res and "DeepFeatureExtraction" not in no_res


def test_net_gradients_and_errors():
    torch.manual_seed(0)
    net = MSASNNet(VARIANTS["full"], **TINY)
    a, c = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    net(a, c).mean().backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # every parameter except the GCB's inner layers (behind its zero-initialised last conv) gets signal
    silent = [n for n, g in grads.items() if g.abs().sum() == 0 and not n.startswith("gcb.body.")]
    assert silent == []
    with pytest.raises(ValueError, match="H, W >= 4"):
        net(torch.rand(1, 1, 3, 8), torch.rand(1, 1, 3, 8))
    with pytest.raises(ValueError, match="equal shape"):
        net(a, c[:1])
