"""Bi-level task weighting (moladapt.adapt.bilevel): hypergradients and learned weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moladapt.adapt.bilevel import (
    BiLevelTaskWeighting,
    CallableProblem,
    exact_hypergradient,
    logits_from_weights,
    neumann_hypergradient,
    unrolled_hypergradient,
    weights_from_logits,
)
from moladapt.config import ModelConfig
from moladapt.data.sources import load_dataset
from moladapt.training import build_model, prepare

torch.set_num_threads(1)

DT = torch.float64


def quadratic_problem(theta0=(0.0, 0.0)):
    """Target ½‖θ - a_train‖² with noisy a_train; validation ½‖θ - a‖²;
    helpful source ½‖θ - a‖² (the true optimum), harmful ½‖θ - b‖² (pulls along the noise)."""
    a = torch.tensor([1.0, -1.0], dtype=DT)
    a_train = a + torch.tensor([1.0, 0.5], dtype=DT)
    b = a + torch.tensor([3.0, 1.0], dtype=DT)
    theta = torch.tensor(theta0, dtype=DT, requires_grad=True)

    def sq(c):
        return 0.5 * ((theta - c) ** 2).sum()

    problem = CallableProblem(
        [theta], lambda: torch.stack([sq(a_train), sq(a), sq(b)]), lambda: sq(a),
        task_names=["target", "helpful", "harmful"],
    )
    return problem, theta


def test_weight_parameterisations_round_trip():
    w = torch.tensor([0.2, 0.7], dtype=DT)
    assert torch.allclose(weights_from_logits(logits_from_weights(w)), w)
    s = torch.tensor([0.1, 0.3, 0.6], dtype=DT)
    assert torch.allclose(weights_from_logits(logits_from_weights(s, "softmax"), "softmax"), s)
    with pytest.raises(ValueError):
        weights_from_logits(w, "relu")


@pytest.mark.parametrize("weighting", ["sigmoid", "softmax"])
@pytest.mark.parametrize("method", ["neumann", "unrolled", "exact"])
def test_helpful_source_up_harmful_down(weighting, method):
    problem, _ = quadratic_problem()
    blo = BiLevelTaskWeighting(weighting=weighting, hypergradient=method, outer_steps=15,
                               inner_steps=10, inner_lr=0.1, outer_lr=0.2,
                               inner_optimizer="sgd", neumann_alpha=0.2, neumann_terms=20)
    blo.fit_problem(problem)
    hist = blo.weights_history_
    assert hist.shape == (16, 2)
    assert hist[-1, 0] > hist[0, 0] + 0.1, hist  # helpful goes up
    assert hist[-1, 1] < hist[0, 1] - 0.1, hist  # harmful goes down
    assert np.all((hist >= 0) & (hist <= 1))
    if weighting == "softmax":
        assert np.allclose(hist.sum(axis=1), 1.0)  # the simplex constraint holds throughout
    assert set(blo.weights_) == {"helpful", "harmful"}
    assert blo.valid_loss_history_[-1] < blo.valid_loss_history_[0]


def test_blo_with_rcgrad_keeps_weights_in_unit_interval():
    problem, _ = quadratic_problem()
    blo = BiLevelTaskWeighting(combiner="rcgrad", outer_steps=10, inner_steps=5, inner_lr=0.1,
                               outer_lr=0.2, inner_optimizer="sgd", neumann_alpha=0.2,
                               neumann_terms=20)
    blo.fit_problem(problem)
    hist = blo.weights_history_
    assert np.all((hist >= 0) & (hist <= 1))
    assert hist[-1, 0] > hist[0, 0]  # the helpful task still gains weight
    assert len(blo.gradient_log_) == 50
    assert set(blo.gradient_log_.summary()["tasks"]) == {"helpful", "harmful"}


def test_neumann_sign_matches_unrolled_on_quadratic():
    problem, _ = quadratic_problem(theta0=(1.5, -0.5))
    w = torch.tensor([0.5, 0.5], dtype=DT)
    neumann = neumann_hypergradient(problem, w, alpha=0.2, terms=30)
    unrolled = unrolled_hypergradient(problem, w, lr=0.1)
    exact = exact_hypergradient(problem, w)
    assert torch.equal(torch.sign(neumann), torch.sign(unrolled))
    assert neumann[0] < 0 < neumann[1]
    assert torch.allclose(neumann, exact, rtol=1e-3)


def test_exact_hypergradient_refuses_a_large_model_and_names_the_alternatives():
    problem, _ = quadratic_problem(theta0=(1.5, -0.5))
    w = torch.tensor([0.5, 0.5], dtype=DT)
    with pytest.raises(ValueError, match=r"at most 1 of them; this model has 2: use 'neumann'"):
        exact_hypergradient(problem, w, max_params=1)


def logistic_problem(seed: int = 0):
    """Convex tiny model: a shared linear map and one bias per task (task-specific),
    BCE + ½λ‖θ‖², target + two sources, float64."""
    gen = torch.Generator().manual_seed(seed)
    n, dim = 40, 3
    xs = [torch.randn(n, dim, generator=gen, dtype=DT) for _ in range(3)]
    true = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    ys = [(x @ (true + 0.5 * k * torch.randn(dim, generator=gen, dtype=DT)) > 0).to(DT)
          for k, x in enumerate(xs)]
    xv = torch.randn(n, dim, generator=gen, dtype=DT)
    yv = (xv @ true > 0).to(DT)
    shared = torch.zeros(dim, dtype=DT, requires_grad=True)
    bias = torch.zeros(3, dtype=DT, requires_grad=True)
    lam = 0.1

    def train():
        reg = 0.5 * lam * (shared.pow(2).sum() + bias.pow(2).sum())
        return torch.stack([
            F.binary_cross_entropy_with_logits(x @ shared + bias[k], y) + reg / 3
            for k, (x, y) in enumerate(zip(xs, ys, strict=True))
        ])

    def valid():
        return F.binary_cross_entropy_with_logits(xv @ shared + bias[0], yv)

    return CallableProblem([shared], train, valid, task_parameters=[bias]), shared, bias


def test_neumann_matches_exact_implicit_hypergradient_float64():
    problem, shared, bias = logistic_problem()
    with torch.no_grad():  # a point near the inner optimum, as after the inner loop
        shared.copy_(torch.tensor([0.8, -1.5, 0.4], dtype=DT))
        bias.copy_(torch.tensor([0.1, -0.1, 0.05], dtype=DT))
    w = torch.tensor([0.7, 0.3], dtype=DT)
    exact = exact_hypergradient(problem, w)
    # eigenvalues of H lie in (0, 2/α): the series converges to H⁻¹ v
    neumann = neumann_hypergradient(problem, w, alpha=0.5, terms=400)
    assert torch.allclose(neumann, exact, rtol=1e-6, atol=1e-10), (neumann, exact)
    few = neumann_hypergradient(problem, w, alpha=0.5, terms=3)
    assert torch.equal(torch.sign(few), torch.sign(exact))
    # the exact hypergradient agrees with finite differences of L_V(θ*(w))
    def solved_valid(wv):
        with torch.no_grad():
            shared.zero_(), bias.zero_()
        opt = torch.optim.LBFGS([shared, bias], lr=1, max_iter=200, tolerance_grad=1e-12,
                                tolerance_change=1e-14, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = (torch.cat([torch.ones(1, dtype=DT), wv]) * problem.train_losses()).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return float(problem.valid_loss().detach())

    solved_valid(w)
    at_opt = exact_hypergradient(problem, w)
    eps = 1e-5
    for i in range(2):
        e = torch.zeros(2, dtype=DT)
        e[i] = eps
        fd = (solved_valid(w + e) - solved_valid(w - e)) / (2 * eps)
        assert abs(fd - float(at_opt[i])) < 1e-5 * max(1.0, abs(fd)), (i, fd, at_opt)


SMALL = ModelConfig(encoder="gin", hidden_dim=32, num_layers=2, dropout=0.0)


@pytest.fixture(scope="module")
def tox21_slice():
    data = load_dataset("tox21")
    target = data.task_names.index("SR-ARE")
    rows = np.flatnonzero(~np.isnan(data.labels[:, target]))
    rows = np.sort(np.random.default_rng(0).choice(rows, size=160, replace=False))
    data.smiles = [data.smiles[i] for i in rows]
    data.labels, data.rows = data.labels[rows], data.rows[rows]
    return prepare(data, "basic", use_cache=False), target


def test_blo_on_tox21_slice_with_supervised_sources(tox21_slice, data_dir):
    prepared, target = tox21_slice
    names = prepared.data.task_names
    sources = [names.index("NR-AhR"), names.index("SR-MMP")]
    torch.manual_seed(0)
    model = build_model(SMALL, prepared.featurizer, 1)
    n = len(prepared.graphs)
    train, valid = np.arange(0, n - 40), np.arange(n - 40, n)
    blo = BiLevelTaskWeighting(source_tasks=sources, target=target, outer_steps=2, inner_steps=2,
                               batch_size=32, inner_lr=1e-3, outer_lr=0.5)
    blo.fit(model, prepared.graphs, prepared.y, train, valid, column_names=names)
    assert blo.task_names_ == ["SR-ARE", "NR-AhR", "SR-MMP"]
    assert blo.weights_history_.shape == (3, 2)
    assert np.all(np.isfinite(blo.hypergradient_history_))
    assert not np.allclose(blo.weights_history_[0], blo.weights_history_[-1])
    assert len(blo.valid_metric_history_) == 2 and np.all(np.isfinite(blo.valid_loss_history_))
    assert len(blo.embedding_spread_) == 3 and min(blo.embedding_spread_) > 0.01 and blo.collapsed_ is None
    proba = blo.predict(prepared.graphs, valid)
    assert proba.shape == (40, 1) and np.all((proba >= 0) & (proba <= 1))


def test_blo_rcgrad_with_aux_objective_and_source(tox21_slice, data_dir):
    prepared, target = tox21_slice
    torch.manual_seed(0)
    model = build_model(SMALL, prepared.featurizer, 1)
    n = len(prepared.graphs)
    blo = BiLevelTaskWeighting(source_tasks=[0], aux_objectives=("attribute_masking",),
                               target=target, weighting="softmax", combiner="rcgrad",
                               hypergradient="unrolled", outer_steps=2, inner_steps=1,
                               batch_size=32)
    blo.fit(model, prepared.graphs, prepared.y, np.arange(n - 40), np.arange(n - 40, n))
    assert blo.task_names_[1:] == ["col0", "attribute_masking"]
    assert np.allclose(blo.weights_history_.sum(axis=1), 1.0)
    assert len(blo.gradient_log_) == 2


@pytest.mark.parametrize("combiner", ["rcgrad", "pcgrad"])
def test_combiner_sees_every_shared_column(combiner):
    """The combiner gets all P_shared gradient columns (not the first len(params) scalars):
    the unrolled hypergradient equals autograd through θ - η·combiner(G, (1, w))."""
    from moladapt.adapt.gradients import build_combiner

    # θ = (3, 0): the harmful source conflicts with the target on the full 2-d gradient
    problem, theta = quadratic_problem(theta0=(3.0, 0.0))
    comb, lr = build_combiner(combiner), 0.1
    w = torch.tensor([0.6, 0.4], dtype=DT)
    got = unrolled_hypergradient(problem, w, lr, combiner=comb)

    losses = problem.train_losses()
    grads = torch.stack([torch.autograd.grad(loss, theta, retain_graph=True)[0] for loss in losses])
    wr = w.clone().requires_grad_(True)
    d = comb(grads, target=0, weights=torch.cat([torch.ones(1, dtype=DT), wr])).direction
    a = torch.tensor([1.0, -1.0], dtype=DT)
    valid = 0.5 * ((theta.detach() - lr * d - a) ** 2).sum()
    (want,) = torch.autograd.grad(valid, wr)
    assert torch.allclose(got, want, atol=1e-12), (got, want)


def test_patience_stops_after_outer_steps_without_improvement(tox21_slice, data_dir):
    """Validation ROC-AUC 0.7 at step 0, then worse: patience 2 stops after step 2 and keeps step 0."""
    from types import SimpleNamespace

    prepared, target = tox21_slice
    torch.manual_seed(0)
    model = build_model(SMALL, prepared.featurizer, 1)
    n = len(prepared.graphs)
    blo = BiLevelTaskWeighting(source_tasks=[0], target=target, outer_steps=10, inner_steps=1,
                               batch_size=32, patience=2)
    scores = iter([0.7, 0.6, 0.65, 0.9, 0.9])
    blo.score = lambda *args, **kwargs: SimpleNamespace(primary=next(scores))
    blo.fit(model, prepared.graphs, prepared.y, np.arange(n - 40), np.arange(n - 40, n))
    assert blo.valid_metric_history_ == [0.7, 0.6, 0.65] and blo.best_step_ == 0
    assert len(blo.valid_loss_history_) == 3 and blo.weights_history_.shape == (4, 1)
