"""The README's main job (UDPNet on the built-in data) end to end, in the smoke profile."""
from __future__ import annotations

import csv
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, python_env


@pytest.mark.slow
def test_main_job_smoke_writes_promised_files(tmp_path):
    run_dir = tmp_path / "run"
    r = subprocess.run([sys.executable, "experiments/run.py", "--config", "udpnet.yaml", "profile=smoke",
                        f"run_dir={run_dir}"], cwd=ROOT, env=python_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert f"run folder: {run_dir.resolve()}" in r.stdout
    fused = sorted((run_dir / "fused").glob("*.png"))
    assert len(fused) == 2  # profile smoke: data.num_test = 2
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [row["image"] for row in rows] == [p.stem for p in fused] + ["mean"]
    for row in rows:
        psnr, ssim = float(row["psnr"]), float(row["ssim"])
        assert math.isfinite(psnr) and 15 < psnr < 80 and 0.3 < ssim <= 1.0, row
    md = (run_dir / "metrics.md").read_text()
    assert md.startswith("| image | psnr | ssim |") and "| mean |" in md
    grid = np.asarray(Image.open(run_dir / "grid.png"))
    assert grid.shape == (2 * 48 + 4, 4 * 48 + 3 * 4, 3)  # 2 rows of: 2 sources | fused | gt
    img = np.asarray(Image.open(fused[0]))
    assert img.shape == (48, 48, 3) and img.std() > 5  # a real image, not blank
    assert (run_dir / "checkpoints/last.ckpt").is_file()
    runs = list((run_dir / "wandb").glob("offline-run-*/*.wandb"))
    assert len(runs) == 1
