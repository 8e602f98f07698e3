import gzip
import hashlib
import time
from pathlib import Path

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
        ("smiles;y\nCCO;1\n", {}, "separated by ';': moladapt reads comma-separated"),
        ("smiles,y\nCCO,1\nCC,0\n", {"target_columns": ["y", "y"]}, "target column.*'y'.* more than once"),
        ("smiles,logS,active\nCCO,-1.5,1\nCC,-2.25,0\nCCC,0.5,1\n", {},
         "'active' holds 0/1 class labels, but other label columns hold numbers"),
        ("smiles,y\n\n", {}, "no data rows"),
        ("smiles;y;name\nCCO;1;a\nCC;0;b,c,d\n", {}, "separated by ';': moladapt reads comma-separated"),
    ],
)
def test_load_csv_bad_input_gives_clear_error(tmp_path, content, kwargs, message):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_csv(f, "smiles", **kwargs)
    assert "bad.csv" in str(info.value)


def test_rows_keep_their_file_lines_across_blank_lines(tmp_path):
    f = tmp_path / "gaps.csv"
    f.write_text("smiles,y\nCCO,1\n\nnot_a_smiles,0\n\n\nCC,0\n")
    data = load_csv(f)
    assert data.smiles == ["CCO", "not_a_smiles", "CC"]
    assert (data.rows + 2).tolist() == [2, 4, 7]  # line numbers of the file, header = line 1
    f.write_text("smiles,y\nCCO,1\n\nCC,active\n")
    with pytest.raises(DataError, match="'active' at row 4"):
        load_csv(f)
    f.write_text("\n\nsmiles,y\nCCO,1\n\nbad,0\n")  # blank lines above the header too
    data = load_csv(f)
    assert data.smiles == ["CCO", "bad"] and (data.rows + 2).tolist() == [4, 6]


def test_the_data_fingerprint_follows_molecules_labels_and_order(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("smiles,y\nCCO,1\nCC,\nCCC,0\n")
    base = load_csv(f).fingerprint()
    f.write_text("smiles,y\nCCO,1\n\nCC,\nCCC,0\n")  # a blank line changes no molecule or label
    assert load_csv(f).fingerprint() == base
    for changed in ("smiles,y\nCCO,1\nCC,1\nCCC,0\n", "smiles,y\nCC,\nCCO,1\nCCC,0\n",
                    "smiles,y\nCCO,1\nCC,\nCCC,0\nCCCC,1\n"):
        f.write_text(changed)
        assert load_csv(f).fingerprint() != base


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


def _serve_once(body: bytes, announced: int) -> str:
    """A local HTTP server that announces ``announced`` bytes, sends ``body`` and hangs up."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Length", str(announced))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.handle_request, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/SAMPL.csv"


def test_a_download_cut_short_is_refused_and_not_kept(tmp_path):
    """No checksum to catch it (FreeSolv has none): the byte count against Content-Length must."""
    body = b"smiles,expt\n" + b"CCO,-5.0\n" * 300
    url = _serve_once(body[: len(body) // 3], announced=len(body))
    target = tmp_path / "cache" / "SAMPL.csv"
    with pytest.raises(ConnectionError, match=r"stopped after \d+ of \d+ bytes"):
        sources.download_file(url, target, None, timeout=5)
    assert not target.exists() and not list(target.parent.iterdir())
    assert sources.download_file(_serve_once(body, len(body)), target, None).read_bytes() == body


def test_a_broken_gzip_download_is_a_data_error_and_leaves_no_temp_files(tmp_path):
    src = tmp_path / "tox21.csv.gz"
    packed = gzip.compress(b"smiles,NR-AR\n" + b"CCO,1\n" * 1000)
    src.write_bytes(packed[: len(packed) // 2])
    target = tmp_path / "cache" / "tox21.csv"
    with pytest.raises(DataError, match="not a complete gzip file"):
        sources.download_file(src.as_uri(), target, None, gunzip_after=True)
    assert not list(target.parent.iterdir())


def test_an_unwritable_download_cache_names_the_setting(tmp_path):
    with pytest.raises(DataError, match="cannot write the download cache .*MOLADAPT_CACHE_DIR"):
        sources.download_file((tmp_path / "x").as_uri(), Path("/proc/moladapt-cache/x.csv"), None)


def test_the_fsmol_archive_becomes_the_long_csv(tmp_path, monkeypatch):
    """FS-Mol is served as a tar of <fold>/<task>.jsonl.gz; resolve_file converts it once."""
    import dataclasses
    import io
    import json
    import tarfile

    import pandas as pd

    def record(smiles, prop, value):
        return {"SMILES": smiles, "Property": prop, "Assay_ID": "x", "RegressionProperty": value,
                "LogRegressionProperty": "5.1", "Relation": "=", "AssayType": "B",
                "graph": {"adjacency_lists": [[[0, 1]]], "node_features": [[0.0]]}, "fingerprints": [1, 0]}

    archive = tmp_path / "served" / "fsmol.tar"
    archive.parent.mkdir()
    with tarfile.open(archive, "w") as tar:  # members out of order, as a tar may hold them
        for fold, task, rows in [("test", "CHEMBL3", [("CCO", "1.0", "10"), ("CCC", "0.0", "900")]),
                                 ("train", "CHEMBL9", [("c1ccccc1", "0.0", "")]),
                                 ("train", "CHEMBL1", [("CCN", "1.0", "2.5")]),
                                 ("valid", "CHEMBL5", [("CO", "1.0", "3")])]:
            data = gzip.compress("\n".join(json.dumps(record(*r)) for r in rows).encode())
            info = tarfile.TarInfo(f"fs-mol/{fold}/{task}.jsonl.gz")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    monkeypatch.setenv("MOLADAPT_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("MOLADAPT_CACHE_DIR", str(tmp_path / "cache"))
    spec = dataclasses.replace(sources.FSMOL, url=archive.as_uri())
    path = sources.resolve_file(spec)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert tuple(frame.columns) == sources.FSMOL_COLUMNS
    assert frame[["split", "task_id", "smiles", "label"]].values.tolist() == [
        ["train", "CHEMBL1", "CCN", "1"], ["train", "CHEMBL9", "c1ccccc1", "0"],
        ["valid", "CHEMBL5", "CO", "1"], ["test", "CHEMBL3", "CCO", "1"], ["test", "CHEMBL3", "CCC", "0"]]
    assert frame["log_regression_value"].tolist() == ["5.1"] * 5
    assert not (path.parent / "fsmol.tar").exists()  # the archive is not kept beside the data
    assert sources.resolve_file(spec, download=False) == path


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


def test_a_file_that_is_not_the_fsmol_csv_is_a_clear_error(tmp_path, monkeypatch):
    """What moladapt 0.1's FS-Mol download cached: the tar itself, gzipped, under the CSV's name."""
    import io
    import tarfile

    from moladapt.data.tasks import load_fsmol_tasks

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = gzip.compress(b'{"SMILES": "CCO", "Property": "1.0"}\n')
        info = tarfile.TarInfo("fs-mol/train/A.jsonl.gz")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (tmp_path / "fsmol.csv.gz").write_bytes(gzip.compress(buf.getvalue()))
    monkeypatch.setenv("MOLADAPT_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="fsmol.csv.gz: (not FS-Mol's long-format CSV|expected FS-Mol long-format)"):
        load_fsmol_tasks("train", download=False)


def test_a_file_that_is_not_utf8_is_named_with_a_fix(tmp_path):
    f = tmp_path / "excel.csv"
    f.write_bytes("smiles,y,unit\nCCO,1,\u00b5M\n".encode("latin-1"))
    with pytest.raises(DataError, match="excel.csv: not UTF-8 text .* save the file as UTF-8"):
        load_csv(f, target_columns=["y"])
