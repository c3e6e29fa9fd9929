"""LightningDataModules: the papers' synthetic generators, built-in default data, real benchmarks.

Importing this package registers every DataModule (see :mod:`mfif.registry`).
"""
import importlib
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# Modules that register a DataModule. Listed explicitly so a broken import is loud.
_MODULES = [
    "default",
    "gaussian_voc",
    "mean_filter_duts",
    "coco_defocus",
    "unsupervised_pairs",
    "matting_mfif",
    "ufa_trainset",
]
for _m in _MODULES:
    if (_HERE / f"{_m}.py").is_file():
        importlib.import_module(f"{__name__}.{_m}")
