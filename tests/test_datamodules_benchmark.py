"""Real benchmark loader: the shared sets as they are, naming conventions, manifests, bad input."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mfif.io import BenchmarkError, ImageReadError, load_image
from mfif.scenes import Scene, discover_scenes, read_manifest, write_manifest
from datamodules.benchmark import BenchmarkDataset

DATA = Path("/work/shared/data")
needs_shared = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data not present")


def save(path: Path, h=12, w=16, value=None, mode="RGB", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    r = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    a = r.integers(0, 256, shape).astype(np.uint8) if value is None else np.full(shape, value, np.uint8)
    Image.fromarray(a).save(path)
    return path


def summary(scenes):
    return len(scenes), Counter(len(s.sources) for s in scenes), sum(s.gt is not None for s in scenes)


# ----------------------------------------------------------------------------- shared data
@needs_shared
@pytest.mark.parametrize(
    "folder, n_scenes, per_scene, n_gt, first",
    [
        ("lytro", 20, {2: 20}, 0, "lytro-01"),  # lytro/triple is a separate set
        ("lytro/triple", 4, {3: 4}, 0, "lytro-01"),
        ("mffw", 13, {2: 13}, 0, "mffw_01"),
        ("mfi_whu", 30, {2: 30}, 0, "MFI-WHU_01"),
        ("grayscale", 19, {2: 18, 3: 1}, 0, "balloon"),  # toy has toy1..toy3; corner/wine are PNG
        ("stack_v4", 1, {65: 1}, 0, "stack_v4"),  # one focal stack of 65 frames
        ("ufa_trainset", 72, {2: 72}, 72, "ILSVRC2012_test_00000004/23"),  # 18 scenes x 4 levels, with GT
    ],
)
def test_shared_sets_as_they_are(folder, n_scenes, per_scene, n_gt, first):
    scenes = discover_scenes(DATA / folder)
    assert summary(scenes) == (n_scenes, Counter(per_scene), n_gt)
    assert scenes[0].name == first and [s.name for s in scenes] == sorted(s.name for s in scenes)
    ds = BenchmarkDataset(scenes)  # header + size checks of every file
    assert len(ds) == n_scenes and ds.num_skipped == 0


@needs_shared
def test_shared_items_order_and_channels():
    toy = next(s for s in discover_scenes(DATA / "grayscale") if s.name == "toy")
    assert [p.name for p in toy.sources] == ["toy1.bmp", "toy2.bmp", "toy3.bmp"]
    stack = discover_scenes(DATA / "stack_v4")[0]
    assert stack.sources[0].name == "V001.jpg" and stack.sources[-1].name == "V065.jpg"
    gray = BenchmarkDataset([toy])[0]
    assert gray["sources"].shape == (3, 1, 512, 512) and gray["sources"].dtype == torch.float32
    mffw = BenchmarkDataset(discover_scenes(DATA / "mffw"))[0]
    assert mffw["sources"].shape[:2] == (2, 3) and "gt" not in mffw and mffw["name"] == "mffw_01"
    assert BenchmarkDataset(discover_scenes(DATA / "mffw"), gray=True)[0]["sources"].shape[1] == 1
    ufa = BenchmarkDataset(discover_scenes(DATA / "ufa_trainset"))[0]
    assert ufa["gt"].shape == ufa["sources"].shape[1:]


# ----------------------------------------------------------------------------- conventions
def test_naming_conventions(tmp_path):
    r = tmp_path / "mixed"
    for n in ("a-A", "a-B", "b_1", "b_2", "cA", "cB", "d1", "d2", "d3", "e-A", "e-B", "e-C", "f_near", "f_far"):
        save(r / f"{n}.png", seed=len(n))
    save(r / "b_ground.png")
    save(r / "a-GT.png")
    save(r / "mask_0.png")  # not a source
    scenes = {s.name: s for s in discover_scenes(r)}
    assert {k: [p.stem for p in s.sources] for k, s in scenes.items()} == {
        "a": ["a-A", "a-B"], "b": ["b_1", "b_2"], "c": ["cA", "cB"], "d": ["d1", "d2", "d3"],
        "e": ["e-A", "e-B", "e-C"], "f": ["f_near", "f_far"]}
    assert scenes["a"].gt.name == "a-GT.png" and scenes["b"].gt.name == "b_ground.png" and scenes["c"].gt is None


def test_per_scene_folders_and_stack(tmp_path):
    r = tmp_path / "scenes"
    save(r / "s1" / "near.png"), save(r / "s1" / "far.png")  # no convention: sorted by name
    save(r / "s2" / "1.png"), save(r / "s2" / "2.png"), save(r / "s2" / "gt.png")
    for i in (1, 2, 10):  # numeric order, not text order
        save(r / "s3" / f"s3_{i}.jpg")
    save(r / "collection" / "x-A.png"), save(r / "collection" / "x-B.png"), save(r / "collection" / "y-A.png"), save(r / "collection" / "y-B.png")
    scenes = {s.name: s for s in discover_scenes(r)}
    assert sorted(scenes) == ["collection/x", "collection/y", "s1", "s2", "s3"]
    assert [p.name for p in scenes["s1"].sources] == ["far.png", "near.png"]
    assert scenes["s2"].gt.name == "gt.png" and len(scenes["s2"].sources) == 2
    assert [p.stem for p in scenes["s3"].sources] == ["s3_1", "s3_2", "s3_10"]
    st = tmp_path / "stack"
    for i in range(1, 13):
        save(st / f"V{i:03d}.jpg")
    (stack,) = discover_scenes(st)
    assert stack.name == "stack" and len(stack.sources) == 12


def test_source_folder_layout_and_gt_dir(tmp_path):
    r = tmp_path / "mfi_whu_release"
    for i in (1, 2, 3):
        save(r / "source_1" / f"{i}.jpg", seed=i), save(r / "source_2" / f"{i}.jpg", seed=10 + i)
        save(r / "full_clear" / f"{i}.jpg")
    scenes = discover_scenes(r)
    assert [s.name for s in scenes] == ["1", "2", "3"]
    assert [p.parent.name for p in scenes[0].sources] == ["source_1", "source_2"] and scenes[0].gt.parent.name == "full_clear"
    item = BenchmarkDataset(scenes)[0]
    assert item["sources"].shape == (2, 3, 12, 16) and item["gt"].shape == (3, 12, 16)
    p = tmp_path / "pairs"
    save(p / "lytro-01-A.jpg"), save(p / "lytro-01-B.jpg"), save(p / "lytro-02-A.jpg"), save(p / "lytro-02-B.jpg")
    g = tmp_path / "gts"
    save(g / "lytro-01.png"), save(g / "lytro-02_gt.png")
    scenes = discover_scenes(p, gt_dir=g)
    assert [s.gt.name for s in scenes] == ["lytro-01.png", "lytro-02_gt.png"]
    (g / "lytro-02_gt.png").unlink()
    with pytest.raises(BenchmarkError, match="no ground truth for scene 'lytro-02'"):
        discover_scenes(p, gt_dir=g)
    skipped = []
    assert [s.name for s in discover_scenes(p, gt_dir=g, skip_invalid=True, skipped=skipped)] == ["lytro-01"]
    assert len(skipped) == 1


def test_gray_colour_mix_16bit_and_alpha(tmp_path):
    r = tmp_path / "mix"
    save(r / "m_1.png", mode="L", value=51)
    Image.fromarray(np.full((12, 16, 4), 255, np.uint8)).save(r / "m_2.png")  # RGBA: alpha dropped
    Image.fromarray(np.full((12, 16), 65535, np.uint16)).save(r / "m_3.png")  # 16-bit gray
    item = BenchmarkDataset(discover_scenes(r))[0]
    assert item["sources"].shape == (3, 3, 12, 16)  # gray replicated to the colour sources
    assert item["sources"][0].unique().tolist() == pytest.approx([0.2])
    assert item["sources"][1].min() == 1.0 and item["sources"][2].min() == 1.0
    assert load_image(r / "m_1.png").shape == (1, 12, 16)
    assert load_image(r / "m_2.png", gray=True).shape == (1, 12, 16)


# ----------------------------------------------------------------------------- manifests
@pytest.mark.parametrize("ext", ["csv", "json"])
def test_manifest_round_trip(tmp_path, ext):
    r = tmp_path / "data"
    for n in ("a-A", "a-B", "a-C", "b-A", "b-B"):
        save(r / f"{n}.png")
    save(r / "b-GT.png")
    scenes = discover_scenes(r)
    m = tmp_path / "manifests" / f"set.{ext}"
    write_manifest(scenes, m)
    back = read_manifest(m)
    assert [(s.name, [p.resolve() for p in s.sources], s.gt and s.gt.resolve()) for s in back] == \
           [(s.name, [p.resolve() for p in s.sources], s.gt and s.gt.resolve()) for s in scenes]
    text = m.read_text()
    assert str(tmp_path) not in text and "../data/a-A.png" in text  # relative to the manifest
    m2 = tmp_path / f"auto.{ext}"
    first = discover_scenes(r, manifest=m2)  # writes it
    (r / "a-C.png").rename(r / "zzz-not-a-pair.png")  # the folder changes ...
    again = discover_scenes(r, manifest=m2)  # ... the manifest keeps the original scenes
    assert [len(s.sources) for s in again] == [len(s.sources) for s in first] == [3, 2]
    with pytest.raises(BenchmarkError, match="extension"):
        write_manifest(scenes, tmp_path / "set.txt")
    bad = tmp_path / f"bad.{ext}"
    bad.write_text("scene,role\nx,source\n" if ext == "csv" else json.dumps([{"nme": 1}]))
    with pytest.raises(BenchmarkError, match="malformed"):
        read_manifest(bad)


# ----------------------------------------------------------------------------- bad input
def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover_scenes(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchmarkError, match="no source sets"):
        discover_scenes(tmp_path / "empty")
    one = tmp_path / "one"
    save(one / "p-A.png"), save(one / "p-B.png"), save(one / "q-A.png")
    with pytest.raises(BenchmarkError, match=r"q-A.png: a set with one source"):
        discover_scenes(one)
    skipped = []
    assert [s.name for s in discover_scenes(one, skip_invalid=True, skipped=skipped)] == ["p"]
    assert len(skipped) == 1 and "q-A.png" in skipped[0][0]
    dup = tmp_path / "dup"
    save(dup / "x1.png"), save(dup / "x1.bmp"), save(dup / "x2.png")
    with pytest.raises(BenchmarkError, match="two files for the same source"):
        discover_scenes(dup)


def test_bad_images(tmp_path):
    r = tmp_path / "bad"
    save(r / "ok-A.png"), save(r / "ok-B.png")
    save(r / "size-A.png"), save(r / "size-B.png", h=13)
    save(r / "trunc-A.jpg", h=64, w=64), save(r / "trunc-B.jpg", h=64, w=64, seed=3)
    data = (r / "trunc-B.jpg").read_bytes()
    (r / "trunc-B.jpg").write_bytes(data[: int(len(data) * 0.7)])  # header intact, scan data cut
    (r / "junk-A.png").write_text("not an image")
    save(r / "junk-B.png")
    scenes = discover_scenes(r)
    with pytest.raises(ImageReadError, match="junk-A.png"):
        BenchmarkDataset(scenes)
    by = {s.name: s for s in scenes}
    with pytest.raises(BenchmarkError, match=r"size-B.png: size 16x13 differs"):
        BenchmarkDataset([by["size"]])
    ds = BenchmarkDataset([by["trunc"]])  # header is fine: the error comes when decoding
    with pytest.raises(ImageReadError, match=r"trunc-B.jpg \(truncated or corrupt\)"):
        ds[0]
    ds = BenchmarkDataset(scenes, skip_invalid=True)
    assert [s.name for s in ds.scenes] == ["ok"] and ds.num_skipped == 3
    with pytest.raises(BenchmarkError, match="fusion needs >= 2"):
        BenchmarkDataset([Scene("lonely", [r / "ok-A.png"])])
    with pytest.raises(BenchmarkError, match="at least one scene"):
        BenchmarkDataset([])
    with pytest.raises(ImageReadError, match="not found"):
        load_image(r / "missing.png")
