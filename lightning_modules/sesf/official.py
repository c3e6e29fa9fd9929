"""Converter of the released SESF-Fuse checkpoint (Keep-Passion/SESF-Fuse,
``nets/parameters/lp+lssim_se_sf_net_times30.pkl``, the cSE model the paper calls SESF-Fuse).

The file is a legacy (non-zip) torch pickle holding a bare ``OrderedDict`` of 64 tensors saved on
CUDA. It is read with ``torch.load(path, map_location="cpu", weights_only=True)`` (tensors only,
no code) and renamed to :class:`~lightning_modules.sesf.network.SESFNet` names. Loading is strict:
a missing key, an unexpected key or a shape mismatch is refused with one message naming every
offending key (official names).

Key mapping (official -> ours), released ``SESFuseNet('cse')``::

    features.0.*          (conv 1 -> 16)             -> encoder.blocks.0.conv.*
    features.2.*          (BatchNorm)                -> encoder.blocks.0.bn.*
    se_f.fc.0 / se_f.fc.2 (channel SE, no bias)      -> encoder.cse.0.reduce / .expand
    conv_encode_{i}.0.* / .2.*   (i = 1..3)          -> encoder.blocks.{i}.conv.* / .bn.*
    se_{i}.fc.0 / se_{i}.fc.2    (i = 1..3)          -> encoder.cse.{i}.reduce / .expand
    conv_decode_{j}.0.* / .2.*   (j = 1..4)          -> decoder.{j-1}.conv.* / .bn.*
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

# (official prefix, our prefix) pairs; keys are renamed by their prefix, suffixes are kept.
PREFIXES: tuple[tuple[str, str], ...] = (
    ("features.0.", "encoder.blocks.0.conv."),
    ("features.2.", "encoder.blocks.0.bn."),
    ("se_f.fc.0.", "encoder.cse.0.reduce."),
    ("se_f.fc.2.", "encoder.cse.0.expand."),
    *((f"conv_encode_{i}.0.", f"encoder.blocks.{i}.conv.") for i in range(1, 4)),
    *((f"conv_encode_{i}.2.", f"encoder.blocks.{i}.bn.") for i in range(1, 4)),
    *((f"se_{i}.fc.0.", f"encoder.cse.{i}.reduce.") for i in range(1, 4)),
    *((f"se_{i}.fc.2.", f"encoder.cse.{i}.expand.") for i in range(1, 4)),
    *((f"conv_decode_{j}.0.", f"decoder.{j - 1}.conv.") for j in range(1, 5)),
    *((f"conv_decode_{j}.2.", f"decoder.{j - 1}.bn.") for j in range(1, 5)),
)


class OfficialWeightsError(KeyError):
    """A released weights file that does not fit the network (the message names the keys).

    A ``KeyError`` so that the CLIs (``fuse.py``, ``convert_official.py``) report it in one line.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _rename(key: str, pairs) -> str | None:
    for src, dst in pairs:
        if key.startswith(src):
            return dst + key[len(src):]
    return None


def to_ours(key: str) -> str | None:
    """Our name of an official key (None if it is not part of the released layout)."""
    return _rename(key, PREFIXES)


def to_official(key: str) -> str | None:
    """The official name of one of our keys (None if it has no released counterpart)."""
    return _rename(key, [(b, a) for a, b in PREFIXES])


def _listing(items: list[str], sep: str, most: int = 6) -> str:
    """``items`` joined, the first ``most`` of them and a count of the rest."""
    more = f"{sep}... ({len(items) - most} more)" if len(items) > most else ""
    return sep.join(items[:most]) + more


def convert_state_dict(official: Mapping[str, Tensor], expected: Mapping[str, Tensor],
                       source: str = "SESF checkpoint") -> "OrderedDict[str, Tensor]":
    """Rename ``official`` to our keys and check it against ``expected`` (e.g. ``net.state_dict()``).

    Raises:
        OfficialWeightsError: naming every unexpected key, missing key and shape mismatch.
    """
    out: "OrderedDict[str, Tensor]" = OrderedDict()
    unexpected, shapes = [], []
    for key, value in official.items():
        ours = to_ours(key)
        if ours is None or ours not in expected:
            unexpected.append(key)
            continue
        if not isinstance(value, Tensor) or tuple(value.shape) != tuple(expected[ours].shape):
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            shapes.append(f"'{key}' {got} (expected {tuple(expected[ours].shape)})")
            continue
        out[ours] = value
    missing = [to_official(k) or k for k in expected if k not in out and to_official(k) not in official]
    problems = []
    if missing:
        problems.append("missing key(s) " + _listing([f"'{k}'" for k in missing], ", "))
    if unexpected:
        problems.append("unexpected key(s) " + _listing([f"'{k}'" for k in unexpected], ", "))
    if shapes:
        problems.append("shape mismatch: " + _listing(shapes, "; "))
    if problems:
        raise OfficialWeightsError(f"{source}: not the released SESF-Fuse (cSE) layout - " + "; ".join(problems))
    return out


def read_official(path: str | Path) -> Mapping[str, Tensor]:
    """Read ``sesf_official.pkl`` safely (``weights_only=True``, tensors only) as a raw state dict."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"SESF-Fuse official weights not found: '{p}' (expected sesf_official.pkl)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file: one message naming it
        raise OfficialWeightsError(f"{p}: cannot read as a torch state dict ({type(e).__name__}: {e})") from e
    if not isinstance(state, Mapping):
        raise OfficialWeightsError(f"{p}: expected a state dict (mapping of tensors), got {type(state).__name__}")
    return state


def load_official(net: nn.Module, path: str | Path) -> nn.Module:
    """Load the released weights into ``net`` (a :class:`SESFNet`) with strict checks; returns ``net``."""
    state = convert_state_dict(read_official(path), net.state_dict(), source=str(path))
    net.load_state_dict(state, strict=True)
    return net
