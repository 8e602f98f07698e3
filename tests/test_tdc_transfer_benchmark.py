"""benchmarks/tdc_transfer.py on a tiny synthetic TDC ADMET file (no real data needed)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("tdc_transfer.py")


def _smiles(n: int) -> list[str]:
    heads = ["C", "CC", "CCC", "CCCC", "CCCCC", "c1ccccc1", "C1CCCCC1", "CC(C)", "CC(=O)"]
    tails = ["O", "N", "Cl", "F", "C(=O)O", "OC", "NC", "C#N"]
    from rdkit import Chem

    unique = {}
    for smi in (h + t for h in heads for t in tails):
        unique.setdefault(Chem.MolToSmiles(Chem.MolFromSmiles(smi)), smi)
    out = list(unique.values())[:n]
    assert len(out) == n
    return out


# the target's test molecule, written differently in a source dataset
LEAK, LEAK_IN_SOURCE = "OCCCCCCCCCCC", "CCCCCCCCCCCO"


def _write_tdc(path: Path) -> None:
    mols = _smiles(60)
    rng = np.random.default_rng(0)
    rows = []
    layout = [("train", 14), ("valid", 5), ("test", 5)]

    def add(name: str, smiles: list[str], cls: bool) -> None:
        i = 0
        for part, n in layout:
            for k in range(n):
                y = float(k % 2) if cls else float(rng.normal())
                rows.append({"dataset": name, "Drug_ID": f"{name}{i}", "Drug": smiles[i], "Y": y,
                             "split": part})
                i += 1

    hia = mols[:24]
    hia[19] = LEAK  # first test row of the target
    add("hia_hou", hia, True)
    bbb = [LEAK_IN_SOURCE, *mols[10:33]]  # overlaps the target (train/valid/test) + source-only molecules
    add("bbb_martins", bbb, True)
    add("caco2_wang", mols[30:54], False)
    add("half_life_obach", mols[36:60], False)
    pd.DataFrame(rows).to_csv(path / "tdc_admet_group.csv.gz", index=False, compression="gzip")


@pytest.fixture()
def tdc_dir(tmp_path, monkeypatch) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    _write_tdc(data)
    monkeypatch.setenv("MOLADAPT_DATA_DIR", str(data))
    return data


def test_table_has_same_type_sources_and_no_test_leakage(tdc_dir):
    from moladapt import transfer as bench

    names = ["tdc_hia_hou", "tdc_bbb_martins", "tdc_caco2_wang", "tdc_half_life_obach"]
    corpus = bench.load_corpus(names)
    _, index = corpus.graphs("basic")
    table = bench.build_table(corpus, "tdc_hia_hou", names, index, extra_ratio=None, seed=0)
    assert table.sources == ["tdc_bbb_martins"]  # regression datasets are not sources
    assert table.y.shape[1] == 2
    assert len(table.test) == 5 and len(table.valid) == 5 and len(table.train) == 14
    assert np.isnan(table.y[table.test, 1]).all()  # no source label on a test molecule
    assert table.n_dropped_source_labels >= 1  # LEAK_IN_SOURCE == the target's test LEAK
    test_graphs = {int(g) for g in table.graph_rows[table.test]}
    assert not test_graphs & {int(g) for g in table.graph_rows[table.train_mt]}
    extra = table.train_mt[len(table.train):]
    assert len(extra) > 0 and np.isnan(table.y[extra, 0]).all()
    assert not np.isnan(table.y[extra, 1]).any()
    # the cap on source-only molecules
    capped = bench.build_table(corpus, "tdc_hia_hou", names, index, extra_ratio=0.1, seed=0)
    assert len(capped.train_mt) - len(capped.train) == math.ceil(0.1 * 14)
    reg = bench.build_table(corpus, "tdc_caco2_wang", names, index, extra_ratio=4.0, seed=1)
    assert reg.sources == ["tdc_half_life_obach"]
    from moladapt.data.sources import DataError

    with pytest.raises(DataError, match="no source of tdc_caco2_wang's task type .regression.: "
                                        "tdc_hia_hou is classification"):
        bench.build_table(corpus, "tdc_caco2_wang", ["tdc_hia_hou"], index, extra_ratio=None, seed=0)


def test_smoke_run_report_and_resume(bench, tdc_dir, tmp_path):
    out = tmp_path / "out"
    argv = ["--targets", "hia_hou,caco2_wang", "--seeds", "0", "--hidden-dim", "8",
            "--num-layers", "2", "--epochs", "2", "--inner-steps", "2", "--jobs", "1",
            "--output", str(out)]
    md = bench.main(argv)
    raw = sorted((out / "raw" / "tdc_transfer").glob("*/*.json"))
    assert len(raw) == 6
    rec = json.loads((out / "raw" / "tdc_transfer" / "hia_hou" / "bilevel_seed0.json").read_text())
    assert rec["metric"] == "roc_auc" and rec["sources"] == ["tdc_bbb_martins"]
    assert set(rec["weights"]) == {"tdc_bbb_martins"} and 0.0 <= rec["weights"]["tdc_bbb_martins"] <= 1.0
    assert rec["n_dropped_source_labels"] >= 1
    uni = json.loads((out / "raw" / "tdc_transfer" / "caco2_wang" / "uniform_mt_seed0.json").read_text())
    blo = json.loads((out / "raw" / "tdc_transfer" / "caco2_wang" / "bilevel_seed0.json").read_text())
    assert uni["metric"] == "mae" and uni["test_value"] is not None
    assert uni["steps"] == blo["steps"]  # the same number of optimiser steps
    assert (out / "tdc_transfer.md").exists() and (out / "tdc_transfer_ratios.png").stat().st_size > 0
    assert "bilevel" in md and "overhead" in md and "Paired tests" in md
    # resume: nothing is run again
    mtimes = {p: p.stat().st_mtime_ns for p in raw}
    bench.main(argv)
    assert {p: p.stat().st_mtime_ns for p in raw} == mtimes
    again = bench.main([*argv, "--report-only"])
    assert {p: p.stat().st_mtime_ns for p in raw} == mtimes
    command = next(line for line in again.splitlines() if line.startswith("Command:"))
    assert "--report-only" not in command  # the command given runs the benchmark


def test_transfer_cli_one_target_writes_config_and_ratios(tdc_dir, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from moladapt.cli.main import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["transfer", "--target", "hia_hou", "--ratios", "bilevel",
                                      "--epochs", "2", "--hidden-dim", "8", "--num-layers", "2",
                                      "--inner-steps", "2", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "ratio bbb_martins" in result.output
    # the size and a time estimate come before training (a cost check for --sources all)
    assert re.search(r"tdc_hia_hou: 14 training molecules \+ \d+ source-only, 1 sources; "
                     r"bilevel, 2 epochs: roughly \d+ s with 1 thread\(s\)", result.output), result.output
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["method"] == "bilevel" and config["target"] == "tdc_hia_hou"
    assert "tdc_hia_hou" not in config["settings"]["sources"]
    rec = json.loads((out / "metrics.json").read_text())
    assert rec["sources"] == ["tdc_bbb_martins"] and set(rec["weights"]) == {"tdc_bbb_martins"}
    assert rec["n_dropped_source_labels"] >= 1
    bad = CliRunner().invoke(app, ["transfer", "--target", "no_such_set", "--output", str(out)])
    assert bad.exit_code == 2 and "unknown TDC dataset 'no_such_set'" in bad.output
    bad = CliRunner().invoke(app, ["transfer", "--target", "hia_hou", "--ratios", "learned",
                                   "--output", str(out)])
    assert bad.exit_code == 2 and "ratios must be one of" in bad.output
    assert "the model kept is from outer step" in result.output
    assert set(rec["weights_at_best_step"]) == {"tdc_bbb_martins"}
    finished = (out / "config.yaml").read_text()
    for args, message in ((["--epochs", "0"], "epochs must be an integer of at least 1"),
                          (["--batch-size", "0"], "batch_size must be an integer of at least 2"),
                          (["--lr", "-1"], "lr must be a number >= 0"),
                          (["--target", "hia_hou,dili"], "--target names one dataset, got 2"),
                          (["--sources", "hia_hou"], "leaves no source besides the target")):
        bad = CliRunner().invoke(app, ["transfer", "--target", "hia_hou", "--ratios", "bilevel",
                                       *args, "--output", str(out)])
        assert bad.exit_code == 2 and message in bad.output, (args, bad.output)
    assert (out / "config.yaml").read_text() == finished  # refused reruns leave the finished run as it was


def test_transfer_time_estimate_scales_with_the_threads_used(monkeypatch):
    import moladapt.transfer as transfer

    monkeypatch.setattr(transfer, "_cpu_count", lambda: 2)
    monkeypatch.setattr(transfer, "_torch_threads", lambda: 2)
    settings = dict(transfer.DEFAULT_SETTINGS)
    one = transfer.estimated_seconds("uniform_mt", {**settings, "threads": 1}, 100, 1000)
    two = transfer.estimated_seconds("uniform_mt", {**settings, "threads": 2}, 100, 1000)
    every_core = transfer.estimated_seconds("uniform_mt", {**settings, "threads": None}, 100, 1000)
    more_than_the_cores = transfer.estimated_seconds("uniform_mt", {**settings, "threads": 8}, 100, 1000)
    assert one == pytest.approx(2 * two) and every_core == two == more_than_the_cores
    bilevel = transfer.estimated_seconds("bilevel", {**settings, "threads": 1}, 100, 1000)
    assert bilevel == pytest.approx(transfer.BILEVEL_TIME_FACTOR * one)
    single = transfer.estimated_seconds("single_task", {**settings, "threads": 1}, 100, 1000)
    assert single == pytest.approx(one / 10)  # single-task trains on the target's rows alone


def test_per_dataset_tests_count_only_the_comparisons_they_report(bench):
    import pandas as pd

    from moladapt.evaluate.statistics import holm_bonferroni

    rng = np.random.default_rng(0)
    rows = [{"target": t, "method": m, "seed": s, "score": shift + rng.normal(0, 1)}
            for t in ("a", "b", "c") for s in range(4)
            for m, shift in (("bilevel", 3.0), ("uniform_mt", 0.0), ("single_task", 1.0))]
    per = bench.per_dataset_tests(pd.DataFrame(rows))
    assert set(per["method"]) == {"bilevel"} and len(per) == 6  # 3 datasets × 2 baselines
    assert np.allclose(per["p_ttest_holm"], holm_bonferroni(per["p_ttest"].astype(float)))
    assert (per["significant"] == (per["p_ttest_holm"] < 0.05)).all()


def test_transfer_to_a_users_csv_target(tdc_dir, tmp_path):
    """A user's assay (own SMILES column name, one label column, an unparsable row) takes TDC
    sources: split 80/10/10 over the parsable rows, no source label on its test molecules,
    scored by ROC-AUC, and the config names the file and the columns as read."""
    import yaml

    from moladapt.transfer import load_user_target, transfer

    mols = _smiles(40)
    csv = tmp_path / "my_assay.csv"
    frame = pd.DataFrame({"Smiles": [*mols, "not a molecule"], "active": [i % 2 for i in range(41)]})
    frame.to_csv(csv, index=False)
    target = load_user_target(csv, split="random", seed=3)
    assert target.name == "my_assay" and target.label_column == "active" and target.metric == "roc_auc"
    assert list(target.parts).count("train") == 32 and target.parts[-1] == "" and target.keys[-1] is None
    rec = transfer(str(csv), "uniform", "hia_hou,bbb_martins", seed=3, output=tmp_path / "run",
                   split="random", epochs=1, hidden_dim=8, num_layers=2, inner_steps=2)
    assert rec["target"] == "my_assay" and rec["metric"] == "roc_auc" and 0 <= rec["test_value"] <= 1
    assert (rec["n_train"], rec["n_valid"], rec["n_test"]) == (32, 4, 4) and rec["n_unparsed_target_rows"] == 1
    assert rec["n_dropped_source_labels"] >= 1  # the sources measure some of its test molecules
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["target_csv"] == {"path": str(csv.resolve()), "smiles_column": "Smiles",
                                    "label_column": "active", "split": "random", "metric": "roc_auc"}
    from typer.testing import CliRunner

    from moladapt.cli.main import app

    new = tmp_path / "new.csv"  # the model it saved scores new molecules, SMILES column as trained
    pd.DataFrame({"Smiles": ["CCO", "c1ccccc1N"]}).to_csv(new, index=False)
    scored = CliRunner().invoke(app, ["predict", str(tmp_path / "run" / "model.pt"), "-i", str(new),
                                      "-o", str(tmp_path / "scored.csv")])
    assert scored.exit_code == 0, scored.output
    assert pd.read_csv(tmp_path / "scored.csv")["active_probability"].between(0, 1).all()
    shown = CliRunner().invoke(app, ["inspect", str(tmp_path / "run" / "model.pt")])
    assert f"trained by moladapt transfer: {csv.resolve()} (label active, random split), uniform_mt, 1 epochs, " \
           "seed 3, 2 source(s)" in shown.output, shown.output
    frame.assign(extra=1.0).to_csv(csv, index=False)
    with pytest.raises(ValueError, match="name the label column to transfer to with --target-column"):
        transfer(str(csv), "uniform", "hia_hou", epochs=1)
    with pytest.raises(ValueError, match="describe a CSV target; 'hia_hou' is a TDC name"):
        transfer("hia_hou", "uniform", "bbb_martins", target_column="active")


def test_transfer_compares_ratios_over_seeds_and_resumes(tdc_dir, tmp_path):
    from typer.testing import CliRunner

    from moladapt.cli.main import app

    csv = tmp_path / "assay.csv"
    pd.DataFrame({"smiles": _smiles(40), "active": [i % 2 for i in range(40)]}).to_csv(csv, index=False)
    out = tmp_path / "cmp"
    args = ["transfer", "--target", str(csv), "--sources", "hia_hou,bbb_martins", "--split", "random",
            "--ratios", "none,uniform", "--seed", "0,1,2,3,4,5", "--epochs", "1", "--hidden-dim", "8",
            "--num-layers", "2", "--inner-steps", "2", "--output", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = (out / "comparison.md").read_text()
    assert "| single-task |" in text and "| 6 |" in text and "higher is better" in text
    assert re.search(r"\| uniform multi-task \| 6 \| [+-]\d\.\d{3} \|", text), text
    assert sorted(p.name for p in out.iterdir() if p.is_dir())[:2] == ["none_seed0", "none_seed1"]
    stamp = (out / "uniform_seed3" / "metrics.json").stat().st_mtime_ns
    again = CliRunner().invoke(app, args)  # finished runs with the same config are reused
    assert again.exit_code == 0 and (out / "uniform_seed3" / "metrics.json").stat().st_mtime_ns == stamp
    assert (out / "comparison.md").read_text() == text
    changed = CliRunner().invoke(app, [*args[:-2], "--epochs", "2", "--output", str(out)])
    assert changed.exit_code == 0 and (out / "uniform_seed3" / "metrics.json").stat().st_mtime_ns != stamp
