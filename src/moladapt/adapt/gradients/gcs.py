"""``gcs``: gradient cosine similarity (Du et al., "Adapting Auxiliary Losses Using Gradient
Similarity", arXiv:1812.02224, 2018; used as GCS by Dey & Ning, J Cheminform 16:85, 2024).

An auxiliary gradient is used only as far as it points the same way as the target gradient:

.. math::
    \\cos_i = \\frac{g_t^\\top g_i}{\\max(\\|g_t\\| \\|g_i\\|, \\epsilon)}, \\qquad
    d = g_t + \\sum_{i \\ne t} w_i \\max(0, \\cos_i)\\, g_i, \\qquad
    c_i = w_i \\max(0, \\cos_i)

This is Du et al.'s *weighted* variant (their Algorithm 1 with
:math:`\\lambda = \\max(0, \\cos)`), the default; ``weighted=False`` gives their unweighted
variant, :math:`c_i = w_i \\mathbb 1[\\cos_i > 0]` (add the auxiliary gradient unchanged when
it does not conflict, drop it otherwise). An opposite or orthogonal auxiliary gradient is
dropped in both; a zero one has cosine 0 and is dropped.

Shapes: ``grads [T, P]``, ``weights [T]`` → ``direction [P]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from moladapt.adapt.gradients.base import COMBINERS, DEFAULT_EPS, GradientCombiner


@COMBINERS.register("gcs")
class GCSCombiner(GradientCombiner):
    """:math:`d = g_t + \\sum_i w_i \\max(0, \\cos(g_t, g_i)) g_i` (see the module docstring).

    Args:
        weighted: scale by the cosine (default) or by the indicator ``cos > 0``.
        eps: division guard for zero gradients.
    """

    name = "gcs"

    def __init__(self, weighted: bool = True, eps: float = DEFAULT_EPS) -> None:
        super().__init__(eps=eps)
        self.weighted = bool(weighted)

    def combine(
        self, grads: Tensor, target: int, weights: Tensor, cosines: Tensor
    ) -> tuple[Tensor, Tensor]:
        gate = cosines.clamp(min=0.0) if self.weighted else (cosines > 0).to(grads.dtype)
        is_target = torch.arange(grads.shape[0], device=grads.device) == target
        coefficients = torch.where(is_target, torch.ones_like(gate), weights * gate)
        return coefficients @ grads, coefficients
