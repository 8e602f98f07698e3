"""Tests of moladapt.data.splits on real molecules (BBBP and Tox21 slices)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moladapt.data.splits import (
    PARTS,
    SPLITTERS,
    Split,
    make_split,
    molecules_shared_with_train,
    murcko_scaffold,
    scaffold_groups,
    split_has_both_classes,
)

DATA = Path(os.environ["MOLADAPT_DATA_DIR"])  # set by tests/conftest.py
ALL_SPLITTERS = ["random", "scaffold", "balanced_scaffold", "stratified_random"]


@pytest.fixture(scope="module")
def bbbp() -> tuple[list[str], np.ndarray]:
    path = DATA / "BBBP.csv"
    if not path.exists():
        pytest.skip(f"{path} not available")
    df = pd.read_csv(path, nrows=400)
    return df["smiles"].tolist(), df[["p_np"]].to_numpy(dtype=np.float64)


@pytest.fixture(scope="module")
def tox21() -> tuple[list[str], np.ndarray]:
    path = DATA / "tox21.csv"
    if not path.exists():
        pytest.skip(f"{path} not available")
    df = pd.read_csv(path, nrows=500)
    tasks = [c for c in df.columns if c not in ("smiles", "mol_id")]
    return df["smiles"].tolist(), df[tasks].to_numpy(dtype=np.float64)


def _scaffolds_of(smiles: list[str], rows: np.ndarray, chiral: bool) -> set[str]:
    out = set()
    for i in rows.tolist():
        scaffold = murcko_scaffold(smiles[i], include_chirality=chiral)
        if scaffold is not None:  # a few BBBP SMILES don't parse: they are singletons
            out.add(scaffold)
    return out


def _reference_pretrain_gnns(smiles: list[str], frac_train: float, frac_valid: float):
    """pretrain-gnns chem/splitters.py scaffold_split, transcribed independently."""
    from rdkit.Chem.Scaffolds import MurckoScaffold

    all_scaffolds: dict[str, list[int]] = {}
    for i, smi in enumerate(smiles):
        scaffold = MurckoScaffold.MurckoScaffoldSmiles(smiles=smi, includeChirality=True)
        all_scaffolds.setdefault(scaffold, []).append(i)
    all_scaffolds = {key: sorted(value) for key, value in all_scaffolds.items()}
    sets = [
        s
        for (_, s) in sorted(
            all_scaffolds.items(), key=lambda x: (len(x[1]), x[1][0]), reverse=True
        )
    ]
    train_cutoff = frac_train * len(smiles)
    valid_cutoff = (frac_train + frac_valid) * len(smiles)
    train, valid, test = [], [], []
    for s in sets:
        if len(train) + len(s) > train_cutoff:
            if len(train) + len(valid) + len(s) > valid_cutoff:
                test.extend(s)
            else:
                valid.extend(s)
        else:
            train.extend(s)
    return sorted(train), sorted(valid), sorted(test)


def test_registry_names():
    assert SPLITTERS.names() == sorted(ALL_SPLITTERS)
    with pytest.raises(KeyError, match="unknown split"):
        make_split("nope", ["C"], None)


@pytest.mark.parametrize("name", ALL_SPLITTERS)
def test_disjoint_cover_and_sizes(bbbp, name):
    smiles, y = bbbp
    m = len(smiles)
    split = make_split(name, smiles, y, frac=(0.8, 0.1, 0.1), seed=3)
    split.check(m)
    got = np.sort(np.concatenate([split.train, split.valid, split.test]))
    np.testing.assert_array_equal(got, np.arange(m))
    for part in PARTS:
        arr = getattr(split, part)
        assert arr.dtype == np.int64
        assert not arr.flags.writeable
    targets = (0.8 * m, 0.1 * m, 0.1 * m)
    if name in ("random", "stratified_random"):
        assert split.sizes == (320, 40, 40)
    else:
        biggest = max(len(g) for g in scaffold_groups(smiles, include_chirality=name == "scaffold"))
        for size, target in zip(split.sizes, targets, strict=True):
            assert abs(size - target) <= biggest
        assert split.sizes[0] <= targets[0]  # train is never over-filled


@pytest.mark.parametrize("name,chiral", [("scaffold", True), ("balanced_scaffold", False)])
def test_no_scaffold_in_two_parts(bbbp, name, chiral):
    smiles, y = bbbp
    split = make_split(name, smiles, y, seed=1)
    scaf = {p: _scaffolds_of(smiles, getattr(split, p), chiral) for p in PARTS}
    assert not scaf["train"] & scaf["valid"]
    assert not scaf["train"] & scaf["test"]
    assert not scaf["valid"] & scaf["test"]


def test_scaffold_matches_pretrain_gnns(bbbp, tox21):
    cases = [(bbbp[0], (0.8, 0.1, 0.1)), (bbbp[0], (0.7, 0.2, 0.1)), (tox21[0], (0.8, 0.1, 0.1))]
    for all_smiles, frac in cases:
        # pretrain-gnns only ever sees molecules RDKit parsed (it would crash on the others).
        smiles = [s for s in all_smiles if murcko_scaffold(s) is not None]
        split = make_split("scaffold", smiles, None, frac=frac)
        train, valid, test = _reference_pretrain_gnns(smiles, frac[0], frac[1])
        assert split.train.tolist() == train
        assert split.valid.tolist() == valid
        assert split.test.tolist() == test


def test_scaffold_toy_order():
    # Groups: benzene x5, pyridine x2 (first row 5), cyclohexane x2 (first row 7), naphthalene x1.
    smiles = [
        "Cc1ccccc1",
        "Oc1ccccc1",
        "Nc1ccccc1",
        "Clc1ccccc1",
        "CCc1ccccc1",
        "Cc1ccncc1",
        "Oc1ccncc1",
        "CC1CCCCC1",
        "OC1CCCCC1",
        "Cc1ccc2ccccc2c1",
    ]
    split = make_split("scaffold", smiles, None, frac=(0.6, 0.2, 0.2))
    # benzene -> train (5 <= 6); the 2-groups sort by first index, larger first:
    # cyclohexane -> valid (7 <= 8), pyridine -> test (9 > 8); naphthalene -> train (6 <= 6).
    assert split.train.tolist() == [0, 1, 2, 3, 4, 9]
    assert split.valid.tolist() == [7, 8]
    assert split.test.tolist() == [5, 6]


def test_scaffold_is_deterministic_and_ignores_seed(bbbp):
    smiles, y = bbbp
    ref = make_split("scaffold", smiles, y, seed=0)
    assert make_split("scaffold", smiles, y, seed=0) == ref
    for seed in (1, 12345):
        assert make_split("scaffold", smiles, y, seed=seed) == ref
    assert make_split("scaffold", smiles, None, seed=5) == ref  # labels don't matter either


def test_balanced_scaffold_seeded(bbbp):
    smiles, y = bbbp
    a = make_split("balanced_scaffold", smiles, y, seed=0)
    assert make_split("balanced_scaffold", smiles, y, seed=0) == a
    assert make_split("balanced_scaffold", smiles, y, seed=1) != a


def test_balanced_scaffold_big_groups_go_to_train(bbbp):
    smiles, y = bbbp
    m = len(smiles)
    big = [g for g in scaffold_groups(smiles, include_chirality=False) if len(g) > 0.1 * m / 2]
    assert big, "the BBBP slice has scaffold groups larger than half the valid size"
    for seed in range(3):
        train = set(make_split("balanced_scaffold", smiles, y, seed=seed).train.tolist())
        for g in big:
            assert set(g) <= train


@pytest.mark.parametrize("name", ["random", "stratified_random"])
def test_random_splits_seeded(bbbp, name):
    smiles, y = bbbp
    a = make_split(name, smiles, y, seed=0)
    assert make_split(name, smiles, y, seed=0) == a
    assert make_split(name, smiles, y, seed=1) != a


def test_stratified_keeps_positive_rate(bbbp):
    smiles, y = bbbp
    overall = float(np.mean(y[:, 0]))
    for seed in range(5):
        split = make_split("stratified_random", smiles, y, seed=seed)
        for part in PARTS:
            rows = getattr(split, part)
            n_pos = float(np.sum(y[rows, 0]))
            # Two strata: within one molecule of the proportional share.
            assert abs(n_pos - overall * len(rows)) <= 1.0 + 1e-9, (seed, part)


def test_stratified_multitask_uses_first_task_and_missing_stratum(tox21):
    smiles, y = tox21
    first = y[:, 0]
    split = make_split("stratified_random", smiles, y, seed=2)
    for part in PARTS:
        rows = getattr(split, part)
        for stratum in (first == 1, first == 0, np.isnan(first)):
            expected = stratum.mean() * len(rows)
            assert abs(stratum[rows].sum() - expected) <= 2.0  # three strata: up to 2 off
    assert np.isnan(first).any()  # the slice does exercise the missing stratum


def test_stratified_falls_back_to_random_for_regression(bbbp):
    smiles, _ = bbbp
    values = np.random.default_rng(0).normal(size=(len(smiles), 1))
    for labels in (values, None):
        assert make_split("stratified_random", smiles, labels, seed=4) == make_split(
            "random", smiles, labels, seed=4
        )


@pytest.mark.parametrize("name", ALL_SPLITTERS)
def test_invalid_smiles_do_not_crash(bbbp, name):
    smiles, y = bbbp
    bad = ["not a smiles", "C1CC", "", "c1ccccc1(", None, "[Xx]"]
    mixed = smiles[:60] + bad + smiles[60:100]
    labels = np.concatenate([y[:60], np.zeros((len(bad), 1)), y[60:100]])
    split = make_split(name, mixed, labels, seed=0)
    split.check(len(mixed))
    if "scaffold" in name:
        groups = scaffold_groups(mixed)
        for i in range(60, 60 + len(bad)):
            assert [i] in groups  # each unparsable row is a group of its own


def test_scaffold_helpers():
    assert murcko_scaffold("Cc1cc(Oc2nccc(CCC)c2)ccc1") == "c1ccc(Oc2ccccn2)cc1"
    assert murcko_scaffold("CCO") == ""
    assert murcko_scaffold("not a smiles") is None
    groups = scaffold_groups(["CCO", "c1ccccc1C", "CCN", "c1ccccc1O", "bad"])
    assert groups == [[0, 2], [1, 3], [4]]


def test_input_validation(bbbp):
    smiles, y = bbbp
    with pytest.raises(ValueError, match="frac"):
        make_split("random", smiles, y, frac=(0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match="frac"):
        make_split("random", smiles, y, frac=(0.9, 0.1))
    with pytest.raises(ValueError, match="labels"):
        make_split("stratified_random", smiles, y[:10])


def test_split_check_and_equality():
    ok = Split(train=[2, 0], valid=[1], test=[3])
    assert ok.train.tolist() == [0, 2]
    assert ok.sizes == (2, 1, 1)
    assert ok.check(4) is ok
    assert ok == Split(train=[0, 2], valid=[1], test=[3])
    with pytest.raises(AssertionError, match="row 1"):
        Split(train=[0, 1], valid=[1], test=[2]).check()
    with pytest.raises(AssertionError, match="range"):
        ok.check(5)


def test_split_has_both_classes(tox21):
    smiles, y = tox21
    split = make_split("scaffold", smiles, y)
    report = split_has_both_classes(y, split)
    assert set(report) == set(PARTS)
    for part, tasks in report.items():
        rows = getattr(split, part)
        for t in range(y.shape[1]):
            col = y[rows, t]
            one_class = np.unique(col[~np.isnan(col)]).size < 2
            assert (t in tasks) == one_class
    # A hand-made case: task 0 has only negatives in valid, task 1 is fine everywhere.
    labels = np.array([[1, 0], [0, 1], [0, 0], [0, 1], [1, np.nan], [0, 0]], dtype=float)
    split = Split(train=[0, 1], valid=[2, 3], test=[4, 5])
    assert split_has_both_classes(labels, split) == {"train": [], "valid": [0], "test": [1]}


def test_copies_of_a_molecule_across_parts_are_found_by_structure():
    # rows 0 and 3 are ethanol spelt two ways; row 5 is unparsable and duplicated verbatim
    smiles = ["CCO", "c1ccccc1", "CC", "OCC", "CCN", "not a molecule", "not a molecule"]
    split = Split(train=np.array([0, 1, 5]), valid=np.array([2, 3]), test=np.array([4, 6]))
    shared = molecules_shared_with_train(smiles, split)
    assert shared == {"valid": [(3, 0)], "test": [(6, 5)]}
    none = Split(train=np.array([0, 1, 3]), valid=np.array([2]), test=np.array([4]))
    assert molecules_shared_with_train(smiles[:5], none) == {"valid": [], "test": []}
