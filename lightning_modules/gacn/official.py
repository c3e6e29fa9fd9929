"""Converter of the released GACN checkpoint (Keep-Passion/GACN ``nets/parameters/GACN.pkl``).

The file is a legacy (non-zip) torch pickle holding a bare ``OrderedDict`` state dict of 69
tensors saved on CUDA (Keep-Passion/GACN ``nets/parameters/GACN.pkl``). It is read with
``torch.load(path, map_location="cpu", weights_only=True)`` (tensors only, no code) and renamed
to this package's module names; loading is strict (no missing or unexpected key).

Key mapping (official -> ours)::

    feature_extraction_conv{i}.feature_extraction_conv{i}_Conv2d.*     -> features.blocks.{i}.conv.*
    feature_extraction_conv{i}.feature_extraction_conv{i}_BatchNorm.*  -> features.blocks.{i}.bn.*
    se_{i}.fc.0.weight / se_{i}.fc.2.weight   (i = 0..3, channel SE)    -> features.cse.{i}.reduce / .expand
    se_{4+k}.fc.0.weight                      (k = 0..4, spatial SE)    -> decision.sse.{k}.conv.weight
    decision_path_conv{j}.decision_path_conv{j}_Conv2d.*  (j = 1..4)    -> decision.blocks.{j-1}.conv.*
    decision_path_conv{j}.decision_path_conv{j}_BatchNorm.*             -> decision.blocks.{j-1}.bn.*
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from lightning_modules.gacn.network import GACNNet

_RULES = [
    (re.compile(r"^feature_extraction_conv(\d)\.feature_extraction_conv\1_Conv2d\.(.+)$"),
     lambda m: f"features.blocks.{m[1]}.conv.{m[2]}"),
    (re.compile(r"^feature_extraction_conv(\d)\.feature_extraction_conv\1_BatchNorm\.(.+)$"),
     lambda m: f"features.blocks.{m[1]}.bn.{m[2]}"),
    (re.compile(r"^se_([0-3])\.fc\.0\.weight$"), lambda m: f"features.cse.{m[1]}.reduce.weight"),
    (re.compile(r"^se_([0-3])\.fc\.2\.weight$"), lambda m: f"features.cse.{m[1]}.expand.weight"),
    (re.compile(r"^se_([4-8])\.fc\.0\.weight$"), lambda m: f"decision.sse.{int(m[1]) - 4}.conv.weight"),
    (re.compile(r"^decision_path_conv([1-4])\.decision_path_conv\1_Conv2d\.(.+)$"),
     lambda m: f"decision.blocks.{int(m[1]) - 1}.conv.{m[2]}"),
    (re.compile(r"^decision_path_conv([1-4])\.decision_path_conv\1_BatchNorm\.(.+)$"),
     lambda m: f"decision.blocks.{int(m[1]) - 1}.bn.{m[2]}"),
]


def convert_state_dict(official: Mapping[str, Tensor]) -> "OrderedDict[str, Tensor]":
    """Rename the released keys to :class:`GACNNet` keys; an unknown key is an error."""
    out: "OrderedDict[str, Tensor]" = OrderedDict()
    for key, value in official.items():
        for pattern, rename in _RULES:
            m = pattern.match(key)
            if m:
                out[rename(m)] = value
                break
        else:
            raise KeyError(f"unexpected key '{key}' in the GACN checkpoint (not in the released layout)")
    return out


def read_official(path: str | Path) -> "OrderedDict[str, Tensor]":
    """Read ``gacn_official.pkl`` safely (tensors only) and return the converted state dict."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"GACN official weights not found: '{p}' (expected gacn_official.pkl)")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{p}: expected a state dict (mapping of tensors), got {type(state).__name__}")
    return convert_state_dict(state)


def load_official(net: GACNNet, path: str | Path) -> GACNNet:
    """Load the released weights into ``net`` with strict key matching; returns ``net``."""
    net.load_state_dict(read_official(path), strict=True)
    return net
