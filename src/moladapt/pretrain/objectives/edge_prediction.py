"""Edge prediction (Hamilton et al. 2017; the baseline of Hu et al., ICLR 2020).

As pretrain-gnns ``chem/pretrain_edgepred.py`` with ``NegativeEdge``: every bond of the
batch (once, ``u < v``) is a positive pair; an equal number of negative pairs are drawn
uniformly among the non-bonded, distinct atom pairs of the same graph (rejection
sampling; a graph with no non-bonded pair contributes no negative). The score of a pair
is the scaled dot product of the node embeddings, :math:`s_{uv} = h_u^\\top h_v / \\sqrt{d}`:

.. math::
    \\mathcal{L} = \\mathrm{BCE}\\big(\\sigma(s_{uv}), 1\\big)_{(u,v) \\in E^+}
    + \\mathrm{BCE}\\big(\\sigma(s_{uv}), 0\\big)_{(u,v) \\in E^-}

(each term averaged over its pairs). Shapes: ``h [N, out_dim]``, pairs ``[2, P]``.

Why :math:`\\sqrt{d}` (``scale_by_sqrt_dim=True``, the default; pretrain-gnns uses the plain
dot product, ``False``): the GIN's last layer ends in batch norm, so each of the d = 300
dimensions has unit variance and a score is a sum of 300 products — logits of ±tens at
initialisation, and a non-bonded pair of two alike carbons scores about ``||h||² ≈ 300``.
Measured here (first 50,000 MOSES molecules, batch 256, Adam 1e-3, GIN 5×300,
``benchmarks/edge_prediction_collapse.py`` and ``benchmarks/pretraining.py``): unscaled (bf16), the
epoch-mean loss goes 11.0, 4.7, 1.7, 1.5, 1.8, 1.8, 1.39 and then stays at exactly
2 ln 2 = 1.386 (chance) — the last layer's output before batch norm has become constant, so
every atom gets the same embedding (the trainer's collapse check reports it); fp32 starts the
same way (12.8, 4.3 over the first 200 steps). Scaled (bf16), the loss is 1.42, 0.85, 0.78,
0.74, 0.71, 0.69 over the first 600 steps, with the pre-norm spread steady at 0.24–0.31.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from moladapt.data.featurize import Featurizer
from moladapt.models.encoders import Encoder
from moladapt.pretrain import graph_ops
from moladapt.pretrain.objectives.base import OBJECTIVES, PretrainObjective, zero_loss
from moladapt.types import GraphBatch


@dataclass
class EdgePairs:
    batch: GraphBatch
    positive: Tensor  # [2, P]
    negative: Tensor  # [2, Q], Q <= P


def sample_non_edges(
    batch: GraphBatch, graph_of_pair: Tensor, generator: torch.Generator, rounds: int = 10
) -> Tensor:
    """One random non-bonded distinct atom pair in graph ``graph_of_pair[i]`` for each i.

    Pairs still failing after ``rounds`` rejection rounds are dropped. ``[2, <= len]``.
    """
    n = batch.num_nodes
    device = batch.x.device
    sizes = graph_ops.graph_sizes(batch)
    ptr = graph_ops.graph_ptr(batch)
    existing = batch.edge_index[0] * n + batch.edge_index[1]
    g = graph_of_pair
    size, start = sizes[g], ptr[g]
    u = start + (graph_ops.rand(len(g), generator, device) * size).long()
    v = start + (graph_ops.rand(len(g), generator, device) * size).long()
    for _ in range(rounds):
        bad = (u == v) | torch.isin(u * n + v, existing)
        if not bool(bad.any()):
            break
        k = int(bad.sum())
        u[bad] = start[bad] + (graph_ops.rand(k, generator, device) * size[bad]).long()
        v[bad] = start[bad] + (graph_ops.rand(k, generator, device) * size[bad]).long()
    good = (u != v) & ~torch.isin(u * n + v, existing)
    return torch.stack([u[good], v[good]])


@OBJECTIVES.register("edge_prediction")
class EdgePrediction(PretrainObjective):
    """Bond vs sampled non-bond classification by dot product; see the module docstring."""

    name = "edge_prediction"
    recipe_version = 2  # 2: scores scaled by 1/sqrt(d) by default
    earlier_recipes = {1: {"scale_by_sqrt_dim": False}}  # 1: pretrain-gnns' plain dot product

    def __init__(self, featurizer: Featurizer, out_dim: int, scale_by_sqrt_dim: bool = True) -> None:
        super().__init__(featurizer, out_dim)
        self.scale_by_sqrt_dim = bool(scale_by_sqrt_dim)
        self.hparams = {"scale_by_sqrt_dim": self.scale_by_sqrt_dim}

    def transform(self, batch: GraphBatch, generator: torch.Generator) -> EdgePairs:
        src, dst = batch.edge_index
        positive = batch.edge_index[:, src < dst]
        negative = sample_non_edges(batch, batch.batch[positive[0]], generator)
        return EdgePairs(batch, positive, negative)

    def loss(self, encoder: Encoder, transformed: EdgePairs) -> Tensor:
        if transformed.positive.shape[1] == 0:
            return zero_loss(transformed.batch.x.device)
        h = encoder.node_embeddings(transformed.batch)
        if self.scale_by_sqrt_dim:
            h = h / h.shape[1] ** 0.25  # (h_u / d^¼)·(h_v / d^¼) = h_u·h_v / √d
        pos = (h[transformed.positive[0]] * h[transformed.positive[1]]).sum(-1)
        loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
        if transformed.negative.shape[1] > 0:
            neg = (h[transformed.negative[0]] * h[transformed.negative[1]]).sum(-1)
            loss = loss + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))
        return loss
