"""A scikit-learn estimator: ``MolPropertyModel(...).fit(smiles, y).predict_proba(smiles)``."""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from moladapt.config import ModelConfig, TrainConfig
from moladapt.data.sources import CLASSIFICATION, REGRESSION, DataError, check_label_matrix
from moladapt.data.splits import make_split


def _smiles_list(smiles: Sequence[str], caller: str) -> list[str]:
    """``smiles`` as a positional list (a pandas Series is indexed by label, not position)."""
    if isinstance(smiles, str):
        raise DataError(f"{caller}: smiles must be a sequence of SMILES strings, not one string")
    return list(smiles)


def _task_names(y: Any) -> list[str] | None:
    """The label columns' names of a pandas ``y`` (a DataFrame's columns, a named Series's
    name), so that messages, saved models and ``moladapt evaluate`` use them."""
    if isinstance(y, pd.DataFrame):
        names = [str(c) for c in y.columns]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:  # their predictions and scores could not be told apart
            raise DataError(f"fit: y names column(s) {repeated} more than once; give every task its own name")
        return names
    if isinstance(y, pd.Series) and y.name is not None:
        return [str(y.name)]
    return None


def valid_smiles_mask(smiles: Sequence[str], featurizer: str = "basic") -> np.ndarray:
    """``[n]`` bool: True where ``featurizer`` turns the SMILES into a graph, i.e. where
    :class:`MolPropertyModel` predicts a number rather than NaN. For example, before
    ``cross_val_score``: ``keep = valid_smiles_mask(smiles)``, then score on the kept rows."""
    from moladapt.data.featurize import get_featurizer

    smiles = _smiles_list(smiles, "valid_smiles_mask")
    mask = np.ones(len(smiles), dtype=bool)
    mask[get_featurizer(featurizer).featurize(smiles).invalid_rows] = False
    return mask


@contextlib.contextmanager
def _own_random_state() -> Iterator[None]:
    """Seed inside, leave the caller's ``random`` / numpy / torch global states as they were."""
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _label_matrix(smiles: Sequence[str], y: Sequence | np.ndarray) -> np.ndarray:
    """``y`` as a float32 ``[n, T]`` matrix, with an error naming the row for what cannot be."""
    raw = np.asarray(y, dtype=object)
    if raw.size:
        raw[pd.isna(raw)] = np.nan  # None, pd.NA, NaT: all mean "not measured"
    if raw.ndim == 1:
        raw = raw[:, None]
    if raw.ndim != 2:
        raise DataError(f"fit: y must be [n] or [n, tasks], got shape {tuple(raw.shape)}")
    if len(smiles) != len(raw):
        raise DataError(f"fit: {len(smiles)} SMILES but {len(raw)} label rows")
    try:
        out = raw.astype(np.float32)
    except (TypeError, ValueError):  # find the culprit for the message
        for (i, j), value in np.ndenumerate(raw):
            try:
                float(value)
            except (TypeError, ValueError):
                raise DataError(f"fit: y[{i}, {j}] = {value!r} is not a number "
                                "(NaN marks a missing label)") from None
        raise
    bad = np.argwhere(np.isinf(out))
    if len(bad):
        i, j = bad[0]
        raise DataError(f"fit: y[{i}, {j}] = {raw[i, j]!r} is infinite or too large for float32")
    return out


class MolPropertyModel(BaseEstimator):
    """A GNN property predictor for SMILES, usable wherever scikit-learn takes an estimator
    (``clone``, ``cross_val_score``, ``GridSearchCV``, pipelines).

    ``__init__`` only stores hyper-parameters; ``fit`` featurizes, holds out
    ``valid_fraction`` of the molecules (``valid_split``) for model selection, trains and
    returns self. Fitted state: ``model_``, ``task_type_``, ``task_names_`` (a pandas ``y``'s
    column names, else ``task_0``, ...), ``history_``, ``invalid_rows_``,
    ``n_tasks_``, ``classes_`` (classification).

    Shapes follow scikit-learn's ``MLPClassifier``: a 1-D ``y`` gives ``predict`` ``[n]`` and
    ``predict_proba`` ``[n, 2]`` (P(0), P(1)); a ``[n, T]`` ``y`` (multi-task, NaN =
    unmeasured) gives ``[n, T]`` for both, P(1) per task. Rows of invalid SMILES are NaN.
    ``task_type`` given at construction tells scikit-learn's scorers (``"roc_auc"``) that this
    is a classifier or a regressor; ``None`` infers it from ``y`` at ``fit``, which is too late
    for ``cross_val_score(..., scoring="roc_auc")`` (it scores unfitted clones: NaN). Drop
    invalid SMILES before handing data to scikit-learn's scorers, which cannot skip NaN
    predictions (every fold containing one then scores NaN); ``valid_smiles_mask`` finds them.

    Example::

        model = MolPropertyModel(epochs=30).fit(train_smiles, train_labels)
        p = model.predict_proba(test_smiles)[:, 1]
    """

    def __init__(self, featurizer: str = "basic", encoder: str = "gin", hidden_dim: int = 300,
                 num_layers: int = 5, dropout: float = 0.5, pooling: str = "mean",
                 epochs: int = 100, batch_size: int = 32, lr: float = 1e-3,
                 task_type: str | None = None, valid_fraction: float = 0.1,
                 valid_split: str = "random", patience: int | None = None, seed: int = 0,
                 init: str | Path | None = None, progress: bool = False) -> None:
        self.featurizer = featurizer
        self.encoder = encoder
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.dropout = dropout
        self.pooling = pooling
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.task_type = task_type
        self.valid_fraction = valid_fraction
        self.valid_split = valid_split
        self.patience = patience
        self.seed = seed
        self.init = init
        self.progress = progress

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        task_type = self.task_type or getattr(self, "task_type_", None)
        tags.estimator_type = {CLASSIFICATION: "classifier", REGRESSION: "regressor"}.get(task_type)
        tags.input_tags.one_d_array, tags.input_tags.two_d_array = True, False  # a list of SMILES
        tags.input_tags.string = True
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        return tags

    def _model_config(self) -> ModelConfig:
        return ModelConfig(encoder=self.encoder, hidden_dim=self.hidden_dim, num_layers=self.num_layers,
                           dropout=self.dropout, pooling=self.pooling)

    def fit(self, smiles: Sequence[str], y: Sequence | np.ndarray) -> MolPropertyModel:
        from moladapt.data.featurize import get_featurizer
        from moladapt.training import Trainer, build_model
        from moladapt.utils import seed_everything

        smiles = _smiles_list(smiles, "fit")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {self.valid_fraction}")
        y_1d = np.ndim(y) == 1
        task_names = _task_names(y)
        y = _label_matrix(smiles, y)
        task_names = task_names or [f"task_{j}" for j in range(y.shape[1])]
        task_type, _ = check_label_matrix(y, task_names, "fit(y)", self.task_type)
        featurizer = get_featurizer(self.featurizer)
        graphs = featurizer.featurize(smiles)
        if len(graphs) == 0:
            raise DataError(f"fit: none of the {len(smiles)} SMILES could be parsed")
        invalid_rows = list(graphs.invalid_rows)
        if invalid_rows:
            shown = ", ".join(f"row {i}: {smiles[i]!r}" for i in invalid_rows[:3])
            warnings.warn(f"fit: skipped {len(invalid_rows)} invalid SMILES ({shown}"
                          f"{', ...' if len(invalid_rows) > 3 else ''}); see invalid_rows_",
                          stacklevel=2)
        y_kept = y[graphs.source_rows]
        with _own_random_state():
            seed_everything(self.seed)
            model = build_model(self._model_config(), featurizer, y.shape[1])
            init_record = None
            if self.init is not None:
                from moladapt.models.fingerprint import load_encoder_weights
                from moladapt.provenance import load_init

                init, init_record = load_init(self.init, featurizer)
                load_encoder_weights(model.encoder, init.model.encoder, init_record["path"])
            frac_train = 1.0 - self.valid_fraction
            split = make_split(self.valid_split, graphs.smiles, y_kept,
                               (frac_train, self.valid_fraction, 0.0), self.seed)
            train_idx = np.concatenate([split.train, split.test])
            cfg = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                              patience=self.patience, seed=self.seed)
            trainer = Trainer(model, task_type, cfg, progress=self.progress)
            trainer.fit(graphs, y_kept, train_idx, split.valid if len(split.valid) else None)
        # all fitted state at once: a fit that fails above leaves the previous fit intact
        self.model_, self.featurizer_, self.task_type_ = model, featurizer, task_type
        self.model_config_ = self._model_config()
        self.target_mean_, self.target_std_ = trainer.target_mean_, trainer.target_std_
        self.history_, self.invalid_rows_, self.init_record_ = trainer.history_, invalid_rows, init_record
        self.n_tasks_, self.y_1d_, self.task_names_ = y.shape[1], y_1d, task_names
        self._set_classes()
        return self

    def _set_classes(self) -> None:
        if self.task_type_ == CLASSIFICATION:
            self.classes_ = np.array([0.0, 1.0])
        elif hasattr(self, "classes_"):
            del self.classes_

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this MolPropertyModel is not fitted yet: call fit() (or load()) first")

    def _predict(self, smiles: Sequence[str]) -> np.ndarray:
        """``[n, T]``: P(1) or values in the original units; NaN rows for invalid SMILES."""
        from moladapt.training import predict

        self._check_fitted()
        smiles = _smiles_list(smiles, "predict")
        graphs = self.featurizer_.featurize(smiles)
        out = np.full((len(smiles), self.n_tasks_), np.nan, dtype=np.float32)
        if len(graphs):
            out[graphs.source_rows] = predict(self.model_, graphs, self.task_type_,
                                              target_mean=self.target_mean_, target_std=self.target_std_)
        return out

    def predict_proba(self, smiles: Sequence[str]) -> np.ndarray:
        """``[n, 2]`` (1-D ``y``) or ``[n, T]`` P(1) per task; rows of invalid SMILES are NaN."""
        self._check_fitted()
        if self.task_type_ != CLASSIFICATION:
            raise ValueError("predict_proba is for classification; use predict for regression")
        p = self._predict(smiles)
        return np.hstack([1.0 - p, p]) if self.y_1d_ else p

    def predict(self, smiles: Sequence[str]) -> np.ndarray:
        """Class labels (threshold 0.5) or regression values, ``[n]`` for a 1-D ``y`` else
        ``[n, T]``; invalid SMILES give NaN."""
        out = self._predict(smiles)
        if self.task_type_ == CLASSIFICATION:
            out = np.where(np.isnan(out), np.nan, (out >= 0.5).astype(np.float32))
        return out[:, 0] if self.y_1d_ else out

    def score(self, smiles: Sequence[str], y: Sequence | np.ndarray) -> float:
        """Mean over tasks of the test ROC-AUC (classification: the field's metric, where
        scikit-learn's default would be accuracy) or of R² (regression). Rows with invalid
        SMILES are left out; tasks with one class (or constant targets) are not averaged in."""
        from moladapt.evaluate.metrics import compute_metrics

        smiles = _smiles_list(smiles, "score")
        y_true = _label_matrix(smiles, y)
        pred = self._predict(smiles)
        kept = ~np.isnan(pred).any(axis=1)
        report = compute_metrics(self.task_type_, y_true[kept], pred[kept])
        return float(report.mean["roc_auc" if self.task_type_ == CLASSIFICATION else "r2"])

    def save(self, path: str | Path) -> None:
        """A moladapt checkpoint (``moladapt predict`` / ``evaluate`` read it; so does :meth:`load`)."""
        from moladapt.training import save_checkpoint

        self._check_fitted()
        save_checkpoint(path, self.model_, self.featurizer_, self.model_config_,
                        self.task_names_, self.task_type_,
                        self.target_mean_, self.target_std_,
                        extra={"init": self.init_record_,
                               "estimator": {"params": {k: (str(v) if isinstance(v, Path) else v)
                                                        for k, v in self.get_params().items()},
                                             "y_1d": self.y_1d_}})

    @classmethod
    def load(cls, path: str | Path) -> MolPropertyModel:
        """A fitted estimator from :meth:`save` (or from any moladapt model checkpoint)."""
        from dataclasses import asdict

        from moladapt.training import load_checkpoint

        loaded = load_checkpoint(path)
        loaded.require_trained_head(path)
        saved = (loaded.extra or {}).get("estimator") or {}
        arch = {k: v for k, v in asdict(loaded.model_config).items() if k in cls._get_param_names()}
        params = {**saved.get("params", {}), **arch, "featurizer": loaded.featurizer.name,
                  "task_type": loaded.task_type}
        model = cls(**params)
        model.model_, model.featurizer_, model.task_type_ = loaded.model, loaded.featurizer, loaded.task_type
        model.model_config_ = loaded.model_config  # all of it (jk, fingerprint fusion, ...): save() keeps it
        model.target_mean_, model.target_std_ = loaded.target_mean, loaded.target_std
        model.n_tasks_ = len(loaded.task_names)
        model.task_names_ = list(loaded.task_names)
        model.y_1d_ = bool(saved.get("y_1d", False))
        model.history_, model.invalid_rows_ = None, []
        model.init_record_ = (loaded.extra or {}).get("init")
        model._set_classes()
        return model
