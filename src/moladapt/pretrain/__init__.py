"""Self-supervised and supervised pretraining of graph encoders (Hu et al., ICLR 2020).

:func:`pretrain` trains an encoder with objectives from :data:`OBJECTIVES`
(``attribute_masking``, ``edge_prediction``, ``context_prediction``, ``infomax``,
``graphcl``, ``supervised``); :func:`save_pretrained_encoder` writes a checkpoint that
``moladapt train --init`` accepts.
"""

from moladapt.pretrain.corpus import ShardedCorpus, featurize_corpus
from moladapt.pretrain.objectives import OBJECTIVES, PretrainObjective, build_objective
from moladapt.pretrain.trainer import (
    PretrainHistory,
    load_pretrain_checkpoint,
    load_pretrained_encoder,
    pretrain,
    save_pretrained_encoder,
)

__all__ = [
    "OBJECTIVES",
    "PretrainHistory",
    "PretrainObjective",
    "ShardedCorpus",
    "build_objective",
    "featurize_corpus",
    "load_pretrain_checkpoint",
    "load_pretrained_encoder",
    "pretrain",
    "save_pretrained_encoder",
]
