"""Paper parity: regenerate the papers' printed table rows and compare them cell by cell.

Usage::

    python ablations/parity.py --data DIR --weights DIR [--paper P] [--out DIR]
    make parity DATA=DIR WEIGHTS=DIR

``--data`` is laid out like the project's test-data folder (``lytro/``, ``mffw/``, ``mfi_whu/``,
``grayscale/``, ``gacn_test26/`` and ``baselines/<set>/<method>/`` with published fused images);
``--weights`` holds the authors' released files (``gacn_official.pkl``, ``ufa_official.pth``,
``sesf_official.pkl``).

Which rows are regenerated, and how, is read from the side files ``ablations/<paper>/*.paper.yaml``:
every ``rows``/``baselines`` entry with a ``parity`` field is one regenerable printed row:

* ``parity: {method: gacn, weights: gacn_official.pkl, dataset: lytro[, overrides: {...}]}``: the
  released weights loaded by the method's own converter and run through
  :meth:`FusionModule.fuse` exactly as ``experiments/fuse.py`` runs them (whole image, colour
  handled by the module's colour policy), one PNG per scene cached under
  ``OUT/fused/<method>/<dataset>/`` (a rerun only rescores);
* ``parity: {published: cnn, dataset: lytro}``: the published fused images
  ``DATA/baselines/<dataset>/cnn/<scene>.png``, read as they are;
* an optional ``scored: <collection>/<NAME>`` in either form names the images the paper itself
  scored when they are not the ones above (:data:`SCORED`): ``mfif_benchmark/SESF``, X. Zhang's
  MFIF benchmark (TPAMI 2021, repository xingchenzhang/MFIF, folder ``fused_images``, files
  ``<set>_NN_<METHOD>.jpg``; MSASN's comparison rows), or ``ufa_published/lytro``, UFA-Fuse's own
  published results (ReckonerInheritor/UFA-Fusion ``Code/result/Lytro``, ``color_lytro_NN.png``).
  When ``--data`` has the collection's folder, those images are scored for the row instead, and
  ``parity.md`` says so; without it the row is regenerated as above (the difference is then the
  images', ``ablations/README.md``);
* ``parity: {scored: ufa_published/lytro, dataset: lytro}`` alone: a row scored only from those
  images, left out (with a note) when ``--data`` lacks them;
* ``parity`` may be a list of such entries: the row is regenerated in several ways, each entry
  after the first with its own ``label`` (UFA-Fuse Table V's "Proposed": the released weights and
  the authors' published images); an entry's optional ``note`` (one sentence) goes to ``parity.md``.

Each side-file column that is a registered metric (``mfif.metrics``) is a cell: that metric,
averaged over the dataset's scenes, against the printed value. The column names *are* the
metric variants each paper printed (``ablations/README.md``, "Metric conventions per paper"),
so no per-row adjustment exists here. Columns that are not metrics (``time``, ``arank``) are
not cells. Writes ``OUT/parity.csv`` (``paper,table,dataset,row,metric,ours,printed,rel_diff``)
and ``OUT/parity.md`` (per table ours / printed / diff, cells within 1 % and 2 % counted, an
overall summary). Progress lines with an ETA go to stderr. Bad input (a missing folder or
weights file, an unknown ``--paper``) stops with a one-line error, exit code 2, before anything
is written.
"""
from __future__ import annotations

import argparse
import glob
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from ablations.sweeps.grid import ROOT, SweepError, load_side
from ablations.sweeps.tables import _num  # a printed value as a float (None: not reported)

#: dataset name -> (sources folder, folder of published fused images) under ``--data``
DATASETS = {
    "lytro": ("lytro", "baselines/lytro"),
    "mffw": ("mffw", None),
    "mfi_whu": ("mfi_whu", None),
    "grayscale": ("grayscale", None),
    "grayscale10": ("baselines/grayscale10/sources", "baselines/grayscale10"),
    "gacn_test26": ("gacn_test26", None),
}
#: ``scored: <collection>/<NAME>`` -> (folder under ``--data``, file stem); ``{name}`` is NAME,
#: ``{scene}`` the scene with ``-`` written ``_`` (our ``lytro-01`` is ``lytro_01`` in both
#: collections; ``mffw_01``, ``MFI-WHU_01`` are kept). Files are kept as published, any extension.
SCORED = {
    # X. Zhang's MFIF benchmark, xingchenzhang/MFIF fused_images/: lytro_01_CNN.jpg
    "mfif_benchmark": ("baselines/mfif_benchmark", "{scene}_{name}"),
    # UFA-Fuse's published outputs, ReckonerInheritor/UFA-Fusion Code/result/Lytro/: color_lytro_01.png
    "ufa_published": ("baselines/ufa_published/{name}", "color_{scene}"),
}
TOLERANCES = (0.01, 0.02)  # relative tolerances counted in the summary (issue 15: 1 % and 2 %)
CSV_HEADER = ["paper", "table", "dataset", "row", "metric", "ours", "printed", "rel_diff"]


class ParityError(ValueError):
    """Bad parity input; the message names the folder, file, side file or paper."""


@dataclass
class ParityRow:
    """One printed row that can be regenerated (from a side file's ``parity`` field)."""

    paper: str
    table: str
    label: str
    dataset: str
    metrics: list  # registered metric columns, side-file order
    printed: dict
    method: Optional[str] = None
    weights: Optional[str] = None
    published: Optional[str] = None
    overrides: dict = field(default_factory=dict)
    scored: Optional[str] = None  # "<collection>/<METHOD>": the images the paper scored (SCORED)
    use_scored: bool = False  # set by use_scored_images() when --data has them
    note: Optional[str] = None  # the entry's ``note``: one sentence for parity.md

    @property
    def available(self) -> bool:
        """False for a scored-only row whose images are not in ``--data`` (nothing to score)."""
        return self.use_scored or bool(self.method or self.published)

    @property
    def scored_folder(self) -> str:
        """The folder of this row's ``scored`` images under ``--data``."""
        collection, name = self.scored.split("/")
        return SCORED[collection][0].format(name=name)

    @property
    def source_key(self) -> str:
        """Folder name of this row's fused images (rows sharing it are fused and scored once)."""
        if self.use_scored:
            return f"scored/{self.scored}/{self.dataset}"
        if self.published:
            return f"published/{self.published}/{self.dataset}"
        tag = "".join(f"_{k}={v}" for k, v in sorted(self.overrides.items()))
        return f"{self.method}{re.sub(r'[^A-Za-z0-9._=-]+', '-', tag)}/{self.dataset}"


def parity_rows(papers: Optional[Sequence[str]] = None, root: Path = ROOT) -> list[ParityRow]:
    """Every side-file row with a ``parity`` field, in paper/table/file order.

    Raises:
        ParityError: a malformed ``parity`` field, an unknown dataset or an unknown paper.
    """
    from mfif.metrics import metric_spec

    found = []
    for side_path in sorted(Path(root).glob("ablations/*/*.paper.yaml")):
        paper, table = side_path.parent.name, side_path.name[: -len(".paper.yaml")]
        try:
            side = load_side(side_path)
        except SweepError as e:
            raise ParityError(str(e)) from e
        metrics = []
        for c in side["columns"]:
            try:
                metric_spec(str(c))
                metrics.append(str(c))
            except KeyError:
                continue  # time, arank: not a parity cell
        labels: set = set()
        for r in list(side["rows"]) + list(side.get("baselines") or []):
            entries = r.get("parity")
            if entries is None:
                continue
            entries = entries if isinstance(entries, list) else [entries]
            for k, p in enumerate(entries):
                where = f"{side_path}: row '{r['label']}': parity" + (f" entry {k + 1}" if len(entries) > 1 else "")
                row = _parity_entry(p, where, k, str(r["label"]))
                if row.label in labels:
                    raise ParityError(f"{where}: label '{row.label}' is used twice in this table; give each entry its own 'label'")
                labels.add(row.label)
                row.paper, row.table, row.metrics, row.printed = paper, table, metrics, dict(r.get("paper") or {})
                found.append(row)
    known = sorted({r.paper for r in found})
    if papers:
        unknown = [p for p in papers if p not in known]
        if unknown:
            raise ParityError(f"--paper {', '.join(unknown)}: no regenerable rows; papers with parity rows: {known}")
        found = [r for r in found if r.paper in papers]
    return found


def _parity_entry(p, where: str, index: int, row_label: str) -> ParityRow:
    """One ``parity`` entry of a side-file row, checked (paper, table, metrics, printed filled by the caller)."""
    if not isinstance(p, dict):
        raise ParityError(f"{where} must be a mapping ({{method: M, weights: FILE, dataset: D}}, "
                          "{published: M, dataset: D} or {scored: C/NAME, dataset: D}) or a list of them")
    scored = p.get("scored")
    if scored is not None and (not isinstance(scored, str) or scored.count("/") != 1
                               or scored.split("/")[0] not in SCORED or not scored.split("/")[1]):
        raise ParityError(f"{where}: scored must be '<collection>/<NAME>' with a collection in "
                          f"{sorted(SCORED)}, got {scored!r}")
    if p.get("method") and p.get("published") or not (p.get("method") or p.get("published") or scored):
        raise ParityError(f"{where} must be {{method: M, weights: FILE, dataset: D}}, {{published: M, dataset: D}} "
                          "or {scored: C/NAME, dataset: D}")
    if p.get("dataset") not in DATASETS:
        raise ParityError(f"{where}: dataset '{p.get('dataset')}' is not one of {sorted(DATASETS)}")
    if p.get("method") and not p.get("weights"):
        raise ParityError(f"{where}: 'weights' (a file name in --weights) is required with 'method'")
    if p.get("published") and DATASETS[p["dataset"]][1] is None:
        raise ParityError(f"{where}: no published images exist for dataset '{p['dataset']}'")
    if index > 0 and not p.get("label"):
        raise ParityError(f"{where}: every entry after the first needs its own 'label'")
    return ParityRow("", "", str(p.get("label") or row_label), p["dataset"], [], {}, p.get("method"), p.get("weights"),
                     p.get("published"), dict(p.get("overrides") or {}), scored, note=p.get("note"))


def use_scored_images(rows: Sequence[ParityRow], data: Path) -> list[str]:
    """Mark the rows whose ``scored`` collection is in ``data``; returns one note per such row."""
    notes = []
    for r in rows:
        if r.scored and (data / r.scored_folder).is_dir():
            r.use_scored = True
            collection, name = r.scored.split("/")
            stem = SCORED[collection][1].format(scene="<scene>", name=name)
            how = "not regenerated" if r.method or r.published else "the authors' images"
            notes.append(f"{r.paper} {r.table} '{r.label}' ({r.dataset}): scored on the images the paper scored, "
                         f"{r.scored_folder}/{stem}.* ({how})")
    return notes


def scored_image(folder: Path, scene: str, name: str, pattern: str = "{scene}_{name}") -> Path:
    """The published file of ``scene`` in ``folder``: stem ``pattern`` (:data:`SCORED`), any
    extension, the scene as it is or with ``-`` written ``_`` (``lytro-01`` -> ``lytro_01``)."""
    for sc in dict.fromkeys((scene, scene.replace("-", "_"))):
        stem = pattern.format(scene=sc, name=name)
        found = sorted(folder.glob(f"{glob.escape(stem)}.*"))
        if found:
            return found[0]
    raise ParityError(f"--data: {folder} has no image {pattern.format(scene=scene.replace('-', '_'), name=name)}.* "
                      f"for scene '{scene}'")


def link_scored(row: ParityRow, scenes: list, data: Path, out_dir: Path) -> None:
    """``out_dir/<scene>.<ext>``: a link to (or, where links fail, a copy of) each scored image."""
    import shutil

    collection, name = row.scored.split("/")
    out_dir.mkdir(parents=True, exist_ok=True)
    for s in scenes:
        src = scored_image(data / row.scored_folder, s.name, name, SCORED[collection][1])
        dst = out_dir / f"{s.name}{src.suffix}"
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        try:
            dst.symlink_to(src.resolve())
        except OSError:
            shutil.copyfile(src, dst)


def check_inputs(rows: Sequence[ParityRow], data: Path, weights: Path) -> None:
    """Every folder and weights file the rows need exists (before anything is run or written)."""
    if not data.is_dir():
        raise ParityError(f"--data {data}: no such folder")
    if not weights.is_dir():
        raise ParityError(f"--weights {weights}: no such folder")
    for r in rows:
        src, pub = DATASETS[r.dataset]
        # scored images replace the regeneration (each file is checked when linked); the scenes
        # still come from the sources folder
        need = [data / src] + ([data / pub / r.published] if r.published and not r.use_scored else [])
        for folder in need:
            if not folder.is_dir():
                raise ParityError(f"--data {data}: missing folder {folder.relative_to(data)} (needed by {r.paper} {r.table} '{r.label}')")
        if r.weights and not r.use_scored and not (weights / r.weights).is_file():
            raise ParityError(f"--weights {weights}: missing file {r.weights} (needed by {r.paper} {r.table} '{r.label}')")
        if not r.available:  # a scored-only row without its images: nothing to score (run() skips it)
            continue
        if r.use_scored:  # every scene's scored image, before anything is written
            from mfif.io import BenchmarkError
            from mfif.scenes import discover_scenes

            collection, name = r.scored.split("/")
            try:
                scenes = discover_scenes(data / src)
            except BenchmarkError as e:
                raise ParityError(f"--data {data}: {e}") from e
            for scene in scenes:
                if len(scene.sources) == 2:
                    scored_image(data / r.scored_folder, scene.name, name, SCORED[collection][1])


class Progress:
    """``[parity] done/total what  elapsed  ETA`` lines on stderr (ETA from the mean time per step)."""

    def __init__(self, total: int, say: Callable[[str], None]):
        self.total, self.done, self.t0, self.say = max(total, 1), 0, time.monotonic(), say

    def step(self, what: str) -> None:
        self.done += 1
        el = time.monotonic() - self.t0
        eta = el / self.done * (self.total - self.done)
        self.say(f"[parity] {self.done}/{self.total} {what}  elapsed {el / 60:.1f} min  ETA {eta / 60:.1f} min")


def method_available(name: str) -> bool:
    from mfif import registry
    from mfif.config import CONFIG_DIR

    return name in registry.methods() and (Path(CONFIG_DIR) / f"{name}.yaml").is_file()


def fuse_folder(row: ParityRow, scenes: list, out_dir: Path, weights: Path, progress: Progress) -> None:
    """Fuse every scene without a cached ``<scene>.png`` in ``out_dir`` with the row's released model."""
    from experiments.fuse import fuse_stack, load_module, load_sources
    from mfif.io import save_image

    todo = [s for s in scenes if not (out_dir / f"{s.name}.png").is_file()]
    if not todo:
        return
    module = load_module(None, row.method, str(weights / row.weights), [f"{k}={v}" for k, v in row.overrides.items()])
    for s in todo:
        fused, _ = fuse_stack(module, load_sources(list(s.sources)))
        save_image(fused[0], out_dir / f"{s.name}.png")
        progress.step(f"fused {row.source_key}/{s.name}")


def run(rows: Sequence[ParityRow], data: Path, weights: Path, out: Path,
        say: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> list[dict]:
    """Fuse (released models, cached under ``out/fused``) and score every row.

    Args:
        rows: from :func:`parity_rows`, already checked by :func:`check_inputs`.
        data: the test-data folder; weights: the released-weights folder; out: output folder.
        say: receives the progress lines.

    Returns:
        One dict per cell with the keys of :data:`CSV_HEADER`; ``ours`` is the mean over the
        dataset's two-source scenes, ``rel_diff`` = (ours - printed) / |printed|.
    """
    import torch

    from mfif.metrics import build_metric
    from mfif.metrics.evaluation import score_folder
    from mfif.scenes import discover_scenes

    rows = [r for r in rows if r.available]  # scored-only rows whose images --data lacks
    groups: dict[str, list[ParityRow]] = {}
    for r in rows:
        groups.setdefault(r.source_key, []).append(r)
    scenes = {d: discover_scenes(data / DATASETS[d][0]) for d in {r.dataset for r in rows}}
    for d in scenes:  # multi-source sets (the 3-source `toy`) are outside every printed table's pairs
        scenes[d] = [s for s in scenes[d] if len(s.sources) == 2]
    todo_fuse = sum(sum(not (out / "fused" / k / f"{s.name}.png").is_file() for s in scenes[g[0].dataset])
                    for k, g in groups.items() if g[0].method and not g[0].use_scored)
    progress = Progress(todo_fuse + sum(len(scenes[g[0].dataset]) for g in groups.values()), say)
    means: dict[str, dict] = {}
    with torch.inference_mode():
        for key, group in groups.items():
            first = group[0]
            if first.use_scored:
                folder = out / key
                link_scored(first, scenes[first.dataset], data, folder)
            elif first.method:
                folder = out / "fused" / key
                fuse_folder(first, scenes[first.dataset], folder, weights, progress)
            else:
                folder = data / DATASETS[first.dataset][1] / first.published
            names = list(dict.fromkeys(m for r in group for m in r.metrics))
            metrics = {n: build_metric(n) for n in names}

            n_scenes, scored = len(scenes[first.dataset]), []

            def tick(_line: str, key=key, n=n_scenes, scored=scored) -> None:
                scored.append(1)
                progress.step(f"scored {key} scene {len(scored)}/{n}")

            per_scene = score_folder(folder, scenes[first.dataset], names, "cpu", metrics, tick)
            means[key] = {n: sum(v[n] for v in per_scene.values()) / len(per_scene) for n in names}
    cells = []
    for r in rows:
        for m in r.metrics:
            printed = _num(r.printed.get(m))
            if printed is None:
                continue
            ours = means[r.source_key][m]
            rel = (ours - printed) / abs(printed) if printed != 0 else math.nan
            cells.append(dict(paper=r.paper, table=r.table, dataset=r.dataset, row=r.label, metric=m,
                              ours=ours, printed=printed, rel_diff=rel))
    return cells


def within(cells: Sequence[dict], tol: float) -> int:
    return sum(1 for c in cells if math.isfinite(c["rel_diff"]) and abs(c["rel_diff"]) <= tol)


def to_markdown(cells: Sequence[dict], notes: Sequence[str] = ()) -> str:
    """``parity.md``: the overall summary, then one ours / printed / diff table per paper table."""
    tables = list(dict.fromkeys((c["paper"], c["table"]) for c in cells))
    t1, t2 = TOLERANCES
    head = ["table", "cells", f"within {t1:.0%}", f"within {t2:.0%}"]
    summary = []
    for pt in tables:
        cs = [c for c in cells if (c["paper"], c["table"]) == pt]
        summary.append([f"{pt[0]} {pt[1]}", len(cs), within(cs, t1), within(cs, t2)])
    summary.append(["**all**", len(cells), within(cells, t1), within(cells, t2)])
    lines = ["# Paper parity: regenerated rows vs the printed values", "",
             "Each cell: ours / printed (relative difference). Regenerate: `make parity DATA=<data dir> WEIGHTS=<weights dir>`.", ""]
    lines += _md(head, summary) + [""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    for paper, table in tables:
        cs = [c for c in cells if (c["paper"], c["table"]) == (paper, table)]
        metrics = list(dict.fromkeys(c["metric"] for c in cs))
        lines += [f"## {paper} {table}", ""]
        body = []
        for label, ds in dict.fromkeys((c["row"], c["dataset"]) for c in cs):
            by = {c["metric"]: c for c in cs if (c["row"], c["dataset"]) == (label, ds)}
            body.append([label, ds] + [_cell(by.get(m)) for m in metrics])
        lines += _md(["row", "dataset"] + metrics, body)
        lines += ["", f"{within(cs, t1)} of {len(cs)} cells within {t1:.0%}, {within(cs, t2)} within {t2:.0%}.", ""]
    return "\n".join(lines)


def _cell(c: Optional[dict]) -> str:
    if c is None:
        return "–"
    d = f"{c['rel_diff']:+.2%}" if math.isfinite(c["rel_diff"]) else "n/a"
    return f"{c['ours']:.4f} / {c['printed']:.4f} ({d})"


def _md(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    from mfif.io import markdown_table

    return markdown_table(header, rows).rstrip("\n").split("\n")


def write_outputs(cells: Sequence[dict], out: Path, notes: Sequence[str] = ()) -> tuple[Path, Path]:
    from mfif.io import atomic_write_bytes, write_csv

    csv_path, md_path = out / "parity.csv", out / "parity.md"
    fmt = lambda v: f"{v:.6g}" if isinstance(v, float) else v  # noqa: E731
    write_csv(csv_path, CSV_HEADER, [[fmt(c[k]) for k in CSV_HEADER] for c in cells])
    atomic_write_bytes(md_path, to_markdown(cells, notes).encode())
    return csv_path, md_path


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--data", required=True, help="test-data folder (lytro/, mffw/, mfi_whu/, grayscale/, gacn_test26/, baselines/)")
    p.add_argument("--weights", required=True, help="folder with the released weights files")
    p.add_argument("--paper", action="append", help="only this paper's tables (repeatable; default: every paper)")
    p.add_argument("--out", default="runs/parity", help="output folder: parity.csv, parity.md, fused/ cache (default runs/parity)")
    a = p.parse_args(argv)
    t0, c0 = time.monotonic(), time.process_time()
    try:
        rows = parity_rows(a.paper)
        data, weights, out = Path(a.data), Path(a.weights), Path(a.out)
        scored_notes = use_scored_images(rows, data) if data.is_dir() else []
        absent = [r for r in rows if not r.available]
        rows = [r for r in rows if r.available]
        scored_notes += [f"not run ({r.scored_folder} not in --data): {r.paper} {r.table} '{r.label}'" for r in absent]
        scored_notes += [f"{r.paper} {r.table} '{r.label}': {r.note}" for r in rows if r.note]
        check_inputs(rows, data, weights)
        if out.exists() and not out.is_dir():
            raise ParityError(f"--out {out}: exists and is not a folder")
    except ParityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    notes = list(scored_notes)
    missing = sorted({r.method for r in rows if r.method and not r.use_scored and not method_available(r.method)})
    if missing:  # a method not (yet) in this checkout: its rows are reported, not guessed
        notes.append(f"not run (method not available in this checkout): {', '.join(missing)}")
        print(f"warning: {notes[-1]}", file=sys.stderr)
        rows = [r for r in rows if r.use_scored or r.method not in missing]
    from experiments.fuse import FuseError
    from mfif.io import BenchmarkError
    from mfif.metrics.evaluation import EvaluationError

    try:  # an unreadable or mismatched image met during the run: no parity.csv / parity.md
        cells = run(rows, data, weights, out)
    except (FuseError, BenchmarkError, EvaluationError, ParityError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    csv_path, md_path = write_outputs(cells, out, notes)
    t1, t2 = TOLERANCES
    print(f"{within(cells, t1)} of {len(cells)} cells within {t1:.0%}, {within(cells, t2)} within {t2:.0%} "
          f"({(time.monotonic() - t0) / 60:.1f} min wall, {(time.process_time() - c0) / 60:.1f} CPU-min); "
          f"wrote {csv_path} and {md_path}")
    return 0


def cli() -> int:
    """Console entry point: :func:`main` with the CLI process settings (:mod:`mfif.runtime`)."""
    from mfif.runtime import run_cli

    return run_cli(main)


if __name__ == "__main__":
    sys.exit(cli())
