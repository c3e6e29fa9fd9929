"""Real multi-focus benchmarks on disk: scene discovery, manifests and scene checks.

Used by every method's test/predict step (``data.benchmark``), the metrics CLI and the parity and
sweep tools. :func:`discover_scenes` reads a folder *as it is* and finds its
scenes (source sets) with these layouts, checked in this order for each folder:

1. **One sub-folder per source** (MFI-WHU release): only ``source_1/``, ``source_2/`` ...
   (also ``sourceA``, ``src_2``) and an optional ``full_clear/`` (or ``gt/``) ground-truth
   folder; files are matched across the sub-folders by name.
2. **Image files in the folder**: grouped into scenes by file name (:mod:`mfif.naming`):
   ``name-A/-B[-C]``, ``name_1/_2``, ``nameA/nameB``, ``name1/name2[/name3]`` (classic grayscale
   set), ``lytro-NN-A``, ``mffw_NN_A``, ``MFI-WHU_NN_A``. A folder whose files form exactly one
   set (a focal stack ``V001..V065``, a per-scene folder ``scene/1.png, 2.png``) is *one* scene
   named after the folder; a sub-folder whose files follow no convention is one scene too, its
   sources sorted by file name. Ground-truth files (``name_ground``, ``name-GT``, ``gt.png``)
   are attached to their scene; masks and depth maps are ignored. Sub-folders of a folder that
   has its own images are not read (``lytro/triple`` is a separate set: discover it on its own).
3. **Only sub-folders**: each is read recursively; scene names are the relative paths
   (``ILSVRC2012_test_00000004/23`` in the UFA training-set layout).

Errors name the file: empty folder, a set with one source, an unreadable or truncated image,
sources of different sizes, a missing ground truth when ``gt_dir`` is given. With
``skip_invalid=True`` such scenes are logged and counted instead.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch.utils.data import Dataset

from mfif.io import BenchmarkError, ImageReadError, PathLike, image_size, load_image
from mfif.naming import GT_DIRS, SOURCE_DIR, _squash, gt_scene, is_ignored, is_image, parse_stem, strip_key

__all__ = ["BenchmarkError", "ImageReadError", "Scene", "discover_scenes", "write_manifest", "read_manifest", "check_scene",
           "BenchmarkDataset"]

log = logging.getLogger(__name__)


@dataclass
class Scene:
    """One set of aligned sources of the same view, ordered, with optional ground truth."""

    name: str
    sources: list[Path]
    gt: Optional[Path] = None


# ----------------------------------------------------------------------------- discovery
class _Collector:
    """Scenes found so far and the problems met (raised or skipped at the end)."""

    def __init__(self) -> None:
        self.scenes: list[Scene] = []
        self.problems: list[tuple[str, str]] = []  # (path or scene, reason)

    def problem(self, where: PathLike, reason: str) -> None:
        self.problems.append((str(where), reason))


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _group_files(folder: Path, rel: str, files: list[Path], out: _Collector) -> None:
    gts: dict[str, Path] = {}
    groups: dict[str, list] = defaultdict(list)
    loose: list[Path] = []
    for f in files:
        if is_ignored(f.stem):
            continue
        g = gt_scene(f.stem)
        if g is not None:
            if g in gts:
                out.problem(f, f"two ground-truth files for one scene: {gts[g].name} and {f.name}")
            gts[g] = f
            continue
        parsed = parse_stem(f.stem)
        if parsed is None:
            loose.append(f)
        else:
            groups[parsed[0]].append((parsed[1], f))
    folder_name = rel or folder.name
    sets = {k: v for k, v in groups.items() if len(v) >= 2}
    if len(groups) == 1 and not loose and sets:  # the whole folder is one scene (stack, per-scene folder)
        (members,) = sets.values()
        _add(out, folder_name, members, gts.pop(next(iter(gts))) if len(gts) == 1 else gts.get(next(iter(sets))))
        return
    if not sets and len(groups) + len(loose) >= 2 and (rel or not groups):
        # no convention: every file of the folder is a source of one scene, sorted by name
        members = sorted([f for v in groups.values() for _, f in v] + loose, key=lambda p: p.name)
        _add(out, folder_name, [(i, f) for i, f in enumerate(members)], next(iter(gts.values())) if len(gts) == 1 else None)
        return
    for scene, members in sorted(groups.items()):
        if len(members) < 2:
            out.problem(members[0][1], "a set with one source (no partner file with the same scene name)")
            continue
        name = _join(rel, scene) if scene else folder_name
        _add(out, name, members, gts.pop(scene, None))
    for f in loose:
        out.problem(f, "file name follows no source convention (name-A, name_1, nameA, name1 ...)")
    for g, f in gts.items():
        log.warning("ground truth %s matches no scene in %s; ignored", f, folder)


def _add(out: _Collector, name: str, members: list, gt: Optional[Path]) -> None:
    keys = [k for k, _ in members]
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        files = sorted(str(f) for k, f in members if k in dupes)
        out.problem(files[0], f"scene '{name}' has two files for the same source: {files}")
        return
    srcs = [f for _, f in sorted(members, key=lambda kf: getattr(kf[0], "sort_key", kf[0]))]
    out.scenes.append(Scene(name=name, sources=srcs, gt=gt))


def _scan_source_dirs(rel: str, src_dirs: list[Path], gt_dir: Optional[Path], out: _Collector) -> None:
    def key(d: Path):
        k = SOURCE_DIR.match(d.name).group("key")
        return (0, int(k)) if k.isdigit() else (1, k.upper())

    src_dirs = sorted(src_dirs, key=key)
    listing = [{f.stem: f for f in sorted(d.iterdir()) if is_image(f)} for d in src_dirs]
    common = set(listing[0]).intersection(*listing[1:])
    if not common:  # x_1.jpg in source_1/, x_2.jpg in source_2/: match on the scene part
        listing = [{strip_key(s): f for s, f in m.items()} for m in listing]
    gts = {f.stem: f for f in sorted(gt_dir.iterdir()) if is_image(f)} if gt_dir else {}
    for stem in sorted(set().union(*listing)):
        files = [m.get(stem) for m in listing]
        missing = [d.name for d, f in zip(src_dirs, files) if f is None]
        if missing:
            present = next(f for f in files if f is not None)
            out.problem(present, f"scene '{stem}' has no file in {missing}")
            continue
        gt = gts.get(stem) or gts.get(strip_key(stem))
        out.scenes.append(Scene(name=_join(rel, stem), sources=files, gt=gt))


def _scan(folder: Path, rel: str, out: _Collector) -> None:
    entries = sorted(folder.iterdir(), key=lambda p: p.name)
    subdirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    files = [p for p in entries if is_image(p)]
    src_dirs = [d for d in subdirs if SOURCE_DIR.match(d.name)]
    gt_dirs = [d for d in subdirs if _squash(d.name) in GT_DIRS]
    if len(src_dirs) >= 2 and not files and len(src_dirs) + len(gt_dirs) == len(subdirs):
        _scan_source_dirs(rel, src_dirs, gt_dirs[0] if gt_dirs else None, out)
        return
    if files:
        if subdirs:
            log.info("%s: reading its %d images; sub-folders %s are not read (discover them separately)",
                     folder, len(files), [d.name for d in subdirs])
        _group_files(folder, rel, files, out)
        return
    for d in subdirs:
        _scan(d, _join(rel, d.name), out)


def _attach_gt_dir(scenes: list[Scene], gt_dir: Path, out: _Collector) -> None:
    if not gt_dir.is_dir():
        raise BenchmarkError(f"gt_dir {gt_dir} is not a folder")
    index: dict[str, Path] = {}
    for f in sorted(gt_dir.rglob("*")):
        if not is_image(f):
            continue
        rel_stem = f.relative_to(gt_dir).with_suffix("").as_posix()
        for k in (rel_stem, f.stem, gt_scene(f.stem), strip_key(f.stem)):
            if k:
                index.setdefault(k, f)
    for s in scenes:
        cands = (s.name, s.name.replace("/", "_"), s.name.rsplit("/", 1)[-1])
        hit = next((index[c] for c in cands if c in index), None)
        if hit is None:
            out.problem(s.name, f"no ground truth for scene '{s.name}' in gt_dir {gt_dir} (looked for {list(cands)})")
        s.gt = hit


def discover_scenes(
    root: PathLike,
    gt_dir: PathLike | None = None,
    manifest: PathLike | None = None,
    *,
    skip_invalid: bool = False,
    skipped: Optional[list] = None,
) -> list[Scene]:
    """Find the scenes of a benchmark folder (layouts: module docstring), sorted by name.

    Args:
        root: benchmark folder.
        gt_dir: optional folder of ground-truth images, matched to scenes by name
            (``lytro-01.png``, ``lytro-01_gt.png`` ...); every scene must then have one.
        manifest: optional ``.csv``/``.json`` path. If it exists, the scenes are read from it
            (reproducible runs) instead of discovered; otherwise they are discovered and written
            to it.
        skip_invalid: log and drop invalid sets instead of raising.
        skipped: if a list is given, ``(file or scene, reason)`` of each dropped set is appended.

    Returns:
        Scenes sorted by name.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        BenchmarkError: empty folder, a one-source set, an unmatched file, missing ground truth.
    """
    if manifest is not None and Path(manifest).is_file():
        return read_manifest(manifest)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"benchmark folder {root} does not exist or is not a folder")
    out = _Collector()
    _scan(root, "", out)
    if gt_dir is not None:
        _attach_gt_dir(out.scenes, Path(gt_dir), out)
    bad_names = {w for w, _ in out.problems}
    scenes = [s for s in out.scenes if s.name not in bad_names]
    if out.problems:
        where, why = out.problems[0]
        if not skip_invalid:
            more = f" (and {len(out.problems) - 1} more problems)" if len(out.problems) > 1 else ""
            raise BenchmarkError(f"{where}: {why}{more}; pass skip_invalid=True to skip such sets")
        for where, why in out.problems:
            log.warning("skipping %s: %s", where, why)
        if skipped is not None:
            skipped.extend(out.problems)
    if not scenes:
        raise BenchmarkError(f"no source sets (N >= 2 aligned images) found under {root}")
    scenes.sort(key=lambda s: s.name)
    if manifest is not None:
        write_manifest(scenes, manifest)
    return scenes


# ----------------------------------------------------------------------------- manifests
def _rel(p: Path, base: Path) -> str:
    try:
        return os.path.relpath(Path(p).resolve(), base.resolve())
    except ValueError:  # another drive (Windows)
        return str(Path(p).resolve())


def write_manifest(scenes: list[Scene], path: PathLike) -> None:
    """Write scenes to ``path`` (``.csv``: rows ``scene,role,path``; ``.json``: a list).

    File paths are stored relative to the manifest's folder, so data and manifest can move
    together.
    """
    path = Path(path)
    base = path.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        data = {"version": 1, "scenes": [
            {"name": s.name, "sources": [_rel(p, base) for p in s.sources], "gt": _rel(s.gt, base) if s.gt else None}
            for s in scenes]}
        path.write_text(json.dumps(data, indent=1))
    elif path.suffix.lower() == ".csv":
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["scene", "role", "path"])
            for s in scenes:
                w.writerows([s.name, "source", _rel(p, base)] for p in s.sources)
                if s.gt:
                    w.writerow([s.name, "gt", _rel(s.gt, base)])
    else:
        raise BenchmarkError(f"manifest {path}: extension must be .csv or .json")


def read_manifest(path: PathLike) -> list[Scene]:
    """Read a manifest written by :func:`write_manifest` (relative paths: from its folder)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    base = path.parent
    res = lambda p: Path(p) if Path(p).is_absolute() else base / p  # noqa: E731
    scenes: dict[str, Scene] = {}
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            for d in data["scenes"] if isinstance(data, dict) else data:
                scenes[d["name"]] = Scene(d["name"], [res(p) for p in d["sources"]], res(d["gt"]) if d.get("gt") else None)
        elif path.suffix.lower() == ".csv":
            with path.open(newline="") as fh:
                for row in csv.DictReader(fh):
                    s = scenes.setdefault(row["scene"], Scene(row["scene"], []))
                    if row["role"] == "gt":
                        s.gt = res(row["path"])
                    elif row["role"] == "source":
                        s.sources.append(res(row["path"]))
                    else:
                        raise BenchmarkError(f"manifest {path}: unknown role '{row['role']}' (source|gt)")
        else:
            raise BenchmarkError(f"manifest {path}: extension must be .csv or .json")
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise BenchmarkError(f"manifest {path} is malformed: {e!r}") from e
    return sorted(scenes.values(), key=lambda s: s.name)


# ----------------------------------------------------------------------------- dataset
def check_scene(scene: Scene, decode: bool = False) -> None:
    """Raise a :class:`BenchmarkError` naming the file if ``scene`` cannot be loaded.

    Checks N >= 2, that every file opens, and equal sizes (header only, cheap); with
    ``decode=True`` every file is also fully decoded (finds truncated files).
    """
    if len(scene.sources) < 2:
        where = scene.sources[0] if scene.sources else scene.name
        raise BenchmarkError(f"{where}: scene '{scene.name}' has {len(scene.sources)} source(s); fusion needs >= 2")
    files = list(scene.sources) + ([scene.gt] if scene.gt else [])
    size0 = image_size(files[0])
    for f in files[1:]:
        size = image_size(f)
        if size != size0:
            raise BenchmarkError(f"{f}: size {size[0]}x{size[1]} differs from {files[0]} ({size0[0]}x{size0[1]}) "
                                 f"in scene '{scene.name}'; sources must be aligned and equal in size")
    if decode:
        for f in files:
            load_image(f)


# ----------------------------------------------------------------------------- dataset
def keep_valid(items: Sequence, check: Callable[[object], None], skip_invalid: bool,
               label: str = "{}") -> tuple[list, list[tuple[str, str]]]:
    """``(kept, skipped)``: the items ``check`` accepts; a :class:`BenchmarkError` is raised, or with
    ``skip_invalid`` logged (``skipping <label>: <why>``) and recorded as ``(name, why)``.

    Used for benchmark scenes and for the training generators' image pairs (anything with ``.name``).
    """
    kept, skipped = [], []
    for item in items:
        try:
            check(item)
        except BenchmarkError as e:
            if not skip_invalid:
                raise
            log.warning("skipping %s: %s", label.format(item.name), e)
            skipped.append((item.name, str(e)))
            continue
        kept.append(item)
    return kept, skipped


class BenchmarkDataset(Dataset):
    """Real aligned source sets for test/predict: one item per scene.

    Items are ``{"sources": [N, C, H, W], "name": str, "gt": [C, H, W]}`` (``gt`` only when the
    scene has one). C is 1 when every file of a scene is gray, else 3 (gray files replicated);
    ``gray=True`` gives C = 1 (MATLAB weights).

    Args:
        scenes: from :func:`discover_scenes` or :func:`read_manifest`.
        gray: load single-channel.
        skip_invalid: check every file fully now (decoding it) and drop bad scenes, logging
            them; ``skipped`` lists ``(scene, reason)`` and ``num_skipped`` counts them. Without
            it, sizes and headers are checked now and decoding errors raise on access.

    Raises:
        BenchmarkError: no scenes, or a bad scene (message names the file).
    """

    def __init__(self, scenes: list[Scene], gray: bool = False, skip_invalid: bool = False):
        if not scenes:
            raise BenchmarkError("BenchmarkDataset needs at least one scene, got none")
        self.gray = gray
        self.scenes, self.skipped = keep_valid(
            scenes, lambda s: check_scene(s, decode=skip_invalid), skip_invalid, "scene '{}'")
        if not self.scenes:
            raise BenchmarkError(f"all {len(scenes)} scenes are invalid; first: {self.skipped[0][1]}")

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> dict:
        s = self.scenes[i]
        imgs = [load_image(p, gray=self.gray) for p in s.sources]
        gt = load_image(s.gt, gray=self.gray) if s.gt else None
        c = max(t.shape[0] for t in imgs + ([gt] if gt is not None else []))
        fix = lambda t: t.expand(c, -1, -1) if t.shape[0] != c else t  # noqa: E731
        item = {"sources": torch.stack([fix(t) for t in imgs]).contiguous(), "name": s.name}
        if gt is not None:
            item["gt"] = fix(gt).contiguous()
        return item
