"""GraphCL (You et al., "Graph Contrastive Learning with Augmentations", NeurIPS 2020).

As the authors' ``transferLearning_MoleculeNet_PPI/chem/pretrain_graphcl.py``: two
augmented views of every graph are encoded, pooled and passed through a projection head
:math:`g(z) = W_2\\,\\mathrm{ReLU}(W_1 z + b_1) + b_2`; with
:math:`s_{ij} = \\cos(g(z^{(1)}_i), g(z^{(2)}_j))` and temperature ``tau`` (0.1), the
NT-Xent loss in GraphCL's form (negatives are the other graphs of the second view):

.. math::
    \\mathcal{L} = -\\frac{1}{B} \\sum_i \\log
    \\frac{\\exp(s_{ii}/\\tau)}{\\sum_{j \\ne i} \\exp(s_{ij}/\\tau)}

Augmentations (each with ``aug_ratio``, default 0.2, all on the whole batch):

* ``node_drop``: drop ``int(n * ratio)`` random atoms of each graph (and their bonds);
* ``edge_drop``: drop each bond (both directions) with probability ``ratio``
  (GraphCL's "edge perturbation" on molecules only removes bonds);
* ``subgraph``: keep the ``ceil(n * (1 - ratio))`` atoms nearest (BFS order, random ties)
  to a random start atom: a connected subgraph grown breadth-first;
* ``attr_mask``: set ``int(n * ratio)`` random atoms to ``(MASK, 0, ...)``.

Default pair: ``("node_drop", "subgraph")``. Shapes: views ``[B, out_dim]`` → projections
``[B, out_dim]`` → similarities ``[B, B]``. Batches need at least 2 graphs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moladapt.data.featurize import Featurizer
from moladapt.models.encoders import Encoder
from moladapt.pretrain import graph_ops
from moladapt.pretrain.objectives.base import OBJECTIVES, PretrainObjective, zero_loss
from moladapt.types import GraphBatch

AUGMENTATIONS = ("node_drop", "edge_drop", "subgraph", "attr_mask")


def node_drop(batch: GraphBatch, ratio: float, generator: torch.Generator) -> GraphBatch:
    """Drop ``int(n_g * ratio)`` uniformly chosen atoms of every graph g."""
    sizes = graph_ops.graph_sizes(batch)
    dropped = graph_ops.random_nodes_per_graph(batch, (sizes * ratio).long(), generator)
    return graph_ops.induced_subgraph(batch, ~dropped)[0]


def edge_drop(batch: GraphBatch, ratio: float, generator: torch.Generator) -> GraphBatch:
    """Drop each undirected bond (both directions) with probability ``ratio``."""
    bond_of_edge, n_bonds = graph_ops.undirected_bond_ids(batch.edge_index, batch.num_nodes)
    keep_bond = graph_ops.rand(n_bonds, generator, batch.x.device) >= ratio
    keep = keep_bond[bond_of_edge]
    return GraphBatch(batch.x, batch.edge_index[:, keep], batch.edge_attr[keep], batch.batch,
                      batch.num_graphs, batch.y)


def subgraph(batch: GraphBatch, ratio: float, generator: torch.Generator) -> GraphBatch:
    """Keep the ``ceil(n_g * (1 - ratio))`` atoms closest to a random start atom per graph."""
    sizes = graph_ops.graph_sizes(batch)
    starts = graph_ops.one_node_per_graph(batch, generator)
    max_size = int(sizes.max()) if sizes.numel() else 0
    dist = graph_ops.bfs_distance(batch.edge_index, starts, batch.num_nodes, max_size)
    key = dist.double() + graph_ops.rand(batch.num_nodes, generator, dist.device).double()
    rank = graph_ops.rank_within_graph(batch.batch, key)
    target = torch.ceil(sizes.double() * (1.0 - ratio)).long().clamp(min=1)
    keep = (rank < target[batch.batch]) & (dist <= max_size)
    return graph_ops.induced_subgraph(batch, keep)[0]


def attr_mask(
    batch: GraphBatch, ratio: float, generator: torch.Generator, mask_index: int
) -> GraphBatch:
    """Set ``int(n_g * ratio)`` random atoms of every graph to ``(MASK, 0, ..., 0)``."""
    sizes = graph_ops.graph_sizes(batch)
    masked = graph_ops.random_nodes_per_graph(batch, (sizes * ratio).long(), generator)
    x = graph_ops.mask_atom_features(batch.x, masked, mask_index)
    return GraphBatch(x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs, batch.y)


@dataclass
class TwoViews:
    view1: GraphBatch
    view2: GraphBatch


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """GraphCL's NT-Xent: ``[B, d], [B, d]`` → scalar (see the module docstring)."""
    z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    logits = z1 @ z2.t() / temperature
    b = logits.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=logits.device)
    pos = logits.diagonal()
    neg = torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1)
    return (neg - pos).mean()


@OBJECTIVES.register("graphcl")
class GraphCL(PretrainObjective):
    """Contrastive learning between two augmented views; see the module docstring.

    Args:
        augmentations: the two augmentations (names from :data:`AUGMENTATIONS`).
        aug_ratio: strength of both augmentations (GraphCL default 0.2).
        temperature: NT-Xent temperature (0.1).
    """

    name = "graphcl"

    def __init__(
        self,
        featurizer: Featurizer,
        out_dim: int,
        augmentations: Sequence[str] = ("node_drop", "subgraph"),
        aug_ratio: float = 0.2,
        temperature: float = 0.1,
    ) -> None:
        super().__init__(featurizer, out_dim)
        augmentations = [str(a) for a in augmentations]
        if len(augmentations) != 2 or any(a not in AUGMENTATIONS for a in augmentations):
            raise ValueError(
                f"augmentations must be two of {', '.join(AUGMENTATIONS)}; got {augmentations}"
            )
        if not 0.0 <= aug_ratio < 1.0:
            raise ValueError(f"aug_ratio must be in [0, 1), got {aug_ratio}")
        self.augmentations, self.aug_ratio = augmentations, float(aug_ratio)
        self.temperature = float(temperature)
        self.hparams = {"augmentations": augmentations, "aug_ratio": self.aug_ratio,
                        "temperature": self.temperature}
        self.projection = nn.Sequential(
            nn.Linear(self.out_dim, self.out_dim), nn.ReLU(), nn.Linear(self.out_dim, self.out_dim)
        )

    def augment(self, name: str, batch: GraphBatch, generator: torch.Generator) -> GraphBatch:
        if name == "node_drop":
            return node_drop(batch, self.aug_ratio, generator)
        if name == "edge_drop":
            return edge_drop(batch, self.aug_ratio, generator)
        if name == "subgraph":
            return subgraph(batch, self.aug_ratio, generator)
        return attr_mask(batch, self.aug_ratio, generator, self.featurizer.atom_mask_index)

    def transform(self, batch: GraphBatch, generator: torch.Generator) -> TwoViews:
        a, b = self.augmentations
        return TwoViews(self.augment(a, batch, generator), self.augment(b, batch, generator))

    def loss(self, encoder: Encoder, transformed: TwoViews) -> Tensor:
        v1, v2 = transformed.view1, transformed.view2
        if v1.num_graphs < 2:
            return zero_loss(v1.x.device)
        z1 = self.projection(encoder(v1))
        z2 = self.projection(encoder(v2))
        return nt_xent(z1, z2, self.temperature)
