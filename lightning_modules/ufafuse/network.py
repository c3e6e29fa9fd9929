"""UFA-Fuse network (Zang et al., Sec. III-A/B, Table II, Fig. 1-2), in the official code's layout.

Pipeline, shared weights for every source ``x_k`` (RGB in [0, 1]):

1. Feature extraction (Table II FEB1-7): ``conv1`` = Conv3x3 3->64 + LeakyReLU(0.01), then
   ``rb1..rb3`` each Conv3x3 -> LeakyReLU -> Conv3x3 (official "Resblock": *no* skip and no final
   activation, although Table II lists a LeakyReLU after every FEB - we follow the code, whose
   weights we load).
2. Unity fusion attention ``sc4`` (Sec. III-B): shared Conv3x3+LReLU (``conv1``); channel
   attention (Eqs. 5, 7-8); spatial attention (Eqs. 6, 9-10) with a per-slot 7x7 conv
   (``att_sp.att1/att2``); shared Conv3x3+LReLU (``conv2``). The two extra convs are in the
   official code but not in Table II.
3. Feature fusion block ``fusion`` (FFB, Table II): Conv1x1 128->64 on the concatenation.
4. Image reconstruction: ``EX3`` = 4 x (Conv3x3 64->64 + LReLU), ``restruction`` Conv3x3 64->3,
   sigmoid (official code: 4+1 convs where Table II lists ICB1-4).

Attribute names (``conv1``, ``rb1``, ``sc4``, ``EX3``, ``restruction`` [sic] ...) are the
official ones so the released ``ufa_official.pth`` loads with ``strict=True``; 455,111
parameters.

**K > 2 sources** (not in the paper, which fixes K = 2). Both softmaxes run over all K
sources (Eqs. 8, 10 are already defined for any K). The network has two trained *slots*
(``att1``/``att2`` and the two 64-channel halves of the FFB weight): source 0 is the reference
slot and sources 1..K-1 share the second slot - the second half of the FFB input is the
sum of their attention-weighted features ``sum_{k>=1} F''_k``. Because the attention weights
sum to 1 over the K sources, that sum is itself an attention-weighted combination of
features on the same scale as one source's, and for K = 2 it is exactly ``F''_2``, so the
official weights apply unchanged. Source order matters (as in the official K = 2 model);
put the reference/first image first.

**Ablations** (Table IV, ``attention``): ``ufa`` (both), ``no_sa`` (channel only), ``no_ca``
(spatial only), ``none`` (NO-UFA: features pass unweighted). ``sc4.conv1/conv2`` are kept in
every variant, so only the attention is removed and all variants load the same weights.

**Inference fast path** (eval mode, no gradient, CPU; :func:`mfif.ops.conv.fast_paths` turns it off): the
same layers on NHWC activations with each LeakyReLU fused into its convolution
(:func:`mfif.ops.conv.conv_module`), the 7x7 ``2 -> 1`` attention convs split in two
(:func:`mfif.ops.conv.single_output_conv2d`, in :mod:`.attention`) and the attention weights
applied in place. Same
outputs up to float rounding (``tests/test_fast_paths.py``); speed in
``experiments/benchmarks/bench_inference.py``.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
from torch import Tensor

from lightning_modules.ufafuse.attention import (
    SpatialAttentionScores,
    channel_attention_weights,
    spatial_attention_weights,
)
from mfif.ops.conv import conv_module, fast_inference

AttentionMode = Literal["ufa", "no_sa", "no_ca", "none"]
ATTENTION_MODES = ("ufa", "no_sa", "no_ca", "none")


def fold_sources(x: Tensor) -> Tensor:
    """``[B, K, C, H, W]`` -> ``[B*K, C, H, W]`` so shared layers run on all sources at once."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def unfold_sources(x: Tensor, k: int) -> Tensor:
    """Inverse of :func:`fold_sources`."""
    return x.view(x.shape[0] // k, k, *x.shape[1:])


def pair_slots(feats: Tensor) -> Tensor:
    """Concatenate the two FFB slots: ``[F''_0, sum_{k>=1} F''_k]`` (K = 2: the plain concat).

    Shape:
        - feats: :math:`(B, K, C, H, W)`, K >= 2
        - output: :math:`(B, 2C, H, W)`
    """
    return torch.cat([feats[:, 0], feats[:, 1:].sum(1)], 1)


class ConvLReLU(nn.Module):
    """Conv3x3 + LeakyReLU (official ``Conv``; FEB/ICB of Table II). Attribute ``body`` as upstream.

    Shape:
        - x: :math:`(N, C_{in}, H, W)`
        - output: :math:`(N, C_{out}, H, W)`
    """

    def __init__(self, in_ch: int, out_ch: int, negative_slope: float = 0.01):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, 1, 1), nn.LeakyReLU(negative_slope))

    def forward(self, x: Tensor) -> Tensor:
        if fast_inference(self, x):  # LeakyReLU fused into the convolution
            return conv_module(self.body[0], x, "leaky_relu", negative_slope=self.body[1].negative_slope)
        return self.body(x)


class FeatureBlock(nn.Module):
    """Two FEBs: Conv3x3 -> LeakyReLU -> Conv3x3 (official ``Resblock``: no skip, no final act).

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`
    """

    def __init__(self, ch: int, negative_slope: float = 0.01):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(negative_slope), nn.Conv2d(ch, ch, 3, 1, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        if fast_inference(self, x):  # LeakyReLU fused into the first convolution
            h = conv_module(self.body[0], x, "leaky_relu", negative_slope=self.body[1].negative_slope)
            return conv_module(self.body[2], h)
        return self.body(x)


class UnityFusionAttention(nn.Module):
    """The UFA module (Sec. III-B, Fig. 2, Eqs. 5-10) with the official pre/post convs.

    Args:
        ch: feature channels C.
        negative_slope: LeakyReLU slope of ``conv1``/``conv2``.
        spatial_kernel: size of ``f^{7x7}`` (Eq. 9).
        attention: ``ufa`` | ``no_sa`` | ``no_ca`` | ``none`` (Table IV rows).
        official_quirk: reproduce the official softmax quirk (see :mod:`.attention`).

    Returns (forward):
        ``(out, weights)``: ``out`` the per-source features after ``conv2``; ``weights`` a dict
        with ``channel`` ``[B, K, C, 1, 1]`` and ``spatial`` ``[B, K, 1, H, W]`` (absent when
        that attention is disabled).

    Shape:
        - feats: :math:`(B, K, C, H, W)`
        - out: :math:`(B, K, C, H, W)`
    """

    def __init__(self, ch: int = 64, negative_slope: float = 0.01, spatial_kernel: int = 7,
                 attention: AttentionMode = "ufa", official_quirk: bool = False):
        super().__init__()
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got '{attention}'")
        self.attention = attention
        self.official_quirk = official_quirk
        self.conv1 = ConvLReLU(ch, ch, negative_slope)
        self.conv2 = ConvLReLU(ch, ch, negative_slope)
        # Built in every variant so all variants share one state-dict layout.
        self.att_sp = SpatialAttentionScores(spatial_kernel)

    def forward(self, feats: Tensor) -> tuple[Tensor, dict]:
        k = feats.shape[1]
        fast = fast_inference(self, feats)  # inference: f is fresh, the weights apply in place
        f = unfold_sources(self.conv1(fold_sources(feats)), k)
        weights: dict = {}
        if self.attention in ("ufa", "no_sa"):
            weights["channel"] = channel_attention_weights(f, official=self.official_quirk)
            f = f.mul_(weights["channel"]) if fast else weights["channel"] * f  # Eq. 5: F'_k = M^c_k (x) F_k
        if self.attention in ("ufa", "no_ca"):
            scores = self.att_sp(f)  # Eq. 9
            weights["spatial"] = spatial_attention_weights(scores, official_quirk=self.official_quirk)  # Eq. 10
            f = f.mul_(weights["spatial"]) if fast else weights["spatial"] * f  # Eq. 6: F''_k = M^s_k (x) F'_k
        return unfold_sources(self.conv2(fold_sources(f)), k), weights


class UFAFuseNet(nn.Module):
    """End-to-end UFA-Fuse network (Fig. 1, Table II) for K >= 2 aligned sources.

    Args:
        in_channels: image channels (3: RGB, as the released weights).
        features: feature width C (64, Table II).
        negative_slope: LeakyReLU slope (0.01, official code).
        spatial_kernel: spatial-attention conv size (7, Eq. 9).
        attention: ablation variant (Table IV), see :class:`UnityFusionAttention`.
        official_quirk: reproduce the official spatial-softmax quirk (parity with released weights).

    Shape:
        - sources: :math:`(B, K, C_{in}, H, W)` in [0, 1], K >= 2, any H, W
        - output: :math:`(B, C_{in}, H, W)` in (0, 1) (sigmoid)
    """

    def __init__(self, in_channels: int = 3, features: int = 64, negative_slope: float = 0.01,
                 spatial_kernel: int = 7, attention: AttentionMode = "ufa", official_quirk: bool = False):
        super().__init__()
        self.in_channels = in_channels
        c = features
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, c, 3, 1, 1), nn.LeakyReLU(negative_slope))  # FEB1
        self.rb1 = FeatureBlock(c, negative_slope)  # FEB2-3
        self.rb2 = FeatureBlock(c, negative_slope)  # FEB4-5
        self.rb3 = FeatureBlock(c, negative_slope)  # FEB6-7
        self.sc4 = UnityFusionAttention(c, negative_slope, spatial_kernel, attention, official_quirk)
        self.fusion = nn.Conv2d(2 * c, c, 1, 1, 0)  # FFB (Table II: 1x1, 128 -> 64, no activation)
        self.EX3 = nn.Sequential(*[ConvLReLU(c, c, negative_slope) for _ in range(4)])  # ICB
        self.restruction = nn.Conv2d(c, in_channels, 3, 1, 1)  # last ICB, 64 -> 3, then sigmoid

    def reset_parameters_xavier(self) -> None:
        """Official training init: Xavier-normal conv weights, PyTorch-default biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)

    def forward(self, sources: Tensor, return_attention: bool = False):
        """Fuse ``sources``; with ``return_attention`` also return the attention weight dict."""
        if not isinstance(sources, Tensor) or sources.dim() != 5 or sources.shape[1] < 2:
            got = tuple(sources.shape) if isinstance(sources, Tensor) else type(sources).__name__
            raise ValueError(f"sources must have shape [B, K, C, H, W] with K >= 2, got {got}")
        if sources.shape[2] != self.in_channels:
            raise ValueError(f"sources must have {self.in_channels} channels, got {sources.shape[2]}")
        k = sources.shape[1]
        x = fold_sources(sources)
        if fast_inference(self, x):  # NHWC activations, LeakyReLU fused (module doc)
            x = conv_module(self.conv1[0], x.contiguous(memory_format=torch.channels_last), "leaky_relu",
                            negative_slope=self.conv1[1].negative_slope)
        else:
            x = self.conv1(x)
        x = self.rb3(self.rb2(self.rb1(x)))
        feats, weights = self.sc4(unfold_sources(x, k))
        if fast_inference(self, x) and k == 2:  # the same slots without summing one source (NHWC kept)
            fused = conv_module(self.fusion, torch.cat([feats[:, 0], feats[:, 1]], 1))
        else:
            fused = self.fusion(pair_slots(feats))
        out = torch.sigmoid(self.restruction(self.EX3(fused))).contiguous()  # NCHW for the caller
        return (out, weights) if return_attention else out
