"""End-to-end runs of adapting with auxiliary tasks: config → data → split → fit → files.

Two methods (Dey & Ning, J Cheminform 16:85, 2024), chosen by :attr:`AuxConfig.method`:

* ``"auxiliary"``: :class:`~moladapt.adapt.auxiliary.AuxiliaryFineTuner`, the target
  property(ies) trained jointly with self-supervised auxiliary objectives, the encoder's
  per-task gradients merged by a gradient combiner (``sum``, ``gcs``, ``gns``, ``pcgrad``,
  ``rcgrad``). With no auxiliary objectives it is plain fine-tuning in the same loop (the
  fair baseline of a paired comparison).
* ``"bilevel"``: :class:`~moladapt.adapt.bilevel.BiLevelTaskWeighting`, the weights of the
  auxiliary objectives and/or supervised *source* columns of the same table learned by
  bi-level optimisation against the target's validation loss (BLO; with ``combiner="rcgrad"``
  BLO+RCGrad). One target column.

:func:`run_auxiliary` follows :func:`moladapt.experiment.run_training`: ``config.yaml``
(sections ``data``, ``model``, ``train``, ``aux``) is written first, then ``metrics.json``
(test / valid metrics, the gradient-log summary, for bi-level the learned weights history)
and ``model.pt``. ``train.init`` starts the encoder from a (pretrained) checkpoint.

The study runner ``"auxiliary"`` (registered in :data:`moladapt.study.executors.RUNNERS`
when this module is imported) takes the same four sections.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from moladapt.config import RunConfig, from_dict, split_list, to_plain
from moladapt.study.executors import RUNNERS, Runner

__all__ = [
    "AUX_OBJECTIVES",
    "METHODS",
    "AuxConfig",
    "AuxRunResult",
    "flat_metrics",
    "load_configs",
    "resolve_columns",
    "run_auxiliary",
    "save_configs",
]

METHODS = ("auxiliary", "bilevel")
AUX_OBJECTIVES = ("attribute_masking", "edge_prediction", "context_prediction", "infomax", "graphcl")


@dataclass(frozen=True)
class AuxConfig:
    """How to adapt with auxiliary tasks (the ``aux`` section of a run's config).

    Shared:
        method: ``"auxiliary"`` (joint fine-tuning with gradient surgery) or ``"bilevel"``. A
            study's ``aux.method`` may also be a label of :func:`method_changes` (``finetune``,
            ``rcgrad``, ``blo+rcgrad`` ...), which sets the fields that label implies.
        aux_objectives: self-supervised auxiliary tasks, names from :data:`AUX_OBJECTIVES`
            (``()``: none; for ``auxiliary`` that is plain fine-tuning).
        combiner: gradient combiner (``sum``, ``gcs``, ``gns``, ``pcgrad``, ``rcgrad``);
            ``None``: ``sum`` for ``auxiliary``, the plain weighted sum (BLO) for ``bilevel``.
        combiner_options: keyword hyper-parameters of the combiner.
        objective_options: constructor options of the auxiliary objectives,
            ``{objective: {option: value}}`` (e.g. ``{attribute_masking: {mask_rate: 0.25}}``);
            left out of :meth:`to_dict` when unset, so earlier configs keep their keys.
        target: the target column (default: every column, trained as one target task; for
            ``bilevel`` with ``source_tasks``, the first column).

    ``auxiliary`` only:
        task_weights: fixed weights of the auxiliary objectives (one each; ``None``: 1).
        pos_weight: ``"balanced"`` weights positives by ``n_neg / n_pos`` (classification).
        grad_clip: clip the global gradient norm.
        max_steps: stop after this many optimiser steps.

    ``bilevel`` only:
        source_tasks: supervised source columns of the same table, or ``("all",)`` (every
            column but the target).
        weighting: ``"sigmoid"`` or ``"softmax"``; hypergradient: ``"neumann"``,
            ``"unrolled"`` or ``"exact"``.
        init_weights: initial weight of every source task (default: 0.5 / uniform).
        outer_steps: weight updates (``None``: as many as make ``train.epochs`` epochs of
            inner steps); inner_steps: model steps per weight update.
        outer_lr, inner_optimizer, neumann_terms, neumann_alpha, valid_batch_size,
        select_best: see :class:`~moladapt.adapt.bilevel.BiLevelTaskWeighting`.

    The learning rate, batch size, epochs, patience, weight decay and seed come from the
    ``train`` section (the encoder learning rate is ``lr × encoder_lr_scale`` for
    ``auxiliary``; ``bilevel`` uses one learning rate, and counts ``patience`` epochs as the
    outer steps they span).
    """

    method: str = "auxiliary"
    aux_objectives: tuple[str, ...] = ("attribute_masking", "edge_prediction")
    combiner: str | None = "rcgrad"
    combiner_options: dict[str, Any] | None = None
    objective_options: dict[str, dict[str, Any]] | None = None
    target: str | None = None
    task_weights: tuple[float, ...] | None = None
    pos_weight: str | None = None
    grad_clip: float | None = None
    max_steps: int | None = None
    source_tasks: tuple[str, ...] = ()
    weighting: str = "sigmoid"
    hypergradient: str = "neumann"
    init_weights: float | None = None
    outer_steps: int | None = None
    inner_steps: int = 10
    outer_lr: float = 0.1
    inner_optimizer: str = "adam"
    neumann_terms: int = 5
    neumann_alpha: float | None = None
    valid_batch_size: int | None = None
    select_best: bool = True

    def __post_init__(self) -> None:
        for name in ("aux_objectives", "source_tasks"):
            value = getattr(self, name)
            if isinstance(value, str) or value is None:
                value = split_list(value) or ()
            object.__setattr__(self, name, tuple(str(v) for v in value))
        if self.task_weights is not None:
            object.__setattr__(self, "task_weights", tuple(float(w) for w in self.task_weights))
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if len(set(self.aux_objectives)) != len(self.aux_objectives):
            raise ValueError(f"aux_objectives lists a name twice: {list(self.aux_objectives)}")
        if self.method == "auxiliary" and self.source_tasks:
            raise ValueError("supervised source_tasks need method 'bilevel' (--bilevel); "
                             "method 'auxiliary' takes auxiliary objectives only")
        if self.method == "bilevel" and not (self.source_tasks or self.aux_objectives):
            raise ValueError("bi-level weighting (method 'bilevel'; CLI --bilevel or --method blo) needs "
                             "tasks to weight: auxiliary objectives (aux_objectives, --aux) and/or "
                             "supervised source columns (source_tasks, --sources)")
        if "all" in self.source_tasks and len(self.source_tasks) > 1:
            raise ValueError("source_tasks: give 'all' alone or a list of columns")
        if self.task_weights is not None and len(self.task_weights) != len(self.aux_objectives):
            raise ValueError(f"{len(self.task_weights)} task_weights for "
                             f"{len(self.aux_objectives)} aux_objectives")
        if self.inner_steps < 1 or (self.outer_steps is not None and self.outer_steps < 1):
            raise ValueError("inner_steps and outer_steps must be at least 1")

    def validate(self) -> None:
        """Registered names exist (imports the registries: torch)."""
        from moladapt.adapt.bilevel import HYPERGRADIENTS, WEIGHTINGS
        from moladapt.adapt.gradients import COMBINERS
        from moladapt.pretrain.objectives import OBJECTIVES

        for name in self.aux_objectives:
            OBJECTIVES.get(name)
            if OBJECTIVES.get(name).needs_labels:
                raise ValueError(f"objective {name!r} needs labels; it cannot be an auxiliary task "
                                 "(give supervised columns as source_tasks with method 'bilevel')")
        self.parsed_objective_options()
        if self.combiner is not None:
            COMBINERS.get(self.combiner)
        if self.method == "bilevel":
            if self.weighting not in WEIGHTINGS:
                raise ValueError(f"unknown weighting {self.weighting!r}; choose one of: {', '.join(WEIGHTINGS)}")
            if self.hypergradient not in HYPERGRADIENTS:
                raise ValueError(f"unknown hypergradient {self.hypergradient!r}; "
                                 f"choose one of: {', '.join(HYPERGRADIENTS)}")
            if self.inner_optimizer not in ("adam", "sgd"):
                raise ValueError(f"unknown inner_optimizer {self.inner_optimizer!r}; choose 'adam' or 'sgd'")
            if not self.outer_lr >= 0:
                raise ValueError(f"aux.outer_lr (--outer-lr) must be >= 0, got {self.outer_lr}")

    def parsed_objective_options(self) -> dict[str, dict[str, Any]]:
        """``objective_options`` checked against ``aux_objectives`` and their constructors,
        keyed by registered name (imports the registries: torch)."""
        from moladapt.pretrain.objectives import parse_objective_options

        try:
            return parse_objective_options(self.objective_options, self.aux_objectives)
        except ValueError as exc:
            raise ValueError(f"aux.objective_options: {exc}") from None

    def aux_specs(self) -> list[Any]:
        """The auxiliary objectives as the adapters take them: ``name`` or ``(name, options)``."""
        from moladapt.pretrain.objectives import with_options

        return with_options(self.aux_objectives, self.parsed_objective_options())

    def to_dict(self) -> dict[str, Any]:
        out = to_plain(asdict(self))
        if not out.get("objective_options"):
            del out["objective_options"]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> AuxConfig:
        return from_dict(cls, dict(d or {}))

    def label(self) -> str:
        """A short name: ``finetune``, ``rcgrad``, ``blo``, ``blo+rcgrad`` ..."""
        if self.method == "bilevel":
            return "blo" if self.combiner in (None, "sum") else f"blo+{self.combiner}"
        return "finetune" if not self.aux_objectives else (self.combiner or "sum")


ADAPT_METHODS = ("finetune", "aux", "sum", "gcs", "gns", "pcgrad", "rcgrad", "blo", "blo+<combiner>")


def method_changes(label: str) -> dict[str, Any]:
    """The :class:`AuxConfig` fields that a short method name sets: the inverse of
    :meth:`AuxConfig.label`, plus ``aux`` (auxiliary fine-tuning with the configured combiner).

    ``finetune`` → no auxiliary tasks; ``sum`` / ``gcs`` / ``gns`` / ``pcgrad`` / ``rcgrad`` →
    auxiliary fine-tuning with that combiner; ``blo`` → bi-level weights with the plain weighted
    sum; ``blo+rcgrad`` (any ``blo+<combiner>``) → bi-level weights with that combiner in the
    inner loop (Dey & Ning 2024's BLO+RCGrad).
    """
    from moladapt.adapt.gradients import COMBINERS

    name = label.strip().lower()
    if name == "finetune":
        return {"method": "auxiliary", "aux_objectives": ()}
    if name in ("aux", "auxiliary"):
        return {"method": "auxiliary"}
    if name in ("blo", "bilevel"):
        return {"method": "bilevel", "combiner": None}
    combiner = name.removeprefix("blo+")
    if combiner in COMBINERS.names():
        return {"method": "bilevel" if name.startswith("blo+") else "auxiliary", "combiner": combiner}
    raise ValueError(f"unknown adaptation method {label!r}; choose one of: {', '.join(ADAPT_METHODS)} "
                     f"(combiners: {', '.join(COMBINERS.names())})")


def save_configs(path: str | Path, run_cfg: RunConfig, aux_cfg: AuxConfig) -> None:
    """One YAML file with the sections ``data``, ``model``, ``train`` and ``aux``."""
    import yaml

    from moladapt.utils import atomic_write_text

    text = yaml.safe_dump({**run_cfg.to_dict(), "aux": aux_cfg.to_dict()}, sort_keys=False)
    atomic_write_text(Path(path), text)


def configs_from_dict(d: dict[str, Any]) -> tuple[RunConfig, AuxConfig]:
    d = dict(d or {})
    aux = d.pop("aux", None)
    return RunConfig.from_dict(d), AuxConfig.from_dict(aux)


def load_configs(path: str | Path) -> tuple[RunConfig, AuxConfig]:
    """Read a config file written by :func:`save_configs` (``aux`` optional)."""
    from moladapt.config import read_yaml_mapping

    try:
        return configs_from_dict(read_yaml_mapping(path))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def resolve_columns(task_names: list[str], aux_cfg: AuxConfig) -> tuple[list[int], list[int]]:
    """``(target columns, source columns)`` of the label table for ``aux_cfg``."""
    from moladapt.data.sources import DataError

    def index(name: str, what: str) -> int:
        if name not in task_names:
            raise DataError(f"{what} {name!r} is not a label column; the columns are {task_names}")
        return task_names.index(name)

    if aux_cfg.target is not None:
        targets = [index(aux_cfg.target, "target")]
    elif aux_cfg.method == "bilevel" and aux_cfg.source_tasks:
        targets = [0]  # the other columns are the sources
    else:  # every column is a target (bi-level with auxiliary objectives: one joint target task)
        targets = list(range(len(task_names)))
    if aux_cfg.source_tasks == ("all",):
        sources = [c for c in range(len(task_names)) if c not in targets]
        if not sources:
            raise DataError(f"source_tasks 'all': the data has no column besides the target "
                            f"{task_names[targets[0]]!r}")
    else:
        sources = [index(name, "source task") for name in aux_cfg.source_tasks]
        if set(sources) & set(targets):
            raise DataError(f"the target {task_names[targets[0]]!r} cannot also be a source task")
    return targets, sources


@dataclass(frozen=True)
class AuxRunResult:
    config: RunConfig
    aux: AuxConfig
    test: Any  # MetricReport
    valid: Any
    task_names: list[str]
    split_sizes: tuple[int, int, int]
    n_invalid: int
    train_seconds: float
    molecules_per_second: float
    best_epoch: int
    output: Path | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.aux.method, "label": self.aux.label(), "task_names": self.task_names,
            "test": self.test.to_dict(), "valid": self.valid.to_dict(),
            "split_sizes": dict(zip(("train", "valid", "test"), self.split_sizes, strict=True)),
            "n_invalid_smiles": self.n_invalid, "train_seconds": self.train_seconds,
            "molecules_per_second": self.molecules_per_second, "best_epoch": self.best_epoch,
            **self.details,
        }


def _check_train_options(run_cfg: RunConfig) -> None:
    if run_cfg.train.freeze_encoder:
        raise ValueError("train.freeze_encoder is not supported with auxiliary tasks: "
                         "they only act through the encoder")
    if run_cfg.train.head_only_epochs:
        raise ValueError("train.head_only_epochs is not supported with auxiliary tasks")


def _mean_losses(history: list[dict[str, float]], last: int = 20) -> dict[str, float]:
    rows = history[-last:]
    if not rows:
        return {}
    return {k: float(sum(r[k] for r in rows) / len(rows)) for k in rows[0]}


def run_auxiliary(run_cfg: RunConfig, aux_cfg: AuxConfig, output: str | Path | None = None,
                  log=print) -> AuxRunResult:
    """Adapt one model with auxiliary tasks as the configs say; write its files to ``output``."""
    from moladapt.experiment import check_choices

    check_choices(run_cfg)
    aux_cfg.validate()
    _check_train_options(run_cfg)
    out = Path(output) if output is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "model.pt").exists():  # a finished run's config stays with its model until this one ends
            save_configs(out / "config.yaml", run_cfg, aux_cfg)  # first: a crashed run says what it was

    import numpy as np
    import torch

    from moladapt.evaluate.metrics import compute_metrics
    from moladapt.experiment import as_read, environment, load_data, split_data, validation_warning
    from moladapt.training import build_model, prepare, save_checkpoint
    from moladapt.utils import seed_everything, write_json

    tc = run_cfg.train
    if tc.num_threads:
        torch.set_num_threads(int(tc.num_threads))
    seed_everything(tc.seed)
    data = load_data(run_cfg)
    prepared = prepare(data, run_cfg.data.featurizer)
    if prepared.invalid:
        log(prepared.invalid_summary())
    split = split_data(prepared, run_cfg)
    targets, sources = resolve_columns(list(data.task_names), aux_cfg)
    warning = validation_warning(prepared.y[:, targets], split, data.task_type)
    if warning:
        log(warning)
    target_names = [data.task_names[c] for c in targets]
    model = build_model(run_cfg.model, prepared.featurizer, len(targets))
    init_record = None
    if tc.init:
        from moladapt.models.fingerprint import load_encoder_weights
        from moladapt.provenance import load_init

        init, init_record = load_init(tc.init, prepared.featurizer)
        load_encoder_weights(model.encoder, init.model.encoder, init_record["path"])
    graphs = prepared.graphs
    y = prepared.y[:, targets]
    details: dict[str, Any] = {}

    t0 = time.perf_counter()
    if aux_cfg.method == "auxiliary":
        from moladapt.adapt.auxiliary import AuxiliaryFineTuner

        est = AuxiliaryFineTuner(
            aux_objectives=aux_cfg.aux_specs(), combiner=aux_cfg.combiner or "sum",
            combiner_options=aux_cfg.combiner_options, epochs=tc.epochs, batch_size=tc.batch_size,
            lr=tc.lr, seed=tc.seed, task_weights=aux_cfg.task_weights, task_type=data.task_type,
            encoder_lr=tc.lr * tc.encoder_lr_scale, weight_decay=tc.weight_decay,
            patience=tc.patience, max_steps=aux_cfg.max_steps, grad_clip=aux_cfg.grad_clip,
            pos_weight=aux_cfg.pos_weight, featurizer=prepared.featurizer,
            eval_batch_size=tc.eval_batch_size,
        )
        est.fit(model, graphs, y, split.train, split.valid)
        history = est.history_
        train_seconds, mps, best_epoch = (history.train_seconds, history.molecules_per_second,
                                          history.best_epoch)
        details = {"aux_tasks": list(est.aux_names_), "steps": int(est.steps_),
                   "gradient_log": est.gradient_log_.summary(),
                   "final_losses": _mean_losses(est.loss_history_),
                   "history": history.to_dict(),
                   "embedding_spread": est.embedding_spread_, "collapsed_epoch": est.collapsed_}
    else:
        from moladapt.adapt.bilevel import BiLevelTaskWeighting

        if tc.encoder_lr_scale != 1.0:
            log(f"note: bilevel uses one learning rate; train.encoder_lr_scale="
                f"{tc.encoder_lr_scale} is ignored")
        n_train = len(split.train)
        steps_per_epoch = max(1, math.ceil(n_train / tc.batch_size))
        outer_steps = aux_cfg.outer_steps or max(
            1, round(tc.epochs * steps_per_epoch / aux_cfg.inner_steps))
        # train.patience counts epochs; bi-level validates once per outer step
        patience = (None if tc.patience is None
                    else max(1, round(tc.patience * steps_per_epoch / aux_cfg.inner_steps)))
        est = BiLevelTaskWeighting(
            source_tasks=sources, aux_objectives=aux_cfg.aux_specs(), target=targets,
            weighting=aux_cfg.weighting, init_weights=aux_cfg.init_weights,
            hypergradient=aux_cfg.hypergradient, combiner=aux_cfg.combiner,
            combiner_options=aux_cfg.combiner_options, outer_steps=outer_steps,
            inner_steps=aux_cfg.inner_steps, inner_lr=tc.lr, outer_lr=aux_cfg.outer_lr,
            inner_optimizer=aux_cfg.inner_optimizer, neumann_alpha=aux_cfg.neumann_alpha,
            neumann_terms=aux_cfg.neumann_terms, batch_size=tc.batch_size,
            valid_batch_size=aux_cfg.valid_batch_size, seed=tc.seed, task_type=data.task_type,
            select_best=aux_cfg.select_best, featurizer=prepared.featurizer,
            eval_batch_size=tc.eval_batch_size, patience=patience,
        )
        est.fit(model, graphs, prepared.y, split.train, split.valid,
                column_names=list(data.task_names))
        train_seconds = time.perf_counter() - t0
        steps_run = len(est.valid_loss_history_)
        seen = steps_run * aux_cfg.inner_steps * min(tc.batch_size, n_train)
        mps = seen / train_seconds if train_seconds > 0 else float("nan")
        best_epoch = int(est.best_step_)
        details = {
            "task_names_weighted": list(est.task_names_[1:]),
            "source_tasks": [data.task_names[c] for c in sources],
            "aux_tasks": list(est.task_names_[1 + len(sources):]),
            "weights": dict(est.weights_),
            "weights_at_best_step": dict(est.weights_at_best_step_),
            "weights_history": est.weights_history_.tolist(),
            "hypergradient_history": est.hypergradient_history_.tolist(),
            "valid_loss_history": list(est.valid_loss_history_),
            "valid_metric_history": list(est.valid_metric_history_),
            "best_step": int(est.best_step_), "outer_steps": int(outer_steps),
            "outer_steps_run": steps_run, "patience_outer_steps": patience,
            "inner_steps": int(aux_cfg.inner_steps),
            "gradient_log": est.gradient_log_.summary(),
            "embedding_spread": est.embedding_spread_, "collapsed_outer_step": est.collapsed_,
        }
    wall = time.perf_counter() - t0

    def score(idx: np.ndarray):
        return compute_metrics(data.task_type, y[idx], est.predict(graphs, idx), target_names)

    test, valid = score(split.test), score(split.valid)
    run_cfg = as_read(run_cfg, data)
    result = AuxRunResult(run_cfg, aux_cfg, test, valid, target_names,
                          tuple(len(p) for p in (split.train, split.valid, split.test)),
                          len(prepared.invalid), float(train_seconds), float(mps),
                          int(best_epoch), out, details)
    if out is not None:
        save_configs(out / "config.yaml", run_cfg, aux_cfg)
        save_checkpoint(out / "model.pt", model, prepared.featurizer, run_cfg.model, target_names,
                        data.task_type, est.target_mean_, est.target_std_,
                        extra={"run_config": run_cfg.to_dict(), "aux_config": aux_cfg.to_dict(),
                               "init": init_record})
        write_json(out / "metrics.json", {
            **result.to_dict(), "wall_seconds": wall, "dataset": data.name, "source": data.source,
            "invalid_smiles": [{"line": line, "smiles": s} for line, s in prepared.invalid],
            "environment": environment(),
        })
    return result


def flat_metrics(result: AuxRunResult) -> dict[str, Any]:
    """One flat dict of numbers for a results table (the study runner's metrics)."""
    metrics: dict[str, Any] = {"method": result.aux.method, "label": result.aux.label()}
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
                   n_test=n_test, n_invalid_smiles=int(result.n_invalid))
    for task, stats in result.details.get("gradient_log", {}).get("tasks", {}).items():
        metrics[f"cosine.{task}"] = stats["mean_cosine"]
        metrics[f"conflict.{task}"] = stats["conflict_fraction"]
    for task, weight in result.details.get("weights", {}).items():
        metrics[f"weight.{task}"] = float(weight)
    spread = result.details.get("embedding_spread")
    if spread:
        metrics.update(embedding_spread_initial=float(spread[0]), embedding_spread_final=float(spread[-1]))
    return metrics


# --- the study runner -------------------------------------------------------------------------
SECTIONS = ("data", "model", "train", "aux")


def _resolve_auxiliary(config: dict[str, Any]) -> dict[str, Any]:
    from moladapt.study.executors import _coerce, _resolve_train

    config = copy.deepcopy(config)
    for section in config:
        if section not in SECTIONS:
            raise ValueError(f"unknown key {section!r}; an auxiliary config has sections "
                             f"{', '.join(SECTIONS)}")
    aux = config.pop("aux", None) or {}
    if not isinstance(aux, dict):
        raise ValueError(f"'aux' must be a mapping of options, got {aux!r}")
    if isinstance(aux.get("method"), str) and aux["method"] not in METHODS:
        # a label (finetune, rcgrad, blo+rcgrad ...) sets its fields over the others, so one
        # axis ``aux.method: [finetune, gns, rcgrad, blo, blo+rcgrad]`` spans the comparison
        aux = {**aux, **method_changes(aux["method"])}
    known = {f.name: str(f.type) for f in fields(AuxConfig)}
    for name, value in list(aux.items()):
        if name not in known:
            raise ValueError(f"unknown key 'aux.{name}'; aux options are: {', '.join(sorted(known))}")
        aux[name] = _coerce(f"aux.{name}", known[name], value)
    resolved = _resolve_train(config)
    aux_cfg = AuxConfig.from_dict(aux)
    aux_cfg.validate()
    aux_cfg = replace(aux_cfg, objective_options=aux_cfg.parsed_objective_options() or None)
    run_cfg = RunConfig.from_dict(resolved)
    _check_train_options(run_cfg)
    return {**resolved, "aux": aux_cfg.to_dict()}


def _run_auxiliary(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    import os

    from moladapt.utils import json_safe

    run_cfg, aux_cfg = configs_from_dict(config)
    threads = int(os.environ.get("MOLADAPT_STUDY_THREADS", "0"))
    if threads and run_cfg.train.num_threads is None:
        run_cfg = run_cfg.replace(train={"num_threads": threads})
    notes: list[str] = []  # e.g. "no model selection": kept with the run's metrics
    result = run_auxiliary(run_cfg, aux_cfg, run_dir, log=notes.append)
    return json_safe({**flat_metrics(result), "run_dir": str(run_dir),
                      **({"notes": notes} if notes else {})})


# training time over plain fine-tuning's with 3 auxiliary tasks, GIN 5×300, same dataset and
# seed (benchmarks/results/auxiliary.md, "training time"): combiners 3.6–3.8×, BLO 10.5×, BLO+RCGrad 16.0×
_MEASURED_COST_3_AUX = {"auxiliary": 3.7, "bilevel": 10.5, "bilevel+rcgrad": 16.0}


def _auxiliary_cost_factor(config: dict[str, Any]) -> float:
    """Auxiliary runs are costed as multiples of plain fine-tuning measured with 3 auxiliary tasks
    (benchmarks/results/auxiliary.md: a combiner ≈ 3.7×, BLO ≈ 10.5×, BLO+RCGrad ≈ 16×), the
    part above 1× scaled by the number of auxiliary or source tasks over 3."""
    aux = config.get("aux") or {}
    n_tasks = len(aux.get("aux_objectives") or ()) + len(aux.get("source_tasks") or ())
    if aux.get("method") == "bilevel":
        measured = _MEASURED_COST_3_AUX["bilevel+rcgrad" if aux.get("combiner") else "bilevel"]
    else:
        measured = _MEASURED_COST_3_AUX["auxiliary"] if aux.get("aux_objectives") else 1.0
    return 1.0 + (measured - 1.0) * max(n_tasks, 1) / 3


if "auxiliary" not in RUNNERS:
    RUNNERS.add("auxiliary", Runner(_run_auxiliary, _resolve_auxiliary, cost_factor=_auxiliary_cost_factor))
