"""UDPNet (Quan et al., "Dual-Path Deep Unsupervised Learning for Multi-Focus Image Fusion").

Importing this package registers the method ``udpnet`` (see :mod:`mfif.registry`).
"""
from lightning_modules.udpnet.module import UDPNetConfig, UDPNetModule, VARIANTS  # noqa: F401
