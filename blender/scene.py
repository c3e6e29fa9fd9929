"""Sampling of MattingMFIF scene parameters (Algorithm 1 of VAEEDOF), pure Python + numpy.

Nothing here imports ``bpy``: every random quantity of a scene is drawn here from a numpy
``Generator`` seeded by ``(seed, scene_index)`` only, so a scene's content never depends on the
shard, the process, the order scenes are rendered in, or the Blender version. The renderer
(``blender/render_mattingmfif.py``) only turns a :class:`ScenePlan` into Blender objects.

Coordinate frame (the Blender world frame, metres): the camera sits at the origin looking along
``+Y`` with ``+Z`` up and ``+X`` to the right. A plane's ``distance_m`` is the depth of its centre
along the optical axis (its ``Y`` coordinate), which is also what Blender's ``focus_distance``
measures (the focal plane is perpendicular to the optical axis).

Plane order: indices ``0 .. n-1`` are the subject planes sorted near -> far, index ``n`` is the
background plane. ``focus_i.png`` is focused at ``planes[i].distance_m``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Protocol, Sequence

import numpy as np

#: Version of the ``scene.json`` schema written next to every scene.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SceneConfig:
    """Every constant of Algorithm 1 (paper defaults) plus the ranges the paper leaves open.

    Line numbers refer to Algorithm 1 ("Dataset generator algorithm") of the VAEEDOF paper
    (Piano, Huanwen, Bilcu, "Addressing the Depth-of-Field Constraint"); "Sec. 3" is its dataset section.
    """

    # Alg. 1 line 1: n <- 5 subject planes (plus one background plane, Sec. 3: "six planes").
    num_planes: int = 5
    # Alg. 1 line 6: f-stop <- random(0.1, 1.5).
    fstop_range: tuple[float, float] = (0.1, 1.5)
    # Alg. 1 line 7: focal length ("focus-length") <- random(90, 120) mm.
    focal_mm_range: tuple[float, float] = (90.0, 120.0)
    # Alg. 1 line 9: render resolution (4096, 4096).
    resolution: int = 4096
    # Alg. 1 line 10: "Disable shadows" (Sec. 3: avoids unrealistic shadows).
    shadows: bool = False
    # Alg. 1 line 11: "Set random HDR image" -- rotation of the environment about the up axis.
    # The paper does not say whether the HDR is rotated; a random yaw adds lighting variety.
    env_rotation_deg_range: tuple[float, float] = (0.0, 360.0)
    # Alg. 1 line 14: distance from camera in [1, 9.5] m (sampled uniformly, then sorted).
    subject_distance_range: tuple[float, float] = (1.0, 9.5)
    # Not in the paper: minimum spacing between subject depths (0 = paper, any spacing).
    min_distance_gap_m: float = 0.0
    # Alg. 1 line 13: "random ... scale". Paper gives no range: plane height as a fraction of
    # the field-of-view height at the plane's distance (shrunk if needed to stay inside the FOV).
    subject_scale_range: tuple[float, float] = (0.25, 0.6)
    # Alg. 1 line 16: "Apply random rotation". Paper gives no range: roll about the optical axis.
    roll_deg_range: tuple[float, float] = (-30.0, 30.0)
    # Alg. 1 line 16 (continued): pitch/yaw range. Default 0: a tilted plane spans a depth
    # range and at f/0.1 would not be entirely in focus in its own render (Sec. 3 wants exactly
    # one subject in focus per render).
    tilt_deg_range: tuple[float, float] = (0.0, 0.0)
    # Alg. 1 line 18: background plane at 10 m.
    background_distance_m: float = 10.0
    # Not in the paper: Blender's default full-frame sensor width (horizontal sensor fit).
    sensor_width_mm: float = 36.0
    # Not in the paper (no built-in sky there): sun elevation of the procedural sky, degrees.
    sun_elevation_deg_range: tuple[float, float] = (5.0, 60.0)
    # Not in the paper: mean radiance a white diffuse plane renders to (exposure normalisation
    # of HDRs/skies so photo textures keep their brightness under any environment).
    exposure_target: float = 0.8

    def validate(self) -> None:
        """Raise ``ValueError`` for inconsistent settings (message names the field)."""

        def _range(name: str, lo_min: float = -math.inf) -> None:
            lo, hi = getattr(self, name)
            if not (lo_min <= lo <= hi):
                raise ValueError(f"{name}: need {lo_min} <= min <= max, got ({lo}, {hi})")

        if self.num_planes < 1:
            raise ValueError(f"num_planes must be >= 1, got {self.num_planes}")
        if self.resolution < 8:
            raise ValueError(f"resolution must be >= 8, got {self.resolution}")
        _range("fstop_range", 1e-3)
        _range("focal_mm_range", 1.0)
        _range("subject_distance_range", 0.05)
        _range("subject_scale_range", 1e-3)
        _range("roll_deg_range")
        _range("tilt_deg_range", -45.0)
        _range("env_rotation_deg_range")
        _range("sun_elevation_deg_range", -90.0)
        if self.subject_scale_range[1] > 1.0:
            raise ValueError("subject_scale_range: max must be <= 1 (fraction of the FOV height)")
        if self.tilt_deg_range[1] > 45.0:
            raise ValueError("tilt_deg_range: max must be <= 45 degrees")
        lo, hi = self.subject_distance_range
        if self.min_distance_gap_m < 0 or (self.num_planes - 1) * self.min_distance_gap_m > hi - lo:
            raise ValueError(
                f"min_distance_gap_m={self.min_distance_gap_m} does not fit "
                f"{self.num_planes} planes into "
                f"subject_distance_range={self.subject_distance_range}"
            )
        if self.background_distance_m <= hi:
            raise ValueError(
                "background_distance_m must be farther than the subject_distance_range max"
            )


class Catalog(Protocol):
    """What the sampler needs to know about a set of images (see ``blender/assets.py``)."""

    def __len__(self) -> int: ...

    def name(self, index: int) -> str:
        """Stable identifier written to ``scene.json`` (file path relative to its folder)."""

    def aspect(self, index: int) -> float:
        """Width / height of the image (after any built-in crop)."""


@dataclass
class PlaneSpec:
    """One textured plane. ``position``/``rotation``/``matrix_world`` are in the world frame."""

    index: int
    kind: str  # "subject" or "background"
    distance_m: float
    source_index: int
    source_image: str
    scale: float  # subjects: height / FOV height at distance_m; background: size / FOV size
    size_m: tuple[float, float]  # (width, height) of the quad in metres
    rotation: dict  # roll/pitch/yaw in degrees, camera axes, applied yaw -> pitch -> roll
    position: tuple[float, float, float]
    matrix_world: list  # 4x4 row-major, maps plane-local (x: width, z: height) to world
    uv_rect: tuple[float, float, float, float]  # (u0, v0, u1, v1) texture coords of the quad
    matte: dict = field(default_factory=dict)  # generated alpha matte (used if no own alpha)
    fov_uv_rect: tuple[float, float, float, float] | None = None  # background: UVs of the FOV


@dataclass
class EnvironmentSpec:
    """Lighting: an HDR file from ``--hdris`` or Blender's procedural sky."""

    kind: str  # "hdri" or "sky"
    source_index: int
    source: str
    rotation_deg: float
    sun_elevation_deg: float
    sun_rotation_deg: float
    air_density: float
    aerosol_density: float
    ozone_density: float


@dataclass
class ScenePlan:
    """All sampled parameters of one scene (serialised into ``scene.json``)."""

    format_version: int
    seed: int
    scene_index: int
    render_seed: int
    resolution: int
    fstop: float
    focal_mm: float
    sensor_width_mm: float
    shadows: bool
    environment: EnvironmentSpec
    planes: list[PlaneSpec]
    focus_distances_m: list[float]
    config: dict

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        return asdict(self)


def scene_rng(seed: int, scene_index: int) -> np.random.Generator:
    """Generator whose stream depends only on ``(seed, scene_index)``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(scene_index)]))


def render_seed(seed: int, scene_index: int) -> int:
    """Cycles sampling seed derived from ``(seed, scene_index)`` (independent stream)."""
    state = np.random.SeedSequence([int(seed), int(scene_index), 0xC7C1E5]).generate_state(1)
    return int(state[0] % (2**31 - 1))


def tan_half_fov(focal_mm: float, sensor_width_mm: float) -> float:
    """Tangent of half the (square) field of view."""
    return sensor_width_mm / (2.0 * focal_mm)


def rotation_matrix(roll_deg: float, pitch_deg: float, yaw_deg: float) -> np.ndarray:
    """Camera-axes rotation: yaw about +Z (up), then pitch about +X, then roll about +Y (view)."""
    r, p, y = (math.radians(a) for a in (roll_deg, pitch_deg, yaw_deg))
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(r), 0, math.sin(r)], [0, 1, 0], [-math.sin(r), 0, math.cos(r)]])
    return ry @ rx @ rz


def sample_distances(rng: np.random.Generator, cfg: SceneConfig) -> list[float]:
    """Sorted subject depths in ``subject_distance_range`` with ``min_distance_gap_m`` spacing.

    Uniform over the allowed set: draw ``n`` uniforms in the range shrunk by the total gap,
    sort, then add ``k * gap`` to the k-th (Alg. 1 line 14).
    """
    lo, hi = cfg.subject_distance_range
    gap = cfg.min_distance_gap_m
    n = cfg.num_planes
    u = np.sort(rng.uniform(lo, hi - (n - 1) * gap, size=n))
    return [float(v + k * gap) for k, v in enumerate(u)]


def _centre_interval(corners: np.ndarray, axis: int, depth: float, t: float) -> tuple[float, float]:
    """Range of the centre coordinate on ``axis`` keeping all corners inside the FOV."""
    z = depth + corners[:, 1]
    lo = float(np.max(-t * z - corners[:, axis]))
    hi = float(np.min(t * z - corners[:, axis]))
    return lo, hi


def _pack_matrix(rot: np.ndarray, pos: np.ndarray) -> list:
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = pos
    return [[float(v) for v in row] for row in m]


def sample_matte(rng: np.random.Generator) -> dict:
    """Parameters of a smooth star-shaped cut-out (used when a subject has no alpha)."""
    harmonics = [int(k) for k in range(2, 7)]
    return {
        "shape": "radial_fourier",
        "radius": 0.46,
        "harmonics": harmonics,
        "amplitudes": [float(a) for a in rng.uniform(0.0, 0.07, size=len(harmonics))],
        "phases": [float(p) for p in rng.uniform(0.0, 2 * math.pi, size=len(harmonics))],
    }


def _subject_plane(rng, cfg, index, depth, t, subjects, source_index) -> PlaneSpec:
    """Alg. 1 lines 13-16: random scale, rotation and a position inside the FOV at ``depth``."""
    aspect = float(subjects.aspect(source_index))
    scale = float(rng.uniform(*cfg.subject_scale_range))
    roll = float(rng.uniform(*cfg.roll_deg_range))
    pitch, yaw = (float(v) for v in rng.uniform(*cfg.tilt_deg_range, size=2))
    u = rng.uniform(size=2)  # position inside the admissible interval (x, z)
    matte = sample_matte(rng)
    rot = rotation_matrix(roll, pitch, yaw)
    fov_h = 2.0 * t * depth
    for _ in range(200):  # shrink until the rotated quad fits the FOV (deterministic)
        h = scale * fov_h
        w = h * aspect
        if w > fov_h:  # wide subjects: fit the width instead
            h, w = h * fov_h / w, fov_h
        local = np.array([[sx * w / 2, 0.0, sz * h / 2] for sx in (-1, 1) for sz in (-1, 1)])
        corners = local @ rot.T
        xlo, xhi = _centre_interval(corners, 0, depth, t)
        zlo, zhi = _centre_interval(corners, 2, depth, t)
        if xlo <= xhi and zlo <= zhi:
            break
        scale *= 0.9
    else:  # pragma: no cover - only reachable with absurd configs
        raise RuntimeError("could not fit a subject plane inside the field of view")
    pos = np.array([xlo + u[0] * (xhi - xlo), depth, zlo + u[1] * (zhi - zlo)])
    return PlaneSpec(
        index=index,
        kind="subject",
        distance_m=float(depth),
        source_index=int(source_index),
        source_image=subjects.name(source_index),
        scale=float(h / fov_h),
        size_m=(float(w), float(h)),
        rotation={"roll_deg": roll, "pitch_deg": pitch, "yaw_deg": yaw},
        position=tuple(float(v) for v in pos),
        matrix_world=_pack_matrix(rot, pos),
        uv_rect=(0.0, 0.0, 1.0, 1.0),
        matte=matte,
    )


def _background_plane(rng, cfg, index, t, fstop, focal_mm, nearest, backgrounds) -> PlaneSpec:
    """Alg. 1 lines 18-20: plane at 10 m scaled to fill the FOV, photo as texture.

    The photo's centred square crop (random offset along its long side) maps exactly onto the
    field of view. The quad itself is larger by the defocus margin: with a wide aperture, rays
    from the lens rim reach ``R * (D / s - 1)`` beyond the pinhole FOV at depth ``D`` when
    focused at ``s``; the texture continues there mirrored, so no sky leaks into blurred renders.
    """
    src = int(rng.integers(len(backgrounds)))
    offset = float(rng.uniform())
    aspect = float(backgrounds.aspect(src))
    depth = cfg.background_distance_m
    half_fov = t * depth
    aperture_r = focal_mm * 1e-3 / (2.0 * fstop)
    half = 1.05 * (half_fov + aperture_r * max(depth / nearest - 1.0, 0.0)) + 0.01
    # Square crop of the photo in UV space: [c0, c1] along the long side.
    if aspect >= 1.0:
        cw = 1.0 / aspect
        c0 = offset * (1.0 - cw)
        fov_uv = (c0, 0.0, c0 + cw, 1.0)
    else:
        ch = aspect
        c0 = offset * (1.0 - ch)
        fov_uv = (0.0, c0, 1.0, c0 + ch)
    k = half / half_fov  # quad is k times the FOV: extend the UV rect around its centre
    cu, cv = (fov_uv[0] + fov_uv[2]) / 2, (fov_uv[1] + fov_uv[3]) / 2
    hu, hv = (fov_uv[2] - fov_uv[0]) / 2 * k, (fov_uv[3] - fov_uv[1]) / 2 * k
    pos = np.array([0.0, depth, 0.0])
    return PlaneSpec(
        index=index,
        kind="background",
        distance_m=float(depth),
        source_index=src,
        source_image=backgrounds.name(src),
        scale=float(k),
        size_m=(float(2 * half), float(2 * half)),
        rotation={"roll_deg": 0.0, "pitch_deg": 0.0, "yaw_deg": 0.0},
        position=tuple(float(v) for v in pos),
        matrix_world=_pack_matrix(np.eye(3), pos),
        uv_rect=(cu - hu, cv - hv, cu + hu, cv + hv),
        fov_uv_rect=tuple(float(v) for v in fov_uv),
    )


def _environment(rng, cfg, hdris: Sequence[str]) -> EnvironmentSpec:
    """Alg. 1 line 11: random HDR environment (or Blender's sky when no HDR folder)."""
    rot = float(rng.uniform(*cfg.env_rotation_deg_range))
    elev = float(rng.uniform(*cfg.sun_elevation_deg_range))
    air, aerosol, ozone = (float(v) for v in rng.uniform([0.5, 0.0, 0.5], [2.0, 2.0, 2.0]))
    if hdris:
        idx = int(rng.integers(len(hdris)))
        return EnvironmentSpec("hdri", idx, str(hdris[idx]), rot, elev, rot, air, aerosol, ozone)
    return EnvironmentSpec("sky", -1, "blender:sky", rot, elev, rot, air, aerosol, ozone)


def sample_scene(
    cfg: SceneConfig,
    seed: int,
    scene_index: int,
    subjects: Catalog,
    backgrounds: Catalog,
    hdris: Sequence[str] = (),
) -> ScenePlan:
    """Draw every random parameter of scene ``scene_index`` (Algorithm 1, lines 1-23).

    The draw order is fixed, so the result is a pure function of the arguments.

    Args:
        cfg: Constants and ranges.
        seed: Global dataset seed.
        scene_index: Index of the scene (0-based).
        subjects: Subject cut-outs (RGBA) to draw ``cfg.num_planes`` distinct ones from
            (with replacement only when the catalog is smaller than ``num_planes``).
        backgrounds: Background photos.
        hdris: HDR environment names; empty -> procedural sky.

    Returns:
        The scene plan; ``planes[i]`` for ``i < n`` are subjects sorted near -> far and
        ``planes[n]`` is the background.
    """
    if len(subjects) == 0 or len(backgrounds) == 0:
        raise ValueError("subjects and backgrounds must not be empty")
    rng = scene_rng(seed, scene_index)
    fstop = float(rng.uniform(*cfg.fstop_range))  # Alg. 1 line 6
    focal_mm = float(rng.uniform(*cfg.focal_mm_range))  # Alg. 1 line 7
    t = tan_half_fov(focal_mm, cfg.sensor_width_mm)
    env = _environment(rng, cfg, hdris)  # Alg. 1 line 11
    depths = sample_distances(rng, cfg)  # Alg. 1 line 14, sorted near -> far
    n = cfg.num_planes
    replace = len(subjects) < n
    picks = rng.choice(len(subjects), size=n, replace=replace)
    planes = [
        _subject_plane(rng, cfg, i, depths[i], t, subjects, int(picks[i])) for i in range(n)
    ]
    planes.append(_background_plane(rng, cfg, n, t, fstop, focal_mm, depths[0], backgrounds))
    return ScenePlan(
        format_version=FORMAT_VERSION,
        seed=int(seed),
        scene_index=int(scene_index),
        render_seed=render_seed(seed, scene_index),
        resolution=int(cfg.resolution),
        fstop=fstop,
        focal_mm=focal_mm,
        sensor_width_mm=float(cfg.sensor_width_mm),
        shadows=bool(cfg.shadows),
        environment=env,
        planes=planes,
        focus_distances_m=[p.distance_m for p in planes],  # Alg. 1 lines 22-23
        config=asdict(cfg),
    )


def shard_indices(num_scenes: int, shard: int, num_shards: int) -> list[int]:
    """Scene indices of shard ``shard`` of ``num_shards`` (strided: index % num_shards).

    The shards partition ``range(num_scenes)`` and are balanced to within one scene.
    """
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"invalid shard {shard}/{num_shards}")
    return list(range(shard, num_scenes, num_shards))


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"i/n"`` (0-based ``i``) into ``(i, n)``; raise ``ValueError`` when malformed."""
    parts = text.split("/")
    if len(parts) != 2:
        raise ValueError(f"expected i/n, got {text!r}")
    try:
        i, n = int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(f"expected integers i/n, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"need 0 <= i < n, got {text!r}")
    return i, n
