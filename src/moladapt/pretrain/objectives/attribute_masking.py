"""Attribute masking (Hu et al., "Strategies for Pre-training Graph Neural Networks", ICLR 2020).

As pretrain-gnns ``chem/pretrain_masking.py`` with ``MaskAtom``: in each graph with
``n`` atoms, ``int(n * mask_rate + 1)`` atoms (at least one) are chosen uniformly; their
input features become ``(MASK, 0, ..., 0)`` and a linear head predicts the original atom
type from the encoder's node embedding:

.. math::
    \\mathcal{L}_{atom} = \\frac{1}{|M|} \\sum_{v \\in M}
    \\mathrm{CE}\\big(W_a h_v + b_a,\\; t_v\\big)

With ``mask_edges=True`` every bond incident to a masked atom also gets features
``(MASK, 0, ...)`` (both directions) and its type is predicted from the sum of the two
endpoint embeddings, each undirected bond once:

.. math::
    \\mathcal{L}_{bond} = \\frac{1}{|M_E|} \\sum_{(u, v) \\in M_E}
    \\mathrm{CE}\\big(W_b (h_u + h_v) + b_b,\\; s_{uv}\\big)

The loss is :math:`\\mathcal{L}_{atom} + \\mathcal{L}_{bond}`. Targets are the atom types
``0 .. size-2`` (MASK is never a target) and bond types ``0 .. size-3`` (no self-loop or
MASK). The original values live only in the targets, never in the corrupted input.

Shapes: ``h [N, out_dim]``; atom logits ``[|M|, atom_vocab - 1]``; bond logits
``[|M_E|, bond_vocab - 2]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moladapt.data.featurize import Featurizer
from moladapt.models.encoders import Encoder
from moladapt.pretrain import graph_ops
from moladapt.pretrain.objectives.base import OBJECTIVES, PretrainObjective
from moladapt.types import GraphBatch


@dataclass
class MaskedBatch:
    """A corrupted batch with its targets.

    Attributes:
        batch: the corrupted input.
        atom_index: ``[M]`` masked atoms; ``atom_target``: ``[M]`` their original types.
        bond_pairs: ``[2, M_E]`` masked bonds (one direction each); ``bond_target``: ``[M_E]``.
    """

    batch: GraphBatch
    atom_index: Tensor
    atom_target: Tensor
    bond_pairs: Tensor | None = None
    bond_target: Tensor | None = None


@OBJECTIVES.register("attribute_masking")
class AttributeMasking(PretrainObjective):
    """Masked atom-type (and optionally bond-type) prediction; see the module docstring.

    Args:
        mask_rate: fraction of atoms masked per graph (pretrain-gnns: 0.15).
        mask_edges: also mask and predict the bonds incident to masked atoms.
    """

    name = "attribute_masking"

    def __init__(
        self, featurizer: Featurizer, out_dim: int, mask_rate: float = 0.15, mask_edges: bool = False
    ) -> None:
        super().__init__(featurizer, out_dim)
        if not 0.0 <= mask_rate < 1.0:
            raise ValueError(f"mask_rate must be in [0, 1), got {mask_rate}")
        self.hparams = {"mask_rate": float(mask_rate), "mask_edges": bool(mask_edges)}
        self.mask_rate, self.mask_edges = float(mask_rate), bool(mask_edges)
        self.atom_mask_index = featurizer.atom_mask_index
        self.bond_mask_index = featurizer.bond_mask_index
        self.atom_head = nn.Linear(self.out_dim, featurizer.atom_mask_index)
        self.bond_head = (
            nn.Linear(self.out_dim, featurizer.bond_self_loop_index) if mask_edges else None
        )

    def transform(self, batch: GraphBatch, generator: torch.Generator) -> MaskedBatch:
        sizes = graph_ops.graph_sizes(batch)
        counts = torch.minimum((sizes * self.mask_rate + 1).long(), sizes)
        masked = graph_ops.random_nodes_per_graph(batch, counts, generator)
        atom_index = masked.nonzero().squeeze(1)
        atom_target = batch.x[atom_index, 0].clone()
        x = graph_ops.mask_atom_features(batch.x, masked, self.atom_mask_index)
        edge_attr, bond_pairs, bond_target = batch.edge_attr, None, None
        if self.mask_edges:
            src, dst = batch.edge_index
            emask = masked[src] | masked[dst]
            once = emask & (src < dst)
            bond_pairs = batch.edge_index[:, once]
            bond_target = batch.edge_attr[once, 0].clone()
            edge_attr = batch.edge_attr.clone()
            edge_attr[emask] = 0
            edge_attr[emask, 0] = self.bond_mask_index
        corrupted = GraphBatch(
            x=x,
            edge_index=batch.edge_index,
            edge_attr=edge_attr,
            batch=batch.batch,
            num_graphs=batch.num_graphs,
            y=batch.y,
        )
        return MaskedBatch(corrupted, atom_index, atom_target, bond_pairs, bond_target)

    def loss(self, encoder: Encoder, transformed: MaskedBatch) -> Tensor:
        h = encoder.node_embeddings(transformed.batch)
        loss = F.cross_entropy(self.atom_head(h[transformed.atom_index]), transformed.atom_target)
        if self.bond_head is not None and transformed.bond_pairs is not None:
            if transformed.bond_pairs.shape[1] > 0:
                u, v = transformed.bond_pairs
                loss = loss + F.cross_entropy(
                    self.bond_head(h[u] + h[v]), transformed.bond_target
                )
        return loss
