"""The SQLite results store."""

import subprocess
import sys

import pandas as pd
import pytest

from moladapt.study.spec import StudySpec
from moladapt.study.store import ResultStore, pid_alive


def sleep_runs(n=3):
    return StudySpec.from_dict({"name": "s", "runner": "sleep", "fixed": {"seconds": 0},
                                "axes": {"i": list(range(n)), "group.letter": ["a"]}}).runs()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_sync_twice_adds_no_duplicates(tmp_path):
    store = ResultStore(tmp_path / "s.db")
    runs = sleep_runs()
    assert store.sync("s", runs) == 3
    store.claim(runs[0].key, 123)
    store.finish(runs[0].key, {"m": 1.0})
    assert store.sync("s", runs + sleep_runs(4)) == 1
    assert store.counts() == {"pending": 3, "running": 0, "done": 1, "failed": 0, "total": 4}
    assert store.status(runs[0].key) == "done"  # existing rows untouched


def test_claim_is_exclusive(tmp_path):
    store = ResultStore(tmp_path / "s.db")
    runs = sleep_runs(1)
    store.sync("s", runs)
    other = ResultStore(tmp_path / "s.db")  # a second process's view
    assert store.claim(runs[0].key, 11)
    assert not other.claim(runs[0].key, 12)
    assert not store.claim(runs[0].key, 11)
    assert not store.claim("no-such-key", 11)
    row = store.rows()[0]
    assert row["status"] == "running" and row["worker_pid"] == 11 and row["attempts"] == 1


def test_recover_resets_running_rows_of_dead_processes(tmp_path):
    store = ResultStore(tmp_path / "s.db")
    runs = sleep_runs(2)
    store.sync("s", runs)
    pid = dead_pid()
    assert not pid_alive(pid)
    store.claim(runs[0].key, pid)
    store.claim(runs[1].key)  # this live process
    assert store.recover() == [runs[0].key]
    assert store.status(runs[0].key) == "pending"
    assert store.status(runs[1].key) == "running"


def test_fail_retry_and_export(tmp_path):
    store = ResultStore(tmp_path / "s.db")
    runs = sleep_runs(2)
    store.sync("s", runs)
    for run in runs:
        store.claim(run.key)
    store.finish(runs[0].key, {"test": {"roc_auc": 0.75}, "train_seconds": 1.5})
    store.fail(runs[1].key, "Traceback (most recent call last):\nRuntimeError: boom")
    frame = store.export(tmp_path / "out.csv")
    back = pd.read_csv(tmp_path / "out.csv")
    assert len(back) == len(frame) == 2
    assert {"key", "status", "i", "group.letter", "test.roc_auc", "train_seconds"} <= set(back.columns)
    done = back.set_index("status").loc["done"]
    assert done["test.roc_auc"] == 0.75 and done["group.letter"] == "a"
    assert back.set_index("status").loc["failed", "error"] == "RuntimeError: boom"
    assert store.rows()[1]["versions_json"]
    assert store.retry_failed() == 1
    assert store.counts()["pending"] == 1
    with pytest.raises(ValueError, match=r"\.csv"):
        store.export(tmp_path / "out.xlsx")


def test_export_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    store = ResultStore(tmp_path / "s.db")
    store.sync("s", sleep_runs(2))
    store.export(tmp_path / "out.parquet")
    assert len(pd.read_parquet(tmp_path / "out.parquet")) == 2


def test_opening_a_store_waits_for_another_process_holding_the_file(tmp_path):
    # Switching a file to WAL needs an exclusive lock, and SQLite refuses at once (no busy
    # wait) while another connection is mid-write: two study processes opening one new store
    # together used to fail this way ("database is locked").
    import sqlite3
    import threading

    path = tmp_path / "s.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")  # holds a reserved lock until COMMIT
    threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
    store = ResultStore(path)
    other.close()
    with store._connect() as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
