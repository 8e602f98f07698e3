"""Metrics against hand-computed values; unscorable tasks are skipped, never given 0 or 0.5."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from moladapt.evaluate.metrics import (
    MetricReport,
    classification_metrics,
    compute_metrics,
    regression_metrics,
)

NAN = np.nan


def test_hand_computed_auc_and_auprc():
    # Ranked by score: 0.8 (+), 0.4 (-), 0.35 (+), 0.1 (-).
    # ROC-AUC: of the 4 (pos, neg) pairs, 3 are ordered correctly → 0.75.
    # AP: precision 1/1 at recall 1/2, 2/3 at recall 1 → (1 + 2/3) / 2 = 5/6.
    y = np.array([[0], [0], [1], [1]], dtype=float)
    s = np.array([[0.1], [0.4], [0.35], [0.8]])
    rep = classification_metrics(y, s, ["t"])
    row = rep.per_task["t"]
    assert row["roc_auc"] == pytest.approx(0.75)
    assert row["auprc"] == pytest.approx(5 / 6)
    assert row["positive_rate"] == pytest.approx(0.5)
    assert row["delta_auprc"] == pytest.approx(5 / 6 - 0.5)
    assert (row["n"], row["n_positive"]) == (4, 2)
    assert rep.n_tasks_scored == 1 and rep.skipped == {}
    assert rep.primary == pytest.approx(0.75) and rep.primary_name == "roc_auc"


def test_perfect_and_inverse_scores():
    y = np.array([0, 0, 1, 1], dtype=float)
    perfect = classification_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert perfect.mean["roc_auc"] == 1.0
    assert perfect.mean["auprc"] == 1.0
    assert perfect.mean["delta_auprc"] == pytest.approx(0.5)
    inverse = classification_metrics(y, np.array([0.9, 0.8, 0.2, 0.1]))
    assert inverse.mean["roc_auc"] == 0.0
    # Positives ranked 3rd and 4th: AP = (1/3 + 2/4) / 2 = 5/12.
    assert inverse.mean["auprc"] == pytest.approx(5 / 12)
    assert inverse.mean["delta_auprc"] == pytest.approx(5 / 12 - 0.5)


def test_one_class_task_is_skipped_not_scored_as_placeholder():
    rng = np.random.default_rng(0)
    m = 60
    y = np.zeros((m, 3))
    y[:, 0] = np.arange(m) % 2  # a normal task
    y[:, 1] = 0.0  # all negative
    y[:, 2] = NAN
    y[:3, 2] = 1.0  # three positives, nothing else measured
    y[8:, 1] = NAN  # task b: 8 measured labels, all 0
    s = rng.random((m, 3))
    s[:, 0] = y[:, 0] * 0.5 + s[:, 0] * 0.5
    rep = classification_metrics(y, s, ["a", "b", "c"])

    assert rep.n_tasks_scored == 1
    assert rep.skipped == {
        "b": "one class present (all 0) in 8 measured labels",
        "c": "one class present (all 1) in 3 measured labels",
    }
    for task in ("b", "c"):
        for k in ("roc_auc", "auprc", "delta_auprc"):
            assert math.isnan(rep.per_task[task][k])
    assert rep.per_task["b"]["n"] == 8 and rep.per_task["b"]["positive_rate"] == 0.0
    # The means are those of task "a" alone: the skipped tasks contribute nothing.
    only_a = classification_metrics(y[:, :1], s[:, :1], ["a"])
    for k in ("roc_auc", "auprc", "delta_auprc"):
        assert rep.mean[k] == pytest.approx(only_a.mean[k])
        assert rep.mean[k] == pytest.approx(rep.per_task["a"][k])


def test_task_without_labels_and_all_tasks_skipped():
    y = np.array([[NAN, 0.0], [NAN, 0.0]])
    rep = classification_metrics(y, np.full((2, 2), 0.5), ["empty", "neg"])
    assert rep.skipped["empty"] == "no measured labels"
    assert rep.per_task["empty"]["n"] == 0
    assert rep.n_tasks_scored == 0
    assert math.isnan(rep.primary)
    assert "0/2 tasks scored" in rep.summary()


def test_nan_labels_are_masked():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(40, 2)).astype(float)
    s = rng.random((40, 2))
    y[[3, 7, 20], 0] = NAN
    y[[1, 2], 1] = NAN
    # Garbage scores on unmeasured rows must not matter.
    s[[3, 7, 20], 0] = 1e6
    rep = classification_metrics(y, s, ["a", "b"])
    for t, name in enumerate(["a", "b"]):
        keep = ~np.isnan(y[:, t])
        ref = classification_metrics(y[keep, t], s[keep, t], [name])
        assert rep.per_task[name] == pytest.approx(ref.per_task[name])
        assert rep.per_task[name]["n"] == keep.sum()


def test_delta_auprc_of_random_scorer_is_near_zero():
    rng = np.random.default_rng(2)
    y = (rng.random(20000) < 0.1).astype(float)
    rep = classification_metrics(y, rng.random(20000))
    assert abs(rep.mean["delta_auprc"]) < 0.02
    assert abs(rep.mean["roc_auc"] - 0.5) < 0.03


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        classification_metrics(np.array([0.0, 2.0]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="non-finite"):
        classification_metrics(np.array([0.0, 1.0]), np.array([0.1, NAN]))
    with pytest.raises(ValueError, match="must both be"):
        classification_metrics(np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="task names"):
        classification_metrics(np.zeros((3, 2)), np.zeros((3, 2)), ["only_one"])
    with pytest.raises(ValueError, match="task_type"):
        compute_metrics("ranking", np.zeros(2), np.zeros(2))
    # A NaN prediction on an *unmeasured* row is fine.
    rep = classification_metrics(np.array([0.0, 1.0, NAN]), np.array([0.1, 0.9, NAN]))
    assert rep.mean["roc_auc"] == 1.0
    with pytest.raises(ValueError, match="unknown tasks"):
        classification_metrics(np.zeros((3, 1)), np.zeros((3, 1)), ["a"], not_scored={"b": "why"})


def test_tasks_known_to_be_unpredicted_are_skipped_with_the_callers_reason():
    y = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, NAN]])
    scores = np.array([[0.2, NAN], [0.9, NAN], [0.7, NAN]])
    rep = classification_metrics(y, scores, ["a", "b"], not_scored={"b": "outside the sample"})
    assert rep.skipped == {"b": "outside the sample"} and rep.n_tasks_scored == 1
    assert rep.per_task["b"]["n"] == 2 and math.isnan(rep.per_task["b"]["roc_auc"])
    assert rep.mean["roc_auc"] == 1.0
    with pytest.raises(ValueError, match="non-finite"):  # without the caller's word: an error
        classification_metrics(y, scores, ["a", "b"])


def test_regression_against_numpy_formulas():
    y = np.array([[1.0, 10.0], [2.0, NAN], [3.0, 30.0], [4.0, 20.0], [5.0, NAN]])
    p = np.array([[1.5, 12.0], [1.0, 0.0], [3.5, 26.0], [4.0, 21.0], [6.0, 99.0]])
    rep = regression_metrics(y, p, ["a", "b"])
    for t, name in enumerate(["a", "b"]):
        keep = ~np.isnan(y[:, t])
        yt, pt = y[keep, t], p[keep, t]
        row = rep.per_task[name]
        assert row["n"] == keep.sum()
        assert row["rmse"] == pytest.approx(np.sqrt(np.mean((pt - yt) ** 2)))
        assert row["mae"] == pytest.approx(np.mean(np.abs(pt - yt)))
        r2 = 1 - np.sum((pt - yt) ** 2) / np.sum((yt - yt.mean()) ** 2)
        assert row["r2"] == pytest.approx(r2)
    # Task a: predictions rank 2, 1, 3, 4, 5 against 1..5 → ρ = 1 - 6·2 / (5·24) = 0.9.
    assert rep.per_task["a"]["spearman"] == pytest.approx(0.9)
    # Task b: targets 10, 30, 20 and predictions 12, 26, 21 rank identically → ρ = 1.
    assert rep.per_task["b"]["spearman"] == pytest.approx(1.0)
    # Hand-computed RMSE of task a: errors 0.5, -1, 0.5, 0, 1 → sqrt(2.5 / 5).
    assert rep.per_task["a"]["rmse"] == pytest.approx(math.sqrt(0.5))
    assert rep.mean["rmse"] == pytest.approx(
        (rep.per_task["a"]["rmse"] + rep.per_task["b"]["rmse"]) / 2
    )
    assert rep.primary_name == "rmse" and rep.primary == rep.mean["rmse"]


def test_regression_skips_tasks_with_fewer_than_two_labels():
    y = np.array([[1.0, NAN, NAN], [2.0, 5.0, NAN], [4.0, NAN, NAN]])
    p = np.array([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    rep = regression_metrics(y, p, ["a", "one", "none"])
    assert rep.skipped == {
        "one": "fewer than 2 measured labels (1)",
        "none": "fewer than 2 measured labels (0)",
    }
    assert rep.n_tasks_scored == 1
    assert math.isnan(rep.per_task["one"]["rmse"])
    assert rep.mean["rmse"] == pytest.approx(math.sqrt(1 / 3))


def test_regression_constant_targets_have_undefined_r2_and_spearman():
    rep = regression_metrics(np.array([2.0, 2.0, 2.0]), np.array([1.0, 2.0, 3.0]))
    row = rep.per_task["task_0"]
    assert row["rmse"] == pytest.approx(math.sqrt(2 / 3))
    assert math.isnan(row["r2"]) and math.isnan(row["spearman"])
    assert rep.n_tasks_scored == 1


def test_report_is_json_safe_and_summarises():
    y = np.array([[0, 0], [1, 0], [0, 0], [1, 0]], dtype=float)
    s = np.array([[0.1, 0.3], [0.9, 0.2], [0.2, 0.5], [0.7, 0.1]])
    rep = compute_metrics("classification", y, s, ["ok", "all_neg"])
    assert isinstance(rep, MetricReport)
    d = rep.to_dict()
    text = json.dumps(d, allow_nan=False)  # raises if a NaN slipped through
    back = json.loads(text)
    assert back["per_task"]["all_neg"]["roc_auc"] is None
    assert back["per_task"]["ok"]["roc_auc"] == 1.0
    assert back["skipped"] == {"all_neg": "one class present (all 0) in 4 measured labels"}
    assert back["n_tasks_scored"] == 1 and back["primary"] == 1.0
    line = rep.summary()
    assert "\n" not in line
    assert "roc_auc 1.0000" in line and "1/2 tasks scored" in line and "all_neg" in line
    reg = compute_metrics("regression", np.array([1.0, 2.0]), np.array([1.0, 3.0]), ["y"])
    assert reg.task_type == "regression"
    json.dumps(reg.to_dict(), allow_nan=False)
    assert "rmse" in reg.summary()
