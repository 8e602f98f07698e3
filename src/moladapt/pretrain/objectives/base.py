"""The interface every self-supervised (or supervised) pretraining objective implements.

An objective is an ``nn.Module`` holding its own prediction heads (so the trainer's
optimizer trains them and checkpoints save them) with two steps:

* ``transform(batch, generator)``: batch-level corruption / augmentation / target
  extraction on tensors (random numbers only from ``generator``);
* ``loss(encoder, transformed)``: runs the shared ``encoder`` (and the heads) and
  returns a scalar loss.

``objective(encoder, batch, generator)`` does both. Objectives are registered in
:data:`OBJECTIVES` and built with :func:`build_objective`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from moladapt.data.featurize import Featurizer
from moladapt.models.encoders import Encoder
from moladapt.registry import Registry
from moladapt.types import GraphBatch


class PretrainObjective(nn.Module):
    """Base class. Subclasses set ``name`` and implement :meth:`transform` and :meth:`loss`.

    Args:
        featurizer: the featurizer of the batches (vocabulary sizes, MASK indices).
        out_dim: width of the encoder's node / graph embeddings (``encoder.out_dim``).

    Attributes:
        hparams: the keyword options given to the constructor (plain values), recorded in
            pretraining checkpoints so the objective can be rebuilt.
        needs_labels: whether batches must carry ``y`` (only ``supervised``).
        recipe_version: bumped when the objective's default behaviour changes, so encoders
            pretrained under the old recipe are not reused as if they were the new one.
    """

    name: ClassVar[str] = ""
    needs_labels: ClassVar[bool] = False
    recipe_version: ClassVar[int] = 1

    def __init__(self, featurizer: Featurizer, out_dim: int) -> None:
        super().__init__()
        self.featurizer = featurizer
        self.out_dim = int(out_dim)
        self.hparams: dict[str, Any] = {}

    @classmethod
    def from_encoder(
        cls, featurizer: Featurizer, encoder: Encoder, **options: Any
    ) -> PretrainObjective:
        """Build for ``encoder`` (objectives needing more than ``out_dim`` override this)."""
        return cls(featurizer, encoder.out_dim, **options)

    def transform(self, batch: GraphBatch, generator: torch.Generator) -> Any:
        """Corrupt / augment ``batch``; default: unchanged."""
        return batch

    def loss(self, encoder: Encoder, transformed: Any) -> Tensor:
        raise NotImplementedError

    def forward(self, encoder: Encoder, batch: GraphBatch, generator: torch.Generator) -> Tensor:
        return self.loss(encoder, self.transform(batch, generator))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, hparams={self.hparams}"


OBJECTIVES: Registry[type[PretrainObjective]] = Registry("pretrain objective")

# the short names of the pretrain-gnns / Dey & Ning command lines
OBJECTIVE_ALIASES = {"attrmask": "attribute_masking", "masking": "attribute_masking",
                     "contextpred": "context_prediction", "edgepred": "edge_prediction",
                     "contrastive": "graphcl", "dgi": "infomax"}


def canonical_objective(name: str) -> str:
    """The registered name for ``name`` or one of its short aliases (``attrmask`` → ``attribute_masking``)."""
    key = name.strip()
    return OBJECTIVE_ALIASES.get(key.lower(), key)


def build_objective(
    name: str, featurizer: Featurizer, encoder: Encoder, **options: Any
) -> PretrainObjective:
    """The objective registered as ``name``, sized for ``encoder`` and ``featurizer``."""
    return OBJECTIVES.get(name).from_encoder(featurizer, encoder, **options)


def zero_loss(device: torch.device | str) -> Tensor:
    """The loss of a batch an objective has nothing to learn from (no gradient)."""
    return torch.zeros((), device=device)
