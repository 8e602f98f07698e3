"""``pcgrad``: projecting conflicting gradients (Yu et al., "Gradient Surgery for Multi-Task
Learning", NeurIPS 2020, arXiv:2001.06782), anchored on the target task by default.

**Target-anchored (default).** Only the target task matters, so only conflicts *with the
target* are removed: every auxiliary gradient that conflicts with :math:`g_t`
(:math:`g_i^\\top g_t < 0`) is projected onto the normal plane of :math:`g_t`; the target
gradient is never modified:

.. math::
    \\tilde g_i = g_i - \\frac{\\min(0,\\, g_i^\\top g_t)}{\\max(\\|g_t\\|^2, \\epsilon)}\\, g_t,
    \\qquad d = g_t + \\sum_{i \\ne t} w_i\\, \\tilde g_i, \\qquad c_i = w_i

Hence :math:`\\tilde g_i^\\top g_t \\ge 0` for every i and
:math:`d^\\top g_t \\ge \\|g_t\\|^2`: the update never conflicts with the target gradient.

**Symmetric (``symmetric=True``, Yu et al.'s Algorithm 1).** Every task, the target
included, is projected against each *other* task's original gradient in a random order
(drawn per task and per call):

.. math::
    g_k^{PC} \\leftarrow g_k; \\quad \\text{for } j \\in \\pi_k(\\{1..T\\} \\setminus \\{k\\}):
    \\ \\text{if } g_k^{PC\\top} g_j < 0:\\ g_k^{PC} \\leftarrow g_k^{PC} -
    \\frac{g_k^{PC\\top} g_j}{\\|g_j\\|^2} g_j; \\qquad d = \\sum_k w_k\\, g_k^{PC}

This treats all tasks as equals (the target gradient itself may be bent towards
auxiliary tasks), and the result depends on the order when T > 2, so it is the one
combiner with internal state: a ``torch.Generator`` seeded with ``seed`` and advanced by
every call (the sequence of orders is reproducible; :meth:`PCGrad.reseed` restarts it).
For T = 2 both variants agree on the auxiliary row; they differ in that the symmetric one
also projects :math:`g_t` when the two conflict.

Shapes: ``grads [T, P]``, ``weights [T]`` → ``direction [P]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from moladapt.adapt.gradients.base import (
    COMBINERS,
    DEFAULT_EPS,
    GradientCombiner,
    project_conflicting,
)


@COMBINERS.register("pcgrad")
class PCGrad(GradientCombiner):
    """PCGrad, target-anchored by default (see the module docstring for both variants).

    Args:
        symmetric: Yu et al.'s symmetric projection with a random order per call.
        seed: seed of the generator that draws those orders (``symmetric=True`` only).
        eps: division guard for zero gradients.
    """

    name = "pcgrad"

    def __init__(self, symmetric: bool = False, seed: int = 0, eps: float = DEFAULT_EPS) -> None:
        super().__init__(eps=eps)
        self.symmetric = bool(symmetric)
        self.seed = int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)

    def reseed(self, seed: int | None = None) -> None:
        """Restart the order sequence (from ``seed``, default the constructor's)."""
        self.seed = self.seed if seed is None else int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)

    def combine(
        self, grads: Tensor, target: int, weights: Tensor, cosines: Tensor
    ) -> tuple[Tensor, Tensor]:
        projected = (
            self._symmetric_projection(grads)
            if self.symmetric
            else project_conflicting(grads, target, self.eps)
        )
        return weights @ projected, weights

    def _symmetric_projection(self, grads: Tensor) -> Tensor:
        num_tasks = grads.shape[0]
        sq_norms = (grads * grads).sum(dim=1).clamp_min(self.eps)
        rows = []
        for k in range(num_tasks):
            g = grads[k]
            for j in torch.randperm(num_tasks, generator=self._generator).tolist():
                if j == k:
                    continue
                dot = g @ grads[j]
                g = g - torch.clamp(dot, max=0.0) / sq_norms[j] * grads[j]
            rows.append(g)
        return torch.stack(rows)
