"""The evaluation/prediction dataset over real multi-focus benchmarks (one item per scene).

Scene discovery and manifests live in :mod:`mfif.scenes`, image reading in :mod:`mfif.io`.
"""
from __future__ import annotations

import logging

import torch
from torch.utils.data import Dataset

from mfif.io import load_image
from mfif.scenes import BenchmarkError, Scene, check_scene

log = logging.getLogger(__name__)


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
        self.skipped: list[tuple[str, str]] = []
        self.scenes: list[Scene] = []
        for s in scenes:
            try:
                check_scene(s, decode=skip_invalid)
            except BenchmarkError as e:
                if not skip_invalid:
                    raise
                log.warning("skipping scene '%s': %s", s.name, e)
                self.skipped.append((s.name, str(e)))
                continue
            self.scenes.append(s)
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
