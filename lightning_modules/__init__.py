"""The five papers as LightningModules. Importing this package registers every method."""
import importlib
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_PAPERS = ["udpnet", "gacn", "ufafuse", "msasn", "vaeedof"]
for _m in _PAPERS:
    if (_HERE / _m / "__init__.py").is_file():
        importlib.import_module(f"{__name__}.{_m}")
