"""``sum``: plain (weighted) sum of the target and auxiliary gradients — the baseline.

.. math:: d = g_t + \\sum_{i \\ne t} w_i \\, g_i, \\qquad c_i = w_i

which is the gradient of :math:`\\mathcal L_t + \\sum_i w_i \\mathcal L_i` (joint training
with fixed loss weights, ``w_i = 1`` by default).

Shapes: ``grads [T, P]``, ``weights [T]`` → ``direction [P]``.
"""

from __future__ import annotations

from torch import Tensor

from moladapt.adapt.gradients.base import COMBINERS, GradientCombiner


@COMBINERS.register("sum")
class SumCombiner(GradientCombiner):
    """:math:`d = g_t + \\sum_{i \\ne t} w_i g_i` (see the module docstring)."""

    name = "sum"

    def combine(
        self, grads: Tensor, target: int, weights: Tensor, cosines: Tensor
    ) -> tuple[Tensor, Tensor]:
        return weights @ grads, weights
