"""Image sources for MattingMFIF scenes: built-in defaults and user folders (no ``bpy``).

The paper's sources (Distinctions-646 / PhotoMatte85 subjects, BG-20K / LIU4K backgrounds, HDRs)
cannot be downloaded here, so they come from folders given on the command line. Without folders
the renderer uses built-in defaults that need no download:

* subjects: crops of the photos bundled with scikit-image (``skimage.data``: astronaut, coffee,
  chelsea, rocket, ...) cut out with a generated smooth alpha matte (see
  :func:`generated_matte`); scikit-image's logo is an RGBA cut-out and keeps its own alpha;
* backgrounds: other bundled photos/textures plus procedural 1/f colour noise;
* lighting: Blender's procedural sky (handled by the renderer, nothing here).

Built-ins are small (300-1400 px), so at 4096x4096 they are upsampled; use folders for real data.

Folder formats: ``--subjects`` holds RGBA cut-outs (``png``/``tif``/``webp``; images without
alpha get a generated matte) or a Distinctions-646/AM-2k style pair of sub-folders ``fg/`` and
``alpha/`` with matching file stems. ``--backgrounds`` holds any RGB(A) images. ``--hdris`` holds
``.hdr``/``.exr`` equirectangular environments. Folders are searched recursively; names in
``scene.json`` are paths relative to the folder.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
HDRI_EXTS = (".hdr", ".exr")

# (skimage.data function, crop box (x0, y0, x1, y1) as fractions of width/height, top-left origin)
BUILTIN_SUBJECTS: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("astronaut", (0.0, 0.0, 1.0, 1.0)),
    ("astronaut", (0.3, 0.0, 0.75, 0.6)),
    ("coffee", (0.0, 0.0, 1.0, 1.0)),
    ("coffee", (0.2, 0.05, 0.85, 0.95)),
    ("chelsea", (0.0, 0.0, 1.0, 1.0)),
    ("chelsea", (0.25, 0.0, 0.85, 0.9)),
    ("rocket", (0.0, 0.0, 1.0, 1.0)),
    ("rocket", (0.3, 0.0, 0.7, 1.0)),
    ("hubble_deep_field", (0.0, 0.0, 1.0, 1.0)),
    ("immunohistochemistry", (0.0, 0.0, 1.0, 1.0)),
    ("retina", (0.1, 0.1, 0.9, 0.9)),
    ("colorwheel", (0.0, 0.0, 1.0, 1.0)),
    ("camera", (0.1, 0.0, 0.9, 1.0)),
    ("logo", (0.0, 0.0, 1.0, 1.0)),  # RGBA: own alpha
)
BUILTIN_BACKGROUNDS: tuple[str, ...] = (
    "skimage:brick",
    "skimage:grass",
    "skimage:gravel",
    "skimage:hubble_deep_field",
    "skimage:coffee",
    "skimage:rocket",
    "skimage:astronaut",
    "skimage:immunohistochemistry",
    "procedural:noise-0",
    "procedural:noise-1",
    "procedural:noise-2",
    "procedural:noise-3",
)
PROCEDURAL_SIZE = 1024


class AssetError(ValueError):
    """Bad asset folder; ``argument`` names the command-line option it came from."""

    def __init__(self, argument: str, message: str):
        super().__init__(f"{argument}: {message}")
        self.argument = argument


@lru_cache(maxsize=None)
def _skimage_photo(name: str) -> np.ndarray:
    """RGB(A) uint8 array of a bundled scikit-image photo (grayscale -> RGB)."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img.astype(np.uint8)


def _crop(img: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    h, w = img.shape[:2]
    x0, y0, x1, y1 = box
    return img[int(round(y0 * h)) : int(round(y1 * h)), int(round(x0 * w)) : int(round(x1 * w))]


@lru_cache(maxsize=4)
def procedural_noise(index: int, size: int = PROCEDURAL_SIZE) -> np.ndarray:
    """Deterministic 1/f colour noise (uint8 RGB, ``size``x``size``): texture at every scale.

    Cached per process; treat the returned array as read-only.
    """
    rng = np.random.default_rng(np.random.SeedSequence([0x6E6F, int(index)]))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    amp = f ** -(1.0 + 0.25 * (index % 3))  # slightly different spectra per index
    amp[0, 0] = 0.0
    out = np.empty((size, size, 3))
    for c in range(3):
        phase = rng.uniform(0, 2 * np.pi, size=amp.shape)
        field = np.fft.irfft2(amp * np.exp(1j * phase), s=(size, size))
        out[..., c] = (field - field.mean()) / (field.std() + 1e-12)
    mix = rng.normal(size=(3, 3)) * 0.35 + np.eye(3) * 0.25  # random palette
    out = out @ mix.T
    out = 0.5 + 0.16 * out / (out.std(axis=(0, 1)) + 1e-12)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def generated_matte(height: int, width: int, params: dict) -> np.ndarray:
    """Anti-aliased star-shaped alpha matte (float32 in [0, 1]) from ``scene.sample_matte``.

    Radius in normalised coordinates (the image's inscribed ellipse has radius 1):
    ``r(theta) = 2 * radius * (1 + sum_k a_k cos(k theta + phi_k))``; the edge is ~1 px wide.
    """
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    nx = (xs + 0.5) / width * 2 - 1
    ny = (ys + 0.5) / height * 2 - 1
    rho = np.hypot(nx, ny)
    theta = np.arctan2(ny, nx)
    edge = np.ones_like(theta)
    for k, a, p in zip(params["harmonics"], params["amplitudes"], params["phases"]):
        edge += a * np.cos(k * theta + p)
    edge *= 2 * params["radius"]
    px = min(height, width) / 2.0  # normalised units -> pixels
    return np.clip(0.5 + (edge - rho) * px, 0.0, 1.0).astype(np.float32)


def _save_rgba(rgb: np.ndarray, alpha: np.ndarray | None, path: Path) -> Path:
    from PIL import Image

    rgb = np.asarray(rgb, dtype=np.uint8)[..., :3]
    if alpha is None:
        Image.fromarray(rgb, "RGB").save(path)
    else:
        a = np.clip(np.asarray(alpha, dtype=np.float64) * 255 + 0.5, 0, 255).astype(np.uint8)
        Image.fromarray(np.dstack([rgb, a]), "RGBA").save(path)
    return path


class BuiltinSubjects:
    """Crops of bundled scikit-image photos (``BUILTIN_SUBJECTS``)."""

    def __len__(self) -> int:
        return len(BUILTIN_SUBJECTS)

    def name(self, index: int) -> str:
        photo, box = BUILTIN_SUBJECTS[index]
        return f"skimage:{photo}[{','.join(f'{v:g}' for v in box)}]"

    def image(self, index: int) -> np.ndarray:
        photo, box = BUILTIN_SUBJECTS[index]
        return _crop(_skimage_photo(photo), box)

    def aspect(self, index: int) -> float:
        h, w = self.image(index).shape[:2]
        return w / h

    def materialize(self, index: int, matte: dict | None, workdir: Path) -> Path:
        """Write the RGBA cut-out for Blender and return its path."""
        img = self.image(index)
        alpha = img[..., 3] / 255.0 if img.shape[2] == 4 else None
        if alpha is None:
            alpha = generated_matte(img.shape[0], img.shape[1], matte)
        return _save_rgba(img, alpha, workdir / f"subject_{index:03d}.png")


class BuiltinBackgrounds:
    """Bundled scikit-image photos/textures and procedural noise (``BUILTIN_BACKGROUNDS``)."""

    def __len__(self) -> int:
        return len(BUILTIN_BACKGROUNDS)

    def name(self, index: int) -> str:
        return BUILTIN_BACKGROUNDS[index]

    def image(self, index: int) -> np.ndarray:
        kind, ident = BUILTIN_BACKGROUNDS[index].split(":", 1)
        if kind == "procedural":
            return procedural_noise(int(ident.rsplit("-", 1)[1]))
        return _skimage_photo(ident)[..., :3]

    def aspect(self, index: int) -> float:
        if BUILTIN_BACKGROUNDS[index].startswith("procedural:"):
            return 1.0
        h, w = self.image(index).shape[:2]
        return w / h

    def materialize(self, index: int, matte: dict | None, workdir: Path) -> Path:
        """Write the background as an RGB PNG for Blender and return its path."""
        return _save_rgba(self.image(index), None, workdir / f"background_{index:03d}.png")


def _list_files(root: Path, exts: tuple[str, ...]) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in filenames if f.lower().endswith(exts)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _checked_dir(argument: str, folder: str | os.PathLike) -> Path:
    path = Path(folder)
    if not path.exists():
        raise AssetError(argument, f"folder does not exist: {path}")
    if not path.is_dir():
        raise AssetError(argument, f"not a folder: {path}")
    return path


class FolderImages:
    """Images under a folder (recursive, sorted by relative path).

    For subjects, a folder with ``fg/`` and ``alpha/`` sub-folders is read as foreground/alpha
    pairs matched by file stem (Distinctions-646 / AM-2k layout).
    """

    def __init__(self, folder: str | os.PathLike, argument: str):
        self.root = _checked_dir(argument, folder)
        self.argument = argument
        subs = {p.name.lower(): p for p in self.root.iterdir() if p.is_dir()}
        self.alpha_by_stem: dict[str, Path] = {}
        if "fg" in subs and "alpha" in subs:
            self.files = _list_files(subs["fg"], IMAGE_EXTS)
            self.alpha_by_stem = {p.stem: p for p in _list_files(subs["alpha"], IMAGE_EXTS)}
            missing = [p.name for p in self.files if p.stem not in self.alpha_by_stem]
            if missing:
                raise AssetError(argument, f"no alpha/ image for fg/{missing[0]} in {self.root}")
        else:
            self.files = _list_files(self.root, IMAGE_EXTS)
        if not self.files:
            raise AssetError(
                argument, f"no images ({', '.join(IMAGE_EXTS)}) found in {self.root}"
            )
        self._aspects: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.files)

    def name(self, index: int) -> str:
        return self.files[index].relative_to(self.root).as_posix()

    def aspect(self, index: int) -> float:
        if index not in self._aspects:
            from PIL import Image

            try:
                with Image.open(self.files[index]) as im:
                    w, h = im.size
            except OSError as err:
                raise AssetError(self.argument, f"cannot read {self.files[index]}: {err}") from err
            self._aspects[index] = w / h
        return self._aspects[index]

    def materialize(self, index: int, matte: dict | None, workdir: Path) -> Path:
        """Path of an image for Blender: the file itself when it has alpha or ``matte`` is
        ``None`` (backgrounds); else an RGBA copy with the ``alpha/`` or generated matte."""
        from PIL import Image

        path = self.files[index]
        alpha_path = self.alpha_by_stem.get(path.stem)
        with Image.open(path) as im:
            has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            if alpha_path is None and (has_alpha or matte is None):
                return path
            rgb = np.asarray(im.convert("RGB"))
        if alpha_path is not None:
            with Image.open(alpha_path) as am:
                alpha = np.asarray(am.convert("L").resize(rgb.shape[1::-1])) / 255.0
        else:
            alpha = generated_matte(rgb.shape[0], rgb.shape[1], matte)
        return _save_rgba(rgb, alpha, workdir / f"subject_{index:06d}.png")


def list_hdris(folder: str | os.PathLike) -> list[Path]:
    """HDR environments under ``folder`` (``--hdris``); raises :class:`AssetError` if none."""
    root = _checked_dir("--hdris", folder)
    files = _list_files(root, HDRI_EXTS)
    if not files:
        raise AssetError("--hdris", f"no HDR images ({', '.join(HDRI_EXTS)}) found in {root}")
    return files


def load_catalogs(subjects: str | None, backgrounds: str | None, hdris: str | None):
    """Build (subjects, backgrounds, hdri paths) from CLI folders or built-in defaults."""
    subj = FolderImages(subjects, "--subjects") if subjects else BuiltinSubjects()
    bg = FolderImages(backgrounds, "--backgrounds") if backgrounds else BuiltinBackgrounds()
    env = list_hdris(hdris) if hdris else []
    return subj, bg, env


def hdri_names(paths: list[Path], folder: str | None) -> list[str]:
    """Names of HDR files relative to their folder (what ``scene.json`` records)."""
    if not folder:
        return []
    return [p.relative_to(Path(folder)).as_posix() for p in paths]


__all__ = [
    "AssetError",
    "BuiltinBackgrounds",
    "BuiltinSubjects",
    "FolderImages",
    "generated_matte",
    "hdri_names",
    "list_hdris",
    "load_catalogs",
    "procedural_noise",
]
