"""MSASN (Zhai et al.): multi-scale attention Siamese network with binarisation and small-area filtering."""
from lightning_modules.msasn.module import MSASN, MSASNConfig  # noqa: F401  (registers "msasn")
