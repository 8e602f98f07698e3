import numpy as np
import pytest

from moladapt import MolPropertyModel


def test_sklearn_style_fit_predict(bbbp, tmp_path):
    smiles, y = bbbp.smiles.tolist(), bbbp.p_np.to_numpy()
    model = MolPropertyModel(hidden_dim=64, num_layers=3, dropout=0.1, epochs=3, batch_size=64)
    assert model.fit(smiles[:1200], y[:1200]) is model
    proba = model.predict_proba(smiles[1200:1400] + ["not a molecule"])
    assert proba.shape == (201, 2) and np.isnan(proba[-1]).all()  # MLPClassifier's shape for 1-D y
    assert np.all((proba[:-1] >= 0) & (proba[:-1] <= 1))
    np.testing.assert_allclose(proba[:-1].sum(1), 1.0, atol=1e-6)
    assert list(model.classes_) == [0.0, 1.0]
    labels = model.predict(["CCO"])
    assert labels.shape == (1,) and labels[0] in (0.0, 1.0)
    model.save(tmp_path / "m.pt")
    again = MolPropertyModel.load(tmp_path / "m.pt")
    probe = smiles[1400:1450] + ["nope"]
    np.testing.assert_array_equal(again.predict_proba(probe), model.predict_proba(probe))
    assert again.get_params()["hidden_dim"] == 64 and again.get_params()["epochs"] == 3


def test_load_then_save_keeps_an_architecture_the_estimator_has_no_parameter_for(bbbp, tmp_path):
    """A `moladapt train` checkpoint with jk=concat and fingerprint fusion, through load/save."""
    from moladapt.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from moladapt.experiment import run_training

    cfg = RunConfig(DataConfig(dataset="bbbp", split="random"),
                    ModelConfig(hidden_dim=8, num_layers=2, jk="concat", fingerprint_bits=32, fingerprint_dims=(16,)),
                    TrainConfig(epochs=1, batch_size=128))
    run_training(cfg, tmp_path / "run", progress=False, log=lambda m: None)
    model = MolPropertyModel.load(tmp_path / "run" / "model.pt")
    model.save(tmp_path / "again.pt")
    probe = bbbp.smiles.tolist()[:20]
    np.testing.assert_array_equal(MolPropertyModel.load(tmp_path / "again.pt").predict_proba(probe),
                                  model.predict_proba(probe))


def test_it_is_a_scikit_learn_estimator(bbbp):
    """clone, cross-validation with a named scorer, a Series from train_test_split, pickling."""
    import pickle

    from sklearn.base import clone, is_classifier
    from sklearn.model_selection import cross_val_score, train_test_split

    from moladapt.data.featurize import get_featurizer

    df = bbbp.iloc[:300]
    df = df.iloc[get_featurizer("basic").featurize(df.smiles).source_rows]  # scorers refuse NaN rows
    model = MolPropertyModel(hidden_dim=16, num_layers=2, epochs=1, batch_size=64, task_type="classification")
    assert is_classifier(model) and clone(model).get_params() == model.get_params()
    scores = cross_val_score(model, df.smiles.tolist(), df.p_np.to_numpy(), cv=2, scoring="roc_auc")
    assert scores.shape == (2,) and np.isfinite(scores).all()
    x_train, x_test, y_train, y_test = train_test_split(df.smiles, df.p_np, test_size=0.3, random_state=0)
    fitted = clone(model).set_params(epochs=2).fit(x_train, y_train)  # Series with a shuffled index
    assert fitted.epochs == 2 and 0.0 <= fitted.score(x_test, y_test) <= 1.0
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict_proba(x_test), fitted.predict_proba(x_test))


def test_fit_leaves_the_callers_random_state_and_a_failed_refit_keeps_the_model(bbbp):
    import random

    import pytest
    import torch

    from moladapt.data.sources import DataError

    smiles, y = bbbp.smiles.tolist()[:60], bbbp.p_np.to_numpy()[:60]
    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)
    expected = (np.random.rand(), random.random(), torch.rand(1).item())
    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)
    model = MolPropertyModel(hidden_dim=8, num_layers=1, epochs=1, batch_size=32).fit(smiles, y)
    assert (np.random.rand(), random.random(), torch.rand(1).item()) == expected
    before = model.predict_proba(smiles[:5])
    with pytest.raises(DataError, match="could be parsed"):
        model.fit(["nope"] * 60, np.linspace(0, 1, 60))  # a regression re-fit that fails
    assert model.task_type_ == "classification"
    np.testing.assert_array_equal(model.predict_proba(smiles[:5]), before)


def test_multi_task_labels_with_pandas_missing_values():
    import pandas as pd

    smiles = ["CCO", "c1ccccc1", "CCN", "CC(=O)O", "CCCl", "c1ccncc1"] * 5
    y = pd.DataFrame({"a": pd.array([1, 0, None, 1, 0, 1] * 5, dtype="Int64"),
                      "b": pd.array([0, 1, 1, pd.NA, 1, 0] * 5, dtype="Int64")})
    model = MolPropertyModel(hidden_dim=8, num_layers=1, epochs=1, batch_size=8, valid_fraction=0.0).fit(smiles, y)
    assert model.n_tasks_ == 2
    assert model.predict_proba(smiles[:3]).shape == (3, 2) and model.predict(smiles[:3]).shape == (3, 2)


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
    with pytest.raises(ValueError, match=r"valid_fraction must be in \[0, 1\)"):
        MolPropertyModel(**tiny, valid_fraction=1.0).fit(smiles, bbbp.p_np.to_numpy()[:40])
    with pytest.raises(RuntimeError, match="not fitted yet"):
        MolPropertyModel(**tiny).save("never.pt")
    y = bbbp.p_np.to_numpy()[:40]
    with pytest.warns(UserWarning, match="skipped 1 invalid SMILES \\(row 3: 'nope'\\)"):
        model = MolPropertyModel(**tiny).fit(smiles[:3] + ["nope"] + smiles[4:], y)
    assert model.invalid_rows_ == [3]
    with pytest.raises(DataError, match="not one string"):
        model.predict_proba("CCO")


def test_valid_smiles_mask_marks_the_rows_the_model_cannot_predict():
    from moladapt.api import valid_smiles_mask

    smiles = ["CCO", "not a molecule", None, "c1ccccc1", ""]
    assert valid_smiles_mask(smiles).tolist() == [True, False, False, True, False]


def test_a_pandas_y_names_the_tasks_in_messages_and_saved_models(tmp_path):
    import pandas as pd

    from moladapt.api import MolPropertyModel
    from moladapt.data.sources import DataError
    from moladapt.training import load_checkpoint

    smiles = ["CCO", "CC", "CCN", "c1ccccc1", "CCCl", "CCBr"]
    y = pd.DataFrame({"p_np": [1, 0, 1, 0, 1, 0], "herg": [0, 1, 1, 0, None, 1]})
    model = MolPropertyModel(hidden_dim=8, num_layers=1, epochs=1, batch_size=4, valid_fraction=0.0,
                             progress=False).fit(smiles, y)
    assert model.task_names_ == ["p_np", "herg"]
    model.save(tmp_path / "m.pt")
    assert load_checkpoint(tmp_path / "m.pt").task_names == ["p_np", "herg"]
    assert MolPropertyModel.load(tmp_path / "m.pt").task_names_ == ["p_np", "herg"]
    with pytest.raises(DataError, match="'herg'"):
        MolPropertyModel(hidden_dim=8, num_layers=1, epochs=1, progress=False).fit(
            smiles, y.assign(herg=[1, 1, 1, 1, None, 1]))
    with pytest.raises(DataError, match=r"names column\(s\) \['a'\] more than once"):
        MolPropertyModel(epochs=1, progress=False).fit(smiles, pd.DataFrame([[0, 1]] * 6, columns=["a", "a"]))
    plain = MolPropertyModel(hidden_dim=8, num_layers=1, epochs=1, batch_size=4, valid_fraction=0.0,
                             progress=False).fit(smiles, [1, 0, 1, 0, 1, 0])
    assert plain.task_names_ == ["task_0"]
