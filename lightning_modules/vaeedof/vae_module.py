"""``vaeedof_vae``: train VAEEDOF's TAESD autoencoder for reconstruction (the honest fallback).

VAEEDOF freezes a *pretrained* VAE (TAESD distilled from SD3, Sec. 3). Those weights cannot be
downloaded here, so this stage trains the same architecture (:class:`~.taesd.TinyVAE`) to
reconstruct the available images (every source and, when present, the ground truth of each
batch). Its checkpoint is then loaded frozen by the fusion stage::

    python experiments/run.py --config vaeedof_vae.yaml            # -> runs/.../best.ckpt
    python experiments/run.py --config vaeedof.yaml model.vae_checkpoint=runs/.../best.ckpt

This is a deviation from the paper (a plain reconstruction autoencoder, not TAESD's distilled
latent space); :func:`~.weights.save_taesd` / :func:`~.weights.save_diffusers` export it in
the published layouts. Loss (ours): ``w_l1 * L1 + w_ssim * (1 - SSIM)``.

Validation/test report the reconstruction metrics (``cfg.metrics``, e.g. PSNR/SSIM: the Sec. 5
health check). ``fuse`` is *not* VAEEDOF: it decodes the mean of the source latents, a naive
latent-averaging baseline kept so generic tools can call any registered method.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_modules.base import FusionModule, FusionOutput
from lightning_modules.vaeedof.loss import ssim_loss
from lightning_modules.vaeedof.taesd import DOWNSCALE, LATENT_CHANNELS_SD3, TAESD_WIDTH, TinyVAE
from lightning_modules.vaeedof.weights import VAEWeightsError, load_vae_weights
from mfif.config import ConfigError, ModelConfig
from mfif.ops.colour import to_working_space
from mfif.ops.padding import crop_to, pad_to_multiple
from mfif.registry import register_method


@dataclass
class VAEEDOFVAEConfig(ModelConfig):
    latent_channels: int = LATENT_CHANNELS_SD3  # Sec. 3: 16-channel SD3 variant
    vae_width: int = TAESD_WIDTH  # TAESD width (madebyollin/taesd, taesd.py)
    init_weights: Optional[str] = None  # start from TAESD/diffusers/.ckpt weights (fine-tune); None = random init
    w_l1: float = 1.0  # ours
    w_ssim: float = 0.5  # ours
    use_gt: bool = True  # also reconstruct the batch's ground truth when present
    max_images: int = 0  # images per step drawn from the batch (0 = all); memory knob


@register_method("vaeedof_vae", VAEEDOFVAEConfig)
class VAEEDOFVAEModule(FusionModule):
    """Reconstruction training of the TAESD-architecture VAE (stage 1 of the fallback)."""

    colour_policy = "rgb"
    pad_multiple = DOWNSCALE

    def __init__(self, cfg):
        super().__init__(cfg)
        m = self.cfg.model  # cfg may be a checkpoint's dict (load_from_checkpoint)
        if m.w_l1 < 0 or m.w_ssim < 0 or m.w_l1 + m.w_ssim == 0:
            raise ValueError(f"model.w_l1 and model.w_ssim must be >= 0 and not both 0, got {m.w_l1}, {m.w_ssim}")
        self.vae = TinyVAE(m.latent_channels, m.vae_width)
        if m.init_weights:
            try:
                load_vae_weights(self.vae, m.init_weights)
            except VAEWeightsError as e:
                raise ConfigError(f"model.init_weights: {e}") from e

    def _images(self, batch: dict, sample: bool) -> Tensor:
        """Every source (and the gt) of the batch as RGB images ``[M, 3, H, W]``."""
        imgs = to_working_space(batch["sources"], "rgb").flatten(0, 1)
        if self.cfg.model.use_gt and batch.get("gt") is not None:
            imgs = torch.cat([imgs, to_working_space(batch["gt"][:, None], "rgb")[:, 0]])
        k = int(self.cfg.model.max_images)
        if sample and 0 < k < imgs.shape[0]:
            imgs = imgs[torch.randperm(imgs.shape[0], device=imgs.device)[:k]]
        return imgs

    def reconstruct(self, images: Tensor) -> Tensor:
        """``decode(encode(x))`` for ``[M, 3, H, W]`` of any size (padded to 8). Not clamped."""
        padded, size = pad_to_multiple(images, DOWNSCALE)
        return crop_to(self.vae(padded), size)

    def _loss(self, images: Tensor) -> tuple[Tensor, Tensor, dict]:
        rec = self.reconstruct(images)
        m = self.cfg.model
        parts = {"l1": F.l1_loss(rec, images)}
        if m.w_ssim > 0:
            parts["ssim"] = ssim_loss(rec, images)
        loss = m.w_l1 * parts["l1"] + m.w_ssim * parts.get("ssim", 0.0)
        return loss, rec, parts

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, _, parts = self._loss(self._images(batch, sample=True))
        bs = batch["sources"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log_dict({f"train/{k}": v for k, v in parts.items()}, batch_size=bs)
        return loss

    def _eval(self, batch: dict, stage: str) -> Tensor:
        images = self._images(batch, sample=False)
        loss, rec, _ = self._loss(images)
        bs = images.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", batch_size=bs, sync_dist=True)
        fr = self.val_fr if stage == "val" else self.test_fr
        if len(fr):  # reconstruction quality = the Sec. 5 health check
            fr.update(fused=rec.clamp(0, 1), gt=images)
            self.log_dict(fr, on_epoch=True, batch_size=bs, sync_dist=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval(batch, "test")

    def fuse_working(self, sources: Tensor) -> FusionOutput:
        """Naive baseline, not VAEEDOF: decode the mean of the source latents.

        Shape:
            - sources: :math:`(B, N, 3, H, W)`, H, W multiples of 8
            - output.fused: :math:`(B, 3, H, W)`
        """
        z = self.vae.encode(sources.flatten(0, 1)).unflatten(0, sources.shape[:2]).mean(1)
        return FusionOutput(self.vae.decode(z), None, {"note": "latent-mean baseline of the vaeedof_vae stage"})
