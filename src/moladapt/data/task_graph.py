"""A graph over prediction tasks (assays), for structured multi-task learning (SGNN-EBM).

Liu et al., "Structured Multi-task Learning for Molecular Property Prediction", AISTATS 2022
(github.com/chao1224/SGNN-EBM) relate ChEMBL tasks through the protein-protein interactions of
their targets. Here a :class:`TaskGraph` can come from three sources:

* :meth:`TaskGraph.from_edge_list`: a user file (CSV or TSV with columns ``task_a, task_b``
  and an optional ``weight``), e.g. the PPI-derived graph of the paper;
* :meth:`TaskGraph.from_coactivity`: label co-activity (Jaccard of positives, or the phi
  correlation) computed **only on the training rows**, so no validation or test label leaks
  into the model through the graph;
* :meth:`TaskGraph.from_toxcast_names`: a rule on ToxCast assay names (see its docstring).

The graph is undirected and simple: ``edges`` holds each pair once with ``i < j``, and
``weights`` are non-negative.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from moladapt.data.sources import DataError

__all__ = ["TOXCAST_TARGET_SLICES", "TaskGraph", "toxcast_target_key"]


@dataclass(frozen=True, eq=False)
class TaskGraph:
    """An undirected weighted graph whose nodes are the tasks ``task_names`` (in label order).

    Attributes:
        task_names: the T task names, in the column order of the label matrix.
        edges: ``[E, 2]`` int64, each undirected edge once with ``edges[:, 0] < edges[:, 1]``,
            sorted lexicographically.
        weights: ``[E]`` float64, non-negative edge weights.
    """

    task_names: tuple[str, ...]
    edges: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.task_names)
        if len(set(names)) != len(names):
            raise ValueError("task_names must be unique")
        t = len(names)
        edges = np.asarray(self.edges, dtype=np.int64).reshape(-1, 2)
        weights = np.asarray(self.weights, dtype=np.float64).reshape(-1)
        if len(weights) != len(edges):
            raise ValueError(f"{len(edges)} edges but {len(weights)} weights")
        if len(edges) and (edges.min() < 0 or edges.max() >= t):
            raise ValueError(f"edge endpoints must be in [0, {t})")
        if (edges[:, 0] == edges[:, 1]).any():
            raise ValueError("self-loops are not allowed in a TaskGraph")
        if not np.all(np.isfinite(weights)) or (weights < 0).any():
            raise ValueError("edge weights must be finite and non-negative")
        edges = np.sort(edges, axis=1)
        order = np.lexsort((edges[:, 1], edges[:, 0]))
        edges, weights = edges[order], weights[order]
        if len(edges) > 1 and (np.diff(edges, axis=0) == 0).all(axis=1).any():
            raise ValueError("duplicate edges in a TaskGraph")
        edges.flags.writeable = False
        weights.flags.writeable = False
        object.__setattr__(self, "task_names", names)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "weights", weights)

    # -- basic views ----------------------------------------------------------------------
    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def num_edges(self) -> int:
        return int(len(self.edges))

    def degree(self) -> np.ndarray:
        """``[T]`` number of neighbours of each task."""
        return np.bincount(self.edges.reshape(-1), minlength=self.num_tasks)

    def adjacency(self, weighted: bool = True) -> np.ndarray:
        """Dense symmetric ``[T, T]`` adjacency (zero diagonal)."""
        a = np.zeros((self.num_tasks, self.num_tasks))
        w = self.weights if weighted else np.ones(self.num_edges)
        a[self.edges[:, 0], self.edges[:, 1]] = w
        a[self.edges[:, 1], self.edges[:, 0]] = w
        return a

    def normalized_adjacency(self) -> torch.Tensor:
        """GCN propagation matrix ``D^-1/2 (A + I) D^-1/2`` (Kipf & Welling), float32 ``[T, T]``."""
        a = self.adjacency(weighted=True) + np.eye(self.num_tasks)
        d = 1.0 / np.sqrt(a.sum(1))
        return torch.from_numpy((d[:, None] * a * d[None, :]).astype(np.float32))

    def coloring(self) -> np.ndarray:
        """A greedy proper vertex colouring, ``[T]`` ints (largest degree first).

        Tasks of one colour share no edge, so they are conditionally independent given the
        others in a pairwise model over this graph: block Gibbs sampling updates a colour at once.
        """
        nbrs: list[list[int]] = [[] for _ in range(self.num_tasks)]
        for i, j in self.edges.tolist():
            nbrs[i].append(j)
            nbrs[j].append(i)
        colors = np.full(self.num_tasks, -1, dtype=np.int64)
        for v in np.argsort(-self.degree(), kind="stable").tolist():
            used = {int(colors[u]) for u in nbrs[v]}
            c = 0
            while c in used:
                c += 1
            colors[v] = c
        return colors

    def subset(self, task_names: Sequence[str]) -> TaskGraph:
        """The induced graph on ``task_names`` (in that order); unknown names raise KeyError."""
        pos = {n: i for i, n in enumerate(self.task_names)}
        missing = [n for n in task_names if n not in pos]
        if missing:
            raise KeyError(f"tasks not in the graph: {missing[:5]}")
        new = np.full(self.num_tasks, -1, dtype=np.int64)
        for k, n in enumerate(task_names):
            new[pos[n]] = k
        e = new[self.edges] if self.num_edges else np.zeros((0, 2), np.int64)
        keep = (e >= 0).all(axis=1) if len(e) else np.zeros(0, bool)
        return TaskGraph(tuple(task_names), e[keep], self.weights[keep])

    def stats(self) -> dict[str, float | int]:
        """nodes, edges, mean/max degree, isolated nodes, connected components, density."""
        t, deg = self.num_tasks, self.degree()
        if t:
            a = coo_matrix((np.ones(self.num_edges), (self.edges[:, 0], self.edges[:, 1])),
                           shape=(t, t))
            n_comp = int(connected_components(a, directed=False)[0])
        else:
            n_comp = 0
        return {
            "nodes": t,
            "edges": self.num_edges,
            "mean_degree": float(deg.mean()) if t else 0.0,
            "max_degree": int(deg.max()) if t else 0,
            "isolated_nodes": int((deg == 0).sum()),
            "components": n_comp,
            "density": float(2 * self.num_edges / (t * (t - 1))) if t > 1 else 0.0,
        }

    def __repr__(self) -> str:
        s = self.stats()
        return f"TaskGraph(nodes={s['nodes']}, edges={s['edges']}, components={s['components']})"

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def empty(cls, task_names: Sequence[str]) -> TaskGraph:
        return cls(tuple(task_names), np.zeros((0, 2), np.int64), np.zeros(0))

    @classmethod
    def from_edge_list(cls, path: str | Path, task_names: Sequence[str]) -> TaskGraph:
        """Read a CSV or TSV edge list with columns ``task_a``, ``task_b`` and optional ``weight``.

        The delimiter is a tab for ``.tsv``/``.tab`` files (also gzipped), else sniffed from
        the header line (comma, tab or semicolon). Every problem raises :class:`DataError`
        naming the file and the line (header = line 1): a missing column, a task not in
        ``task_names``, a self-loop, a non-numeric, negative or non-finite weight, or the same
        pair listed twice (in either order).
        """
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: file not found")
        suffixes = [s.lower() for s in path.suffixes]
        if ".tsv" in suffixes or ".tab" in suffixes:
            sep = "\t"
        else:
            try:
                opener = gzip.open if path.suffix.lower() == ".gz" else open
                with opener(path, "rt") as fh:
                    first = fh.readline()
                sep = csv.Sniffer().sniff(first, delimiters=",\t;").delimiter
            except (csv.Error, UnicodeDecodeError):
                sep = ","
        try:
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not a readable edge list ({exc})") from None
        frame.columns = [str(c).strip() for c in frame.columns]
        missing = [c for c in ("task_a", "task_b") if c not in frame.columns]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {missing}; an edge list needs task_a, task_b "
                f"and optionally weight (found {list(frame.columns)})"
            )
        pos = {n: i for i, n in enumerate(task_names)}
        seen: dict[tuple[int, int], int] = {}
        edges, weights = [], []
        has_w = "weight" in frame.columns
        for r, row in enumerate(frame.itertuples(index=False)):
            line = r + 2
            rec = row._asdict()
            ends = []
            for col in ("task_a", "task_b"):
                name = str(rec[col]).strip()
                if name not in pos:
                    hint = ", ".join(list(task_names)[:5])
                    raise DataError(
                        f"{path}: line {line}: unknown task {name!r} in column {col!r} "
                        f"(the dataset has {len(pos)} tasks, e.g. {hint})"
                    )
                ends.append(pos[name])
            if ends[0] == ends[1]:
                raise DataError(f"{path}: line {line}: self-loop on task {rec['task_a']!r}")
            w = 1.0
            if has_w:
                raw = str(rec["weight"]).strip()
                try:
                    w = float(raw) if raw else 1.0
                except ValueError:
                    raise DataError(f"{path}: line {line}: weight {raw!r} is not a number") from None
                if not np.isfinite(w) or w < 0:
                    raise DataError(f"{path}: line {line}: weight must be finite and >= 0, got {raw!r}")
            key = (min(ends), max(ends))
            if key in seen:
                raise DataError(
                    f"{path}: line {line}: edge {rec['task_a']!r}-{rec['task_b']!r} already "
                    f"listed on line {seen[key]}"
                )
            seen[key] = line
            edges.append(key)
            weights.append(w)
        return cls(tuple(task_names), np.asarray(edges, np.int64).reshape(-1, 2), np.asarray(weights))

    @classmethod
    def from_coactivity(
        cls,
        labels: np.ndarray,
        train_idx: np.ndarray,
        task_names: Sequence[str] | None = None,
        method: str = "jaccard",
        threshold: float = 0.3,
        min_common: int = 20,
    ) -> TaskGraph:
        """Link tasks whose labels co-vary on the **training rows** ``train_idx`` only.

        For tasks i, j only molecules measured on both count (``n_ij`` of them); pairs with
        ``n_ij < min_common`` are never linked.

        * ``"jaccard"``: ``|pos_i ∩ pos_j| / |pos_i ∪ pos_j|`` over the common molecules;
          edge if ``>= threshold``, weight = the Jaccard index.
        * ``"correlation"``: the phi (Pearson) correlation of the two binary label vectors
          over the common molecules; edge if ``|phi| >= threshold``, weight = ``|phi|``
          (anti-correlated tasks are related too; the EBM's learned pairwise potentials
          carry the sign).

        ``labels`` is ``[M, T]`` with 0/1 and NaN for missing. Rows outside ``train_idx`` are
        never read.
        """
        y = np.asarray(labels, dtype=np.float64)[np.asarray(train_idx, dtype=np.int64)]
        t = y.shape[1]
        names = tuple(task_names) if task_names is not None else tuple(f"task_{i}" for i in range(t))
        if len(names) != t:
            raise ValueError(f"{len(names)} task names for {t} label columns")
        meas = ~np.isnan(y)
        m = meas.astype(np.float64)
        p = (meas & (np.nan_to_num(y) == 1)).astype(np.float64)
        n_common = m.T @ m
        n11 = p.T @ p
        s_i = p.T @ m  # [i, j]: positives of i among molecules where j is measured
        s_j = s_i.T
        with np.errstate(divide="ignore", invalid="ignore"):
            if method == "jaccard":
                union = s_i + s_j - n11
                score = np.where(union > 0, n11 / union, 0.0)
                ok = score >= threshold
            elif method == "correlation":
                num = n_common * n11 - s_i * s_j
                den = np.sqrt(s_i * (n_common - s_i) * s_j * (n_common - s_j))
                score = np.where(den > 0, num / den, 0.0)
                score = np.abs(score)
                ok = score >= threshold
            else:
                raise ValueError(f"unknown co-activity method {method!r}; use 'jaccard' or 'correlation'")
        ok &= n_common >= min_common
        ok &= score > 0
        iu = np.triu_indices(t, k=1)
        sel = ok[iu]
        edges = np.stack([iu[0][sel], iu[1][sel]], axis=1)
        return cls(names, edges, score[iu][sel])

    @classmethod
    def from_toxcast_names(cls, task_names: Sequence[str], cross_source: bool = False) -> TaskGraph:
        """Link ToxCast assays that share their source and their target/readout.

        Rule: an assay name is split on ``_``; its first token is the **source** (``ATG``,
        ``NVS``, ``TOX21``, ``BSK``, ...), and its **target key** is the slice of the other
        tokens given by :data:`TOXCAST_TARGET_SLICES` for that source (default: token 1),
        lower-cased. Two tasks are linked (weight 1) when both source and target key are
        equal. Examples: ``ATG_PXRE_CIS_up`` ~ ``ATG_PXRE_CIS_dn`` (target ``pxre``);
        ``TOX21_AR_BLA_Agonist_ratio`` ~ ``TOX21_AR_LUC_MDAKB2_Antagonist`` (``ar``);
        ``BSK_3C_VCAM1_down`` ~ ``BSK_hDFCGF_VCAM1_down`` (readout ``vcam1``);
        ``APR_HepG2_CellLoss_24h_dn`` ~ ``APR_Hepat_CellLoss_48hr_dn`` (``cellloss``).
        With ``cross_source=True`` assays of different sources with the same target key are
        linked too (``NVS`` target tokens lose a leading species letter ``h``/``r``/``m``/``b``,
        so ``NVS_NR_hAR`` ~ ``TOX21_AR_...``). Names with a single token stay isolated.
        """
        names = tuple(task_names)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, name in enumerate(names):
            key = toxcast_target_key(name, strip_species=cross_source)
            if key is None:
                continue
            groups.setdefault(key if not cross_source else ("*", key[1]), []).append(i)
        pairs = set()
        for members in groups.values():
            for a in range(len(members)):
                for b in range(a + 1, len(members)):
                    pairs.add((members[a], members[b]))
        edges = np.asarray(sorted(pairs), dtype=np.int64).reshape(-1, 2)
        return cls(names, edges, np.ones(len(edges)))


# source → (start, stop) slice of the name tokens that names the target or readout
TOXCAST_TARGET_SLICES: dict[str, tuple[int, int | None]] = {
    "ATG": (1, -2),      # ATG_<target>_<CIS|TRANS>_<up|dn>, target may hold "_" (AP_1)
    "BSK": (2, -1),      # BSK_<cell system>_<readout>_<up|down>
    "CEETOX": (2, -1),   # CEETOX_H295R_<analyte>_<up|dn>
    "CLD": (1, -1),      # CLD_<gene>_<time>
    "NVS": (2, None),    # NVS_<family>_<species+target>
    "APR": (2, 3),       # APR_<cell>_<readout>_<time>_<dir>
    "Tanguay": (3, 4),   # Tanguay_ZF_120hpf_<endpoint>_<dir>
}


def toxcast_target_key(name: str, strip_species: bool = False) -> tuple[str, str] | None:
    """``(source, target key)`` of a ToxCast assay name (see :meth:`TaskGraph.from_toxcast_names`)."""
    tokens = [t for t in str(name).split("_") if t]
    if len(tokens) < 2:
        return None
    source = tokens[0]
    start, stop = TOXCAST_TARGET_SLICES.get(source, (1, 2))
    part = tokens[start:stop] or tokens[1:]
    key = "_".join(part).lower()
    if strip_species and source == "NVS":
        key = re.sub(r"^[hrmb](?=[a-z0-9])", "", key)
    return source, key
