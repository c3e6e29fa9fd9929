"""GACN network (Ma et al., Neurocomputing 2022, Sec. 3.1, Fig. 1): the whole model in one file.

Pipeline for a pair of gray sources A, B in [0, 1]::

    features(A), features(B)         Siamese dense path, 4 x (Conv-ReLU-BN + channel SE), 64 ch
    SF_A, SF_B                       pixel-wise spatial frequency, r = 5           (Eqs. 1-3)
    act = sigmoid(k (SF_A - SF_B))   64-channel activity comparison, k = 1000      (Sec. 3.1.1)
    x = decision(act)                4 x (spatial SE + Conv-ReLU-BN) + spatial SE  (Sec. 3.1.2)
    initial = sigmoid(k x)           nearly binary initial decision map, k = 1000  (Eq. 4)
    final = boundary-guided filter   Gaussian band [0.1, 0.8] + guided filter      (Sec. 3.1.2)
    F = final * A + (1 - final) * B                                                (Eq. 5)

Layer order, widths and constants follow the released code (Keep-Passion/GACN ``nets/gacn_net.py``), so the
official checkpoint loads after the key renaming in :mod:`lightning_modules.gacn.official`:
Conv-ReLU-BN blocks (ReLU *before* BatchNorm), CSE with reduction 8 and no biases, SSE as a
bias-free 7x7 conv to one channel, SF as raw window sums (no sqrt / normalisation, see
:mod:`mfif.ops.activity`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mfif.ops.activity import box_sum, neighbour_energy_difference, sf_comparison
from mfif.ops.conv import conv2d_activation, fast_training, single_output_conv2d
from mfif.ops.guided_filter import boundary_guided_refinement

#: Training layout of each path on CPU (``fast_training``). oneDNN's NHWC backward convolution
#: is about 2x slower than NCHW on this AVX2 CPU for the decision path's 64->48 and 48->32
#: layers (torch 2.13, 16 x 156 x 156), and BatchNorm/elementwise ops are 3-5x slower when the
#: activation and its gradient have different layouts, so every layer of a path runs in one
#: layout and the tensors are converted once where the paths meet (README "Training speed").
FEATURES_TRAINING_LAYOUT = torch.channels_last
DECISION_TRAINING_LAYOUT = torch.contiguous_format


def _needs_grad(x: Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def _records(x: Tensor, conv: nn.Conv2d) -> bool:
    """Autograd records this layer: gradients enabled and the input or the weight needs one."""
    return torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad)


def _in_layout(t: Tensor, layout: torch.memory_format) -> Tensor:
    """``t`` with NCHW or NHWC strides, also for one channel (where ``contiguous`` keeps either)."""
    if layout == torch.channels_last and t.shape[1] == 1 and t.stride(1) != 1:
        return t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    return t.contiguous(memory_format=layout)


def _weight_like(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """The conv weight in the layout of ``x`` (training on CPU): oneDNN then runs the whole layer
    in that layout instead of converting activations and gradients (a copy of a small tensor)."""
    if not fast_training(x):
        return conv.weight
    nhwc = x.is_contiguous(memory_format=torch.channels_last) and (x.stride(1) == 1 or not x.is_contiguous())
    return conv.weight.contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)


class ConvReLUBN(nn.Module):
    """Conv3x3 (padding 1, bias) -> ReLU -> BatchNorm, the released ``conv_block`` order.

    Shape:
        - input: :math:`(B, C_{in}, H, W)`; output: :math:`(B, C_{out}, H, W)`
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.bn = nn.BatchNorm2d(out_channels)

    def conv_relu(self, x: Tensor) -> Tensor:
        """``relu(conv(x))``; without gradient: ReLU fused into the convolution, fast one-output conv;
        in training on CPU the weight follows the input's layout (:func:`_weight_like`)."""
        if _records(x, self.conv):
            return self.relu(F.conv2d(x, _weight_like(self.conv, x), self.conv.bias, padding=self.conv.padding))
        if self.conv.out_channels == 1:
            return single_output_conv2d(x, self.conv.weight, self.conv.bias, activation="relu")
        return conv2d_activation(x, self.conv.weight, self.conv.bias, padding=1, activation="relu")

    def bn_affine(self) -> tuple[Tensor, Tensor]:
        """Eval-mode BatchNorm as ``a * x + b`` with per-channel ``a, b`` of shape ``[1, C, 1, 1]``."""
        bn = self.bn
        a = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        return a.view(1, -1, 1, 1), (bn.bias - bn.running_mean * a).view(1, -1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv_relu(x))


class ChannelSE(nn.Module):
    """Channel squeeze-and-excitation (cSE, Roy et al. 2018): GAP -> FC -> ReLU -> FC -> sigmoid.

    Shape:
        - input / output: :math:`(B, C, H, W)`
    """

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        self.reduce = nn.Linear(channels, channels // reduction, bias=False)
        self.expand = nn.Linear(channels // reduction, channels, bias=False)

    def excite(self, mean: Tensor) -> Tensor:
        """Per-channel excitation ``[B, C, 1, 1]`` from the channel means ``[B, C]``."""
        return torch.sigmoid(self.expand(torch.relu(self.reduce(mean))))[:, :, None, None]

    def scale(self, x: Tensor) -> Tensor:
        """Per-channel excitation ``[B, C, 1, 1]`` of ``x``."""
        return self.excite(x.mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale(x)


class SpatialSE(nn.Module):
    """Spatial squeeze and channel excitation (sSE, Roy et al. 2018), k_s x k_s conv (Sec. 3.1.2: 7).

    Shape:
        - input / output: :math:`(B, C, H, W)`
    """

    def __init__(self, channels: int, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def gate(self, x: Tensor) -> Tensor:
        """Spatial excitation ``[B, 1, H, W]``: the split one-output conv (:func:`single_output_conv2d`)
        without gradient and in training on CPU, where autograd through it is ~3.5x faster than
        through oneDNN's ``C -> 1`` 7x7 convolution (64 channels, 16 x 156 x 156)."""
        if not _records(x, self.conv):
            return single_output_conv2d(x, self.conv.weight, activation="sigmoid")
        if fast_training(x):
            return single_output_conv2d(x, _weight_like(self.conv, x), activation="sigmoid")
        return torch.sigmoid(self.conv(x))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


def _fast(module: nn.Module, x: Tensor) -> bool:
    """Inference shortcuts apply: eval mode (BatchNorm running statistics) and no gradient."""
    return not module.training and not _needs_grad(x)


class DenseFeaturePath(nn.Module):
    """Siamese feature path (Sec. 3.1.1): densely connected, no pooling, cSE after every conv.

    ``c0 = cSE(conv(x))``, ``c_i = cSE(conv([c0 .. c_{i-1}]))``; output ``[c0, c1, c2, c3]``
    (:meth:`layers` returns the four layers without concatenating them, for the SF activity).
    Inference (eval, no gradient): BatchNorm is folded into the cSE rescaling, computed in place.

    Shape:
        - input: :math:`(B, 1, H, W)`; output: :math:`(B, 4 g, H, W)` (g = growth, 16)
    """

    def __init__(self, growth: int = 16, num_layers: int = 4, reduction: int = 8):
        super().__init__()
        self.blocks = nn.ModuleList(ConvReLUBN(1 if i == 0 else i * growth, growth) for i in range(num_layers))
        self.cse = nn.ModuleList(ChannelSE(growth, reduction) for _ in range(num_layers))

    def layers(self, x: Tensor) -> list[Tensor]:
        """The layer outputs ``[c0, c1, c2, c3]``, each ``[B, g, H, W]``."""
        outs: list[Tensor] = []
        fast = _fast(self, x)
        for block, se in zip(self.blocks, self.cse):
            inp = x if not outs else (outs[0] if len(outs) == 1 else torch.cat(outs, 1))
            if fast:  # BN folded into the cSE rescaling, in place: s * (a r + b) = (s a) r + s b
                r = block.conv_relu(inp)
                a, b = block.bn_affine()
                s = se.excite(a.flatten() * r.mean(dim=(2, 3)) + b.flatten())
                outs.append(torch.addcmul(s * b, r, s * a, out=r))
            else:
                y = block(inp)
                outs.append(y * se.scale(y))
        return outs

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(self.layers(x), 1)


class DecisionPath(nn.Module):
    """Decision path (Sec. 3.1.2): sSE before each Conv-ReLU-BN (64->48->32->16->1) and after the last.

    Returns the pre-sigmoid map ``x``; the initial map is ``sigmoid(k x)`` (Eq. 4). Inference (eval,
    no gradient): BatchNorm and the sSE rescaling run in place on the fresh activations.

    Shape:
        - input: :math:`(B, 64, H, W)`; output: :math:`(B, 1, H, W)`
    """

    def __init__(self, widths: tuple[int, ...] = (64, 48, 32, 16, 1), sse_kernel: int = 7):
        super().__init__()
        self.sse = nn.ModuleList(SpatialSE(c, sse_kernel) for c in widths)
        self.blocks = nn.ModuleList(ConvReLUBN(cin, cout) for cin, cout in zip(widths[:-1], widths[1:]))

    def forward(self, x: Tensor, overwrite_input: bool = False) -> Tensor:
        """Pre-sigmoid map; ``overwrite_input`` lets inference reuse the input's memory."""
        if not _fast(self, x):
            if fast_training(x):
                x = _in_layout(x, DECISION_TRAINING_LAYOUT)
            for se, block in zip(self.sse, self.blocks):
                x = block(se(x))
            return self.sse[-1](x)
        gate = self.sse[0].gate(x)  # inference: the activations below are fresh, updated in place
        x = x.mul_(gate) if overwrite_input else x * gate
        for se, block in zip(self.sse[1:], self.blocks):
            r = block.conv_relu(x)
            a, b = block.bn_affine()
            x = torch.addcmul(b, r, a, out=r)  # BatchNorm in place
            x = x.mul_(se.gate(x))
        return x


@dataclass
class PairDecision:
    """Decision maps for source A against source B, all ``[B, 1, H, W]``.

    Attributes:
        logits: ``k * x`` (pre-sigmoid of the initial map; used by the BCE/focal map losses).
        initial: ``sigmoid(k * x)``, the initial decision map (Eq. 4).
        final: boundary-guided-filtered map, the fusion weight of A (Eq. 5).
        boundary: boundary weight of the refinement.
    """

    logits: Tensor
    initial: Tensor
    final: Tensor
    boundary: Optional[Tensor]


class GACNNet(nn.Module):
    """The GACN network: Siamese features, SF activity, decision path, boundary-guided filter.

    Args:
        growth: channels per dense layer (16; 4 layers -> 64 features).
        cse_reduction: cSE reduction (8, released code).
        sse_kernel: sSE kernel size k_s (Sec. 3.1.2: 7).
        sf_radius: SF window radius r (Sec. 3.1.1: 5).
        sharpness: k of the steep sigmoids of the activity comparison and of Eq. 4 (1000).
        blur_sigma, blur_kernel: Gaussian finding the boundary band (released: sigma 8, 9x9).
        band_low, band_high: boundary band of the blurred map (Sec. 3.1.2: [0.1, 0.8]).
        gf_radius, gf_eps: guided filter (released: r = 3, eps = 0.1).
        refine: apply the boundary-guided refinement (False: final = initial).
        box_method: box-sum implementation of SF and guided filter (same values; speed only).

    Inference speed (same outputs as the released strategy, see ``ablations/gacn/table3.py``):
    NHWC activations, one batch for both sources, no concatenation of the 64 features (the
    energy difference reads the four layers, in cache-sized bands of rows), one separable box
    sum per pair with ``k`` folded in, C -> 1 convolutions split in two
    (:func:`single_output_conv2d`) and in-place BatchNorm / gates when no gradient is needed.

    Training speed on CPU (same math up to float rounding, ``tests/test_train_speed.py``;
    :func:`mfif.ops.conv.fast_paths` off gives the plain layers): the feature path runs in NHWC and
    the decision path in NCHW, each conv weight in its input's layout (:func:`_weight_like`); the
    SF comparison has a hand-written backward (:func:`mfif.ops.activity.sf_comparison`); the sSE
    gates use the split one-output convolution with autograd. At 16 x 156 x 156 (1 thread) a step
    takes about half the CPU time of the plain layers, ~70 % of it in convolutions (README,
    "Training speed").
    """

    def __init__(
        self,
        growth: int = 16,
        cse_reduction: int = 8,
        sse_kernel: int = 7,
        sf_radius: int = 5,
        sharpness: float = 1000.0,
        blur_sigma: float = 8.0,
        blur_kernel: int = 9,
        band_low: float = 0.1,
        band_high: float = 0.8,
        gf_radius: int = 3,
        gf_eps: float = 0.1,
        refine: bool = True,
        box_method: str = "conv",
    ):
        super().__init__()
        self.features = DenseFeaturePath(growth, 4, cse_reduction)
        self.decision = DecisionPath((4 * growth, 3 * growth, 2 * growth, growth, 1), sse_kernel)
        self.sf_radius, self.sharpness, self.refine, self.box_method = sf_radius, sharpness, refine, box_method
        self.blur_sigma, self.blur_kernel = blur_sigma, blur_kernel
        self.band_low, self.band_high = band_low, band_high
        self.gf_radius, self.gf_eps = gf_radius, gf_eps
        # channels_last conv weights: oneDNN then keeps activations in NHWC, about 2x faster
        # convolutions on CPU than NCHW (measured with torch 2.13); values are unchanged.
        self.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ building blocks
    def pair_features(self, a: Tensor, b: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Dense-path layers ``[c0..c3]`` of both sources. In eval mode the two go through the
        path as one batch (same result: BatchNorm uses running statistics); in training each
        source is its own batch, as released (BatchNorm statistics per source)."""
        if self.training:
            if fast_training(a):
                a, b = _in_layout(a, FEATURES_TRAINING_LAYOUT), _in_layout(b, FEATURES_TRAINING_LAYOUT)
            return self.features.layers(a), self.features.layers(b)
        n = a.shape[0]
        layers = self.features.layers(torch.cat([a, b], 0))
        return [t[:n] for t in layers], [t[n:] for t in layers]

    def activity(self, f_a: Tensor | list[Tensor], f_b: Tensor | list[Tensor]) -> Tensor:
        """64-channel activity comparison ``sigmoid(k (SF_A - SF_B))`` (Sec. 3.1.1, Eqs. 1-2).

        ``f_a``, ``f_b``: the 64 features of each source, as a tensor or as the four dense layers.
        SF is the raw window sum of the backward neighbour energy (released scale, no Eq. 3 root);
        the window sum is linear, so ``SF_A - SF_B = box_sum(E_A - E_B)``: one box sum per pair,
        with ``k`` folded into its kernel.
        """
        groups = [f_a] if isinstance(f_a, Tensor) else list(f_a)
        if torch.is_grad_enabled() and any(t.requires_grad for t in groups) and fast_training(groups[0]):
            # training: the same formula with a hand-written backward (mfif.ops.activity.sf_comparison)
            return sf_comparison(f_a, f_b, self.sf_radius, self.sharpness, self.box_method)
        diff = neighbour_energy_difference(f_a, f_b)
        return box_sum(diff, self.sf_radius, self.box_method, scale=self.sharpness, activation="sigmoid")  # k = 1000

    def decide(self, act: Tensor, a: Tensor, b: Tensor) -> PairDecision:
        """Decision maps from the activity comparison and the gray sources (``a`` is the reference).

        Inference reuses ``act``'s memory (pass a tensor you no longer need).
        """
        logits = self.sharpness * self.decision(act, overwrite_input=True)  # Eq. 4
        initial = torch.sigmoid(logits)
        if not self.refine:
            return PairDecision(logits, initial, initial, None)
        guidance = initial * a + (1 - initial) * b  # released: GF guided by the Eq. 5 fusion of the initial map
        final, boundary = boundary_guided_refinement(
            initial, guidance, self.blur_sigma, self.blur_kernel, self.band_low, self.band_high,
            self.gf_radius, self.gf_eps, method=self.box_method)
        return PairDecision(logits, initial, final, boundary)

    def forward(self, a: Tensor, b: Tensor) -> PairDecision:
        """Decision maps of source ``a`` against ``b``.

        Shape:
            - a, b: :math:`(B, 1, H, W)` gray in [0, 1]
            - output: :class:`PairDecision` of :math:`(B, 1, H, W)` maps
        """
        if a.dim() != 4 or a.shape[1] != 1 or a.shape != b.shape:
            raise ValueError(f"GACNNet needs two gray [B, 1, H, W] sources of one shape, got "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")
        return self.decide(self.activity(*self.pair_features(a, b)), a, b)


def fuse_pair(final: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Eq. 5: ``F = p * A + (1 - p) * B`` (any channel count; ``final`` broadcasts)."""
    return final * a + (1 - final) * b
