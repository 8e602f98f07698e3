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
