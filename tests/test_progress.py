"""Progress with ETA: the shared bar, tiled fusion, evaluation and sweep lines; silenced by MFIF_PROGRESS=0."""
from __future__ import annotations

import io

import torch

from mfif.ops.tiling import PROGRESS_MIN_TILES, tiled_apply
from mfif.progress import Progress, duration, eta_seconds


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_duration_and_eta_known_values():
    assert [duration(s) for s in (0, 42.4, 185, 7620)] == ["0s", "42s", "3m05s", "2h07m"]
    assert eta_seconds(2, 8, 10.0) == 30.0  # 5 s per item, 6 left
    assert eta_seconds(0, 8, 10.0) is None and eta_seconds(8, 8, 10.0) is None


def test_lines_in_a_log_and_in_a_terminal(monkeypatch):
    monkeypatch.delenv("MFIF_PROGRESS", raising=False)
    log = io.StringIO()
    bar = Progress(4, "tiles", stream=log, every=3600)
    for _ in range(4):
        bar.update()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2  # the first update, then nothing until the last one
    assert lines[0].startswith("[1/4] tiles") and "ETA" in lines[0]
    assert lines[1].startswith("[4/4] tiles") and "ETA" not in lines[1]
    tty = _Tty()
    with Progress(3, "images", stream=tty) as bar:
        bar.update()
    assert tty.getvalue().startswith("\r[1/3] images") and tty.getvalue().endswith("\n")  # closed on exit


def test_silenced(monkeypatch):
    log = io.StringIO()
    Progress(2, stream=log, enabled=False).update(2)
    monkeypatch.setenv("MFIF_PROGRESS", "0")
    Progress(2, stream=log, enabled=True).update(2)
    assert log.getvalue() == ""


def test_tiled_fusion_shows_progress_and_keeps_values(capsys, monkeypatch):
    monkeypatch.delenv("MFIF_PROGRESS", raising=False)
    x = torch.rand(1, 2, 1, 40, 40)
    quiet = tiled_apply(lambda s: s.mean(1), x, tile=16, overlap=4, progress=False)
    assert capsys.readouterr().err == ""
    shown = tiled_apply(lambda s: s.mean(1), x, tile=16, overlap=4, tile_batch=2, progress=True)
    err = capsys.readouterr().err
    assert torch.equal(quiet, shown)
    assert err.splitlines()[-1].startswith("[9/9] tiles")  # 3 x 3 tiles
    tiled_apply(lambda s: s.mean(1), x, tile=16, overlap=4)  # default: quiet below PROGRESS_MIN_TILES
    assert PROGRESS_MIN_TILES > 9 and capsys.readouterr().err == ""
    tiled_apply(lambda s: s.mean(1), torch.rand(1, 2, 1, 64, 64), tile=16, overlap=4)  # 5 x 5 = 25 tiles
    assert "[25/25] tiles" in capsys.readouterr().err


def test_evaluation_lines_count_and_estimate(tmp_path):
    from PIL import Image

    from mfif.metrics.evaluation import score_folder
    from mfif.scenes import discover_scenes

    rng = torch.Generator().manual_seed(0)
    for i in range(3):
        for s in "AB":
            Image.fromarray((torch.rand(16, 16, generator=rng) * 255).byte().numpy()).save(tmp_path / f"s{i}-{s}.png")
    fused = tmp_path / "fused"
    fused.mkdir()
    for i in range(3):
        Image.fromarray((torch.rand(16, 16, generator=rng) * 255).byte().numpy()).save(fused / f"s{i}.png")
    lines: list = []
    score_folder(fused, discover_scenes(tmp_path), ["avg"], progress=lines.append)
    assert [ln.split(" ", 1)[0] for ln in lines] == ["[1/3]", "[2/3]", "[3/3]"]
    assert "ETA" in lines[0] and "ETA" not in lines[-1] and lines[0].split(" ")[1].startswith("fused/s0:")


def test_sweep_runner_lines_carry_eta(tmp_path):
    from ablations.sweeps.runner import Job, run_jobs

    total, said = 4, []
    jobs = [Job(f"p{i}", ["python3", "-c", "pass"], tmp_path / f"p{i}") for i in range(total)]
    results, sig = run_jobs(jobs, workers=1, say=said.append)
    assert sig is None and [r.status for r in results] == ["done"] * total
    finished = [s for s in said if s.startswith("[")]
    assert finished[0].startswith(f"[1/{total}] p0: done") and "ETA" in finished[0]
    assert finished[-1].startswith(f"[{total}/{total}] p3: done") and "ETA" not in finished[-1]
