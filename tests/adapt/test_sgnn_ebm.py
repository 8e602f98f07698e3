"""SGNN-EBM: NCE on a known pairwise model, inference vs exact enumeration, end-to-end on Tox21."""

import numpy as np
import pytest
import torch

from moladapt.adapt.multitask_baselines import BalancedMultiTaskTrainer, per_task_loss
from moladapt.adapt.sgnn_ebm import (
    SGNNEBM,
    bernoulli_log_prob,
    exact_marginals,
    gibbs_marginals,
    log_potential,
    mean_field_marginals,
    nce_loss,
)
from moladapt.config import ModelConfig, TrainConfig
from moladapt.data.sources import load_dataset
from moladapt.data.splits import make_split
from moladapt.evaluate.metrics import classification_metrics
from moladapt.training import build_model, prepare

torch.set_num_threads(1)

EDGES4 = torch.tensor([[0, 1], [1, 2], [2, 3], [0, 3]])


def _ising(j: float) -> torch.Tensor:
    return torch.tensor([j, 0.0, 0.0, j])  # ψ(a, b) = j if a == b; effective coupling 2j


def _coupling(pw: torch.Tensor) -> torch.Tensor:
    return pw[..., 0] + pw[..., 3] - pw[..., 1] - pw[..., 2]


def test_log_potential_matches_hand_computation():
    y = torch.tensor([[1.0, 0.0, 1.0]])
    unary = torch.tensor([[0.5, -1.0, 2.0]])
    pw = torch.arange(8.0).reshape(2, 4)
    edges = torch.tensor([[0, 1], [1, 2]])
    # unary 0.5 + 2.0; ψ_01(1, 0) = pw[0, 2] = 2; ψ_12(0, 1) = pw[1, 1] = 5
    assert log_potential(y, unary, pw, edges, coupling=0.5).item() == pytest.approx(2.5 + 0.5 * 7)


def test_nce_learns_sign_of_known_coupling():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    edges = torch.tensor([[0, 1], [1, 2]])
    u_true = torch.tensor([[0.2, -0.3, 0.1]])
    pw_true = torch.stack([_ising(1.0), _ising(-1.0)])
    grid = torch.tensor([[(k >> i) & 1 for i in range(3)] for k in range(8)], dtype=torch.float32)
    p = torch.softmax(log_potential(grid, u_true, pw_true, edges), -1).squeeze(0)
    data = grid[torch.multinomial(p, 4000, replacement=True, generator=gen)]
    noise_logits = torch.logit(data.mean(0))  # independent marginals: what an SGNN would give
    unary = torch.nn.Parameter(noise_logits.clone())
    pw = torch.nn.Parameter(torch.zeros(2, 4))
    c = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.Adam([unary, pw, c], lr=0.05)

    def log_ratio(yy):
        return log_potential(yy, unary, pw, edges) - c - bernoulli_log_prob(yy, noise_logits)

    def noise(n):
        return (torch.rand(4, n, 3, generator=gen) < torch.sigmoid(noise_logits)).float()

    for _ in range(200):
        loss, _ = nce_loss(log_ratio(data), log_ratio(noise(len(data))))
        opt.zero_grad()
        loss.backward()
        opt.step()
    learned = _coupling(pw.detach())
    assert learned[0] > 0 and learned[1] < 0  # the right signs ...
    np.testing.assert_allclose(learned.numpy(), [2.0, -2.0], atol=0.6)  # ... and sizes
    with torch.no_grad():
        fresh = grid[torch.multinomial(p, 2000, replacement=True, generator=gen)]
        # one noise sample per data point: equal priors, so chance accuracy is 0.5
        loss, acc = nce_loss(log_ratio(fresh), log_ratio(noise(2000))[:1])
        loss0, _ = nce_loss(torch.zeros(2000), torch.zeros(1, 2000))
    assert acc > 0.55 and loss < loss0  # the classifier prefers data over noise


def test_inference_matches_exact_enumeration():
    torch.manual_seed(0)
    unary = torch.randn(3, 4) * 0.7
    strong = torch.randn(3, 4, 4)
    exact = exact_marginals(unary, strong, EDGES4)
    gen = torch.Generator().manual_seed(1)
    n_chains, n_samples = 8, 1500
    gibbs = gibbs_marginals(unary, strong, EDGES4, burn_in=30, n_samples=n_samples,
                            n_chains=n_chains, generator=gen)
    # Rao-Blackwellised average of (correlated) sweeps: a generous 5 MC standard errors
    se = 0.5 / np.sqrt(n_chains * n_samples / 4)
    assert (gibbs - exact).abs().max() < 5 * se
    weak = strong * 0.1
    mf = mean_field_marginals(unary, weak, EDGES4, n_iter=50)
    assert (mf - exact_marginals(unary, weak, EDGES4)).abs().max() < 0.01
    # no edges: every method is exact
    none = torch.zeros((0, 2), dtype=torch.long)
    np.testing.assert_allclose(mean_field_marginals(unary, None, none), torch.sigmoid(unary))
    np.testing.assert_allclose(exact_marginals(unary, None, none), torch.sigmoid(unary), atol=1e-6)


@pytest.fixture(scope="module")
def tox21_slice():
    import os
    from pathlib import Path

    if not (Path(os.environ["MOLADAPT_DATA_DIR"]) / "tox21.csv").exists():
        pytest.skip("tox21.csv not found (set MOLADAPT_DATA_DIR)")
    data = load_dataset("tox21")
    rows = np.arange(500)
    data.smiles = [data.smiles[i] for i in rows]
    data.labels, data.rows = data.labels[rows], data.rows[rows]
    prepared = prepare(data, "basic", use_cache=False)
    split = make_split("random", prepared.graphs.smiles, prepared.y, (0.7, 0.1, 0.2), seed=0)
    return prepared, split


def test_ebm_stage_that_never_helps_on_validation_keeps_the_sgnn(tox21_slice, monkeypatch):
    """Early stopping in the EBM stage may stop at its start: then the predictions are exactly
    the stage-1 SGNN's probabilities (the EBM starts with zero pairwise terms and normaliser)."""
    from types import SimpleNamespace

    prepared, split = tox21_slice
    model = SGNNEBM(hidden_dim=16, num_layers=2, dropout=0.0, task_emb_dim=8, edge_hidden_dim=4,
                    graph_threshold=0.1, graph_min_common=5, sgnn_epochs=1, ebm_epochs=2,
                    batch_size=64, n_noise=2, ebm_lr=0.05, seed=0)
    real_score = SGNNEBM.score

    def score(self, graphs, y, idx, task_names=None):
        if self._stage == "ebm":  # the start scores best, every EBM epoch worse
            return SimpleNamespace(primary=0.9 if len(self.history_["ebm"]) == 0 else 0.5)
        return real_score(self, graphs, y, idx, task_names)

    monkeypatch.setattr(SGNNEBM, "score", score)
    model.fit(prepared.graphs, prepared.y, split.train, split.valid)
    assert [h["epoch"] for h in model.history_["ebm"]] == [-1, 0, 1]
    assert model.best_epoch_["ebm"] == -1
    proba = model.predict_proba(prepared.graphs, split.test)
    model.noise_net_.eval()
    with torch.no_grad():
        batch = prepared.graphs.collate(split.test)
        sgnn = torch.sigmoid(model.noise_net_(batch, pairwise=False)["unary"]).numpy()
    np.testing.assert_allclose(proba, sgnn, atol=1e-6)


def test_sgnn_ebm_end_to_end_on_tox21(tox21_slice):
    prepared, split = tox21_slice
    names = list(prepared.data.task_names)
    model = SGNNEBM(hidden_dim=32, num_layers=2, dropout=0.1, task_emb_dim=16, edge_hidden_dim=8,
                    graph_threshold=0.1, graph_min_common=5, sgnn_epochs=2, ebm_epochs=1,
                    batch_size=64, n_noise=2, seed=0)
    model.fit(prepared.graphs, prepared.y, split.train, split.valid, task_names=names)
    assert model.task_graph_.num_edges > 0
    assert len(model.history_["sgnn"]) == 2
    assert [h["epoch"] for h in model.history_["ebm"]] == [-1, 0]  # the start is a candidate
    assert 0.0 <= model.history_["ebm"][1]["nce_accuracy"] <= 1.0
    proba = model.predict_proba(prepared.graphs, split.test)
    assert proba.shape == (len(split.test), 12)
    assert np.isfinite(proba).all() and (proba >= 0).all() and (proba <= 1).all()
    report = classification_metrics(prepared.y[split.test], proba, names)
    assert np.isfinite(report.primary)
    model.inference = "gibbs"
    model.gibbs_burn_in, model.gibbs_samples, model.gibbs_chains = 2, 3, 2
    gp = model.predict_proba(prepared.graphs, split.test[:20])
    assert np.isfinite(gp).all() and (np.abs(gp - proba[:20]) < 0.5).all()


def test_the_ebm_starts_equal_to_its_noise_distribution(tox21_slice):
    """At the start of NCE the EBM is the stage-1 SGNN (zero pairwise terms, c(x) = 0), so
    log p − log q = 0 and the loss is NCE's chance value −log σ(−log ν) − ν log σ(log ν).
    Without the unary normaliser Σ softplus(l_t) the ratio was ≈ Σ softplus(l_t) (~9 here)."""
    import math

    prepared, split = tox21_slice
    model = SGNNEBM(hidden_dim=32, num_layers=2, dropout=0.0, task_emb_dim=16, edge_hidden_dim=8,
                    graph_threshold=0.1, graph_min_common=5, sgnn_epochs=1, ebm_epochs=0,
                    batch_size=64, n_noise=2, seed=0)
    model.fit(prepared.graphs, prepared.y, split.train, split.valid, task_names=list(prepared.data.task_names))
    model.net_.eval()  # the frozen noise copy predicts in eval mode; compare like with like
    batch = prepared.graphs.collate(split.train[:64], prepared.y)
    loss, _ = model._ebm_step(batch)
    nu = 2
    chance = -math.log(1 / (1 + nu)) - nu * math.log(nu / (1 + nu))
    assert float(loss) == pytest.approx(chance, abs=1e-4)


def test_sgnn_without_ebm_and_gibbs_noise(tox21_slice):
    prepared, split = tox21_slice
    train = split.train[:150]
    plain = SGNNEBM(hidden_dim=16, num_layers=2, use_ebm=False, sgnn_epochs=1, batch_size=64,
                    graph_threshold=0.1, graph_min_common=5)
    p = plain.fit(prepared.graphs, prepared.y, train).predict_proba(prepared.graphs, split.test)
    assert plain.noise_net_ is None and np.isfinite(p).all()
    gibbs = SGNNEBM(hidden_dim=16, num_layers=2, noise="gibbs", noise_gibbs_sweeps=1,
                    sgnn_epochs=1, ebm_epochs=1, batch_size=64, graph_threshold=0.1,
                    graph_min_common=5, head="bilinear")
    q = gibbs.fit(prepared.graphs, prepared.y, train).predict_proba(prepared.graphs, split.test)
    assert np.isfinite(q).all() and ((q >= 0) & (q <= 1)).all()


def test_per_task_loss_masks_missing():
    out = torch.zeros(2, 2)
    y = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    losses, present = per_task_loss(out, y)
    assert present.tolist() == [True, False]
    assert losses[0].item() == pytest.approx(np.log(2)) and losses[1].item() == 0


@pytest.mark.parametrize("method,grad_norm_of", [("uncertainty", "weight"), ("gradnorm", "weight"),
                                                ("gradnorm", "representation")])
def test_loss_balancing_baselines_run(tox21_slice, method, grad_norm_of):
    prepared, split = tox21_slice
    model = build_model(ModelConfig(hidden_dim=16, num_layers=2, dropout=0.0), prepared.featurizer, 12)
    cfg = TrainConfig(epochs=1, batch_size=64, seed=0)
    trainer = BalancedMultiTaskTrainer(model, "classification", cfg, method=method, alpha=1.5,
                                       weight_lr=0.05, grad_norm_of=grad_norm_of)
    trainer.fit(prepared.graphs, prepared.y, split.train[:200], split.valid)
    if method == "uncertainty":
        assert trainer.log_vars_.shape == (12,) and np.abs(trainer.log_vars_).sum() > 0
    else:
        w = trainer.task_weights_
        assert w.shape == (12,) and w.sum() == pytest.approx(12, rel=1e-4)
        assert not np.allclose(w, 1.0)
    proba = trainer.predict(prepared.graphs, split.test)
    assert np.isfinite(proba).all()


def test_gradnorm_batched_representation_norms_match_a_per_task_loop(tox21_slice):
    """The one batched backward of grad_norm_of="representation" gives each task's own gradient
    norm on the embedding, so the weights' first update equals a hand loop's."""
    prepared, split = tox21_slice
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_dim=16, num_layers=2, dropout=0.0), prepared.featurizer, 12)
    batch = prepared.graphs.collate(split.train[:64], prepared.y)
    z = model.encoder(batch)
    losses, present = per_task_loss(model.head(z), batch.y)
    idx = torch.nonzero(present).flatten().tolist()
    loop = torch.stack([torch.autograd.grad(losses[k], z, retain_graph=True)[0].norm() for k in idx])
    cfg = TrainConfig(epochs=1, batch_size=64, seed=0)
    trainer = BalancedMultiTaskTrainer(model, "classification", cfg, method="gradnorm",
                                       grad_norm_of="representation")
    weights = torch.ones(12, requires_grad=True)
    initial = losses.detach().clone()
    initial[~present] = float("nan")
    captured = {}

    class Capture(torch.optim.SGD):
        def step(self, closure=None):
            captured["grad"] = weights.grad.clone()
            return super().step(closure)

    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    trainer._gradnorm_step(losses, present, weights, initial, z, opt, Capture([weights], lr=0.0))
    r = torch.ones(len(idx))  # L_t / L_t(0) = 1 on the first batch
    expected = torch.zeros(12)
    expected[idx] = torch.sign(loop - loop.mean() * r) * loop
    assert torch.allclose(captured["grad"], expected, atol=1e-5)
    with pytest.raises(ValueError, match="grad_norm_of"):
        BalancedMultiTaskTrainer(model, "classification", cfg, method="gradnorm", grad_norm_of="x")


@pytest.mark.parametrize("encoder, name", [("gin", "encoder.gnns.1.mlp.2.weight"),
                                           ("gcn", "encoder.gnns.1.linear.weight"),
                                           ("gat", "encoder.gnns.1.lin.weight")])
def test_gradnorm_measures_the_last_shared_linear_layer(encoder, name):
    """Not the last conv's bond-embedding table, which is registered after its MLP."""
    from moladapt.adapt.multitask_baselines import last_shared_weight
    from moladapt.data.featurize import get_featurizer

    model = build_model(ModelConfig(encoder=encoder, hidden_dim=16, num_layers=2), get_featurizer("basic"), 3)
    weight = last_shared_weight(model)
    assert [n for n, p in model.named_parameters() if p is weight] == [name]
