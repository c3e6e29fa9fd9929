"""CPU inference speed, one command (issue 19): ours against the released code and against our own
plain-PyTorch layers, both allocator settings, and the bf16 table.

Part 1 - seconds per Lytro pair, one line per figure, then the summary table:

* ``gacn``: ``GACN.fuse`` (whole pipeline) against the released ``GACNFuseNet.forward`` +
  ``GACN_Fuse.fuse`` strategy re-created op for op with the same weights
  (:mod:`lightning_modules.gacn.official_strategy`; Ma et al., Neurocomputing 2022, repository
  Keep-Passion/GACN);
* ``ufafuse``: ``UFAFuseModule.fuse`` (official spatial-softmax quirk on, as the release) against
  the released ``AF.forward`` op for op (:class:`~experiments.benchmarks.bench_ufafuse.ReleasedUFAForward`;
  Zang et al., repository ReckonerInheritor/UFA-Fusion);
* ``udpnet``, ``msasn``, ``sesf`` (no released inference code compared): ``fuse`` with the
  inference fast paths against the same module with them off (:func:`mfif.ops.conv.fast_paths`:
  the plain PyTorch layers, no fused kernels).

Every side runs in its own child process (``spawn``), under both allocator settings - the
default glibc allocator and the freed-memory retention of :mod:`mfif.runtime` that our CLIs apply
(``MFIF_RETAIN_FREED_MEMORY``) - with ``torch.set_num_threads(--threads)``. The sides take turns
pair by pair (never two at once) after one warm-up pass each; the figures are medians over the
pairs of wall time and of the child's process CPU time (all threads; the robust figure on a
shared machine). ``ratio`` is reference / ours on equal footing; PSNR compares our fused image
with the reference side's (worst pair), and ``map>1e-3`` is the share of decision-map pixels
that differ by more than 1e-3.

Part 2 (``--bf16``) - per method, in this process: ``fuse`` at fp32 and with
``fuse_precision = "bf16"`` (the fast paths' convolutions in bfloat16,
:func:`mfif.ops.conv.inference_precision`), alternating pair by pair: speed-up, PSNR of the
fused image vs fp32 (worst pair) and share of decision-map pixels on the other side of 0.5.

Methods without released weights (udpnet, msasn) run from their initial weights (seeded): the
same cost, but their bf16 quality figures say little about a trained model.

Usage::

    python experiments/benchmarks/bench_inference.py --lytro data/lytro --weights weights \\
        [--pairs 20] [--threads 2] [--methods gacn ufafuse udpnet msasn sesf] [--bf16]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from pathlib import Path

import torch

METHODS = ("gacn", "ufafuse", "udpnet", "msasn", "sesf")
RELEASED = {"gacn": "gacn_official.pkl", "ufafuse": "ufa_official.pth", "sesf": "sesf_official.pkl"}
REFERENCE = {"gacn": "released", "ufafuse": "released"}  # the others: our own plain path
ALLOCATORS = ("retained", "default")


def build(method: str, weights_dir: Path | None):
    """The inference module of ``method``: released weights where they exist, else seeded initial
    weights; UFA-Fuse with the released spatial-softmax quirk (as the release computes)."""
    from experiments.benchmarks.bench_throughput import build as build_module

    torch.manual_seed(0)
    module, source = build_module(method, weights_dir)
    if method == "ufafuse":
        module.net.sc4.official_quirk = True
    return module, source


def _runner(method: str, kind: str, weights_dir: Path | None):
    """``fn(a, b) -> (fused, map or None)`` for RGB ``[1, 3, H, W]`` sources, one side of the table."""
    from mfif.ops.conv import fast_paths

    module, _ = build(method, weights_dir)
    if kind == "released" and method == "gacn":
        from lightning_modules.gacn.official_strategy import OfficialStrategyGACN, official_fuse

        strategy = OfficialStrategyGACN(module.net).eval()
        return lambda a, b: official_fuse(strategy, a, b)  # autograd on, as released
    if kind == "released" and method == "ufafuse":
        from experiments.benchmarks.bench_ufafuse import ReleasedUFAForward

        released = ReleasedUFAForward(module.net)
        return lambda a, b: (released(a, b), None)  # released Test.py: no no_grad

    def ours(a, b):
        with torch.inference_mode(), fast_paths(kind != "plain"):
            out = module.fuse(torch.stack([a, b], 1))
        return out.fused, None if out.maps is None else out.maps[:, 0]

    return ours


def _fusion_runner(method: str, kind: str, weights_dir):
    """``fn(a, b) -> {"fused", "map"}`` (numpy) of one inference side, for :func:`_serve`."""
    fn = _runner(method, kind, weights_dir)

    def run(a, b):
        fused, dmap = fn(a, b)
        return {"fused": fused.detach().numpy(), "map": None if dmap is None else dmap.detach().numpy()}

    return run


def _serve(conn, factory, factory_args: tuple, threads: int, retain: bool) -> None:
    """Child process: one side under one allocator setting. ``factory(*factory_args)`` builds the
    side's ``fn``; each message (a tuple of arrays) is answered with the wall and process-CPU
    seconds of ``fn(*tensors)`` and the dict it returns (outputs, or its own finer timings)."""
    from mfif.runtime import retain_freed_memory

    applied = retain_freed_memory() if retain else False
    torch.set_num_threads(threads)
    fn = factory(*factory_args)
    conn.send({"allocator": "retained freed memory" if applied else "default allocator",
               "threads": torch.get_num_threads()})
    while (msg := conn.recv()) is not None:
        args = [torch.from_numpy(v) for v in msg]
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn(*args)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        conn.send({"wall": wall, "cpu": cpu, **out})


class Side:
    """One (method, side, allocator) child process; ``factory``/``factory_args`` replace the
    inference runner (the training benchmark's sides, ``bench_train.py``)."""

    def __init__(self, method: str, kind: str, allocator: str, weights_dir, threads: int,
                 factory=None, factory_args: tuple | None = None):
        ctx = mp.get_context("spawn")
        self.kind, self.allocator_requested = kind, allocator
        self.conn, child = ctx.Pipe()
        if factory is None:
            factory, factory_args = _fusion_runner, (method, kind, weights_dir)
        self.proc = ctx.Process(target=_serve, args=(child, factory, factory_args, threads,
                                                     allocator == "retained"), daemon=True)
        self.proc.start()
        child.close()  # the child's end lives in the child only: recv() then fails when the child dies
        self.info = self._recv()
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self, *tensors: torch.Tensor, record: bool = True) -> dict:
        self.conn.send(tuple(t.numpy() for t in tensors))
        out = self._recv()
        if record:
            self.wall.append(out["wall"])
            self.cpu.append(out["cpu"])
        return out

    def _recv(self):
        """The child's next answer; a child that died (its traceback is on stderr) raises instead of hanging."""
        try:
            return self.conn.recv()
        except EOFError:
            self.proc.join(timeout=10)
            raise RuntimeError(f"{self.kind} side process exited with code {self.proc.exitcode} "
                               "(its traceback is printed above)") from None

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):  # the child is already gone
            pass
        self.proc.join(timeout=60)


def psnr(x, y) -> float:
    mse = float(((torch.as_tensor(x) - torch.as_tensor(y)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def load_pairs(folder: Path, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` Lytro pairs as RGB ``[1, 3, H, W]`` tensors."""
    from mfif.io import load_image
    from mfif.scenes import discover_scenes

    scenes = [s for s in discover_scenes(folder) if len(s.sources) == 2][:n]
    if not scenes:
        raise SystemExit(f"no source pairs in '{folder}'")
    return [(load_image(s.sources[0])[None], load_image(s.sources[1])[None]) for s in scenes]


def bench_method(method: str, pairs, weights_dir, threads: int) -> dict:
    """Interleaved timings of ours and the reference side under both allocators, plus closeness."""
    ref = REFERENCE.get(method, "plain")
    sides = {(kind, alloc): Side(method, kind, alloc, weights_dir, threads)
             for kind in ("ours", ref) for alloc in ALLOCATORS}
    worst_psnr, map_diff = float("inf"), []
    try:
        for side in sides.values():  # warm-up: allocator, oneDNN primitive caches
            side.run(*pairs[0], record=False)
        for i, (a, b) in enumerate(pairs):
            order = list(sides.values())
            order = order[i % len(order):] + order[:i % len(order)]  # rotate who goes first
            outs = {(s.kind, s.allocator_requested): s.run(a, b) for s in order}
            ours, other = outs[("ours", "retained")], outs[(ref, "default")]
            worst_psnr = min(worst_psnr, psnr(ours["fused"], other["fused"]))
            if ours["map"] is not None and other["map"] is not None:
                map_diff.append(float((torch.as_tensor(ours["map"]) - torch.as_tensor(other["map"]))
                                      .abs().gt(1e-3).float().mean()))
    finally:
        for side in sides.values():
            side.close()
    return {"ref": ref, "sides": sides, "psnr": worst_psnr,
            "map_diff": max(map_diff) if map_diff else None}


def report_speed(method: str, res: dict, n_pairs: int) -> list[str]:
    """One printed line per figure; returns the summary-table row."""
    med = {key: (statistics.median(s.wall), statistics.median(s.cpu)) for key, s in res["sides"].items()}
    for (kind, alloc), side in res["sides"].items():
        wall, cpu = med[(kind, alloc)]
        print(f"{method:8s} {kind:8s} {side.info['allocator']:22s} {side.info['threads']} threads  "
              f"wall {wall:.3f} s/pair  cpu {cpu:.3f} s/pair  (median of {n_pairs} pairs)")
    ref = res["ref"]
    for alloc in ALLOCATORS:
        (ow, oc), (rw, rc) = med[("ours", alloc)], med[(ref, alloc)]
        print(f"{method:8s} ratio {ref}/ours, {alloc} allocator on both sides: {rw / ow:.2f}x wall, {rc / oc:.2f}x cpu")
    maps = "" if res["map_diff"] is None else f", map pixels |diff| > 1e-3: {100 * res['map_diff']:.3f}% (worst pair)"
    print(f"{method:8s} PSNR ours vs {ref}: {res['psnr']:.1f} dB (worst pair){maps}")
    f = lambda key: f"{med[key][0]:.2f} s ({med[key][1]:.2f} cpu)"  # noqa: E731
    ratio = med[(ref, "retained")][0] / med[("ours", "retained")][0]
    return [method, f(("ours", "retained")), f(("ours", "default")), f"{ref}: " + f((ref, "default")),
            f((ref, "retained")), f"{ratio:.2f}x", f"{res['psnr']:.1f} dB"]


def bench_bf16(method: str, pairs, weights_dir) -> list[str]:
    """fp32 vs bf16 ``fuse`` in this process, alternating: speed-up and what a metric could see."""
    module, _ = build(method, weights_dir)
    walls = {"fp32": [], "bf16": []}
    worst, flips = float("inf"), []
    with torch.inference_mode():
        for i, (a, b) in enumerate([pairs[0]] + pairs):
            outs = {}
            for prec in ("fp32", "bf16") if i % 2 else ("bf16", "fp32"):
                module.fuse_precision = prec
                c0 = time.process_time()
                outs[prec] = module.fuse(torch.stack([a, b], 1))
                if i:  # pair 0 twice: the first is the warm-up
                    walls[prec].append(time.process_time() - c0)
            if i:
                worst = min(worst, psnr(outs["fp32"].fused, outs["bf16"].fused))
                if outs["fp32"].maps is not None:
                    flips.append(float(((outs["fp32"].maps > 0.5) != (outs["bf16"].maps > 0.5)).float().mean()))
    c32, c16 = statistics.median(walls["fp32"]), statistics.median(walls["bf16"])
    flip = f"{100 * max(flips):.4f}%" if flips else "- (no map)"
    print(f"{method:8s} bf16  cpu fp32 {c32:.3f} s/pair  bf16 {c16:.3f} s/pair  speed-up {c32 / c16:.2f}x  "
          f"PSNR vs fp32 {psnr_text(worst)} (worst pair)  map pixels flipped {flip} (worst pair)")
    return [method, f"{c32:.2f} s", f"{c16:.2f} s", f"{c32 / c16:.2f}x", psnr_text(worst), flip]


def psnr_text(v: float) -> str:
    return "identical" if v == float("inf") else f"{v:.1f} dB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lytro", type=Path, default=Path("data/lytro"), help="folder of lytro-NN-A/B.jpg")
    p.add_argument("--weights", type=Path, default=Path("weights"), help="folder with the released weights")
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--bf16", action="store_true", help="also the bf16 table (part 2)")
    p.add_argument("--no-speed", action="store_true", help="skip part 1")
    a = p.parse_args(argv)
    if not a.lytro.is_dir():
        p.error(f"--lytro {a.lytro}: no such folder")
    from mfif.io import markdown_table
    from mfif.runtime import retain_freed_memory

    for m in a.methods:
        if m in RELEASED and not (a.weights / RELEASED[m]).is_file():
            p.error(f"--weights {a.weights}: no {RELEASED[m]} (released {m} weights)")
    torch.set_num_threads(a.threads)
    pairs = load_pairs(a.lytro, a.pairs)
    h, w = pairs[0][0].shape[-2:]
    print(f"# inference benchmark: {len(pairs)} Lytro pairs ({h}x{w} RGB), {a.threads} threads per process, "
          f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    if not a.no_speed:
        rows = [report_speed(m, bench_method(m, pairs, a.weights, a.threads), len(pairs)) for m in a.methods]
        print()
        print(markdown_table(["method", "ours as shipped (retained memory)", "ours, default allocator",
                              "reference, default allocator", "reference + our allocator setting",
                              "ratio (equal footing)", "PSNR ours vs reference"], rows))
    if a.bf16:
        alloc = "retained freed memory" if retain_freed_memory() else "default allocator"
        print(f"\n# bf16 vs fp32, this process ({alloc}, {a.threads} threads), process CPU seconds per pair")
        rows = [bench_bf16(m, pairs, a.weights) for m in a.methods]
        print()
        print(markdown_table(["method", "fp32", "bf16", "speed-up", "PSNR bf16 vs fp32", "map pixels flipped"],
                             rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
