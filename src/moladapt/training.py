"""Supervised (multi-task) training, prediction and checkpoints.

Loss: masked BCE-with-logits (classification) or MSE on standardised targets (regression),
averaged over the labels that are present — a NaN label contributes nothing, as in
pretrain-gnns (``loss_mat / is_valid.sum()``). Model selection: the epoch with the best
validation metric (ROC-AUC, or RMSE for regression; with several regression tasks each
task's RMSE in units of its training spread, :func:`selection_metric`); optional early
stopping.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit
from torch import nn
from tqdm.auto import tqdm

from moladapt.config import ModelConfig, TrainConfig, model_config_dict, to_plain
from moladapt.data.cache import featurize_cached
from moladapt.data.featurize import Featurizer, get_featurizer
from moladapt.data.sources import CLASSIFICATION, DataError, LabeledData
from moladapt.evaluate.metrics import MetricReport, compute_metrics
from moladapt.models.encoders import build_encoder
from moladapt.models.heads import MolecularModel, PredictionHead
from moladapt.resume import ResumeFile
from moladapt.types import MolGraphs
from moladapt.utils import adam, atomic_torch_save, autocast, code_revision

CHECKPOINT_FORMAT = "moladapt-checkpoint/1"


@dataclass
class PreparedData:
    """Labelled molecules featurized: ``y[i]`` are the labels of ``graphs`` molecule i."""

    data: LabeledData
    graphs: MolGraphs
    y: np.ndarray
    featurizer: Featurizer

    @property
    def invalid(self) -> list[tuple[int, str]]:
        """(line in the source file, SMILES) of every molecule RDKit could not parse."""
        return [(int(self.data.rows[i]) + 2, self.data.smiles[i]) for i in self.graphs.invalid_rows]

    def invalid_summary(self, limit: int = 10) -> str:
        bad = self.invalid
        if not bad:
            return ""
        shown = "; ".join(f"line {line}: '{smi}'" for line, smi in bad[:limit])  # verbatim: greppable
        more = f" … and {len(bad) - limit} more" if len(bad) > limit else ""
        return f"{self.data.source}: skipped {len(bad)} invalid SMILES ({shown}{more})"


def prepare(data: LabeledData, featurizer: str | Featurizer = "basic", n_jobs: int = 1,
            use_cache: bool = True, cache_dir: Path | None = None) -> PreparedData:
    """Featurize ``data`` (with the on-disk cache) and align the labels to the kept molecules."""
    feat = get_featurizer(featurizer) if isinstance(featurizer, str) else featurizer
    if n_jobs == 1 and len(data) > 20000:
        n_jobs = -1
    graphs = featurize_cached(data.smiles, feat, cache_dir=cache_dir, n_jobs=n_jobs, use_cache=use_cache)
    if len(graphs) == 0:
        raise DataError(
            f"{data.source}: none of the {len(data)} SMILES could be parsed by RDKit "
            f"(first: line {int(data.rows[0]) + 2 if len(data) else '-'}: "
            f"{data.smiles[0] if len(data) else ''!r})"
        )
    return PreparedData(data=data, graphs=graphs, y=data.labels[graphs.source_rows], featurizer=feat)


def build_model(model_cfg: ModelConfig, featurizer: Featurizer, num_tasks: int) -> MolecularModel:
    encoder = build_encoder(
        model_cfg.encoder, featurizer.atom_vocab_sizes, featurizer.bond_vocab_sizes,
        hidden_dim=model_cfg.hidden_dim, num_layers=model_cfg.num_layers,
        dropout=model_cfg.dropout, jk=model_cfg.jk, pooling=model_cfg.pooling,
    )
    if model_cfg.fingerprint_bits:
        from moladapt.models.fingerprint import FingerprintFusionEncoder

        encoder = FingerprintFusionEncoder(encoder, model_cfg.fingerprint_bits, model_cfg.fingerprint_radius,
                                           model_cfg.fingerprint_dims, counts=model_cfg.fingerprint_counts)
    head = PredictionHead(encoder.out_dim, num_tasks, hidden_dims=tuple(model_cfg.head_hidden_dims),
                          dropout=0.0)
    return MolecularModel(encoder, head)


def masked_loss(output: torch.Tensor, y: torch.Tensor, task_type: str,
                pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean loss over present labels. ``output``/``y``: ``[B, T]``; NaN in ``y`` = missing."""
    present = ~torch.isnan(y)
    target = torch.where(present, y, torch.zeros_like(y))
    if task_type == CLASSIFICATION:
        loss = F.binary_cross_entropy_with_logits(output, target, reduction="none", pos_weight=pos_weight)
    else:
        loss = (output - target) ** 2
    loss = torch.where(present, loss, torch.zeros_like(loss))
    return loss.sum() / present.sum().clamp(min=1)


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    valid_metric: float  # what model selection compares (selection_metric)
    seconds: float
    monitored: dict[str, float] = field(default_factory=dict)  # e.g. {"test": ...}; never used to select


@dataclass
class TrainHistory:
    epochs: list[EpochLog] = field(default_factory=list)
    best_epoch: int = -1
    best_valid: float = float("nan")
    train_seconds: float = 0.0
    molecules_per_second: float = 0.0
    resumed_from_epoch: int = 0  # epochs already done (by an interrupted run) when fit began

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch, "best_valid": self.best_valid,
            "train_seconds": self.train_seconds, "molecules_per_second": self.molecules_per_second,
            "resumed_from_epoch": self.resumed_from_epoch,
            "epochs": [{k: v for k, v in e.__dict__.items() if k != "monitored" or v}
                       for e in self.epochs],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainHistory:
        """The inverse of :meth:`to_dict`."""
        return cls([EpochLog(**e) for e in d["epochs"]], int(d["best_epoch"]), float(d["best_valid"]),
                   float(d["train_seconds"]), float(d["molecules_per_second"]), int(d["resumed_from_epoch"]))


@dataclass(frozen=True)
class TrainCheckpoint(ResumeFile):
    """Resumable supervised training: after every epoch :meth:`Trainer.fit` writes its whole
    state to ``path`` atomically — weights, Adam's state, the shuffling and torch random
    states (dropout), the epoch logs, the best-validation weights and the early-stopping
    counter — and a ``fit`` that finds the file continues after its last epoch, along the same
    trajectory as an uninterrupted run (a kill loses at most the epoch in progress). Asking
    for more epochs than the file holds continues training; the identity (the training
    configuration except ``epochs``, the parameter shapes,
    a hash of the labels and index sets, plus whatever the caller adds) must match.
    """

    FORMAT: ClassVar[str] = "moladapt-train-resume-1"
    KIND: ClassVar[str] = "training"
    REMEDY: ClassVar[str] = ("start afresh (resume=False; `moladapt train --no-resume`; or delete the "
                             "file) or choose another output")


class Trainer:
    """Trains a :class:`MolecularModel` on one labelled dataset.

    ``fit`` returns self; fitted state ends in ``_`` (``history_``, ``target_mean_``, ``target_std_``).
    """

    def __init__(self, model: MolecularModel, task_type: str, config: TrainConfig,
                 progress: bool = True, device: str = "cpu",
                 task_names: list[str] | None = None, pretrained: nn.Module | None = None) -> None:
        self.model = model
        self.task_type = task_type
        self.config = config
        self.progress = progress
        self.device = torch.device(device)
        self.task_names = task_names  # for messages about a task (e.g. non-finite predictions)
        self.pretrained = pretrained  # the part of model.encoder an init checkpoint filled

    # -- optimisation ------------------------------------------------------------------
    def _pretrainable(self) -> nn.Module:
        """The part ``freeze_encoder`` / ``head_only_epochs`` / ``encoder_lr_scale`` act on: what
        the init checkpoint filled (``pretrained``), else the graph encoder. A fingerprint-
        fusion MLP that no checkpoint provided would, frozen, be a fixed random projection: it
        trains with the head."""
        from moladapt.models.fingerprint import graph_part

        return self.pretrained if self.pretrained is not None else graph_part(self.model.encoder)

    def _set_encoder_trainable(self, trainable: bool) -> None:
        for p in self._pretrainable().parameters():
            p.requires_grad_(trainable)

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        pretrainable = list(self._pretrainable().parameters())
        shared = {id(p) for p in pretrainable}
        head_params = [*self.model.head.parameters(),
                       *(p for p in self.model.encoder.parameters() if id(p) not in shared)]
        groups = [{"params": head_params, "lr": cfg.lr}]
        if not cfg.freeze_encoder:
            groups.append({"params": pretrainable, "lr": cfg.lr * cfg.encoder_lr_scale})
        return adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _identity(self, checkpoint: TrainCheckpoint, y: np.ndarray, index_sets: dict[str, Any]) -> TrainCheckpoint:
        """``checkpoint`` with what decides this fit's trajectory added to its identity."""
        digest = hashlib.sha1(np.ascontiguousarray(y, dtype=np.float32).tobytes())
        for name in sorted(k for k, v in index_sets.items() if v is not None):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(index_sets[name], dtype=np.int64).tobytes())
        # patience decides where a run stops: a resume with another would give a run that
        # neither config reproduces. The thread count is left out (a study restarted with
        # other --workers must resume), though it moves floating-point sums in the last digits
        optimisation = {k: v for k, v in dataclasses.asdict(self.config).items()
                        if k not in ("epochs", "num_threads")}
        shapes = {k: list(v.shape) for k, v in self.model.state_dict().items()}
        # multi-task regression's selection rule: a state saved under another compares other
        # numbers (the raw RMSE, not the spread-scaled one), so it must not be resumed; the
        # other cases select as they always did, and their saved states stay resumable
        rule = {"selection": SELECTION_RULE} if self.task_type != CLASSIFICATION and y.shape[1] > 1 else {}
        return checkpoint.with_identity(train=to_plain(optimisation), task_type=self.task_type,
                                        parameters=shapes, data_sha1=digest.hexdigest(), **rule)

    def fit(self, graphs: MolGraphs, y: np.ndarray, train_idx: np.ndarray,
            valid_idx: np.ndarray | None = None,
            monitor: dict[str, np.ndarray] | None = None,
            checkpoint: TrainCheckpoint | None = None) -> Trainer:
        """Train on ``train_idx``; keep the weights of the best epoch on ``valid_idx``.

        ``monitor`` names further index sets scored after every epoch and logged in
        ``history_.epochs[i].monitored`` only (e.g. ``{"test": test_idx}`` to report the
        last-epoch test metric as pretrain-gnns does); they never influence training.
        ``checkpoint``: save the state after every epoch and resume from it (see
        :class:`TrainCheckpoint`); ``history_.resumed_from_epoch`` says where this call began.
        """
        cfg = self.config
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        y = np.asarray(y, dtype=np.float32)
        train_idx = np.asarray(train_idx)
        if len(train_idx) == 0:
            raise ValueError("the training part is empty: nothing to train on (check the split fractions)")
        if self.task_type == CLASSIFICATION:
            self.target_mean_, self.target_std_ = None, None
            y_fit = y
        else:
            # A task with no training label: mean 0 / std 1, so its predictions stay finite
            # (NaN ones would make scoring the measured valid/test labels fail). The same rule
            # as label_mean_std, written out in float64 arithmetic: switching the Trainer to the
            # helper's float32 would move the last bits of every stored regression result.
            n_train = (~np.isnan(y[train_idx])).sum(axis=0)
            sums = np.nansum(y[train_idx], axis=0)
            self.target_mean_ = np.where(n_train > 0, sums / np.maximum(n_train, 1), 0.0).astype(np.float32)
            sq = np.nansum((y[train_idx] - self.target_mean_) ** 2, axis=0)
            self.target_std_ = np.where(n_train > 0, np.sqrt(sq / np.maximum(n_train, 1)), 1.0) + 1e-8
            y_fit = (y - self.target_mean_) / self.target_std_
        self.model.to(self.device)
        optimizer = self._optimizer()
        history = TrainHistory()
        better = (lambda a, b: a > b) if self.task_type == CLASSIFICATION else (lambda a, b: a < b)
        best_state, since_best, stopped = None, 0, False
        n_seen, t_train = 0, 0.0
        first_epoch = 0
        if checkpoint is not None:
            checkpoint = self._identity(checkpoint, y, {"train": train_idx, "valid": valid_idx, **(monitor or {})})
            saved = checkpoint.load()
            if saved is not None:
                first_epoch = int(saved["epoch"]) + 1
                if first_epoch > cfg.epochs:
                    raise ValueError(f"{checkpoint.path} already holds {first_epoch} epochs; asked for "
                                     f"{cfg.epochs} (ask for at least as many, or use another output)")
                self.model.load_state_dict(saved["model"])
                optimizer.load_state_dict(saved["optimizer"])
                rng.bit_generator.state = saved["shuffle_rng"]
                torch.set_rng_state(saved["torch_rng"])
                history = TrainHistory.from_dict(saved["history"])
                best_state, since_best, stopped = saved["best_state"], int(saved["since_best"]), bool(saved["stopped"])
                n_seen, t_train = int(saved["n_seen"]), float(saved["train_seconds"])
        history.resumed_from_epoch = first_epoch
        self._set_encoder_trainable(not cfg.freeze_encoder and first_epoch >= cfg.head_only_epochs)

        def save(epoch: int) -> None:
            assert checkpoint is not None
            checkpoint.save({
                "epoch": epoch, "model": self.model.state_dict(), "optimizer": optimizer.state_dict(),
                "shuffle_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "history": history.to_dict(), "best_state": best_state, "since_best": since_best,
                "stopped": stopped, "n_seen": n_seen, "train_seconds": t_train})

        epochs = range(cfg.epochs if stopped else first_epoch, cfg.epochs)
        bar = tqdm(epochs, desc="train", disable=not self.progress, leave=False, initial=first_epoch,
                   total=cfg.epochs)
        for epoch in bar:
            t0 = time.perf_counter()
            if epoch == cfg.head_only_epochs and epoch > 0 and not cfg.freeze_encoder:
                self._set_encoder_trainable(True)
                since_best = 0  # patience counts from the unfreezing: the encoder gets its full chance
            encoder_frozen = cfg.freeze_encoder or epoch < cfg.head_only_epochs
            self.model.train()
            if encoder_frozen:
                self._pretrainable().eval()  # frozen BatchNorm statistics too (a true linear probe)
            order = rng.permutation(train_idx)
            total, batches = 0.0, 0
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                if len(idx) < 2 and len(order) > 1:
                    continue  # BatchNorm cannot train on a batch of one
                batch = graphs.collate(idx, y_fit).to(self.device)
                with autocast(self.device, cfg.precision):
                    output = self.model(batch)
                loss = masked_loss(output.float(), batch.y, self.task_type)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item()
                batches += 1
                n_seen += len(idx)
            t_train += time.perf_counter() - t0
            valid_metric = float("nan")
            if valid_idx is not None and len(valid_idx):
                valid_metric = selection_metric(self.score(graphs, y, valid_idx), self.target_std_)
            monitored = {name: self.score(graphs, y, np.asarray(idx)).primary
                         for name, idx in (monitor or {}).items() if len(idx)}
            log = EpochLog(epoch, total / max(batches, 1), valid_metric, time.perf_counter() - t0,
                           monitored)
            history.epochs.append(log)
            bar.set_postfix(loss=f"{log.train_loss:.4f}", valid=f"{valid_metric:.4f}")
            improved = not np.isnan(valid_metric) and (
                np.isnan(history.best_valid) or better(valid_metric, history.best_valid))
            # a validation part that cannot be scored (one class in every task) selects nothing:
            # like none at all, every epoch is the latest best and patience never runs out
            unscorable = np.isnan(valid_metric) and np.isnan(history.best_valid)
            if improved or valid_idx is None or unscorable:
                history.best_epoch, history.best_valid = epoch, valid_metric
                best_state = copy.deepcopy(self.model.state_dict())
                since_best = 0
            else:
                since_best += 1
                # never stop while the encoder is still waiting to be unfrozen
                stopped = cfg.patience is not None and since_best > cfg.patience and not (
                    epoch < cfg.head_only_epochs and not cfg.freeze_encoder)
            if checkpoint is not None:
                save(epoch)
            if stopped:
                break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        history.train_seconds = t_train
        history.molecules_per_second = n_seen / t_train if t_train > 0 else float("nan")
        self.history_ = history
        return self

    # -- inference ---------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, graphs: MolGraphs, idx: np.ndarray | None = None) -> np.ndarray:
        """Probabilities (classification) or values in original units: ``[len(idx), T]``."""
        return predict(self.model, graphs, self.task_type, idx, self.config.eval_batch_size,
                       getattr(self, "target_mean_", None), getattr(self, "target_std_", None),
                       self.device)

    def score(self, graphs: MolGraphs, y: np.ndarray, idx: np.ndarray,
              task_names: list[str] | None = None) -> MetricReport:
        return compute_metrics(self.task_type, y[idx], self.predict(graphs, idx),
                               task_names if task_names is not None else self.task_names)


#: names the rule of :func:`selection_metric`; in resume identities (change it with the rule)
SELECTION_RULE = "mean-primary; multitask-regression: rmse/train-std (2026-12-06)"


def label_mean_std(y_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each task's mean and standard deviation over its measured (non-NaN) training labels,
    ``[N, T] -> ([T], [T])``, for standardising regression targets. A task with no training
    label gets mean 0 and std 1, so that its predictions stay finite (NaN ones would make
    scoring its measured valid/test labels fail), and no empty-slice warning."""
    y_train = np.asarray(y_train)
    measured = ~np.isnan(y_train).all(axis=0)
    mean = np.zeros(y_train.shape[1], dtype=y_train.dtype)
    std = np.ones(y_train.shape[1], dtype=y_train.dtype)
    mean[measured] = np.nanmean(y_train[:, measured], axis=0)
    std[measured] = np.nanstd(y_train[:, measured], axis=0)
    return mean, std


def selection_metric(report: MetricReport, target_std: np.ndarray | None) -> float:
    """The validation number model selection compares: the primary metric's mean over tasks;
    for multi-task regression (``target_std``: the tasks' training standard deviations) the
    RMSE of each task in units of its spread, so that a task in large units (molecular weight
    beside logS) does not decide alone. With one task it ranks epochs exactly as the RMSE does.
    A task constant in training (std ~0) has no spread to measure its error in: left out."""
    if target_std is None or np.size(target_std) < 2:
        return report.primary
    scaled = [task.get("rmse", math.nan) / float(std)
              for task, std in zip(report.per_task.values(), target_std, strict=True) if std > 1e-6]
    finite = [v for v in scaled if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


@torch.no_grad()
def predict(model: MolecularModel, graphs: MolGraphs, task_type: str,
            idx: np.ndarray | None = None, batch_size: int = 256,
            target_mean: np.ndarray | None = None, target_std: np.ndarray | None = None,
            device: torch.device | str = "cpu") -> np.ndarray:
    idx = np.arange(len(graphs)) if idx is None else np.asarray(idx)
    was_training = model.training
    model.eval()
    outs = []
    for start in range(0, len(idx), batch_size):
        out = model(graphs.collate(idx[start : start + batch_size]).to(device))
        outs.append(out.float().cpu().numpy())
    model.train(was_training)
    n_tasks = model.head.num_tasks
    raw = np.concatenate(outs) if outs else np.zeros((0, n_tasks), np.float32)
    if task_type == CLASSIFICATION:
        return expit(raw)  # logistic without exp overflow warnings for large |logits|
    if target_mean is not None:
        raw = raw * np.asarray(target_std) + np.asarray(target_mean)
    return raw


# -- checkpoints --------------------------------------------------------------------------
def save_checkpoint(path: str | Path, model: MolecularModel, featurizer: Featurizer,
                    model_cfg: ModelConfig, task_names: list[str], task_type: str,
                    target_mean: np.ndarray | None = None, target_std: np.ndarray | None = None,
                    extra: dict[str, Any] | None = None) -> None:
    """Weights + everything needed to rebuild and check them, written atomically."""
    import moladapt

    payload = {
        "format": CHECKPOINT_FORMAT,
        "moladapt_version": moladapt.__version__,
        "code": code_revision(),
        "state_dict": model.state_dict(),
        "model_config": model_config_dict(model_cfg),
        "featurizer": {"name": featurizer.name, "version": featurizer.version,
                       "fingerprint": featurizer.fingerprint},
        "task_names": list(task_names),
        "task_type": task_type,
        "target_mean": None if target_mean is None else [float(v) for v in target_mean],
        "target_std": None if target_std is None else [float(v) for v in target_std],
        "extra": to_plain(extra or {}),
    }
    atomic_torch_save(payload, Path(path))


#: the task name of an encoder-only checkpoint (pretraining): its head was never trained
ENCODER_ONLY_TASK = "pretrain_dummy"


@dataclass
class LoadedModel:
    model: MolecularModel
    featurizer: Featurizer
    model_config: ModelConfig
    task_names: list[str]
    task_type: str
    target_mean: np.ndarray | None
    target_std: np.ndarray | None
    extra: dict[str, Any]

    def require_trained_head(self, path: str | Path) -> None:
        """Refuse to predict with a pretrained encoder: its head is random."""
        if self.task_names == [ENCODER_ONLY_TASK]:
            raise DataError(f"{path} is a pretrained encoder with no trained prediction head; "
                            f"fine-tune it first: moladapt train --init {path} ...")


def read_checkpoint_payload(path: str | Path) -> Any:
    """The raw content of a checkpoint file (``torch.load(weights_only=True)``, on the CPU);
    a clear error for a missing or unreadable file. Not checked for its format."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a checkpoint file")
    import zipfile

    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise ValueError(f"{path}: not a checkpoint (a checkpoint is a zip archive written by torch.save; "
                         "this file is another kind of file, or was cut short)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise ValueError(f"{path}: not a readable moladapt checkpoint ({exc})") from exc


def not_a_model(path: Path, found: Any) -> ValueError:
    """The error for a file that holds no model, saying what it holds where moladapt wrote it."""
    if str(found).startswith("moladapt-pretrain"):
        return ValueError(f"{path}: pretraining's state for resuming (format {found}), not a model: "
                          f"use {path.parent / 'encoder.pt'}, written beside it")
    if "resume" in str(found):
        return ValueError(f"{path}: the saved state of an unfinished run ({found}), not a model; "
                          "rerun the command that wrote it to finish")
    return ValueError(f"{path}: not a moladapt model checkpoint (format {found!r})")


def read_model_payload(path: str | Path) -> dict[str, Any]:
    """The content of a model checkpoint; a clear error for any other file."""
    path = Path(path)
    payload = read_checkpoint_payload(path)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise not_a_model(path, payload.get("format") if isinstance(payload, dict) else type(payload).__name__)
    return payload


def model_sha256(path: str | Path) -> str:
    """Digest of what a checkpoint computes: its weights (names, dtypes, shapes, values),
    architecture, featurizer, tasks and target scaling. Unlike the file's digest, it leaves
    out when, how fast and by which commit the model was trained (``code``, ``extra``), so a
    model trained again to the same weights has the same digest and results computed with the
    lost file can be resumed with the new one."""
    payload = read_model_payload(path)
    described = {key: payload[key] for key in ("model_config", "featurizer", "task_names", "task_type",
                                               "target_mean", "target_std")}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
    for name, tensor in sorted(payload["state_dict"].items()):
        digest.update(f"\n{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def load_checkpoint(path: str | Path, expected_featurizer: str | Featurizer | None = None) -> LoadedModel:
    """Load a checkpoint with ``torch.load(weights_only=True)``; refuse a featurizer mismatch."""
    path = Path(path)
    payload = read_model_payload(path)
    feat_info = payload["featurizer"]
    featurizer = get_featurizer(feat_info["name"])
    if featurizer.fingerprint != feat_info["fingerprint"]:
        raise ValueError(
            f"{path}: trained with featurizer {feat_info['fingerprint']}, but this moladapt's "
            f"{feat_info['name']!r} is {featurizer.fingerprint}; re-train or use a matching version"
        )
    if expected_featurizer is not None:
        want = get_featurizer(expected_featurizer) if isinstance(expected_featurizer, str) else expected_featurizer
        if want.fingerprint != featurizer.fingerprint:
            raise ValueError(
                f"{path}: checkpoint was trained on featurizer {featurizer.name!r} "
                f"(v{featurizer.version}) but featurizer {want.name!r} (v{want.version}) was "
                f"requested; use --featurizer {featurizer.name} or another checkpoint"
            )
    from moladapt.config import from_dict

    model_cfg = from_dict(ModelConfig, payload["model_config"])
    model = build_model(model_cfg, featurizer, len(payload["task_names"]))
    model.load_state_dict(payload["state_dict"])
    return LoadedModel(model, featurizer, model_cfg, payload["task_names"], payload["task_type"],
                       _array_or_none(payload["target_mean"]), _array_or_none(payload["target_std"]),
                       payload.get("extra", {}))


def _array_or_none(values: list[float] | None) -> np.ndarray | None:
    # float64, as Trainer computed them: float32 would move predictions in the 8th digit
    return None if values is None else np.asarray(values, dtype=np.float64)
