"""``gns``: gradient norm scaling (Dey & Ning, "Enhancing molecular property prediction with
auxiliary learning and task-specific adaptation", J Cheminform 16:85, 2024, Sec. "GNS").

An auxiliary gradient larger than the target gradient is scaled down to the target's norm,
so no auxiliary task can dominate the update; smaller ones are left as they are:

.. math::
    s_i = \\min\\Big(1, \\frac{\\|g_t\\|}{\\max(\\|g_i\\|, \\epsilon)}\\Big), \\qquad
    d = g_t + \\sum_{i \\ne t} w_i\\, s_i\\, g_i, \\qquad c_i = w_i s_i

so :math:`\\|c_i g_i\\| \\le w_i \\|g_t\\|`. A zero auxiliary gradient gets :math:`s_i = 1`
(and contributes nothing); a zero *target* gradient gives :math:`s_i = 0` for every
auxiliary task (the update is zero: the equation taken literally).

Shapes: ``grads [T, P]``, ``weights [T]`` → ``direction [P]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from moladapt.adapt.gradients.base import COMBINERS, GradientCombiner


def gns_scale(grads: Tensor, target: int, eps: float) -> Tensor:
    """:math:`s_k = \\min(1, \\|g_t\\| / \\max(\\|g_k\\|, \\epsilon))`; ``[T, P]`` → ``[T]``."""
    norms = grads.norm(dim=1)
    return torch.clamp(norms[target] / norms.clamp_min(eps), max=1.0)


@COMBINERS.register("gns")
class GNSCombiner(GradientCombiner):
    """:math:`d = g_t + \\sum_i w_i \\min(1, \\|g_t\\|/\\|g_i\\|)\\, g_i` (see the module docstring)."""

    name = "gns"

    def combine(
        self, grads: Tensor, target: int, weights: Tensor, cosines: Tensor
    ) -> tuple[Tensor, Tensor]:
        scale = gns_scale(grads, target, self.eps)
        is_target = torch.arange(grads.shape[0], device=grads.device) == target
        coefficients = torch.where(is_target, torch.ones_like(scale), weights * scale)
        return coefficients @ grads, coefficients
