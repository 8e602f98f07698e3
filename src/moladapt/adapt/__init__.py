"""Few-shot adaptation methods; importing this package registers them in :data:`ADAPTERS`.

``ADAPTERS.get(name)(**hyper_parameters)`` builds one: ``finetune`` / ``linear_probe``
(:mod:`.finetune`), ``maml`` / ``fomaml`` (:mod:`.maml`), ``anil`` (:mod:`.anil`),
``protonet`` (:mod:`.protonet`).
"""

from moladapt.adapt.anil import ANIL
from moladapt.adapt.base import ADAPTERS, Adapter, Predictor, TaskFeatureCache
from moladapt.adapt.finetune import FineTune, LinearProbe
from moladapt.adapt.maml import FOMAML, MAML, inner_adapt
from moladapt.adapt.protonet import ProtoNet

__all__ = [
    "ADAPTERS",
    "ANIL",
    "FOMAML",
    "MAML",
    "Adapter",
    "FineTune",
    "LinearProbe",
    "Predictor",
    "ProtoNet",
    "TaskFeatureCache",
    "inner_adapt",
]
