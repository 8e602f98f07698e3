"""Few-shot experiments end to end: task collections by name, meta-training, the protocol,
summaries with confidence intervals, and the ΔAUPRC-vs-k plot.

The command line (``moladapt meta-train``, ``few-shot``, ``few-shot-plot``) is a thin layer
over these functions:

* :func:`resolve_tasks` — ``"fsmol-train"`` / ``"fsmol-valid"`` / ``"fsmol-test"`` (FS-Mol's
  task split) or the name of a multi-task classification benchmark (``"tox21"``,
  ``"toxcast"``, ...: one task per label column), optionally ``"<spec>:<max_tasks>"`` for a
  seeded random subset of the tasks.
* :func:`meta_train` — meta-train an adapter of :data:`moladapt.adapt.ADAPTERS` (``maml``,
  ``fomaml``, ``anil``, ``protonet``, ...) on many tasks and save the result to a directory:
  ``model.pt`` (encoder + meta-learned head; a regular
  :func:`moladapt.training.save_checkpoint` file, so ``moladapt train --init`` and
  :func:`moladapt.training.load_checkpoint` read it too; the method and its hyper-parameters
  are in ``extra["meta"]``), ``meta.json`` (method state: hyper-parameters, whether the head
  is meta-learned, the meta-training loss of every outer step, timings) and ``config.yaml``.
* :func:`few_shot` — run :func:`moladapt.evaluate.protocol.evaluate_few_shot` for one method
  (an adapter, from a checkpoint or a fresh encoder, or a fingerprint baseline of
  :data:`BASELINES`), resumable, into ``results.csv``; writes ``config.yaml``,
  ``summary.csv`` (:func:`summarize_few_shot`), ``metrics.json`` (:func:`few_shot_metrics`)
  and the plot.
* :func:`plot_delta_auprc_vs_k` — mean ΔAUPRC against k, one line per method, with 95%
  bootstrap confidence bands over tasks.

Averaging, as in FS-Mol: a task's score at k is the mean over its draws (episodes); the
reported number is the mean over tasks, and its confidence interval is a percentile
bootstrap over tasks (:func:`moladapt.evaluate.statistics.bootstrap_mean_ci`). Tasks too
small for a k are skipped by the protocol, so large k may average fewer tasks: summaries
and plots report the task counts.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch import nn

from moladapt.adapt import ADAPTERS, Adapter, TaskFeatureCache
from moladapt.adapt.base import FitPredict, MetaCheckpoint, MetaValidation, new_head
from moladapt.adapt.fingerprint_baselines import KNNECFP, RandomForestECFP
from moladapt.bundled_models import sha256_file
from moladapt.config import ModelConfig, checked_arguments, from_dict, model_config_dict, to_plain
from moladapt.data.featurize import Featurizer, get_featurizer
from moladapt.data.sources import CLASSIFICATION, DataError, load_dataset
from moladapt.data.tasks import FSMOL_SPLITS, load_fsmol_tasks, tasks_from_table
from moladapt.evaluate.protocol import DEFAULT_SUPPORT_SIZES, evaluate_few_shot, load_results
from moladapt.evaluate.statistics import bootstrap_mean_ci, paired_comparisons
from moladapt.models.heads import MolecularModel
from moladapt.registry import Registry
from moladapt.types import Task
from moladapt.utils import atomic_write_text, code_revision, write_json

__all__ = [
    "BASELINES",
    "DEFAULT_SUPPORT_SIZES",
    "FewShotRun",
    "MetaTrained",
    "SUMMARY_METRICS",
    "build_adapter",
    "build_baseline",
    "check_method",
    "compare_few_shot",
    "encoder_config",
    "few_shot",
    "load_meta_checkpoint",
    "meta_train",
    "method_names",
    "plot_delta_auprc_vs_k",
    "resolve_tasks",
    "summarize_few_shot",
]

#: Few-shot methods that need no encoder: ``BASELINES.get(name)(seed=..., **hparams)`` is a
#: ``fit_predict`` callback of :func:`moladapt.evaluate.protocol.evaluate_few_shot`.
BASELINES: Registry[Callable[..., FitPredict]] = Registry("baseline")
BASELINES.add("rf-ecfp", RandomForestECFP)
BASELINES.add("knn-ecfp", KNNECFP)

SUMMARY_METRICS = ("delta_auprc", "auprc", "roc_auc")
_METRIC_LABELS = {"delta_auprc": "ΔAUPRC", "auprc": "AUPRC", "roc_auc": "ROC-AUC"}
CHECKPOINT_TASK = "few-shot"
#: config.yaml keys that must match for ``few_shot`` to resume into an existing directory. The
#: model is identified by its weights (``model_sha256``), not by its file, which changes with
#: every training run even when the weights do not.
_RUN_IDENTITY = ("method", "label", "model_sha256", "featurizer", "encoder", "params", "seed")


def method_names() -> list[str]:
    """Every method :func:`few_shot` accepts: adapters, then fingerprint baselines."""
    return [*ADAPTERS.names(), *BASELINES.names()]


# --- tasks -------------------------------------------------------------------------------


def resolve_tasks(
    spec: str, min_size: int = 0, max_tasks: int | None = None, seed: int = 0, download: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[Task]:
    """The tasks named by ``spec``.

    Args:
        spec: ``"fsmol-train"``, ``"fsmol-valid"``, ``"fsmol-test"`` (FS-Mol's task split,
            tasks sorted by id) or a multi-task classification benchmark (``"tox21"``,
            ``"toxcast"``, ``"muv"``, ...: one task per label column, molecules measured on
            it), or a CSV file of the same layout (a ``smiles`` column and 0/1 label
            columns, empty = unmeasured). ``"<spec>:<n>"`` keeps a random subset of ``n`` tasks.
        min_size: leave out tasks with fewer molecules.
        max_tasks: as ``":<n>"`` (give one or the other).
        seed: the random subset's seed (a subset is kept in the collection's order).
        log: told which label columns were left out for lacking one class among their
            measured labels (default: a warning).
    """
    given, sep, limit = str(spec).strip().partition(":")
    name = given.strip().lower()
    if sep:
        if max_tasks is not None:
            raise ValueError(f"give the number of tasks once: {spec!r} and max_tasks={max_tasks}")
        try:
            max_tasks = int(limit)
        except ValueError:
            raise ValueError(f"task spec {spec!r}: expected '<tasks>:<max_tasks>' with an integer") from None
    if max_tasks is not None and max_tasks < 1:
        raise ValueError(f"max_tasks must be >= 1, got {max_tasks}")
    if name.startswith("fsmol"):
        split = name[len("fsmol"):].lstrip("-_")
        if split not in FSMOL_SPLITS:
            raise ValueError(f"FS-Mol tasks are named {', '.join('fsmol-' + s for s in FSMOL_SPLITS)}; got {spec!r}")
        tasks = load_fsmol_tasks(split, min_size=min_size, download=download)
    else:
        from moladapt.data.sources import load_task_csv, names_a_file

        if names_a_file(given):  # a user's multi-task CSV
            table = load_task_csv(given.strip())
        else:
            table = load_dataset(name, download=download)
        one_class: list[str] = []
        tasks = [t for t in tasks_from_table(table, dropped=one_class) if len(t) >= min_size]
        if one_class:
            shown = ", ".join(one_class[:8]) + (f" and {len(one_class) - 8} more" if len(one_class) > 8 else "")
            message = (f"{spec}: left out {len(one_class)} of {table.num_tasks} task columns whose "
                       f"measured labels hold one class or none (no episode can be scored): {shown}")
            (log or (lambda m: warnings.warn(m, stacklevel=3)))(message)
    if not tasks:
        raise DataError(f"{spec}: no task has at least {min_size} molecules")
    if max_tasks is not None and max_tasks < len(tasks):
        keep = np.sort(np.random.default_rng(seed).choice(len(tasks), size=max_tasks, replace=False))
        tasks = [tasks[i] for i in keep]
    return tasks


# --- methods -----------------------------------------------------------------------------


def _construct(factory: Callable[..., Any], params: Mapping[str, Any], method: str) -> Any:
    sig = inspect.signature(factory)
    known = [n for n, p in sig.parameters.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"{method} has no hyper-parameter(s) {unknown}; it takes: {', '.join(known)}")
    return factory(**checked_arguments(factory, dict(params), f"{method} hyper-parameter"))


def check_method(method: str, checkpoint: str | Path | None = None) -> None:
    """Raise ``ValueError`` for an unknown method, or a checkpoint given to a baseline."""
    if method not in ADAPTERS and method not in BASELINES:
        raise ValueError(f"unknown few-shot method {method!r}; choose one of: {', '.join(method_names())}")
    if method in BASELINES and checkpoint is not None:
        raise ValueError(f"{method} works on fingerprints: it takes no checkpoint")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ValueError(f"{checkpoint}: no such checkpoint file")


def build_adapter(method: str, hparams: Mapping[str, Any] | None = None, seed: int | None = None) -> Adapter:
    """``ADAPTERS.get(method)(**hparams)``, with ``seed`` unless ``hparams`` sets one."""
    check_method(method)
    if method in BASELINES:
        raise ValueError(f"{method!r} is a fingerprint baseline: it has no encoder to meta-train")
    params = dict(hparams or {})
    if seed is not None:
        params.setdefault("seed", int(seed))
    return _construct(ADAPTERS.get(method), params, method)


def build_baseline(method: str, hparams: Mapping[str, Any] | None = None, seed: int | None = None) -> FitPredict:
    """A fingerprint baseline of :data:`BASELINES` as a ``fit_predict`` callback."""
    check_method(method)
    if method not in BASELINES:
        raise ValueError(f"{method!r} is not a fingerprint baseline (those are: {', '.join(BASELINES.names())})")
    params = dict(hparams or {})
    if seed is not None:
        params.setdefault("seed", int(seed))
    return _construct(BASELINES.get(method), params, method)


_ENCODER_ALIASES = {"name": "encoder", "hidden": "hidden_dim", "layers": "num_layers"}


def encoder_config(cfg: ModelConfig | Mapping[str, Any] | None = None) -> ModelConfig:
    """A :class:`ModelConfig` from ``cfg`` (fields of ModelConfig; ``name``/``hidden``/``layers``
    are accepted for ``encoder``/``hidden_dim``/``num_layers``). Unlike supervised training,
    dropout defaults to 0 (inner loops and prototypes are computed in train/eval modes that
    should not differ by dropout noise); the default encoder is GIN 5 × 300."""
    if isinstance(cfg, ModelConfig):
        return cfg
    d = {_ENCODER_ALIASES.get(k, k): v for k, v in dict(cfg or {}).items()}
    d.setdefault("dropout", 0.0)
    return from_dict(ModelConfig, d)


def _new_encoder(model_cfg: ModelConfig, featurizer: Featurizer, seed: int) -> nn.Module:
    from moladapt.training import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build_model(model_cfg, featurizer, 1).encoder


# --- meta-training -----------------------------------------------------------------------


@dataclass
class MetaTrained:
    """A meta-trained method: ``adapter`` (with ``head_`` where it has one) and ``encoder``."""

    method: str
    adapter: Adapter
    encoder: nn.Module
    featurizer: Featurizer
    model_config: ModelConfig
    info: dict[str, Any]
    history: list[float] = field(default_factory=list)
    checkpoint: Path | None = None
    init_record: dict[str, Any] | None = None  # the checkpoint it started from (moladapt.provenance)


def meta_train(
    method: str,
    train_tasks: Sequence[Task] | str,
    encoder_cfg: ModelConfig | Mapping[str, Any] | None = None,
    featurizer: str | Featurizer = "basic",
    hparams: Mapping[str, Any] | None = None,
    init: str | Path | None = None,
    output: str | Path | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    tasks_name: str | None = None,
    valid_tasks: Sequence[Task] | str | None = None,
    validate_every: int = 50,
    validation_support: Sequence[int] = (16,),
    validation_draws: int = 1,
    checkpoint_every: int = 100,
) -> MetaTrained:
    """Meta-train ``method`` on ``train_tasks`` and (with ``output``) save it.

    Args:
        method: an adapter name (``maml``, ``fomaml``, ``anil``, ``protonet``, ...).
        train_tasks: tasks, or a :func:`resolve_tasks` spec such as ``"fsmol-train:500"``.
        encoder_cfg: the encoder to build (see :func:`encoder_config`). With ``init``, only the
            keys it gives count: an architecture key that differs from the checkpoint's is an
            error, and its ``dropout`` (default 0, as without ``init``) replaces the checkpoint's.
        featurizer: featurizer name (must match ``init``'s).
        hparams: the adapter's hyper-parameters (``meta_steps``, ``inner_lr``, ...).
        init: start from this checkpoint's encoder (``moladapt train``, pretraining, or a
            previous meta-training; the latter's head too, when the method is the same).
        output: directory for ``model.pt``, ``meta.json`` and ``config.yaml``.
        seed: encoder initialisation and the adapter's seed (episodes, head), unless
            ``hparams`` sets ``seed``.
        tasks_name: how ``train_tasks`` were chosen (e.g. their spec), for the records.
        valid_tasks: held-out tasks (or a spec such as ``"fsmol-valid"``) for model selection:
            every ``validate_every`` outer steps the method is scored on ``validation_draws``
            episodes per task and support size in ``validation_support``, and the best state
            is kept (:class:`~moladapt.adapt.base.MetaValidation`). ``None``: keep the last state.
        checkpoint_every: with ``output``, save the training state to ``output/resume.pt``
            every this many outer steps; a later call with the same configuration and output
            continues from it (after a kill, or to train further with more ``meta_steps``).
            0: no resume file.
    """

    adapter = build_adapter(method, hparams, seed)
    tasks_spec = train_tasks if isinstance(train_tasks, str) else tasks_name
    tasks = resolve_tasks(train_tasks) if isinstance(train_tasks, str) else list(train_tasks)
    feat = get_featurizer(featurizer) if isinstance(featurizer, str) else featurizer
    warm_head = False
    init_record = None
    if init is not None:
        from moladapt.models.fingerprint import graph_part
        from moladapt.provenance import load_init

        loaded, init_record = load_init(init, feat)
        model_cfg = dataclasses.replace(loaded.model_config, head_hidden_dims=())
        given = model_config_dict(encoder_cfg) if isinstance(encoder_cfg, ModelConfig) else dict(encoder_cfg or {})
        asked = {_ENCODER_ALIASES.get(k, k): v for k, v in given.items()}
        arch = ("encoder", "hidden_dim", "num_layers", "jk", "pooling", "fingerprint_bits", "fingerprint_counts")
        diff = {a: (asked[a], getattr(model_cfg, a)) for a in arch
                if a in asked and asked[a] != getattr(model_cfg, a)}
        if diff:
            raise ValueError(f"init checkpoint {init} holds a different encoder: "
                             + ", ".join(f"{a}: asked {w}, checkpoint {c}" for a, (w, c) in diff.items()))
        encoder = loaded.model.encoder
        # dropout is not architecture: meta-training runs without it unless asked (see
        # encoder_config), also from a supervised checkpoint trained with 0.5
        model_cfg = dataclasses.replace(model_cfg, dropout=float(asked.get("dropout", 0.0)))
        gnn = graph_part(encoder)
        gnn.dropout = model_cfg.dropout
        if isinstance(getattr(gnn, "hparams", None), dict):
            gnn.hparams["dropout"] = model_cfg.dropout
        meta = loaded.extra.get("meta") or {}
        if meta.get("method") == method and meta.get("has_head") and hasattr(adapter, "head_"):
            adapter.head_ = loaded.model.head  # type: ignore[attr-defined]
            warm_head = True
    else:
        model_cfg = dataclasses.replace(encoder_config(encoder_cfg), head_hidden_dims=())
        encoder = _new_encoder(model_cfg, feat, seed)
    encoder.to(device)
    if getattr(adapter, "head_", None) is not None:
        adapter.head_.to(device)  # type: ignore[attr-defined]
    validation = None
    if valid_tasks is not None:
        held_out = resolve_tasks(valid_tasks) if isinstance(valid_tasks, str) else list(valid_tasks)
        validation = MetaValidation(held_out, every=validate_every, support_sizes=tuple(validation_support),
                                    draws=validation_draws, seed=int(seed))
    checkpoint = None
    if output is not None and checkpoint_every > 0:
        checkpoint = MetaCheckpoint(
            Path(output) / "resume.pt", every=checkpoint_every,
            identity={"method": method, "encoder": model_config_dict(model_cfg),
                      "featurizer": [feat.name, feat.version], "tasks": tasks_spec,
                      "init": None if init is None else str(init), "seed": int(seed)})
    start = time.perf_counter()
    adapter.meta_train(encoder, tasks, TaskFeatureCache(feat), validation=validation, checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    history = [float(v) for v in getattr(adapter, "history_", [])]
    tail = history[-max(1, len(history) // 10):] if history else []
    info = {
        "method": method,
        "params": to_plain(adapter.get_params()),
        "has_head": getattr(adapter, "head_", None) is not None,
        "tasks": tasks_spec,
        "n_train_tasks": len(tasks) - len(getattr(adapter, "skipped_tasks_", {})),
        "skipped_train_tasks": len(getattr(adapter, "skipped_tasks_", {})),
        "skipped_examples": dict(list(getattr(adapter, "skipped_tasks_", {}).items())[:5]),
        "init": None if init is None else str(init),
        "warm_start_head": warm_head,
        "seed": int(seed),
        "seconds": seconds,  # of this call: after a resume, for the steps after resumed_from_step
        "resumed_from_step": int(getattr(adapter, "resumed_from_step_", 0)),
        "final_loss": float(np.mean(tail)) if tail else None,
        "validation": None if validation is None else {
            "tasks": valid_tasks if isinstance(valid_tasks, str) else None,
            "n_tasks": len(validation.tasks), "every": validation.every,
            "support_sizes": list(validation.support_sizes),
            "draws": validation.draws, "best_step": getattr(adapter, "best_step_", None),
            "seconds": float(getattr(adapter, "validation_seconds_", 0.0)),
            "scores": [[int(step), None if score != score else float(score)]  # NaN: no task fit k
                       for step, score in getattr(adapter, "validation_", [])],
        },
    }
    result = MetaTrained(method, adapter, encoder, feat, model_cfg, info, history, init_record=init_record)
    if output is not None:
        result.checkpoint = save_meta_trained(output, result)
    return result


def save_meta_trained(output: str | Path, result: MetaTrained) -> Path:
    """Write ``model.pt``, ``meta.json`` and ``config.yaml`` into ``output``; returns model.pt."""
    from moladapt.training import save_checkpoint

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    encoder = result.encoder
    head = getattr(result.adapter, "head_", None)
    if head is None:  # e.g. ProtoNet: a placeholder so the file is a regular 1-task model
        head = new_head(int(encoder.out_dim), encoder, int(result.info["seed"]))  # type: ignore[arg-type]
    model = copy.deepcopy(MolecularModel(encoder, head)).cpu()  # type: ignore[arg-type]
    path = out / "model.pt"
    save_checkpoint(path, model, result.featurizer, result.model_config, [CHECKPOINT_TASK],
                    CLASSIFICATION, extra={"meta": result.info, "init": result.init_record})
    write_json(out / "meta.json", {**result.info, "code": code_revision(), "history": result.history})
    config = {"command": "meta-train", **{k: result.info[k] for k in ("method", "tasks", "n_train_tasks", "init", "seed")},
              "featurizer": result.featurizer.name, "encoder": model_config_dict(result.model_config),
              "params": result.info["params"], "validation": _without_scores(result.info.get("validation")),
              "moladapt_version": _version()}
    atomic_write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    return path


def _without_scores(validation: dict[str, Any] | None) -> dict[str, Any] | None:
    """The validation settings (config.yaml holds settings; meta.json holds the scores too)."""
    return None if validation is None else {k: v for k, v in validation.items() if k not in ("scores", "seconds")}


@dataclass
class LoadedMethod:
    """An adapter ready for few-shot evaluation from a checkpoint."""

    adapter: Adapter
    encoder: nn.Module
    featurizer: Featurizer
    model_config: ModelConfig
    meta: dict[str, Any]
    used_meta_head: bool


def load_meta_checkpoint(
    path: str | Path, method: str | None = None, hparams: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> LoadedMethod:
    """An adapter + encoder from a checkpoint.

    ``method`` defaults to the one the checkpoint was meta-trained with. When it is that
    method, the adapter starts from the checkpoint's hyper-parameters (``hparams``
    override them) and its meta-learned head; otherwise (e.g. ``finetune`` on a
    meta-trained or pretrained encoder) only the encoder is used.
    """
    from moladapt.training import load_checkpoint

    loaded = load_checkpoint(path)
    meta = dict(loaded.extra.get("meta") or {})
    method = method or meta.get("method")
    if method is None:
        raise ValueError(f"{path} was not written by meta-training: say which method to evaluate")
    same = meta.get("method") == method
    params = dict(meta.get("params") or {}) if same else {}
    params.update(hparams or {})
    adapter = build_adapter(method, params, seed)
    used_head = bool(same and meta.get("has_head") and hasattr(adapter, "head_"))
    if used_head:
        adapter.head_ = loaded.model.head  # type: ignore[attr-defined]
    return LoadedMethod(adapter, loaded.model.encoder, loaded.featurizer, loaded.model_config, meta, used_head)


# --- the few-shot protocol ---------------------------------------------------------------


@dataclass
class FewShotRun:
    """What :func:`few_shot` did: its rows, their summary, and where they were written."""

    results: pd.DataFrame
    summary: pd.DataFrame
    config: dict[str, Any]
    output: Path | None = None
    plot: Path | None = None
    n_new: int = 0


def check_protocol(support_sizes: Sequence[int], draws: int) -> list[int]:
    """The sorted distinct support sizes, after checking them and ``draws`` (before any
    task is loaded)."""
    ks = sorted({int(k) for k in support_sizes})
    if not ks or ks[0] < 2:
        raise ValueError(f"support sizes must be integers >= 2 (a molecule of each class), "
                         f"got {list(support_sizes)}")
    if int(draws) < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    return ks


def few_shot(
    method: str,
    tasks: Sequence[Task] | str,
    checkpoint: str | Path | None = None,
    support_sizes: Sequence[int] = DEFAULT_SUPPORT_SIZES,
    draws: int = 10,
    output: str | Path | None = None,
    seed: int = 0,
    featurizer: str | Featurizer = "basic",
    hparams: Mapping[str, Any] | None = None,
    encoder_cfg: ModelConfig | Mapping[str, Any] | None = None,
    label: str | None = None,
    plot: bool = True,
    device: str | torch.device = "cpu",
    progress: Callable[[dict[str, Any]], None] | None = None,
    tasks_name: str | None = None,
) -> FewShotRun:
    """Evaluate one method with the few-shot protocol (resumable with ``output``).

    Args:
        method: an adapter (``protonet``, ``maml``, ``finetune``, ...) or a baseline
            (``rf-ecfp``, ``knn-ecfp``).
        tasks: tasks or a :func:`resolve_tasks` spec (``"fsmol-test"``, ``"tox21"``).
        checkpoint: the encoder (and meta-learned head / hyper-parameters, see
            :func:`load_meta_checkpoint`); ``None``: a freshly initialised encoder
            (``encoder_cfg``, seeded by ``seed``). Baselines take none.
        support_sizes, draws, seed: the protocol's k values, episodes per (task, k), and
            episode seed (also the seed of a baseline or of a method without checkpoint).
        output: directory for ``results.csv`` (appended row by row; a rerun computes only the
            missing rows), ``config.yaml``, ``summary.csv``, ``metrics.json`` and
            ``delta_auprc_vs_k.png``. config.yaml, the summary, metrics.json, the plot and the returned rows are this call's grid
            (tasks × k × draws); results.csv also keeps the rows of earlier calls with other
            k, draws or tasks, so ``few-shot-plot`` on it shows all of them.
            Resuming into a directory written with another method, label, checkpoint, seed,
            featurizer, encoder or hyper-parameters is refused.
        featurizer: graph featurizer when there is no checkpoint.
        hparams: hyper-parameters of the method (over the checkpoint's).
        label: the ``method`` column of the results (default: ``method``).
        progress: called with each newly computed result row.
        tasks_name: how ``tasks`` were chosen (e.g. their spec), for config.yaml.
    """
    check_method(method, checkpoint)
    ks = check_protocol(support_sizes, draws)
    tasks_spec = tasks if isinstance(tasks, str) else tasks_name
    task_list = resolve_tasks(tasks) if isinstance(tasks, str) else list(tasks)
    label = label or method
    used_head = False
    model_cfg: ModelConfig | None = None
    if method in BASELINES:
        fit_predict = build_baseline(method, hparams, seed)
        params = fit_predict.get_params()  # type: ignore[attr-defined]
        feat = get_featurizer("basic")  # only to parse the molecules; the baseline reads SMILES
    else:
        if checkpoint is not None:
            loaded = load_meta_checkpoint(checkpoint, method, hparams, seed)
            adapter, encoder, feat = loaded.adapter, loaded.encoder, loaded.featurizer
            model_cfg, used_head = loaded.model_config, loaded.used_meta_head
        else:
            feat = get_featurizer(featurizer) if isinstance(featurizer, str) else featurizer
            model_cfg = dataclasses.replace(encoder_config(encoder_cfg), head_hidden_dims=())
            encoder = _new_encoder(model_cfg, feat, seed)
            adapter = build_adapter(method, hparams, seed)
        encoder.to(device)
        if getattr(adapter, "head_", None) is not None:
            adapter.head_.to(device)  # type: ignore[attr-defined]
        fit_predict = adapter.fit_predict(encoder)
        params = adapter.get_params()
    from moladapt.training import model_sha256

    config = _plain_yaml({
        "command": "few-shot",
        "method": method,
        "label": label,
        "tasks": tasks_spec if tasks_spec is not None else f"{len(task_list)} tasks given",
        "task_groups": sorted({t.group for t in task_list}),
        "n_tasks": len(task_list),
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "checkpoint_sha256": None if checkpoint is None else "sha256:" + sha256_file(checkpoint),
        "model_sha256": None if checkpoint is None else model_sha256(checkpoint),
        "featurizer": None if method in BASELINES else feat.name,
        "encoder": None if model_cfg is None else model_config_dict(model_cfg),
        "params": params,
        "meta_learned_head": used_head,
        "support_sizes": ks,
        "draws": int(draws),
        "seed": int(seed),
        "moladapt_version": _version(),
    })
    out = None if output is None else Path(output)
    results_path = None
    if out is not None:
        _check_resume(out / "config.yaml", config)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        results_path = out / "results.csv"
    n_new = 0

    def on_row(row: dict[str, Any]) -> None:
        nonlocal n_new
        n_new += 1
        if progress is not None:
            progress(row)

    results = evaluate_few_shot(
        task_list, fit_predict, label, ks, int(draws), featurizer=TaskFeatureCache(feat),
        results_path=results_path, seed=int(seed), progress=on_row,
    )
    summary = summarize_few_shot(results)
    run = FewShotRun(results, summary, config, out, n_new=n_new)
    if out is not None:
        atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
        write_json(out / "metrics.json", few_shot_metrics(results, summary))
        if plot and (results["status"] == "ok").any():
            run.plot = plot_delta_auprc_vs_k(results, out / "delta_auprc_vs_k.png")
    return run


def _check_resume(config_path: Path, config: dict[str, Any]) -> None:
    if not config_path.exists():
        return
    old = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    diffs = []
    for key in _RUN_IDENTITY:
        if key == "model_sha256" and key not in old:  # written before model digests: the file decides
            key = "checkpoint_sha256"
        before, now = old.get(key), config.get(key)
        if before == now:
            continue
        if isinstance(before, dict) and isinstance(now, dict):
            diffs += [f"{key}.{k}: {before.get(k)!r} there, {now.get(k)!r} now"
                      for k in dict.fromkeys([*before, *now]) if before.get(k) != now.get(k)]
        else:
            diffs.append(f"{key}: {before!r} there, {now!r} now")
    if diffs:
        shown = "; ".join(diffs)
        raise ValueError(
            f"{config_path.parent} holds results of a different run ({shown}); "
            "use another output directory (or delete that one) to start afresh"
        )


def _plain_yaml(obj: Any) -> Any:
    """What ``obj`` reads back as from YAML (tuples → lists), so configs compare equal."""
    return yaml.safe_load(yaml.safe_dump(to_plain(obj), sort_keys=False, allow_unicode=True))


def _version() -> str:
    import moladapt

    return moladapt.__version__


# --- summaries and the plot --------------------------------------------------------------


def few_shot_metrics(results: pd.DataFrame, summary: pd.DataFrame) -> dict[str, Any]:
    """``metrics.json`` of a few-shot run: the summary (one record per method and k: means
    over tasks with CIs) and, per method, task and k, the task's mean over its draws."""
    ok = results[results["status"] == "ok"]
    per_task: dict[str, Any] = {}
    for (method, task, k), part in ok.groupby(["method", "task_id", "k"], sort=False):
        per_task.setdefault(str(method), {}).setdefault(str(task), {})[str(int(k))] = {
            m: float(part[m].mean()) for m in SUMMARY_METRICS}
    return {"summary": summary.to_dict(orient="records"), "per_task": per_task,
            "n_episodes_skipped": int((results["status"] != "ok").sum())}


def summarize_few_shot(
    results: pd.DataFrame, metrics: Sequence[str] = SUMMARY_METRICS, ci: float = 0.95,
    n_boot: int = 10000, seed: int = 0,
) -> pd.DataFrame:
    """One row per (method, k): task-level means and bootstrap CIs of ``metrics``.

    A task's value is its mean over the draws that ran (``status == "ok"``); the row holds
    ``n_tasks`` (tasks with at least one episode), ``n_tasks_skipped`` (tasks the k was too
    large for), ``n_episodes``, ``draws_per_task`` (the most draws of a task), and for each
    metric ``<metric>_mean`` (mean over tasks) and ``<metric>_ci_low``/``_ci_high``: a
    percentile bootstrap CI (level ``ci``) over tasks, NaN with fewer than 3 tasks.
    Methods keep their order of appearance; k ascends.
    """
    columns = ["method", "k", "n_tasks", "n_tasks_skipped", "n_episodes", "draws_per_task"]
    for m in metrics:
        columns += [f"{m}_mean", f"{m}_ci_low", f"{m}_ci_high"]
    rows = []
    methods = list(pd.unique(results["method"]))
    for method in methods:
        part_m = results[results["method"] == method]
        for k in sorted(pd.unique(part_m["k"])):
            part = part_m[part_m["k"] == k]
            ok = part[part["status"] == "ok"]
            per_task = ok.groupby("task_id")[list(metrics)].mean()
            row: dict[str, Any] = {
                "method": method, "k": int(k), "n_tasks": len(per_task),
                "n_tasks_skipped": int(part["task_id"].nunique() - len(per_task)),
                "n_episodes": len(ok),
                "draws_per_task": int(ok.groupby("task_id").size().max()) if len(ok) else 0,
            }
            for m in metrics:
                values = per_task[m].dropna().to_numpy(dtype=np.float64)
                row[f"{m}_mean"] = float(values.mean()) if values.size else math.nan
                row[f"{m}_ci_low"], row[f"{m}_ci_high"] = bootstrap_mean_ci(values, ci, n_boot, seed)
            rows.append(row)
    return pd.DataFrame(rows, columns=columns)


ResultsLike = pd.DataFrame | str | Path


def _combine_results(results: ResultsLike | Sequence[ResultsLike]) -> pd.DataFrame:
    """Concatenate result tables; a method name found in several inputs gets the input's name."""
    items = [results] if isinstance(results, (pd.DataFrame, str, Path)) else list(results)
    if not items:
        raise ValueError("no results given")
    frames, names = [], []
    for i, item in enumerate(items):
        if isinstance(item, pd.DataFrame):
            frames.append(item.copy())
            names.append(f"#{i + 1}")
        else:
            path = Path(item)
            if not path.exists():
                raise FileNotFoundError(f"results file {path} does not exist")
            frames.append(load_results(path))
            names.append(path.parent.name if path.name == "results.csv" and path.parent.name else path.stem)
    if len(set(names)) < len(names):  # e.g. two runs' anil/results.csv: number them
        names = [f"{name} #{i + 1}" for i, name in enumerate(names)]
    seen: dict[str, int] = {}
    for frame in frames:
        for m in pd.unique(frame["method"]):
            seen[m] = seen.get(m, 0) + 1
    for frame, name in zip(frames, names, strict=True):
        frame["method"] = [f"{m} [{name}]" if seen[m] > 1 else m for m in frame["method"]]
    return pd.concat(frames, ignore_index=True)


def _check_metric(metric: str) -> None:
    if metric not in SUMMARY_METRICS:
        raise ValueError(f"metric must be one of {', '.join(SUMMARY_METRICS)}, got {metric!r}")


def compare_few_shot(
    results: ResultsLike | Sequence[ResultsLike],
    baseline: str | None = None,
    metric: str = "delta_auprc",
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Paired comparison of few-shot methods, per support size k, on the episodes they share.

    Only the (task, k, draw) episodes that every method in ``results`` scored are used, so
    all methods are read on the same support and query sets. The unit is the task (its draws
    are not independent): a task's value at k is its mean ``metric`` over those draws. Each
    method is compared with ``baseline`` (every pair when ``None``) by
    :func:`moladapt.evaluate.statistics.paired_comparisons` within each k: Wilcoxon
    signed-rank, bootstrap CI of the mean difference over tasks, Holm over every row (all
    k and pairs, one family).

    Returns:
        One row per (k, method, baseline): ``k`` and the columns of
        :data:`moladapt.evaluate.statistics.COMPARISON_COLUMNS`, ``n_pairs`` being tasks.
    """
    _check_metric(metric)
    frame = _combine_results(results)
    methods = list(pd.unique(frame["method"]))
    if len(methods) < 2:
        raise ValueError(f"a comparison needs at least two methods; the results hold {methods}")
    ok = frame[(frame["status"] == "ok") & frame[metric].notna()]
    cell = ["task_id", "k", "draw"]
    shared = ok.groupby(cell)["method"].transform("nunique") == len(methods)
    ok = ok[shared]
    if ok.empty:
        raise ValueError("the methods share no scored episode (other tasks, k or draws)")
    per_task = ok.groupby(["method", "k", "task_id"], as_index=False)[metric].mean()
    return paired_comparisons(per_task, metric, baseline=baseline, unit_cols=["task_id"], by="k",
                              alpha=alpha, seed=seed)


def _span(values: Sequence[int]) -> str:
    values = sorted(set(int(v) for v in values))
    if not values:
        return "0"
    return str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"


def plot_delta_auprc_vs_k(
    results: ResultsLike | Sequence[ResultsLike],
    path: str | Path,
    metric: str = "delta_auprc",
    title: str | None = None,
    ci: float = 0.95,
    n_boot: int = 10000,
    seed: int = 0,
) -> Path:
    """Plot mean ``metric`` (default ΔAUPRC) against support size k, one line per method.

    ``results``: result tables (:func:`moladapt.evaluate.protocol.load_results` frames) or
    CSV paths, several allowed. Bands: percentile bootstrap CI (level ``ci``) over tasks of
    the task-level means. x: k on a log2 axis with the k values as ticks. The title says how
    many tasks and draws each point averages (a range where k or methods differ). Writes a
    PNG to ``path`` and returns it.
    """
    from matplotlib.figure import Figure

    _check_metric(metric)
    frame = _combine_results(results)
    summary = summarize_few_shot(frame, (metric,), ci, n_boot, seed)
    summary = summary[summary["n_tasks"] > 0]
    if summary.empty:
        raise ValueError("no successful episodes to plot (every row was skipped)")
    name = _METRIC_LABELS.get(metric, metric)
    fig = Figure(figsize=(7.0, 4.6))
    ax = fig.add_subplot()
    for method in pd.unique(summary["method"]):
        part = summary[summary["method"] == method].sort_values("k")
        ks = part["k"].to_numpy(dtype=float)
        (line,) = ax.plot(ks, part[f"{metric}_mean"], marker="o", ms=4, label=str(method))
        ax.fill_between(ks, part[f"{metric}_ci_low"].to_numpy(dtype=float),
                        part[f"{metric}_ci_high"].to_numpy(dtype=float),
                        color=line.get_color(), alpha=0.2, lw=0)
    if metric == "delta_auprc":
        ax.axhline(0.0, color="grey", ls="--", lw=1, label="random ranking (ΔAUPRC = 0)")
    elif metric == "roc_auc":
        ax.axhline(0.5, color="grey", ls="--", lw=1, label="random ranking (ROC-AUC = 0.5)")
    ks_all = sorted(set(summary["k"].astype(int)))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks_all, [str(k) for k in ks_all])
    ax.minorticks_off()
    if len(ks_all) == 1:
        ax.set_xlim(ks_all[0] / 1.5, ks_all[0] * 1.5)
    ax.set_xlabel("support size k (molecules; log2 scale)")
    ax.set_ylabel(f"mean {name} over tasks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title is None:
        groups = ", ".join(sorted(g for g in pd.unique(frame["group"].astype(str)) if g and g != "nan")) or "few-shot tasks"
        varying = summary["n_tasks"].nunique() > 1
        tasks_text = f"{_span(summary['n_tasks'])} tasks" + (" (tasks too small for a k are left out)" if varying else "")
        draws = _span(summary["draws_per_task"])
        title = (f"{groups}: mean {name} vs support size\n{tasks_text}, {draws} "
                 f"draw{'' if draws == '1' else 's'} per task and k; bands: {ci:.0%} bootstrap CI over tasks")
    ax.set_title(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path

