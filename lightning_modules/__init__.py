"""The papers as LightningModules (:class:`~lightning_modules.base.FusionModule` subclasses).

Importing this package imports no paper: :mod:`mfif.registry` imports a paper's package when its
method is asked for (``registry.method_class("gacn")``), or every one with ``registry.import_all()``.
"""
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_PAPERS = ["udpnet", "gacn", "ufafuse", "msasn", "vaeedof", "sesf"]  # sesf: inference-only baseline
#: Paper packages that register their method(s) when imported (read by :mod:`mfif.registry`).
REGISTERING = [_m for _m in _PAPERS if (_HERE / _m / "__init__.py").is_file()]
