"""MSASN CPU benchmark: seconds per 520x520 pair (Table 5 setting: Lytro size) and parameter count.

Times, in ``torch.inference_mode`` after a warm-up (median of ``--repeats``):

* ``fuse``: the whole :meth:`FusionModule.fuse` of one RGB pair - gray conversion, network,
  binarisation (Eq. 8), small-area filter (Eq. 9) and per-channel fusion (Eq. 10);
* ``network``: the decision-map network alone (GCB + Siamese encoder + DCA decoder), with its
  inference fast path and with the plain layers (:func:`mfif.ops.conv.fast_paths` off);
* ``post``: Eqs. 8-9 on the network's map, and on a worst-case noisy map (thresholded smoothed
  noise: thousands of small regions) - connected components are the only data-dependent cost.

The process keeps freed memory as the CLIs do (:mod:`mfif.runtime`; ``MFIF_RETAIN_FREED_MEMORY=0``
turns it off), printed in the header. Weights do not change the speed of the network; a
randomly initialised model is used. The pair
is a synthetic focus pair unless ``--pair A B`` names two image files (e.g. a Lytro pair).
The paper reports 0.089 s per Lytro pair on an RTX 3060 Ti GPU (Table 5).

Usage::

    python experiments/benchmarks/bench_msasn.py [--size 520] [--threads 2] [--repeats 3] [--variant full]
"""
from __future__ import annotations

import argparse
import resource
import statistics


import torch  # noqa: E402

PAPER_SECONDS = 0.089  # Table 5, RTX 3060 Ti, 520x520 Lytro pairs


def build(variant: str):
    from omegaconf import OmegaConf

    from lightning_modules.msasn.module import MSASN, MSASNConfig
    from mfif.config import DataConfig, ExperimentConfig

    cfg = OmegaConf.structured(ExperimentConfig(method="msasn", model=MSASNConfig(variant=variant),
                                                data=DataConfig(), metrics=[]))
    return MSASN(cfg).eval()


def load_pair(paths: list[str] | None, size: int) -> torch.Tensor:
    """``[1, 2, 3, H, W]``: the two files, or a synthetic pair (left/right halves blurred)."""
    if paths:
        import numpy as np
        from PIL import Image

        imgs = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths]
        return (torch.stack(imgs).float() / 255)[None]
    g = torch.Generator().manual_seed(0)
    sharp = torch.nn.functional.avg_pool2d(torch.rand(1, 3, size, size, generator=g), 3, 1, 1)
    blur = torch.nn.functional.avg_pool2d(sharp, 9, 1, 4, count_include_pad=False)
    mask = torch.zeros(1, 1, size, size)
    mask[..., : size // 2] = 1
    return torch.stack([mask * sharp + (1 - mask) * blur, (1 - mask) * sharp + mask * blur], 1)


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall seconds and median process CPU seconds (all threads) of ``fn``, after a warm-up.

    On a shared machine the wall time includes waiting for the CPU; the CPU time does not.
    """
    from mfif.runtime import time_calls

    wall, cpu = time_calls(fn, repeats)
    return statistics.median(wall), statistics.median(cpu)


def conv_macs(net: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of every Conv2d in one forward pass (hooks count output x fan-in)."""
    total = [0]

    def hook(mod, _inp, out):
        total[0] += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        net(*inputs)
    finally:
        for hd in handles:
            hd.remove()
    return total[0]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=520, help="side of the synthetic pair (Lytro: 520)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variant", default="full", help="model.variant (Table 7 row)")
    ap.add_argument("--pair", nargs=2, metavar=("A", "B"), help="two aligned image files instead of the synthetic pair")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mfif.ops.colour import rgb_to_gray
    from mfif.ops.conv import fast_paths
    from mfif.runtime import retain_freed_memory

    allocator = "retained freed memory" if retain_freed_memory() else "default allocator"  # as the CLIs
    from mfif.ops.decision import binarise, small_area_filter

    module = build(args.variant)
    m = module.cfg.model
    pair = load_pair(args.pair, args.size)
    gray = rgb_to_gray(pair)
    h, w = pair.shape[-2:]
    with torch.inference_mode():
        logits = module.net(gray[:, 0], gray[:, 1])
        noisy = torch.nn.functional.avg_pool2d(torch.rand(1, 1, h, w), 5, 1, 2) - 0.5

        def post(z):
            return small_area_filter(binarise(z, m.threshold, from_logits=True), m.area_ratio, m.connectivity)

        t_fuse = timed(lambda: module.fuse(pair), args.repeats)
        t_net = timed(lambda: module.net(gray[:, 0], gray[:, 1]), args.repeats)
        with fast_paths(False):
            t_plain = timed(lambda: module.net(gray[:, 0], gray[:, 1]), args.repeats)
        t_post = timed(lambda: post(logits), args.repeats)
        t_post_noisy = timed(lambda: post(noisy), args.repeats)
        macs = conv_macs(module.net, gray[:, 0], gray[:, 1])
    params = {name: sum(p.numel() for p in part.parameters())
              for name, part in [("total", module.net), ("gcb", module.net.gcb), ("encoder", module.net.encoder)]}
    params["decoder+head"] = params["total"] - params["gcb"] - params["encoder"]
    res = {"size": f"{w}x{h}", "variant": args.variant, "threads": args.threads, "fuse_s": t_fuse,
           "network_s": t_net, "network_plain_s": t_plain, "allocator": allocator, "post_s": t_post, "post_noisy_s": t_post_noisy, "conv_gmacs": macs / 1e9,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           **{f"params_{k}": v for k, v in params.items()}}

    print(f"MSASN ({args.variant}), one {w}x{h} RGB pair, CPU, {args.threads} thread(s), {allocator}, "
          f"median of {args.repeats}")
    print("| quantity | wall | CPU (all threads) |\n|---|---|---|")
    for label, (wall, cpu) in [("fuse (gray, network, Eqs. 8-10)", t_fuse), ("network only", t_net),
                               ("network only, plain layers (fast paths off)", t_plain),
                               ("post-processing (Eqs. 8-9), network map", t_post),
                               ("post-processing, worst-case noisy map", t_post_noisy)]:
        print(f"| {label} | {wall:.3f} s | {cpu:.3f} s |")
    print(f"| paper (RTX 3060 Ti GPU, Table 5) | {PAPER_SECONDS} s | |")
    print(f"| conv multiply-accumulates per pair | {macs / 1e9:.1f} G | |")
    for k, v in params.items():
        print(f"| parameters {k} | {v:,} | |")
    print(f"| peak RSS | {res['peak_rss_mib']:.0f} MiB | |")
    return res


if __name__ == "__main__":
    main()
