"""Blender (bpy) renderer of the MattingMFIF dataset; see ``blender/README.md``.

``scene``, ``assets`` and ``layout`` are pure Python (no ``bpy``); ``bpy_scene``,
``render_scene`` and the CLI ``render_mattingmfif`` need the ``blender`` extra.
"""
