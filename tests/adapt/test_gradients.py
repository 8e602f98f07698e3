"""Gradient combiners (sum, gcs, gns, pcgrad, rcgrad) and per-task gradients."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from moladapt.adapt.gradients import (
    COMBINERS,
    CombineResult,
    GradientLog,
    assign_direction,
    build_combiner,
    per_task_gradients,
    per_task_gradients_func,
)

T = torch.tensor


def close(a: torch.Tensor, b, atol: float = 1e-6) -> bool:
    return torch.allclose(a, torch.as_tensor(b, dtype=a.dtype), atol=atol)


# 2-D rows: target, then an aligned, an orthogonal, an opposite and a zero auxiliary gradient.
G = T([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [-4.0, 0.0], [0.0, 0.0]])


def test_contract_fields() -> None:
    res = COMBINERS.get("sum")()(G)
    assert isinstance(res, CombineResult)
    assert close(res.cosines, [1, 1, 0, -1, 0])
    assert res.conflicting.tolist() == [False, False, False, True, False]
    assert res.coefficients[0] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.direction = torch.zeros(2)  # type: ignore[misc]


def test_sum_and_weights() -> None:
    assert close(build_combiner("sum")(G).direction, [-1.0, 3.0])
    w = T([5.0, 0.5, 1.0, 0.0, 1.0])  # weights[target] is ignored
    res = build_combiner("sum")(G, weights=w)
    assert close(res.direction, [2.0, 3.0])
    assert close(res.coefficients, [1.0, 0.5, 1.0, 0.0, 1.0])


def test_gcs_drops_opposite_and_orthogonal() -> None:
    res = build_combiner("gcs")(G)
    assert close(res.direction, [3.0, 0.0])  # g_t + 1 * aligned
    assert close(res.coefficients, [1, 1, 0, 0, 0])
    # partial alignment: cos = 1/sqrt(2) scales the auxiliary gradient
    res = build_combiner("gcs")(T([[1.0, 0.0], [1.0, 1.0]]))
    assert close(res.direction, [1 + 1 / math.sqrt(2), 1 / math.sqrt(2)])
    unweighted = build_combiner("gcs", weighted=False)(T([[1.0, 0.0], [1.0, 1.0], [-1.0, 1.0]]))
    assert close(unweighted.direction, [2.0, 1.0])


def test_gns_caps_norms() -> None:
    res = build_combiner("gns")(G)
    # aligned |2| -> 1, orthogonal |3| -> 1, opposite |4| -> 1, zero stays (scale 1)
    assert close(res.coefficients, [1, 0.5, 1 / 3, 0.25, 1])
    assert close(res.direction, [1 + 1 - 1, 1.0])
    small = build_combiner("gns")(T([[3.0, 4.0], [0.3, 0.0]]))  # smaller aux: untouched
    assert close(small.direction, [3.3, 4.0])
    g = torch.randn(6, 50) * torch.tensor([1.0, 10, 0.1, 5, 100, 1])[:, None]
    res = build_combiner("gns")(g)
    scaled = res.coefficients[:, None] * g
    assert (scaled[1:].norm(dim=1) <= g[0].norm() * (1 + 1e-5)).all()


def test_pcgrad_projects_only_conflicting() -> None:
    res = build_combiner("pcgrad")(G)
    # opposite (-4, 0) projects to 0; aligned and orthogonal unchanged
    assert close(res.direction, [3.0, 3.0])
    res = build_combiner("pcgrad")(T([[1.0, 0.0], [-1.0, 1.0]]))
    assert close(res.direction, [1.0, 1.0])


def test_pcgrad_never_conflicts_with_target() -> None:
    gen = torch.Generator().manual_seed(0)
    comb = build_combiner("pcgrad")
    for _ in range(20):
        g = torch.randn(5, 7, generator=gen)
        res = comb(g, target=2)
        # every projected auxiliary row has g_i'.g_t >= 0, so d.g_t >= |g_t|^2
        assert res.direction @ g[2] >= g[2] @ g[2] - 1e-4
    # symmetric (Yu et al.): for two tasks the update conflicts with neither
    sym = build_combiner("pcgrad", symmetric=True, seed=3)
    for _ in range(20):
        g = torch.randn(2, 7, generator=gen)
        d = sym(g).direction
        assert d @ g[0] >= -1e-5 and d @ g[1] >= -1e-5


def test_pcgrad_symmetric_matches_yu_for_two_tasks() -> None:
    g = T([[1.0, 0.0], [-1.0, 1.0]])
    res = build_combiner("pcgrad", symmetric=True)(g)
    # g1' = g1 - (g1.g2/|g2|^2) g2 = (0.5, 0.5); g2' = (0, 1)
    assert close(res.direction, [0.5, 1.5])


def test_pcgrad_symmetric_seeded() -> None:
    g = torch.randn(4, 9, generator=torch.Generator().manual_seed(1))
    a, b = build_combiner("pcgrad", symmetric=True, seed=7), build_combiner("pcgrad", symmetric=True, seed=7)
    assert torch.equal(a(g).direction, b(g).direction)
    first = a(g).direction
    a.reseed()
    assert torch.equal(a(g).direction, b.__class__(symmetric=True, seed=7)(g).direction)
    assert first.shape == (9,)


def test_rcgrad_default_and_zero_weights() -> None:
    g = T([[1.0, 0.0], [-2.0, 2.0], [0.5, 0.0]])
    projected_conflicting = T([0.0, 2.0])  # (-2, 2) without its component along g_t
    s1, s2 = 1 / math.sqrt(8), 1.0  # GNS scales (original norms)
    res = build_combiner("rcgrad")(g)
    c1, c2 = (s1 + 1) / 2, (s2 + 1) / 2
    assert close(res.coefficients, [1.0, c1, c2])
    assert close(res.direction, g[0] + c1 * projected_conflicting + c2 * g[2])
    res0 = build_combiner("rcgrad")(g, weights=T([1.0, 0.0, 0.0]))
    assert close(res0.coefficients, [1.0, s1 / 2, s2 / 2])
    assert close(res0.direction, g[0] + s1 / 2 * projected_conflicting + s2 / 2 * g[2])
    assert res0.direction @ g[0] >= g[0] @ g[0] - 1e-6
    with pytest.raises(ValueError):
        build_combiner("rcgrad")(g, weights=T([1.0, 1.5, 0.0]))


def test_weights_are_validated_and_differentiable() -> None:
    with pytest.raises(ValueError):
        build_combiner("sum")(G, weights=T([1.0, -1.0, 1, 1, 1]))
    with pytest.raises(ValueError):
        build_combiner("sum")(G, weights=T([1.0, 1.0]))
    w = torch.full((3,), 0.5, requires_grad=True)
    g = T([[1.0, 0.0], [-2.0, 2.0], [0.5, 0.0]])
    build_combiner("rcgrad")(g, weights=w).direction.sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


@pytest.mark.parametrize("name", COMBINERS.names())
def test_conformance(name: str) -> None:
    comb = build_combiner(name)
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(4, 11, generator=gen)
    before = g.clone()
    for target in (0, 2):
        res = comb(g, target=target)
        assert res.direction.shape == (11,)
        assert res.coefficients.shape == res.cosines.shape == res.conflicting.shape == (4,)
        assert res.conflicting.dtype == torch.bool
        assert torch.isfinite(res.direction).all() and torch.isfinite(res.coefficients).all()
        assert res.cosines[target] == 1 and res.coefficients[target] == 1
        assert not res.conflicting[target]
        assert torch.equal(res.conflicting, (res.cosines < 0))
    assert torch.equal(g, before)  # inputs untouched
    # target-only input returns g_t
    assert torch.equal(comb(g[:1]).direction, g[0])
    # zero gradients everywhere / zero target / zero auxiliary: finite
    for z in (torch.zeros(3, 5), torch.cat([torch.zeros(1, 5), torch.ones(2, 5)]),
              torch.cat([torch.ones(1, 5), torch.zeros(2, 5)])):
        res = comb(z)
        assert torch.isfinite(res.direction).all() and torch.isfinite(res.cosines).all()
        assert not res.conflicting.any()
    assert torch.equal(comb(torch.cat([torch.ones(1, 5), torch.zeros(2, 5)])).direction,
                       torch.ones(5))
    # an aligned auxiliary gradient of the target's norm: everyone adds it with c in (0, 1]
    aligned = torch.stack([g[0], g[0]])
    res = comb(aligned)
    assert close(res.cosines, [1, 1]) and 0 < res.coefficients[1] <= 1


def test_3d_orthogonal_aligned_opposite() -> None:
    g = T([[1.0, 1.0, 0.0], [0.0, 0.0, 2.0], [1.0, 1.0, 0.0], [-1.0, -1.0, 1.0]])
    # cosines: orthogonal 0, aligned 1, opposite-ish -2/(sqrt2*sqrt3)
    expected = {
        "sum": [1.0, 1.0, 3.0],
        "gcs": [2.0, 2.0, 0.0],
        # scales: orthogonal sqrt2/2, aligned 1, opposite sqrt(2/3)
        "gns": [2 - math.sqrt(2 / 3), 2 - math.sqrt(2 / 3), math.sqrt(2) + math.sqrt(2 / 3)],
        "pcgrad": [2.0, 2.0, 3.0],  # (-1,-1,1) -> (0,0,1)
    }
    for name, want in expected.items():
        assert close(build_combiner(name)(g).direction, want, atol=1e-5), name


def test_gradient_log() -> None:
    log = GradientLog(target=0, task_names=["t", "a", "b"])
    comb = build_combiner("gcs")
    log.update(comb(T([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])))
    log.update(comb(T([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])))
    s = log.summary()
    assert s["steps"] == 2 and s["target"] == "t" and set(s["tasks"]) == {"a", "b"}
    assert s["tasks"]["a"]["conflict_fraction"] == 0.5
    assert s["tasks"]["b"]["conflict_fraction"] == 0.5
    assert s["tasks"]["a"]["mean_cosine"] == 0.0
    assert log.cosines().shape == (2, 3)
    assert GradientLog().summary()["steps"] == 0


def test_assign_direction() -> None:
    params = [torch.zeros(2, 3, requires_grad=True), torch.zeros(4, requires_grad=True)]
    assign_direction(params, torch.arange(10.0))
    assert torch.equal(params[0].grad, torch.arange(6.0).view(2, 3))
    assign_direction(params, torch.ones(10), accumulate=True)
    assert torch.equal(params[1].grad, torch.arange(6.0, 10.0) + 1)
    with pytest.raises(ValueError):
        assign_direction(params, torch.ones(9))


@pytest.fixture(scope="module")
def tiny_batch(data_dir):
    from moladapt.data.featurize import get_featurizer

    df = pd.read_csv(data_dir / "BBBP.csv").head(8)
    feat = get_featurizer("basic")
    graphs = feat.featurize(df["smiles"].tolist())
    rng = np.random.default_rng(0)
    y = np.stack([df["p_np"].to_numpy()[graphs.source_rows],
                  rng.integers(0, 2, len(graphs)), rng.integers(0, 2, len(graphs))], 1)
    return feat, graphs.collate(np.arange(len(graphs)), y.astype(np.float32))


def _model(feat):
    from moladapt.models.encoders import build_encoder
    from moladapt.models.heads import MolecularModel, PredictionHead

    torch.manual_seed(0)
    enc = build_encoder("gin", feat.atom_vocab_sizes, feat.bond_vocab_sizes,
                        hidden_dim=16, num_layers=2, dropout=0.0)
    return MolecularModel(enc, PredictionHead(enc.out_dim, 3)).train()


def _losses(out, y):
    # = moladapt.training.masked_loss per column (no NaN labels here); importing training
    # would pull in scikit-learn and add seconds to this test.
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    return [bce(out[:, k], y[:, k]) for k in range(3)]


def test_per_task_gradients_match_separate_backward(tiny_batch) -> None:
    feat, batch = tiny_batch
    model = _model(feat)
    shared = list(model.encoder.parameters())
    grads = per_task_gradients(shared, _losses(model(batch), batch.y))
    assert grads.shape == (3, sum(p.numel() for p in shared))
    for k in range(3):
        model.zero_grad(set_to_none=True)
        _losses(model(batch), batch.y)[k].backward()
        ref = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1)
                         for p in shared])
        assert torch.allclose(grads[k], ref, atol=1e-6)
    # torch.func (vmap over tasks) gives the same rows
    names = [f"encoder.{n}" for n, _ in model.encoder.named_parameters()]
    func = per_task_gradients_func(model, lambda out: torch.stack(_losses(out, batch.y)), batch,
                                   param_names=names)
    assert torch.allclose(func, grads, atol=1e-5)
    # a combined step: the direction lands in .grad of the shared parameters
    model.zero_grad(set_to_none=True)
    direction = build_combiner("rcgrad")(grads).direction
    assign_direction(shared, direction)
    assert torch.equal(torch.cat([p.grad.reshape(-1) for p in shared]), direction)


def test_a_non_finite_gradient_row_is_refused_not_spread():
    import pytest

    from moladapt.adapt.gradients import build_combiner

    grads = torch.tensor([[1.0, 0.0], [float("nan"), 1.0], [0.5, 0.5]])
    for name in ("sum", "gcs", "gns", "pcgrad", "rcgrad"):
        with pytest.raises(FloatingPointError, match=r"task row\(s\) \[1\]"):
            build_combiner(name)(grads, target=0)
