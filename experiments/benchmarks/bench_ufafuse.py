"""Benchmark UFA-Fuse inference: CPU seconds per Lytro pair, parameters, peak memory.

Paper (Table V, Sec. IV-C): 0.26 s per image on a GTX 2070 Super GPU; 455,111 parameters in
the released checkpoint. Example::

    python experiments/benchmarks/bench_ufafuse.py --threads 2 --runs 3
    python experiments/benchmarks/bench_ufafuse.py --lytro data/lytro --pairs 3 --device cuda

Inputs: the first ``--pairs`` Lytro pairs (``lytro-NN-A/B.jpg``, 520x520) when ``--lytro`` exists,
else random 520x520 RGB pairs (timing of a fully convolutional net does not depend on content).
The wall time is the median over ``--runs`` timed passes (after one warm-up) of ``module.fuse`` under
``torch.inference_mode`` - the whole public inference path (colour policy + network); the
process CPU time (summed over threads) is printed too, as it is less sensitive to other load.
Peak memory: process max RSS (``resource.getrusage``) on CPU; ``torch.cuda.max_memory_allocated``
on CUDA. The process keeps freed memory as the CLIs do (:mod:`mfif.runtime`; off with
``MFIF_RETAIN_FREED_MEMORY=0``); the allocator state is printed.

:class:`ReleasedUFAForward` re-creates the released forward pass (ReckonerInheritor/UFA-Fusion,
``Code/model/model.py`` ``AF.forward``, called by ``Code/Test.py`` without ``no_grad``) op for op
with the weights of a :class:`UFAFuseNet`: the ours-vs-released comparison of
``experiments/benchmarks/bench_inference.py`` runs it.
"""
from __future__ import annotations

import argparse
import copy
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from lightning_modules.ufafuse.attention import OFFICIAL_EPS
from lightning_modules.ufafuse.module import UFAFuseConfig, UFAFuseModule
from lightning_modules.ufafuse.network import UFAFuseNet
from mfif.config import DataConfig, ExperimentConfig
from mfif.runtime import retain_freed_memory

PAPER_SECONDS = 0.26  # Table V, GTX 2070 Super
OFFICIAL_PARAMS = 455_111


class ReleasedUFAForward(nn.Module):
    """The released ``AF.forward`` op for op (NCHW, autograd on, each source through every layer
    in turn, in-place LeakyReLU, the literal ``exp`` attention normalisations with the spatial
    quirk), sharing the parameters of a copy of ``net``.

    Shape:
        - x1, x2: :math:`(1, 3, H, W)` in [0, 1]
        - output: :math:`(1, 3, H, W)`
    """

    def __init__(self, net: UFAFuseNet):
        super().__init__()
        self.net = copy.deepcopy(net).train(False)
        self.slope = net.conv1[1].negative_slope

    def _lrelu(self, conv: nn.Conv2d, x: Tensor) -> Tensor:
        return F.leaky_relu(conv(x), self.slope, inplace=True)

    @staticmethod
    def _spatial(conv: nn.Conv2d, x: Tensor) -> Tensor:
        return conv(torch.cat([torch.mean(x, 1, keepdim=True), torch.max(x, 1, keepdim=True)[0]], 1))

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        n, sc = self.net, self.net.sc4
        f1, f2 = self._lrelu(n.conv1[0], x1), self._lrelu(n.conv1[0], x2)
        for rb in (n.rb1, n.rb2, n.rb3):  # "Resblock": conv, LeakyReLU, conv (no skip)
            f1 = rb.body[2](self._lrelu(rb.body[0], f1))
            f2 = rb.body[2](self._lrelu(rb.body[0], f2))
        f1, f2 = self._lrelu(sc.conv1.body[0], f1), self._lrelu(sc.conv1.body[0], f2)
        ca1, ca2 = F.adaptive_avg_pool2d(f1, 1), F.adaptive_avg_pool2d(f2, 1)
        f1 = torch.exp(ca1) / (torch.exp(ca2) + torch.exp(ca1) + OFFICIAL_EPS) * f1
        f2 = torch.exp(ca2) / (torch.exp(ca1) + torch.exp(ca2) + OFFICIAL_EPS) * f2
        a1, a2 = self._spatial(sc.att_sp.att1.conv, f1), self._spatial(sc.att_sp.att2.conv, f2)
        f1 = torch.exp(a1) / (torch.exp(a2) + torch.exp(a2) + OFFICIAL_EPS) * f1  # the released quirk
        f2 = torch.exp(a2) / (torch.exp(a1) + torch.exp(a2) + OFFICIAL_EPS) * f2
        f1, f2 = self._lrelu(sc.conv2.body[0], f1), self._lrelu(sc.conv2.body[0], f2)
        x = n.fusion(torch.cat([f1, f2], 1))
        for block in n.EX3:
            x = self._lrelu(block.body[0], x)
        return torch.sigmoid(n.restruction(x))


def load_pairs(folder: Path, n: int, size: int) -> list[torch.Tensor]:
    """``n`` source pairs ``[1, 2, 3, H, W]``: Lytro files if present, else seeded random images."""
    from PIL import Image

    pairs = []
    for i in range(1, n + 1):
        files = [folder / f"lytro-{i:02d}-{s}.jpg" for s in "AB"]
        if all(f.is_file() for f in files):
            imgs = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0)
                    .permute(2, 0, 1) for f in files]
            pairs.append(torch.stack(imgs)[None])
        else:
            pairs.append(torch.rand(1, 2, 3, size, size, generator=torch.Generator().manual_seed(i)))
    return pairs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lytro", default="data/lytro", help="Lytro folder")
    p.add_argument("--weights", default="weights/ufa_official.pth",
                   help="official weights (optional; timing is the same with random weights)")
    p.add_argument("--pairs", type=int, default=2, help="number of pairs to time")
    p.add_argument("--runs", type=int, default=3, help="timed passes per pair (median reported)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--size", type=int, default=520, help="side of random pairs when Lytro is absent")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)

    torch.set_num_threads(a.threads)
    allocator = "retained freed memory" if retain_freed_memory() else "default allocator"
    cfg = OmegaConf.structured(ExperimentConfig(method="ufafuse", model=UFAFuseConfig(official_quirk=True),
                                                data=DataConfig(), metrics=[]))
    module = UFAFuseModule(cfg)
    weights = "random init"
    if Path(a.weights).is_file():
        module.load_official_weights(a.weights)
        weights = "official"
    module = module.to(a.device).eval()
    n_params = sum(p.numel() for p in module.net.parameters())

    pairs = load_pairs(Path(a.lytro), a.pairs, a.size)
    times, cpu_times = [], []
    with torch.inference_mode():
        for src in pairs:
            src = src.to(a.device)
            module.fuse(src)  # warm-up
            for _ in range(a.runs):
                if a.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0, c0 = time.perf_counter(), time.process_time()
                module.fuse(src)
                if a.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
                cpu_times.append(time.process_time() - c0)
    if a.device.startswith("cuda"):
        peak = f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB (CUDA allocated)"
    else:
        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (max RSS)"

    h, w = pairs[0].shape[-2:]
    rows = [
        ("device", f"{a.device} ({a.threads} threads, {allocator})"),
        ("input", f"{len(pairs)} pair(s) of {h}x{w} RGB, {weights} weights"),
        ("seconds per pair (median)", f"{statistics.median(times):.3f}  [min {min(times):.3f}, max {max(times):.3f}]"),
        ("process CPU seconds per pair", f"{statistics.median(cpu_times):.3f} (all threads; wall x threads on an idle machine)"),
        ("paper (GTX 2070 Super)", f"{PAPER_SECONDS:.2f}"),
        ("parameters", f"{n_params:,} (official: {OFFICIAL_PARAMS:,})"),
        ("peak memory", peak),
    ]
    width = max(len(k) for k, _ in rows)
    print("UFA-Fuse inference benchmark")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
