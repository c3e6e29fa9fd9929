"""Unity fusion attention (UFA-Fuse Sec. III-B, Eqs. 5-10): the parameter-free parts + the 7x7 conv.

Both attentions compare the K sources with each other: a softmax *across the sources*
turns per-source scores into weights that sum to 1 over k at every channel (channel
attention, Eqs. 7-8) or at every pixel (spatial attention, Eqs. 9-10).

Two normalisations are offered:

* the correct softmax (default): ``torch.softmax`` over the source axis, numerically stable;
* the official code's form (``official_quirk=True``): ``exp(a_k) / (sum_i exp(a_i) + 1e-10)``
  computed literally, where in the *spatial* attention the first source's own term in the
  denominator is replaced by the second source's. For K = 2 this is the released code's
  ``mask1 = exp(a1) / (exp(a2) + exp(a2) + 1e-10)`` (ReckonerInheritor/UFA-Fusion ``Code/model/model.py``); the released
  weights were trained with it, so exact parity needs it. Its weights do not sum to 1.
  For K > 2 we generalise it as "source 0's term replaced by source 1's".
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from mfif.ops.checks import check_shape
from mfif.ops.conv import fast_inference, single_output_conv2d

# EPSILON of the official attention blocks (both channel and spatial), used only in quirk mode.
OFFICIAL_EPS = 1e-10


def _check_sources_features(x: Tensor, name: str) -> None:
    check_shape(x, name, "B K C H W", K=2)


def softmax_across_sources(logits: Tensor, official_quirk: bool = False, eps: float = OFFICIAL_EPS) -> Tensor:
    """Normalise per-source scores over the source axis (dim 1): Eqs. 8 and 10.

    Args:
        logits: scores ``a_k``, source axis at dim 1.
        official_quirk: use the official code's literal form, with source 0's own term in the
            denominator replaced by source 1's (the released checkpoint's bug; see module doc).
        eps: denominator epsilon of the official form (ignored by the correct softmax).

    Returns:
        Weights of the same shape. With ``official_quirk=False`` they sum to 1 over dim 1.

    Shape:
        - logits: :math:`(B, K, *)`, K >= 2
        - output: :math:`(B, K, *)`
    """
    if logits.dim() < 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have the source axis at dim 1 with K >= 2, got {tuple(logits.shape)}")
    if not official_quirk:
        return torch.softmax(logits, dim=1)
    e = logits.exp()
    total = e.sum(1, keepdim=True)
    # Official spatial quirk: exp(a_0) is replaced by exp(a_1) in source 0's denominator.
    denom0 = total[:, :1] - e[:, :1] + e[:, 1:2]
    return torch.cat([e[:, :1] / (denom0 + eps), e[:, 1:] / (total + eps)], 1)


def official_softmax(logits: Tensor, eps: float = OFFICIAL_EPS) -> Tensor:
    """The official channel-attention normalisation ``exp(a_k) / (sum_i exp(a_i) + eps)``.

    Mathematically the softmax (up to ``eps``); computed literally for bit-level parity with
    the released checkpoint. Shape as :func:`softmax_across_sources`.
    """
    e = logits.exp()
    return e / (e.sum(1, keepdim=True) + eps)


def channel_attention_weights(feats: Tensor, official: bool = False) -> Tensor:
    """Channel attention maps ``M^c_k`` (Eqs. 7-8): global average pooling, softmax over sources.

    Args:
        feats: per-source features ``F_k``.
        official: use the official literal ``exp / (sum + 1e-10)`` (parity mode).

    Shape:
        - feats: :math:`(B, K, C, H, W)`
        - output: :math:`(B, K, C, 1, 1)`, summing to 1 over K (up to 1e-10 in parity mode)
    """
    _check_sources_features(feats, "feats")
    pooled = feats.mean(dim=(-2, -1), keepdim=True)  # Eq. 7: A_k = AP(F_k)
    return official_softmax(pooled) if official else torch.softmax(pooled, dim=1)  # Eq. 8


def spatial_descriptor(feats: Tensor) -> Tensor:
    """``[AvgPool(F); MaxPool(F)]`` along channels, the input of the 7x7 conv (Eq. 9).

    Shape:
        - feats: :math:`(*, C, H, W)`
        - output: :math:`(*, 2, H, W)`
    """
    return torch.cat([feats.mean(-3, keepdim=True), feats.amax(-3, keepdim=True)], -3)


def spatial_attention_weights(logits: Tensor, official_quirk: bool = False) -> Tensor:
    """Spatial attention maps ``M^s_k`` from the conv scores ``AM_k`` (Eq. 10).

    Shape:
        - logits: :math:`(B, K, 1, H, W)`
        - output: :math:`(B, K, 1, H, W)`; sums to 1 over K unless ``official_quirk``
    """
    _check_sources_features(logits, "logits")
    return softmax_across_sources(logits, official_quirk=official_quirk)


class SpatialAttentionConv(nn.Module):
    """``f^{7x7}`` of Eq. 9: Conv 2->1, no bias, on the [mean, max] descriptor (Table II).

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: :math:`(N, 1, H, W)` (scores ``AM``, no activation: Table II "Null")
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        # Attribute name ``conv`` as in the official checkpoint (sc4.att_sp.att{1,2}.conv.weight).
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if fast_inference(self, x):  # inference: the 2 -> 1 conv split in two (mfif.ops.conv)
            return single_output_conv2d(spatial_descriptor(x), self.conv.weight)
        return self.conv(spatial_descriptor(x))


class SpatialAttentionScores(nn.Module):
    """Per-source 7x7 convs of the official layout: ``att1`` scores source 0, ``att2`` the others.

    The official network has one 7x7 conv per input slot (not shared). For K > 2 sources we
    keep the two trained slots: source 0 is the *reference* slot (``att1``) and every other
    source uses the second slot (``att2``), so K = 2 is exactly the official model.

    Shape:
        - feats: :math:`(B, K, C, H, W)`
        - output: :math:`(B, K, 1, H, W)` scores ``AM_k``
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.att1 = SpatialAttentionConv(kernel_size)
        self.att2 = SpatialAttentionConv(kernel_size)

    def forward(self, feats: Tensor) -> Tensor:
        _check_sources_features(feats, "feats")
        b, k, c, h, w = feats.shape
        first = self.att1(feats[:, 0])
        rest = self.att2(feats[:, 1:].reshape(b * (k - 1), c, h, w)).view(b, k - 1, 1, h, w)
        return torch.cat([first.unsqueeze(1), rest], 1)
