"""A graph encoder fused with the molecule's ECFP fingerprint ("gnn+ecfp+fc").

FS-Mol's best few-shot model (Stanley et al., NeurIPS 2021, ProtoNet with
``used_features="gnn+ecfp+fc"``) does not embed a molecule with its GNN alone: it concatenates
the GNN readout with the 2048-position ECFP4 fingerprint and passes both through a small MLP,

.. math::

    z = W_2\\, \\mathrm{ReLU}\\big(W_1 [\\, h_G \\,;\\, \\mathrm{ECFP}(m) \\,] + b_1\\big) + b_2,

    h_G \\in \\mathbb{R}^{d_{gnn}},\\ \\mathrm{ECFP}(m) \\in \\{0, 1\\}^{2048}
    \\text{ (bits) or } \\mathbb{N}^{2048} \\text{ (counts)},\\
    z \\in \\mathbb{R}^{d_{out}}\\ (1024 \\to 512 \\text{ in FS-Mol}).

FS-Mol feeds occurrence counts (``fingerprint_counts=True`` here), unscaled; bits are the default
because the models benchmarked before counts existed used them.

:class:`FingerprintFusionEncoder` is that embedding behind the ordinary encoder interface
(``forward(batch) -> [B, out_dim]``, ``out_dim``), so every adapter (ProtoNet, MAML,
fine-tuning, ...) and supervised training can use it; ``ModelConfig(fingerprint_bits=2048)``
turns it on. Fingerprints are computed from ``batch.smiles`` (set by ``MolGraphs.collate``)
through one process-wide cache, never stored in the module (deep copies stay cheap).

Pretraining objectives work on node embeddings of (possibly augmented) graphs, so they
take the graph encoder (``.graph_encoder``), not this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from moladapt.data.fingerprints import ECFP_BITS, ECFP_RADIUS, shared_ecfp_featurizer
from moladapt.types import GraphBatch

__all__ = ["FingerprintFusionEncoder", "graph_part", "load_encoder_weights"]


class FingerprintFusionEncoder(nn.Module):
    """``MLP([graph_encoder(batch) ; ECFP(batch.smiles)])`` (see the module docstring).

    Args:
        graph_encoder: any encoder of :mod:`moladapt.models.encoders` (its ``out_dim`` is used).
        n_bits, radius: the Morgan fingerprint (ECFP4: 2048 bits, radius 2).
        counts: occurrence counts instead of bits (FS-Mol's input).
        hidden_dims: widths of the fusion MLP; the last is ``out_dim`` (FS-Mol: 1024, 512).
            ReLU between layers, none after the last.

    Shapes: ``batch`` of B graphs → ``[B, hidden_dims[-1]]``.
    """

    def __init__(
        self,
        graph_encoder: nn.Module,
        n_bits: int = ECFP_BITS,
        radius: int = ECFP_RADIUS,
        hidden_dims: Sequence[int] = (1024, 512),
        counts: bool = False,
    ) -> None:
        super().__init__()
        if int(n_bits) < 1:
            raise ValueError(f"n_bits must be >= 1, got {n_bits}")
        dims = [int(d) for d in hidden_dims]
        if not dims or min(dims) < 1:
            raise ValueError(f"hidden_dims must be a non-empty list of positive widths, got {hidden_dims}")
        self.graph_encoder = graph_encoder
        self.n_bits, self.radius, self.counts = int(n_bits), int(radius), bool(counts)
        in_dim = int(graph_encoder.out_dim) + self.n_bits  # type: ignore[arg-type]
        layers: list[nn.Module] = []
        for i, d in enumerate(dims):
            layers.append(nn.Linear(in_dim, d))
            if i < len(dims) - 1:
                layers.append(nn.ReLU())
            in_dim = d
        self.fusion = nn.Sequential(*layers)
        self.out_dim = dims[-1]
        self.name = f"{getattr(graph_encoder, 'name', 'gnn')}+ecfp"
        self.hparams: dict[str, Any] = {
            **dict(getattr(graph_encoder, "hparams", {})),
            "fingerprint_bits": self.n_bits, "fingerprint_radius": self.radius,
            "fingerprint_dims": dims, "fingerprint_counts": self.counts,
        }

    def fingerprints(self, batch: GraphBatch, like: Tensor) -> Tensor:
        """``[B, n_bits]`` ECFP bits (or counts) of the batch's molecules, in ``like``'s dtype and device."""
        if batch.smiles is None:
            raise ValueError(
                "a fingerprint-fused encoder needs the batch's SMILES (GraphBatch.smiles); this "
                "batch has none — it was not cut by MolGraphs.collate (e.g. an augmented view "
                "in pretraining). Pretrain the graph encoder (.graph_encoder) instead."
            )
        if len(batch.smiles) != batch.num_graphs:
            raise ValueError(f"batch has {batch.num_graphs} graphs but {len(batch.smiles)} SMILES")
        fps = shared_ecfp_featurizer(self.radius, self.n_bits, self.counts)(list(batch.smiles))
        return torch.from_numpy(fps.astype(np.float32)).to(device=like.device, dtype=like.dtype)

    def node_embeddings(self, batch: GraphBatch) -> Tensor:
        raise TypeError(
            "a fingerprint-fused encoder has no node embeddings of its own (the fingerprint is "
            "molecule-level); use .graph_encoder.node_embeddings"
        )

    def forward(self, batch: GraphBatch) -> Tensor:
        h = self.graph_encoder(batch)
        return self.fusion(torch.cat([h, self.fingerprints(batch, h)], dim=1))

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, out_dim={self.out_dim}, n_bits={self.n_bits}, radius={self.radius}, "
                f"counts={self.counts}")


# The constructor arguments that shape an encoder's weights (dropout does not).
ARCHITECTURE_KEYS = ("atom_vocab_sizes", "bond_vocab_sizes", "hidden_dim", "num_layers", "jk", "pooling")


def load_encoder_weights(target: nn.Module, source: nn.Module, source_name: str = "the checkpoint") -> nn.Module:
    """Copy ``source``'s weights into ``target`` (e.g. a pretrained encoder for ``--init``).

    A graph-only ``source`` (every pretrained checkpoint) goes into the graph part of a
    fingerprint-fused ``target``; its fusion MLP keeps its fresh initialisation. A fused
    ``source`` needs a fused ``target`` with the same fingerprint and fusion widths. Graph
    encoders must share type and :data:`ARCHITECTURE_KEYS` (dropout may differ); otherwise a
    ValueError names ``source_name`` and what differs. Returns the module of ``target`` that was loaded.
    """
    if isinstance(source, FingerprintFusionEncoder) and not isinstance(target, FingerprintFusionEncoder):
        raise ValueError("the checkpoint's encoder is fingerprint-fused (gnn+ecfp) but the model to "
                         "initialise is graph-only; set fingerprint_bits to match")
    if isinstance(target, FingerprintFusionEncoder) and not isinstance(source, FingerprintFusionEncoder):
        target = target.graph_encoder
    _check_architecture(graph_part(target), graph_part(source), source_name)
    if isinstance(source, FingerprintFusionEncoder):
        _check_fusion(target, source, source_name)
    target.load_state_dict(source.state_dict())
    return target  # the part that now holds pretrained weights (what freezing should act on)


def _check_architecture(target: nn.Module, source: nn.Module, source_name: str) -> None:
    if not (hasattr(target, "hparams") and hasattr(source, "hparams")):
        return
    want = {k: target.hparams[k] for k in ARCHITECTURE_KEYS}
    have = {k: source.hparams[k] for k in ARCHITECTURE_KEYS}
    if source.name == target.name and want == have:
        return
    diff = ", ".join(f"{k} {have[k]} (asked {want[k]})" for k in ARCHITECTURE_KEYS if have[k] != want[k])
    raise ValueError(
        f"{source_name}: its encoder is {source.name} {have['num_layers']}×{have['hidden_dim']} (jk "
        f"{have['jk']}, pooling {have['pooling']}), which differs from the one asked for "
        f"({target.name}{'' if diff else ', other type'}{': ' + diff if diff else ''}); ask for the "
        "checkpoint's architecture (encoder, hidden_dim, num_layers, jk, pooling: the command's "
        "options or the model section of its --config file)")


def _check_fusion(target: FingerprintFusionEncoder, source: FingerprintFusionEncoder, source_name: str) -> None:
    """Both fused: the same fingerprint (bits, radius, counts) and fusion MLP widths."""
    keys = ("fingerprint_bits", "fingerprint_radius", "fingerprint_dims", "fingerprint_counts")
    # checkpoints from before counts existed have no fingerprint_counts: they used bits
    have = {k: source.hparams.get(k, False) for k in keys}
    want = {k: target.hparams.get(k, False) for k in keys}
    if have != want:
        diff = ", ".join(f"{k} {have[k]} (asked {want[k]})" for k in keys if have[k] != want[k])
        raise ValueError(f"{source_name}: its fingerprint fusion differs from the one asked for ({diff}); "
                         "ask for the checkpoint's fingerprint_bits, fingerprint_radius, fingerprint_dims and "
                         "fingerprint_counts")


def graph_part(encoder: nn.Module) -> nn.Module:
    """The graph encoder inside ``encoder``: what self-supervised (auxiliary) objectives train."""
    return encoder.graph_encoder if isinstance(encoder, FingerprintFusionEncoder) else encoder
