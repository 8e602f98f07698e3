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
    init_encoder_from,
    load_pretrain_checkpoint,
    load_pretrained_encoder,
    pretrain,
    save_pretrained_encoder,
    trained_on,
)

__all__ = [
    "OBJECTIVES",
    "PretrainHistory",
    "PretrainObjective",
    "ShardedCorpus",
    "build_objective",
    "featurize_corpus",
    "init_encoder_from",
    "load_pretrain_checkpoint",
    "load_pretrained_encoder",
    "pretrain",
    "save_pretrained_encoder",
    "trained_on",
]
