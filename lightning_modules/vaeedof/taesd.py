"""The frozen VAE of VAEEDOF: the TAESD tiny autoencoder, SD3 variant (Sec. 3, footnote 1).

VAEEDOF "selected a 16-channel VAE distilled from StableDiffusion3" (Sec. 3), i.e. TAESD's
``taesd3`` weights. Architecture facts (released code, madebyollin/taesd ``taesd.py``): images in [0, 1];
8x downsampling; 16 latent channels; every width 64; about 1.23 M parameters per half.

The encoder and decoder are :class:`torch.nn.Sequential` subclasses whose layer indices are
exactly those of the published ``taesd3_encoder.pth`` / ``taesd3_decoder.pth`` state dicts
(keys ``0.weight``, ``1.conv.0.weight``, ...), so those files load with ``strict=True`` and no
key mapping. The diffusers ``AutoencoderTiny`` layout is mapped in :mod:`.weights`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

LATENT_CHANNELS_SD3 = 16  # Sec. 3: "16-channel VAE distilled from StableDiffusion3"
TAESD_WIDTH = 64  # taesd.py: all widths 64 (the published weights need this)
DOWNSCALE = 8  # taesd.py: 8x downsampling (three stride-2 convolutions)
CLAMP_MAGNITUDE = 3.0  # taesd.py: the decoder first soft-clamps latents with tanh(x/3)*3
BLOCKS_PER_STAGE = 3  # taesd.py: 3 Blocks after each stride-2 conv / before each upsample


def conv3x3(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class TAEBlock(nn.Module):
    """TAESD residual block: ``relu(conv-relu-conv-relu-conv(x) + skip(x))``.

    ``skip`` is a 1x1 convolution without bias when the widths differ, else the identity
    (taesd.py). Attribute names (``conv``, ``skip``, ``fuse``) give the published key names.

    Shape:
        - x: :math:`(B, C_{in}, H, W)`
        - output: :math:`(B, C_{out}, H, W)`
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Sequential(conv3x3(c_in, c_out), nn.ReLU(), conv3x3(c_out, c_out), nn.ReLU(), conv3x3(c_out, c_out))
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


class LatentClamp(nn.Module):
    """Soft clamp of latents to (-3, 3): ``tanh(x / 3) * 3`` (first decoder layer, taesd.py)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / CLAMP_MAGNITUDE) * CLAMP_MAGNITUDE


class TAESDEncoder(nn.Sequential):
    """Image ``[0, 1]`` -> latent, 8x smaller (taesd.py layer order).

    Layers: conv 3->w, Block; then 3 x [conv w->w stride 2 (no bias), 3 x Block]; conv w->latent.

    Args:
        latent_channels: 16 for the SD3 variant (Sec. 3).
        width: 64 for the published weights; smaller widths only for tests.

    Shape:
        - x: :math:`(B, 3, H, W)`, H and W multiples of 8
        - output: :math:`(B, latent, H/8, W/8)`
    """

    def __init__(self, latent_channels: int = LATENT_CHANNELS_SD3, width: int = TAESD_WIDTH):
        layers: list[nn.Module] = [conv3x3(3, width), TAEBlock(width, width)]
        for _ in range(3):  # 3 stride-2 stages -> 8x
            layers.append(conv3x3(width, width, stride=2, bias=False))
            layers += [TAEBlock(width, width) for _ in range(BLOCKS_PER_STAGE)]
        layers.append(conv3x3(width, latent_channels))
        super().__init__(*layers)


class TAESDDecoder(nn.Sequential):
    """Latent -> image (not clamped; ~[0, 1]) (taesd.py layer order).

    Layers: clamp tanh(x/3)*3, conv latent->w, ReLU; 3 x [3 x Block, nearest upsample x2,
    conv w->w (no bias)]; Block; conv w->3.

    Shape:
        - z: :math:`(B, latent, h, w)`
        - output: :math:`(B, 3, 8h, 8w)`
    """

    def __init__(self, latent_channels: int = LATENT_CHANNELS_SD3, width: int = TAESD_WIDTH):
        layers: list[nn.Module] = [LatentClamp(), conv3x3(latent_channels, width), nn.ReLU()]
        for _ in range(3):  # 3 x2 upsamplings -> 8x
            layers += [TAEBlock(width, width) for _ in range(BLOCKS_PER_STAGE)]
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(width, width, bias=False)]
        layers += [TAEBlock(width, width), conv3x3(width, 3)]
        super().__init__(*layers)


class TinyVAE(nn.Module):
    """TAESD encoder + decoder (SD3 variant by default). Images in [0, 1].

    Args:
        latent_channels: latent channels (16 = SD3 variant, Sec. 3).
        width: feature width (64 for the published weights).

    Shape:
        - encode: :math:`(B, 3, H, W) \\to (B, latent, H/8, W/8)`, H, W multiples of 8
        - decode: :math:`(B, latent, h, w) \\to (B, 3, 8h, 8w)`
    """

    downscale = DOWNSCALE

    def __init__(self, latent_channels: int = LATENT_CHANNELS_SD3, width: int = TAESD_WIDTH):
        super().__init__()
        self.latent_channels, self.width = latent_channels, width
        self.encoder = TAESDEncoder(latent_channels, width)
        self.decoder = TAESDDecoder(latent_channels, width)

    def encode(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"TinyVAE.encode expects RGB images [B, 3, H, W], got {tuple(x.shape)}")
        if x.shape[-2] % DOWNSCALE or x.shape[-1] % DOWNSCALE:
            raise ValueError(f"TinyVAE.encode needs H and W multiples of {DOWNSCALE}, got {tuple(x.shape[-2:])}")
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        if z.dim() != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"TinyVAE.decode expects latents [B, {self.latent_channels}, h, w], got {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction ``decode(encode(x))`` (what the VAE health check measures, Sec. 5)."""
        return self.decode(self.encode(x))
