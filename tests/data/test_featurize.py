"""Featurizers: exact values on known molecules, invalid SMILES, row alignment, parallelism."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem

from moladapt.data.featurize import ATOM_TYPE, BOND_TYPE, Featurizer, Part, get_featurizer

BASIC = get_featurizer("basic")
RICH = get_featurizer("rich")
# rich atom columns: atomic_num, degree, formal_charge, chirality, num_hs, hybridization,
# aromatic, in_ring; rich bond columns: bond_type, bond_stereo, conjugated.
FORMAL_CHARGE_COL, CHIRALITY_COL = 2, 3

# Molecules exercising every shortcut of the bulk path: stereo tags, bond directions,
# CXSMILES, dummy atoms, charges, dative and quadruple bonds, disconnected parts.
TRICKY = [
    "CCO",
    "c1ccccc1",
    "C[C@H](N)O",
    "C[C@@H](N)O",
    "F/C=C/F",
    "F/C=C\\F",
    "C/C=C/C=C\\C",
    "C[C@H](N)O |&1:1|",
    "[NH4+]",
    "C[O-]",
    "*CC",
    "[Na+].[Cl-]",
    "[NH3]->[Cu+2]",
    "[C]$[C]",
    "C#N",
    "O=C(O)[C@@H]1CCCN1",
    "C1=C/CCCCCC/1",
    "[13CH3]C(=O)[O-].[K+]",
    "c1ccc2[nH]ccc2c1",
]


def _by_molecule(g, k):
    a, b = g.node_ptr[k], g.node_ptr[k + 1]
    c, d = g.edge_ptr[k], g.edge_ptr[k + 1]
    return g.x[a:b], g.edge_index[:, c:d], g.edge_attr[c:d]


def _assert_same_graphs(a, b):
    assert a.smiles == b.smiles
    assert a.invalid_rows == b.invalid_rows
    assert (a.featurizer, a.featurizer_version) == (b.featurizer, b.featurizer_version)
    for name in ("source_rows", "x", "edge_index", "edge_attr", "node_ptr", "edge_ptr"):
        u, v = getattr(a, name), getattr(b, name)
        assert u.dtype == v.dtype and u.shape == v.shape, name
        np.testing.assert_array_equal(u, v, err_msg=name)


def test_ethanol_exact_values():
    g = BASIC.featurize(["CCO"])
    # Atom type is atomic number - 1; no chirality.
    np.testing.assert_array_equal(g.x, [[5, 0], [5, 0], [7, 0]])
    # Bonds C0-C1 and C1-O2, each in both directions, all single with no direction.
    np.testing.assert_array_equal(g.edge_index, [[0, 1, 1, 2], [1, 0, 2, 1]])
    np.testing.assert_array_equal(g.edge_attr, np.zeros((4, 2)))
    np.testing.assert_array_equal(g.node_ptr, [0, 3])
    np.testing.assert_array_equal(g.edge_ptr, [0, 4])
    assert g.x.dtype == np.int16 and g.edge_attr.dtype == np.int16
    assert g.edge_index.dtype == np.int32
    assert g.node_ptr.dtype == g.edge_ptr.dtype == g.source_rows.dtype == np.int64
    r = RICH.featurize(["CCO"])
    # O: atomic_num 8 → 7, total degree 2, charge 0 → 5, no chirality, 1 H, SP3 (→ 3).
    np.testing.assert_array_equal(r.x[2], [7, 2, 5, 0, 1, 3, 0, 0])
    np.testing.assert_array_equal(r.edge_attr, np.zeros((4, 3)))


def test_benzene_bonds_are_aromatic():
    g = BASIC.featurize(["c1ccccc1"])
    assert g.edge_index.shape == (2, 12)
    assert (g.edge_attr[:, 0] == 3).all()  # aromatic bond type
    r = RICH.featurize(["c1ccccc1"])
    assert (r.x[:, 6] == 1).all() and (r.x[:, 7] == 1).all()  # aromatic, in ring
    assert (r.edge_attr == [3, 0, 1]).all()  # aromatic, no stereo, conjugated


def test_chiral_centre():
    for smiles, tag in [("C[C@H](N)O", 2), ("C[C@@H](N)O", 1)]:  # CCW → 2, CW → 1
        g = BASIC.featurize([smiles])
        np.testing.assert_array_equal(g.x[:, 1], [0, tag, 0, 0])
        r = RICH.featurize([smiles])
        np.testing.assert_array_equal(r.x[:, CHIRALITY_COL], [0, tag, 0, 0])
    # A chiral tag given in a CXSMILES extension is seen too.
    g = BASIC.featurize(["C[C@H](N)O |&1:1|"])
    np.testing.assert_array_equal(g.x[:, 1], [0, 2, 0, 0])


def test_charged_atoms_in_rich():
    r = RICH.featurize(["C[O-]", "[NH4+]"])
    # formal_charge vocabulary is -5..5: index = charge + 5.
    np.testing.assert_array_equal(r.x[:, FORMAL_CHARGE_COL], [5, 4, 6])


def test_double_bond_direction_and_stereo():
    g = BASIC.featurize(["F/C=C/F", "F/C=C\\F"])
    # bond_direction: ENDUPRIGHT ('/') → 1, ENDDOWNRIGHT ('\\') → 2.
    trans = g.edge_attr[g.edge_ptr[0] : g.edge_ptr[1] : 2]
    cis = g.edge_attr[g.edge_ptr[1] : g.edge_ptr[2] : 2]
    np.testing.assert_array_equal(trans, [[0, 1], [1, 0], [0, 1]])
    np.testing.assert_array_equal(cis, [[0, 1], [1, 0], [0, 2]])
    r = RICH.featurize(["F/C=C/F", "F/C=C\\F"])
    # bond_stereo of the double bond: STEREOE → 2, STEREOZ → 1.
    assert r.edge_attr[2, 1] == 2 and r.edge_attr[r.edge_ptr[1] + 2, 1] == 1


def test_molecule_without_bonds():
    g = BASIC.featurize(["[Na+].[Cl-]"])
    np.testing.assert_array_equal(g.x, [[10, 0], [16, 0]])
    assert g.edge_index.shape == (2, 0) and g.edge_index.dtype == np.int32
    assert g.edge_attr.shape == (0, 2)
    np.testing.assert_array_equal(g.edge_ptr, [0, 0])
    batch = g.collate([0])
    assert batch.num_nodes == 2 and batch.edge_index.shape == (2, 0)


def test_dummy_atom_and_rare_bond_types():
    g = BASIC.featurize(["*CC", "[NH3]->[Cu+2]", "[C]$[C]"])
    assert g.x[0, 0] == 118  # '*' (atomic number 0) is 'other'
    # Dative and quadruple bonds have no slot of their own: single (0).
    np.testing.assert_array_equal(g.edge_attr[:, 0], [0, 0, 0, 0, 0, 0, 0, 0])


def test_invalid_smiles_are_skipped_and_rows_never_shift():
    smiles = ["CCO", "not a smiles", "", None, "c1ccccc1", "C1CC", "  CCN  ", 3.0, "O"]
    labels = np.arange(len(smiles), dtype=float) * 10
    g = BASIC.featurize(smiles)
    assert g.invalid_rows == [1, 2, 3, 5, 7]
    np.testing.assert_array_equal(g.source_rows, [0, 4, 6, 8])
    assert g.smiles == ["CCO", "c1ccccc1", "CCN", "O"]
    # Labels picked by source_rows stay with their molecules.
    np.testing.assert_array_equal(labels[g.source_rows], [0, 40, 60, 80])
    np.testing.assert_array_equal(g.num_atoms(), [3, 6, 3, 1])
    assert len(g) == 4


def test_all_invalid_and_empty_inputs():
    for smiles in ([], ["", None, "xyz"]):
        g = RICH.featurize(smiles)
        assert len(g) == 0 and g.x.shape == (0, 8) and g.edge_attr.shape == (0, 3)
        assert g.edge_index.shape == (2, 0)
        np.testing.assert_array_equal(g.node_ptr, [0])
    assert BASIC.featurize(["", None, "xyz"]).invalid_rows == [0, 1, 2]


@pytest.mark.parametrize("featurizer", [BASIC, RICH], ids=["basic", "rich"])
def test_bulk_path_equals_per_molecule_featurize_mol(featurizer, bbbp):
    """featurize() takes shortcuts (bulk getters, '@'-free SMILES have no chiral tags, ...);
    featurize_mol() calls every part's fn on every atom and bond: they must agree."""
    smiles = TRICKY + bbbp["smiles"].tolist()[:300]
    g = featurizer.featurize(smiles, chunk_size=64)
    assert len(g) >= len(TRICKY)
    for k, row in enumerate(g.source_rows):
        mol = Chem.MolFromSmiles(smiles[row].strip())
        x, ei, ea = featurizer.featurize_mol(mol)
        gx, gei, gea = _by_molecule(g, k)
        np.testing.assert_array_equal(gx, x, err_msg=smiles[row])
        np.testing.assert_array_equal(gei, ei, err_msg=smiles[row])
        np.testing.assert_array_equal(gea, ea, err_msg=smiles[row])


def test_bulk_bond_order_map_agrees_with_bond_type_enum():
    """The bulk path reads bond orders as floats; check that map on SMILES bond types."""
    smiles = "CC=CC#CC1=CC=CC=C1.[C]$[C].N->[Cu]"
    mol = Chem.MolFromSmiles(smiles)
    bt = Chem.rdchem.BondType
    seen = {bond.GetBondType() for bond in mol.GetBonds()}
    assert seen == {bt.SINGLE, bt.DOUBLE, bt.TRIPLE, bt.AROMATIC, bt.QUADRUPLE, bt.DATIVE}
    for bond in mol.GetBonds():
        assert BOND_TYPE.codes.get(BOND_TYPE.getter(bond), BOND_TYPE.other) == BOND_TYPE.fn(bond)


def test_parallel_equals_serial(bbbp):
    smiles = bbbp["smiles"].tolist()[:150] + ["", "bad", None] + TRICKY
    for featurizer in (BASIC, RICH):
        serial = featurizer.featurize(smiles, n_jobs=1, chunk_size=40)
        parallel = featurizer.featurize(smiles, n_jobs=2, chunk_size=40)
        _assert_same_graphs(serial, parallel)
        # The chunk size does not change the output either.
        _assert_same_graphs(serial, featurizer.featurize(smiles, chunk_size=4000))


def test_getter_failure_falls_back_to_part_function():
    """If a bulk getter raises midway through a molecule, its partial rows are dropped and
    the parts' own functions are used: the output is still exact."""

    def fragile(atom):
        if atom.GetIdx() == 2:
            raise RuntimeError("refused")
        return atom.GetIdx() % 2

    parity = Part("parity", 2, lambda a: a.GetIdx() % 2, getter=fragile)
    feat = Featurizer("test-fragile", "0", (ATOM_TYPE, parity), (BOND_TYPE,))
    g = feat.featurize(["CC", "CCO", "OC"])
    np.testing.assert_array_equal(g.x, [[5, 0], [5, 1], [5, 0], [5, 1], [7, 0], [7, 0], [5, 1]])
    np.testing.assert_array_equal(g.node_ptr, [0, 2, 5, 7])


def test_a_featurizer_pickles_by_name_and_refuses_another_version(monkeypatch):
    import dataclasses
    import pickle

    from moladapt.data import featurize

    basic = featurize.get_featurizer("basic")
    blob = pickle.dumps(basic)
    assert pickle.loads(blob) is basic
    newer = dataclasses.replace(basic, version="2")
    monkeypatch.setitem(featurize.FEATURIZERS._items, "basic", newer)
    with pytest.raises(ValueError, match="made with featurizer basic/1/"):
        pickle.loads(blob)
