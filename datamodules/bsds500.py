"""BSDS500 as a source of focus masks for the synthetic generators (GACN, MSASN, UFA-Fuse).

No COCO, VOC2012 or DUTS copy is reachable here; BSDS500 (Arbelaez, Maire, Fowlkes, Malik,
"Contour Detection and Hierarchical Image Segmentation", TPAMI 33(5), 2011) is. Its human
segmentations stand in for the object masks of the generators: one region, or a union of
touching regions, of one annotator's label map is the in-focus foreground of a sample.

Layout (``data.root / data.bsds_dir``): ``images/<split>/<id>.jpg`` and
``segmentations/<split>/<id>_<k>.png``, one 16-bit label map per annotator ``k`` (labels 1..N,
the ``groundTruth{k}.Segmentation`` arrays of the release saved as PNG), maps the size of their
image. Every split in ``data.bsds_splits`` is read (the BSDS splits mean nothing for fusion;
the generators make their own train/val split).

Region choice, per image, deterministic (one ``numpy`` generator seeded by ``data.seed`` and the
image id, :func:`region_rng`), modelled on GACN Sec. 4.1.1, which keeps COCO images with exactly
one instance whose foreground is 20,000..170,000 px:

1. the annotators are tried in a seeded random order; the first with an admissible choice wins;
2. with probability ``data.region_union_p`` a union of >= 2 touching regions is tried first,
   else a single region (the other kind if the first gives nothing);
3. single: one region drawn uniformly among those whose area lies in the range;
4. union: seeds are the regions below the range (in seeded order); from a seed, a touching
   (4-neighbour) region drawn uniformly among those that keep the union inside the range is
   added until the union reaches the range (the first seed that gets there wins);
5. an image without any admissible choice (no annotator has one) is dropped and counted.

Area range (``data.region_area``, fractions of the label map's area, inclusive): Sec. 4.1.1's
20,000..170,000 px are measured on COCO images, mostly 640x480 (307,200 px: 6.5-55 %) or 640x427
(273,280 px: 7.3-62 %); we keep **7 %..60 %** of the image, i.e. 10,808..92,641 px of a 481x321
BSDS image. The same rule serves MSASN (VOC masks) and UFA-Fuse (DUTS saliency masks), whose
papers state no area rule.

Errors (a :class:`mfif.io.BenchmarkError` naming the file; with ``data.skip_invalid`` the image is
logged and skipped instead): an image without label maps, a label map that cannot be read, that
is not a single-channel label image, or whose size differs from its image's. Every map's header
is checked; a map is decoded when its annotator is tried (and again by :meth:`Region.load`).
"""
from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from mfif.io import BenchmarkError, _open, image_size

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
LABEL_MODES = ("I;16", "I;16B", "I;16L", "I", "L", "P")  # single-channel integer label images


@dataclass(frozen=True)
class Region:
    """The chosen foreground: ``labels`` of the label map ``path`` (annotator ``annotator``)."""

    path: Path
    labels: tuple[int, ...]
    annotator: int
    fraction: float  # area / image area

    def load(self) -> np.ndarray:
        """Boolean ``[H, W]`` mask: the pixels whose label is one of :attr:`labels`."""
        return np.isin(read_labels(self.path), self.labels)


def read_labels(path: Path) -> np.ndarray:
    """A label map file -> ``int64 [H, W]``; raises naming the file when it is no label image."""
    with _open(path) as im:
        if im.mode not in LABEL_MODES:
            raise BenchmarkError(f"{path}: label map has mode {im.mode}, expected a single-channel "
                                 f"integer image (16-bit PNG, labels 1..N)")
        try:
            return np.asarray(im, dtype=np.int64)
        except (OSError, SyntaxError, ValueError) as e:
            raise BenchmarkError(f"cannot decode label map {path} (truncated or corrupt): {e}") from e


def region_rng(seed: int, image_id: str) -> np.random.Generator:
    """The generator of one image's choice: a function of (seed, id) only (crc32, not ``hash``)."""
    return np.random.default_rng([int(seed), 0xB5D5, zlib.crc32(image_id.encode())])


def touching_pairs(labels: np.ndarray) -> np.ndarray:
    """Pairs ``(a, b)``, ``a < b``, of labels that are 4-neighbours somewhere, sorted.

    Shape:
        - labels: :math:`(H, W)` non-negative integers
        - output: :math:`(P, 2)` int64
    """
    lab = np.asarray(labels, dtype=np.int64)
    h, v = lab[:, :-1] != lab[:, 1:], lab[:-1, :] != lab[1:, :]  # only boundary pixels matter
    a = np.concatenate([lab[:, :-1][h], lab[:-1, :][v]])
    b = np.concatenate([lab[:, 1:][h], lab[1:, :][v]])
    if a.size == 0:
        return np.zeros((0, 2), np.int64)
    base = int(lab.max()) + 1
    codes = np.unique(np.minimum(a, b) * base + np.maximum(a, b))  # one int per unordered pair
    return np.stack([codes // base, codes % base], 1)


def _grow_union(seed: int, areas: np.ndarray, neighbours: dict, lo: float, hi: float, n: int,
                rng: np.random.Generator) -> Optional[tuple[int, ...]]:
    # areas are compared as fractions ``px / n`` (correctly rounded, so 7 px of 100 is 0.07 exactly)
    members, area = {seed}, int(areas[seed])
    while area / n < lo:
        frontier = sorted({k for m in members for k in neighbours.get(m, ())
                           if k not in members and (area + int(areas[k])) / n <= hi})
        if not frontier:
            return None
        pick = frontier[int(rng.integers(len(frontier)))]
        members.add(pick)
        area += int(areas[pick])
    return tuple(sorted(members)) if len(members) >= 2 else None


def choose_in_map(labels: np.ndarray, area: Sequence[float], union_p: float,
                  rng: np.random.Generator) -> Optional[tuple[int, ...]]:
    """One admissible foreground of one label map (steps 2-4 of the module docstring), or None.

    Args:
        labels: integer label map ``[H, W]`` (BSDS500: labels 1..N; 0 is a label like any other).
        area: ``[lo, hi]`` fractions of ``H * W``, inclusive.
        union_p: probability of trying a union of touching regions before a single region.
        rng: the image's generator (:func:`region_rng`).

    Returns:
        The sorted labels whose union is the foreground, or None.

    Shape:
        - labels: :math:`(H, W)`
    """
    lab = np.asarray(labels, dtype=np.int64)
    if lab.ndim != 2 or lab.size == 0:
        raise ValueError(f"label map must be a non-empty [H, W] array, got shape {lab.shape}")
    if lab.min() < 0:
        raise ValueError("label map has negative labels")
    lo, hi, n = float(area[0]), float(area[1]), lab.size
    areas = np.bincount(lab.ravel())
    present = np.flatnonzero(areas)

    def single():
        ok = [int(k) for k in present if lo <= areas[k] / n <= hi]
        return (ok[int(rng.integers(len(ok)))],) if ok else None

    def union():
        neighbours: dict[int, list[int]] = {}
        for a, b in touching_pairs(lab).tolist():
            neighbours.setdefault(a, []).append(b)
            neighbours.setdefault(b, []).append(a)
        seeds = [int(k) for k in present if areas[k] / n < lo]
        for i in rng.permutation(len(seeds)):
            got = _grow_union(seeds[int(i)], areas, neighbours, lo, hi, n, rng)
            if got is not None:
                return got
        return None

    first, second = (union, single) if rng.random() < union_p else (single, union)
    return first() or second()


def choose_region(image: Path, maps: Sequence[Path], area: Sequence[float], union_p: float,
                  seed: int) -> Optional[Region]:
    """Steps 1-5 of the module docstring for one image; None when no annotator has a choice.

    Raises:
        BenchmarkError: a map is missing, unreadable, not a label image or of another size
            than ``image`` (the message names the file).
    """
    if not maps:
        raise BenchmarkError(f"{image}: image has no label map <id>_<k>.png in its segmentations folder")
    size = image_size(image)
    for m in maps:  # header only: cheap, and every annotator's map is checked
        msize = image_size(m)
        if msize != size:
            raise BenchmarkError(f"{m}: label map size {msize[0]}x{msize[1]} differs from its image "
                                 f"{image} ({size[0]}x{size[1]})")
    rng = region_rng(seed, image.stem)
    for k in rng.permutation(len(maps)).tolist():
        lab = read_labels(maps[k])
        got = choose_in_map(lab, area, union_p, rng)
        if got is not None:
            return Region(maps[k], got, k + 1, float(np.isin(lab, got).mean()))
    return None


def annotator_index(path: Path) -> int:
    """``<id>_<k>.png`` -> ``k`` (maps are tried in annotator order 1, 2, ..., 10, not by name)."""
    tail = path.stem.rpartition("_")[2]
    return int(tail) if tail.isdigit() else 1 << 30


def list_images(root: Path, splits: Sequence[str]) -> list[tuple[str, Path, list[Path]]]:
    """``(split, image, label maps)`` for every image of ``splits`` under ``root`` (sorted)."""
    if not (root / "images").is_dir() or not (root / "segmentations").is_dir():
        raise FileNotFoundError(f"{root}: expected the BSDS500 layout images/<split>/<id>.jpg + "
                                f"segmentations/<split>/<id>_<k>.png (data.root / data.bsds_dir)")
    out = []
    for split in splits:
        img_dir, seg_dir = root / "images" / split, root / "segmentations" / split
        for d in (img_dir, seg_dir):
            if not d.is_dir():
                raise FileNotFoundError(f"{d}: no such folder (data.bsds_splits lists '{split}')")
        maps: dict[str, list[Path]] = {}
        for p in seg_dir.iterdir():
            if p.suffix.lower() == ".png":
                maps.setdefault(p.stem.rpartition("_")[0], []).append(p)
        for p in sorted(q for q in img_dir.iterdir() if q.suffix.lower() in IMAGE_EXTS):
            out.append((split, p, sorted(maps.get(p.stem, []), key=annotator_index)))
    if not out:
        raise BenchmarkError(f"{root}/images: no images in the splits {list(splits)}")
    return out


def bsds500_pairs(cfg, make_pair: Callable) -> tuple[list, list[str]]:
    """Pairs (image, :class:`Region`) of a generator config, and the ids dropped for no region.

    ``make_pair(name, image, region, error)`` builds the generator's pair record
    (:class:`datamodules._synth.Pair`); an image whose maps are bad gets ``error`` set, so the
    generator's usual check raises it (or skips it with ``data.skip_invalid``).
    """
    area = [float(v) for v in cfg.region_area]
    if len(area) != 2 or not 0.0 <= area[0] <= area[1] <= 1.0:
        raise ValueError(f"data.region_area must be [lo, hi] fractions with 0 <= lo <= hi <= 1, got {area}")
    if not 0.0 <= float(cfg.region_union_p) <= 1.0:
        raise ValueError(f"data.region_union_p must lie in [0, 1], got {cfg.region_union_p}")
    root = Path(cfg.root) / cfg.bsds_dir
    pairs, dropped = [], []
    for _split, image, maps in list_images(root, list(cfg.bsds_splits)):
        try:
            region = choose_region(image, maps, area, float(cfg.region_union_p), int(cfg.seed))
        except BenchmarkError as e:
            pairs.append(make_pair(image.stem, image, None, str(e)))
            continue
        if region is None:
            dropped.append(image.stem)
        else:
            pairs.append(make_pair(image.stem, image, region, None))
    if dropped:
        log.warning("bsds500: %d of %d images have no region or union of touching regions covering "
                    "%g-%g %% of the image; dropped", len(dropped), len(dropped) + len(pairs),
                    100 * area[0], 100 * area[1])
    return pairs, dropped


def mask_of(source, native: Callable[[object], np.ndarray]) -> np.ndarray:
    """A pair's boolean focus mask: a BSDS500 :class:`Region`, else ``native(source)`` (COCO/VOC/DUTS)."""
    return source.load() if isinstance(source, Region) else native(source)
