"""Molecule → graph featurizers composed from small atom and bond parts.

Every feature is categorical: a part maps an RDKit atom (or bond) to an integer in
``[0, size)``. Encoders embed each column and sum the embeddings (as pretrain-gnns and
OGB do), so a featurizer is fully described by its parts' sizes, which checkpoints
record and check.

Conventions shared by all featurizers (the pretraining objectives rely on them):
  * atom column 0 is the atom type, with index ``size - 1`` reserved as the MASK token;
  * bond column 0 is the bond type, with ``size - 2`` = self-loop and ``size - 1`` = MASK.

``basic`` reproduces the pretrain-gnns input exactly (Hu et al., "Strategies for
Pre-training Graph Neural Networks", ICLR 2020): atom type (120) and chirality tag (3);
bond type (6) and bond direction (3), so published GIN checkpoints load unchanged.
``rich`` follows OGB's ``smiles2graph`` / chemprop's atom and bond descriptors.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
from rdkit import Chem, RDLogger

from moladapt.registry import Registry
from moladapt.types import MolGraphs


@dataclass(frozen=True)
class Part:
    """One categorical feature column: ``fn(atom_or_bond) -> int`` in ``[0, size)``.

    ``fn`` is the definition. The optional fields describe a faster, equivalent way to
    compute the column in bulk, used by :meth:`Featurizer.featurize` (molecules parsed
    from SMILES); :meth:`Featurizer.featurize_mol` always calls ``fn``:

    * ``getter`` / ``codes`` / ``other``: the value is ``codes.get(getter(x), other)``
      (``getter(x)`` itself when ``codes`` is None). ``getter`` should be an unbound
      RDKit method, so a whole molecule is mapped without a Python-level call.
    * ``zero_unless``: characters without which in the SMILES text this column is 0 on
      every atom (bond) of the molecule, e.g. chirality needs ``@``; the column is then
      filled with zeros without asking RDKit (whose enum getters cost ~1.5 µs a call).
    """

    name: str
    size: int
    fn: Callable[[object], int]
    getter: Callable[[object], object] | None = field(default=None, compare=False, repr=False)
    codes: Mapping[object, int] | None = field(default=None, compare=False, repr=False)
    other: int = field(default=0, compare=False, repr=False)
    zero_unless: str = field(default="", compare=False, repr=False)


def one_of(
    name: str, choices: Sequence, getter: Callable, extra: int = 0, zero_unless: str = ""
) -> Part:
    """A part whose value is the index of ``getter(x)`` in ``choices``; unseen → 'other'.

    The vocabulary is ``len(choices)`` + 1 ('other') + ``extra`` reserved indices.
    """
    lookup = {c: i for i, c in enumerate(choices)}
    other = len(choices)

    def fn(x: object) -> int:
        return lookup.get(getter(x), other)

    return Part(name, len(choices) + 1 + extra, fn, getter, lookup, other, zero_unless)


# --- atom parts --------------------------------------------------------------------------
_ATOM, _BOND = Chem.rdchem.Atom, Chem.rdchem.Bond
# Characters a SMILES needs for RDKit to set a chiral tag ('@', or a CXSMILES '|...|'
# extension) or a bond direction / double-bond stereo ('/', '\\', or '|').
_CHIRAL_CHARS = "@|"
_DIRECTION_CHARS = "/\\|"

# Atomic numbers 1..118 → 0..117, 118 = other (dummy atom '*'), 119 = MASK: 120, as pretrain-gnns.
ATOM_TYPE = one_of("atomic_num", list(range(1, 119)), _ATOM.GetAtomicNum, extra=1)
_CHI = Chem.rdchem.ChiralType
# pretrain-gnns embeds 3 chirality tags; rarer tags (CHI_OTHER, allene, ...) map to 0.
_BASIC_CHIRALITY = {_CHI.CHI_UNSPECIFIED: 0, _CHI.CHI_TETRAHEDRAL_CW: 1, _CHI.CHI_TETRAHEDRAL_CCW: 2}
BASIC_CHIRALITY = Part(
    "chirality",
    3,
    lambda a: _BASIC_CHIRALITY.get(a.GetChiralTag(), 0),
    getter=_ATOM.GetChiralTag,
    codes=_BASIC_CHIRALITY,
    other=0,
    zero_unless=_CHIRAL_CHARS,
)
CHIRALITY = one_of(
    "chirality",
    [_CHI.CHI_UNSPECIFIED, _CHI.CHI_TETRAHEDRAL_CW, _CHI.CHI_TETRAHEDRAL_CCW],
    _ATOM.GetChiralTag,
    zero_unless=_CHIRAL_CHARS,
)
DEGREE = one_of("degree", list(range(11)), _ATOM.GetTotalDegree)
FORMAL_CHARGE = one_of("formal_charge", list(range(-5, 6)), _ATOM.GetFormalCharge)
NUM_HS = one_of("num_hs", list(range(9)), _ATOM.GetTotalNumHs)
_HYB = Chem.rdchem.HybridizationType
HYBRIDIZATION = one_of(
    "hybridization",
    [_HYB.S, _HYB.SP, _HYB.SP2, _HYB.SP3, _HYB.SP3D, _HYB.SP3D2],
    _ATOM.GetHybridization,
)
AROMATIC = Part("aromatic", 2, lambda a: int(a.GetIsAromatic()), getter=_ATOM.GetIsAromatic)
IN_RING = Part("in_ring", 2, lambda a: int(a.IsInRing()), getter=_ATOM.IsInRing)

# --- bond parts --------------------------------------------------------------------------
_BT = Chem.rdchem.BondType
# single/double/triple/aromatic = 0..3, 4 = self-loop (added by GIN), 5 = MASK. Rarer bond
# types (dative, ...) fall back to single, as there is no slot for them in pretrain-gnns.
_BOND_TYPES = {_BT.SINGLE: 0, _BT.DOUBLE: 1, _BT.TRIPLE: 2, _BT.AROMATIC: 3}
# Bulk path: the bond order as a float avoids the costly enum. It is the same map for every
# bond type the SMILES parser creates (single, double, triple, aromatic, quadruple, dative);
# only ONEANDAHALF (also 1.5), which no SMILES can produce, would differ.
_BOND_ORDERS = {1.0: 0, 2.0: 1, 3.0: 2, 1.5: 3}
BOND_TYPE = Part(
    "bond_type",
    6,
    lambda b: _BOND_TYPES.get(b.GetBondType(), 0),
    getter=_BOND.GetBondTypeAsDouble,
    codes=_BOND_ORDERS,
    other=0,
)
_BD = Chem.rdchem.BondDir
_BOND_DIRS = {_BD.NONE: 0, _BD.ENDUPRIGHT: 1, _BD.ENDDOWNRIGHT: 2}
BOND_DIRECTION = Part(
    "bond_direction",
    3,
    lambda b: _BOND_DIRS.get(b.GetBondDir(), 0),
    getter=_BOND.GetBondDir,
    codes=_BOND_DIRS,
    other=0,
    zero_unless=_DIRECTION_CHARS,
)
_BS = Chem.rdchem.BondStereo
BOND_STEREO = one_of(
    "bond_stereo",
    [_BS.STEREONONE, _BS.STEREOZ, _BS.STEREOE, _BS.STEREOCIS, _BS.STEREOTRANS, _BS.STEREOANY],
    _BOND.GetStereo,
    zero_unless=_DIRECTION_CHARS,
)
CONJUGATED = Part(
    "conjugated", 2, lambda b: int(b.GetIsConjugated()), getter=_BOND.GetIsConjugated
)


@dataclass(frozen=True)
class Featurizer:
    """Turns SMILES into packed molecular graphs (:class:`~moladapt.types.MolGraphs`).

    ``version`` must change whenever any output changes: it is part of the cache key and
    of every checkpoint, so a changed featurizer never reuses a stale cache or a model
    trained on other inputs.
    """

    name: str
    version: str
    atom_parts: tuple[Part, ...]
    bond_parts: tuple[Part, ...]

    def __reduce__(self) -> str | tuple[Any, ...]:
        # Parts hold closures, which pickle cannot store: a registered featurizer travels by
        # name (a fitted estimator, a model sent to a worker), and is checked to be the same.
        if self.name in FEATURIZERS and FEATURIZERS.get(self.name).fingerprint == self.fingerprint:
            return (_registered_featurizer, (self.name, self.fingerprint))
        raise TypeError(f"featurizer {self.fingerprint} is not registered under its name, so it "
                        "cannot be pickled; register it in moladapt.data.featurize.FEATURIZERS")

    @property
    def atom_vocab_sizes(self) -> tuple[int, ...]:
        return tuple(p.size for p in self.atom_parts)

    @property
    def bond_vocab_sizes(self) -> tuple[int, ...]:
        return tuple(p.size for p in self.bond_parts)

    @property
    def atom_mask_index(self) -> int:
        return self.atom_parts[0].size - 1

    @property
    def bond_self_loop_index(self) -> int:
        return self.bond_parts[0].size - 2

    @property
    def bond_mask_index(self) -> int:
        return self.bond_parts[0].size - 1

    @property
    def fingerprint(self) -> str:
        """Identity recorded in caches and checkpoints: name, version and sizes."""
        return f"{self.name}/{self.version}/{self.atom_vocab_sizes}/{self.bond_vocab_sizes}"

    def featurize_mol(self, mol: Chem.Mol) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x [n, F_atom], edge_index [2, 2b], edge_attr [2b, F_bond])`` of one molecule."""
        atom_fns = [p.fn for p in self.atom_parts]
        bond_fns = [p.fn for p in self.bond_parts]
        x = np.array([[f(a) for f in atom_fns] for a in mol.GetAtoms()], dtype=np.int16)
        bonds = mol.GetBonds()
        n_bonds = len(bonds)
        edge_index = np.empty((2, 2 * n_bonds), dtype=np.int32)
        edge_attr = np.empty((2 * n_bonds, len(bond_fns)), dtype=np.int16)
        for k, b in enumerate(bonds):
            i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
            feats = [f(b) for f in bond_fns]
            edge_index[0, 2 * k], edge_index[1, 2 * k] = i, j
            edge_index[0, 2 * k + 1], edge_index[1, 2 * k + 1] = j, i
            edge_attr[2 * k] = feats
            edge_attr[2 * k + 1] = feats
        return x.reshape(-1, len(atom_fns)), edge_index, edge_attr

    def featurize(self, smiles: Sequence[str], n_jobs: int = 1, chunk_size: int = 4000) -> MolGraphs:
        """Featurize ``smiles``; unparseable ones are skipped and listed in ``invalid_rows``.

        ``source_rows[i]`` is the position in ``smiles`` of the i-th kept molecule.
        With ``n_jobs > 1`` chunks are featurized in worker processes (which return numpy
        arrays only) and concatenated in input order.
        """
        smiles = list(smiles)
        if n_jobs == -1:
            n_jobs = os.cpu_count() or 1
        starts = list(range(0, len(smiles), chunk_size)) or [0]
        chunks = [(self.name, smiles[s : s + chunk_size], s) for s in starts]
        if n_jobs > 1 and len(chunks) > 1:
            with ProcessPoolExecutor(max_workers=n_jobs) as pool:
                parts = list(pool.map(_featurize_chunk, chunks))
        else:
            parts = [_featurize_chunk_with(self, *c[1:]) for c in chunks]
        return _concat(self, smiles, parts)


def _featurize_chunk(args: tuple[str, list[str], int]) -> dict:
    name, smiles, offset = args
    return _featurize_chunk_with(FEATURIZERS.get(name), smiles, offset)


# One bulk-path column: (values, getter, codes.get or None, other, guard.search or None).
_Step = tuple[list, Callable, Callable | None, int, Callable | None]


def _steps(parts: Sequence[Part]) -> list[_Step]:
    """The bulk-path recipe of each column, with an empty list to collect its values."""
    steps: list[_Step] = []
    for p in parts:
        if p.getter is None:
            steps.append(([], p.fn, None, 0, None))
            continue
        guard = re.compile("|".join(map(re.escape, p.zero_unless))).search if p.zero_unless else None
        steps.append(([], p.getter, None if p.codes is None else p.codes.get, p.other, guard))
    return steps


def _fill(steps: list[_Step], items: list, smiles: str) -> None:
    """Append each column's values for ``items`` (the atoms or bonds of one molecule)."""
    for values, getter, code, other, guard in steps:
        if guard is not None and guard(smiles) is None:
            values.extend(repeat(0, len(items)))
        elif code is None:
            values.extend(map(getter, items))
        else:
            values.extend(map(code, map(getter, items), repeat(other)))


def _columns(steps: list[_Step], n_rows: int) -> np.ndarray:
    out = np.empty((n_rows, len(steps)), dtype=np.int16)
    for c, (values, *_) in enumerate(steps):
        out[:, c] = values
    return out


def _featurize_chunk_with(featurizer: Featurizer, smiles: list[str], offset: int) -> dict:
    """Featurize one chunk into flat per-column lists, converted to numpy once at the end.

    Atoms and bonds are fetched by index (faster than iterating ``GetAtoms()``) and each
    column is filled by mapping an RDKit getter over the whole molecule (see :class:`Part`).
    The result is identical to concatenating :meth:`Featurizer.featurize_mol` outputs.
    """
    RDLogger.DisableLog("rdApp.*")
    atom_steps, bond_steps = _steps(featurizer.atom_parts), _steps(featurizer.bond_parts)
    begins: list[int] = []
    ends: list[int] = []
    n_nodes: list[int] = []
    n_bonds: list[int] = []
    kept: list[int] = []
    invalid: list[int] = []
    n_atom_rows = 0
    parse = Chem.MolFromSmiles
    begin_idx, end_idx = _BOND.GetBeginAtomIdx, _BOND.GetEndAtomIdx
    for i, smi in enumerate(smiles, offset):
        text = smi.strip() if isinstance(smi, str) else ""
        mol = parse(text) if text else None
        if mol is None:
            invalid.append(i)
            continue
        n = mol.GetNumAtoms()
        if n == 0:
            invalid.append(i)
            continue
        nb = mol.GetNumBonds()
        atoms = list(map(mol.GetAtomWithIdx, range(n)))
        bonds = list(map(mol.GetBondWithIdx, range(nb)))
        try:
            _fill(atom_steps, atoms, text)
            _fill(bond_steps, bonds, text)
        except RuntimeError:
            # A getter RDKit refuses for this molecule (e.g. the bond order of an exotic
            # bond type): drop its partial rows and use the parts' own functions.
            _redo_exact(featurizer, atom_steps, bond_steps, atoms, bonds, n_atom_rows, len(begins))
        n_atom_rows += n
        begins.extend(map(begin_idx, bonds))
        ends.extend(map(end_idx, bonds))
        n_nodes.append(n)
        n_bonds.append(nb)
        kept.append(i)

    n_bond_rows = len(begins)
    src = np.array(begins, dtype=np.int32)
    dst = np.array(ends, dtype=np.int32)
    edge_index = np.empty((2, 2 * n_bond_rows), dtype=np.int32)
    edge_index[0, 0::2] = src
    edge_index[0, 1::2] = dst
    edge_index[1, 0::2] = dst
    edge_index[1, 1::2] = src
    return {
        "x": _columns(atom_steps, n_atom_rows),
        "edge_index": edge_index,
        # Both directions of a bond share its features.
        "edge_attr": np.repeat(_columns(bond_steps, n_bond_rows), 2, axis=0),
        "n_nodes": np.array(n_nodes, dtype=np.int64),
        "n_edges": 2 * np.array(n_bonds, dtype=np.int64),
        "kept": np.array(kept, dtype=np.int64),
        "invalid": invalid,
    }


def _redo_exact(
    featurizer: Featurizer,
    atom_steps: list[_Step],
    bond_steps: list[_Step],
    atoms: list,
    bonds: list,
    n_atom_rows: int,
    n_bond_rows: int,
) -> None:
    for steps, parts, items, start in (
        (atom_steps, featurizer.atom_parts, atoms, n_atom_rows),
        (bond_steps, featurizer.bond_parts, bonds, n_bond_rows),
    ):
        for (values, *_), part in zip(steps, parts, strict=True):
            del values[start:]
            values.extend(map(part.fn, items))


def _concat(featurizer: Featurizer, smiles: list[str], parts: list[dict]) -> MolGraphs:
    n_nodes = np.concatenate([p["n_nodes"] for p in parts])
    n_edges = np.concatenate([p["n_edges"] for p in parts])
    kept = np.concatenate([p["kept"] for p in parts])
    return MolGraphs(
        smiles=[smiles[i].strip() for i in kept],
        source_rows=kept,
        x=np.concatenate([p["x"] for p in parts]),
        edge_index=np.concatenate([p["edge_index"] for p in parts], axis=1),
        edge_attr=np.concatenate([p["edge_attr"] for p in parts]),
        node_ptr=np.concatenate([[0], np.cumsum(n_nodes)]).astype(np.int64),
        edge_ptr=np.concatenate([[0], np.cumsum(n_edges)]).astype(np.int64),
        featurizer=featurizer.name,
        featurizer_version=featurizer.version,
        invalid_rows=[i for p in parts for i in p["invalid"]],
    )


def smiles_hash(smiles: Sequence[str]) -> str:
    """Content hash of a SMILES list (order matters: it fixes the row alignment)."""
    h = hashlib.sha256()
    for s in smiles:
        h.update(str(s).encode())
        h.update(b"\n")
    return h.hexdigest()


FEATURIZERS: Registry[Featurizer] = Registry("featurizer")
FEATURIZERS.add(
    "basic",
    Featurizer("basic", "1", (ATOM_TYPE, BASIC_CHIRALITY), (BOND_TYPE, BOND_DIRECTION)),
)
FEATURIZERS.add(
    "rich",
    Featurizer(
        "rich",
        "1",
        (ATOM_TYPE, DEGREE, FORMAL_CHARGE, CHIRALITY, NUM_HS, HYBRIDIZATION, AROMATIC, IN_RING),
        (BOND_TYPE, BOND_STEREO, CONJUGATED),
    ),
)


def get_featurizer(name: str) -> Featurizer:
    return FEATURIZERS.get(name)


def _registered_featurizer(name: str, fingerprint: str) -> Featurizer:
    """Unpickling: the registered featurizer ``name``, refused if it now computes other features
    (a model pickled with one moladapt version, loaded with another)."""
    featurizer = get_featurizer(name)
    if featurizer.fingerprint != fingerprint:
        raise ValueError(f"the pickled object was made with featurizer {fingerprint}, but this "
                         f"moladapt's {name!r} is {featurizer.fingerprint}; use a matching version")
    return featurizer


def canonical_smiles(smiles: Sequence[str]) -> list[str | None]:
    """RDKit canonical isomeric SMILES (``None`` where RDKit cannot parse)."""
    RDLogger.DisableLog("rdApp.*")
    out: list[str | None] = []
    for s in smiles:
        mol = Chem.MolFromSmiles(s) if isinstance(s, str) and s else None
        out.append(None if mol is None else Chem.MolToSmiles(mol))
    return out
