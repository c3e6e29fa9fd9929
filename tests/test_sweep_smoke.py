"""Issue 16: every sweep file's smoke profile runs on a fresh clone, with no data and no weight files.

``python ablations/sweep.py <file> profile=smoke`` for every sweep file, as CI runs it: the same
planning (validation, smoke resets of the data/weight paths, metrics without weights dropped) and
the same runner, but only each file's **first point** (the others differ in one setting of the
same code path) and all files' points in one batch, two at a time, to fit the suite's budget.
The interpreter the points run with is a warm one (``tests/warm_python.py``: the programs run as
``__main__`` in children forked from a process that has imported torch and Lightning once), which
saves about 6 CPU-seconds of imports per point. W&B logging is off for the config sweeps here
(``tests/test_wandb_logging.py`` covers it).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ablations.sweeps import tables
from ablations.sweeps.grid import load_sweep, resolve_program
from ablations.sweeps.local import make_job, next_points, plan_points
from ablations.sweeps.runner import run_jobs
from conftest import python_env
from warm_python import WarmPython

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = sorted(p for p in ROOT.glob("ablations/*/*.yaml") if not p.name.endswith(".paper.yaml"))
pytestmark = pytest.mark.slow
# what every point imports (its program imports the rest), and the built-in data's decoded photos
PRELOAD = ["torch", "lightning", "torchmetrics", "kornia", "wandb", "albumentations", "skimage.data", "experiments.run",
           "mfif.metrics", "datamodules.default", "lightning_modules.udpnet.module", "lightning_modules.gacn.module",
           "lightning_modules.msasn.module", "lightning_modules.ufafuse.module", "lightning_modules.vaeedof.module",
           "test_sweep_smoke:load_builtin_photos"]


# Fig. 6 times VAEEDOF on 512x512 sources by default; the program's smoke point at 64x64, once
# (the runner passes key=value as flags to benchmark programs, as ablations/README.md documents).
EXTRA = {"ablations/vaeedof/fig6.yaml": ["size=64", "repeats=1"]}


def load_builtin_photos() -> None:
    """Fill the photo caches of ``data.name=default`` once in the warm interpreter (each smoke run
    would decode the same scikit-image files again)."""
    from datamodules import default

    for name in {*default.TRAIN_IMAGES, *default.VAL_IMAGES, *default.TEST_IMAGES}:
        default.load_photo(name)
    default.load_disparity()


def _first_point(sweep, runs: Path) -> list:
    return sweep.points()[:1] if sweep.method == "grid" else next_points(sweep, runs, 1, 1, 0, set())


def test_every_sweep_file_smoke_profile_runs_without_data_or_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("MFIF_WEIGHTS_DIR", str(tmp_path / "no-weights"))  # LPIPS & co. absent
    monkeypatch.chdir(tmp_path)  # a fresh working folder: no data/ or weights/ beside it
    runs = tmp_path / "runs"
    jobs, notes = [], {}
    with WarmPython(tmp_path / "warm", PRELOAD, python_env()) as warm:
        for f in SWEEPS:
            sw = load_sweep(f)
            overrides = ["profile=smoke"] + (["logger.wandb=false", "trainer.progress=none"] if sw.takes_overrides else [])
            overrides += EXTRA.get(f.relative_to(ROOT).as_posix(), [])
            points = _first_point(sw, runs)
            plan = plan_points(sw, points, resolve_program(sw.program), runs, overrides, warm.interpreter)
            notes[f.relative_to(ROOT).as_posix()] = plan.notes
            job = make_job(sw, points[0], plan, runs, overrides)
            jobs.append(dataclasses.replace(job, key=f"{f.relative_to(ROOT)}:{points[0].id}"))
        said: list = []
        results, sig = run_jobs(jobs, workers=2, say=said.append)
    failed = {r.key: f"exit {r.returncode} {r.note}: " + r.log.read_text()[-1500:]
              for r in results if r.status != "done"}
    assert sig is None and not failed, "\n\n".join(f"{k}\n{v}" for k, v in failed.items())
    # metrics whose weights are absent were dropped with a note, and show as "–" in the table
    for name in ("udpnet/table1.yaml", "udpnet/table4.yaml"):
        assert any("dropping metrics ['lpips']" in n and "MFIF_WEIGHTS_DIR" in n for n in notes[f"ablations/{name}"])
    assert any("built-in data instead of the sweep's data.benchmark" in n for n in notes["ablations/msasn/table2.yaml"])
    md = tables.to_markdown(tables.make_table(ROOT / "ablations/udpnet/table4.paper.yaml", "local", runs))
    first = next(line for line in md.splitlines() if line.startswith("| w/o F |"))
    ours_psnr, ours_lpips = first.split("|")[2].strip(), first.split("|")[8].strip()
    assert ours_psnr != "–" and float(ours_psnr.strip("*")) > 0 and ours_lpips == "–"


def test_missing_metric_weights_stop_before_any_training(tmp_path, monkeypatch, capsys):
    from ablations.sweeps import sweep as sweep_cli

    monkeypatch.setenv("MFIF_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    code = sweep_cli.main([str(ROOT / "ablations/udpnet/table4.yaml"), "--runs-root", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "udpnet/table4.yaml" in err and "lpips_weights.pt" in err and "MFIF_WEIGHTS_DIR" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()
