"""FS-Mol few-shot benchmark: meta-learned initialisations against multi-task, single-task and
fingerprint baselines, in distribution (FS-Mol test tasks) and out of distribution.

Methods (``--methods``; each is a directory name under ``raw/fsmol/<group>/``):

* ``maml``, ``fomaml``, ``anil``, ``protonet`` — meta-trained on the FS-Mol training tasks
  (:func:`moladapt.fewshot.meta_train`), evaluated with their own adaptation rule;
* ``mt-finetune``, ``mt-head`` — the "multi-task + fine-tune" baseline: supervised multi-task
  pretraining (:func:`moladapt.pretrain.pretrain`, objective ``supervised``) on the
  molecules × training-tasks label matrix, then per episode ``finetune`` with
  ``mode="full"`` (encoder and head) or ``mode="head"`` (MLP head on the frozen encoder);
* ``scratch-finetune`` — single-task from scratch: ``finetune`` (full) on a random encoder;
* ``rf-ecfp``, ``knn-ecfp`` — fingerprint baselines; ``rf-ecfp@<tag>`` — another configuration
  (``--hparam rf-ecfp@<tag>.NAME=VALUE``), e.g. FS-Mol's per-episode grid search
  (``param_grid=fsmol``);
* ``mt-finetune+ecfp``, ``mt-head+ecfp`` — the same on the fingerprint-fused encoder, multi-task
  pretrained whole (GNN and fusion MLP: model ``multitask+ecfp``), the baseline that isolates
  meta-learning for the ``+ecfp`` meta-methods;
* ``<meta-method>+ecfp`` — on the fingerprint-fused encoder; ``<meta-method>[+ecfp]@<tag>`` —
  another configuration of it (own ``--hparam <method>@<tag>.NAME=VALUE`` entries, model and
  rows), e.g. FS-Mol's ProtoNet settings beside the default ones. ``--valid fsmol-valid`` keeps
  the best validated meta-training step, and meta-training resumes after a kill
  (``models/<method>/resume.pt``). ``--meta-init <method>`` meta-trains it from the multi-task
  pretrained model of its features (``multitask`` or ``multitask+ecfp``) instead of random
  weights: meta-learning on top of multi-task pretraining, e.g. ``protonet+ecfp@mt``.

Every method is evaluated with :func:`moladapt.fewshot.few_shot` (same episodes for all
methods: ``draws`` per task and k) on the FS-Mol test tasks and on an out-of-distribution
group (``--ood``, default ``toxcast:50``). Everything resumes: meta-trained models are reused
when their configuration matches, multi-task pretraining resumes after its last epoch,
evaluation after its last result row. ``--max-tasks N`` keeps the first N tasks of each group
(so slices nest and a later full run only adds rows).

Outputs (``--out``, default ``benchmarks/results``):

* ``raw/fsmol/<group>/<method>/results.csv`` (+ config.yaml, summary.csv, timing.json);
* ``raw/fsmol/models/<method>/`` — meta-trained ``model.pt`` (git-ignored), ``meta.json``,
  ``config.yaml``; ``raw/fsmol/models/multitask[+ecfp]/`` the pretrained encoders and their records;
* ``fsmol.md`` — the tables, and ``fsmol_<group>_delta_auprc_vs_k.png`` — the plots.

Before running it prints an estimate of the CPU hours, from per-episode times measured on a
tiny warm-up (``--estimate-only`` stops there, ``--no-estimate`` skips it). Full run:

    MOLADAPT_DATA_DIR=../shared/data OMP_NUM_THREADS=2 \\
        python benchmarks/fsmol.py --threads 2

``--report-only`` rewrites fsmol.md and the plots from the rows already computed. ``--note``
paragraphs are kept in ``raw/fsmol/notes.md`` (edit it to change or remove one) and appear in
every rewrite.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import inspect
import json
import math
import os
import platform
import re
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from moladapt.adapt import TaskFeatureCache
from moladapt.config import ModelConfig, model_config_dict, parse_scalar
from moladapt.data.cache import featurize_cached
from moladapt.data.episodes import EpisodeSampler, TaskTooSmall
from moladapt.data.featurize import get_featurizer
from moladapt.evaluate.protocol import load_results
from moladapt.fewshot import (
    BASELINES,
    build_adapter,
    build_baseline,
    encoder_config,
    few_shot,
    meta_train,
    plot_delta_auprc_vs_k,
    summarize_few_shot,
)
from moladapt.fewshot import resolve_tasks as _resolve_tasks
from moladapt.types import Task
from moladapt.utils import atomic_write_text, write_json

META_METHODS = ("maml", "fomaml", "anil", "protonet")
#: meta-learned *initialisations* (fine-tuned per task), compared with multi-task fine-tuning
INIT_METHODS = ("maml", "fomaml", "anil")
MT_METHODS = {"mt-finetune": {"mode": "full"}, "mt-head": {"mode": "head"}}
SCRATCH = "scratch-finetune"
BASELINE_METHODS = ("rf-ecfp", "knn-ecfp")
ALL_METHODS = (*META_METHODS, *MT_METHODS, SCRATCH, *BASELINE_METHODS)
#: ``<meta-method>+ecfp``: the same method on the fingerprint-fused encoder (FS-Mol's
#: "gnn+ecfp+fc": GNN readout ⊕ ECFP4 2048 bits → MLP 1024 → 512).
ECFP_SUFFIX = "+ecfp"
#: ``<meta-method>[+ecfp]@<tag>`` or ``<baseline>@<tag>``: another configuration of the method
#: (its own ``--hparam`` entries, model and result rows), e.g. ``protonet+ecfp@fsmol`` beside
#: ``protonet+ecfp``.
VARIANT_SEP = "@"
#: Hyper-parameters of the meta-methods used only at adaptation time (MAML/ANIL: inner steps
#: on a test task's support set); a variant that changes only these reuses its base's model.
ADAPTATION_HPARAMS = frozenset({"test_inner_steps"})
ECFP_FUSION = {"fingerprint_bits": 2048, "fingerprint_radius": 2, "fingerprint_dims": (1024, 512)}


def without_variant(method: str) -> str:
    """``protonet+ecfp@fsmol`` → ``protonet+ecfp``."""
    return method.partition(VARIANT_SEP)[0]


def is_fused(method: str) -> bool:
    return without_variant(method).endswith(ECFP_SUFFIX)


def base_method(method: str) -> str:
    """``protonet+ecfp@fsmol`` → ``protonet``."""
    name = without_variant(method)
    return name[: -len(ECFP_SUFFIX)] if is_fused(name) else name


def known_method(method: str) -> bool:
    """One of :data:`ALL_METHODS`, a meta-method with ``+ecfp`` and/or ``@<tag>``, a baseline
    with ``@<tag>``, or a multi-task method with ``+ecfp``."""
    name, sep, tag = method.partition(VARIANT_SEP)
    if sep and not (re.fullmatch(r"[A-Za-z0-9_-]+", tag) and (is_meta(name) or is_baseline(name))):
        return False
    return name in ALL_METHODS or (is_fused(name) and (is_meta(name) or is_multitask(name)))


def is_meta(method: str) -> bool:
    return base_method(method) in META_METHODS


def is_baseline(method: str) -> bool:
    """``rf-ecfp``, ``knn-ecfp`` and their ``@<tag>`` variants."""
    return without_variant(method) in BASELINE_METHODS


def is_multitask(method: str) -> bool:
    """``mt-finetune``, ``mt-head`` and their ``+ecfp`` forms."""
    return base_method(method) in MT_METHODS


def multitask_model(method: str) -> str:
    """The multi-task pretrained model a method fine-tunes: ``multitask`` or ``multitask+ecfp``."""
    return "multitask" + (ECFP_SUFFIX if is_fused(method) else "")
DEFAULT_K = (16, 32, 64, 128, 256)

#: Stanley et al. (NeurIPS 2021), FS-Mol test tasks, mean ΔAUPRC at k = 16, 32, 64, 128, 256.
PUBLISHED = {
    "protonet": ("ProtoNet", (0.211, 0.247, 0.276, 0.306, 0.292)),
    "maml": ("GNN-MAML", (0.165, 0.172, 0.178, 0.197, 0.187)),
    "mt-finetune": ("GNN-MT", (0.117, 0.149, 0.182, 0.228, 0.239)),
    "rf-ecfp": ("RF", (0.098, 0.130, 0.168, 0.218, 0.261)),
}
#: Nguyen, Kreatsoulas & Branson (2020): AUPRC of meta-initialisations relative to multi-task.
NGUYEN_GAIN = {"in": 0.112, "ood": 0.269}


# --- configuration ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(ALL_METHODS),
                   help=f"comma-separated subset of: {', '.join(ALL_METHODS)}; a meta-method may "
                        f"carry {ECFP_SUFFIX} (fingerprint-fused encoder); a meta-method or baseline "
                        f"{VARIANT_SEP}TAG (another configuration with its own --hparam entries, model and rows)")
    p.add_argument("--support", default=",".join(map(str, DEFAULT_K)), help="k values")
    p.add_argument("--draws", type=int, default=10, help="episodes per task and k")
    p.add_argument("--max-tasks", type=int, default=None,
                   help="keep the first N tasks of each evaluation group (a slice)")
    p.add_argument("--train", default="fsmol-train", help="meta-/multi-task training tasks")
    p.add_argument("--test", default="fsmol-test", help="in-distribution evaluation tasks")
    p.add_argument("--ood", default="toxcast:50",
                   help="out-of-distribution evaluation tasks ('none' to skip), e.g. tox21")
    p.add_argument("--encoder", default="gin")
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--hidden", type=int, default=300)
    p.add_argument("--jk", default="last", help="layer aggregation: last | concat | max | sum "
                   "(concat ≈ FS-Mol's readout over all layer states)")
    p.add_argument("--pooling", default="mean", help="graph readout: mean | sum | max | attention | combined (FS-Mol's)")
    p.add_argument("--featurizer", default="basic")
    p.add_argument("--ecfp-counts", action="store_true",
                   help="fingerprint-fused (+ecfp) encoders and the RF/kNN baselines take ECFP occurrence "
                        "counts, FS-Mol's input, instead of bits")
    p.add_argument("--meta-steps", type=int, default=2000)
    p.add_argument("--valid", default="none",
                   help="held-out tasks for model selection during meta-training (FS-Mol's rule), "
                        "e.g. fsmol-valid; 'none' keeps the last state")
    p.add_argument("--validate-every", type=int, default=50, help="outer steps between validations")
    p.add_argument("--validation-support", default="16",
                   help="support sizes of the validation episodes (FS-Mol's trainers: 16,128)")
    p.add_argument("--meta-batch-size", type=int, default=4)
    p.add_argument("--meta-init", action="append", default=[], metavar="METHOD",
                   help="meta-train METHOD (a meta-method, e.g. protonet+ecfp@mt; repeatable) from the "
                        "multi-task pretrained model of its features instead of random weights")
    p.add_argument("--hparam", action="append", default=[],
                   help="METHOD.NAME=VALUE: an adapter hyper-parameter (repeatable), e.g. "
                        "protonet.distance=mahalanobis; 'protonet.' also applies to protonet+ecfp, "
                        "'protonet+ecfp.' only to it. METHOD.seed=S meta-trains from seed S (encoder "
                        "initialisation and episodes) while the evaluation episodes stay --seed's, so "
                        "seeds of one configuration (e.g. protonet@s1.seed=1) compare paired")
    p.add_argument("--mt-epochs", type=int, default=10, help="multi-task pretraining epochs")
    p.add_argument("--mt-batch-size", type=int, default=256)
    p.add_argument("--mt-lr", type=float, default=1e-3)
    p.add_argument("--mt-min-per-class", type=int, default=1,
                   help="training tasks with fewer positives or negatives are left out of the "
                        "multi-task label matrix")
    p.add_argument("--seed", type=int, default=0,
                   help="evaluation episodes, and every model's initialisation unless METHOD.seed says")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--work-dir", type=Path, default=Path("runs/fsmol"),
                   help="resumable pretraining state (large; not for git)")
    p.add_argument("--retrain", action="store_true",
                   help="meta-train / pretrain again even if a model with another config exists")
    est = p.add_mutually_exclusive_group()
    est.add_argument("--estimate-only", action="store_true")
    est.add_argument("--no-estimate", action="store_true")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--note", action="append", default=[],
                   help="a paragraph for the report's header (e.g. budgets that differ by method); "
                        "kept in raw/fsmol/notes.md for every later rewrite")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(m for m in args.methods if not known_method(m))
    if unknown or not args.methods:
        p.error(f"unknown method(s) {unknown}; choose from {', '.join(ALL_METHODS)} "
                f"(a meta-method may carry '{ECFP_SUFFIX}', a meta-method or baseline a variant tag "
                f"'{VARIANT_SEP}name')")
    hparams: dict[str, dict[str, Any]] = {}
    for item in args.hparam:
        key, eq, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not (eq and dot and name) or not (is_meta(method) or is_baseline(method)):
            p.error(f"--hparam {item!r}: expected METHOD.NAME=VALUE with METHOD one of "
                    f"{', '.join(META_METHODS)} (optionally with {ECFP_SUFFIX} and {VARIANT_SEP}tag) "
                    f"or {', '.join(BASELINE_METHODS)} (optionally with {VARIANT_SEP}tag)")
        hparams.setdefault(method, {})[name] = parse_scalar(value)
    args.hparam = hparams
    not_meta = [m for m in args.meta_init if not (known_method(m) and is_meta(m))]
    if not_meta:
        p.error(f"--meta-init {', '.join(not_meta)}: expected a meta-method ({', '.join(META_METHODS)}, "
                f"optionally with {ECFP_SUFFIX} and {VARIANT_SEP}tag)")
    args.meta_init = frozenset(args.meta_init)
    args.support = sorted({int(k) for k in args.support.split(",") if k.strip()})
    args.validation_support = [int(k) for k in args.validation_support.split(",") if k.strip()]
    if args.draws < 1 or not args.support or args.support[0] < 2:
        p.error("--draws must be >= 1 and --support values >= 2")
    if args.max_tasks is not None and args.max_tasks < 1:
        p.error("--max-tasks must be >= 1")
    return args


def model_cfg(args: argparse.Namespace, method: str = "") -> ModelConfig:
    cfg = encoder_config({"encoder": args.encoder, "num_layers": args.layers, "hidden_dim": args.hidden,
                          "jk": args.jk, "pooling": args.pooling})
    fusion = {**ECFP_FUSION, "fingerprint_counts": bool(args.ecfp_counts)} if is_fused(method) else {}
    return dataclasses.replace(cfg, head_hidden_dims=(), **fusion)


def hparam_entries(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The ``--hparam`` entries that apply to ``method``, the more specific name winning:
    ``protonet`` < ``protonet+ecfp`` < ``protonet+ecfp@tag`` (``rf-ecfp`` < ``rf-ecfp@tag``)."""
    hp: dict[str, Any] = {}
    for name in dict.fromkeys((base_method(method), without_variant(method), method)):
        hp.update(args.hparam.get(name, {}))
    return hp


def method_hparams(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """``--meta-steps``/``--meta-batch-size``, then the ``--hparam`` entries of ``method``."""
    return {"meta_steps": int(args.meta_steps), "meta_batch_size": int(args.meta_batch_size),
            **hparam_entries(args, method)}


def meta_hparams(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The hyper-parameters that meta-training depends on (``method_hparams`` less
    :data:`ADAPTATION_HPARAMS`): they identify the meta-trained model."""
    return {k: v for k, v in method_hparams(args, method).items() if k not in ADAPTATION_HPARAMS}


def adaptation_hparams(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The ``--hparam`` entries of ``method`` that act only when adapting to a test task."""
    return {k: v for k, v in method_hparams(args, method).items() if k in ADAPTATION_HPARAMS}


def model_name(args: argparse.Namespace, method: str) -> str:
    """The ``models/`` directory holding the meta-trained model ``method`` evaluates: a variant
    whose meta-training hyper-parameters equal its base's shares the base's model, so that
    changing only how a test task is adapted never meta-trains again."""
    base = without_variant(method)
    if (base != method and meta_hparams(args, method) == meta_hparams(args, base)
            and (method in args.meta_init) == (base in args.meta_init)):
        return base
    return method


def _dur(seconds: float) -> str:
    if seconds is None or math.isnan(seconds):
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def group_dir_name(spec: str) -> str:
    return spec.strip().lower().replace(":", "-").replace("/", "_")


def raw_dir(args: argparse.Namespace) -> Path:
    return args.out / "raw" / "fsmol"


def groups(args: argparse.Namespace) -> list[str]:
    specs = [args.test]
    if args.ood and args.ood.lower() != "none":
        specs.append(args.ood)
    return specs


def _groups_file(args: argparse.Namespace) -> Path:
    return raw_dir(args) / "groups.json"


def _recorded_groups(args: argparse.Namespace) -> list[str]:
    path = _groups_file(args)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else []


def report_groups(args: argparse.Namespace) -> list[str]:
    """The groups the report shows: this call's, then every out-of-distribution group an earlier
    run of this benchmark wrote rows for (:func:`record_ood_groups`), so that a call restricted
    to fewer groups (``--ood none``) does not drop the others' tables. Rows written by other
    tools (e.g. ``moladapt few-shot --tasks fsmol-valid`` sweeps) are never recorded, so they
    never become a table."""
    return list(dict.fromkeys([*groups(args), *_recorded_groups(args)]))


def record_ood_groups(args: argparse.Namespace, data: dict[str, pd.DataFrame]) -> None:
    """Add this call's out-of-distribution groups that have rows to ``raw/fsmol/groups.json``."""
    kept = _recorded_groups(args)
    new = [spec for spec in groups(args)[1:] if spec not in kept and not data[spec].empty]
    if new:
        write_json(_groups_file(args), [*kept, *new])


@functools.lru_cache(maxsize=8)
def _resolved(spec: str) -> tuple[Task, ...]:
    return tuple(_resolve_tasks(spec))


def resolve_tasks(spec: str) -> list[Task]:
    """:func:`moladapt.fewshot.resolve_tasks`, loaded once per process."""
    return list(_resolved(spec))


def load_group(spec: str, max_tasks: int | None) -> list[Task]:
    tasks = resolve_tasks(spec)
    return tasks if max_tasks is None else tasks[:max_tasks]


# --- the multi-task label matrix -------------------------------------------------------------


def multitask_matrix(tasks: Sequence[Task], min_per_class: int = 1) -> tuple[list[str], np.ndarray, list[str]]:
    """Molecules × tasks float32 label matrix (NaN: unmeasured) from a list of tasks.

    The same pivot as :func:`moladapt.multitask.fsmol_labeled_data` (tasks with at least
    ``min_per_class`` of each class; a molecule listed twice in a task with different labels
    is NaN there), built straight into float32 so that all 4935 FS-Mol training tasks fit
    (207k × 4935 × 4 bytes ≈ 4 GB instead of pandas' 8 GB float64 unstack).
    """
    kept = []
    for t in tasks:
        y = np.asarray(t.labels, dtype=np.float64)
        if (y == 1).sum() >= min_per_class and (y == 0).sum() >= min_per_class:
            kept.append(t)
    if not kept:
        raise ValueError(f"no training task has {min_per_class} molecules of each class")
    index: dict[str, int] = {}
    for t in kept:
        for s in t.smiles:
            index.setdefault(s, len(index))
    y = np.full((len(index), len(kept)), np.nan, dtype=np.float32)
    for j, t in enumerate(kept):
        rows = np.fromiter((index[s] for s in t.smiles), dtype=np.int64, count=len(t.smiles))
        labels = np.asarray(t.labels, dtype=np.float32).reshape(-1)
        order = np.argsort(rows, kind="stable")
        rows, labels = rows[order], labels[order]
        uniq, start = np.unique(rows, return_index=True)
        means = np.add.reduceat(labels, start) / np.diff(np.append(start, len(rows)))
        y[uniq, j] = np.where((means == 0) | (means == 1), means, np.nan)
    return list(index), y, [t.task_id for t in kept]


# --- training --------------------------------------------------------------------------------


def _same(path: Path, wanted: dict[str, Any]) -> bool:
    if not path.exists():
        return False
    return json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(wanted))


def validation_seconds(meta: dict[str, Any]) -> float:
    return float((meta.get("validation") or {}).get("seconds", 0.0))


def meta_identity(args: argparse.Namespace, method: str) -> dict[str, Any]:
    identity = {"method": method, "train": args.train, "encoder": model_config_dict(model_cfg(args, method)),
                "featurizer": args.featurizer, "hparams": meta_hparams(args, method), "seed": int(args.seed)}
    if args.valid != "none":  # absent otherwise, so models trained before validation existed still match
        identity["validation"] = {"tasks": args.valid, "every": int(args.validate_every),
                                  "support_sizes": args.validation_support}
    if method in args.meta_init:  # absent otherwise, as for validation
        init = multitask_model(method)
        identity["init"] = {"model": init, **mt_identity(args, init)}
    return identity


def ensure_meta_trained(args: argparse.Namespace, method: str, train_tasks: list[Task] | None,
                        cache: TaskFeatureCache) -> tuple[Path, list[Task] | None]:
    """``models/<method>/model.pt``, meta-trained now unless a matching one exists."""
    out = raw_dir(args) / "models" / method
    identity = meta_identity(args, method)
    ckpt = out / "model.pt"
    if ckpt.exists() and _same(out / "identity.json", identity):
        print(f"[{method}] reusing {ckpt}", flush=True)
        return ckpt, train_tasks
    if ckpt.exists() and not args.retrain:
        raise SystemExit(f"{ckpt} was meta-trained with another configuration "
                         f"(see {out / 'identity.json'}); pass --retrain or another --out")
    init = None
    if method in args.meta_init:  # pretrained only when the meta-trained model is missing
        init, train_tasks = ensure_multitask(args, train_tasks, multitask_model(method))
    if train_tasks is None:
        train_tasks = resolve_tasks(args.train)
    setup = stream_setup_seconds(args, train_tasks, cache)
    hparams = meta_hparams(args, method)
    print(f"[{method}] meta-training {hparams['meta_steps']} steps on {len(train_tasks)} tasks"
          + (f" from {init}" if init else ""), flush=True)
    start = time.perf_counter()
    result = meta_train(base_method(method), train_tasks, model_cfg(args, method), cache.featurizer,
                        hparams, init=init,
                        output=out, seed=training_seed(hparams, args.seed), tasks_name=args.train,
                        valid_tasks=None if args.valid == "none" else args.valid,
                        validate_every=args.validate_every, validation_support=args.validation_support)
    meta_path = out / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    write_json(meta_path, {**meta, "threads": torch.get_num_threads(), "setup_seconds": setup,
                           "step_seconds": max(meta["seconds"] - setup - validation_seconds(meta), 1e-9)})
    write_json(out / "identity.json", identity)
    print(f"[{method}] done in {_dur(time.perf_counter() - start)} "
          f"(final loss {result.info['final_loss']})", flush=True)
    return ckpt, train_tasks


_SETUP: dict[str, float] = {}


def stream_setup_seconds(args: argparse.Namespace, train_tasks: list[Task], cache: TaskFeatureCache) -> float:
    """Seconds meta_train spends building its episode stream before the first step (loading
    the training tasks' graphs from the disk cache), measured once, so that steps/s counts
    the outer steps only. Featurizes the training tasks into the disk cache first."""
    if args.train not in _SETUP:
        from moladapt.adapt.base import EpisodeStream

        start = time.perf_counter()
        for t in train_tasks:
            cache(t)
        print(f"featurized {len(train_tasks)} training tasks in {_dur(time.perf_counter() - start)}",
              flush=True)
        start = time.perf_counter()
        EpisodeStream(train_tasks, TaskFeatureCache(cache.featurizer), 16, 64, args.seed)
        _SETUP[args.train] = time.perf_counter() - start
    return _SETUP[args.train]


def mt_identity(args: argparse.Namespace, model: str = "multitask") -> dict[str, Any]:
    return {"train": args.train, "encoder": model_config_dict(model_cfg(args, model)),
            "featurizer": args.featurizer, "epochs": int(args.mt_epochs),
            "batch_size": int(args.mt_batch_size), "lr": float(args.mt_lr),
            "min_per_class": int(args.mt_min_per_class), "seed": int(args.seed)}


def training_seed(hparams: dict[str, Any], default: int) -> int:
    """The seed a model is trained from: its ``METHOD.seed`` hyper-parameter, else ``--seed``
    (``default``; an identity's ``seed``)."""
    return int(hparams.get("seed", default))


def new_encoder(args: argparse.Namespace, seed: int, method: str = "") -> torch.nn.Module:
    from moladapt.training import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build_model(model_cfg(args, method), get_featurizer(args.featurizer), 1).encoder


#: (train spec, min_per_class) → the label matrix and graphs, built once for both multi-task models
_MT_DATA: dict[tuple[str, int], tuple[Any, np.ndarray, list[str], float]] = {}


def _multitask_data(args: argparse.Namespace, train_tasks: list[Task],
                    model: str) -> tuple[Any, np.ndarray, list[str], float]:
    """Graphs, ``[molecules, tasks]`` labels, task ids and featurization seconds of the
    multi-task training set (shared by ``multitask`` and ``multitask+ecfp`` in one call)."""
    key = (args.train, int(args.mt_min_per_class))
    if key not in _MT_DATA:
        smiles, y, task_ids = multitask_matrix(train_tasks, args.mt_min_per_class)
        print(f"[{model}] {len(smiles)} molecules × {len(task_ids)} tasks "
              f"({np.isfinite(y).mean():.2%} measured); featurizing", flush=True)
        start = time.perf_counter()
        graphs = featurize_cached(smiles, get_featurizer(args.featurizer))
        y = y[np.asarray(graphs.source_rows, dtype=np.int64)]
        _MT_DATA[key] = (graphs, y, task_ids, time.perf_counter() - start)
    return _MT_DATA[key]


def ensure_multitask(args: argparse.Namespace, train_tasks: list[Task] | None,
                     model: str = "multitask") -> tuple[Path, list[Task] | None]:
    """Supervised multi-task pretraining on the training tasks of ``model`` (``multitask``, or
    ``multitask+ecfp``: the fingerprint-fused encoder, fusion MLP included); returns the
    encoder checkpoint."""
    from moladapt.pretrain import pretrain

    out = raw_dir(args) / "models" / model
    ckpt = out / "model.pt"
    identity = mt_identity(args, model)
    work = args.work_dir / model
    if ckpt.exists() and _same(out / "identity.json", identity):
        print(f"[{model}] reusing {ckpt}", flush=True)
        return ckpt, train_tasks
    if (ckpt.exists() or (work / "identity.json").exists()) and not _same(work / "identity.json", identity):
        if not args.retrain:
            raise SystemExit(f"{out} / {work} hold multi-task pretraining with another configuration; "
                             "pass --retrain or another --out/--work-dir")
        shutil.rmtree(work, ignore_errors=True)
    if train_tasks is None:
        train_tasks = resolve_tasks(args.train)
    graphs, y, task_ids, featurize_s = _multitask_data(args, train_tasks, model)
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / "identity.json", identity)
    encoder = new_encoder(args, args.seed, model)
    start = time.perf_counter()
    history = pretrain(encoder, "supervised", graphs, y, epochs=args.mt_epochs,
                       batch_size=args.mt_batch_size, lr=args.mt_lr, seed=args.seed,
                       checkpoint_dir=work, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / "encoder.pt", ckpt)
    write_json(out / "pretrain.json", {
        **identity, "n_molecules": len(graphs), "n_tasks": len(task_ids),
        "featurize_seconds": featurize_s, "seconds_this_call": seconds,
        "epoch_seconds": [r["seconds"] for r in history.epochs],
        "losses": history.losses, "threads": torch.get_num_threads(),
    })
    write_json(out / "identity.json", identity)
    print(f"[{model}] pretrained in {_dur(seconds)}, final loss {history.losses[-1]:.4f}", flush=True)
    return ckpt, train_tasks


# --- evaluation ------------------------------------------------------------------------------


def eval_spec(args: argparse.Namespace, method: str, ckpts: dict[str, Path]) -> dict[str, Any]:
    """Keyword arguments of :func:`few_shot` for one method."""
    if is_meta(method):
        return {"method": base_method(method), "checkpoint": ckpts[method],
                "hparams": adaptation_hparams(args, method) or None}
    if is_multitask(method):
        return {"method": "finetune", "checkpoint": ckpts[multitask_model(method)],
                "hparams": MT_METHODS[base_method(method)]}
    if method == SCRATCH:
        return {"method": "finetune", "hparams": {"mode": "full"}, "encoder_cfg": model_cfg(args),
                "featurizer": args.featurizer}
    return {"method": without_variant(method), "hparams": baseline_hparams(args, method)}


def baseline_hparams(args: argparse.Namespace, method: str) -> dict[str, Any] | None:
    """An RF/kNN baseline's hyper-parameters: counts with ``--ecfp-counts``, then its ``--hparam``
    entries (``rf-ecfp`` < ``rf-ecfp@tag``); ``None`` leaves every default."""
    hp = {"counts": True} if args.ecfp_counts else {}
    return {**hp, **hparam_entries(args, method)} or None


def evaluate(args: argparse.Namespace, method: str, spec: str, tasks: list[Task],
             ckpts: dict[str, Path]) -> None:
    out = raw_dir(args) / group_dir_name(spec) / method
    start = time.perf_counter()
    run = few_shot(tasks=tasks, support_sizes=args.support, draws=args.draws, output=out,
                   seed=args.seed, label=method, plot=False, tasks_name=spec,
                   **eval_spec(args, method, ckpts))
    wall = time.perf_counter() - start
    timing_path = out / "timing.json"
    timing = json.loads(timing_path.read_text(encoding="utf-8")) if timing_path.exists() else {}
    timing["wall_seconds"] = float(timing.get("wall_seconds", 0.0)) + wall
    timing["episodes_computed"] = int(timing.get("episodes_computed", 0)) + run.n_new
    timing["threads"] = torch.get_num_threads()
    write_json(timing_path, timing)
    print(f"[{method} @ {spec}] {run.n_new} new rows in {_dur(wall)}", flush=True)


# --- the CPU-hour estimate -------------------------------------------------------------------


def _episode_time(fit_predict, graphs, y, support: np.ndarray, query: np.ndarray) -> float:
    start = time.perf_counter()
    fit_predict(graphs.subset(support), y[support], graphs.subset(query))
    return time.perf_counter() - start


def _warmup_fit_predict(args: argparse.Namespace, method: str):
    if is_baseline(method):
        return build_baseline(without_variant(method), baseline_hparams(args, method), seed=args.seed)
    encoder = new_encoder(args, args.seed, method)
    if is_meta(method):
        adapter = build_adapter(base_method(method), method_hparams(args, method), args.seed)
    else:
        no_files = dict.fromkeys(("multitask", "multitask" + ECFP_SUFFIX), Path())
        adapter = build_adapter("finetune", eval_spec(args, method, no_files)["hparams"], args.seed)
    return adapter.fit_predict(encoder)


def estimate(args: argparse.Namespace, eval_groups: dict[str, list[Task]], cache: TaskFeatureCache) -> float:
    """Measure a few episodes per method, print the CPU-hour estimate of what is left."""
    sampler = EpisodeSampler()
    ks = args.support
    all_tasks = [t for tasks in eval_groups.values() for t in tasks]
    fits = [t for t in all_tasks if len(t) >= ks[-1] + 48]
    task = min(fits, key=len) if fits else max(all_tasks, key=len)
    item = cache(task)
    graphs, y = item.graphs, item.y
    k_hi = max([k for k in ks if k <= len(y) - 32] or [ks[0]])
    ep_lo = sampler.sample(item.task, ks[0], 0)
    ep_hi = sampler.sample(item.task, k_hi, 0)
    q1 = ep_hi.query[: min(16, len(ep_hi.query))]
    q2 = ep_lo.query[: min(len(ep_lo.query), len(q1) + 256)]
    print(f"warm-up on task {task.task_id} ({len(task)} molecules), k={ks[0]} and k={k_hi}", flush=True)
    start = time.perf_counter()
    sample_smiles = list(task.smiles[:300])
    cache.featurizer.featurize(sample_smiles)
    per_mol = (time.perf_counter() - start) / len(sample_smiles)
    per_method: dict[str, tuple[float, float, float]] = {}
    measured: dict[str, tuple[float, float, float]] = {}
    for method in args.methods:
        key = "finetune-full" if method in ("mt-finetune", SCRATCH) else method  # same cost
        if key in measured:
            per_method[method] = measured[key]
            continue
        fp = _warmup_fit_predict(args, method)
        _episode_time(fp, graphs, y, ep_lo.support, q1)  # warm caches (fingerprints, allocator)
        t_lo = _episode_time(fp, graphs, y, ep_lo.support, q1)
        t_q2 = _episode_time(fp, graphs, y, ep_lo.support, q2)
        t_hi = _episode_time(fp, graphs, y, ep_hi.support, q1) if k_hi != ks[0] else t_lo
        per_query = max(0.0, (t_q2 - t_lo) / max(1, len(q2) - len(q1)))
        slope = max(0.0, (t_hi - t_lo) / (k_hi - ks[0])) if k_hi != ks[0] else 0.0
        per_method[method] = measured[key] = (t_lo - per_query * len(q1), slope, per_query)
    n_eval_mol = sum(len(t) for t in all_tasks)
    total = per_mol * n_eval_mol
    lines = [f"  featurize {n_eval_mol} evaluation molecules (if not cached)   {_dur(total)}"]
    for spec, tasks in eval_groups.items():
        for method in args.methods:
            base, slope, per_query = per_method[method]
            done = load_results(raw_dir(args) / group_dir_name(spec) / method / "results.csv")
            done_keys = set(zip(done["task_id"], done["k"], done["draw"], strict=True))
            seconds, n = 0.0, 0
            for t in tasks:
                for k in ks:
                    try:
                        sampler.num_support_positives(t, k)
                    except TaskTooSmall:
                        continue
                    todo = sum((t.task_id, k, d) not in done_keys for d in range(args.draws))
                    seconds += todo * (max(base, 0.0) + slope * (k - ks[0]) + per_query * (len(t) - k))
                    n += todo
            total += seconds
            lines.append(f"  eval  {spec:<14} {method:<17} {n:>6} episodes  {_dur(seconds)}")
    # training: meta-training steps and multi-task pretraining, measured on a few train tasks
    needs_meta = list(dict.fromkeys(model_name(args, m) for m in args.methods if is_meta(m)))
    mt_models = sorted({multitask_model(m) for m in args.methods if is_multitask(m)})
    needs_mt = bool(mt_models)
    if needs_meta or needs_mt:
        train_tasks = resolve_tasks(args.train)
        few = [t for t in train_tasks if len(t) >= 48][:8] or train_tasks[:8]
        n_train_mol = sum(len(t) for t in train_tasks)
        if needs_meta:
            seconds = per_mol * n_train_mol
            total += seconds
            lines.append(f"  featurize {n_train_mol} training molecules (if not cached)  {_dur(seconds)}")
        for t in few:
            cache(t)
        for method in needs_meta:
            ident = meta_identity(args, method)
            if (raw_dir(args) / "models" / method / "model.pt").exists() and _same(
                    raw_dir(args) / "models" / method / "identity.json", ident):
                continue
            adapter = build_adapter(base_method(method), {**meta_hparams(args, method), "meta_steps": 2},
                                    args.seed)
            encoder = new_encoder(args, args.seed, method)
            start = time.perf_counter()
            adapter.meta_train(encoder, few, cache)
            per_step = (time.perf_counter() - start) / 2
            steps = int(meta_hparams(args, method)["meta_steps"])  # a tag may set its own
            seconds = per_step * steps
            total += seconds
            lines.append(f"  train {method:<32} {steps:>6} steps     {_dur(seconds)}"
                         f"  ({1 / per_step:.3f} steps/s)")
            if args.valid != "none":
                from moladapt.adapt.base import MetaValidation

                checks = steps // args.validate_every + 2  # + before training and the last step
                start = time.perf_counter()
                MetaValidation(resolve_tasks(args.valid), args.validate_every,
                               args.validation_support).score(adapter, encoder, cache)
                seconds = (time.perf_counter() - start) * checks
                total += seconds
                lines.append(f"  validate {method:<29} {checks:>6} checks    {_dur(seconds)}")
        mt_featurized = False
        for model in mt_models:
            if _same(raw_dir(args) / "models" / model / "identity.json", mt_identity(args, model)):
                continue
            from moladapt.pretrain import pretrain

            n_mol = len({s for t in train_tasks for s in t.smiles})
            n_tasks = len(train_tasks)
            mols = list(dict.fromkeys(s for t in few for s in t.smiles))
            g = get_featurizer(args.featurizer).featurize(mols)
            bs = min(args.mt_batch_size, len(g) // 2)
            yy = np.random.default_rng(0).choice([0.0, 1.0, np.nan], size=(len(g), n_tasks)).astype(np.float32)
            start = time.perf_counter()
            hist = pretrain(new_encoder(args, args.seed, model), "supervised", g, yy, epochs=1, batch_size=bs,
                            progress=False)
            per_batch = (time.perf_counter() - start) / max(1, hist.epochs[-1]["batches"])
            per_batch *= args.mt_batch_size / bs
            seconds = per_batch * math.ceil(n_mol / args.mt_batch_size) * args.mt_epochs
            if not mt_featurized:  # the models share one featurization (cached)
                seconds += per_mol * n_mol
                mt_featurized = True
            total += seconds
            lines.append(f"  train {model} ({n_mol} molecules × {n_tasks} tasks, {args.mt_epochs} epochs)"
                         f"  {_dur(seconds)}")
    threads = torch.get_num_threads()
    print("Estimated time still to run (wall, at the measured speed):\n" + "\n".join(lines), flush=True)
    print(f"TOTAL ≈ {total / 3600:.2f} h wall with {threads} thread(s) ≈ "
          f"{total * threads / 3600:.1f} CPU hours", flush=True)
    return total * threads / 3600


# --- the report ------------------------------------------------------------------------------


def _collect(args: argparse.Namespace, spec: str) -> pd.DataFrame:
    frames = []
    base = raw_dir(args) / group_dir_name(spec)
    order = {m: i for i, m in enumerate(ALL_METHODS)}
    paths = sorted(base.glob("*/results.csv"),
                   key=lambda p: (order.get(base_method(p.parent.name), 99), p.parent.name))
    for path in paths:
        frame = load_results(path)
        if len(frame):
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _fmt_cell(row: pd.Series) -> str:
    if not row["n_tasks"]:
        return "–"
    lo, hi = row["delta_auprc_ci_low"], row["delta_auprc_ci_high"]
    half = "" if math.isnan(lo) else f" ± {(hi - lo) / 2:.3f}"
    return f"{row['delta_auprc_mean']:.3f}{half}"


def _table(summary: pd.DataFrame, ks: Sequence[int], published: bool) -> list[str]:
    """The ΔAUPRC table of one group from its ``summarize_few_shot`` frame."""
    head = "| method | " + " | ".join(f"k={k}" for k in ks) + " | tasks (per k) | draws |"
    lines = [head, "|---" * (len(ks) + 3) + "|"]
    methods = list(pd.unique(summary["method"]))
    for i, method in enumerate(methods):
        part = summary[summary["method"] == method].set_index("k")
        cells = [_fmt_cell(part.loc[k]) if k in part.index else "–" for k in ks]
        n = "/".join(str(int(part.loc[k, "n_tasks"])) if k in part.index else "0" for k in ks)
        draws = int(part["draws_per_task"].max())
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {n} | {draws} |")
        # the published row goes under the last variant of its method (protonet, protonet+ecfp)
        last_variant = all(base_method(m) != base_method(method) for m in methods[i + 1:])
        if published and base_method(method) in PUBLISHED and last_variant:
            name, values = PUBLISHED[base_method(method)]
            pub = [f"{values[DEFAULT_K.index(k)]:.3f}" if k in DEFAULT_K else "–" for k in ks]
            lines.append(f"| ↳ *FS-Mol paper: {name}* | " + " | ".join(f"*{v}*" for v in pub) + " | 157 | 10 |")
    return lines


def published_comparison(summary: pd.DataFrame) -> list[str]:
    """For each published FS-Mol row, moladapt's best row of the same family (the rows the table
    lists above it; best = highest mean ΔAUPRC over the published k) and its differences, from
    the in-distribution group's ``summarize_few_shot`` frame."""
    lines = []
    for family, (name, values) in PUBLISHED.items():
        best: tuple[float, str, list[float]] | None = None
        for method in pd.unique(summary["method"]):
            if base_method(method) != family:
                continue
            part = summary[summary["method"] == method].set_index("k")["delta_auprc_mean"]
            if not all(k in part.index for k in DEFAULT_K):
                continue
            diffs = [float(part.loc[k]) - v for k, v in zip(DEFAULT_K, values, strict=True)]
            if best is None or np.mean(diffs) > best[0]:
                best = (float(np.mean(diffs)), method, diffs)
        if best is not None:
            _, method, diffs = best
            above = sum(d >= 0 for d in diffs)
            lines.append(f"| {name} | {method} | " + "/".join(f"{d:+.3f}" for d in diffs)
                         + f" | {above} of {len(diffs)} |")
    if not lines:
        return []
    return ["Against FS-Mol's published rows (Stanley et al. 2021, Table 2), the best moladapt row of "
            "each family on `fsmol-test` (highest mean ΔAUPRC over k; differences are moladapt − "
            "published, ΔAUPRC at k = " + ", ".join(map(str, DEFAULT_K)) + "):", "",
            "| published | moladapt row | difference | at or above at |", "|---|---|---|---|", *lines]


def leaders(summary: pd.DataFrame, spec: str) -> str:
    """One line: the row with the highest mean ΔAUPRC at each k of a group (from its
    ``summarize_few_shot`` frame) and its margin over the runner-up (a glance only: the runs
    differ in draws, and paired tests decide)."""
    cells = []
    for k, part in summary.groupby("k"):
        ranked = part.sort_values("delta_auprc_mean", ascending=False)
        first = ranked.iloc[0]
        margin = (f" (+{first['delta_auprc_mean'] - ranked.iloc[1]['delta_auprc_mean']:.3f} over "
                  f"{ranked.iloc[1]['method']})" if len(ranked) > 1 else "")
        cells.append(f"k = {int(k)}: {first['method']} {first['delta_auprc_mean']:.3f}{margin}")
    return f"Highest mean ΔAUPRC on `{spec}` — " + "; ".join(cells) + "."


def shared_episodes(results: pd.DataFrame, methods: Sequence[str], metric: str) -> pd.DataFrame | None:
    """``metric`` of each method (columns) on the scored episodes, (task_id, k, draw), that every
    one of them has (the same episode is the same support set for every method), or None when
    there are none."""
    ok = results[(results["status"] == "ok") & results["method"].isin(methods)]
    episodes = ok.pivot_table(index=["task_id", "k", "draw"], columns="method", values=metric)
    if any(m not in episodes for m in methods):
        return None
    shared = episodes[list(methods)].dropna()
    return None if shared.empty else shared


def relative_gain(results: pd.DataFrame, method: str, baseline: str, n_boot: int = 5000,
                  seed: int = 0) -> dict[str, Any] | None:
    """(AUPRC_method − AUPRC_baseline) / AUPRC_baseline over the (task, k) cells both have.

    Only the episodes both methods were evaluated on count (the same (task, k, draw) is the
    same support set for every method), so a baseline run with fewer draws is still a paired
    comparison. Each (task, k) is the mean over those draws; the ratio of the means is
    bootstrapped over tasks.
    """
    shared = shared_episodes(results, [method, baseline], "auprc")
    if shared is None:
        return None
    both = shared.groupby(level=["task_id", "k"]).mean()
    per_task = both.groupby(level="task_id").agg(["sum", "count"])
    a = per_task[(method, "sum")].to_numpy()
    b = per_task[(baseline, "sum")].to_numpy()
    gain = a.sum() / b.sum() - 1
    lo = hi = math.nan
    if len(a) > 1:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(a), size=(n_boot, len(a)))
        boots = a[idx].sum(1) / b[idx].sum(1) - 1
        lo, hi = np.quantile(boots, [0.025, 0.975])
    per_k = {int(k): float(g[method].mean() / g[baseline].mean() - 1) for k, g in both.groupby(level="k")}
    return {"gain": float(gain), "ci": (float(lo), float(hi)), "n_tasks": len(a), "cells": len(both),
            "draws": int(shared.index.get_level_values("draw").nunique()), "per_k": per_k}


def headline_gain(gains: dict[tuple[str, str, str], dict[str, Any] | None], specs: Sequence[str]) -> list[str]:
    """The answer to Nguyen et al.'s question: each meta-learned method against its strongest
    multi-task baseline with the same encoder features (the lowest in-distribution gain); the
    best of these in distribution among the fine-tuned meta-initialisations (MAML, FO-MAML,
    ANIL: the paper's question), then — when it is another method — among every meta-learner
    (ProtoNet too, which classifies by prototypes without fine-tuning)."""
    in_spec = specs[0]
    fair: dict[str, tuple[float, str]] = {}
    for (method, baseline, spec), g in gains.items():
        if g and spec == in_spec and is_fused(method) == is_fused(baseline):
            fair[method] = min(fair.get(method, (math.inf, "")), (g["gain"], baseline))
    if not fair:
        return ["", "No answer yet: it needs a meta-learned method and a multi-task baseline with the same "
                "encoder features (both graph-only, or both fingerprint-fused) on the same tasks."]

    def sentence(lead: str, best: str) -> str:
        baseline = fair[best][1]
        parts = []
        for spec in specs:
            g = gains.get((best, baseline, spec))
            parts.append(f"{spec}: {_pct(g['gain'])} [{_pct(g['ci'][0])}, {_pct(g['ci'][1])}]"
                         + (f" ({_draws(g)})" if "draws" in g else "") if g else f"{spec}: –")
        return (f"{lead} against its strongest multi-task baseline with the same features: **{best}** vs "
                f"{baseline} — " + "; ".join(parts))

    lines = []
    inits = [m for m in fair if base_method(m) in INIT_METHODS]
    best_init = max(inits, key=lambda m: fair[m][0]) if inits else None
    if best_init is not None:
        lines += ["", sentence("Best meta-initialisation in distribution", best_init)
                  + f" (Nguyen et al.: {_pct(NGUYEN_GAIN['in'])} / {_pct(NGUYEN_GAIN['ood'])})."]
    best_any = max(fair, key=lambda m: fair[m][0])
    if best_any != best_init:
        lines += ["", sentence("Best meta-learned method of any kind in distribution", best_any)
                  + (" (prototypes in the meta-learned embedding, no fine-tuning)."
                     if base_method(best_any) == "protonet" else ".")]
    return lines


def replicate_sets(identities: dict[str, dict[str, Any]]) -> list[list[tuple[int, str]]]:
    """Meta-trained models that differ only in their seed (same base method, training tasks,
    encoder, features, hyper-parameters, start), as ``[(seed, model), ...]`` sorted by seed, for
    every configuration trained from two seeds or more."""
    sets: dict[str, list[tuple[int, str]]] = {}
    for name, ident in identities.items():
        if not is_meta(name):
            continue
        hparams = {k: v for k, v in (ident.get("hparams") or {}).items() if k != "seed"}
        rest = {k: v for k, v in ident.items() if k not in ("method", "seed", "hparams")}
        key = json.dumps({"base": base_method(name), "hparams": hparams, **rest}, sort_keys=True)
        sets.setdefault(key, []).append((training_seed(ident.get("hparams") or {}, ident.get("seed", 0)), name))
    return [sorted(members) for members in sets.values() if len({seed for seed, _ in members}) > 1]


def seed_means(results: pd.DataFrame, models: Sequence[str]) -> dict[str, Any] | None:
    """Mean ΔAUPRC per k of each model on the episodes every one of them has (a (task, k) is the
    mean over those draws, then the mean over tasks), with the mean over models and their spread."""
    shared = shared_episodes(results, models, "delta_auprc")
    if shared is None:
        return None
    per_k = shared.groupby(level=["task_id", "k"]).mean().groupby(level="k").mean()
    return {"mean": per_k.mean(axis=1), "spread": per_k.max(axis=1) - per_k.min(axis=1),
            "n_tasks": int(shared.index.get_level_values("task_id").nunique()),
            "draws": int(shared.index.get_level_values("draw").nunique())}


def _seed_lines(args: argparse.Namespace, data: dict[str, pd.DataFrame], specs: Sequence[str],
                ks: Sequence[int]) -> tuple[list[str], list[str]]:
    """The seed-replicate section: each configuration meta-trained from several seeds, its mean
    ΔAUPRC over seeds and their spread (run-to-run variation, which the paired tests over tasks
    do not see), and on fsmol-test the seed mean against FS-Mol's published row; then the
    Summary's lines for those seed means (the published comparison's best row is the best of
    its seeds, an optimistic pick)."""
    rows, summary = [], []
    for members in replicate_sets(_model_identities(args)):
        models = [name for _, name in members]
        label = f"{models[0]} (seeds {', '.join(str(seed) for seed, _ in members)})"
        for spec in specs:
            if data[spec].empty or (s := seed_means(data[spec], models)) is None:
                continue
            cells = [f"{s['mean'][k]:.3f} ({s['spread'][k]:.3f})" if k in s["mean"].index else "–" for k in ks]
            rows.append(f"| {label} | {spec} | " + " | ".join(cells) + f" | {s['n_tasks']}×{s['draws']} |")
            family = base_method(models[0])
            if spec.startswith("fsmol-test") and family in PUBLISHED:
                name, values = PUBLISHED[family]
                diffs = [f"{s['mean'][k] - v:+.3f}" if k in s["mean"].index else "–"
                         for k, v in zip(DEFAULT_K, values, strict=True)]
                cells = [diffs[DEFAULT_K.index(k)] if k in DEFAULT_K else "–" for k in ks]
                rows.append(f"| ↳ *seed mean − FS-Mol's {name}* | | " + " | ".join(cells) + " | |")
                summary.append(f"Mean over seeds of {label} ({_draws(s)}) against FS-Mol's "
                               f"published {name}: " + "/".join(diffs) + " (*Seed replicates*).")
    if not rows:
        return [], []
    return ["## Seed replicates", "",
            "Configurations meta-trained from more than one seed (models differing only in `seed`; "
            "evaluated on the same episodes). Cells: mean ΔAUPRC over the seeds (spread: highest − "
            "lowest seed), each seed's value taken over the (task × draw) episodes all seeds share. "
            "The spread is run-to-run variation, which the tables' confidence intervals and the paired "
            "tests over tasks do not include.", "",
            "| configuration | group | " + " | ".join(f"k={k}" for k in ks) + " | tasks×draws |",
            "|---" * (len(ks) + 3) + "|", *rows, ""], [line for text in summary for line in ("", text)]


def _draws(g: dict[str, Any]) -> str:
    return f"{g['draws']} shared draw" + ("s" if g["draws"] != 1 else "")


def _pct(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:+.1%}"


def _configuration_lines(args: argparse.Namespace) -> list[str]:
    """One row per trained model: its encoder and hyper-parameters, from identity.json."""
    rows = []
    for name, ident in _model_identities(args).items():
        enc = ident["encoder"]
        arch = f"{enc['encoder'].upper()} {enc['num_layers']}×{enc['hidden_dim']}"
        if (enc["jk"], enc["pooling"]) != ("last", "mean"):
            arch += f" (jk {enc['jk']}, {enc['pooling']} pooling)"
        if enc.get("fingerprint_bits"):
            arch += (f" ⊕ ECFP{2 * enc['fingerprint_radius']} {enc['fingerprint_bits']} "
                     f"{'counts' if enc.get('fingerprint_counts') else 'bits'} → MLP "
                     + "→".join(str(d) for d in enc["fingerprint_dims"]))
        hp = ident.get("hparams") or {k: ident[k] for k in ("epochs", "batch_size", "lr") if k in ident}
        hp_text = ", ".join(f"{k}={v}" for k, v in hp.items() if k != "seed")
        if ident.get("validation"):
            meta_path = raw_dir(args) / "models" / name / "meta.json"
            kept = json.loads(meta_path.read_text(encoding="utf-8"))["validation"]["best_step"]
            hp_text += (f"; best of validations on {ident['validation']['tasks']} every "
                        f"{ident['validation']['every']} steps: step {kept}")
        if ident.get("init"):
            hp_text += f"; from the multi-task model `{ident['init']['model']}`"
        rows.append(f"| {name} | {arch} | {ident['featurizer']} | {hp_text} | {training_seed(hp, ident['seed'])} |")
    if not rows:
        return []
    return ["## Trained models", "",
            "Every hyper-parameter not listed is the adapter's default (`moladapt.adapt`).", "",
            "| model | encoder | features | hyper-parameters | seed |", "|---|---|---|---|---|",
            *rows, ""]


def _model_identities(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The ``identity.json`` of every trained model (meta-trained or multi-task), by model."""
    return {path.parent.name: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted((raw_dir(args) / "models").glob("*/identity.json"))}


def _stored_configs(args: argparse.Namespace, spec: str) -> dict[str, dict[str, Any]]:
    """The ``config.yaml`` of every stored method directory of a group, by method."""
    return {path.parent.name: yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            for path in sorted((raw_dir(args) / group_dir_name(spec)).glob("*/config.yaml"))}


def _reproduce_lines(args: argparse.Namespace, specs: list[str]) -> list[str]:
    """The commands that give the stored rows (they resume: only what is missing runs), one
    per set of methods sharing encoder dimensions and draws, read from the stored configs."""
    defaults = {"meta_steps": args.meta_steps, "meta_batch_size": args.meta_batch_size}
    commands: dict[tuple, dict[str, list[str]]] = {}
    identities = _model_identities(args)
    for method, cfg in _stored_configs(args, specs[0]).items():
        model = method if is_meta(method) else multitask_model(method) if is_multitask(method) else None
        ident = identities.get(str(model))
        if is_meta(method) and ident is None:  # a variant sharing its base's model
            ident = identities.get(without_variant(method))
        ident = ident or {}
        enc = ident.get("encoder") or cfg.get("encoder") or {}
        options = [f"--draws {cfg.get('draws', args.draws)}"]
        if enc.get("num_layers"):
            options.append(f"--layers {enc['num_layers']} --hidden {enc['hidden_dim']}")
        if enc.get("fingerprint_counts") or (cfg.get("params") or {}).get("counts"):
            options.append("--ecfp-counts")
        hparams = {k: v for k, v in (ident.get("hparams") or {}).items() if defaults.get(k) != v}
        hparams |= {k: v for k, v in (cfg.get("params") or {}).items()
                    if k in ADAPTATION_HPARAMS and v is not None}
        if is_baseline(method):
            hparams |= _changed_baseline_params(method, cfg.get("params") or {})
        extra = [_hparam_option(method, k, v) for k, v in hparams.items()]
        if is_meta(method) and ident.get("init"):
            extra.append(f"--meta-init {method}")
        if is_multitask(method) and ident.get("epochs") not in (None, args.mt_epochs):
            extra.append(f"--mt-epochs {ident['epochs']}")
        entry = commands.setdefault(tuple(options), {"methods": [], "extra": []})
        entry["methods"].append(method)
        entry["extra"] += extra
    if not commands:
        return []
    ood = f" --ood {specs[1]}" if len(specs) > 1 else " --ood none"
    lines = ["## Reproduce", "",
             "The rows above come from these commands (read from the stored configurations; each "
             f"evaluates `{specs[0]}` and the out-of-distribution group, and resumes: only missing "
             "rows and models are computed):", "", "```"]
    for options, entry in commands.items():
        lines.append("MOLADAPT_DATA_DIR=../shared/data python benchmarks/fsmol.py --methods "
                     + ",".join(entry["methods"]) + " " + " ".join([*options, *entry["extra"]])
                     + ood + " --no-estimate")
    return [*lines, "```", ""]


def _changed_baseline_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A stored baseline row's parameters that differ from its class's defaults (less ``seed``,
    the run's, and ``counts``, which ``--ecfp-counts`` gives)."""
    defaults = inspect.signature(BASELINES.get(without_variant(method))).parameters
    return {k: v for k, v in params.items()
            if k not in ("seed", "counts") and (k not in defaults or defaults[k].default != v)}


def _hparam_option(method: str, name: str, value: Any) -> str:
    text = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
    return "--hparam " + shlex.quote(f"{method}.{name}={text}")


def report_notes(args: argparse.Namespace) -> list[str]:
    """The report's note paragraphs: those kept in ``raw/fsmol/notes.md`` (blank-line separated),
    then this call's new ``--note`` entries, which are appended there, so that rewriting the
    report (a later run, ``--report-only``) never drops a note."""
    path = raw_dir(args) / "notes.md"
    kept = ([block.strip() for block in path.read_text(encoding="utf-8").split("\n\n") if block.strip()]
            if path.exists() else [])
    new = [note.strip() for note in args.note if note.strip() and note.strip() not in kept]
    if new:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "\n\n".join([*kept, *new]) + "\n")
    return [*kept, *new]


def _meta_init_text(args: argparse.Namespace) -> str:
    """The meta-trained models that started from a multi-task model (``--meta-init``)."""
    return "".join(f"; `{name}` = meta-trained from the multi-task model `{ident['init']['model']}` "
                   "instead of random weights" for name, ident in _model_identities(args).items() if ident.get("init"))


def _baseline_input(args: argparse.Namespace, spec: str) -> str:
    """How the stored RF/kNN rows read the fingerprint, and which variants search their
    hyper-parameters per episode, from their configurations."""
    kinds, searched = set(), []
    for method, cfg in _stored_configs(args, spec).items():
        if not is_baseline(method):
            continue
        params = cfg.get("params") or {}
        if method in BASELINE_METHODS:
            kinds.add("counts (FS-Mol's input)" if params.get("counts") else "bits")
        elif params.get("param_grid") is not None:
            grid = "FS-Mol's grid" if params["param_grid"] == "fsmol" else "a grid"
            searched.append(f"`{method}` = `{without_variant(method)}` with {grid} searched on each support "
                            f"set ({params.get('cv_folds')}-fold, {params.get('grid_scoring')})")
    text = ("; `rf-ecfp` / `knn-ecfp` = random forest / Tanimoto kNN on ECFP4 " + " and ".join(sorted(kinds))
            if kinds else "")
    return text + "".join(f"; {s}" for s in searched)


def _gain_lines(data: dict[str, pd.DataFrame], specs: Sequence[str]) -> tuple[list[str], list[str]]:
    """The relative-gain section (meta-learned methods against the multi-task baselines with
    the same encoder features) and its headline answer to Nguyen et al.'s question (empty when
    there is no pair yet)."""
    lines = ["## Meta-learning vs multi-task: relative AUPRC gain", "",
             "(AUPRC_meta − AUPRC_multitask) / AUPRC_multitask, pooled over the (task, k) "
             "cells both methods have; 95% bootstrap CI over tasks; (n×d) = tasks × draws both methods "
             "share. Nguyen, "
             f"Kreatsoulas & Branson (2020) report {_pct(NGUYEN_GAIN['in'])} in distribution and "
             f"{_pct(NGUYEN_GAIN['ood'])} out of distribution for fine-tuned meta-initialisations. "
             "Each method is paired with the multi-task baselines on its own encoder (the columns "
             f"name the graph-only ones; a `{ECFP_SUFFIX}` row is paired with their `{ECFP_SUFFIX}` "
             "forms), so the gain isolates meta-learning from the fingerprint; graph-only against "
             "fused rows are compared in the ΔAUPRC tables above. "
             "*Fine-tuned*: the meta-learned weights are an initialisation adapted on the support "
             "set (MAML, FO-MAML, ANIL); *prototypes*: ProtoNet classifies by distance to class "
             "means in the meta-learned embedding, with no fine-tuning.", ""]
    methods_present = {m for d in data.values() if not d.empty for m in d["method"].unique()}
    meta_methods = sorted((m for m in methods_present if is_meta(m)),
                          key=lambda m: (base_method(m) not in INIT_METHODS, is_fused(m), m))
    baselines = list(MT_METHODS)
    head = ("| meta-learned method | adapts by | "
            + " | ".join(f"vs {b}: {s}" for b in baselines for s in specs) + " |")
    lines += [head, "|---" * (2 + len(baselines) * len(specs)) + "|"]
    gains: dict[tuple[str, str, str], dict[str, Any] | None] = {}
    for method in meta_methods:
        cells = []
        for plain in baselines:
            baseline = plain + (ECFP_SUFFIX if is_fused(method) else "")
            for spec in specs:
                g = (None if baseline not in methods_present or data[spec].empty
                     else relative_gain(data[spec], method, baseline))
                gains[(method, baseline, spec)] = g
                cells.append("–" if g is None else
                             f"{_pct(g['gain'])} [{_pct(g['ci'][0])}, {_pct(g['ci'][1])}] ({g['n_tasks']}×{g['draws']})")
        if any(c != "–" for c in cells):
            kind = "fine-tuning" if base_method(method) in INIT_METHODS else "prototypes"
            lines.append(f"| {method} | {kind} | " + " | ".join(cells) + " |")
    if not any(gains.values()):
        return [*lines[:-2], "Not available yet: it needs a meta-learned method and a multi-task "
                "baseline with the same encoder features evaluated on the same tasks.", ""], []
    headline = headline_gain(gains, specs)
    return [*lines, *headline, ""], headline


def write_report(args: argparse.Namespace) -> Path | None:
    specs = report_groups(args)
    data = {spec: _collect(args, spec) for spec in specs}
    record_ood_groups(args, data)
    if all(d.empty for d in data.values()):
        print("no results yet: nothing to report", flush=True)
        return None
    ks = sorted(set(DEFAULT_K) | {int(k) for d in data.values() if not d.empty for k in d["k"]})
    cfg = model_cfg(args)
    methods_run = {m for d in data.values() if not d.empty for m in d["method"].unique()}
    gnn_run = not all(is_baseline(m) for m in methods_run)
    notes = report_notes(args)
    lines = [
        f"# FS-Mol few-shot benchmark — {dt.date.today()}",
        "",
        f"Written by `benchmarks/fsmol.py` on {platform.machine()} ({os.cpu_count()} cores). "
        + (f"Encoder {cfg.encoder.upper()} {cfg.num_layers}×{cfg.hidden_dim} ({args.featurizer} features), "
           f"meta-training {args.meta_steps} steps × {args.meta_batch_size} episodes on `{args.train}` "
           "(FS-Mol's published ProtoNet: 10,000 steps × 16 tasks), "
           f"multi-task pretraining {args.mt_epochs} epochs. " if gnn_run else
           "Only the fingerprint baselines have been run so far. ")
        + "Draws per task differ by method (the draws column); paired comparisons and relative gains "
        "use only the episodes both methods share. Cells: mean ΔAUPRC over tasks ± half "
        "the 95% percentile-bootstrap CI over tasks (a task's value is its mean over draws); "
        "tasks too small for a k are left out of that k (see the task counts). Methods: "
        "`mt-finetune` / `mt-head` = supervised multi-task pretraining then full / head-only "
        "fine-tuning; `scratch-finetune` = single-task fine-tuning of a random encoder; "
        "`<method>+ecfp` = the method on the fingerprint-fused encoder (FS-Mol's ProtoNet "
        "features gnn+ecfp+fc)" + _meta_init_text(args) + _baseline_input(args, specs[0]) + "."
        + (" What each run changed and found is under *Run notes* at the end." if notes else ""),
        "",
    ]
    gain_lines, headline = _gain_lines(data, specs)
    seed_lines, seed_summary = _seed_lines(args, data, specs, ks)
    summaries = {spec: summarize_few_shot(frame, ("delta_auprc",)) for spec, frame in data.items() if not frame.empty}
    comparison = published_comparison(summaries[specs[0]]) if specs[0].startswith("fsmol-test") and specs[0] in summaries else []
    glance = [line for spec in specs if spec in summaries for line in ("", leaders(summaries[spec], spec))]
    lines += ["## Summary", "", *comparison, *seed_summary, *headline, *glance, ""]
    for i, spec in enumerate(specs):
        frame = data[spec]
        kind = "in distribution" if i == 0 else "out of distribution"
        lines += [f"## ΔAUPRC on `{spec}` ({kind})", ""]
        if frame.empty:
            lines += ["(no results yet)", ""]
            continue
        lines += _table(summaries[spec], ks, published=(i == 0 and spec.startswith("fsmol-test")))
        if i == 0 and spec.startswith("fsmol-test"):
            lines += ["", "Published rows: Stanley et al., FS-Mol (NeurIPS 2021), Table 2 — "
                      "157 test tasks, 10 draws; their episodes differ from ours (other sampler)."]
        png = args.out / f"fsmol_{group_dir_name(spec)}_delta_auprc_vs_k.png"
        if (frame["status"] == "ok").any():
            plot_delta_auprc_vs_k(frame, png)
            lines += ["", f"![ΔAUPRC vs k, {spec}]({png.name})"]
        lines.append("")
    lines += gain_lines
    lines += seed_lines
    lines += _configuration_lines(args)
    lines += _reproduce_lines(args, specs)
    lines += ["## Meta-training speed", "",
              "Outer steps only: the episode stream's setup (loading the training tasks' graphs) and "
              "validation checks are measured separately and left out; a resumed run counts the steps "
              "run after its resume point.", "",
              "| method | steps | episodes/step | time | steps/s | vs MAML | threads |",
              "|---|---|---|---|---|---|---|"]
    speeds = {}
    model_dirs = sorted((p.parent for p in (raw_dir(args) / "models").glob("*/meta.json")),
                        key=lambda d: (META_METHODS.index(base_method(d.name)) if is_meta(d.name) else 99, d.name))
    for model_dir in model_dirs:
        method, path = model_dir.name, model_dir / "meta.json"
        meta = json.loads(path.read_text(encoding="utf-8"))
        steps = int(meta["params"]["meta_steps"]) - int(meta.get("resumed_from_step", 0))  # timed here
        seconds = float(meta.get("step_seconds", meta["seconds"]))
        speeds[method] = steps / seconds
        rel = f"{speeds[method] / speeds['maml']:.2f}×" if "maml" in speeds else "–"
        lines.append(f"| {method} | {steps} | {meta['params']['meta_batch_size']} | {_dur(seconds)} "
                     f"| {speeds[method]:.3f} | {rel} | {meta.get('threads', '–')} |")
    if not speeds:
        lines = lines[:-2] + ["No meta-training run yet."]
    for model in ("multitask", "multitask" + ECFP_SUFFIX):
        mt_path = raw_dir(args) / "models" / model / "pretrain.json"
        if mt_path.exists():
            mt = json.loads(mt_path.read_text(encoding="utf-8"))
            lines += ["", f"Multi-task pretraining (`{model}`): {mt['n_molecules']} molecules × "
                      f"{mt['n_tasks']} tasks, {mt['epochs']} epochs in {_dur(sum(mt['epoch_seconds']))} "
                      f"(+ {_dur(mt['featurize_seconds'])} featurization), final loss {mt['losses'][-1]:.4f}."]
    lines.append("")

    lines += ["## Evaluation time", "",
              "Episode compute: the sum of the protocol's per-episode fit + predict times; wall: "
              "the evaluation calls' wall time (with featurization), summed over resumed runs.", "",
              "| group | method | episodes | episode compute | wall | s / episode |",
              "|---|---|---|---|---|---|"]
    for spec in specs:
        frame = data[spec]
        if frame.empty:
            continue
        for method in pd.unique(frame["method"]):
            part = frame[(frame["method"] == method) & (frame["status"] == "ok")]
            timing_path = raw_dir(args) / group_dir_name(spec) / method / "timing.json"
            wall = (json.loads(timing_path.read_text(encoding="utf-8"))["wall_seconds"]
                    if timing_path.exists() else math.nan)
            secs = float(part["seconds"].sum())
            lines.append(f"| {spec} | {method} | {len(part)} | {_dur(secs)} | {_dur(wall)} "
                         f"| {secs / max(1, len(part)):.2f} |")
    lines.append("")
    if notes:
        lines += ["## Run notes", "", "What each run changed and found, oldest first; a later note can "
                  "supersede an earlier one (it says so). A run a note calls *not a row* is not in the tables.", "",
                  *[line for note in notes for line in (note, "")]]
    path = args.out / "fsmol.md"
    atomic_write_text(path, "\n".join(lines))
    print(f"wrote {path}", flush=True)
    return path


# --- main ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.report_only:
        write_report(args)
        return 0
    eval_groups = {spec: load_group(spec, args.max_tasks) for spec in groups(args)}
    cache = TaskFeatureCache(args.featurizer)
    if not args.no_estimate:
        estimate(args, eval_groups, cache)
        if args.estimate_only:
            return 0
    ckpts: dict[str, Path] = {}
    train_tasks: list[Task] | None = None
    for method in args.methods:
        if is_meta(method):
            ckpts[method], train_tasks = ensure_meta_trained(args, model_name(args, method),
                                                             train_tasks, cache)
    for model in sorted({multitask_model(m) for m in args.methods if is_multitask(m)}):
        ckpts[model], train_tasks = ensure_multitask(args, train_tasks, model)
    del train_tasks
    for spec, tasks in eval_groups.items():
        for method in args.methods:
            evaluate(args, method, spec, tasks, ckpts)
    write_report(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
