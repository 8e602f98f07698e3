"""ECFP (Morgan) fingerprints of SMILES, with a bounded cache of packed vectors.

Used by the fingerprint baselines (:mod:`moladapt.adapt.fingerprint_baselines`) and by the
fingerprint-fused encoders (:mod:`moladapt.models.fingerprint`). ECFP4 = RDKit Morgan
fingerprint, radius 2, 2048 positions, as a bit vector (``counts=False``) or as occurrence
counts (``counts=True``). FS-Mol's own ECFP is the count form
(``rdFingerprintGenerator.GetCountFPs(..., fpType=MorganFP)``: radius 2, 2048, counts; its
``fsmol_task.py`` and ``featurise_utils.py``), which this module reproduces exactly.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

__all__ = ["ECFP_BITS", "ECFP_RADIUS", "ECFPFeaturizer", "ecfp", "shared_ecfp_featurizer"]

ECFP_RADIUS = 2
ECFP_BITS = 2048
#: Counts are stored as uint8: an environment seen more than 255 times in one molecule
#: (none of FS-Mol's molecules comes close) is clipped.
MAX_COUNT = 255


def ecfp(smiles: Sequence[str], radius: int = ECFP_RADIUS, n_bits: int = ECFP_BITS,
         counts: bool = False) -> np.ndarray:
    """Morgan fingerprints of ``smiles``: ``[n, n_bits]`` bool bits, or uint8 occurrence counts
    (clipped at :data:`MAX_COUNT`) when ``counts``; all zero for an unparsable SMILES."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=int(radius), fpSize=int(n_bits))
    out = np.zeros((len(smiles), int(n_bits)), dtype=np.uint8 if counts else bool)
    RDLogger.DisableLog("rdApp.*")
    try:
        for i, smi in enumerate(smiles):
            mol = Chem.MolFromSmiles(smi)
            if mol is None:
                continue
            if counts:
                out[i] = np.minimum(generator.GetCountFingerprintAsNumPy(mol), MAX_COUNT)
            else:
                out[i] = generator.GetFingerprintAsNumPy(mol).astype(bool)
    finally:
        RDLogger.EnableLog("rdApp.*")
    return out


class ECFPFeaturizer:
    """ECFP vectors (bits, or counts with ``counts=True``) with an LRU cache of ``max_items``
    SMILES, each kept packed: 256 bytes of bits, or the nonzero positions and counts (about 3
    bytes per environment present)."""

    def __init__(self, radius: int = ECFP_RADIUS, n_bits: int = ECFP_BITS, max_items: int = 200_000,
                 counts: bool = False) -> None:
        self.radius, self.n_bits, self.max_items = int(radius), int(n_bits), int(max_items)
        self.counts = bool(counts)
        self._cache: OrderedDict[str, object] = OrderedDict()

    def _pack(self, row: np.ndarray) -> object:
        if not self.counts:
            return np.packbits(row)
        where = np.flatnonzero(row)
        return where.astype(np.uint16 if self.n_bits <= 1 << 16 else np.uint32), row[where]

    def __call__(self, smiles: Sequence[str]) -> np.ndarray:
        missing = [s for s in dict.fromkeys(smiles) if s not in self._cache]
        if missing:
            fps = ecfp(missing, self.radius, self.n_bits, counts=self.counts)
            for smi, row in zip(missing, fps, strict=True):
                self._cache[smi] = self._pack(row)
        packed = [self._cache[smi] for smi in smiles]
        for smi in dict.fromkeys(smiles):
            self._cache.move_to_end(smi)
        while len(self._cache) > self.max_items:
            self._cache.popitem(last=False)
        if not self.counts:
            if not packed:
                return np.zeros((0, self.n_bits), dtype=bool)
            return np.unpackbits(np.stack(packed), axis=1, count=self.n_bits).astype(bool)
        out = np.zeros((len(packed), self.n_bits), dtype=np.uint8)
        if packed:
            rows = np.repeat(np.arange(len(packed)), [len(where) for where, _ in packed])
            out[rows, np.concatenate([where for where, _ in packed])] = np.concatenate([v for _, v in packed])
        return out


_SHARED: dict[tuple[int, int, bool], ECFPFeaturizer] = {}


def shared_ecfp_featurizer(radius: int = ECFP_RADIUS, n_bits: int = ECFP_BITS,
                           counts: bool = False) -> ECFPFeaturizer:
    """One process-wide :class:`ECFPFeaturizer` per ``(radius, n_bits, counts)``.

    Modules hold this object rather than a cache of their own, so deep copies of a model (every
    few-shot ``adapt`` makes one) never copy, nor refill, the fingerprints.
    """
    key = (int(radius), int(n_bits), bool(counts))
    if key not in _SHARED:
        _SHARED[key] = ECFPFeaturizer(*key[:2], max_items=500_000, counts=key[2])
    return _SHARED[key]
