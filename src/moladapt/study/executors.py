"""Run a study's pending runs: locally in a process pool, or on a Ray cluster.

Runners (:data:`RUNNERS`) turn one resolved config into a plain JSON-able dict of metrics.
Executors claim a run in the :class:`~moladapt.study.store.ResultStore` just before starting
it, so several processes can work on one study at once and a killed study resumes where it
stopped. A failing run records its traceback and never stops the study.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moladapt.registry import Registry
from moladapt.study.spec import RunSpec, StudySpec
from moladapt.study.store import ResultStore


# --- runners ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Runner:
    """``run(config, run_dir) -> metrics`` and ``resolve(config) -> config`` (validate, fill
    defaults; raise ValueError naming a bad key).

    ``plan_cost(runs) -> (molecule-epochs, seconds, lines)``, optional: work done once per study
    on top of each run's training (e.g. shared pretraining). ``cost_factor(config) -> float``,
    optional: one run's training time as a multiple of plain training's (e.g. auxiliary tasks).
    A runner that has either takes the ``train`` runner's data/model/train sections, and
    ``plan`` costs its runs like ``train``'s, times the factor, plus the once-per-study work.
    """

    run: Callable[[dict[str, Any], Path], dict[str, Any]]
    resolve: Callable[[dict[str, Any]], dict[str, Any]]
    plan_cost: Callable[[list[Any]], tuple[float, float, list[str]]] | None = None
    cost_factor: Callable[[dict[str, Any]], float] | None = None


RUNNERS: Registry[Runner] = Registry("runner")


def _resolve_train(config: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import fields

    from moladapt.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
    for section, values in config.items():
        if section not in sections:
            raise ValueError(f"unknown key {section!r}; a train config has sections "
                             f"{', '.join(sections)}")
        if not isinstance(values, dict):
            raise ValueError(f"{section!r} must be a mapping of options, got {values!r}")
        known = {f.name: str(f.type) for f in fields(sections[section])}
        for name, value in list(values.items()):
            if name not in known:
                raise ValueError(f"unknown key '{section}.{name}'; {section} options are: "
                                 f"{', '.join(sorted(known))}")
            values[name] = _coerce(f"{section}.{name}", known[name], value)
    cfg = RunConfig.from_dict(config)
    _check_names(cfg)
    if cfg.train.init:
        check_init_fits(cfg.train.init, cfg.model, cfg.data.featurizer, "train.init")
    return cfg.to_dict()


def check_init_fits(init: str, model_cfg: Any, featurizer: str, key: str, fused_source: bool = True) -> None:
    """Plan time: the checkpoint ``init`` names (a path or ``bundled[:name]``) holds an encoder
    that loads into ``model_cfg``'s encoder: same featurizer, graph architecture, and (both
    fused) fingerprint fusion, as :func:`~moladapt.models.fingerprint.load_encoder_weights`
    checks at run start; ``fused_source=False``: a fingerprint-fused checkpoint is refused (the
    run continues a graph encoder). So a study does not queue hundreds of runs that each fail
    on it. Each checkpoint and encoder architecture is checked once per process."""
    import dataclasses

    from moladapt.bundled_models import resolve_init

    path = Path(resolve_init(init))
    if not path.is_file():
        raise ValueError(f"{key}: no checkpoint file {path}")
    stat = path.stat()
    encoder_only = dataclasses.replace(model_cfg, dropout=0.0, head_hidden_dims=())  # not architecture
    try:
        _check_init_fits(str(path), (stat.st_size, stat.st_mtime_ns), encoder_only, featurizer, fused_source)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


@functools.lru_cache(maxsize=64)
def _check_init_fits(path: str, version: tuple[int, int], model_cfg: Any, featurizer: str,
                     fused_source: bool) -> None:
    from moladapt.data.featurize import get_featurizer
    from moladapt.models.fingerprint import FingerprintFusionEncoder, load_encoder_weights
    from moladapt.training import build_model, load_checkpoint

    feat = get_featurizer(featurizer)
    source = load_checkpoint(path, expected_featurizer=feat).model.encoder
    if not fused_source and isinstance(source, FingerprintFusionEncoder):
        raise ValueError(f"{path} holds a fingerprint-fused encoder; this run continues a graph encoder")
    load_encoder_weights(build_model(model_cfg, feat, 1).encoder, source, path)


def _coerce(name: str, annotation: str, value: Any) -> Any:
    """Floats stay floats: ``lr: 1e-3`` (a string to YAML) and ``dropout: 0`` (an int) become
    floats, so equal configs get equal keys and a typo fails here, not hours into a study."""
    def to_float(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            return v
        try:
            return float(v)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {v!r}") from None

    if value is None:
        return value
    if annotation in ("float", "float | None"):
        return to_float(value)
    if annotation.startswith("tuple[float") and isinstance(value, (list, tuple)):
        return [to_float(v) for v in value]
    return value


def _check_names(cfg) -> None:
    """Registered names (dataset, featurizer, encoder, split, pooling) exist: fail at plan time."""
    from moladapt.experiment import check_choices

    if cfg.data.dataset is not None:
        from moladapt.data.sources import DATASETS

        DATASETS.get(cfg.data.dataset.lower())
    check_choices(cfg)


def _run_train(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    from moladapt.config import RunConfig
    from moladapt.experiment import run_training
    from moladapt.utils import json_safe

    threads = int(os.environ.get("MOLADAPT_STUDY_THREADS", "0"))
    cfg = RunConfig.from_dict(config)
    if threads and cfg.train.num_threads is None:
        cfg = cfg.replace(train={"num_threads": threads})
    notes: list[str] = []  # e.g. "no model selection": kept with the run's metrics
    result = run_training(cfg, run_dir, progress=False, log=notes.append)
    metrics: dict[str, Any] = {"notes": notes} if notes else {}
    for part, report in (("test", result.test), ("valid", result.valid)):
        metrics[f"{part}.primary"] = float(report.primary)
        metrics[f"{part}.primary_metric"] = report.primary_name
        for name, value in report.mean.items():
            metrics[f"{part}.{name}"] = float(value)
        metrics[f"{part}.n_tasks_scored"] = int(report.n_tasks_scored)
    n_train, n_valid, n_test = (int(n) for n in result.split_sizes)
    metrics.update(train_seconds=float(result.train_seconds),
                   molecules_per_second=float(result.molecules_per_second),
                   best_epoch=int(result.best_epoch), n_train=n_train, n_valid=n_valid,
                   n_test=n_test, n_invalid_smiles=int(result.n_invalid),
                   run_dir=str(run_dir))
    return json_safe(metrics)


def _run_sleep(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """For tests: sleep ``config['seconds']``; raise if ``config['fail']``; kill its own
    process if ``config['crash']``; return metrics JSON cannot hold if ``config['unstorable']``."""
    t0 = time.perf_counter()
    time.sleep(float(config.get("seconds", 0.0)))
    if config.get("fail"):
        raise RuntimeError(f"sleep run asked to fail: {config.get('fail')}")
    if config.get("crash"):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    if config.get("unstorable"):
        return {"a_set": {1, 2}}
    return {"slept": time.perf_counter() - t0, "pid": os.getpid(),
            "threads": int(os.environ.get("MOLADAPT_STUDY_THREADS", "0")),
            **{k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))}}


def _resolve_any(config: dict[str, Any]) -> dict[str, Any]:
    return config


RUNNERS.add("train", Runner(_run_train, _resolve_train))
RUNNERS.add("sleep", Runner(_run_sleep, _resolve_any))

from moladapt.study import pretrain_runner as _pretrain_runner  # noqa: E402,F401  registers "pretrain_finetune"


def execute(runner: str, config: dict[str, Any], run_dir: str) -> tuple[bool, Any]:
    """Run one run in this process: ``(True, metrics)`` or ``(False, traceback text)``."""
    try:
        return True, RUNNERS.get(runner).run(config, Path(run_dir))
    except BaseException:  # noqa: BLE001 - a run's failure is data, never a crash of the study
        return False, traceback.format_exc()


def threads_per_worker(workers: int) -> int:
    """CPU count ÷ workers, unless ``MOLADAPT_STUDY_THREADS`` says (``study run --threads``)."""
    if os.environ.get("MOLADAPT_STUDY_THREADS"):
        return max(1, int(os.environ["MOLADAPT_STUDY_THREADS"]))
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _init_worker(threads: int) -> None:
    """Pool worker start: limit BLAS/OpenMP/torch threads so workers do not oversubscribe."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ["MOLADAPT_STUDY_THREADS"] = str(threads)
    if "torch" in sys.modules:  # already imported (fork): set it now; else the runner does
        sys.modules["torch"].set_num_threads(threads)


def _die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel kills this worker when the study process dies, even by ``kill -9``.

    Without it an orphaned pool worker would finish (or hang in) its run while the resumed study
    starts the same run again. The claim it held stays ``running`` and is reset on resume.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _init_local_worker(threads: int, parent_pid: int) -> None:
    import signal

    # Ctrl-C reaches the whole process group: the study process alone handles it (it gives
    # the claims back and stops the workers); a worker that caught it would record a failure
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    _init_worker(threads)


def _worker_task(runner: str, config: dict[str, Any], run_dir: str, threads: int) -> tuple[bool, Any]:
    _init_worker(threads)
    if runner == "train":
        import torch

        torch.set_num_threads(threads)
    return execute(runner, config, run_dir)


# --- executors --------------------------------------------------------------------------------
class Executor:
    """Runs the pending runs of a study. Subclasses say how to start, submit and wait."""

    def __init__(self, study_dir: str | Path = ".") -> None:
        self.study_dir = Path(study_dir)

    def run_dir(self, run: RunSpec) -> Path:
        return self.study_dir / "runs" / run.key

    def default_workers(self) -> int:
        return os.cpu_count() or 1

    # subclass hooks
    def _start(self, workers: int) -> None:
        raise NotImplementedError

    def _submit(self, run: RunSpec) -> Any:
        raise NotImplementedError

    def _wait(self, handles: list[Any], timeout: float) -> list[Any]:
        """The finished handles, waiting up to ``timeout`` seconds for one (empty: none yet)."""
        raise NotImplementedError

    def _result(self, handle: Any) -> tuple[bool, Any]:
        raise NotImplementedError

    def _stop(self) -> None:
        pass

    def _abort(self, handles: list[Any]) -> None:
        """Interrupted: stop the runs in flight now (their checkpoints let a rerun resume)."""

    def _worker_lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` says a worker process died, taking every run in it down with it."""
        return False

    def run(self, store: ResultStore, runs: list[RunSpec], max_workers: int | None = None,
            retry_failed: bool = False, progress: bool = True) -> dict[str, int]:
        """Run every pending run of ``runs``; return the counts per status afterwards."""
        workers = max(1, max_workers or self.default_workers())
        keys = [r.key for r in runs]
        if retry_failed:
            store.retry_failed(keys)
        counts = store.counts(keys=keys)
        bar = _ProgressBar(counts, progress)
        todo = iter([r for r in runs if store.status(r.key) == "pending"])
        in_flight: dict[Any, RunSpec] = {}
        # runs that were in flight when a worker process died: which of them killed it is
        # unknown, so each runs once more, alone, and only one that dies alone is failed
        suspects: list[RunSpec] = []
        rerun_alone: set[str] = set()
        pid = os.getpid()
        current: RunSpec | None = None  # taken out of in_flight, not yet recorded
        # Ctrl-C only sets a flag, and the loop below raises KeyboardInterrupt itself between
        # waits: raised at any bytecode, it can leave a future's lock held inside
        # concurrent.futures, and the pool's manager thread (joined at exit) then hangs
        interrupted = threading.Event()
        own_handler = threading.current_thread() is threading.main_thread()
        if own_handler:
            previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
        self._start(workers)
        try:
            def fill() -> None:
                if any(run.key in rerun_alone for run in in_flight.values()):
                    return
                if suspects:
                    if not in_flight:
                        run = suspects.pop(0)
                        rerun_alone.add(run.key)
                        in_flight[self._submit(run)] = run  # still claimed by us
                    return
                while len(in_flight) < workers:
                    run = next(todo, None)
                    if run is None:
                        return
                    if store.claim(run.key, pid):  # another process may have taken it
                        in_flight[self._submit(run)] = run
                    else:
                        bar.taken()

            fill()
            while in_flight:
                finished = self._wait(list(in_flight), timeout=0.2)
                if interrupted.is_set():
                    raise KeyboardInterrupt
                for handle in finished:
                    current = run = in_flight.pop(handle)
                    try:
                        ok, value = self._result(handle)
                    except BaseException as exc:  # worker died (OOM, segfault) or task lost
                        if isinstance(exc, KeyboardInterrupt):
                            raise
                        alone = run.key in rerun_alone or not (in_flight or suspects)
                        if self._worker_lost(exc) and not alone:
                            suspects.append(run)
                            current = None
                            continue
                        ok, value = False, traceback.format_exc()
                        if self._worker_lost(exc):
                            value = f"its worker process died while it ran alone:\n{value}"
                    if ok:
                        try:
                            store.finish(run.key, value)
                        except (TypeError, ValueError):  # metrics that JSON cannot hold
                            ok, value = False, ("the run finished but its metrics could not be "
                                                f"stored:\n{traceback.format_exc()}")
                    if not ok:
                        store.fail(run.key, str(value))
                    current = None
                    bar.update(ok)
                fill()
        except BaseException:
            unrecorded = [*in_flight.values(), *suspects, *([current] if current else [])]
            for run in unrecorded:  # interrupted: give the claims back
                store.release(run.key)
            self._abort(list(in_flight))
            raise
        finally:
            if own_handler:
                signal.signal(signal.SIGINT, previous)
            self._stop()
            bar.close()
        return store.counts(keys=keys)


class LocalExecutor(Executor):
    """A process pool on this machine (``spawn``ed workers, each with cpu_count // workers threads)."""

    def _start(self, workers: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.threads = threads_per_worker(workers)
        self.workers = workers
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_local_worker,
                                        initargs=(self.threads, os.getpid()))

    def _submit(self, run: RunSpec) -> Any:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self.pool.submit(_worker_task, run.runner, run.config, str(self.run_dir(run)),
                                    self.threads)
        except BrokenProcessPool:  # a worker died earlier: start a fresh pool
            self._stop()
            self._start(self.workers)
            return self.pool.submit(_worker_task, run.runner, run.config, str(self.run_dir(run)),
                                    self.threads)

    def _wait(self, handles: list[Any], timeout: float) -> list[Any]:
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return list(done)

    def _result(self, handle: Any) -> tuple[bool, Any]:
        return handle.result()

    def _stop(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def _abort(self, handles: list[Any]) -> None:
        # Waiting for the runs in flight would let them finish after their claims were given
        # back, and their results would be lost; stopped now, each resumes from its checkpoint.
        pool = getattr(self, "pool", None)
        if pool is not None:
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    def _worker_lost(self, exc: BaseException) -> bool:
        from concurrent.futures.process import BrokenProcessPool

        return isinstance(exc, BrokenProcessPool)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError("the ray executor needs Ray: pip install 'moladapt[ray]'") from None
    return ray


class RayExecutor(Executor):
    """Ray tasks (one CPU each unless ``num_cpus`` says otherwise) on the cluster at ``address``.

    ``address="auto"`` joins a running cluster (``ray start --head``); ``"local"`` starts one
    in this process (with ``local_cpus`` CPUs, default all) and shuts it down when the study
    ends. The store stays with the driver: run directories are written by the workers under
    ``study_dir``, which must be a path every node can reach for the files to be found later
    (metrics always come back to the driver's database).
    """

    def __init__(self, study_dir: str | Path = ".", address: str | None = "auto",
                 num_cpus: float | None = None, local_cpus: int | None = None) -> None:
        super().__init__(study_dir)
        self.address = address or "auto"
        self.num_cpus = num_cpus
        self.local_cpus = local_cpus
        self.ray = _import_ray()
        self._started_here = False

    def _init(self) -> None:
        if self.ray.is_initialized():
            return
        if self.address == "local":
            # no dashboard: it is a web server a batch study does not need, and slow to start
            self.ray.init(num_cpus=self.local_cpus, include_dashboard=False,
                          log_to_driver=False)
            self._started_here = True
        else:
            self.ray.init(address=self.address, log_to_driver=False)

    def _stop(self) -> None:
        if self._started_here:
            self.ray.shutdown()
            self._started_here = False

    def default_workers(self) -> int:
        self._init()
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def _start(self, workers: int) -> None:
        self._init()
        asked = os.environ.get("MOLADAPT_STUDY_THREADS")  # `study run --threads`
        cpus = self.num_cpus or (int(asked) if asked else 1)
        self.threads = int(asked) if asked else max(1, int(cpus))
        self.task = self.ray.remote(num_cpus=cpus, max_retries=0)(_worker_task)
        total = float(self.ray.cluster_resources().get("CPU", 0))
        if workers * cpus > total:
            # not capped: an autoscaling cluster adds nodes only for tasks that wait
            warnings.warn(
                f"ray: {workers} workers × {cpus:g} CPU per run need {workers * cpus:g} CPUs, the "
                f"cluster has {total:g} now: {int(total // cpus)} run(s) at a time until it grows; "
                "the others wait in Ray's queue, shown as 'running' (pass --workers "
                f"{max(1, int(total // cpus))} to claim only what runs)", stacklevel=2)

    def _submit(self, run: RunSpec) -> Any:
        return self.task.remote(run.runner, run.config, str(self.run_dir(run)), self.threads)

    def _wait(self, handles: list[Any], timeout: float) -> list[Any]:
        done, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        return list(done)

    def _result(self, handle: Any) -> tuple[bool, Any]:
        return self.ray.get(handle)

    def _abort(self, handles: list[Any]) -> None:
        for handle in handles:  # their claims are given back: they must not go on running
            try:
                self.ray.cancel(handle, force=True)
            except Exception:  # noqa: BLE001 - finished meanwhile, or the cluster is gone
                pass


EXECUTORS = ("local", "ray")


def make_executor(name: str, study_dir: str | Path, address: str | None = None) -> Executor:
    if name == "local":
        return LocalExecutor(study_dir)
    if name == "ray":
        return RayExecutor(study_dir, address=address or "auto")
    raise ValueError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}")


def run_study(spec_path: str | Path, db_path: str | Path, executor: str = "local",
              workers: int | None = None, retry_failed: bool = False, address: str | None = None,
              progress: bool = True, study_dir: str | Path | None = None) -> dict[str, int]:
    """Load a study file, add its runs to the database, run those not done; return the counts.

    Run directories go to ``<study_dir>/runs/<key>/`` (default ``study_dir``: the database's
    folder). Rows left ``running`` by a dead process are reset to pending first, so running the
    same command again resumes an interrupted study.
    """
    spec = StudySpec.load(spec_path)
    runs = spec.runs()
    study_dir = Path(db_path).resolve().parent if study_dir is None else Path(study_dir)
    runner = make_executor(executor, study_dir, address)  # e.g. "no ray" before touching the db
    store = ResultStore(db_path)
    store.recover()
    store.sync(spec.name, runs)
    return runner.run(store, runs, max_workers=workers, retry_failed=retry_failed,
                      progress=progress)


# --- progress ---------------------------------------------------------------------------------
class _ProgressBar:
    def __init__(self, counts: dict[str, int], enabled: bool) -> None:
        self.done, self.failed = counts["done"], counts["failed"]
        self.total = counts["total"]
        self.skipped = 0
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.done + self.failed, unit="run",
                            desc="study", file=sys.stderr, dynamic_ncols=True)
            self._postfix()

    def _postfix(self, refresh: bool = True) -> None:
        if self.bar is not None:
            remaining = self.total - self.done - self.failed - self.skipped
            self.bar.set_postfix(done=self.done, failed=self.failed, remaining=remaining,
                                 refresh=refresh)

    def update(self, ok: bool) -> None:
        if ok:
            self.done += 1
        else:
            self.failed += 1
        if self.bar is not None:
            self._postfix(refresh=False)
            self.bar.update(1)

    def taken(self) -> None:
        """A run claimed by another process: not ours to wait for."""
        self.skipped += 1
        if self.bar is not None:
            self.bar.total = max(self.bar.n, self.bar.total - 1)
            self._postfix()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
import moladapt.auxiliary_runs  # noqa: E402, F401  (registers the "auxiliary" runner)
import moladapt.multitask  # noqa: E402, F401  (registers the "multitask" runner)
