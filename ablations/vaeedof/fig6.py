"""VAEEDOF Fig. 6: images (512x512) per second vs number of inputs (2..7), every registered method.

For each method of :func:`mfif.registry.methods` (``vaeedof_vae`` is skipped: it is the VAE
training stage, not a fusion method) the module is built from its yaml (``--profile`` applied
when given, e.g. ``smoke`` for tiny widths; default: the paper's configuration), and
``module.fuse`` runs on N random 512x512 RGB sources under ``torch.inference_mode``: one warm-up,
then the median of ``--repeats`` runs, as images per wall-clock second (Fig. 6) and per CPU
second of the process (comparable on a shared CPU). Weights do not change the speed, so no weights are
loaded (VAEEDOF with ``model.allow_random_vae=true``). A method that refuses N > 2 (or fails)
is skipped for that N and the reason recorded. Writes ``<out>.csv``, ``<out>.md`` and a grouped
bar plot ``<out>.png``; with ``--run_dir`` (a sweep point) also ``results.json`` (:func:`record_rows`).

Usage::

    python ablations/vaeedof/fig6.py                       # all methods, N = 2..7, 512 px
    python ablations/vaeedof/fig6.py --methods vaeedof gacn --size 256 --device cuda
    python ablations/vaeedof/fig6.py --method=gacn --num_inputs=3 --wandb   # one point (W&B sweep fig6.yaml)
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path


import torch  # noqa: E402

NOT_FUSION = {"vaeedof_vae"}  # training stages, not fusion methods
FIG6_INPUTS = [2, 3, 4, 5, 6, 7]  # Fig. 6 x-axis
FIG6_SIZE = 512  # Fig. 6: 512x512 images


def build(method: str, profile: str | None, device: torch.device):
    """A fusion module of ``method`` from its yaml, metrics reduced to psnr (never evaluated)."""
    from mfif import registry
    from mfif.config import load_config

    overrides = ["metrics=[psnr]"] + ([f"profile={profile}"] if profile else [])
    cfg = load_config(f"{method}.yaml", overrides)
    if "allow_random_vae" in cfg.model:  # speed does not depend on the weights (module docstring)
        cfg.model.allow_random_vae = True
    return registry.method_class(cfg.method)(cfg).eval().to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def images_per_second(module, n: int, size: int, repeats: int, device: torch.device, seed: int = 0) -> tuple[float, float]:
    """Fused images per second for N sources of ``size`` x ``size`` (median of ``repeats``).

    Returns:
        (images per wall-clock second, images per CPU second of this process). The second is
        robust to other processes on a shared CPU; on an idle machine it is roughly the first
        divided by the number of threads. On GPU only the first is meaningful.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, n, 3, size, size, generator=g).to(device)
    module.fuse(x)  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        module.fuse(x)
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1.0 / statistics.median(times), 1.0 / max(statistics.median(cpu), 1e-9)


def run(methods: list[str], inputs: list[int], size: int, repeats: int, profile: str | None,
        device: torch.device) -> list[dict]:
    rows = []
    for method in methods:
        try:
            module = build(method, profile, device)
        except Exception as e:  # noqa: BLE001 - recorded, the benchmark goes on
            rows += [{"method": method, "n": n, "images_per_s": None, "images_per_cpu_s": None,
                      "note": f"build failed: {e}"} for n in inputs]
            continue
        for n in inputs:
            try:
                ips, ips_cpu = images_per_second(module, n, size, repeats, device)
                rows.append({"method": method, "n": n, "images_per_s": ips, "images_per_cpu_s": ips_cpu, "note": ""})
            except Exception as e:  # noqa: BLE001 - e.g. a method limited to N = 2
                rows.append({"method": method, "n": n, "images_per_s": None, "images_per_cpu_s": None,
                             "note": f"skipped: {type(e).__name__}: {str(e).splitlines()[0][:120]}"})
            print(f"{method:12s} N={n}  {rows[-1]['images_per_s'] or rows[-1]['note']}", flush=True)
        del module
    return rows


def write_outputs(rows: list[dict], out: Path, size: int, device: torch.device) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["method", "n", "images_per_s", "images_per_cpu_s", "note"])
        w.writeheader()
        w.writerows(rows)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    ns = sorted({r["n"] for r in rows})
    cell = {(r["method"], r["n"]): r for r in rows}
    lines = []
    for key, what in (("images_per_s", "per wall-clock second"), ("images_per_cpu_s", "per CPU second")):
        lines += [f"Images ({size}x{size}) {what} on {device} (Fig. 6)", "",
                  "| method | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
        for m in methods:
            vals = [cell.get((m, n)) for n in ns]
            lines.append(f"| {m} | " + " | ".join("-" if v is None or v[key] is None
                                                    else f"{v[key]:.3g}" for v in vals) + " |")
        lines.append("")
    notes = sorted({f"{r['method']}: {r['note']}" for r in rows if r["note"]})
    if notes:
        lines += ["Skipped:"] + [f"- {n}" for n in notes]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(ns) + 3, 4))
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        ys = [(cell.get((m, n)) or {}).get("images_per_s") or 0.0 for n in ns]
        ax.bar([k + i * width for k in range(len(ns))], ys, width, label=m)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(ns))], [str(n) for n in ns])
    ax.set_xlabel("number of input images")
    ax.set_ylabel(f"images ({size}x{size}) / s")
    ax.set_title(f"Fusion speed vs inputs (VAEEDOF Fig. 6), {device}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="*", help="default: every registered fusion method")
    p.add_argument("--method", help="a single method (W&B sweep form)")
    p.add_argument("--inputs", nargs="*", type=int, default=FIG6_INPUTS)
    p.add_argument("--num_inputs", type=int, help="a single N (W&B sweep form)")
    p.add_argument("--size", type=int, default=FIG6_SIZE)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--profile", default=None, help="config profile (e.g. smoke: tiny widths); default none")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch default)")
    p.add_argument("--out", default=None, help="output stem (default RUN_DIR/fig6, else runs/vaeedof_fig6/fig6)")
    p.add_argument("--wandb", action="store_true", help="log images_per_s to W&B (sweep runs)")
    from ablations.sweeps.point_results import add_point_arguments

    add_point_arguments(p)  # --run_dir, --wandb_group (sweep runner)
    return p


def record_rows(args, rows: list[dict]) -> None:
    """The figures to ``--run_dir``/results.json and W&B (a point of ablations/vaeedof/fig6.yaml):
    ``images_per_s`` and ``images_per_cpu_s`` for one (method, N), else ``<name>.<method>.N<n>``.
    A skipped (method, N) has no value: it is left out, never written as 0."""
    from ablations.sweeps.point_results import record

    keys = ("images_per_s", "images_per_cpu_s")
    metrics = ({k: rows[0][k] for k in keys} if len(rows) == 1
               else {f"{k}.{r['method']}.N{r['n']}": r[k] for r in rows for k in keys})
    record(args, metrics, "ablations/vaeedof/fig6.py", details={"rows": rows, "size": args.size, "device": args.device},
           history=[{"num_inputs": r["n"], **{k: r[k] for k in keys if r[k] is not None}} for r in rows])


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)

    from mfif import registry

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    methods = [args.method] if args.method else (args.methods or [m for m in registry.methods() if m not in NOT_FUSION])
    unknown = [m for m in methods if m not in registry.methods()]
    if unknown:
        p.error(f"unknown method(s) {unknown}; registered: {registry.methods()}")
    inputs = [args.num_inputs] if args.num_inputs else args.inputs
    out = Path(args.out or (Path(args.run_dir) / "fig6" if args.run_dir else "runs/vaeedof_fig6/fig6"))
    rows = run(methods, inputs, args.size, args.repeats, args.profile, device)
    write_outputs(rows, out, args.size, device)
    print(out.with_suffix(".md").read_text())
    record_rows(args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
