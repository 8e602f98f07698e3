"""SQLite store of a study's runs: what is pending, running, done or failed, and the results.

One row per run key. Several ``moladapt study run`` processes may share one database on a
local disk (WAL mode, busy timeout): a run is *claimed* (pending → running) in one statement
before it starts, so no key ever runs twice at once. A process killed with ``kill -9`` leaves
its rows ``running``; :meth:`ResultStore.recover` puts rows whose claiming process is gone back
to pending. Liveness is checked with the pid and the process's start time on this host (a pid
alone is reused: a fresh container gives the rerun the very pid of the killed run): do not share
one database between machines (SQLite over a network file system is unsafe anyway).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from moladapt.study.spec import RunSpec, flatten, get_dotted
from moladapt.utils import json_safe

STATUSES = ("pending", "running", "done", "failed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    study TEXT NOT NULL,
    runner TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'failed')),
    config_json TEXT NOT NULL,
    axes_json TEXT NOT NULL,
    metrics_json TEXT,
    error TEXT,
    started_at REAL,
    finished_at REAL,
    seconds REAL,
    worker_pid INTEGER,
    worker_start INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    versions_json TEXT
);
CREATE INDEX IF NOT EXISTS runs_study_status ON runs (study, status);
CREATE TABLE IF NOT EXISTS study_runs (
    study TEXT NOT NULL,
    key TEXT NOT NULL,
    axes_json TEXT NOT NULL,
    PRIMARY KEY (study, key)
);
"""
# A run (one key) is done once and belongs to every study whose grid holds it: ``study_runs``
# says which, with each study's own axes; ``runs.study`` is the first study that stored it.


def process_start(pid: int) -> int | None:
    """Process ``pid``'s start time (clock ticks after boot, Linux ``/proc``); ``None`` elsewhere."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def pid_alive(pid: int | None, start: int | None = None) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie; with ``start`` (see
    :func:`process_start`), also that it is the process that started then, not a later one
    that was given the same pid."""
    if start is not None and pid:
        now = process_start(pid)
        if now is not None and now != start:
            return False
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:  # Linux: a killed child not yet reaped by its parent is a zombie, i.e. dead
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _dead_running(con: sqlite3.Connection) -> list[str]:
    """Keys of the ``running`` rows whose claiming process is gone."""
    rows = con.execute("SELECT key, worker_pid, worker_start FROM runs WHERE status = 'running'")
    return [r["key"] for r in rows.fetchall() if not pid_alive(r["worker_pid"], r["worker_start"])]


def versions() -> dict[str, str]:
    """Versions of the packages behind a result (read from metadata: imports nothing heavy)."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("moladapt", "torch", "torch_geometric", "rdkit", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


class ResultStore:
    """The runs of one or more studies in one SQLite file (created on first use)."""

    def __init__(self, path: str | Path, timeout: float = 60.0, create: bool = True) -> None:
        """``create=False`` (reading: report, status, export): the file must already be a study
        database; it is neither created nor given tables."""
        self.path = Path(path)
        self.timeout = timeout
        self._versions: dict[str, str] | None = None
        if not create:
            self._check_existing()
        elif self.path.is_dir():
            raise ValueError(f"{self.path} is a directory; give a database file, e.g. {self.path / 'study.db'}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._enable_wal()
        with self._connect() as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            con.executescript(SCHEMA)
            if "runs" in tables and "study_runs" not in tables:  # written before memberships
                con.execute("INSERT OR IGNORE INTO study_runs (study, key, axes_json) "
                            "SELECT study, key, axes_json FROM runs")
            columns = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
            if "worker_start" not in columns:  # a database written before the column existed
                try:
                    con.execute("ALTER TABLE runs ADD COLUMN worker_start INTEGER")
                except sqlite3.OperationalError as exc:  # another process added it just now
                    if "duplicate column" not in str(exc):
                        raise

    def _check_existing(self) -> None:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such study database")
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a directory, not a study database")
        try:
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=self.timeout)
            try:
                found = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone()
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{self.path}: not a study database ({exc})") from None
        if found is None:
            raise ValueError(f"{self.path}: an SQLite file without study results (no 'runs' table)")

    # --- connection -----------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A short-lived connection per operation: safe across fork, cheap at this scale.
        con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            con.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            con.execute("PRAGMA synchronous = NORMAL")
            con.row_factory = sqlite3.Row
            yield con
        finally:
            con.close()

    def _enable_wal(self) -> None:
        """Put the file in WAL mode (persistent, so once per file, not per connection).

        Switching the journal mode needs an exclusive lock and SQLite answers "database is
        locked" at once, without waiting out the busy timeout, when another connection is
        mid-write (two study processes opening a new store together), so retry.
        """
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                with self._connect() as con:
                    if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        con.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(2 * delay, 0.5)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # --- writing --------------------------------------------------------------------------
    def sync(self, study: str, runs: Iterable[RunSpec]) -> int:
        """Insert a pending row for each run not stored yet; return how many were new.

        Existing keys are left untouched (status, results and attempts are kept). A study's
        runs are every run synced under its name: slices of one study file run one after the
        other add up, and so do the runs of an edited file's earlier versions (``keys`` of
        :meth:`counts` / :meth:`to_frame` keep one grid only).
        """
        rows = [(r.key, study, r.runner, json.dumps(json_safe(r.config), sort_keys=True),
                 json.dumps(json_safe(r.axes))) for r in runs]
        with self._transaction() as con:
            before = con.total_changes
            con.executemany("INSERT OR IGNORE INTO runs (key, study, runner, status, config_json, "
                            "axes_json) VALUES (?, ?, ?, 'pending', ?, ?)", rows)
            new = con.total_changes - before
            con.executemany("INSERT INTO study_runs (study, key, axes_json) VALUES (?, ?, ?) "
                            "ON CONFLICT (study, key) DO UPDATE SET axes_json = excluded.axes_json",
                            [(study, key, axes) for key, _, _, _, axes in rows])
            return new

    def claim(self, key: str, pid: int | None = None) -> bool:
        """Atomically move ``key`` pending → running for process ``pid``; False if not pending."""
        pid = os.getpid() if pid is None else pid
        with self._transaction() as con:
            cur = con.execute(
                "UPDATE runs SET status = 'running', worker_pid = ?, worker_start = ?, started_at = ?, "
                "finished_at = NULL, seconds = NULL, error = NULL, attempts = attempts + 1 "
                "WHERE key = ? AND status = 'pending'", (pid, process_start(pid), time.time(), key))
            return cur.rowcount == 1

    def finish(self, key: str, metrics: dict[str, Any]) -> None:
        """Record a run's metrics (a JSON-able dict) and mark it done."""
        self._versions = self._versions or versions()
        now = time.time()
        with self._transaction() as con:
            con.execute("UPDATE runs SET status = 'done', metrics_json = ?, error = NULL, "
                        "finished_at = ?, seconds = ? - COALESCE(started_at, ?), versions_json = ? "
                        "WHERE key = ?",
                        (json.dumps(json_safe(metrics)), now, now, now,
                         json.dumps(self._versions), key))

    def fail(self, key: str, error: str) -> None:
        """Mark a run failed with its traceback (or any message)."""
        self._versions = self._versions or versions()
        now = time.time()
        with self._transaction() as con:
            con.execute("UPDATE runs SET status = 'failed', error = ?, finished_at = ?, "
                        "seconds = ? - COALESCE(started_at, ?), versions_json = ? WHERE key = ?",
                        (error, now, now, now, json.dumps(self._versions), key))

    def release(self, key: str) -> None:
        """Put a claimed run back to pending (e.g. the process was interrupted)."""
        with self._transaction() as con:
            con.execute("UPDATE runs SET status = 'pending', worker_pid = NULL, worker_start = NULL, started_at = NULL "
                        "WHERE key = ? AND status = 'running'", (key,))

    def recover(self) -> list[str]:
        """Reset ``running`` rows whose claiming process is dead to pending; return their keys."""
        with self._transaction() as con:
            dead = _dead_running(con)
            con.executemany("UPDATE runs SET status = 'pending', worker_pid = NULL, worker_start = NULL, started_at = NULL "
                            "WHERE key = ? AND status = 'running'", [(k,) for k in dead])
        return dead

    def orphaned(self) -> set[str]:
        """Keys of ``running`` rows whose claiming process is gone (read only: :meth:`recover`,
        called by every ``study run``, puts them back to pending)."""
        with self._connect() as con:
            return set(_dead_running(con))

    def retry_failed(self, keys: Iterable[str] | None = None) -> int:
        """Put failed runs (all, or those of ``keys``) back to pending; return how many."""
        with self._transaction() as con:
            if keys is None:
                cur = con.execute("UPDATE runs SET status = 'pending' WHERE status = 'failed'")
                return cur.rowcount
            n = 0
            for key in keys:
                n += con.execute("UPDATE runs SET status = 'pending' WHERE status = 'failed' "
                                 "AND key = ?", (key,)).rowcount
            return n

    # --- reading --------------------------------------------------------------------------
    def status(self, key: str) -> str | None:
        with self._connect() as con:
            row = con.execute("SELECT status FROM runs WHERE key = ?", (key,)).fetchone()
        return row["status"] if row else None

    def studies(self) -> list[str]:
        """The names of the studies stored, in the order they were first stored."""
        with self._connect() as con:
            return [r[0] for r in con.execute("SELECT study FROM study_runs GROUP BY study "
                                              "ORDER BY MIN(rowid)")]

    def counts(self, study: str | None = None, keys: Iterable[str] | None = None) -> dict[str, int]:
        """Runs per status (every status present, zeros included), plus ``total``: of
        ``study``'s runs (all when ``None``), only those of ``keys`` when given."""
        sql, args = "SELECT key, status FROM runs", ()
        if study is not None:
            sql, args = sql + " WHERE key IN (SELECT key FROM study_runs WHERE study = ?)", (study,)
        with self._connect() as con:
            rows = con.execute(sql, args).fetchall()
        wanted = set(keys) if keys is not None else None
        out = dict.fromkeys(STATUSES, 0)
        for row in rows:
            if wanted is None or row["key"] in wanted:
                out[row["status"]] += 1
        out["total"] = sum(out[s] for s in STATUSES)
        return out

    def rows(self, study: str | None = None) -> list[dict[str, Any]]:
        """Every stored run, or ``study``'s runs (those its grid holds, whichever study ran
        them first) with that study's name and axes."""
        with self._connect() as con:
            if study is None:
                return [dict(r) for r in con.execute("SELECT * FROM runs ORDER BY rowid")]
            rows = con.execute("SELECT r.*, m.axes_json AS member_axes FROM runs r JOIN study_runs m "
                               "ON m.key = r.key WHERE m.study = ? ORDER BY r.rowid", (study,)).fetchall()
            if not rows:
                known = self.studies()
                if study not in known:
                    raise ValueError(f"{self.path}: no study named {study!r}; its studies are: "
                                     f"{', '.join(known) or 'none'}")
            out = []
            for row in rows:
                record = dict(row)
                record.update(study=study, axes_json=record.pop("member_axes"))
                out.append(record)
            return out

    def to_frame(self, study: str | None = None, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """One row per run: key, study, runner, status, attempts, seconds, then the axes
        (dotted names, e.g. ``data.dataset``) and the flattened metrics (e.g. ``test.roc_auc``);
        only the runs of ``keys`` when given (e.g. a study file's current grid)."""
        records = []
        wanted = None if keys is None else set(keys)
        rows = [row for row in self.rows(study) if wanted is None or row["key"] in wanted]
        axes_of = [json.loads(row["axes_json"] or "{}") for row in rows]
        # a run stored before an axis was added lacks it in axes_json: read it from its config
        axis_names = list(dict.fromkeys(name for axes in axes_of for name in axes))
        for row, axes in zip(rows, axes_of, strict=True):
            record: dict[str, Any] = {k: row[k] for k in ("key", "study", "runner", "status",
                                                           "attempts", "seconds", "started_at",
                                                           "finished_at")}
            config = json.loads(row["config_json"] or "{}")
            record.update({name: axes[name] if name in axes else get_dotted(config, name)
                           for name in axis_names})
            for name, value in flatten(json.loads(row["metrics_json"] or "{}")).items():
                if isinstance(value, list):
                    value = json.dumps(value)
                record[name if name not in record else f"metrics.{name}"] = value
            record["error"] = (row["error"] or "").strip().splitlines()[-1] if row["error"] else None
            records.append(record)
        return pd.DataFrame.from_records(records)

    def export(self, path: str | Path, study: str | None = None,
               keys: Iterable[str] | None = None) -> pd.DataFrame:
        """Write :meth:`to_frame` as CSV (``.csv``, ``.csv.gz``) or Parquet (``.parquet``)."""
        path = Path(path)
        frame = self.to_frame(study, keys)
        name = path.name.lower()
        if name.endswith(".parquet") or name.endswith(".pq"):
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise ImportError("writing Parquet needs pyarrow: pip install 'moladapt[parquet]' "
                                  "(or export to a .csv file)") from None
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, path)
        elif name.endswith(".csv") or name.endswith(".csv.gz"):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp" + (".gz" if name.endswith(".gz") else ""))
            frame.to_csv(tmp, index=False)
            os.replace(tmp, path)
        else:
            raise ValueError(f"{path}: export to a .csv, .csv.gz or .parquet file")
        return frame
