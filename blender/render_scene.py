"""Render one MattingMFIF scene into a temporary folder and commit it atomically (uses ``bpy``).

See ``blender/layout.py`` for the folder layout and ``blender/bpy_scene.py`` for the passes.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from blender import bpy_scene, layout
from blender.scene import SceneConfig, ScenePlan

FAIL_AFTER_ENV = "MFIF_RENDER_FAIL_AFTER"  # testing hook: raise after k colour renders


def _fail_after() -> int | None:
    value = os.environ.get(FAIL_AFTER_ENV)
    return int(value) if value else None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def render_scene(
    plan: ScenePlan, cfg: SceneConfig, args, catalogs, out_dir: Path, reporter
) -> Path:
    """Render every output of ``plan`` and move the finished folder to ``out_dir/scene_X``.

    Args:
        plan: Sampled scene (``blender.scene.sample_scene``).
        cfg: Scene constants (``exposure_target`` is used here).
        args: Parsed CLI namespace (``samples``, ``denoise``, ``threads``, ``device``,
            ``verbose``).
        catalogs: ``(subjects, backgrounds, hdri_paths)`` from ``blender.assets``.
        out_dir: Dataset folder.
        reporter: Progress reporter (``blender.progress.Reporter``).

    Returns:
        The committed scene folder. On any exception the temporary folder is deleted and the
        exception propagates; a killed process leaves only the hidden temporary folder.
    """
    subjects, backgrounds, hdris = catalogs
    final = out_dir / layout.scene_dir_name(plan.scene_index)
    tmp = layout.make_tmp_dir(out_dir, plan.scene_index)
    work = tmp / "_work"
    work.mkdir()
    log = None if args.verbose else work / "blender.log"
    fail_after = _fail_after()
    n_total = len(plan.planes)
    seconds: dict[str, float] = {}
    reporter.start_scene(plan.scene_index)
    try:
        t_scene = time.perf_counter()
        scene = bpy_scene.reset()
        bpy_scene.select_device(scene, args.device)
        bpy_scene.configure(
            scene, plan, args.samples, args.denoise, args.threads, args.lighting
        )
        camera = bpy_scene.build_camera(scene, plan)
        env = plan.environment
        hdri_path = hdris[env.source_index] if env.kind == "hdri" else None
        background_node = bpy_scene.build_world(scene, env, hdri_path)
        planes = []
        for spec in plan.planes:
            catalog = backgrounds if spec.kind == "background" else subjects
            image = catalog.materialize(spec.source_index, spec.matte or None, work)
            planes.append(bpy_scene.build_plane(scene, spec, image, plan.shadows))
        t = time.perf_counter()
        probe = bpy_scene.probe_irradiance(scene, plan, planes, work, log)
        level = float(bpy_scene.LUMA @ probe[-1])
        exposure = cfg.exposure_target / level if level > 1e-12 else 1.0
        radiance = probe * exposure  # white-albedo radiance of each plane after exposure
        bpy_scene.assign_colour_materials(planes, args.lighting, radiance)
        # Baked: planes are emitters and no ray reaches the world; else the world lights them.
        background_node.inputs["Strength"].default_value = (
            0.0 if args.lighting == "baked" else exposure
        )
        seconds["probe"] = time.perf_counter() - t
        reporter.step("irradiance probe")
        # Alg. 1 lines 21-25: one render per plane, focused at its distance.
        camera.data.dof.use_dof = True
        for i, dist in enumerate(plan.focus_distances_m):
            camera.data.dof.focus_distance = dist  # Alg. 1 line 23
            t = time.perf_counter()
            bpy_scene.render_still(scene, tmp / f"focus_{i}.png", "PNG", log)  # line 24
            seconds[f"focus_{i}"] = time.perf_counter() - t
            reporter.step(f"focus_{i}.png")
            if fail_after is not None and i + 1 >= fail_after:
                raise RuntimeError(f"{FAIL_AFTER_ENV}={fail_after}: injected failure")
        # Alg. 1 lines 26-27: DOF off, all-in-focus ground truth.
        camera.data.dof.use_dof = False
        t = time.perf_counter()
        bpy_scene.render_still(scene, tmp / "gt.png", "PNG", log)
        seconds["gt"] = time.perf_counter() - t
        reporter.step("gt.png")
        # Beyond the paper: visibility masks and depth of the all-in-focus view.
        t = time.perf_counter()
        ids, depth = bpy_scene.render_id_depth(scene, plan, planes, background_node, work, log)
        visible = layout.write_masks(ids, n_total, tmp)
        layout.write_depth(depth, tmp)
        seconds["masks_depth"] = time.perf_counter() - t
        reporter.step("masks + depth")
        seconds["total"] = time.perf_counter() - t_scene
        meta = plan.to_dict()
        meta.update(
            samples=int(args.samples),
            denoise=bool(args.denoise),
            device=args.device,
            blender_version=bpy_scene.blender_version(),
            sky_type=scene.world.get("sky_type") if env.kind == "sky" else None,
            lighting=args.lighting,
            exposure_scale=float(exposure),
            plane_radiance=[[float(v) for v in row] for row in radiance],
            alpha_threshold=bpy_scene.ALPHA_THRESHOLD,
            render_seconds={k: round(v, 3) for k, v in seconds.items()},
            outputs={
                "files": layout.output_files(n_total - 1),
                "plane_order": "planes 0..n-1: subjects sorted near->far; plane n: background",
                "focus_i": "focused at planes[i].distance_m (= focus_distances_m[i])",
                "depth": "depth.npy float32 (H, W), camera-axis depth in metres",
                "mask_visible_fraction": visible,
            },
        )
        shutil.rmtree(work)
        layout.write_json(meta, tmp / layout.SCENE_JSON)  # last file: marks completeness
        layout.commit(tmp, final)
        reporter.end_scene(plan.scene_index, seconds["total"])
        return final
    except BaseException as err:
        if log is not None and log.exists() and not isinstance(err, bpy_scene.Interrupted):
            tail = _tail(log)
            if tail:
                reporter.error(f"last lines of Blender's log:\n{tail}")
        shutil.rmtree(tmp, ignore_errors=True)
        reporter.abort_scene()
        raise
