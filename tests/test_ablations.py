"""Sweeps and tables: every sweep file parses, matches its paper table and passes the real config
schema; the local runner runs a tiny table end to end, resumes, survives a failing point; the
SLURM script is valid bash with one array task per point; missing runs show as "–"."""
from __future__ import annotations

import math
import subprocess
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from omegaconf import OmegaConf

from ablations.sweeps import collect, engine, grid, sweep as sweep_cli, tables
from ablations.sweeps.grid import SweepError
from sweep_stand_in import write_stand_in

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = sorted(p for p in ROOT.glob("ablations/*/*.yaml") if not p.name.endswith(".paper.yaml"))
SIDES = sorted(ROOT.glob("ablations/*/*.paper.yaml"))
TINY_CONFIG = ROOT / "tests" / "configs_tiny.yaml"
_UNSET = object()


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


# --- every sweep file of the repository (whatever exists when the tests run) -------------------

@pytest.mark.parametrize("path", SWEEPS, ids=_rel)
def test_sweep_file_parses_and_every_point_is_a_valid_config(path):
    sw = grid.load_sweep(path)
    if sw.method == "grid":
        points = sw.points()
        assert points and len({p.id for p in points}) == len(points)
        assert len(points) == math.prod(len(v) for v in sw.parameters.values())
    else:  # random / bayes: the engine's first proposals
        points = [grid.Point(i, f"p{i}", ov, sw.varying) for i, ov in enumerate(engine.propose(sw.doc, [], 2))]
    cfgs = grid.validate(sw, points)  # the real schema (load_config), no training
    if sw.takes_overrides:
        assert set(cfgs) == {p.id for p in points}
        for p in points:
            for key in p.overrides:
                assert OmegaConf.select(cfgs[p.id], key, default=_UNSET) is not _UNSET, (path, key)


@pytest.mark.parametrize("side", SIDES, ids=_rel)
def test_side_file_rows_are_exactly_the_grid(side):
    s = grid.load_side(side)
    for r in s["rows"]:  # every printed value sits in a declared column
        assert set(r.get("paper") or {}) <= set(s["columns"]), (r["label"], s["columns"])
    shared = grid.side_shared_sweep(s)  # columns measured once: a one-point sweep (raises otherwise)
    assert shared is None or len(shared.points()) == 1
    sweep_path = grid.side_sweep(s)
    if sweep_path is None:
        return  # a comparison table without a sweep of ours
    assert sweep_path.is_file(), f"{side}: sweep {sweep_path.name} does not exist"
    points = grid.load_sweep(sweep_path).points()
    matched = grid.match_rows(points, s["rows"], str(side))
    assert sorted(p.id for p in matched) == sorted(p.id for p in points)


# --- grid mechanics ------------------------------------------------------------------------------

def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def _sweep_yaml(name: str, params: str, program: str = "tests/run_tiny.py", config: Path = TINY_CONFIG) -> str:
    return (f"name: {name}\nmethod: grid\nprogram: {program}\nmetric: {{name: test/psnr, goal: maximize}}\n"
            f"parameters:\n{textwrap.indent(textwrap.dedent(params), '  ')}"
            f"command:\n  - ${{env}}\n  - ${{interpreter}}\n  - ${{program}}\n  - --config\n  - {config}\n"
            f"  - ${{args_no_hyphens}}\n")


def test_grid_order_ids_and_args(tmp_path):
    f = _write(tmp_path / "g.yaml", _sweep_yaml("g", """\
        a: {values: [1, 2]}
        model.c: {values: [x, "y z"]}
        d: {value: 0.5}
        """))
    pts = grid.load_sweep(f).points()
    assert [(p.overrides["a"], p.overrides["model.c"]) for p in pts] == [(1, "x"), (1, "y z"), (2, "x"), (2, "y z")]
    assert [p.id for p in pts] == ["a-1__c-x", "a-1__c-y-z", "a-2__c-x", "a-2__c-y-z"]
    assert pts[0].args() == ["a=1", "model.c=x", "d=0.5"]  # W&B's `${args_no_hyphens}` form
    assert [p.id for p in grid.load_sweep(f).points()] == [p.id for p in pts]  # stable


@pytest.mark.parametrize("params, msg", [
    ("a: {values: [1, null]}\n", 'write the string "null"'),
    ("a: {values: []}\n", "non-empty list"),
    ("a: {min: 0, max: 1}\n", "exactly one of"),
])
def test_bad_sweep_files_are_refused(tmp_path, params, msg):
    with pytest.raises(SweepError, match=msg):
        grid.load_sweep(_write(tmp_path / "bad.yaml", _sweep_yaml("bad", params)))
    text = _sweep_yaml("r", "a: {values: [1]}\n").replace("method: grid", "method: custom")
    with pytest.raises(SweepError, match="method is 'custom'"):
        grid.load_sweep(_write(tmp_path / "r.yaml", text))
    text = _sweep_yaml("x", "a: {values: [1]}\n") + "profiles: {smoke: {a: 2}}\n"  # W&B's schema: no extra keys
    with pytest.raises(SweepError, match="not a valid W&B sweep.*'profiles' was unexpected"):
        grid.load_sweep(_write(tmp_path / "x.yaml", text))


def test_match_rows_needs_one_to_one(tmp_path):
    pts = grid.load_sweep(_write(tmp_path / "m.yaml", _sweep_yaml("m", "a: {values: [1, 2.0]}\nb: {value: x}\n"))).points()
    assert [p.id for p in grid.match_rows(pts, [{"label": "r2", "overrides": {"a": 2}}, {"label": "r1", "overrides": {"a": 1.0}}])] == ["a-2.0", "a-1"]
    with pytest.raises(SweepError, match="match 2 grid points"):
        grid.match_rows(pts, [{"label": "all", "overrides": {}}])
    with pytest.raises(SweepError, match="'a-2.0' is not a row"):
        grid.match_rows(pts, [{"label": "r1", "overrides": {"a": 1}}])


def test_flag_programs_get_hyphenated_args():
    sw = grid.Sweep(Path("f.yaml"), "f", "ablations/vaeedof/fig6.py", ["${env}", "${interpreter}", "${program}", "${args}"],
                    {"method": ["gacn"], "num_inputs": [2, 3]}, ("method", "num_inputs"))
    argv = grid.build_command(sw, sw.points()[1], python="py", program="prog.py", extra=["size=64"])
    assert argv == ["py", "prog.py", "--method=gacn", "--num_inputs=3", "--size=64"]


# --- the local runner ----------------------------------------------------------------------------

FAKE = """\
with open(rd.parent / "calls.txt", "a") as f:
    f.write(kv["logger.name"] + "\\n")
if kv["model.width"] == "3":
    print("width 3 is broken", file=sys.stderr)
    sys.exit(3)
(rd / "metrics.csv").write_text("image,psnr,ssim\\nimg0,1,1\\nmean,%s,0.5\\n" % kv["model.width"])
"""


@pytest.fixture()
def fake(tmp_path):
    prog = write_stand_in(tmp_path / "fake_run.py", "Stand-in for experiments/run.py: records each call, fails for "
                          "model.width=3.", FAKE)
    f = _write(tmp_path / "fake.yaml", _sweep_yaml("fake", "model.width: {values: [3, 2, 4]}\n", program=str(prog)))
    return f, tmp_path / "runs"


def test_failing_point_does_not_stop_the_others_and_reruns_resume(fake, capsys):
    f, runs = fake
    assert sweep_cli.main([str(f), "--runs-root", str(runs), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    root = runs / "fake"
    assert collect.is_done(root / "width-2") and collect.is_done(root / "width-4")
    assert not collect.is_done(root / "width-3")
    assert "width 3 is broken" in (root / "width-3" / "log.txt").read_text()
    assert str(root / "width-3" / "log.txt") in out and "2 done, 0 skipped, 1 failed" in out
    assert sorted((root / "calls.txt").read_text().split()) == ["width-2", "width-3", "width-4"]
    # second invocation: DONE points are skipped, only the failed one runs again
    assert sweep_cli.main([str(f), "--runs-root", str(runs)]) == 1
    assert "0 done, 2 skipped, 1 failed" in capsys.readouterr().out
    assert (root / "calls.txt").read_text().split().count("width-2") == 1
    assert (root / "calls.txt").read_text().split().count("width-3") == 2
    # DONE points from other key=value settings (e.g. a smoke run) are skipped with a warning
    assert sweep_cli.main([str(f), "--runs-root", str(runs), "profile=smoke"]) == 1
    assert "width-2 is DONE from a run with no key=value, not ['profile=smoke']" in capsys.readouterr().out


def test_bad_key_stops_before_anything_runs(tmp_path, capsys):
    f = _write(tmp_path / "badkey.yaml", _sweep_yaml("badkey", "model.widht: {values: [2]}\n"))
    assert sweep_cli.main([str(f), "--runs-root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert str(f) in err and "model.widht" in err and "model.width" in err  # names file, key, suggestion
    assert not (tmp_path / "runs").exists()
    assert sweep_cli.main([str(_write(tmp_path / "ok.yaml", _sweep_yaml("ok", "model.width: {values: [2]}\n"))),
                           "--dry-run", "trainer.nope=1"]) == 2


@pytest.mark.parametrize("setting, named", [
    ("model.width=abc", "wrong type for 'model.width'"),  # a type (the schema)
    ("optim.name=adamm", "'adamm'"),  # a choice the optimiser factory refuses
    ("optim.scheduler=cosin", "'cosin'"),
    ("metrics=[psnr,q_gg]", "unknown metric 'q_gg'"),
    ("model.refiner_target=os:system", "would import and run code"),  # an import hook: refused, never built
])
def test_dry_run_checks_values_not_only_names(tmp_path, capsys, setting, named):
    params, config = "model.width: {values: [2, 3]}\n", TINY_CONFIG
    if "refiner" in setting:  # UDPNet's refiner plug-in is the one import hook of the schema
        params, config = "model.refiner: {values: [sam]}\n", "udpnet.yaml"
    f = _write(tmp_path / "v.yaml", _sweep_yaml("v", params, config=config))
    assert sweep_cli.main([str(f), "--dry-run", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and str(f) in err and len(err.splitlines()) == 1  # one line: file, point, key


def test_slurm_script_has_one_array_task_per_point(fake, tmp_path):
    f, runs = fake
    script = tmp_path / "s.sbatch"
    assert sweep_cli.main([str(f), "--slurm", "--runs-root", str(runs), "--script", str(script), "data.root=/d"]) == 0
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "#SBATCH --array=0-2\n" in text and "#SBATCH --signal=SIGUSR1@90" in text and "#SBATCH --requeue" in text
    assert [f"  {i}) POINT=width-{w};" in text for i, w in enumerate((3, 2, 4))] == [True] * 3
    assert text.count(" ckpt_path=last ") == 3 and "logger.id=fake-width-2 " in text
    assert f"run_dir={runs.resolve()}/fake/width-4 " in text and "data.root=/d" in text
    assert sweep_cli.main([str(f), "--slurm", "--online", "me/mfif/abc123", "--script", str(script)]) == 0
    online = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "#SBATCH --array=0-2\n" in online and "wandb agent --count 1 me/mfif/abc123" in online


def test_export_for_wandb_sweep(fake, tmp_path):
    f, _ = fake
    out = tmp_path / "online.yaml"
    assert sweep_cli.main([str(f), "--export", str(out), "data.root=/d"]) == 0
    sw = grid.load_sweep(out)
    assert sw.points()[0].args()[1:] == ["logger.mode=online", "logger.group=fake", "data.root=/d"]
    assert sw.command == grid.load_sweep(f).command


# --- collecting results and writing tables -------------------------------------------------------

def _side(tmp_path, sweep_name="tiny.yaml", extra="") -> Path:
    return _write(tmp_path / "tiny.paper.yaml", f"""\
        citation: "Tiny, Table 0 (test)"
        sweep: {sweep_name}
        columns: [psnr, ssim]
        rows:
          - {{label: "width 2", overrides: {{model.width: 2}}, paper: {{psnr: 30.00, ssim: 0.900}}}}
          - {{label: "width 3", overrides: {{model.width: 3}}, paper: {{psnr: 31.00, ssim: 0.950}}}}
        {extra}""")


def test_collect_prefers_the_mean_row(tmp_path):
    _write(tmp_path / "csv" / "metrics.csv", "epoch,test/psnr,test/ssim,train/loss\n0,,,0.5\n0,20.0,0.7,\n")
    assert collect.point_metrics(tmp_path) == {"psnr": 20.0, "ssim": 0.7}
    _write(tmp_path / "metrics.csv", "image,psnr,lpips\na,1,nan\nmean,21.5,nan\n")
    assert collect.point_metrics(tmp_path) == {"psnr": 21.5, "ssim": 0.7}  # nan = not available


def test_missing_runs_render_as_dash(tmp_path):
    _write(tmp_path / "tiny.yaml", _sweep_yaml("tiny", "model.width: {values: [2, 3]}\n"))
    side = _side(tmp_path)
    _write(tmp_path / "runs" / "tiny" / "width-2" / "metrics.csv", "image,psnr,ssim\nmean,29.5,0.91\n")
    t = tables.make_table(side, "local", tmp_path / "runs")
    md = tables.to_markdown(t)
    assert "| width 2 | 29.50 | 30.00 | -0.50 | 0.910 | 0.900 | +0.010 |" in md
    assert "| width 3 | – | **31.00** | – | – | **0.950** | – |" in md
    assert "-- & \\textbf{31.00}" in tables.to_latex(t) and "1 of 2 runs missing: width 3" in md


def test_a_figure_without_printed_numbers_shows_our_metrics_and_only_drawn_panels(tmp_path):
    """``columns: []`` (UDPNet Fig. 7: masks only): the table's columns are the plot metrics our runs
    reported (PSNR needs ground truth: left out), and the curves draw those panels only."""
    from ablations.sweeps import plots

    _write(tmp_path / "tiny.yaml", _sweep_yaml("tiny", "model.width: {values: [2, 3]}\n"))
    side = _side(tmp_path, extra="plot: {x: model.width, metrics: [q_g, psnr, q_nmi]}").read_text()
    side = _write(tmp_path / "fig.paper.yaml", side.replace("columns: [psnr, ssim]", "columns: []").replace(
        "paper: {psnr: 30.00, ssim: 0.900}", "paper: {}").replace("paper: {psnr: 31.00, ssim: 0.950}", "paper: {}"))
    for w, q in ((2, 0.61), (3, 0.65)):
        _write(tmp_path / "runs" / "tiny" / f"width-{w}" / "metrics.csv", f"image,q_g,q_nmi,q_cb\nmean,{q},1.0{w},0.5\n")
    t = tables.make_table(side, "local", tmp_path / "runs")
    assert t.metrics == ["q_g", "q_nmi"]  # the plot's order; psnr (no value) out, q_cb (not asked) out
    md = tables.to_markdown(t)
    assert "| width 3 | **0.6500** | – | – |" in md and "runs missing" not in md
    assert tables.figure_columns({"rows": []}, {"a": {"z": 1.0, "y": float("nan")}}) == ["z"]  # no plot: all reported
    xs, series, metrics = plots.curve_data(t, tables.load_side(side))
    assert xs == [2, 3] and metrics == ["q_g", "q_nmi"] and series["ours"]["q_g"] == [0.61, 0.65]
    assert plots.draw_curves(t, tables.load_side(side), tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"


def test_best_and_arank_known_values(tmp_path):
    side = {"path": _side(tmp_path, sweep_name="null"), "columns": ["psnr", "lpips", "arank"], "rows": []}
    results = {"A": {"psnr": 30.0, "lpips": 0.1}, "B": {"psnr": 32.0, "lpips": 0.2}, "C": {"psnr": 31.0, "lpips": 0.05}}
    t = tables.build_table(side, None)
    t.rows = [tables.Row(k, {}, dict(v)) for k, v in results.items()] + [tables.Row("D", {"psnr": 33.0, "lpips": 0.3}, None)]
    tables.add_arank(t.rows, t.metrics, t.keys)
    # psnr ranks D1 B2 C3 A4; lpips (lower better) C1 A2 B3 D4
    assert [r.ours.get("arank") for r in t.rows[:3]] == [3.0, 2.5, 2.0]
    assert t.keys["lpips"](0.05) > t.keys["lpips"](0.1)  # from the metric registry
    t.decimals = {"psnr": 2, "lpips": 3, "arank": 2}
    _, body = tables.cells(t, lambda s: f"*{s}")
    assert body[1][1] == "*32.00" and body[2][4] == "*0.050" and body[2][7] == "*2.00" and body[3][2] == "33.00"  # one paper value: nothing to beat


def test_wandb_source_maps_runs_to_points(tmp_path):
    pts = grid.load_sweep(_write(tmp_path / "tiny.yaml", _sweep_yaml("tiny", "model.width: {values: [2, 3]}\n"))).points()
    run = lambda name, width, psnr, t, state="finished": SimpleNamespace(  # noqa: E731
        name=name, config={"model": {"width": width}}, summary={"test/psnr": psnr, "train/loss": 1}, state=state, created_at=t)
    runs = [run("width-2", 2, 10.0, "2024-01-02"), run("agent-x", 2, 9.0, "2024-01-01"),
            run("agent-y", 3, 11.0, "2024-01-03"), run("agent-z", 3, 99.0, "2024-01-04", state="crashed")]
    api = SimpleNamespace(default_entity="me", runs=lambda path, filters: runs if filters == {"group": "tiny"} else [])
    assert collect.wandb_results("tiny", pts, api=api) == {"width-2": {"psnr": 10.0}, "width-3": {"psnr": 11.0}}


# --- end to end: a tiny table through the real runner and experiments/run.py (smoke profile) -----

@pytest.mark.slow
def test_tiny_table_end_to_end(tmp_path, capsys):
    f = _write(tmp_path / "tiny.yaml", _sweep_yaml("tiny", "model.width: {values: [2, 3]}\nprofile: {value: smoke}\n"))
    side = _side(tmp_path)
    runs = tmp_path / "runs"
    args = [str(f), "--runs-root", str(runs), "--workers", "2", "logger.wandb=false", "trainer.max_steps=2"]
    assert sweep_cli.main(args) == 0, capsys.readouterr()
    cfg = yaml.safe_load((runs / "tiny" / "width-3" / "config.yaml").read_text())
    assert (cfg["model"]["width"], cfg["logger"]["group"], cfg["logger"]["name"]) == (3, "tiny", "width-3")
    assert tables.main([str(side), "--runs-root", str(runs), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / tmp_path.name / "tiny.md").read_text()
    assert (tmp_path / "out" / tmp_path.name / "tiny.tex").is_file()
    for label, w in (("width 2", 2), ("width 3", 3)):
        line = next(x for x in md.splitlines() if x.startswith(f"| {label} |"))
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        assert "–" not in cells  # every row filled
        got = collect.point_metrics(runs / "tiny" / f"width-{w}")
        assert float(cells[1]) == pytest.approx(got["psnr"], abs=0.006)
        assert float(cells[3]) == pytest.approx(got["psnr"] - (30.0 if w == 2 else 31.0), abs=0.011)
    assert sweep_cli.main(args) == 0  # resumable: nothing left to run
    assert "0 done, 2 skipped, 0 failed" in capsys.readouterr().out
