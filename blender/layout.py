"""On-disk layout of a MattingMFIF scene and its atomic commit (pure Python, no ``bpy``).

::

    DIR/scene_000000/
        focus_0.png ... focus_{n}.png   # 8-bit RGB; focus_i focused at plane i's depth
        gt.png                          # 8-bit RGB all-in-focus (DOF off)
        mask_0.png ... mask_{n}.png     # 8-bit 0/255: plane i visible in gt (alpha >= 0.5)
        depth.npy                       # float32 (H, W), camera-axis depth in metres
        scene.json                      # every sampled parameter, seed, render settings

Planes ``0 .. n-1`` are the subjects sorted near -> far, plane ``n`` is the background.

A scene is rendered into ``DIR/.tmp-scene_XXXXXX-<pid>-<random>/`` and renamed to
``DIR/scene_XXXXXX`` only after every output exists (``scene.json`` is written last), so a
``scene_*`` folder is always complete; a killed run leaves at most a hidden ``.tmp-*`` folder,
which the next run covering that scene deletes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

SCENE_JSON = "scene.json"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"


def scene_dir_name(index: int) -> str:
    """``scene_000042`` for index 42."""
    return f"scene_{index:06d}"


def output_files(num_planes: int) -> list[str]:
    """Every file of a scene with ``num_planes`` subject planes (``num_planes + 1`` planes)."""
    k = num_planes + 1
    return (
        [f"focus_{i}.png" for i in range(k)]
        + ["gt.png"]
        + [f"mask_{i}.png" for i in range(k)]
        + ["depth.npy", SCENE_JSON]
    )


def is_complete(scene_dir: Path) -> bool:
    """True when ``scene_dir`` holds ``scene.json`` and every file it lists."""
    meta = scene_dir / SCENE_JSON
    if not meta.is_file():
        return False
    try:
        files = json.loads(meta.read_text())["outputs"]["files"]
    except (ValueError, KeyError, TypeError):
        return False
    return all((scene_dir / f).is_file() for f in files)


def settings_mismatch(scene_dir: Path, expected: dict) -> list[str]:
    """``"key: stored -> requested"`` for every key of ``expected`` that ``scene.json`` records otherwise.

    ``expected`` is the JSON form of the scene plan plus the render settings that change the
    pixels (samples, denoise, lighting); an unreadable ``scene.json`` counts as a mismatch.
    """
    try:
        stored = json.loads((scene_dir / SCENE_JSON).read_text())
    except (OSError, ValueError) as err:
        return [f"{SCENE_JSON} unreadable ({err})"]
    expected = json.loads(json.dumps(expected))  # tuples -> lists, as stored
    return [f"{k}: {stored.get(k)!r} -> {v!r}" for k, v in expected.items() if stored.get(k) != v]


def remove_stale(out_dir: Path, index: int) -> list[Path]:
    """Delete leftovers of killed runs for scene ``index`` (temporary and trash folders)."""
    name = scene_dir_name(index)
    removed = []
    for prefix in (TMP_PREFIX, TRASH_PREFIX):
        for path in out_dir.glob(f"{prefix}{name}-*"):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def make_tmp_dir(out_dir: Path, index: int) -> Path:
    """Fresh hidden temporary folder for scene ``index`` inside ``out_dir`` (same filesystem)."""
    prefix = f"{TMP_PREFIX}{scene_dir_name(index)}-{os.getpid()}-"
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=out_dir))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)  # mkdtemp makes 0700; scenes should be shareable
    return path


def commit(tmp_dir: Path, final_dir: Path) -> bool:
    """Atomically move a finished scene into place.

    Returns:
        ``True`` if ``tmp_dir`` became ``final_dir``; ``False`` if another process committed the
        same scene first (then ``tmp_dir`` is deleted). An incomplete ``final_dir`` (e.g. a file
        deleted by hand) is replaced; in between the scene is briefly absent, never partial.
    """
    if not is_complete(tmp_dir):
        raise RuntimeError(f"refusing to commit incomplete scene folder {tmp_dir}")
    if final_dir.exists() and not is_complete(final_dir):
        trash = final_dir.with_name(f"{TRASH_PREFIX}{final_dir.name}-{os.getpid()}")
        os.rename(final_dir, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(tmp_dir, final_dir)
    except OSError:
        if is_complete(final_dir):
            shutil.rmtree(tmp_dir, ignore_errors=True)
            return False
        raise
    return True


def write_masks(ids: np.ndarray, num_planes_total: int, folder: Path) -> list[float]:
    """Write ``mask_i.png`` (0/255) for each plane; returns the visible fraction per plane."""
    from PIL import Image

    fractions = []
    for i in range(num_planes_total):
        m = ids == i
        Image.fromarray((m * 255).astype(np.uint8), "L").save(folder / f"mask_{i}.png")
        fractions.append(float(m.mean()))
    return fractions


def write_depth(depth: np.ndarray, folder: Path) -> None:
    """Write ``depth.npy`` (float32 metres, camera-axis depth)."""
    np.save(folder / "depth.npy", np.asarray(depth, dtype=np.float32))


def write_json(data: dict, path: Path) -> None:
    """Write JSON via a temporary file + rename (never a truncated ``scene.json``)."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False))
    os.replace(tmp, path)
