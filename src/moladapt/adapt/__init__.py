"""Few-shot adaptation methods; importing this package registers them in :data:`ADAPTERS`.

``ADAPTERS.get(name)(**hyper_parameters)`` builds one: ``finetune`` / ``linear_probe``
(:mod:`.finetune`), ``maml`` / ``fomaml`` (:mod:`.maml`), ``anil`` (:mod:`.anil`),
``protonet`` (:mod:`.protonet`), ``auxiliary`` (:mod:`.auxiliary`: fine-tuning with
self-supervised auxiliary tasks and gradient surgery). Estimators that are not few-shot
adapters live beside them: :mod:`.bilevel` (learned task weights / transfer ratios),
:mod:`.sgnn_ebm` (structured multi-task learning) and :mod:`.multitask_baselines`.
"""

from moladapt.adapt.anil import ANIL
from moladapt.adapt.auxiliary import AuxiliaryAdapter, AuxiliaryFineTuner
from moladapt.adapt.base import ADAPTERS, Adapter, Predictor, TaskFeatureCache
from moladapt.adapt.finetune import FineTune, LinearProbe
from moladapt.adapt.maml import FOMAML, MAML, inner_adapt
from moladapt.adapt.protonet import ProtoNet

__all__ = [
    "ADAPTERS",
    "ANIL",
    "AuxiliaryAdapter",
    "AuxiliaryFineTuner",
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
