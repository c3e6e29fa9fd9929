"""Blender (``bpy``) side of the MattingMFIF renderer: build a :class:`ScenePlan`, render passes.

Only this module and ``render_mattingmfif.py`` import ``bpy`` (Blender 4.2 - 5.0 as a Python
module). Every scene starts from an emptied Blender session, so scenes rendered in one process are
independent of each other.

Passes of one scene (all with the same Cycles seed):

1. irradiance probe (:func:`probe_irradiance`): the radiance of a white diffuse plane under the
   scene's environment for each plane orientation. Shadows are disabled (Alg. 1 line 10) and the
   planes do not light each other, so this is *all* the lighting a plane receives; it also sets
   the exposure (the background plane's white level becomes ``exposure_target``), because HDRs
   and the physically scaled sky differ by orders of magnitude in brightness;
2. ``n + 1`` colour renders with depth of field, focused at each plane (Alg. 1 lines 21-25);
3. the all-in-focus ground truth with DOF disabled (Alg. 1 lines 26-27);
4. an ID/depth pass: each plane gets an emission material of colour ``(index + 1, view-Z depth,
   0)`` cut out where its alpha is below 0.5, 1 sample near each pixel centre, no DOF, saved as
   32-bit float EXR. Read back it gives the visible plane and its camera-axis depth per pixel.
   This is the exact equivalent of Cycles' object-index and Z passes with
   ``pass_alpha_threshold = 0.5`` and needs no compositor, whose Python API changed in 5.0.

Lighting modes of the colour renders: ``baked`` (default) shades each plane as an emitter of
``texture * probe radiance`` -- the expected value of path-traced shadowless diffuse lighting,
without its Monte-Carlo noise, so samples are spent on anti-aliasing and defocus only and the
ground truth is noise-free. ``pathtraced`` uses a Diffuse BSDF lit by the world at every sample
(what a plain Cycles scene does; noticeably noisier at equal samples, see ``blender/README.md``).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from blender.scene import EnvironmentSpec, PlaneSpec, ScenePlan

ALPHA_THRESHOLD = 0.5  # alpha at which a cut-out pixel counts as part of its plane (masks)
PROBE_CELL = 8  # pixels per irradiance probe (square cell)
PROBE_SAMPLES = 512  # samples per probe pixel: 16 px x 512 = 8192 samples per plane
LUMA = np.array([0.2126, 0.7152, 0.0722])  # Rec. 709 luminance of linear RGB


def blender_version() -> str:
    """Blender version string, e.g. ``"5.0.1"``."""
    return bpy.app.version_string


@contextlib.contextmanager
def redirect_output(log_path: Path | None):
    """Send C-level stdout/stderr (Blender's render log) to ``log_path``; ``None``: untouched."""
    if log_path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    target = os.open(str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)


def reset() -> bpy.types.Scene:
    """Empty the session (objects, meshes, materials, images, worlds, cameras); return scene."""
    for coll in (
        bpy.data.objects,
        bpy.data.meshes,
        bpy.data.materials,
        bpy.data.images,
        bpy.data.worlds,
        bpy.data.cameras,
        bpy.data.lights,
    ):
        for block in list(coll):
            coll.remove(block)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    return scene


def select_device(scene: bpy.types.Scene, device: str) -> str:
    """Use Cycles on ``cpu``, ``cuda`` or ``optix``; raise ``RuntimeError`` if unavailable.

    Returns:
        Names of the devices used, comma separated.
    """
    if device == "cpu":
        scene.cycles.device = "CPU"
        return "CPU"
    kind = device.upper()
    prefs = bpy.context.preferences.addons["cycles"].preferences
    try:
        prefs.compute_device_type = kind
    except TypeError as err:
        raise RuntimeError(f"--device {device}: Cycles has no {kind} backend here ({err})") from err
    prefs.refresh_devices()
    gpus = [d for d in prefs.devices if d.type == kind]
    if not gpus:
        raise RuntimeError(f"--device {device}: no {kind} device found by Cycles")
    for d in prefs.devices:
        d.use = d.type == kind
    scene.cycles.device = "GPU"
    return ", ".join(d.name for d in gpus)


def configure(
    scene, plan: ScenePlan, samples: int, denoise: bool, threads: int, lighting: str = "baked"
) -> None:
    """Render settings shared by all colour passes (Alg. 1 lines 2, 8-10)."""
    r = scene.render
    r.resolution_x = r.resolution_y = plan.resolution  # Alg. 1 line 9
    r.resolution_percentage = 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.use_compositing = False
    r.use_sequencer = False
    r.threads_mode = "FIXED" if threads > 0 else "AUTO"
    if threads > 0:
        r.threads = threads
    scene.view_settings.view_transform = "Standard"  # photo textures keep their colours
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    c = scene.cycles
    c.seed = plan.render_seed
    c.use_animated_seed = False
    c.samples = samples
    c.use_adaptive_sampling = False
    c.use_denoising = bool(denoise)
    if denoise:
        c.denoiser = "OPENIMAGEDENOISE"
        # Emission-shaded (baked) planes have no BSDF albedo/normal to guide the denoiser;
        # colour alone is as good there (measured) and skips two extra passes.
        c.denoising_input_passes = "RGB" if lighting == "baked" else "RGB_ALBEDO_NORMAL"
    # Direct lighting only: planes are printed photos lit by the environment; no inter-plane
    # bounces (with shadows off they would light planes through their occluders' backs).
    c.max_bounces = 0
    c.diffuse_bounces = c.glossy_bounces = c.transmission_bounces = c.volume_bounces = 0
    c.transparent_max_bounces = 4 * (len(plan.planes) + 2)  # enough to pass every cut-out
    c.caustics_reflective = c.caustics_refractive = False
    c.sample_clamp_direct = 0.0
    c.pixel_filter_type = "BLACKMAN_HARRIS"
    c.filter_width = 1.5


def build_camera(scene, plan: ScenePlan) -> bpy.types.Object:
    """Camera at the origin looking along +Y, +Z up (Alg. 1 lines 3-7)."""
    cam = bpy.data.cameras.new("camera")
    cam.type = "PERSP"
    cam.sensor_fit = "HORIZONTAL"
    cam.sensor_width = plan.sensor_width_mm
    cam.lens = plan.focal_mm  # Alg. 1 line 7
    cam.clip_start = 0.05
    cam.clip_end = 1000.0
    cam.dof.use_dof = True  # Alg. 1 line 5
    cam.dof.aperture_fstop = plan.fstop  # Alg. 1 line 6
    cam.dof.aperture_blades = 0  # circular aperture
    obj = bpy.data.objects.new("camera", cam)
    obj.matrix_world = Matrix.Rotation(math.pi / 2, 4, "X")
    scene.collection.objects.link(obj)
    scene.camera = obj
    return obj


def build_world(scene, env: EnvironmentSpec, hdri_path: Path | None):
    """Environment lighting (Alg. 1 line 11); returns the Background node (strength knob)."""
    world = bpy.data.worlds.new("world")
    scene.world = world
    if hasattr(world, "use_nodes") and not world.use_nodes:
        world.use_nodes = True
    nodes, links = world.node_tree.nodes, world.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputWorld")
    bg = nodes.new("ShaderNodeBackground")
    links.new(bg.outputs["Background"], out.inputs["Surface"])
    if env.kind == "hdri":
        tex = nodes.new("ShaderNodeTexEnvironment")
        tex.image = bpy.data.images.load(str(hdri_path), check_existing=True)
        coord = nodes.new("ShaderNodeTexCoord")
        mapping = nodes.new("ShaderNodeMapping")
        mapping.inputs["Rotation"].default_value = (0.0, 0.0, math.radians(env.rotation_deg))
        links.new(coord.outputs["Generated"], mapping.inputs["Vector"])
        links.new(mapping.outputs["Vector"], tex.inputs["Vector"])
        links.new(tex.outputs["Color"], bg.inputs["Color"])
    else:
        sky = nodes.new("ShaderNodeTexSky")
        kinds = [e.identifier for e in sky.bl_rna.properties["sky_type"].enum_items]
        for wanted in ("NISHITA", "SINGLE_SCATTERING", "MULTIPLE_SCATTERING", "HOSEK_WILKIE"):
            if wanted in kinds:
                sky.sky_type = wanted
                break
        if hasattr(sky, "sun_elevation"):
            sky.sun_disc = True
            sky.sun_elevation = math.radians(env.sun_elevation_deg)
            sky.sun_rotation = math.radians(env.sun_rotation_deg)
            sky.air_density = env.air_density
            sky.ozone_density = env.ozone_density
            for name in ("aerosol_density", "dust_density"):  # renamed in Blender 5.0
                if hasattr(sky, name):
                    setattr(sky, name, env.aerosol_density)
        links.new(sky.outputs["Color"], bg.inputs["Color"])
        world["sky_type"] = sky.sky_type
    bg.inputs["Strength"].default_value = 1.0
    return bg


def _image_node(nodes, image, extension: str):
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.interpolation = "Linear"
    tex.extension = extension
    return tex


def _colour_material(name: str, image, extension: str, lighting: str, irradiance):
    """Photo texture, alpha -> transparency (Alg. 1 lines 15 and 20).

    ``lighting="baked"``: emission ``texture * irradiance`` (the plane's shadowless diffuse
    radiance, measured once by :func:`probe_irradiance`) -- no lighting noise.
    ``lighting="pathtraced"``: a Diffuse BSDF lit by the world at every sample.
    """
    mat = bpy.data.materials.new(name)
    if hasattr(mat, "use_nodes") and not mat.use_nodes:
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    tex = _image_node(nodes, image, extension)
    if lighting == "baked":
        tint = nodes.new("ShaderNodeVectorMath")
        tint.operation = "MULTIPLY"
        tint.inputs[1].default_value = tuple(float(v) for v in irradiance)
        links.new(tex.outputs["Color"], tint.inputs[0])
        surface = nodes.new("ShaderNodeEmission")
        surface.inputs["Strength"].default_value = 1.0
        links.new(tint.outputs["Vector"], surface.inputs["Color"])
        surface_out = surface.outputs["Emission"]
    else:
        surface = nodes.new("ShaderNodeBsdfDiffuse")
        links.new(tex.outputs["Color"], surface.inputs["Color"])
        surface_out = surface.outputs["BSDF"]
    transparent = nodes.new("ShaderNodeBsdfTransparent")
    mix = nodes.new("ShaderNodeMixShader")
    out = nodes.new("ShaderNodeOutputMaterial")
    links.new(tex.outputs["Alpha"], mix.inputs["Fac"])
    links.new(transparent.outputs["BSDF"], mix.inputs[1])
    links.new(surface_out, mix.inputs[2])
    links.new(mix.outputs["Shader"], out.inputs["Surface"])
    return mat


def _id_material(name: str, image, extension: str, index: int):
    """Emission ``(index + 1, view-Z depth, 0)`` where alpha >= 0.5, transparent elsewhere."""
    mat = bpy.data.materials.new(name)
    if hasattr(mat, "use_nodes") and not mat.use_nodes:
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    tex = _image_node(nodes, image, extension)
    cut = nodes.new("ShaderNodeMath")
    cut.operation = "GREATER_THAN"
    cut.inputs[1].default_value = ALPHA_THRESHOLD - 1e-6
    cam = nodes.new("ShaderNodeCameraData")
    combine = nodes.new("ShaderNodeCombineXYZ")
    combine.inputs["X"].default_value = float(index + 1)
    emission = nodes.new("ShaderNodeEmission")
    emission.inputs["Strength"].default_value = 1.0
    transparent = nodes.new("ShaderNodeBsdfTransparent")
    mix = nodes.new("ShaderNodeMixShader")
    out = nodes.new("ShaderNodeOutputMaterial")
    links.new(tex.outputs["Alpha"], cut.inputs[0])
    links.new(cam.outputs["View Z Depth"], combine.inputs["Y"])
    links.new(combine.outputs["Vector"], emission.inputs["Color"])
    links.new(cut.outputs["Value"], mix.inputs["Fac"])
    links.new(transparent.outputs["BSDF"], mix.inputs[1])
    links.new(emission.outputs["Emission"], mix.inputs[2])
    links.new(mix.outputs["Shader"], out.inputs["Surface"])
    return mat


def build_plane(scene, spec: PlaneSpec, image_path: Path, shadows: bool) -> dict:
    """One textured quad (Alg. 1 lines 12-20) with its ID material; colour comes later.

    Returns:
        ``{"object", "image", "extension", "id_material"}``; :func:`assign_colour_materials`
        adds ``"colour_material"``.
    """
    w, h = spec.size_m
    verts = [(-w / 2, 0.0, -h / 2), (w / 2, 0.0, -h / 2), (w / 2, 0.0, h / 2), (-w / 2, 0.0, h / 2)]
    mesh = bpy.data.meshes.new(f"plane_{spec.index}")
    mesh.from_pydata(verts, [], [(0, 3, 2, 1)])  # normal -Y: faces the camera
    u0, v0, u1, v1 = spec.uv_rect
    uv = mesh.uv_layers.new(name="UVMap")
    corner_uv = {0: (u0, v0), 1: (u1, v0), 2: (u1, v1), 3: (u0, v1)}
    for loop in mesh.loops:
        uv.data[loop.index].uv = corner_uv[loop.vertex_index]
    mesh.update()
    image = bpy.data.images.load(str(image_path), check_existing=True)
    image.alpha_mode = "STRAIGHT"
    extension = "MIRROR" if spec.kind == "background" else "CLIP"
    ident = _id_material(f"id_{spec.index}", image, extension, spec.index)
    mesh.materials.append(ident)
    obj = bpy.data.objects.new(f"plane_{spec.index}", mesh)
    obj.matrix_world = Matrix(spec.matrix_world)
    obj.pass_index = spec.index + 1
    obj.visible_shadow = bool(shadows)  # Alg. 1 line 10: planes cast no shadows
    scene.collection.objects.link(obj)
    return {"object": obj, "image": image, "extension": extension, "id_material": ident}


def assign_colour_materials(planes: list[dict], lighting: str, irradiance) -> None:
    """Create and assign each plane's colour material (``irradiance``: (n+1, 3) radiances)."""
    for i, p in enumerate(planes):
        mat = _colour_material(f"colour_{i}", p["image"], p["extension"], lighting, irradiance[i])
        p["colour_material"] = mat
        p["object"].data.materials[0] = mat


def probe_irradiance(scene, plan: ScenePlan, planes: list[dict], workdir: Path, log_path):
    """Radiance of a white diffuse plane at each plane's orientation, shadows off.

    One small orthographic render of ``n + 1`` white Diffuse probe quads (one per plane, same
    rotation, nothing else visible) with ``PROBE_SAMPLES`` samples; the centre
    ``PROBE_CELL/2`` pixels of each probe are averaged. Lambertian radiance is
    ``E(normal) / pi``, which is all shadowless direct lighting of a plane depends on.

    Returns:
        (n + 1, 3) float array, linear RGB.
    """
    n = len(plan.planes)
    white = bpy.data.materials.new("probe_white")
    if hasattr(white, "use_nodes") and not white.use_nodes:
        white.use_nodes = True
    nodes = white.node_tree.nodes
    nodes.clear()
    diffuse = nodes.new("ShaderNodeBsdfDiffuse")
    diffuse.inputs["Color"].default_value = (1, 1, 1, 1)
    out = nodes.new("ShaderNodeOutputMaterial")
    white.node_tree.links.new(diffuse.outputs["BSDF"], out.inputs["Surface"])
    cam = bpy.data.cameras.new("probe_camera")
    cam.type = "ORTHO"
    cam.ortho_scale = float(n)
    cam_obj = bpy.data.objects.new("probe_camera", cam)
    cam_obj.matrix_world = Matrix.Rotation(math.pi / 2, 4, "X")
    scene.collection.objects.link(cam_obj)
    probes = []
    for k, spec in enumerate(plan.planes):
        mesh = bpy.data.meshes.new(f"probe_{k}")
        s = 0.45
        mesh.from_pydata([(-s, 0, -s), (s, 0, -s), (s, 0, s), (-s, 0, s)], [], [(0, 3, 2, 1)])
        mesh.materials.append(white)
        obj = bpy.data.objects.new(f"probe_{k}", mesh)
        m = Matrix(spec.matrix_world)
        m.translation = (k - (n - 1) / 2, 5.0, 0.0)
        obj.matrix_world = m
        obj.visible_shadow = False
        scene.collection.objects.link(obj)
        probes.append(obj)
    r, c = scene.render, scene.cycles
    saved = (scene.camera, r.resolution_x, r.resolution_y, c.samples, c.use_denoising)
    for p in planes:
        p["object"].hide_render = True
    scene.camera = cam_obj
    r.resolution_x, r.resolution_y = PROBE_CELL * n, PROBE_CELL
    c.samples, c.use_denoising = PROBE_SAMPLES, False
    try:
        path = workdir / "probe.exr"
        render_still(scene, path, "EXR", log_path)
        px = read_exr(path)[..., :3].astype(np.float64)
    finally:
        scene.camera, r.resolution_x, r.resolution_y, c.samples, c.use_denoising = saved
        for p in planes:
            p["object"].hide_render = False
        for obj in probes:
            mesh = obj.data
            bpy.data.objects.remove(obj)
            bpy.data.meshes.remove(mesh)
        bpy.data.objects.remove(cam_obj)
        bpy.data.cameras.remove(cam)
        bpy.data.materials.remove(white)
    q = PROBE_CELL // 4
    return np.array(
        [px[q : PROBE_CELL - q, k * PROBE_CELL + q : (k + 1) * PROBE_CELL - q].mean(axis=(0, 1))
         for k in range(n)]
    )


class Interrupted(BaseException):
    """SIGINT/SIGTERM arrived; raised after the current Blender call (a ``BaseException`` like
    ``KeyboardInterrupt``, so ``except Exception`` does not swallow it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_stop_signal: list[int] = []  # signals received since install_stop_handlers()


def _record_signal(signum, frame) -> None:
    # Only record: an exception raised here could land inside the Cycles add-on's Python render
    # callback, where Blender catches and drops it (Ctrl-C was ignored that way).
    _stop_signal.append(signum)


def install_stop_handlers() -> None:
    """Catch SIGINT/SIGTERM; :func:`check_stop` (called after every render) then raises :class:`Interrupted`."""
    _stop_signal.clear()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _record_signal)


def check_stop() -> None:
    """Raise :class:`Interrupted` if a stop signal arrived."""
    if _stop_signal:
        raise Interrupted(_stop_signal[0])


def render_still(scene, path: Path, fmt: str, log_path: Path | None) -> None:
    """Render the current settings to ``path`` (``fmt``: ``"PNG"`` 8-bit RGB or ``"EXR"``)."""
    s = scene.render.image_settings
    if hasattr(s, "media_type"):
        s.media_type = "IMAGE"
    if fmt == "PNG":
        s.file_format = "PNG"
        s.color_mode = "RGB"
        s.color_depth = "8"
        s.compression = 15
    else:
        s.file_format = "OPEN_EXR"
        s.color_mode = "RGBA"
        s.color_depth = "32"
        s.exr_codec = "ZIP"
    scene.render.filepath = str(path)
    scene.render.use_file_extension = False
    with redirect_output(log_path):
        result = bpy.ops.render.render(write_still=True)
    check_stop()
    if "FINISHED" not in result or not Path(path).is_file():
        raise RuntimeError(f"Blender did not write {path} (render returned {result})")


def read_exr(path: Path) -> np.ndarray:
    """Float32 RGBA pixels of an EXR, shape (H, W, 4), first row = top of the image."""
    img = bpy.data.images.load(str(path))
    try:
        img.colorspace_settings.name = "Non-Color"
        w, h = img.size
        buf = np.empty(w * h * 4, dtype=np.float32)
        img.pixels.foreach_get(buf)
    finally:
        bpy.data.images.remove(img)
    return buf.reshape(h, w, 4)[::-1].copy()


def render_id_depth(scene, plan, planes, background_node, workdir: Path, log_path):
    """ID/depth pass; returns (plane index map int16 (H, W), depth float32 (H, W) metres)."""
    c = scene.cycles
    saved = (c.samples, c.use_denoising, c.pixel_filter_type, c.filter_width)
    strength = background_node.inputs["Strength"].default_value
    c.samples, c.use_denoising = 1, False
    c.pixel_filter_type, c.filter_width = "BOX", 0.01  # the sample sits at the pixel centre
    background_node.inputs["Strength"].default_value = 0.0
    scene.camera.data.dof.use_dof = False
    for p in planes:
        p["object"].data.materials[0] = p["id_material"]
    try:
        path = workdir / "id_depth.exr"
        render_still(scene, path, "EXR", log_path)
        px = read_exr(path)
    finally:
        for p in planes:
            p["object"].data.materials[0] = p["colour_material"]
        c.samples, c.use_denoising, c.pixel_filter_type, c.filter_width = saved
        background_node.inputs["Strength"].default_value = strength
    ids = np.rint(px[..., 0]).astype(np.int16) - 1
    depth = px[..., 1].astype(np.float32)
    # A ray that leaves the scene (impossible by construction: the background plane is larger
    # than every defocused ray cone) would read as -1; count it as the background plane.
    n_bg = len(plan.planes) - 1
    far = ids < 0
    ids[far] = n_bg
    depth[far] = plan.planes[-1].distance_m
    return ids, depth
