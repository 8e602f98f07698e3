"""A scikit-learn-style estimator: ``MolPropertyModel(...).fit(smiles, y).predict_proba(smiles)``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from moladapt.config import ModelConfig, TrainConfig
from moladapt.data.sources import CLASSIFICATION, DataError, check_label_matrix
from moladapt.data.splits import make_split


def _label_matrix(smiles: Sequence[str], y: Sequence | np.ndarray) -> np.ndarray:
    """``y`` as a float32 ``[n, T]`` matrix, with an error naming the row for what cannot be."""
    if isinstance(smiles, str):
        raise DataError("fit: smiles must be a sequence of SMILES strings, not one string")
    raw = np.asarray(y, dtype=object)
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


class MolPropertyModel:
    """A GNN property predictor for SMILES.

    ``__init__`` only stores hyper-parameters; ``fit`` featurizes, holds out
    ``valid_fraction`` of the molecules (``valid_split``) for model selection, trains and
    returns self. Fitted state: ``model_``, ``task_type_``, ``history_``, ``invalid_rows_``.

    Example::

        model = MolPropertyModel(epochs=30).fit(train_smiles, train_labels)
        p = model.predict_proba(test_smiles)   # [n, n_tasks]; NaN rows = invalid SMILES
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

    def _model_config(self) -> ModelConfig:
        return ModelConfig(encoder=self.encoder, hidden_dim=self.hidden_dim, num_layers=self.num_layers,
                           dropout=self.dropout, pooling=self.pooling)

    def fit(self, smiles: Sequence[str], y: Sequence | np.ndarray) -> MolPropertyModel:
        from moladapt.data.featurize import get_featurizer
        from moladapt.training import Trainer, build_model
        from moladapt.utils import seed_everything

        y = _label_matrix(smiles, y)
        task_names = [f"task_{j}" for j in range(y.shape[1])]
        self.task_type_, _ = check_label_matrix(y, task_names, "fit(y)", self.task_type)
        seed_everything(self.seed)
        featurizer = get_featurizer(self.featurizer)
        graphs = featurizer.featurize(list(smiles))
        if len(graphs) == 0:
            raise DataError(f"fit: none of the {len(smiles)} SMILES could be parsed")
        self.invalid_rows_ = list(graphs.invalid_rows)
        if self.invalid_rows_:
            import warnings

            shown = ", ".join(f"row {i}: {smiles[i]!r}" for i in self.invalid_rows_[:3])
            warnings.warn(f"fit: skipped {len(self.invalid_rows_)} invalid SMILES ({shown}"
                          f"{', ...' if len(self.invalid_rows_) > 3 else ''}); see invalid_rows_",
                          stacklevel=2)
        y_kept = y[graphs.source_rows]
        model = build_model(self._model_config(), featurizer, y.shape[1])
        self.init_record_ = None
        if self.init is not None:
            from moladapt.models.fingerprint import load_encoder_weights
            from moladapt.provenance import load_init

            init, self.init_record_ = load_init(self.init, featurizer)
            load_encoder_weights(model.encoder, init.model.encoder, self.init_record_["path"])
        frac_train = 1.0 - self.valid_fraction
        split = make_split(self.valid_split, graphs.smiles, y_kept, (frac_train, self.valid_fraction, 0.0), self.seed)
        train_idx = np.concatenate([split.train, split.test])
        cfg = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                          patience=self.patience, seed=self.seed)
        trainer = Trainer(model, self.task_type_, cfg, progress=self.progress)
        trainer.fit(graphs, y_kept, train_idx, split.valid if len(split.valid) else None)
        self.model_, self.trainer_, self.featurizer_ = model, trainer, featurizer
        self.history_ = trainer.history_
        self.n_tasks_ = y.shape[1]
        return self

    def _predict(self, smiles: Sequence[str]) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise RuntimeError("call fit() first")
        graphs = self.featurizer_.featurize(list(smiles))
        out = np.full((len(smiles), self.n_tasks_), np.nan, dtype=np.float32)
        if len(graphs):
            out[graphs.source_rows] = self.trainer_.predict(graphs)
        return out

    def predict_proba(self, smiles: Sequence[str]) -> np.ndarray:
        """``[n, n_tasks]`` probabilities of class 1; rows of invalid SMILES are NaN."""
        if self.task_type_ != CLASSIFICATION:
            raise ValueError("predict_proba is for classification; use predict for regression")
        return self._predict(smiles)

    def predict(self, smiles: Sequence[str]) -> np.ndarray:
        """Class labels (threshold 0.5) or regression values; invalid SMILES rows are NaN."""
        out = self._predict(smiles)
        if self.task_type_ == CLASSIFICATION:
            return np.where(np.isnan(out), np.nan, (out >= 0.5).astype(np.float32))
        return out

    def save(self, path: str | Path) -> None:
        from moladapt.training import save_checkpoint

        save_checkpoint(path, self.model_, self.featurizer_, self._model_config(),
                        [f"task_{j}" for j in range(self.n_tasks_)], self.task_type_,
                        self.trainer_.target_mean_, self.trainer_.target_std_,
                        extra={"init": self.init_record_})
