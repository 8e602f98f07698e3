"""Non-neural few-shot baselines on ECFP fingerprints: random forest and k-nearest neighbours.

FS-Mol (Stanley et al., NeurIPS 2021) reports both as strong baselines: at small support
sizes a random forest on Morgan fingerprints is hard to beat. Each baseline here is a
``fit_predict(support_graphs, support_y, query_graphs) -> scores [n_query]`` callable, the
callback of :func:`moladapt.evaluate.protocol.evaluate_few_shot`; only the graphs'
``smiles`` are used, so no encoder (and no checkpoint) is involved.

* Fingerprints: ECFP4 — RDKit Morgan fingerprints, radius 2, 2048 bits (bit vectors; FS-Mol's
  baselines fit on occurrence counts instead, :mod:`moladapt.data.fingerprints`), computed once
  per SMILES and kept packed (256 bytes a molecule) in a bounded in-memory cache shared by the
  calls of one baseline object.
* :class:`RandomForestECFP`: scikit-learn ``RandomForestClassifier`` with
  ``class_weight="balanced"`` (both classes count equally, like the support ``pos_weight``
  of the neural adapters), seeded; score = predicted probability of the positive class.
* :class:`KNNECFP`: scikit-learn ``KNeighborsClassifier`` with the Jaccard (= 1 − Tanimoto)
  distance on the bit vectors, ``n_neighbors`` capped by the support size, distance-weighted
  votes by default; score = weighted fraction of positive neighbours. Reweighting the votes
  by class frequency would not change the ranking of the query (the score is a monotone
  function of the positive fraction), so ranking metrics (ROC-AUC, AUPRC) are unaffected.

A support set holding one class only (the protocol's sampler never builds one) gets a
constant score.
"""

from __future__ import annotations

import numpy as np

from moladapt.data.fingerprints import ECFP_BITS, ECFP_RADIUS, ECFPFeaturizer, ecfp
from moladapt.types import MolGraphs

__all__ = ["ECFPFeaturizer", "KNNECFP", "RandomForestECFP", "ecfp"]

class _ECFPBaseline:
    """Shared plumbing: fingerprints of support and query, one-class fallback."""

    def __init__(self, radius: int, n_bits: int) -> None:
        self.radius, self.n_bits = int(radius), int(n_bits)
        self._fingerprints = ECFPFeaturizer(radius, n_bits)

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


class RandomForestECFP(_ECFPBaseline):
    """Random forest on ECFP4 (see the module docstring); a ``fit_predict`` callable.

    Args:
        n_estimators, max_features, min_samples_leaf: of ``RandomForestClassifier``.
        class_weight: ``"balanced"`` (default) or ``None``.
        seed: the forest's ``random_state`` (the same support gives the same scores).
        n_jobs: trees fitted in parallel (1: no extra processes).
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
    ) -> None:
        super().__init__(radius, n_bits)
        self.n_estimators = int(n_estimators)
        self.max_features = max_features
        self.min_samples_leaf = int(min_samples_leaf)
        self.class_weight = class_weight
        self.seed = int(seed)
        self.n_jobs = int(n_jobs)

    def get_params(self) -> dict:
        return {"n_estimators": self.n_estimators, "max_features": self.max_features,
                "min_samples_leaf": self.min_samples_leaf, "class_weight": self.class_weight,
                "seed": self.seed, "n_jobs": self.n_jobs, "radius": self.radius, "n_bits": self.n_bits}

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
    """

    def __init__(
        self,
        n_neighbors: int = 5,
        weights: str = "distance",
        seed: int = 0,
        radius: int = ECFP_RADIUS,
        n_bits: int = ECFP_BITS,
    ) -> None:
        super().__init__(radius, n_bits)
        if int(n_neighbors) < 1:
            raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}")
        self.n_neighbors = int(n_neighbors)
        self.weights = weights
        self.seed = int(seed)

    def get_params(self) -> dict:
        return {"n_neighbors": self.n_neighbors, "weights": self.weights, "seed": self.seed,
                "radius": self.radius, "n_bits": self.n_bits}

    def _fit_scores(self, x_support: np.ndarray, y: np.ndarray, x_query: np.ndarray) -> np.ndarray:
        from sklearn.neighbors import KNeighborsClassifier

        knn = KNeighborsClassifier(
            n_neighbors=min(self.n_neighbors, len(y)), weights=self.weights,
            metric="jaccard", algorithm="brute",
        ).fit(x_support, y)
        return knn.predict_proba(x_query)[:, list(knn.classes_).index(1)]
