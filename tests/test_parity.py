"""ablations/parity.py (printed rows regenerated from published images and released weights) and
colour results of gray-trained decision-map / Y-channel methods in run.py predict."""
from __future__ import annotations

import csv
import dataclasses
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ablations.sweeps import parity
from datamodules.default import compose_sources, load_photo, procedural_regions
from mfif.io import load_image
from mfif.metrics import build_metric
from mfif.ops.colour import rgb_to_gray, rgb_to_ycbcr

QUIET = ["logger.wandb=false", "trainer.progress=none", "trainer.accelerator=cpu"]


def _rows(paper: str, table: str, label: str) -> list:
    return [r for r in parity.parity_rows([paper]) if r.table == table and r.label == label]


def test_side_files_give_the_regenerable_rows():
    rows = parity.parity_rows()
    by = {(r.paper, r.table): r for r in rows}
    assert {p for p, _ in by} == {"gacn", "ufafuse", "msasn", "udpnet"}
    assert {r.label for r in rows if (r.paper, r.table) == ("ufafuse", "table5")} == {
        "Proposed", "Proposed (published images)", "SESF", "CNN", "DSIFT", "MWGF", "GFF", "NSCT", "DTCWT"}
    released, published = _rows("ufafuse", "table5", "Proposed") + _rows("ufafuse", "table5", "Proposed (published images)")
    assert released.method == "ufafuse" and released.scored is None
    assert published.method is None and published.scored == "ufa_published/lytro" and not published.available
    assert published.printed == released.printed and published.metrics == released.metrics
    assert "not the model that made the authors' published images" in published.note and released.note is None
    assert all(r.metrics and "time" not in r.metrics and "arank" not in r.metrics for r in rows)
    dcnn, = _rows("udpnet", "table3", "DCNN (Lytro)")
    assert dcnn.published == "cnn" and dcnn.dataset == "lytro" and dcnn.source_key == "published/cnn/lytro"


@pytest.mark.slow  # 15-30 s of real data: in make test, not make test-fast
def test_published_cnn_row_matches_udpnet_table3(shared_dir, tmp_path):
    """DCNN (= published CNN images, 20 Lytro pairs): the toolbox-convention cells within 0.5 %."""
    rows = _rows("udpnet", "table3", "DCNN (Lytro)")
    cells = parity.run(rows, shared_dir / "data", shared_dir / "weights", tmp_path, say=lambda m: None)
    assert len(cells) == len(rows[0].metrics) and all(c["printed"] == float(rows[0].printed[c["metric"]]) for c in cells)
    canon = [c for c in cells if c["metric"].split("_")[:2] in (["q", "nmi"], ["q", "m"], ["q", "cb"])]
    assert len(canon) == 3
    for c in canon:  # printed NMI 1.1508, Q_M 2.3960, Q_CB 0.8082 (UDPNet Table III)
        assert abs(c["rel_diff"]) < 0.005, c
    csv_path, md_path = parity.write_outputs(cells, tmp_path)
    got = list(csv.DictReader(csv_path.open()))
    assert list(got[0]) == parity.CSV_HEADER and len(got) == len(cells)
    assert math.isclose(float(got[0]["rel_diff"]), cells[0]["rel_diff"], rel_tol=1e-4)
    md = md_path.read_text()
    assert "## udpnet table3" in md and "| **all** | " in md and "within 2%" in md


@pytest.mark.slow  # 15-30 s of real data: in make test, not make test-fast
def test_released_gacn_cells_match_the_fuse_path(shared_dir, tmp_path):
    """GACN row on 2 of its 26 test pairs: cached PNGs from FusionModule.fuse, scored per metric."""
    data = tmp_path / "data" / "gacn_test26"
    data.mkdir(parents=True)
    for name in ("color_lytro_05", "gray_mwg_lab"):
        for k in (1, 2):
            shutil.copy(shared_dir / f"data/gacn_test26/{name}_{k}.png", data)
    row, = _rows("gacn", "table1", "GACN")
    row = dataclasses.replace(row, metrics=[m for m in row.metrics if not m.startswith("fmi")])  # FMI: slow, full run only
    assert len(row.metrics) == 4
    lines = []
    cells = parity.run([row], tmp_path / "data", shared_dir / "weights", tmp_path / "out", say=lines.append)
    fused_dir = tmp_path / "out/fused/gacn/gacn_test26"
    assert sorted(p.name for p in fused_dir.iterdir()) == ["color_lytro_05.png", "gray_mwg_lab.png"]
    assert load_image(fused_dir / "color_lytro_05.png").shape[0] == 3  # colour pair -> colour result
    assert sum("fused" in m for m in lines) == 2 and "ETA" in lines[-1]
    # independent recomputation of one cell from the cached images
    m = build_metric(cells[0]["metric"])
    vals = []
    for name in ("color_lytro_05", "gray_mwg_lab"):
        srcs = torch.stack([load_image(data / f"{name}_{k}.png") for k in (1, 2)])[None]
        m.reset()
        m.update(load_image(fused_dir / f"{name}.png")[None], srcs)
        vals.append(float(m.compute()))
    assert cells[0]["ours"] == pytest.approx(sum(vals) / 2, rel=1e-6)
    lines.clear()  # a rerun only rescores
    again = parity.run([row], tmp_path / "data", shared_dir / "weights", tmp_path / "out", say=lines.append)
    assert not any("fused" in m for m in lines) and [c["ours"] for c in again] == [c["ours"] for c in cells]


def test_scored_images_replace_the_row_when_given(shared_dir, tmp_path):
    """``scored: mfif_benchmark/CNN`` (MSASN Table 2): with ``baselines/mfif_benchmark/`` in --data
    the row is scored on those files (benchmark naming ``lytro_NN_CNN.jpg``), as they are."""
    data = tmp_path / "data"
    (data / "lytro").mkdir(parents=True)
    bench = data / "baselines" / "mfif_benchmark"
    bench.mkdir(parents=True)
    for n in ("01", "02"):
        for k in "AB":
            shutil.copy(shared_dir / f"data/lytro/lytro-{n}-{k}.jpg", data / "lytro")
        # stand-ins for the benchmark's JPEGs: the survey's CNN result, JPEG-encoded
        Image.open(shared_dir / f"data/baselines/lytro/cnn/lytro-{n}.png").save(bench / f"lytro_{n}_CNN.jpg", quality=90)
    row, = _rows("msasn", "table2", "CNN")
    assert row.scored == "mfif_benchmark/CNN" and row.source_key == "published/cnn/lytro"
    row = dataclasses.replace(row, metrics=["q_cb", "q_sf"])
    notes = parity.use_scored_images([row], data)
    assert row.use_scored and row.source_key == "scored/mfif_benchmark/CNN/lytro"
    assert len(notes) == 1 and "lytro_NN" not in notes[0] and "baselines/mfif_benchmark/<scene>_CNN.*" in notes[0]
    parity.check_inputs([row], data, shared_dir / "weights")  # no baselines/lytro/cnn needed
    cells = parity.run([row], data, shared_dir / "weights", tmp_path / "out", say=lambda m: None)
    m = build_metric("q_cb")
    vals = []
    for n in ("01", "02"):
        srcs = torch.stack([load_image(data / f"lytro/lytro-{n}-{k}.jpg") for k in "AB"])[None]
        m.reset()
        m.update(load_image(bench / f"lytro_{n}_CNN.jpg")[None], srcs)
        vals.append(float(m.compute()))
    assert cells[0]["metric"] == "q_cb" and cells[0]["ours"] == pytest.approx(sum(vals) / 2, rel=1e-6)
    # without the folder the row is what it was: the published PNGs
    plain = dataclasses.replace(row, use_scored=False)
    assert parity.use_scored_images([plain], tmp_path) == [] and not plain.use_scored


@pytest.mark.slow  # 15-30 s of real data: in make test, not make test-fast
def test_scored_rows_reproduce_the_printed_values(shared_dir, tmp_path):
    """CI's parity subset on the images the papers scored (as in the test data): MSASN Table 2's
    SESF row on X. Zhang's MFIF-benchmark JPEGs and UFA-Fuse Table V's "Proposed" on the authors'
    published PNGs, each on columns that are quick to score, equal the printed values to the
    printed decimals (20 Lytro pairs)."""
    data = shared_dir / "data"
    sesf, = _rows("msasn", "table2", "SESF")
    ufa, = _rows("ufafuse", "table5", "Proposed (published images)")
    sesf = dataclasses.replace(sesf, metrics=["q_nmi", "q_sf"])
    ufa = dataclasses.replace(ufa, metrics=["std_r", "sen_r"])
    notes = parity.use_scored_images([sesf, ufa], data)
    assert sesf.use_scored and ufa.use_scored and ufa.available and len(notes) == 2
    assert ufa.source_key == "scored/ufa_published/lytro/lytro"
    parity.check_inputs([sesf, ufa], data, shared_dir / "weights")
    cells = parity.run([sesf, ufa], data, shared_dir / "weights", tmp_path, say=lambda m: None)
    assert [(c["row"], c["metric"]) for c in cells] == [("SESF", "q_nmi"), ("SESF", "q_sf"),
                                                        ("Proposed (published images)", "std_r"),
                                                        ("Proposed (published images)", "sen_r")]
    # printed: Q_NMI 1.10225, Q_SF -0.02222 (MSASN, 5 decimals); STD 62.7020, SEN 7.5791 (UFA-Fuse, 4):
    # within 1.5 units of the last printed decimal
    for c in cells:
        assert abs(c["ours"] - c["printed"]) <= (1.5e-5 if c["paper"] == "msasn" else 1.5e-4), c
    assert sorted(p.name for p in (tmp_path / ufa.source_key).iterdir())[0] == "lytro-01.png"


def test_parity_entries_are_checked(tmp_path):
    """A list of entries needs a label on each later one; scored-only rows need a known collection."""
    side = tmp_path / "ablations" / "x" / "table9.paper.yaml"
    side.parent.mkdir(parents=True)

    def rows(parity_yaml: str):
        side.write_text(f"columns: [q_cb, time]\nrows:\n  - label: A\n    paper: {{q_cb: 0.8}}\n    parity: {parity_yaml}\n")
        return parity.parity_rows(root=tmp_path)

    both = rows("[{published: cnn, dataset: lytro}, {label: A2, scored: ufa_published/lytro, dataset: lytro}]")
    assert [(r.label, r.published, r.scored, r.metrics) for r in both] == [
        ("A", "cnn", None, ["q_cb"]), ("A2", None, "ufa_published/lytro", ["q_cb"])]
    for bad, msg in [
        ("[{published: cnn, dataset: lytro}, {scored: ufa_published/lytro, dataset: lytro}]", "needs its own 'label'"),
        ("[{published: cnn, dataset: lytro}, {label: A, scored: ufa_published/lytro, dataset: lytro}]", "used twice"),
        ("{scored: nowhere/lytro, dataset: lytro}", "collection in"),
        ("{dataset: lytro}", "must be {method"),
        ("[3]", "must be a mapping"),
    ]:
        with pytest.raises(parity.ParityError, match=msg):
            rows(bad)


def test_scored_only_row_without_its_images_is_left_out(shared_dir, tmp_path, capsys, monkeypatch):
    """Without ``baselines/ufa_published/`` the published-images row is not run, and the md says so."""
    data = tmp_path / "data"
    (data / "lytro").mkdir(parents=True)
    (data / "baselines/lytro/cnn").mkdir(parents=True)
    for n in ("01", "02"):  # two scenes (one pair alone would be one scene named after the folder)
        for k in "AB":
            shutil.copy(shared_dir / f"data/lytro/lytro-{n}-{k}.jpg", data / "lytro")
        shutil.copy(shared_dir / f"data/baselines/lytro/cnn/lytro-{n}.png", data / "baselines/lytro/cnn")
    cnn, = _rows("ufafuse", "table5", "CNN")
    ufa, = _rows("ufafuse", "table5", "Proposed (published images)")
    cnn, ufa = (dataclasses.replace(r, metrics=["std_r"]) for r in (cnn, ufa))
    cnn.note = "an entry's note goes to parity.md."
    monkeypatch.setattr(parity, "parity_rows", lambda papers=None: [cnn, ufa])
    out = tmp_path / "out"
    assert parity.main(["--data", str(data), "--weights", str(tmp_path), "--out", str(out)]) == 0
    got = list(csv.DictReader((out / "parity.csv").open()))
    assert [r["row"] for r in got] == ["CNN"]
    assert "not run (baselines/ufa_published/lytro not in --data): ufafuse table5 'Proposed (published images)'" in (
        out / "parity.md").read_text()
    assert "- ufafuse table5 'CNN': an entry's note goes to parity.md." in (out / "parity.md").read_text()
    assert "CPU-min" in capsys.readouterr().out


def test_scored_image_missing_is_a_clear_error(shared_dir, tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(shared_dir / "data/mffw", data / "mffw")
    (data / "baselines/mfif_benchmark").mkdir(parents=True)
    (data / "baselines/mfif_benchmark/mffw_01_SESF.jpg").write_bytes(b"")  # only scene 01
    out = tmp_path / "out"
    with pytest.raises(parity.ParityError, match=r"no image mffw_02_SESF\.\* for scene 'mffw_02'"):
        parity.scored_image(data / "baselines/mfif_benchmark", "mffw_02", "SESF")
    mffw_row, = _rows("msasn", "table3", "SESF")
    monkeypatch.setattr(parity, "parity_rows", lambda papers=None: [mffw_row])
    assert parity.main(["--data", str(data), "--weights", str(tmp_path), "--out", str(out)]) == 2  # no weights needed
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "SESF" in err
    assert not out.exists()  # checked before anything is written


@pytest.mark.parametrize("args, msg", [
    (["--data", "{tmp}/nope", "--weights", "{w}"], "--data"),
    (["--data", "{d}", "--weights", "{tmp}"], "missing file gacn_official.pkl"),
    (["--data", "{d}", "--weights", "{w}", "--paper", "nosuchpaper"], "--paper nosuchpaper"),
    (["--data", "{tmp}", "--weights", "{w}", "--paper", "gacn"], "missing folder gacn_test26"),
])
def test_cli_errors(shared_dir, tmp_path, capsys, args, msg):
    out = tmp_path / "out"
    fill = dict(tmp=tmp_path, d=shared_dir / "data", w=shared_dir / "weights")
    assert parity.main([a.format(**fill) for a in args] + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and msg in err and "\n" not in err
    assert not out.exists()


@pytest.fixture(scope="module")
def colour_bench(tmp_path_factory):
    d = tmp_path_factory.mktemp("colour")
    img = load_photo("chelsea")[60:108, 100:156]
    src = compose_sources(img, procedural_regions(np.random.default_rng(3), 48, 56, 2, 6.0), [2.0, 2.0], 1.0)
    for i, s in enumerate(src):
        Image.fromarray((s * 255 + 0.5).astype(np.uint8)).save(d / f"cat-{'AB'[i]}.png")
    return d


@pytest.mark.parametrize("method", ["gacn", "msasn", "udpnet"])
def test_colour_predict_of_gray_trained_methods(method, colour_bench, shared_dir, tmp_path):
    """A colour benchmark gives colour results (gacn.yaml trains with data.gray=true)."""
    import lightning as L

    from experiments.run import main
    from mfif import registry
    from mfif.config import load_config

    over = [f"weights={shared_dir / 'weights/gacn_official.pkl'}"] if method == "gacn" else []
    out = tmp_path / "fused"
    assert main(["--config", f"{method}.yaml", "mode=predict", f"data.benchmark={colour_bench}", f"out={out}",
                 f"run_dir={tmp_path / 'run'}", *over, *QUIET]) == 0
    written, = out.iterdir()  # one scene (named after the folder)
    fused = load_image(written)
    assert fused.shape == (3, 48, 56) and (fused[0] - fused[1]).abs().max() > 0.05
    # the same module (same seed, same weights) on the same sources, in this process
    cfg = load_config(f"{method}.yaml", over)
    L.seed_everything(int(cfg.seed), verbose=False)
    module = registry.method_class(cfg.method)(cfg)
    if over:
        module.load_official_weights(cfg.weights)
    srcs = torch.stack([load_image(colour_bench / f"cat-{k}.png") for k in "AB"])[None]
    with torch.inference_mode():
        res = module.eval().fuse(srcs)
        if method == "udpnet":  # the network fuses Y; Cb/Cr by the chroma rule
            gray_path = module.fuse(rgb_to_ycbcr(srcs)[:, :, :1]).fused
            ours = rgb_to_ycbcr(fused)[:1]
        else:  # one gray decision map, applied to R, G and B
            gray_path = module.fuse(rgb_to_gray(srcs)).fused
            ours = rgb_to_gray(fused)
            assert torch.allclose(res.fused, (res.maps * srcs).sum(1))
    assert (fused - res.fused[0]).abs().max() <= 1 / 255 + 1e-6
    assert (ours - gray_path[0]).abs().max() <= 2 / 255
