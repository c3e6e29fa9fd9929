"""UDPNet's Lytro split and grid patches, the MF-VOC reader (focus masks, fixed held-out list) and the
``cpu`` profiles of UDPNet and VAEEDOF (both stages): mappings against hand-checked values, first steps."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from datamodules.mf_voc import FOLDERS, HELDOUT_IDS, focus_mask, list_triplets, split_triplets, voc_id
from datamodules.unsupervised_pairs import FUSIONDN_TEST, grid_offsets, grid_patches
from mfif import registry
from mfif.config import load_config
from mfif.io import BenchmarkError


def dm_for(name: str, **kw):
    cfg = OmegaConf.structured(registry.data_config_class(name)(name=name, **kw))
    return registry.datamodule_class(name)(cfg)


def ramp(h: int, w: int, offset: int = 0) -> np.ndarray:
    """uint8 image whose pixel (y, x) is (offset + 7y + x) mod 256: every patch is identifiable."""
    yy, xx = np.mgrid[:h, :w]
    return ((offset + 7 * yy + xx) % 256).astype(np.uint8)


def make_lytro(root: Path, size: int = 32, sep: str = "-") -> Path:
    """20 gray pairs named like Lytro (``lytro-NN-A.png``); B is the negative of A."""
    root.mkdir(parents=True)
    for i in range(1, 21):
        a = ramp(size, size, 10 * i)
        Image.fromarray(a).save(root / f"lytro{sep}{i:02d}{sep}A.png")
        Image.fromarray(255 - a).save(root / f"lytro{sep}{i:02d}{sep}B.png")
    return root


# ----------------------------------------------------------------------------- UDPNet: split
def test_fusiondn_split_is_the_documented_list(tmp_path):
    # FusionDN's test folder numbers 1..10 = lytro 01 02 03 09 05 06 07 12 11 10 (hash-matched by hand)
    assert FUSIONDN_TEST == tuple(f"lytro-{n:02d}" for n in (1, 2, 3, 5, 6, 7, 9, 10, 11, 12))
    for sep in ("-", "_"):  # this project's names and the MFIF benchmark's (lytro_NN_A) alike
        dm = dm_for("unsupervised_pairs", root=str(make_lytro(tmp_path / sep, sep=sep)), patch_size=16)
        split = dm.scene_split()
        train = [s.name.replace("_", "-") for s in split["train"]]
        test = [s.name.replace("_", "-") for s in split["test"]]
        assert test == list(FUSIONDN_TEST) and split["val"] == split["test"]
        assert train == [f"lytro-{n:02d}" for n in (4, 8, 13, 14, 15, 16, 17, 18, 19, 20)]


def test_fusiondn_split_names_missing_pairs(tmp_path):
    root = make_lytro(tmp_path / "l")
    for k in "AB":
        (root / f"lytro-05-{k}.png").unlink()
    with pytest.raises(BenchmarkError, match="missing: lytro-05 .*data.split=last"):
        dm_for("unsupervised_pairs", root=str(root)).setup("fit")
    with pytest.raises(ValueError, match="data.split must be one of"):
        dm_for("unsupervised_pairs", root=str(root), split="random").setup("fit")


def test_fusiondn_split_on_the_real_lytro(shared_dir):
    dm = dm_for("unsupervised_pairs", root=str(shared_dir / "data" / "lytro"))
    split = dm.scene_split()
    assert [s.name for s in split["test"]] == list(FUSIONDN_TEST) and len(split["train"]) == 10
    assert not {s.name for s in split["train"]} & set(FUSIONDN_TEST)


# ----------------------------------------------------------------------------- UDPNet: grid patches
def test_grid_count_reproduces_the_papers_66264():
    offsets = grid_offsets(520, 60, 10)  # MATLAB 1:10:461
    assert offsets[0] == 0 and offsets[-1] == 460 and len(offsets) == 47
    grid = grid_patches([(520, 520)] * 10, 60, 10, flips=True)
    assert len(grid) == 3 * 10 * 47 * 47 == 66270
    assert len(grid) // 12 * 12 == 66264  # the released writer stores whole chunks of 12 (Sec. IV-A's count)
    small = grid_patches([(30, 25), (20, 20)], 10, 10, flips=True)
    # scene 0: y in (0, 10, 20), x in (0, 10); scene 1: y, x in (0, 10); three flips each
    assert len(small) == 3 * (3 * 2 + 2 * 2)
    assert small[:4].tolist() == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 2], [0, 0, 10, 0]]
    assert small[-1].tolist() == [1, 10, 10, 2]
    assert len(grid_patches([(30, 25)], 10, 10, flips=False)) == 6
    with pytest.raises(ValueError, match="patch_stride"):
        grid_offsets(30, 10, 0)


def test_grid_patches_cut_and_flip_by_hand(tmp_path):
    root = make_lytro(tmp_path / "l", size=32)
    kw = dict(root=str(root), patch_size=8, patch_stride=12, num_patches=None)
    ds = dm_for("unsupervised_pairs", **kw).build_dataset("train")
    assert len(ds) == 10 * 9 * 3  # offsets 0, 12, 24 in y and x, three flips, 10 training scenes
    for i in range(0, len(ds), 7):
        k, y, x, f = ds.grid[i].tolist()
        a = torch.from_numpy(ramp(32, 32, 10 * [4, 8, 13, 14, 15, 16, 17, 18, 19, 20][k])[y:y + 8, x:x + 8]).float() / 255
        a = a.flip(0) if f == 1 else a.flip(1) if f == 2 else a  # up-down, left-right
        item = ds[i]
        assert item["sources"].shape == (2, 1, 8, 8)
        torch.testing.assert_close(item["sources"][0, 0], a, atol=1e-6, rtol=0)
        torch.testing.assert_close(item["sources"][1, 0], 1 - a, atol=1e-6, rtol=0)  # the same cut for B
    # a fixed set in a seeded order: same seed -> same order, another seed -> another order
    again = dm_for("unsupervised_pairs", **kw).build_dataset("train")
    other = dm_for("unsupervised_pairs", seed=1, **kw).build_dataset("train")
    assert np.array_equal(ds.grid, again.grid) and not np.array_equal(ds.grid, other.grid)
    assert sorted(map(tuple, ds.grid.tolist())) == sorted(map(tuple, other.grid.tolist()))
    capped = dm_for("unsupervised_pairs", **dict(kw, num_patches=12)).build_dataset("train")
    assert np.array_equal(capped.grid, ds.grid[:12])  # the first N of the order, as the writer keeps
    with pytest.raises(ValueError, match="data.num_patches=271 must be in"):
        dm_for("unsupervised_pairs", **dict(kw, num_patches=271)).build_dataset("train")


# ----------------------------------------------------------------------------- MF-VOC: focus masks
def _columns(values) -> torch.Tensor:
    """A (1, 4, 6) image whose columns hold ``values``."""
    return torch.tensor(values, dtype=torch.float32).expand(4, 6)[None].clone()


def test_focus_mask_by_hand():
    gt = _columns([0.5] * 6)
    a = gt + _columns([0, 0, 0, 0.2, 0.2, 0])  # A defocused (wrong) in columns 3-4
    b = gt + _columns([0, 0.2, 0.2, 0, 0, 0])  # B wrong in columns 1-2
    src = torch.stack([a, b])
    # no filter: columns 1-2 -> A (1), 3-4 -> B (0); columns 0 and 5 are flat (A = B = GT) and take
    # the nearest decided column: 1 (A) and 4 (B)
    m = focus_mask(src, gt, box=1, tol=0.0)
    assert m.shape == (1, 4, 6) and m[0].tolist() == [[1, 1, 1, 0, 0, 0]] * 4
    # 3x3 box, reflected: d_A by column = (0, 0, .2/3, .4/3, .4/3, .4/3), d_B = (.4/3, .4/3, .4/3, .2/3, 0, 0),
    # so d_A - d_B = (-.133, -.133, -.067, .067, .133, .133): every column decided at tol 0.05 ...
    assert focus_mask(src, gt, box=3, tol=0.05)[0].tolist() == [[1, 1, 1, 0, 0, 0]] * 4
    # ... columns 2 and 3 undecided at tol 0.1: column 2 is 1 from column 1, column 3 is 1 from column 4
    assert focus_mask(src, gt, box=3, tol=0.1)[0].tolist() == [[1, 1, 1, 0, 0, 0]] * 4
    # colour: |S - GT| is averaged over the channels before the comparison
    rgb = torch.stack([torch.cat([a, gt, gt]), torch.cat([b, gt, gt])])
    assert focus_mask(rgb, torch.cat([gt] * 3), box=1, tol=0.0)[0].tolist() == [[1, 1, 1, 0, 0, 0]] * 4
    assert focus_mask(torch.stack([gt, gt]), gt).eq(1).all()  # nothing decided: all source A


def test_focus_mask_errors():
    gt = _columns([0.5] * 6)
    with pytest.raises(ValueError, match=r"sources \(2, C, H, W\)"):
        focus_mask(torch.stack([gt, gt, gt]), gt)
    with pytest.raises(ValueError, match="odd box"):
        focus_mask(torch.stack([gt, gt]), gt, box=4)


# ----------------------------------------------------------------------------- MF-VOC: reader and splits
def make_mfvoc(root: Path, ids: list[str], size: int = 32) -> Path:
    """MF-VOC layout: GT in [60, 159], A = GT - 40 on its right half (defocused there), B = GT - 40 on its left half."""
    for sub in FOLDERS:
        (root / sub).mkdir(parents=True)
    for i, name in enumerate(ids):
        gt = np.stack([60 + ramp(size, size, 5 * i) % 100] * 3, -1).astype(np.uint8)
        a, b = gt.copy(), gt.copy()
        a[:, size // 2:] -= 40
        b[:, : size // 2] -= 40
        for sub, img in zip(FOLDERS, (a, b, gt)):
            Image.fromarray(img).save(root / sub / f"{name}.png")
    return root


# held out (in HELDOUT_IDS): 2007_000032 (two crops), 2008_000075, 2009_000039, 2010_000110
FIXTURE_IDS = ["2007_000032_1", "2007_000032_2", "2007_000033_1", "2008_000075_1", "2008_000076_1",
               "2009_000001_1", "2009_000039_1", "2010_000003_1", "2010_000110_1", "2011_000004_1"]


def test_heldout_list_is_fixed():
    assert len(HELDOUT_IDS) == 146 == len(set(HELDOUT_IDS)) and list(HELDOUT_IDS) == sorted(HELDOUT_IDS)
    assert HELDOUT_IDS[:3] == ("2007_000032", "2007_000346", "2007_000661") and HELDOUT_IDS[-1] == "2011_003146"
    assert voc_id("2007_000032_1") == "2007_000032" and voc_id("2007_000032") == "2007_000032"


def test_heldout_list_is_every_tenth_real_id_and_disjoint(shared_dir):
    root = shared_dir / "data" / "train" / "mf_voc"
    ids = sorted(p.stem for p in (root / "sourceA").iterdir())
    assert tuple(voc_id(i) for i in ids[::10]) == HELDOUT_IDS
    dm = dm_for("mf_voc", root=str(root))
    parts = {k: {t.name for t in v} for k, v in dm.splits().items()}
    assert {k: len(v) for k, v in parts.items()} == {"train": 1279, "val": 32, "test": 146}
    assert not parts["train"] & parts["test"] and not parts["train"] & parts["val"] and not parts["val"] & parts["test"]
    assert {voc_id(n) for n in parts["test"]} == set(HELDOUT_IDS)


def test_mfvoc_splits_by_voc_id(tmp_path):
    triplets, skipped = list_triplets(str(make_mfvoc(tmp_path / "v", FIXTURE_IDS)))
    assert [t.name for t in triplets] == FIXTURE_IDS and not skipped
    s = split_triplets(triplets, num_val=2)
    # every crop of a held-out VOC id is a test triplet; val: 2 evenly spaced of the other 5 (positions 0, 4)
    assert [t.name for t in s["test"]] == ["2007_000032_1", "2007_000032_2", "2008_000075_1", "2009_000039_1",
                                           "2010_000110_1"]
    assert [t.name for t in s["val"]] == ["2007_000033_1", "2011_000004_1"]
    assert [t.name for t in s["train"]] == ["2008_000076_1", "2009_000001_1", "2010_000003_1"]
    with pytest.raises(ValueError, match="data.num_val=5"):
        split_triplets(triplets, num_val=5)


def test_mfvoc_samples(tmp_path):
    root = make_mfvoc(tmp_path / "v", FIXTURE_IDS)
    dm = dm_for("mf_voc", root=str(root), patch_size=16, num_val=2, num_sources=7)
    dm.setup("fit")
    dm.setup("test")
    item = dm.datasets["train"][0]
    assert item["sources"].shape == (7, 3, 16, 16) and item["gt"].shape == (3, 16, 16)
    assert item["mask"].shape == (1, 16, 16)
    for k in range(7):  # cyclic duplication A, B, A, B, ... (VAEEDOF Sec. 3)
        assert torch.equal(item["sources"][k], item["sources"][k % 2])
    # the crop and flip move the mask with the images: 1 exactly where A equals GT (its sharp half)
    a_sharp = (item["sources"][0] - item["gt"]).abs().amax(0) == 0
    assert torch.equal(item["mask"][0].bool(), a_sharp)
    assert torch.equal(dm.datasets["train"][0]["sources"], item["sources"])  # deterministic
    test = dm.datasets["test"][0]
    assert test["sources"].shape == (7, 3, 32, 32) and test["name"] == "2007_000032_1"  # whole triplet
    assert test["mask"][0, :, :16].eq(1).all() and test["mask"][0, :, 16:].eq(0).all()
    gray = dm_for("mf_voc", root=str(root), patch_size=16, num_val=2, gray=True).build_dataset("val")[0]
    assert gray["sources"].shape == (2, 1, 32, 32) and gray["gt"].shape == (1, 32, 32)


def test_mfvoc_errors_name_the_file(tmp_path):
    root = make_mfvoc(tmp_path / "v", FIXTURE_IDS[:6])
    (root / "groundtruth" / "2007_000033_1.png").unlink()
    with pytest.raises(BenchmarkError, match=r"groundtruth/2007_000033_1.png: missing \(partner of .*sourceA/"):
        dm_for("mf_voc", root=str(root), num_val=1).setup("fit")
    dm = dm_for("mf_voc", root=str(root), num_val=1, skip_invalid=True)
    dm.setup("fit")
    assert dm.num_skipped == 1 and "2007_000033_1" in dm.skipped[0][0]
    Image.fromarray(np.zeros((20, 32, 3), np.uint8)).save(root / "sourceB" / "2008_000076_1.png")
    for sub in FOLDERS[:2]:  # drop the incomplete triplet, which would be named first
        (root / sub / "2007_000033_1.png").unlink()
    with pytest.raises(BenchmarkError, match="sourceB/2008_000076_1.png: size 32x20 differs"):
        list_triplets(str(root))
    (tmp_path / "v2" / "sourceB").mkdir(parents=True)
    with pytest.raises(BenchmarkError, match="v2/sourceA: missing folder"):
        list_triplets(str(tmp_path / "v2"))
    with pytest.raises(BenchmarkError, match="none of the 146 held-out ids"):
        dm_for("mf_voc", root=str(make_mfvoc(tmp_path / "v3", ["2007_000033_1", "2007_000034_1", "2007_000035_1"])),
               num_val=1).setup("test")
    with pytest.raises(ValueError, match="data.root must point to an MF-VOC folder"):
        dm_for("mf_voc").setup("fit")


# ----------------------------------------------------------------------------- cpu profiles
def test_cpu_profiles_keep_the_recipe_shape():
    cfg, paper = load_config("udpnet.yaml", ["profile=cpu"]), load_config("udpnet.yaml")
    d, t = cfg.data, cfg.trainer
    assert (d.name, d.split, d.patch_size, d.patch_stride, d.grid_flips, d.num_patches) == (
        "unsupervised_pairs", "fusiondn", 60, 10, True, 66264)  # Sec. IV-A
    assert (d.batch_size, cfg.optim.name, cfg.optim.lr) == (16, "adam", 2e-4)  # Sec. IV
    assert cfg.model == paper.model and cfg.metrics == paper.metrics and cfg.checkpoint.monitor is None
    for c in (cfg, load_config("vaeedof_vae.yaml", ["profile=cpu"]), load_config("vaeedof.yaml", ["profile=cpu"])):
        t = c.trainer
        epochs = t.max_steps / t.limit_train_batches
        assert t.accelerator == "cpu" and t.max_epochs == -1 and epochs == int(epochs)
        assert epochs / t.check_val_every_n_epoch >= 8  # >= 8 points on the learning curve
    v_cfg, v_paper = load_config("vaeedof.yaml", ["profile=cpu"]), load_config("vaeedof.yaml")
    assert v_cfg.data.name == "mf_voc" and v_cfg.model == v_paper.model and v_cfg.ema.enabled
    assert set(v_cfg.metrics) <= set(v_paper.metrics) and len(v_cfg.metrics) == 8  # Table 1 minus the weight-file ones
    assert v_cfg.optim == v_paper.optim and not v_cfg.model.allow_random_vae


def _first_steps(config: str, overrides: list[str], run_dir: Path) -> Path:
    from experiments.run import run

    cfg = load_config(config, ["profile=cpu", *overrides, "trainer.max_steps=2", "trainer.limit_train_batches=1",
                               "trainer.log_every_n_steps=1", "logger.wandb=false", f"run_dir={run_dir}"])
    run(cfg)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert (run_dir / "metrics.csv").is_file()
    return run_dir / "checkpoints" / "last.ckpt"


def test_udpnet_cpu_profile_first_steps(tmp_path):
    root = make_lytro(tmp_path / "lytro", size=32)
    over = [f"data.root={root}", "data.patch_size=16", "data.batch_size=2", "data.num_patches=null", "metrics=[q_nmi]"]
    first = torch.load(_first_steps("udpnet.yaml", over, tmp_path / "run"), map_location="cpu", weights_only=False)
    # issue 24: the same command gives the same numbers (CPU determinism): bit-identical weights
    again = torch.load(_first_steps("udpnet.yaml", over, tmp_path / "run2"), map_location="cpu", weights_only=False)
    assert again["state_dict"].keys() == first["state_dict"].keys()
    assert all(torch.equal(v, again["state_dict"][k]) for k, v in first["state_dict"].items())


@pytest.mark.slow  # 15-30 s of real data: in make test, not make test-fast
def test_vaeedof_cpu_profiles_first_steps_both_stages(tmp_path):
    root = make_mfvoc(tmp_path / "mfvoc", FIXTURE_IDS, size=64)
    small = [f"data.root={root}", "data.num_val=2", "data.val_batch_size=2", "data.batch_size=2", "model.vae_width=8"]
    vae = _first_steps("vaeedof_vae.yaml", [*small, "data.patch_size=16", "model.max_images=2"], tmp_path / "vae")
    _first_steps("vaeedof.yaml", [*small, "data.patch_size=64", f"model.vae_checkpoint={vae}",
                                  "model.unet_channels=[16,32,32]", "model.attention_heads=2", "model.norm_groups=8",
                                  "metrics=[psnr,ssim]"], tmp_path / "fuse")
