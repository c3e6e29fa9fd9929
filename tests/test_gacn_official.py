"""Released GACN weights: strict load after key renaming, sane maps and Q_G on real Lytro pairs,
and the same outputs as the released compute strategy (lightning_modules/gacn/official_strategy.py)."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from lightning_modules.gacn.official_strategy import OfficialProcess, OfficialStrategyGACN, official_fuse
from lightning_modules.gacn.module import GACN, GACNConfig
from lightning_modules.gacn.network import GACNNet
from lightning_modules.gacn.official import convert_state_dict, load_official, read_official
from mfif.config import DataConfig, ExperimentConfig
from mfif.metrics.gradient import q_g

from conftest import released_weights

PAIRS = ["01", "05", "10", "16"]


@pytest.fixture(scope="module")
def weights(shared_dir):
    return released_weights(shared_dir, "gacn_official.pkl")


@pytest.fixture(scope="module")
def module(weights) -> GACN:
    cfg = OmegaConf.structured(ExperimentConfig(method="gacn", model=GACNConfig(), data=DataConfig(), metrics=[]))
    m = GACN(cfg)
    m.load_official_weights(str(weights))
    return m.eval()


def load_pair(shared_dir, nn: str) -> torch.Tensor:
    def rgb(side):
        img = np.array(Image.open(shared_dir / "data" / "lytro" / f"lytro-{nn}-{side}.jpg").convert("RGB"))
        return torch.from_numpy(img).permute(2, 0, 1).float().div(255)

    return torch.stack([rgb("A"), rgb("B")])[None]  # [1, 2, 3, 520, 520]


def test_strict_load_covers_every_tensor(weights):
    raw = torch.load(weights, map_location="cpu", weights_only=True)
    assert len(raw) == 69  # ../shared/weights/README.md
    converted = read_official(weights)
    net = GACNNet()
    assert set(converted) == set(net.state_dict())
    load_official(net, weights)  # strict=True inside
    for key, value in converted.items():
        torch.testing.assert_close(net.state_dict()[key], value.float() if value.is_floating_point() else value)


def test_converter_rejects_foreign_keys_and_missing_files(tmp_path):
    with pytest.raises(KeyError, match="unexpected key"):
        convert_state_dict(OrderedDict({"encoder.weight": torch.zeros(1)}))
    with pytest.raises(FileNotFoundError, match="gacn_official.pkl"):
        read_official(tmp_path / "nope.pkl")


def test_same_outputs_as_released_strategy(module, shared_dir):
    src = load_pair(shared_dir, "01")[..., 200:296, 180:300]  # a crop across the focus boundary
    official = OfficialStrategyGACN(module.net).eval()
    fused_off, map_off = official_fuse(official, src[:, 0], src[:, 1])
    with torch.inference_mode():
        out = module.fuse(src)
    diff = (out.maps[:, 0] - map_off.detach()).abs()
    assert diff.gt(1e-3).float().mean().item() < 1e-3
    assert (out.fused - fused_off.detach()).abs().mean().item() < 1e-4


@pytest.mark.slow
def test_official_strategy_child_process_matches_in_process(module, shared_dir):
    """The benchmark's child process (spawned, its own allocator) computes the same pair."""
    src = load_pair(shared_dir, "02")[..., 100:164, 100:196]
    fused_here, map_here = official_fuse(OfficialStrategyGACN(module.net).eval(), src[:, 0], src[:, 1])
    with OfficialProcess(module.net, threads=1) as child:
        out = child.run(src[:, 0].contiguous(), src[:, 1].contiguous())
    assert out["wall"] > 0 and out["cpu"] > 0
    torch.testing.assert_close(out["map"], map_here.detach())
    torch.testing.assert_close(out["fused"], fused_here.detach())


@pytest.mark.parametrize("nn", PAIRS)
def test_lytro_maps_are_sane_and_q_g_high(module, shared_dir, nn):
    src = load_pair(shared_dir, nn)
    with torch.inference_mode():
        out = module.fuse(src)
    m = out.maps[:, 0]
    assert out.fused.shape == (1, 3, 520, 520) and out.maps.shape == (1, 2, 1, 520, 520)
    binary = ((m < 0.01) | (m > 0.99)).float().mean().item()
    assert binary > 0.85, f"lytro-{nn}: only {binary:.2f} of the map is binary"
    share_a = (m > 0.5).float().mean().item()
    assert 0.05 < share_a < 0.95, f"lytro-{nn}: one source covers {share_a:.2f} of the image"
    score = float(q_g(out.fused, src))
    assert score > 0.65, f"lytro-{nn}: Q_G {score:.4f}"
