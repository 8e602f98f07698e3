"""Meta-learning adapters: MAML/FO-MAML gradients, ANIL, ProtoNet and the Adapter contract.

The finite-difference check runs on a real (tiny) graph model: GIN, 1 layer x 8 dims, with
BatchNorm in train mode, in float64 (second-order terms through BatchNorm's batch statistics
drift in float32).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch_geometric.nn.pool import global_add_pool

from moladapt.adapt import ADAPTERS, TaskFeatureCache
from moladapt.adapt.anil import ANIL
from moladapt.adapt.base import (
    MetaCheckpoint,
    MetaValidation,
    balanced_bce,
    new_head,
    outer_loop,
    support_pos_weight,
)
from moladapt.adapt.maml import inner_adapt, maml_query_loss
from moladapt.adapt.protonet import DISTANCES, ProtoNet, prototype_logits
from moladapt.data.episodes import EpisodeSampler
from moladapt.data.featurize import get_featurizer
from moladapt.evaluate.metrics import classification_metrics
from moladapt.models.encoders import build_encoder
from moladapt.models.fingerprint import FingerprintFusionEncoder
from moladapt.models.heads import MolecularModel, PredictionHead

FEAT = get_featurizer("basic")
SMILES = [
    "CCO", "c1ccccc1", "CC(=O)O", "CCN", "CCCl", "c1ccncc1", "OCC(O)CO", "CC(C)C",
    "C1CCCCC1", "CC=O", "NC(=O)N", "c1ccc(O)cc1", "CCOC(=O)C", "CS(=O)C", "C#N", "CCBr",
]
TINY = dict(meta_steps=2, meta_batch_size=2, inner_steps=1, steps=3, train_k=8, query_size=16)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The test machine's cores are shared: intra-op threads only add contention here.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def graphs():
    return FEAT.featurize(SMILES)


def _tiny_model(dtype=torch.float64, encoder: str = "gin") -> MolecularModel:
    torch.manual_seed(0)
    enc = build_encoder(encoder, FEAT.atom_vocab_sizes, FEAT.bond_vocab_sizes,
                        hidden_dim=8, num_layers=1, dropout=0.0)
    if encoder.startswith("fsmol"):  # ReZero starts each block at the identity: make the block count
        with torch.no_grad():
            for block in enc.gnns:
                block.alpha.fill_(0.5)
    return MolecularModel(enc, PredictionHead(8, 1)).to(dtype).train()


def _episode(graphs, dtype=torch.float64):
    y = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1] * 2, dtype=dtype)
    return (graphs.collate(np.arange(8)), y[:8], graphs.collate(np.arange(8, 16)), y[8:])


def _leaves(model):
    return {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}


def _bufs(model):
    return {n: b.clone() for n, b in model.named_buffers()}


STEPS, LR = 2, 0.5


def _meta_grad(model, params, episode, first_order):
    loss = maml_query_loss(model, params, _bufs(model), *episode, STEPS, LR, first_order)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params.values(), grads, strict=True)]


@pytest.mark.parametrize("encoder", ["gin", "fsmol", "fsmol-pna"])
def test_maml_second_order_meta_gradient_matches_finite_differences(graphs, encoder):
    model = _tiny_model(encoder=encoder)
    episode = _episode(graphs)
    params = _leaves(model)
    grads = _meta_grad(model, params, episode, first_order=False)
    fo_grads = _meta_grad(model, params, episode, first_order=True)
    gen = torch.Generator().manual_seed(1)
    eps = 1e-6
    fo_gaps = []
    for _ in range(3):
        direction = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in params.items()}

        def loss_at(sign, direction=direction):
            shifted = {n: (p + sign * eps * direction[n]).detach().requires_grad_(True)
                       for n, p in params.items()}
            # the inner loop needs gradients; its value is the same with or without 2nd order
            return float(maml_query_loss(model, shifted, _bufs(model), *episode, STEPS, LR, True).detach())

        numeric = (loss_at(+1) - loss_at(-1)) / (2 * eps)
        analytic = float(sum((g * direction[n]).sum() for g, n in zip(grads, params, strict=True)))
        first = float(sum((g * direction[n]).sum() for g, n in zip(fo_grads, params, strict=True)))
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8)
        fo_gaps.append(abs(first - numeric) / max(abs(numeric), 1e-3))
    # FO-MAML drops the second-order terms: visibly different here (lr 0.5, 2 steps) along at
    # least one direction, so the check above can tell the two apart
    assert max(fo_gaps) > 1e-3


def test_fomaml_meta_gradient_is_query_gradient_at_adapted_params(graphs):
    model = _tiny_model()
    support, y_s, query, y_q = _episode(graphs)
    params = _leaves(model)
    fo = _meta_grad(model, params, (support, y_s, query, y_q), first_order=True)
    so = _meta_grad(model, params, (support, y_s, query, y_q), first_order=False)

    adapted = inner_adapt(model, params, _bufs(model), support, y_s, STEPS, LR, create_graph=False)
    at = {n: a.detach().requires_grad_(True) for n, a in adapted.items()}
    q_loss = balanced_bce(functional_call(model, (at, _bufs(model)), (query,)), y_q,
                          support_pos_weight(y_s))
    direct = torch.autograd.grad(q_loss, list(at.values()), allow_unused=True)
    for g_fo, g_direct in zip(fo, direct, strict=True):
        expected = torch.zeros_like(g_fo) if g_direct is None else g_direct
        torch.testing.assert_close(g_fo, expected, rtol=1e-10, atol=1e-12)
    diff = sum(float((a - b).abs().sum()) for a, b in zip(fo, so, strict=True))
    assert diff > 1e-4


def test_inner_adapt_is_pure(graphs):
    model = _tiny_model()
    support, y_s, _, _ = _episode(graphs)
    params = _leaves(model)
    before = {n: p.detach().clone() for n, p in params.items()}
    ids = {n: id(p) for n, p in params.items()}
    adapted = inner_adapt(model, params, _bufs(model), support, y_s, 2, 0.1, create_graph=True)
    assert {n: id(p) for n, p in params.items()} == ids
    for n, p in params.items():
        assert torch.equal(p.detach(), before[n])
    assert set(adapted) == set(params)
    assert any(not torch.equal(adapted[n].detach(), before[n]) for n in params)


def test_anil_adapts_only_the_head(graphs):
    torch.manual_seed(0)
    enc = build_encoder("gin", FEAT.atom_vocab_sizes, FEAT.bond_vocab_sizes,
                        hidden_dim=16, num_layers=2, dropout=0.1)
    anil = ANIL(inner_steps=5, inner_lr=0.5)
    init = new_head(enc.out_dim, enc, anil.seed)
    y = np.array([0, 1] * 4, dtype=np.float64)
    predictor = anil.adapt(enc, graphs.subset(np.arange(8)), y)
    adapted = predictor.module
    for (n, a), (_, b) in zip(adapted.encoder.state_dict().items(), enc.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), n
    changed = [not torch.equal(a, b) for a, b in zip(adapted.head.parameters(), init.parameters(),
                                                       strict=True)]
    assert all(changed)


class _AtomCounts(nn.Module):
    """A fixed 'encoder': [number of atoms, number of atoms mod 3] per molecule."""

    out_dim = 2

    def forward(self, batch):
        ones = torch.ones(batch.x.shape[0], 1, dtype=torch.float64)
        n = global_add_pool(ones, batch.batch, batch.num_graphs)
        return torch.cat([n, torch.remainder(n, 3)], dim=1)


@pytest.mark.parametrize("distance", DISTANCES)
def test_protonet_is_perfect_on_separable_embeddings(distance):
    small = ["C" * i for i in range(1, 7)] * 2
    large = ["C" * i for i in range(12, 24)]
    graphs = FEAT.featurize(small + large)
    y = np.array([0] * len(small) + [1] * len(large), dtype=np.float64)
    support = np.array([0, 2, 4, 7, 12, 15, 18, 21])
    query = np.setdiff1d(np.arange(len(y)), support)
    predictor = ProtoNet(distance=distance, meta_steps=0).adapt(
        _AtomCounts(), graphs.subset(support), y[support]
    )
    proba = predictor.predict_proba(graphs.subset(query))
    assert proba.shape == (len(query),)
    assert classification_metrics(y[query], proba).mean["roc_auc"] == 1.0
    assert np.array_equal(proba > 0.5, y[query] == 1)


def test_class_mahalanobis_is_fsmols_per_class_covariance_formula():
    """Against the formula written out with explicit inverses (FS-Mol / Simple CNAPS)."""
    gen = torch.Generator().manual_seed(0)
    z_support = torch.randn(11, 5, generator=gen, dtype=torch.float64)
    y = torch.tensor([1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], dtype=torch.float64)
    z_query = torch.randn(7, 5, generator=gen, dtype=torch.float64)

    def cov(z):
        c = z - z.mean(0)
        return c.T @ c / (len(z) - 1)

    distances = []
    for cls in (0, 1):
        z = z_support[y == cls]
        weight = min(len(z) / (len(z) + 1), 0.1)
        sigma = weight * cov(z) + (1 - weight) * cov(z_support) + 0.1 * torch.eye(5, dtype=torch.float64)
        diff = z_query - z.mean(0)
        distances.append(((diff @ torch.linalg.inv(sigma)) * diff).sum(1))
    expected = distances[0] - distances[1]
    got = prototype_logits(z_support, y, z_query, "class_mahalanobis")
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    # one positive: its class covariance is zero, the task covariance and ridge carry it
    one = prototype_logits(z_support, (torch.arange(11) == 3).double(), z_query, "class_mahalanobis")
    assert torch.isfinite(one).all()


# --- conformance of every registered adapter on real FS-Mol tasks -------------------------


@pytest.fixture(scope="module")
def real_tasks(data_dir):
    from moladapt.data.tasks import load_fsmol_tasks

    if not (data_dir / "fsmol.csv.gz").exists():
        pytest.skip("FS-Mol not found in the data directory")
    tasks = sorted(load_fsmol_tasks("valid", download=False), key=len)[:3]
    return tasks, TaskFeatureCache(FEAT)


def _state(adapter, encoder):
    state = {f"encoder.{k}": v.detach().clone() for k, v in encoder.state_dict().items()}
    head = getattr(adapter, "head_", None)
    if head is not None:
        state.update({f"head.{k}": v.detach().clone() for k, v in head.state_dict().items()})
    return state


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("kind", ["gin", "gin+ecfp", "fsmol"])
@pytest.mark.parametrize("name", ADAPTERS.names())
def test_every_adapter_conforms(name, kind, real_tasks):
    tasks, cache = real_tasks
    torch.manual_seed(0)
    encoder = build_encoder(kind.removesuffix("+ecfp"), FEAT.atom_vocab_sizes,
                            FEAT.bond_vocab_sizes, hidden_dim=16, num_layers=2, dropout=0.1)
    if kind.endswith("+ecfp"):  # FS-Mol's "gnn+ecfp+fc" embedding, small
        encoder = FingerprintFusionEncoder(encoder, n_bits=128, hidden_dims=(32, 16))
    adapter = ADAPTERS.get(name)()
    adapter.set_params(**{k: v for k, v in TINY.items() if k in adapter.get_params()})
    assert adapter.meta_train(encoder, tasks, cache) is adapter

    item = cache(tasks[0])
    episode = EpisodeSampler().sample(item.task, 16, seed=0)
    support, query = item.graphs.subset(episode.support), item.graphs.subset(episode.query)
    before = _state(adapter, encoder)
    predictor = adapter.adapt(encoder, support, item.y[episode.support])
    proba = predictor.predict_proba(query)
    _assert_same(before, _state(adapter, encoder))  # adapt never touches meta-parameters
    assert proba.shape == (len(episode.query),)
    assert np.all(np.isfinite(proba)) and np.all((proba >= 0) & (proba <= 1))
    again = adapter.fit_predict(encoder)(support, item.y[episode.support], query)
    if hasattr(predictor, "decision_function"):  # the protocol ranks by the unsaturated logits
        from scipy.special import expit

        np.testing.assert_allclose(again, predictor.decision_function(query), rtol=1e-6, atol=1e-9)
        again = expit(again)
    np.testing.assert_allclose(again, proba, rtol=1e-6, atol=1e-9)  # same support, same model


# --- model selection on held-out tasks during meta-training -------------------------------


def test_outer_loop_keeps_the_best_validated_state_and_never_a_nan_one():
    torch.manual_seed(0)
    module = nn.Linear(3, 1)
    scores = iter([0.2, 0.5, float("nan"), 0.4, 0.1])  # steps 0, 2, 4, 6 and the last (7)
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def validate() -> float:
        seen[len(seen)] = {k: v.clone() for k, v in module.state_dict().items()}
        return next(scores)

    class _Stream:
        def draw(self, like):
            return torch.randn(4, 3)

    log = outer_loop(list(module.parameters()), _Stream(), lambda x: module(x).pow(2).mean(),
                     steps=7, batch_size=2, lr=0.1, grad_clip=None, like=module,
                     validate=validate, validate_every=2, keep=[module])
    assert len(log.losses) == 7
    assert [step for step, _ in log.validation] == [0, 2, 4, 6, 7]
    assert log.best_step == 2
    for key, value in module.state_dict().items():
        assert torch.equal(value, seen[1][key]), key  # the state scored at step 2
    assert not torch.equal(module.weight, seen[4]["weight"])  # not the last one


@pytest.mark.parametrize("name", ["maml", "anil", "protonet"])
def test_meta_validation_selects_a_state_of_the_same_trajectory(name, real_tasks):
    """Validating changes which state is kept, never the training itself: the losses equal
    an unvalidated run's, and the kept weights equal those of a run stopped at best_step_."""
    tasks, cache = real_tasks
    steps = 4

    def trained(meta_steps, validation=None):
        torch.manual_seed(0)
        encoder = build_encoder("gin", FEAT.atom_vocab_sizes, FEAT.bond_vocab_sizes,
                                hidden_dim=16, num_layers=2, dropout=0.0)
        adapter = ADAPTERS.get(name)()
        adapter.set_params(**{k: v for k, v in TINY.items() if k in adapter.get_params()})
        adapter.set_params(meta_steps=meta_steps)
        adapter.meta_train(encoder, tasks[1:], cache, validation=validation)
        return adapter, encoder

    validation = MetaValidation(tasks[:1], every=1, support_sizes=[16, 32], draws=2)
    validated, validated_encoder = trained(steps, validation)
    plain, _ = trained(steps)
    np.testing.assert_allclose(validated.history_, plain.history_, rtol=1e-6)
    assert [s for s, _ in validated.validation_] == list(range(steps + 1))
    scores = [score for _, score in validated.validation_]
    assert all(np.isfinite(scores))
    best = validated.best_step_
    assert scores[best] == max(scores)
    stopped, stopped_encoder = trained(best)
    _assert_close_states(_state(validated, validated_encoder), _state(stopped, stopped_encoder))
    assert validation.score(validated, validated_encoder, cache) == pytest.approx(scores[best], abs=1e-9)


def _assert_close_states(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("name", ["maml", "anil", "protonet"])
def test_a_killed_meta_training_resumes_on_the_same_trajectory(name, real_tasks, tmp_path):
    tasks, cache = real_tasks
    validation = MetaValidation(tasks[:1], every=2, draws=1)

    def run(steps, checkpoint=None, init_seed=0, **params):
        torch.manual_seed(init_seed)
        encoder = build_encoder("gin", FEAT.atom_vocab_sizes, FEAT.bond_vocab_sizes,
                                hidden_dim=16, num_layers=2, dropout=0.1)
        adapter = ADAPTERS.get(name)()
        adapter.set_params(**{k: v for k, v in TINY.items() if k in adapter.get_params()})
        adapter.set_params(meta_steps=steps, **params)
        adapter.meta_train(encoder, tasks[1:], cache, validation=validation, checkpoint=checkpoint)
        return adapter, encoder

    whole, whole_encoder = run(4)
    checkpoint = MetaCheckpoint(tmp_path / "resume.pt", every=1, identity={"run": "test"})
    run(2, checkpoint)  # stands for a run killed after step 2: its file holds step 2
    resumed, resumed_encoder = run(4, checkpoint, init_seed=1)  # the file's state wins over the init
    np.testing.assert_allclose(resumed.history_, whole.history_, rtol=1e-6)
    assert [s for s, _ in resumed.validation_] == [s for s, _ in whole.validation_] == [0, 2, 4]
    np.testing.assert_allclose([v for _, v in resumed.validation_], [v for _, v in whole.validation_], rtol=1e-6)
    assert resumed.best_step_ == whole.best_step_
    _assert_close_states(_state(resumed, resumed_encoder), _state(whole, whole_encoder))
    with pytest.raises(ValueError, match="another meta-training configuration.*params"):
        run(4, checkpoint, meta_lr=0.5)
    with pytest.raises(ValueError, match="already holds 4 outer steps; asked for 3"):
        run(3, checkpoint)
    (tmp_path / "resume.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable meta-training checkpoint"):
        run(4, checkpoint)


def test_protonet_bf16_meta_training_learns_in_mixed_precision(real_tasks):
    tasks, cache = real_tasks
    torch.manual_seed(0)
    encoder = build_encoder("gin", FEAT.atom_vocab_sizes, FEAT.bond_vocab_sizes, hidden_dim=16,
                            num_layers=2, dropout=0.0)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    adapter = ProtoNet(distance="class_mahalanobis", meta_steps=3, meta_batch_size=2, train_k=8,
                       query_size=16, precision="bf16").meta_train(encoder, tasks, cache)
    assert len(adapter.history_) == 3 and np.all(np.isfinite(adapter.history_))
    assert all(p.dtype == torch.float32 for p in encoder.parameters())  # weights stay float32
    changed = [k for k, v in encoder.state_dict().items() if "weight" in k and not torch.equal(before[k], v)]
    assert len(changed) == sum("weight" in k for k in before)  # every weight got a gradient
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        ProtoNet(meta_steps=1, precision="fp8").meta_train(encoder, tasks, cache)


@pytest.mark.parametrize("adapter", [ProtoNet(), ANIL(inner_steps=1)], ids=["protonet", "anil"])
def test_frozen_encoder_meta_training_embeds_support_and_query_in_one_batch(adapter, real_tasks):
    """Batch norm in train mode must normalise support and query (prototypes and queries, or the
    head's inner-loop and query features) with the same episode statistics: one encoder pass
    per episode over support ∪ query."""
    tasks, cache = real_tasks
    torch.manual_seed(0)
    encoder = build_encoder("gin", FEAT.atom_vocab_sizes, FEAT.bond_vocab_sizes, hidden_dim=16,
                            num_layers=2, dropout=0.0)
    sizes = []
    encoder.register_forward_hook(lambda module, inputs, out: sizes.append(inputs[0].num_graphs))
    adapter.set_params(meta_steps=2, meta_batch_size=2, train_k=8, query_size=16).meta_train(
        encoder, tasks, cache)
    assert len(sizes) == 4 and all(n == 8 + 16 for n in sizes)


def test_mahalanobis_with_one_support_molecule_per_class_is_scale_free():
    """k = 2 leaves no within-class spread; Σ must not collapse to ~1e-6·I (logits ~1e6×)."""
    torch.manual_seed(0)
    z, y, zq = torch.randn(2, 16), torch.tensor([1.0, 0.0]), torch.randn(5, 16)
    logits = prototype_logits(z, y, zq, "mahalanobis")
    torch.testing.assert_close(logits, prototype_logits(z * 0.01, y, zq * 0.01, "mahalanobis"), rtol=1e-4, atol=1e-4)
    assert logits.abs().max() < 100


def test_protonet_scores_keep_their_order_where_probabilities_saturate():
    """Far-apart prototypes give logits beyond ~37, where every probability is exactly 1: the
    score the protocol ranks by (decision_function) keeps the query's order."""
    from moladapt.adapt.protonet import ProtoPredictor

    identity = nn.Identity()
    predictor = ProtoPredictor(identity, torch.tensor([[0.0, 0.0], [100.0, 0.0]], dtype=torch.float64), None)
    z = torch.tensor([[60.0, 0.0], [70.0, 0.0], [80.0, 0.0]], dtype=torch.float64)
    from unittest import mock

    with mock.patch("moladapt.adapt.protonet.embed", return_value=z):
        assert np.all(predictor.predict_proba(None) == 1.0)  # saturated: a three-way tie
        scores = predictor.decision_function(None)
    assert np.all(np.diff(scores) > 0)


@pytest.mark.parametrize("distance", ["mahalanobis", "class_mahalanobis"])
def test_mahalanobis_survives_large_embeddings_where_float32_fails(distance):
    """Embeddings with norms ~1e4 (FS-Mol's summed readout) make float32's rank-deficient
    covariance indefinite by more than the ridge; the metric then falls back to float64."""
    from moladapt.adapt.protonet import _metric, prototype_logits

    gen = torch.Generator().manual_seed(0)
    z = (torch.randn(64, 8, generator=gen) @ torch.randn(8, 512, generator=gen)) * 300 + 1500
    y = torch.tensor([0.0, 1.0] * 32)
    query = z[:10] + torch.randn(10, 512, generator=gen)
    if distance == "class_mahalanobis":  # the case that crashed a meta-training run
        sigma = torch.cov(z.T) + 0.1 * torch.eye(512)  # Σ_c when both classes share the spread
        assert torch.linalg.cholesky_ex(sigma)[1] > 0  # float32 alone fails here
    logits = prototype_logits(z, y, query, distance)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    exact = prototype_logits(z.double(), y.double(), query.double(), distance)
    torch.testing.assert_close(logits.double(), exact, rtol=1e-4, atol=1e-3)
    small = z / 1000  # where float32 suffices the metric stays float32
    assert _metric(small, y, distance, 0.5)[0].dtype == torch.float32
