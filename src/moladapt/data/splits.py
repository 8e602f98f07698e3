"""Train/valid/test splits of a molecule dataset.

Every splitter has one signature::

    fn(smiles, labels, frac=(0.8, 0.1, 0.1), seed=0) -> Split

where ``smiles`` are the M input SMILES (one per dataset row), ``labels`` is the ``[M, T]``
float label matrix with NaN for unmeasured entries (or ``None``; a 1-D ``[M]`` array is read
as one task), and the returned :class:`Split` holds int64 row indices into the dataset.
Splitters are registered in :data:`SPLITTERS` under the names used by configs and the CLI:

* ``"random"``: a seeded permutation.
* ``"scaffold"``: the deterministic Bemis–Murcko scaffold split of pretrain-gnns (Hu et al.
  2020), used by most molecular pretraining papers on MoleculeNet; ignores ``seed``.
* ``"balanced_scaffold"``: chemprop's seeded, balanced scaffold split.
* ``"stratified_random"``: a seeded random split that keeps each part's class balance.

SMILES that RDKit cannot parse never raise: scaffold splitters give each of them a group
of its own, the others do not look at the SMILES at all.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from rdkit import rdBase
from rdkit.Chem.Scaffolds import MurckoScaffold

from moladapt.registry import Registry

__all__ = [
    "PARTS",
    "SPLITTERS",
    "Split",
    "Splitter",
    "balanced_scaffold_split",
    "make_split",
    "molecules_shared_with_train",
    "murcko_scaffold",
    "random_split",
    "scaffold_groups",
    "scaffold_split",
    "split_has_both_classes",
    "stratified_random_split",
]

PARTS: tuple[str, str, str] = ("train", "valid", "test")

Splitter = Callable[..., "Split"]
"""``fn(smiles, labels, frac=(0.8, 0.1, 0.1), seed=0) -> Split``."""

SPLITTERS: Registry[Splitter] = Registry("split")


# --------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Split:
    """Row indices (int64, sorted, read-only) of the train, valid and test parts."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    def __post_init__(self) -> None:
        for part in PARTS:
            arr = np.array(getattr(self, part), dtype=np.int64).reshape(-1)
            arr.sort()
            arr.flags.writeable = False
            object.__setattr__(self, part, arr)

    @property
    def sizes(self) -> tuple[int, int, int]:
        """``(len(train), len(valid), len(test))``."""
        return (len(self.train), len(self.valid), len(self.test))

    def as_dict(self) -> dict[str, np.ndarray]:
        return {part: getattr(self, part) for part in PARTS}

    def check(self, n: int | None = None) -> Split:
        """Raise ``AssertionError`` unless the parts are disjoint (and hold no duplicate).

        With ``n``, also require that together they are exactly ``range(n)``. Returns
        ``self`` so that it can be chained.
        """
        seen: dict[int, str] = {}
        for part in PARTS:
            for i in getattr(self, part).tolist():
                if i in seen:
                    where = "twice in" if seen[i] == part else f"in both {seen[i]} and"
                    raise AssertionError(f"row {i} is {where} {part}")
                seen[i] = part
        if n is not None:
            if any(i < 0 or i >= n for i in seen) or len(seen) != n:
                raise AssertionError(
                    f"split covers {len(seen)} rows (sizes {self.sizes}), expected range({n})"
                )
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return all(np.array_equal(getattr(self, p), getattr(other, p)) for p in PARTS)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking arrays: not hashable

    def __repr__(self) -> str:
        return f"Split(sizes={self.sizes})"


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _check_inputs(
    smiles: Sequence[str], labels: np.ndarray | None, frac: Sequence[float]
) -> tuple[int, np.ndarray | None, tuple[float, float, float]]:
    m = len(smiles)
    fr = tuple(float(f) for f in frac)
    if len(fr) != 3:
        raise ValueError(f"frac must have 3 entries (train, valid, test), got {frac!r}")
    if any(f < 0 or not math.isfinite(f) for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"frac must be 3 non-negative numbers summing to 1, got {frac!r}")
    y = None
    if labels is not None:
        y = np.asarray(labels, dtype=np.float64)
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2 or y.shape[0] != m:
            raise ValueError(f"labels must be [M={m}, T] (or [M]), got shape {y.shape}")
    return m, y, fr  # type: ignore[return-value]


def _count(frac: float, m: int) -> int:
    # floor(frac * m), robust to float error such as 0.29 * 100 = 28.999999999999996.
    return int(math.floor(frac * m + 1e-9))


def _stable_permutation(n: int, rng: random.Random) -> list[int]:
    """A permutation of ``range(n)`` drawn from ``rng``.

    Only uses ``Random.random()``, whose output for a given integer seed Python promises to
    keep across versions (``shuffle``/``sample`` carry no such promise), and is independent
    of the numpy version.
    """
    keys = [rng.random() for _ in range(n)]
    return sorted(range(n), key=keys.__getitem__)


def _from_lists(train: Sequence[int], valid: Sequence[int], test: Sequence[int]) -> Split:
    return Split(
        train=np.asarray(train, dtype=np.int64),
        valid=np.asarray(valid, dtype=np.int64),
        test=np.asarray(test, dtype=np.int64),
    )


def murcko_scaffold(smiles: str, include_chirality: bool = True) -> str | None:
    """The Bemis–Murcko scaffold SMILES of ``smiles``, or ``None`` if it can't be computed.

    Computed exactly as pretrain-gnns does,
    ``MurckoScaffold.MurckoScaffoldSmiles(smiles=..., includeChirality=...)``; acyclic
    molecules have the empty scaffold ``""``. Unparsable input returns ``None`` (RDKit's
    error log is silenced).
    """
    if not isinstance(smiles, str) or not smiles.strip():
        return None
    blocker = rdBase.BlockLogs()  # noqa: F841  (silences RDKit while alive)
    try:
        return MurckoScaffold.MurckoScaffoldSmiles(
            smiles=smiles, includeChirality=include_chirality
        )
    except Exception:  # RDKit raises ValueError or its own C++ exception types
        return None


def scaffold_groups(smiles: Sequence[str], include_chirality: bool = True) -> list[list[int]]:
    """Row indices grouped by Bemis–Murcko scaffold, in order of first occurrence.

    Each group is sorted. Rows whose scaffold can't be computed (unparsable SMILES) form a
    group of their own each. Scaffolds are cached by SMILES string within the call, so
    duplicated SMILES are only processed once.
    """
    cache: dict[str, str | None] = {}
    groups: dict[Hashable, list[int]] = {}
    for i, smi in enumerate(smiles):
        if isinstance(smi, str):
            if smi not in cache:
                cache[smi] = murcko_scaffold(smi, include_chirality)
            scaffold = cache[smi]
        else:
            scaffold = None
        key: Hashable = scaffold if scaffold is not None else ("<no scaffold>", i)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


# --------------------------------------------------------------------------------------
# Splitters
# --------------------------------------------------------------------------------------


@SPLITTERS.register("random")
def random_split(
    smiles: Sequence[str],
    labels: np.ndarray | None = None,
    frac: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> Split:
    """A seeded random permutation cut into ``floor(f_train*M)``, ``floor(f_valid*M)`` and
    the rest (the sizes pretrain-gnns' ``random_split`` uses).

    ``labels`` are not used. The same ``seed`` gives the same split on any Python or numpy
    version.
    """
    m, _, (f_train, f_valid, _) = _check_inputs(smiles, labels, frac)
    perm = _stable_permutation(m, random.Random(seed))
    n_train, n_valid = _count(f_train, m), _count(f_valid, m)
    return _from_lists(perm[:n_train], perm[n_train : n_train + n_valid], perm[n_train + n_valid :])


@SPLITTERS.register("scaffold")
def scaffold_split(
    smiles: Sequence[str],
    labels: np.ndarray | None = None,
    frac: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> Split:
    """The deterministic scaffold split of pretrain-gnns (``chem/splitters.py``).

    Exactly their convention, so that numbers are comparable with the papers that use it:

    1. Bemis–Murcko scaffold of each molecule with
       ``MurckoScaffold.MurckoScaffoldSmiles(smiles=..., includeChirality=True)``; all
       acyclic molecules share the empty scaffold.
    2. Group row indices by scaffold (each group sorted) and sort the groups by
       ``(len(group), group[0])`` with ``reverse=True``: largest first, ties broken by
       the larger first index.
    3. Walk the groups: a group goes to train if ``len(train) + len(group) <= f_train*M``,
       else to valid if ``len(train) + len(valid) + len(group) <= (f_train+f_valid)*M``,
       else to test. Later, smaller groups can still fill train or valid.

    The test part therefore gets the rarest scaffolds. ``seed`` and ``labels`` are
    **ignored**: every seed gives the same split (run-to-run variance then comes from model
    initialisation only). Part sizes match ``frac`` up to one scaffold group.

    Differences from pretrain-gnns, none of which changes a split it can compute: SMILES
    whose scaffold can't be computed (they crash pretrain-gnns) get a group of their own;
    pretrain-gnns' ``task_idx`` filtering of rows is not offered (subset the rows first).
    """
    m, _, (f_train, f_valid, _) = _check_inputs(smiles, labels, frac)
    groups = scaffold_groups(smiles, include_chirality=True)
    groups.sort(key=lambda g: (len(g), g[0]), reverse=True)
    train_cutoff = f_train * m
    valid_cutoff = (f_train + f_valid) * m
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for group in groups:
        if len(train) + len(group) > train_cutoff:
            if len(train) + len(valid) + len(group) > valid_cutoff:
                test.extend(group)
            else:
                valid.extend(group)
        else:
            train.extend(group)
    return _from_lists(train, valid, test)


@SPLITTERS.register("balanced_scaffold")
def balanced_scaffold_split(
    smiles: Sequence[str],
    labels: np.ndarray | None = None,
    frac: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> Split:
    """chemprop's balanced scaffold split (``scaffold_split(..., balanced=True)``, v1).

    Scaffold groups larger than half the valid size or half the test size ("big" groups)
    are placed first, so that they land in train as long as it has room; the remaining
    groups follow in random order. Chemprop shuffles both lists with
    ``random.Random(seed)`` (big ones first, then small ones) and so does this function, on
    groups listed in order of first occurrence like chemprop's. Each group then goes to
    train if ``len(train) + len(group) <= f_train*M``, else valid if
    ``len(valid) + len(group) <= f_valid*M``, else test.

    Scaffolds follow chemprop's default ``include_chirality=False`` (stereoisomeric
    scaffolds share a group), unlike the ``"scaffold"`` split. Different seeds give
    different splits; ``labels`` are ignored. Unparsable SMILES get a group of their own.
    """
    m, _, (f_train, f_valid, f_test) = _check_inputs(smiles, labels, frac)
    train_size, valid_size, test_size = f_train * m, f_valid * m, f_test * m
    groups = scaffold_groups(smiles, include_chirality=False)
    big = [g for g in groups if len(g) > valid_size / 2 or len(g) > test_size / 2]
    small = [g for g in groups if not (len(g) > valid_size / 2 or len(g) > test_size / 2)]
    rng = random.Random(seed)
    rng.shuffle(big)
    rng.shuffle(small)
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for group in big + small:
        if len(train) + len(group) <= train_size:
            train.extend(group)
        elif len(valid) + len(group) <= valid_size:
            valid.extend(group)
        else:
            test.extend(group)
    return _from_lists(train, valid, test)


def _is_binary(column: np.ndarray) -> bool:
    measured = column[~np.isnan(column)]
    return measured.size > 0 and bool(np.all((measured == 0) | (measured == 1)))


@SPLITTERS.register("stratified_random")
def stratified_random_split(
    smiles: Sequence[str],
    labels: np.ndarray | None = None,
    frac: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> Split:
    """A seeded random split that keeps the class balance of every part.

    Strata are the values of the **first task** (column 0) of ``labels``: 0, 1, and
    "missing" (NaN) as a stratum of its own. Part sizes are exactly those of ``"random"``
    (``floor(f_train*M)``, ``floor(f_valid*M)``, the rest) and each stratum is spread over
    the parts in proportion: a part of size ``n`` holds ``n * share(stratum)`` molecules of
    each stratum up to rounding (off by at most 1 with two strata, 2 with three).

    Falls back to the plain ``"random"`` split (same seed, same result) when ``labels`` is
    ``None`` or the first task is not binary (regression values) or has no measured value.
    """
    m, y, (f_train, f_valid, _) = _check_inputs(smiles, labels, frac)
    if y is None or y.shape[1] == 0 or not _is_binary(y[:, 0]):
        return random_split(smiles, labels, frac, seed)
    first = y[:, 0]
    strata = np.where(np.isnan(first), 2, first).astype(np.int64)
    rng = random.Random(seed)
    # Give every molecule a position in [0, 1): its rank within its (shuffled) stratum,
    # centred. Cutting the order by position hands each stratum's parts out in proportion.
    keyed: list[tuple[float, float, int]] = []
    for s in (0, 1, 2):
        members = np.flatnonzero(strata == s).tolist()
        n_s = len(members)
        for rank, j in enumerate(_stable_permutation(n_s, rng)):
            keyed.append(((rank + 0.5) / n_s, rng.random(), members[j]))
    keyed.sort()
    order = [i for _, _, i in keyed]
    n_train, n_valid = _count(f_train, m), _count(f_valid, m)
    return _from_lists(
        order[:n_train], order[n_train : n_train + n_valid], order[n_train + n_valid :]
    )


# --------------------------------------------------------------------------------------
# Entry point and reporting
# --------------------------------------------------------------------------------------


def make_split(
    name: str,
    smiles: Sequence[str],
    labels: np.ndarray | None = None,
    frac: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> Split:
    """Run the splitter registered as ``name`` and check that its parts partition the rows."""
    split = SPLITTERS.get(name)(smiles, labels, frac=frac, seed=seed)
    return split.check(len(smiles))


def molecules_shared_with_train(smiles: Sequence[str], split: Split) -> dict[str, list[tuple[int, int]]]:
    """For the valid and test parts, the ``(row, train row)`` pairs of the same molecule (the
    same canonical SMILES; the string itself where RDKit cannot parse it) found in train.

    A random split puts the copies of a duplicated molecule into parts independently, so
    held-out scores then measure recall of training molecules; scaffold splits cannot (the
    copies share a scaffold, hence a part)."""
    from moladapt.data.featurize import canonical_smiles

    rows = np.concatenate([split.train, split.valid, split.test]).tolist()
    distinct = list(dict.fromkeys(smiles[i] for i in rows))  # each string parsed once
    canonical = dict(zip(distinct, canonical_smiles(distinct), strict=True))

    def key(smi: str) -> str:
        return canonical[smi] or smi

    in_train: dict[str, int] = {}
    for i in split.train.tolist():
        in_train.setdefault(key(smiles[i]), i)
    return {part: [(i, in_train[key(smiles[i])]) for i in getattr(split, part).tolist()
                   if key(smiles[i]) in in_train]
            for part in ("valid", "test")}


def split_has_both_classes(labels: np.ndarray, split: Split) -> dict[str, list[int]]:
    """For each part, the tasks (column indices) that **lack** one of the two classes there.

    A task is listed for a part when that part's measured (non-NaN) labels hold fewer than
    two distinct values, i.e. a single class or none at all; ROC-AUC is undefined for such
    a task on that part. An empty list everywhere means every task has both classes in
    every part. ``labels`` is ``[M, T]`` (or ``[M]``) with NaN for missing.
    """
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    report: dict[str, list[int]] = {}
    for part in PARTS:
        rows = y[getattr(split, part)]
        missing_class = []
        for t in range(y.shape[1]):
            col = rows[:, t]
            if np.unique(col[~np.isnan(col)]).size < 2:
                missing_class.append(t)
        report[part] = missing_class
    return report
