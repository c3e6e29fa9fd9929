"""W&B visibility: a smoke fit logs fused images, decision maps and a per-image test table to its
offline run; ``ablations/tables.py`` draws the curve figures and logs them; the pictures' layout."""
from __future__ import annotations

import csv
import json
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_method  # noqa: F401  (registers the tiny decision-map method)
from ablations.sweeps import plots, tables
from mfif.viz import curve_figure, make_grid, make_map_grid, metric_table_rows, tile_rows

ROOT = Path(__file__).resolve().parent.parent


def _offline_run(run_dir: Path) -> Path:
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def test_smoke_fit_logs_images_maps_and_per_image_table(tmp_path, monkeypatch):
    from experiments.run import run
    from mfif.config import load_config

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = load_config(ROOT / "tests" / "configs_tiny.yaml", [
        "profile=smoke", f"run_dir={tmp_path}", "trainer.max_steps=2", "trainer.limit_train_batches=2",
        "trainer.progress=none", "metrics=[psnr,q_g]", "logger.log_images=2"])
    run(cfg)
    import wandb

    wandb.finish()  # a CLI process ends here; flush the offline run's record stream
    wb = _offline_run(tmp_path)
    media = wb / "files" / "media"
    examples = list((media / "images" / "val").glob("examples_*.png"))
    maps = list((media / "images" / "val").glob("decision_maps_*.png"))
    assert len(examples) == 1 and len(maps) == 1
    # smoke data: 32 px validation crops, 2 samples; maps: N = 2 tiles per row, 4 px gaps
    assert np.asarray(Image.open(maps[0])).shape == (2 * 32 + 4, 2 * 32 + 4, 3)
    assert np.asarray(Image.open(examples[0])).shape == (2 * 32 + 4, 4 * 32 + 3 * 4, 3)  # A | B | fused | GT
    tables_ = list((media / "table" / "test").glob("per_image_*.table.json"))
    assert len(tables_) == 1
    doc = json.loads(tables_[0].read_text())
    assert doc["columns"][0] == "image" and set(doc["columns"][1:]) == {"psnr", "q_g"}
    assert len(doc["data"]) == 2 and all(r[0].startswith("test_") for r in doc["data"])
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:  # the epoch values are the per-image means
        logged = {k: float(v) for row in csv.DictReader(f) for k, v in row.items() if k.startswith("test/") and v}
    for j, name in enumerate(doc["columns"][1:], 1):
        assert np.mean([r[j] for r in doc["data"]]) == pytest.approx(logged[f"test/{name}"], rel=1e-5)
    # the run's record stream (written by W&B's service, after finish() returns) names every key and file
    wanted = (b"val/examples", b"val/decision_maps", b"test/per_image", maps[0].name.encode(), tables_[0].name.encode())
    stream, t0 = next(wb.glob("run-*.wandb")), time.monotonic()
    while not all(k in stream.read_bytes() for k in wanted) and time.monotonic() - t0 < 60:
        time.sleep(0.2)
    assert [k for k in wanted if k not in stream.read_bytes()] == []


def _side(tmp: Path) -> Path:
    (tmp / "thr.yaml").write_text(textwrap.dedent(f"""\
        name: thr
        method: grid
        program: tests/run_tiny.py
        parameters:
          model.width: {{values: [4, 2, 3]}}
        command: [ "${{env}}", "${{interpreter}}", "${{program}}", --config, {ROOT / 'tests' / 'configs_tiny.yaml'}, "${{args_no_hyphens}}" ]
        """))
    side = tmp / "thr.paper.yaml"
    side.write_text(textwrap.dedent("""\
        citation: "Tiny, Table 9 (test)"
        sweep: thr.yaml
        columns: [psnr, lpips]
        plot: {x: model.width, xlabel: width}
        rows:
          - {label: "w4", overrides: {model.width: 4}, paper: {psnr: 31.0, lpips: 0.2}}
          - {label: "w2", overrides: {model.width: 2}, paper: {psnr: 30.0, lpips: 0.3}}
          - {label: "w3", overrides: {model.width: 3}, paper: {psnr: 32.0}}
        """))
    for w, psnr in ((2, 29.5), (4, 30.5)):  # width 3 has no run
        rd = tmp / "runs" / "thr" / f"width-{w}"
        rd.mkdir(parents=True)
        (rd / "metrics.csv").write_text(f"image,psnr,lpips\nmean,{psnr},0.25\n")
    return side


def test_curve_data_known_values(tmp_path):
    side = _side(tmp_path)
    table = tables.make_table(side, "local", tmp_path / "runs")
    xs, series, metrics = plots.curve_data(table, tables.load_side(side))
    assert xs == [2, 3, 4] and metrics == ["psnr", "lpips"]  # numbers sorted, the table's columns
    assert series["ours"]["psnr"] == [29.5, None, 30.5]  # no run: a gap, never 0
    assert series["paper"]["psnr"] == [30.0, 32.0, 31.0] and series["paper"]["lpips"] == [0.3, None, 0.2]
    bad = dict(tables.load_side(side), plot={"x": "model.depth"})
    with pytest.raises(tables.SweepError, match="plot key 'model.depth'"):
        plots.curve_data(table, bad)


def test_tables_draw_curves_and_log_them_to_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    side = _side(tmp_path)
    out = tmp_path / "out"
    assert tables.main([str(side), "--runs-root", str(tmp_path / "runs"), "--out", str(out), "--wandb"]) == 0
    png = out / tmp_path.name / "thr.png"
    assert (out / tmp_path.name / "thr.md").is_file()
    img = np.asarray(Image.open(png))
    assert img.ndim == 3 and img.shape[1] > img.shape[0]  # two panels side by side
    wb = _offline_run(out)
    assert list((wb / "files" / "media" / "images").rglob("curves_*.png"))
    doc = json.loads(next((wb / "files" / "media" / "table").rglob("table_*.table.json")).read_text())
    assert doc["columns"][:4] == ["row", "psnr ours", "psnr paper", "psnr Δ"]
    assert [r[0] for r in doc["data"]] == ["w4", "w2", "w3"] and doc["data"][1][1] == "29.5"  # the paper prints one decimal
    no_plot = tmp_path / "np.paper.yaml"
    no_plot.write_text(side.read_text().replace("plot: {x: model.width, xlabel: width}\n", ""))
    assert tables.main([str(no_plot), "--runs-root", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert not (out / tmp_path.name / "np.png").exists()


def test_map_grid_and_tiles():
    maps = torch.zeros(2, 3, 1, 5, 6)
    maps[:, 1] = 1.0  # source 2 taken everywhere
    g = make_map_grid(maps, gap=2)
    assert g.shape == (2 * 5 + 2, 3 * 6 + 2 * 2, 3) and g.dtype == np.uint8
    assert (g[:5, 8:14] == 255).all() and (g[:5, :6] == 0).all()  # tile 2 white, tile 1 black
    with pytest.raises(ValueError, match=r"\[B, N, 1, H, W\]"):
        make_map_grid(torch.zeros(2, 3, 5, 6))
    with pytest.raises(ValueError, match="all tiles must be"):
        tile_rows([[np.zeros((2, 2, 3), np.uint8), np.zeros((3, 2, 3), np.uint8)]])
    grid = make_grid(torch.rand(1, 2, 3, 4, 4), torch.rand(1, 3, 4, 4), torch.rand(1, 1, 4, 4))
    assert grid.shape == (4, 4 * 4 + 3 * 4, 3)
    cols, data = metric_table_rows([{"image": "a", "psnr": 1.0}, {"image": "b", "q_g": 0.5}])
    assert cols == ["image", "psnr", "q_g"] and data == [["a", 1.0, None], ["b", None, 0.5]]


def test_curve_figure_panels():
    fig = curve_figure(["dice", "focal"], {"ours": {"q_g": [0.7, None]}}, ["q_g", "q_y"], xlabel="loss",
                       panel_notes={"q_y": "lower is better"})
    axes = [ax for ax in fig.axes if ax.axison]
    assert len(axes) == 2 and [ax.get_title() for ax in axes] == ["q_g", "q_y (lower is better)"]
    assert len(axes[0].lines) == 1 and len(axes[1].lines) == 0  # no values: an empty panel, not zeros
