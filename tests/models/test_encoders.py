"""Tests of the graph encoders on real molecules (BBBP), basic and rich featurizers."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moladapt.data.featurize import get_featurizer
from moladapt.models.encoders import (
    ENCODERS,
    GIN,
    POOLINGS,
    CombinedReadout,
    build_encoder,
    load_pretrain_gnns_state_dict,
)

BBBP = Path(os.environ["MOLADAPT_DATA_DIR"]) / "BBBP.csv"  # set by tests/conftest.py
N_MOLS = 24
SMALL = {"hidden_dim": 16, "num_layers": 3}
NAMES = ["gin", "gcn", "gat", "sage", "fsmol", "fsmol-pna"]
FSMOL = ["fsmol", "fsmol-pna"]  # FS-Mol's residual ReZero encoders


def _smiles(n: int) -> list[str]:
    if not BBBP.exists():
        pytest.skip(f"{BBBP} not available")
    import pandas as pd

    return pd.read_csv(BBBP)["smiles"].tolist()[:n]


@pytest.fixture(scope="module")
def data():
    """featurizer name → (featurizer, MolGraphs) of the first BBBP molecules."""
    smiles = _smiles(N_MOLS)
    out = {}
    for name in ("basic", "rich"):
        fz = get_featurizer(name)
        graphs = fz.featurize(smiles)
        assert len(graphs) >= 20
        out[name] = (fz, graphs)
    return out


def _encoder(fz, name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_encoder(name, fz.atom_vocab_sizes, fz.bond_vocab_sizes, **{**SMALL, **kw})


def test_registry():
    assert ENCODERS.names() == sorted(NAMES)
    with pytest.raises(KeyError, match="unknown encoder"):
        ENCODERS.get("transformer")


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("featurizer", ["basic", "rich"])
@pytest.mark.parametrize("name", NAMES)
def test_graph_embeddings_shape_and_finite(data, name, featurizer, pooling):
    fz, graphs = data[featurizer]
    batch = graphs.collate(range(len(graphs)))
    enc = _encoder(fz, name, pooling=pooling)
    assert enc.name == name
    out = enc(batch)
    assert out.shape == (batch.num_graphs, enc.out_dim) == (len(graphs), 16)
    assert torch.isfinite(out).all()
    nodes = enc.node_embeddings(batch)
    assert nodes.shape == (batch.num_nodes, enc.out_dim)


@pytest.mark.parametrize("jk", ["last", "concat", "max", "sum"])
@pytest.mark.parametrize("name", NAMES)
def test_jk_out_dim(data, name, jk):
    fz, graphs = data["basic"]
    batch = graphs.collate(range(8))
    enc = _encoder(fz, name, jk=jk, pooling="attention")
    expected = 3 * 16 if jk == "concat" else 16
    assert enc.out_dim == expected
    assert enc.node_embeddings(batch).shape == (batch.num_nodes, expected)
    out = enc(batch)
    assert out.shape == (8, expected) and torch.isfinite(out).all()


def test_jk_combinations_are_what_they_say(data):
    fz, graphs = data["basic"]
    batch = graphs.collate(range(6))
    encs = {
        jk: _encoder(fz, "gin", seed=3, jk=jk).eval() for jk in ("last", "concat", "max", "sum")
    }
    with torch.no_grad():
        cat = encs["concat"].node_embeddings(batch).view(batch.num_nodes, 3, 16)
        torch.testing.assert_close(encs["last"].node_embeddings(batch), cat[:, -1])
        torch.testing.assert_close(encs["max"].node_embeddings(batch), cat.max(dim=1).values)
        torch.testing.assert_close(encs["sum"].node_embeddings(batch), cat.sum(dim=1))


# Biases directly followed by a per-feature shift that train-mode BatchNorm removes: their
# gradient is analytically zero in train mode (the same holds in pretrain-gnns). GIN: the
# MLP's last bias. GAT: the output bias, and lin.bias (it adds the same vector to every
# message and the same constant to every attention logit of a node, so it cancels too).
BN_CANCELLED = {
    "gin": [r"gnns\.\d+\.mlp\.2\.bias"],
    "gat": [r"gnns\.\d+\.bias", r"gnns\.\d+\.lin\.bias"],
}
# The attention-pooling gate's bias shifts every logit of the softmax equally: its gradient
# is identically zero (as in PyG's AttentionalAggregation and pretrain-gnns' GlobalAttention).
ALWAYS_ZERO = re.compile(r"attention_pool\.gate_nn\.bias")


def _backward(enc, batch, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    head = torch.nn.Linear(enc.out_dim, 2)
    target = torch.randn(batch.num_graphs, 2)
    enc.zero_grad()
    loss = F.mse_loss(head(enc(batch)), target)
    loss.backward()
    return {n: p.grad for n, p in enc.named_parameters()}


@pytest.mark.parametrize("featurizer", ["basic", "rich"])
@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(data, name, featurizer):
    fz, graphs = data[featurizer]
    batch = graphs.collate(range(len(graphs)))
    enc = _encoder(fz, name, pooling="attention", jk="concat", dropout=0.2)
    enc.train()
    grads = _backward(enc, batch)
    cancelled = [re.compile(p) for p in BN_CANCELLED.get(name, [])] + [ALWAYS_ZERO]
    for pname, g in grads.items():
        assert g is not None, f"{pname} got no gradient"
        assert torch.isfinite(g).all(), pname
        if not any(p.fullmatch(pname) for p in cancelled):
            assert g.norm() > 0, f"{pname} has a zero gradient in train mode"
    # With BatchNorm on running statistics the BN-cancelled biases get a gradient too.
    for bn in enc.batch_norms:
        bn.eval()
    grads = _backward(enc, batch)
    for pname, g in grads.items():
        assert g is not None and torch.isfinite(g).all(), pname
        if not ALWAYS_ZERO.fullmatch(pname):
            assert g.norm() > 0, f"{pname} has a zero gradient with BatchNorm in eval mode"


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("name", NAMES)
def test_eval_embedding_independent_of_batch(data, name, pooling):
    fz, graphs = data["rich"]
    n = len(graphs)
    full = graphs.collate(range(n))
    enc = _encoder(fz, name, pooling=pooling, jk="sum")
    enc.train()
    with torch.no_grad():
        enc(full)  # move the BatchNorm running statistics away from (0, 1)
    enc.eval()
    with torch.no_grad():
        ref = enc(full)
        for i in (0, 7, n - 1):
            alone = enc(graphs.collate([i]))
            torch.testing.assert_close(alone[0], ref[i], atol=1e-5, rtol=1e-5)
        perm = np.random.default_rng(0).permutation(n)
        permuted = enc(graphs.collate(perm))
        torch.testing.assert_close(permuted, ref[perm], atol=1e-5, rtol=1e-5)


def test_hparams_rebuild(data):
    fz, _ = data["rich"]
    enc = _encoder(fz, "gat", jk="concat", pooling="attention", dropout=0.1)
    hp = json.loads(json.dumps(enc.hparams))
    assert hp == {
        "atom_vocab_sizes": list(fz.atom_vocab_sizes),
        "bond_vocab_sizes": list(fz.bond_vocab_sizes),
        "hidden_dim": 16,
        "num_layers": 3,
        "dropout": 0.1,
        "jk": "concat",
        "pooling": "attention",
    }
    again = build_encoder(enc.name, **hp)
    again.load_state_dict(enc.state_dict())  # same keys and shapes
    assert again.out_dim == enc.out_dim == 48


def test_invalid_arguments(data):
    fz, _ = data["basic"]
    with pytest.raises(ValueError, match="jk"):
        _encoder(fz, "gin", jk="lstm")
    with pytest.raises(ValueError, match="pooling"):
        _encoder(fz, "gin", pooling="set2set")
    with pytest.raises(ValueError, match="num_layers"):
        _encoder(fz, "gin", num_layers=0)


def test_gin_matches_pretrain_gnns_size_and_structure():
    fz = get_featurizer("basic")
    enc = build_encoder("gin", fz.atom_vocab_sizes, fz.bond_vocab_sizes)  # defaults: 5 x 300
    d, layers = 300, 5
    atom = 120 * d + 3 * d  # x_embedding1 (120 atom types incl. MASK), x_embedding2 (3 chirality)
    mlp = (d * 2 * d + 2 * d) + (2 * d * d + d)  # Linear(d, 2d), Linear(2d, d)
    edge = 6 * d + 3 * d  # edge_embedding1 (6 bond types incl. self-loop, MASK), edge_embedding2
    bn = 2 * d  # BatchNorm1d affine weight and bias
    expected = atom + layers * (mlp + edge + bn)
    assert expected == 1_857_900
    assert sum(p.numel() for p in enc.parameters()) == expected

    assert enc.out_dim == 300 and enc.self_loop_index == 4
    assert len(enc.gnns) == 5 and len(enc.batch_norms) == 5
    assert [e.weight.shape for e in enc.atom_encoder.embeddings] == [(120, 300), (3, 300)]
    for conv, bn_mod in zip(enc.gnns, enc.batch_norms, strict=True):
        assert conv.aggr == "add"
        lin1, act, lin2 = conv.mlp
        assert (lin1.in_features, lin1.out_features) == (300, 600)
        assert isinstance(act, torch.nn.ReLU)
        assert (lin2.in_features, lin2.out_features) == (600, 300)
        assert [e.weight.shape for e in conv.edge_encoder.embeddings] == [(6, 300), (3, 300)]
        assert isinstance(bn_mod, torch.nn.BatchNorm1d) and bn_mod.num_features == 300


# --- pretrain-gnns checkpoints ----------------------------------------------------------------


def _synthetic_pretrain_gnns_state_dict(d: int, layers: int, seed: int = 0) -> dict:
    """A random state dict with the key names and shapes of pretrain-gnns' ``GNN``."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.3

    sd = {"x_embedding1.weight": r(120, d), "x_embedding2.weight": r(3, d)}
    for i in range(layers):
        sd[f"gnns.{i}.mlp.0.weight"] = r(2 * d, d)
        sd[f"gnns.{i}.mlp.0.bias"] = r(2 * d)
        sd[f"gnns.{i}.mlp.2.weight"] = r(d, 2 * d)
        sd[f"gnns.{i}.mlp.2.bias"] = r(d)
        sd[f"gnns.{i}.edge_embedding1.weight"] = r(6, d)
        sd[f"gnns.{i}.edge_embedding2.weight"] = r(3, d)
        sd[f"batch_norms.{i}.weight"] = 1 + r(d)
        sd[f"batch_norms.{i}.bias"] = r(d)
        sd[f"batch_norms.{i}.running_mean"] = r(d)
        sd[f"batch_norms.{i}.running_var"] = 0.5 + torch.rand(d, generator=g)
        sd[f"batch_norms.{i}.num_batches_tracked"] = torch.tensor(100)
    return sd


def _reference_gin_nodes(sd: dict, batch, layers: int) -> torch.Tensor:
    """pretrain-gnns ``GNN.forward`` (gin, JK=last, eval mode) written out in plain torch."""
    x, ei, ea = batch.x, batch.edge_index, batch.edge_attr
    n = x.shape[0]
    loops = torch.arange(n)
    ei = torch.cat([ei, torch.stack([loops, loops])], dim=1)
    loop_attr = torch.zeros(n, 2, dtype=ea.dtype)
    loop_attr[:, 0] = 4  # bond type for self-loop edge
    ea = torch.cat([ea, loop_attr])
    h = sd["x_embedding1.weight"][x[:, 0]] + sd["x_embedding2.weight"][x[:, 1]]
    for i in range(layers):
        e = sd[f"gnns.{i}.edge_embedding1.weight"][ea[:, 0]]
        e = e + sd[f"gnns.{i}.edge_embedding2.weight"][ea[:, 1]]
        agg = torch.zeros_like(h).index_add_(0, ei[1], h[ei[0]] + e)
        z = F.relu(agg @ sd[f"gnns.{i}.mlp.0.weight"].T + sd[f"gnns.{i}.mlp.0.bias"])
        z = z @ sd[f"gnns.{i}.mlp.2.weight"].T + sd[f"gnns.{i}.mlp.2.bias"]
        mean, var = sd[f"batch_norms.{i}.running_mean"], sd[f"batch_norms.{i}.running_var"]
        z = (z - mean) / torch.sqrt(var + 1e-5) * sd[f"batch_norms.{i}.weight"]
        h = z + sd[f"batch_norms.{i}.bias"]
        if i < layers - 1:
            h = F.relu(h)
    return h


def test_load_pretrain_gnns_matches_reference_forward(data):
    fz, graphs = data["basic"]
    batch = graphs.collate(range(len(graphs)))
    d, layers = 16, 3
    sd = _synthetic_pretrain_gnns_state_dict(d, layers)
    enc = build_encoder(
        "gin", fz.atom_vocab_sizes, fz.bond_vocab_sizes, hidden_dim=d, num_layers=layers
    )
    assert load_pretrain_gnns_state_dict(enc, sd) == []
    enc.eval()
    with torch.no_grad():
        ours = enc.node_embeddings(batch)
        ref = _reference_gin_nodes(sd, batch, layers)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
        pooled = enc(batch)
    counts = torch.bincount(batch.batch, minlength=batch.num_graphs).unsqueeze(1)
    expected = torch.zeros(batch.num_graphs, d).index_add_(0, batch.batch, ref) / counts
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-5)


def test_load_pretrain_gnns_round_trip():
    fz = get_featurizer("basic")
    d, layers = 8, 2
    sd = _synthetic_pretrain_gnns_state_dict(d, layers, seed=1)
    enc = build_encoder(
        "gin",
        fz.atom_vocab_sizes,
        fz.bond_vocab_sizes,
        hidden_dim=d,
        num_layers=layers,
        pooling="attention",
    )
    assert load_pretrain_gnns_state_dict(enc, sd) == [
        "attention_pool.gate_nn.weight",
        "attention_pool.gate_nn.bias",
    ]
    ours = enc.state_dict()
    # Map back by hand: every checkpoint tensor must sit, unchanged, under our key.
    back = {
        "x_embedding1.weight": ours["atom_encoder.embeddings.0.weight"],
        "x_embedding2.weight": ours["atom_encoder.embeddings.1.weight"],
    }
    for i in range(layers):
        for k in ("mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"):
            back[f"gnns.{i}.{k}"] = ours[f"gnns.{i}.{k}"]
        for c in (1, 2):
            back[f"gnns.{i}.edge_embedding{c}.weight"] = ours[
                f"gnns.{i}.edge_encoder.embeddings.{c - 1}.weight"
            ]
        for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            back[f"batch_norms.{i}.{k}"] = ours[f"batch_norms.{i}.{k}"]
    assert back.keys() == sd.keys()
    for k in sd:
        torch.testing.assert_close(back[k], sd[k], msg=k)

    # A GNN_graphpred state dict (``gnn.`` prefix plus a head) loads the same way.
    wrapped = {f"gnn.{k}": v + 1 for k, v in sd.items() if "num_batches" not in k}
    wrapped["graph_pred_linear.weight"] = torch.zeros(1, d)
    wrapped["graph_pred_linear.bias"] = torch.zeros(1)
    load_pretrain_gnns_state_dict(enc, wrapped)
    torch.testing.assert_close(enc.gnns[1].mlp[2].bias.detach(), sd["gnns.1.mlp.2.bias"] + 1)


def test_load_pretrain_gnns_errors(data):
    fz = get_featurizer("basic")
    d, layers = 8, 2
    sd = _synthetic_pretrain_gnns_state_dict(d, layers)

    def gin(**kw):
        return build_encoder(
            "gin",
            fz.atom_vocab_sizes,
            fz.bond_vocab_sizes,
            **{"hidden_dim": d, "num_layers": layers, **kw},
        )

    enc = gin()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    bad = dict(sd)
    bad["gnns.1.edge_embedding2.weight"] = torch.zeros(4, d)
    with pytest.raises(ValueError, match=r"gnns\.1\.edge_embedding2\.weight"):
        load_pretrain_gnns_state_dict(enc, bad)
    for k, v in enc.state_dict().items():  # nothing was loaded
        assert torch.equal(v, before[k]), k

    with pytest.raises(ValueError, match=r"x_embedding1\.weight.*\(120, 8\)"):
        load_pretrain_gnns_state_dict(gin(hidden_dim=12), sd)
    with pytest.raises(ValueError, match=r"unexpected key '(batch_norms|gnns)\.2\."):
        load_pretrain_gnns_state_dict(gin(num_layers=2), _synthetic_pretrain_gnns_state_dict(d, 3))
    with pytest.raises(ValueError, match=r"missing key 'batch_norms\.2\."):
        load_pretrain_gnns_state_dict(gin(num_layers=3), sd)
    with pytest.raises(ValueError, match="GIN"):
        load_pretrain_gnns_state_dict(
            build_encoder(
                "gcn", fz.atom_vocab_sizes, fz.bond_vocab_sizes, hidden_dim=d, num_layers=layers
            ),
            sd,
        )
    rich = get_featurizer("rich")
    with pytest.raises(ValueError, match="basic"):
        load_pretrain_gnns_state_dict(
            GIN(rich.atom_vocab_sizes, rich.bond_vocab_sizes, hidden_dim=d, num_layers=layers), sd
        )


def test_fast_dropout_matches_the_distribution_of_torch_dropout():
    from moladapt.models.encoders import dropout

    torch.manual_seed(0)
    x = torch.ones(400, 300, requires_grad=True)
    y = dropout(x, 0.5, training=True)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.5) < 0.01
    assert torch.all(y[kept] == 2.0)  # inverted scaling keeps the expectation
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() * 2.0)  # gradient flows through kept units only
    assert dropout(x, 0.5, training=False) is x
    assert torch.all(dropout(x, 1.0, training=True) == 0)


def _fsmol(fz, alpha: float | None = None, name: str = "fsmol", **kw):
    enc = _encoder(fz, name, dropout=0.0, **kw).eval()
    if alpha is not None:
        with torch.no_grad():
            for block in enc.gnns:
                block.alpha.fill_(alpha)
    return enc


@pytest.mark.parametrize("name", FSMOL)
def test_fsmol_blocks_start_as_the_identity(data, name):
    fz, graphs = data["basic"]
    batch = graphs.collate(range(8))
    enc = _fsmol(fz, name=name)  # ReZero: alpha = 1e-7 at initialisation
    with torch.no_grad():
        torch.testing.assert_close(
            enc.node_embeddings(batch), enc.atom_encoder(batch.x), atol=1e-5, rtol=0
        )
        assert not torch.allclose(  # with alpha = 1 the blocks do transform
            _fsmol(fz, alpha=1.0, name=name).node_embeddings(batch), enc.atom_encoder(batch.x), atol=1e-3
        )


@pytest.mark.parametrize("name", FSMOL)
def test_fsmol_messages_follow_the_bonds_not_their_order(data, name):
    fz, graphs = data["rich"]
    batch = graphs.collate(range(6))
    enc = _fsmol(fz, alpha=1.0, name=name)
    with torch.no_grad():
        ref = enc.node_embeddings(batch)
        perm = torch.from_numpy(np.random.default_rng(0).permutation(batch.edge_index.shape[1]))
        shuffled = dataclasses.replace(
            batch, edge_index=batch.edge_index[:, perm], edge_attr=batch.edge_attr[perm]
        )
        torch.testing.assert_close(enc.node_embeddings(shuffled), ref, atol=1e-5, rtol=1e-5)
        # Another bond type selects other weights: both atoms of the bond see the change.
        attr = batch.edge_attr.clone()
        src, dst = batch.edge_index[:, 0].tolist()
        both = ((batch.edge_index[0] == src) & (batch.edge_index[1] == dst)) | (
            (batch.edge_index[0] == dst) & (batch.edge_index[1] == src)
        )
        attr[both, 0] = (attr[both, 0] + 1) % fz.bond_self_loop_index
        changed = enc.node_embeddings(dataclasses.replace(batch, edge_attr=attr))
        moved = (changed - ref).abs().amax(dim=1) > 1e-4
        assert moved[src] and moved[dst]
        assert not moved[batch.batch != batch.batch[src]].any()  # other molecules are untouched


@pytest.mark.parametrize("name", FSMOL)
def test_fsmol_handles_a_molecule_without_bonds(name):
    fz = get_featurizer("basic")
    graphs = fz.featurize(["[Na+]", "CCO"])
    enc = _fsmol(fz, alpha=1.0, name=name, pooling="attention", jk="concat")
    with torch.no_grad():
        out = enc(graphs.collate([0, 1]))
        alone = enc(graphs.collate([0]))  # a batch with no bond at all
    assert out.shape == (2, 48) and torch.isfinite(out).all()
    assert alone.shape == (1, 48) and torch.isfinite(alone).all()
    torch.testing.assert_close(alone[0], out[0], atol=1e-5, rtol=1e-5)


def test_fsmol_default_size_is_fs_mols():
    fz = get_featurizer("basic")
    enc = build_encoder("fsmol", fz.atom_vocab_sizes, fz.bond_vocab_sizes, hidden_dim=128, num_layers=8)
    assert len(enc.gnns) == 8
    block = enc.gnns[0]
    assert (block.heads, block.head_dim) == (4, 32)  # FS-Mol: 4 heads × 32
    assert block.boom_in.out_features == 512  # FS-Mol's intermediate_dim
    assert block.message_weight.shape == (fz.bond_vocab_sizes[0], 256, 128)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in enc.modules())
    with pytest.raises(ValueError, match="divisible"):
        build_encoder("fsmol", fz.atom_vocab_sizes, fz.bond_vocab_sizes, hidden_dim=30)


@pytest.mark.parametrize("name", FSMOL)
def test_fsmol_fits_real_labels(data, name):
    """Learning happens: 60 Adam steps fit the BBBP labels of 24 molecules."""
    import pandas as pd

    fz, graphs = data["basic"]
    labels = pd.read_csv(BBBP)["p_np"].to_numpy()[graphs.source_rows]
    y = torch.tensor(labels, dtype=torch.float32)
    batch = graphs.collate(range(len(graphs)))
    torch.manual_seed(0)
    enc = _encoder(fz, name, dropout=0.0, pooling="mean").train()
    head = torch.nn.Linear(enc.out_dim, 1)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(head(enc(batch)).squeeze(1), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_fsmol_pna_default_size_is_fs_mol_protonet_s():
    fz = get_featurizer("basic")
    enc = build_encoder("fsmol-pna", fz.atom_vocab_sizes, fz.bond_vocab_sizes, hidden_dim=64, num_layers=8,
                        jk="concat", pooling="combined")
    block = enc.gnns[0]
    assert len(enc.gnns) == 8 and (block.towers, block.message_dim) == (2, 32)
    # per bond type and tower: [h_j^t ; h_i^t] (2 × 32) → 3 messages × 32
    assert block.message_weight.shape == (fz.bond_vocab_sizes[0], 2, 64, 96)
    assert block.out.in_features == 2 * 12 * 32  # 4 aggregators × 3 scalers × 32, two towers
    assert block.boom_in.out_features == 256 and enc.out_dim == 512  # FS-Mol's readout width
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in enc.modules())
    with pytest.raises(ValueError, match="divisible by 2 towers"):
        build_encoder("fsmol-pna", fz.atom_vocab_sizes, fz.bond_vocab_sizes, hidden_dim=31)


def test_pna_aggregation_is_fsmols_equation_per_atom():
    """Sum, mean, FS-Mol's spread and max of each tower's messages over an atom's incoming
    bonds, scaled by log-degree, against a direct per-atom computation (branching atoms, a
    ring, and an ion without bonds)."""
    from moladapt.models.encoders import RelationalPNABlock

    fz = get_featurizer("basic")
    batch = fz.featurize(["CC(C)(O)c1ccccc1N", "[Na+]"]).collate([0, 1])
    torch.manual_seed(0)
    block = RelationalPNABlock(8, fz.bond_vocab_sizes, towers=2, message_dim=3).double()
    h = torch.randn(batch.num_nodes, 8, dtype=torch.float64)
    got = block.aggregate(h, batch.edge_index, batch.edge_attr)
    assert got.shape == (batch.num_nodes, 2 * 12 * 3)
    src, dst = batch.edge_index
    emb = block.edge_encoder(batch.edge_attr).view(-1, 2, 9)
    delta = RelationalPNABlock.DELTA
    for i in range(batch.num_nodes):
        incoming = (dst == i).nonzero().flatten().tolist()
        for t in range(2):
            msgs = torch.stack([
                torch.relu(torch.cat([h[src[e], 4 * t:4 * t + 4], h[i, 4 * t:4 * t + 4]])
                           @ block.message_weight[batch.edge_attr[e, 0], t]
                           + block.message_bias[batch.edge_attr[e, 0], t] + emb[e, t])
                for e in incoming
            ]) if incoming else torch.zeros(0, 9, dtype=torch.float64)
            a, b, c = msgs[:, :3], msgs[:, 3:6], msgs[:, 6:]
            n = len(incoming)
            mean = b.mean(0) if n else torch.zeros(3, dtype=torch.float64)
            x = torch.cat([a.sum(0), mean,
                           (torch.relu(b**2 - mean**2) + 1e-7).sum(0).sqrt(),
                           c.amax(0) if n else torch.zeros(3, dtype=torch.float64)])
            log_n = torch.log(torch.tensor(n + 1.0, dtype=torch.float64))
            want = torch.cat([x, x * log_n / delta, x * delta / (log_n + 1e-7)])
            torch.testing.assert_close(got[i, 36 * t:36 * (t + 1)], want)
    assert (dst == batch.num_nodes - 1).sum() == 0 and not got[-1].any()  # the ion: zeros


def test_combined_readout_is_fsmols_equation_per_graph():
    torch.manual_seed(0)
    readout = CombinedReadout(6, heads=3, head_dim=4)
    h, batch = torch.randn(9, 6), torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    out = readout(h, batch, 3)
    for g in range(3):
        hg = h[batch == g]
        mean_w = torch.softmax(readout.mean_scores(hg), dim=0)  # over the graph's atoms
        sum_w = torch.sigmoid(readout.sum_scores(hg))
        r_mean = (mean_w.unsqueeze(-1) * readout.mean_values(hg).view(-1, 3, 4)).sum(0).flatten()
        r_sum = (sum_w.unsqueeze(-1) * readout.sum_values(hg).view(-1, 3, 4)).sum(0).flatten()
        parts = [readout.mean_out(r_mean), readout.sum_out(r_sum), readout.max_out(hg.max(0).values)]
        torch.testing.assert_close(out[g], readout.combine(F.relu(torch.cat(parts))))


def test_combined_readout_gets_gradients(data):
    fz, graphs = data["basic"]
    enc = _encoder(fz, "fsmol", pooling="combined", jk="concat", dropout=0.0).train()
    grads = _backward(enc, graphs.collate(range(len(graphs))))
    for pname, g in grads.items():
        assert g is not None and torch.isfinite(g).all() and g.norm() > 0, pname
