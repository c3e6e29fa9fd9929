"""Benchmark of the main job and the fuse CLI (figures go in the closing notes, not in tests).

Usage::

    python experiments/benchmarks/bench_foundation.py [--config udpnet.yaml] [--steps 20] [--threads 2]

Reports (1) training steps/s of the main job in the demo profile on this machine (data
loading included, after warm-up) and (2) ``fuse`` wall time and peak memory for one 520x520
pair (``data/lytro/lytro-01-*`` if present, else a generated pair) through a
checkpoint converted from the trained module, in a fresh process.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path



def train_steps_per_s(config: str, steps: int) -> tuple[float, str]:
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from experiments.run import build_datamodule, build_module
    from mfif.config import load_config

    cfg = load_config(config, ["profile=demo", "logger.wandb=false", "trainer.progress=none", f"trainer.max_steps={steps}",
                               "trainer.max_epochs=100", "trainer.limit_val_batches=0"])
    module, dm = build_module(cfg), build_datamodule(cfg)

    class Clock(Callback):
        t0 = None

        def on_train_batch_end(self, trainer, *a):
            if trainer.global_step == 3:  # after warm-up
                Clock.t0 = time.perf_counter()

    clock = Clock()
    with tempfile.TemporaryDirectory() as d:
        tr = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                       enable_progress_bar=False, callbacks=[clock], limit_val_batches=0, default_root_dir=d)
        tr.fit(module, dm)
        rate = (steps - 3) / (time.perf_counter() - Clock.t0)
        ck = Path(d) / "m.ckpt"
        tr.save_checkpoint(ck)
        saved = Path(tempfile.mkdtemp()) / "m.ckpt"
        saved.write_bytes(ck.read_bytes())
    return rate, str(saved)


def fuse_time(ckpt: str) -> tuple[float, float]:
    lytro = Path("data/lytro")  # your copy of the Lytro set, if any (else a generated pair)
    srcs = [lytro / "lytro-01-A.jpg", lytro / "lytro-01-B.jpg"]
    tmp = Path(tempfile.mkdtemp())
    if not srcs[0].is_file():
        import numpy as np
        from PIL import Image

        from datamodules.default import compose_sources, load_photo, procedural_regions

        img = load_photo("astronaut")[:512]
        img = np.pad(img, ((0, 8), (0, 8), (0, 0)), mode="reflect")
        src = compose_sources(img, procedural_regions(np.random.default_rng(0), 520, 520, 2, 12.0), [2, 2], 1.0)
        srcs = []
        for i, s in enumerate(src):
            srcs.append(tmp / f"s{i}.png")
            Image.fromarray((s * 255).astype("uint8")).save(srcs[-1])
    code = (
        "import sys,time,resource; from experiments import fuse; t=time.perf_counter(); "
        "rc=fuse.main(sys.argv[1:]); print('T', time.perf_counter()-t); "
        "print('M', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)"
    )
    r = subprocess.run([sys.executable, "-c", code, str(srcs[0]), str(srcs[1]), "-o", str(tmp / "f.png"),
                        "--checkpoint", ckpt, "--overwrite"], capture_output=True, text=True)
    vals = dict(line.split() for line in r.stdout.splitlines() if line[:2] in ("T ", "M "))
    return float(vals["T"]), float(vals["M"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="udpnet.yaml")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    rate, ckpt = train_steps_per_s(a.config, a.steps)
    t, mem = fuse_time(ckpt)
    print(f"| what | value |\n|---|---|\n| {a.config} demo-profile training | {rate:.2f} steps/s |")
    print(f"| fuse.py 520x520 pair (whole CLI call incl. loading) | {t:.2f} s |\n| fuse.py peak RSS | {mem:.0f} MiB |")
    print(f"(this process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
