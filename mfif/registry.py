"""Name -> class registries for methods (LightningModule + model config) and DataModules.

Paper modules register themselves with :func:`register_method`; DataModules with
:func:`register_datamodule`. :func:`import_all` imports the packages so that every
registration has run before a config is built.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, Tuple

_METHODS: Dict[str, Tuple[type, type]] = {}
_DATAMODULES: Dict[str, Tuple[type, type]] = {}
_PACKAGES = ("lightning_modules", "datamodules")


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


def import_all() -> None:
    for pkg in _PACKAGES:
        importlib.import_module(pkg)


def methods() -> list[str]:
    import_all()
    return sorted(_METHODS)


def datamodules() -> list[str]:
    import_all()
    return sorted(_DATAMODULES)


def _get(table: Dict[str, Tuple[type, type]], name: str, what: str) -> Tuple[type, type]:
    import_all()
    if name not in table:
        raise KeyError(f"unknown {what} '{name}'; known: {sorted(table)}")
    return table[name]


def method_class(name: str) -> type:
    return _get(_METHODS, name, "method")[0]


def model_config_class(name: str) -> type:
    return _get(_METHODS, name, "method")[1]


def datamodule_class(name: str) -> type:
    return _get(_DATAMODULES, name, "data.name")[0]


def data_config_class(name: str) -> type:
    return _get(_DATAMODULES, name, "data.name")[1]
