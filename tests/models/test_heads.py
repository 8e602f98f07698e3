"""Tests of the prediction heads and the encoder + head model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from moladapt.data.featurize import get_featurizer
from moladapt.models.encoders import build_encoder
from moladapt.models.heads import MolecularModel, PredictionHead

BBBP = Path(os.environ["MOLADAPT_DATA_DIR"]) / "BBBP.csv"  # set by tests/conftest.py


@pytest.fixture(scope="module")
def batch():
    if not BBBP.exists():
        pytest.skip(f"{BBBP} not available")
    import pandas as pd

    graphs = get_featurizer("basic").featurize(pd.read_csv(BBBP)["smiles"].tolist()[:12])
    return graphs.collate(range(len(graphs)))


def test_linear_head_is_one_linear_layer():
    head = PredictionHead(300, 12)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 1 and (linears[0].in_features, linears[0].out_features) == (300, 12)
    assert sum(p.numel() for p in head.parameters()) == 301 * 12
    assert head(torch.randn(5, 300)).shape == (5, 12)


def test_mlp_head_structure_and_dropout():
    head = PredictionHead(32, 3, hidden_dims=(64, 16), dropout=0.5)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 64), (64, 16), (16, 3)]
    assert sum(isinstance(m, torch.nn.Dropout) for m in head.modules()) == 2
    z = torch.randn(7, 32)
    head.eval()
    torch.testing.assert_close(head(z), head(z))
    assert head(z).shape == (7, 3)


def test_head_hparams_rebuild():
    head = PredictionHead(32, 3, hidden_dims=[8], dropout=0.1)
    again = PredictionHead(**head.hparams)
    again.load_state_dict(head.state_dict())
    assert again.hparams == {"in_dim": 32, "num_tasks": 3, "hidden_dims": [8], "dropout": 0.1}
    with pytest.raises(ValueError):
        PredictionHead(0, 3)


@pytest.mark.parametrize("jk", ["last", "concat"])
def test_molecular_model_forward(batch, jk):
    fz = get_featurizer("basic")
    enc = build_encoder(
        "gin", fz.atom_vocab_sizes, fz.bond_vocab_sizes, hidden_dim=16, num_layers=2, jk=jk
    )
    model = MolecularModel(enc, PredictionHead(enc.out_dim, 4, hidden_dims=(8,)))
    assert model.encoder is enc and isinstance(model.head, PredictionHead)
    out = model(batch)
    assert out.shape == (batch.num_graphs, 4) and torch.isfinite(out).all()
    assert model.embed(batch).shape == (batch.num_graphs, enc.out_dim)
    out.sum().backward()
    assert all(p.grad is not None for p in model.head.parameters())


def test_molecular_model_dim_mismatch():
    fz = get_featurizer("basic")
    enc = build_encoder(
        "gcn", fz.atom_vocab_sizes, fz.bond_vocab_sizes, hidden_dim=16, num_layers=2, jk="concat"
    )
    with pytest.raises(ValueError, match="out_dim=32"):
        MolecularModel(enc, PredictionHead(16, 1))
