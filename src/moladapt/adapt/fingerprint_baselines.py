"""Non-neural few-shot baselines on ECFP fingerprints: random forest and k-nearest neighbours.

FS-Mol (Stanley et al., NeurIPS 2021) reports both as strong baselines: at small support
sizes a random forest on Morgan fingerprints is hard to beat. Each baseline here is a
``fit_predict(support_graphs, support_y, query_graphs) -> scores [n_query]`` callable, the
callback of :func:`moladapt.evaluate.protocol.evaluate_few_shot`; only the graphs'
``smiles`` are used, so no encoder (and no checkpoint) is involved.

* Fingerprints: ECFP4 — RDKit Morgan fingerprints, radius 2, 2048 positions
  (:mod:`moladapt.data.fingerprints`): bit vectors by default, or occurrence counts with
  ``counts=True``, the input of FS-Mol's RF and kNN (``get_fingerprint``: RDKit's Morgan count
  fingerprint). Computed once per SMILES and kept packed in a bounded in-memory cache shared
  by the calls of one baseline object. Counts scored higher for both baselines at every support
  size on FS-Mol's test tasks and on ToxCast assays (``benchmarks/results/fsmol.md``); bits stay
  the default so that runs recorded before ``counts`` existed keep their meaning.
* :class:`RandomForestECFP`: scikit-learn ``RandomForestClassifier`` with
  ``class_weight="balanced"`` (both classes count equally, like the support ``pos_weight``
  of the neural adapters), seeded; score = predicted probability of the positive class.
* :class:`KNNECFP`: scikit-learn ``KNeighborsClassifier`` with the Tanimoto distance
  ``1 − Σ min(a, b) / Σ max(a, b)`` (on bits: the Jaccard distance; on counts: its MinMax
  generalisation, Ralaivola et al. 2005), ``n_neighbors`` capped by the support size,
  distance-weighted votes by default; score = weighted fraction of positive neighbours.
  (FS-Mol's kNN uses the Euclidean distance on counts with ``n_neighbors`` chosen by grid
  search; Tanimoto is the chemists' similarity for fingerprints.) Reweighting the votes
  by class frequency would not change the ranking of the query (the score is a monotone
  function of the positive fraction), so ranking metrics (ROC-AUC, AUPRC) are unaffected.

A support set holding one class only (the protocol's sampler never builds one) gets a
constant score.
"""

from __future__ import annotations

import numpy as np

from moladapt.data.fingerprints import ECFP_BITS, ECFP_RADIUS, ECFPFeaturizer, ecfp
from moladapt.types import MolGraphs

__all__ = ["ECFPFeaturizer", "KNNECFP", "RandomForestECFP", "ecfp", "minmax_distances"]

class _ECFPBaseline:
    """Shared plumbing: fingerprints of support and query, one-class fallback."""

    def __init__(self, radius: int, n_bits: int, counts: bool) -> None:
        self.radius, self.n_bits, self.counts = int(radius), int(n_bits), bool(counts)
        self._fingerprints = ECFPFeaturizer(radius, n_bits, counts=self.counts)

    def _fit_scores(self, x_support: np.ndarray, y: np.ndarray, x_query: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, support: MolGraphs, support_y: np.ndarray, query: MolGraphs) -> np.ndarray:
        y = np.asarray(support_y, dtype=np.float64).reshape(-1)
        if len(y) != len(support):
            raise ValueError(f"{len(y)} labels for {len(support)} support molecules")
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("support labels must be binary 0/1")
        if len(query) == 0:
            return np.zeros(0, dtype=np.float64)
        if y.min() == y.max():  # one class: nothing to rank by
            return np.full(len(query), float(y[0]), dtype=np.float64)
        x_support = self._fingerprints(list(support.smiles))
        x_query = self._fingerprints(list(query.smiles))
        return np.asarray(self._fit_scores(x_support, y.astype(np.int64), x_query), dtype=np.float64)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def get_params(self) -> dict:
        raise NotImplementedError

    def _fingerprint_params(self) -> dict:
        # ``counts`` only when set: it came later, and a run's recorded params are its resume
        # identity, so the bit-vector runs written before it must keep matching.
        return {"radius": self.radius, "n_bits": self.n_bits, **({"counts": True} if self.counts else {})}


class RandomForestECFP(_ECFPBaseline):
    """Random forest on ECFP4 (see the module docstring); a ``fit_predict`` callable.

    Args:
        n_estimators, max_features, min_samples_leaf: of ``RandomForestClassifier``.
        class_weight: ``"balanced"`` (default) or ``None``.
        seed: the forest's ``random_state`` (the same support gives the same scores).
        n_jobs: trees fitted in parallel (1: no extra processes).
        radius, n_bits: of the Morgan fingerprint.
        counts: occurrence counts instead of bits (FS-Mol's input).
    """

    def __init__(
        self,
        n_estimators: int = 100,
        max_features: str | float | None = "sqrt",
        min_samples_leaf: int = 1,
        class_weight: str | None = "balanced",
        seed: int = 0,
        n_jobs: int = 1,
        radius: int = ECFP_RADIUS,
        n_bits: int = ECFP_BITS,
        counts: bool = False,
    ) -> None:
        super().__init__(radius, n_bits, counts)
        self.n_estimators = int(n_estimators)
        self.max_features = max_features
        self.min_samples_leaf = int(min_samples_leaf)
        self.class_weight = class_weight
        self.seed = int(seed)
        self.n_jobs = int(n_jobs)

    def get_params(self) -> dict:
        return {"n_estimators": self.n_estimators, "max_features": self.max_features,
                "min_samples_leaf": self.min_samples_leaf, "class_weight": self.class_weight,
                "seed": self.seed, "n_jobs": self.n_jobs, **self._fingerprint_params()}

    def _fit_scores(self, x_support: np.ndarray, y: np.ndarray, x_query: np.ndarray) -> np.ndarray:
        from sklearn.ensemble import RandomForestClassifier

        forest = RandomForestClassifier(
            n_estimators=self.n_estimators, max_features=self.max_features,
            min_samples_leaf=self.min_samples_leaf, class_weight=self.class_weight,
            random_state=self.seed, n_jobs=self.n_jobs,
        ).fit(x_support, y)
        return forest.predict_proba(x_query)[:, list(forest.classes_).index(1)]


class KNNECFP(_ECFPBaseline):
    """k-nearest neighbours on ECFP4 with the Tanimoto (Jaccard) distance; a ``fit_predict``.

    Args:
        n_neighbors: neighbours voting (capped by the support size).
        weights: ``"distance"`` (default; an identical molecule takes all the weight) or
            ``"uniform"``.
        seed: unused (kNN is deterministic); accepted so every baseline takes ``seed``.
        radius, n_bits: of the Morgan fingerprint.
        counts: occurrence counts instead of bits (FS-Mol's input), compared by MinMax Tanimoto.
    """

    def __init__(
        self,
        n_neighbors: int = 5,
        weights: str = "distance",
        seed: int = 0,
        radius: int = ECFP_RADIUS,
        n_bits: int = ECFP_BITS,
        counts: bool = False,
    ) -> None:
        super().__init__(radius, n_bits, counts)
        if int(n_neighbors) < 1:
            raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}")
        self.n_neighbors = int(n_neighbors)
        self.weights = weights
        self.seed = int(seed)

    def get_params(self) -> dict:
        return {"n_neighbors": self.n_neighbors, "weights": self.weights, "seed": self.seed,
                **self._fingerprint_params()}

    def _fit_scores(self, x_support: np.ndarray, y: np.ndarray, x_query: np.ndarray) -> np.ndarray:
        from sklearn.neighbors import KNeighborsClassifier

        knn = KNeighborsClassifier(n_neighbors=min(self.n_neighbors, len(y)), weights=self.weights,
                                   metric="precomputed")
        knn.fit(minmax_distances(x_support, x_support), y)
        return knn.predict_proba(minmax_distances(x_query, x_support))[:, list(knn.classes_).index(1)]


def minmax_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tanimoto (MinMax) distances ``1 − Σ_j min(a_ij, b_kj) / Σ_j max(a_ij, b_kj)`` between
    the rows of non-negative count vectors ``a [n, d]`` and ``b [m, d]`` → ``[n, m]`` float64.

    Uses ``Σ min = (|a| + |b| − ‖a − b‖₁) / 2`` and ``Σ max = (|a| + |b| + ‖a − b‖₁) / 2``, so one
    L1 distance matrix gives both without an ``[n, m, d]`` intermediate. On bit vectors this is
    the Jaccard distance, equal to the last bit (L1 and the sums are exact integers, and the
    factor 2 is exact), so bit-vector kNN runs reproduce those computed with scikit-learn's
    ``metric="jaccard"``. Two empty vectors are at distance 0 (the same molecule as far as the
    fingerprint can tell).
    """
    from scipy.spatial.distance import cdist

    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    l1 = cdist(a64, b64, metric="cityblock")
    total = a64.sum(axis=1)[:, None] + b64.sum(axis=1)[None, :]
    union = total + l1
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = 2.0 * l1 / union
    return np.where(union > 0, dist, 0.0)
