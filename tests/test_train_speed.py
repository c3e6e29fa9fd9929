"""Training fast paths keep the math (issue 25): GACN's SF comparison with its hand-written
backward, the per-path layouts, and the training benchmark's bookkeeping.

The reference is the plain path (:func:`mfif.ops.conv.fast_paths` off: autograd through the
composition, the layers as stored). GACN's k = 1000 sigmoids make its float32 gradients sensitive
to any change of summation order (the plain path alone, run with NCHW instead of NHWC weights,
changes them by O(1) at 40 x 40), so N-step equality is checked in float64, where both paths agree
to ~1e-11, and float32 is checked where no reordering happens (bit-identical forward of the SF
comparison) or on the loss of one step.
"""
from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from lightning_modules.gacn.module import GACN, GACNConfig
from lightning_modules.gacn.network import GACNNet
from mfif.config import DataConfig, ExperimentConfig
from mfif.ops.activity import _energy_backward, box_sum, neighbour_energy, sf_comparison
from mfif.ops.conv import fast_paths


def composition(ga, gb, radius: int, k: float) -> torch.Tensor:
    """``sigmoid(k box_sum(E_A - E_B))`` through autograd (the plain path)."""
    return torch.sigmoid(k * box_sum(neighbour_energy(torch.cat(ga, 1)) - neighbour_energy(torch.cat(gb, 1)), radius))


def groups(seed: int, dtype=torch.float64, layout=torch.contiguous_format, size=(13, 17)) -> list:
    g = torch.Generator().manual_seed(seed)
    return [(0.1 * torch.rand(2, c, *size, generator=g, dtype=dtype)).contiguous(memory_format=layout).requires_grad_()
            for c in (3, 5)]


def gacn_module(dtype=torch.float32) -> GACN:
    cfg = OmegaConf.structured(ExperimentConfig(method="gacn", model=GACNConfig(), data=DataConfig(), metrics=["psnr"]))
    torch.manual_seed(0)
    return GACN(cfg).train().to(dtype)


def batches(n: int, dtype=torch.float32, size: int = 36) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [{"sources": torch.rand(2, 2, 1, size, size, generator=g).to(dtype),
             "mask": (torch.rand(2, 1, size, size, generator=g) > 0.5).to(dtype)} for _ in range(n)]


def train(module: GACN, data: list[dict], fast: bool) -> tuple[torch.Tensor, dict]:
    """Losses of ``len(data)`` Adam steps (the module's optimiser) and the final weights."""
    m = copy.deepcopy(module)
    opt = m.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    losses = []
    with fast_paths(fast):
        for batch in data:
            opt.zero_grad()
            loss = m._loss(batch)["loss"]
            loss.backward()
            opt.step()
            losses.append(loss.detach())
    return torch.stack(losses), m.state_dict()


# ----------------------------------------------------------------------------- SF comparison
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_sf_comparison_value_and_gradient_equal_the_composition(layout):
    ga, gb = groups(0, layout=layout), groups(1, layout=layout)
    ref = composition(ga, gb, 2, 10.0)
    out = sf_comparison(ga, gb, 2, 10.0)
    assert out.shape == ref.shape == (2, 8, 13, 17)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-14)
    w = torch.randn(ref.shape, dtype=ref.dtype, generator=torch.Generator().manual_seed(2))
    for got, want in zip(torch.autograd.grad((out * w).sum(), ga + gb), torch.autograd.grad((ref * w).sum(), ga + gb)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_sf_comparison_gradcheck_and_tensor_inputs():
    a, b = (torch.rand(1, 2, 6, 7, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(lambda x, y: sf_comparison(x, y, 1, 3.0), (a, b))
    torch.testing.assert_close(sf_comparison(a, b, 1, 3.0), composition([a], [b], 1, 3.0))
    # only the inputs that need a gradient get one
    c = torch.rand(1, 2, 6, 7, dtype=torch.float64)
    (ga,) = torch.autograd.grad(sf_comparison(a, c, 1, 3.0).sum(), (a,))
    assert ga.shape == a.shape and torch.isfinite(ga).all()


def test_energy_backward_known_value():
    # one row [a, b] = [1, 3]: E = a^2 + (b - a)^2 (row differences, zero left neighbour)
    #                              + a^2 + b^2 (column differences, zero row above)
    # dE/da = 6a - 2b = 0, dE/db = 4b - 2a = 10
    x = torch.tensor([[[[1.0, 3.0]]]])
    torch.testing.assert_close(_energy_backward(x, torch.ones_like(x), 1.0), torch.tensor([[[[0.0, 10.0]]]]))
    torch.testing.assert_close(_energy_backward(x, torch.ones_like(x), -1.0), torch.tensor([[[[0.0, -10.0]]]]))


def test_sf_comparison_errors():
    a = torch.rand(1, 2, 5, 5)
    with pytest.raises(ValueError, match="radius"):
        sf_comparison(a, a, -1)
    with pytest.raises(ValueError, match="method"):
        sf_comparison(a, a, 1, method="fft")
    with pytest.raises(ValueError, match="non-empty"):
        sf_comparison([], a, 1)
    with pytest.raises(ValueError, match="share B, H, W"):
        sf_comparison(a, torch.rand(1, 3, 5, 5), 1)


def test_training_activity_forward_is_the_inference_computation_bit_for_bit():
    # nothing is reordered in the forward pass: the same banded difference and fused box sum
    torch.manual_seed(0)
    net = GACNNet().train()
    fa, fb = net.features.layers(torch.rand(2, 1, 24, 20)), net.features.layers(torch.rand(2, 1, 24, 20))
    trained = net.activity(fa, fb)
    assert trained.requires_grad and trained.grad_fn.name().startswith("_SFComparison")
    with torch.no_grad():
        inferred = net.activity([t.detach() for t in fa], [t.detach() for t in fb])
    assert torch.equal(trained.detach(), inferred)


# ----------------------------------------------------------------------------- GACN training step
def test_gacn_training_fast_path_same_losses_and_weights_after_three_steps_float64():
    module, data = gacn_module(torch.float64), batches(3, torch.float64, size=24)
    fast_losses, fast_weights = train(module, data, fast=True)
    plain_losses, plain_weights = train(module, data, fast=False)
    torch.testing.assert_close(fast_losses, plain_losses, rtol=1e-9, atol=1e-11)
    assert not torch.equal(fast_weights["net.decision.blocks.0.conv.weight"], module.state_dict()["net.decision.blocks.0.conv.weight"])
    for key, want in plain_weights.items():
        torch.testing.assert_close(fast_weights[key], want, rtol=1e-8, atol=1e-9, msg=key)


def test_gacn_training_fast_path_float32_loss_and_gradient_direction():
    module, (batch,) = gacn_module(), batches(1)
    grads = {}
    for fast in (True, False):
        m = copy.deepcopy(module)
        with fast_paths(fast):
            loss = m._loss(batch)["loss"]
            loss.backward()
        grads[fast] = (loss.detach(), torch.cat([p.grad.flatten() for p in m.parameters()]))
    torch.testing.assert_close(grads[True][0], grads[False][0], rtol=0, atol=1e-5)
    cos = torch.nn.functional.cosine_similarity(grads[True][1], grads[False][1], dim=0)
    assert cos > 0.999  # the float32 noise of k = 1000 sigmoids (module docstring), not a different gradient


# ----------------------------------------------------------------------------- the benchmark
def test_bench_summary_known_values():
    from experiments.benchmarks.bench_train import summarise

    times = {"trainer": {"step_wall": [2.2, 2.0, 2.4], "step_cpu": [4.4, 4.0, 4.8]},
             "bare": {"step_wall": [2.0, 1.8, 2.2], "step_cpu": [4.0, 3.6, 4.4]},
             "released": {"step_wall": [6.0, 6.0, 6.0], "step_cpu": [8.0, 8.0, 8.0]},
             "loader": {"step_wall": [0.1, 0.1], "step_cpu": [0.05, 0.05]}}
    r = summarise("gacn", 16, 156, times, {"epoch_end_wall": [0.5], "generator": "coco_defocus"},
                  {"threads": 2, "allocator": "retained freed memory"})
    assert r["trainer_steps_per_s"] == pytest.approx(1 / 2.2) and r["bare_steps_per_s"] == pytest.approx(1 / 2.0)
    assert r["trainer_samples_per_s"] == pytest.approx(16 / 2.2)
    assert r["overhead"] == pytest.approx(1.1) and r["overhead_cpu"] == pytest.approx(1.1)
    assert r["ours_vs_released"] == pytest.approx(3.0) and r["ours_vs_released_cpu"] == pytest.approx(2.0)
    assert r["trainer_s_per_step"]["wall"] == pytest.approx((2.2, 2.0, 2.4))  # median, min, max
    # one worker makes 10 samples/s, (a) eats 16 / 2.2 = 7.3 samples/s: one worker keeps up
    assert r["loader_samples_per_s_per_worker"] == pytest.approx(10.0) and r["workers_needed"] == 1


@pytest.mark.parametrize("argv, message", [
    (["--rounds", "0"], "--rounds must be >= 1"),
    (["--data", "/nonexistent/folder"], "--data /nonexistent/folder: no such folder"),
    (["--gacn-repo", "/nonexistent/gacn"], "--gacn-repo /nonexistent/gacn: no such folder"),
    (["--papers", "sesf"], "invalid choice"),
])
def test_bench_cli_errors(argv, message, capsys):
    from experiments.benchmarks.bench_train import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_released_checkout_errors(tmp_path):
    from experiments.benchmarks.released_train import checkout

    with pytest.raises(FileNotFoundError, match="no such folder"):
        checkout(tmp_path / "missing", "gacn")
    with pytest.raises(FileNotFoundError, match="not a git directory"):
        checkout(tmp_path, "ufafuse")


def test_ddp_bench_cli_errors(capsys):
    from experiments.benchmarks.bench_ddp import main

    with pytest.raises(SystemExit) as e:
        main(["--batch", "1"])
    assert e.value.code == 2 and "--batch >= 2 (it is split over 2 processes)" in capsys.readouterr().err


def test_a_benchmark_side_whose_process_dies_raises_instead_of_hanging():
    # the side's factory fails in the child (here int("x"): ValueError), as VAEEDOF's did when a
    # metric's weight file was missing; the parent must not wait for an answer forever
    from experiments.benchmarks.bench_inference import Side

    with pytest.raises(RuntimeError, match="bare side process exited with code 1"):
        Side("gacn", "bare", "default", None, 1, factory=int, factory_args=("x",))


def test_vaeedof_benchmark_config_needs_no_weight_files():
    from experiments.benchmarks.bench_train import run_config

    assert list(run_config("vaeedof", "paper").metrics) == ["psnr", "ssim"]


def test_layout_bench_both_sides_same_loss(capsys):
    """bench_train_layout.py: NCHW and channels_last sides are the same model (same losses, float rounding)."""
    import re

    from experiments.benchmarks.bench_train_layout import main

    assert main(["--batch", "1", "--crop", "24", "--rounds", "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    losses = {k: [float(x) for x in re.findall(rf"{k}: warm-up loss ([\d.]+)", out)]
              for k in ("nchw", "nhwc")}
    assert len(losses["nchw"]) == len(losses["nhwc"]) == 1
    rounds = {k: [float(x) for x in re.findall(rf"round \d {k}: [\d.]+ s, loss ([\d.]+)", out)] for k in ("nchw", "nhwc")}
    assert len(rounds["nchw"]) == len(rounds["nhwc"]) == 2
    for a, b in zip(losses["nchw"] + rounds["nchw"], losses["nhwc"] + rounds["nhwc"]):
        assert a == pytest.approx(b, rel=1e-5)
    assert re.search(r"channels_last speed-up \(NCHW time / NHWC time\): [\d.]+x", out)


def test_bench_loader_only_times_the_generator(shared_dir, tmp_path, capsys):
    """--loader-only: (d) alone on the VAEEDOF cpu profile's MF-VOC generator; JSON written."""
    import json

    from experiments.benchmarks.bench_train import main

    mf_voc = shared_dir / "data" / "train" / "mf_voc"
    if not mf_voc.is_dir():
        pytest.skip("MF-VOC not in the shared test data")
    out = tmp_path / "d.json"
    assert main(["--loader-only", "--size", "cpu", "--papers", "vaeedof", "--data", f"vaeedof={mf_voc}",
                 "--rounds", "1", "--loader-batches", "1", "--threads", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())["vaeedof"]
    assert r["generator"] == "mf_voc" and (r["batch"], r["crop"]) == (4, 128) and r["loader_samples_per_s_per_worker"] > 0
    assert "vaeedof (mf_voc, batch 4 x 128):" in capsys.readouterr().out


def test_bench_loader_only_needs_data(capsys):
    from experiments.benchmarks.bench_train import main

    with pytest.raises(SystemExit) as e:
        main(["--loader-only", "--papers", "vaeedof"])
    assert e.value.code == 2 and "--loader-only: no --data folder for vaeedof" in capsys.readouterr().err
