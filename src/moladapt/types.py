"""Core data types shared by every part of moladapt.

A featurized dataset is stored *packed*: the atom and bond features of all molecules
are concatenated in a few numpy arrays with offset pointers. Batches are cut from it with
numpy slicing, which is several times faster than collating per-molecule PyG ``Data``
objects and keeps the on-disk cache a single ``.npz``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class GraphBatch:
    """A batch of B molecular graphs with N atoms and E directed bonds in total.

    Attributes:
        x: ``[N, F_atom]`` long, one categorical index per atom-feature column.
        edge_index: ``[2, E]`` long, both directions of every bond.
        edge_attr: ``[E, F_bond]`` long, one categorical index per bond-feature column.
        batch: ``[N]`` long, the graph each atom belongs to.
        num_graphs: B.
        y: ``[B, T]`` float labels (NaN = unmeasured) or ``None``.
        smiles: the B molecules' SMILES (set by :meth:`MolGraphs.collate`; ``None`` for
            batches built otherwise, e.g. augmented views in pretraining, whose SMILES
            would no longer describe the graph). Read by fingerprint-fused encoders.
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    batch: torch.Tensor
    num_graphs: int
    y: torch.Tensor | None = None
    smiles: list[str] | None = None

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @staticmethod
    def cat(batches: Sequence[GraphBatch]) -> GraphBatch:
        """One batch of the graphs of ``batches``, in order (atom and graph indices offset).

        ``y`` and ``smiles`` are kept only where every batch has them.
        """
        if not batches:
            raise ValueError("GraphBatch.cat needs at least one batch")
        node_offsets = np.cumsum([0] + [b.num_nodes for b in batches[:-1]])
        graph_offsets = np.cumsum([0] + [b.num_graphs for b in batches[:-1]])
        ys = [b.y for b in batches]
        smiles = [b.smiles for b in batches]
        offsets = list(zip(batches, node_offsets, graph_offsets, strict=True))
        return GraphBatch(
            x=torch.cat([b.x for b in batches]),
            edge_index=torch.cat([b.edge_index + int(n) for b, n, _ in offsets], dim=1),
            edge_attr=torch.cat([b.edge_attr for b in batches]),
            batch=torch.cat([b.batch + int(g) for b, _, g in offsets]),
            num_graphs=sum(b.num_graphs for b in batches),
            y=None if any(y is None for y in ys) else torch.cat(ys),
            smiles=None if any(s is None for s in smiles) else [m for s in smiles for m in s],
        )

    def to(self, device: torch.device | str) -> GraphBatch:
        return GraphBatch(
            x=self.x.to(device),
            edge_index=self.edge_index.to(device),
            edge_attr=self.edge_attr.to(device),
            batch=self.batch.to(device),
            num_graphs=self.num_graphs,
            y=None if self.y is None else self.y.to(device),
            smiles=self.smiles,
        )


@dataclass
class MolGraphs:
    """A packed, featurized set of M molecules (the unit of the on-disk cache).

    Attributes:
        smiles: the M input SMILES that parsed.
        source_rows: ``[M]`` the 0-based data row each molecule came from, so labels
            can never shift silently when invalid SMILES are dropped.
        x: ``[N_total, F_atom]`` atom features (small ints).
        edge_index: ``[2, E_total]`` bond endpoints, local to each molecule.
        edge_attr: ``[E_total, F_bond]`` bond features.
        node_ptr, edge_ptr: ``[M + 1]`` offsets of each molecule's atoms and bonds.
        featurizer: name and version of the featurizer that produced the arrays.
    """

    smiles: list[str]
    source_rows: np.ndarray
    x: np.ndarray
    edge_index: np.ndarray
    edge_attr: np.ndarray
    node_ptr: np.ndarray
    edge_ptr: np.ndarray
    featurizer: str
    featurizer_version: str
    invalid_rows: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.smiles)

    def num_atoms(self) -> np.ndarray:
        return np.diff(self.node_ptr)

    def subset(self, indices: np.ndarray | list[int]) -> MolGraphs:
        """A new packed set holding the molecules at ``indices`` (in that order)."""
        indices = np.asarray(indices, dtype=np.int64)
        n_nodes = np.diff(self.node_ptr)[indices]
        n_edges = np.diff(self.edge_ptr)[indices]
        node_sel = _ranges(self.node_ptr[indices], n_nodes)
        edge_sel = _ranges(self.edge_ptr[indices], n_edges)
        return MolGraphs(
            smiles=[self.smiles[i] for i in indices],
            source_rows=self.source_rows[indices],
            x=self.x[node_sel],
            edge_index=self.edge_index[:, edge_sel],
            edge_attr=self.edge_attr[edge_sel],
            node_ptr=np.concatenate([[0], np.cumsum(n_nodes)]).astype(np.int64),
            edge_ptr=np.concatenate([[0], np.cumsum(n_edges)]).astype(np.int64),
            featurizer=self.featurizer,
            featurizer_version=self.featurizer_version,
        )

    def collate(self, indices: np.ndarray | list[int], y: np.ndarray | None = None) -> GraphBatch:
        """Cut a :class:`GraphBatch` of the molecules at ``indices``.

        ``y`` (optional) is the ``[M, T]`` label matrix aligned with this set; the
        batch receives its rows at ``indices``.
        """
        indices = np.asarray(indices, dtype=np.int64)
        n_nodes = np.diff(self.node_ptr)[indices]
        n_edges = np.diff(self.edge_ptr)[indices]
        node_sel = _ranges(self.node_ptr[indices], n_nodes)
        edge_sel = _ranges(self.edge_ptr[indices], n_edges)
        # Edge indices are local to each molecule: shift them by the batch offset.
        node_offset = np.concatenate([[0], np.cumsum(n_nodes)[:-1]])
        edge_index = self.edge_index[:, edge_sel] + np.repeat(node_offset, n_edges)[None, :]
        batch = np.repeat(np.arange(len(indices)), n_nodes)
        return GraphBatch(
            x=torch.from_numpy(self.x[node_sel].astype(np.int64)),
            edge_index=torch.from_numpy(edge_index.astype(np.int64)),
            edge_attr=torch.from_numpy(self.edge_attr[edge_sel].astype(np.int64)),
            batch=torch.from_numpy(batch),
            num_graphs=len(indices),
            y=None if y is None else torch.from_numpy(np.asarray(y[indices], dtype=np.float32)),
            smiles=[self.smiles[i] for i in indices],
        )


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for each (s, l), without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(total, dtype=np.int64) + offsets


@dataclass(frozen=True)
class Task:
    """One prediction task (an assay): molecules with binary labels (and maybe values).

    ``group`` names the collection (e.g. ``"fsmol-test"``, ``"toxcast"``).
    """

    task_id: str
    smiles: tuple[str, ...]
    labels: np.ndarray
    values: np.ndarray | None = None
    group: str = ""

    def __len__(self) -> int:
        return len(self.smiles)

    @property
    def positive_rate(self) -> float:
        return float(np.mean(self.labels))


@dataclass(frozen=True)
class Episode:
    """A few-shot episode drawn from one task: ``k`` support molecules, the rest as query.

    Indices refer to positions in the task.
    """

    task_id: str
    k: int
    seed: int
    support: np.ndarray
    query: np.ndarray
