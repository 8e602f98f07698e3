"""A study database → tidy table → report, without training anything."""

import numpy as np
from typer.testing import CliRunner

from moladapt.cli.main import app
from moladapt.study.results import tidy_results
from moladapt.study.spec import RunSpec
from moladapt.study.store import ResultStore


def _fake_study(db):
    store = ResultStore(db)
    rng = np.random.default_rng(0)
    runs = []
    for dataset in ("bbbp", "bace"):
        for encoder, shift in (("gin", 0.0), ("sage", 0.05)):
            for seed in range(6):
                config = {"data": {"dataset": dataset, "split": "scaffold", "featurizer": "basic"},
                          "model": {"encoder": encoder}, "train": {"seed": seed}}
                runs.append(RunSpec(key=f"{dataset}-{encoder}-{seed}", runner="train", config=config,
                                    axes={"data.dataset": dataset, "model.encoder": encoder, "train.seed": seed}))
                runs[-1] = (runs[-1], 0.6 + shift + 0.01 * rng.standard_normal())
    store.sync("toy", [r for r, _ in runs])
    for run, auc in runs:
        assert store.claim(run.key)
        store.finish(run.key, {"test.roc_auc": auc, "valid.roc_auc": auc, "train_seconds": 1.0})
    return store


def test_tidy_results_methods_and_pairing_units(tmp_path):
    _fake_study(tmp_path / "s.db")
    frame = tidy_results(tmp_path / "s.db")
    assert len(frame) == 24
    assert set(frame["method"]) == {"gin", "sage"}
    # the encoder defines the method here, so it is not a pairing unit
    assert "encoder" not in frame.columns
    assert {"dataset", "split", "seed", "featurizer", "roc_auc"} <= set(frame.columns)


def test_report_command_writes_html_with_the_answer(tmp_path):
    _fake_study(tmp_path / "s.db")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "s.db"), "--output", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r" / "report.html").read_text()
    assert "sage" in html and "data:image/png;base64" in html
    md = (tmp_path / "r" / "report.md").read_text()
    assert md.splitlines()[2].startswith("Best method on average: sage")


def test_report_of_an_unknown_metric_is_a_clear_error(tmp_path):
    _fake_study(tmp_path / "s.db")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "s.db"), "--metric", "accuracy"])
    assert result.exit_code == 2 and "roc_auc" in result.stderr


def test_report_breakdown_option(tmp_path):
    _fake_study(tmp_path / "s.db")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "s.db"), "--output", str(tmp_path / "r"),
                                      "--breakdown", "featurizer", "--baseline", "gin"])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Gain over the baseline by featurizer" in md and "featurizer = basic" in md
    assert (tmp_path / "r" / "breakdown.csv").is_file()


def test_tidy_results_keeps_only_the_given_keys(tmp_path):
    _fake_study(tmp_path / "s.db")
    keys = {f"bbbp-{enc}-{seed}" for enc in ("gin", "sage") for seed in range(6)}
    frame = tidy_results(tmp_path / "s.db", keys=keys)
    assert len(frame) == 12 and set(frame["dataset"]) == {"bbbp"}
    import pytest

    with pytest.raises(ValueError, match="among the study file's runs"):
        tidy_results(tmp_path / "s.db", keys={"no-such-key"})


def test_report_spec_option_leaves_out_runs_edited_away(tmp_path):
    from moladapt.study.spec import StudySpec

    study = tmp_path / "s.yaml"
    study.write_text("name: toy\nfixed: {data: {dataset: bbbp}}\n"
                     "axes: {model.encoder: [gin, sage], train.seed: [0, 1, 2, 3, 4, 5]}\n")
    runs = StudySpec.load(study).runs()
    stale = RunSpec(key="edited-away", runner="train", config=runs[0].config,
                    axes={"model.encoder": "gcn", "train.seed": 0})
    store = ResultStore(tmp_path / "s.db")
    store.sync("toy", [*runs, stale])
    for i, run in enumerate([*runs, stale]):
        assert store.claim(run.key)
        store.finish(run.key, {"test.roc_auc": 0.6 + 0.001 * i})
    result = CliRunner().invoke(app, ["report", str(tmp_path / "s.db"), "--output", str(tmp_path / "r"),
                                      "--spec", str(study)])
    assert result.exit_code == 0, result.output
    assert "(12 runs)" in result.output
    assert (tmp_path / "r" / "report.md").read_text().startswith("# moladapt study toy\n")
    assert "gcn" not in (tmp_path / "r" / "report.md").read_text()
