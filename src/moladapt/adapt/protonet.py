"""Prototypical networks (Snell, Swersky & Zemel, NeurIPS 2017) for binary molecular tasks.

A class prototype is the mean support embedding of the class; a molecule's class
probabilities are a softmax over negative distances to the two prototypes,

.. math:: p(y = 1 \\mid x) = \\frac{e^{-d(z, c_1)}}{e^{-d(z, c_0)} + e^{-d(z, c_1)}}
    = \\sigma\\big(d(z, c_0) - d(z, c_1)\\big).

Distances:

* ``"euclidean"`` (default): the *squared* Euclidean distance, as Snell et al. use.
* ``"mahalanobis"``: :math:`(z - c)^\\top \\Sigma^{-1} (z - c)` with one :math:`\\Sigma` for both
  classes, the pooled within-class covariance :math:`S` of the support embeddings shrunk
  towards a scaled identity, :math:`\\Sigma = (1 - \\lambda) S + \\lambda \\tfrac{\\operatorname{tr} S}{d} I`
  (needed: with k ≪ d, :math:`S` is singular); scale-free. With one support molecule per
  class :math:`S = 0`, and the whole support's covariance stands in for it.
* ``"class_mahalanobis"``: FS-Mol's ProtoNet distance (Stanley et al. 2021, after Simple
  CNAPS, Bateni et al. CVPR 2020): one covariance per class,
  :math:`\\Sigma_c = \\lambda_c S_c + (1 - \\lambda_c) S_{\\text{task}} + \\beta I` with
  :math:`S_c` the covariance of class :math:`c`'s support embeddings, :math:`S_{\\text{task}}`
  that of the whole support set, :math:`\\lambda_c = \\min(n_c / (n_c + 1), 0.1)` and
  :math:`\\beta = 0.1` (absolute, not relative to the embeddings' scale, as in FS-Mol's code);
  ``shrinkage`` is not used.

Meta-training (optional, ``meta_steps > 0``): episodic training of the encoder with the
cross-entropy of these probabilities on the query (unweighted, as Snell et al.), encoder in
train mode, support and query embedded in one batch (shared batch-norm statistics).
Adaptation and prediction use the encoder in eval mode (running statistics); adaptation has
no parameters to fit, only prototypes (and Σ) to compute.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moladapt.adapt.base import (
    ADAPTERS,
    Adapter,
    MetaCheckpoint,
    MetaValidation,
    TaskFeatureCache,
    TrainingEpisode,
    embed,
    labels_tensor,
    meta_training_stream,
    run_outer_loop,
)
from moladapt.data.featurize import Featurizer
from moladapt.types import GraphBatch, MolGraphs, Task
from moladapt.utils import autocast

__all__ = ["DISTANCES", "ProtoNet", "ProtoPredictor", "prototype_logits"]

DISTANCES = ("euclidean", "mahalanobis", "class_mahalanobis")
#: FS-Mol's class-covariance weight cap and ridge (``class_mahalanobis``).
CLASS_WEIGHT_CAP, CLASS_RIDGE = 0.1, 0.1


def _covariance(z: Tensor) -> Tensor:
    """Sample covariance ``[d, d]`` of the rows of ``z`` (zero for a single row)."""
    centred = z - z.mean(0, keepdim=True)
    return centred.T @ centred / max(z.shape[0] - 1, 1)


def _metric(z_support: Tensor, y: Tensor, distance: str, shrinkage: float) -> tuple[Tensor, Tensor | None]:
    """Prototypes ``[2, d]`` (row 0: negatives, row 1: positives) and the Cholesky factor(s)
    of the covariance: ``None`` (Euclidean), ``[d, d]`` shared (``mahalanobis``) or
    ``[2, d, d]`` one per class (``class_mahalanobis``).

    Σ is positive definite in exact arithmetic, but with large embeddings (norms ~1e4, as
    FS-Mol's summed readout gives) float32 rounding of the rank-deficient covariance exceeds
    ``class_mahalanobis``' fixed ridge of 0.1 and the factorisation fails; the metric is then
    computed again from float64 embeddings (and returned in float64). Where float32 succeeds
    nothing changes.
    """
    protos, chol, failed = _metric_at(z_support, y, distance, shrinkage)
    if failed and z_support.dtype != torch.float64:
        protos, chol, failed = _metric_at(z_support.double(), y, distance, shrinkage)
    if failed:
        finite = bool(torch.isfinite(z_support).all())
        raise ValueError(
            f"ProtoNet: the {distance} covariance of the support embeddings is not positive "
            "definite even in float64" + ("" if finite else " (the embeddings are not finite: "
                                             "did training diverge?)"))
    return protos, chol


def _metric_at(z_support: Tensor, y: Tensor, distance: str,
               shrinkage: float) -> tuple[Tensor, Tensor | None, bool]:
    """:func:`_metric` in ``z_support``'s precision; the flag says the Cholesky failed."""
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; choose one of: {', '.join(DISTANCES)}")
    pos = y.reshape(-1) > 0.5
    if not bool(pos.any()) or bool(pos.all()):
        raise ValueError("the support set needs at least one molecule of each class")
    classes = (z_support[~pos], z_support[pos])
    protos = torch.stack([z.mean(0) for z in classes])
    if distance == "euclidean":
        return protos, None, False
    d = z_support.shape[1]
    eye = torch.eye(d, dtype=z_support.dtype, device=z_support.device)
    if distance == "class_mahalanobis":
        task_cov = _covariance(z_support)
        sigmas = []
        for z in classes:
            weight = min(z.shape[0] / (z.shape[0] + 1), CLASS_WEIGHT_CAP)
            sigmas.append(weight * _covariance(z) + (1 - weight) * task_cov + CLASS_RIDGE * eye)
        chol, info = torch.linalg.cholesky_ex(torch.stack(sigmas))
        return protos, chol, bool(info.any())
    centred = z_support - protos[pos.long()]
    n = z_support.shape[0]
    cov = centred.T @ centred / max(n - 2, 1)
    if n <= 2 or float(torch.trace(cov).detach()) <= 0.0:
        # one molecule per class leaves no within-class spread: the whole support's covariance
        # is the only scale there is (without it Σ would be ~1e-6·I and logits ~1e6× Euclidean)
        cov = _covariance(z_support)
    scale = torch.clamp(torch.trace(cov) / d, min=1e-12)
    sigma = (1 - shrinkage) * cov + shrinkage * scale * eye + 1e-6 * scale * eye
    chol, info = torch.linalg.cholesky_ex(sigma)
    return protos, chol, bool(info.any())


def _sq_distances(z: Tensor, protos: Tensor, chol: Tensor | None) -> Tensor:
    """``[n, 2]`` squared distances of embeddings ``z [n, d]`` to the two prototypes."""
    diff = z[:, None, :] - protos[None, :, :]  # [n, 2, d]
    if chol is None:
        return (diff**2).sum(-1)
    if chol.dim() == 3:  # one covariance per class: whiten each class's differences by its own
        white = torch.linalg.solve_triangular(chol, diff.permute(1, 2, 0), upper=False)  # [2, d, n]
        return (white**2).sum(1).T
    n = diff.shape[0]
    flat = diff.reshape(-1, diff.shape[-1]).T  # [d, 2n]
    white = torch.linalg.solve_triangular(chol, flat, upper=False)
    return (white**2).sum(0).reshape(n, 2)


def prototype_logits(
    z_support: Tensor, y_support: Tensor, z_query: Tensor,
    distance: str = "euclidean", shrinkage: float = 0.5,
) -> Tensor:
    """Log-odds of the positive class, ``d(z, c_0) - d(z, c_1)``, for each query embedding."""
    protos, chol = _metric(z_support, y_support, distance, shrinkage)
    dist = _sq_distances(z_query.to(protos.dtype), protos, chol)
    return (dist[:, 0] - dist[:, 1]).to(z_query.dtype)


class ProtoPredictor:
    """A frozen encoder and the two prototypes (and Σ) of one task."""

    def __init__(self, encoder: nn.Module, protos: Tensor, chol: Tensor | None) -> None:
        self.encoder = encoder.eval()
        self.prototypes = protos
        self.chol = chol

    @torch.no_grad()
    def decision_function(self, graphs: MolGraphs) -> np.ndarray:
        """The logit d(z, c₀) − d(z, c₁) ``[len(graphs)]`` float64, unsaturated (Mahalanobis
        distances reach logits far above the ~37 where a probability becomes exactly 1)."""
        z = embed(self.encoder, graphs)
        dist = _sq_distances(z.to(self.prototypes.dtype), self.prototypes, self.chol).double()
        return (dist[:, 0] - dist[:, 1]).cpu().numpy()

    def predict_proba(self, graphs: MolGraphs) -> np.ndarray:
        # softmax over negative distances, column 1 = positive class: the sigmoid of the logit
        from scipy.special import expit

        return expit(self.decision_function(graphs))


@ADAPTERS.register("protonet")
class ProtoNet(Adapter):
    """Prototypical network (see the module docstring).

    Args:
        distance: ``"euclidean"`` (squared), ``"mahalanobis"`` or ``"class_mahalanobis"``
            (FS-Mol's; see the module docstring).
        shrinkage: λ of the ``mahalanobis`` covariance (in ``[0, 1]``; unused otherwise).
        meta_steps: episodic meta-training steps (0: use the encoder as given).
        meta_batch_size, meta_lr, train_k, query_size, grad_clip, seed, min_query: as for MAML.
        precision: ``"fp32"`` or ``"bf16"``: bfloat16 autocast of the encoder's forward passes
            in meta-training (mixed precision: weights, Adam and the distances stay float32;
            1.1–1.3× faster per step measured on this project's AVX512-BF16 CPU).
            Adaptation is always float32.
    """

    def __init__(
        self,
        distance: str = "euclidean",
        shrinkage: float = 0.5,
        meta_steps: int = 300,
        meta_batch_size: int = 4,
        meta_lr: float = 1e-3,
        train_k: int = 16,
        query_size: int = 64,
        grad_clip: float | None = 10.0,
        seed: int = 0,
        precision: str = "fp32",
        min_query: int = 16,
    ) -> None:
        self.distance = distance
        self.shrinkage = shrinkage
        self.meta_steps = meta_steps
        self.meta_batch_size = meta_batch_size
        self.meta_lr = meta_lr
        self.train_k = train_k
        self.query_size = query_size
        self.grad_clip = grad_clip
        self.seed = seed
        self.precision = precision
        self.min_query = min_query

    def meta_train(
        self,
        encoder: nn.Module,
        train_tasks: Sequence[Task],
        featurizer: str | Featurizer | TaskFeatureCache = "basic",
        validation: MetaValidation | None = None,
        checkpoint: MetaCheckpoint | None = None,
    ) -> ProtoNet:
        if self.meta_steps <= 0:
            return self
        stream = meta_training_stream(self, train_tasks, featurizer)
        self.skipped_tasks_ = dict(stream.skipped)  # too small for a train_k episode
        device = next(encoder.parameters()).device
        autocast(device, self.precision)  # an unknown precision fails before any training
        was_training = encoder.training
        encoder.train()

        def episode_loss(ep: TrainingEpisode) -> Tensor:
            with autocast(device, self.precision):
                # one pass: two would centre each set on itself, shifting queries against prototypes
                z = encoder(GraphBatch.cat([ep.support, ep.query]))
            z_support, z_query = z[: ep.support.num_graphs], z[ep.support.num_graphs :]
            dtype = next(encoder.parameters()).dtype  # the distances (Cholesky) need full precision
            logits = prototype_logits(
                z_support.to(dtype), ep.support_y, z_query.to(dtype), self.distance, self.shrinkage
            )
            return F.binary_cross_entropy_with_logits(logits, ep.query_y.to(logits.dtype))

        try:
            run_outer_loop(self, list(encoder.parameters()), stream, episode_loss, encoder,
                           encoder, [encoder], validation, checkpoint)
        finally:
            encoder.train(was_training)
        return self

    def adapt(
        self, encoder: nn.Module, support_graphs: MolGraphs, support_y: np.ndarray
    ) -> ProtoPredictor:
        frozen = copy.deepcopy(encoder).eval()
        for p in frozen.parameters():
            p.requires_grad_(False)
            p.grad = None
        z = embed(frozen, support_graphs)
        protos, chol = _metric(z, labels_tensor(support_y, frozen), self.distance, self.shrinkage)
        return ProtoPredictor(frozen, protos, chol)
