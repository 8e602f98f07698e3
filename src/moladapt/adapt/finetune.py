"""Fine-tuning baselines: adapt a (pretrained) encoder to each task from its support set.

The rule, identical for every mode and every task: a new head (seeded), ``steps``
full-batch Adam steps on the whole support set (BCE, positives weighted by the support
balance), nothing else — no validation split, no early stopping, no look at the query.
The last iterate is the predictor. Modes:

* ``"full"``: the encoder (a copy) and a linear head are both trained; the encoder runs in
  train mode (BatchNorm batch statistics, dropout as configured), learning rate
  ``encoder_lr`` for the encoder and ``lr`` for the head.
* ``"frozen"``: a linear probe — logistic regression (one ``Linear``) on the frozen
  encoder's embeddings (eval mode, computed once).
* ``"head"``: an MLP head (``hidden_dims``, ReLU) on the frozen encoder's embeddings.

There is no meta-training: :meth:`FineTune.meta_train` is a no-op (pretrain the encoder
elsewhere). Predictions run in eval mode (running statistics, no dropout).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from moladapt.adapt.base import (
    ADAPTERS,
    Adapter,
    ModulePredictor,
    balanced_bce,
    embed,
    full_batch,
    labels_tensor,
    new_head,
    support_pos_weight,
)
from moladapt.models.heads import MolecularModel
from moladapt.types import MolGraphs
from moladapt.utils import adam

__all__ = ["FINETUNE_MODES", "FineTune"]

FINETUNE_MODES = ("full", "frozen", "head")


@ADAPTERS.register("finetune")
class FineTune(Adapter):
    """Fine-tune on the support set for a fixed number of Adam steps (see the module docstring).

    Args:
        mode: ``"full"``, ``"frozen"`` (linear probe) or ``"head"`` (MLP on frozen features).
        steps: Adam steps (full batch) on the support set.
        lr: head learning rate.
        encoder_lr: encoder learning rate in ``"full"`` mode (default ``lr / 10``).
        weight_decay: Adam weight decay (L2) on all trained parameters.
        hidden_dims: hidden widths of the ``"head"`` mode's MLP.
        seed: head initialisation and dropout randomness.
    """

    def __init__(
        self,
        mode: str = "full",
        steps: int = 100,
        lr: float = 5e-3,
        encoder_lr: float | None = None,
        weight_decay: float = 0.0,
        hidden_dims: Sequence[int] = (128,),
        seed: int = 0,
    ) -> None:
        self.mode = mode
        self.steps = steps
        self.lr = lr
        self.encoder_lr = encoder_lr
        self.weight_decay = weight_decay
        self.hidden_dims = hidden_dims
        self.seed = seed

    def adapt(
        self, encoder: nn.Module, support_graphs: MolGraphs, support_y: np.ndarray
    ) -> ModulePredictor:
        if self.mode not in FINETUNE_MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of: {', '.join(FINETUNE_MODES)}")
        enc = copy.deepcopy(encoder)
        for p in enc.parameters():
            p.grad = None
        out_dim = int(encoder.out_dim)  # type: ignore[arg-type]
        hidden = tuple(self.hidden_dims) if self.mode == "head" else ()
        head = new_head(out_dim, enc, self.seed, hidden)
        y = labels_tensor(support_y, head)
        pos_weight = support_pos_weight(y)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if self.mode == "full":
                model = MolecularModel(enc, head)  # type: ignore[arg-type]
                model.train()
                batch = full_batch(support_graphs, model)
                enc_lr = self.lr / 10 if self.encoder_lr is None else self.encoder_lr
                optimiser = adam(
                    [{"params": list(enc.parameters()), "lr": enc_lr},
                     {"params": list(head.parameters()), "lr": self.lr}],
                    lr=self.lr, weight_decay=self.weight_decay,
                )
                for _ in range(int(self.steps)):
                    optimiser.zero_grad(set_to_none=True)
                    balanced_bce(model(batch), y, pos_weight).backward()
                    optimiser.step()
            else:
                enc.eval()
                for p in enc.parameters():
                    p.requires_grad_(False)
                z = embed(enc, support_graphs)
                head.train()
                optimiser = adam(
                    head.parameters(), lr=self.lr, weight_decay=self.weight_decay
                )
                for _ in range(int(self.steps)):
                    optimiser.zero_grad(set_to_none=True)
                    balanced_bce(head(z), y, pos_weight).backward()
                    optimiser.step()
        for p in [*enc.parameters(), *head.parameters()]:
            p.grad = None
        return ModulePredictor(MolecularModel(enc, head))  # type: ignore[arg-type]


@ADAPTERS.register("linear_probe")
class LinearProbe(FineTune):
    """:class:`FineTune` with ``mode="frozen"``: logistic regression on frozen embeddings."""

    def __init__(
        self,
        mode: str = "frozen",
        steps: int = 100,
        lr: float = 5e-3,
        encoder_lr: float | None = None,
        weight_decay: float = 0.0,
        hidden_dims: Sequence[int] = (128,),
        seed: int = 0,
    ) -> None:
        super().__init__(mode, steps, lr, encoder_lr, weight_decay, hidden_dims, seed)
