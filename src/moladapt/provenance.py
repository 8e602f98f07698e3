"""What a checkpoint is and what it was trained on, back to random weights.

Every moladapt checkpoint keeps an ``extra`` record: ``pretrain`` (objectives, stages, epochs,
precision, the data it saw, final loss) for a pretraining ``encoder.pt``; ``run_config`` for a
fine-tuned ``model.pt``; ``meta`` for a meta-trained one. A run that started from another
checkpoint (``moladapt pretrain --init``, ``moladapt train --init``) stores that checkpoint's
:func:`checkpoint_record` — its path, sha256 and its own ``extra`` — so the chain of
initialisations travels inside the file, and :func:`lineage` walks it.

:func:`describe_checkpoint` gathers all of it (plus, for the bundled encoder, its model card and
build identity); :func:`format_description` renders it for ``moladapt inspect``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moladapt.config import to_plain
from moladapt.pretrain.trainer import PRETRAIN_CHECKPOINT_FORMAT


def checkpoint_record(path: str | Path, extra: dict[str, Any]) -> dict[str, Any]:
    """The record a run keeps of the checkpoint it started from: ``{"path", "sha256", "extra"}``."""
    from moladapt.bundled_models import sha256_file

    return {"path": str(Path(path).resolve()), "sha256": sha256_file(path), "extra": to_plain(extra)}


def load_init(init: str | Path, featurizer: Any) -> tuple[Any, dict[str, Any]]:
    """The checkpoint an ``init`` option names (``bundled``, ``bundled:<name>`` or a path),
    loaded for ``featurizer`` (:func:`moladapt.training.load_checkpoint`), and the
    :func:`checkpoint_record` the run keeps of it."""
    from moladapt.bundled_models import resolve_init
    from moladapt.training import load_checkpoint

    path = resolve_init(init)
    loaded = load_checkpoint(path, expected_featurizer=featurizer)
    return loaded, checkpoint_record(path, loaded.extra)


def _init_of(extra: dict[str, Any] | None) -> dict[str, Any] | None:
    if not extra:
        return None
    return (extra.get("pretrain") or {}).get("init") or extra.get("init")


def lineage(extra: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The checkpoints a model started from, newest first (each a :func:`checkpoint_record`);
    empty when it started from random weights (or predates these records)."""
    chain: list[dict[str, Any]] = []
    init = _init_of(extra)
    while init:
        chain.append(init)
        init = _init_of(init.get("extra"))
    return chain


def describe_checkpoint(path: str | Path) -> dict[str, Any]:
    """Everything a checkpoint says about itself, as plain data (see module docstring)."""
    from moladapt.bundled_models import (
        available,
        card_path,
        encoder_path,
        identity_path,
        sha256_file,
    )
    from moladapt.training import read_checkpoint_payload

    path = Path(path)
    payload = read_checkpoint_payload(path)
    if not isinstance(payload, dict) or "format" not in payload:
        raise ValueError(f"{path}: not a moladapt checkpoint")
    from moladapt.training import CHECKPOINT_FORMAT, not_a_model

    if payload["format"] not in (CHECKPOINT_FORMAT, PRETRAIN_CHECKPOINT_FORMAT):
        raise not_a_model(path, payload["format"])
    sha = sha256_file(path)
    info: dict[str, Any] = {"path": str(path), "sha256": sha, "bytes": path.stat().st_size}
    if payload["format"] == PRETRAIN_CHECKPOINT_FORMAT:  # a pretraining run's last.pt
        info |= {"format": payload["format"], "featurizer": payload["featurizer"],
                 "model": {"encoder": payload["encoder"]["name"], **payload["encoder"]["hparams"]},
                 "epochs_completed": payload["epoch"], "objectives": payload["objectives"],
                 "config": payload["config"], "lineage": lineage({"init": payload["config"].get("init")})}
    else:
        extra = payload.get("extra") or {}
        info |= {"format": payload["format"], "moladapt_version": payload.get("moladapt_version"),
                 "featurizer": payload.get("featurizer"), "model": payload.get("model_config"),
                 "task_type": payload.get("task_type"), "tasks": payload.get("task_names"),
                 "extra": extra, "lineage": lineage(extra)}
    # The bundled encoder predates the data record in encoder.pt: its build identity says it.
    bundled = {}
    for name in available():
        ident = identity_path(name)
        bundled[sha256_file(encoder_path(name))] = {
            "name": name, "card": str(card_path(name)),
            "identity": json.loads(ident.read_text()) if ident.exists() else None}
    if sha in bundled:
        info["bundled"] = bundled[sha]
    for step in info["lineage"]:
        if step["sha256"] in bundled:
            step["bundled"] = bundled[step["sha256"]]
    return to_plain(info)


def _pretrain_line(pre: dict[str, Any]) -> str:
    stages = []
    for objs, epochs in zip(pre.get("objectives") or [], (pre.get("config") or {}).get("stage_epochs") or [],
                            strict=False):
        stages.append(f"{'+'.join(o['name'] for o in objs)} × {epochs} epochs")
    cfg = pre.get("config") or {}
    data = pre.get("data") or {}
    seen = []
    if data.get("corpus"):
        seen.append(f"corpus {data['corpus']['source']} ({data['corpus']['num_molecules']} molecules)")
    if data.get("labels"):
        lab = data["labels"]
        seen.append(f"labels {lab['source']} ({lab['molecules']} molecules, {lab['tasks']} tasks)")
    return (f"pretrained: {', then '.join(stages) or '?'}; batch {cfg.get('batch_size')}, lr {cfg.get('lr')}, "
            f"{cfg.get('precision', 'fp32')}, seed {cfg.get('seed')}"
            + (f"; final loss {pre['final_loss']:.4f}" if pre.get("final_loss") is not None else "")
            + (f"; on {'; '.join(seen)}" if seen else "; the data it saw is not recorded in this file")
            + ("; COLLAPSED" if pre.get("collapsed") is not None else ""))


def _extra_lines(extra: dict[str, Any], indent: str) -> list[str]:
    lines = []
    if extra.get("pretrain"):
        lines.append(indent + _pretrain_line(extra["pretrain"]))
    run = extra.get("run_config")
    if run:
        data, train = run.get("data", {}), run.get("train", {})
        what = data.get("dataset") or data.get("csv")
        lines.append(f"{indent}trained: {what}, {data.get('split')} split, up to {train.get('epochs')} epochs"
                     + (f" (patience {train['patience']})" if train.get("patience") is not None else "") + ", "
                     f"batch {train.get('batch_size')}, lr {train.get('lr')}, seed {train.get('seed')}"
                     + (f", init {train['init']}" if train.get("init") else "")
                     + (", encoder frozen" if train.get("freeze_encoder") else ""))
    if extra.get("aux_config"):
        aux = extra["aux_config"]
        if aux.get("aux_objectives") or aux.get("source_tasks"):
            others = [*(aux.get("aux_objectives") or []), *(aux.get("source_tasks") or [])]
            lines.append(f"{indent}auxiliary tasks: {', '.join(others)}; "
                         f"{aux.get('method')}, combiner {aux.get('combiner') or 'none'}")
        else:  # the combiner recorded is a default with nothing to combine
            lines.append(f"{indent}auxiliary tasks: none (fine-tuning on the target alone)")
    transfer = extra.get("transfer")
    if transfer:
        target = (extra.get("target_csv") or {})
        what = (f"{target['path']} (label {target['label_column']}, {target['split']} split)" if target
                else transfer.get("target"))
        ratios = sorted((transfer.get("weights") or {}).items(), key=lambda kv: -kv[1])[:3]
        lines.append(f"{indent}trained by moladapt transfer: {what}, {transfer.get('method')}, "
                     f"{transfer.get('epochs')} epochs, seed {transfer.get('seed')}, "
                     f"{len(transfer.get('sources') or [])} source(s)"
                     + ("; largest ratios " + ", ".join(f"{k.removeprefix('tdc_')} {v:.2f}" for k, v in ratios)
                        if ratios else ""))
    meta = extra.get("meta")
    if meta:
        lines.append(f"{indent}meta-trained: {meta.get('method')} on {meta.get('tasks')} "
                     f"({meta.get('n_train_tasks')} tasks), seed {meta.get('seed')}")
    return lines


def _bundled_line(bundled: dict[str, Any]) -> str:
    ident = ((bundled.get("identity") or {}).get("identity") or {}).get("pretrain") or {}
    return (f"bundled encoder {bundled['name']!r}: corpus {ident.get('corpus')} (first "
            f"{ident.get('corpus_size')} molecules); model card {bundled['card']}")


def format_description(info: dict[str, Any]) -> str:
    """``describe_checkpoint``'s result as the lines ``moladapt inspect`` prints."""
    from moladapt.training import ENCODER_ONLY_TASK

    model = info.get("model") or {}
    feat = info.get("featurizer") or {}
    lines = [f"{info['path']}  (sha256 {info['sha256'][:16]}…, {info['bytes'] / 1e6:.1f} MB, {info['format']})",
             f"featurizer: {feat.get('name')} v{feat.get('version')} ({feat.get('fingerprint')})",
             f"encoder: {model.get('encoder')} {model.get('num_layers')}×{model.get('hidden_dim')}, "
             f"jk {model.get('jk')}, pooling {model.get('pooling')}"]
    if "epochs_completed" in info:  # a pretraining last.pt
        lines.append(f"pretraining state after {info['epochs_completed']} of {info['config']['epochs']} "
                     "epoch(s): " + ", then ".join("+".join(o["name"] for o in objs) for objs in info["objectives"]))
    tasks = info.get("tasks") or []
    if tasks and tasks != [ENCODER_ONLY_TASK]:
        shown = ", ".join(tasks[:5]) + (f", … ({len(tasks)} in all)" if len(tasks) > 5 else "")
        lines.append(f"tasks ({info.get('task_type')}): {shown}")
    lines += _extra_lines(info.get("extra") or {}, "")
    if info.get("bundled"):
        lines.append(_bundled_line(info["bundled"]))
    for depth, step in enumerate(info.get("lineage") or [], start=1):
        lines.append(f"{'  ' * depth}↳ started from {step['path']} (sha256 {step['sha256'][:16]}…)")
        lines += _extra_lines(step.get("extra") or {}, "  " * depth + "  ")
        if step.get("bundled"):
            lines.append("  " * depth + "  " + _bundled_line(step["bundled"]))
    if not info.get("lineage"):
        extra = info.get("extra") or {}
        named = ((extra.get("run_config") or {}).get("train") or {}).get("init") or (extra.get("meta") or {}).get("init")
        lines.append(f"started from {named} (that checkpoint is not recorded in this file)" if named else
                     "started from random weights" if extra or "epochs_completed" in info else
                     "no training record in this file")
    return "\n".join(lines)
