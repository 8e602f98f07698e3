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
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from rdkit import Chem, RDLogger

from moladapt.registry import Registry
from moladapt.types import MolGraphs


@dataclass(frozen=True)
class Part:
    """One categorical feature column: ``fn(atom_or_bond) -> int`` in ``[0, size)``."""

    name: str
    size: int
    fn: Callable[[object], int]


def one_of(name: str, choices: Sequence, getter: Callable, extra: int = 0) -> Part:
    """A part whose value is the index of ``getter(x)`` in ``choices``; unseen → 'other'.

    The vocabulary is ``len(choices)`` + 1 ('other') + ``extra`` reserved indices.
    """
    lookup = {c: i for i, c in enumerate(choices)}
    other = len(choices)

    def fn(x: object) -> int:
        return lookup.get(getter(x), other)

    return Part(name, len(choices) + 1 + extra, fn)


# --- atom parts --------------------------------------------------------------------------
# Atomic numbers 1..118 → 0..117, 118 = other (dummy atom '*'), 119 = MASK: 120, as pretrain-gnns.
ATOM_TYPE = one_of("atomic_num", list(range(1, 119)), lambda a: a.GetAtomicNum(), extra=1)
_CHI = Chem.rdchem.ChiralType
# pretrain-gnns embeds 3 chirality tags; rarer tags (CHI_OTHER, allene, ...) map to 0.
_BASIC_CHIRALITY = {_CHI.CHI_UNSPECIFIED: 0, _CHI.CHI_TETRAHEDRAL_CW: 1, _CHI.CHI_TETRAHEDRAL_CCW: 2}
BASIC_CHIRALITY = Part("chirality", 3, lambda a: _BASIC_CHIRALITY.get(a.GetChiralTag(), 0))
CHIRALITY = one_of(
    "chirality",
    [_CHI.CHI_UNSPECIFIED, _CHI.CHI_TETRAHEDRAL_CW, _CHI.CHI_TETRAHEDRAL_CCW],
    lambda a: a.GetChiralTag(),
)
DEGREE = one_of("degree", list(range(11)), lambda a: a.GetTotalDegree())
FORMAL_CHARGE = one_of("formal_charge", list(range(-5, 6)), lambda a: a.GetFormalCharge())
NUM_HS = one_of("num_hs", list(range(9)), lambda a: a.GetTotalNumHs())
_HYB = Chem.rdchem.HybridizationType
HYBRIDIZATION = one_of(
    "hybridization",
    [_HYB.S, _HYB.SP, _HYB.SP2, _HYB.SP3, _HYB.SP3D, _HYB.SP3D2],
    lambda a: a.GetHybridization(),
)
AROMATIC = Part("aromatic", 2, lambda a: int(a.GetIsAromatic()))
IN_RING = Part("in_ring", 2, lambda a: int(a.IsInRing()))

# --- bond parts --------------------------------------------------------------------------
_BT = Chem.rdchem.BondType
# single/double/triple/aromatic = 0..3, 4 = self-loop (added by GIN), 5 = MASK. Rarer bond
# types (dative, ...) fall back to single, as there is no slot for them in pretrain-gnns.
_BOND_TYPES = {_BT.SINGLE: 0, _BT.DOUBLE: 1, _BT.TRIPLE: 2, _BT.AROMATIC: 3}
BOND_TYPE = Part("bond_type", 6, lambda b: _BOND_TYPES.get(b.GetBondType(), 0))
_BD = Chem.rdchem.BondDir
_BOND_DIRS = {_BD.NONE: 0, _BD.ENDUPRIGHT: 1, _BD.ENDDOWNRIGHT: 2}
BOND_DIRECTION = Part("bond_direction", 3, lambda b: _BOND_DIRS.get(b.GetBondDir(), 0))
_BS = Chem.rdchem.BondStereo
BOND_STEREO = one_of(
    "bond_stereo",
    [_BS.STEREONONE, _BS.STEREOZ, _BS.STEREOE, _BS.STEREOCIS, _BS.STEREOTRANS, _BS.STEREOANY],
    lambda b: b.GetStereo(),
)
CONJUGATED = Part("conjugated", 2, lambda b: int(b.GetIsConjugated()))


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


def _featurize_chunk_with(featurizer: Featurizer, smiles: list[str], offset: int) -> dict:
    RDLogger.DisableLog("rdApp.*")
    xs, eis, eas, kept, invalid = [], [], [], [], []
    n_atom_cols, n_bond_cols = len(featurizer.atom_parts), len(featurizer.bond_parts)
    for i, smi in enumerate(smiles):
        mol = Chem.MolFromSmiles(smi.strip()) if isinstance(smi, str) and smi.strip() else None
        if mol is None or mol.GetNumAtoms() == 0:
            invalid.append(offset + i)
            continue
        x, ei, ea = featurizer.featurize_mol(mol)
        xs.append(x)
        eis.append(ei)
        eas.append(ea)
        kept.append(offset + i)
    return {
        "x": np.concatenate(xs) if xs else np.zeros((0, n_atom_cols), np.int16),
        "edge_index": np.concatenate(eis, axis=1) if eis else np.zeros((2, 0), np.int32),
        "edge_attr": np.concatenate(eas) if eas else np.zeros((0, n_bond_cols), np.int16),
        "n_nodes": np.array([len(x) for x in xs], dtype=np.int64),
        "n_edges": np.array([e.shape[1] for e in eis], dtype=np.int64),
        "kept": np.array(kept, dtype=np.int64),
        "invalid": invalid,
    }


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
