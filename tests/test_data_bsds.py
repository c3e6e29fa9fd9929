"""BSDS500 regions as focus masks (datamodules/bsds500.py), the three generators' ``source=bsds500``
mapping, UFA-Fuse's released-set concatenation and the ``cpu`` profiles of GACN, MSASN, UFA-Fuse.

Label maps here are tiny hand-drawn arrays (areas counted by hand in the comments); the fake
BSDS500 folder is written with PIL in ``tmp_path``; one test reads a real BSDS500 file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import datamodules  # noqa: F401  (registers every DataModule)
from datamodules._synth import EpochConcat
from datamodules.bsds500 import Region, choose_in_map, choose_region, read_labels, region_rng, touching_pairs
from mfif import registry
from mfif.config import load_config
from mfif.io import BenchmarkError

AREA = (0.07, 0.60)  # the default range: 7 % .. 60 % of the image


# ----------------------------------------------------------------------------- fixtures
def texture(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3)).astype(np.uint8)


def save_labels(path: Path, labels: np.ndarray) -> Path:
    """A 16-bit label PNG like the BSDS500 copies (mode I;16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint16)).save(path)
    return path


def rect_map(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Label 1 everywhere, label 2 in ``box = (y0, y1, x0, x1)``."""
    lab = np.ones((h, w), np.int64)
    lab[box[0] : box[1], box[2] : box[3]] = 2
    return lab


def tiny_map() -> np.ndarray:
    """No single admissible region: a union is the only choice (a 3x3 sketch, 4x4 px cells)."""
    lab = np.ones((10, 10), np.int64)  # label 1: 88 px (88 %: too big)
    lab[0:2, 0:2] = 2  # 4 px, touches 3
    lab[0:2, 2:4] = 3  # 4 px, touches 2
    lab[8:10, 8:10] = 4  # 4 px, touches only label 1
    return lab


def make_bsds(root: Path, splits=("train", "val", "test"), per_split: int = 2, no_region: bool = True) -> Path:
    """``root/images/<split>/<id>.jpg`` 64x32 (or 32x64) + two 16-bit maps each.

    Annotator 1 has no admissible region (one label); annotator 2 marks the centred half-size
    box (rows h/4..3h/4, columns w/4..3w/4: 25 %).
    The last image of the last split has only a one-label map (no region: dropped).
    """
    for s, split in enumerate(splits):
        for i in range(per_split):
            tall = i % 2 == 1
            h, w = (64, 32) if tall else (32, 64)
            name = f"{s}{i:04d}"
            Image.fromarray(texture(h, w, 10 * s + i)).save(_mkdir(root / "images" / split) / f"{name}.jpg", quality=95)
            save_labels(root / "segmentations" / split / f"{name}_1.png", np.ones((h, w)))
            last = no_region and s == len(splits) - 1 and i == per_split - 1
            box = (h // 4, h // 4 + h // 2, w // 4, w // 4 + w // 2)
            save_labels(root / "segmentations" / split / f"{name}_2.png",
                        np.ones((h, w)) if last else rect_map(h, w, box))
    return root


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def make_ufa(root: Path, scenes: int = 2, levels=("23", "810")) -> Path:
    for s in range(scenes):
        for k, lv in enumerate(levels):
            d = _mkdir(root / f"scene{s}" / lv)
            for suffix in ("1", "2", "ground"):
                Image.fromarray(texture(30, 34, 100 * s + 10 * k + len(suffix))).save(d / f"scene{s}_{suffix}.png")
    return root


def dm_for(name: str, **kw):
    cfg = OmegaConf.structured(registry.data_config_class(name)(name=name, **kw))
    return registry.datamodule_class(name)(cfg)


# ----------------------------------------------------------------------------- region choice
def test_touching_pairs_by_hand():
    lab = tiny_map()
    # 2|3 share an edge, both touch 1 (below/right), 4 touches only 1; 2 and 4 never meet
    assert touching_pairs(lab).tolist() == [[1, 2], [1, 3], [1, 4], [2, 3]]
    assert touching_pairs(np.full((3, 3), 5)).shape == (0, 2)


def test_single_region_inside_the_range():
    lab = rect_map(10, 10, (0, 3, 0, 10))  # label 2: 30 px = 30 %, label 1: 70 % (> 60 %)
    for seed in range(5):  # the only admissible single region, whatever the draw or union_p
        assert choose_in_map(lab, AREA, 0.0, np.random.default_rng(seed)) == (2,)
        assert choose_in_map(lab, AREA, 1.0, np.random.default_rng(seed)) == (2,)  # no union seed below 7 %


def test_area_bounds_are_inclusive():
    lab = rect_map(10, 10, (0, 1, 0, 7))  # label 2: exactly 7 px = 7 %, label 1: 93 %
    assert choose_in_map(lab, AREA, 0.0, np.random.default_rng(0)) == (2,)
    lab = rect_map(10, 10, (0, 1, 0, 6))  # 6 %: below, and no touching partner keeps it <= 60 %
    assert choose_in_map(lab, AREA, 0.0, np.random.default_rng(0)) is None
    lab = rect_map(10, 10, (0, 6, 0, 10))  # label 2: 60 % (in), label 1: 40 % (in)
    picks = {choose_in_map(lab, AREA, 0.0, np.random.default_rng(s)) for s in range(20)}
    assert picks == {(1,), (2,)}  # both admissible, both drawn


def test_union_of_touching_regions_only():
    lab = tiny_map()  # singles: none (88 % too big; 4 % too small); 2+3 = 8 % touch; 4 is alone
    for seed in range(8):
        assert choose_in_map(lab, AREA, 0.5, np.random.default_rng(seed)) == (2, 3)
    lab[0:2, 2:4] = 1  # now 2 has no small partner: 2 + 1 = 92 % is over the range
    assert choose_in_map(lab, AREA, 0.5, np.random.default_rng(0)) is None


def test_union_tried_first_with_union_p_one():
    lab = np.ones((10, 10), np.int64)  # 1: 60 px (60 %, admissible alone)
    lab[0:4, :] = 2  # 2: 40 px (40 %, admissible alone)
    lab[9, 0:5] = 3  # 3: 5 px (too small), touches 1 only -> union {1, 3} = 60 %
    lab[4:6, 0:5] = 1
    lab[9, 5:] = 1
    assert np.bincount(lab.ravel()).tolist() == [0, 55, 40, 5]
    assert choose_in_map(lab, AREA, 1.0, np.random.default_rng(0)) == (1, 3)  # 55 + 5 = 60 %
    assert choose_in_map(lab, AREA, 0.0, np.random.default_rng(0)) in {(1,), (2,)}


def test_choose_in_map_rejects_bad_maps():
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        choose_in_map(np.ones((2, 2, 3), np.int64), AREA, 0.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="negative"):
        choose_in_map(-np.ones((4, 4), np.int64), AREA, 0.5, np.random.default_rng(0))


def test_choose_region_skips_annotators_without_a_choice(tmp_path):
    img = tmp_path / "img.jpg"
    Image.fromarray(texture(10, 10, 0)).save(img)
    one = save_labels(tmp_path / "img_1.png", np.ones((10, 10)))  # a single label: no choice
    two = save_labels(tmp_path / "img_2.png", rect_map(10, 10, (0, 3, 0, 10)))
    for seed in range(4):  # annotator order is drawn, but only annotator 2 has a region
        r = choose_region(img, [one, two], AREA, 0.5, seed)
        assert (r.path, r.labels, r.annotator, r.fraction) == (two, (2,), 2, 0.3)
        assert r.load().sum() == 30 and r.load()[:3].all()
    assert choose_region(img, [one], AREA, 0.5, 0) is None
    # same (seed, id) -> same generator state, independent of the process (crc32, not hash())
    assert region_rng(3, "img").integers(1 << 30) == region_rng(3, "img").integers(1 << 30)


def test_choose_region_errors_name_the_file(tmp_path):
    img = tmp_path / "img.jpg"
    Image.fromarray(texture(10, 12, 0)).save(img)
    with pytest.raises(BenchmarkError, match="img.jpg: image has no label map"):
        choose_region(img, [], AREA, 0.5, 0)
    wrong = save_labels(tmp_path / "img_1.png", np.ones((10, 10)))
    with pytest.raises(BenchmarkError, match=r"img_1.png: label map size 10x10 differs .* \(12x10\)"):
        choose_region(img, [wrong], AREA, 0.5, 0)
    rgb = tmp_path / "img_2.png"
    Image.fromarray(texture(10, 12, 1)).save(rgb)
    with pytest.raises(BenchmarkError, match="img_2.png: label map has mode RGB"):
        choose_region(img, [rgb], AREA, 0.5, 0)
    broken = tmp_path / "img_3.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(BenchmarkError, match="img_3.png"):
        choose_region(img, [broken], AREA, 0.5, 0)


def test_real_bsds500_file(shared_dir):
    seg = shared_dir / "data" / "train" / "bsds500" / "segmentations" / "val"
    img = shared_dir / "data" / "train" / "bsds500" / "images" / "val" / "101085.jpg"
    maps = sorted(seg.glob("101085_*.png"))
    if not img.is_file() or not maps:
        pytest.skip("BSDS500 val image 101085 not present")
    lab = read_labels(maps[0])
    with Image.open(img) as im:
        assert lab.shape == im.size[::-1] == (481, 321) and lab.min() == 1  # a portrait 321x481 image, labels 1..N
    assert set(np.unique(lab).tolist()) == set(range(1, lab.max() + 1))
    r = choose_region(img, maps, AREA, 0.5, 1)
    mask = r.load()
    chosen = read_labels(r.path)
    assert AREA[0] <= mask.mean() <= AREA[1] and abs(mask.mean() - r.fraction) < 1e-12
    assert np.array_equal(mask, np.isin(chosen, r.labels))
    if len(r.labels) > 1:  # a union: its regions are connected through 4-neighbour contacts
        pairs = {tuple(p) for p in touching_pairs(chosen).tolist()}
        reached, todo = {r.labels[0]}, [r.labels[0]]
        while todo:
            a = todo.pop()
            for b in r.labels:
                if b not in reached and (min(a, b), max(a, b)) in pairs:
                    reached.add(b)
                    todo.append(b)
        assert reached == set(r.labels)
    assert choose_region(img, maps, AREA, 0.5, 1) == r  # deterministic


# ----------------------------------------------------------------------------- listing
def test_listing_drops_images_without_region_and_counts_them(tmp_path):
    root = make_bsds(tmp_path / "bsds")
    dm = dm_for("gaussian_voc", root=str(root), source="bsds500", image_size=32, patch_size=32,
                kernel_sizes=[3], val_fraction=0.0, subset_size=None)
    dm.setup("fit")
    pairs = dm.splits()["train"]
    assert dm.no_region == ["20001"] and len(pairs) == 5  # 6 images, the last without a region
    assert all(isinstance(p.mask, Region) and p.mask.labels == (2,) and p.mask.annotator == 2 for p in pairs)
    assert all(p.mask.fraction == 0.25 for p in pairs)  # a 32x16 box of a 64x32 image, by hand


def test_listing_errors_and_skip_invalid(tmp_path):
    root = make_bsds(tmp_path / "bsds", splits=("train",), per_split=3, no_region=False)
    (root / "segmentations" / "train" / "00001_1.png").unlink()
    (root / "segmentations" / "train" / "00001_2.png").unlink()
    kw = dict(root=str(root), source="bsds500", bsds_splits=["train"], image_size=32, patch_size=32,
              kernel_sizes=[3], val_fraction=0.0)
    with pytest.raises(BenchmarkError, match="00001.jpg: image has no label map"):
        dm_for("gaussian_voc", **kw).setup("fit")
    dm = dm_for("gaussian_voc", **kw, skip_invalid=True)
    dm.setup("fit")
    assert dm.num_skipped == 1 and len(dm.splits()["train"]) == 2
    with pytest.raises(FileNotFoundError, match="'nope'"):
        dm_for("gaussian_voc", **{**kw, "bsds_splits": ["nope"]}).setup("fit")
    with pytest.raises(FileNotFoundError, match="BSDS500 layout"):
        dm_for("gaussian_voc", **{**kw, "root": str(tmp_path)}).setup("fit")
    with pytest.raises(ValueError, match="data.source must be voc or bsds500"):
        dm_for("gaussian_voc", **{**kw, "source": "coco"}).setup("fit")
    with pytest.raises(ValueError, match="data.region_area"):
        dm_for("gaussian_voc", **{**kw, "region_area": [0.5, 0.2]}).setup("fit")


# ----------------------------------------------------------------------------- the three mappings
# Fixture image 0 of "train" is 64x32 with the box rows 8..24, columns 16..48 (25 %). Resized to
# 64 x 64 (rows x2, exact at the edges): rows 16..48, columns 16..48 -> a 32x32 square, 1024 px.
BOX64 = (slice(16, 48), slice(16, 48))


def _first(ds, name: str) -> dict:
    i = next(i for i, p in enumerate(ds.pairs) if p.name == name)
    levels = getattr(ds, "levels", None)
    return ds[i * len(levels) if levels and ds.cfg.expand_levels else i]


def test_gacn_mapping_on_bsds_regions(tmp_path):
    root = make_bsds(tmp_path / "bsds")
    dm = dm_for("coco_defocus", root=str(root), source="bsds500", image_size=64, patch_size=64, offset_max=0,
                rotation_step=0, hflip=False, vflip=False, noise_std_max=0.0, swap_p=0.0, val_fraction=0.0)
    dm.setup("fit")
    s = _first(dm.datasets["train"], "00000")
    mask = s["mask"][0]
    assert mask.shape == (64, 64) and s["sources"].shape == (2, 1, 64, 64)  # gray, as Sec. 4.2
    assert mask[BOX64].all() and mask.sum() == 1024
    near, far, gt = s["sources"][0, 0], s["sources"][1, 0], s["gt"][0]
    assert torch.equal(near[mask > 0], gt[mask > 0])  # near: sharp foreground (hard edge)
    assert (near[mask == 0] - gt[mask == 0]).abs().mean() > 0.02  # blurred background
    # far: the defocus spread (sigma 8) leaves the far corner sharp and blurs the foreground
    assert torch.allclose(far[0, 0], gt[0, 0], atol=1e-3) and (far[24:40, 24:40] - gt[24:40, 24:40]).abs().mean() > 0.02
    # deterministic: a second DataModule (fresh region choice, fresh draws) gives the same batch
    again = dm_for("coco_defocus", root=str(root), source="bsds500", image_size=64, patch_size=40, val_fraction=0.0)
    again.setup("fit")
    other = dm_for("coco_defocus", root=str(root), source="bsds500", image_size=64, patch_size=40, val_fraction=0.0)
    other.setup("fit")
    a, b = next(iter(again.train_dataloader())), next(iter(other.train_dataloader()))
    assert a["name"] == b["name"] and torch.equal(a["sources"], b["sources"]) and torch.equal(a["mask"], b["mask"])


def test_msasn_mapping_on_bsds_regions(tmp_path):
    root = make_bsds(tmp_path / "bsds")
    dm = dm_for("gaussian_voc", root=str(root), source="bsds500", image_size=64, patch_size=64,
                kernel_sizes=[3, 5, 7], val_fraction=0.0, subset_size=None)
    dm.setup("fit")
    ds = dm.datasets["train"]
    assert len(ds) == 5 * 3  # one pair per (image, kernel size), Sec. 4.1.1
    s = _first(ds, "00000")
    mask = s["mask"][0]
    assert s["name"] == "00000_k3" and mask[BOX64].all() and mask.sum() == 1024
    near, far = s["sources"][0], s["sources"][1]
    fg = mask.bool().expand_as(near)
    assert torch.equal(near[fg], s["gt"][fg]) and torch.equal(far[~fg], s["gt"][~fg])  # complementary


def test_ufafuse_mapping_plus_released_set(tmp_path):
    make_bsds(tmp_path / "train" / "bsds500")
    make_ufa(tmp_path / "ufa")
    kw = dict(root=str(tmp_path), source="bsds500", bsds_dir="train/bsds500", image_size=64, patch_size=64,
              hflip=False, val_fraction=0.2)
    plain = dm_for("mean_filter_duts", **kw)
    plain.setup("fit")
    dm = dm_for("mean_filter_duts", **kw, ufa_trainset_dir="ufa", ufa_trainset_repeat=2)
    dm.setup("fit")
    gen, train = plain.datasets["train"], dm.datasets["train"]
    n = len(gen)
    assert n == 4 and len(train) == n + 2 * 2  # generated + 2 passes over 2 released scenes
    assert len(dm.datasets["val"]) == len(plain.datasets["val"]) == 1  # validation: generated only
    g = gen[0]
    mask = g["mask"][0]
    fg = mask.bool().expand_as(g["gt"])
    assert torch.equal(g["sources"][0][fg], g["gt"][fg]) and torch.equal(g["sources"][1][~fg], g["gt"][~fg])  # Eq. 11
    first = train[0]
    assert set(first) == {"sources", "gt", "name"} and torch.equal(first["sources"], g["sources"])
    released = [train[i]["name"] for i in range(n, n + 4)]
    assert [r.split("/")[0] for r in released] == ["scene0", "scene1", "scene0", "scene1"]
    assert all(train[i]["sources"].shape == (2, 3, 64, 64) for i in range(n, n + 4))
    levels = {train[i + e * len(train)]["name"] for e in range(6) for i in (n, n + 2)}
    assert levels == {"scene0/23", "scene0/810"}  # repeats and epochs redraw the level
    with pytest.raises(ValueError, match="gpu_synthesis=false"):
        dm_for("mean_filter_duts", **kw, ufa_trainset_dir="ufa", gpu_synthesis=True).setup("fit")
    with pytest.raises(FileNotFoundError, match="data.ufa_trainset_dir"):
        dm_for("mean_filter_duts", **kw, ufa_trainset_dir="nope").setup("fit")


class _Index(torch.utils.data.Dataset):
    def __init__(self, tag: str, n: int):
        self.tag, self.n = tag, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"name": f"{self.tag}{i}", "extra": 0}


def test_epoch_concat_index_map_by_hand():
    cat = EpochConcat([(_Index("a", 2), 1), (_Index("b", 3), 2)], keys=("name",))
    assert len(cat) == 2 + 3 * 2
    # epoch 0: a0 a1 | b0 b1 b2 (repeat 0) | b3 b4 b5 (repeat 1 = b's epoch 1)
    assert [cat[i]["name"] for i in range(8)] == ["a0", "a1", "b0", "b1", "b2", "b3", "b4", "b5"]
    # epoch 1: a's epoch 1 (a2, a3), b's epochs 2 and 3 (b6.., b9..)
    assert [cat[8 + i]["name"] for i in (0, 1, 2, 5)] == ["a2", "a3", "b6", "b9"]
    assert set(cat[0]) == {"name"}
    with pytest.raises(ValueError, match="non-empty"):
        EpochConcat([(_Index("a", 2), 0)], keys=("name",))


# ----------------------------------------------------------------------------- cpu profiles
PROFILES = {"gacn": (0.8, 25), "msasn": (0.88, None), "ufafuse": (0.1, None)}


@pytest.mark.parametrize("paper", sorted(PROFILES))
def test_cpu_profile_keeps_the_recipe_shape(paper):
    cfg = load_config(f"{paper}.yaml", ["profile=cpu"])
    paper_cfg = load_config(f"{paper}.yaml")
    t, o, d = cfg.trainer, cfg.optim, cfg.data
    assert d.source == "bsds500" and d.bsds_dir == "train/bsds500" and d.root is None and d.benchmark is None
    assert t.max_epochs == -1 and t.max_steps > 0 and t.accelerator == "cpu" and d.num_workers == 0
    steps_per_epoch = int(t.limit_train_batches)
    epochs = t.max_steps / steps_per_epoch
    assert epochs == int(epochs) and t.max_steps / (steps_per_epoch * t.check_val_every_n_epoch) >= 8  # >= 8 val points
    assert (o.name, o.lr, o.scheduler, o.gamma) == (paper_cfg.optim.name, paper_cfg.optim.lr, "step", PROFILES[paper][0])
    assert cfg.checkpoint.monitor == "val/loss" and cfg.model == paper_cfg.model and cfg.metrics == paper_cfg.metrics
    if paper == "gacn":  # x0.8 every 2 epochs: 25 decays in 50 epochs, kept over the short run
        assert epochs / o.step_size == PROFILES[paper][1] and o.step_size == 2
        assert (d.name, d.patch_size, d.gray, d.batch_size) == ("coco_defocus", 156, True, 16)
    if paper == "msasn":  # x0.88 every 2 epochs, early stopping with patience 6
        assert o.step_size == 2 and t.early_stopping.enabled and t.early_stopping.patience == 6
        assert d.name == "gaussian_voc" and list(d.kernel_sizes) == [5, 9, 15]
    if paper == "ufafuse":  # /10 after 200 of 300 epochs: at 2/3 of the run
        assert o.step_size * 3 == epochs * 2
        assert d.name == "mean_filter_duts" and d.ufa_trainset_dir == "ufa_trainset"


SMOKE = {  # shrink the cpu profile to seconds; the recipe keys (loss, generator, schedule) stay
    "gacn": ["data.image_size=64", "data.patch_size=40", "data.batch_size=2"],
    "msasn": ["data.image_size=32", "data.patch_size=32", "data.batch_size=2", "data.kernel_sizes=[3,5]",
              "model.width=8", "model.gcb_width=16", "model.gcb_depth=5"],
    "ufafuse": ["data.image_size=32", "data.patch_size=32", "data.batch_size=2", "model.features=8"],
}


@pytest.mark.parametrize("paper", sorted(SMOKE))
def test_cpu_profile_first_steps(paper, tmp_path):
    from experiments.run import run

    make_bsds(tmp_path / "data" / "train" / "bsds500")
    make_ufa(tmp_path / "data" / "ufa_trainset")
    def train(run_dir):
        run(load_config(f"{paper}.yaml", ["profile=cpu", f"data.root={tmp_path / 'data'}", *SMOKE[paper],
                                          "data.val_batch_size=2", "data.num_val_samples=2", "trainer.max_steps=2",
                                          "trainer.limit_train_batches=2", "trainer.check_val_every_n_epoch=1",
                                          "trainer.log_every_n_steps=1", "logger.wandb=false", "metrics=[psnr]",
                                          f"run_dir={run_dir}"]))
        return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)

    ckpt = train(tmp_path / "run")
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert (tmp_path / "run" / "metrics.csv").is_file()
    # issue 24: the same command gives the same numbers (CPU determinism): bit-identical weights
    again = train(tmp_path / "run2")["state_dict"]
    assert again.keys() == ckpt["state_dict"].keys()
    assert all(torch.equal(v, again[k]) for k, v in ckpt["state_dict"].items())
