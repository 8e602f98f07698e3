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
    assert store.orphaned() == {runs[0].key}  # seen, not changed
    assert store.status(runs[0].key) == "running"
    from typer.testing import CliRunner

    from moladapt.cli.study import study_app

    shown = CliRunner().invoke(study_app, ["status", str(store.path)])
    assert "1 of the running runs belong to a process that is gone" in shown.output, shown.output
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


def test_recover_sees_a_reused_pid(tmp_path):
    """A claim whose pid now belongs to another process (a rerun in a fresh container gets the
    killed run's pid) is dead: the process start time differs."""
    import os
    import sqlite3

    from moladapt.study.store import process_start

    store = ResultStore(tmp_path / "s.db")
    runs = sleep_runs(2)
    store.sync("s", runs)
    store.claim(runs[0].key)
    store.claim(runs[1].key)
    start = process_start(os.getpid())
    assert start is not None and pid_alive(os.getpid(), start)
    with sqlite3.connect(tmp_path / "s.db") as con:  # as if an earlier process with our pid claimed it
        con.execute("UPDATE runs SET worker_start = ? WHERE key = ?", (start - 1, runs[0].key))
    assert store.recover() == [runs[0].key]
    assert store.status(runs[1].key) == "running"


def test_an_old_database_gains_the_start_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as con:  # the schema before worker_start
        con.executescript("CREATE TABLE runs (key TEXT PRIMARY KEY, study TEXT NOT NULL, runner TEXT NOT NULL, "
                          "status TEXT NOT NULL DEFAULT 'pending', config_json TEXT NOT NULL, axes_json TEXT "
                          "NOT NULL, metrics_json TEXT, error TEXT, started_at REAL, finished_at REAL, seconds "
                          "REAL, worker_pid INTEGER, attempts INTEGER NOT NULL DEFAULT 0, versions_json TEXT);")
    store = ResultStore(path)
    runs = sleep_runs(1)
    store.sync("s", runs)
    assert store.claim(runs[0].key) and store.recover() == []


def test_export_fills_an_axis_added_later_from_the_config(tmp_path):
    store = ResultStore(tmp_path / "s.db")
    first = StudySpec.from_dict({"name": "s", "runner": "sleep", "fixed": {"seconds": 0, "x": 1},
                                 "axes": {"i": [0, 1]}}).runs()
    store.sync("s", first)
    grown = StudySpec.from_dict({"name": "s", "runner": "sleep", "fixed": {"seconds": 0},
                                 "axes": {"i": [0, 1], "x": [1, 2]}}).runs()
    assert store.sync("s", grown) == 2  # the x=1 runs keep their keys
    frame = store.to_frame()
    assert sorted(frame["x"].tolist()) == [1, 1, 2, 2]


def test_a_run_two_studies_share_belongs_to_both(tmp_path):
    import json
    import sqlite3

    store = ResultStore(tmp_path / "s.db")
    first = sleep_runs(3)  # i = 0, 1, 2
    assert store.sync("first", first) == 3
    for run in first:
        store.claim(run.key, 1)
        store.finish(run.key, {"m": 1.0})
    other = StudySpec.from_dict({"name": "other", "runner": "sleep", "fixed": {"seconds": 0},
                                 "axes": {"group.letter": ["a"], "i": [0, 7]}}).runs()
    assert store.sync("other", other) == 1  # i=0 is the first study's run: done once
    assert store.studies() == ["first", "other"]
    store.sync("first", first)  # a rerun of the first study keeps the order
    assert store.studies() == ["first", "other"]
    assert store.counts("other") == {"pending": 1, "running": 0, "done": 1, "failed": 0, "total": 2}
    frame = store.to_frame("other")
    assert sorted(frame["i"]) == [0, 7] and set(frame["study"]) == {"other"}
    shared = next(r for r in store.rows("other") if r["key"] == first[0].key)
    assert list(json.loads(shared["axes_json"])) == ["group.letter", "i"]  # the other study's axes
    assert store.counts("first")["total"] == 3

    # a database written before memberships were stored: each run belongs to its study
    old = tmp_path / "old.db"
    with sqlite3.connect(store.path) as con, sqlite3.connect(old) as out:
        con.backup(out)
        out.execute("DROP TABLE study_runs")
    reopened = ResultStore(old)
    assert reopened.studies() == ["first", "other"]
    assert reopened.counts("other")["total"] == 1


def test_an_edited_study_keeps_every_version_and_keys_select_the_current_grid(tmp_path):
    store = ResultStore(tmp_path / "s.db")

    def grid(seconds_axis):
        return StudySpec.from_dict({"name": "s", "runner": "sleep", "fixed": {"x": 1},
                                    "axes": {"seconds": seconds_axis}}).runs()

    first = grid([0, 0.001])
    store.sync("s", first)
    for run in first:
        store.claim(run.key, 1)
        store.finish(run.key, {"m": 1.0})
    edited = grid([0, 0.002])  # one grid point changed (or another slice of the study)
    assert store.sync("s", edited) == 1
    assert store.counts("s")["total"] == 3  # slices add up
    current = {run.key for run in edited}
    assert store.counts("s", keys=current) == {"pending": 1, "running": 0, "done": 1, "failed": 0, "total": 2}
    assert len(store.to_frame("s", keys=current)) == 2 and len(store.to_frame("s")) == 3
