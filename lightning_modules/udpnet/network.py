"""UDPNet networks: mask predictor F (Sec. III-B) and deep-unrolling image fuser G (Sec. III-C).

Reading order:

1. :class:`EncoderDecoder` - the shared building block. Sec. III-B/C only say "encoder-decoder
   convolutional structure with skip connection blocks"; ours is a two-level U-Net (3x3 convs,
   ReLU, residual blocks at every scale, stride-2 downsampling, nearest upsampling to the skip's
   exact size so any H x W works, concatenated skips), optionally with a non-local block [70] in
   the bottleneck. Nearest, not bilinear: bilinear's CUDA backward has no deterministic kernel
   and raises under ``trainer.deterministic=true``.
2. :class:`MaskPredictor` F: ``[0,1]^{HxW} -> [0,1]^{HxW}``, one initial mask in, refined mask
   out (Sigmoid). Applied to every source's mask with shared weights.
3. :class:`UnrolledFuser` G: T stages of the proximal-gradient iteration Eq. 9; each stage has its
   own :class:`MaskEstimator` (P_psi, Sigmoid) and :class:`ImageEstimator` (P_phi, non-local
   bottleneck) and learnable step sizes ``rho_M(t)``, ``rho_A(t)`` (nn.Parameters).
4. :class:`OneShotFuser`: the "w/o unrolling" ablation (Sec. IV-C (b)): one CNN of similar size
   with the image estimator's structure.

All fusers handle any number K >= 2 of sources (Remark 1): per-source networks share weights and
only the energy h (Eq. 12) couples the sources.

Inference fast path (eval mode, no gradient, CPU; :func:`mfif.ops.conv.fast_paths` turns it off):
:class:`EncoderDecoder` runs on NHWC activations with every ReLU, and the residual additions of
:class:`ResBlock`, fused into the convolutions (:func:`mfif.ops.conv.conv_module`), and the
non-local attention on dense ``q, k, v`` (PyTorch's fused CPU attention kernel). Same outputs up
to float rounding (``tests/test_fast_paths.py``); speed in ``experiments/benchmarks/bench_inference.py``.
"""
from __future__ import annotations

from typing import List, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.udpnet.ops import compose, grad_h_image, grad_h_masks
from mfif.ops.conv import conv_module, fast_inference


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class ResBlock(nn.Module):
    """Skip-connection block ``x + conv(relu(conv(x)))`` followed by ReLU.

    Shape:
        - x: :math:`(B, C, H, W)` -> output: same shape.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.conv2 = _conv(channels, channels), _conv(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        if fast_inference(self, x):  # ReLUs and the skip addition fused into the convolutions
            return conv_module(self.conv2, conv_module(self.conv1, x, "relu"), "relu", residual=x)
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al. [70]) with a residual connection.

    ``z = x + W_z softmax(theta(x)^T phi(x)) g(x)`` with 1x1 convs, ``C/2`` inner channels and
    the subsampling trick of [70] (phi and g max-pooled by 2). ``W_z`` starts at zero so the block
    starts as identity (deviation: [70] puts a BN after ``W_z`` and zero-inits its scale; our
    networks have no normalisation layers, so ``W_z`` itself is zero-initialised).
    Attention runs through ``F.scaled_dot_product_attention`` (``scale=1``: [70]'s embedded
    Gaussian has no 1/sqrt(d)), which keeps memory linear in H*W on large images.

    Shape:
        - x: :math:`(B, C, H, W)` -> output: same shape.
    """

    def __init__(self, channels: int):
        super().__init__()
        inner = max(1, channels // 2)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.out = nn.Conv2d(inner, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2)  # [B, HW, C']
        kv_in = F.max_pool2d(x, 2) if min(h, w) >= 2 else x
        k = self.phi(kv_in).flatten(2).transpose(1, 2)
        v = self.g(kv_in).flatten(2).transpose(1, 2)
        if fast_inference(self, x):  # dense q, k, v: PyTorch's fused (flash) CPU kernel, ~6x the math path
            q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        y = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), scale=1.0)
        y = y.squeeze(1).transpose(1, 2).reshape(b, -1, h, w)
        return x + self.out(y)


class EncoderDecoder(nn.Module):
    """Two-level U-Net with residual blocks and skip connections (widths ``w, 2w, 4w``).

    Args:
        in_channels: input channels.
        out_channels: output channels (raw, no activation).
        width: channels at full resolution.
        non_local: put a :class:`NonLocalBlock` in the bottleneck (the image estimator, Sec. III-C).

    Shape:
        - x: :math:`(B, C_{in}, H, W)`, any H, W >= 1
        - output: :math:`(B, C_{out}, H, W)`
    """

    def __init__(self, in_channels: int, out_channels: int, width: int, non_local: bool = False):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        w = width
        self.head = _conv(in_channels, w)
        self.enc1 = ResBlock(w)
        self.down1 = _conv(w, 2 * w, stride=2)
        self.enc2 = ResBlock(2 * w)
        self.down2 = _conv(2 * w, 4 * w, stride=2)
        self.bottleneck = nn.Sequential(ResBlock(4 * w), NonLocalBlock(4 * w) if non_local else nn.Identity())
        self.merge2 = _conv(4 * w + 2 * w, 2 * w)
        self.dec2 = ResBlock(2 * w)
        self.merge1 = _conv(2 * w + w, w)
        self.dec1 = ResBlock(w)
        self.tail = _conv(w, out_channels)

    @staticmethod
    def _up_cat(x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return torch.cat([x, skip], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        fast = fast_inference(self, x)
        if fast:  # NHWC activations, ReLU fused into each convolution (module doc)
            x = x.contiguous(memory_format=torch.channels_last)

        def conv_relu(conv: nn.Conv2d, t: Tensor) -> Tensor:
            return conv_module(conv, t, "relu") if fast else F.relu(conv(t))

        s1 = self.enc1(conv_relu(self.head, x))
        s2 = self.enc2(conv_relu(self.down1, s1))
        z = self.bottleneck(conv_relu(self.down2, s2))
        z = self.dec2(conv_relu(self.merge2, self._up_cat(z, s2)))
        z = self.dec1(conv_relu(self.merge1, self._up_cat(z, s1)))
        return self.tail(z).contiguous() if fast else self.tail(z)


def _per_source(net: nn.Module, x: Tensor) -> Tensor:
    """Apply ``net`` to every source with shared weights: ``[B, K, C, H, W] -> [B, K, C', H, W]``."""
    b, k = x.shape[:2]
    y = net(x.reshape(b * k, *x.shape[2:]))
    return y.reshape(b, k, *y.shape[1:])


class MaskPredictor(nn.Module):
    """Mask predictor F (Sec. III-B): refines one initial mask; Sigmoid output in [0, 1].

    Shape:
        - masks: :math:`(B, K, 1, H, W)` (each source's mask refined independently, shared weights)
        - output: :math:`(B, K, 1, H, W)`
    """

    def __init__(self, width: int = 16):
        super().__init__()
        self.net = EncoderDecoder(1, 1, width)

    def forward(self, masks: Tensor) -> Tensor:
        return torch.sigmoid(_per_source(self.net, masks))


class MaskEstimator(nn.Module):
    """Learned proximal operator P_psi of one stage (Sec. III-C): encoder-decoder + Sigmoid.

    ``M_k = sigmoid(net([Z_k, S_k]) + g * (Z_k - 1/2))`` with a learnable gain ``g``. The net's last
    conv starts at zero, so at initialisation P_psi is a soft projection of ``Z`` onto [0, 1] (the
    prox of the box constraint of Eq. 2) and G starts as the plain proximal-gradient algorithm it
    unrolls. (Ours: the paper gives no initialisation; with a plain Sigmoid G's masks would start
    at 1/2 everywhere and ignore the gradient step.)

    Shape:
        - z, sources: :math:`(B, K, 1, H, W)` -> output: :math:`(B, K, 1, H, W)` in (0, 1)
    """

    def __init__(self, width: int, skip_gain: float = 4.0):
        super().__init__()
        self.net = EncoderDecoder(2, 1, width)
        nn.init.zeros_(self.net.tail.weight)
        nn.init.zeros_(self.net.tail.bias)
        self.gain = nn.Parameter(torch.tensor(float(skip_gain)))

    def forward(self, z: Tensor, sources: Tensor) -> Tensor:
        logits = _per_source(self.net, torch.cat([z, sources], dim=2)) + self.gain * (z - 0.5)
        return torch.sigmoid(logits)


class ImageEstimator(nn.Module):
    """Learned proximal operator P_phi of one stage (Sec. III-C): ``A = Z_A + net(Z_A)``.

    The net is an encoder-decoder with a non-local block in its bottleneck (Sec. III-C). Its last
    conv starts at zero, so P_phi starts as the identity (the prox of phi = 0).

    Shape:
        - z: :math:`(B, 1, H, W)` -> output: :math:`(B, 1, H, W)`
    """

    def __init__(self, width: int):
        super().__init__()
        self.net = EncoderDecoder(1, 1, width, non_local=True)
        nn.init.zeros_(self.net.tail.weight)
        nn.init.zeros_(self.net.tail.bias)

    def forward(self, z: Tensor) -> Tensor:
        return z + self.net(z)


class FuserOutput(NamedTuple):
    """Output of G: the stage masks ``M^(1..T)`` (each ``[B, K, 1, H, W]``) and the image ``A^(T)``."""

    stage_masks: List[Tensor]
    image: Tensor


class UnrolledFuser(nn.Module):
    """Image fuser G by deep unrolling of the proximal gradient method (Eq. 9, Sec. III-C).

    Stage t = 0..T-1::

        M^(t+1) = P_psi^t( M^(t) - rho_M(t) grad_M h(A^(t), M^(t)) )      (Eq. 10)
        A^(t+1) = P_phi^t( A^(t) - rho_A(t) grad_A h(A^(t), M^(t+1)) )    (Eq. 11)

    Choices the paper leaves open (documented deviations):

    * start point ``M^(0) = M~`` (Eq. 3 initial masks, passed in: G sees only the sources at test
      time, Sec. III-A, and Eq. 3 is computed from them) and ``A^(0) = mean_k S_k``. (Starting at
      ``A^(0) = sum_k M~_k S_k`` would make ``grad_M h`` vanish in stage 1 - M~ sums to 1 and the
      residual is 0 - so ``rho_M(0)`` would never receive a gradient.)
    * the mask estimator sees ``[Z_k, S_k]`` (the gradient-step output and the source), so it can
      align mask borders with image edges; both estimators start as the prox of the plain model
      (:class:`MaskEstimator`, :class:`ImageEstimator`);
    * each stage has its own estimator weights; K sources share the mask estimator's weights;
    * step sizes start at ``rho_M = 0.1``, ``rho_A = 0.25`` (inside the stable range ``1/L`` of h's
      gradients for lambda = 1, K = 2) and are unconstrained trainable parameters.

    Args:
        stages: T (Sec. IV: T = 3).
        width_mask: width of every mask estimator.
        width_image: width of every image estimator.
        lam: lambda of Eq. 7 (Sec. IV: 1).
        rho_m_init, rho_a_init: initial step sizes.
        mask_skip_gain: initial gain of the mask estimators' soft projection.

    Shape:
        - sources: :math:`(B, K, 1, H, W)`; init_masks: :math:`(B, K, 1, H, W)`
        - output: :class:`FuserOutput` with T masks :math:`(B, K, 1, H, W)` and image :math:`(B, 1, H, W)`
    """

    def __init__(self, stages: int = 3, width_mask: int = 9, width_image: int = 10, lam: float = 1.0,
                 rho_m_init: float = 0.1, rho_a_init: float = 0.25, mask_skip_gain: float = 4.0):
        super().__init__()
        if stages < 1:
            raise ValueError(f"stages (T) must be >= 1, got {stages}")
        self.lam = lam
        self.mask_estimators = nn.ModuleList(MaskEstimator(width_mask, mask_skip_gain) for _ in range(stages))
        self.image_estimators = nn.ModuleList(ImageEstimator(width_image) for _ in range(stages))
        self.rho_m = nn.Parameter(torch.full((stages,), float(rho_m_init)))  # rho_M^(t), Eq. 9
        self.rho_a = nn.Parameter(torch.full((stages,), float(rho_a_init)))  # rho_A^(t), Eq. 9

    @property
    def stages(self) -> int:
        return len(self.mask_estimators)

    def forward(self, sources: Tensor, init_masks: Tensor) -> FuserOutput:
        masks, image = init_masks, sources.mean(dim=1)
        stage_masks = []
        for t in range(self.stages):
            z_m = masks - self.rho_m[t] * grad_h_masks(image, masks, sources, self.lam)  # Eq. 10
            masks = self.mask_estimators[t](z_m, sources)
            z_a = image - self.rho_a[t] * grad_h_image(image, masks, sources, self.lam)  # Eq. 11
            image = self.image_estimators[t](z_a)
            stage_masks.append(masks)
        return FuserOutput(stage_masks, image)


class OneShotFuser(nn.Module):
    """"w/o unrolling" ablation (Sec. IV-C (b)): one CNN of similar size replacing G.

    Uses the image estimator's structure (:class:`EncoderDecoder` with a non-local bottleneck) on
    ``[S_k, M~_k]`` per source with shared weights and predicts a Sigmoid mask per source; the
    image is then ``sum_k M_k S_k`` (Eq. 1) so losses and inference stay the same as for G. Its
    single output counts as the last stage (t = T) in Eq. 13.

    Shape:
        - sources, init_masks: :math:`(B, K, 1, H, W)` -> :class:`FuserOutput` with one mask tensor.
    """

    def __init__(self, width: int = 23):
        super().__init__()
        self.net = EncoderDecoder(2, 1, width, non_local=True)

    def forward(self, sources: Tensor, init_masks: Tensor) -> FuserOutput:
        masks = torch.sigmoid(_per_source(self.net, torch.cat([sources, init_masks], dim=2)))
        return FuserOutput([masks], compose(masks, sources))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
