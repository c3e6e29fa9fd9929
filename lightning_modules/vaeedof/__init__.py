"""VAEEDOF (Piano et al.): frozen TAESD-SD3 VAE + Fusion U-Net on up to 7 latents, tiled 4K inference.

Importing registers two methods: ``vaeedof`` (the fusion model) and ``vaeedof_vae`` (training the
VAE for reconstruction, the fallback when the published TAESD weights are unavailable).
"""
from lightning_modules.vaeedof import module, vae_module  # noqa: F401  (registration)
from lightning_modules.vaeedof.module import RandomVAEError, VAEEDOFConfig, VAEEDOFModule  # noqa: F401
from lightning_modules.vaeedof.vae_module import VAEEDOFVAEConfig, VAEEDOFVAEModule  # noqa: F401
