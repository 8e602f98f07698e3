"""The fingerprint-fused encoder ("gnn+ecfp+fc") on real molecules (BBBP)."""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moladapt.config import ModelConfig
from moladapt.data.featurize import get_featurizer
from moladapt.data.fingerprints import ecfp, shared_ecfp_featurizer
from moladapt.models.encoders import GIN, build_encoder
from moladapt.models.fingerprint import FingerprintFusionEncoder, load_encoder_weights
from moladapt.training import build_model, load_checkpoint, save_checkpoint
from moladapt.types import GraphBatch

BBBP = Path(os.environ["MOLADAPT_DATA_DIR"]) / "BBBP.csv"  # set by tests/conftest.py
FEAT = get_featurizer("basic")
FUSED = ModelConfig(hidden_dim=16, num_layers=2, dropout=0.0, fingerprint_bits=256, fingerprint_dims=(32, 8))


@pytest.fixture(scope="module")
def graphs():
    if not BBBP.exists():
        pytest.skip(f"{BBBP} not available")
    import pandas as pd

    return FEAT.featurize(pd.read_csv(BBBP)["smiles"].tolist()[:40])


def test_batches_carry_their_smiles_in_order(graphs):
    idx = np.array([5, 0, 17, 3])
    batch = graphs.collate(idx)
    assert batch.smiles == [graphs.smiles[i] for i in idx]
    assert batch.to("cpu").smiles == batch.smiles
    assert graphs.subset(idx).collate(np.arange(4)).smiles == batch.smiles


def test_fused_encoder_shape_fingerprints_and_gradients(graphs):
    torch.manual_seed(0)
    model = build_model(FUSED, FEAT, 1)
    enc = model.encoder
    assert isinstance(enc, FingerprintFusionEncoder) and isinstance(enc.graph_encoder, GIN)
    assert enc.out_dim == 8 and model.head.in_dim == 8
    batch = graphs.collate(np.arange(12))
    bits = enc.fingerprints(batch, torch.zeros(()))
    np.testing.assert_array_equal(bits.numpy().astype(bool), ecfp(batch.smiles, 2, 256))
    out = enc(batch)
    assert out.shape == (12, 8) and torch.isfinite(out).all()
    F.mse_loss(model(batch), torch.randn(12, 1)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing  # both the graph encoder and the fusion MLP learn


def test_the_fingerprint_changes_the_embedding(graphs):
    """Same graph, other SMILES → other fingerprint → other embedding: the bits are used."""
    torch.manual_seed(0)
    enc = build_model(FUSED, FEAT, 1).encoder.eval()
    batch = graphs.collate(np.arange(4))
    swapped = GraphBatch(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs,
                         smiles=list(reversed(batch.smiles)))
    with torch.no_grad():
        assert not torch.allclose(enc(batch), enc(swapped))


def test_a_batch_without_smiles_is_a_clear_error(graphs):
    enc = build_model(FUSED, FEAT, 1).encoder
    batch = graphs.collate(np.arange(3))
    bare = GraphBatch(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs)
    with pytest.raises(ValueError, match="needs the batch's SMILES"):
        enc(bare)
    with pytest.raises(TypeError, match="graph_encoder.node_embeddings"):
        enc.node_embeddings(batch)


def test_copies_share_the_fingerprint_cache_and_not_state(graphs):
    enc = build_model(FUSED, FEAT, 1).encoder
    enc(graphs.collate(np.arange(5)))
    clone = copy.deepcopy(enc)
    assert set(clone.state_dict()) == set(enc.state_dict())
    assert not any("ecfp" in k or "cache" in k for k in enc.state_dict())
    assert shared_ecfp_featurizer(2, 256) is shared_ecfp_featurizer(2, 256)


def test_fused_checkpoint_round_trip(graphs, tmp_path):
    torch.manual_seed(0)
    model = build_model(FUSED, FEAT, 1).eval()
    save_checkpoint(tmp_path / "m.pt", model, FEAT, FUSED, ["t"], "classification")
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.model_config == FUSED
    batch = graphs.collate(np.arange(10))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(batch), model(batch))


def test_a_graph_only_checkpoint_initialises_the_graph_part(graphs):
    torch.manual_seed(1)
    pretrained = build_encoder("gin", FEAT.atom_vocab_sizes, FEAT.bond_vocab_sizes, hidden_dim=16,
                               num_layers=2, dropout=0.0)
    fused = build_model(FUSED, FEAT, 1).encoder
    fusion_before = {k: v.clone() for k, v in fused.fusion.state_dict().items()}
    load_encoder_weights(fused, pretrained)
    for k, v in pretrained.state_dict().items():
        assert torch.equal(fused.graph_encoder.state_dict()[k], v), k
    for k, v in fused.fusion.state_dict().items():
        assert torch.equal(v, fusion_before[k]), k
    with pytest.raises(ValueError, match="fingerprint-fused"):
        load_encoder_weights(pretrained, fused)


def test_pretraining_refuses_a_fused_encoder(graphs):
    from moladapt.pretrain import pretrain

    enc = build_model(FUSED, FEAT, 1).encoder
    with pytest.raises(ValueError, match="pretrain its .graph_encoder"):
        pretrain(enc, "attribute_masking", graphs, epochs=1, batch_size=8, progress=False)


def test_supervised_pretraining_trains_a_fused_encoder_whole_and_saves_it(graphs, tmp_path):
    """Multi-task pretraining of a gnn+ecfp encoder (the fused multi-task baseline of FS-Mol's
    benchmark): the fusion MLP learns too, and ``encoder.pt`` loads back as the same fused encoder."""
    from moladapt.pretrain import pretrain

    torch.manual_seed(0)
    enc = build_model(FUSED, FEAT, 1).encoder
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    y = np.random.default_rng(0).choice([0.0, 1.0, np.nan], size=(len(graphs), 3)).astype(np.float32)
    history = pretrain(enc, "supervised", graphs, y, epochs=2, batch_size=8, seed=0,
                       checkpoint_dir=tmp_path, progress=False)
    assert history.epochs[-1]["embedding_spread"] > 0  # measured on the graph part
    for part in ("graph_encoder.atom_encoder.embeddings.0.weight", "fusion.0.weight", "fusion.2.weight"):
        assert not torch.equal(enc.state_dict()[part], before[part]), part
    loaded = load_checkpoint(tmp_path / "encoder.pt", expected_featurizer=FEAT)
    assert isinstance(loaded.model.encoder, FingerprintFusionEncoder)
    assert (loaded.model_config.fingerprint_bits, loaded.model_config.fingerprint_dims) == (256, (32, 8))
    assert loaded.model_config.encoder == "gin"
    batch = graphs.collate(np.arange(6))
    enc.eval()
    loaded.model.encoder.eval()
    with torch.no_grad():
        assert torch.equal(enc(batch), loaded.model.encoder(batch))
    # objectives that need node embeddings or augmented views still refuse it, and say which
    with pytest.raises(ValueError, match="attribute_masking needs a graph encoder"):
        pretrain(build_model(FUSED, FEAT, 1).encoder, ["supervised", "attribute_masking"], graphs, y,
                 epochs=1, batch_size=8, progress=False)


def test_a_fused_checkpoint_needs_the_same_fusion(graphs, tmp_path):
    from moladapt.pretrain import pretrain
    from moladapt.pretrain.trainer import init_encoder_from

    torch.manual_seed(0)
    source = build_model(FUSED, FEAT, 1).encoder
    for other in ({"fingerprint_bits": 512}, {"fingerprint_radius": 3}, {"fingerprint_dims": (64, 8)},
                  {"fingerprint_counts": True}):
        target = build_model(ModelConfig(**{**FUSED.__dict__, **other}), FEAT, 1).encoder
        with pytest.raises(ValueError, match=f"fingerprint fusion differs.*{next(iter(other))}"):
            load_encoder_weights(target, source, "ckpt")
    # a fused pretraining continues from a fused checkpoint; a graph-only one does not
    y = np.random.default_rng(0).choice([0.0, 1.0], size=(len(graphs), 2)).astype(np.float32)
    pretrain(source, "supervised", graphs, y, epochs=1, batch_size=8, checkpoint_dir=tmp_path, progress=False)
    fused_again = build_model(FUSED, FEAT, 1).encoder
    record = init_encoder_from(fused_again, tmp_path / "encoder.pt", FEAT)
    assert record["encoder"]["name"] == "gin"
    assert all(torch.equal(a, b) for a, b in zip(fused_again.state_dict().values(), source.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="continues from a graph encoder only"):
        init_encoder_from(build_model(dataclasses.replace(FUSED, fingerprint_bits=0), FEAT, 1).encoder,
                          tmp_path / "encoder.pt", FEAT)
    # refused before an objective that reads the graph encoder's attributes is built
    with pytest.raises(ValueError, match="context_prediction needs a graph encoder"):
        pretrain(build_model(FUSED, FEAT, 1).encoder, ("context_prediction", {"csize": 2}), graphs,
                 epochs=1, batch_size=8, progress=False)


def test_a_counts_encoder_feeds_fs_mol_s_count_fingerprint(graphs, tmp_path):
    """``fingerprint_counts``: the MLP sees occurrence counts (FS-Mol's ECFP), the setting is
    saved with the model, and a bits checkpoint (also one from before counts existed) refuses it."""
    counts_cfg = dataclasses.replace(FUSED, fingerprint_counts=True)
    torch.manual_seed(0)
    model = build_model(counts_cfg, FEAT, 1).eval()
    enc = model.encoder
    batch = graphs.collate(np.arange(12))
    seen = enc.fingerprints(batch, torch.zeros(()))
    np.testing.assert_array_equal(seen.numpy(), ecfp(batch.smiles, 2, 256, counts=True).astype(np.float32))
    assert seen.max() > 1 and enc.hparams["fingerprint_counts"] is True
    bits_enc = build_model(FUSED, FEAT, 1).encoder
    bits_enc.load_state_dict(enc.state_dict())  # same weights, bits instead of counts
    with torch.no_grad():
        assert not torch.allclose(enc(batch), bits_enc.eval()(batch))
    save_checkpoint(tmp_path / "m.pt", model, FEAT, counts_cfg, ["t"], "classification")
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.model_config.fingerprint_counts is True
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(batch), model(batch))
    del bits_enc.hparams["fingerprint_counts"]  # a checkpoint written before counts existed
    with pytest.raises(ValueError, match="fingerprint_counts False \\(asked True\\)"):
        load_encoder_weights(enc, bits_enc, "old")
    load_encoder_weights(build_model(FUSED, FEAT, 1).encoder, bits_enc, "old")  # bits: still loads


def test_counts_without_a_fingerprint_is_a_config_error():
    with pytest.raises(ValueError, match="fingerprint_counts needs a fingerprint"):
        ModelConfig(fingerprint_counts=True)
