"""Context prediction (Hu et al., "Strategies for Pre-training Graph Neural Networks", ICLR 2020).

As pretrain-gnns ``chem/pretrain_contextpred.py`` with ``ExtractSubstructureContextPair``
(``mode="cbow"``, ``neg_samples=1``). For one uniformly sampled center atom ``v`` per
graph, with ``d(u)`` the hop distance from ``v``:

* substructure ``S = {u : d(u) <= K}`` (``K`` = the encoder's ``num_layers``), encoded by
  the main encoder on the induced subgraph; its embedding is the center's node
  embedding :math:`h_v^{S}`;
* context ``C = {u : r_1 < d(u) <= r_2}`` (a ring; ``r_1 = K - 1`` and
  ``r_2 = r_1 + csize`` by default, as the reference), encoded on its induced subgraph by
  a separate context GIN with ``r_2 - r_1`` layers and the same width;
* context anchors ``A = C \\cap S`` (atoms at distance ``r_1 < d <= K``); the context
  embedding is the mean of the anchors' context embeddings,
  :math:`c_v = \\frac{1}{|A|}\\sum_{u \\in A} g_u`.

Negatives pair each substructure with the context of the next graph in the batch
(cyclic shift). With :math:`s^{+} = h_v^{S\\top} c_v` and
:math:`s^{-} = h_v^{S\\top} c_{\\pi(v)}`:

.. math::
    \\mathcal{L} = \\mathrm{BCE}(\\sigma(s^{+}), 1) + \\mathrm{BCE}(\\sigma(s^{-}), 0)

Graphs without any anchor atom (small molecules, or centers whose ring is empty) are
skipped, as in the reference. Distances come from a batched BFS on tensors.

Note the ring is half-open, ``(r_1, r_2]``, exactly as the reference's
``symmetric_difference`` of the ``r_1``- and ``r_2``-balls.

Shapes: substructure / context embeddings ``[B', out_dim]`` for the ``B'`` kept graphs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.pool import global_mean_pool

from moladapt.data.featurize import Featurizer
from moladapt.models.encoders import GIN, Encoder
from moladapt.pretrain import graph_ops
from moladapt.pretrain.objectives.base import OBJECTIVES, PretrainObjective, zero_loss
from moladapt.types import GraphBatch


@dataclass
class SubstructContextPairs:
    """Substructure and context graphs of the ``B'`` kept graphs (same order).

    Attributes:
        substruct: induced K-hop subgraphs; ``center``: ``[B']`` center index in it.
        context: induced ring subgraphs; ``anchor``: ``[A]`` anchor atom indices in it and
            ``anchor_graph``: ``[A]`` their graph (0..B'-1).
        center_global, substruct_mask, context_mask: the same in the original batch
            (``[B]`` center per graph, ``[N]`` masks) for inspection.
    """

    substruct: GraphBatch
    center: Tensor
    context: GraphBatch
    anchor: Tensor
    anchor_graph: Tensor
    center_global: Tensor
    substruct_mask: Tensor
    context_mask: Tensor


def extract_substruct_context(
    batch: GraphBatch, centers: Tensor, k: int, r1: int, r2: int
) -> SubstructContextPairs:
    """Cut the substructure (``d <= k``) and context (``r1 < d <= r2``) around ``centers``."""
    dist = graph_ops.bfs_distance(batch.edge_index, centers, batch.num_nodes, max(k, r2))
    sub_mask = dist <= k
    ctx_mask = (dist > r1) & (dist <= r2)
    anchor_mask = sub_mask & ctx_mask
    valid = torch.zeros(batch.num_graphs, dtype=torch.bool, device=dist.device)
    valid[batch.batch[anchor_mask]] = True
    keep_node = valid[batch.batch]
    sub_mask, ctx_mask, anchor_mask = sub_mask & keep_node, ctx_mask & keep_node, anchor_mask & keep_node
    substruct, sub_index = graph_ops.induced_subgraph(batch, sub_mask, compact_graphs=True)
    context, ctx_index = graph_ops.induced_subgraph(batch, ctx_mask, compact_graphs=True)
    anchors = anchor_mask.nonzero().squeeze(1)
    return SubstructContextPairs(
        substruct=substruct,
        center=sub_index[centers[valid]],
        context=context,
        anchor=ctx_index[anchors],
        anchor_graph=context.batch[ctx_index[anchors]],
        center_global=centers,
        substruct_mask=sub_mask,
        context_mask=ctx_mask,
    )


@OBJECTIVES.register("context_prediction")
class ContextPrediction(PretrainObjective):
    """Substructure vs context embedding agreement; see the module docstring.

    Args:
        num_layers: ``K``, the main encoder's depth (substructure radius).
        r1, r2: context ring radii; default ``K - 1`` and ``r1 + csize``.
        csize: ring width when ``r2`` is not given (pretrain-gnns default 3).
        context_dropout: dropout of the context GIN (pretrain-gnns pretraining uses 0).
    """

    name = "context_prediction"

    def __init__(
        self,
        featurizer: Featurizer,
        out_dim: int,
        num_layers: int = 5,
        r1: int | None = None,
        r2: int | None = None,
        csize: int = 3,
        context_dropout: float = 0.0,
    ) -> None:
        super().__init__(featurizer, out_dim)
        k = int(num_layers)
        r1 = k - 1 if r1 is None else int(r1)
        r2 = r1 + int(csize) if r2 is None else int(r2)
        if not (0 <= r1 < k and r2 > r1):
            raise ValueError(
                f"need 0 <= r1 < num_layers and r2 > r1 (so the context overlaps the "
                f"substructure), got r1={r1}, r2={r2}, num_layers={k}"
            )
        self.k, self.r1, self.r2 = k, r1, r2
        self.hparams = {"num_layers": k, "r1": r1, "r2": r2, "csize": int(csize),
                        "context_dropout": float(context_dropout)}
        self.context_encoder = GIN(
            featurizer.atom_vocab_sizes,
            featurizer.bond_vocab_sizes,
            hidden_dim=self.out_dim,
            num_layers=r2 - r1,
            dropout=context_dropout,
            jk="last",
        )

    @classmethod
    def from_encoder(
        cls, featurizer: Featurizer, encoder: Encoder, **options: Any
    ) -> ContextPrediction:
        options.setdefault("num_layers", encoder.num_layers)
        return cls(featurizer, encoder.out_dim, **options)

    def transform(self, batch: GraphBatch, generator: torch.Generator) -> SubstructContextPairs:
        centers = graph_ops.one_node_per_graph(batch, generator)
        return extract_substruct_context(batch, centers, self.k, self.r1, self.r2)

    def loss(self, encoder: Encoder, transformed: SubstructContextPairs) -> Tensor:
        t = transformed
        # batch norm in training mode needs two nodes: a batch whose only context ring is one
        # atom (a small molecule's last batch) has nothing to learn, like an empty one
        if t.substruct.num_graphs == 0 or t.substruct.num_nodes < 2 or t.context.num_nodes < 2:
            return zero_loss(t.substruct.x.device)
        sub_rep = encoder.node_embeddings(t.substruct)[t.center]
        ctx_nodes = self.context_encoder.node_embeddings(t.context)[t.anchor]
        ctx_rep = global_mean_pool(ctx_nodes, t.anchor_graph, t.substruct.num_graphs)
        pos = (sub_rep * ctx_rep).sum(-1)
        loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
        b = sub_rep.shape[0]
        if b > 1:
            shift = torch.roll(torch.arange(b, device=ctx_rep.device), -1)
            neg = (sub_rep * ctx_rep[shift]).sum(-1)
            loss = loss + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))
        return loss
