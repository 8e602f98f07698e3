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

Per-episode hyper-parameter search (``param_grid``): FS-Mol chooses each baseline's
hyper-parameters on every support set by scikit-learn's ``GridSearchCV`` (stratified 5-fold,
the classifier's default score, i.e. accuracy; ``fs_mol/baseline_test.py``). ``param_grid="fsmol"``
is that grid (:data:`FSMOL_PARAM_GRIDS`), a mapping is any grid of the estimator's parameters;
the refit on the whole support set scores the query. FS-Mol's rule for kNN keeps only
``n_neighbors`` below half the support size. Folds are capped by the minority class count (a
fold then holds each class at least once); with fewer than two of the minority class there is
nothing to cross-validate and the fixed hyper-parameters are used. The search multiplies the
cost of an episode by about (grid size × folds): FS-Mol's RF grid is 36 forests × 5 folds.

A support set holding one class only (the protocol's sampler never builds one) gets a
constant score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from moladapt.data.fingerprints import ECFP_BITS, ECFP_RADIUS, ECFPFeaturizer, ecfp
from moladapt.types import MolGraphs

__all__ = ["ECFPFeaturizer", "FSMOL_PARAM_GRIDS", "KNNECFP", "RandomForestECFP", "ecfp", "minmax_distances"]

#: FS-Mol's per-episode search grids (``DEFAULT_GRID_SEARCH`` of ``fs_mol/baseline_test.py``),
#: by baseline. FS-Mol's kNN also fixes ``metric="minkowski"``; ours keeps its Tanimoto distance.
FSMOL_PARAM_GRIDS: dict[str, dict[str, list[Any]]] = {
    "RandomForestECFP": {"n_estimators": [100, 200], "max_depth": [5, 10, 20],
                         "max_features": [None, "sqrt", "log2"], "min_samples_leaf": [2, 5]},
    "KNNECFP": {"n_neighbors": [4, 8, 16, 32, 64, 128]},
}


class _ECFPBaseline:
    """Shared plumbing: fingerprints of support and query, one-class fallback, and the
    optional per-episode grid search. Subclasses give the scikit-learn estimator and the
    inputs it reads (the fingerprints, or distances to the support)."""

    def __init__(self, radius: int, n_bits: int, counts: bool,
                 param_grid: str | Mapping[str, Sequence[Any]] | None, grid_scoring: str, cv_folds: int) -> None:
        self.radius, self.n_bits, self.counts = int(radius), int(n_bits), bool(counts)
        self._fingerprints = ECFPFeaturizer(radius, n_bits, counts=self.counts)
        self.param_grid, self.grid_scoring, self.cv_folds = param_grid, str(grid_scoring), int(cv_folds)
        self._grid = self._resolve_grid(param_grid)
        if self.cv_folds < 2:
            raise ValueError(f"cv_folds must be >= 2, got {cv_folds}")
        if param_grid is not None:
            from sklearn.metrics import get_scorer

            get_scorer(self.grid_scoring)  # an unknown name fails here, not in the first episode

    def _resolve_grid(self, param_grid: str | Mapping[str, Sequence[Any]] | None) -> dict[str, list[Any]] | None:
        if param_grid is None:
            return None
        if isinstance(param_grid, str):
            if param_grid != "fsmol":
                raise ValueError(f"param_grid: unknown preset {param_grid!r} (the preset is 'fsmol', "
                                 "or give a mapping of parameter -> values)")
            return FSMOL_PARAM_GRIDS[type(self).__name__]
        known = set(self._estimator(2).get_params())
        grid = {str(k): list(v) if isinstance(v, (list, tuple)) else [v] for k, v in dict(param_grid).items()}
        unknown = sorted(set(grid) - known)
        if unknown or not grid or not all(grid.values()):
            raise ValueError(f"param_grid {dict(param_grid)!r}: " + (
                f"unknown parameter(s) {', '.join(unknown)} of {type(self._estimator(2)).__name__}"
                if unknown else "needs at least one parameter with at least one value"))
        return grid

    def _estimator(self, n_support: int):
        """The scikit-learn classifier with the fixed hyper-parameters."""
        raise NotImplementedError

    def _inputs(self, x_support: np.ndarray, x_query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x_support, x_query

    def _episode_grid(self, grid: dict[str, list[Any]], n_support: int) -> dict[str, list[Any]]:
        return grid

    def _fit(self, x: np.ndarray, y: np.ndarray):
        estimator = self._estimator(len(y))
        folds = min(self.cv_folds, int(np.bincount(y, minlength=2).min()))
        if self._grid is None or folds < 2:
            return estimator.fit(x, y)
        from sklearn.model_selection import GridSearchCV, StratifiedKFold

        search = GridSearchCV(estimator, self._episode_grid(self._grid, len(y)), scoring=self.grid_scoring,
                              cv=StratifiedKFold(folds), n_jobs=1, error_score="raise")
        return search.fit(x, y).best_estimator_

    def _fit_scores(self, x_support: np.ndarray, y: np.ndarray, x_query: np.ndarray) -> np.ndarray:
        train, test = self._inputs(x_support, x_query)
        model = self._fit(train, y)
        return model.predict_proba(test)[:, list(model.classes_).index(1)]

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

    def _shared_params(self) -> dict:
        # ``counts`` and the search only when set: they came later, and a run's recorded params
        # are its resume identity, so the runs written before them must keep matching.
        search = ({} if self.param_grid is None else
                  {"param_grid": self.param_grid if isinstance(self.param_grid, str) else self._grid,
                   "grid_scoring": self.grid_scoring, "cv_folds": self.cv_folds})
        return {"radius": self.radius, "n_bits": self.n_bits, **({"counts": True} if self.counts else {}), **search}


class RandomForestECFP(_ECFPBaseline):
    """Random forest on ECFP4 (see the module docstring); a ``fit_predict`` callable.

    Args:
        n_estimators, max_features, min_samples_leaf: of ``RandomForestClassifier``.
        class_weight: ``"balanced"`` (default) or ``None``.
        seed: the forest's ``random_state`` (the same support gives the same scores).
        n_jobs: trees fitted in parallel (1: no extra processes).
        radius, n_bits: of the Morgan fingerprint.
        counts: occurrence counts instead of bits (FS-Mol's input).
        param_grid: ``None`` (fixed hyper-parameters), ``"fsmol"`` or a mapping
            ``{parameter of RandomForestClassifier: [values]}`` searched on each support set.
        grid_scoring: the scikit-learn scorer the search ranks by (FS-Mol: accuracy).
        cv_folds: stratified folds of the search (capped by the minority class count).
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
        param_grid: str | Mapping[str, Sequence[Any]] | None = None,
        grid_scoring: str = "accuracy",
        cv_folds: int = 5,
    ) -> None:
        self.n_estimators = int(n_estimators)
        self.max_features = max_features
        self.min_samples_leaf = int(min_samples_leaf)
        self.class_weight = class_weight
        self.seed = int(seed)
        self.n_jobs = int(n_jobs)
        super().__init__(radius, n_bits, counts, param_grid, grid_scoring, cv_folds)

    def get_params(self) -> dict:
        return {"n_estimators": self.n_estimators, "max_features": self.max_features,
                "min_samples_leaf": self.min_samples_leaf, "class_weight": self.class_weight,
                "seed": self.seed, "n_jobs": self.n_jobs, **self._shared_params()}

    def _estimator(self, n_support: int):
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=self.n_estimators, max_features=self.max_features,
            min_samples_leaf=self.min_samples_leaf, class_weight=self.class_weight,
            random_state=self.seed, n_jobs=self.n_jobs,
        )


class KNNECFP(_ECFPBaseline):
    """k-nearest neighbours on ECFP4 with the Tanimoto (Jaccard) distance; a ``fit_predict``.

    Args:
        n_neighbors: neighbours voting (capped by the support size).
        weights: ``"distance"`` (default; an identical molecule takes all the weight) or
            ``"uniform"``.
        seed: unused (kNN is deterministic); accepted so every baseline takes ``seed``.
        radius, n_bits: of the Morgan fingerprint.
        counts: occurrence counts instead of bits (FS-Mol's input), compared by MinMax Tanimoto.
        param_grid, grid_scoring, cv_folds: the per-episode search, as for
            :class:`RandomForestECFP` (parameters of ``KNeighborsClassifier``).
    """

    def __init__(
        self,
        n_neighbors: int = 5,
        weights: str = "distance",
        seed: int = 0,
        radius: int = ECFP_RADIUS,
        n_bits: int = ECFP_BITS,
        counts: bool = False,
        param_grid: str | Mapping[str, Sequence[Any]] | None = None,
        grid_scoring: str = "accuracy",
        cv_folds: int = 5,
    ) -> None:
        if int(n_neighbors) < 1:
            raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}")
        self.n_neighbors = int(n_neighbors)
        self.weights = weights
        self.seed = int(seed)
        super().__init__(radius, n_bits, counts, param_grid, grid_scoring, cv_folds)

    def get_params(self) -> dict:
        return {"n_neighbors": self.n_neighbors, "weights": self.weights, "seed": self.seed,
                **self._shared_params()}

    def _estimator(self, n_support: int):
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=min(self.n_neighbors, n_support), weights=self.weights,
                                    metric="precomputed")

    def _inputs(self, x_support: np.ndarray, x_query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Distances to the support rows; the search's folds slice this square matrix on both
        # axes (scikit-learn does so for a precomputed metric).
        return minmax_distances(x_support, x_support), minmax_distances(x_query, x_support)

    def _episode_grid(self, grid: dict[str, list[Any]], n_support: int) -> dict[str, list[Any]]:
        if "n_neighbors" not in grid:
            return grid
        # FS-Mol's rule: fewer neighbours than half the support (a training fold holds more).
        allowed = [v for v in grid["n_neighbors"] if v < n_support / 2] or [1]
        return {**grid, "n_neighbors": allowed}


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
