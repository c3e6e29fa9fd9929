"""Throughput mode (issue 19 item 4): equal-shape batches, DataLoader workers and writer threads
give the images that one scene at a time gives, in ``mfif.batching`` and ``run.py mode=predict``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_method  # noqa: F401
from conftest import ROOT
from experiments.fuse import fuse_stack, load_sources
from experiments.run import main as run_main
from lightning_modules.base import inference_only
from mfif import registry
from mfif.batching import SameShapeBatchSampler, fuse_scenes, same_shape_batches, scene_shape
from mfif.config import load_config
from mfif.scenes import discover_scenes

CFG = str(ROOT / "tests/configs_tiny.yaml")
QUIET = ["logger.wandb=false", "trainer.progress=none"]
# scene -> (height, width, gray): three of one shape, one smaller, one gray
SCENES = {"s1": (45, 53, False), "s2": (45, 53, False), "s3": (30, 40, False), "s4": (45, 53, True), "s5": (45, 53, False)}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    rng = np.random.default_rng(0)
    for name, (h, w, gray) in SCENES.items():
        for side in "AB":
            a = rng.integers(0, 256, (h, w) if gray else (h, w, 3), dtype=np.uint8)
            Image.fromarray(a).save(d / f"{name}-{side}.png")
    return d


def test_same_shape_batches_known_value_and_errors():
    assert same_shape_batches(["a", "b", "a", "a", "b", "c"], 2) == [[0, 2], [3], [1, 4], [5]]
    assert same_shape_batches([1, 1, 1], 8) == [[0, 1, 2]]
    with pytest.raises(ValueError, match="batch must be >= 1"):
        same_shape_batches([1], 0)


def test_sampler_groups_scenes_by_shape_from_headers(bench):
    scenes = discover_scenes(bench)
    assert [s.name for s in scenes] == list(SCENES)
    assert scene_shape(scenes[2]) == (2, 3, 30, 40, False) and scene_shape(scenes[3]) == (2, 1, 45, 53, False)
    batches = list(SameShapeBatchSampler(scenes, batch=2))
    assert batches == [[0, 1], [4], [2], [3]]


def _module():
    cfg = load_config(CFG, ["model.width=4"], data=False)
    torch.manual_seed(0)
    with inference_only():
        return registry.method_class(cfg.method)(cfg).eval()


@pytest.mark.parametrize("batch,workers", [(1, 0), (3, 2)])
def test_fuse_scenes_matches_one_scene_at_a_time(bench, tmp_path, batch, workers):
    module, scenes = _module(), discover_scenes(bench)
    seen = []
    stats = fuse_scenes(module, scenes, tmp_path / "out", batch=batch, workers=workers, on_scene=seen.append)
    assert sorted(seen) == sorted(SCENES) and stats.scenes == 5
    assert stats.batches == (5 if batch == 1 else 3) and stats.images_per_second > 0
    for s in scenes:
        ref, _ = fuse_stack(module, load_sources(list(s.sources)))
        got = torch.from_numpy(np.asarray(Image.open(tmp_path / "out" / f"{s.name}.png"), dtype=np.float32))
        want = (ref[0].clamp(0, 1) * 255 + 0.5).floor()
        want = want[0] if want.shape[0] == 1 else want.permute(1, 2, 0)
        assert got.shape == want.shape and (got - want).abs().max() <= 1  # same image up to rounding
    with pytest.raises(FileExistsError, match="s1.png exists"):
        fuse_scenes(module, scenes, tmp_path / "out", batch=batch)


def test_run_predict_batches_and_workers_give_the_same_images(bench, tiny_checkpoint, tmp_path):
    ckpt = tiny_checkpoint  # the session's smoke fit (tests/conftest.py)
    outs = {}
    for bs, nw in ((1, 0), (2, 1)):
        out = tmp_path / f"pred{bs}"
        assert run_main(["--config", CFG, "profile=smoke", "mode=predict", f"data.benchmark={bench}", f"out={out}",
                         f"ckpt_path={ckpt}", f"run_dir={tmp_path / f'p{bs}'}", f"data.val_batch_size={bs}",
                         f"data.num_workers={nw}", *QUIET]) == 0
        outs[bs] = {p.name: np.asarray(Image.open(p), dtype=int) for p in sorted(out.iterdir())}
    assert sorted(outs[2]) == [f"{n}.png" for n in SCENES]
    for name, img in outs[1].items():
        assert np.abs(img - outs[2][name]).max() <= 1
