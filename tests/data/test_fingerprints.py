"""ECFP bits and counts on real molecules (BBBP), against RDKit's own definitions."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from moladapt.data.featurize import canonical_smiles
from moladapt.data.fingerprints import ECFPFeaturizer, ecfp, shared_ecfp_featurizer

BBBP = Path(os.environ["MOLADAPT_DATA_DIR"]) / "BBBP.csv"  # set by tests/conftest.py


@pytest.fixture(scope="module")
def smiles() -> list[str]:
    if not BBBP.exists():
        pytest.skip(f"{BBBP} not available")
    import pandas as pd

    return pd.read_csv(BBBP)["smiles"].tolist()[:60]


def _fsmol_count_ecfp(smi: str) -> np.ndarray:
    """FS-Mol's fingerprint, written as its ``MoleculeDatapoint.get_fingerprint`` computes it."""
    from rdkit import Chem, DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    fp = rdFingerprintGenerator.GetCountFPs([Chem.MolFromSmiles(smi)], fpType=rdFingerprintGenerator.MorganFP)[0]
    out = np.zeros((0,), np.float32)
    DataStructs.ConvertToNumpyArray(fp, out)
    return out


def test_counts_are_fsmol_s_fingerprint_and_their_support_is_the_bits(smiles):
    good = [s for s, canon in zip(smiles, canonical_smiles(smiles), strict=True) if canon is not None]
    counts = ecfp(good, counts=True)
    assert counts.dtype == np.uint8 and counts.shape == (len(good), 2048)
    np.testing.assert_array_equal(counts, np.stack([_fsmol_count_ecfp(s) for s in good]))
    np.testing.assert_array_equal(counts > 0, ecfp(good))
    assert counts.max() > 1  # counts carry more than the bits on real molecules


def test_an_unparsable_smiles_gives_zeros_in_both_forms():
    for counts in (False, True):
        out = ecfp(["not a smiles", "CCO"], counts=counts)
        assert not out[0].any() and out[1].any()


def test_the_count_cache_returns_what_it_was_given(smiles):
    feat = ECFPFeaturizer(max_items=25, counts=True)
    # more than the cache holds, with repeats and a molecule without any environment
    order = smiles[10:40] + ["not a smiles"] + smiles[:5] + smiles[10:15]
    np.testing.assert_array_equal(feat(order), ecfp(order, counts=True))
    assert len(feat._cache) == 25 and not feat(["not a smiles"]).any()
    np.testing.assert_array_equal(feat(order[::-1]), ecfp(order[::-1], counts=True))
    assert feat([]).shape == (0, 2048) and feat([]).dtype == np.uint8
    bits = ECFPFeaturizer(counts=False)
    np.testing.assert_array_equal(bits(order), ecfp(order))
    assert bits([]).dtype == bool


def test_bits_and_counts_have_separate_shared_caches():
    assert shared_ecfp_featurizer(2, 256, counts=True) is shared_ecfp_featurizer(2, 256, counts=True)
    assert shared_ecfp_featurizer(2, 256, counts=True) is not shared_ecfp_featurizer(2, 256)
    assert shared_ecfp_featurizer(2, 256).counts is False
