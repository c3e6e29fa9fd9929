"""Studies on the trained models (issue 24, items 4-5): the existing sweep files run on a paper's cpu model.

``python ablations/trained.py --paper msasn --study table8 ...`` first trains (or reuses) the
paper's model, then runs one of :data:`ablations.sweeps.trained_specs.STUDIES` through
``ablations/sweep.py`` as a child process (its command printed, its output in
``OUT/<paper>/studies/<study>.log``, its run folders under ``OUT/<paper>/studies/``):

* ``post`` (MSASN Table 8): every point is ``mode=test ckpt_path=<the trained model's selected
  checkpoint>`` with the paper's profile and data mapping: a post-processing setting swept on one model;
* ``train`` (MSASN Table 6, UDPNet Fig. 7 and Table IV, UFA-Fuse Table IV): every point trains with
  the paper's profile and data mapping, ``--budget`` scaling the profile's ``trainer.max_steps``.

A study with ``test_set: mf_voc`` (UDPNet Table IV, full-reference on Real-MFF in the paper) is
tested on the held-out MF-VOC triplets instead: :func:`mf_voc_test_view` links them into a
benchmark folder with ground truth, passed as ``data.benchmark``.

The table is then built by the tables machinery (:mod:`ablations.sweeps.tables`: ours beside the
printed values, the curves, and the shape comparison: where the best value sits and Kendall's tau
between our ordering and the printed one) into ``OUT/<paper>/studies/tables/`` and added to the
paper's ``trained.json``/``trained.md``. A rerun reuses finished points (the sweep runner's
``DONE`` markers).
"""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable

from ablations.sweeps.grid import ROOT
from ablations.sweeps.trained_specs import STUDIES, PaperSpec, Study

SWEEP_PY = ROOT / "ablations" / "sweep.py"


def sweep_file(study: Study, root: Path = ROOT) -> Path:
    return Path(root) / "ablations" / study.paper / study.sweep


def check_studies(names: list, papers: list, specs: dict, root: Path = ROOT, data: Path | None = None) -> list:
    """The requested study names, checked (known, its paper in the table, its sweep file present).

    Raises:
        TrainedError: an unknown study, or one whose paper or sweep file is missing.
    """
    from ablations.sweeps.trained_scoring import TrainedError

    for n in names:
        if n not in STUDIES:
            raise TrainedError(f"--study {n}: unknown; studies: {', '.join(STUDIES)}")
        s = STUDIES[n]
        if s.paper not in specs:
            raise TrainedError(f"--study {n}: its paper '{s.paper}' is not in the papers table")
        if papers and s.paper not in papers:
            raise TrainedError(f"--study {n} is a study of {s.paper}, not of --paper {', '.join(papers)}")
        if not sweep_file(s, root).is_file():
            raise TrainedError(f"--study {n}: no sweep file {sweep_file(s, root)}")
        if s.test_set == "mf_voc" and data is not None and not (Path(data) / "train" / "mf_voc").is_dir():
            raise TrainedError(f"--data {data}: missing folder train/mf_voc (the test set of --study {n})")
    return list(dict.fromkeys(names))


def study_budget(args) -> float:
    """The budget of a training study's points: ``--study-budget``, else ``--budget`` (that of the model).

    A study of 4-8 training runs costs 4-8 cpu runs; a smaller budget per point fits it in a session
    while the paper's own model (and its ``trained.json``) keeps the full one."""
    b = getattr(args, "study_budget", None)
    return float(args.budget if b is None else b)


def study_command(name: str, spec: PaperSpec, args, out: Path, root: Path, ckpts: dict) -> list:
    """The ``ablations/sweep.py`` argv of study ``name`` (``ckpts``: the paper's stage checkpoints)."""
    from ablations.sweeps.trained import budget_overrides, stage_overrides
    from mfif.config import load_config

    study = STUDIES[name]
    last = spec.stages[-1]
    over = stage_overrides(last, args.profile, Path(args.data), ckpts)
    if study.kind == "post":
        over += ["mode=test", f"ckpt_path={ckpts[last.name]}"]
    else:
        over += budget_overrides(load_config(last.config, over), study_budget(args))
    if study.test_set == "mf_voc":
        over.append(f"data.benchmark={mf_voc_test_view(Path(args.data) / 'train' / 'mf_voc', out / study.paper / 'studies')}")
    program = ["--program", str(args.program)] if args.program else []
    return [sys.executable, str(SWEEP_PY), str(sweep_file(study, root)), "--runs-root", str(out / study.paper / "studies"),
            *program, *over, *study.overrides]


def mf_voc_test_view(root: Path, folder: Path) -> Path:
    """``folder/mf_voc_test``: links to the held-out MF-VOC triplets (:data:`datamodules.mf_voc.HELDOUT_IDS`)
    in MF-VOC's own layout, a benchmark folder with ground truth for a ``data.benchmark`` test."""
    from datamodules.mf_voc import FOLDERS, list_triplets, split_triplets

    triplets, _ = list_triplets(str(root))
    view = folder / "mf_voc_test"
    for sub in FOLDERS:
        (view / sub).mkdir(parents=True, exist_ok=True)
    for t in split_triplets(triplets, 1)["test"]:
        for sub, f in zip(FOLDERS, [*t.sources, t.gt]):
            link = view / sub / Path(f).name
            if not link.is_symlink():
                link.symlink_to(Path(f).resolve())
    return view


def run_study(name: str, spec: PaperSpec, args, out: Path, root: Path, ckpts: dict,
              say: Callable[[str], None]) -> dict:
    """Run study ``name`` and build its table; returns its record for ``trained.json``."""
    from ablations.sweeps.tables import make_table, side_for, to_markdown, write_outputs

    study = STUDIES[name]
    folder = out / study.paper / "studies"
    folder.mkdir(parents=True, exist_ok=True)
    argv = study_command(name, spec, args, out, root, ckpts)
    say(f"$ {shlex.join(argv)}")
    log = folder / f"{name}.log"
    with open(log, "a") as f:
        f.write(f"\n$ {shlex.join(argv)}\n")
        f.flush()
        rc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    sweep = sweep_file(study, root)
    table = make_table(sweep, "local", folder)
    paths = write_outputs(table, side_for(sweep), folder / "tables")
    png = next((p for p in paths if p.suffix == ".png"), None)
    note = "; ".join(n for n in (study.note, f"sweep exit {rc}: see {log}" if rc else "") if n)
    say(f"{study.paper} study {name}: {'done' if rc == 0 else f'exit {rc}'}; table {paths[0]}")
    return {"kind": study.kind, "command": shlex.join(argv), "rc": rc, "note": note, "budget": study_budget(args),
            "table_md": to_markdown(table), "png": str(png.relative_to(out / study.paper)) if png else None}
