"""moladapt.fewshot: task specs, fingerprint baselines, summaries and the ΔAUPRC-vs-k plot."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from moladapt.evaluate.protocol import COLUMNS
from moladapt.fewshot import (
    BASELINES,
    build_adapter,
    compare_few_shot,
    few_shot,
    method_names,
    plot_delta_auprc_vs_k,
    resolve_tasks,
    summarize_few_shot,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def valid_tasks(data_dir):
    return resolve_tasks("fsmol-valid")


def test_resolve_fsmol_valid(valid_tasks):
    assert len(valid_tasks) == 39  # FS-Mol's validation split
    ids = [t.task_id for t in valid_tasks]
    assert ids == sorted(ids) and all(t.group == "fsmol-valid" for t in valid_tasks)
    assert all(set(np.unique(t.labels)) <= {0.0, 1.0} for t in valid_tasks)
    subset = resolve_tasks("fsmol-valid:3")
    assert len(subset) == 3 and {t.task_id for t in subset} <= set(ids)
    assert [t.task_id for t in resolve_tasks("fsmol-valid", max_tasks=3)] == [t.task_id for t in subset]
    assert [t.task_id for t in subset] == sorted(t.task_id for t in subset)  # collection order kept


def test_resolve_tox21(data_dir):
    tasks = resolve_tasks("tox21")
    assert [t.task_id for t in tasks][:2] == ["NR-AR", "NR-AR-LBD"] and len(tasks) == 12
    for t in tasks:
        assert t.group == "tox21" and len(t) == len(t.labels) > 5000
        assert not np.isnan(t.labels).any() and 0 < t.labels.mean() < 0.5
    assert len(resolve_tasks("TOX21:4")) == 4
    large = [t.task_id for t in tasks if len(t) >= 7000]
    assert 0 < len(large) < 12 and [t.task_id for t in resolve_tasks("tox21", min_size=7000)] == large


def test_resolve_tasks_from_a_users_csv(data_dir, tmp_path):
    import pandas as pd

    csv = tmp_path / "assays.csv"
    pd.read_csv(data_dir / "tox21.csv").iloc[:400][["smiles", "NR-AR", "SR-MMP", "NR-AhR"]].to_csv(csv, index=False)
    tasks = resolve_tasks(str(csv))
    assert [t.task_id for t in tasks] == ["NR-AR", "SR-MMP", "NR-AhR"] and tasks[0].group == "assays"
    assert len(resolve_tasks(f"{csv}:2")) == 2
    frame = pd.read_csv(csv)
    frame["all_inactive"] = 0.0
    frame.to_csv(csv, index=False)
    told: list[str] = []
    assert len(resolve_tasks(str(csv), log=told.append)) == 3
    assert len(told) == 1 and "left out 1 of 4 task columns" in told[0] and "all_inactive" in told[0]
    with pytest.warns(UserWarning, match="all_inactive"):
        resolve_tasks(str(csv))
    frame.drop(columns="all_inactive").rename(columns={"smiles": "SMILES"}).to_csv(csv, index=False)
    assert [t.task_id for t in resolve_tasks(str(csv))] == ["NR-AR", "SR-MMP", "NR-AhR"]  # any case
    frame.rename(columns={"smiles": "structure"}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match="no SMILES column 'smiles' in any case; A task CSV holds"):
        resolve_tasks(str(csv))


@pytest.mark.parametrize("spec, message", [
    ("fsmol-dev", "fsmol-train"), ("tox21:many", "integer"), ("tox21:0", ">= 1"),
    ("no_such_set", "unknown dataset"),
])
def test_resolve_rejects_bad_specs(data_dir, spec, message):
    with pytest.raises((ValueError, KeyError), match=message):
        resolve_tasks(spec)


def test_rf_ecfp_beats_chance_on_fsmol_valid(valid_tasks):
    tasks = sorted(valid_tasks, key=len)[:3]  # the smallest: 138-149 molecules
    run = few_shot("rf-ecfp", tasks, support_sizes=[32], draws=2)
    assert len(run.results) == 6 and (run.results["status"] == "ok").all()
    row = run.summary.iloc[0]
    assert row["method"] == "rf-ecfp" and row["n_tasks"] == 3 and row["draws_per_task"] == 2
    assert row["roc_auc_mean"] > 0.55
    assert row["delta_auprc_ci_low"] <= row["delta_auprc_mean"] <= row["delta_auprc_ci_high"]
    # the same episodes and seed give the same forest scores
    again = few_shot("rf-ecfp", tasks, support_sizes=[32], draws=2)
    np.testing.assert_allclose(again.results["auprc"], run.results["auprc"])
    knn = few_shot("knn-ecfp", tasks, support_sizes=[32], draws=2)
    assert knn.summary.iloc[0]["roc_auc_mean"] > 0.55


def test_method_registries():
    assert {"rf-ecfp", "knn-ecfp"} == set(BASELINES.names())
    assert {"maml", "fomaml", "anil", "protonet", "rf-ecfp"} <= set(method_names())
    assert build_adapter("fomaml", {"meta_steps": 3}, seed=7).get_params()["seed"] == 7
    with pytest.raises(ValueError, match="no hyper-parameter"):
        build_adapter("protonet", {"inner_lr": 0.1})
    # numbers written as strings (PyYAML reads "1e-4" as one) become the annotated type
    typed = build_adapter("protonet", {"meta_lr": "1e-4", "meta_steps": "20", "grad_clip": None}).get_params()
    assert typed["meta_lr"] == 1e-4 and typed["meta_steps"] == 20 and typed["grad_clip"] is None
    with pytest.raises(ValueError, match="protonet hyper-parameter meta_lr must be a number"):
        build_adapter("protonet", {"meta_lr": "fast"})
    with pytest.raises(ValueError, match="unknown few-shot method"):
        build_adapter("reptile")
    with pytest.raises(ValueError, match="takes no checkpoint"):
        few_shot("rf-ecfp", [], checkpoint="model.pt")


def _rows(method, task, k, draw, auprc, status="ok", positive_rate=0.25):
    row = {c: math.nan for c in COLUMNS}
    row.update(task_id=task, group="g", method=method, k=k, draw=draw, status=status, reason="",
               n_support=k, n_query=50, query_positive_rate=positive_rate)
    if status == "ok":
        row.update(roc_auc=0.5 + auprc / 2, auprc=auprc, delta_auprc=auprc - positive_rate, seconds=0.1)
    return row


def _frame():
    rows = []
    for task, base in (("a", 0.4), ("b", 0.5), ("c", 0.6)):
        for draw in range(2):
            rows.append(_rows("m1", task, 16, draw, base + 0.1 * draw))
            rows.append(_rows("m2", task, 16, draw, base - 0.05))
            status = "skipped" if task == "c" else "ok"
            rows.append(_rows("m1", task, 64, draw, base + 0.2, status=status))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def test_summary_averages_draws_then_tasks():
    summary = summarize_few_shot(_frame(), n_boot=500)
    assert list(summary["method"]) == ["m1", "m1", "m2"] and list(summary["k"]) == [16, 64, 16]
    first = summary.iloc[0]
    assert first["n_tasks"] == 3 and first["n_episodes"] == 6 and first["draws_per_task"] == 2
    assert first["auprc_mean"] == pytest.approx(np.mean([0.45, 0.55, 0.65]))
    assert first["delta_auprc_mean"] == pytest.approx(0.55 - 0.25)
    assert first["auprc_ci_low"] < first["auprc_mean"] < first["auprc_ci_high"]
    big = summary.iloc[1]  # task c is too small for k=64
    assert big["n_tasks"] == 2 and big["n_tasks_skipped"] == 1
    assert big["auprc_mean"] == pytest.approx(0.65)


def test_plot_writes_png(tmp_path):
    frame = _frame()
    path = plot_delta_auprc_vs_k(frame, tmp_path / "sub" / "plot.png", n_boot=200)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same method in two inputs gets the input's name, and both are plotted
    csv = tmp_path / "run1" / "results.csv"
    csv.parent.mkdir()
    frame.to_csv(csv, index=False)
    assert plot_delta_auprc_vs_k([csv, frame], tmp_path / "two.png", n_boot=200).exists()
    with pytest.raises(ValueError, match="no successful episodes"):
        plot_delta_auprc_vs_k(frame.assign(status="skipped"), tmp_path / "none.png")
    with pytest.raises(ValueError, match="metric must be one of"):
        plot_delta_auprc_vs_k(frame, tmp_path / "bad.png", metric="rmse")


def test_compare_is_paired_per_task_on_the_shared_episodes_only(tmp_path):
    rows = []
    for t in range(8):
        for draw in range(3):
            rows.append(_rows("good", f"t{t}", 16, draw, 0.5 + 0.01 * t + 0.1))
            rows.append(_rows("base", f"t{t}", 16, draw, 0.5 + 0.01 * t))
            # a third method whose draw 2 would be far worse: not shared by all, so left out
            rows.append(_rows("same", f"t{t}", 16, draw, 0.0 if draw == 2 else 0.5 + 0.01 * t))
    rows = [r for r in rows if not (r["method"] != "same" and r["draw"] == 1 and r["task_id"] == "t0")]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    table = compare_few_shot(frame[frame["method"] != "same"], baseline="base").iloc[0]
    assert (table["k"], table["method"], table["baseline"], table["n_pairs"]) == (16, "good", "base", 8)
    assert table["mean_diff"] == pytest.approx(0.1) and table["significant"] and table["direction"] == "better"
    three = compare_few_shot(frame, baseline="base").set_index("method")
    # draw 2 is 'same's only loss, but 'good' and 'base' miss draw 1 of t0, which leaves t0 on
    # draws 0 and 2; the other tasks keep all three draws, so 'same' is 1/3 · 0.5 worse there
    assert three.loc["same", "mean_diff"] == pytest.approx(-(7 * (0.5 + 0.01 * 4) / 3 + 0.5 / 2) / 8)
    with pytest.raises(ValueError, match="at least two methods"):
        compare_few_shot(frame[frame["method"] == "good"])
    with pytest.raises(ValueError, match="no results given"):
        compare_few_shot([])
    with pytest.raises(ValueError, match="metric must be one of delta_auprc, auprc, roc_auc"):
        compare_few_shot(frame, metric="rmse")
    with pytest.raises(ValueError, match="share no scored episode"):
        compare_few_shot(pd.concat([frame[frame["method"] == "good"], frame[frame["method"] == "base"]
                                    .assign(k=32)]))
    # the same method from two runs' results.csv (same directory name) keeps both, numbered
    for run in ("r1", "r2"):
        (tmp_path / run / "anil").mkdir(parents=True)
    frame[frame["method"] == "good"].assign(method="anil").to_csv(tmp_path / "r1/anil/results.csv", index=False)
    frame[frame["method"] == "base"].assign(method="anil").to_csv(tmp_path / "r2/anil/results.csv", index=False)
    both = compare_few_shot([tmp_path / "r1/anil/results.csv", tmp_path / "r2/anil/results.csv"]).iloc[0]
    assert (both["method"], both["baseline"]) == ("anil [anil #1]", "anil [anil #2]")
    assert both["mean_diff"] == pytest.approx(0.1)


def test_resume_adds_nothing_and_refuses_a_different_run(tmp_path):
    from moladapt.types import Task

    smiles = tuple(f"C{'C' * (i % 12)}{'O' * (i // 12)}" for i in range(60))
    task = Task("t", smiles, np.array([i % 3 == 0 for i in range(60)], np.float32), group="g")
    args = dict(support_sizes=[16], draws=2, output=tmp_path, hparams={"n_estimators": 10}, plot=False)
    first = few_shot("rf-ecfp", [task], **args)
    assert first.n_new == 2 and (tmp_path / "summary.csv").exists()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["summary"][0]["k"] == 16 and metrics["summary"][0]["n_episodes"] == 2
    per_k = metrics["per_task"]["rf-ecfp"]["t"]["16"]
    assert per_k["delta_auprc"] == pytest.approx(first.results["delta_auprc"].mean())
    again = few_shot("rf-ecfp", [task], **args)
    assert again.n_new == 0 and len(pd.read_csv(tmp_path / "results.csv")) == 2
    with pytest.raises(ValueError, match="different run.*seed: 0 there, 1 now"):
        few_shot("rf-ecfp", [task], **{**args, "seed": 1})
    with pytest.raises(ValueError, match="params.n_estimators: 10 there, 20 now"):
        few_shot("rf-ecfp", [task], **{**args, "hparams": {"n_estimators": 20}})
    with pytest.raises(ValueError, match="params.counts: .* there, True now"):
        few_shot("rf-ecfp", [task], **{**args, "hparams": {"n_estimators": 10, "counts": True}})
    # another task file that reuses the id 't' for other molecules is not served the old rows
    other = Task("t", smiles[::-1], task.labels, group="h")
    with pytest.raises(ValueError, match=r"rows of other tasks with the same id \(t: other molecules"):
        few_shot("rf-ecfp", [other], **args)
    # a rerun asking for fewer draws describes its own grid; results.csv keeps every row
    fewer = few_shot("rf-ecfp", [task], **{**args, "draws": 1})
    assert fewer.n_new == 0 and fewer.config["draws"] == 1 and len(fewer.results) == 1
    assert len(pd.read_csv(tmp_path / "results.csv")) == 2


def test_meta_training_reports_the_tasks_too_small_for_its_episodes(valid_tasks):
    from moladapt.fewshot import meta_train
    from moladapt.types import Task

    labels = np.asarray(valid_tasks[0].labels)
    rows = np.r_[np.flatnonzero(labels == 1)[:5], np.flatnonzero(labels == 0)[:15]]
    tiny = Task("TINY", [valid_tasks[0].smiles[i] for i in rows], labels[rows], group="x")
    small = {"meta_steps": 1, "train_k": 16, "query_size": 16}
    result = meta_train("protonet", [*valid_tasks[:2], tiny], encoder_cfg={"hidden_dim": 16, "num_layers": 1},
                        hparams=small)
    assert result.info["n_train_tasks"] == 2 and result.info["skipped_train_tasks"] == 1
    assert "only 4 query molecules would remain, need 16" in result.info["skipped_examples"]["TINY"]
    # FS-Mol's floor: a task serves while its support leaves 2 query molecules
    for method in ("protonet", "maml", "anil"):
        kept = meta_train(method, [*valid_tasks[:2], tiny], encoder_cfg={"hidden_dim": 16, "num_layers": 1},
                          hparams={**small, "min_query": 2})
        assert kept.info["n_train_tasks"] == 3 and kept.info["skipped_train_tasks"] == 0, method


def test_meta_training_from_an_init_takes_the_encoder_as_a_model_config(valid_tasks, tmp_path):
    """An ``encoder_cfg`` given as a ModelConfig (as the FS-Mol benchmark passes it) is checked
    against the init checkpoint's architecture like a mapping is."""
    from moladapt.config import ModelConfig
    from moladapt.data.featurize import get_featurizer
    from moladapt.fewshot import meta_train
    from moladapt.training import build_model, save_checkpoint

    feat = get_featurizer("basic")
    cfg = ModelConfig(hidden_dim=16, num_layers=1, head_hidden_dims=())
    start = tmp_path / "start.pt"
    save_checkpoint(start, build_model(cfg, feat, 3), feat, cfg, ["a", "b", "c"], "classification")
    tasks, hp = valid_tasks[:2], {"meta_steps": 0}
    result = meta_train("protonet", tasks, encoder_cfg=cfg, hparams=hp, init=start)
    assert result.info["init"] == str(start) and result.model_config.hidden_dim == 16
    with pytest.raises(ValueError, match="hidden_dim: asked 32, checkpoint 16"):
        meta_train("protonet", tasks, encoder_cfg=ModelConfig(hidden_dim=32, num_layers=1), hparams=hp, init=start)


def test_a_task_csv_with_other_columns_is_refused_with_the_layout_it_needs(tmp_path):
    from moladapt.data.sources import DataError

    csv = tmp_path / "assays.csv"
    csv.write_text("mol_id,smiles,a1\nm1,CCO,1\nm2,CC,0\n")
    with pytest.raises(DataError, match="'mol_id' has a non-numeric label.*drop id, text and numeric-value columns"):
        resolve_tasks(str(csv))
    csv.write_text("smiles,a1,pic50\nCCO,1,5.2\nCC,0,6.1\n")
    with pytest.raises(DataError, match="'pic50' is classification.*expected 0/1. A task CSV holds") as numeric:
        resolve_tasks(str(csv))
    assert "--task-type" not in str(numeric.value)  # few-shot has no such option
    with pytest.raises(DataError, match="file not found$"):  # no layout advice for a missing file
        resolve_tasks(str(tmp_path / "missing.csv"))


def test_resume_follows_the_models_weights_not_its_file(tmp_path):
    """A model trained again to the same weights (a new file: other timings, commit) resumes
    its results; other weights are refused; results written before model digests still
    compare the file."""
    import yaml

    from moladapt.config import ModelConfig
    from moladapt.data.featurize import get_featurizer
    from moladapt.training import build_model, model_sha256, save_checkpoint
    from moladapt.types import Task

    feat, cfg = get_featurizer("basic"), ModelConfig(hidden_dim=16, num_layers=2, dropout=0.0)
    torch.manual_seed(0)
    model = build_model(cfg, feat, 1)
    ckpt = tmp_path / "model.pt"

    def save(seconds: float) -> None:
        save_checkpoint(ckpt, model, feat, cfg, ["few-shot"], "classification", extra={"seconds": seconds})

    save(1.0)
    first_file, first_model = ckpt.read_bytes(), model_sha256(ckpt)
    save(2.0)  # the same weights, trained "again"
    assert ckpt.read_bytes() != first_file and model_sha256(ckpt) == first_model

    smiles = tuple(f"C{'C' * (i % 12)}{'O' * (i // 12)}" for i in range(60))
    task = Task("t", smiles, np.array([i % 3 == 0 for i in range(60)], np.float32), group="g")
    out = tmp_path / "run"
    args = dict(support_sizes=[16], draws=1, output=out, checkpoint=ckpt, plot=False)
    assert few_shot("protonet", [task], **args).n_new == 1
    save(3.0)
    assert few_shot("protonet", [task], **args).n_new == 0

    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    save(3.0)
    assert model_sha256(ckpt) != first_model
    with pytest.raises(ValueError, match="different run.*model_sha256"):
        few_shot("protonet", [task], **args)

    config = yaml.safe_load((out / "config.yaml").read_text())  # as written before model digests
    del config["model_sha256"]
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="different run.*checkpoint_sha256"):
        few_shot("protonet", [task], **args)
