"""The pretraining loop: checkpoints, resume, stages, export for `moladapt train --init`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moladapt.config import ModelConfig
from moladapt.data.featurize import get_featurizer
from moladapt.models.encoders import build_encoder
from moladapt.pretrain import (
    load_pretrain_checkpoint,
    load_pretrained_encoder,
    pretrain,
    save_pretrained_encoder,
)
from moladapt.training import build_model, load_checkpoint

N_MOLS = 40
KW = {"batch_size": 16, "lr": 1e-3, "seed": 0, "progress": False}


@pytest.fixture(scope="module")
def data(bbbp_slice):
    return bbbp_slice(N_MOLS)


def _encoder(feat, seed=0):
    torch.manual_seed(seed)
    return build_encoder("gin", feat.atom_vocab_sizes, feat.bond_vocab_sizes,
                         hidden_dim=16, num_layers=2, dropout=0.1)


def _same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_round_trip_and_resume(data, tmp_path):
    feat, graphs, _ = data
    objectives = ["attribute_masking", ("context_prediction", {"csize": 2})]
    enc = _encoder(feat)
    h1 = pretrain(enc, objectives, graphs, epochs=1, checkpoint_dir=tmp_path, **KW)
    assert h1.epochs_run == [0] and h1.start_epoch == 0
    raw = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert raw["epoch"] == 1 and raw["featurizer"]["fingerprint"] == feat.fingerprint
    assert raw["objectives"][0][1]["hparams"]["r2"] == 3
    assert "context_encoder.gnns.0.mlp.0.weight" in raw["objective_states"][0][1]
    assert raw["optimizer"]["state"]  # Adam moments were saved

    # a fresh process would rebuild the encoder from scratch: the checkpoint restores it
    enc2 = _encoder(feat, seed=123)
    h2 = pretrain(enc2, objectives, graphs, epochs=2, checkpoint_dir=tmp_path, **KW)
    assert h2.start_epoch == 1 and h2.epochs_run == [1]
    assert [r["epoch"] for r in h2.epochs] == [0, 1]
    assert load_pretrain_checkpoint(tmp_path / "last.pt")["epoch"] == 2

    # resumed == uninterrupted (same shuffles, corruptions, dropout and Adam state)
    enc3 = _encoder(feat)
    h3 = pretrain(enc3, objectives, graphs, epochs=2, checkpoint_dir=tmp_path / "straight", **KW)
    assert _same_state(enc2, enc3)
    assert h3.losses == pytest.approx(h2.losses)

    # nothing left to do
    h4 = pretrain(_encoder(feat), objectives, graphs, epochs=2, checkpoint_dir=tmp_path, **KW)
    assert h4.epochs_run == []
    with pytest.raises(ValueError, match="already has 2 epochs, more than the 1 asked for"):
        pretrain(_encoder(feat), objectives, graphs, epochs=1, checkpoint_dir=tmp_path, **KW)

    # other settings or other data are refused: the records would describe another run
    with pytest.raises(ValueError, match=r"other settings \(lr 0.001 there, 0.05 now; seed 0 there, 9 now\)"):
        pretrain(_encoder(feat), objectives, graphs, epochs=3, checkpoint_dir=tmp_path,
                 **{**KW, "lr": 0.05, "seed": 9})
    with pytest.raises(ValueError, match=f"molecules \\[{len(graphs)}\\] there, \\[20\\] now"):
        pretrain(_encoder(feat), objectives, graphs.subset(np.arange(20)), epochs=3, checkpoint_dir=tmp_path, **KW)
    same_size = graphs.subset(np.r_[1:len(graphs), 0])  # the same number of other molecules
    with pytest.raises(ValueError, match=r"data_sha256 \['\w{12}'\] there, \['\w{12}'\] now"):
        pretrain(_encoder(feat), objectives, same_size, epochs=3, checkpoint_dir=tmp_path, **KW)

    # a different objective set is refused rather than silently mixed
    with pytest.raises(ValueError, match="objectives"):
        pretrain(_encoder(feat), ["infomax"], graphs, epochs=3, checkpoint_dir=tmp_path, **KW)
    h5 = pretrain(_encoder(feat), ["infomax"], graphs, epochs=1, checkpoint_dir=tmp_path,
                  resume=False, **KW)
    assert h5.epochs_run == [0]


def test_stages_and_encoder_export(data, tmp_path):
    feat, graphs, y = data
    enc = _encoder(feat)
    stages = [("supervised", 1), (["edge_prediction", "infomax"], 1)]
    hist = pretrain(enc, None, graphs, y, stages=stages, checkpoint_dir=tmp_path, **KW)
    assert [r["stage"] for r in hist.epochs] == [0, 1]
    assert set(hist.epochs[1]["losses"]) == {"edge_prediction", "infomax"}
    assert all(np.isfinite(r["loss"]) and r["batches"] == 3 for r in hist.epochs)

    # encoder.pt is a regular checkpoint that `moladapt train --init` can use
    loaded = load_checkpoint(hist.encoder_checkpoint, expected_featurizer="basic")
    assert _same_state(loaded.model.encoder, enc)
    assert loaded.extra["pretrain"]["epochs_completed"] == 2
    cfg = ModelConfig(hidden_dim=16, num_layers=2)
    model = build_model(cfg, feat, 3)
    model.encoder.load_state_dict(loaded.model.encoder.state_dict())  # what experiment.py does
    assert _same_state(load_pretrained_encoder(hist.encoder_checkpoint), enc)


def test_save_pretrained_encoder_and_errors(data, tmp_path):
    feat, graphs, _ = data
    enc = _encoder(feat)
    save_pretrained_encoder(tmp_path / "enc.pt", enc, feat, {"note": "x"})
    assert load_checkpoint(tmp_path / "enc.pt").extra == {"pretrain": {"note": "x"}}
    with pytest.raises(ValueError, match="labels"):
        pretrain(enc, ["supervised"], graphs, epochs=1, **KW)
    rich = get_featurizer("rich")
    with pytest.raises(ValueError, match="featurizer"):
        pretrain(build_encoder("gin", rich.atom_vocab_sizes, rich.bond_vocab_sizes, hidden_dim=8,
                               num_layers=1), ["infomax"], graphs, epochs=1, **KW)
    with pytest.raises(KeyError, match="pretrain objective"):
        pretrain(enc, ["nope"], graphs, epochs=1, **KW)


def test_bf16_precision_trains_every_objective_in_mixed_precision(data, tmp_path):
    feat, graphs, y = data
    enc = _encoder(feat)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    objectives = ["supervised", "attribute_masking", "context_prediction", "edge_prediction",
                  "infomax", "graphcl"]
    hist = pretrain(enc, objectives, graphs, y, epochs=1, checkpoint_dir=tmp_path,
                    precision="bf16", **KW)
    assert set(hist.epochs[0]["losses"]) == set(objectives)
    assert all(np.isfinite(v) for v in hist.epochs[0]["losses"].values())
    state = enc.state_dict()
    assert all(v.dtype == before[k].dtype for k, v in state.items())  # weights stay float32
    assert any(not torch.equal(state[k], before[k]) for k in state)
    assert load_pretrain_checkpoint(tmp_path / "last.pt")["config"]["precision"] == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        pretrain(_encoder(feat), "infomax", graphs, epochs=1, precision="fp8", **KW)


def test_a_collapsed_encoder_is_detected_and_recorded(data, tmp_path):
    feat, graphs, _ = data
    healthy = pretrain(_encoder(feat), ["edge_prediction"], graphs, epochs=1, **KW)
    assert healthy.collapsed is None and healthy.epochs[0]["embedding_spread"] > 0.1

    # Dead ReLUs in the last GIN layer (the failure of unscaled edge prediction): the layer's
    # output no longer depends on its input, so every atom gets the same embedding.
    enc = _encoder(feat)
    with torch.no_grad():
        enc.gnns[-1].mlp[0].bias.fill_(-1e6)
    with pytest.warns(RuntimeWarning, match="collapsed"):
        hist = pretrain(enc, ["edge_prediction"], graphs, epochs=2, checkpoint_dir=tmp_path, **KW)
    assert hist.collapsed == 0
    assert all(r["embedding_spread"] < 1e-4 for r in hist.epochs)
    assert hist.to_dict()["collapsed"] == 0
    assert load_checkpoint(hist.encoder_checkpoint).extra["pretrain"]["collapsed"] == 0


def test_pretraining_continues_from_a_checkpoint_and_records_its_lineage(data, tmp_path):
    from moladapt.pretrain import init_encoder_from

    feat, graphs, y = data
    first = _encoder(feat)
    pretrain(first, ["attribute_masking"], graphs, epochs=1, checkpoint_dir=tmp_path / "ssl", **KW)
    ssl_path = tmp_path / "ssl" / "encoder.pt"

    second = _encoder(feat, seed=5)
    record = init_encoder_from(second, ssl_path, feat)
    assert _same_state(second, first)
    assert len(record["sha256"]) == 64 and record["encoder"]["hidden_dim"] == 16
    assert record["extra"]["pretrain"]["objectives"][0][0]["name"] == "attribute_masking"

    hist = pretrain(second, ["supervised"], graphs, y, epochs=1, checkpoint_dir=tmp_path / "sup",
                    init_from=record, **KW)
    assert not _same_state(second, first)  # it trained on
    lineage = load_checkpoint(hist.encoder_checkpoint).extra["pretrain"]
    assert lineage["init"]["sha256"] == record["sha256"]
    assert lineage["init"]["extra"]["pretrain"]["objectives"][0][0]["name"] == "attribute_masking"

    # a last.pt that started elsewhere is not continued from random weights, nor the reverse
    with pytest.raises(ValueError, match="started from .*encoder.pt"):
        pretrain(_encoder(feat), ["supervised"], graphs, y, epochs=2, checkpoint_dir=tmp_path / "sup", **KW)
    with pytest.raises(ValueError, match="started from random weights"):
        pretrain(_encoder(feat), ["attribute_masking"], graphs, epochs=2, checkpoint_dir=tmp_path / "ssl",
                 init_from=record, **KW)
    resumed = pretrain(_encoder(feat), ["supervised"], graphs, y, epochs=2,
                       checkpoint_dir=tmp_path / "sup", init_from=record, **KW)
    assert resumed.start_epoch == 1 and resumed.epochs_run == [1]

    # another architecture or featurizer: refused, naming what differs
    wider = build_encoder("gin", feat.atom_vocab_sizes, feat.bond_vocab_sizes, hidden_dim=32, num_layers=2)
    with pytest.raises(ValueError, match=r"hidden_dim 16 \(asked 32\)"):
        init_encoder_from(wider, ssl_path, feat)
    gcn = build_encoder("gcn", feat.atom_vocab_sizes, feat.bond_vocab_sizes, hidden_dim=16, num_layers=2)
    with pytest.raises(ValueError, match="other type"):
        init_encoder_from(gcn, ssl_path, feat)
    rich = get_featurizer("rich")
    with pytest.raises(ValueError, match="featurizer 'basic'"):
        init_encoder_from(build_encoder("gin", rich.atom_vocab_sizes, rich.bond_vocab_sizes, hidden_dim=16,
                                        num_layers=2), ssl_path, rich)


def test_an_epoch_with_nothing_to_learn_warns(tmp_path):
    """Context prediction on single atoms: no substructure has a context, no batch trains."""
    from moladapt.data.featurize import get_featurizer

    feat = get_featurizer("basic")
    graphs = feat.featurize(["C", "[Na+]", "[He]", "O", "N", "[Cl-]"])
    with pytest.warns(RuntimeWarning, match="no batch had anything to learn for context_prediction"):
        history = pretrain(_encoder(feat), ["context_prediction"], graphs, epochs=1, **KW)
    assert history.epochs[0]["batches"] == 0
