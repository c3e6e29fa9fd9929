"""Benchmark sweeps (programs taking flags): the runner passes ``--run_dir``/``--wandb_group``,
the programs write ``results.json``, the tables read it; ``shared_sweep`` columns; a real
benchmark sweep (GACN Table 3) run locally on tiny frames fills its table."""
from __future__ import annotations

import json
import math
import subprocess
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ablations.sweeps import collect, grid, sweep as sweep_cli, tables
from ablations.sweeps.grid import SweepError
from ablations.sweeps import point_results

ROOT = Path(__file__).resolve().parent.parent


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _flag_sweep(tmp_path: Path, program: Path, name: str = "bench") -> Path:
    return _write(tmp_path / f"{name}.yaml", f"name: {name}\nmethod: grid\nprogram: {program}\nparameters:\n"
                  "  n: {values: [1, 2]}\ncommand:\n  - ${env}\n  - ${interpreter}\n  - ${program}\n  - ${args}\n")


# --- the contract: results.json ------------------------------------------------------------------

def test_results_json_is_read_and_wins(tmp_path):
    point_results.write_results(tmp_path, {"time": 0.5, "nan": float("nan"), "none": None, "psnr": 3}, {"x": [1]})
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["metrics"] == {"time": 0.5, "psnr": 3.0} and doc["details"] == {"x": [1]}  # no NaN, no None
    _write(tmp_path / "metrics.csv", "image,psnr,ssim\nmean,1.0,0.5\n")
    assert collect.point_metrics(tmp_path) == {"time": 0.5, "psnr": 3.0, "ssim": 0.5}
    _write(tmp_path / "results.json", "{not json")
    with pytest.raises(SweepError, match="results.json: cannot read"):
        collect.point_metrics(tmp_path)
    _write(tmp_path / "results.json", '{"metrics": [1, 2]}')
    with pytest.raises(SweepError, match="'metrics' mapping"):
        collect.point_metrics(tmp_path)


def test_wandb_mode(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    assert point_results.wandb_mode() == "offline"  # the configs' default
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc")
    assert point_results.wandb_mode() == "online"  # under a W&B agent
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert point_results.wandb_mode() == "disabled"


def test_programs_record_their_figures(tmp_path):
    from ablations.vaeedof import fig6 as bench_inputs
    from ablations.gacn import fig8 as gacn_fig8

    args = Namespace(run_dir=str(tmp_path / "a"), wandb=False, wandb_group=None, size=32, device="cpu")
    bench_inputs.record_rows(args, [{"method": "gacn", "n": 3, "images_per_s": None, "images_per_cpu_s": None,
                                     "note": "skipped: N > 2"}])
    assert json.loads((tmp_path / "a" / "results.json").read_text())["metrics"] == {}  # skipped: no value, not 0
    rows = [{"sigma": s, "metric": m, "mean": v, "relative": v / b}
            for m, b, vals in (("q_g", 0.7, (0.7, 0.35)), ("q_y", 0.9, (0.9, 0.81))) for s, v in zip((0.0, 5.0), vals)]
    args = Namespace(run_dir=str(tmp_path / "b"), wandb=False, wandb_group=None, sigmas=[0.0, 5.0])
    gacn_fig8.record_curves(args, rows)
    got = collect.point_metrics(tmp_path / "b")
    assert got["q_g"] == pytest.approx(0.5) and got["q_y"] == pytest.approx(0.9) and got["q_g@0"] == 1.0


# --- the runner: flags for benchmark programs ----------------------------------------------------

PROG = '''"""Stand-in benchmark: --n, --run_dir, --wandb_group; fails for n=2."""
import argparse, json, sys
from pathlib import Path
p = argparse.ArgumentParser()
p.add_argument("--n", type=int)
p.add_argument("--run_dir")
p.add_argument("--wandb_group")
a = p.parse_args()
if a.n == 2:
    sys.exit(0)  # exits 0 without results: must count as failed
Path(a.run_dir, "results.json").write_text(json.dumps({"metrics": {"time": a.n / 10, "group": a.wandb_group}}))
'''


def test_flag_program_gets_its_folder_and_must_write_results(tmp_path, capsys):
    prog = _write(tmp_path / "prog.py", PROG)
    f = _flag_sweep(tmp_path, prog)
    runs = tmp_path / "runs"
    assert sweep_cli.main([str(f), "--runs-root", str(runs)]) == 1
    out = capsys.readouterr().out
    assert "n-2: failed" in out and "no test metrics or results" in out
    assert collect.point_metrics(runs / "bench" / "n-1") == {"time": 0.1}  # the string "group" is not a figure
    log = (runs / "bench" / "n-1" / "log.txt").read_text()
    assert f"--n=1 --run_dir={runs}/bench/n-1 --wandb_group=bench\n" in log
    assert collect.is_done(runs / "bench" / "n-1") and not collect.is_done(runs / "bench" / "n-2")
    script = tmp_path / "s.sbatch"
    assert sweep_cli.main([str(f), "--slurm", "--runs-root", str(runs), "--script", str(script)]) == 0
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert '[ -f "$RUN_DIR/results.json" ]' in text and "CHECK_TESTS=1" in text and " --wandb_group=bench" in text
    exported = tmp_path / "online.yaml"
    assert sweep_cli.main([str(f), "--export", str(exported), "threads=2"]) == 0
    assert grid.load_sweep(exported).points()[0].args() == ["n=1", "wandb_group=bench", "threads=2"]


def test_flag_program_without_run_dir_is_refused(tmp_path):
    prog = _write(tmp_path / "old.py", "import argparse\np = argparse.ArgumentParser()\np.add_argument('--n')\n")
    sw = grid.load_sweep(_flag_sweep(tmp_path, prog, "old"))
    with pytest.raises(SweepError, match="no '--run_dir' option"):
        grid.validate(sw, sw.points())


# --- tables: columns from a one-point shared sweep ----------------------------------------------

def test_shared_sweep_fills_its_columns_in_every_row_of_ours(tmp_path):
    prog = _write(tmp_path / "prog.py", PROG)
    _flag_sweep(tmp_path, prog, "main")
    _write(tmp_path / "cost.yaml", f"name: cost\nmethod: grid\nprogram: {prog}\nparameters:\n  n: {{value: 1}}\n"
           "command:\n  - ${env}\n  - ${interpreter}\n  - ${program}\n  - ${args}\n")
    side = _write(tmp_path / "main.paper.yaml", """\
citation: "Tiny, Table 1"
sweep: main.yaml
columns: [psnr, time]
higher_is_better: {time: false}
shared_sweep: {file: cost.yaml, columns: [time]}
rows:
  - {label: A, dataset: a, overrides: {n: 1}, paper: {psnr: 30.00, time: 0.20}}
  - {label: B, dataset: b, overrides: {n: 2}, paper: {psnr: 31.00, time: 0.20}}
baselines:
  - {label: X, dataset: b, paper: {psnr: 29.00, time: 0.10}}
  - {label: Y, dataset: a, paper: {psnr: 28.00, time: 0.30}}
""")
    runs = tmp_path / "runs"
    _write(runs / "main" / "n-1" / "metrics.csv", "image,psnr\nmean,30.5\n")
    _write(runs / "cost" / "default" / "results.json", '{"metrics": {"time": 0.25, "psnr": 99}}')
    md = tables.to_markdown(tables.make_table(side, "local", runs))
    lines = [x for x in md.splitlines() if x.startswith("| ") and not x.startswith("| Row")]
    assert [x.split(" | ")[0] for x in lines] == ["| A", "| Y", "| B", "| X"]  # grouped by dataset
    assert "| A | 30.50 | **30.00** | +0.50 | 0.25 | **0.20** | +0.05 |" in md  # psnr of the cost sweep not used
    assert "| B | – | **31.00** | – | 0.25 | 0.20 | +0.05 |" in md and "| X | – | 29.00 | – | – | **0.10** | – |" in md
    assert "1 of 2 runs missing: B." in md  # the shared column does not hide a missing run
    bad = _write(tmp_path / "bad.paper.yaml", side.read_text().replace("file: cost.yaml", "file: main.yaml"))
    with pytest.raises(SweepError, match="has 2 grid points; it needs exactly 1"):
        tables.make_table(bad, "local", runs)


# --- end to end: GACN Table 3 through the real runner and bench_gacn.py on tiny frames -----------

@pytest.mark.slow
def test_gacn_table3_benchmark_sweep_fills_its_table(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).save(tmp_path / f"frame{i}.png")
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the sweep's command has --wandb; keep it local and fast
    runs, out = tmp_path / "runs", tmp_path / "tables"
    sweep_file = ROOT / "ablations" / "gacn" / "table3.yaml"
    args = [str(sweep_file), "--runs-root", str(runs), "--workers", "2", f"stack={tmp_path}", "num_images=3",
            "weights=", "stack_scale=1", "stack_repeats=1", "threads=1"]  # weights= : random weights (speed only)
    assert sweep_cli.main(args) == 0
    assert tables.main([str(sweep_file), "--runs-root", str(runs), "--out", str(out)]) == 0
    md = (out / "gacn" / "table3.md").read_text()
    for label, point in (("GACN, one by one serial", "strategy-serial"), ("GACN, decision calibration", "strategy-calibration")):
        cells = [c.strip().strip("*") for c in next(x for x in md.splitlines() if x.startswith(f"| {label} |")).strip("|").split("|")]
        assert "–" not in cells
        got = collect.point_metrics(runs / "gacn-table3-calibration" / point)
        assert got["time_per_image"] > 0 and math.isfinite(got["cpu_time_per_image"])
        assert float(cells[1]) == pytest.approx(got["time_per_image"], abs=6e-5)  # 4 printed decimals
        assert float(cells[3]) == pytest.approx(got["time_per_image"] - float(cells[2]), abs=2e-4)
