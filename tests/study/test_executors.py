"""Running studies: failures recorded, kill -9 resume, a real training run, the CLI."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import typer
import yaml
from typer.testing import CliRunner

from moladapt.cli.study import study_app
from moladapt.study.executors import LocalExecutor, run_study
from moladapt.study.spec import StudySpec
from moladapt.study.store import ResultStore


def write(path, study):
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def stored_sleep_study(tmp_path, name: str, zipped: dict, fixed: dict | None = None):
    """A sleep-runner study whose axes vary together (one run per index), synced into a
    new store; returns (store, runs)."""
    spec = StudySpec.from_dict({"name": name, "runner": "sleep", "fixed": fixed or {},
                                "axes": zipped, "zip": [list(zipped)]})
    runs = spec.runs()
    store = ResultStore(tmp_path / "s.db")
    store.sync(name, runs)
    return store, runs


def test_failures_are_recorded_and_the_others_done(tmp_path):
    store, runs = stored_sleep_study(tmp_path, "f", {"i": [0, 1, 2, 3], "fail": [False, True, False, False]},
                                     fixed={"seconds": 0.01})
    counts = LocalExecutor(tmp_path).run(store, runs, max_workers=2, progress=False)
    assert counts == {"pending": 0, "running": 0, "done": 3, "failed": 1, "total": 4}
    rows = {json.loads(r["axes_json"])["i"]: r for r in store.rows()}
    assert "RuntimeError: sleep run asked to fail" in rows[1]["error"]
    assert "Traceback" in rows[1]["error"]
    assert json.loads(rows[0]["metrics_json"])["i"] == 0
    # nothing pending: running again does nothing; --retry-failed reruns the failure only
    assert LocalExecutor(tmp_path).run(store, runs, 2, progress=False)["failed"] == 1
    LocalExecutor(tmp_path).run(store, runs, 1, retry_failed=True, progress=False)
    assert store.rows()[1]["attempts"] == 2 and store.rows()[0]["attempts"] == 1


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc; empty elsewhere)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_9_then_resume_runs_each_key_once(tmp_path):
    study = write(tmp_path / "sleepy.yaml", {"name": "sleepy", "runner": "sleep",
                                             "fixed": {"seconds": 0.5}, "axes": {"i": list(range(6))}})
    db = tmp_path / "s.db"
    code = textwrap.dedent(f"""
        from moladapt.study.executors import run_study
        run_study({str(study)!r}, {str(db)!r}, workers=1, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    try:
        # kill once some runs are done and the next one is in flight (generous deadline: a
        # loaded CI machine can take many seconds just to import torch in the new process)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                now = ResultStore(db).counts()
                if now["done"] >= 1 and now["running"] == 1:
                    break
            time.sleep(0.05)
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    if sys.platform.startswith("linux"):  # the pool workers die with the study process
        assert workers, "the study should have had a pool worker"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in workers), workers
    before = ResultStore(db).counts()
    assert before["done"] < 6 and before["running"] == 1, before
    t0 = time.monotonic()
    counts = run_study(study, db, workers=1, progress=False)
    assert counts == {"pending": 0, "running": 0, "done": 6, "failed": 0, "total": 6}
    frame = ResultStore(db).to_frame()
    assert len(frame) == 6 and frame["key"].is_unique and sorted(frame["i"]) == list(range(6))
    assert (frame["attempts"] >= 1).all() and frame["attempts"].max() == 2
    # The dead process's run is reclaimed at once (its pid is gone), not after the store's
    # 60 s lock timeout; a bound far above the ~3 s the resume takes, so load cannot trip it.
    assert time.monotonic() - t0 < 60


def test_two_concurrent_study_processes_share_the_work(tmp_path):
    study = write(tmp_path / "shared.yaml", {"name": "shared", "runner": "sleep",
                                             "fixed": {"seconds": 0.3}, "axes": {"i": list(range(6))}})
    db = tmp_path / "s.db"
    code = f"from moladapt.study.executors import run_study; run_study({str(study)!r}, {str(db)!r}, workers=1, progress=False)"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy()) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    rows = ResultStore(db).rows()
    assert len(rows) == 6 and all(r["status"] == "done" and r["attempts"] == 1 for r in rows)


def test_ray_executor_says_how_to_install_ray(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    study = write(tmp_path / "s.yaml", {"runner": "sleep", "axes": {"i": [0]}})
    with pytest.raises(ImportError, match=r"pip install 'moladapt\[ray\]'"):
        run_study(study, tmp_path / "s.db", executor="ray")
    assert not (tmp_path / "s.db").exists()


def test_ray_executor_runs_a_study_on_a_local_cluster(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("MOLADAPT_STUDY_THREADS", "2")  # what `study run --threads 2` sets
    from moladapt.study.executors import RayExecutor

    spec = StudySpec.from_dict({"name": "r", "runner": "sleep", "fixed": {"seconds": 0.05},
                                "axes": {"i": [0, 1, 2], "fail": [False, True, False]},
                                "zip": [["i", "fail"]]})
    runs = spec.runs()
    store = ResultStore(tmp_path / "s.db")
    store.sync("r", runs)
    executor = RayExecutor(tmp_path, address="local", local_cpus=2)
    # 3 workers of 2 threads (= 2 CPUs) each on 2 CPUs: one at a time, and the user is told so
    with pytest.warns(UserWarning, match=r"3 workers × 2 CPU per run need 6 CPUs, the cluster "
                                         r"has 2 now: 1 run\(s\) at a time.*--workers 1"):
        counts = executor.run(store, runs, max_workers=3, progress=False)
    assert counts == {"pending": 0, "running": 0, "done": 2, "failed": 1, "total": 3}
    rows = {json.loads(r["axes_json"])["i"]: r for r in store.rows()}
    assert "RuntimeError: sleep run asked to fail" in rows[1]["error"]
    assert json.loads(rows[2]["metrics_json"])["i"] == 2
    assert json.loads(rows[2]["metrics_json"])["threads"] == 2  # --threads reaches Ray's workers
    assert not executor.ray.is_initialized()  # the cluster it started is shut down again


def test_a_real_training_run_end_to_end(tmp_path, data_dir):
    study = write(tmp_path / "tiny.yaml", {
        "name": "tiny",
        "fixed": {"data": {"dataset": "bbbp", "split": "scaffold"},
                  "model": {"encoder": "gin", "hidden_dim": 32, "num_layers": 2},
                  "train": {"epochs": 1, "batch_size": 64, "num_threads": 1}},
        "axes": {"train.seed": [0]}})
    db = tmp_path / "out" / "study.db"
    counts = run_study(study, db, workers=1, progress=False)
    frame = ResultStore(db).to_frame()
    assert counts["done"] == 1, frame.get("error")
    row = frame.iloc[0]
    assert 0 <= row["test.roc_auc"] <= 1 and 0 <= row["valid.roc_auc"] <= 1
    assert row["train_seconds"] > 0 and row["n_train"] > 1000 and row["train.seed"] == 0
    run_dir = tmp_path / "out" / "runs" / row["key"]
    assert (run_dir / "metrics.json").exists() and (run_dir / "model.pt").exists()


def test_cli_plan_run_status_export(tmp_path):
    app = typer.Typer()
    app.add_typer(study_app, name="study")
    runner = CliRunner()
    study = write(tmp_path / "s.yaml", {"name": "cli", "runner": "sleep", "fixed": {"seconds": 0},
                                        "axes": {"i": [0, 1], "fail": [False, True]},
                                        "zip": [["i", "fail"]]})
    db = tmp_path / "s.db"
    out = runner.invoke(app, ["study", "plan", str(study)])
    assert out.exit_code == 0 and "runs: 2" in out.output
    out = runner.invoke(app, ["study", "run", str(study), "--db", str(db), "--workers", "1",
                              "--no-progress"])
    assert out.exit_code == 1 and "1 done, 1 failed" in out.output
    out = runner.invoke(app, ["study", "status", str(db)])
    assert out.exit_code == 0 and "cli: 1 done, 1 failed" in out.output and "RuntimeError" in out.output
    out = runner.invoke(app, ["study", "export", str(db), "--output", str(tmp_path / "r.csv")])
    assert out.exit_code == 0 and len(pd.read_csv(tmp_path / "r.csv")) == 2
    bad = write(tmp_path / "bad.yaml", {"axes": {"model.hiden_dim": [3]}})
    out = runner.invoke(app, ["study", "plan", str(bad)])
    assert out.exit_code == 2 and "model.hiden_dim" in out.output
    edited = write(tmp_path / "s2.yaml", {"name": "cli", "runner": "sleep", "fixed": {"seconds": 0},
                                          "axes": {"i": [0, 5]}})  # another grid under the same name
    runner.invoke(app, ["study", "run", str(edited), "--db", str(db), "--workers", "1", "--no-progress"])
    out = runner.invoke(app, ["study", "status", str(db), "--spec", str(edited)])
    assert out.exit_code == 0 and "cli: 2 done, 0 failed" in out.output, out.output
    assert "2 stored run(s) of cli are not in" in out.output and "RuntimeError" not in out.output
    out = runner.invoke(app, ["study", "export", str(db), "--spec", str(edited), "--output", str(tmp_path / "g.csv")])
    assert out.exit_code == 0 and sorted(pd.read_csv(tmp_path / "g.csv")["i"]) == [0, 5]
    out = runner.invoke(app, ["study", "export", str(db), "--study", "clii", "--output", str(tmp_path / "x.csv")])
    assert out.exit_code == 2 and "no study named 'clii'" in out.output, out.output
    out = runner.invoke(app, ["study", "run", str(study), "--db", str(db), "--workers", "0"])
    assert out.exit_code == 2 and "--workers must be at least 1" in out.output
    out = runner.invoke(app, ["study", "run", str(study), "--db", str(tmp_path)])
    assert out.exit_code == 2 and "is a directory; give a database file" in out.output, out.output


def test_cli_says_an_interrupted_study_resumes(tmp_path, monkeypatch):
    import moladapt.study.executors

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(moladapt.study.executors, "run_study", interrupted)
    app = typer.Typer()
    app.add_typer(study_app, name="study")
    study = write(tmp_path / "s.yaml", {"name": "cli", "runner": "sleep", "fixed": {"seconds": 0}})
    out = CliRunner().invoke(app, ["study", "run", str(study), "--db", str(tmp_path / "s.db")])
    assert out.exit_code == 130 and "the same command resumes the study" in out.output, out.output


def test_threads_per_worker_follows_the_study_threads_setting(monkeypatch):
    import os

    from moladapt.study.executors import threads_per_worker

    monkeypatch.delenv("MOLADAPT_STUDY_THREADS", raising=False)
    assert threads_per_worker(1) == max(1, os.cpu_count() or 1)
    monkeypatch.setenv("MOLADAPT_STUDY_THREADS", "1")  # `study run --threads 1`
    assert threads_per_worker(1) == 1


def test_a_dead_worker_fails_only_its_own_run_and_unstorable_metrics_fail_their_run(tmp_path):
    # i=1 kills its worker process while i=0 runs beside it: the pool breaks for both, but
    # only the run that dies again when retried alone is failed; i=3's metrics are no JSON
    store, runs = stored_sleep_study(tmp_path, "crash", {
        "i": [0, 1, 2, 3], "seconds": [1.0, 0.2, 0.01, 0.01], "crash": [False, True, False, False],
        "unstorable": [False, False, False, True]})
    counts = LocalExecutor(tmp_path).run(store, runs, max_workers=2, progress=False)
    assert counts == {"pending": 0, "running": 0, "done": 2, "failed": 2, "total": 4}
    rows = {json.loads(r["axes_json"])["i"]: r for r in store.rows()}
    assert rows[0]["status"] == rows[2]["status"] == "done"
    assert rows[1]["error"].startswith("its worker process died while it ran alone")
    assert rows[1]["attempts"] == 1  # one claim: the retry is the same attempt's
    assert rows[3]["error"].startswith("the run finished but its metrics could not be stored")
    # one worker: the run that died ran alone, so it is failed at once
    store.retry_failed()
    counts = LocalExecutor(tmp_path).run(store, runs, max_workers=1, progress=False)
    assert counts["failed"] == 2 and store.rows()[1]["attempts"] == 2


def test_sigint_to_the_study_process_stops_its_runs_at_once_and_gives_them_back(tmp_path):
    study = write(tmp_path / "long.yaml", {"name": "long", "runner": "sleep",
                                           "fixed": {"seconds": 300}, "axes": {"i": [0, 1]}})
    db = tmp_path / "s.db"
    code = f"from moladapt.study.executors import run_study; run_study({str(study)!r}, {str(db)!r}, workers=2, progress=False)"
    # its own session: the signal reaches the study process only, not its pool workers
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy(),
                            start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists() and ResultStore(db).counts()["running"] == 2:
                break
            time.sleep(0.05)
        time.sleep(0.5)  # the runs are in their workers
        workers = [pid for pid in _children(proc.pid)  # not multiprocessing's resource tracker
                   if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        waited = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert waited < 120  # not the 300 s the runs would have taken
    counts = ResultStore(db).counts()
    assert counts["pending"] == 2 and counts["running"] == 0, counts
    if sys.platform.startswith("linux"):
        assert len(workers) == 2, workers
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in workers), workers
