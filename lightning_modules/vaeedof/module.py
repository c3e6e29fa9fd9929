"""VAEEDOF LightningModule (Piano et al., "Addressing the Depth-of-Field Constraint", Secs. 3-5).

Frozen TAESD-SD3 VAE + trainable Fusion U-Net on the concatenated latents of up to 7 sources,
decoded by the frozen decoder (Fig. 1); tiled 512 px inference with 1/4 overlap and gradient
alpha blending (Sec. 3, Fig. 3); EMA weights for inference (Sec. 3, ``ema`` in the yaml).

The VAE weights come from ``model.vae_weights`` (TAESD ``taesd3_encoder.pth``, a diffusers
``AutoencoderTiny`` folder, or a ``.ckpt``) or ``model.vae_checkpoint`` (the ``vaeedof_vae``
stage, the fallback when the published weights are unavailable). A VAE with random weights is
refused at first use unless ``model.allow_random_vae: true`` (tests/smoke only). Once loaded, the
VAE is part of this module's state dict, and a buffer ``vae_ready`` records that it holds real
weights, so a trained checkpoint restores without the original VAE files (override
``model.vae_weights=null`` / ``model.vae_checkpoint=null`` when those files are gone).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from torch import Tensor

from lightning_modules.base import FusionModule, FusionOutput
from lightning_modules.vaeedof.loss import VAEEDOFLoss
from lightning_modules.vaeedof.network import MAX_SOURCES, UNET_DOWNSCALE, FusionUNet, VAEEDOFNet
from lightning_modules.vaeedof.taesd import DOWNSCALE, LATENT_CHANNELS_SD3, TAESD_WIDTH, TinyVAE
from lightning_modules.vaeedof.weights import VAEWeightsError, load_lightning_vae, load_vae_weights
from mfif.config import ConfigError, ModelConfig
from mfif.ops.colour import to_working_space
from mfif.ops.padding import crop_to, pad_to_multiple
from mfif.ops.tiling import tiled_apply
from mfif.registry import register_method


@dataclass
class VAEEDOFConfig(ModelConfig):
    # ---- frozen VAE (Sec. 3, Fig. 1)
    latent_channels: int = LATENT_CHANNELS_SD3  # Sec. 3: "16-channel VAE distilled from StableDiffusion3"
    vae_width: int = TAESD_WIDTH  # TAESD width (madebyollin/taesd, taesd.py); the published weights need 64; less only in tests
    vae_weights: Optional[str] = None  # taesd3_encoder.pth (or its folder) | diffusers AutoencoderTiny folder | .ckpt
    vae_checkpoint: Optional[str] = None  # .ckpt of the vaeedof_vae stage (fallback VAE trained here)
    allow_random_vae: bool = False  # tests/smoke only: allow an untrained VAE (results are meaningless)
    # ---- Fusion U-Net (Sec. 3)
    max_sources: int = MAX_SOURCES  # Sec. 3: "up to seven images"; fewer are duplicated cyclically
    unet_channels: List[int] = field(default_factory=lambda: [128, 256, 256])  # 3 levels (Sec. 3); widths ours
    attention_levels: List[int] = field(default_factory=lambda: [1])  # Sec. 3: attention in the middle blocks
    mid_attention: bool = True  # attention also in the bottleneck (the other reading of "middle blocks")
    attention_heads: int = 4  # not in the paper
    norm_groups: int = 32  # not in the paper
    residual_mean: bool = False  # not in the paper: predict a correction to the mean source latent
    shuffle_sources: bool = True  # not in the paper: random source order in training (order-robust FM)
    # ---- loss (not in the paper; see loss.py for the justification)
    latent_loss: str = "l1"  # l1 | l2, on the FM output vs E(gt)
    w_latent: float = 1.0
    w_image_l1: float = 1.0  # through the frozen decoder
    w_image_ssim: float = 0.5  # through the frozen decoder
    # ---- tiled inference (Sec. 3, Fig. 3)
    tile_size: int = 512  # Sec. 3: 512x512 patches; 0 = whole image at once
    tile_overlap: int = 128  # Sec. 3: 1/4 of the patch size
    tile_batch: int = 1  # tiles per forward pass (memory knob)


class RandomVAEError(RuntimeError):
    """The frozen VAE holds random weights and ``model.allow_random_vae`` is false."""


def load_frozen_vae(vae: TinyVAE, m) -> Optional[str]:
    """Load the VAE named by ``model.vae_weights`` / ``model.vae_checkpoint``; None if neither is set.

    Raises:
        ConfigError: both keys set, or the weights are missing/malformed (message names the key).
    """
    if m.vae_weights and m.vae_checkpoint:
        raise ConfigError("set only one of model.vae_weights and model.vae_checkpoint, got both "
                              f"('{m.vae_weights}', '{m.vae_checkpoint}')")
    key, path = ("model.vae_checkpoint", m.vae_checkpoint) if m.vae_checkpoint else ("model.vae_weights", m.vae_weights)
    if not path:
        return None
    hint = f" (restoring a trained vaeedof checkpoint? it holds the VAE: set {key}=null)"
    try:
        if key == "model.vae_checkpoint":
            load_lightning_vae(vae, path)
            fmt = "lightning"
        else:
            fmt = load_vae_weights(vae, path)
    except VAEWeightsError as e:  # a config problem: name the key (exit code 2 in the CLIs)
        raise ConfigError(f"{key}: {e}{hint if 'no such file' in str(e) else ''}") from e
    return f"{fmt}:{path}"


@register_method("vaeedof", VAEEDOFConfig)
class VAEEDOFModule(FusionModule):
    """VAEEDOF: latent-space fusion of 2..7 sources with a frozen TAESD VAE (Fig. 1).

    ``fuse`` handles gray/RGB and any size; inside, images are fused tile by tile
    (``model.tile_size``, Fig. 3) when larger than a tile.
    """

    colour_policy = "rgb"  # the VAE works on RGB in [0, 1]
    pad_multiple = DOWNSCALE * UNET_DOWNSCALE  # 8 (VAE) x 8 (three U-Net downsamplings) = 64 px

    def __init__(self, cfg):
        super().__init__(cfg)
        m = self.cfg.model  # cfg may be a checkpoint's dict (load_from_checkpoint)
        if m.max_sources < 2:
            raise ValueError(f"model.max_sources must be >= 2, got {m.max_sources}")
        if m.tile_size and (m.tile_size % self.pad_multiple or not 0 <= m.tile_overlap < m.tile_size):
            raise ValueError(f"model.tile_size must be 0 or a multiple of {self.pad_multiple} and "
                             f"0 <= model.tile_overlap < tile_size; got {m.tile_size}, {m.tile_overlap}")
        vae = TinyVAE(m.latent_channels, m.vae_width)
        self.vae_source = load_frozen_vae(vae, m)
        unet = FusionUNet(m.latent_channels, m.max_sources, list(m.unet_channels), list(m.attention_levels),
                          m.mid_attention, m.attention_heads, m.norm_groups, m.residual_mean)
        self.net = VAEEDOFNet(vae, unet)
        # persistent: a checkpoint remembers that its VAE holds real weights
        self.register_buffer("vae_ready", torch.tensor(self.vae_source is not None))
        self.loss_fn = VAEEDOFLoss(m.latent_loss, m.w_latent, m.w_image_l1, m.w_image_ssim)
        self._warned = False

    # ------------------------------------------------------------------ guards
    def require_vae(self) -> None:
        """Refuse to run a VAE with random weights unless explicitly allowed."""
        if bool(self.vae_ready):
            return
        if not self.cfg.model.allow_random_vae:
            raise RandomVAEError(
                "VAEEDOF's frozen VAE has random weights. Set model.vae_weights to taesd3_encoder.pth (TAESD) or a "
                "diffusers AutoencoderTiny folder, or train the fallback VAE (method vaeedof_vae) and set "
                "model.vae_checkpoint to its .ckpt. (model.allow_random_vae=true is for tests only.)")
        if not self._warned:
            warnings.warn("VAEEDOF runs with a RANDOM frozen VAE (model.allow_random_vae=true): outputs are meaningless")
            self._warned = True

    def _check_n(self, n: int) -> None:
        if not 2 <= n <= self.cfg.model.max_sources:
            raise ValueError(f"VAEEDOF fuses 2..{self.cfg.model.max_sources} sources (Sec. 3), got N = {n}")

    # ------------------------------------------------------------------ inference
    def _fuse_tile(self, sources: Tensor) -> Tensor:
        padded, size = pad_to_multiple(sources, self.pad_multiple)
        image, _ = self.net(padded)
        return crop_to(image, size)

    def fuse_working(self, sources: Tensor) -> FusionOutput:
        """Encode each source, fuse the latents, decode (Sec. 3); tiled when larger than a tile.

        Shape:
            - sources: :math:`(B, N, 3, H, W)`, H, W multiples of 64
            - output.fused: :math:`(B, 3, H, W)`; maps None (end-to-end method)
        """
        self.require_vae()
        self._check_n(sources.shape[1])
        m = self.cfg.model
        if m.tile_size and max(sources.shape[-2:]) > m.tile_size:
            fused = tiled_apply(self._fuse_tile, sources, m.tile_size, m.tile_overlap, m.tile_batch)
        else:
            fused = self._fuse_tile(sources)
        return FusionOutput(fused, None, None)

    # ------------------------------------------------------------------ training
    def _loss(self, batch: dict, shuffle: bool) -> tuple[Tensor, dict]:
        if batch.get("gt") is None:
            raise ValueError("VAEEDOF training needs the all-in-focus ground truth 'gt' in the batch "
                             "(Sec. 3: supervised on MattingMFIF renders)")
        self.require_vae()
        sources = to_working_space(batch["sources"], "rgb")
        gt = to_working_space(batch["gt"][:, None], "rgb")
        self._check_n(sources.shape[1])
        if shuffle:  # our augmentation: the FM should not depend on the focus order of the sources
            sources = sources[:, torch.randperm(sources.shape[1], device=sources.device)]
        sources, size = pad_to_multiple(sources, self.pad_multiple)
        gt_pad, _ = pad_to_multiple(gt, self.pad_multiple)
        z_gt = self.net.encode(gt_pad)[:, 0]
        z = self.net.fuse_latents(self.net.encode(sources))
        img = crop_to(self.net.vae.decode(z), size) if self.loss_fn.needs_image else None
        return self.loss_fn(z, z_gt, img, gt[:, 0])

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, parts = self._loss(batch, shuffle=self.cfg.model.shuffle_sources)
        bs = batch["sources"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log_dict({f"train/{k}": v for k, v in parts.items()}, batch_size=bs)
        return loss

    def validation_loss(self, batch: dict) -> Optional[Tensor]:
        if batch.get("gt") is None:
            return None
        return self._loss(batch, shuffle=False)[0]

    def load_official_weights(self, path: str) -> None:
        raise NotImplementedError(
            "VAEEDOF's released fusion-module weights are not available here and their layout is unknown. "
            "Load the frozen VAE with model.vae_weights (taesd3_encoder.pth or a diffusers AutoencoderTiny folder) "
            "or model.vae_checkpoint (vaeedof_vae stage), and a trained fusion module with --checkpoint.")
