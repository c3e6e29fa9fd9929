"""Inference fast paths (issue 19): the shared ops of mfif.ops.conv against their plain forms, and the
UFA-Fuse, MSASN and UDPNet networks with fast paths on == off (PSNR >= 50 dB or map agreement),
the bf16 precision path close to fp32. Speed is measured in experiments/benchmarks/bench_inference.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.msasn.network import VARIANTS, MSASNNet
from lightning_modules.udpnet.network import EncoderDecoder, UnrolledFuser
from lightning_modules.ufafuse.network import UFAFuseNet
from mfif.ops import conv as conv_ops
from mfif.ops.conv import conv_module, fast_inference, fast_paths, fold_batchnorm, inference_precision

needs_fused = pytest.mark.skipif(conv_ops._FUSED is None, reason="no oneDNN fused convolution in this torch build")


def psnr(x: torch.Tensor, y: torch.Tensor, peak: float = 1.0) -> float:
    mse = float(((x.float() - y.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(peak**2 / mse)).item()


def randomise(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial weights everywhere (zero-initialised layers and BatchNorm statistics included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d) and not m.weight.abs().sum():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.05)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return net.eval()


@pytest.fixture
def both_paths(monkeypatch):
    """``run(fn)``: ``fn()`` with the fast paths on and off, without gradients; asserts that the
    fast run really used the fused kernels and the plain run none."""
    calls = []
    real = conv_ops._FUSED
    monkeypatch.setattr(conv_ops, "_FUSED", lambda *a: calls.append(a[7]) or real(*a))

    def run(fn):
        with torch.inference_mode():
            fast = fn()
            n_fast = len(calls)
            with fast_paths(False):
                plain = fn()
        assert n_fast > 0 and len(calls) == n_fast, f"fused calls: fast {n_fast}, plain {len(calls) - n_fast}"
        return fast, plain

    return run


# ----------------------------------------------------------------------------- shared ops
@pytest.mark.parametrize("activation,residual", [("relu", True), (None, True), ("leaky_relu", False), ("relu", False)])
@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2)])
def test_conv_module_equals_composition(activation, residual, stride, dilation):
    conv = nn.Conv2d(6, 5, 3, stride=stride, padding=dilation, dilation=dilation)
    x = torch.randn(2, 6, 11, 13).contiguous(memory_format=torch.channels_last)
    ref = conv(x)
    r = torch.randn_like(ref) if residual and stride == 1 else None
    if r is not None:
        ref = ref + r
    ref = conv_ops.activate(ref, activation, 0.2)
    with torch.no_grad():
        got = conv_module(conv, x, activation, residual=r, negative_slope=0.2)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref.detach(), rtol=1e-5, atol=1e-5)


def test_conv_module_keeps_gradients_and_checks_padding():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    r = torch.randn(1, 4, 8, 8)
    conv_module(conv, x, "relu", residual=r).sum().backward()
    expected = torch.autograd.grad(F.relu(conv(x) + r).sum(), x)[0]
    torch.testing.assert_close(x.grad, expected)
    with pytest.raises(ValueError, match="zero padding"):
        conv_module(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), x)


def test_fold_batchnorm_known_value_and_errors():
    conv, bn = nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1).eval()
    with torch.no_grad():
        conv.weight.fill_(2.0)
        bn.running_mean.fill_(1.0)
        bn.running_var.fill_(4.0 - bn.eps)  # a = gamma / 2
        bn.weight.fill_(3.0)
        bn.bias.fill_(0.5)
    w, b = fold_batchnorm(conv, bn)  # a = 1.5: weight 3, bias 0.5 - 1.5 * 1 = -1
    torch.testing.assert_close(w.flatten(), torch.tensor([3.0]))
    torch.testing.assert_close(b, torch.tensor([-1.0]))
    x = torch.randn(1, 1, 4, 4)
    torch.testing.assert_close(F.conv2d(x, w, b), bn(conv(x)))
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batchnorm(conv, nn.BatchNorm2d(1))


def test_fast_inference_conditions():
    net = nn.Conv2d(1, 1, 1).eval()
    x = torch.randn(1, 1, 2, 2)
    with torch.no_grad():
        assert fast_inference(net, x) == (conv_ops._FUSED is not None)
        with fast_paths(False):
            assert not fast_inference(net, x)
        assert not fast_inference(net.train(), x)
    assert not fast_inference(net.eval(), x)  # gradient mode with trainable weights


def test_inference_precision_errors_and_restores():
    with pytest.raises(ValueError, match="precision"):
        with inference_precision("fp16"):
            pass
    with inference_precision("bf16"):
        assert conv_ops._compute_dtype == torch.bfloat16
    assert conv_ops._compute_dtype is None


@needs_fused
def test_bf16_conv_close_and_returns_input_dtype():
    conv = nn.Conv2d(8, 8, 3, padding=1)
    x = torch.rand(1, 8, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = conv_module(conv, x, "relu")
        with inference_precision("bf16"):
            got = conv_module(conv, x, "relu")
    assert got.dtype == torch.float32 and got.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(got, ref)  # really computed in bfloat16 ...
    torch.testing.assert_close(got, ref, rtol=0.05, atol=0.05)  # ... and close (8-bit mantissa)


# ----------------------------------------------------------------------------- networks
@needs_fused
@pytest.mark.parametrize("attention,quirk,k", [("ufa", True, 2), ("ufa", False, 3), ("none", False, 2)])
def test_ufafuse_fast_path_equals_plain(attention, quirk, k, both_paths):
    torch.manual_seed(0)
    net = UFAFuseNet(features=16, attention=attention, official_quirk=quirk).eval()
    src = torch.rand(1, k, 3, 21, 26)
    (fast, wf), (plain, wp) = both_paths(lambda: net(src, return_attention=True))
    assert fast.shape == plain.shape == (1, 3, 21, 26) and fast.is_contiguous()
    assert psnr(fast, plain) >= 50
    for key in wp:
        torch.testing.assert_close(wf[key], wp[key], rtol=1e-4, atol=1e-5)


@needs_fused
@pytest.mark.parametrize("variant", ["full", "baseline", "no_siamese"])
def test_msasn_fast_path_equals_plain(variant, both_paths):
    torch.manual_seed(0)
    net = randomise(MSASNNet(VARIANTS[variant], width=8, gcb_width=16, gcb_depth=4))
    a, c = torch.rand(2, 1, 1, 22, 27)
    (fast, cf), (plain, cp) = both_paths(lambda: net(a, c, return_clean=True))
    assert fast.shape == plain.shape == (1, 1, 22, 27) and fast.is_contiguous()
    assert psnr(torch.sigmoid(fast), torch.sigmoid(plain)) >= 50
    assert torch.equal(fast > 0, plain > 0)  # same decision map
    assert psnr(cf, cp) >= 50


@needs_fused
@pytest.mark.parametrize("non_local,cin", [(False, 1), (True, 2)])
def test_udpnet_encoder_decoder_fast_path_equals_plain(non_local, cin, both_paths):
    torch.manual_seed(0)
    net = randomise(EncoderDecoder(cin, 1, 6, non_local=non_local))
    x = torch.rand(2, cin, 17, 23)
    fast, plain = both_paths(lambda: net(x))
    assert fast.shape == (2, 1, 17, 23) and fast.is_contiguous()
    assert psnr(fast, plain, peak=float(plain.abs().max())) >= 50


@needs_fused
def test_udpnet_unrolled_fuser_fast_path_equals_plain(both_paths):
    torch.manual_seed(0)
    net = randomise(UnrolledFuser(stages=2, width_mask=5, width_image=6))
    src = torch.rand(1, 2, 1, 18, 20)
    init = torch.softmax(torch.randn(1, 2, 1, 18, 20), 1)
    fast, plain = both_paths(lambda: net(src, init))
    assert psnr(fast.image, plain.image) >= 50
    assert psnr(fast.stage_masks[-1], plain.stage_masks[-1]) >= 50


def test_fast_path_off_in_training_keeps_gradients():
    net = UFAFuseNet(features=8)
    src = torch.rand(1, 2, 3, 9, 9)
    net(src).mean().backward()  # train mode, autograd: the plain layers
    assert net.conv1[0].weight.grad is not None and net.conv1[0].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- module precision hook
@needs_fused
@pytest.mark.parametrize("method", ["ufafuse", "msasn"])
def test_module_bf16_precision_runs_and_is_close(method):
    from lightning_modules.base import inference_only
    from mfif import registry
    from mfif.config import load_config

    cfg = load_config(f"{method}.yaml", data=False)
    with inference_only():
        module = registry.method_class(method)(cfg).eval()
    randomise(module)
    src = torch.rand(1, 2, 3, 24, 24)
    with torch.inference_mode():
        ref = module.fuse(src)
        module.fuse_precision = "bf16"
        got = module.fuse(src)
        module.fuse_precision = "fp64"
        with pytest.raises(ValueError, match="fuse_precision"):
            module.fuse(src)
    assert got.fused.dtype == torch.float32 and got.fused.shape == ref.fused.shape
    assert psnr(got.fused, ref.fused) >= 30


def test_fuse_cli_precision_flag(shared_dir, tmp_path):
    """``fuse.py --precision bf16`` fuses (close to fp32); a bad value is refused by argparse (exit 2)."""
    from PIL import Image

    from experiments.fuse import main
    from mfif.io import load_image

    lytro, weights = shared_dir / "data" / "lytro", shared_dir / "weights" / "gacn_official.pkl"
    srcs = []
    for s in "AB":  # a 64x64 crop keeps the test fast
        path = tmp_path / f"{s}.png"
        Image.open(lytro / f"lytro-01-{s}.jpg").crop((200, 200, 264, 264)).save(path)
        srcs.append(str(path))
    outs = {}
    for prec in ("fp32", "bf16"):
        outs[prec] = tmp_path / f"{prec}.png"
        assert main([*srcs, "-o", str(outs[prec]), "--method", "gacn", "--weights", str(weights),
                     "--precision", prec]) == 0
    assert psnr(load_image(outs["bf16"]), load_image(outs["fp32"])) >= 30
    with pytest.raises(SystemExit) as e:
        main([*srcs, "-o", str(tmp_path / "x.png"), "--precision", "fp16"])
    assert e.value.code == 2
