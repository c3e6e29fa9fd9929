"""UFA-Fuse (Zang et al.): end-to-end multi-focus fusion with unity fusion attention.

Importing the package registers the method ``ufafuse`` (see :mod:`.module`).
"""
from lightning_modules.ufafuse.module import UFAFuseConfig, UFAFuseModule  # noqa: F401
