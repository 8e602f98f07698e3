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


@pytest.mark.parametrize("baseline", [RandomForestECFP, KNNECFP])
def test_count_baselines_learn_on_bbbp_and_record_counts(bbbp_task, baseline):
    graphs, y = bbbp_task
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    support, query = order[:128], order[128:]
    model = baseline(counts=True)
    scores = model(graphs.subset(support), y[support], graphs.subset(query))
    assert scores.shape == (len(query),) and np.isfinite(scores).all()
    assert roc_auc_score(y[query], scores) > 0.65  # chance: 0.5; seen here: RF 0.75, kNN 0.69
    assert model.get_params()["counts"] is True
    # bit-vector runs written before ``counts`` existed keep their recorded params
    assert "counts" not in baseline().get_params()
    bits = baseline()(graphs.subset(support), y[support], graphs.subset(query))
    assert not np.allclose(bits, scores)


def test_count_knn_gives_an_identical_molecule_its_label(bbbp_task):
    graphs, y = bbbp_task
    fingerprints = ecfp(list(graphs.subset(np.arange(60)).smiles), counts=True)
    _, first, times = np.unique(fingerprints, axis=0, return_index=True, return_counts=True)
    support = np.sort(first[times == 1])[:40]  # molecules no other of the 60 shares a fingerprint with
    assert len(support) == 40 and len(set(y[support])) == 2
    scores = KNNECFP(n_neighbors=5, counts=True)(graphs.subset(support), y[support], graphs.subset(support))
    np.testing.assert_array_equal(scores, y[support].astype(float))
