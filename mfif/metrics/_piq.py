"""piq without torchvision, and network weights from a local folder (never downloaded).

* ``import piq`` fails without torchvision (its ``__init__`` imports the FID Inception and
  the VGG-based LPIPS/DISTS, which import ``torchvision.models``). torchvision is not a
  dependency of this project (it would pull a CUDA torch build), so
  :func:`import_piq` imports piq with a minimal stand-in for ``torchvision.models`` that
  only offers ``vgg16`` (the architecture LPIPS/DISTS need, weights from the local folder).
  The stand-in lives in ``sys.modules`` only while piq is imported. With a real
  torchvision installed, piq is imported normally.
* LPIPS, DISTS and PieAPP construct by calling ``torch.hub.load_state_dict_from_url``,
  i.e. they download. :func:`weights_dir` resolves a torch-hub style folder
  (``MFIF_WEIGHTS_DIR`` or an explicit argument, else torch's own hub dir); every needed
  file must already be at ``<dir>/checkpoints/<file>`` or a :class:`FileNotFoundError`
  naming it is raised *before* piq is called, and piq then runs with that folder as the
  hub dir, where ``load_state_dict_from_url`` finds the file and does not download.
"""
from __future__ import annotations

import contextlib
import os
import sys
import types
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import torch
from torch import nn

__all__ = ["WEIGHTS_ENV", "WEIGHT_FILES", "import_piq", "weights_dir", "require_weights", "hub_dir", "vgg16_features"]

WEIGHTS_ENV = "MFIF_WEIGHTS_DIR"

#: file name (as torch.hub caches it) and source URL of every network weight used here.
WEIGHT_FILES = {
    "vgg16": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "lpips": (
        "lpips_weights.pt",
        "https://github.com/photosynthesis-team/photosynthesis.metrics/releases/download/v0.4.0/lpips_weights.pt",
    ),
    "dists": ("dists_weights.pt", "https://github.com/photosynthesis-team/piq/releases/download/v0.4.1/dists_weights.pt"),
    "pieapp": ("PieAPPv0.1.pth", "https://github.com/photosynthesis-team/piq/releases/download/v0.5.4/PieAPPv0.1.pth"),
}

# torchvision's VGG16 "features" layout (conv3x3 + ReLU, max-pool after each block).
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def weights_dir(directory: Optional[Union[str, Path]] = None) -> Path:
    """The torch-hub style weights folder: ``directory``, else ``$MFIF_WEIGHTS_DIR``, else torch's hub dir."""
    if directory is not None:
        return Path(directory)
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env) if env else Path(torch.hub.get_dir())


def require_weights(names: Iterable[str], directory: Optional[Union[str, Path]] = None) -> Path:
    """Check that every weight file of ``names`` is present; return the hub folder.

    Raises:
        FileNotFoundError: naming each missing file, where it is expected and its URL.
    """
    root = weights_dir(directory)
    missing = []
    for name in names:
        fname, url = WEIGHT_FILES[name]
        path = root / "checkpoints" / fname
        if not path.is_file():
            missing.append(f"{path} (download it from {url})")
    if missing:
        raise FileNotFoundError(
            "network weights not found (nothing is downloaded at run time): "
            + "; ".join(missing)
            + f". Put the files in <weights dir>/checkpoints/ and point ${WEIGHTS_ENV} (or the "
            "weights_dir argument) at <weights dir>."
        )
    return root


@contextlib.contextmanager
def hub_dir(directory: Path) -> Iterator[None]:
    """Temporarily use ``directory`` as torch's hub dir (where piq looks for cached weights)."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(directory))
    try:
        yield
    finally:
        torch.hub.set_dir(old)


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` layout (same module indices), untrained."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c_in, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c_in = int(v)
    return nn.Sequential(*layers)


class _VGG16(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = vgg16_features()


def _stand_in_vgg16(pretrained: bool = False, progress: bool = True, weights=None, **_) -> _VGG16:
    """torchvision.models.vgg16 stand-in: ImageNet weights from ``<hub dir>/checkpoints`` only."""
    model = _VGG16()
    if pretrained or weights is not None:
        root = require_weights(["vgg16"], torch.hub.get_dir())
        state = torch.load(root / "checkpoints" / WEIGHT_FILES["vgg16"][0], map_location="cpu", weights_only=True)
        feats = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        model.features.load_state_dict(feats, strict=True)
    return model


def _unavailable(name: str):
    def fn(*args, **kwargs):
        raise RuntimeError(f"torchvision.models.{name} is not available: torchvision is not installed")

    return fn


_PIQ = None


def import_piq():
    """``import piq``, with a ``torchvision.models`` stand-in if torchvision is missing."""
    global _PIQ
    if _PIQ is not None:
        return _PIQ
    try:
        import piq  # noqa: F401

        _PIQ = piq
        return piq
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("torchvision"):
            raise
    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    models.vgg16 = _stand_in_vgg16
    models.vgg19 = _unavailable("vgg19")
    models.inception_v3 = _unavailable("inception_v3")
    # piq's FID Inception subclasses these at import time; FID itself stays unusable.
    inception = types.ModuleType("torchvision.models.inception")
    for cls in ("InceptionA", "InceptionC", "InceptionE"):
        setattr(inception, cls, type(cls, (nn.Module,), {}))
    models.inception = inception
    tv.models = models
    names = ("torchvision", "torchvision.models", "torchvision.models.inception")
    saved = {k: sys.modules.get(k) for k in names}
    sys.modules.update(dict(zip(names, (tv, models, inception))))
    try:
        for key in [k for k in sys.modules if k == "piq" or k.startswith("piq.")]:
            del sys.modules[key]  # drop half-imported leftovers of a failed import
        import piq
    finally:
        for key, mod in saved.items():
            if mod is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = mod
    _PIQ = piq
    return piq
