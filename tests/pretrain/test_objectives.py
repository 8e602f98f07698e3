"""Pretraining objectives on real molecules (the first BBBP rows), GIN 2 x 32."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

from moladapt.data.featurize import get_featurizer
from moladapt.models.encoders import build_encoder
from moladapt.pretrain import OBJECTIVES, build_objective
from moladapt.pretrain.objectives.context_prediction import extract_substruct_context
from moladapt.pretrain.objectives.graphcl import edge_drop, node_drop, subgraph

N_MOLS = 64


@pytest.fixture(scope="module")
def data(bbbp_slice):
    return bbbp_slice(N_MOLS)


def _encoder(feat, seed=0):
    torch.manual_seed(seed)
    return build_encoder("gin", feat.atom_vocab_sizes, feat.bond_vocab_sizes,
                         hidden_dim=32, num_layers=2, dropout=0.0)


OPTIONS = {
    "attribute_masking": {"mask_edges": True},
    "supervised": {"num_tasks": 1},
    "graphcl": {"augmentations": ("node_drop", "subgraph")},
}


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_loss_decreases_and_reaches_encoder(data, name):
    feat, graphs, y = data
    encoder = _encoder(feat)
    obj = build_objective(name, feat, encoder, **OPTIONS.get(name, {}))
    batch = graphs.collate(np.arange(len(graphs)), y)
    # One fixed corruption, so the loss curve is not noise from resampling.
    transformed = obj.transform(batch, torch.Generator().manual_seed(0))
    params = list(encoder.parameters()) + list(obj.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for step in range(20):
        loss = obj.loss(encoder, transformed)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            grad = encoder.atom_encoder.embeddings[0].weight.grad
            assert grad is not None and grad.abs().sum() > 0
            head_grads = [p.grad for p in obj.parameters()]
            assert all(g is not None for g in head_grads)
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0] * 0.9, losses


def test_objective_forward_uses_generator_reproducibly(data):
    feat, graphs, _ = data
    obj = build_objective("attribute_masking", feat, _encoder(feat))
    batch = graphs.collate(np.arange(16))
    a = obj.transform(batch, torch.Generator().manual_seed(3))
    b = obj.transform(batch, torch.Generator().manual_seed(3))
    assert torch.equal(a.atom_index, b.atom_index)


def test_attribute_masking_never_leaks(data):
    feat, graphs, _ = data
    obj = build_objective("attribute_masking", feat, _encoder(feat), mask_edges=True)
    batch = graphs.collate(np.arange(32))
    x_before, ea_before = batch.x.clone(), batch.edge_attr.clone()
    t = obj.transform(batch, torch.Generator().manual_seed(1))
    # the input batch is untouched
    assert torch.equal(batch.x, x_before) and torch.equal(batch.edge_attr, ea_before)
    masked = torch.zeros(batch.num_nodes, dtype=torch.bool)
    masked[t.atom_index] = True
    # counts per graph as pretrain-gnns: int(n * 0.15 + 1)
    sizes = torch.bincount(batch.batch)
    per_graph = torch.bincount(batch.batch[t.atom_index], minlength=batch.num_graphs)
    assert torch.equal(per_graph, (sizes * 0.15 + 1).long())
    x = t.batch.x
    assert (x[masked, 0] == feat.atom_mask_index).all()
    assert (x[masked, 1:] == 0).all()
    assert torch.equal(x[~masked], x_before[~masked])
    assert torch.equal(t.atom_target, x_before[t.atom_index, 0])
    assert (t.atom_target != feat.atom_mask_index).all()
    # bonds: every edge touching a masked atom is MASK in the input, target holds the type
    src, dst = batch.edge_index
    touched = masked[src] | masked[dst]
    assert touched.any()
    ea = t.batch.edge_attr
    assert (ea[touched, 0] == feat.bond_mask_index).all() and (ea[touched, 1:] == 0).all()
    assert torch.equal(ea[~touched], ea_before[~touched])
    u, v = t.bond_pairs
    assert t.bond_pairs.shape[1] * 2 == int(touched.sum())
    lookup = {(int(a), int(b)): int(c) for a, b, c in zip(src, dst, ea_before[:, 0], strict=True)}
    assert [lookup[(int(a), int(b))] for a, b in zip(u, v, strict=True)] == t.bond_target.tolist()


def _bfs(edge_index: torch.Tensor, n: int, source: int) -> dict[int, int]:
    adj: dict[int, list[int]] = {i: [] for i in range(n)}
    for a, b in edge_index.t().tolist():
        adj[a].append(b)
    dist = {source: 0}
    queue = deque([source])
    while queue:
        a = queue.popleft()
        for b in adj[a]:
            if b not in dist:
                dist[b] = dist[a] + 1
                queue.append(b)
    return dist


def test_context_prediction_sets_match_bfs():
    feat = get_featurizer("basic")
    # a long chain with a ring and a branch; "CC" has no context for K=2 and is skipped
    smiles = ["CCOC(=O)c1ccc(NCCCl)cc1CC(C)C", "CC", "OCCN1CCN(CC1)c1ncccc1"]
    graphs = feat.featurize(smiles)
    batch = graphs.collate([0, 1, 2])
    ptr = [0, *np.cumsum(np.diff(graphs.node_ptr)).tolist()]
    k, r1, r2 = 2, 1, 4
    centers = torch.tensor([ptr[0] + 3, ptr[1] + 0, ptr[2] + 5])
    out = extract_substruct_context(batch, centers, k, r1, r2)
    assert out.substruct.num_graphs == 2 and out.context.num_graphs == 2
    sub_nodes, ctx_nodes = [], []
    for g in (0, 2):
        dist = _bfs(batch.edge_index, batch.num_nodes, int(centers[g]))
        sub_nodes += sorted(a for a, d in dist.items() if d <= k)
        ctx_nodes += sorted(a for a, d in dist.items() if r1 < d <= r2)
    assert sorted(out.substruct_mask.nonzero().squeeze(1).tolist()) == sorted(sub_nodes)
    assert sorted(out.context_mask.nonzero().squeeze(1).tolist()) == sorted(ctx_nodes)
    # the cut graphs carry exactly those atoms and their bonds
    assert torch.equal(out.substruct.x, batch.x[sorted(sub_nodes)])
    assert torch.equal(out.context.x, batch.x[sorted(ctx_nodes)])
    sub_set = set(sub_nodes)
    n_sub_edges = sum(a in sub_set and b in sub_set for a, b in batch.edge_index.t().tolist())
    assert out.substruct.edge_index.shape[1] == n_sub_edges
    # centers and anchors (context ∩ substructure = atoms at distance 2)
    assert torch.equal(out.substruct.x[out.center], batch.x[centers[[0, 2]]])
    ctx_sorted = sorted(ctx_nodes)
    anchors = sorted(ctx_sorted[i] for i in out.anchor.tolist())
    assert anchors == sorted(set(ctx_nodes) & sub_set)
    assert out.anchor_graph.tolist() == sorted(out.anchor_graph.tolist())


def test_graphcl_augmentations(data):
    feat, graphs, _ = data
    batch = graphs.collate(np.arange(16))
    gen = torch.Generator().manual_seed(0)
    sizes = torch.bincount(batch.batch)
    dropped = node_drop(batch, 0.2, gen)
    assert torch.equal(torch.bincount(dropped.batch, minlength=16), sizes - (sizes * 0.2).long())
    sub = subgraph(batch, 0.2, gen)
    kept = torch.bincount(sub.batch, minlength=16)
    assert (kept >= 1).all() and (kept <= torch.ceil(sizes * 0.8).long()).all()
    # a BFS-grown subgraph is connected
    for g in range(16):
        nodes = (sub.batch == g).nonzero().squeeze(1)
        reach = _bfs(sub.edge_index, sub.num_nodes, int(nodes[0]))
        assert set(reach) == set(nodes.tolist())
    ed = edge_drop(batch, 0.3, gen)
    pairs = {tuple(p) for p in ed.edge_index.t().tolist()}
    assert all((b, a) in pairs for a, b in pairs)
    assert ed.edge_index.shape[1] < batch.edge_index.shape[1]


def test_supervised_needs_labels(data):
    feat, graphs, _ = data
    obj = build_objective("supervised", feat, _encoder(feat), num_tasks=1)
    with pytest.raises(ValueError, match="labels"):
        obj.transform(graphs.collate([0, 1]), torch.Generator())


def test_infomax_and_graphcl_tolerate_tiny_batches(data):
    feat, graphs, _ = data
    enc = _encoder(feat)
    two = graphs.collate([0, 1])
    for name in ("infomax", "graphcl"):
        obj = build_objective(name, feat, enc)
        single = graphs.collate([0])
        enc.eval()
        assert obj(enc, single, torch.Generator()).item() == 0.0
        enc.train()
        assert obj(enc, two, torch.Generator().manual_seed(0)).requires_grad


def test_edge_prediction_scores_are_dot_products_scaled_by_sqrt_dim(data):
    feat, graphs, _ = data
    encoder = _encoder(feat).eval()
    batch = graphs.collate(np.arange(8))
    pairs = build_objective("edge_prediction", feat, encoder).transform(batch, torch.Generator().manual_seed(0))
    h = encoder.node_embeddings(batch)

    def expected(scale: float) -> torch.Tensor:
        pos = (h[pairs.positive[0]] * h[pairs.positive[1]]).sum(-1) / scale
        neg = (h[pairs.negative[0]] * h[pairs.negative[1]]).sum(-1) / scale
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        return bce(pos, torch.ones_like(pos)) + bce(neg, torch.zeros_like(neg))

    scaled = build_objective("edge_prediction", feat, encoder)
    plain = build_objective("edge_prediction", feat, encoder, scale_by_sqrt_dim=False)
    assert scaled.hparams == {"scale_by_sqrt_dim": True}
    torch.testing.assert_close(scaled.loss(encoder, pairs), expected(32**0.5))
    torch.testing.assert_close(plain.loss(encoder, pairs), expected(1.0))  # pretrain-gnns


def test_objective_options_are_parsed_checked_and_named():
    from moladapt.pretrain.objectives import (
        objective_option_names,
        parse_objective_options,
        with_options,
    )

    assert objective_option_names("attrmask") == ["mask_rate", "mask_edges"]
    assert objective_option_names("supervised") == []  # num_tasks comes from the labels
    used = ["attribute_masking", "graphcl", "edge_prediction"]
    options = parse_objective_options(
        ["attrmask.mask_rate=0.25", "graphcl.augmentations=[node_drop, edge_perturb]",
         "edgepred.scale_by_sqrt_dim=false", "graphcl.aug_ratio=0.1"], used)
    assert options == {"attribute_masking": {"mask_rate": 0.25},
                       "edge_prediction": {"scale_by_sqrt_dim": False},
                       "graphcl": {"aug_ratio": 0.1, "augmentations": ["node_drop", "edge_perturb"]}}
    # a mapping (a config file's) reads the same
    assert parse_objective_options({"attrmask": {"mask_rate": 0.25}}, used) == {
        "attribute_masking": {"mask_rate": 0.25}}
    assert parse_objective_options(None, used) == {} and parse_objective_options([], used) == {}
    assert with_options(["attribute_masking", "infomax"], options) == [
        ("attribute_masking", {"mask_rate": 0.25}), "infomax"]
    for items, needle in [(["mask_rate=0.2"], "objective.option=value"),
                          (["infomax.x=1"], "'infomax' is not among the objectives in use"),
                          (["attribute_masking.rate=0.2"], "its options are: mask_rate, mask_edges")]:
        with pytest.raises(ValueError, match=needle):
            parse_objective_options(items, used)


def test_objective_options_reach_the_built_objective(data):
    from moladapt.pretrain.objectives import parse_objective_options

    feat, _, _ = data
    enc = _encoder(feat)
    options = parse_objective_options(["attribute_masking.mask_rate=0.5"], ["attribute_masking"])
    obj = build_objective("attribute_masking", feat, enc, **options["attribute_masking"])
    assert obj.hparams["mask_rate"] == 0.5
    with pytest.raises(ValueError, match="mask_rate"):
        build_objective("attribute_masking", feat, enc, mask_rate=1.5)  # the objective's own check


def test_an_earlier_recipe_is_named_by_version_and_rebuilt_by_its_options():
    from moladapt.pretrain.objectives import changed_recipes, recipe_options

    # edge prediction's recipe 2 scales scores by 1/sqrt(d); recipe 1 is pretrain-gnns' dot product
    assert recipe_options("edge_prediction", 2) == {}
    assert recipe_options("edge_prediction", 1) == {"scale_by_sqrt_dim": False}
    assert recipe_options("attribute_masking", 1) == {}
    with pytest.raises(ValueError, match="no recipe 3"):
        recipe_options("edge_prediction", 3)
    names = ["attribute_masking", "edge_prediction"]
    assert changed_recipes(names) == {"edge_prediction": 2}
    assert changed_recipes(names, {"edge_prediction": 1}) == {}  # pinned: pools with recipe-1 results
    with pytest.raises(ValueError, match="not among"):
        changed_recipes(names, {"infomax": 1})
    feat = get_featurizer("basic")
    enc = build_encoder("gin", feat.atom_vocab_sizes, feat.bond_vocab_sizes, hidden_dim=8, num_layers=1)
    assert not build_objective("edge_prediction", feat, enc, **recipe_options("edge_prediction", 1)).scale_by_sqrt_dim


def test_context_prediction_skips_a_batch_whose_context_is_one_atom():
    """A cyclobutane and a helium atom (the last batch of a small corpus): the only context ring
    is a single atom, which batch norm in training mode cannot normalise."""
    feat = get_featurizer("basic")
    graphs = feat.featurize(["C1CCC1", "[He]"])
    enc = _encoder(feat)
    obj = build_objective("context_prediction", feat, enc)
    obj.train()
    enc.train()
    for seed in range(6):
        loss = obj(enc, graphs.collate([0, 1]), torch.Generator().manual_seed(seed))
        assert torch.isfinite(loss)
