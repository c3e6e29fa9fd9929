"""Start-up (issue 19 item 1): the inference path imports only what it uses - no Lightning, no
torch._dynamo, no other paper, no DataModule - while training still gets LightningModules.

Each check runs in a fresh interpreter (``sys.modules`` of the test process is shared by every
test); none measures a time (``experiments/benchmarks/bench_cli.py`` does).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, python_env, released_weights

HEAVY = ("lightning", "torch._dynamo", "datamodules.base", "lightning_modules.udpnet", "lightning_modules.ufafuse")


def _run(code: str) -> dict:
    """Run ``code`` in a new interpreter; it prints one JSON object as its last line."""
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=python_env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_fuse_cli_with_released_weights_imports_no_lightning(shared_dir, tmp_path):
    weights = released_weights(shared_dir, "gacn_official.pkl")
    rng = np.random.default_rng(0)
    pair = []
    for side in "AB":
        pair.append(tmp_path / f"s-{side}.png")
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(pair[-1])
    out = tmp_path / "fused.png"
    got = _run(f"""
        import json, sys
        from experiments.fuse import main
        rc = main([{str(pair[0])!r}, {str(pair[1])!r}, "-o", {str(out)!r}, "--method", "gacn",
                   "--weights", {str(weights)!r}])
        print(json.dumps({{"rc": rc, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
    """)
    assert got == {"rc": 0, "loaded": []}
    assert Image.open(out).size == (48, 40)


@pytest.mark.slow
def test_fuse_cli_with_a_checkpoint_imports_no_lightning(tmp_path):
    """``--checkpoint``: the stored config and tensors are all fusion needs (item 1 of issue 19)."""
    rng = np.random.default_rng(1)
    pair = []
    for side in "AB":
        pair.append(tmp_path / f"s-{side}.png")
        Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(pair[-1])
    ckpt, out = tmp_path / "last.ckpt", tmp_path / "fused.png"
    # A checkpoint in the layout run.py writes (state_dict + hyper_parameters.cfg), made in a
    # separate interpreter so that the fusing one starts clean.
    _run(f"""
        import json, torch
        from omegaconf import OmegaConf
        from lightning_modules.base import inference_only
        from mfif import registry
        from mfif.config import load_config

        cfg = load_config("gacn.yaml", ["model.multi_strategy=serial"], data=False)
        with inference_only():
            module = registry.method_class("gacn")(cfg)
        torch.save({{"state_dict": module.state_dict(),
                    "hyper_parameters": {{"cfg": OmegaConf.to_container(cfg, resolve=True)}}}}, {str(ckpt)!r})
        print(json.dumps({{}}))
    """)
    got = _run(f"""
        import json, sys
        from experiments.fuse import main
        rc = main([{str(pair[0])!r}, {str(pair[1])!r}, "-o", {str(out)!r}, "--checkpoint", {str(ckpt)!r}])
        print(json.dumps({{"rc": rc, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
    """)
    assert got == {"rc": 0, "loaded": []}
    assert Image.open(out).size == (44, 36)


@pytest.mark.slow
def test_fast_exit_flushes_output_and_keeps_the_exit_code(tmp_path):
    """``run_cli(..., fast_exit=True)`` (fuse.py, evaluate.py) skips teardown, not output."""
    code = textwrap.dedent("""
        import sys
        from mfif.runtime import run_cli
        def main():
            sys.stdout.write("partial line without newline")
            print("to stderr", file=sys.stderr)
            return 3
        run_cli(main, fast_exit=True)
        print("never printed")
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=python_env(), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 3
    assert res.stdout == "partial line without newline" and res.stderr == "to stderr\n"


@pytest.mark.slow
def test_inference_only_module_fuses_without_lightning_or_datamodules():
    got = _run(f"""
        import json, sys, torch
        from experiments.fuse import fuse_stack
        from lightning_modules.base import inference_only, lightning_enabled
        from mfif import registry
        from mfif.config import load_config

        names = registry.methods()  # listing names imports no paper
        cfg = load_config("gacn.yaml", ["model.multi_strategy=serial"], data=False)
        with inference_only():
            module = registry.method_class("gacn")(cfg).eval()
        fused, maps = fuse_stack(module, torch.rand(1, 3, 3, 24, 20))
        print(json.dumps({{"names": names, "fused": list(fused.shape), "maps": list(maps.shape),
                          "data": cfg.data.name, "lightning": lightning_enabled(),
                          "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
    """)
    assert {"gacn", "udpnet", "ufafuse", "msasn", "vaeedof", "vaeedof_vae"} <= set(got["names"])
    assert got["fused"] == [1, 3, 24, 20] and got["maps"] == [1, 3, 1, 24, 20]
    assert got["data"] == "coco_defocus"  # gacn.yaml's data.name, its generator never imported
    assert got["lightning"] is False and got["loaded"] == []


@pytest.mark.slow
def test_training_still_gets_lightning_modules_after_a_light_one():
    got = _run("""
        import json
        from lightning_modules.base import inference_only, lightning_enabled
        from mfif import registry
        from mfif.config import load_config

        cfg = load_config("gacn.yaml", ["metrics=[psnr]"])  # data validated: imports the DataModule
        with inference_only():  # Lightning already imported (by the DataModule): changes nothing
            module = registry.method_class("gacn")(cfg)
        import lightning
        print(json.dumps({"lightning": lightning_enabled(), "is_lm": isinstance(module, lightning.LightningModule),
                          "hparams": sorted(module.hparams), "metrics": hasattr(module, "test_fr"),
                          "from_ckpt": callable(registry.method_class("gacn").load_from_checkpoint)}))
    """)
    assert got == {"lightning": True, "is_lm": True, "hparams": ["cfg"], "metrics": True, "from_ckpt": True}


@pytest.mark.slow
def test_lightning_only_class_attribute_turns_lightning_on():
    got = _run("""
        import json, sys
        from lightning_modules.base import lightning_enabled
        from mfif import registry

        cls = registry.method_class("gacn")
        before = lightning_enabled()
        has = callable(cls.freeze)  # a LightningModule method
        print(json.dumps({"before": before, "after": lightning_enabled(), "has": has}))
    """)
    assert got == {"before": False, "after": True, "has": True}


def test_unknown_names_list_the_known_ones():
    from mfif import registry

    with pytest.raises(KeyError, match=r"unknown method 'nope'; known: \[.*'gacn'"):
        registry.method_class("nope")
    with pytest.raises(KeyError, match=r"unknown data.name 'nope'; known: \[.*'coco_defocus'"):
        registry.data_config_class("nope")
