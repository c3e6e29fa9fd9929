"""Convolutions for fast CPU inference, written once for every method that needs them.

* :func:`conv2d_activation` - ``activation(conv2d(x))`` with the activation fused into the oneDNN
  convolution (a post-op: the output is written once instead of twice) when no gradient is needed;
  the plain composition otherwise. Same values up to float rounding.
* :func:`single_output_conv2d` - a ``C -> 1`` convolution (attention gates, last layers), which
  oneDNN runs far below its usual throughput, rewritten as two convolutions it runs well.
* :func:`conv_module` - the same for an ``nn.Conv2d`` (its stride, padding, dilation, groups), with
  an optional residual added before the activation (``act(conv(x) + r)``, one fused kernel).
* :func:`fold_batchnorm` - an eval-mode ``BatchNorm2d`` after a convolution folded into its weights.
* :func:`fast_inference` - whether a network's inference fast path applies (eval, no gradient, CPU).
* :func:`fast_training` - whether a network's training fast path applies (CPU, fast paths on).

The inference fast paths of the networks (UFA-Fuse, MSASN, UDPNet, GACN) are built from these:
NHWC (``channels_last``) activations, activations fused into the convolutions, no autograd, and
in-place updates of fresh activations. float32 and bfloat16 inputs are fused.

The fused form uses ``torch.ops.mkldnn._convolution_pointwise``, the kernel PyTorch's own
compiler (inductor) emits for CPU convolution + activation. It is an internal operator: when it is
missing or rejects the input (another device, dtype or torch build) the plain composition is used.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = ("relu", "sigmoid", "leaky_relu")


def _pointwise_op():
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(torch.ops.mkldnn, "_convolution_pointwise", None)


_FUSED = _pointwise_op()
_FUSED_ADD = getattr(_FUSED, "binary", None)  # act(conv(x) + other) in one kernel


def _pair(v) -> list[int]:
    return [v, v] if isinstance(v, int) else [int(v[0]), int(v[1])]


def _check_activation(activation: Optional[str]) -> None:
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None or one of {ACTIVATIONS}, got '{activation}'")


def activate(x: Tensor, activation: Optional[str], negative_slope: float = 0.01) -> Tensor:
    """``x``, ``relu(x)``, ``sigmoid(x)`` or ``leaky_relu(x, negative_slope)`` by ``activation`` name."""
    _check_activation(activation)
    if activation is None:
        return x
    if activation == "leaky_relu":
        return F.leaky_relu(x, negative_slope)
    return torch.relu(x) if activation == "relu" else torch.sigmoid(x)


PRECISIONS = ("fp32", "bf16")
_compute_dtype: Optional[torch.dtype] = None  # set by inference_precision("bf16")


@contextlib.contextmanager
def inference_precision(precision: str) -> Iterator[None]:
    """Run the fused convolutions of this module at ``precision`` inside the block.

    ``"fp32"``: nothing changes. ``"bf16"``: every fused (inference, CPU) convolution of
    :func:`conv2d_activation` / :func:`conv_module` casts its input, weight and bias to bfloat16
    (the AVX512-BF16 / AMX units where the CPU has them), accumulates in float32 inside oneDNN
    and returns the input's dtype, so everything between the convolutions (attention, softmax,
    filters, decision rules) stays float32. Convolutions outside the fast paths (training, GPU,
    the plain layers) are unchanged.

    Raises:
        ValueError: unknown ``precision``.
    """
    global _compute_dtype
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
    before, _compute_dtype = _compute_dtype, (torch.bfloat16 if precision == "bf16" else None)
    try:
        yield
    finally:
        _compute_dtype = before


def _lowered(x: Tensor, *tensors: Optional[Tensor]) -> tuple:
    """``tensors`` in the compute dtype of :func:`inference_precision` (unchanged at fp32)."""
    if _compute_dtype is None or x.dtype == _compute_dtype or x.device.type != "cpu":
        return tensors
    return tuple(None if t is None else t.to(_compute_dtype) for t in tensors)


_fast_paths_enabled = True


@contextlib.contextmanager
def fast_paths(enabled: bool) -> Iterator[None]:
    """Switch the networks' inference and training fast paths on or off inside the block (off: the
    plain PyTorch layers, the reference the fast paths are tested and benchmarked against)."""
    global _fast_paths_enabled
    before, _fast_paths_enabled = _fast_paths_enabled, bool(enabled)
    try:
        yield
    finally:
        _fast_paths_enabled = before


def _keep_nhwc(x: Tensor, y: Tensor) -> Tensor:
    """``y`` in NHWC when ``x`` is: a one-channel input is both NCHW and NHWC and oneDNN then
    returns NCHW, which would leave every later layer of a fast path in the slow layout."""
    if x.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous(memory_format=torch.channels_last):
        return y.contiguous(memory_format=torch.channels_last)
    return y


def _can_fuse(x: Tensor, weight: Tensor) -> bool:
    grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    return (_FUSED is not None and _fast_paths_enabled and not grad and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.bfloat16) and weight.dtype == x.dtype)


def fast_training(x: Tensor) -> bool:
    """Whether the networks' training fast paths apply to ``x``: a CPU tensor and fast paths not
    switched off (:func:`fast_paths`). They keep the math and change only how it is computed
    (memory layouts chosen per layer, hand-written backward passes), so results agree with the
    plain layers up to float rounding; GACN uses them (``lightning_modules/gacn/network.py``)."""
    return _fast_paths_enabled and x.device.type == "cpu"


def fast_inference(module: nn.Module, x: Tensor) -> bool:
    """Whether ``module``'s inference fast path applies to ``x``: eval mode, no gradient, a CPU
    tensor, the fused kernel available and fast paths not switched off (:func:`fast_paths`)."""
    if not _fast_paths_enabled or module.training or x.device.type != "cpu" or _FUSED is None:
        return False
    return not torch.is_grad_enabled() or not (x.requires_grad or any(p.requires_grad for p in module.parameters()))


def conv2d_activation(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
    activation: Optional[str] = None,
    stride: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    negative_slope: float = 0.01,
) -> Tensor:
    """``activation(F.conv2d(x, weight, bias, stride, padding, dilation, groups))``.

    Args:
        x: input ``[B, C_in, H, W]``.
        weight: ``[C_out, C_in / groups, kh, kw]``.
        bias: ``[C_out]`` or None.
        padding: zero padding (int or ``(ph, pw)``).
        groups: convolution groups.
        activation: None, ``"relu"``, ``"sigmoid"`` or ``"leaky_relu"``.
        stride, dilation: as ``F.conv2d``.
        negative_slope: slope of ``"leaky_relu"``.

    Returns:
        The activated convolution (size as ``F.conv2d``).

    Shape:
        - x: :math:`(B, C_{in}, H, W)`
        - output: :math:`(B, C_{out}, H', W')`
    """
    _check_activation(activation)
    if activation is not None and _can_fuse(x, weight):
        scalars = [negative_slope] if activation == "leaky_relu" else []
        xl, wl, bl = _lowered(x, x, weight, bias)
        try:
            y = _FUSED(xl, wl, bl, _pair(padding), _pair(stride), _pair(dilation), groups, activation, scalars, "")
            return _keep_nhwc(x, y.to(x.dtype))
        except RuntimeError:  # an input this build's oneDNN kernel does not take: plain path
            pass
    elif _can_fuse(x, weight) and _compute_dtype is not None:  # no activation: lowered precision too
        xl, wl, bl = _lowered(x, x, weight, bias)
        y = F.conv2d(xl, wl, bl, stride=stride, padding=padding, dilation=dilation, groups=groups)
        return _keep_nhwc(x, y.to(x.dtype))
    y = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return activate(y, activation, negative_slope)


def conv_module(conv: nn.Conv2d, x: Tensor, activation: Optional[str] = None, residual: Optional[Tensor] = None,
                negative_slope: float = 0.01, weight: Optional[Tensor] = None,
                bias: Optional[Tensor] = None) -> Tensor:
    """``activation(conv(x) [+ residual])`` for a zero-padded ``nn.Conv2d``, fused where possible.

    Args:
        conv: the convolution (its stride, padding, dilation and groups are used).
        x: input.
        activation: None, ``"relu"``, ``"sigmoid"`` or ``"leaky_relu"``.
        residual: optional tensor of the output's shape added before the activation (with
            ``relu``/None and no gradient: one oneDNN kernel writing the output once).
        negative_slope: slope of ``"leaky_relu"``.
        weight, bias: replace the module's (e.g. from :func:`fold_batchnorm`).

    Shape:
        - x: :math:`(B, C_{in}, H, W)`; residual: :math:`(B, C_{out}, H', W')`
        - output: :math:`(B, C_{out}, H', W')`
    """
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"conv_module needs an nn.Conv2d with numeric zero padding, got {conv}")
    w = conv.weight if weight is None else weight
    b = conv.bias if weight is None else bias
    if residual is None:
        return conv2d_activation(x, w, b, conv.padding, conv.groups, activation, conv.stride, conv.dilation,
                                 negative_slope)
    if activation in (None, "relu") and _FUSED_ADD is not None and _can_fuse(x, w):
        xl, rl, wl, bl = _lowered(x, x, residual, w, b)
        try:
            return _FUSED_ADD(xl, rl, wl, bl, list(conv.padding), list(conv.stride), list(conv.dilation),
                              conv.groups, "add", None, activation, [], "").to(x.dtype)
        except RuntimeError:  # not supported by this build or input: plain path
            pass
    y = F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)
    return activate(y.add_(residual), activation, negative_slope)


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution, for an eval-mode BatchNorm.

    ``bn(y) = a y + c`` with ``a = gamma / sqrt(var + eps)``, ``c = beta - a mean``, so the folded
    convolution has weight ``a W`` (per output channel) and bias ``a b + c``. Same layout as the
    convolution's weight (``channels_last`` kept).

    Shape:
        - output: weight :math:`(C_{out}, C_{in} / g, k_h, k_w)`, bias :math:`(C_{out})`
    """
    if bn.training or bn.running_mean is None:
        raise ValueError("fold_batchnorm needs an eval-mode BatchNorm2d with running statistics")
    a = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    return conv.weight * a.view(-1, 1, 1, 1), a * bias + bn.bias - a * bn.running_mean


def single_output_conv2d(
    x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, activation: Optional[str] = None
) -> Tensor:
    """``activation(F.conv2d(x, weight, bias, padding=k // 2))`` for a ``[1, C, k, k]`` kernel, fast.

    oneDNN runs C -> 1 convolutions far below its usual throughput. The same sum is split in two
    convolutions it runs well: a ``1 x k`` convolution to ``k`` channels, channel ``i`` holding
    kernel row ``i``, then a ``k x 1`` convolution whose one-hot kernel adds channel ``i`` shifted
    by ``i - k // 2`` rows (with the activation fused in). Same values up to float rounding
    (2-4x faster at 520x520 with torch 2.13 on CPU); meant for inference.

    Shape:
        - x: :math:`(B, C, H, W)`; weight: :math:`(1, C, k, k)`, k odd
        - output: :math:`(B, 1, H, W)`
    """
    if weight.dim() != 4 or weight.shape[0] != 1 or weight.shape[-1] != weight.shape[-2] or weight.shape[-1] % 2 == 0:
        raise ValueError(f"weight must be [1, C, k, k] with k odd, got {tuple(weight.shape)}")
    c, k = weight.shape[1], weight.shape[-1]
    rows = weight[0].permute(1, 0, 2).reshape(k, c, 1, k)  # [row i, C, 1, k]
    if x.is_contiguous(memory_format=torch.channels_last):
        rows = rows.contiguous(memory_format=torch.channels_last)
    pick = torch.eye(k, dtype=x.dtype, device=x.device).view(1, k, k, 1)  # channel i -> kernel row i
    return conv2d_activation(F.conv2d(x, rows, padding=(0, k // 2)), pick, bias, padding=(k // 2, 0),
                             activation=activation)
