"""Supervised multi-task pretraining (Hu et al., ICLR 2020, ``chem/pretrain_supervised.py``).

A linear head on the pooled graph embedding predicts ``T`` binary tasks (e.g. the 1,310
ChEMBL assays of pretrain-gnns); missing labels (NaN) are ignored:

.. math::
    \\mathcal{L} = \\frac{1}{|P|} \\sum_{(g, t) \\in P}
    \\mathrm{BCE}\\big(\\sigma(w_t^\\top z_g + b_t),\\; y_{g,t}\\big)

with ``P`` the present (non-NaN) labels; computed by :func:`moladapt.training.masked_loss`.

Shapes: ``z [B, out_dim]`` → logits ``[B, T]``; ``batch.y [B, T]``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from moladapt.data.featurize import Featurizer
from moladapt.data.sources import CLASSIFICATION
from moladapt.models.encoders import Encoder
from moladapt.pretrain.objectives.base import OBJECTIVES, PretrainObjective
from moladapt.training import masked_loss
from moladapt.types import GraphBatch


@OBJECTIVES.register("supervised")
class Supervised(PretrainObjective):
    """Masked multi-task BCE with a linear head.

    Args:
        num_tasks: ``T``, the number of label columns (the trainer fills it from ``y``).
    """

    name = "supervised"
    needs_labels = True
    derived_options = ("num_tasks",)  # from the labels
    molecule_level = True  # a fingerprint-fused encoder can be pretrained with it

    def __init__(self, featurizer: Featurizer, out_dim: int, num_tasks: int = 1) -> None:
        super().__init__(featurizer, out_dim)
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        self.num_tasks = int(num_tasks)
        self.hparams = {"num_tasks": self.num_tasks}
        self.head = nn.Linear(self.out_dim, self.num_tasks)

    def transform(self, batch: GraphBatch, generator: torch.Generator) -> GraphBatch:
        if batch.y is None:
            raise ValueError("the supervised objective needs labels: pass y= to pretrain()")
        if batch.y.shape[1] != self.num_tasks:
            raise ValueError(f"labels have {batch.y.shape[1]} tasks, the head {self.num_tasks}")
        return batch

    def loss(self, encoder: Encoder, transformed: GraphBatch) -> Tensor:
        return masked_loss(self.head(encoder(transformed)), transformed.y, CLASSIFICATION)
