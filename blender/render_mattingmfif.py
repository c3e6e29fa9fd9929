"""Render the MattingMFIF dataset (VAEEDOF, Sec. 3 and Algorithm 1) with Blender as a module.

Usage::

    python blender/render_mattingmfif.py --out DIR --num-scenes N [--resolution 4096]
        [--samples S] [--seed K] [--subjects DIR] [--backgrounds DIR] [--hdris DIR]
        [--device cpu|cuda|optix] [--shard i/n]

Output layout (read by the MattingMFIF DataModule; ``n`` = ``--num-planes``, default 5)::

    DIR/scene_000000/
        focus_0.png ... focus_5.png   # 8-bit RGB renders with depth of field; focus_i is
                                      # focused at plane i's depth (planes 0..n-1 = subjects
                                      # sorted near -> far, plane n = background at 10 m)
        gt.png                        # 8-bit RGB all-in-focus render (DOF disabled)
        mask_0.png ... mask_5.png     # uint8 0/255: pixels where plane i is the visible
                                      # surface of gt (cut-out alpha >= 0.5); masks partition
                                      # the image
        depth.npy                     # float32 (H, W): camera-axis (Z) depth in metres of the
                                      # visible surface
        scene.json                    # every sampled parameter: seed, scene_index,
                                      # resolution, fstop, focal_mm, planes[{index, kind,
                                      # distance_m, source_image, scale, rotation, position,
                                      # ...}], focus_distances_m, environment, samples,
                                      # blender_version, outputs

All images are square (``--resolution``) and row 0 is the top of the image. A scene's content
depends only on ``(--seed, scene index)`` (and the asset folders), never on sharding.

Safety: scenes are rendered into a hidden ``DIR/.tmp-scene_XXXXXX-*`` folder and renamed into
place once every output exists, so ``scene_*`` folders are always complete; finished scenes are
skipped on re-run; leftovers of killed runs are deleted when their scene is rendered again.
Ctrl-C (SIGINT) or SIGTERM stops after the current Blender render call: the unfinished scene's
folder is deleted and the exit status is 128 + the signal number. A re-run whose settings
(seed, resolution, samples, scene flags ...) differ from those recorded in a finished scene's
``scene.json`` refuses to start (exit 2, nothing written) instead of silently keeping old scenes.
``--shard i/n`` (0-based, or ``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT``) renders scene
indices ``i, i+n, i+2n, ...``.

Testing hook: ``MFIF_RENDER_FAIL_AFTER=k`` raises inside a scene after its ``k``-th colour render.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path


from blender import layout  # noqa: E402
from blender.assets import AssetError, hdri_names, load_catalogs  # noqa: E402
from blender.progress import Reporter  # noqa: E402
from blender.scene import SceneConfig, parse_shard, sample_scene, shard_indices  # noqa: E402

DEFAULT_SAMPLES = 32
# SceneConfig field -> command-line flag (error messages name the flag).
FIELD_FLAGS = {
    "num_planes": "--num-planes",
    "resolution": "--resolution",
    "fstop_range": "--fstop",
    "focal_mm_range": "--focal-mm",
    "subject_distance_range": "--subject-distance",
    "min_distance_gap_m": "--min-gap",
    "subject_scale_range": "--scale",
    "roll_deg_range": "--roll",
    "tilt_deg_range": "--tilt",
    "background_distance_m": "--background-distance",
    "sensor_width_mm": "--sensor-width",
    "env_rotation_deg_range": "--env-rotation",
    "sun_elevation_deg_range": "--sun-elevation",
    "exposure_target": "--exposure-target",
}


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface; scene defaults are the paper's (see ``SceneConfig``)."""
    d = SceneConfig()
    p = argparse.ArgumentParser(
        description="Render MattingMFIF scenes (VAEEDOF Algorithm 1) with Blender/Cycles.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--num-scenes", type=int, required=True, help="total scenes (all shards)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed")
    p.add_argument("--subjects",
                   help="folder of RGBA cut-outs (or fg/ + alpha/); default: built-in")
    p.add_argument("--backgrounds", help="folder of background photos; default: built-in")
    p.add_argument("--hdris", help="folder of .hdr/.exr environments; default: Blender sky")
    p.add_argument("--shard", help="i/n: render indices i, i+n, ... (default: SLURM array or 0/1)")
    g = p.add_argument_group("rendering")
    g.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="Cycles samples/pixel")
    g.add_argument("--denoise", action=argparse.BooleanOptionalAction, default=True,
                   help="OpenImageDenoise on the colour renders")
    g.add_argument("--lighting", choices=("baked", "pathtraced"), default="baked",
                   help="baked: noise-free shadowless diffuse lighting measured once per plane; "
                   "pathtraced: Diffuse BSDF lit by the world at every sample")
    g.add_argument("--device", choices=("cpu", "cuda", "optix"), default="cpu",
                   help="Cycles device")
    g.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    g.add_argument("--dry-run", action="store_true",
                   help="print each scene's sampled parameters as JSON lines; render nothing")
    g.add_argument("--verbose", action="store_true", help="show Blender's own render log")
    s = p.add_argument_group("scene (Algorithm 1 constants; defaults = paper)")
    s.add_argument("--resolution", type=int, default=d.resolution,
                   help="square render size (Alg. 1 line 9)")
    s.add_argument("--num-planes", type=int, default=d.num_planes,
                   help="subject planes n (Alg. 1 line 1)")
    s.add_argument("--fstop", type=float, nargs=2, default=d.fstop_range, metavar=("MIN", "MAX"),
                   help="uniform f-stop range (Alg. 1 line 6)")
    s.add_argument("--focal-mm", type=float, nargs=2, default=d.focal_mm_range,
                   metavar=("MIN", "MAX"), help="uniform focal length range (Alg. 1 line 7)")
    s.add_argument("--subject-distance", type=float, nargs=2, default=d.subject_distance_range,
                   metavar=("MIN", "MAX"), help="metres (Alg. 1 line 14)")
    s.add_argument("--min-gap", type=float, default=d.min_distance_gap_m,
                   help="minimum depth gap between subject planes, metres")
    s.add_argument("--scale", type=float, nargs=2, default=d.subject_scale_range,
                   metavar=("MIN", "MAX"),
                   help="subject height / FOV height (Alg. 1 line 13, range not in the paper)")
    s.add_argument("--roll", type=float, nargs=2, default=d.roll_deg_range, metavar=("MIN", "MAX"),
                   help="rotation about the optical axis, degrees (Alg. 1 line 16)")
    s.add_argument("--tilt", type=float, nargs=2, default=d.tilt_deg_range, metavar=("MIN", "MAX"),
                   help="pitch and yaw range, degrees (0: subjects fully in focus in their render)")
    s.add_argument("--background-distance", type=float, default=d.background_distance_m,
                   help="metres (Alg. 1 line 18)")
    s.add_argument("--sensor-width", type=float, default=d.sensor_width_mm,
                   help="mm (Blender default; not in the paper)")
    s.add_argument("--env-rotation", type=float, nargs=2, default=d.env_rotation_deg_range,
                   metavar=("MIN", "MAX"), help="environment yaw, degrees (Alg. 1 line 11)")
    s.add_argument("--sun-elevation", type=float, nargs=2, default=d.sun_elevation_deg_range,
                   metavar=("MIN", "MAX"), help="procedural sky only, degrees")
    s.add_argument("--exposure-target", type=float, default=d.exposure_target,
                   help="linear value a white plane renders to")
    s.add_argument("--shadows", action="store_true",
                   help="planes cast shadows (Alg. 1 line 10: off); needs --lighting pathtraced")
    return p


def config_from_args(args: argparse.Namespace) -> SceneConfig:
    """SceneConfig from parsed arguments (not validated)."""
    return SceneConfig(
        num_planes=args.num_planes,
        fstop_range=tuple(args.fstop),
        focal_mm_range=tuple(args.focal_mm),
        resolution=args.resolution,
        shadows=args.shadows,
        env_rotation_deg_range=tuple(args.env_rotation),
        subject_distance_range=tuple(args.subject_distance),
        min_distance_gap_m=args.min_gap,
        subject_scale_range=tuple(args.scale),
        roll_deg_range=tuple(args.roll),
        tilt_deg_range=tuple(args.tilt),
        background_distance_m=args.background_distance,
        sensor_width_mm=args.sensor_width,
        sun_elevation_deg_range=tuple(args.sun_elevation),
        exposure_target=args.exposure_target,
    )


def resolve_shard(text: str | None, env: dict) -> tuple[int, int]:
    """``--shard i/n``, else the SLURM array task (index relative to its minimum), else 0/1."""
    if text is not None:
        try:
            return parse_shard(text)
        except ValueError as err:
            raise ValueError(f"--shard: {err}") from None
    if "SLURM_ARRAY_TASK_ID" not in env:
        return 0, 1
    try:
        task = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        count = int(env["SLURM_ARRAY_TASK_COUNT"])
    except (KeyError, ValueError):
        raise ValueError(
            "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT: need integer task id and count "
            "(or pass --shard i/n)"
        ) from None
    if not 0 <= task < count:
        raise ValueError(f"SLURM_ARRAY_TASK_ID: task {task} outside 0..{count - 1}")
    return task, count


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """Check every argument before anything is written; ``parser.error`` (exit 2) on failure."""
    if args.num_scenes < 0:
        parser.error("--num-scenes must be >= 0")
    if args.samples < 1:
        parser.error("--samples must be >= 1")
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    if args.shadows and args.lighting == "baked":
        parser.error("--shadows needs --lighting pathtraced (baked lighting is shadowless)")
    cfg = config_from_args(args)
    try:
        cfg.validate()
    except ValueError as err:
        msg = str(err)
        for field_name, flag in FIELD_FLAGS.items():
            msg = msg.replace(field_name, flag)
        parser.error(msg)
    try:
        shard = resolve_shard(args.shard, dict(os.environ))
    except ValueError as err:
        parser.error(str(err))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out: not a folder: {out}")
    try:
        catalogs = load_catalogs(args.subjects, args.backgrounds, args.hdris)
    except AssetError as err:
        parser.error(str(err))
    return cfg, shard, catalogs


def render_settings(plan, args: argparse.Namespace) -> dict:
    """What a finished scene's ``scene.json`` must record to be reused: its plan + pixel settings."""
    return {**plan.to_dict(), "samples": int(args.samples), "denoise": bool(args.denoise), "lighting": args.lighting}


def check_existing(out: Path, indices, plan_of, args: argparse.Namespace) -> list[str]:
    """Finished scenes of ``indices`` under ``out`` whose recorded settings differ from this run's."""
    bad = []
    for idx in indices:
        final = out / layout.scene_dir_name(idx)
        if layout.is_complete(final):
            diff = layout.settings_mismatch(final, render_settings(plan_of(idx), args))
            if diff:
                bad.append(f"{final.name} ({'; '.join(diff[:3])}{'; ...' if len(diff) > 3 else ''})")
    return bad


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg, (shard, num_shards), (subjects, backgrounds, hdris) = validate(parser, args)
    indices = shard_indices(args.num_scenes, shard, num_shards)
    names = hdri_names(hdris, args.hdris)

    def plan_of(idx: int):
        return sample_scene(cfg, args.seed, idx, subjects, backgrounds, names)

    if args.dry_run:
        for idx in indices:
            print(json.dumps(plan_of(idx).to_dict()))
        return 0
    stale = check_existing(Path(args.out), indices, plan_of, args)
    if stale:
        print(f"{parser.prog}: error: --out {args.out}: {len(stale)} finished scene(s) were rendered with other "
              f"settings, e.g. {stale[0]}; use another --out or delete those scenes", file=sys.stderr)
        return 2

    from blender import bpy_scene  # heavy: imports bpy

    # Ctrl-C / SIGTERM: stop after the current Blender render call (bpy itself ignores Ctrl-C)
    bpy_scene.install_stop_handlers()
    reporter = Reporter(len(indices), steps_per_scene=cfg.num_planes + 4)
    try:
        device_names = bpy_scene.select_device(bpy_scene.reset(), args.device)
    except RuntimeError as err:
        reporter.error(str(err))
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reporter.info(
        f"Blender {bpy_scene.blender_version()} | Cycles {args.device} ({device_names}) | "
        f"{args.resolution}px, {args.samples} spp, denoise={'on' if args.denoise else 'off'}, "
        f"{args.lighting} lighting | "
        f"shard {shard}/{num_shards}: {len(indices)} of {args.num_scenes} scenes -> {out}"
    )
    failed = skipped = 0
    from blender.render_scene import render_scene

    final = out
    try:
        for idx in indices:
            bpy_scene.check_stop()
            final = out / layout.scene_dir_name(idx)
            if layout.is_complete(final):
                skipped += 1
                reporter.skip(idx)
                continue
            layout.remove_stale(out, idx)
            try:
                render_scene(plan_of(idx), cfg, args, (subjects, backgrounds, hdris), out, reporter)
            except Exception as err:  # keep going with the other scenes, report at the end
                failed += 1
                hint = "" if args.verbose else " (--verbose shows the traceback)"
                reporter.error(f"{final.name} failed: {type(err).__name__}: {err}{hint}")
                if args.verbose:
                    reporter.info(traceback.format_exc())
    except bpy_scene.Interrupted as sig:  # render_scene has deleted the unfinished scene's temporary folder
        reporter.error(f"interrupted by {sig}: {final.name} not written; re-run the same command to continue")
        return 128 + sig.signum
    reporter.close(failed=failed, skipped=skipped)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
