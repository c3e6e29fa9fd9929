"""Rebuild a paper's table from a sweep's runs: Markdown + LaTeX, ours beside the paper's values.

Usage::

    python ablations/tables.py ablations/udpnet/table4.yaml            # or .../table4.paper.yaml
    python ablations/tables.py ablations/udpnet/table4.yaml --source wandb --wandb-path ENTITY/mfif
    python ablations/tables.py --all                                   # every side file (make tables)

Rows and columns are the paper's, from the side file ``<table>.paper.yaml`` (``rows`` with
``label``/``overrides``/``paper``, ``columns`` metric names, ``citation``); paper-only rows
(``baselines`` list, ``other_methods`` mapping: methods that are not ours) keep their printed
values. Every metric gets three columns: ours, the paper's, and Δ = ours − paper. The best value
per column is bold (direction from the metric registry; rows carrying a ``dataset`` are compared
within their dataset). ``arank`` (a column, or ``arank: true``) is the average rank over the
table's metrics (rank 1 = best, ties share the mean rank), recomputed from our values with the
paper-only rows ranked by their printed values. A missing run or value is shown as "–", never 0.

Shape (issue 24, item 4): where a table has at least three rows of ours with both values of a
metric (a swept setting: threshold, window, variant), the table also says where the best value
sits, ours against printed, and Kendall's tau (``scipy.stats.kendalltau``, tau-b) between our
ordering of those rows and the printed one: 1 = the same order, -1 = reversed. Absolute levels
may differ (budget, data); the shape is what a sweep is meant to reproduce.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml


from ablations.sweeps.collect import DEFAULT_RUNS_ROOT, local_results, point_dir, wandb_results  # noqa: E402
from ablations.sweeps.grid import (ROOT, SweepError, load_side, load_sweep, point_matches, side_shared_sweep,  # noqa: E402
                           side_sweep)

MISSING = "–"  # en dash: a run or value that does not exist (never 0)
ARANK = "arank"


@dataclass
class Row:
    label: str
    paper: dict
    ours: Optional[dict]  # None: a paper-only row (a method that is not ours)
    group: Optional[str] = None  # rows with a `dataset` are compared within it
    point: Optional[str] = None  # the grid point id behind an "ours" row


@dataclass
class Table:
    title: str
    metrics: list  # metric columns, paper order (without arank)
    arank: bool
    rows: list
    notes: list = field(default_factory=list)
    decimals: dict = field(default_factory=dict)
    keys: dict = field(default_factory=dict)  # metric -> key where larger is better
    shape: dict = field(default_factory=dict)  # metric -> shape_comparison() entry


def _num(v) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None  # "null", "n/a", None: not reported
    return f if math.isfinite(f) else None


def direction(name: str, side: dict, notes: list) -> Callable[[float], float]:
    """A key where larger is better: the metric registry's, a side-file ``higher_is_better``
    entry, lower for ARank, else higher with a note."""
    if name == ARANK:
        return lambda v: -v
    own = (side.get("higher_is_better") or {}).get(name)
    if own is not None:
        return (lambda v: v) if own else (lambda v: -v)
    try:
        from mfif.metrics import metric_spec

        return metric_spec(name).rank_key
    except KeyError:
        notes.append(f"'{name}' is not a registered metric: higher is taken as better.")
        return lambda v: v


def printed_decimals(side_path: Path) -> dict:
    """{metric: most decimals printed in the paper}, read as text so that ``2.40`` keeps its 0."""
    raw = yaml.load(Path(side_path).read_text(), Loader=yaml.BaseLoader) or {}
    papers = [r.get("paper") or {} for key in ("rows", "baselines") for r in raw.get(key) or [] if isinstance(r, dict)]
    papers += list((raw.get("other_methods") or {}).values())
    out: dict = {}
    for p in papers:
        for m, v in (p.items() if isinstance(p, dict) else []):
            if _num(v) is not None:
                out[m] = max(out.get(m, 0), len(v.split(".", 1)[1]) if "." in v and "e" not in v.lower() else 0)
    return {m: min(d, 5) for m, d in out.items()}


def _ranks(values: list[float]) -> list[float]:
    """1 = best (largest); ties share their mean rank."""
    from scipy.stats import rankdata

    return list(rankdata([-v for v in values], method="average"))


def add_arank(rows: list, metrics: list, keys: dict) -> None:
    """Our ARank per row (``ours['arank']``), over rows with every metric (paper values for paper-only rows)."""
    for g in dict.fromkeys(r.group for r in rows):
        cand = [r for r in rows if r.group == g]
        vals = [(r, r.paper if r.ours is None else r.ours) for r in cand]
        vals = [(r, v) for r, v in vals if all(_num(v.get(m)) is not None for m in metrics)]
        if not vals or not metrics:
            continue
        per_metric = [_ranks([keys[m](_num(v[m])) for _, v in vals]) for m in metrics]
        for i, (r, _) in enumerate(vals):
            if r.ours is not None:
                r.ours[ARANK] = sum(pm[i] for pm in per_metric) / len(metrics)


def shape_comparison(rows: list, metrics: list, keys: dict, ours_key: Callable = lambda r: r.ours,
                     min_rows: int = 3) -> dict:
    """Best position and Kendall's tau of our values against the printed ones, per metric.

    Args:
        rows: table rows; only rows of ours (``ours`` not None) with both values of a metric count,
            and only when they share one ``group`` (a dataset: orders across datasets mean nothing).
        keys: ``{metric: key}`` where a larger key is better (:func:`direction`).
        ours_key: where a row's values of ours are (tests pass ``r.paper`` to compare a table with itself).
        min_rows: fewer rows with both values give no entry.

    Returns:
        ``{metric: {"best_ours": [labels], "best_printed": [labels], "tau": float or None, "n": rows}}``;
        ``tau`` is None when either ordering is constant.
    """
    from scipy.stats import kendalltau

    out = {}
    for m in metrics:
        both = [(r, _num(ours_key(r).get(m)), _num(r.paper.get(m))) for r in rows if r.ours is not None]
        both = [(r, keys[m](o), keys[m](p)) for r, o, p in both if o is not None and p is not None]
        if len(both) < min_rows or len({r.group for r, _, _ in both}) != 1:
            continue
        tau = kendalltau([o for _, o, _ in both], [p for _, _, p in both]).statistic
        out[m] = {"best_ours": [r.label for r, o, _ in both if o == max(x for _, x, _ in both)],
                  "best_printed": [r.label for r, _, p in both if p == max(x for _, _, x in both)],
                  "tau": None if tau is None or not math.isfinite(tau) else float(tau), "n": len(both)}
    return out


def shape_markdown(shape: dict) -> list:
    """The shape comparison as Markdown lines (empty without entries)."""
    from mfif.io import markdown_table

    if not shape:
        return []
    body = [[m, ", ".join(s["best_ours"]), ", ".join(s["best_printed"]),
             "yes" if set(s["best_ours"]) & set(s["best_printed"]) else "no",
             f"{s['tau']:.2f} ({s['n']})" if s["tau"] is not None else f"– ({s['n']})"] for m, s in shape.items()]
    return ["", "Shape, ours against printed (rows with both values): where the best value sits, and Kendall's "
            "tau between the two orderings (1: same order, -1: reversed).", "",
            *markdown_table(["metric", "best (ours)", "best (printed)", "same best", "Kendall τ (rows)"], body).rstrip("\n").split("\n")]


def figure_columns(side: dict, results: Optional[dict]) -> list:
    """The columns of a figure with no printed numbers (``columns: []``, e.g. UDPNet Fig. 7): the
    ``plot`` metrics our runs reported, else every metric they reported (nothing to show otherwise)."""
    have = {m for vals in (results or {}).values() for m, v in vals.items() if _num(v) is not None}
    wanted = [str(m) for m in (side.get("plot") or {}).get("metrics") or []]
    return [m for m in wanted if m in have] or sorted(have)


def build_table(side: dict, results: Optional[dict], source_note: str = "", shared: Optional[dict] = None) -> Table:
    """Assemble the rows of a side file with ``results`` ({point id: {metric: value}}; None = no sweep).

    ``shared`` ({metric: value}, from the side file's ``shared_sweep``) fills its columns in every
    row of ours. Rows carrying a ``dataset`` are listed by dataset (first appearance), ours first.
    """
    cols = [str(c) for c in side["columns"]] or figure_columns(side, results)
    metrics = [c for c in cols if c != ARANK]
    has_arank = ARANK in cols or side.get("arank") is True
    notes = [source_note] if source_note else []
    sweep_path = side_sweep(side)
    points = load_sweep(sweep_path).points() if sweep_path else []
    if not sweep_path:
        notes.append("No sweep for this table: our values are not available here.")
    rows = []
    for r in side["rows"]:
        hits = [p for p in points if point_matches(p, r.get("overrides") or {})]
        pid = hits[0].id if len(hits) == 1 else None
        if points and pid is None:
            notes.append(f"row '{r['label']}' matches {len(hits)} grid points: shown as missing.")
        ours = dict((results or {}).get(pid, {})) if pid else {}
        ours = {**(shared or {}), **ours}
        rows.append(Row(str(r["label"]), dict(r.get("paper") or {}), ours, r.get("dataset"), pid))
    for b in side.get("baselines") or []:
        rows.append(Row(str(b["label"]), dict(b.get("paper") or {}), None, b.get("dataset")))
    for label, paper in (side.get("other_methods") or {}).items():
        rows.append(Row(str(label), dict(paper or {}), None))
    order = {g: i for i, g in enumerate(dict.fromkeys(r.group for r in rows))}
    rows.sort(key=lambda r: order[r.group])  # stable: within a dataset, the file's order
    keys = {m: direction(m, side, notes) for m in metrics + [ARANK]}
    if has_arank:
        add_arank(rows, metrics, keys)
    shared_cols = (side.get("shared_sweep") or {}).get("columns") or []
    own = [m for m in metrics if m not in shared_cols]  # a run is missing whatever the shared columns hold
    missing = [r.label for r in rows if r.ours is not None and not any(_num(r.ours.get(m)) is not None for m in own)]
    if missing and sweep_path:
        notes.append(f"{len(missing)} of {sum(r.ours is not None for r in rows)} runs missing: {', '.join(missing)}.")
    shown = metrics + ([ARANK] if has_arank else [])
    printed = printed_decimals(side["path"])
    dec = {m: printed.get(m, 2 if m == ARANK else 4) for m in shown}
    lower = [m for m in shown if keys[m](1.0) < keys[m](0.0) and keys[m](-1.0) > keys[m](0.0)]
    ideal = [m for m in shown if keys[m](1.0) < keys[m](0.0) and keys[m](-1.0) < keys[m](0.0)]
    notes += [f"Lower is better: {', '.join(lower)}."] if lower else []
    notes += [f"Closest to the ideal value is best: {', '.join(ideal)}."] if ideal else []
    title = str(side.get("citation") or side["path"]).strip().rstrip(".")
    return Table(title, metrics, has_arank, rows, notes, dec, keys, shape_comparison(rows, metrics, keys))


def _best(rows: list, col: str, which: str, key: Callable) -> set:
    """ids of the rows holding the best value of ``col`` (per group; only when 2+ values compete)."""
    best = set()
    for g in dict.fromkeys(r.group for r in rows):
        vals = [(id(r), _num(getattr(r, which).get(col))) for r in rows if r.group == g and getattr(r, which) is not None]
        vals = [(i, v) for i, v in vals if v is not None]
        if len(vals) >= 2:
            top = max(key(v) for _, v in vals)
            best |= {i for i, v in vals if key(v) == top}
    return best


def cells(table: Table, bold: Callable[[str], str]) -> tuple[list, list]:
    """Header and body cells (strings) shared by the Markdown and LaTeX writers."""
    shown = table.metrics + ([ARANK] if table.arank else [])
    header = [(m, ("ours", "paper", "Δ")) for m in shown]
    best = {(m, w): _best(table.rows, m, w, table.keys[m]) for m in shown for w in ("ours", "paper")}
    body = []
    for r in table.rows:
        line = [r.label]
        for m in shown:
            d = table.decimals[m]
            o, p = _num((r.ours or {}).get(m)), _num(r.paper.get(m))
            fo = MISSING if o is None else (bold(f"{o:.{d}f}") if id(r) in best[(m, "ours")] else f"{o:.{d}f}")
            fp = MISSING if p is None else (bold(f"{p:.{d}f}") if id(r) in best[(m, "paper")] else f"{p:.{d}f}")
            fd = MISSING if o is None or p is None else f"{o - p:+.{d}f}"
            line += [fo, fp, fd]
        body.append(line)
    return header, body


def to_markdown(table: Table) -> str:
    header, body = cells(table, lambda s: f"**{s}**")
    names = ["Row"] + [f"{m} {w}" for m, ws in header for w in ws]
    esc = [[c.replace("|", "\\|") for c in line] for line in body]
    out = [f"**{table.title}**", "", "| " + " | ".join(names) + " |",
           "|" + "|".join([":--"] + ["--:"] * (len(names) - 1)) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in esc]
    out += ["", "Δ = ours − paper; best per column in bold; " + MISSING + " = no run or not reported."]
    out += [f"- {n}" for n in dict.fromkeys(table.notes)]
    out += shape_markdown(table.shape)
    return "\n".join(out) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--", "×": r"$\times$",
        "λ": r"$\lambda$", "Δ": r"$\Delta$", "−": "$-$"}


def tex(s: str) -> str:
    return "".join(_TEX.get(c, c) for c in s)


def to_latex(table: Table) -> str:
    header, body = cells(table, lambda s: f"\\textbf{{{s}}}")
    n = len(header)
    spans = " & ".join(f"\\multicolumn{{3}}{{c}}{{{tex(m)}}}" for m, _ in header)
    rules = " ".join(f"\\cmidrule(lr){{{2 + 3 * i}-{4 + 3 * i}}}" for i in range(n))
    sub = " & ".join("Ours & Paper & $\\Delta$" for _ in header)
    lines = ["% generated by ablations/tables.py (booktabs); do not edit", "\\begin{table}[t]", "\\centering",
             f"\\caption{{{tex(table.title)}. $\\Delta$ = ours $-$ paper; best per column in bold; -- = no run.}}",
             "\\begin{tabular}{l" + " rrr" * n + "}", "\\toprule"]
    if n:
        lines += [f" & {spans} \\\\", rules, f"Row & {sub} \\\\"]
    else:
        lines += ["Row \\\\"]
    lines.append("\\midrule")
    for i, (r, line) in enumerate(zip(table.rows, body)):
        if i and r.group != table.rows[i - 1].group:  # a rule between datasets
            lines.append("\\midrule")
        lines.append(" & ".join([tex(line[0])] + [c if c.startswith("\\textbf") else tex(c) for c in line[1:]]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def side_for(path: Path) -> Path:
    """``table4.yaml`` -> ``table4.paper.yaml`` beside it (a side file is returned as is)."""
    if path.name.endswith(".paper.yaml"):
        return path
    side = path.with_name(path.name[: -len(".yaml")] + ".paper.yaml")
    if not side.is_file():
        raise SweepError(f"{path}: no side file {side.name} with the paper's rows")
    return side


def sweep_results(sweep, source: str, runs_root: Path, wandb_path: Optional[str] = None) -> tuple[dict, str]:
    """({point id: {metric: value}}, a note saying where they came from) for one sweep."""
    if source == "wandb":
        try:
            results = wandb_results(sweep.name, sweep.points(), wandb_path)
        except Exception as e:  # noqa: BLE001 - no network, not logged in, unknown project
            raise SweepError(f"W&B API ({e}); --source wandb needs network access and `wandb login`") from e
        return results, f"Ours: W&B runs of group '{sweep.name}'."
    return local_results(runs_root, sweep.name, sweep.points()), f"Ours: run folders under {point_dir(runs_root, sweep.name, '')}."


def make_table(path: Path, source: str, runs_root: Path, wandb_path: Optional[str] = None) -> Table:
    side = load_side(side_for(Path(path)))
    sweep_path = side_sweep(side)
    results, note, shared = None, "", None
    if sweep_path:
        results, note = sweep_results(load_sweep(sweep_path), source, runs_root, wandb_path)
    extra = side_shared_sweep(side)
    if extra is not None:
        got, where = sweep_results(extra, source, runs_root, wandb_path)
        cols = [str(c) for c in side["shared_sweep"]["columns"]]
        shared = {k: v for k, v in got.get(extra.points()[0].id, {}).items() if k in cols}
        note = f"{note.rstrip('.')}; {', '.join(cols)}: {where[len('Ours: '):].rstrip('.')}{'' if shared else ' (no run)'}."
    return build_table(side, results, note, shared)


def write_outputs(table: Table, side_path: Path, out: Path) -> list[Path]:
    """``<out>/<paper>/<table>.md`` and ``.tex``, and ``.png`` when the side file has a ``plot``
    (:mod:`ablations.sweeps.plots`: the metric curves against the swept setting)."""
    from ablations.sweeps.plots import draw_curves
    from mfif.io import atomic_write_bytes

    stem = out / side_path.parent.name / side_path.name[: -len(".paper.yaml")]
    paths = [stem.with_suffix(".md"), stem.with_suffix(".tex")]
    atomic_write_bytes(paths[0], to_markdown(table).encode())
    atomic_write_bytes(paths[1], to_latex(table).encode())
    png = draw_curves(table, load_side(side_path), stem.with_suffix(".png"))
    return paths + ([png] if png is not None else [])


def log_tables_to_wandb(items: Sequence[tuple[str, object, Optional[Path]]], out: Path,
                        project: str = "mfif", entity: Optional[str] = None, run=None) -> None:
    """Log each ``(name, table, png)`` into one W&B run: ``<name>/table`` (a ``wandb.Table`` of
    the Markdown cells) and ``<name>/curves`` (the figure).

    Args:
        out: folder of the run files when a run is made here (mode: ``WANDB_MODE``, else
            offline as the training configs; :func:`ablations.sweeps.point_results.wandb_mode`).
        run: an existing ``wandb`` run to log into (it is not finished here).
    """
    import wandb

    from ablations.sweeps.point_results import wandb_mode

    own = run is None
    if own:
        os.environ.setdefault("WANDB_SILENT", "true")
        Path(out).mkdir(parents=True, exist_ok=True)
        run = wandb.init(project=project, entity=entity, job_type="tables", group="tables", mode=wandb_mode(),
                         dir=str(out), name="tables")
    try:
        for name, table, png in items:
            header, body = cells(table, lambda s: s)
            columns = ["row"] + [f"{m} {w}" for m, ws in header for w in ws]
            data = {f"{name}/table": wandb.Table(columns=columns, data=body)}
            if png is not None:
                data[f"{name}/curves"] = wandb.Image(str(png), caption=table.title)
            run.log(data)
    finally:
        if own:
            run.finish()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", help="sweep file or its .paper.yaml side file")
    p.add_argument("--all", action="store_true", help="every ablations/*/*.paper.yaml")
    p.add_argument("--source", choices=("local", "wandb"), default="local")
    p.add_argument("--runs-root", default=DEFAULT_RUNS_ROOT, help=f"where the runner put the runs (default {DEFAULT_RUNS_ROOT})")
    p.add_argument("--wandb-path", default=None, help="ENTITY/PROJECT for --source wandb (default: your entity, project mfif)")
    p.add_argument("--out", default="runs/tables", help="output folder: OUT/<paper>/<table>.md and .tex (and .png)")
    p.add_argument("--wandb", action="store_true",
                   help="also log every table and curve figure to one W&B run (offline unless WANDB_MODE says otherwise)")
    a = p.parse_args(argv)
    if bool(a.file) == a.all:
        p.error("give a sweep/side file or --all")
    files = sorted(ROOT.glob("ablations/*/*.paper.yaml")) if a.all else [Path(a.file)]
    failed, logged = 0, []
    for f in files:
        try:
            side_path = side_for(f)
            table = make_table(f, a.source, Path(a.runs_root), a.wandb_path)
        except (SweepError, OSError) as e:
            print(f"table error: {e}", file=sys.stderr)
            failed += 1
            continue
        paths = write_outputs(table, side_path, Path(a.out))
        if not a.all:
            print(to_markdown(table))
        print(f"wrote {', '.join(str(q) for q in paths[:-1])} and {paths[-1]}")
        png = paths[2] if len(paths) > 2 else None
        logged.append((f"{side_path.parent.name}/{side_path.name[: -len('.paper.yaml')]}", table, png))
    if a.wandb and logged:
        log_tables_to_wandb(logged, Path(a.out))
        print(f"logged {len(logged)} table(s) to W&B (run files under {Path(a.out) / 'wandb'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
