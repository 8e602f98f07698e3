"""ECFP (Morgan) fingerprints of SMILES, with a bounded cache of packed bit vectors.

Used by the fingerprint baselines (:mod:`moladapt.adapt.fingerprint_baselines`) and by the
fingerprint-fused encoders (:mod:`moladapt.models.fingerprint`). ECFP4 = RDKit Morgan
fingerprint, radius 2, 2048 bits (bit vectors, no counts), as in FS-Mol.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

__all__ = ["ECFP_BITS", "ECFP_RADIUS", "ECFPFeaturizer", "ecfp", "shared_ecfp_featurizer"]

ECFP_RADIUS = 2
ECFP_BITS = 2048


def ecfp(smiles: Sequence[str], radius: int = ECFP_RADIUS, n_bits: int = ECFP_BITS) -> np.ndarray:
    """Morgan bit vectors of ``smiles``: ``[n, n_bits]`` bool (all False for an unparsable SMILES)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=int(radius), fpSize=int(n_bits))
    out = np.zeros((len(smiles), int(n_bits)), dtype=bool)
    RDLogger.DisableLog("rdApp.*")
    try:
        for i, smi in enumerate(smiles):
            mol = Chem.MolFromSmiles(smi)
            if mol is not None:
                out[i] = generator.GetFingerprintAsNumPy(mol).astype(bool)
    finally:
        RDLogger.EnableLog("rdApp.*")
    return out


class ECFPFeaturizer:
    """ECFP bit vectors with an LRU cache of packed fingerprints (``max_items`` SMILES)."""

    def __init__(self, radius: int = ECFP_RADIUS, n_bits: int = ECFP_BITS, max_items: int = 200_000) -> None:
        self.radius, self.n_bits, self.max_items = int(radius), int(n_bits), int(max_items)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def __call__(self, smiles: Sequence[str]) -> np.ndarray:
        missing = [s for s in dict.fromkeys(smiles) if s not in self._cache]
        if missing:
            for smi, bits in zip(missing, ecfp(missing, self.radius, self.n_bits), strict=True):
                self._cache[smi] = np.packbits(bits)
        if not len(smiles):
            return np.zeros((0, self.n_bits), dtype=bool)
        packed = np.stack([self._cache[smi] for smi in smiles])
        for smi in dict.fromkeys(smiles):
            self._cache.move_to_end(smi)
        out = np.unpackbits(packed, axis=1, count=self.n_bits).astype(bool)
        while len(self._cache) > self.max_items:
            self._cache.popitem(last=False)
        return out


_SHARED: dict[tuple[int, int], ECFPFeaturizer] = {}


def shared_ecfp_featurizer(radius: int = ECFP_RADIUS, n_bits: int = ECFP_BITS) -> ECFPFeaturizer:
    """One process-wide :class:`ECFPFeaturizer` per ``(radius, n_bits)``.

    Modules hold this object rather than a cache of their own, so deep copies of a model (every
    few-shot ``adapt`` makes one) never copy, nor refill, the fingerprints.
    """
    key = (int(radius), int(n_bits))
    if key not in _SHARED:
        _SHARED[key] = ECFPFeaturizer(*key, max_items=500_000)
    return _SHARED[key]
