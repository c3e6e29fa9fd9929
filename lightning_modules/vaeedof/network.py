"""VAEEDOF network (Fig. 1, Sec. 3): frozen TAESD VAE + a Fusion U-Net on 7 concatenated latents.

Pipeline: "Seven distinct images are encoded separately by the VAE encoder, then concatenated and
fed into the FM, which produces a fused latent representation. This fused representation is
then decoded by the frozen VAE decoder" (Sec. 3).

* Fewer than 7 sources are duplicated "to ensure that the FM receives the required input
  dimensions" (Sec. 3). The paper does not give the order; we fill the 7 slots **cyclically**:
  slot k holds source ``k mod N`` (N=2: 0,1,0,1,0,1,0; N=3: 0,1,2,0,1,2,0; N=7: 0..6). Every
  source appears, and the first N slots always hold the sources in their given order.
* Fusion U-Net: "three downsampling and upsampling blocks. Each block is fundamentally a
  residual block, and the middle blocks are further enhanced with an attention layer" (Sec. 3).
  Unstated, chosen here: widths (default 128, 256, 256), GroupNorm + SiLU pre-activation
  residual blocks, every down block halves the latent (so the U-Net's factor is 8 and the
  whole model's 64 px), attention in the middle (second) down and up block and in the bottleneck
  (``attention_levels`` / ``mid_attention`` cover both readings of "middle blocks").
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.vaeedof.taesd import TinyVAE

MAX_SOURCES = 7  # Sec. 3: the FM fuses "up to seven images simultaneously"
UNET_LEVELS = 3  # Sec. 3: "three downsampling and upsampling blocks"
UNET_DOWNSCALE = 2**UNET_LEVELS


def slot_order(n: int, slots: int = MAX_SOURCES) -> list[int]:
    """Which source fills each of the ``slots`` FM inputs: cyclic duplication (module docstring)."""
    if not 1 <= n <= slots:
        raise ValueError(f"VAEEDOF fuses 1..{slots} sources (Sec. 3), got {n}")
    return [k % n for k in range(slots)]


def expand_to_slots(latents: Tensor, slots: int = MAX_SOURCES) -> Tensor:
    """Duplicate source latents cyclically to fill the FM's ``slots`` inputs (Sec. 3).

    Shape:
        - latents: :math:`(B, N, C, h, w)`, :math:`N \\le` slots
        - output: :math:`(B, slots, C, h, w)`
    """
    idx = torch.tensor(slot_order(latents.shape[1], slots), device=latents.device)
    return latents.index_select(1, idx)


def _groups(c: int, groups: int) -> int:
    return math.gcd(c, groups)


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(silu(gn(conv(silu(gn(x))))))`` (1x1 skip if widths differ).

    Shape:
        - x: :math:`(B, C_{in}, h, w)`
        - output: :math:`(B, C_{out}, h, w)`
    """

    def __init__(self, c_in: int, c_out: int, groups: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(_groups(c_in, groups), c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.GroupNorm(_groups(c_out, groups), c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over all positions, residual: ``x + proj(attn(gn(x)))``.

    Shape:
        - x: :math:`(B, C, h, w)`
        - output: :math:`(B, C, h, w)`
    """

    def __init__(self, c: int, heads: int = 4, groups: int = 32):
        super().__init__()
        if c % heads:
            raise ValueError(f"attention width {c} is not divisible by attention_heads={heads}")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(c, groups), c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        y = F.scaled_dot_product_attention(q, k, v)  # [b, heads, hw, c/heads]
        return x + self.proj(y.transpose(-1, -2).reshape(b, c, h, w))


class FusionUNet(nn.Module):
    """The Fusion Module: 7 concatenated source latents -> one fused latent (Sec. 3, Fig. 1).

    Args:
        latent_channels: channels of one latent (16, SD3 TAESD).
        slots: number of concatenated inputs (7, Sec. 3).
        channels: width of the three levels (not given in the paper).
        attention_levels: levels (0..2) whose down and up blocks get self-attention.
        mid_attention: self-attention in the bottleneck between two residual blocks.
        heads: attention heads.
        norm_groups: GroupNorm groups (reduced to a divisor of the width).
        residual_mean: add the mean of the slot latents to the output (predict a correction).

    Shape:
        - z: :math:`(B, slots, latent, h, w)`, h and w multiples of 8
        - output: :math:`(B, latent, h, w)`
    """

    def __init__(self, latent_channels: int = 16, slots: int = MAX_SOURCES, channels: Sequence[int] = (128, 256, 256),
                 attention_levels: Sequence[int] = (1,), mid_attention: bool = True, heads: int = 4,
                 norm_groups: int = 32, residual_mean: bool = False):
        super().__init__()
        if len(channels) != UNET_LEVELS:
            raise ValueError(f"unet_channels needs {UNET_LEVELS} widths (Sec. 3: three levels), got {list(channels)}")
        if any(not 0 <= a < UNET_LEVELS for a in attention_levels):
            raise ValueError(f"attention_levels must be in 0..{UNET_LEVELS - 1}, got {list(attention_levels)}")
        self.slots, self.latent_channels, self.residual_mean = slots, latent_channels, residual_mean

        def attn(c: int, on: bool) -> nn.Module:
            return SelfAttention2d(c, heads, norm_groups) if on else nn.Identity()

        self.stem = nn.Conv2d(slots * latent_channels, channels[0], 3, padding=1)
        self.down_blocks, self.down_attn, self.downsamplers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c_prev = channels[0]
        for i, c in enumerate(channels):
            self.down_blocks.append(ResBlock(c_prev, c, norm_groups))
            self.down_attn.append(attn(c, i in attention_levels))
            self.downsamplers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
            c_prev = c
        self.mid = nn.Sequential(ResBlock(c_prev, c_prev, norm_groups), attn(c_prev, mid_attention),
                                 ResBlock(c_prev, c_prev, norm_groups))
        self.upsamplers, self.up_blocks, self.up_attn = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(UNET_LEVELS)):
            c = channels[i]
            self.upsamplers.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                 nn.Conv2d(c_prev, c_prev, 3, padding=1)))
            self.up_blocks.append(ResBlock(c_prev + c, c, norm_groups))
            self.up_attn.append(attn(c, i in attention_levels))
            c_prev = c
        self.head = nn.Sequential(nn.GroupNorm(_groups(c_prev, norm_groups), c_prev), nn.SiLU(),
                                  nn.Conv2d(c_prev, latent_channels, 3, padding=1))

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 5 or z.shape[1] != self.slots or z.shape[2] != self.latent_channels:
            raise ValueError(f"FusionUNet expects [B, {self.slots}, {self.latent_channels}, h, w], got {tuple(z.shape)}")
        if z.shape[-2] % UNET_DOWNSCALE or z.shape[-1] % UNET_DOWNSCALE:
            raise ValueError(f"FusionUNet needs latent h, w multiples of {UNET_DOWNSCALE}, got {tuple(z.shape[-2:])}")
        x = self.stem(z.flatten(1, 2))  # Sec. 3: the latents are concatenated along channels
        skips = []
        for block, att, down in zip(self.down_blocks, self.down_attn, self.downsamplers):
            x = att(block(x))
            skips.append(x)
            x = down(x)
        x = self.mid(x)
        for up, block, att in zip(self.upsamplers, self.up_blocks, self.up_attn):
            x = att(block(torch.cat([up(x), skips.pop()], 1)))
        out = self.head(x)
        return out + z.mean(1) if self.residual_mean else out


class VAEEDOFNet(nn.Module):
    """Frozen VAE + Fusion U-Net (Fig. 1). The VAE's parameters never require gradients.

    Args:
        vae: the TAESD autoencoder (weights loaded by the caller).
        unet: the Fusion Module.

    Shape:
        - sources: :math:`(B, N, 3, H, W)` in [0, 1], :math:`2 \\le N \\le 7`, H, W multiples of 64
        - output of :meth:`forward`: fused image :math:`(B, 3, H, W)` and fused latent
          :math:`(B, 16, H/8, W/8)`
    """

    def __init__(self, vae: TinyVAE, unet: FusionUNet):
        super().__init__()
        self.vae, self.unet = vae, unet
        self.vae.requires_grad_(False)  # Fig. 1: "VAE is pretrained and frozen during the training"

    def encode(self, images: Tensor) -> Tensor:
        """Encode images ``[B, N, 3, H, W]`` separately (Sec. 3) -> ``[B, N, c, h, w]``; no autograd."""
        with torch.no_grad():
            z = self.vae.encode(images.flatten(0, 1))
        return z.unflatten(0, images.shape[:2])

    def fuse_latents(self, source_latents: Tensor) -> Tensor:
        """``[B, N, c, h, w]`` -> fused latent ``[B, c, h, w]`` (sources duplicated to 7 slots)."""
        return self.unet(expand_to_slots(source_latents, self.unet.slots))

    def forward(self, sources: Tensor) -> tuple[Tensor, Tensor]:
        z = self.fuse_latents(self.encode(sources))
        return self.vae.decode(z), z

    def train(self, mode: bool = True) -> "VAEEDOFNet":
        super().train(mode)
        self.vae.eval()  # frozen: always in inference mode
        return self
