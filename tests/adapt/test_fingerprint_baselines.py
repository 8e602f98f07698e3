"""The fingerprint baselines on bits and on FS-Mol's count fingerprint, on real molecules."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.metrics import roc_auc_score

from moladapt.adapt.fingerprint_baselines import KNNECFP, RandomForestECFP, minmax_distances
from moladapt.data.fingerprints import ecfp
from moladapt.data.sources import load_dataset
from moladapt.training import prepare


def _brute_minmax(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((len(a), len(b)))
    for i, u in enumerate(a.astype(np.float64)):
        for j, v in enumerate(b.astype(np.float64)):
            union = np.maximum(u, v).sum()
            out[i, j] = 1.0 - np.minimum(u, v).sum() / union if union else 0.0
    return out


def test_minmax_distance_is_jaccard_on_bits_and_minmax_on_counts():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 4, size=(7, 64)).astype(np.uint8) * (rng.random((7, 64)) < 0.3)
    counts[3] = 0  # an empty fingerprint
    other = rng.integers(0, 4, size=(5, 64)).astype(np.uint8)
    other[0] = 0
    np.testing.assert_allclose(minmax_distances(counts, other), _brute_minmax(counts, other), atol=1e-12)
    bits = counts > 0
    # to the last bit, so bit-vector kNN runs made with scikit-learn's Jaccard reproduce
    np.testing.assert_array_equal(minmax_distances(bits, other > 0)[np.ix_([0, 1, 2, 4, 5, 6], [1, 2, 3, 4])],
                                  cdist(bits, other > 0, "jaccard")[np.ix_([0, 1, 2, 4, 5, 6], [1, 2, 3, 4])])
    self_dist = minmax_distances(counts, counts)
    assert np.allclose(np.diag(self_dist), 0.0) and np.allclose(self_dist, self_dist.T)
    assert minmax_distances(counts[3:4], other[0:1])[0, 0] == 0.0  # two empty vectors
    # counts see what bits miss: one extra occurrence of a shared environment
    a, b = np.array([[2, 1, 0]]), np.array([[1, 1, 0]])
    assert minmax_distances(a, b)[0, 0] == pytest.approx(1 - 2 / 3)
    assert minmax_distances(a > 0, b > 0)[0, 0] == 0.0


@pytest.fixture(scope="module")
def bbbp_task(data_dir):
    prepared = prepare(load_dataset("bbbp"), "basic", use_cache=False)
    first = np.arange(600)
    return prepared.graphs.subset(first), prepared.y[first, 0]


def _episode(bbbp_task, k: int, seed: int = 0):
    graphs, y = bbbp_task
    order = np.random.default_rng(seed).permutation(len(y))
    support, query = order[:k], order[k:]
    return graphs.subset(support), y[support], graphs.subset(query), y[query]


@pytest.mark.parametrize("baseline", [RandomForestECFP, KNNECFP])
def test_count_baselines_learn_on_bbbp_and_record_counts(bbbp_task, baseline):
    support, y, query, y_query = _episode(bbbp_task, 128)
    model = baseline(counts=True)
    scores = model(support, y, query)
    assert scores.shape == (len(query),) and np.isfinite(scores).all()
    assert roc_auc_score(y_query, scores) > 0.65  # chance: 0.5; seen here: RF 0.75, kNN 0.69
    assert model.get_params()["counts"] is True
    # bit-vector runs written before ``counts`` existed keep their recorded params
    assert "counts" not in baseline().get_params()
    bits = baseline()(support, y, query)
    assert not np.allclose(bits, scores)


def test_count_knn_gives_an_identical_molecule_its_label(bbbp_task):
    graphs, y = bbbp_task
    fingerprints = ecfp(list(graphs.subset(np.arange(60)).smiles), counts=True)
    _, first, times = np.unique(fingerprints, axis=0, return_index=True, return_counts=True)
    support = np.sort(first[times == 1])[:40]  # molecules no other of the 60 shares a fingerprint with
    assert len(support) == 40 and len(set(y[support])) == 2
    scores = KNNECFP(n_neighbors=5, counts=True)(graphs.subset(support), y[support], graphs.subset(support))
    np.testing.assert_array_equal(scores, y[support].astype(float))


@pytest.mark.parametrize("baseline, grid", [(RandomForestECFP, {"n_estimators": [100]}),
                                            (KNNECFP, {"n_neighbors": 5})])
def test_a_one_point_grid_gives_the_fixed_model(bbbp_task, baseline, grid):
    support, y, query, _ = _episode(bbbp_task, 64)
    fixed = baseline(counts=True)(support, y, query)
    np.testing.assert_array_equal(baseline(counts=True, param_grid=grid)(support, y, query), fixed)


def test_fsmol_knn_grid_keeps_fewer_neighbours_than_half_the_support(bbbp_task):
    support, y, query, y_query = _episode(bbbp_task, 16)
    # at k = 16 FS-Mol's grid 4, 8, ..., 128 leaves n_neighbors = 4 only
    searched = KNNECFP(counts=True, param_grid="fsmol")(support, y, query)
    np.testing.assert_array_equal(searched, KNNECFP(n_neighbors=4, counts=True)(support, y, query))
    support, y, query, y_query = _episode(bbbp_task, 128)
    scores = KNNECFP(counts=True, param_grid="fsmol", grid_scoring="average_precision")(support, y, query)
    assert roc_auc_score(y_query, scores) > 0.65


def test_rf_grid_search_picks_by_cross_validation_and_learns(bbbp_task):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    support, y, query, y_query = _episode(bbbp_task, 64)
    grid = {"max_depth": [1, None], "min_samples_leaf": [1, 8]}
    model = RandomForestECFP(n_estimators=30, counts=True, param_grid=grid)
    scores = model(support, y, query)
    assert roc_auc_score(y_query, scores) > 0.65
    x = ecfp(list(support.smiles), counts=True)
    search = GridSearchCV(RandomForestClassifier(30, class_weight="balanced", random_state=0), grid,
                          cv=StratifiedKFold(5)).fit(x, y)
    expected = search.best_estimator_.predict_proba(ecfp(list(query.smiles), counts=True))[:, 1]
    np.testing.assert_array_equal(scores, expected)
    params = model.get_params()
    assert params["param_grid"] == grid and params["grid_scoring"] == "accuracy" and params["cv_folds"] == 5
    assert "param_grid" not in RandomForestECFP().get_params()  # earlier runs keep their identity


def test_grid_search_needs_two_of_each_class_to_cross_validate(bbbp_task):
    graphs, y = bbbp_task
    positives, negatives = np.flatnonzero(y == 1)[:15], np.flatnonzero(y == 0)[:1]
    support = np.concatenate([positives, negatives])
    query = np.setdiff1d(np.arange(100), support)
    args = (graphs.subset(support), y[support], graphs.subset(query))
    np.testing.assert_array_equal(KNNECFP(param_grid="fsmol")(*args), KNNECFP()(*args))


def test_bad_grids_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown parameter.*max_dept.*RandomForestClassifier"):
        RandomForestECFP(param_grid={"max_dept": [5]})
    with pytest.raises(ValueError, match="unknown preset 'sklearn'"):
        KNNECFP(param_grid="sklearn")
    with pytest.raises(ValueError, match="at least one value"):
        KNNECFP(param_grid={"n_neighbors": []})
    with pytest.raises(ValueError, match="not a valid scoring"):
        KNNECFP(param_grid="fsmol", grid_scoring="auprc")
    with pytest.raises(ValueError, match="cv_folds"):
        RandomForestECFP(cv_folds=1)
