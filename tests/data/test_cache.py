import numpy as np

from moladapt.data import cache
from moladapt.data.featurize import Featurizer, get_featurizer


def _same(a, b):
    assert a.smiles == b.smiles and a.invalid_rows == b.invalid_rows
    for field in ("source_rows", "x", "edge_index", "edge_attr", "node_ptr", "edge_ptr"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_cache_round_trip_and_reuse(tmp_path, bbbp):
    smiles = bbbp.smiles.tolist()[:300]
    feat = get_featurizer("basic")
    first = cache.featurize_cached(smiles, feat, cache_dir=tmp_path)
    entries = list(tmp_path.glob("*.npz"))
    assert len(entries) == 1
    second = cache.featurize_cached(smiles, feat, cache_dir=tmp_path)
    _same(first, second)
    _same(first, feat.featurize(smiles))


def test_changed_featurizer_or_data_never_reuses_a_stale_entry(tmp_path, bbbp):
    smiles = bbbp.smiles.tolist()[:50]
    basic = get_featurizer("basic")
    bumped = Featurizer("basic", "999", basic.atom_parts, basic.bond_parts)
    keys = {cache.cache_key(smiles, basic), cache.cache_key(smiles, bumped),
            cache.cache_key(smiles, get_featurizer("rich")), cache.cache_key(smiles[:-1], basic),
            cache.cache_key(list(reversed(smiles)), basic)}
    assert len(keys) == 5


def test_corrupt_entry_is_rebuilt(tmp_path, bbbp):
    smiles = bbbp.smiles.tolist()[:20]
    feat = get_featurizer("basic")
    cache.featurize_cached(smiles, feat, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.npz")
    entry.write_bytes(b"garbage")
    _same(cache.featurize_cached(smiles, feat, cache_dir=tmp_path), feat.featurize(smiles))
    entry.write_bytes(b"PK\x03\x04garbage")  # looks like a zip (npz) but is torn
    _same(cache.featurize_cached(smiles, feat, cache_dir=tmp_path), feat.featurize(smiles))


def test_no_temporary_files_left(tmp_path, bbbp):
    cache.featurize_cached(bbbp.smiles.tolist()[:10], get_featurizer("rich"), cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.tmp"))
