"""The few-shot evaluation protocol: reproducible episodes, skipped sizes, resumable CSV."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moladapt.adapt import TaskFeatureCache
from moladapt.evaluate.protocol import COLUMNS, evaluate_few_shot, load_results
from moladapt.types import Task

# 60 small molecules (one third positive) and a task too small for k=16 (14 query < 16).
_SMILES = [f"C{'C' * (i % 12)}{'O' * (i // 12)}" for i in range(60)]
BIG = Task("big", tuple(_SMILES), np.array([i % 3 == 0 for i in range(60)], np.float32), group="g")
SMALL = Task("small", tuple(_SMILES[:30]), np.array([i % 2 for i in range(30)], np.float32),
             group="g")


@pytest.fixture(scope="module")
def cache():
    return TaskFeatureCache("basic", use_disk_cache=False)


class Recorder:
    """A fit_predict that scores by atom count and remembers every support set it saw."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.supports: list[tuple[str, ...]] = []
        self.fail_after = fail_after

    def __call__(self, support, support_y, query):
        if self.fail_after is not None and len(self.supports) >= self.fail_after:
            raise RuntimeError("killed")
        assert len(support) == len(support_y)
        self.supports.append(tuple(support.smiles))
        return np.diff(query.node_ptr).astype(float)


def _run(fit_predict, cache, **kwargs):
    args = dict(support_sizes=(8, 16), draws=3, featurizer=cache)
    args.update(kwargs)
    return evaluate_few_shot([BIG, SMALL], fit_predict, "atoms", **args)


def test_same_seed_gives_same_episodes(cache):
    first, second, other = Recorder(), Recorder(), Recorder()
    a = _run(first, cache)
    b = _run(second, cache)
    _run(other, cache, seed=1)
    assert first.supports == second.supports and len(first.supports) > 0
    assert first.supports != other.supports
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    assert list(a.columns) == list(COLUMNS)
    # the draws of one (task, k) differ from each other
    assert len(set(first.supports[:3])) == 3


def test_skipped_size_is_reported_with_reason(cache):
    rows = _run(Recorder(), cache)
    skipped = rows[rows["status"] == "skipped"]
    assert set(zip(skipped["task_id"], skipped["k"], strict=True)) == {("small", 16)}
    assert len(skipped) == 3  # one row per draw
    assert skipped["reason"].str.contains("query molecules would remain").all()
    assert skipped[["roc_auc", "auprc", "delta_auprc"]].isna().all().all()
    ok = rows[rows["status"] == "ok"]
    assert len(ok) == 9 and (ok["reason"] == "").all()
    assert np.isfinite(ok[["roc_auc", "auprc", "delta_auprc", "seconds"]].to_numpy()).all()
    np.testing.assert_allclose(ok["delta_auprc"], ok["auprc"] - ok["query_positive_rate"])
    assert (ok["n_support"] == ok["k"]).all()
    assert (ok["n_support"] + ok["n_query"] == ok["task_id"].map({"big": 60, "small": 30})).all()


def test_killed_evaluation_resumes_without_recomputing(cache, tmp_path):
    path = tmp_path / "results.csv"
    with pytest.raises(RuntimeError, match="killed"):
        _run(Recorder(fail_after=4), cache, results_path=path)
    assert len(load_results(path)) == 4  # every finished row was written at once

    resumed = Recorder()
    full = _run(resumed, cache, results_path=path)
    assert len(resumed.supports) == 9 - 4
    assert len(full) == 12 and len(load_results(path)) == 12

    # rerun: nothing new is computed or written
    size = path.stat().st_size
    again = Recorder()
    rerun = _run(again, cache, results_path=path)
    assert again.supports == [] and path.stat().st_size == size
    pd.testing.assert_frame_equal(rerun, full)

    # another method shares the file without clashing
    other = evaluate_few_shot([BIG], Recorder(), "other", support_sizes=(8,), draws=2,
                              featurizer=cache, results_path=path)
    assert len(other) == 2 and len(load_results(path)) == 14


def test_a_results_file_is_not_resumed_with_other_episodes(cache, tmp_path):
    """The resume key does not hold the seed: rows drawn with another seed are refused."""
    path = tmp_path / "results.csv"
    _run(Recorder(), cache, results_path=path)
    with pytest.raises(ValueError, match="episodes drawn otherwise .seed 0 there, 1 now"):
        _run(Recorder(), cache, results_path=path, seed=1)


def test_a_partial_last_line_is_dropped_and_redone(cache, tmp_path):
    path = tmp_path / "results.csv"
    sizes = (16, 8)  # the last row is then a scored one (small task, k=8, draw 2)
    _run(Recorder(), cache, results_path=path, support_sizes=sizes)
    text = path.read_text()
    path.write_text(text[:-7])  # a crash in the middle of the last row
    redo = Recorder()
    rows = _run(redo, cache, results_path=path, support_sizes=sizes)
    assert len(redo.supports) == 1
    assert rows.iloc[-1][["task_id", "k", "draw", "status"]].tolist() == ["small", 8, 2, "ok"]
    assert len(rows) == 12 and len(load_results(path)) == 12
