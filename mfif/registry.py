"""Name -> class registries for methods (FusionModule + model config) and DataModules.

Paper modules register themselves with :func:`register_method`; DataModules with
:func:`register_datamodule`. Registration is lazy: asking for one name imports only the module
that defines it, found by convention - method ``gacn`` in package ``lightning_modules.gacn``
(``vaeedof_vae`` in ``lightning_modules.vaeedof``), DataModule ``coco_defocus`` in
``datamodules.coco_defocus``. So fusing with GACN imports GACN's code and nothing else (no
other paper, no DataModule and, through them, no Lightning; see :mod:`lightning_modules.base`).
:func:`methods` and :func:`datamodules` list the names without importing; :func:`import_all`
imports everything (tools that inspect every class).
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, Iterator, Tuple

_METHODS: Dict[str, Tuple[type, type]] = {}
_DATAMODULES: Dict[str, Tuple[type, type]] = {}
_PACKAGES = {"method": "lightning_modules", "data.name": "datamodules"}


def register_method(name: str, config_cls: type) -> Callable[[type], type]:
    """Class decorator: register a FusionModule subclass under ``name`` with its model config."""

    def deco(cls: type) -> type:
        _METHODS[name] = (cls, config_cls)
        cls.method_name = name
        return cls

    return deco


def register_datamodule(name: str, config_cls: type) -> Callable[[type], type]:
    """Class decorator: register a LightningDataModule under ``name`` with its data config."""

    def deco(cls: type) -> type:
        _DATAMODULES[name] = (cls, config_cls)
        return cls

    return deco


def _package_modules(what: str) -> list[str]:
    """The registering modules of a package: its ``REGISTERING`` list (package ``__init__``)."""
    pkg = importlib.import_module(_PACKAGES[what])  # the package __init__ imports nothing heavy
    return list(getattr(pkg, "REGISTERING"))


def _candidates(what: str, name: str) -> Iterator[str]:
    """Modules that would define ``name``: ``<package>.<name>``, then ``<package>.<prefix>``."""
    pkg = _PACKAGES[what]
    known = _package_modules(what)
    for cand in (name, name.split("_")[0]):
        if cand in known:
            yield f"{pkg}.{cand}"


def import_all() -> None:
    """Import every registering module of both packages (every method and DataModule)."""
    for what, pkg in _PACKAGES.items():
        for mod in _package_modules(what):
            importlib.import_module(f"{pkg}.{mod}")


def _names(table: Dict[str, Tuple[type, type]], what: str) -> list[str]:
    names = set(table) | set(_package_modules(what))
    if what == "method" and "vaeedof" in names:
        names.add("vaeedof_vae")  # the second method of lightning_modules.vaeedof
    return sorted(names)


def methods() -> list[str]:
    """Every method name (registered or importable), without importing the methods."""
    return _names(_METHODS, "method")


def datamodules() -> list[str]:
    """Every DataModule name (registered or importable), without importing them."""
    return _names(_DATAMODULES, "data.name")


def _get(table: Dict[str, Tuple[type, type]], name: str, what: str) -> Tuple[type, type]:
    if name not in table:
        for mod in _candidates(what, name):
            importlib.import_module(mod)
            if name in table:
                break
    if name not in table:
        raise KeyError(f"unknown {what} '{name}'; known: {_names(table, what)}")
    return table[name]


def method_class(name: str) -> type:
    return _get(_METHODS, name, "method")[0]


def model_config_class(name: str) -> type:
    return _get(_METHODS, name, "method")[1]


def datamodule_class(name: str) -> type:
    return _get(_DATAMODULES, name, "data.name")[0]


def data_config_class(name: str) -> type:
    return _get(_DATAMODULES, name, "data.name")[1]
