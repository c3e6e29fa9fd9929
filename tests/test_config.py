"""Config merge order, override parsing, unknown-key / wrong-type errors, profiles, CLI exit codes."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

import tiny_method  # noqa: F401  (registers the 'tiny' test method)
from experiments import run as run_cli
from mfif.config import ConfigError, load_config, parse_overrides


@pytest.fixture()
def paper_yaml(tmp_path):
    p = tmp_path / "paper.yaml"
    p.write_text(
        "method: tiny\n"
        "seed: 7\n"  # overrides base.yaml's 0
        "optim: {lr: 0.005}\n"
        "model: {width: 6}\n"
        "profiles:\n  smoke:\n    model: {width: 3}\n"
    )
    return p


def test_merge_order_schema_base_paper_overrides(paper_yaml):
    cfg = load_config(paper_yaml)
    assert cfg.trainer.max_epochs == 1  # schema default (base.yaml does not set it)
    assert cfg.logger.mode == "offline"  # base.yaml
    assert cfg.seed == 7 and cfg.optim.lr == 0.005 and cfg.model.width == 6  # paper yaml
    cfg = load_config(paper_yaml, ["seed=3", "optim.lr=1e-3", "trainer.devices=2"])
    assert cfg.seed == 3 and cfg.optim.lr == pytest.approx(1e-3) and cfg.trainer.devices == 2


def test_profile_merges_base_and_paper_then_cli_wins(paper_yaml):
    cfg = load_config(paper_yaml, ["profile=smoke"])
    assert cfg.data.name == "default" and cfg.data.patch_size == 32  # base.yaml smoke
    assert cfg.model.width == 3  # paper's smoke
    cfg = load_config(paper_yaml, ["profile=smoke", "model.width=9", "data.patch_size=40"])
    assert cfg.model.width == 9 and cfg.data.patch_size == 40


def test_override_parsing_types():
    o = parse_overrides(["a.b=1", "c=null", "d=[1,2]", "e=0.5", "f=text", "--g=true"])
    assert o.a.b == 1 and o.c is None and list(o.d) == [1, 2] and o.e == 0.5 and o.f == "text" and o.g is True
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])


def test_unknown_key_names_key_and_suggests(paper_yaml):
    with pytest.raises(ConfigError, match=r"optim\.lrr.*did you mean 'optim\.lr'"):
        load_config(paper_yaml, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"model\.widht.*model\.width"):
        load_config(paper_yaml, ["model.widht=2"])
    bad = paper_yaml.parent / "bad.yaml"
    bad.write_text("method: tiny\ntrainer: {max_epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*trainer\.max_epoch"):
        load_config(bad)


def test_wrong_type_and_bad_values(paper_yaml):
    with pytest.raises(ConfigError, match=r"wrong type for 'trainer\.max_epochs'"):
        load_config(paper_yaml, ["trainer.max_epochs=many"])
    with pytest.raises(ConfigError, match="profile 'nope'"):
        load_config(paper_yaml, ["profile=nope"])
    with pytest.raises(ConfigError, match="mode must be one of"):
        load_config(paper_yaml, ["mode=train"])
    with pytest.raises(ConfigError, match="not registered"):
        load_config(paper_yaml, ["method=nope"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("does_not_exist.yaml")


def test_cli_exit_code_2_and_print_config(paper_yaml, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli.main(["--config", str(paper_yaml), "optim.lrr=1"])
    assert e.value.code == 2
    assert "unknown key 'optim.lrr'" in capsys.readouterr().err
    assert run_cli.main(["--config", str(paper_yaml), "--print-config", "seed=11"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.seed == 11 and printed.method == "tiny"


def test_every_shipped_config_validates():
    from mfif.config import CONFIG_DIR

    names = [p.name for p in CONFIG_DIR.glob("*.yaml") if p.name != "base.yaml"]
    assert names, "no paper configs shipped"
    for name in names:
        for prof in (None, "smoke", "demo"):
            cfg = load_config(name, [f"profile={prof}"] if prof else [])
            assert cfg.method and cfg.data.name
