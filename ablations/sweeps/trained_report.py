"""The trained-results outputs: per paper ``trained.json``/``trained.md``/``learning_curve.png``, and the report.

:func:`write_paper_outputs` writes a paper's record (from :func:`ablations.sweeps.trained.run_paper`)
as JSON, as Markdown (one table in the paper's columns: ``cpu`` (ours) | ``init`` | ``average`` |
released weights | published images | printed; the main-column verdict; command, seed, wall time,
steps, steps/s, samples seen and the fraction of the paper's training samples) and draws the
learning curve (loss and validation metric against step, from each stage's Lightning
``csv/metrics.csv``). :func:`build_report` collects every ``OUT/<paper>/trained.json`` into one
Markdown file (``ablations/trained.md``) with the figures copied beside it
(``<report folder>/trained/<paper>_curve.png``, ``<paper>_<study>.png``).
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import shlex
from pathlib import Path
from typing import Optional, Sequence

CURVE = "learning_curve.png"
OUR_ROWS = ("cpu", "init", "average")


class ReportError(ValueError):
    """A report that cannot be built (missing or unreadable records); the message names the file."""


def _f(v, d: int = 4) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{d}f}"


def _minutes(s) -> str:
    return "–" if s is None else f"{float(s) / 60:.1f} min"


def row_values(rec: dict) -> dict:
    """``{row: {metric: value}}``: ours, init, average, the yardsticks, then ``printed`` (the printed values)."""
    out: dict = {}
    for c in rec["cells"]:
        out.setdefault(c["row"], {})[c["metric"]] = c["printed"] if c["row"] == "printed" else c["ours"]
    rank = lambda r: OUR_ROWS.index(r) if r in OUR_ROWS else (4 if r == "printed" else 3)  # noqa: E731
    return {k: out[k] for k in sorted(out, key=rank)}


def verdict(rec: dict) -> tuple[bool, str]:
    """Whether ``cpu`` beats ``init`` and ``average`` on the main column, and the sentence saying so."""
    from mfif.metrics import metric_spec

    vals, m = row_values(rec), rec["main"]
    cpu = (vals.get("cpu") or {}).get(m)
    if cpu is None:
        return False, f"`{m}`: no value for our model"
    key, parts, ok = metric_spec(m).rank_key, [], True
    for ref in ("init", "average"):
        r = (vals.get(ref) or {}).get(m)
        beats = r is not None and key(cpu) > key(r)
        ok &= beats
        parts.append(f"{'beats' if beats else '**does not beat**'} {ref} ({_f(r)})")
    return ok, f"`{m}`: cpu {_f(cpu)} " + ", ".join(parts)


def stage_figures(st: dict) -> dict:
    """Steps, steps/s (steps run in the recorded attempt / its wall time) and samples seen of a stage record."""
    steps = int(st.get("steps") or 0)
    ran = steps - int(st.get("resumed_from_step") or 0)
    rate = ran / float(st["seconds"]) if st.get("seconds") and ran > 0 else None
    return {"steps": steps, "steps_per_s": rate, "samples": steps * int(st["batch_size"])}


def _folders(rec: dict, out_name: str = "OUT") -> list:
    """``(folder, placeholder)`` pairs of a record, longest folder first (the repository itself: dropped)."""
    from ablations.sweeps.grid import ROOT

    names = (("data", "DATA"), ("weights", "WEIGHTS"), ("out", out_name), ("resumed_from", "OUT"))
    subs = [(rec.get(k), v) for k, v in names]
    return sorted([(str(a).rstrip("/"), b) for a, b in subs if a] + [(str(ROOT) + "/", "")], key=lambda t: -len(t[0]))


def redact(text: str, rec: dict, out_name: str = "OUT") -> str:
    """``text`` with the record's folders written as ``DATA``/``WEIGHTS``/``OUT`` (repository paths relative;
    ``out_name``: the placeholder of the record's ``--out``, ``OUT2`` for a ``--longer`` one)."""
    for a, b in _folders(rec, out_name):
        text = text.replace(a, b)
    return text


def portable(cmd: str, rec: dict, out_name: str = "OUT") -> str:
    """A recorded command as the report prints it: ``python``, repository-relative scripts, ``DATA``/``WEIGHTS``/``OUT``.

    The records keep the absolute folders of the machine that trained (a rerun compares its settings
    against them); the committed report names no machine's folders, only the placeholders its
    header defines (the folders of the ``--data``/``--weights``/``--out`` options).
    """
    import shlex

    words = shlex.split(cmd)
    if words and Path(words[0]).name.startswith("python"):
        words[0] = "python"  # the interpreter of the machine that trained (a venv path)
    return shlex.join(words[:1] + [redact(w, rec, out_name) for w in words[1:]])


def training_lines(rec: dict, out_name: str = "OUT") -> list:
    """Command, seed, wall time, steps, steps/s, samples seen per stage, and the fraction of the paper's samples."""
    lines = []
    for st in rec["stages"]:
        fig = stage_figures(st)
        resumed = f" (resumed at step {st['resumed_from_step']}" if st.get("resumed_from_step") else ""
        if resumed and st.get("continued_from"):  # --resume-from: the steps before came from that finished run
            resumed += f" of `{redact(st['continued_from'], rec, out_name)}`, continued"
        resumed += ")" if resumed else ""
        reused = "; reused, trained by an earlier call" if st.get("reused") else ""
        lines += [f"- stage `{st['stage']}`: `{portable(st['command'], rec, out_name)}`",
                  f"  seed {st['seed']}, wall {_minutes(st.get('seconds'))} (training, test and report{reused}), "
                  f"{fig['steps']} steps{resumed}, {_f(fig['steps_per_s'], 3)} steps/s, "
                  f"{fig['samples']:,} samples seen (batch {st['batch_size']})"]
    seen = stage_figures(rec["stages"][-1])["samples"]
    lines.append(f"- the scored model saw {seen:,} samples = **{seen / rec['paper_samples']:.2%}** of the paper's "
                 f"{rec['paper_samples']:,} ({rec['samples_note']}); profile `{rec['profile']}`, budget {rec['budget']:g}")
    return lines


def study_steps(command: str) -> str:
    """The ``trainer.max_steps=N`` a study's command sets (its budget), else "the profile's full length"."""
    steps = [a for a in shlex.split(command) if a.startswith("trainer.max_steps=")]
    return f"`{steps[-1]}`" if steps else "the profile's full length"


def paper_markdown(rec: dict, images: str = "", level: int = 2) -> str:
    """A paper's section; ``images`` prefixes the figure names (``trained/<paper>_`` in the report)."""
    from mfif.io import markdown_table

    h = "#" * level
    vals = row_values(rec)
    body = [[f"**{r}**" if r == "cpu" else r] + [_f(v.get(m)) for m in rec["metrics"]] for r, v in vals.items()]
    ok, sentence = verdict(rec)
    lines = [f"{h} {rec['paper']}: {rec['table']} on {rec['dataset']}", "", rec.get("citation") or "", "",
             markdown_table(["row"] + rec["metrics"], body).rstrip("\n"), "",
             f"Main column {sentence}" + ("." if ok else " (see the notes)."), ""]
    cpu, printed = vals.get("cpu") or {}, vals.get("printed") or {}
    if cpu.get(rec["main"]) is not None and printed.get(rec["main"]):
        diff = (cpu[rec["main"]] - printed[rec["main"]]) / abs(printed[rec["main"]])
        lines += [f"Against the printed row '{rec['row']}': {diff:+.2%} on `{rec['main']}`.", ""]
    lines += ["Rows: `cpu` our model trained here; `init` the same network untrained (same seed, 0 steps); "
              "`average` the mean of the sources; `released` the authors' weights and `published:<M>` their "
              "published fused images (the same scenes); `printed` the paper's row. Our three rows are scored "
              "by run.py's report on the float output, the yardsticks on their saved 8-bit images.", ""]
    lines += training_lines(rec) + [""]
    lines += [f"- {n}" for n in rec.get("notes") or []]
    if rec.get("unscored"):
        lines.append(f"- not scored (metric weight files missing): {', '.join(rec['unscored'])}")
    lines += ["", f"![learning curve of {rec['paper']}]({images}{CURVE if not images else 'curve.png'})", ""]
    for name, st in (rec.get("studies") or {}).items():
        lines += [f"{h}# {rec['paper']}: study {name} ({st['kind']})", "", f"`{portable(st['command'], rec)}`", ""]
        lines += [f"- {st['note']}"] if st.get("note") else []
        if st.get("kind") == "train":  # each point trained from scratch: say how long (issue 24: state the budget)
            lines.append(f"- every point trains from scratch with profile `{rec['profile']}` at budget "
                         f"{st.get('budget', rec['budget']):g} of its steps ({study_steps(st['command'])})")
        lines += ["", redact(st.get("table_md") or "(no table)", rec), ""]
        if st.get("png"):
            lines += [f"![{name}]({images}{name}.png)" if images else f"![{name}]({st['png']})", ""]
    return "\n".join(lines)


def longer_markdown(base: dict, rec: dict, curve: str = "", level: int = 2) -> str:
    """A paper's second point of its learning curve: the ``cpu`` row of ``rec`` (a ``--longer`` record,
    the same paper at another budget) beside ``base``'s and the printed row, in the paper's columns."""
    from mfif.io import markdown_table

    h, b_vals, l_vals = "#" * (level + 1), row_values(base), row_values(rec)
    steps = lambda r: stage_figures(r["stages"][-1])["steps"]  # noqa: E731
    rows = [(f"cpu, budget {base['budget']:g} ({steps(base):,} steps)", b_vals.get("cpu") or {}),
            (f"**cpu, budget {rec['budget']:g} ({steps(rec):,} steps)**", l_vals.get("cpu") or {}),
            ("printed", b_vals.get("printed") or {})]
    cmd = (f"python ablations/trained.py --paper {rec['paper']} --budget {rec['budget']:g}"
           + (" --resume-from OUT" if rec.get("resumed_from") else "") + " --data DATA --weights WEIGHTS --out OUT2")
    lines = [f"{h} {rec['paper']}: a longer run (budget {rec['budget']:g})", "", f"`{cmd}`", "",
             markdown_table(["row"] + base["metrics"], [[r] + [_f(v.get(m)) for m in base["metrics"]] for r, v in rows]).rstrip("\n"),
             ""]
    m, one, two, pr = base["main"], rows[0][1].get(base["main"]), rows[1][1].get(base["main"]), rows[2][1].get(base["main"])
    if one is not None and two is not None:
        gap = (f"; against the printed row {(one - pr) / abs(pr):+.2%} at budget {base['budget']:g}, "
               f"{(two - pr) / abs(pr):+.2%} at budget {rec['budget']:g}") if pr else ""
        lines += [f"On `{m}`: {one:.4f} -> {two:.4f} ({(two - one) / abs(one):+.2%}){gap}.", ""]
    lines += training_lines(rec, "OUT2") + [""]
    return "\n".join(lines + ([f"![learning curve of {rec['paper']} at budget {rec['budget']:g}]({curve})", ""] if curve else []))


def read_curves(csv_path: Path) -> dict:
    """``{column: ([steps], [values])}`` of Lightning's CSV log (empty cells skipped)."""
    out: dict = {}
    if not csv_path.is_file():
        return out
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if k in ("epoch", "step") or not v:
                    continue
                try:
                    x, y = int(float(row["step"])), float(v)
                except (TypeError, ValueError, KeyError):
                    continue
                if math.isfinite(y):
                    out.setdefault(k, ([], []))
                    out[k][0].append(x)
                    out[k][1].append(y)
    return out


def _merged(curves: list) -> dict:
    """Several logs of one run (a finished run, then its continuation) as one ``{column: ([steps], [values])}``."""
    out: dict = {}
    for c in curves:
        for k, (xs, ys) in c.items():
            out.setdefault(k, ([], []))
            out[k][0].extend(xs)
            out[k][1].extend(ys)
    return out


def draw_learning_curve(stage_dirs: dict, main: str, png: Path) -> Optional[Path]:
    """One row per stage: train/val loss against step, and the validation metric (``val/<main>``,
    else the first ``val/`` metric) against step. None when no stage logged anything.

    ``stage_dirs``: ``{stage: [run folders]}``, one folder, or two for a run continued from another
    (``--resume-from``: the finished run's log, then the continuation's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mfif.io import atomic_write_bytes

    logs = {name: _merged([read_curves(Path(d) / "csv" / "metrics.csv") for d in ds]) for name, ds in stage_dirs.items()}
    logs = {k: v for k, v in logs.items() if v}
    if not logs:
        return None
    fig, axes = plt.subplots(len(logs), 2, figsize=(9, 3.2 * len(logs)), squeeze=False)
    for (name, cols), (ax_l, ax_m) in zip(logs.items(), axes):
        for k in ("train/loss", "val/loss"):
            if k in cols:
                ax_l.plot(*cols[k], marker="o" if k.startswith("val") else None, ms=3, label=k)
        ax_l.set(title=f"{name}: loss{'' if ax_l.lines else ' (none logged)'}", xlabel="step")
        metric = f"val/{main}" if f"val/{main}" in cols else next((k for k in cols if k.startswith("val/") and k != "val/loss"), None)
        if metric:
            ax_m.plot(*cols[metric], marker="o", ms=3, label=metric)
        ax_m.set(title=f"{name}: {metric or 'no validation metric'}", xlabel="step")
        for ax in (ax_l, ax_m):
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(png, buf.getvalue())
    return png


def write_paper_outputs(rec: dict, folder: Path) -> None:
    """``trained.json``, ``learning_curve.png`` and ``trained.md`` of one paper, in ``folder``."""
    from mfif.io import atomic_write_bytes

    draw_learning_curve({st["stage"]: [Path(d) for d in (st.get("continued_from"), folder / st["stage"]) if d]
                         for st in rec["stages"]}, rec["main"], folder / CURVE)
    atomic_write_bytes(folder / "trained.json", (json.dumps(rec, indent=1, default=str) + "\n").encode())
    atomic_write_bytes(folder / "trained.md", (paper_markdown(rec, level=1) + "\n").encode())


def summary_rows(recs: list) -> list:
    out = []
    for rec in recs:
        vals, m = row_values(rec), rec["main"]
        last = rec["stages"][-1]
        fig = stage_figures(last)
        out.append([rec["paper"], f"{rec['table']} ({rec['dataset']})", f"`{m}`"]
                   + [_f((vals.get(r) or {}).get(m)) for r in ("cpu", "init", "average", "released", "printed")]
                   + ["yes" if verdict(rec)[0] else "**no**", fig["steps"], _f(fig["steps_per_s"], 3),
                      f"{fig['samples'] / rec['paper_samples']:.2%}", _minutes(sum(float(s.get("seconds") or 0) for s in rec["stages"]))])
    return out


def not_run_lines(recs: list) -> list:
    """Markdown naming every paper and study of the tables with no record yet, with the command that runs it.

    The report says what it does not hold (issue 24: "where budget keeps us short, say how far"),
    instead of reading as complete.
    """
    from ablations.sweeps.trained_specs import PAPERS, STUDIES

    have = {r["paper"] for r in recs}
    done = {name for r in recs for name in (r.get("studies") or {})}
    papers = [p for p in PAPERS if p not in have]
    studies = [n for n in STUDIES if n not in done]
    if not papers and not studies:
        return []
    cmd = "python ablations/trained.py --data DATA --weights WEIGHTS --out OUT"
    lines = ["**Not run here yet** (each cpu run costs 30-60 min of this 2-core machine; the commands exist "
             "and are tested on fixtures):", ""]
    lines += [f"- {p}: `{cmd} --paper {p}`" for p in papers]
    lines += [f"- {n} ({STUDIES[n].paper} {STUDIES[n].sweep}, {STUDIES[n].kind}): "
              f"`{cmd} --paper {STUDIES[n].paper} --study {n}`" for n in studies]
    return lines + [""]


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (the report names no machine's folders)."""
    from ablations.sweeps.grid import ROOT

    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return Path(path).name


def _read(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: unreadable ({e})") from e


def build_report(out: Path, report: Path, longer: Sequence[Path] = ()) -> Path:
    """``report`` from every ``out/<paper>/trained.json``, figures copied to ``<report folder>/trained/``.

    ``longer``: folders of runs at another ``--budget`` (``--longer``); each ``<paper>/trained.json``
    there is shown in that paper's section as a second point of its learning curve.

    Raises:
        ReportError: no record, an unreadable one, or a longer record whose paper has none in ``out``
            or whose budget equals it.
    """
    from mfif.io import atomic_write_bytes, markdown_table

    paths = sorted(Path(out).glob("*/trained.json"))
    if not paths:
        raise ReportError(f"--out {out}: no <paper>/trained.json to report (train first)")
    recs = [_read(p) for p in paths]
    more: dict = {}
    for folder in longer:
        found = sorted(Path(folder).glob("*/trained.json"))
        if not found:
            raise ReportError(f"--longer {folder}: no <paper>/trained.json there")
        for p in found:
            rec = _read(p)
            base = next((r for r in recs if r["paper"] == rec["paper"]), None)
            if base is None or base["budget"] == rec["budget"]:
                raise ReportError(f"{p}: " + (f"{rec['paper']} has no record in --out {out} to compare with" if base is None
                                              else f"budget {rec['budget']:g}, the same as --out {out}'s"))
            more.setdefault(rec["paper"], []).append((rec, p.parent / CURVE))
    figs = Path(report).parent / Path(report).stem
    head = ["paper", "table", "main", "cpu", "init", "average", "released", "printed", "beats both", "steps",
            "steps/s", "of paper's samples", "wall"]
    lines = ["# Trained here: every paper's model trained from scratch on this machine", "",
             f"Generated {_dt.date.today().isoformat()} by `python ablations/trained.py --out OUT --report {_shown(report)}"
             f"{' --longer OUT2' if more else ''}` "
             "from the records the training command wrote; checkpoints are not committed, the command recreates "
             "them (`make trained DATA=... WEIGHTS=...`). In the commands below `DATA`, `WEIGHTS` and `OUT` stand "
             "for the folders given to `--data`, `--weights` and `--out`"
             + (" (`OUT2`: `--out` of a longer run, shown by `--longer`)." if more else "."), "",
             markdown_table(head, summary_rows(recs)).rstrip("\n"), ""]
    lines += not_run_lines(recs)
    for rec, p in zip(recs, paths):
        prefix = f"{figs.name}/{rec['paper']}_"
        copies = {p.parent / CURVE: f"{rec['paper']}_curve.png"}
        copies.update({p.parent / st["png"]: f"{rec['paper']}_{name}.png" for name, st in (rec.get("studies") or {}).items()
                       if st.get("png")})
        for src, name in copies.items():
            if src.is_file():
                atomic_write_bytes(figs / name, src.read_bytes())
        lines += [paper_markdown(rec, images=prefix), ""]
        for longer_rec, curve in more.get(rec["paper"], []):
            name = f"{rec['paper']}_curve_budget{longer_rec['budget']:g}.png"
            if curve.is_file():
                atomic_write_bytes(figs / name, curve.read_bytes())
            lines += [longer_markdown(rec, longer_rec, f"{figs.name}/{name}" if curve.is_file() else ""), ""]
    atomic_write_bytes(Path(report), "\n".join(lines).encode())
    return Path(report)
