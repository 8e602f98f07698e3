"""Joint fine-tuning with auxiliary SSL tasks and gradient combiners (moladapt.adapt.auxiliary)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moladapt.adapt.auxiliary import AuxiliaryAdapter, AuxiliaryFineTuner, task_weight_vector
from moladapt.adapt.base import ADAPTERS
from moladapt.config import ModelConfig
from moladapt.data.sources import load_dataset
from moladapt.pretrain.objectives import build_objective
from moladapt.training import build_model, prepare

torch.set_num_threads(1)

SMALL = ModelConfig(encoder="gin", hidden_dim=32, num_layers=2, dropout=0.0)


@pytest.fixture(scope="module")
def bbbp_small():
    data = load_dataset("bbbp")
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(len(data), size=200, replace=False))
    data.smiles = [data.smiles[i] for i in keep]
    data.labels = data.labels[keep]
    data.rows = data.rows[keep]
    return prepare(data, "basic", use_cache=False)


def _model(prepared, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(SMALL, prepared.featurizer, 1)


@pytest.mark.parametrize("combiner", ["sum", "gcs", "gns", "pcgrad", "rcgrad"])
def test_each_combiner_trains_the_encoder(bbbp_small, data_dir, combiner):
    prepared = bbbp_small
    n = len(prepared.graphs)
    train, valid = np.arange(0, n - 50), np.arange(n - 50, n)
    model = _model(prepared)
    before = [p.detach().clone() for p in model.encoder.parameters()]
    tuner = AuxiliaryFineTuner(combiner=combiner, epochs=1, batch_size=32, max_steps=3, seed=1)
    assert tuner.fit(model, prepared.graphs, prepared.y, train, valid) is tuner
    assert tuner.steps_ == 3 and len(tuner.gradient_log_) == 3
    moved = [not torch.equal(b, p) for b, p in zip(before, model.encoder.parameters(), strict=True)]
    assert sum(moved) > len(moved) // 2  # the combined direction reached the encoder
    summary = tuner.gradient_log_.summary()
    assert set(summary["tasks"]) == {"attribute_masking", "edge_prediction"}
    for stats in summary["tasks"].values():
        assert -1.0 <= stats["mean_cosine"] <= 1.0
        assert 0.0 <= stats["conflict_fraction"] <= 1.0
    assert all(math.isfinite(v) for rec in tuner.loss_history_ for v in rec.values())
    proba = tuner.predict(prepared.graphs, valid)
    assert proba.shape == (50, 1) and np.all((proba >= 0) & (proba <= 1))
    assert len(tuner.history_.epochs) == 1


def test_objective_heads_get_their_own_gradient_and_weights(bbbp_small, data_dir):
    prepared = bbbp_small
    model = _model(prepared)
    masking = build_objective("attribute_masking", prepared.featurizer, model.encoder,
                              mask_rate=0.2)
    head_before = masking.atom_head.weight.detach().clone()
    target_head_before = model.head.net[0].weight.detach().clone()
    tuner = AuxiliaryFineTuner(aux_objectives=[masking], combiner="sum", epochs=1,
                               batch_size=64, max_steps=2, task_weights={"attribute_masking": 0.0})
    tuner.fit(model, prepared.graphs, prepared.y, np.arange(128))
    assert tuner.objectives_[0] is masking
    assert not torch.equal(head_before, masking.atom_head.weight)  # its own loss trains it
    assert not torch.equal(target_head_before, model.head.net[0].weight)
    assert masking.atom_head.weight.grad is None  # grads cleared after fit
    # weight 0 under ``sum``: the masking task contributes nothing to the encoder direction
    coef = tuner.gradient_log_.summary()["tasks"]["attribute_masking"]["mean_coefficient"]
    assert coef == 0.0
    w = task_weight_vector([0.5], ["a"], torch.zeros((), dtype=torch.float64))
    assert w.tolist() == [1.0, 0.5]
    with pytest.raises(ValueError):
        task_weight_vector([0.5, 0.2], ["a"], torch.zeros(()))
    with pytest.raises(ValueError, match="needs labels"):
        AuxiliaryFineTuner(aux_objectives=["supervised"]).fit(
            model, prepared.graphs, prepared.y, np.arange(8))


def test_adapter_is_registered_and_keeps_encoder(bbbp_small, data_dir):
    prepared = bbbp_small
    encoder = _model(prepared).encoder
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    adapter = ADAPTERS.get("auxiliary")(aux_objectives=("edge_prediction",), steps=2, seed=0)
    assert isinstance(adapter, AuxiliaryAdapter)
    y = np.asarray(prepared.y[:16, 0])
    y[:4], y[4:8] = 0, 1
    support = prepared.graphs.subset(np.arange(16))
    proba = adapter.adapt(encoder, support, y).predict_proba(prepared.graphs.subset(np.arange(16, 40)))
    assert proba.shape == (24,) and np.all(np.isfinite(proba))
    assert all(torch.equal(state[k], v) for k, v in encoder.state_dict().items())
    assert len(adapter.gradient_log_) == 2


def test_embedding_spread_is_tracked_and_a_collapse_is_flagged(bbbp_small, data_dir, monkeypatch):
    prepared = bbbp_small
    n = len(prepared.graphs)
    train, valid = np.arange(0, n - 50), np.arange(n - 50, n)
    tuner = AuxiliaryFineTuner(combiner="sum", epochs=2, batch_size=64, seed=1)
    tuner.fit(_model(prepared), prepared.graphs, prepared.y, train, valid)
    assert len(tuner.embedding_spread_) == 3  # before training, then after each epoch
    assert all(s > 0.01 for s in tuner.embedding_spread_) and tuner.collapsed_ is None

    import moladapt.pretrain.trainer as aux

    monkeypatch.setattr(aux, "COLLAPSE_SPREAD", float("inf"))  # every spread now counts as collapsed
    tuner = AuxiliaryFineTuner(combiner="sum", epochs=2, batch_size=64, seed=1)
    tuner.fit(_model(prepared), prepared.graphs, prepared.y, train, valid)
    assert tuner.collapsed_ == 0  # the first epoch after which it was seen
