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
    assert "(12 runs with roc_auc)" in result.output
    assert (tmp_path / "r" / "report.md").read_text().startswith("# moladapt study toy\n")
    assert "gcn" not in (tmp_path / "r" / "report.md").read_text()


def _csv_study(db, sage_fails=0, gat_fails=3):
    """Runs on a user's own CSV (no data.dataset); gat fails on every seed."""
    store = ResultStore(db)
    runs = [RunSpec(key=f"{enc}-{seed}", runner="train",
                    config={"data": {"csv": "/data/my assays.csv", "split": "random"},
                            "model": {"encoder": enc}, "train": {"seed": seed}},
                    axes={"model.encoder": enc, "train.seed": seed})
            for enc in ("gin", "sage", "gat") for seed in range(3)]
    store.sync("mine", runs)
    for run in runs:
        assert store.claim(run.key)
        enc, seed = run.key.split("-")
        if (enc == "gat" and int(seed) < gat_fails) or (enc == "sage" and int(seed) < sage_fails):
            store.fail(run.key, "boom")
        else:
            store.finish(run.key, {"test.roc_auc": 0.6 + 0.01 * int(seed) + (0.05 if enc == "sage" else 0)})


def test_a_study_on_a_users_csv_reports_and_says_what_it_left_out(tmp_path):
    _csv_study(tmp_path / "s.db", sage_fails=1)
    frame = tidy_results(tmp_path / "s.db")
    assert set(frame["dataset"]) == {"my assays.csv"} and len(frame) == 5
    result = CliRunner().invoke(app, ["report", str(tmp_path / "s.db"), "--output", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "5 runs with roc_auc; 4 left out" in result.output
    answer = (tmp_path / "r" / "report.md").read_text().splitlines()[2]
    assert "Left out: sage: 1 failed run, 2 of 3 counted; gat: 3 failed runs, no run counted." in answer


def test_a_tie_names_every_best_method_and_stale_report_files_go(tmp_path):
    import pandas as pd

    from moladapt.evaluate.report import write_report

    rows = [{"method": m, "dataset": d, "seed": s, "roc_auc": v}
            for s in range(3)
            for m, d, v in (("gin", "a", 0.7), ("sage", "a", 0.6), ("gin", "b", 0.6), ("sage", "b", 0.7))]
    frame = pd.DataFrame(rows)
    frame["roc_auc"] += frame["seed"] * 0.001
    frame["featurizer"] = "basic"
    out = tmp_path / "r"
    write_report(frame, out, heatmap=("featurizer", "dataset"))
    assert (out / "heatmap_featurizer_dataset.png").exists()
    answer = (out / "report.md").read_text().splitlines()[2]
    assert answer.startswith("Best methods on average, tied: gin, sage (mean rank 1.50")
    (out / "notes.txt").write_text("mine")
    write_report(frame, out)  # no heatmap this time
    assert not (out / "heatmap_featurizer_dataset.png").exists() and (out / "notes.txt").exists()


def test_two_user_csvs_with_one_file_name_stay_two_datasets(tmp_path):
    store = ResultStore(tmp_path / "s.db")
    runs = [RunSpec(key=f"{folder}-{seed}", runner="train",
                    config={"data": {"csv": f"/{folder}/train.csv"}, "train": {"seed": seed}},
                    axes={"data.csv": f"/{folder}/train.csv", "train.seed": seed})
            for folder in ("a", "b") for seed in range(2)]
    store.sync("two", runs)
    for run in runs:
        assert store.claim(run.key)
        store.finish(run.key, {"test.roc_auc": 0.7})
    frame = tidy_results(tmp_path / "s.db", method_axes=["train.seed"])
    assert set(frame["dataset"]) == {"/a/train.csv", "/b/train.csv"}


def test_a_status_column_of_the_callers_own_is_not_the_run_status(tmp_path):
    import pandas as pd

    from moladapt.evaluate.report import write_report

    frame = pd.DataFrame([{"method": m, "dataset": "d", "seed": s, "roc_auc": 0.6 + 0.1 * (m == "b"), "status": "ok"}
                          for m in ("a", "b") for s in range(3)])
    write_report(frame, tmp_path / "r")
    assert "Left out" not in (tmp_path / "r" / "report.md").read_text()
