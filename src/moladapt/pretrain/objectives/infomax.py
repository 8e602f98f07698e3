"""Deep Graph Infomax for graph batches (Veličković et al., "Deep Graph Infomax", ICLR 2019).

As pretrain-gnns ``chem/pretrain_deepgraphinfomax.py``: the summary of graph ``g`` is
:math:`s_g = \\sigma\\big(\\mathrm{mean}_{v \\in g} h_v\\big)`; a bilinear discriminator
scores node/summary pairs, :math:`D(h, s) = h^\\top W s`. Positives pair each atom with its
own graph's summary, negatives with the summary of the next graph in the batch (cyclic
shift; the batch needs at least 2 graphs):

.. math::
    \\mathcal{L} = \\mathrm{BCE}\\big(\\sigma(h_v^\\top W s_{g(v)}), 1\\big)
    + \\mathrm{BCE}\\big(\\sigma(h_v^\\top W s_{g(v)+1 \\bmod B}), 0\\big)

Shapes: ``h [N, out_dim]``, ``s [B, out_dim]``, ``W [out_dim, out_dim]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.pool import global_mean_pool

from moladapt.data.featurize import Featurizer
from moladapt.models.encoders import Encoder
from moladapt.pretrain.objectives.base import OBJECTIVES, PretrainObjective, zero_loss
from moladapt.types import GraphBatch


@OBJECTIVES.register("infomax")
class Infomax(PretrainObjective):
    """DGI with a bilinear discriminator; see the module docstring."""

    name = "infomax"

    def __init__(self, featurizer: Featurizer, out_dim: int) -> None:
        super().__init__(featurizer, out_dim)
        self.weight = nn.Parameter(torch.empty(self.out_dim, self.out_dim))
        bound = 1.0 / math.sqrt(self.out_dim)
        nn.init.uniform_(self.weight, -bound, bound)

    def discriminate(self, h: Tensor, summary: Tensor) -> Tensor:
        """``D(h, s) = h^T W s`` row-wise: ``[N, d], [N, d] -> [N]``."""
        return (h * (summary @ self.weight.t())).sum(-1)

    def loss(self, encoder: Encoder, transformed: GraphBatch) -> Tensor:
        batch = transformed
        if batch.num_graphs < 2:
            return zero_loss(batch.x.device)
        h = encoder.node_embeddings(batch)
        summary = torch.sigmoid(global_mean_pool(h, batch.batch, batch.num_graphs))
        shifted = torch.roll(summary, shifts=-1, dims=0)
        pos = self.discriminate(h, summary[batch.batch])
        neg = self.discriminate(h, shifted[batch.batch])
        return F.binary_cross_entropy_with_logits(
            pos, torch.ones_like(pos)
        ) + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))
