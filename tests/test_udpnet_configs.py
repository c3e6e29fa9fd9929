"""UDPNet configuration: the paper yaml, every sweep/paper-table override, and a smoke run."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from mfif.config import load_config

ROOT = Path(__file__).resolve().parent.parent
ABL = ROOT / "ablations" / "udpnet"


def test_paper_config_as_written():
    cfg = load_config("udpnet.yaml")
    m = cfg.model
    assert cfg.method == "udpnet" and m.variant == "full" and m.stages == 3  # Sec. IV: T = 3
    assert (m.alpha, m.beta, m.gamma, m.lam) == (0.4, 0.2, 0.2, 1.0)  # Sec. IV
    assert m.keep_prob == 0.9 and m.stage_weight_base == 2.0  # Eqs. 4, 13
    assert (cfg.optim.name, cfg.optim.lr, cfg.data.batch_size, cfg.trainer.max_epochs) == ("adam", 2e-4, 16, 200)
    assert cfg.data.name == "unsupervised_pairs" and cfg.data.patch_size == 60  # Sec. IV-A
    # Table II's ten columns, as the variants UDPNet printed (mfif.metrics.conventions): Zheng Liu's Q_G,
    # Q_C / Q_Y without the flat-window guard, MI in bits.
    assert list(cfg.metrics) == ["q_nmi", "q_ncie", "q_g_zl", "q_m", "q_p", "q_c_exact", "q_y_exact", "q_cb", "mi_bits_sk", "viff"]


@pytest.mark.parametrize("profile", ["smoke", "demo"])
def test_profiles_use_builtin_data(profile):
    cfg = load_config("udpnet.yaml", [f"profile={profile}"])
    assert cfg.data.name == "default" and cfg.model.variant == "full"


def _grid(sweep: dict) -> list[dict]:
    keys, lists = [], []
    for k, spec in sweep["parameters"].items():
        keys.append(k)
        lists.append(spec["values"] if "values" in spec else [spec["value"]])
    combos = [{}]
    for k, vals in zip(keys, lists):
        combos = [dict(c, **{k: v}) for c in combos for v in vals]
    return combos


@pytest.mark.parametrize("name", ["table1", "table2", "table3", "table4", "table5", "fig7"])
def test_sweeps_and_paper_tables_are_valid(name):
    sweep = yaml.safe_load((ABL / f"{name}.yaml").read_text())
    paper = yaml.safe_load((ABL / f"{name}.paper.yaml").read_text())
    assert sweep["method"] == "grid" and sweep["program"] == "experiments/run.py"
    assert "udpnet.yaml" in sweep["command"]
    assert paper["sweep"] == f"{name}.yaml"
    grid = _grid(sweep)
    for combo in grid:  # every grid point is a valid config
        load_config("udpnet.yaml", [f"{k}={v}" for k, v in combo.items()])
    swept = [k for k in sweep["parameters"] if "values" in sweep["parameters"][k]]
    row_points = [{k: r["overrides"][k] for k in swept} for r in paper["rows"]]
    assert sorted(map(str, row_points)) == sorted(str({k: c[k] for k in swept}) for c in grid)  # grid == rows
    for row in paper["rows"]:
        assert set(row["paper"]) <= set(paper["columns"])
        assert len(row["paper"]) in (0, len(paper["columns"]))


def test_table_values_transcribed():
    t4 = yaml.safe_load((ABL / "table4.paper.yaml").read_text())
    full = next(r for r in t4["rows"] if r["label"] == "UDPNet")
    t1 = yaml.safe_load((ABL / "table1.paper.yaml").read_text())
    real_mff = next(r for r in t1["rows"] if r["dataset"] == "real_mff")["paper"]
    assert {k: real_mff[k] for k in full["paper"]} == full["paper"]  # Table IV's UDPNet = Table I, Real-MFF
    assert len(t1["rows"]) == 2 and len(t1["baselines"]) == 16  # 2 datasets x (UDPNet + 8 baselines)
    for r in t1["rows"] + t1["baselines"]:  # #Para. and Time are printed once per method
        twin = next(b for b in t1["rows"] + t1["baselines"] if b["label"].split(" (")[0] == r["label"].split(" (")[0]
                    and b is not r)
        assert (r["paper"]["params"], r["paper"]["time"]) == (twin["paper"]["params"], twin["paper"]["time"])
    t5 = yaml.safe_load((ABL / "table5.paper.yaml").read_text())
    t2 = yaml.safe_load((ABL / "table2.paper.yaml").read_text())
    mffw = next(r for r in t2["rows"] if r["dataset"] == "mffw")
    t5_full = next(r for r in t5["rows"] if r["label"] == "UDPNet")["paper"]
    assert {k: v for k, v in mffw["paper"].items() if k != "arank"} == {k: v for k, v in t5_full.items() if k != "arank"}
    assert len(t2["rows"]) == 3 and len(t2["baselines"]) == 24  # 3 datasets x (UDPNet + 8 baselines)


def test_table3_values_reproduce_the_printed_arank():
    """MFFW and SIMIF: the ARank recomputed from the transcribed values (six metrics, twelve methods,
    1 = best, ties share the best rank) is the printed one, so no value was mistyped across a rank.
    Lytro's printed ARank does not follow from its printed values (the paper's), so it is not used."""
    from scipy.stats import rankdata

    t3 = yaml.safe_load((ABL / "table3.paper.yaml").read_text())
    metrics = [c for c in t3["columns"] if c != "arank"]
    assert len(t3["rows"]) == 3 and len(t3["baselines"]) == 33  # 3 datasets x 12 methods
    for ds in ("mffw", "simif"):
        rows = [r for r in t3["rows"] + t3["baselines"] if r["dataset"] == ds]
        ranks = [rankdata([-r["paper"][m] for r in rows], method="min") for m in metrics]
        got = [round(sum(rk[i] for rk in ranks) / len(metrics), 2) for i in range(len(rows))]
        assert got == [r["paper"]["arank"] for r in rows], ds


def test_smoke_run_end_to_end(tmp_path):
    """`run.py --config udpnet.yaml profile=smoke` trains, tests and writes a report."""
    from experiments.run import run

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_config("udpnet.yaml", ["profile=smoke", "logger.wandb=false",
                                          "trainer.progress=none", f"run_dir={tmp_path}"])
        run_dir = run(cfg)
    finally:
        torch.set_num_threads(n)
    assert (Path(run_dir) / "checkpoints" / "last.ckpt").is_file()
