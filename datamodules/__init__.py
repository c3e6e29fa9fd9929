"""LightningDataModules: the papers' synthetic generators, built-in default data, real benchmarks.

Importing this package imports no DataModule (nor Lightning): :mod:`mfif.registry` imports the
module of the ``data.name`` asked for, or every one with ``registry.import_all()``.
"""
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
    "mf_voc",
]
#: Modules that register a DataModule when imported (read by :mod:`mfif.registry`).
REGISTERING = [_m for _m in _MODULES if (_HERE / f"{_m}.py").is_file()]
