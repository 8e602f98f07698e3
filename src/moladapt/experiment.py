"""End-to-end runs: config → data → featurize → split → train → evaluate → files.

The CLI and the benchmarks call these functions; they hold no logic of their own.
Every run directory gets ``config.yaml`` (resolved), ``metrics.json`` and ``model.pt``.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moladapt.config import RunConfig
from moladapt.data.sources import (
    CLASSIFICATION,
    DataError,
    LabeledData,
    csv_header,
    find_smiles_column,
    load_csv,
    load_dataset,
    select_columns,
)
from moladapt.data.splits import (
    Split,
    make_split,
    molecules_shared_with_train,
    split_has_both_classes,
)
from moladapt.evaluate.metrics import MetricReport, compute_metrics
from moladapt.training import (
    LoadedModel,
    PreparedData,
    TrainCheckpoint,
    Trainer,
    build_model,
    load_checkpoint,
    predict,
    prepare,
    save_checkpoint,
)
from moladapt.utils import seed_everything, write_json


def load_data(cfg: RunConfig) -> LabeledData:
    d = cfg.data
    if d.dataset is not None:  # target_columns picks some of a benchmark's tasks
        data = load_dataset(d.dataset)
        return data if d.target_columns is None else select_columns(data, d.target_columns)
    # the configured SMILES column, or the one column of that name in another case (SMILES)
    smiles = find_smiles_column(d.csv, csv_header(d.csv), candidates=[d.smiles_column])
    return load_csv(d.csv, smiles, d.target_columns, d.task_type)


def as_read(cfg: RunConfig, data: LabeledData) -> RunConfig:
    """``cfg`` with a CSV's label columns, task type and SMILES column as they were read off the
    file, so that the config saved with a run replays it even after the file gains a column."""
    if cfg.data.csv is None:
        return cfg
    return cfg.replace(data={"target_columns": tuple(data.task_names), "task_type": data.task_type,
                             "smiles_column": data.metadata["smiles_column"]})


def split_data(prepared: PreparedData, cfg: RunConfig) -> Split:
    d = cfg.data
    seed = cfg.train.seed if d.split_seed is None else d.split_seed
    if d.split == "predefined":
        parts = prepared.data.predefined_split
        if parts is None:
            raise DataError(f"{prepared.data.source}: split 'predefined' but the dataset defines none")
        parts = parts[prepared.graphs.source_rows]
        unknown = sorted(set(parts.tolist()) - {"train", "valid", "test"})
        if unknown:  # such rows would silently belong to no part
            raise DataError(f"{prepared.data.source}: the predefined split has value(s) {unknown[:5]}; "
                            "expected train / valid / test")
        return Split(*(np.flatnonzero(parts == p) for p in ("train", "valid", "test")))
    return make_split(d.split, prepared.graphs.smiles, prepared.y, d.split_frac, seed)


@dataclass(frozen=True)
class RunResult:
    config: RunConfig
    test: MetricReport
    valid: MetricReport
    split_sizes: tuple[int, int, int]
    n_invalid: int
    train_seconds: float
    molecules_per_second: float
    best_epoch: int
    output: Path | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": self.test.to_dict(), "valid": self.valid.to_dict(),
            "split_sizes": dict(zip(("train", "valid", "test"), self.split_sizes, strict=True)),
            "n_invalid_smiles": self.n_invalid, "train_seconds": self.train_seconds,
            "molecules_per_second": self.molecules_per_second, "best_epoch": self.best_epoch,
        }


def environment() -> dict[str, str]:
    import rdkit
    import torch

    import moladapt

    return {"moladapt": moladapt.__version__, "torch": torch.__version__,
            "rdkit": rdkit.__version__, "python": platform.python_version(),
            "machine": platform.machine()}


def check_choices(cfg: RunConfig) -> None:
    """Fail before any data is read when a name in ``cfg`` is not registered."""
    from moladapt.data.featurize import FEATURIZERS
    from moladapt.data.splits import SPLITTERS
    from moladapt.models.encoders import ENCODERS, POOLINGS
    from moladapt.utils import check_precision

    FEATURIZERS.get(cfg.data.featurizer)
    ENCODERS.get(cfg.model.encoder)
    if cfg.data.split != "predefined":
        SPLITTERS.get(cfg.data.split)
    check_precision(cfg.train.precision)
    if cfg.model.pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {cfg.model.pooling!r}; choose one of: {', '.join(POOLINGS)}")


def run_training(cfg: RunConfig, output: str | Path | None = None, progress: bool = True,
                 log=print, resume: bool = True) -> RunResult:
    """Train and evaluate one model as ``cfg`` says; write its files to ``output``.

    While it trains, ``output/resume.pt`` holds the state after the last finished epoch
    (:class:`~moladapt.training.TrainCheckpoint`); the same call after a kill continues from
    there (``resume=False`` starts afresh instead), and the file is removed once the results
    are written.
    """
    check_choices(cfg)
    out = Path(output) if output is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        # saved first, so a crashed run still says what it was; but an interrupted run's config
        # stays with its state, and a finished run's with its model (until this one finishes)
        if not (resume and (out / "resume.pt").exists()) and not (out / "model.pt").exists():
            cfg.save(out / "config.yaml")
    seed_everything(cfg.train.seed)
    data = load_data(cfg)
    prepared = prepare(data, cfg.data.featurizer)
    if prepared.invalid:
        log(prepared.invalid_summary())
    split = split_data(prepared, cfg)
    for warning in (validation_warning(prepared.y, split, data.task_type),
                    duplicate_warning(prepared, split, cfg.data.split)):
        if warning:
            log(warning)
    model = build_model(cfg.model, prepared.featurizer, data.num_tasks)
    init_record, pretrained = None, None
    if cfg.train.init:
        from moladapt.models.fingerprint import load_encoder_weights
        from moladapt.provenance import load_init

        init, init_record = load_init(cfg.train.init, prepared.featurizer)
        pretrained = load_encoder_weights(model.encoder, init.model.encoder, init_record["path"])
    trainer = Trainer(model, data.task_type, cfg.train, progress=progress, task_names=data.task_names,
                      pretrained=pretrained)
    checkpoint = None
    if out is not None:
        checkpoint = TrainCheckpoint(out / "resume.pt", identity={
            "data": cfg.to_dict()["data"], "model": cfg.to_dict()["model"],
            "featurizer": prepared.featurizer.fingerprint})
        if not resume:
            checkpoint.discard()
    t0 = time.perf_counter()
    trainer.fit(prepared.graphs, prepared.y, split.train, split.valid,
                monitor={"test": split.test} if cfg.train.track_test else None, checkpoint=checkpoint)
    if checkpoint is not None and trainer.history_.resumed_from_epoch:
        log(f"resumed {checkpoint.path} after {trainer.history_.resumed_from_epoch} finished epoch(s)")
    wall = time.perf_counter() - t0
    cfg = as_read(cfg, data)  # the resume identity above keeps the config as given
    test = trainer.score(prepared.graphs, prepared.y, split.test, data.task_names)
    valid = trainer.score(prepared.graphs, prepared.y, split.valid, data.task_names)
    result = RunResult(cfg, test, valid, tuple(len(p) for p in (split.train, split.valid, split.test)),
                       len(prepared.invalid), trainer.history_.train_seconds,
                       trainer.history_.molecules_per_second, trainer.history_.best_epoch, out)
    if out is not None:
        data_sha256 = data.fingerprint()  # evaluate --part compares it: a changed file, another split
        cfg.save(out / "config.yaml")
        save_checkpoint(out / "model.pt", model, prepared.featurizer, cfg.model, data.task_names,
                        data.task_type, trainer.target_mean_, trainer.target_std_,
                        extra={"run_config": cfg.to_dict(), "init": init_record,
                               "data_sha256": data_sha256})
        write_json(out / "metrics.json", {
            **result.to_dict(), "wall_seconds": wall, "dataset": data.name, "source": data.source,
            "data_sha256": data_sha256,
            "invalid_smiles": [{"line": line, "smiles": s} for line, s in prepared.invalid],
            "history": trainer.history_.to_dict(), "environment": environment(),
        })
        assert checkpoint is not None
        checkpoint.discard()
    return result


def validation_warning(y: np.ndarray, split: Split, task_type: str) -> str | None:
    """What to tell the user when the validation part cannot select a model: it is empty, or
    (classification) no task has both classes there. ``None`` when it can."""
    if len(split.valid) == 0:
        return (f"warning: the validation part of {len(y)} molecules is empty: no model "
                "selection and no early stopping; the last epoch's weights are kept")
    if task_type == CLASSIFICATION and len(split_has_both_classes(y, split)["valid"]) == y.shape[1]:
        return (f"warning: no task has both classes in the validation part ({len(split.valid)} molecules), "
                "so it cannot be scored: no model selection and no early stopping; the last "
                "epoch's weights are kept (a stratified or larger split may help)")
    return None


def duplicate_warning(prepared: PreparedData, split: Split, split_name: str) -> str | None:
    """What to tell the user when a random split put copies of one molecule in train and in
    valid/test (see :func:`~moladapt.data.splits.molecules_shared_with_train`); ``None`` when
    it did not, and for scaffold splits, which cannot."""
    if "scaffold" in split_name or split_name == "predefined":
        return None
    shared = molecules_shared_with_train(prepared.graphs.smiles, split)
    if not any(shared.values()):
        return None
    lines = prepared.data.rows[prepared.graphs.source_rows] + 2  # file lines, header = 1
    example = next(pairs[0] for pairs in shared.values() if pairs)
    counts = " and ".join(f"{len(pairs)} of the {len(getattr(split, part))} {part}"
                          for part, pairs in shared.items() if pairs)
    return (f"warning: {counts} molecules also occur in the training part (duplicated "
            f"molecules, e.g. line {lines[example[0]]} and line {lines[example[1]]}), so their "
            "scores overstate how the model does on new molecules; merge the duplicates, or "
            "use a scaffold split (it keeps copies together)")


def is_the_runs_data(data: LabeledData, cfg: RunConfig) -> bool:
    if cfg.data.dataset is not None:
        return str(data.metadata.get("spec")).lower() == cfg.data.dataset.lower()
    mine, theirs = Path(data.source), Path(str(cfg.data.csv))
    if mine.exists() and theirs.exists():
        return mine.samefile(theirs)
    return mine.resolve() == theirs.resolve()


def label_columns_for(model_tasks: list[str], given: tuple[str, ...] | None) -> tuple[list[str], list[str]]:
    """The columns of a user's file to read as the model's labels, and the model task each is.

    No columns given: the model's task names. Columns that are all task names: matched by
    name (a subset: only those tasks are scored). Columns none of which is a task name: one per task, in the model's task order
    (a file that calls ``p_np`` ``label``). Anything else is ambiguous and refused."""
    if not given:
        return list(model_tasks), list(model_tasks)
    named = [c for c in given if c in model_tasks]
    if len(named) == len(given):  # read in the model's order: the same table as in training
        ordered = [t for t in model_tasks if t in given]
        return ordered, ordered
    if named:
        raise DataError(f"the label columns {list(given)} mix the model's task names {named} with "
                        f"other names: give the model's tasks {list(model_tasks)} by their names, "
                        "or one column per task in that order under any other names")
    if len(given) != len(model_tasks):
        raise DataError(f"{len(given)} label column(s) {list(given)} for a model of {len(model_tasks)} "
                        f"task(s) {list(model_tasks)}: give one column per task, in that order, or the "
                        "columns named after the tasks you have labels for (those are scored)")
    return list(given), list(model_tasks)


def evaluate_checkpoint(checkpoint: str | Path, data: LabeledData, split: str | None = None,
                        cfg: RunConfig | None = None,
                        loaded: LoadedModel | None = None) -> tuple[MetricReport, PreparedData]:
    """Score a saved model on ``data`` (all of it, or one part of a split: ``split='test'``);
    ``loaded``: the checkpoint already loaded by the caller (not read twice)."""
    loaded = load_checkpoint(checkpoint) if loaded is None else loaded
    loaded.require_trained_head(checkpoint)
    # Tasks the data lacks are reported as not scored: a user may hold labels for a few of
    # a multi-task model's assays.
    missing = [t for t in loaded.task_names if t not in data.task_names]
    if len(missing) == len(loaded.task_names):
        raise DataError(f"{data.source}: none of the model's tasks {loaded.task_names} is in the "
                        f"data, whose tasks are {data.task_names}")
    if split is not None:
        if cfg is None:
            raise ValueError("evaluating one part of a split needs the run's config")
        if not is_the_runs_data(data, cfg):
            raise DataError(f"the {split} part is a part of the run's own split of "
                            f"{cfg.data.dataset or cfg.data.csv}; on {data.source} the split would be "
                            "drawn anew and could hold training molecules. Score all of it instead "
                            "(no part)")
        if cfg.data.dataset is not None and cfg.data.target_columns is not None:
            data = select_columns(data, cfg.data.target_columns)  # the molecules the run split
        trained_on = (loaded.extra or {}).get("data_sha256")  # absent from older checkpoints
        if trained_on is not None and trained_on != data.fingerprint():
            raise DataError(f"{data.source} has changed since the model was trained on it (its "
                            f"molecules or labels differ): the {split} part drawn from it now could "
                            "hold training molecules. Score the file as a whole (no part), or "
                            "restore the file the model was trained on")
    prepared = prepare(data, loaded.featurizer)
    idx = np.arange(len(prepared.graphs))
    if split is not None:
        idx = getattr(split_data(prepared, cfg), split)
    y_pred = predict(loaded.model, prepared.graphs, loaded.task_type, idx,
                     target_mean=loaded.target_mean, target_std=loaded.target_std)
    y_true = np.full(y_pred.shape, np.nan)
    for j, task in enumerate(loaded.task_names):
        if task in data.task_names:
            y_true[:, j] = prepared.y[idx, data.task_names.index(task)]
    report = compute_metrics(loaded.task_type, y_true, y_pred, loaded.task_names,
                             not_scored={t: f"not in {data.source}" for t in missing})
    return report, prepared


def smiles_column_candidates(checkpoint_extra: dict[str, Any]) -> list[str]:
    """The SMILES columns to look for in a file a model scores, in order: the SMILES column of
    the CSV it was trained on (a user's file names it as they like: a run's config, or
    ``smiles_column`` in checkpoints of ``moladapt transfer``), then ``smiles``
    (:func:`moladapt.data.sources.find_smiles_column`)."""
    data = (checkpoint_extra.get("run_config") or {}).get("data") or {}
    trained_on = data.get("smiles_column") if data.get("csv") else checkpoint_extra.get("smiles_column")
    return list(dict.fromkeys(c for c in (trained_on, "smiles") if c))


def predict_csv(checkpoint: str | Path, input_csv: str | Path, output_csv: str | Path,
                smiles_column: str | None = None) -> pd.DataFrame:
    """Predict every row of ``input_csv``; write it back with one column per task.

    Rows whose SMILES RDKit cannot parse keep their place, get empty predictions and
    ``valid_smiles = False``: the output has exactly the input's rows, in order.
    ``smiles_column=None`` finds the column (:func:`smiles_column_candidates`).
    """
    from moladapt.data.sources import _read_table
    from moladapt.utils import atomic_write_text

    if Path(output_csv).resolve() == Path(input_csv).resolve():
        raise DataError(f"{output_csv}: the output file is the input file, which the predictions "
                        "would overwrite; give another output file")
    loaded = load_checkpoint(checkpoint)
    loaded.require_trained_head(checkpoint)
    frame = _read_table(Path(input_csv), keep_blank_lines=True, as_text=True)
    smiles_column = find_smiles_column(input_csv, [str(c) for c in frame.columns], smiles_column,
                                       smiles_column_candidates(loaded.extra))
    suffix = "_probability" if loaded.task_type == "classification" else "_prediction"
    added = ["valid_smiles"] + [f"{task}{suffix}" for task in loaded.task_names]
    clash = [c for c in added if c in frame.columns]
    if clash:
        raise DataError(f"{input_csv}: already has column(s) {clash}, which the predictions would "
                        "overwrite; rename or drop them in the input")
    smiles = frame[smiles_column].astype(str).where(frame[smiles_column].notna(), "").tolist()
    graphs = loaded.featurizer.featurize(smiles)
    values = np.full((len(frame), len(loaded.task_names)), np.nan)
    if len(graphs):
        values[graphs.source_rows] = predict(loaded.model, graphs, loaded.task_type,
                                             target_mean=loaded.target_mean,
                                             target_std=loaded.target_std)
    out = frame.copy()
    out["valid_smiles"] = True
    out.loc[graphs.invalid_rows, "valid_smiles"] = False
    for j, task in enumerate(loaded.task_names):
        out[f"{task}{suffix}"] = values[:, j]
    atomic_write_text(Path(output_csv), out.to_csv(index=False))
    return out
