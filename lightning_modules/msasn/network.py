"""MSASN network (Zhai et al., Sec. 3, Fig. 1): GCB -> Siamese encoder (LAM, residual, DFEB) -> DCA decoder -> map.

Data flow for one pair of gray sources ``A``, ``C`` (Fig. 1)::

    A, C --GCB (Sec. 3.3, shared)--> A', C'
         --Siamese encoder (Sec. 3.1, shared weights; CBR + LAM + residual block per stage,
           max-pooling between stages, DFEB (Sec. 3.4) at the deepest stage)-->
           per-scale features of A' and C', concatenated per scale
         --decoder: DCA blocks (Sec. 3.2) with bilinear upsampling and skip concatenation-->
         --3x3 conv (Sec. 3.5.1)--> decision logits; sigmoid gives the decision map d

Choices the paper leaves open (Fig. 1 is not in the text), all ours:

* three encoder stages of widths ``(w, 2w, 4w)`` with two 2x2 max-poolings; the decoder
  upsamples bilinearly to the exact skip size, so any ``H, W >= 4`` works without padding;
* the Siamese features of the two sources are concatenated channel-wise at every scale;
* LAM (the text names it only) is a *local* channel attention: the CBAM channel attention
  of Eq. 1 with average/max pooling over non-overlapping ``window x window`` windows instead of
  the whole image. ``window`` is given in input-image pixels (divided by 2 per pooling), and it
  is our reading of the "window size" of Table 6 (4, 8, 16, 32; best 16);
* GCB is DnCNN [64] with residual learning (clean = x - predicted noise) and a zero-initialised
  last layer, so it starts as the identity. Sec. 3.3 trains it to reconstruct the ground truth
  (MSE/SSIM); :mod:`lightning_modules.msasn.loss` adds that objective (``model.gcb_loss``) to the
  end-to-end loss;
* without the Siamese structure (Table 7 rows 1-2) the encoder is one stream over the stacked
  pair ``[A, C]`` with doubled widths (the plain encoder-decoder baseline), so the decoder is
  unchanged; without DCA the decoder blocks are plain Conv-BN-ReLU.

Inference fast path (eval mode, no gradient, CPU; :func:`mfif.ops.conv.fast_paths` turns it off):
the same layers on NHWC activations, BatchNorm folded into the convolutions
(:func:`mfif.ops.conv.fold_batchnorm`), ReLU and residual additions fused into them
(:func:`mfif.ops.conv.conv_module`), the ``C -> 1`` convolutions split in two
(:func:`mfif.ops.conv.single_output_conv2d`). Same outputs up to float rounding
(``tests/test_fast_paths.py``); speed in ``experiments/benchmarks/bench_inference.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mfif.ops.conv import conv_module, fast_inference, fold_batchnorm, single_output_conv2d


@dataclass(frozen=True)
class Components:
    """Which modules are in the network (Table 7 rows are presets of these)."""

    dca: bool = True  # Sec. 3.2 decoder blocks
    siamese: bool = True  # Sec. 3.1 shared-weight branches
    lam: bool = True  # Sec. 3.1 local attention module (part of the Siamese branches)
    residual: bool = True  # Sec. 3.1 residual blocks in the encoder
    dfeb: bool = True  # Sec. 3.4
    gcb: bool = True  # Sec. 3.3


# Table 7 rows (Sec. 4.4.2). "Siamese" brings the LAM with it ("a LAM block is combined with
# residual blocks to construct the Siamese network", Sec. 1); the "residual" row keeps the
# Siamese branches of the row above (the rows are cumulative; the last one is the full model).
VARIANTS = {
    "baseline": Components(dca=False, siamese=False, lam=False, residual=False, dfeb=False, gcb=False),
    "dca": Components(dca=True, siamese=False, lam=False, residual=False, dfeb=False, gcb=False),
    "dca_siamese": Components(dca=True, siamese=True, lam=True, residual=False, dfeb=False, gcb=False),
    "dca_residual_dfeb": Components(dca=True, siamese=True, lam=True, residual=True, dfeb=True, gcb=False),
    "full": Components(),
    # Fig. 15 (Sec. 4.4.2): the full network minus one part - (a) DCA, (b) the Siamese structure
    # (one stream over the stacked pair; the LAM goes with it, see above), (c) DFEB; (d) "minus
    # GCB" is dca_residual_dfeb and (e) is full.
    "no_dca": Components(dca=False),
    "no_siamese": Components(siamese=False, lam=False),
    "no_dfeb": Components(dfeb=False),
}


def _pad_mode(x: Tensor, pad: int) -> str:
    """Reflect padding (DEA-Net's CGA) where the map is large enough, replicate otherwise."""
    return "reflect" if min(x.shape[-2:]) > pad else "replicate"


class ConvBNReLU(nn.Sequential):
    """Conv-BatchNorm-ReLU unit, the CBR of Sec. 3.1. Shape: :math:`(B, C_{in}, H, W) \\to (B, C_{out}, H, W)`."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, dilation: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        if fast_inference(self, x):  # BatchNorm folded, ReLU fused
            w, b = fold_batchnorm(self[0], self[1])
            return conv_module(self[0], x, "relu", weight=w, bias=b)
        return super().forward(x)


class GenCleanBlock(nn.Module):
    """GCB (Sec. 3.3): DnCNN [64] with ``depth`` 3x3 convs (padding 1), ReLU after each but the last.

    The last conv maps back to the input channels. With ``residual`` (DnCNN's residual learning)
    the output is ``x - net(x)``; the last conv starts at zero so the block starts as the identity.

    Shape:
        - x: :math:`(B, C, H, W)`
        - output: :math:`(B, C, H, W)`
    """

    def __init__(self, channels: int = 1, width: int = 64, depth: int = 17, residual: bool = True):
        super().__init__()
        if depth < 2:
            raise ValueError(f"GCB depth must be >= 2, got {depth}")
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        last = nn.Conv2d(width, channels, 3, padding=1)
        if residual:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.body = nn.Sequential(*layers, last)
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        if fast_inference(self, x):  # every ReLU fused into its convolution
            convs = list(self.body)[::2]
            y = x
            for conv in convs[:-1]:
                y = conv_module(conv, y, "relu")
            last = convs[-1]
            y = single_output_conv2d(y, last.weight, last.bias) if last.out_channels == 1 else conv_module(last, y)
            return torch.sub(x, y, out=y) if self.residual else y
        return x - self.body(x) if self.residual else self.body(x)


def _hidden(channels: int, reduction: int) -> int:
    # CBAM's reduction r; at least 4 hidden units so narrow layers keep a real bottleneck MLP.
    return max(4, channels // reduction)


class LocalAttention(nn.Module):
    """LAM: channel attention (Eq. 1 form) pooled over local ``window x window`` windows.

    ``w = sigmoid(MLP(avgpool_win(x)) + MLP(maxpool_win(x)))`` is computed per window, spread
    back over the window's pixels and multiplies ``x``. Partial windows at the right/bottom edge
    pool only their in-image pixels. A window at least as large as the map is global (SE/CBAM).

    Shape:
        - x: :math:`(B, C, H, W)`
        - output: :math:`(B, C, H, W)`
    """

    def __init__(self, channels: int, window: int, reduction: int = 16):
        super().__init__()
        if window < 1:
            raise ValueError(f"LAM window must be >= 1, got {window}")
        hidden = _hidden(channels, reduction)
        self.window = window
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        k = (min(self.window, h), min(self.window, w))  # a window never exceeds the map
        avg = F.avg_pool2d(x, k, k, ceil_mode=True)
        mx = F.max_pool2d(x, k, k, ceil_mode=True)
        weight = torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        weight = weight.repeat_interleave(k[0], -2).repeat_interleave(k[1], -1)[..., :h, :w]
        return x * weight


class ResidualBlock(nn.Module):
    """Residual block [63]: ``relu(x + BN(conv(relu(BN(conv(x))))))``. Shape: :math:`(B, C, H, W)`."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            ConvBNReLU(channels, channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        if fast_inference(self, x):  # BatchNorm folded; skip addition and ReLU fused into the 2nd conv
            w, b = fold_batchnorm(self.body[1], self.body[2])
            return conv_module(self.body[1], self.body[0](x), "relu", residual=x, weight=w, bias=b)
        return F.relu(x + self.body(x))


class ContentGuidedAttention(nn.Module):
    """CGA (Sec. 3.4, Eqs. 5-7; DEA-Net [65]): one spatial importance map per channel.

    ``W_c = C1x1(ReLU(C1x1(GAP(X))))`` with a 16-unit bottleneck (Sec. 3.4: "reduce the number of
    channels to a constant value of 16"), ``W_s = C7x7([mean_c(X), max_c(X)])`` (Eq. 5, reflect
    padding as DEA-Net), ``W_coa = W_c + W_s`` (Eq. 6, broadcast), then
    ``W = sigmoid(GC7x7(CS([X, W_coa])))`` (Eq. 7): the channel shuffle interleaves each channel of
    X with its coarse map and the grouped conv (groups = C) refines every pair into one map.
    The sigmoid is applied once (one fusion variant of the released DEA-Net code,
    cecret3350/DEA-Net, applies it twice; we don't).

    Shape:
        - x: :math:`(B, C, H, W)`
        - output: :math:`(B, C, H, W)` in (0, 1)
    """

    def __init__(self, channels: int, hidden: int = 16):
        super().__init__()
        self.channel = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, 7)
        self.refine = nn.Conv2d(2 * channels, channels, 7, groups=channels)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        w_c = self.channel(x.mean((2, 3), keepdim=True))  # Eq. 5, GAP over space
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        w_s = self.spatial(F.pad(pooled, (3, 3, 3, 3), mode=_pad_mode(x, 3)))  # Eq. 5
        w_coa = w_c + w_s  # Eq. 6
        shuffled = torch.stack([x, w_coa], 2).reshape(b, 2 * c, h, w)  # CS: x0, w0, x1, w1, ...
        return torch.sigmoid(self.refine(F.pad(shuffled, (3, 3, 3, 3), mode=_pad_mode(x, 3))))  # Eq. 7


class DeepFeatureExtraction(nn.Module):
    """DFEB (Sec. 3.4, Fig. 4): feature extraction block + CGA, residual to the input.

    Feature extraction block: ``f1 = ReLU(conv(x)) + x``, ``f2 = conv(f1)``, ``y = conv1x1([f1, f2])``
    ("two convolutional layers ... residual connections ... concatenated ... a convolutional layer
    is then used to reduce the dimensionality"); output ``y * CGA(y) + x`` (DEA block of DEA-Net,
    cecret3350/DEA-Net).

    Shape:
        - x: :math:`(B, C, H, W)`
        - output: :math:`(B, C, H, W)`
    """

    def __init__(self, channels: int, cga_hidden: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.reduce = nn.Conv2d(2 * channels, channels, 1)
        self.cga = ContentGuidedAttention(channels, cga_hidden)

    def forward(self, x: Tensor) -> Tensor:
        if fast_inference(self, x):  # ReLU fused; the in-place updates reuse fresh activations
            f1 = conv_module(self.conv1, x, "relu").add_(x)
            y = self.reduce(torch.cat([f1, self.conv2(f1)], 1))
            return torch.addcmul(x, y, self.cga(y), out=y)
        f1 = F.relu(self.conv1(x)) + x
        f2 = self.conv2(f1)
        y = self.reduce(torch.cat([f1, f2], 1))
        return y * self.cga(y) + x


class DilatedConvAttention(nn.Module):
    """DCA (Sec. 3.2, Fig. 2, Eqs. 1-4).

    ``m = ReLU(conv1x1([conv_d1(x), conv_d2(x), conv_d4(x)]))`` (dilation rates 1, 2, 4),
    ``F' = Mc(m) * m`` with ``Mc = sigmoid(MLP(avg) + MLP(max))`` (Eqs. 1-2, shared MLP),
    ``F'' = Ms(F') * F'`` with ``Ms = sigmoid(conv7x7([mean_c, max_c]))`` (Eqs. 3-4), and the
    residual path ``r = conv1x1(x)`` concatenated with ``F''`` and reduced by a 1x1 CBR.

    Shape:
        - x: :math:`(B, C_{in}, H, W)`
        - output: :math:`(B, C_{out}, H, W)`
    """

    def __init__(self, cin: int, cout: int, rates: Sequence[int] = (1, 2, 4), reduction: int = 16):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(cin, cout, 3, padding=r, dilation=r) for r in rates)
        self.merge = nn.Conv2d(len(rates) * cout, cout, 1)
        hidden = _hidden(cout, reduction)
        self.mlp = nn.Sequential(nn.Conv2d(cout, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, cout, 1))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)
        self.residual = nn.Conv2d(cin, cout, 1)
        self.fuse = ConvBNReLU(2 * cout, cout, kernel=1)

    def forward(self, x: Tensor) -> Tensor:
        fast = fast_inference(self, x)  # ReLU fused, 2 -> 1 conv split, gates applied in place
        merge = (lambda t: conv_module(self.merge, t, "relu")) if fast else (lambda t: F.relu(self.merge(t)))
        m = merge(torch.cat([b(x) for b in self.branches], 1))
        mc = torch.sigmoid(self.mlp(m.mean((2, 3), keepdim=True)) + self.mlp(m.amax((2, 3), keepdim=True)))  # Eq. 1
        f1 = m.mul_(mc) if fast else mc * m  # Eq. 2
        desc = torch.cat([f1.mean(1, keepdim=True), f1.amax(1, keepdim=True)], 1)
        if fast:  # Eqs. 3-4
            f2 = f1.mul_(single_output_conv2d(desc, self.spatial.weight, self.spatial.bias, activation="sigmoid"))
        else:
            f2 = torch.sigmoid(self.spatial(desc)) * f1  # Eqs. 3-4
        return self.fuse(torch.cat([f2, self.residual(x)], 1))


class Encoder(nn.Module):
    """One encoder stream: per stage CBR [+ LAM] [+ residual block], 2x2 max-pool between stages, DFEB last.

    Shape:
        - x: :math:`(B, C_{in}, H, W)`
        - output: list of stage features :math:`(B, w_s, H / 2^s, W / 2^s)` (floor division)
    """

    def __init__(self, cin: int, widths: Sequence[int], comp: Components, window: int,
                 reduction: int = 16, cga_hidden: int = 16):
        super().__init__()
        self.stages = nn.ModuleList()
        prev = cin
        for s, w in enumerate(widths):
            layers: list[nn.Module] = [ConvBNReLU(prev, w)]
            if comp.lam:
                layers.append(LocalAttention(w, max(1, window // 2**s), reduction))
            if comp.residual:
                layers.append(ResidualBlock(w))
            if comp.dfeb and s == len(widths) - 1:
                layers.append(DeepFeatureExtraction(w, cga_hidden))
            self.stages.append(nn.Sequential(*layers))
            prev = w

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for s, stage in enumerate(self.stages):
            x = stage(x if s == 0 else F.max_pool2d(x, 2))
            feats.append(x)
        return feats


class MSASNNet(nn.Module):
    """Decision-map network of MSASN for one pair of gray sources.

    Args:
        comp: which modules are present (Table 7).
        width: encoder width of the first stage (per Siamese branch); stages use 1x, 2x, 4x.
        window: LAM window in input pixels (Table 6).
        gcb_width, gcb_depth, gcb_residual: GCB hyper-parameters (Sec. 3.3).
        dca_rates: dilation rates of DCA (Sec. 3.2).
        reduction: channel reduction of the LAM and DCA MLPs (CBAM's 16).
        cga_hidden: CGA bottleneck width (Sec. 3.4: 16).
        in_channels: channels of one source (1: the gray working space).

    Shape:
        - a, c: :math:`(B, C, H, W)` with H, W >= 4
        - output: decision logits :math:`(B, 1, H, W)` (sigmoid -> map d, 1 where ``a`` is in focus)
    """

    def __init__(self, comp: Components = Components(), width: int = 32, window: int = 16,
                 gcb_width: int = 64, gcb_depth: int = 17, gcb_residual: bool = True,
                 dca_rates: Sequence[int] = (1, 2, 4), reduction: int = 16, cga_hidden: int = 16,
                 in_channels: int = 1):
        super().__init__()
        self.comp = comp
        self.gcb = GenCleanBlock(in_channels, gcb_width, gcb_depth, gcb_residual) if comp.gcb else nn.Identity()
        widths = [width, 2 * width, 4 * width]
        if comp.siamese:
            self.encoder = Encoder(in_channels, widths, comp, window, reduction, cga_hidden)
        else:  # one stream over the stacked pair, doubled widths: same decoder input channels
            self.encoder = Encoder(2 * in_channels, [2 * w for w in widths], comp, window, reduction, cga_hidden)

        def block(cin: int, cout: int) -> nn.Module:
            return DilatedConvAttention(cin, cout, dca_rates, reduction) if comp.dca else ConvBNReLU(cin, cout)

        self.dec2 = block(2 * widths[2], widths[2])
        self.dec1 = block(widths[2] + 2 * widths[1], widths[1])
        self.dec0 = block(widths[1] + 2 * widths[0], widths[0])
        self.head = nn.Conv2d(widths[0], 1, 3, padding=1)  # Sec. 3.5.1: 3x3 conv (+ sigmoid outside)

    def encode_pair(self, a: Tensor, c: Tensor) -> list[Tensor]:
        """Per-scale pair features ``[f(a), f(c)]`` (Siamese) or ``f([a, c])`` (single stream)."""
        if self.comp.siamese:
            feats = self.encoder(torch.cat([a, c], 0))  # shared weights: one pass over both sources
            return [torch.cat(f.chunk(2, 0), 1) for f in feats]
        return self.encoder(torch.cat([a, c], 1))

    def forward(self, a: Tensor, c: Tensor, return_clean: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Decision logits; with ``return_clean`` also the GCB outputs ``[2B, C, H, W]`` (a' then c')."""
        if a.dim() != 4 or a.shape != c.shape:
            raise ValueError(f"a and c must be [B, C, H, W] of equal shape, got {tuple(a.shape)} and {tuple(c.shape)}")
        if min(a.shape[-2:]) < 4:
            raise ValueError(f"MSASN needs H, W >= 4 (two 2x2 poolings), got {tuple(a.shape[-2:])}")
        pair = torch.cat([a, c], 0)
        fast = fast_inference(self, pair)
        if fast:  # NHWC activations from here on (module doc)
            pair = pair.contiguous(memory_format=torch.channels_last)
        clean = self.gcb(pair)  # GCB applied to each source (Sec. 3.3)
        a, c = clean.chunk(2, 0)
        p0, p1, p2 = self.encode_pair(a, c)
        x = self.dec2(p2)
        x = self.dec1(torch.cat([F.interpolate(x, size=p1.shape[-2:], mode="bilinear", align_corners=False), p1], 1))
        x = self.dec0(torch.cat([F.interpolate(x, size=p0.shape[-2:], mode="bilinear", align_corners=False), p0], 1))
        logits = single_output_conv2d(x, self.head.weight, self.head.bias) if fast else self.head(x)
        if fast:  # callers get the usual layout
            logits, clean = logits.contiguous(), clean.contiguous()
        return (logits, clean) if return_clean else logits
