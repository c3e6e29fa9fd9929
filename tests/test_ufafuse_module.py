"""UFA-Fuse LightningModule: config, fuse() for gray/RGB and K sources, ablation training steps, sweeps."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from lightning_modules.ufafuse.module import UFAFuseModule
from mfif.config import load_config

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = ROOT / "ablations" / "ufafuse"
# training_step is called outside a Trainer here: self.log() only warns.
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def build(*overrides: str) -> UFAFuseModule:
    torch.manual_seed(0)
    cfg = load_config("ufafuse.yaml", ["profile=smoke", "metrics=[psnr,ssim]", "model.features=8", *overrides])
    return UFAFuseModule(cfg)


def tiny_batch(k: int = 2, c: int = 3, size: int = 32) -> dict:
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(2, c, size, size, generator=g)
    mask = (torch.arange(size) < size // 2).float().view(1, 1, 1, size).expand(2, 1, size, size)
    blur = torch.nn.functional.avg_pool2d(gt, 5, 1, 2, count_include_pad=False)
    sources = torch.stack([gt * mask + blur * (1 - mask), blur * mask + gt * (1 - mask)], 1)
    if k > 2:
        sources = torch.cat([sources, blur.unsqueeze(1).expand(-1, k - 2, -1, -1, -1)], 1)
    return {"sources": sources, "gt": gt, "name": ["a", "b"]}


def test_config_holds_paper_values():
    cfg = load_config("ufafuse.yaml")
    assert cfg.model.loss_lambda == 0.2 and cfg.model.attention == "ufa" and not cfg.model.official_quirk
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.scheduler) == ("adam", 1e-4, "step")
    assert (cfg.optim.step_size, cfg.optim.gamma, cfg.trainer.max_epochs) == (200, 0.1, 300)
    assert (cfg.data.name, cfg.data.batch_size, cfg.data.patch_size) == ("mean_filter_duts", 8, 256)


@pytest.mark.parametrize("variant", [
    ["model.attention=ufa"], ["model.attention=no_sa"], ["model.attention=no_ca"], ["model.attention=none"],
    ["model.loss_lambda=0.0"], ["model.loss_lambda=1.0"], ["model.official_quirk=true"],
])
def test_every_variant_runs_a_training_step(variant):
    module = build(*variant)
    opt = module.configure_optimizers()["optimizer"]
    before = {n: p.detach().clone() for n, p in module.net.named_parameters()}
    loss = module.training_step(tiny_batch(), 0)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert module.net.conv1[0].weight.grad.abs().sum() > 0
    assert module.net.restruction.weight.grad.abs().sum() > 0
    if variant[0] in ("model.attention=ufa", "model.attention=no_ca"):  # the 7x7 convs are in use
        assert module.net.sc4.att_sp.att1.conv.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(before["fusion.weight"], module.net.fusion.weight)


def test_training_step_k3_and_gray_sources():
    module = build()
    for batch in (tiny_batch(k=3), tiny_batch(c=1)):
        loss = module.training_step(batch, 0)
        loss.backward()
        assert torch.isfinite(loss)


def test_training_without_gt_is_a_clear_error():
    batch = tiny_batch()
    del batch["gt"]
    with pytest.raises(ValueError, match="needs 'gt'"):
        build().training_step(batch, 0)
    assert build().validation_loss(batch) is None


@pytest.mark.parametrize("k,c,h,w", [(2, 3, 21, 34), (2, 1, 25, 18), (3, 3, 16, 16), (3, 1, 20, 22)])
def test_fuse_gray_and_rgb_any_k(k, c, h, w):
    module = build().eval()
    with torch.inference_mode():
        out = module.fuse(torch.rand(1, k, c, h, w))
    assert out.fused.shape == (1, c, h, w) and out.maps is None
    assert out.fused.min() >= 0 and out.fused.max() <= 1
    assert out.extras["spatial_attention"].shape == (1, k, 1, h, w)


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="model.attention"):
        build("model.attention=cbam")
    with pytest.raises(ValueError, match="model.init"):
        build("model.init=kaiming")


def test_smoke_fit_through_trainer(tmp_path):
    """One real Lightning fit + test on the built-in data (smoke profile)."""
    from experiments.run import run

    cfg = load_config("ufafuse.yaml", ["profile=smoke", "metrics=[psnr,ssim]", "model.features=8",
                                       "trainer.max_steps=1", "logger.wandb=false", f"run_dir={tmp_path}"])
    run(cfg)
    assert (tmp_path / "checkpoints").is_dir()


@pytest.mark.parametrize("table", ["table3", "table4", "table5"])
def test_sweep_files_are_valid(table):
    sweep = yaml.safe_load((SWEEPS / f"{table}.yaml").read_text())
    side = yaml.safe_load((SWEEPS / f"{table}.paper.yaml").read_text())
    assert sweep["method"] == "grid" and sweep["program"] == "experiments/run.py"
    assert "ufafuse.yaml" in sweep["command"] and side["sweep"] == f"{table}.yaml"
    grid = {k: v["values"] for k, v in sweep["parameters"].items() if "values" in v}
    fixed = [f"{k}={v['value']}" for k, v in sweep["parameters"].items() if "value" in v and k != "weights"]
    # the grid is exactly the table's rows
    (key, values), = grid.items()
    assert [row["overrides"][key] for row in side["rows"]] == values
    for row in side["rows"]:
        assert set(row["paper"]) == set(side["columns"])
        overrides = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in row["overrides"].items()]
        cfg = load_config("ufafuse.yaml", [*fixed, *overrides])  # every key is a valid config key
        for k, v in row["overrides"].items():
            assert OmegaConf.select(cfg, k) == v
