"""SGNN-EBM: structured multi-task learning over a task-relation graph.

Liu, Yang, Oh, Cheng, Xu, Tang, Bengio, "Structured Multi-task Learning for Molecular
Property Prediction", AISTATS 2022 (github.com/chao1224/SGNN-EBM).

**SGNN** (state graph neural network). A GIN encoder (:func:`build_encoder`) embeds molecule
``x`` as ``h(x)``, projected to ``m(x) = W h(x)`` of width ``d``. Task embeddings come from a
2-layer GCN over the task graph, starting from learnable embeddings ``z^0``:
``z^{l+1} = Â ReLU?(z^l W_l)`` with ``Â = D^-1/2 (A + I) D^-1/2`` (dense: T ≤ a few thousand).
Per-task logits ``l_t(x) = MLP(m(x) ⊙ z_t) + b_t`` (``head="mlp"``) or
``<m(x), z_t> + b_t`` (``head="bilinear"``, ``m`` being a linear map of ``h``). For each
graph edge (i, j), a pairwise potential table ``ψ_ij(x) ∈ R^4`` over the label pairs
``(y_i, y_j) ∈ {00, 01, 10, 11}`` (index ``2 y_i + y_j``) comes from
``Linear(ReLU(A (m ⊙ z_i) + B (m ⊙ z_j)))``; its output layer starts at zero.

**EBM** over the label vector ``y ∈ {0,1}^T``::

    E(y | x) = - Σ_t u_t(y_t) - λ Σ_{(i,j)∈E} ψ_ij(y_i, y_j),   u_t(1) = l_t(x), u_t(0) = 0
    log p(y | x) = -E(y | x) - Σ_t softplus(l_t(x)) - c(x)

with ``Σ_t softplus(l_t)`` the normaliser of the unary part (so that without pairwise terms
``p`` is the product of the SGNN's Bernoullis) and ``c(x)`` a learned correction for the
pairwise part (a linear map of ``h(x)``, as NCE requires). Both depend on ``x`` only, so the
marginals are those of ``-E``.

**Training** (two stages, as the paper):

1. The SGNN unary logits are trained with masked BCE (missing labels contribute nothing).
2. A frozen copy of the stage-1 SGNN is the noise distribution
   ``q(y | x) = Π_t Bernoulli(σ(l_t(x)))``. The EBM (initialised from the stage-1 SGNN, so
   at the start ``log p - log q = -c(x) = 0``) is trained by logistic NCE (Gutmann &
   Hyvärinen 2010): ``G(y) = log p(y|x) - log q(y|x) - log ν`` and
   ``loss = -log σ(G(y)) - Σ_{k≤ν} log σ(-G(y'_k))`` with ``ν = n_noise`` noise vectors
   ``y'_k`` per molecule. ``noise="bernoulli"`` draws ``y' ~ q`` (exact NCE);
   ``noise="gibbs"`` additionally runs ``noise_gibbs_sweeps`` block-Gibbs sweeps of the
   current (detached) EBM from those draws, which gives harder negatives but an approximate
   ``log p_noise`` (``log q(y')`` is still used; the reference's ``NCE_mode=gs``).
   **Missing labels** of a data vector are filled with a fresh sample from the stage-1 SGNN
   marginals at every step (the paper's choice, ``filling_missing_data_mode=gnn``).

**Inference**: marginals ``p(y_t = 1 | x)`` by damped mean-field (default, ``mf_iters``
synchronous updates ``q_t ← σ(u_t + λ Σ_j E_{q_j}[Δψ])`` from ``q = σ(l)``) or by
Gibbs sampling (graph-colour block updates, ``gibbs_chains`` chains, ``gibbs_burn_in`` sweeps,
then ``gibbs_samples`` sweeps averaged with Rao-Blackwellisation). :func:`exact_marginals`
enumerates all ``2^T`` label vectors (small T only; used by the tests).

``use_ebm=False`` gives "SGNN without the EBM": stage 1 only, predictions ``σ(l_t)``.
When no task graph is given, :meth:`SGNNEBM.fit` builds one from label co-activity on the
training rows only (:meth:`TaskGraph.from_coactivity`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moladapt.data.featurize import Featurizer, get_featurizer
from moladapt.data.task_graph import TaskGraph
from moladapt.evaluate.metrics import MetricReport, classification_metrics
from moladapt.models.encoders import Encoder, build_encoder
from moladapt.training import masked_loss
from moladapt.types import GraphBatch, MolGraphs
from moladapt.utils import adam

__all__ = [
    "SGNNEBM",
    "SGNNEBMNet",
    "bernoulli_log_prob",
    "exact_marginals",
    "gibbs_marginals",
    "gibbs_sweeps",
    "local_fields",
    "log_potential",
    "mean_field_marginals",
    "nce_loss",
]


# ---------------------------------------------------------------------------------------
# Pairwise binary MRF primitives. Shapes: labels/marginals ``[..., T]``; unary ``[..., T]``
# (the logit of y_t = 1); pairwise ``[..., E, 4]`` indexed by 2*y_i + y_j; edges ``[E, 2]``.
# ---------------------------------------------------------------------------------------


def log_potential(y: Tensor, unary: Tensor, pairwise: Tensor | None, edges: Tensor,
                  coupling: float = 1.0) -> Tensor:
    """``-E(y|x) = Σ_t y_t u_t + λ Σ_e ψ_e(y_i, y_j)`` for 0/1 ``y`` ``[..., T]`` → ``[...]``."""
    out = (unary * y).sum(-1)
    if pairwise is None or edges.numel() == 0:
        return out
    idx = (2 * y[..., edges[:, 0]] + y[..., edges[:, 1]]).long()  # [..., E]
    shape = torch.broadcast_shapes(idx.shape, pairwise.shape[:-1])
    pw = pairwise.expand(*shape, 4)
    picked = pw.gather(-1, idx.expand(shape).unsqueeze(-1)).squeeze(-1)
    return out + coupling * picked.sum(-1)


def local_fields(s: Tensor, unary: Tensor, pairwise: Tensor | None, edges: Tensor,
                 coupling: float = 1.0) -> Tensor:
    """Conditional logits ``h_t = u_t + λ Σ_{j~t} [ψ(y_t=1, s_j) - ψ(y_t=0, s_j)]``.

    With 0/1 states ``s`` this is ``logit p(y_t = 1 | y_-t)`` (Gibbs); with marginals ``s`` in
    [0, 1] it is the mean-field update (the field is linear in each ``s_j``).
    """
    shape = torch.broadcast_shapes(s.shape, unary.shape)
    if pairwise is None or edges.numel() == 0:
        return unary.expand(shape)
    ei, ej = edges[:, 0], edges[:, 1]
    si, sj = s[..., ei], s[..., ej]
    p0, p1, p2, p3 = pairwise.unbind(-1)
    f_i = (1 - sj) * (p2 - p0) + sj * (p3 - p1)  # field on i from j
    f_j = (1 - si) * (p1 - p0) + si * (p3 - p2)  # field on j from i
    batch_shape = torch.broadcast_shapes(f_i.shape, f_j.shape)
    msg = torch.zeros(*batch_shape[:-1], shape[-1], dtype=f_i.dtype, device=f_i.device)
    msg = msg.index_add(-1, ei, f_i.expand(batch_shape)).index_add(-1, ej, f_j.expand(batch_shape))
    return unary + coupling * msg


def mean_field_marginals(unary: Tensor, pairwise: Tensor | None, edges: Tensor,
                         coupling: float = 1.0, n_iter: int = 20, damping: float = 0.5) -> Tensor:
    """Damped synchronous mean-field marginals ``q_t ≈ p(y_t = 1)``, started at ``σ(u)``."""
    q = torch.sigmoid(unary)
    for _ in range(n_iter):
        q_new = torch.sigmoid(local_fields(q, unary, pairwise, edges, coupling))
        q = damping * q + (1 - damping) * q_new
    return q


def _color_masks(edges: Tensor, num_tasks: int) -> list[Tensor]:
    names = tuple(str(i) for i in range(num_tasks))
    colors = TaskGraph(names, edges.cpu().numpy(), np.ones(len(edges))).coloring()
    return [torch.from_numpy(colors == c).to(edges.device) for c in range(int(colors.max(initial=0)) + 1)]


def _rand(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniforms shaped like ``like`` (drawn on the generator's device, then moved)."""
    dev = generator.device if generator is not None else like.device
    return torch.rand(like.shape, generator=generator, dtype=like.dtype, device=dev).to(like.device)


def gibbs_sweeps(y: Tensor, unary: Tensor, pairwise: Tensor | None, edges: Tensor,
                 coupling: float = 1.0, n_sweeps: int = 1, color_masks: list[Tensor] | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
    """Run ``n_sweeps`` block-Gibbs sweeps from 0/1 states ``y`` ``[..., T]`` (colour by colour)."""
    masks = color_masks if color_masks is not None else _color_masks(edges, y.shape[-1])
    y = y.clone()
    for _ in range(n_sweeps):
        for mask in masks:
            p = torch.sigmoid(local_fields(y, unary, pairwise, edges, coupling))
            draw = (_rand(p, generator) < p).to(y.dtype)
            y = torch.where(mask, draw, y)
    return y


def gibbs_marginals(unary: Tensor, pairwise: Tensor | None, edges: Tensor, coupling: float = 1.0,
                    burn_in: int = 20, n_samples: int = 50, n_chains: int = 4,
                    generator: torch.Generator | None = None) -> Tensor:
    """Marginals by block Gibbs: ``n_chains`` chains from ``y ~ Bernoulli(σ(u))``, ``burn_in``
    sweeps, then the Rao-Blackwellised average of ``σ(h_t(y_-t))`` over ``n_samples`` sweeps."""
    masks = _color_masks(edges, unary.shape[-1])
    p0 = torch.sigmoid(unary).expand(n_chains, *unary.shape)
    y = (_rand(p0, generator) < p0).to(p0.dtype)
    y = gibbs_sweeps(y, unary, pairwise, edges, coupling, burn_in, masks, generator)
    acc = torch.zeros_like(p0)
    for _ in range(n_samples):
        y = gibbs_sweeps(y, unary, pairwise, edges, coupling, 1, masks, generator)
        acc += torch.sigmoid(local_fields(y, unary, pairwise, edges, coupling))
    return (acc / max(n_samples, 1)).mean(0)


def exact_marginals(unary: Tensor, pairwise: Tensor | None, edges: Tensor,
                    coupling: float = 1.0) -> Tensor:
    """Exact marginals by enumerating all ``2^T`` label vectors (``T <= 20``). ``unary [B, T]``."""
    t = unary.shape[-1]
    if t > 20:
        raise ValueError(f"exact enumeration needs T <= 20, got {t}")
    grid = torch.tensor([[(k >> i) & 1 for i in range(t)] for k in range(2 ** t)],
                        dtype=unary.dtype, device=unary.device)  # [K, T]
    pw = None if pairwise is None else pairwise.unsqueeze(-3)  # [B, 1, E, 4]
    logp = log_potential(grid, unary.unsqueeze(-2), pw, edges, coupling)  # [B, K]
    w = torch.softmax(logp, dim=-1)
    return w @ grid


def bernoulli_log_prob(y: Tensor, logits: Tensor) -> Tensor:
    """``log Π_t Bernoulli(y_t; σ(l_t))`` summed over the last axis."""
    return -F.binary_cross_entropy_with_logits(logits.expand_as(y), y, reduction="none").sum(-1)


def nce_loss(log_ratio_data: Tensor, log_ratio_noise: Tensor) -> tuple[Tensor, Tensor]:
    """Logistic NCE (Gutmann & Hyvärinen 2010) with ``ν = log_ratio_noise.shape[0]`` noise samples.

    ``log_ratio_* = log p_model(y) - log p_noise(y)``: ``[N]`` for the data, ``[ν, N]`` for
    the noise. Returns ``(loss, accuracy)``: the mean over data points of
    ``-log σ(G(y)) - Σ_k log σ(-G(y'_k))`` with ``G = log_ratio - log ν``, and the fraction
    of the ``N (1 + ν)`` samples the classifier ``G > 0`` labels correctly.
    """
    nu = log_ratio_noise.shape[0]
    g_data = log_ratio_data - math.log(nu)
    g_noise = log_ratio_noise - math.log(nu)
    loss = -F.logsigmoid(g_data).mean() - F.logsigmoid(-g_noise).sum(0).mean()
    with torch.no_grad():
        correct = (g_data > 0).float().sum() + (g_noise < 0).float().sum()
        acc = correct / (g_data.numel() + g_noise.numel())
    return loss, acc


# ---------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------


class SGNNEBMNet(nn.Module):
    """Encoder + task GCN + unary head + edge-potential head + log-normaliser (see module doc).

    ``forward(batch, pairwise=True)`` → dict with ``unary [B, T]``, ``pairwise [B, E, 4]``
    (or ``None``) and ``log_norm [B]``.
    """

    def __init__(self, encoder: Encoder, task_graph: TaskGraph, task_emb_dim: int = 64,
                 task_gnn_layers: int = 2, edge_hidden_dim: int = 32, head: str = "mlp") -> None:
        super().__init__()
        if head not in ("mlp", "bilinear"):
            raise ValueError(f"head must be 'mlp' or 'bilinear', got {head!r}")
        t, d = task_graph.num_tasks, int(task_emb_dim)
        self.encoder, self.head_kind, self.num_tasks = encoder, head, t
        self.register_buffer("adj", task_graph.normalized_adjacency())
        self.register_buffer("edges", torch.from_numpy(np.array(task_graph.edges, dtype=np.int64)).reshape(-1, 2))
        self.task_emb = nn.Parameter(torch.randn(t, d) * (1.0 / math.sqrt(d)))
        self.task_gnn = nn.ModuleList(nn.Linear(d, d) for _ in range(task_gnn_layers))
        self.mol_proj = nn.Linear(encoder.out_dim, d)
        self.task_bias = nn.Parameter(torch.zeros(t))
        self.unary_mlp = (nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1))
                          if head == "mlp" else None)
        self.edge_a = nn.Linear(d, edge_hidden_dim)
        self.edge_b = nn.Linear(d, edge_hidden_dim, bias=False)
        self.edge_out = nn.Linear(edge_hidden_dim, 4)
        self.log_norm = nn.Linear(encoder.out_dim, 1)
        for lin in (self.edge_out, self.log_norm):  # the EBM starts as the SGNN
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def task_embeddings(self) -> Tensor:
        z = self.task_emb
        for k, lin in enumerate(self.task_gnn):
            z = self.adj @ lin(z)
            if k < len(self.task_gnn) - 1:
                z = F.relu(z)
        return z

    def forward(self, batch: GraphBatch, pairwise: bool = True) -> dict[str, Tensor | None]:
        h = self.encoder(batch)
        m = self.mol_proj(h)  # [B, d]
        z = self.task_embeddings()  # [T, d]
        a = m.unsqueeze(1) * z.unsqueeze(0)  # [B, T, d]
        if self.unary_mlp is not None:
            unary = self.unary_mlp(a).squeeze(-1) + self.task_bias
        else:
            unary = a.sum(-1) + self.task_bias
        pw = None
        if pairwise and self.edges.numel():
            hid = F.relu(self.edge_a(a)[:, self.edges[:, 0]] + self.edge_b(a)[:, self.edges[:, 1]])
            pw = self.edge_out(hid)  # [B, E, 4]
        return {"unary": unary, "pairwise": pw, "log_norm": self.log_norm(h).squeeze(-1)}


# ---------------------------------------------------------------------------------------
# Estimator
# ---------------------------------------------------------------------------------------


class SGNNEBM:
    """Two-stage SGNN-EBM multi-task classifier (see the module docstring).

    ``fit(graphs, y, train_idx, valid_idx)`` → self; ``predict_proba(graphs, idx)`` → ``[n, T]``
    marginal probabilities. Fitted state ends in ``_``: ``task_graph_``, ``net_`` (the EBM, or
    the SGNN when ``use_ebm=False``), ``noise_net_`` (frozen stage-1 SGNN), ``history_``,
    ``best_epoch_`` (per stage, the epoch kept; -1: the EBM stage's start).
    Model selection: each stage keeps the epoch with the best mean validation ROC-AUC
    (with ``valid_idx``), else the last. The EBM stage's candidates include its starting
    point (the EBM initialised from the stage-1 SGNN, whose mean-field marginals are the
    SGNN's probabilities, logged as epoch -1): NCE fine-tuning that never helps on validation
    leaves the SGNN's predictions, as early stopping at epoch 0 would.
    """

    def __init__(
        self,
        task_graph: TaskGraph | None = None,
        graph_method: str = "jaccard",
        graph_threshold: float = 0.3,
        graph_min_common: int = 20,
        encoder: str = "gin",
        hidden_dim: int = 300,
        num_layers: int = 5,
        dropout: float = 0.5,
        jk: str = "last",
        pooling: str = "mean",
        task_emb_dim: int = 64,
        task_gnn_layers: int = 2,
        edge_hidden_dim: int = 32,
        head: str = "mlp",
        use_ebm: bool = True,
        coupling: float = 1.0,
        noise: str = "bernoulli",
        n_noise: int = 4,
        noise_gibbs_sweeps: int = 2,
        inference: str = "mean_field",
        mf_iters: int = 20,
        mf_damping: float = 0.5,
        gibbs_burn_in: int = 20,
        gibbs_samples: int = 50,
        gibbs_chains: int = 4,
        sgnn_epochs: int = 100,
        ebm_epochs: int = 50,
        batch_size: int = 32,
        lr: float = 1e-3,
        ebm_lr: float | None = None,
        weight_decay: float = 0.0,
        seed: int = 0,
        device: str = "cpu",
        eval_batch_size: int = 256,
    ) -> None:
        if noise not in ("bernoulli", "gibbs"):
            raise ValueError(f"noise must be 'bernoulli' or 'gibbs', got {noise!r}")
        if inference not in ("mean_field", "gibbs"):
            raise ValueError(f"inference must be 'mean_field' or 'gibbs', got {inference!r}")
        if n_noise < 1:
            raise ValueError("n_noise must be >= 1")
        params = dict(locals())
        params.pop("self")
        self._params = params
        for k, v in params.items():
            setattr(self, k, v)

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._params}

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, graphs: MolGraphs, y: np.ndarray, train_idx: np.ndarray,
            valid_idx: np.ndarray | None = None, task_names: Sequence[str] | None = None,
            featurizer: Featurizer | str | None = None) -> SGNNEBM:
        y = np.asarray(y, dtype=np.float32)
        train_idx = np.asarray(train_idx, dtype=np.int64)
        t = y.shape[1]
        names = tuple(task_names) if task_names is not None else (
            self.task_graph.task_names if self.task_graph is not None else tuple(f"task_{i}" for i in range(t)))
        if self.task_graph is not None:
            graph = self.task_graph
            if graph.num_tasks != t:
                raise ValueError(f"task graph has {graph.num_tasks} tasks, labels have {t}")
        else:
            graph = TaskGraph.from_coactivity(y, train_idx, names, self.graph_method,
                                              self.graph_threshold, self.graph_min_common)
        self.task_graph_ = graph
        feat = featurizer if featurizer is not None else graphs.featurizer
        feat = get_featurizer(feat) if isinstance(feat, str) else feat
        torch.manual_seed(self.seed)
        self._rng = np.random.default_rng(self.seed)
        self._gen = torch.Generator(device="cpu").manual_seed(self.seed)
        self._device = torch.device(self.device)
        enc = build_encoder(self.encoder, feat.atom_vocab_sizes, feat.bond_vocab_sizes,
                            hidden_dim=self.hidden_dim, num_layers=self.num_layers,
                            dropout=self.dropout, jk=self.jk, pooling=self.pooling)
        net = SGNNEBMNet(enc, graph, self.task_emb_dim, self.task_gnn_layers,
                         self.edge_hidden_dim, self.head).to(self._device)
        self.history_: dict[str, list[dict[str, float]]] = {"sgnn": [], "ebm": []}
        self.best_epoch_: dict[str, int | None] = {}
        self.net_, self.noise_net_, self._stage = net, None, "sgnn"
        self._color_masks = _color_masks(net.edges, t) if graph.num_edges else []

        # stage 1: SGNN with masked BCE
        opt = adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self._run_stage("sgnn", self.sgnn_epochs, opt, graphs, y, train_idx, valid_idx, self._sgnn_step)
        if not self.use_ebm:
            return self

        # stage 2: EBM by NCE against the frozen SGNN
        self.noise_net_ = copy.deepcopy(net).eval()
        for p in self.noise_net_.parameters():
            p.requires_grad_(False)
        self._stage = "ebm"
        opt = adam(net.parameters(), lr=self.ebm_lr or self.lr, weight_decay=self.weight_decay)
        self._run_stage("ebm", self.ebm_epochs, opt, graphs, y, train_idx, valid_idx, self._ebm_step,
                        include_start=True)
        return self

    def _run_stage(self, stage: str, epochs: int, opt: torch.optim.Optimizer, graphs: MolGraphs,
                   y: np.ndarray, train_idx: np.ndarray, valid_idx: np.ndarray | None, step,
                   include_start: bool = False) -> None:
        net = self.net_
        best, best_state, best_epoch = -math.inf, None, None
        if include_start and valid_idx is not None and len(valid_idx):
            t0 = time.perf_counter()
            score = self.score(graphs, y, valid_idx).primary
            self.history_[stage].append({"epoch": -1, "valid_roc_auc": score,
                                         "seconds": time.perf_counter() - t0})
            if not math.isnan(score):
                best, best_state, best_epoch = score, copy.deepcopy(net.state_dict()), -1
        for epoch in range(epochs):
            t0 = time.perf_counter()
            net.train()
            order = self._rng.permutation(train_idx)
            stats: dict[str, float] = {}
            n_batches = 0
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                if len(idx) < 2 and len(order) > 1:
                    continue  # BatchNorm cannot train on one molecule
                batch = graphs.collate(idx, y).to(self._device)
                loss, extra = step(batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for k, v in {"loss": float(loss.detach()), **extra}.items():
                    stats[k] = stats.get(k, 0.0) + v
                n_batches += 1
            log = {k: v / max(n_batches, 1) for k, v in stats.items()}
            log.update(epoch=epoch, valid_roc_auc=math.nan)
            if valid_idx is not None and len(valid_idx):
                log["valid_roc_auc"] = self.score(graphs, y, valid_idx).primary
            log["seconds"] = time.perf_counter() - t0
            self.history_[stage].append(log)
            score = log["valid_roc_auc"]
            if valid_idx is None or best_state is None or (not math.isnan(score) and score > best):
                best = score if not math.isnan(score) else best
                best_state = copy.deepcopy(net.state_dict())
                best_epoch = epoch
        self.best_epoch_[stage] = best_epoch
        if best_state is not None:
            net.load_state_dict(best_state)

    def _sgnn_step(self, batch: GraphBatch) -> tuple[Tensor, dict[str, float]]:
        out = self.net_(batch, pairwise=False)
        return masked_loss(out["unary"], batch.y, "classification"), {}

    def _ebm_step(self, batch: GraphBatch) -> tuple[Tensor, dict[str, float]]:
        with torch.no_grad():
            q_logits = self.noise_net_(batch, pairwise=False)["unary"]
        out = self.net_(batch)
        unary, pw, log_norm = out["unary"], out["pairwise"], out["log_norm"]
        edges = self.net_.edges
        q = torch.sigmoid(q_logits)
        gen = self._gen
        present = ~torch.isnan(batch.y)
        fill = (_rand(q, gen) < q).to(q.dtype)
        y_data = torch.where(present, torch.nan_to_num(batch.y), fill)
        qn = q.expand(self.n_noise, *q.shape)
        y_noise = (_rand(qn, gen) < qn).to(q.dtype)
        if self.noise == "gibbs" and self.noise_gibbs_sweeps > 0:
            with torch.no_grad():
                y_noise = gibbs_sweeps(y_noise, unary.detach(), None if pw is None else pw.detach(),
                                       edges, self.coupling, self.noise_gibbs_sweeps,
                                       self._color_masks, gen)

        unary_norm = F.softplus(unary).sum(-1)  # the unary part's normaliser (see the module docstring)

        def log_ratio(yy: Tensor) -> Tensor:
            return (log_potential(yy, unary, pw, edges, self.coupling) - unary_norm - log_norm
                    - bernoulli_log_prob(yy, q_logits))

        loss, acc = nce_loss(log_ratio(y_data), log_ratio(y_noise))
        return loss, {"nce_accuracy": float(acc)}

    # -- inference -------------------------------------------------------------------------
    @torch.no_grad()
    def _batch_proba(self, batch: GraphBatch, use_ebm: bool) -> Tensor:
        out = self.net_(batch, pairwise=use_ebm)
        if not use_ebm:
            return torch.sigmoid(out["unary"])
        if self.inference == "gibbs":
            return gibbs_marginals(out["unary"], out["pairwise"], self.net_.edges, self.coupling,
                                   self.gibbs_burn_in, self.gibbs_samples, self.gibbs_chains,
                                   self._gen)
        return mean_field_marginals(out["unary"], out["pairwise"], self.net_.edges, self.coupling,
                                    self.mf_iters, self.mf_damping)

    @torch.no_grad()
    def predict_proba(self, graphs: MolGraphs, idx: np.ndarray | None = None) -> np.ndarray:
        """``[len(idx), T]`` marginals ``p(y_t = 1 | x)`` (SGNN probabilities before stage 2
        or with ``use_ebm=False``)."""
        if not hasattr(self, "net_"):
            raise RuntimeError("call fit() first")
        use_ebm = self._stage == "ebm"
        idx = np.arange(len(graphs)) if idx is None else np.asarray(idx)
        was = self.net_.training
        self.net_.eval()
        outs = [self._batch_proba(graphs.collate(idx[s:s + self.eval_batch_size]).to(self._device), use_ebm)
                .float().cpu().numpy() for s in range(0, len(idx), self.eval_batch_size)]
        self.net_.train(was)
        return np.concatenate(outs) if outs else np.zeros((0, self.task_graph_.num_tasks), np.float32)

    def score(self, graphs: MolGraphs, y: np.ndarray, idx: np.ndarray,
              task_names: Sequence[str] | None = None) -> MetricReport:
        names = list(task_names) if task_names is not None else list(self.task_graph_.task_names)
        return classification_metrics(np.asarray(y)[idx], self.predict_proba(graphs, idx), names)
