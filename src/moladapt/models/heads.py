"""Prediction heads and the encoder + head model.

The default head is a single linear layer on the graph embedding, as pretrain-gnns'
``graph_pred_linear`` (Hu et al., ICLR 2020); ``hidden_dims`` turns it into an MLP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from moladapt.models.encoders import Encoder
from moladapt.types import GraphBatch


class PredictionHead(nn.Module):
    """Graph embedding → one logit (classification) or value (regression) per task.

    .. math::
        \\hat y = W_{K} \\,\\mathrm{Dropout}(\\mathrm{ReLU}(W_{K-1} \\cdots
        \\mathrm{Dropout}(\\mathrm{ReLU}(W_1 z + b_1)) \\cdots)) + b_K

    With ``hidden_dims=()`` (default) it is one ``Linear(in_dim, num_tasks)`` and
    ``dropout`` is unused; otherwise each hidden layer is Linear → ReLU → Dropout.

    Shapes: ``[B, in_dim]`` → ``[B, num_tasks]``.

    Attributes:
        in_dim, num_tasks: as given.
        hparams: the constructor arguments, so ``PredictionHead(**head.hparams)`` rebuilds it.
    """

    def __init__(
        self,
        in_dim: int,
        num_tasks: int,
        hidden_dims: Sequence[int] = (),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if in_dim < 1 or num_tasks < 1:
            raise ValueError(f"in_dim and num_tasks must be >= 1, got {in_dim}, {num_tasks}")
        self.in_dim, self.num_tasks = int(in_dim), int(num_tasks)
        self.hparams: dict[str, Any] = {
            "in_dim": self.in_dim,
            "num_tasks": self.num_tasks,
            "hidden_dims": [int(h) for h in hidden_dims],
            "dropout": float(dropout),
        }
        layers: list[nn.Module] = []
        width = self.in_dim
        for h in hidden_dims:
            layers += [nn.Linear(width, int(h)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(h)
        layers.append(nn.Linear(width, self.num_tasks))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class MolecularModel(nn.Module):
    """``head(encoder(batch))``: a :class:`GraphBatch` of B molecules → ``[B, num_tasks]``.

    Outputs are raw logits (classification) or values (regression); the loss decides.
    """

    def __init__(self, encoder: Encoder, head: PredictionHead) -> None:
        super().__init__()
        if encoder.out_dim != head.in_dim:
            raise ValueError(
                f"head.in_dim={head.in_dim} does not match encoder.out_dim={encoder.out_dim}"
            )
        self.encoder = encoder
        self.head = head

    def embed(self, batch: GraphBatch) -> Tensor:
        """Graph embeddings, ``[B, encoder.out_dim]``."""
        return self.encoder(batch)

    def forward(self, batch: GraphBatch) -> Tensor:
        return self.head(self.encoder(batch))
