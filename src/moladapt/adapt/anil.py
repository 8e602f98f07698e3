"""ANIL: Almost No Inner Loop (Raghu, Raghu, Bengio & Vinyals, ICLR 2020).

MAML with the inner loop restricted to the head: the encoder is meta-learned by the outer
loop only and is never changed per task. Each task's support and query embeddings are
computed once; the inner loop (:func:`moladapt.adapt.maml.inner_adapt` on the head alone)
then costs a few small matrix products. Second-order by default (through the head's inner
loop into the encoder and the head initialisation); ``first_order=True`` drops those terms.

BatchNorm: during meta-training the encoder runs in train mode (batch statistics, running
statistics updated), as in ordinary training, over support and query in one batch: two passes
would centre each set on its own statistics, and the head would be fitted and scored on
differently shifted features. At adaptation time the encoder is frozen, so
it runs in eval mode (running statistics) for the support and the query alike: the head is
fitted on exactly the features it is applied to.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from moladapt.adapt.base import (
    ADAPTERS,
    Adapter,
    HeadMixin,
    MetaCheckpoint,
    MetaValidation,
    ModulePredictor,
    TaskFeatureCache,
    TrainingEpisode,
    balanced_bce,
    embed,
    labels_tensor,
    meta_training_stream,
    new_head,
    run_outer_loop,
    support_pos_weight,
)
from moladapt.adapt.maml import inner_adapt
from moladapt.data.featurize import Featurizer
from moladapt.models.heads import MolecularModel, PredictionHead
from moladapt.types import GraphBatch, MolGraphs, Task

__all__ = ["ANIL", "anil_query_loss"]


def anil_query_loss(
    encoder: nn.Module,
    head: nn.Module,
    head_params: dict[str, Tensor],
    episode: TrainingEpisode,
    steps: int,
    lr: float,
    first_order: bool = False,
) -> Tensor:
    """One task's ANIL meta-objective: one encoder pass over support ∪ query (shared batch-norm
    statistics; see the module docstring), inner loop on the head."""
    z = encoder(GraphBatch.cat([episode.support, episode.query]))
    z_support, z_query = z[: episode.support.num_graphs], z[episode.support.num_graphs :]
    pos_weight = support_pos_weight(episode.support_y)
    adapted = inner_adapt(
        head, head_params, {}, z_support, episode.support_y, steps, lr,
        create_graph=not first_order, pos_weight=pos_weight,
    )
    return balanced_bce(functional_call(head, adapted, (z_query,)), episode.query_y, pos_weight)


@ADAPTERS.register("anil")
class ANIL(HeadMixin, Adapter):
    """ANIL: meta-learned encoder + head initialisation, per-task adaptation of the head only.

    Hyper-parameters as :class:`moladapt.adapt.maml.MAML`; the head's inner loop is cheap,
    so ``inner_steps`` defaults higher.

    Attributes:
        head_: meta-learned head initialisation (``None`` before :meth:`meta_train`).
        history_: mean meta-batch query loss of every outer step.
    """

    def __init__(
        self,
        inner_steps: int = 10,
        inner_lr: float = 0.1,
        test_inner_steps: int | None = None,
        first_order: bool = False,
        meta_steps: int = 300,
        meta_batch_size: int = 4,
        meta_lr: float = 1e-3,
        train_k: int = 16,
        query_size: int = 64,
        grad_clip: float | None = 10.0,
        seed: int = 0,
        min_query: int = 16,
    ) -> None:
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.test_inner_steps = test_inner_steps
        self.first_order = first_order
        self.meta_steps = meta_steps
        self.meta_batch_size = meta_batch_size
        self.meta_lr = meta_lr
        self.train_k = train_k
        self.query_size = query_size
        self.grad_clip = grad_clip
        self.seed = seed
        self.min_query = min_query

    def meta_train(
        self,
        encoder: nn.Module,
        train_tasks: Sequence[Task],
        featurizer: str | Featurizer | TaskFeatureCache = "basic",
        validation: MetaValidation | None = None,
        checkpoint: MetaCheckpoint | None = None,
    ) -> ANIL:
        stream = meta_training_stream(self, train_tasks, featurizer)
        self.skipped_tasks_ = dict(stream.skipped)  # too small for a train_k episode
        head = self._train_head(encoder)
        was_training = encoder.training
        encoder.train()
        head.train()

        def episode_loss(ep: TrainingEpisode) -> Tensor:
            return anil_query_loss(
                encoder, head, dict(head.named_parameters()), ep,
                self.inner_steps, self.inner_lr, self.first_order,
            )

        try:
            run_outer_loop(self, [*encoder.parameters(), *head.parameters()], stream, episode_loss,
                           head, encoder, [encoder, head], validation, checkpoint)
        finally:
            encoder.train(was_training)
        return self

    def adapt(
        self, encoder: nn.Module, support_graphs: MolGraphs, support_y: np.ndarray
    ) -> ModulePredictor:
        frozen = copy.deepcopy(encoder).eval()
        for p in frozen.parameters():
            p.requires_grad_(False)
            p.grad = None
        out_dim = int(encoder.out_dim)  # type: ignore[arg-type]
        head: PredictionHead = (
            new_head(out_dim, encoder, self.seed) if self.head_ is None else copy.deepcopy(self.head_)
        )
        if head.in_dim != out_dim:
            raise ValueError(f"meta-trained head expects {head.in_dim}-d embeddings, encoder gives {out_dim}")
        z_support = embed(frozen, support_graphs)
        y = labels_tensor(support_y, head)
        params = {n: p.detach().clone().requires_grad_(True) for n, p in head.named_parameters()}
        steps = self.inner_steps if self.test_inner_steps is None else self.test_inner_steps
        head.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            adapted = inner_adapt(head, params, {}, z_support, y, steps, self.inner_lr, create_graph=False)
        with torch.no_grad():
            for name, p in head.named_parameters():
                p.copy_(adapted[name])
                p.grad = None
        return ModulePredictor(MolecularModel(frozen, head))  # type: ignore[arg-type]
