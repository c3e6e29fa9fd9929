"""VAEEDOF tools: the Sec. 5 VAE health check and the Fig. 4 patch-difficulty analysis."""
import math

import pytest
import torch
from torch import nn

from ablations.vaeedof.fig4 import analyse, difficulty_curve, patch_difficulty, to_patches
from lightning_modules.vaeedof.health import summarize, vae_reconstruct, vae_reconstruction_report
from lightning_modules.vaeedof.taesd import TinyVAE


class ShiftVAE(nn.Module):
    """Stand-in VAE whose reconstruction is ``x + 0.1``: PSNR is exactly 20 dB (MSE 0.01)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x + 0.1


def test_health_report_known_psnr_and_tiling():
    torch.manual_seed(0)
    imgs = [torch.rand(3, 40, 56) * 0.8, torch.rand(1, 30, 30) * 0.8]  # +0.1 stays inside [0, 1]
    rows = vae_reconstruction_report(ShiftVAE(), imgs, names=["rgb", "gray"], tile=32)
    assert [r["name"] for r in rows] == ["rgb", "gray"] and rows[0]["height"] == 40
    for r in rows:
        assert math.isclose(r["psnr"], 20.0, abs_tol=1e-3) and 0 < r["ssim"] < 1
    s = summarize(rows, warn_psnr=25)
    assert math.isclose(s["psnr"], 20.0, abs_tol=1e-3) and s["below_warn"] == ["rgb", "gray"]
    # a real (untrained, tiny) TAESD: shapes kept for sizes not multiple of 8, values in [0, 1]
    rec = vae_reconstruct(TinyVAE(width=8).eval(), torch.rand(2, 3, 21, 35), tile=16)
    assert rec.shape == (2, 3, 21, 35) and rec.min() >= 0 and rec.max() <= 1
    with pytest.raises(ValueError, match="names"):
        vae_reconstruction_report(ShiftVAE(), imgs, names=["only_one"])


def test_patches_and_difficulty_known_values():
    x = torch.arange(2 * 4 * 6.0).view(2, 1, 4, 6)  # N=2 sources, 1 channel
    p = to_patches(x, 2)
    assert p.shape == (6, 2, 1, 2, 2)
    assert torch.equal(p[1, 0, 0], x[0, 0, 0:2, 2:4])  # row-major patch order
    gt = torch.zeros(1, 4, 6)
    src = torch.stack([torch.zeros(1, 4, 6), torch.ones(1, 4, 6)])
    src[0, :, :2, :2] = 0.5  # source 0 is wrong (0.5 off) in the first patch only
    d = patch_difficulty(src, gt, 2)
    assert d.tolist() == [0.5, 0, 0, 0, 0, 0]  # best source = min over sources
    assert patch_difficulty(src, gt, 2, "mse").tolist()[0] == 0.25
    rows = difficulty_curve(d, torch.tensor([1.0, 2, 3, 4, 5, 6]), [0.0, 0.25])
    assert rows[0] == {"threshold": 0.0, "count": 6, "mean": 3.5}
    assert rows[1] == {"threshold": 0.25, "count": 1, "mean": 1.0}


def test_analyse_orders_methods_by_quality():
    torch.manual_seed(0)
    gt = torch.rand(1, 3, 64, 64)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :, :32] = 1
    blur = torch.nn.functional.avg_pool2d(gt, 5, 1, 2)
    sources = torch.stack([gt * mask + blur * (1 - mask), blur * mask + gt * (1 - mask)], 1)
    methods = {"oracle": lambda s: gt, "first": lambda s: s[:, 0]}
    rows = analyse([{"sources": sources, "gt": gt, "name": ["x"]}], methods, patch=16, metric="psnr",
                   num_thresholds=3)
    assert len(rows) == 6 and {r["method"] for r in rows} == {"oracle", "first"}
    first = [r for r in rows if r["method"] == "first"]
    assert first[0]["count"] == 16 and first[0]["mean"] > 10  # half the patches are exact (inf, left out)
    assert all(math.isnan(r["mean"]) for r in rows if r["method"] == "oracle")  # exact everywhere -> inf only
    with pytest.raises(ValueError, match="ground truth"):
        analyse([{"sources": sources, "name": ["x"]}], methods, 16, "psnr")


def test_bench_inputs_records_skips_and_writes_outputs(tmp_path):
    from ablations.vaeedof.fig6 import run, write_outputs

    rows = run(["vaeedof"], [2, 8], size=32, repeats=1, profile="smoke", device=torch.device("cpu"))
    ok, skipped = rows
    assert ok["n"] == 2 and ok["images_per_s"] > 0
    assert skipped["images_per_s"] is None and "2..7 sources" in skipped["note"]  # N=8 > 7: recorded, not fatal
    write_outputs(rows, tmp_path / "fig6", 32, torch.device("cpu"))
    assert (tmp_path / "fig6.png").stat().st_size > 0
    assert "| vaeedof |" in (tmp_path / "fig6.md").read_text()
    assert (tmp_path / "fig6.csv").read_text().startswith("method,n,images_per_s,images_per_cpu_s,note")
    assert ok["images_per_cpu_s"] > 0


def test_sweep_files_use_valid_keys():
    from pathlib import Path

    import yaml

    from ablations.vaeedof.fig6 import build_parser
    from mfif import registry
    from mfif.config import load_config

    root = Path(__file__).resolve().parent.parent / "ablations" / "vaeedof"
    if "matting_mfif" not in registry.datamodules():
        pytest.skip("matting_mfif datamodule not available")
    sweep = yaml.safe_load((root / "table1.yaml").read_text())
    side = yaml.safe_load((root / "table1.paper.yaml").read_text())
    assert side["sweep"] == "table1.yaml" and sweep["program"] == "experiments/run.py"
    assert side["columns"] == list(load_config("vaeedof.yaml").metrics)  # Table 1 column order
    for row in side["rows"]:
        load_config("vaeedof.yaml", [f"{k}={v}" for k, v in row["overrides"].items()])
        assert set(row["paper"]) == set(side["columns"])
    for key, spec in sweep["parameters"].items():
        for v in spec["values"]:
            load_config("vaeedof.yaml", [f"{key}={v}"])
    assert side["rows"][0]["paper"]["psnr"] == 33.114  # Table 1, VAEEDOF row
    fig6 = yaml.safe_load((root / "fig6.yaml").read_text())
    assert fig6["parameters"]["num_inputs"]["values"] == [2, 3, 4, 5, 6, 7]
    for m in fig6["parameters"]["method"]["values"]:
        args = build_parser().parse_args([f"--method={m}", "--num_inputs=3", "--wandb"])
        assert args.method == m and args.num_inputs == 3
