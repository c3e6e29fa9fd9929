"""File-name conventions of multi-focus benchmark sets: which files form one scene, in which order.

A file stem is split into ``(scene, key)`` where ``key`` says which source of the scene it is:

================================  =====================  =================================
convention                        example stem           scene / key
================================  =====================  =================================
``name-A`` / ``name_A`` / ``nameA``  ``lytro-01-A``, ``clockA``  ``lytro-01`` / ``A``
``name_1`` / ``name-1`` / ``name1``  ``mffw_01_1``, ``toy3``    ``mffw_01`` / ``3``
focal stack frames                ``V001`` .. ``V065``    ``V`` / ``1`` .. ``65``
``name_near`` / ``name_far``      ``cup_near``            ``cup`` / ``near`` (near first)
================================  =====================  =================================

Letter keys are one upper-case letter (lower-case only after a ``-``/``_``/space separator, so
``flower`` is not read as ``flowe`` + ``r``). Sources of a scene are ordered by key: numbers
numerically, letters alphabetically. Ground-truth files end in a ground-truth word
(``name_ground``, ``name-GT``, ``gt``, ``full_clear`` ...). Masks, depth maps and labels
(``mask_0``, ``depth``) are not sources and are ignored.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm", ".pnm"}

# Ground-truth words, compared case-insensitively with separators removed (``full_clear``).
GT_WORDS = {"ground", "gt", "groundtruth", "fullclear", "clear", "aif", "allinfocus", "reference"}
# Files that sit next to sources but are not sources (matting renderer, segmentation sets).
IGNORED_PREFIXES = ("mask", "depth", "label", "seg", "alpha", "trimap")
# Sub-folder names of the "one folder per source" layout (MFI-WHU release: source_1, source_2).
SOURCE_DIR = re.compile(r"^(?:source|src)[-_ ]?(?P<key>[A-Za-z]|\d+)$", re.IGNORECASE)
GT_DIRS = {"fullclear", "gt", "groundtruth", "ground", "clear", "aif", "allinfocus", "reference"}

_KEY = re.compile(
    r"^(?P<scene>.*?)(?:(?P<sep>[-_ ])(?P<lkey>[A-Za-z]|near|far)|(?P<ukey>[A-Z])|[-_ ]?(?P<dkey>\d+))$"
)


def _squash(word: str) -> str:
    return re.sub(r"[-_ ]", "", word).lower()


def is_image(path: Path) -> bool:
    """True for a regular file with a known image extension (hidden files excluded)."""
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def is_ignored(stem: str) -> bool:
    """Masks, depth maps, labels: never sources."""
    return _squash(stem).startswith(IGNORED_PREFIXES)


def gt_scene(stem: str) -> Optional[str]:
    """Scene name of a ground-truth file (``""`` for a bare ``gt.png``), or None if not ground truth."""
    if _squash(stem) in GT_WORDS:
        return ""
    for cut in re.finditer(r"[-_ ]", stem):
        if _squash(stem[cut.start() :]) in GT_WORDS:
            return stem[: cut.start()]
    return None


@dataclass(frozen=True)
class SourceKey:
    """Position of a file in its scene; sorts numbers before letters, ``near`` before ``far``."""

    kind: int  # 0 number, 1 near/far, 2 letter
    value: object

    @property
    def sort_key(self) -> tuple:
        return (self.kind, self.value)


def parse_stem(stem: str) -> Optional[tuple[str, SourceKey]]:
    """Split a source stem into ``(scene, key)``; None when no convention matches."""
    m = _KEY.match(stem)
    if m is None:
        return None
    scene = m.group("scene")
    if m.group("dkey") is not None:
        return scene, SourceKey(0, int(m.group("dkey")))
    key = m.group("lkey") or m.group("ukey")
    if key.lower() in ("near", "far"):
        return scene, SourceKey(1, 0 if key.lower() == "near" else 1)
    return scene, SourceKey(2, key.upper())


def strip_key(stem: str) -> str:
    """Scene part of a stem (the stem itself when no convention matches)."""
    parsed = parse_stem(stem)
    return parsed[0] if parsed and parsed[0] else stem
