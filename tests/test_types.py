"""Core types: GraphBatch.cat joins batches without mixing their graphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moladapt.data.featurize import get_featurizer
from moladapt.models.encoders import build_encoder
from moladapt.types import GraphBatch

FEAT = get_featurizer("basic")


def test_cat_of_two_cut_batches_is_the_batch_cut_at_once():
    graphs = FEAT.featurize(["CCO", "c1ccccc1", "[Na+].[Cl-]", "CC(=O)Nc1ccc(O)cc1", "C#N"])
    y = np.arange(5, dtype=np.float32)[:, None]
    joined = GraphBatch.cat([graphs.collate([3, 0], y), graphs.collate([2, 4, 1], y)])
    direct = graphs.collate([3, 0, 2, 4, 1], y)
    for name in ("x", "edge_index", "edge_attr", "batch", "y"):
        torch.testing.assert_close(getattr(joined, name), getattr(direct, name))
    assert joined.num_graphs == 5 and joined.smiles == direct.smiles
    torch.manual_seed(0)
    encoder = build_encoder("gin", FEAT.atom_vocab_sizes, FEAT.bond_vocab_sizes, hidden_dim=8,
                            num_layers=2).eval()
    torch.testing.assert_close(encoder(joined), encoder(direct))


def test_cat_drops_labels_and_smiles_that_not_every_batch_has():
    graphs = FEAT.featurize(["CCO", "CCN"])
    with_y = graphs.collate([0], np.ones((2, 1), dtype=np.float32))
    without = graphs.collate([1])
    without.smiles = None
    joined = GraphBatch.cat([with_y, without])
    assert joined.y is None and joined.smiles is None
    with pytest.raises(ValueError, match="at least one batch"):
        GraphBatch.cat([])
