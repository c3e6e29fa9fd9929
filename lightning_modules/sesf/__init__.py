"""SESF-Fuse (Ma et al., Neural Computing and Applications 2021), inference-only baseline:
importing registers the method ``sesf``."""
from lightning_modules.sesf import module  # noqa: F401
