"""mfif.ops.conv: fused convolution + activation and the split one-output convolution, against
plain ``F.conv2d`` compositions (values, layouts, gradients, errors)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mfif.ops import conv as conv_ops
from mfif.ops.activity import box_sum
from mfif.ops.conv import conv2d_activation, single_output_conv2d

ACT = {None: lambda y: y, "relu": torch.relu, "sigmoid": torch.sigmoid}


@pytest.mark.parametrize("activation", [None, "relu", "sigmoid"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("groups,padding", [(1, 1), (3, (0, 2))])
def test_conv2d_activation_equals_composition(activation, channels_last, groups, padding):
    x = torch.randn(2, 6, 13, 17)
    w, b = torch.randn(9, 6 // groups, 3, 5), torch.randn(9)
    if channels_last:
        x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    want = ACT[activation](F.conv2d(x, w, b, padding=padding, groups=groups))
    with torch.no_grad():
        got = conv2d_activation(x, w, b, padding=padding, groups=groups, activation=activation)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if activation == "relu":
        assert (got == 0).any() and (got > 0).any()


def test_conv2d_activation_uses_the_fused_kernel_when_available_and_keeps_gradients(monkeypatch):
    x, w = torch.randn(1, 4, 9, 9), torch.randn(5, 4, 3, 3, requires_grad=True)
    y = conv2d_activation(x, w, None, padding=1, activation="sigmoid")  # gradient mode: plain path
    y.sum().backward()
    torch.testing.assert_close(w.grad, torch.autograd.grad(torch.sigmoid(F.conv2d(x, w, padding=1)).sum(), w)[0])
    calls = []
    if conv_ops._FUSED is not None:
        real = conv_ops._FUSED
        monkeypatch.setattr(conv_ops, "_FUSED", lambda *a: calls.append(a[7]) or real(*a))
    with torch.no_grad():
        conv2d_activation(x, w, None, padding=1, activation="relu")
    assert calls == (["relu"] if conv_ops._FUSED is not None else [])


def test_conv2d_activation_falls_back_when_the_fused_kernel_rejects_the_input(monkeypatch):
    def reject(*args):
        raise RuntimeError("unsupported")

    monkeypatch.setattr(conv_ops, "_FUSED", reject)
    x, w = torch.randn(1, 2, 6, 6), torch.randn(3, 2, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(conv2d_activation(x, w, padding=1, activation="relu"),
                                   torch.relu(F.conv2d(x, w, padding=1)))


def test_conv2d_activation_errors():
    with pytest.raises(ValueError, match="activation"):
        conv2d_activation(torch.randn(1, 1, 4, 4), torch.randn(1, 1, 3, 3), activation="tanh")
    with pytest.raises(ValueError, match=r"\[1, C, k, k\]"):
        single_output_conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3))
    with pytest.raises(ValueError, match="activation"):
        box_sum(torch.randn(1, 1, 4, 4), 1, activation="gelu")


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("activation", [None, "sigmoid"])
def test_single_output_conv_equals_conv2d(k, channels_last, activation):
    x = torch.randn(2, 5, 11, 13)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(1, 5, k, k), torch.randn(1)
    with torch.no_grad():
        got = single_output_conv2d(x, w, b, activation=activation)
    torch.testing.assert_close(got, ACT[activation](F.conv2d(x, w, b, padding=k // 2)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["conv", "cumsum"])
def test_box_sum_activation_known_value(method):
    x = torch.full((1, 2, 5, 5), 0.01, dtype=torch.float64)
    with torch.no_grad():
        out = box_sum(x, 1, method, scale=-100.0, activation="sigmoid")
    # centre: 9 ones-weighted terms of 0.01 -> sigmoid(-100 * 0.09); corner: 4 terms -> sigmoid(-4)
    torch.testing.assert_close(out[0, 0, 2, 2], torch.sigmoid(torch.tensor(-9.0, dtype=torch.float64)))
    torch.testing.assert_close(out[0, 1, 0, 0], torch.sigmoid(torch.tensor(-4.0, dtype=torch.float64)))
