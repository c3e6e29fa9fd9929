"""GACN (Ma et al., Neurocomputing 2022): importing registers the method ``gacn``."""
from lightning_modules.gacn import module  # noqa: F401
