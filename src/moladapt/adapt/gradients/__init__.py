"""Gradient combiners for adapting with auxiliary tasks (gradient surgery).

``COMBINERS.get(name)(**hparams)(grads [T, P], target, weights) -> CombineResult``; see
:mod:`moladapt.adapt.gradients.base` for the contract and each module for its equation.
Per-task gradients come from :func:`per_task_gradients`; the combined direction goes back
into ``.grad`` with :func:`assign_direction`.
"""

from moladapt.adapt.gradients.base import (
    COMBINERS,
    CombineResult,
    GradientCombiner,
    build_combiner,
    cosines_to_target,
    project_conflicting,
)
from moladapt.adapt.gradients.gcs import GCSCombiner
from moladapt.adapt.gradients.gns import GNSCombiner
from moladapt.adapt.gradients.pcgrad import PCGrad
from moladapt.adapt.gradients.pertask import (
    GradientLog,
    assign_direction,
    per_task_gradients,
    per_task_gradients_func,
)
from moladapt.adapt.gradients.rcgrad import RCGrad
from moladapt.adapt.gradients.sum import SumCombiner

__all__ = [
    "COMBINERS",
    "CombineResult",
    "GCSCombiner",
    "GNSCombiner",
    "GradientCombiner",
    "GradientLog",
    "PCGrad",
    "RCGrad",
    "SumCombiner",
    "assign_direction",
    "build_combiner",
    "cosines_to_target",
    "per_task_gradients",
    "per_task_gradients_func",
    "project_conflicting",
]
