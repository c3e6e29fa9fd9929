"""Training speed, one command (issue 25): run.py's Trainer against a bare loop, the released
training code and the data generators.

For each paper, at its cpu profile (``--size cpu``, default: ``profile=cpu`` of its yaml) or its
paper batch size and crop (``--size paper``; ``--batch``/``--crop`` override either):

* (a) ``trainer``: :func:`mfif.trainer.build_trainer` + ``trainer.fit`` as ``run.py`` assembles
  them (our callbacks: divergence guard, exact-resume RNG streams, checkpoints as configured,
  EMA where the paper uses it, CSV + W&B offline logging, learning-rate monitor), fed from a
  loader of pre-built batches. A step is the time between two ``on_train_batch_end`` calls: the
  training step plus everything Lightning does around it (hooks, logging, fetching the batch).
  Each turn of a side starts with one untimed step (the first step of each ``fit``);
* (b) ``bare``: ``zero_grad``, the module's own ``training_step`` (same loss), ``backward`` and
  the module's optimiser step on the same batch, nothing else;
* (c) ``released`` (GACN, UFA-Fuse, with ``--gacn-repo`` / ``--ufa-repo``): the authors' model +
  loss + optimiser step imported from their repository (:mod:`experiments.benchmarks.released_train`);
* (d) ``loader``: the paper's cpu-profile generator (needs ``--data``, the folder its
  ``data.root`` names) in this process, one batch after another: samples/s of one worker, and how
  many workers keep up with (a).

(a)-(c) run in child processes (the side machinery of ``bench_inference.py``: ``spawn``, the
same allocator setting - ``--allocator``: our CLIs' freed-memory retention of :mod:`mfif.runtime`
(default) or glibc's default - and ``--threads`` on every side), on identical tensors (one batch of the built-in generator at the
paper's shapes, sent to every side). The sides take turns round by round (rotating who goes
first); figures are medians over rounds x steps, with the spread (min-max). Wall and process
CPU seconds (all threads) are both reported: on a shared machine the wall time includes waiting
for a core, the CPU time does not.

Usage::

    python experiments/benchmarks/bench_train.py                      # cpu profiles, all papers (~10 min)
    python experiments/benchmarks/bench_train.py --size paper --papers gacn udpnet --rounds 2
    python experiments/benchmarks/bench_train.py --papers gacn ufafuse --gacn-repo ../GACN \\
        --ufa-repo ../UFA-Fusion --data data --json train_speed.json
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

PAPERS = ("gacn", "msasn", "udpnet", "ufafuse", "vaeedof")
RELEASED = ("gacn", "ufafuse")
TRAINING_FAST_PATHS = ("gacn",)  # papers whose training step has fast paths (--plain compares them off)
BATCH_KEYS = ("sources", "mask", "gt")  # the tensors a training batch may hold, sent in this order


def run_config(paper: str, size: str, overrides: list[str] = ()):
    """The paper's config as ``run.py`` trains it at ``size`` (``cpu``: its ``profile=cpu``), on CPU."""
    from mfif.config import load_config

    profile = ["profile=cpu"] if size == "cpu" else []
    # VAEEDOF refuses a random frozen VAE outside tests; its weights do not change the cost of a step.
    # Its paper metrics (DISTS, PieAPP, LPIPS) need weight files and run only in validation/test,
    # never in a training step: the benchmark builds the module with PSNR/SSIM instead
    vae = ["model.allow_random_vae=true", "metrics=[psnr,ssim]"] if paper == "vaeedof" else []
    return load_config(f"{paper}.yaml", [*profile, *vae, "trainer.accelerator=cpu", "trainer.devices=1",
                                         "trainer.strategy=auto", "trainer.progress=none", *overrides])


def shapes(paper: str, size: str, batch: int | None, crop: int | None) -> tuple[int, int]:
    """``(batch, crop)`` of the benchmark: the config's unless given."""
    d = run_config(paper, size).data
    return int(batch or d.batch_size), int(crop or d.patch_size)


def make_batch(paper: str, size: str, batch: int, crop: int) -> dict:
    """One training batch of the built-in generator at the paper's shapes (sources, mask, gt)."""
    from experiments.run import build_datamodule
    from mfif.config import load_config

    d = run_config(paper, size).data
    cfg = load_config(f"{paper}.yaml", ["data.name=default", f"data.batch_size={batch}", f"data.patch_size={crop}",
                                        f"data.num_train={batch}", f"data.gray={d.gray}",
                                        f"data.num_sources={d.num_sources}", "data.num_workers=0"])
    dm = build_datamodule(cfg)
    dm.setup("fit")
    samples = [dm.datasets["train"][i] for i in range(batch)]

    def fit(t: torch.Tensor, key: str) -> torch.Tensor:
        # the built-in photos can be smaller than a paper's crop (VAEEDOF: 512): resize those samples
        if t.shape[-2:] == (crop, crop):
            return t
        flat = t.reshape(1, -1, *t.shape[-2:]).float()
        mode = {"mode": "nearest"} if key == "mask" else {"mode": "bilinear", "align_corners": False}
        return torch.nn.functional.interpolate(flat, size=(crop, crop), **mode).reshape(*t.shape[:-2], crop, crop)

    return {k: torch.stack([fit(s[k], k) for s in samples]) for k in BATCH_KEYS if k in samples[0]}


class _Repeat(torch.utils.data.Dataset):
    """``n`` times the same pre-built batch (a loader with ``batch_size=None`` yields it as is)."""

    def __init__(self, batch: dict, n: int):
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return self.batch


def _unpack(keys: tuple, arrays) -> dict:
    return dict(zip(keys, arrays))


def _timed(fn, steps: int) -> dict:
    """One untimed step, then ``steps`` timed ones (:func:`mfif.runtime.time_calls`); afterwards the
    side gives its free memory back (:func:`_trim`)."""
    from mfif.runtime import time_calls

    wall, cpu = time_calls(fn, steps)
    _trim()
    return {"step_wall": wall, "step_cpu": cpu}


def _trim() -> None:
    """``malloc_trim(0)``: an idle side returns its free heap memory to the system. With the CLIs'
    freed-memory retention (``--allocator retained``) each side otherwise keeps its peak between
    turns (~4.5 GB for GACN at 16 x 156 x 156); its next turn's untimed step faults it back in,
    and the timed steps reuse it as a long training run does."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def make_clock():
    """A Lightning callback noting wall and process-CPU time at every ``on_train_batch_end`` and
    at ``on_train_end``; :meth:`times` gives the per-step times after the first step."""
    from lightning.pytorch.callbacks import Callback

    class Clock(Callback):
        def __init__(self):
            self.marks: list[tuple[float, float]] = []
            self.end = (0.0, 0.0)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.marks.append((time.perf_counter(), time.process_time()))

        def on_train_end(self, trainer, pl_module):
            self.end = (time.perf_counter(), time.process_time())

        def times(self) -> dict:
            m = self.marks
            return {"step_wall": [b[0] - a[0] for a, b in zip(m, m[1:])],
                    "step_cpu": [b[1] - a[1] for a, b in zip(m, m[1:])],
                    "epoch_end_wall": self.end[0] - m[-1][0]}  # epoch-end hooks: the checkpoint writes

    return Clock()


def trainer_side(paper: str, size: str, overrides: list, keys: tuple, steps: int):
    """Child-process factory of side (a): each call fits ``1 + steps`` steps with a fresh Trainer
    (the module carries on training) and returns the times of the last ``steps``."""
    from experiments.run import build_module

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # the per-fit banners
    warnings.filterwarnings("ignore", module="lightning")  # "no val_dataloader", logging interval
    cfg = run_config(paper, size, overrides)
    torch.manual_seed(int(cfg.seed))
    module = build_module(cfg)
    work = Path(tempfile.mkdtemp(prefix=f"bench-train-{paper}-"))
    calls = {"n": 0}

    def run(*arrays) -> dict:
        calls["n"] += 1
        clock = make_clock()
        fit_steps(cfg, module, _unpack(keys, arrays), steps, work / f"round{calls['n']}", clock)
        _trim()
        return clock.times()

    return run


def fit_steps(cfg, module, batch: dict, steps: int, run_dir: Path, clock, **trainer_args) -> None:
    """``trainer.fit`` of ``1 + steps`` steps on the pre-built ``batch`` with run.py's Trainer."""
    from mfif.trainer import build_trainer

    loader = torch.utils.data.DataLoader(_Repeat(batch, 1 + steps), batch_size=None)
    trainer = build_trainer(cfg, run_dir, extra_callbacks=[clock], max_steps=1 + steps, max_epochs=1,
                            limit_train_batches=1 + steps, limit_val_batches=0, num_sanity_val_steps=0, **trainer_args)
    trainer.fit(module, train_dataloaders=loader)


def bare_side(paper: str, size: str, overrides: list, keys: tuple, steps: int, plain: bool = False):
    """Child-process factory of side (b): the module's loss and optimiser, nothing else (``plain``:
    with the networks' fast paths off, :func:`mfif.ops.conv.fast_paths`)."""
    from experiments.run import build_module
    from mfif.ops.conv import fast_paths

    cfg = run_config(paper, size, overrides)
    torch.manual_seed(int(cfg.seed))
    module = build_module(cfg).train()
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt

    def run(*arrays) -> dict:
        batch = _unpack(keys, arrays)

        def step():
            with fast_paths(not plain):
                opt.zero_grad()
                module.training_step(batch, 0).backward()
                opt.step()

        return _timed(step, steps)

    return run


def released_side(paper: str, repo: str, keys: tuple, steps: int):
    """Child-process factory of side (c): the released model + loss + optimiser step."""
    from experiments.benchmarks.released_train import STEPS

    step_fn = STEPS[paper](Path(repo))

    def run(*arrays) -> dict:
        batch = _unpack(keys, arrays)
        args = (batch["sources"], batch["mask"] if paper == "gacn" else batch["gt"])
        return _timed(lambda: step_fn(*args), steps)

    return run


def loader_rate(paper: str, data_root: Path, batch: int, crop: int, batches: int) -> dict:
    """Samples/s of one worker of the paper's cpu-profile generator (this process, no workers)."""
    from experiments.run import build_datamodule

    cfg = run_config(paper, "cpu", [f"data.root={data_root}", f"data.batch_size={batch}", f"data.patch_size={crop}",
                                    "data.num_workers=0"])
    dm = build_datamodule(cfg)
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    res = _timed(lambda: next(it), batches)  # the untimed first batch: file listing and caches
    return {"sample_wall": [t / batch for t in res["step_wall"]], "sample_cpu": [t / batch for t in res["step_cpu"]],
            "generator": cfg.data.name}


def loader_only(paper: str, a) -> dict:
    """(d) alone: ``a.rounds`` x ``a.loader_batches`` timed batches of the paper's generator; prints and returns
    ``{loader_samples_per_s_per_worker, ..._cpu, generator, batch, crop}`` (median; the spread is printed)."""
    batch_size, crop = shapes(paper, a.size, a.batch, a.crop)
    wall, cpu, gen = [], [], None
    for _ in range(a.rounds):
        res = loader_rate(paper, a.data[paper], batch_size, crop, a.loader_batches)
        wall, cpu, gen = wall + res["sample_wall"], cpu + res["sample_cpu"], res["generator"]
    w, c = median_spread(wall), median_spread(cpu)
    print(f"{paper} ({gen}, batch {batch_size} x {crop}): {1 / w[0]:.1f} samples/s per worker "
          f"[{1 / w[2]:.1f}-{1 / w[1]:.1f}], cpu {1 / c[0]:.1f}", flush=True)
    return {"loader_samples_per_s_per_worker": 1 / w[0], "loader_samples_per_s_per_worker_cpu": 1 / c[0],
            "generator": gen, "batch": batch_size, "crop": crop}


def profile_step(paper: str, a, rows: int = 12) -> str:
    """torch.profiler table of one bare training step (after a warm-up step), with the share of
    the step spent in convolutions (forward, backward and fused oneDNN kernels)."""
    from torch.profiler import ProfilerActivity, profile

    batch_size, crop = shapes(paper, a.size, a.batch, a.crop)
    batch = make_batch(paper, a.size, batch_size, crop)
    run = bare_side(paper, a.size, [f"data.batch_size={batch_size}", f"data.patch_size={crop}"], tuple(batch), 1)
    arrays = list(batch.values())
    run(*arrays)  # warm-up (and its first timed step)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(*arrays)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if "conv" in e.key)
    head = f"## {paper}: {batch_size} x {crop}, convolutions {100 * conv / total:.0f} % of the step's self CPU time"
    return head + "\n" + events.table(sort_by="self_cpu_time_total", row_limit=rows)


def data_roots(items: list[str], papers: list[str]) -> dict[str, Path]:
    """``--data`` items (``DIR`` for every paper, ``PAPER=DIR`` for one) -> ``{paper: folder}``.

    Raises:
        ValueError: an unknown paper or a folder that does not exist (one line naming the item).
    """
    roots: dict[str, Path] = {}
    for item in items:
        paper, sep, folder = item.partition("=")
        if sep and paper not in PAPERS:
            raise ValueError(f"--data {item}: unknown paper '{paper}' (one of {', '.join(PAPERS)})")
        path = Path(folder if sep else item)
        if not path.is_dir():
            raise ValueError(f"--data {item}: no such folder")
        roots.update({paper: path} if sep else {p: roots.get(p, path) for p in papers})
    return roots


def median_spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def bench_paper(paper: str, a) -> dict:
    """Interleaved rounds of the sides of one paper; the per-paper result of ``--json``."""
    from experiments.benchmarks.bench_inference import Side

    batch_size, crop = shapes(paper, a.size, a.batch, a.crop)
    batch = make_batch(paper, a.size, batch_size, crop)
    keys = tuple(k for k in BATCH_KEYS if k in batch)
    # trainer.threads (the cpu profiles set 2) would otherwise give side (a) other threads than the rest
    sizes = [f"data.batch_size={batch_size}", f"data.patch_size={crop}", f"trainer.threads={a.threads}"]
    if a.no_wandb:
        sizes.append("logger.wandb=false")
    specs = {"trainer": (trainer_side, (paper, a.size, sizes, keys, a.steps)),
             "bare": (bare_side, (paper, a.size, sizes, keys, a.steps))}
    if a.plain and paper in TRAINING_FAST_PATHS:
        specs["plain"] = (bare_side, (paper, a.size, sizes, keys, a.steps, True))
    repo = {"gacn": a.gacn_repo, "ufafuse": a.ufa_repo}.get(paper)
    if repo is not None:
        specs["released"] = (released_side, (paper, str(repo), keys, a.steps))
    sides = {k: Side(paper, k, a.allocator, None, a.threads, factory=f, factory_args=args) for k, (f, args) in specs.items()}
    times: dict[str, dict[str, list]] = {k: {"step_wall": [], "step_cpu": []} for k in [*sides, "loader"]}
    extra: dict[str, list] = {"epoch_end_wall": []}
    tensors = [batch[k] for k in keys]
    try:
        for r in range(a.rounds):
            order = list(sides) + (["loader"] if paper in a.data else [])
            for name in order[r % len(order):] + order[:r % len(order)]:
                if name == "loader":
                    res = loader_rate(paper, a.data[paper], batch_size, crop, a.loader_batches)
                    times["loader"]["step_wall"] += res["sample_wall"]
                    times["loader"]["step_cpu"] += res["sample_cpu"]
                    extra["generator"] = res["generator"]
                    continue
                res = sides[name].run(*tensors)
                times[name]["step_wall"] += res["step_wall"]
                times[name]["step_cpu"] += res["step_cpu"]
                if "epoch_end_wall" in res:
                    extra["epoch_end_wall"].append(res["epoch_end_wall"])
                print(f"  {paper} round {r + 1}/{a.rounds} {name:8s} wall {statistics.median(res['step_wall']):.2f} s/step "
                      f"cpu {statistics.median(res['step_cpu']):.2f} s/step", flush=True)
    finally:
        for side in sides.values():
            side.close()
    return summarise(paper, batch_size, crop, times, extra, sides["trainer"].info)


def summarise(paper: str, batch: int, crop: int, times: dict, extra: dict, info: dict) -> dict:
    """The ``--json`` entry of one paper (rates from the medians; spreads as [min, max])."""
    out: dict = {"batch": batch, "crop": crop, "threads": info["threads"], "allocator": info["allocator"]}
    for name in ("trainer", "bare", "released", "plain"):
        if times.get(name, {}).get("step_wall"):
            w, c = median_spread(times[name]["step_wall"]), median_spread(times[name]["step_cpu"])
            out[f"{name}_steps_per_s"] = 1 / w[0]
            out[f"{name}_samples_per_s"] = batch / w[0]
            out[f"{name}_s_per_step"] = {"wall": w, "cpu": c}
    tw, bw = out["trainer_s_per_step"], out["bare_s_per_step"]
    out["overhead"] = tw["wall"][0] / bw["wall"][0]
    out["overhead_cpu"] = tw["cpu"][0] / bw["cpu"][0]
    if "plain_s_per_step" in out:
        out["fast_path_speedup_cpu"] = out["plain_s_per_step"]["cpu"][0] / bw["cpu"][0]
    if "released_s_per_step" in out:
        out["ours_vs_released"] = out["released_s_per_step"]["wall"][0] / bw["wall"][0]
        out["ours_vs_released_cpu"] = out["released_s_per_step"]["cpu"][0] / bw["cpu"][0]
    if extra["epoch_end_wall"]:
        out["trainer_epoch_end_s"] = statistics.median(extra["epoch_end_wall"])
    if times["loader"]["step_wall"]:
        w, c = median_spread(times["loader"]["step_wall"]), median_spread(times["loader"]["step_cpu"])
        out["generator"] = extra["generator"]
        out["loader_samples_per_s_per_worker"] = 1 / w[0]
        out["loader_samples_per_s_per_worker_cpu"] = 1 / c[0]
        out["workers_needed"] = math.ceil(out["trainer_samples_per_s"] * w[0])
    return out


def table(results: dict) -> str:
    from mfif.io import markdown_table

    def rate(r: dict, name: str) -> str:
        if f"{name}_s_per_step" not in r:
            return "–"
        w, c = r[f"{name}_s_per_step"]["wall"], r[f"{name}_s_per_step"]["cpu"]
        return f"{1 / w[0]:.3f} ({r['batch'] / w[0]:.1f}) [{w[1]:.2f}-{w[2]:.2f} s]; cpu {c[0]:.2f} s"

    rows, plain = [], any("plain_s_per_step" in r for r in results.values())
    for paper, r in results.items():
        rel = f"{r['ours_vs_released']:.2f}x ({r['ours_vs_released_cpu']:.2f}x cpu)" if "ours_vs_released" in r else "–"
        loader = (f"{r['loader_samples_per_s_per_worker']:.1f} ({r['generator']}); {r['workers_needed']}"
                  if "workers_needed" in r else "–")
        rows.append([paper, f"{r['batch']} x {r['crop']}", rate(r, "trainer"), rate(r, "bare"),
                     f"{r['overhead']:.3f} ({r['overhead_cpu']:.3f} cpu)", rate(r, "released"), rel, loader]
                    + ([rate(r, "plain")] if plain else []))
    return markdown_table(["paper", "batch x crop", "(a) Trainer steps/s (samples/s) [spread]; CPU s/step",
                           "(b) bare loop", "(a)/(b) wall (cpu)", "(c) released", "(c)/(b): ours vs released",
                           "(d) samples/s per worker; workers for (a)"] + (["(b) fast paths off"] if plain else []),
                          rows)


def add_size_arguments(p: argparse.ArgumentParser, steps: int, threads_help: str) -> None:
    """``--size``, ``--batch``, ``--crop``, ``--steps``, ``--threads`` (shared with ``bench_ddp.py``)."""
    p.add_argument("--size", choices=("cpu", "paper"), default="cpu", help="profile=cpu (default) or the paper's sizes")
    p.add_argument("--batch", type=int, help="batch size (default: the config's)")
    p.add_argument("--crop", type=int, help="training crop (default: the config's data.patch_size)")
    p.add_argument("--steps", type=int, default=steps, help=f"timed steps per turn (default {steps})")
    p.add_argument("--threads", type=int, default=2, help=threads_help)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--papers", nargs="+", default=list(PAPERS), choices=PAPERS)
    add_size_arguments(p, 1, "torch threads per side (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--data", nargs="+", metavar="[PAPER=]DIR",
                   help="data.root of the cpu profiles for (d): one folder for all papers and/or PAPER=DIR "
                        "(e.g. data udpnet=data/lytro vaeedof=data/train/mf_voc)")
    p.add_argument("--loader-batches", type=int, default=2, help="timed batches of (d) per round (default 2)")
    p.add_argument("--gacn-repo", type=Path, help="Keep-Passion/GACN clone or git directory for (c)")
    p.add_argument("--ufa-repo", type=Path, help="ReckonerInheritor/UFA-Fusion clone or git directory for (c)")
    p.add_argument("--allocator", choices=("retained", "default"), default="retained",
                   help="every side's allocator setting: the CLIs' freed-memory retention (default; a side keeps "
                        "its memory during its turn and trims it after) or glibc's default")
    p.add_argument("--no-wandb", action="store_true", help="(a) without the W&B logger (CSV only)")
    p.add_argument("--plain", action="store_true", help="also (b) with the training fast paths off (GACN)")
    p.add_argument("--profile", action="store_true", help="instead: torch.profiler table of one (b) step per paper")
    p.add_argument("--loader-only", action="store_true",
                   help="instead: only (d), each paper's generator (needs --data for every paper), no training sides")
    p.add_argument("--json", type=Path, help="write {paper: {trainer_steps_per_s, bare_steps_per_s, overhead, ...}}")
    a = p.parse_args(argv)
    for flag, value in (("--rounds", a.rounds), ("--steps", a.steps), ("--threads", a.threads),
                        ("--loader-batches", a.loader_batches), ("--batch", a.batch or 1), ("--crop", a.crop or 1)):
        if value < 1:
            p.error(f"{flag} must be >= 1, got {value}")
    try:
        a.data = data_roots(a.data or [], a.papers)
    except ValueError as e:
        p.error(str(e))
    for flag, path in (("--gacn-repo", a.gacn_repo), ("--ufa-repo", a.ufa_repo)):
        if path is not None and not path.is_dir():
            p.error(f"{flag} {path}: no such folder")
    if a.json is not None and not a.json.parent.is_dir():
        p.error(f"--json {a.json}: folder {a.json.parent} does not exist")
    torch.set_num_threads(a.threads)
    print(f"# training benchmark: size {a.size}, {a.rounds} rounds x {a.steps} steps, {a.threads} threads per side, "
          f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}", flush=True)
    if a.profile:
        for paper in a.papers:
            print(profile_step(paper, a), flush=True)
        return 0
    if a.loader_only:
        missing = [x for x in a.papers if x not in a.data]
        if missing:
            p.error(f"--loader-only: no --data folder for {', '.join(missing)} (e.g. --data {missing[0]}=DIR)")
        rates = {paper: loader_only(paper, a) for paper in a.papers}
        if a.json is not None:
            a.json.write_text(json.dumps(rates, indent=1))
        return 0
    results, failed = {}, {}
    for paper in a.papers:
        try:
            results[paper] = bench_paper(paper, a)
        except Exception as e:  # noqa: BLE001 - one paper's failure (data, memory) must not lose the others
            failed[paper] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
            print(f"  {paper} failed: {failed[paper]}", flush=True)
        if a.json is not None:  # after every paper: a long run keeps what it measured
            a.json.write_text(json.dumps({**results, **{k: {"failed": v} for k, v in failed.items()}}, indent=1))
    print()
    if results:
        print(table(results))
    return 1 if failed else 0


if __name__ == "__main__":
    from mfif.runtime import run_cli

    raise SystemExit(run_cli(main))
