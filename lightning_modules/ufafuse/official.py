"""Loader of the authors' released UFA-Fusion checkpoint (ReckonerInheritor/UFA-Fusion, ``ufa_official.pth``).

The file (ReckonerInheritor/UFA-Fusion, commit 92d63eb, ``Code/experment/best.pth``; md5
93dfe4d9d652bc6e367c4798b9ef3bb7) is a bare legacy-format ``state_dict`` of the official
``AF`` network: 32 tensors, 455,111 parameters, saved from ``cuda:0``. :class:`UFAFuseNet`
uses the official attribute names, so the only mapping is stripping a ``module.`` prefix
(present in checkpoints saved from ``DataParallel``; absent from the released file).

The released weights were trained with the official spatial-softmax quirk: build the model
with ``model.official_quirk=true`` to reproduce the authors' outputs exactly.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

OFFICIAL_NUM_PARAMS = 455_111  # parameters of the released checkpoint (counted)
OFFICIAL_NUM_TENSORS = 32


def convert_official_state_dict(raw: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map official key names to ours: identity except a ``module.`` prefix is dropped."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in raw.items()}


def load_official_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read the released checkpoint on CPU (``weights_only``) and return our state dict.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file does not hold a state dict of tensors.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"UFA-Fuse official weights not found: '{p}' (expected ufa_official.pth)")
    raw = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(raw, Mapping) and "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        raw = raw["state_dict"]  # tolerate a wrapper dict
    if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise ValueError(f"'{p}': expected a state_dict (mapping of name -> tensor), got {type(raw).__name__}")
    return convert_official_state_dict(raw)


def load_official_into(net: nn.Module, path: str | Path) -> None:
    """Load the released checkpoint into a :class:`UFAFuseNet` with strict keys and shapes.

    Raises:
        ValueError: missing/unexpected keys or shape mismatches, listed by name (e.g. when the
            net was built with ``features`` != 64).
    """
    sd = load_official_state_dict(path)
    own = net.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(sd) & set(own)) if sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"'{path}' does not match the UFA-Fuse network (official layout: features=64, RGB): "
            f"missing={missing} unexpected={unexpected} shape mismatches={shapes}"
        )
    net.load_state_dict(sd, strict=True)
