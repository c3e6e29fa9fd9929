"""Whole-process fusion of one pair: ``fuse.py`` (GACN, released weights) against a minimal script
around the released GACN code, each a fresh ``python`` process, timed alternately in one run.

What a user waits for is the whole process - interpreter start, imports, loading the weights,
reading the two images, fusing, writing the result - not the fusion call alone. The "released"
side is the smallest script a user of the released code would write: import torch, build the
released network (:class:`~lightning_modules.gacn.official_strategy.OfficialStrategyGACN`, the
released ``GACNFuseNet.forward`` + ``GACN_Fuse.fuse`` op for op, Ma et al., Neurocomputing 2022;
repository Keep-Passion/GACN, ``nets/gacn_net.py``), load the ``.pkl``, read two images, fuse,
save. It imports none of our training stack (not even the package ``__init__`` that registers the
GACN LightningModule), so it pays only for what the released code itself needs.

Figures (one line each, with the allocator state and thread count of the process):

* ``ours``: ``experiments/fuse.py`` as shipped (its CLI keeps freed memory, :mod:`mfif.runtime`);
* ``ours-default-alloc``: the same with ``MFIF_RETAIN_FREED_MEMORY=0`` (equal footing);
* ``released``: the minimal script, default allocator (what its user sees);
* ``released-tuned-alloc``: the minimal script with our allocator setting (equal footing).

Usage::

    python experiments/benchmarks/bench_cli.py --weights gacn_official.pkl a.jpg b.jpg [--repeats 5 --threads 2]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FUSE = ROOT / "experiments" / "fuse.py"

RELEASED_SCRIPT = '''
import os, sys, types
import lightning_modules  # the empty namespace package; its papers are not imported
# The released code does not import our LightningModule: give the GACN package a bare entry so
# that importing its network does not run lightning_modules/gacn/__init__.py (which registers it).
_pkg = types.ModuleType("lightning_modules.gacn")
_pkg.__path__ = [os.path.join(lightning_modules.__path__[0], "gacn")]
sys.modules["lightning_modules.gacn"] = _pkg
import numpy as np
import torch
from PIL import Image
from lightning_modules.gacn.network import GACNNet
from lightning_modules.gacn.official import load_official
from lightning_modules.gacn.official_strategy import OfficialStrategyGACN, official_fuse

if os.environ.get("BENCH_TUNED_ALLOCATOR") == "1":
    from mfif.runtime import retain_freed_memory
    retain_freed_memory()
a, b, weights, out = sys.argv[1:5]
model = OfficialStrategyGACN(load_official(GACNNet(), weights).eval()).eval()
read = lambda p: torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
fused, _ = official_fuse(model, read(a), read(b))
Image.fromarray((fused[0].detach().clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)).save(out)
'''


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall and CPU seconds of one whole child process (which must succeed)."""
    c0, w0 = _child_cpu(), time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - w0, _child_cpu() - c0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return wall, cpu


def psnr(x_path: Path, y_path: Path) -> float:
    import numpy as np
    from PIL import Image

    x, y = (np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) for p in (x_path, y_path))
    mse = float(((x - y) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="first source image")
    p.add_argument("b", help="second source image")
    p.add_argument("--weights", required=True, help="released GACN weights (gacn_official.pkl)")
    p.add_argument("--repeats", type=int, default=5, help="runs of each variant, interleaved")
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every child process")
    args = p.parse_args(argv)
    for f in (args.a, args.b, args.weights):
        if not Path(f).is_file():
            print(f"error: {f}: no such file", file=sys.stderr)
            return 2
    base_env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "released_gacn_minimal.py"
        script.write_text(RELEASED_SCRIPT)
        outs = {k: Path(tmp) / f"{k}.png" for k in ("ours", "released")}
        ours = [sys.executable, str(FUSE), args.a, args.b, "-o", str(outs["ours"]), "--method", "gacn",
                "--weights", args.weights, "--overwrite"]
        released = [sys.executable, str(script), args.a, args.b, args.weights, str(outs["released"])]
        variants = {  # name: (command, extra environment, allocator state)
            "ours": (ours, {"MFIF_RETAIN_FREED_MEMORY": "1"}, "retain-freed-memory"),
            "ours-default-alloc": (ours, {"MFIF_RETAIN_FREED_MEMORY": "0"}, "default"),
            "released": (released, {"BENCH_TUNED_ALLOCATOR": "0"}, "default"),
            "released-tuned-alloc": (released, {"BENCH_TUNED_ALLOCATOR": "1"}, "retain-freed-memory"),
        }
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
        for name, (cmd, extra, _) in variants.items():  # warm the file cache once, untimed
            run_once(cmd, {**base_env, **extra})
        for _ in range(args.repeats):
            for name, (cmd, extra, _) in variants.items():
                times[name].append(run_once(cmd, {**base_env, **extra}))
        quality = psnr(outs["ours"], outs["released"])
    med = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    for name, (_, _, alloc) in variants.items():
        walls = [w for w, _ in times[name]]
        print(f"cli gacn {Path(args.a).name} | {name:21s} | allocator={alloc:19s} | threads={args.threads} | "
              f"whole process wall median {med[name]:.2f} s (min {min(walls):.2f}, n={len(walls)}) | "
              f"cpu median {statistics.median(c for _, c in times[name]):.2f} s")
    print(f"cli gacn ratio | released / ours, each as shipped      | {med['released'] / med['ours']:.2f}x")
    print(f"cli gacn ratio | equal allocator (default both)        | {med['released'] / med['ours-default-alloc']:.2f}x")
    print(f"cli gacn ratio | equal allocator (retain-freed both)   | {med['released-tuned-alloc'] / med['ours']:.2f}x")
    print(f"cli gacn psnr  | ours vs released fused image          | {quality:.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
