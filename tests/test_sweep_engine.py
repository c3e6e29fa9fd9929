"""W&B's own sweep engine (the ``sweeps`` package): every sweep file passes W&B's schema, a grid
expands to the engine's points, and ``random`` / ``bayes`` sweeps run offline through the engine."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from ablations.sweeps import engine, grid, local, sweep as sweep_cli
from ablations.sweeps.grid import SweepError
from sweep_stand_in import write_stand_in

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = sorted(p for p in ROOT.glob("ablations/*/*.yaml") if not p.name.endswith(".paper.yaml"))
TINY_CONFIG = ROOT / "tests" / "configs_tiny.yaml"


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


@pytest.mark.parametrize("path", SWEEPS, ids=_rel)
def test_every_sweep_file_is_a_valid_wandb_sweep(path, tmp_path):
    doc = yaml.safe_load(path.read_text())
    assert engine.schema_errors(doc) == []
    sw = grid.load_sweep(path)
    if sw.method == "grid":  # our expansion = the engine's grid (W&B orders the keys by name)
        ours = {tuple(sorted(p.overrides.items())) for p in sw.points()}
        theirs = {tuple(sorted(o.items())) for o in engine.propose(doc, [], n=len(ours) + 1)}
        assert ours == theirs
    out = tmp_path / "online.yaml"  # the copy for `wandb sweep` is valid too
    assert sweep_cli.main([str(path), "--export", str(out), "data.root=/d"]) == 0
    assert engine.schema_errors(yaml.safe_load(out.read_text())) == []


def test_schema_violations_are_named():
    errs = engine.schema_errors({"method": "grid", "parameters": {"a": {"values": [1]}}, "early_stop": 1})
    assert any("'early_stop' was unexpected" in e for e in errs)
    assert engine.schema_errors({"method": "grid", "parameters": {"a": {"min": 2, "max": 1}}})  # min > max
    with pytest.raises(SweepError, match="W&B sweep engine"):
        engine.propose({"method": "bayes", "parameters": {"a": {"min": 0.0, "max": 1.0}}}, [], n=1)  # no metric


def test_engine_imports_without_network():
    code = textwrap.dedent("""\
        import socket
        def refuse(*a, **k):
            raise OSError("network access")
        socket.socket.connect = socket.create_connection = socket.getaddrinfo = refuse
        from ablations.sweeps import engine
        print(engine.propose({"method": "random", "parameters": {"a": {"min": 0.0, "max": 1.0}}}, [], n=2, seed=3))
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    vals = [d["a"] for d in eval(out.stdout)]
    assert len(vals) == 2 and all(0.0 <= v <= 1.0 for v in vals)


# --- random and bayes sweeps through the local runner ------------------------------------------

OBJECTIVE = """\
psnr = 10 - (math.log10(float(kv["optim.lr"])) + 2) ** 2 + int(kv["model.width"]) / 10
(rd / "metrics.csv").write_text("image,psnr\\nmean,%r\\n" % psnr)
"""
OBJECTIVE_DOC = "Stand-in for experiments/run.py: psnr = 10 - (log10(lr) + 2)^2 + width / 10 (best at lr = 1e-2)."


def objective(lr: float, width: int) -> float:
    return 10 - (math.log10(lr) + 2) ** 2 + width / 10


def _search_file(tmp: Path, method: str, run_cap: int = 0) -> Path:
    prog = write_stand_in(tmp / "objective.py", OBJECTIVE_DOC, OBJECTIVE)
    f = tmp / f"{method}.yaml"
    f.write_text(textwrap.dedent(f"""\
        name: tiny-{method}
        method: {method}
        program: {prog}
        metric: {{name: test/psnr, goal: maximize}}
        {f"run_cap: {run_cap}" if run_cap else ""}
        parameters:
          optim.lr: {{distribution: log_uniform_values, min: 0.0001, max: 0.1}}
          model.width: {{values: [2, 4]}}
          seed: {{value: 3}}
        command:
          - ${{env}}
          - ${{interpreter}}
          - ${{program}}
          - --config
          - {TINY_CONFIG}
          - ${{args_no_hyphens}}
        """))
    return f


def _points(runs: Path, name: str) -> list[dict]:
    return [json.loads(p.read_text())["overrides"] for p in sorted((runs / name).glob("*/point.json"))]


def test_random_sweep_runs_offline_reproducibly_and_resumes(tmp_path, capsys):
    f = _search_file(tmp_path, "random", run_cap=4)
    runs_a, runs_b = tmp_path / "a", tmp_path / "b"
    assert grid.load_sweep(f).run_cap == 4
    assert sweep_cli.main([str(f), "--runs-root", str(runs_a), "--workers", "2"]) == 0, capsys.readouterr()
    pts = _points(runs_a, "tiny-random")
    assert len(pts) == 4 and len(list((runs_a / "tiny-random").glob("random-00*/DONE"))) == 4
    assert all(1e-4 <= p["optim.lr"] <= 0.1 and p["model.width"] in (2, 4) and p["seed"] == 3 for p in pts)
    assert len({p["optim.lr"] for p in pts}) == 4
    # the same seed proposes the same points elsewhere; another seed other ones
    assert sweep_cli.main([str(f), "--runs-root", str(runs_b), "--workers", "2"]) == 0
    assert _points(runs_b, "tiny-random") == pts
    assert sweep_cli.main([str(f), "--runs-root", str(tmp_path / "c"), "--seed", "1", "--count", "2"]) == 0
    assert _points(tmp_path / "c", "tiny-random")[0]["optim.lr"] not in {p["optim.lr"] for p in pts}
    # resuming: nothing left at run_cap; --count 6 adds two
    capsys.readouterr()
    assert sweep_cli.main([str(f), "--runs-root", str(runs_a)]) == 0
    assert "random-" not in capsys.readouterr().out.split("#  point")[0]
    assert sweep_cli.main([str(f), "--runs-root", str(runs_a), "--count", "6"]) == 0
    assert _points(runs_a, "tiny-random")[:4] == pts and len(_points(runs_a, "tiny-random")) == 6


def test_bayes_sweep_gives_the_engine_every_finished_metric(tmp_path, monkeypatch, capsys):
    f = _search_file(tmp_path, "bayes")
    seen = []
    real = engine.propose

    def spy(doc, past, n, seed=0):
        seen.append([(r.overrides, r.state, r.metric) for r in past])
        return real(doc, past, n, seed)

    monkeypatch.setattr(engine, "propose", spy)
    runs = tmp_path / "runs"
    assert sweep_cli.main([str(f), "--runs-root", str(runs)]) == 2  # no run_cap: --count is needed
    assert "give --count N" in capsys.readouterr().err
    assert sweep_cli.main([str(f), "--runs-root", str(runs), "--count", "5"]) == 0, capsys.readouterr()
    assert [len(s) for s in seen] == [0, 1, 2, 3, 4]  # one proposal at a time (--workers 1)
    for ov, state, metric in seen[-1]:
        assert state == "finished" and metric == pytest.approx(objective(ov["optim.lr"], ov["model.width"]))
    pts = _points(runs, "tiny-bayes")
    assert len(pts) == 5 and all(1e-4 <= p["optim.lr"] <= 0.1 for p in pts)
    best = max(objective(p["optim.lr"], p["model.width"]) for p in pts)
    assert best == max(m for _, _, m in seen[-1] + [(None, None, objective(pts[-1]["optim.lr"], pts[-1]["model.width"]))])


def test_failed_search_point_is_retried_once_then_counted(tmp_path, capsys):
    f = _search_file(tmp_path, "random", run_cap=2)
    write_stand_in(tmp_path / "objective.py", OBJECTIVE_DOC, "sys.exit(5)\n" + OBJECTIVE)
    runs = tmp_path / "runs"
    assert sweep_cli.main([str(f), "--runs-root", str(runs)]) == 1
    assert "0 done, 0 skipped, 2 failed" in capsys.readouterr().out
    write_stand_in(tmp_path / "objective.py", OBJECTIVE_DOC, OBJECTIVE)  # fixed: the failed points run again
    before = _points(runs, "tiny-random")
    assert sweep_cli.main([str(f), "--runs-root", str(runs)]) == 0
    assert _points(runs, "tiny-random") == before and len(list(runs.glob("tiny-random/*/DONE"))) == 2


def test_search_dry_run_validates_the_proposals(tmp_path, capsys):
    f = _search_file(tmp_path, "random", run_cap=3)
    assert sweep_cli.main([str(f), "--dry-run", "--workers", "3", "--runs-root", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert out.count("[") == 3 and "optim.lr=" in out and not (tmp_path / "r").exists()
    assert sweep_cli.main([str(f), "--dry-run", "--runs-root", str(tmp_path / "r"), "optim.name=adamm"]) == 2
    err = capsys.readouterr().err
    assert "point 'random-000'" in err and "optim.name" in err and "'adamm'" in err
    assert local.profile_of(["a=1", "profile=demo", "profile=smoke"]) == "smoke"
