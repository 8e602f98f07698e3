import gzip
import hashlib
import time

import numpy as np
import pytest

from moladapt.data import sources
from moladapt.data.sources import DataError, load_csv, load_dataset

EXPECTED = {  # molecules × tasks of the standard files
    "bbbp": (2050, 1), "bace": (1513, 1), "clintox": (1484, 2), "sider": (1427, 27),
    "tox21": (7831, 12), "toxcast": (8615, 617), "hiv": (41127, 1), "muv": (93127, 17),
    "esol": (1128, 1), "freesolv": (642, 1), "lipophilicity": (4200, 1),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_moleculenet_by_name(data_dir, name):
    data = load_dataset(name)
    assert (len(data), data.num_tasks) == EXPECTED[name]
    assert data.labels.shape == EXPECTED[name]
    if data.task_type == "classification":
        present = data.labels[~np.isnan(data.labels)]
        assert set(np.unique(present)) <= {0.0, 1.0}


def test_tdc_group_has_22_datasets_with_predefined_splits(data_dir):
    names = [n for n in sources.DATASETS if n.startswith("tdc_")]
    assert len(names) == 22
    herg = load_dataset("tdc_herg")
    assert len(herg) == 655 and set(herg.predefined_split) == {"train", "valid", "test"}
    assert herg.rows.min() > 0  # rows point into the long file, not 0..654


def test_every_spec_has_provenance():
    for name in sources.DATASETS:
        spec = sources.DATASETS.get(name)
        assert spec.citation and spec.metric and spec.task_type in ("classification", "regression")


def test_load_csv_nan_and_empty_cells_are_unmeasured(tmp_path):
    f = tmp_path / "mine.csv"
    f.write_text("smiles,a,b\nCCO,1,\nc1ccccc1,0,1\nCCN,,0\nCC,1,1\n")
    data = load_csv(f, "smiles", ["a", "b"])
    assert data.task_type == "classification"
    assert np.isnan(data.labels[0, 1]) and np.isnan(data.labels[2, 0])
    assert data.labels[1].tolist() == [0.0, 1.0]


def test_load_csv_gz_and_regression_inference(tmp_path):
    f = tmp_path / "mine.csv.gz"
    with gzip.open(f, "wt") as fh:
        fh.write("SMILES,logS\nCCO,-0.5\nCCCC,-2.1\n")
    data = load_csv(f, "SMILES")
    assert data.task_type == "regression" and data.task_names == ["logS"]


@pytest.mark.parametrize(
    "content, kwargs, message",
    [
        ("", {}, "empty"),
        ("smiles,y\n", {}, "no data rows"),
        ("smi,y\nCCO,1\n", {}, "no SMILES column 'smiles'"),
        ("smiles,y\nCCO,1\nCC,0\n", {"target_columns": ["z"]}, "unknown target column"),
        ("smiles,y\nCCO,1\nCC,active\n", {}, "non-numeric label 'active' at row 3"),
        ("smiles,y\nCCO,1\nCC,1\n", {"task_type": "classification"}, "only one class"),
        ("smiles,y\nCCO,1\nCC,3\n", {"task_type": "classification"}, "expected 0/1"),
        (",smiles,y\n0,CCO,1\n1,CC,0\n", {}, "'Unnamed: 0'.* no header name"),
        ("smiles,y,y\nCCO,1,0\nCC,0,1\n", {}, "names column.*'y'.* more than once"),
        ("smiles,y\nCCO,1\nCC,1e40\n", {}, "too large for float32, '1e\\+40' at row 3"),
        ("smiles,y\nCCO,inf\nCC,1\n", {}, "infinite .* at row 2"),
        ("smiles,y,z\nCCO,1,\nCC,0,\n", {}, "column.*'z'.* have no labels"),
        ("smiles,y\nCCO,-1\nCC,1\nCCC,1\n", {}, "only the values -1 and 1: binary labels must be 0/1"),
        ("smiles;y\nCCO;1\n", {}, "holds ';': moladapt reads comma-separated"),
    ],
)
def test_load_csv_bad_input_gives_clear_error(tmp_path, content, kwargs, message):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_csv(f, "smiles", **kwargs)
    assert "bad.csv" in str(info.value)


def test_two_whole_numbers_are_regression_when_asked(tmp_path):
    f = tmp_path / "pm.csv"
    f.write_text("smiles,y\nCCO,-1\nCC,1\nCCC,1\n")
    assert load_csv(f, "smiles", task_type="regression").task_type == "regression"


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_csv(tmp_path / "nope.csv")


def test_download_verifies_checksum_and_writes_atomically(tmp_path):
    src = tmp_path / "remote.csv"
    src.write_text("smiles,y\nCCO,1\nCC,0\n")
    good = "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    target = tmp_path / "cache" / "remote.csv"
    sources.download_file(src.as_uri(), target, good)
    assert target.read_bytes() == src.read_bytes()
    other = tmp_path / "cache" / "other.csv"
    with pytest.raises(DataError, match="checksum mismatch"):
        sources.download_file(src.as_uri(), other, "md5:" + "0" * 32)
    assert not other.exists() and not list(other.parent.glob("*.part"))


def test_download_then_gzip_when_spec_file_is_gz(tmp_path, monkeypatch):
    src = tmp_path / "HIV.csv"
    src.write_text("smiles,HIV_active\nCCO,1\nCC,0\n")
    monkeypatch.setenv("MOLADAPT_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("MOLADAPT_CACHE_DIR", str(tmp_path / "cache"))
    spec = sources.DatasetSpec("tiny", "tiny.csv.gz", "smiles", "classification", "roc_auc", "x",
                               src.as_uri(), None, ("HIV_active",), download_name="tiny.csv")
    path = sources.resolve_file(spec)
    assert path.name == "tiny.csv.gz"
    with gzip.open(path, "rt") as fh:
        assert fh.read() == src.read_text()


def test_offline_download_fails_fast_with_instructions(tmp_path):
    t0 = time.time()
    with pytest.raises(ConnectionError, match="MOLADAPT_DATA_DIR"):
        # a closed local port: refused at once, as an offline machine refuses
        sources.download_file("http://127.0.0.1:9/none.csv", tmp_path / "x.csv", None, timeout=5)
    assert time.time() - t0 < 10
    assert not (tmp_path / "x.csv").exists()


def test_bundled_demo_data_resolves_without_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MOLADAPT_DATA_DIR", str(tmp_path / "nothing-here"))
    data = load_dataset("bbbp", download=False)
    assert len(data) == 2050 and "bundled" in data.source


def test_download_gunzips_when_served_gz_but_spec_file_is_plain(tmp_path, monkeypatch):
    # tox21: the URL serves tox21.csv.gz, the spec's file is tox21.csv (as in the data dirs)
    src = tmp_path / "tiny.csv.gz"
    with gzip.open(src, "wt") as fh:
        fh.write("smiles,NR-AR\nCCO,1\nCC,0\n")
    monkeypatch.setenv("MOLADAPT_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("MOLADAPT_CACHE_DIR", str(tmp_path / "cache"))
    spec = sources.DatasetSpec("tiny", "tiny.csv", "smiles", "classification", "roc_auc", "x",
                               src.as_uri(), None, ("NR-AR",), download_name="tiny.csv.gz")
    path = sources.resolve_file(spec)
    assert path.name == "tiny.csv"
    assert path.read_text() == "smiles,NR-AR\nCCO,1\nCC,0\n"
