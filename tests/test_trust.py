"""Issue 17 items 1-2: a checkpoint, config or sweep point from someone else cannot run code.

Import hooks (``*_target`` keys, e.g. UDPNet's ``model.refiner_target``) are refused unless the
user passes ``--trust-config``; checkpoints are read tensors-only (a pickled payload is refused)
and loaded with strict keys, also by GACN's Fig. 8 program. Every "evil" input here would
create a marker file if its code ran.
"""
from __future__ import annotations

import os

import lightning
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from mfif import registry
from mfif.checkpoints import CheckpointError, load_module
from mfif.config import ConfigError, check_import_hooks, find_import_hooks, load_config

SMOKE = ["profile=smoke", "metrics=[psnr]"]


class Denoiser:
    """A legitimate Restormer stand-in (``model.refiner_target=test_trust:make_denoiser``)."""

    def __call__(self, x):
        return x


def make_denoiser(**kwargs):
    return Denoiser()


class Payload:
    """Pickles to ``os.system("touch <marker>")``: runs when unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _save(path, module, conf: dict, **extra) -> None:
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {"cfg": conf},
                "pytorch-lightning_version": lightning.__version__, **extra}, path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A UDPNet checkpoint with a legitimate refiner hook, and the same one with ``os:system``."""
    d = tmp_path_factory.mktemp("trust")
    marker = d / "PWNED"
    cfg = load_config("udpnet.yaml", [*SMOKE, "model.refiner=restormer", "model.refiner_target=test_trust:make_denoiser"])
    module = registry.method_class("udpnet")(cfg)
    conf = OmegaConf.to_container(cfg, resolve=True)
    _save(d / "good.ckpt", module, conf)
    conf["model"].update(refiner_target="os:system", refiner_kwargs={"command": f"touch {marker}"})
    _save(d / "evil.ckpt", module, conf)
    for i in range(2):
        Image.fromarray(np.full((24, 24, 3), 60 + 80 * i, np.uint8)).save(d / f"src{i}.png")
    return d, marker


def test_find_and_check_import_hooks():
    cfg = {"model": {"refiner_target": "os:system", "other_target": None}, "data": {"x_target": ""}}
    assert find_import_hooks(cfg) == [("model.refiner_target", "os:system")]
    with pytest.raises(ConfigError, match=r"model\.refiner_target='os:system' in sweep\.yaml .*--trust-config"):
        check_import_hooks(cfg, "sweep.yaml")
    check_import_hooks(cfg, "sweep.yaml", trusted=True)  # the user said so


def test_fuse_refuses_checkpoint_hooks(ckpts, capsys):
    from experiments.fuse import main as fuse

    d, marker = ckpts
    out = d / "fused.png"
    args = [str(d / "src0.png"), str(d / "src1.png"), "-o", str(out), "--device", "cpu"]
    assert fuse([*args, "--checkpoint", str(d / "evil.ckpt")]) == 2
    err = capsys.readouterr().err
    assert "model.refiner_target='os:system'" in err and "--trust-config" in err
    assert not marker.exists() and not out.exists()
    hooks = ["model.refiner=restormer", "model.refiner_target=os:system", f"model.refiner_kwargs={{command: 'touch {marker}'}}"]
    assert fuse([*args, "--method", "udpnet", "--weights", str(d / "good.ckpt"), *hooks]) == 2  # on the command line too
    assert "refiner_target='os:system' in the command line" in capsys.readouterr().err and not marker.exists()
    assert fuse([*args, "--checkpoint", str(d / "good.ckpt"), "--trust-config"]) == 0
    assert out.is_file()


def test_load_from_checkpoint_refuses_hooks(ckpts):
    from lightning_modules.udpnet.module import UDPNetModule as UDPNet

    d, marker = ckpts
    with pytest.raises(ConfigError, match="refiner_target"):
        UDPNet.load_from_checkpoint(d / "evil.ckpt")
    with pytest.raises(ConfigError, match="refiner_target"):
        load_module(d / "evil.ckpt")
    assert not marker.exists()
    module = load_module(d / "good.ckpt", trust_config=True)
    assert type(module.refiner).__name__ == "DenoiserRefiner"


def test_run_refuses_hooks_from_config_and_command_line(ckpts, tmp_path, capsys):
    from experiments.run import main as run

    d, marker = ckpts
    evil_yaml = tmp_path / "shared.yaml"  # a config file from someone else
    evil_yaml.write_text("method: udpnet\nmodel: {refiner: restormer, refiner_target: 'os:system', "
                         f"refiner_kwargs: {{command: 'touch {marker}'}}}}\n")
    run_dir = tmp_path / "run"
    for argv in (["--config", str(evil_yaml)],
                 ["--config", "udpnet.yaml", "model.refiner=restormer", "model.refiner_target=os:system"]):
        with pytest.raises(SystemExit) as e:
            run([*argv, *SMOKE, f"run_dir={run_dir}", "logger.wandb=false"])
        assert e.value.code == 2
        assert "refiner_target='os:system'" in capsys.readouterr().err
    assert not marker.exists() and not run_dir.exists()
    # trusted: the hook check passes (the run then stops at the next check, the missing data folder)
    with pytest.raises(SystemExit):
        run(["--config", "udpnet.yaml", "--trust-config", *SMOKE, "model.refiner=restormer",
             "model.refiner_target=test_trust:make_denoiser", "mode=test", "data.benchmark=/nonexistent"])
    assert "data.benchmark=/nonexistent: no such folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def gacn_ckpts(tmp_path_factory):
    """GACN checkpoints: pickled payload, a missing weight, another method's."""
    d = tmp_path_factory.mktemp("pickles")
    marker = d / "PWNED"
    cfg = load_config("gacn.yaml", SMOKE)
    module = registry.method_class("gacn")(cfg)
    conf = OmegaConf.to_container(cfg, resolve=True)
    _save(d / "payload.ckpt", module, conf, extra=Payload(marker))
    state = module.state_dict()
    state.pop(next(iter(state)))
    torch.save({"state_dict": state, "hyper_parameters": {"cfg": conf}}, d / "missing.ckpt")
    ucfg = load_config("udpnet.yaml", SMOKE)
    _save(d / "udpnet.ckpt", registry.method_class("udpnet")(ucfg), OmegaConf.to_container(ucfg, resolve=True))
    (d / "bench").mkdir()
    for i in range(2):
        Image.fromarray(np.full((24, 24, 3), 60 + 80 * i, np.uint8)).save(d / "bench" / f"p-{'AB'[i]}.png")
    return d, marker


def test_fig8_loads_weights_only_and_strict(gacn_ckpts, capsys):
    from ablations.gacn.fig8 import build_gacn, main as fig8
    from lightning_modules.gacn.module import GACN

    d, marker = gacn_ckpts
    for name, msg in (("payload", "not a readable checkpoint"), ("missing", "do not fit"),
                      ("udpnet", "method 'udpnet', expected 'gacn'")):
        with pytest.raises(CheckpointError, match=msg):
            build_gacn(str(d / f"{name}.ckpt"))
    with pytest.raises(Exception, match="Weights only load failed"):
        GACN.load_from_checkpoint(d / "payload.ckpt")  # Lightning's default (weights_only=False) would run it
    with pytest.raises(SystemExit) as e:
        fig8(["--sources", str(d / "bench"), "--weights", str(d / "payload.ckpt"), "--out", str(d / "out"),
              "--threads", "1"])
    assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not marker.exists()
