"""Graph encoders: molecular graph → node embeddings → graph embedding.

The ``gin``, ``gcn``, ``gat`` and ``sage`` encoders follow the architecture of the
pretrain-gnns reference (Hu et al., "Strategies for Pre-training Graph Neural Networks", ICLR
2020; github.com/snap-stanford/pretrain-gnns, ``chem/model.py``) and differ only in their
message-passing layer (``fsmol``, FS-Mol's residual attention GNN, replaces the per-layer
recipe below by its own block, :class:`RelationalAttentionBlock`):

.. math::

    h_v^{(0)} = \\sum_c \\mathrm{Emb}^{atom}_c(x_{v,c})

    \\tilde h_v^{(l)} = \\mathrm{BN}^{(l)}\\big(\\mathrm{Conv}^{(l)}(h^{(l-1)}, E)_v\\big)

    h_v^{(l)} = \\mathrm{Dropout}\\big(\\mathrm{ReLU}(\\tilde h_v^{(l)})\\big)
    \\quad (\\text{no ReLU for } l = L)

Every convolution adds a self-loop to each atom whose bond features are
``(self_loop_index, 0, ..., 0)`` (bond column 0 index ``size - 2``) and embeds bond
features with one table per bond column, summed (a separate table per layer).

The node representation is a jumping-knowledge (JK) combination of the layer outputs
``h^{(1)} .. h^{(L)}``: ``last`` (``h^{(L)}``), ``concat``, elementwise ``max`` or ``sum``.
Unlike the reference, the input embedding ``h^{(0)}`` is not part of the JK combination
(the reference's ``concat`` gives ``(L + 1) * d``; ours gives ``L * d``; ``last``, the
setting all published pretrain-gnns results use, is identical).

Shapes (PyG style): ``x [N, F_atom]``, ``edge_index [2, E]``, ``edge_attr [E, F_bond]``,
``batch [N]`` → ``node_embeddings [N, out_dim]`` → ``forward [B, out_dim]``, where
``out_dim = num_layers * hidden_dim`` for ``jk="concat"`` and ``hidden_dim`` otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.aggr import AttentionalAggregation
from torch_geometric.nn.pool import global_add_pool, global_max_pool, global_mean_pool
from torch_geometric.utils import degree, scatter, softmax

from moladapt.registry import Registry
from moladapt.types import GraphBatch

JK_MODES = ("last", "concat", "max", "sum")
POOLINGS = ("mean", "sum", "max", "attention", "combined")


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout, ``F.dropout``'s distribution, with the mask drawn by ``rand_like``.

    On CPU ``F.dropout`` draws its mask with ``bernoulli_``, one mt19937 call per element:
    7.3 ms for an 800 × 300 activation against 2.7 ms for ``rand_like`` (one thread), which
    made dropout 13% of a GIN 5×300 training step. CUDA keeps the fused kernel.
    """
    if not training or p == 0.0:
        return x
    if x.is_cuda or p >= 1.0:
        return F.dropout(x, p, training=True)
    return x * ((torch.rand_like(x) >= p).to(x.dtype) * (1.0 / (1.0 - p)))

class CategoricalEmbedding(nn.Module):
    """Sum of one embedding table per categorical column (pretrain-gnns / OGB style).

    .. math:: e = \\sum_{c=1}^{C} W_c[\\,\\text{idx}_c\\,]

    Tables are initialised with ``xavier_uniform_`` as in pretrain-gnns.

    Shapes: ``[*, C]`` long → ``[*, dim]``.
    """

    def __init__(self, vocab_sizes: Sequence[int], dim: int) -> None:
        super().__init__()
        if len(vocab_sizes) == 0:
            raise ValueError("need at least one categorical column")
        self.vocab_sizes = tuple(int(s) for s in vocab_sizes)
        self.embeddings = nn.ModuleList(nn.Embedding(s, dim) for s in self.vocab_sizes)
        for emb in self.embeddings:
            nn.init.xavier_uniform_(emb.weight.data)

    def forward(self, idx: Tensor) -> Tensor:
        if idx.shape[-1] != len(self.embeddings):
            raise ValueError(
                f"expected {len(self.embeddings)} feature columns, got {idx.shape[-1]}"
            )
        out = self.embeddings[0](idx[..., 0])
        for c in range(1, len(self.embeddings)):
            out = out + self.embeddings[c](idx[..., c])
        return out


def add_self_loops_with_attr(
    edge_index: Tensor, edge_attr: Tensor, num_nodes: int, self_loop_index: int
) -> tuple[Tensor, Tensor]:
    """Append one self-loop per node, with bond features ``(self_loop_index, 0, ..., 0)``.

    Shapes: ``[2, E]``, ``[E, F_bond]`` → ``[2, E + N]``, ``[E + N, F_bond]`` (self-loops
    last, as ``torch_geometric.utils.add_self_loops`` and the reference order them).
    """
    loop = torch.arange(num_nodes, device=edge_index.device, dtype=edge_index.dtype)
    loop_attr = torch.zeros(
        (num_nodes, edge_attr.shape[1]), device=edge_attr.device, dtype=edge_attr.dtype
    )
    loop_attr[:, 0] = self_loop_index
    return (
        torch.cat([edge_index, torch.stack([loop, loop])], dim=1),
        torch.cat([edge_attr, loop_attr], dim=0),
    )


# --- convolutions ---------------------------------------------------------------------------
# Each takes (x [N, d], edge_index [2, E'], edge_attr [E', F_bond]) with self-loops already
# added (E' = E + N) and returns [N, d]. Bond features are embedded inside each layer.


class GINConv(MessagePassing):
    """GIN layer with edge features (Hu et al. 2020; Xu et al., ICLR 2019).

    .. math::
        h_i' = \\mathrm{MLP}\\Big(\\sum_{j \\in \\mathcal{N}(i) \\cup \\{i\\}}
        h_j + \\mathrm{Emb}^{bond}(e_{ji})\\Big),
        \\quad \\mathrm{MLP} = \\mathrm{Linear}(d, 2d) \\to \\mathrm{ReLU}
        \\to \\mathrm{Linear}(2d, d)
    """

    def __init__(self, dim: int, bond_vocab_sizes: Sequence[int]) -> None:
        super().__init__(aggr="add")
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.edge_encoder = CategoricalEmbedding(bond_vocab_sizes, dim)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        return self.propagate(edge_index, x=x, edge_attr=self.edge_encoder(edge_attr))

    def message(self, x_j: Tensor, edge_attr: Tensor) -> Tensor:
        return x_j + edge_attr

    def update(self, aggr_out: Tensor) -> Tensor:
        return self.mlp(aggr_out)


class GCNConv(MessagePassing):
    """GCN layer with edge features (Kipf & Welling, ICLR 2017; as in pretrain-gnns).

    .. math::
        h_i' = \\sum_{j \\in \\mathcal{N}(i) \\cup \\{i\\}} \\frac{1}{\\sqrt{\\hat d_i \\hat d_j}}
        \\big(W h_j + b + \\mathrm{Emb}^{bond}(e_{ji})\\big)

    with :math:`\\hat d` the degree including the self-loop.
    """

    def __init__(self, dim: int, bond_vocab_sizes: Sequence[int]) -> None:
        super().__init__(aggr="add")
        self.linear = nn.Linear(dim, dim)
        self.edge_encoder = CategoricalEmbedding(bond_vocab_sizes, dim)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        row, col = edge_index
        deg = degree(col, x.shape[0], dtype=x.dtype)
        deg_inv_sqrt = deg.pow(-0.5)
        deg_inv_sqrt[torch.isinf(deg_inv_sqrt)] = 0.0
        norm = deg_inv_sqrt[row] * deg_inv_sqrt[col]
        return self.propagate(
            edge_index, x=self.linear(x), edge_attr=self.edge_encoder(edge_attr), norm=norm
        )

    def message(self, x_j: Tensor, edge_attr: Tensor, norm: Tensor) -> Tensor:
        return norm.view(-1, 1) * (x_j + edge_attr)


class GATConv(MessagePassing):
    """Graph attention layer with edge features (Veličković et al., ICLR 2018; as pretrain-gnns).

    With ``K = heads`` heads, ``W: d → K·d``, and ``m_{ji}^k = (W h_j)^k + \\mathrm{Emb}^{bond}
    (e_{ji})^k``:

    .. math::
        \\alpha_{ij}^k = \\operatorname{softmax}_{j \\in \\mathcal{N}(i) \\cup \\{i\\}}
        \\mathrm{LeakyReLU}_{0.2}\\big(a_k^\\top [(W h_i)^k \\,\\|\\, m_{ji}^k]\\big),
        \\qquad
        h_i' = \\frac{1}{K} \\sum_k \\sum_j \\alpha_{ij}^k m_{ji}^k + b

    Heads are averaged back to ``d`` (as the reference; no extra projection). The softmax
    normalises over the incoming edges of each node (the aggregation index).
    """

    def __init__(
        self, dim: int, bond_vocab_sizes: Sequence[int], heads: int = 2, negative_slope: float = 0.2
    ) -> None:
        super().__init__(aggr="add", node_dim=0)
        self.dim, self.heads, self.negative_slope = dim, heads, negative_slope
        self.lin = nn.Linear(dim, heads * dim)
        self.att = nn.Parameter(torch.empty(1, heads, 2 * dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.edge_encoder = CategoricalEmbedding(bond_vocab_sizes, heads * dim)
        nn.init.xavier_uniform_(self.att)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        h = self.lin(x).view(-1, self.heads, self.dim)
        e = self.edge_encoder(edge_attr).view(-1, self.heads, self.dim)
        return self.propagate(edge_index, x=h, edge_attr=e)

    def message(
        self,
        x_i: Tensor,
        x_j: Tensor,
        edge_attr: Tensor,
        index: Tensor,
        ptr: Tensor | None,
        size_i: int | None,
    ) -> Tensor:
        m = x_j + edge_attr
        alpha = (torch.cat([x_i, m], dim=-1) * self.att).sum(dim=-1)
        alpha = softmax(F.leaky_relu(alpha, self.negative_slope), index, ptr, size_i)
        return m * alpha.unsqueeze(-1)

    def update(self, aggr_out: Tensor) -> Tensor:
        return aggr_out.mean(dim=1) + self.bias


class SAGEConv(MessagePassing):
    """GraphSAGE layer, mean aggregation, with edge features (Hamilton et al., NeurIPS 2017).

    .. math::
        h_i' = \\frac{z_i}{\\lVert z_i \\rVert_2}, \\qquad
        z_i = \\operatorname{mean}_{j \\in \\mathcal{N}(i) \\cup \\{i\\}}
        \\big(W h_j + b + \\mathrm{Emb}^{bond}(e_{ji})\\big)
    """

    def __init__(self, dim: int, bond_vocab_sizes: Sequence[int]) -> None:
        super().__init__(aggr="mean")
        self.linear = nn.Linear(dim, dim)
        self.edge_encoder = CategoricalEmbedding(bond_vocab_sizes, dim)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        return self.propagate(edge_index, x=self.linear(x), edge_attr=self.edge_encoder(edge_attr))

    def message(self, x_j: Tensor, edge_attr: Tensor) -> Tensor:
        return x_j + edge_attr

    def update(self, aggr_out: Tensor) -> Tensor:
        return F.normalize(aggr_out, p=2, dim=-1)


class RelationalBlock(nn.Module):
    """FS-Mol's residual GNN block around a relational aggregation (``fs_mol/modules/gnn.py``,
    ``GNNBlock``), with ReZero scaling ``α`` (one scalar, initialised at 1e-7, so that every block
    starts as the identity; Bachlechner et al. 2020):

    .. math::
        h \\leftarrow h + \\alpha\\, \\mathrm{Dropout}\\big(W_o\\, \\mathrm{aggregate}(h)\\big),
        \\qquad
        h \\leftarrow h + \\alpha\\, \\mathrm{Dropout}\\big(\\mathrm{BOOM}(\\mathrm{LN}(h))\\big)

    ``BOOM = Linear(d, 4d) → LeakyReLU → Dropout → Linear(4d, d)``. Subclasses define
    :meth:`aggregate`: ``(h [N, d], edge_index [2, E], edge_attr [E, F_bond]) → [N, width]``, with
    edges in any order (grouped by bond type, as :meth:`FSMolGNN.edges` gives them, each bond
    type's weights apply in one matrix product).
    """

    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dim, self.dropout = dim, dropout

    def _make_residual(self, width: int) -> None:
        """``W_o``, BOOM and ``α``; called by subclasses after their own weights, so that a seed
        initialises every weight as before this class existed."""
        dim = self.dim
        self.out = nn.Linear(width, dim)
        self.boom_norm = nn.LayerNorm(dim)
        self.boom_in = nn.Linear(dim, 4 * dim)
        self.boom_out = nn.Linear(4 * dim, dim)
        self.alpha = nn.Parameter(torch.full((1,), 1e-7))

    def aggregate(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        aggregated = self.aggregate(h, edge_index, edge_attr)
        h = h + self.alpha * dropout(self.out(aggregated), self.dropout, self.training)
        boom = self.boom_out(
            dropout(F.leaky_relu(self.boom_in(self.boom_norm(h))), self.dropout, self.training)
        )
        return h + self.alpha * dropout(boom, self.dropout, self.training)


def _relation_weights(relations: int, *shape: int) -> nn.Parameter:
    """``[relations, *shape[:-2], fan_in, fan_out]`` weights, each ``[fan_in, fan_out]`` slice
    initialised as ``nn.Linear`` would."""
    w = torch.empty(relations, *shape)
    for matrix in w.view(-1, *shape[-2:]):
        nn.init.kaiming_uniform_(matrix.T, a=5**0.5)
    return nn.Parameter(w)


def _bond_type_runs(edge_index: Tensor, edge_attr: Tensor) -> list[tuple[int, Tensor, Tensor]]:
    """``(bond type, sources, targets)`` per run of equal bond types in edge order."""
    types, counts = torch.unique_consecutive(edge_attr[:, 0], return_counts=True)
    sizes = counts.tolist()
    return list(zip(types.tolist(), edge_index[0].split(sizes), edge_index[1].split(sizes), strict=True))


class RelationalAttentionBlock(RelationalBlock):
    """FS-Mol's GNN block: relational multi-head attention message passing in a residual
    block with ReZero scaling (Stanley et al., "FS-Mol: A Few-Shot Learning Dataset of
    Molecules", NeurIPS 2021 Datasets and Benchmarks; ``fs_mol/modules/gnn.py``,
    ``GNNBlock`` with ``RelationalMultiHeadAttentionMP``).

    With ``K`` heads of width ``d_k = d / K``, for a bond ``j → i`` of type ``r``:

    .. math::
        m_{ji} = \\mathrm{ReLU}\\big(W_r [h_j \\| h_i] + b_r + \\mathrm{Emb}^{bond}(e_{ji})\\big)
        \\in \\mathbb{R}^{K \\times d_k},
        \\qquad
        a_{ji}^k = \\operatorname{softmax}_{j \\in \\mathcal{N}(i)}
        \\frac{(Q_r h_i)^k \\cdot (K_r h_j)^k}{\\sqrt{d_k}}

        h_i \\leftarrow h_i + \\alpha\\, \\mathrm{Dropout}\\Big(W_o \\big\\Vert_k
        \\textstyle\\sum_j a_{ji}^k m_{ji}^k\\Big),
        \\qquad
        h \\leftarrow h + \\alpha\\, \\mathrm{Dropout}\\big(\\mathrm{BOOM}(\\mathrm{LN}(h))\\big)

    ``BOOM = Linear(d, 4d) → LeakyReLU → Dropout → Linear(4d, d)``; ``α`` is one scalar per
    block, initialised at 1e-7 (ReZero, Bachlechner et al. 2020), so every block starts as the
    identity. The softmax runs over all incoming bonds of ``i``, whatever their type. As in
    FS-Mol there is no self-loop (the residual carries ``h_i``) and no batch norm. One
    addition: FS-Mol's only bond feature is its type, which selects ``W_r, Q_r, K_r``; here
    every bond column (e.g. direction, stereo, conjugation) is also embedded into the message.

    Shapes: ``h [N, d]``, ``edge_index [2, E]`` (both directions of every bond),
    ``edge_attr [E, F_bond]`` (column 0: bond type) → ``[N, d]``.
    """

    def __init__(self, dim: int, bond_vocab_sizes: Sequence[int], heads: int = 4,
                 dropout: float = 0.0) -> None:
        if dim % heads:
            raise ValueError(f"hidden_dim {dim} is not divisible by {heads} attention heads")
        super().__init__(dim, dropout)
        self.heads, self.head_dim = heads, dim // heads
        relations = int(bond_vocab_sizes[0])
        # one weight set per bond type, stored as one tensor each (indexed by the type column)
        self.message_weight = _relation_weights(relations, 2 * dim, dim)
        self.message_bias = nn.Parameter(torch.zeros(relations, dim))
        self.query_weight = _relation_weights(relations, dim, dim)
        self.key_weight = _relation_weights(relations, dim, dim)
        self.edge_encoder = CategoricalEmbedding(bond_vocab_sizes, dim)
        self._make_residual(dim)

    def aggregate(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        dst = edge_index[1]
        n_edges = dst.shape[0]
        message_parts, score_parts = [], []
        for r, s, d in _bond_type_runs(edge_index, edge_attr):
            h_src, h_dst = h[s], h[d]
            message_parts.append(
                torch.cat([h_src, h_dst], dim=1) @ self.message_weight[r] + self.message_bias[r]
            )
            q = (h_dst @ self.query_weight[r]).view(-1, self.heads, self.head_dim)
            k = (h_src @ self.key_weight[r]).view(-1, self.heads, self.head_dim)
            score_parts.append((q * k).sum(-1) * self.head_dim**-0.5)
        if n_edges == 0:  # a batch of single atoms: nothing to aggregate
            message_parts = [h.new_zeros(0, self.dim)]
            score_parts = [h.new_zeros(0, self.heads)]
        messages = F.relu(torch.cat(message_parts) + self.edge_encoder(edge_attr))
        scores = torch.cat(score_parts)
        weights = softmax(scores, dst, num_nodes=h.shape[0])  # [E, K]
        weighted = (weights.unsqueeze(-1) * messages.view(-1, self.heads, self.head_dim))
        return h.new_zeros(h.shape[0], self.dim).index_add(0, dst, weighted.view(n_edges, self.dim))


class RelationalPNABlock(RelationalBlock):
    """FS-Mol's PNA-type GNN block, the one of its ProtoNet (``GNNConfig(type="PNA")`` in
    ``fs_mol/models/protonet.py``; ``RelationalMultiAggrMP`` with ``use_pna_scalers``): the
    relational message passing of Gilmer et al.'s "towers" with the aggregators and degree
    scalers of Corso et al., "Principal Neighbourhood Aggregation for Graph Nets" (NeurIPS 2020),
    in the residual block of :class:`RelationalBlock`.

    The node state is cut into ``T`` towers of width ``d / T``. In tower ``t``, a bond
    ``j → i`` of type ``r`` sends three messages of width ``m``,

    .. math::
        [a_{ji} \\| b_{ji} \\| c_{ji}] = \\mathrm{ReLU}\\big(W_{r,t} [h_j^t \\| h_i^t] + b_{r,t}
        + \\mathrm{Emb}^{bond}_t(e_{ji})\\big),

    aggregated over the ``n_i`` incoming bonds of ``i`` as a sum, a mean, FS-Mol's spread
    :math:`\\sqrt{\\sum_j (\\mathrm{ReLU}(b_{ji}^2 - \\bar b_i^2) + 10^{-7})}` and a max,
    :math:`x_i = [\\sum_j a_{ji} \\| \\bar b_i \\| \\sigma_i \\| \\max_j c_{ji}]`, then scaled by
    degree, :math:`[x_i \\| \\tfrac{\\log(n_i + 1)}{\\delta} x_i \\| \\tfrac{\\delta}{\\log(n_i + 1)
    + 10^{-7}} x_i]` with FS-Mol's ``δ = 1.1515``; the ``T`` towers' ``12 m`` values are
    joined and mapped back to ``d`` by the block's ``W_o``. An atom without bonds aggregates
    zeros. FS-Mol's ProtoNet: ``d = 64``, ``T = 2``, ``m = 32``, 8 layers. As in
    :class:`RelationalAttentionBlock`, every bond column is also embedded into the messages.

    Shapes: ``h [N, d]``, ``edge_index [2, E]``, ``edge_attr [E, F_bond]`` → ``[N, d]``.
    """

    DELTA = 1.1515  # FS-Mol's mean log-degree, "computed over LSC dataset"

    def __init__(self, dim: int, bond_vocab_sizes: Sequence[int], towers: int = 2,
                 message_dim: int = 32, dropout: float = 0.0) -> None:
        if dim % towers:
            raise ValueError(f"hidden_dim {dim} is not divisible by {towers} towers")
        super().__init__(dim, dropout)
        self.towers, self.message_dim = towers, message_dim
        relations = int(bond_vocab_sizes[0])
        self.message_weight = _relation_weights(relations, towers, 2 * (dim // towers), 3 * message_dim)
        self.message_bias = nn.Parameter(torch.zeros(relations, towers, 3 * message_dim))
        self.edge_encoder = CategoricalEmbedding(bond_vocab_sizes, towers * 3 * message_dim)
        self._make_residual(towers * 12 * message_dim)

    def aggregate(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        n, dst = h.shape[0], edge_index[1]
        t, m = self.towers, self.message_dim
        towers = h.view(n, t, -1)
        parts = [  # [E_r, T, 2 d/T] @ [T, 2 d/T, 3m] per tower
            torch.bmm(torch.cat([towers[s], towers[d]], dim=2).transpose(0, 1), self.message_weight[r])
            .transpose(0, 1) + self.message_bias[r]
            for r, s, d in _bond_type_runs(edge_index, edge_attr)
        ] or [h.new_zeros(0, t, 3 * m)]
        messages = F.relu(torch.cat(parts) + self.edge_encoder(edge_attr).view(-1, t, 3 * m))
        summed, averaged, maxed = messages.split(m, dim=2)  # [E, T, m] each
        degree = torch.bincount(dst, minlength=n).to(h.dtype).view(n, 1, 1)
        zeros = h.new_zeros(n, t, m)
        mean = zeros.index_add(0, dst, averaged) / degree.clamp(min=1)
        spread = (F.relu(averaged.square() - mean[dst].square()) + 1e-7)
        x = torch.cat([
            zeros.index_add(0, dst, summed),
            mean,
            zeros.index_add(0, dst, spread).sqrt(),
            scatter(maxed, dst, dim=0, dim_size=n, reduce="max"),  # 0 where no bond arrives
        ], dim=2)  # [N, T, 4m]
        log_degree = torch.log(degree + 1)
        x = torch.cat([x, x * (log_degree / self.DELTA), x * (self.DELTA / (log_degree + 1e-7))], dim=2)
        return x.reshape(n, t * 12 * m)


class CombinedReadout(nn.Module):
    """FS-Mol's graph readout (Stanley et al. 2021; ``fs_mol/modules/graph_readout.py``,
    ``CombinedGraphReadout``): a softmax-weighted mean, a sigmoid-weighted sum (both with
    ``K`` heads) and a max over the atoms of each graph, combined by one linear map.

    .. math::
        r_{mean} = W_m \\big\\Vert_k \\textstyle\\sum_{v \\in G}
        \\operatorname{softmax}_{v \\in G}(s_m(h_v))^k\\, t_m(h_v)^k,
        \\qquad
        r_{sum} = W_s \\big\\Vert_k \\textstyle\\sum_{v \\in G} \\sigma(s_s(h_v))^k\\, t_s(h_v)^k

        r_{max} = W_x \\max_{v \\in G} h_v,
        \\qquad
        r_G = W_c\\, \\mathrm{ReLU}([r_{mean} \\| r_{sum} \\| r_{max}])

    with scoring MLPs ``s: d → K·d_h → K`` and value MLPs ``t: d → K·d_h → K·d_h`` (ReLU
    hidden layer), ``K = 12`` heads of ``d_h = 64`` as FS-Mol's defaults, and ``W_*`` without
    bias. FS-Mol maps to 512; here the graph embedding keeps the node width ``d``.

    Shapes: ``h [N, d]``, ``batch [N]`` → ``[B, d]``.
    """

    def __init__(self, dim: int, heads: int = 12, head_dim: int = 64) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        width = heads * head_dim

        def mlp(out: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, out))

        self.mean_scores, self.mean_values = mlp(heads), mlp(width)
        self.sum_scores, self.sum_values = mlp(heads), mlp(width)
        self.mean_out = nn.Linear(width, dim, bias=False)
        self.sum_out = nn.Linear(width, dim, bias=False)
        self.max_out = nn.Linear(dim, dim, bias=False)
        self.combine = nn.Linear(3 * dim, dim, bias=False)

    def _weighted(self, h: Tensor, weights: Tensor, values: nn.Module, batch: Tensor,
                  num_graphs: int) -> Tensor:
        v = values(h).view(-1, self.heads, self.head_dim) * weights.unsqueeze(-1)
        return global_add_pool(v.view(h.shape[0], -1), batch, num_graphs)

    def forward(self, h: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        mean_weights = softmax(self.mean_scores(h), batch, num_nodes=num_graphs)
        sum_weights = torch.sigmoid(self.sum_scores(h))
        parts = [
            self.mean_out(self._weighted(h, mean_weights, self.mean_values, batch, num_graphs)),
            self.sum_out(self._weighted(h, sum_weights, self.sum_values, batch, num_graphs)),
            self.max_out(global_max_pool(h, batch, num_graphs)),
        ]
        return self.combine(F.relu(torch.cat(parts, dim=1)))


# --- encoders -------------------------------------------------------------------------------


class Encoder(nn.Module):
    """Common interface of the graph encoders (see the module docstring for the equations).

    Args:
        atom_vocab_sizes: vocabulary size of each atom-feature column (``featurizer.atom_vocab_sizes``).
        bond_vocab_sizes: vocabulary size of each bond-feature column; column 0 index
            ``size - 2`` is used for the self-loops.
        hidden_dim: ``d``, the width of every layer.
        num_layers: ``L``, the number of message-passing layers.
        dropout: dropout rate after every layer.
        jk: ``last``, ``concat``, ``max`` or ``sum`` over the ``L`` layer outputs.
        pooling: ``mean``, ``sum``, ``max``, ``combined`` (FS-Mol's, :class:`CombinedReadout`)
            or ``attention`` (gated attention:
            :math:`\\sum_v \\operatorname{softmax}_v(w^\\top h_v + c)\\, h_v`).

    Attributes:
        out_dim: width of both node and graph embeddings: ``L * d`` for ``jk="concat"``,
            ``d`` otherwise.
        hparams: the constructor arguments (JSON-friendly), so that
            ``type(enc)(**enc.hparams)`` or ``build_encoder(enc.name, **enc.hparams)``
            rebuilds the architecture.
        name: the registry key (``gin``, ``gcn``, ``gat``, ``sage``, ``fsmol``, ``fsmol-pna``).
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        atom_vocab_sizes: Sequence[int],
        bond_vocab_sizes: Sequence[int],
        hidden_dim: int = 300,
        num_layers: int = 5,
        dropout: float = 0.5,
        jk: str = "last",
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if jk not in JK_MODES:
            raise ValueError(f"unknown jk {jk!r}; choose one of: {', '.join(JK_MODES)}")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
        if len(bond_vocab_sizes) == 0 or bond_vocab_sizes[0] < 3:
            raise ValueError("bond column 0 needs room for the self-loop and MASK indices")
        self.hparams: dict[str, Any] = {
            "atom_vocab_sizes": [int(s) for s in atom_vocab_sizes],
            "bond_vocab_sizes": [int(s) for s in bond_vocab_sizes],
            "hidden_dim": int(hidden_dim),
            "num_layers": int(num_layers),
            "dropout": float(dropout),
            "jk": jk,
            "pooling": pooling,
        }
        self.hidden_dim, self.num_layers = hidden_dim, num_layers
        self.dropout, self.jk = dropout, jk
        self.self_loop_index = int(bond_vocab_sizes[0]) - 2
        self.out_dim = num_layers * hidden_dim if jk == "concat" else hidden_dim

        self.atom_encoder = CategoricalEmbedding(atom_vocab_sizes, hidden_dim)
        self.gnns = nn.ModuleList(
            self.make_conv(hidden_dim, tuple(bond_vocab_sizes)) for _ in range(num_layers)
        )
        self.batch_norms = nn.ModuleList(self.make_norm(hidden_dim) for _ in range(num_layers))
        self.pooling = pooling
        self.attention_pool = (
            AttentionalAggregation(gate_nn=nn.Linear(self.out_dim, 1))
            if pooling == "attention"
            else None
        )
        self.combined_pool = CombinedReadout(self.out_dim) if pooling == "combined" else None

    def make_conv(self, dim: int, bond_vocab_sizes: Sequence[int]) -> nn.Module:
        """Layer ``l``'s message passing: ``(h [N, d], edge_index, edge_attr) -> [N, d]``."""
        raise NotImplementedError

    def make_norm(self, dim: int) -> nn.Module:
        """The normalisation after each layer (pretrain-gnns: batch norm)."""
        return nn.BatchNorm1d(dim)

    def edges(self, batch: GraphBatch) -> tuple[Tensor, Tensor]:
        """The edges every layer passes messages along: the bonds plus one self-loop per atom."""
        return add_self_loops_with_attr(
            batch.edge_index, batch.edge_attr, batch.x.shape[0], self.self_loop_index
        )

    def layer(self, i: int, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """Layer ``i``: ``Dropout(ReLU(BN(Conv(h))))``, no ReLU after the last layer."""
        h = self.batch_norms[i](self.gnns[i](h, edge_index, edge_attr))
        if i < self.num_layers - 1:
            h = F.relu(h)
        return dropout(h, self.dropout, self.training)

    def node_embeddings(self, batch: GraphBatch) -> Tensor:
        """JK node representation, ``[N, out_dim]``."""
        edge_index, edge_attr = self.edges(batch)
        h = self.atom_encoder(batch.x)
        layers = []
        for i in range(self.num_layers):
            h = self.layer(i, h, edge_index, edge_attr)
            layers.append(h)
        if self.jk == "last":
            return layers[-1]
        if self.jk == "concat":
            return torch.cat(layers, dim=1)
        stacked = torch.stack(layers, dim=0)
        return stacked.max(dim=0).values if self.jk == "max" else stacked.sum(dim=0)

    def pool(self, h: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        """Graph readout: ``[N, out_dim]`` node embeddings → ``[B, out_dim]``."""
        if self.pooling == "mean":
            return global_mean_pool(h, batch, num_graphs)
        if self.pooling == "sum":
            return global_add_pool(h, batch, num_graphs)
        if self.pooling == "max":
            return global_max_pool(h, batch, num_graphs)
        if self.pooling == "combined":
            assert self.combined_pool is not None
            return self.combined_pool(h, batch, num_graphs)
        assert self.attention_pool is not None
        return self.attention_pool(h, index=batch, dim_size=num_graphs)

    def forward(self, batch: GraphBatch) -> Tensor:
        """Graph embeddings, ``[B, out_dim]``."""
        return self.pool(self.node_embeddings(batch), batch.batch, batch.num_graphs)

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, out_dim={self.out_dim}, jk={self.jk!r}, pooling={self.pooling!r}"
        )


ENCODERS: Registry[type[Encoder]] = Registry("encoder")


@ENCODERS.register("gin")
class GIN(Encoder):
    """Graph Isomorphism Network with edge features, exactly pretrain-gnns' ``GNN(gnn_type="gin")``.

    Hu et al., "Strategies for Pre-training Graph Neural Networks", ICLR 2020; Xu et al.,
    "How Powerful are Graph Neural Networks?", ICLR 2019. Layer: :class:`GINConv`.
    """

    name = "gin"

    def make_conv(self, dim: int, bond_vocab_sizes: Sequence[int]) -> MessagePassing:
        return GINConv(dim, bond_vocab_sizes)


@ENCODERS.register("gcn")
class GCN(Encoder):
    """GCN encoder as pretrain-gnns' ``GNN(gnn_type="gcn")`` (Kipf & Welling, ICLR 2017).

    Layer: :class:`GCNConv`.
    """

    name = "gcn"

    def make_conv(self, dim: int, bond_vocab_sizes: Sequence[int]) -> MessagePassing:
        return GCNConv(dim, bond_vocab_sizes)


@ENCODERS.register("gat")
class GAT(Encoder):
    """GAT encoder as pretrain-gnns' ``GNN(gnn_type="gat")`` (Veličković et al., ICLR 2018).

    Layer: :class:`GATConv` with 2 heads averaged back to ``hidden_dim``.
    """

    name = "gat"

    def make_conv(self, dim: int, bond_vocab_sizes: Sequence[int]) -> MessagePassing:
        return GATConv(dim, bond_vocab_sizes, heads=2)


@ENCODERS.register("sage")
class GraphSAGE(Encoder):
    """GraphSAGE encoder as pretrain-gnns' ``GNN(gnn_type="graphsage")`` (Hamilton et al., 2017).

    Layer: :class:`SAGEConv` (mean aggregation, L2-normalised output).
    """

    name = "sage"

    def make_conv(self, dim: int, bond_vocab_sizes: Sequence[int]) -> MessagePassing:
        return SAGEConv(dim, bond_vocab_sizes)


@ENCODERS.register("fsmol")
class FSMolGNN(Encoder):
    """FS-Mol's graph encoder: a stack of :class:`RelationalAttentionBlock` (Stanley et al.,
    NeurIPS 2021 Datasets and Benchmarks; ``fs_mol/modules/gnn.py``, ``GNNConfig`` defaults:
    8 layers, width 128, 4 heads, intermediate width 512 = 4 × width, no dropout).

    Unlike the pretrain-gnns encoders above it has no self-loops, no batch norm and no ReLU
    between layers: each block is residual, so ``layer`` is the block alone, and ``dropout``
    acts inside the blocks. FS-Mol's graph feature extractor is this encoder with
    ``jk="concat"`` and ``pooling="combined"`` (its readout, :class:`CombinedReadout`, over
    the states of every layer; FS-Mol also concatenates the input embedding).
    """

    name = "fsmol"

    def make_conv(self, dim: int, bond_vocab_sizes: Sequence[int]) -> nn.Module:
        return RelationalAttentionBlock(dim, bond_vocab_sizes, heads=4, dropout=self.dropout)

    def make_norm(self, dim: int) -> nn.Module:
        return nn.Identity()  # the blocks normalise inside (LayerNorm before BOOM)

    def edges(self, batch: GraphBatch) -> tuple[Tensor, Tensor]:
        # grouped by bond type once per forward, so that every block splits them without copying
        order = torch.argsort(batch.edge_attr[:, 0], stable=True)
        return batch.edge_index[:, order], batch.edge_attr[order]

    def layer(self, i: int, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        return self.gnns[i](h, edge_index, edge_attr)


@ENCODERS.register("fsmol-pna")
class FSMolPNAGNN(FSMolGNN):
    """The GNN of FS-Mol's ProtoNet: :class:`FSMolGNN` with :class:`RelationalPNABlock` blocks
    (2 towers, messages of width 32; ``fs_mol/models/protonet.py``: 8 layers × 64, read out by
    ``CombinedGraphReadout`` over every layer, i.e. ``jk="concat"``, ``pooling="combined"``).
    """

    name = "fsmol-pna"

    def make_conv(self, dim: int, bond_vocab_sizes: Sequence[int]) -> nn.Module:
        return RelationalPNABlock(dim, bond_vocab_sizes, towers=2, message_dim=32, dropout=self.dropout)


def build_encoder(
    name: str, atom_vocab_sizes: Sequence[int], bond_vocab_sizes: Sequence[int], **hparams: Any
) -> Encoder:
    """Build the encoder registered as ``name`` (``gin``, ``gcn``, ``gat``, ``sage``, ``fsmol``, ``fsmol-pna``)."""
    return ENCODERS.get(name)(atom_vocab_sizes, bond_vocab_sizes, **hparams)


# --- pretrain-gnns checkpoints -------------------------------------------------------------

_BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _pretrain_gnns_key_map(num_layers: int) -> dict[str, str]:
    """pretrain-gnns ``GNN`` state-dict key → our :class:`GIN` key."""
    mapping = {
        "x_embedding1.weight": "atom_encoder.embeddings.0.weight",
        "x_embedding2.weight": "atom_encoder.embeddings.1.weight",
    }
    for i in range(num_layers):
        for k in (0, 2):
            for p in ("weight", "bias"):
                mapping[f"gnns.{i}.mlp.{k}.{p}"] = f"gnns.{i}.mlp.{k}.{p}"
        for c in (1, 2):
            mapping[f"gnns.{i}.edge_embedding{c}.weight"] = (
                f"gnns.{i}.edge_encoder.embeddings.{c - 1}.weight"
            )
        for p in _BN_SUFFIXES:
            mapping[f"batch_norms.{i}.{p}"] = f"batch_norms.{i}.{p}"
    return mapping


def load_pretrain_gnns_state_dict(encoder: Encoder, state_dict: Mapping[str, Tensor]) -> list[str]:
    """Load a pretrain-gnns GIN checkpoint (e.g. ``model_gin/contextpred.pth``) into ``encoder``.

    ``encoder`` must be a :class:`GIN` built for the ``basic`` featurizer (2 atom columns,
    2 bond columns) with the checkpoint's depth and width (published ones: 5 × 300). A
    ``GNN_graphpred`` state dict is accepted too: its ``gnn.`` keys are used and the
    prediction head / pooling keys ignored.

    Returns the encoder keys the checkpoint does not provide (only pooling parameters, e.g.
    the attention gate). Raises ``ValueError`` naming the key on any missing, unexpected or
    wrongly shaped entry; nothing is loaded in that case.
    """
    if not isinstance(encoder, GIN):
        raise ValueError(
            f"pretrain-gnns GIN checkpoints need a GIN encoder, got {type(encoder).__name__}"
        )
    if (
        len(encoder.atom_encoder.embeddings) != 2
        or len(encoder.gnns[0].edge_encoder.embeddings) != 2
    ):
        raise ValueError(
            "pretrain-gnns checkpoints need the 'basic' featurizer (2 atom and 2 bond columns); "
            f"encoder has atom_vocab_sizes={encoder.hparams['atom_vocab_sizes']}, "
            f"bond_vocab_sizes={encoder.hparams['bond_vocab_sizes']}"
        )
    sd = dict(state_dict)
    if any(k.startswith("gnn.") for k in sd):  # GNN_graphpred: keep the GNN part only
        sd = {k[len("gnn.") :]: v for k, v in sd.items() if k.startswith("gnn.")}

    mapping = _pretrain_gnns_key_map(encoder.num_layers)
    unexpected = sorted(k for k in sd if k not in mapping)
    if unexpected:
        raise ValueError(
            f"unexpected key {unexpected[0]!r} in pretrain-gnns state dict "
            f"({len(unexpected)} in all; encoder has num_layers={encoder.num_layers})"
        )
    # num_batches_tracked is absent from checkpoints saved by old torch versions.
    missing = sorted(k for k in mapping if k not in sd and not k.endswith("num_batches_tracked"))
    if missing:
        raise ValueError(
            f"missing key {missing[0]!r} in pretrain-gnns state dict ({len(missing)} in all; "
            f"encoder has num_layers={encoder.num_layers})"
        )
    ours = encoder.state_dict()
    mapped: dict[str, Tensor] = {}
    for key, value in sd.items():
        target = mapping[key]
        if tuple(value.shape) != tuple(ours[target].shape):
            raise ValueError(
                f"shape mismatch for {key!r}: checkpoint {tuple(value.shape)} vs encoder "
                f"{target!r} {tuple(ours[target].shape)}"
            )
        mapped[target] = value
    result = encoder.load_state_dict(mapped, strict=False)
    assert not result.unexpected_keys
    not_loaded = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    # Everything but the pooling parameters must have come from the checkpoint.
    stray = [k for k in not_loaded if not k.startswith(("attention_pool.", "combined_pool."))]
    if stray:  # pragma: no cover - the key map covers every GIN parameter
        raise ValueError(f"encoder key {stray[0]!r} not provided by the checkpoint")
    return not_loaded
