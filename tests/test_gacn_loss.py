"""GACN losses (Eqs. 6-18 and the Fig. 9 alternatives), training steps and the config/sweep files."""
from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from datamodules.base import collate
from lightning_modules.gacn.loss import (
    GACNLoss,
    balanced_bce_loss,
    default_image_loss_weight,
    dice_loss,
    edge_preserving_loss,
    focal_loss,
    qg_loss,
    structure_tensor_loss,
)
from lightning_modules.gacn.module import GACN, GACNConfig
from mfif.config import DataConfig, ExperimentConfig, load_config
from mfif.metrics.gradient import GACN_LOSS, q_abf


def make_module(**model) -> GACN:
    cfg = OmegaConf.structured(ExperimentConfig(method="gacn", model=GACNConfig(**model), data=DataConfig(),
                                                metrics=["psnr"]))
    return GACN(cfg)


def tiny_batch(b: int = 2, c: int = 1, size: int = 32, seed: int = 0) -> dict:
    """Two sources, each sharp on one half (a box blur elsewhere), with mask and ground truth."""
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(b, c, size, size, generator=g)
    blur = torch.nn.functional.avg_pool2d(gt, 5, 1, 2, count_include_pad=False)
    mask = torch.zeros(b, 1, size, size)
    mask[..., : size // 2] = 1
    a = mask * gt + (1 - mask) * blur
    bb = (1 - mask) * gt + mask * blur
    return {"sources": torch.stack([a, bb], 1), "mask": mask, "gt": gt, "name": [f"s{i}" for i in range(b)]}


# ----------------------------------------------------------------------------- map losses
def test_dice_loss_eq7_known_values():
    ones, zeros = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    assert dice_loss(ones, ones).item() == pytest.approx(0.0)
    assert dice_loss(zeros, ones).item() == pytest.approx(1 - 1 / 5)  # (0 + 1) / (0 + 4 + 1)
    half = torch.full((1, 1, 2, 2), 0.5)
    assert dice_loss(half, ones).item() == pytest.approx(1 - (2 * 2 + 1) / (1 + 4 + 1))
    with pytest.raises(ValueError, match="one shape"):
        dice_loss(ones, torch.ones(1, 1, 2, 3))


def test_balanced_bce_matches_hed_formula():
    logits = torch.randn(2, 1, 4, 4)
    target = (torch.rand(2, 1, 4, 4) > 0.7).float()
    p = torch.sigmoid(logits)
    beta = 1 - target.mean(dim=(1, 2, 3), keepdim=True)
    manual = -(beta * target * p.log() + (1 - beta) * (1 - target) * (1 - p).log()).mean()
    torch.testing.assert_close(balanced_bce_loss(logits, target), manual)


def test_focal_loss_matches_lin_formula():
    logits = torch.randn(2, 1, 5, 5)
    target = (torch.rand(2, 1, 5, 5) > 0.5).float()
    p = torch.sigmoid(logits)
    pt = torch.where(target > 0, p, 1 - p)
    at = torch.where(target > 0, torch.tensor(0.25), torch.tensor(0.75))
    manual = (-at * (1 - pt) ** 2 * pt.log()).mean()
    torch.testing.assert_close(focal_loss(logits, target), manual, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- image losses
def test_qg_loss_is_one_minus_shared_q_abf():
    bt = tiny_batch()
    a, b = bt["sources"][:, 0], bt["sources"][:, 1]
    fused = bt["mask"] * a + (1 - bt["mask"]) * b
    expected = 1 - q_abf(a, b, fused, constants=GACN_LOSS, soft_k=1000.0).mean()
    torch.testing.assert_close(qg_loss(a, b, fused), expected)


def test_smooth_and_abs_qg_agree_on_hard_maps():
    bt = tiny_batch(seed=3)
    a, b = bt["sources"][:, 0], bt["sources"][:, 1]
    fused = bt["mask"] * a + (1 - bt["mask"]) * b  # a hard (binary) decision map
    l_abs = qg_loss(a, b, fused, orientation="abs")
    l_smooth = qg_loss(a, b, fused, orientation="smooth")
    assert abs(l_abs.item() - l_smooth.item()) < 2e-3
    assert 0 < l_abs.item() < 1


def test_edge_preserving_and_structure_tensor_losses_vanish_at_their_optimum():
    bt = tiny_batch()
    gt, src = bt["gt"], bt["sources"]
    assert edge_preserving_loss(gt, src, gt).item() < 1e-4
    assert edge_preserving_loss(src[:, 1], src, gt).item() > 1e-2
    zero_b = torch.stack([gt, torch.zeros_like(gt)], 1)
    assert edge_preserving_loss(gt, zero_b).item() < 1e-4  # no gt: max gradient over the sources
    assert structure_tensor_loss(gt, zero_b).item() < 1e-8  # Z_F equals the sources' tensor
    assert structure_tensor_loss(src[:, 1], src).item() > 1e-3


def test_loss_weights_and_errors():
    assert default_image_loss_weight("qg") == 1.0  # Eq. 6
    assert default_image_loss_weight("eg") == default_image_loss_weight("st") == 1e-4  # Sec. 4.5.1
    from lightning_modules.gacn.module import GACNConfig

    assert GACNLoss(GACNConfig(image_loss="eg")).weight == 1e-4
    assert GACNLoss(GACNConfig(image_loss="eg", image_loss_weight=0.5)).weight == 0.5
    assert GACNLoss(GACNConfig()).qg_k == 1000.0  # Eq. 12, from the config
    for bad in ({"map_loss": "l1"}, {"image_loss": "ssim"}, {"orientation": "cos"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GACNLoss(GACNConfig(**bad))


# ----------------------------------------------------------------------------- training
def _grads(module: GACN) -> list:
    return [p.grad for p in module.net.parameters()]


@pytest.mark.parametrize("map_loss", ["dice", "focal", "bce"])
@pytest.mark.parametrize("image_loss", ["qg", "eg", "st"])
def test_each_fig9_combination_trains_a_step(map_loss, image_loss):
    torch.manual_seed(0)
    module = make_module(map_loss=map_loss, image_loss=image_loss).train()
    parts = module._loss(tiny_batch())
    assert set(parts) == {"loss", "map", "image"} and all(math.isfinite(v.item()) for v in parts.values())
    parts["loss"].backward()
    grads = _grads(module)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


def test_qg_term_alone_reaches_the_network():
    torch.manual_seed(0)
    module = make_module(orientation="smooth").train()
    parts = module._loss(tiny_batch(c=3))  # RGB batch: converted to gray by the colour policy
    parts["image"].backward()
    decision_grads = [p.grad for p in module.net.decision.parameters()]
    feature_grads = [p.grad for p in module.net.features.parameters()]
    assert sum(g.abs().sum().item() for g in decision_grads if g is not None) > 0
    assert sum(g.abs().sum().item() for g in feature_grads if g is not None) > 0


def test_training_needs_pairs_and_masks():
    module = make_module()
    bt = tiny_batch()
    with pytest.raises(ValueError, match="pairs"):
        module._loss({**bt, "sources": torch.cat([bt["sources"], bt["sources"][:, :1]], 1)})
    with pytest.raises(ValueError, match="mask"):
        module._loss({k: v for k, v in bt.items() if k != "mask"})
    assert module.validation_loss({k: v for k, v in bt.items() if k != "mask"}) is None


def test_lightning_fit_two_steps_changes_weights():
    torch.manual_seed(0)
    module = make_module()
    before = [p.detach().clone() for p in module.net.parameters()]
    samples = [{k: (v[i] if torch.is_tensor(v) else v[i]) for k, v in tiny_batch(4, seed=1).items()} for i in range(4)]
    loader = DataLoader(samples, batch_size=2, collate_fn=collate)
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)
    trainer.fit(module, loader)
    assert trainer.global_step == 2
    assert any((p - q).abs().max() > 0 for p, q in zip(module.net.parameters(), before))


# ----------------------------------------------------------------------------- config
def test_paper_config_values():
    cfg = load_config("gacn.yaml")
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.step_size, cfg.optim.gamma) == ("adam", 1e-4, 2, 0.8)  # Sec. 4.2
    assert (cfg.data.name, cfg.data.batch_size, cfg.data.patch_size, cfg.trainer.max_epochs) == ("coco_defocus", 16, 156, 50)
    assert cfg.model.sf_radius == 5 and cfg.model.sharpness == 1000 and cfg.model.sse_kernel == 7
    # Sec. 4.3: the six metrics, as the variants Table 1 printed (mfif.metrics.conventions)
    assert cfg.metrics == ["q_g_zl_sk", "q_y_sesf_sk", "q_ncie_sk", "q_cb_sk", "fmi_edge_matlab_sk", "fmi_dct_sk"]
    smoke = load_config("gacn.yaml", ["profile=smoke", "model.multi_strategy=serial", "model.orientation=smooth"])
    assert smoke.data.name == "default" and smoke.model.multi_strategy == "serial"
