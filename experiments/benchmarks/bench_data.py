"""Throughput of the synthetic training-data generators (issue 4): generated pairs per second.

Builds stand-in folders in the public sets' layouts with images of the real sets' typical sizes
(VOC2012 ~500x375, DUTS-TR ~400x300, COCO ~640x480 JPEGs), then times, per generator:

* ``cpu``: the default path, one sample per ``__getitem__`` in one process (what one loader
  worker delivers; multiply by ``num_workers`` for the loader's rate when cores are free);
* ``recipe``: CPU cost of the recipe alone (decode, resize, random draws): the per-worker cost
  when ``gpu_synthesis=true``;
* ``synth[dev]``: the batched blur/blend of ``gpu_synthesis`` on ``dev`` (CUDA when present,
  also on CPU for reference), pairs per second for a batch of ``--batch``.

Usage::

    python experiments/benchmarks/bench_data.py [--images 24] [--samples 48] [--batch 16] [--model-steps-per-s R]

With ``--model-steps-per-s`` (training steps/s of the slowest model at its batch size) the table
also prints how many times faster than training the data path is (>1: never the bottleneck).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image


import datamodules  # noqa: E402,F401
from datamodules.base import collate, sample_rng  # noqa: E402
from mfif import registry  # noqa: E402


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    r = np.random.default_rng(seed)
    a = gaussian_filter(r.normal(128, 60, (h, w, 3)), (1.5, 1.5, 0)) + r.normal(0, 10, (h, w, 3))
    return np.clip(a, 0, 255).astype(np.uint8)


def _mask(h: int, w: int, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    cy, cx, ry, rx = h * r.uniform(0.3, 0.7), w * r.uniform(0.3, 0.7), h * 0.25, w * 0.2
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)


def build_fakes(root: Path, n: int) -> dict[str, Path]:
    """VOC / DUTS / COCO-layout folders with ``n`` images each."""
    voc, duts, coco = root / "voc", root / "duts", root / "coco"
    for d in (voc / "JPEGImages", voc / "SegmentationObject", duts / "DUTS-TR-Image", duts / "DUTS-TR-Mask",
              coco / "train2014", coco / "annotations"):
        d.mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        Image.fromarray(_photo(375, 500, i)).save(voc / "JPEGImages" / f"{i:06d}.jpg", quality=90)
        Image.fromarray(_mask(375, 500, i), mode="L").convert("P").save(voc / "SegmentationObject" / f"{i:06d}.png")
        Image.fromarray(_photo(300, 400, i)).save(duts / "DUTS-TR-Image" / f"{i}.jpg", quality=90)
        Image.fromarray(_mask(300, 400, i) * 255).save(duts / "DUTS-TR-Mask" / f"{i}.png")
        Image.fromarray(_photo(480, 640, i)).save(coco / "train2014" / f"{i:012d}.jpg", quality=90)
        x0, y0, s = 200, 120, 220  # 48,400 px square instance: inside 20k..170k
        images.append({"id": i + 1, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "area": float(s * s),
                     "segmentation": [[x0, y0, x0 + s, y0, x0 + s, y0 + s, x0, y0 + s]], "bbox": [x0, y0, s, s]})
    (coco / "annotations" / "instances_train2014.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    return {"gaussian_voc": voc, "mean_filter_duts": duts, "coco_defocus": coco}


def datamodule(name: str, root: Path):
    cfg = OmegaConf.structured(registry.data_config_class(name)(name=name, root=str(root), val_fraction=0.0))
    dm = registry.datamodule_class(name)(cfg)
    dm.setup("fit")
    return dm


def rate(fn, count: int) -> tuple[float, float]:
    """``(calls per wall second, calls per CPU second of this process)``.

    The CPU-time rate is what one dedicated core gives; on a shared machine the wall rate also
    counts time lost to other processes.
    """
    fn(0)  # warm-up (imports, caches)
    t, c = time.perf_counter(), time.process_time()
    for i in range(count):
        fn(i + 1)
    return count / (time.perf_counter() - t), count / max(time.process_time() - c, 1e-9)


def bench(name: str, root: Path, samples: int, batch: int) -> dict:
    ds = datamodule(name, root).datasets["train"]
    n = len(ds)
    row = {"generator": name, "out": tuple(ds[0]["sources"].shape)}
    row["cpu"] = rate(lambda i: ds[i % n], samples)
    row["recipe"] = rate(lambda i: ds.recipe(i % n, sample_rng(0, i % n)), samples)
    recipes = collate([ds.recipe(i % n, sample_rng(0, i % n)) for i in range(batch)])
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        b = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in recipes.items()}

        def run(_i, b=b, dev=dev):
            ds.synthesize(b)
            if dev == "cuda":
                torch.cuda.synchronize()

        wall, cpu = rate(run, max(3, samples // batch))
        row[f"synth[{dev}]"] = (wall * batch, cpu * batch) if dev == "cpu" else (wall * batch, float("nan"))
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=24, help="stand-in images per set")
    ap.add_argument("--samples", type=int, default=48, help="samples timed per path")
    ap.add_argument("--batch", type=int, default=16, help="batch size of the batched synthesis")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 = one loader worker)")
    ap.add_argument("--model-steps-per-s", type=float, default=None, help="slowest model's training steps/s")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        roots = build_fakes(Path(tmp), args.images)
        rows = [bench(name, root, args.samples, args.batch) for name, root in roots.items()]
    cols = ["cpu", "recipe"] + sorted({k for r in rows for k in r if k.startswith("synth")})
    print(f"generated pairs/s (wall / per CPU-second), torch threads={args.threads}, "
          f"batch={args.batch}, cuda={torch.cuda.is_available()}")
    head = ["generator", "sources shape"] + cols + (["cpu path / training need"] if args.model_steps_per_s else [])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["generator"], "x".join(map(str, r["out"]))]
        cells += [f"{r[c][0]:.1f} / {r[c][1]:.1f}" if r[c][1] == r[c][1] else f"{r[c][0]:.1f}" for c in cols]
        if args.model_steps_per_s:
            cells.append(f"{r['cpu'][1] / (args.model_steps_per_s * args.batch):.2f} per worker")
        print("| " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
