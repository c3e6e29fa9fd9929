"""ablations/trained.py (issue 24): train with a profile, score beside the yardsticks, write the
CSV/MD/PNG, reuse a finished run, build the report; the shape comparison of the tables
(best position, Kendall's tau); bad input. The tiny method stands in for a paper (2 scenes)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import tiny_method  # noqa: F401  (registers the method "tiny" for the in-process reference rows)
from ablations.sweeps import tables, trained, trained_report, trained_studies
from ablations.sweeps.trained_specs import PAPERS, STUDIES, PaperSpec, Stage, expand
from conftest import python_env

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "configs_tiny.yaml"
RUN_TINY = ROOT / "tests" / "run_tiny.py"

SIDE = """\
citation: "Tiny stand-in table"
sweep: null
columns: [q_g, q_nmi, time]
rows:
  - label: "tiny"
    overrides: {}
    paper: {q_g: 0.5, q_nmi: 1.0, time: 0.1}
baselines:
  - label: "CNN"
    parity: {published: cnn, dataset: lytro}
    paper: {q_g: 0.6, q_nmi: 1.1}
  - label: "Released tiny"
    parity: {method: tiny, weights: tiny_official.pkl, dataset: lytro}
    paper: {q_g: 0.7, q_nmi: 1.2}
"""


def _scene(seed: int) -> tuple:
    """A 40x40 RGB texture and its two half-blurred sources (left / right in focus)."""
    import kornia

    g = torch.Generator().manual_seed(seed)
    img = torch.rand(3, 40, 40, generator=g)
    blur = kornia.filters.gaussian_blur2d(img[None], (9, 9), (2.0, 2.0))[0]
    left = torch.zeros(1, 40, 40)
    left[..., :20] = 1
    return img, img * left + blur * (1 - left), img * (1 - left) + blur * left


@pytest.fixture
def fixture(tmp_path, monkeypatch):
    """DATA (lytro/ with 2 scenes, baselines/lytro/cnn/), WEIGHTS, a side-file root, the stand-in spec."""
    from mfif.io import save_image

    data, weights, root = tmp_path / "data", tmp_path / "weights", tmp_path / "root"
    weights.mkdir()
    for i in (1, 2):
        img, a, b = _scene(i)
        save_image(a, data / "lytro" / f"lytro-0{i}-A.png")
        save_image(b, data / "lytro" / f"lytro-0{i}-B.png")
        save_image((a + b) / 2, data / "baselines" / "lytro" / "cnn" / f"lytro-0{i}.png")
    (root / "ablations" / "tiny").mkdir(parents=True)
    (root / "ablations" / "tiny" / "table1.paper.yaml").write_text(SIDE)
    spec = PaperSpec(stages=(Stage("run", str(TINY), ("data.benchmark={data}/lytro", "metrics=[q_g,q_nmi]",
                                                      "logger.wandb=false")),),
                     table="table1", row="tiny", main="q_g", dataset="lytro", paper_samples=1000,
                     samples_note="stand-in: 1,000 samples")
    monkeypatch.setenv("PYTHONPATH", python_env()["PYTHONPATH"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    return SimpleNamespace(data=data, weights=weights, root=root, specs={"tiny": spec}, out=tmp_path / "out")


def _main(fx, *extra, report=None):
    argv = ["--paper", "tiny", "--data", str(fx.data), "--weights", str(fx.weights), "--out", str(fx.out),
            "--profile", "smoke", "--skip-released", "--program", str(RUN_TINY), *extra]
    return trained.main(argv + (["--report", str(report)] if report else []), specs=fx.specs, root=fx.root)


@pytest.mark.slow  # a training child process (tiny, 4 steps) and the scoring: ~30 s on 2 busy cores
def test_trains_scores_writes_and_a_rerun_reuses_the_run(fixture, capsys):
    fx = fixture
    assert _main(fx) == 0
    paper = fx.out / "tiny"
    err = capsys.readouterr().err
    assert "$ " in err and "--config" in err and f"run_dir={paper / 'run'}" in err  # the command, printed
    assert f"run_dir={paper / 'run'}" in (paper / "train.log").read_text()  # the child's output, after its command
    rows = list(csv.DictReader((paper / "trained.csv").read_text().splitlines()))
    assert list(rows[0]) == ["paper", "table", "dataset", "row", "metric", "ours", "printed", "rel_diff"]
    kinds = {(r["row"], r["metric"]) for r in rows}
    for row in ("cpu", "init", "average", "published:cnn"):
        assert {(row, "q_g"), (row, "q_nmi")} <= kinds, row
    assert ("printed", "q_g") in kinds and not any(r["row"].startswith("released") for r in rows)  # --skip-released
    by = {(r["row"], r["metric"]): r for r in rows}
    cpu = by[("cpu", "q_g")]
    assert float(cpu["printed"]) == 0.5  # our row against the paper's own printed row
    assert float(cpu["rel_diff"]) == pytest.approx((float(cpu["ours"]) - 0.5) / 0.5, abs=1e-5)
    assert by[("published:cnn", "q_g")]["printed"] == "0.6" and by[("init", "q_g")]["printed"] == ""
    # the average row is the mean of the sources: exactly what the published stand-in images hold
    # (up to 8-bit rounding: the report scores the float output, parity the saved file)
    assert float(by[("average", "q_g")]["ours"]) == pytest.approx(float(by[("published:cnn", "q_g")]["ours"]), abs=0.02)
    rec = json.loads((paper / "trained.json").read_text())
    st = rec["stages"][0]
    assert st["steps"] == 4 and st["batch_size"] == 2 and st["seed"] == 0 and st["seconds"] > 0 and not st["reused"]
    assert st["samples"] == 8 and rec["fraction_of_paper_samples"] == 8 / 1000  # smoke: 4 steps x batch 2
    assert st["steps_per_s"] == pytest.approx(4 / st["seconds"])
    md = (paper / "trained.md").read_text()
    assert "| **cpu** |" in md and "of the paper's 1,000" in md and "0.80%" in md  # 4 steps x 2 = 8 samples
    assert (paper / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    # rerun: the finished run is reused, never retrained (the checkpoint and the train log are untouched)
    ckpt = paper / "run" / "checkpoints" / "last.ckpt"
    stamp, log = ckpt.stat().st_mtime_ns, (paper / "train.log").read_text()
    assert _main(fx) == 0
    assert ckpt.stat().st_mtime_ns == stamp and (paper / "train.log").read_text() == log
    assert "reusing the finished run" in capsys.readouterr().err
    assert json.loads((paper / "trained.json").read_text())["stages"][0]["reused"] is True
    # other settings into the same --out: refused, nothing retrained
    assert _main(fx, "--budget", "0.5") == 2
    assert "finished with other settings" in capsys.readouterr().err and ckpt.stat().st_mtime_ns == stamp


@pytest.mark.slow  # two training child processes (tiny, 4 + 4 steps) and their scoring: ~40 s on 2 busy cores
def test_a_longer_run_continues_the_finished_one_for_real(fixture):
    """--budget 2 --resume-from OUT: run.py resumes OUT's last.ckpt (step 4) and trains to step 8 in OUT2."""
    fx = fixture
    st = fx.specs["tiny"].stages[0]
    fx.specs["tiny"] = PaperSpec(**{**vars(fx.specs["tiny"]),  # 4 steps an epoch: let the budget add epochs
                                    "stages": (Stage("run", st.config, st.overrides + ("trainer.max_epochs=4",)),)})
    assert _main(fx) == 0
    out2 = fx.out.parent / "out2"
    argv = ["--paper", "tiny", "--data", str(fx.data), "--weights", str(fx.weights), "--out", str(out2), "--budget", "2",
            "--resume-from", str(fx.out), "--profile", "smoke", "--skip-released", "--program", str(RUN_TINY)]
    assert trained.main(argv, specs=fx.specs, root=fx.root) == 0
    rec = json.loads((out2 / "tiny" / "trained.json").read_text())
    stage = rec["stages"][0]
    assert stage["resumed_from_step"] == 4 and stage["steps"] == 8 and stage["max_steps"] == 8
    assert stage["continued_from"] == str((fx.out / "tiny" / "run").resolve()) and "ckpt_path=last" in stage["command"]
    assert rec["resumed_from"] == str(fx.out.resolve())
    first = torch.load(fx.out / "tiny" / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    second = torch.load(out2 / "tiny" / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert first["global_step"] == 4 and second["global_step"] == 8  # OUT's run untouched, OUT2's trained on
    assert any(not torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"])


def test_a_continued_run_draws_one_curve_from_both_logs(tmp_path):
    """The learning curve of a --resume-from run: the finished run's log (steps 0-9), then its own (10-19)."""
    for name, rows in (("first", "0,9,0.5,\n0,9,,0.6\n"), ("second", "1,19,0.4,\n1,19,,0.65\n")):
        (tmp_path / name / "csv").mkdir(parents=True)
        (tmp_path / name / "csv" / "metrics.csv").write_text("epoch,step,train/loss,val/q_g\n" + rows)
    merged = trained_report._merged([trained_report.read_curves(tmp_path / n / "csv" / "metrics.csv")
                                     for n in ("first", "second")])
    assert merged["val/q_g"] == ([9, 19], [0.6, 0.65]) and merged["train/loss"] == ([9, 19], [0.5, 0.4])
    png = trained_report.draw_learning_curve({"run": [tmp_path / "first", tmp_path / "second"]}, "q_g", tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_no_cpu_schedule_depends_on_the_run_length():
    """--resume-from's premise: a continued run follows the schedule of a longer run from scratch,
    which holds while every cpu profile's schedule steps per epoch, whatever max_steps/max_epochs."""
    from mfif.config import load_config

    for paper, spec in PAPERS.items():
        for st in spec.stages:
            cfg = load_config(st.config, ["profile=cpu"])
            assert cfg.optim.scheduler in ("none", "step"), (paper, st.config, cfg.optim.scheduler)  # cosine reads max_epochs


def test_a_run_killed_half_way_resumes_from_last(tmp_path, monkeypatch):
    """No DONE but a last.ckpt: the same command again, with ckpt_path=last (the child is not started here)."""
    from ablations.sweeps import runner
    from ablations.sweeps.collect import write_point_info
    from ablations.sweeps.runner import Result

    out, st = tmp_path / "out", Stage("run", "tiny.yaml")
    argv = ["python", "run.py", "--config", "tiny.yaml", "profile=smoke", f"run_dir={out / 'tiny' / 'run'}"]
    (out / "tiny" / "run" / "checkpoints").mkdir(parents=True)
    (out / "tiny" / "run" / "checkpoints" / "last.ckpt").write_bytes(b"not read: the step is 0 then")
    write_point_info(out / "tiny" / "run", {"settings": trained._settings(argv, out)})
    seen = []

    def fake_run_jobs(jobs, **kw):
        seen.extend(jobs)
        jobs[0].log_path.write_text("error: training diverged at step 3: non-finite loss; last finite checkpoint: x\n")
        return [Result(jobs[0].key, "failed", 3, 1.0, jobs[0].log_path)], None

    monkeypatch.setattr(runner, "run_jobs", fake_run_jobs)
    with pytest.raises(trained.TrainingFailed, match=r"failed \(exit 3\): error: training diverged at step 3"):
        trained.train_stage("tiny", st, argv, out, say=lambda m: None)
    assert seen[0].argv == argv + ["ckpt_path=last"] and seen[0].log_path == out / "tiny" / "train.log"
    # the same folder with other settings is refused before anything starts
    seen.clear()
    with pytest.raises(trained.TrainedError, match="unfinished run with other settings"):
        trained.train_stage("tiny", st, argv[:-2] + ["profile=demo", argv[-1]], out, say=lambda m: None)
    assert not seen


def test_resume_from_continues_a_finished_run_to_a_longer_budget(tmp_path, monkeypatch):
    """--resume-from: a finished run's last.ckpt (step 4) continues to max_steps 8 in the new --out;
    only trainer.max_steps may differ; a run that already has the steps, or none, is refused."""
    from ablations.sweeps import runner
    from ablations.sweeps.collect import mark_done
    from ablations.sweeps.runner import Result

    src, out, st = tmp_path / "out", tmp_path / "out2", Stage("run", "tiny.yaml")

    def argv(root, *extra):
        return ["python", "run.py", "--config", "tiny.yaml", "profile=smoke", *extra, f"run_dir={root / 'tiny' / 'run'}"]

    (src / "tiny" / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.ones(2)}, "global_step": 4}, src / "tiny" / "run" / "checkpoints" / "last.ckpt")
    mark_done(src / "tiny" / "run", {"settings": trained._settings(argv(src), src)})
    seen = []

    def fake_run_jobs(jobs, **kw):
        seen.extend(jobs)
        torch.save({"state_dict": {}, "global_step": 8}, jobs[0].run_dir / "checkpoints" / "last.ckpt")
        jobs[0].on_done(2.0)
        return [Result(jobs[0].key, "done", 0, 2.0, jobs[0].log_path)], None

    monkeypatch.setattr(runner, "run_jobs", fake_run_jobs)
    for bad, message in ((argv(out, "trainer.max_steps=8", "data.x=1"), "other settings than the run length"),
                         (argv(out, "trainer.max_steps=4"), r"already trained 4 steps \(this run asks for 4\)")):
        with pytest.raises(trained.TrainedError, match=message):
            trained.train_stage("tiny", st, bad, out, say=lambda m: None, resume_from=src)
    with pytest.raises(trained.TrainedError, match="no finished run with checkpoints/last.ckpt"):
        trained.train_stage("tiny", st, argv(out, "trainer.max_steps=8"), out, say=lambda m: None, resume_from=tmp_path)
    assert not seen and not (out / "tiny" / "run" / "checkpoints").exists()  # refused before anything was written
    rec = trained.train_stage("tiny", st, argv(out, "trainer.max_steps=8"), out, say=lambda m: None, resume_from=src)
    assert seen[0].argv[-1] == "ckpt_path=last" and rec["resumed_from_step"] == 4 and rec["steps"] == 8
    assert rec["continued_from"] == str((src / "tiny" / "run").resolve())
    assert trained_report.stage_figures({**rec, "batch_size": 2})["steps_per_s"] == pytest.approx(4 / 2.0)  # its own steps


def test_report_collects_every_paper_with_its_figures(tmp_path):
    rec = {"paper": "tiny", "table": "table1", "dataset": "lytro", "row": "tiny", "main": "q_g", "metrics": ["q_g"],
           "unscored": [], "profile": "cpu", "budget": 1.0, "paper_samples": 100, "samples_note": "Sec. 1",
           "notes": ["a note"], "citation": "Tiny",
           "studies": {"table8": {"kind": "post", "command": f"python {ROOT}/ablations/sweep.py --runs-root "
                                  f"{tmp_path}/out/tiny/studies", "table_md": f"- Ours: under {tmp_path}/out/tiny/studies"},
                       "table9": {"kind": "train", "budget": 0.25, "table_md": "- t9",
                                  "command": "python ablations/sweep.py a.yaml profile=cpu trainer.max_steps=38"}},
           "data": "/d/data", "weights": "/d/w", "out": str(tmp_path / "out"),
           "stages": [{"stage": "run", "config": "tiny.yaml", "command": f"/opt/venv/bin/python3 {ROOT}/experiments/run.py data.root=/d/data "
                                  f"data.weights=/d/w/x.pkl run_dir={tmp_path}/out/tiny/run", "seed": 3, "seconds": 120.0,
                       "steps": 10, "resumed_from_step": 0, "batch_size": 2, "reused": False}],
           "cells": [{"row": "cpu", "metric": "q_g", "ours": 0.6, "printed": 0.5},
                     {"row": "init", "metric": "q_g", "ours": 0.2, "printed": None},
                     {"row": "average", "metric": "q_g", "ours": 0.65, "printed": None},
                     {"row": "printed", "metric": "q_g", "ours": None, "printed": 0.5}]}
    out = tmp_path / "out"
    (out / "tiny").mkdir(parents=True)
    (out / "tiny" / "trained.json").write_text(json.dumps(rec))
    (out / "tiny" / "learning_curve.png").write_bytes(b"\x89PNG fake")
    report = tmp_path / "ablations" / "trained.md"
    assert trained_report.build_report(out, report) == report
    text = report.read_text()
    assert "(trained/tiny_curve.png)" in text and (report.parent / "trained" / "tiny_curve.png").is_file()
    assert "seed 3" in text and "2.0 min" in text and "0.083 steps/s" in text  # 10 steps / 120 s
    assert "20 samples seen" in text and "**20.00%**" in text  # 10 x 2 of 100
    # 0.6 beats init 0.2 but not the average 0.65: said in the summary and under the table
    assert "**does not beat** average (0.6500)" in text and "| **no** |" in text
    assert "+20.00% on `q_g`" in text
    # the machine's folders become the placeholders the header defines (the report is committed)
    assert "`python experiments/run.py data.root=DATA data.weights=WEIGHTS/x.pkl run_dir=OUT/tiny/run`" in text
    assert "`python ablations/sweep.py --runs-root OUT/tiny/studies`" in text and "- Ours: under OUT/tiny/studies" in text
    assert "/d/" not in text and str(tmp_path) not in text and str(ROOT) not in text
    # a training study says what each point trained (--study-budget)
    assert "trains from scratch with profile `cpu` at budget 0.25 of its steps (`trainer.max_steps=38`)" in text
    assert "at budget" not in text.split("study table8")[1].split("study table9")[0]  # a post study trains nothing
    # what is not in the record is named with its command, not left out silently
    assert "**Not run here yet**" in text and "--out OUT --paper gacn`" in text
    assert "--paper msasn --study table6`" in text and "--study table8`" not in text  # table8 is in the record
    with pytest.raises(trained_report.ReportError, match="no <paper>/trained.json"):
        trained_report.build_report(tmp_path / "empty", tmp_path / "r.md")

    # --longer: the same paper at budget 2, continued from OUT, shown beside the budget-1 row
    out2 = tmp_path / "out2"
    longer = {**rec, "budget": 2.0, "out": str(out2), "resumed_from": str(out), "studies": {},
              "cells": [{**c, "ours": 0.62} if c["row"] == "cpu" else c for c in rec["cells"]],
              "stages": [{**rec["stages"][0], "steps": 20, "resumed_from_step": 10, "seconds": 60.0,
                          "continued_from": f"{out}/tiny/run",
                          "command": f"python {ROOT}/experiments/run.py run_dir={out2}/tiny/run ckpt_path=last"}]}
    (out2 / "tiny").mkdir(parents=True)
    (out2 / "tiny" / "trained.json").write_text(json.dumps(longer))
    (out2 / "tiny" / "learning_curve.png").write_bytes(b"\x89PNG fake 2")
    text = trained_report.build_report(out, report, [out2]).read_text()
    part = text.split("tiny: a longer run (budget 2)")[1]
    assert "--report trained.md --longer OUT2`" in text and "`OUT2`: `--out` of a longer run" in text
    assert "`python ablations/trained.py --paper tiny --budget 2 --resume-from OUT --data DATA --weights WEIGHTS --out OUT2`" in part
    assert "| cpu, budget 1 (10 steps) | 0.6000 |" in part and "| **cpu, budget 2 (20 steps)** | 0.6200 |" in part
    assert "On `q_g`: 0.6000 -> 0.6200 (+3.33%); against the printed row +20.00% at budget 1, +24.00% at budget 2." in part
    assert "20 steps (resumed at step 10 of `OUT/tiny/run`, continued), 0.167 steps/s" in part  # 10 new steps / 60 s
    assert "`python experiments/run.py run_dir=OUT2/tiny/run ckpt_path=last`" in part
    assert (report.parent / "trained" / "tiny_curve_budget2.png").read_bytes() == b"\x89PNG fake 2"
    assert "(trained/tiny_curve_budget2.png)" in part and str(tmp_path) not in text
    (out2 / "tiny" / "trained.json").write_text(json.dumps({**longer, "budget": 1.0}))
    with pytest.raises(trained_report.ReportError, match="budget 1, the same as --out"):
        trained_report.build_report(out, report, [out2])
    (out2 / "tiny" / "trained.json").write_text(json.dumps({**longer, "paper": "other"}))
    with pytest.raises(trained_report.ReportError, match="other has no record in --out"):
        trained_report.build_report(out, report, [out2])


def test_shape_comparison_best_position_and_kendall_tau_by_hand():
    rows = [tables.Row("r1", {"a": 1.0, "b": 3.0}, {"a": 0.1, "b": 0.3}),
            tables.Row("r2", {"a": 2.0, "b": 2.0}, {"a": 0.3, "b": 0.1}),
            tables.Row("r3", {"a": 3.0, "b": 1.0}, {"a": 0.2, "b": 0.2}),
            tables.Row("printed only", {"a": 9.0}, None)]
    keys = {"a": lambda v: v, "b": lambda v: -v}
    shape = tables.shape_comparison(rows, ["a", "b"], keys)
    # a: printed order r3 > r2 > r1, ours r2 > r3 > r1: pairs (1,2) (1,3) agree, (2,3) disagrees -> tau = 1/3
    assert shape["a"] == {"best_ours": ["r2"], "best_printed": ["r3"], "tau": pytest.approx(1 / 3), "n": 3}
    # b (lower is better): printed r3 best, ours r2 best; ordering r3<r2<r1 vs r2<r3<r1: tau = 1/3 again
    assert shape["b"]["best_ours"] == ["r2"] and shape["b"]["best_printed"] == ["r3"]
    assert shape["b"]["tau"] == pytest.approx(1 / 3)
    same = tables.shape_comparison(rows[:3], ["a"], {"a": lambda v: v}, ours_key=lambda r: r.paper)
    assert same["a"]["tau"] == pytest.approx(1.0) and same["a"]["best_ours"] == same["a"]["best_printed"]
    lines = tables.shape_markdown(shape)
    assert any("| a | r2 | r3 | no | 0.33 (3) |" in ln for ln in lines)
    assert tables.shape_comparison(rows[:1], ["a"], keys) == {}  # fewer than 3 rows with both: no shape


def test_study_command_post_and_train(tmp_path):
    args = SimpleNamespace(profile="cpu", data=str(tmp_path), budget=0.5, program=None)
    (tmp_path / "lytro").mkdir()
    cmd = trained_studies.study_command("table8", PAPERS["msasn"], args, tmp_path / "out", ROOT, {"run": "best.ckpt"})
    assert cmd[2].endswith("ablations/msasn/table8.yaml") and "mode=test" in cmd and "ckpt_path=best.ckpt" in cmd
    assert f"data.benchmark={tmp_path}/lytro" in cmd and "profile=cpu" in cmd
    assert cmd[cmd.index("--runs-root") + 1] == str(tmp_path / "out" / "msasn" / "studies")
    assert set(STUDIES) == {"table8", "fig7", "table6", "udpnet_table4", "ufafuse_table4"}
    assert expand("model.vae_checkpoint={ckpt:vae}", tmp_path, {"vae": "v.ckpt"}) == "model.vae_checkpoint=v.ckpt"


def test_udpnet_table4_tests_on_the_held_out_mf_voc_triplets(shared_dir, tmp_path):
    """Real-MFF stand-in: a benchmark folder of links to MF-VOC's 146 held-out triplets, ground truth included."""
    from mfif.scenes import discover_scenes

    if not (shared_dir / "data" / "train" / "mf_voc").is_dir():
        pytest.skip("no MF-VOC in the test data")
    args = SimpleNamespace(profile="cpu", data=str(shared_dir / "data"), budget=0.5, program=None)
    cmd = trained_studies.study_command("udpnet_table4", PAPERS["udpnet"], args, tmp_path, ROOT, {})
    view = tmp_path / "udpnet" / "studies" / "mf_voc_test"
    assert f"data.benchmark={view}" in cmd and "metrics=[psnr,ssim]" in cmd
    assert any(a.startswith("trainer.max_steps=") for a in cmd)  # --budget 0.5 of the cpu profile's steps
    scenes = discover_scenes(view)
    assert len(scenes) == 146 and all(s.gt is not None and len(s.sources) == 2 for s in scenes)
    assert scenes[0].name == "2007_000032_1" and scenes[0].gt.resolve().parent.name == "groundtruth"


def test_study_budget_scales_each_point_not_the_model(tmp_path):
    """--study-budget F: every point of a training study trains F of the cpu profile's steps (MSASN: 150)."""
    (tmp_path / "lytro").mkdir()
    args = SimpleNamespace(profile="cpu", data=str(tmp_path), budget=1.0, study_budget=0.25, program=None)
    cmd = trained_studies.study_command("table6", PAPERS["msasn"], args, tmp_path / "out", ROOT, {})
    assert "trainer.max_steps=38" in cmd  # round(150 x 0.25)
    assert trained_studies.study_budget(args) == 0.25
    args.study_budget = None  # default: the model's --budget (1.0: the profile as it is, no override)
    cmd = trained_studies.study_command("table6", PAPERS["msasn"], args, tmp_path / "out", ROOT, {})
    assert not any(a.startswith("trainer.max_steps=") for a in cmd) and trained_studies.study_budget(args) == 1.0


@pytest.mark.parametrize("change, message", [
    ({"--paper": "nosuch"}, "--paper nosuch: unknown"),
    ({"--study": "nosuch"}, "--study nosuch: unknown"),
    ({"--study-budget": "0"}, "--study-budget 0.0: expected a fraction > 0"),
    ({"--data": "{tmp}/missing"}, "--data {tmp}/missing: no such folder"),
    ({"--skip-released": None}, "missing file tiny_official.pkl"),  # the released row needs its weights
    ({"--resume-from": "{tmp}/missing"}, "--resume-from {tmp}/missing: no such folder"),
    ({"--resume-from": "{tmp}/out"}, "the same folder as --out"),
    ({"--longer": "{tmp}"}, "--longer: only with --report"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(fixture, capsys, change, message):
    fx = fixture
    opts = {"--paper": "tiny", "--data": str(fx.data), "--weights": str(fx.weights), "--out": str(fx.out),
            "--profile": "smoke", "--skip-released": ""}
    opts.update({k: v.replace("{tmp}", str(fx.data.parent)) for k, v in change.items() if v is not None})
    for k in (k for k, v in change.items() if v is None):
        del opts[k]
    argv = [t for k, v in opts.items() for t in ([k, v] if v else [k])]
    assert trained.main(argv, specs=fx.specs, root=fx.root) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message.replace("{tmp}", str(fx.data.parent)) in err[0]
    assert not fx.out.exists()


@pytest.mark.slow  # ablations/sweep.py as a child process (its points are instant stand-ins)
def test_study_runs_the_sweep_and_builds_its_table_with_the_shape(fixture, monkeypatch):
    """A training study through ablations/sweep.py (a stand-in program writes each point's report at once)."""
    from sweep_stand_in import write_stand_in

    fx = fixture
    prog = write_stand_in(fx.root / "stand_in.py", "a point's report: q_g grows with model.width", """\
        w = int(kv["model.width"])
        (rd / "metrics.csv").write_text(f"image,q_g\\nmean,{0.1 * w}\\n")
        """)
    tiny = fx.root / "ablations" / "tiny"
    (tiny / "table9.yaml").write_text(
        f"name: tiny-table9\nmethod: grid\nprogram: {RUN_TINY}\nmetric: {{name: test/q_g, goal: maximize}}\n"
        f"parameters:\n  model.width: {{values: [2, 3, 4]}}\n"
        f"command:\n  - ${{env}}\n  - ${{interpreter}}\n  - ${{program}}\n  - --config\n  - {TINY}\n  - ${{args_no_hyphens}}\n")
    rows = "".join(f"  - {{label: 'w{w}', overrides: {{model.width: {w}}}, paper: {{q_g: {p}}}}}\n"
                   for w, p in ((2, 0.3), (3, 0.1), (4, 0.2)))
    (tiny / "table9.paper.yaml").write_text(f"citation: Tiny Table 9\nsweep: table9.yaml\ncolumns: [q_g]\nrows:\n{rows}")
    monkeypatch.setitem(STUDIES, "tiny_table9", trained_studies.Study("tiny", "table9.yaml", "train"))
    args = SimpleNamespace(profile="smoke", data=str(fx.data), budget=1.0, program=str(prog))
    rec = trained_studies.run_study("tiny_table9", fx.specs["tiny"], args, fx.out, fx.root, {}, say=lambda m: None)
    assert rec["rc"] == 0 and rec["kind"] == "train" and "ablations/sweep.py" in rec["command"]
    assert len(list((fx.out / "tiny" / "studies" / "tiny-table9").glob("*/DONE"))) == 3  # the runner's run folders
    # ours 0.2 < 0.3 < 0.4 (w2 < w3 < w4), printed w2 > w4 > w3: best w4 vs w2; pairs: (2,3) disagree,
    # (2,4) disagree, (3,4) agree -> tau = -1/3
    assert "| q_g | w4 | w2 | no | -0.33 (3) |" in rec["table_md"]
    assert (fx.out / "tiny" / "studies" / "tables" / "tiny" / "table9.md").is_file()
