import numpy as np

from moladapt import MolPropertyModel


def test_sklearn_style_fit_predict(bbbp, tmp_path):
    smiles, y = bbbp.smiles.tolist(), bbbp.p_np.to_numpy()
    model = MolPropertyModel(hidden_dim=64, num_layers=3, dropout=0.1, epochs=3, batch_size=64)
    assert model.fit(smiles[:1200], y[:1200]) is model
    proba = model.predict_proba(smiles[1200:1400] + ["not a molecule"])
    assert proba.shape == (201, 1) and np.isnan(proba[-1, 0])
    assert np.all((proba[:-1] >= 0) & (proba[:-1] <= 1))
    labels = model.predict(["CCO"])
    assert labels[0, 0] in (0.0, 1.0)
    model.save(tmp_path / "m.pt")
    assert (tmp_path / "m.pt").exists()


def test_a_model_from_the_bundled_encoder_records_where_it_started(tmp_path):
    import pandas as pd

    from moladapt.bundled_models import bundled_dir, encoder_path, sha256_file
    from moladapt.provenance import describe_checkpoint

    df = pd.read_csv(bundled_dir() / "BBBP.csv").iloc[:64]
    model = MolPropertyModel(init="bundled", epochs=1, batch_size=64, progress=False)
    model.fit(df["smiles"].tolist(), df["p_np"].to_numpy())
    model.save(tmp_path / "m.pt")
    (start,) = describe_checkpoint(tmp_path / "m.pt")["lineage"]
    assert start["sha256"] == sha256_file(encoder_path())


def test_fit_refuses_bad_labels_with_the_row_and_warns_on_invalid_smiles(bbbp):
    import pytest

    from moladapt.data.sources import DataError

    smiles = bbbp.smiles.tolist()[:40]
    tiny = dict(hidden_dim=8, num_layers=1, epochs=1, batch_size=64)
    cases = [
        (["active"] + [1] * 39, r"y\[0, 0\] = 'active' is not a number"),
        ([np.inf] + [1] * 39, r"y\[0, 0\] = inf is infinite"),
        ([np.nan] * 40, "have no labels"),
        ([-1, 1] * 20, "only the values -1 and 1"),
        (np.zeros((40, 1, 1)), r"must be \[n\] or \[n, tasks\]"),
    ]
    for y, message in cases:
        with pytest.raises(DataError, match=message):
            MolPropertyModel(**tiny).fit(smiles, y)
    with pytest.raises(DataError, match="not one string"):
        MolPropertyModel(**tiny).fit("CCO", [1])
    y = bbbp.p_np.to_numpy()[:40]
    with pytest.warns(UserWarning, match="skipped 1 invalid SMILES \\(row 3: 'nope'\\)"):
        model = MolPropertyModel(**tiny).fit(smiles[:3] + ["nope"] + smiles[4:], y)
    assert model.invalid_rows_ == [3]
