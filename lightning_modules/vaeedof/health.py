"""VAE health check (Sec. 5): how well does the frozen VAE reconstruct the inputs?

"The quality of the final output is intrinsically tied to the performance of the VAE [...]
this issue can be easily diagnosed by passing the input through the VAE and measuring the
reconstruction error, which offers a practical safeguard during deployment" (Sec. 5).

:func:`vae_reconstruction_report` does exactly that for a list of images: PSNR and SSIM of
``decode(encode(x))`` against ``x``, tile by tile for large images (same 512 px tiles with 1/4
overlap as the fusion, Sec. 3). A low PSNR means the VAE, not the fusion module, limits the
result on that kind of image.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from lightning_modules.vaeedof.taesd import DOWNSCALE, TinyVAE
from mfif.ops.padding import crop_to, pad_to_multiple
from mfif.ops.tiling import tiled_apply

# Our choice (the paper gives no number): flag images whose reconstruction PSNR is below this.
DEFAULT_WARN_PSNR = 28.0


def vae_reconstruct(vae: TinyVAE, image: Tensor, tile: int = 512, overlap: Optional[int] = None,
                    tile_batch: int = 1) -> Tensor:
    """``decode(encode(x))`` of any size (padded to 8, tiled above ``tile``; 0 = never tile).

    Shape:
        - image: :math:`(B, C, H, W)` in [0, 1], C in {1, 3}
        - output: :math:`(B, C, H, W)` clamped to [0, 1] (gray inputs are averaged back)
    """
    if image.dim() != 4 or image.shape[1] not in (1, 3):
        raise ValueError(f"vae_reconstruct: image must be [B, C, H, W] with C in (1, 3), got {tuple(image.shape)}")
    rgb = image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image

    def fn(t: Tensor) -> Tensor:  # t: [b, 1, 3, h, w]
        padded, size = pad_to_multiple(t[:, 0], DOWNSCALE)
        return crop_to(vae(padded), size)

    if tile and max(rgb.shape[-2:]) > tile:
        rec = tiled_apply(fn, rgb[:, None], tile, overlap, tile_batch)
    else:
        rec = fn(rgb[:, None])
    rec = rec.clamp(0, 1)
    return rec.mean(1, keepdim=True) if image.shape[1] == 1 else rec


@torch.inference_mode()
def vae_reconstruction_report(vae: TinyVAE, images: Sequence[Tensor], names: Optional[Sequence[str]] = None,
                              tile: int = 512, tile_batch: int = 1) -> list[dict]:
    """Reconstruction PSNR (dB) and SSIM of each image through the VAE (Sec. 5 safeguard).

    Args:
        vae: the VAE (its device is used).
        images: tensors ``[C, H, W]`` in [0, 1] (any sizes).
        names: labels for the rows (default ``image_<i>``).
        tile: tile size for large images (0 = whole image).
        tile_batch: tiles per forward pass.

    Returns:
        One dict per image: ``name``, ``psnr``, ``ssim``, ``height``, ``width``.
    """
    names = list(names) if names is not None else [f"image_{i}" for i in range(len(images))]
    if len(names) != len(images):
        raise ValueError(f"vae_reconstruction_report: {len(images)} images but {len(names)} names")
    device = next(vae.parameters()).device
    was_training = vae.training
    vae.eval()
    rows = []
    for name, img in zip(names, images):
        if img.dim() != 3:
            raise ValueError(f"vae_reconstruction_report: '{name}' must be [C, H, W], got {tuple(img.shape)}")
        x = img[None].to(device=device, dtype=torch.float32)
        rec = vae_reconstruct(vae, x, tile=tile, tile_batch=tile_batch)
        rows.append({"name": name, "psnr": float(peak_signal_noise_ratio(rec, x, data_range=1.0)),
                     "ssim": float(structural_similarity_index_measure(rec, x, data_range=1.0)),
                     "height": int(x.shape[-2]), "width": int(x.shape[-1])})
    vae.train(was_training)
    return rows


def summarize(rows: Sequence[dict], warn_psnr: float = DEFAULT_WARN_PSNR) -> dict:
    """Mean PSNR/SSIM and the names of images whose PSNR is below ``warn_psnr``."""
    if not rows:
        raise ValueError("summarize: no rows")
    return {"psnr": sum(r["psnr"] for r in rows) / len(rows), "ssim": sum(r["ssim"] for r in rows) / len(rows),
            "n": len(rows), "below_warn": [r["name"] for r in rows if r["psnr"] < warn_psnr], "warn_psnr": warn_psnr}
