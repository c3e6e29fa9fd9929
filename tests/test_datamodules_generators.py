"""Synthetic generators and real-pair readers: formulas, sharpness, determinism, bad input.

Every dataset here is a tiny stand-in written with PIL (a fake VOC / DUTS / COCO folder of
3-6 small images, a MattingMFIF scene folder, a UFA-layout folder).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from scipy import ndimage as ndi

import datamodules  # noqa: F401  (registers everything)
from datamodules._blur import box_blur, gaussian_blur, opencv_sigma
from datamodules._synth import is_recipe
from mfif.io import BenchmarkError
from datamodules.coco_defocus import defocus_spread_far
from datamodules.gaussian_voc import near_far_pair
from datamodules.matting_mfif import pad_order
from datamodules.mean_filter_duts import eq11_pair
from mfif import registry

SHARED_UFA = Path("/work/shared/data/ufa_trainset")


# ----------------------------------------------------------------------------- fake data sets
def texture(h: int, w: int, seed: int, rgb: bool = True) -> np.ndarray:
    """Sharp random texture (uint8) so blurring clearly lowers the Laplacian variance."""
    r = np.random.default_rng(seed)
    base = r.integers(0, 256, size=(h, w, 3) if rgb else (h, w)).astype(np.float32)
    return np.clip(0.7 * base + 0.3 * ndi.gaussian_filter(base, 2), 0, 255).astype(np.uint8)


def rect_mask(h: int, w: int, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    m = np.zeros((h, w), np.uint8)
    y0, x0 = r.integers(h // 6, h // 3), r.integers(w // 6, w // 3)
    m[y0 : y0 + h // 2, x0 : x0 + w // 2] = 1
    return m


def make_voc(root: Path, n: int = 4, size=(48, 40)) -> Path:
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationObject").mkdir()
    for i in range(n):
        w, h = size[0] + 4 * i, size[1]
        Image.fromarray(texture(h, w, i)).save(root / "JPEGImages" / f"2007_{i:06d}.jpg", quality=95)
        m = rect_mask(h, w, i)
        edge = m ^ ndi.binary_erosion(m).astype(np.uint8)
        pal = Image.fromarray(np.where(edge, 255, m * (1 + i % 2)).astype(np.uint8), mode="P")
        pal.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
        pal.save(root / "SegmentationObject" / f"2007_{i:06d}.png")
    return root


def make_duts(root: Path, n: int = 4, size=(44, 36)) -> Path:
    (root / "DUTS-TR-Image").mkdir(parents=True)
    (root / "DUTS-TR-Mask").mkdir()
    for i in range(n):
        Image.fromarray(texture(size[1], size[0], 10 + i)).save(root / "DUTS-TR-Image" / f"ILSVRC_{i}.jpg", quality=95)
        Image.fromarray(rect_mask(size[1], size[0], i) * 255).save(root / "DUTS-TR-Mask" / f"ILSVRC_{i}.png")
    return root


def make_coco(root: Path) -> Path:
    """6 images: 4 usable single-instance, 1 with two instances, 1 too small (area filter)."""
    (root / "train2014").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns = [], []
    for i in range(6):
        w, h = 64, 56
        Image.fromarray(texture(h, w, 20 + i)).save(root / "train2014" / f"COCO_{i:012d}.jpg", quality=95)
        images.append({"id": i + 1, "file_name": f"COCO_{i:012d}.jpg", "width": w, "height": h})
        side = 6 if i == 5 else 30  # image 5: 36 px foreground, below min_area
        x0, y0 = 10 + i, 12
        poly = [x0, y0, x0 + side, y0, x0 + side, y0 + side, x0, y0 + side]
        anns.append({"id": 100 + i, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                     "segmentation": [poly], "area": float(side * side), "bbox": [x0, y0, side, side]})
        if i == 4:  # second instance -> excluded (Sec. 4.1.1)
            anns.append({"id": 200, "image_id": 5, "category_id": 1, "iscrowd": 0, "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]],
                         "area": 25.0, "bbox": [0, 0, 5, 5]})
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(data))
    return root


def dm_for(name: str, **kw):
    cfg = OmegaConf.structured(registry.data_config_class(name)(name=name, **kw))
    return registry.datamodule_class(name)(cfg)


VOC_KW = dict(image_size=32, patch_size=32, kernel_sizes=[3, 5, 7], val_fraction=0.25, batch_size=2)
DUTS_KW = dict(image_size=32, patch_size=32, val_fraction=0.25, batch_size=2)
COCO_KW = dict(image_size=64, patch_size=40, min_area=500.0, max_area=5000.0, batch_size=2)


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    t = tmp_path_factory.mktemp("fakes")
    return {"voc": make_voc(t / "voc"), "duts": make_duts(t / "duts"), "coco": make_coco(t / "coco")}


def generator(kind: str, fakes, **kw):
    name, base = {"voc": ("gaussian_voc", VOC_KW), "duts": ("mean_filter_duts", DUTS_KW),
                  "coco": ("coco_defocus", COCO_KW)}[kind]
    dm = dm_for(name, root=str(fakes[kind]), **{**base, **kw})
    dm.setup("fit")
    return dm


# ----------------------------------------------------------------------------- blur operators
def test_blurs_match_scipy_and_known_values():
    x = torch.rand(3, 2, 11, 9, dtype=torch.float64)
    sig, rad = [2.0, 0.7, 8.0], [3, 1, 45]  # per-sample kernels, one wider than the image
    y = gaussian_blur(x, torch.tensor(sig), torch.tensor(rad))
    for b in range(3):
        for c in range(2):
            ref = ndi.gaussian_filter(x[b, c].numpy(), sig[b], radius=rad[b], mode="mirror")
            np.testing.assert_allclose(y[b, c].numpy(), ref, atol=1e-12)
    sizes = [2, 3, 10]
    z = box_blur(x, torch.tensor(sizes))
    for b, k in enumerate(sizes):
        np.testing.assert_allclose(z[b, 0].numpy(), ndi.uniform_filter(x[b, 0].numpy(), k, mode="mirror"), atol=1e-12)
    # known values: cv2.blur anchor k//2 for even k -> out[i] = (x[i-1] + x[i]) / 2, reflect-101 border
    row = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]])
    assert box_blur(row, 2).flatten().tolist() == [1.5, 1.5, 2.5, 3.5]
    assert opencv_sigma(5) == pytest.approx(1.1) and opencv_sigma(15) == pytest.approx(2.6)
    with pytest.raises(ValueError, match="odd"):
        opencv_sigma(4)


# ----------------------------------------------------------------------------- pixel-exact formulas
def test_eq11_pixel_exact():
    Is = torch.tensor([[[[0.9, 0.8], [0.7, 0.6]]]])
    Ib = torch.tensor([[[[0.1, 0.2], [0.3, 0.4]]]])
    If = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    near, far = eq11_pair(Is, Ib, If)
    assert near.flatten().tolist() == pytest.approx([0.9, 0.2, 0.3, 0.6])
    assert far.flatten().tolist() == pytest.approx([0.1, 0.8, 0.7, 0.4])


def test_near_far_pair_and_defocus_spread_pixel_exact():
    img = torch.tensor([[[[1.0, 0.5, 0.0]]]])
    blur = torch.tensor([[[[0.2, 0.4, 0.6]]]])
    m = torch.tensor([[[[1.0, 1.0, 0.0]]]])
    near, far = near_far_pair(img, blur, m)
    assert near.flatten().tolist() == pytest.approx([1.0, 0.5, 0.6])
    assert far.flatten().tolist() == pytest.approx([0.2, 0.4, 0.0])
    m2 = torch.tensor([[[[1.0, 0.75, 0.25]]]])  # spread mask: the blurred foreground leaks outward
    assert defocus_spread_far(img, blur, m2).flatten().tolist() == pytest.approx([0.2, 0.425, 0.15])


def _manual_check(sample, blurred_np):
    gt, m = sample["gt"].numpy(), sample["mask"].numpy()
    np.testing.assert_allclose(sample["sources"][0].numpy(), gt * m + blurred_np * (1 - m), atol=1e-5)
    np.testing.assert_allclose(sample["sources"][1].numpy(), blurred_np * m + gt * (1 - m), atol=1e-5)


def test_gaussian_voc_levels_and_formula(fakes):
    dm = generator("voc", fakes)
    ds = dm.datasets["train"]
    assert len(ds) == 3 * 3  # 3 train images x 3 kernel sizes (Sec. 4.1.1)
    for i, k in zip(range(3), (3, 5, 7)):
        s = ds[i]
        assert s["sources"].shape == (2, 3, 32, 32) and s["name"].endswith(f"_k{k}")
        assert set(s["mask"].unique().tolist()) == {0.0, 1.0}
        ref = np.stack([ndi.gaussian_filter(c, opencv_sigma(k), radius=k // 2, mode="mirror") for c in s["gt"].numpy()])
        _manual_check(s, ref)


def test_mean_filter_duts_formula(fakes):
    dm = generator("duts", fakes, expand_levels=True)  # every (image, interval)
    ds = dm.datasets["train"]
    assert len(ds) == 3 * 4  # 3 train images x 4 intervals (Sec. III-C)
    for i, (lo, hi) in enumerate([(2, 3), (4, 5), (5, 7), (8, 10)]):
        s = ds[i]
        k = int(s["name"].rsplit("_m", 1)[1])
        assert lo <= k <= hi
        ref = np.stack([ndi.uniform_filter(c, k, mode="mirror") for c in s["gt"].numpy()])
        _manual_check(s, ref)
    assert generator("duts", fakes, patch_size=24).datasets["train"][0]["sources"].shape == (2, 3, 24, 24)
    with pytest.raises(ValueError, match="patch_size 40 > data.image_size 32"):
        generator("duts", fakes, patch_size=40)


def test_coco_selection_split_and_formula(fakes):
    dm = generator("coco", fakes)
    names = sorted(p.name for split in ("train", "val") for p in dm.splits()[split])
    assert names == [f"COCO_{i:012d}" for i in range(4)]  # two-instance and small images dropped
    assert (len(dm.splits()["train"]), len(dm.splits()["val"])) == (3, 1)  # 7:3 of 4
    s = dm.datasets["train"][0]
    assert s["sources"].shape == (2, 1, 40, 40) and s["gt"].shape == (1, 40, 40)
    # augmentation off: check the blend against scipy on the full 64 x 64 image, then the crop
    dm = generator("coco", fakes, rotation_step=0, hflip=False, vflip=False, offset_p=0.0, noise_std_max=0.0, swap_p=0.0)
    ds = dm.datasets["train"]
    r = ds.recipe(1, np.random.default_rng(5))
    out = ds.synthesize({k: (v[None] if torch.is_tensor(v) else [v]) for k, v in r.items()})
    gt, m = r["gt"][0].double().numpy(), r["mask"][0].double().numpy()
    blur = ndi.gaussian_filter(gt, 2.0, radius=int(r["_radius"]), mode="mirror")
    m2 = ndi.gaussian_filter(m, 8.0, radius=45, mode="mirror")
    y, x, p = r["_crop"].tolist()
    cut = lambda a: a[y : y + p, x : x + p]  # noqa: E731
    np.testing.assert_allclose(out["sources"][0, 0, 0].numpy(), cut(m * gt + (1 - m) * blur), atol=1e-5)
    np.testing.assert_allclose(out["sources"][0, 1, 0].numpy(), cut(gt * (1 - m2) + blur * m2), atol=1e-5)
    np.testing.assert_array_equal(out["mask"][0, 0].numpy(), cut(m))


def test_coco_swap_inverts_mask_and_noise_offsets(fakes):
    dm = generator("coco", fakes, swap_p=1.0, noise_std_max=0.0, offset_p=0.0, rotation_step=0, hflip=False, vflip=False)
    ref = generator("coco", fakes, swap_p=0.0, noise_std_max=0.0, offset_p=0.0, rotation_step=0, hflip=False, vflip=False)
    a, b = dm.datasets["train"][0], ref.datasets["train"][0]
    assert torch.equal(a["sources"], b["sources"].flip(0)) and torch.equal(a["mask"], 1 - b["mask"])
    off = generator("coco", fakes, offset_p=1.0, noise_std_max=0.0, swap_p=0.0)
    r = off.datasets["train"].recipe(0, np.random.default_rng(1))
    assert r["_offset"].abs().max() <= 2 and (r["_offset"].abs().sum(1) > 0).sum() <= 1  # one source only


# ----------------------------------------------------------------------------- sharpness
def lap_var(img: np.ndarray, region: np.ndarray) -> float:
    return float(ndi.laplace(img.astype(np.float64))[region].var())


@pytest.mark.parametrize("kind", ["voc", "duts", "coco"])
def test_gt_sharper_than_sources_in_their_blurred_region(fakes, kind):
    extra = {"coco": dict(noise_std_max=0.0)}.get(kind, {})  # noise would raise the Laplacian variance
    ds = generator(kind, fakes, **extra).datasets["train"]
    for i in range(len(ds) if kind == "coco" else 3):
        s = ds[i]
        gt, m = s["gt"].mean(0).numpy(), s["mask"][0].numpy() > 0.5
        for src, blurred in ((0, ~m), (1, m)):  # source 0 is blurred off the mask, source 1 on it
            region = ndi.binary_erosion(blurred, iterations=3)
            if region.sum() < 20:
                continue
            assert lap_var(gt, region) > 1.5 * lap_var(s["sources"][src].mean(0).numpy(), region)


# ----------------------------------------------------------------------------- determinism
def _batches(dm, n=2):
    dm.setup("fit")
    loader = dm.train_dataloader()
    it = iter(loader)
    return [next(it) for _ in range(min(n, len(loader)))]


def _same(a, b):
    return all(torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k] for x, y in zip(a, b) for k in x)


@pytest.mark.parametrize("kind", ["voc", "coco"])
def test_deterministic_across_runs_and_workers(fakes, kind):
    a = _batches(generator(kind, fakes))
    b = _batches(generator(kind, fakes))
    c = _batches(generator(kind, fakes, num_workers=2))
    d = _batches(generator(kind, fakes, seed=1))
    assert _same(a, b) and _same(a, c)
    assert not _same(a, d)


def test_duts_deterministic_across_workers(fakes):
    assert _same(_batches(generator("duts", fakes)), _batches(generator("duts", fakes, num_workers=2)))


def test_resample_each_epoch(fakes):
    coco = generator("coco", fakes)  # online augmentation: epoch 1 differs from epoch 0
    loader = coco.train_dataloader()
    e0, e1 = next(iter(loader)), next(iter(loader))
    assert not torch.equal(e0["sources"], e1["sources"])
    voc = generator("voc", fakes)  # fixed pre-generated set: same samples every epoch
    loader = voc.train_dataloader()
    epochs = [{n: b["sources"][j] for b in loader for j, n in enumerate(b["name"])} for _ in range(2)]
    common = set(epochs[0]) & set(epochs[1])
    assert len(epochs[0]) == 8 and len(common) >= 7  # 9 samples, drop_last -> 8 per epoch
    assert all(torch.equal(epochs[0][n], epochs[1][n]) for n in common)


@pytest.mark.parametrize("kind", ["voc", "duts", "coco"])
def test_gpu_synthesis_path_equals_cpu(fakes, kind):
    cpu = _batches(generator(kind, fakes), 1)[0]
    dm = generator(kind, fakes, gpu_synthesis=True)
    raw = next(iter(dm.train_dataloader()))
    assert is_recipe(raw) and "sources" not in raw
    out = dm.on_after_batch_transfer(raw, 0)
    assert set(out) == {"sources", "gt", "mask", "name"}
    torch.testing.assert_close(out["sources"], cpu["sources"], atol=1e-6, rtol=0)
    assert torch.equal(out["mask"], cpu["mask"]) and out["name"] == cpu["name"]


# ----------------------------------------------------------------------------- bad input
def test_missing_mask_and_size_mismatch_and_empty(tmp_path):
    duts = make_duts(tmp_path / "d1")
    (duts / "DUTS-TR-Mask" / "ILSVRC_2.png").unlink()
    with pytest.raises(BenchmarkError, match="ILSVRC_2.jpg: image has no mask"):
        dm_for("mean_filter_duts", root=str(duts)).setup("fit")
    dm = dm_for("mean_filter_duts", root=str(duts), skip_invalid=True, val_fraction=0.25)
    dm.setup("fit")
    assert dm.num_skipped == 1 and len(dm.splits()["train"]) + len(dm.splits()["val"]) == 3
    voc = make_voc(tmp_path / "v1")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(voc / "SegmentationObject" / "2007_000001.png")
    with pytest.raises(BenchmarkError, match=r"2007_000001.png: mask size 10x10 differs"):
        dm_for("gaussian_voc", root=str(voc)).setup("fit")
    (voc / "JPEGImages" / "2007_000002.jpg").unlink()
    dm = dm_for("gaussian_voc", root=str(voc), skip_invalid=True, val_fraction=0.0)
    dm.setup("fit")
    assert dm.num_skipped == 2 and len(dm.datasets["train"]) == 2 * 3
    empty = tmp_path / "e"
    (empty / "DUTS-TR-Image").mkdir(parents=True)
    (empty / "DUTS-TR-Mask").mkdir()
    with pytest.raises(BenchmarkError, match="holds no images"):
        dm_for("mean_filter_duts", root=str(empty)).setup("fit")
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        dm_for("gaussian_voc", root=str(empty)).setup("fit")
    with pytest.raises(ValueError, match="data.root"):
        dm_for("coco_defocus").setup("fit")


def test_truncated_image_raises_or_is_skipped(tmp_path):
    voc = make_voc(tmp_path / "v")
    bad = voc / "JPEGImages" / "2007_000003.jpg"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    dm = dm_for("gaussian_voc", root=str(voc), val_fraction=0.0, **{k: VOC_KW[k] for k in ("image_size", "patch_size")})
    dm.setup("fit")  # header is intact: found when decoding
    with pytest.raises(BenchmarkError, match="2007_000003.jpg"):
        [dm.datasets["train"][i] for i in range(len(dm.datasets["train"]))]
    dm = dm_for("gaussian_voc", root=str(voc), val_fraction=0.0, skip_invalid=True)
    dm.setup("fit")
    assert dm.num_skipped == 1 and "2007_000003" in dm.skipped[0][0]


def test_coco_missing_image_and_bad_json(tmp_path):
    coco = make_coco(tmp_path / "c")
    (coco / "train2014" / "COCO_000000000001.jpg").unlink()
    with pytest.raises(BenchmarkError, match="COCO_000000000001.jpg: image listed"):
        dm_for("coco_defocus", root=str(coco), **COCO_KW).setup("fit")
    (coco / "annotations" / "instances_train2014.json").write_text("{not json")
    with pytest.raises(BenchmarkError, match="cannot read COCO annotations"):
        dm_for("coco_defocus", root=str(coco), **COCO_KW).setup("fit")


# ----------------------------------------------------------------------------- MattingMFIF reader
def make_matting(root: Path, n_focus=(3, 6), size=24) -> Path:
    for s, n in enumerate(n_focus):
        d = root / f"scene_{s:06d}"
        d.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((size, size, 3), 10 * i + s, np.uint8)).save(d / f"focus_{i}.png")
            m = np.zeros((size, size), np.uint8)
            m[:, i * 3 : i * 3 + 3] = 255
            Image.fromarray(m).save(d / f"mask_{i}.png")
        Image.fromarray(texture(size, size, s)).save(d / "gt.png")
        np.save(d / "depth.npy", np.zeros((size, size), np.float32))
        (d / "scene.json").write_text("{}")
    return root


def test_matting_reader_pads_by_duplication(tmp_path):
    root = make_matting(tmp_path / "m")
    assert pad_order(3, 7) == [0, 1, 2, 0, 1, 2, 0] and pad_order(3, 5, "repeat_last") == [0, 1, 2, 2, 2]
    dm = dm_for("matting_mfif", root=str(root), patch_size=16, val_fraction=0.5, batch_size=1)
    dm.setup("fit")
    scenes = {dm.datasets[s].scenes[0].name: dm.datasets[s][0] for s in ("train", "val")}
    three = scenes["scene_000000"]
    assert three["sources"].shape == (7, 3, 16, 16) and three["gt"].shape == (3, 16, 16)
    values = [round(float(v) * 255) for v in three["sources"][:, 0, 0, 0]]
    assert values == [0, 10, 20, 0, 10, 20, 0]  # cyclic duplication order
    six = scenes["scene_000001"]
    assert [round(float(v) * 255) for v in six["sources"][:, 0, 0, 0]] == [1, 11, 21, 31, 41, 51, 1]
    m = np.array(Image.open(root / "scene_000001" / "mask_0.png"))[4:20, 4:20] > 127  # val: centre crop
    np.testing.assert_array_equal(six["mask"][0].numpy() > 0.5, m)
    batch = next(iter(dm.train_dataloader()))
    assert batch["sources"].shape == (1, 7, 3, 16, 16)


def test_matting_bad_scenes(tmp_path):
    root = make_matting(tmp_path / "m", n_focus=(3, 1, 2))
    (root / "scene_000002" / "mask_1.png").unlink()
    with pytest.raises(BenchmarkError, match="scene_000001: scene has 1 focus"):
        dm_for("matting_mfif", root=str(root), patch_size=16).setup("fit")
    dm = dm_for("matting_mfif", root=str(root), patch_size=16, skip_invalid=True, val_fraction=0.0)
    dm.setup("fit")
    assert dm.num_skipped == 2 and "mask_1.png" in dm.skipped[1][1]
    dm = dm_for("matting_mfif", root=str(root), patch_size=64, skip_invalid=True, val_fraction=0.0)
    dm.setup("fit")
    with pytest.raises(BenchmarkError, match="smaller than data.patch_size"):
        dm.datasets["train"][0]


# ----------------------------------------------------------------------------- UDPNet patches, UFA layout
def make_pairs(root: Path, n=4, size=(40, 36)) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        a = texture(size[1], size[0], 40 + i, rgb=False)
        Image.fromarray(a).save(root / f"pair{i:02d}-A.png")
        Image.fromarray(255 - a).save(root / f"pair{i:02d}-B.png")
    return root


def test_unsupervised_pairs_identical_crop_and_flip(tmp_path):
    root = make_pairs(tmp_path / "p")
    dm = dm_for("unsupervised_pairs", root=str(root), patch_size=16, num_patches=12, holdout_scenes=1, batch_size=4,
                split="last", patch_stride=None)
    dm.setup("fit")
    ds = dm.datasets["train"]
    assert len(ds) == 12 and [s.name for s in dm.scene_split()["val"]] == ["pair03"]
    for i in range(12):
        s = ds[i]
        assert s["sources"].shape == (2, 1, 16, 16)
        torch.testing.assert_close(s["sources"][1], 1 - s["sources"][0], atol=1e-6, rtol=0)  # same crop and flip
    assert not torch.equal(ds[0]["sources"], ds[1]["sources"])
    val = dm.datasets["val"][0]
    assert val["sources"].shape == (2, 1, 36, 40)  # the whole held-out scene
    with pytest.raises(ValueError, match="holdout_scenes"):
        dm_for("unsupervised_pairs", root=str(root), holdout_scenes=4, split="last").setup("fit")


def test_unsupervised_pairs_colour_to_y(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    for i in range(2):
        for k in "AB":
            Image.fromarray(texture(30, 30, i)).save(root / f"s{i}_{k}.jpg")
    dm = dm_for("unsupervised_pairs", root=str(root), patch_size=20, num_patches=3, holdout_scenes=1, split="last",
                patch_stride=None)
    dm.setup("fit")
    assert dm.datasets["train"][0]["sources"].shape == (2, 1, 20, 20)
    assert dm.datasets["val"][0]["sources"].shape == (2, 3, 30, 30)


def make_ufa(root: Path, scenes=3, levels=("23", "45")) -> Path:
    for s in range(scenes):
        for lv in levels:
            d = root / f"img{s}" / lv
            d.mkdir(parents=True)
            for suffix in ("1", "2", "ground"):
                Image.fromarray(texture(30, 34, s)).save(d / f"img{s}_{suffix}.jpg")
    return root


def test_ufa_trainset_layout(tmp_path):
    root = make_ufa(tmp_path / "u")
    dm = dm_for("ufa_trainset", root=str(root), image_size=24, patch_size=16, val_fraction=0.34)
    dm.setup("fit")
    tr, va = dm.splits()["train"], dm.splits()["val"]
    assert len(tr) == 2 and len(va) == 1 and not {n for n, _ in tr} & {n for n, _ in va}
    s = dm.datasets["train"][0]
    assert s["sources"].shape == (2, 3, 16, 16) and s["gt"].shape == (3, 16, 16)
    assert s["name"].split("/")[1] in ("23", "45")
    dm = dm_for("ufa_trainset", root=str(root), image_size=24, patch_size=24, random_level=False, levels=["45"],
                val_fraction=0.0)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 3 and all(dm.datasets["train"][i]["name"].endswith("/45") for i in range(3))
    (root / "img1" / "23" / "img1_ground.jpg").unlink()
    with pytest.raises(BenchmarkError, match="img1/23.*no _ground"):
        dm_for("ufa_trainset", root=str(root)).setup("fit")


@pytest.mark.skipif(not SHARED_UFA.is_dir(), reason="../shared/data not present")
def test_ufa_trainset_shared_copy():
    dm = dm_for("ufa_trainset", root=str(SHARED_UFA), image_size=64, patch_size=64)
    dm.setup("fit")
    n = sum(len(dm.splits()[s]) for s in ("train", "val"))
    assert n == 18 and all(len(levels) == 4 for _, levels in dm.splits()["train"])
    s = dm.datasets["train"][0]
    assert s["sources"].shape == (2, 3, 64, 64) and s["gt"].shape == (3, 64, 64)


def test_trainer_runs_gpu_synthesis_hook_and_new_epochs(fakes):
    """Lightning calls the DataModule's hook (deferred synthesis), then the module's own hook."""
    import lightning as L

    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen, self.hooked = [], 0

        def on_after_batch_transfer(self, batch, dataloader_idx):
            self.hooked += 1
            return batch

        def training_step(self, batch, _):
            assert batch["sources"].shape == (2, 2, 1, 40, 40) and not is_recipe(batch)
            self.seen.append((self.current_epoch, batch["sources"].sum().item()))
            return (self.w * batch["sources"].mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = generator("coco", fakes, gpu_synthesis=True)
    probe = Probe()
    trainer = L.Trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(probe, datamodule=dm)
    assert [e for e, _ in probe.seen] == [0, 1] and probe.hooked == 2
    assert probe.seen[0][1] != probe.seen[1][1]  # resample_each_epoch: new draws in epoch 1
