"""experiments/evaluate.py on a tiny generated benchmark: tables, ARank, and bad inputs."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, python_env
from experiments.evaluate import main
from mfif.metrics.evaluation import EvaluationError, arank, method_means

METRICS = "q_g,q_nmi,q_cv,q_sf,sen"
SCENES = ("scene-01", "scene-02", "scene-03")


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    """3 scenes of lytro-style sources (``scene-0N-A/-B.png``) and two methods' outputs."""
    rng = np.random.default_rng(0)
    (tmp_path / "bench").mkdir()
    (tmp_path / "avg").mkdir()
    (tmp_path / "max").mkdir()
    for name in SCENES:
        a = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
        b = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
        Image.fromarray(a).save(tmp_path / "bench" / f"{name}-A.png")
        Image.fromarray(b).save(tmp_path / "bench" / f"{name}-B.png")
        Image.fromarray(((a.astype(int) + b) // 2).astype(np.uint8)).save(tmp_path / "avg" / f"{name}.png")
        Image.fromarray(np.maximum(a, b)).save(tmp_path / "max" / f"{name}.jpg")
    return tmp_path


def _args(root: Path, *extra: str, fused=("avg", "max"), metrics=METRICS) -> list[str]:
    out = ["--sources", str(root / "bench"), "--out", str(root / "res.csv"), "--metrics", metrics, "--quiet"]
    for f in fused:
        out += ["--fused", str(root / f)]
    return out + list(extra)


def _outputs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_file())


def test_tables_and_arank(bench, capsys):
    assert main(_args(bench)) == 0
    rows = list(csv.DictReader((bench / "res.csv").open()))
    assert [r["method"] for r in rows] == ["avg"] * 4 + ["max"] * 4
    assert [r["image"] for r in rows[:4]] == [*SCENES, "mean"]
    assert set(rows[0]) == {"method", "image", "arank", *METRICS.split(",")}
    for method in ("avg", "max"):
        per = [r for r in rows if r["method"] == method]
        for m in METRICS.split(","):
            vals = [float(r[m]) for r in per[:3]]
            assert float(per[3][m]) == pytest.approx(sum(vals) / 3, rel=1e-12)
    # ARank by hand: for each metric rank the two methods' means (rank 1 = best).
    means = {r["method"]: {m: float(r[m]) for m in METRICS.split(",")} for r in rows if r["image"] == "mean"}
    expect = {"avg": 0.0, "max": 0.0}
    for m, better in (("q_g", max), ("q_nmi", max), ("q_cv", min), ("sen", max)):
        best = better(means, key=lambda k: means[k][m])
        for k in expect:
            expect[k] += 1 if k == best else 2
    best_sf = min(means, key=lambda k: abs(means[k]["q_sf"]))  # Q_SF: closer to 0 is better
    for k in expect:
        expect[k] += 1 if k == best_sf else 2
    got = {r["method"]: float(r["arank"]) for r in rows if r["image"] == "mean"}
    assert got == pytest.approx({k: v / 5 for k, v in expect.items()})
    assert all(r["arank"] == "" for r in rows if r["image"] != "mean")
    md = (bench / "res.md").read_text()
    assert "| method | q_g ↑ | q_nmi ↑ | q_cv ↓ | q_sf (->0) | sen ↑ | ARank ↓ |" in md
    assert "## avg" in md and "| scene-02 |" in md
    assert "ARank" in capsys.readouterr().out


def test_single_method_has_no_arank_and_overwrite(bench):
    assert main(_args(bench, fused=("avg",))) == 0
    header = next(csv.reader((bench / "res.csv").open()))
    assert "arank" not in header
    assert main(_args(bench, fused=("avg",), metrics="sen")) == 2  # exists, no --overwrite
    assert main(_args(bench, "--overwrite", fused=("avg",), metrics="sen")) == 0
    assert next(csv.reader((bench / "res.csv").open())) == ["method", "image", "sen"]


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_sources", "sources folder not found"),
        ("missing_fused", "fused folder not found"),
        ("unmatched_scene", "no fused image for scene 'scene-02'"),
        ("unknown_metric", "unknown metric 'q_gg'"),
        ("unreadable_image", "scene-03.png"),
        ("unreadable_source", "scene-01-B.png"),
        ("wrong_size", "size mismatch in scene 'scene-01'"),
        ("fr_without_gt", "need a ground truth"),
    ],
)
def test_bad_inputs_fail_cleanly(bench, case, message, capsys):
    args = _args(bench)
    if case == "missing_sources":
        args[1] = str(bench / "nope")
    elif case == "missing_fused":
        args = _args(bench, fused=("avg", "nope"))
    elif case == "unmatched_scene":
        (bench / "max" / "scene-02.jpg").unlink()
    elif case == "unknown_metric":
        args = _args(bench, metrics="q_g,q_gg")
    elif case == "unreadable_image":
        (bench / "avg" / "scene-03.png").write_bytes(b"not an image")
    elif case == "unreadable_source":
        (bench / "bench" / "scene-01-B.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    elif case == "wrong_size":
        Image.new("RGB", (20, 20)).save(bench / "avg" / "scene-01.png")
    elif case == "fr_without_gt":
        args = _args(bench, metrics="q_g,psnr")
    before = _outputs(bench)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert _outputs(bench) == before  # nothing (not even a temp file) written


def test_arank_ties_and_nan():
    table = {"a": {"q_g": 0.5, "q_cv": 1.0}, "b": {"q_g": 0.5, "q_cv": 2.0}, "c": {"q_g": float("nan"), "q_cv": 0.5}}
    r = arank(table)
    # q_g: a, b tie for ranks 1-2 (1.5 each), c (NaN) last (3); q_cv (lower better): c 1, a 2, b 3.
    assert r == pytest.approx({"a": (1.5 + 2) / 2, "b": (1.5 + 3) / 2, "c": (3 + 1) / 2})
    assert method_means({"x": {"q_g": 1.0}, "y": {"q_g": float("nan")}}) == {"q_g": 1.0}
    with pytest.raises(KeyError):
        arank({"a": {"nonsense": 1.0}, "b": {"nonsense": 2.0}})
    assert issubclass(EvaluationError, ValueError)


@pytest.mark.slow
def test_script_entry_point(bench):
    r = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "evaluate.py"), *_args(bench, metrics="sen,std")],
        capture_output=True, text=True, env=python_env(), timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and (bench / "res.md").is_file()
    r = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "evaluate.py"), *_args(bench, metrics="sen")],
        capture_output=True, text=True, env=python_env(), timeout=300,
    )
    assert r.returncode == 2 and "output exists" in r.stderr


def test_full_reference_metrics_with_gt(bench):
    (bench / "gt").mkdir()
    for name in SCENES:
        # Ground truth = the "avg" method's output: that method must score perfectly.
        (bench / "gt" / f"{name}.png").write_bytes((bench / "avg" / f"{name}.png").read_bytes())
    assert main(_args(bench, "--gt", str(bench / "gt"), metrics="mse,ssim,q_g")) == 0
    rows = {(r["method"], r["image"]): r for r in csv.DictReader((bench / "res.csv").open())}
    assert float(rows[("avg", "mean")]["mse"]) == 0.0
    assert float(rows[("max", "mean")]["mse"]) > 0.0
    assert float(rows[("avg", "mean")]["ssim"]) == pytest.approx(1.0, abs=1e-6)
    # avg wins mse and ssim: ARank <= (1 + 1 + 2) / 3, max's >= (2 + 2 + 1) / 3.
    assert float(rows[("avg", "mean")]["arank"]) < float(rows[("max", "mean")]["arank"])
