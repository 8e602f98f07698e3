"""``rcgrad``: rotation of conflicting gradients (Dey & Ning, "Enhancing molecular property
prediction with auxiliary learning and task-specific adaptation", J Cheminform 16:85, 2024,
doi:10.1186/s13321-024-00880-7; arXiv:2401.16299).

RCGrad aligns auxiliary gradients that conflict with the target gradient by *rotating* them
towards it, and scales every auxiliary gradient by a combination of a norm-based scale
(GNS) and a learned task weight (from the bi-level outer loop of BLO+RCGrad). This module
implements it as:

.. math::
    \\tilde g_i = g_i - \\frac{\\min(0,\\, g_i^\\top g_t)}{\\max(\\|g_t\\|^2, \\epsilon)}\\, g_t
    \\qquad \\text{(conflicting } g_i \\text{ only; PCGrad's projection)}

.. math::
    s_i = \\min\\Big(1, \\frac{\\|g_t\\|}{\\max(\\|g_i\\|, \\epsilon)}\\Big), \\qquad
    c_i = \\tfrac12 (s_i + w_i), \\qquad
    d = g_t + \\sum_{i \\ne t} c_i\\, \\tilde g_i

with :math:`w_i \\in [0, 1]` passed as ``weights`` (default 1, i.e. plain RCGrad without
BLO: :math:`c_i = (s_i + 1)/2`).

Choices where the paper leaves room (made explicit here):

* *Rotation.* The paper describes RCGrad as learning to rotate conflicting auxiliary
  gradients into alignment with the target. Here the rotation is the closed-form one of
  PCGrad: :math:`\\tilde g_i` is :math:`g_i` turned (and shortened) in the plane spanned by
  :math:`g_i, g_t` until it is orthogonal to :math:`g_t` — the smallest change that removes
  the conflict; non-conflicting gradients are not rotated. No rotation matrix is learned.
* *Which norm in* :math:`s_i`. The GNS scale uses the norm of the *original* auxiliary
  gradient :math:`\\|g_i\\|`, not of :math:`\\tilde g_i` (projection only shortens, so the
  scaled row still satisfies :math:`\\|c_i \\tilde g_i\\| \\le \\|g_t\\|` when
  :math:`w_i \\le s_i`).
* *Which tasks are scaled.* The coefficient :math:`c_i` is applied to every auxiliary
  task, conflicting or not.
* *Averaging.* :math:`c_i` is the arithmetic mean of :math:`s_i` and :math:`w_i`, so with
  :math:`w_i = 0` an auxiliary task still contributes :math:`s_i/2` of its (projected)
  gradient; to switch a task off entirely, drop its row.

Zero gradients: a zero :math:`g_t` leaves every :math:`g_i` unprojected and gives
:math:`s_i = 0`, so :math:`c_i = w_i/2`; a zero :math:`g_i` contributes nothing.

Shapes: ``grads [T, P]``, ``weights [T]`` with values in [0, 1] → ``direction [P]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from moladapt.adapt.gradients.base import (
    COMBINERS,
    GradientCombiner,
    aux_mask,
    project_conflicting,
)
from moladapt.adapt.gradients.gns import gns_scale


@COMBINERS.register("rcgrad")
class RCGrad(GradientCombiner):
    """RCGrad: :math:`d = g_t + \\sum_i \\tfrac12(s_i + w_i)\\, \\tilde g_i` (see the module docstring).

    ``weights`` must lie in [0, 1] (entry ``target`` ignored).
    """

    name = "rcgrad"

    def combine(
        self, grads: Tensor, target: int, weights: Tensor, cosines: Tensor
    ) -> tuple[Tensor, Tensor]:
        is_aux = aux_mask(grads.shape[0], target, grads.device)
        if (weights.detach()[is_aux] > 1).any():
            raise ValueError("rcgrad weights must lie in [0, 1]")
        projected = project_conflicting(grads, target, self.eps)
        scale = gns_scale(grads, target, self.eps)
        coefficients = torch.where(is_aux, 0.5 * (scale + weights), torch.ones_like(scale))
        return coefficients @ projected, coefficients
