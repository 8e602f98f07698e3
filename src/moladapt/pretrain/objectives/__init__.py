"""Pretraining objectives, one module each, registered in :data:`OBJECTIVES`.

``attribute_masking``, ``edge_prediction``, ``context_prediction``, ``infomax``,
``graphcl`` and ``supervised``; see :mod:`moladapt.pretrain.objectives.base` for the
interface.
"""

from moladapt.pretrain.objectives.attribute_masking import AttributeMasking
from moladapt.pretrain.objectives.base import (
    OBJECTIVES,
    PretrainObjective,
    build_objective,
    changed_recipes,
    objective_option_names,
    parse_objective_options,
    recipe_options,
    with_options,
)
from moladapt.pretrain.objectives.context_prediction import ContextPrediction
from moladapt.pretrain.objectives.edge_prediction import EdgePrediction
from moladapt.pretrain.objectives.graphcl import GraphCL
from moladapt.pretrain.objectives.infomax import Infomax
from moladapt.pretrain.objectives.supervised import Supervised

__all__ = [
    "OBJECTIVES",
    "AttributeMasking",
    "ContextPrediction",
    "EdgePrediction",
    "GraphCL",
    "Infomax",
    "PretrainObjective",
    "Supervised",
    "build_objective",
    "changed_recipes",
    "objective_option_names",
    "parse_objective_options",
    "recipe_options",
    "with_options",
]
