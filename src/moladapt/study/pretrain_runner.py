"""Study runner ``pretrain_finetune``: pretrain an encoder (shared between runs), then fine-tune.

A run's config is the ``train`` runner's (``data`` / ``model`` / ``train``) plus a
``pretrain`` section (defaults in :data:`PRETRAIN_DEFAULTS`):

.. code-block:: yaml

    runner: pretrain_finetune
    fixed:
      pretrain: {corpus: moses_train, corpus_size: 100000, epochs: 100, batch_size: 256}
    axes:
      pretrain.objective: [none, attribute_masking, "context_prediction:100,supervised:100"]

``objective_options`` (``{objective: {option: value}}``, e.g. ``{graphcl: {temperature: 0.2}}``)
sets objectives' constructor options; it enters the resolved section (and the encoder's hash)
only when set.

``init`` (``bundled``, ``bundled:<name>`` or a checkpoint path) starts the pretraining from that
checkpoint's encoder instead of random weights (e.g. ``supervised`` on top of a self-supervised
encoder, as pretrain-gnns does); it too enters the section only when set, and the encoder's hash
through the file's sha256 (not its path), so a moved or copied file keeps the hash and a
changed file changes it.

``objective`` is ``none`` (no pretraining: fine-tune from scratch), objective names joined by
``,`` or ``+`` (losses summed, for ``epochs`` epochs), or stages ``name:epochs`` run one after
the other, as ``moladapt pretrain --objective`` reads them
(:func:`moladapt.cli.pretrain.parse_objectives`). Self-supervised stages train on the first
``corpus_size`` molecules of ``corpus``; ``supervised`` stages on the labels of
``labels_dataset`` (a classification benchmark such as ``toxcast``, or a CSV of 0/1 labels).
The encoder is ``model``'s (encoder, hidden_dim, num_layers, jk, pooling) with dropout
``pretrain.dropout``, on ``data.featurizer``.

Resolution drops what a pretraining does not use (``none`` keeps only the objective; no
corpus fields without a self-supervised stage; no ``labels_dataset`` without a supervised
one; no ``epochs`` when the stages give theirs), so two grid points that pretrain the same way
are the same run and a study must ``exclude`` the duplicates (e.g. ``objective: none`` at every
corpus size but one); :meth:`StudySpec.runs` says so when it does not.

A configuration that is exactly a bundled encoder's (same hash, see
:func:`moladapt.bundled_models.find_by_pretrain_hash`) copies the shipped file instead of
pretraining.

Sharing: the pretrained encoder lives in ``<study_dir>/pretrained/<hash>/`` (``study_dir``:
the folder holding ``runs/<key>/``), ``hash`` = :func:`pretrain_hash` of the resolved pretrain
section, the encoder dimensions and the featurizer. One exclusive ``fcntl.flock`` on
``<hash>/.lock`` serialises the workers that need it: the first pretrains (resuming from
``last.pt`` if an earlier attempt died), writes ``encoder.pt`` and then ``pretrain.json`` (the
"done" marker); the others wait on the lock and reuse it. (``flock`` works across processes
of one machine and, on Linux, over NFS; a Ray cluster needs ``study_dir`` on such a share.)
Fine-tuning is :func:`moladapt.experiment.run_training` with ``train.init`` = that
``encoder.pt``.

Metrics: the ``train`` runner's, plus ``pretrain_hash``, ``pretrain_seconds`` (time spent
building the encoder, the same for every run that shares it; 0 for ``none``),
``pretrain_built`` (whether this run trained any pretraining epoch), ``pretrain_wait_seconds``
(this run's time in the lock and pretraining), ``pretrain_final_loss`` and ``pretrain_dir``.
"""

from __future__ import annotations

import copy
import dataclasses
import fcntl
import gzip
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moladapt.study.executors import RUNNERS, Runner, _resolve_train, _run_train, check_init_fits
from moladapt.study.spec import CORPUS_SUFFIXES, canonical_json

NONE = "none"
PRETRAIN_DEFAULTS: dict[str, Any] = {
    "objective": NONE,
    "corpus": "moses_train",
    "corpus_size": None,  # None: the whole corpus
    "shard_size": 100_000,
    "labels_dataset": None,
    "epochs": 100,
    "batch_size": 256,
    "lr": 1e-3,
    "dropout": 0.0,
    "seed": 0,
    "precision": "fp32",  # or bf16: autocast while pretraining (moladapt.utils.PRECISIONS)
}
OPTIONS_KEY = "objective_options"  # {objective: {option: value}}, e.g. {graphcl: {temperature: 0.2}}
INIT_KEY = "init"  # a checkpoint the pretraining starts from
ENCODER_KEYS = ("encoder", "hidden_dim", "num_layers", "jk", "pooling")
PRETRAINED_DIR = "pretrained"
DONE_FILE = "pretrain.json"
LOCK_FILE = ".lock"

# Rough pretraining cost per molecule relative to one supervised fine-tuning step, for `plan`
# only (not measured): contrastive objectives encode two views, context prediction also runs
# a context GNN, infomax scores positive and shuffled pairs.
OBJECTIVE_COST = {"attribute_masking": 1.0, "edge_prediction": 1.2, "supervised": 1.0,
                  "infomax": 1.5, "graphcl": 2.0, "context_prediction": 2.0}


# --- config -----------------------------------------------------------------------------------
def parse_stages(objective: str, epochs: int | None) -> list[tuple[list[str], int]]:
    """``"a"`` → ``[(["a"], epochs)]``; ``"a:5,b+c:10"`` → ``[(["a"], 5), (["b", "c"], 10)]``."""
    from moladapt.cli.pretrain import parse_objectives

    return parse_objectives(objective, 0 if epochs is None else int(epochs))


def _needs_labels(names: list[str]) -> bool:
    from moladapt.pretrain.objectives import OBJECTIVES

    return any(OBJECTIVES.get(n).needs_labels for n in names)


def resolve_pretrain(section: dict[str, Any] | None) -> dict[str, Any]:
    """The canonical pretrain section: defaults filled in, unused fields set to None."""
    from moladapt.pretrain.corpus import CORPORA
    from moladapt.pretrain.objectives import OBJECTIVES

    section = {} if section is None else section
    if not isinstance(section, dict):
        raise ValueError(f"'pretrain' must be a mapping of options, got {section!r}")
    section = dict(section)
    # not in the defaults: present only when set, so every other encoder keeps its hash
    raw_options = section.pop(OPTIONS_KEY, None)
    init = section.pop(INIT_KEY, None)
    unknown = sorted(set(section) - set(PRETRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown key(s) {['pretrain.' + k for k in unknown]}; pretrain options "
                         f"are: {', '.join([*PRETRAIN_DEFAULTS, OPTIONS_KEY, INIT_KEY])}")
    cfg = {**PRETRAIN_DEFAULTS, **section}
    objective = str(cfg["objective"]).replace(" ", "")
    if objective.lower() == NONE:
        for key, value in ((OPTIONS_KEY, raw_options), (INIT_KEY, init)):
            if value:
                raise ValueError(f"pretrain.{key} is set but pretrain.objective is none")
        return {**dict.fromkeys(PRETRAIN_DEFAULTS), "objective": NONE}
    cfg["objective"] = objective
    if init:
        from moladapt.bundled_models import resolve_init

        path = Path(resolve_init(str(init))).resolve()
        if not path.is_file():
            raise ValueError(f"pretrain.init {init!r}: no checkpoint at {path}")
        cfg[INIT_KEY] = str(path)

    def integer(name: str, minimum: int, optional: bool = False) -> None:
        value = cfg[name]
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"pretrain.{name} must be an integer >= {minimum}, got {value!r}")

    try:
        stages = parse_stages(objective, cfg["epochs"])
    except ValueError as exc:
        raise ValueError(f"pretrain.objective {objective!r}: {exc}") from None
    for names, _ in stages:
        for name in names:
            try:
                OBJECTIVES.get(name)
            except KeyError as exc:
                raise ValueError(f"pretrain.objective: {exc.args[0]} (or 'none')") from None
    if raw_options:
        from moladapt.pretrain.objectives import parse_objective_options

        try:
            options = parse_objective_options(raw_options, [n for names, _ in stages for n in names])
        except ValueError as exc:
            raise ValueError(f"pretrain.{OPTIONS_KEY}: {exc}") from None
        if options:
            cfg[OPTIONS_KEY] = options
    staged = ":" in objective
    if staged:
        cfg["epochs"] = None  # the stages carry their epochs
    else:
        integer("epochs", 1)
    integer("batch_size", 2)
    integer("seed", 0)
    for name in ("lr", "dropout"):  # floats, so `lr: 1e-3` (a string to YAML) and 0.001 agree
        value = cfg[name]
        try:
            cfg[name] = float(value)
        except (TypeError, ValueError):
            cfg[name] = -1.0
        if isinstance(value, bool) or cfg[name] < 0:
            raise ValueError(f"pretrain.{name} must be a non-negative number, got {value!r}")

    from moladapt.utils import PRECISIONS

    if cfg["precision"] not in PRECISIONS:
        raise ValueError(f"pretrain.precision must be one of {', '.join(PRECISIONS)}, "
                         f"got {cfg['precision']!r}")
    needs = [_needs_labels(names) for names, _ in stages]
    if any(needs):
        labels = cfg["labels_dataset"]
        if not labels:
            raise ValueError("pretrain.objective has a supervised stage: set pretrain.labels_dataset "
                             "(a classification benchmark such as toxcast, or a CSV of 0/1 labels)")
        from moladapt.data.sources import DATASETS

        if not str(labels).lower().endswith((".csv", ".csv.gz")):
            DATASETS.get(str(labels).lower())
            cfg["labels_dataset"] = str(labels).lower()
    else:
        cfg["labels_dataset"] = None
    if all(needs):
        cfg.update(corpus=None, corpus_size=None, shard_size=None)
    else:
        corpus = str(cfg["corpus"] or "")
        if corpus.lower() in CORPORA:
            corpus = corpus.lower()
        elif not corpus.lower().endswith(CORPUS_SUFFIXES):
            raise ValueError(f"pretrain.corpus {cfg['corpus']!r}: a corpus name "
                             f"({', '.join(CORPORA)}) or a {'/'.join(CORPUS_SUFFIXES)} file")
        cfg["corpus"] = corpus
        integer("corpus_size", 1, optional=True)
        integer("shard_size", 1)
    return cfg


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """``train`` runner resolution of data/model/train, plus :func:`resolve_pretrain`."""
    if not isinstance(config, dict):
        raise ValueError(f"a config is a mapping of sections, got {config!r}")
    config = copy.deepcopy(config)
    pre = resolve_pretrain(config.pop("pretrain", None))
    try:
        resolved = _resolve_train(config)
    except ValueError as exc:
        raise ValueError(str(exc).replace("a train config has sections data, model, train",
                                          "a pretrain_finetune config has sections data, model, "
                                          "train, pretrain")) from None
    if pre["objective"] != NONE and resolved["train"]["init"]:
        raise ValueError("train.init is set by the pretraining; leave it unset, or use "
                         "pretrain.objective: none to fine-tune from train.init")
    if pre.get(INIT_KEY):  # pretraining continues a graph encoder of the run's architecture
        from moladapt.config import ModelConfig, from_dict

        graph_only = dataclasses.replace(from_dict(ModelConfig, resolved["model"]), fingerprint_bits=0)
        check_init_fits(pre[INIT_KEY], graph_only, resolved["data"]["featurizer"], "pretrain.init",
                        fused_source=False)
    resolved["pretrain"] = pre
    return resolved


def pretrain_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What determines the pretrained encoder: pretrain section, encoder dims, featurizer (and
    the recipe version of any objective whose default behaviour has changed)."""
    from moladapt.data.featurize import get_featurizer
    from moladapt.pretrain.objectives import changed_recipes

    feat = get_featurizer(config["data"]["featurizer"])
    pre = dict(config["pretrain"])
    if pre.get(INIT_KEY):  # the weights it starts from, not where the file lies
        from moladapt.bundled_models import sha256_file

        pre[INIT_KEY] = {"sha256": sha256_file(pre[INIT_KEY])}
    identity = {"pretrain": pre,
                "encoder": {k: config["model"][k] for k in ENCODER_KEYS},
                "featurizer": feat.fingerprint}
    if config["pretrain"]["objective"] != NONE:
        names = [n for names, _ in parse_stages(config["pretrain"]["objective"], 0) for n in names]
        # only changed recipes enter the identity: encoders of every other objective keep their hash
        changed = changed_recipes(names)
        if changed:
            identity["objective_recipes"] = changed
    return identity


def pretrain_hash(config: dict[str, Any]) -> str | None:
    """16 hex digits naming the pretrained encoder of a resolved config (None: no pretraining)."""
    if config["pretrain"]["objective"] == NONE:
        return None
    text = canonical_json(pretrain_identity(config))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def study_dir_of(run_dir: Path) -> Path:
    """``<study_dir>/runs/<key>`` → ``<study_dir>``; any other run dir → its parent."""
    run_dir = Path(run_dir)
    return run_dir.parent.parent if run_dir.parent.name == "runs" else run_dir.parent


# --- pretraining (shared, locked) -------------------------------------------------------------
@dataclass(frozen=True)
class PretrainedEncoder:
    """A pretrained encoder in ``directory`` (``encoder.pt``, ``last.pt``, ``pretrain.json``)."""

    hash: str
    directory: Path
    built: bool  # this call trained at least one epoch
    seconds: float  # total time spent building it (all attempts)
    wait_seconds: float  # this call's time in the lock and pretraining
    summary: dict[str, Any]

    @property
    def encoder_path(self) -> Path:
        from moladapt.pretrain.trainer import ENCODER_CHECKPOINT

        return self.directory / ENCODER_CHECKPOINT


class _FileLock:
    """Exclusive ``fcntl.flock`` on ``path`` (released on exit and when the process dies)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> _FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


def ensure_pretrained(config: dict[str, Any], study_dir: str | Path,
                      log: Callable[[str], None] | None = None) -> PretrainedEncoder | None:
    """The pretrained encoder of a resolved config, built under the lock if not there yet.

    Returns None for ``objective: none``.
    """
    import json

    key = pretrain_hash(config)
    if key is None:
        return None
    directory = Path(study_dir) / PRETRAINED_DIR / key
    t0 = time.perf_counter()
    with _FileLock(directory / LOCK_FILE):
        done = directory / DONE_FILE
        built = False
        if not done.exists() and not _copy_bundled(key, directory, log):
            _pretrain(config, directory, log)
            built = True
        summary = json.loads(done.read_text())
    wait = time.perf_counter() - t0
    if built and summary.get("epochs_trained_here", 0) == 0:
        built = False  # last.pt already had every epoch (a crash after the final epoch)
    return PretrainedEncoder(key, directory, built, float(summary.get("pretrain_seconds", 0.0)),
                             wait, summary)


def _copy_bundled(key: str, directory: Path, log: Callable[[str], None] | None) -> bool:
    """Fill ``directory`` from the bundled encoder of the same pretraining hash, if there is one."""
    import shutil

    from moladapt.bundled_models import encoder_path, find_by_pretrain_hash
    from moladapt.pretrain.trainer import ENCODER_CHECKPOINT
    from moladapt.utils import write_json

    found = find_by_pretrain_hash(key)
    if found is None:
        return False
    name, record = found
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f"{ENCODER_CHECKPOINT}.partial"
    shutil.copyfile(encoder_path(name), partial)
    os.replace(partial, directory / ENCODER_CHECKPOINT)
    write_json(directory / DONE_FILE, {
        "source": f"bundled:{name}", "identity": record["identity"], "epochs_trained_here": 0,
        "pretrain_seconds": record.get("pretrain_seconds", 0.0), "final_loss": record.get("final_loss"),
        "built_on": record.get("date")})
    if log is not None:
        log(f"pretraining {key}: the bundled encoder {name!r} was built by this configuration; "
            "copied instead of pretraining again")
    return True


def _pretrain(config: dict[str, Any], directory: Path, log: Callable[[str], None] | None) -> None:
    import torch

    from moladapt.data.featurize import get_featurizer
    from moladapt.models.encoders import build_encoder
    from moladapt.pretrain import pretrain, trained_on
    from moladapt.pretrain.corpus import featurize_corpus
    from moladapt.pretrain.objectives import with_options
    from moladapt.utils import write_json

    pre, model = config["pretrain"], config["model"]
    feat = get_featurizer(config["data"]["featurizer"])
    stages = parse_stages(pre["objective"], pre["epochs"])
    needs = [_needs_labels(names) for names, _ in stages]
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "identity.json", pretrain_identity(config))
    t0 = time.perf_counter()
    corpus = None
    if not all(needs):
        corpus = featurize_corpus(pre["corpus"], featurizer=feat, limit=pre["corpus_size"],
                                  shard_size=pre["shard_size"], log=log)
    labelled = _load_labels(pre["labels_dataset"], feat, log) if any(needs) else None
    torch.manual_seed(pre["seed"])
    encoder = build_encoder(model["encoder"], feat.atom_vocab_sizes, feat.bond_vocab_sizes,
                            hidden_dim=model["hidden_dim"], num_layers=model["num_layers"],
                            dropout=pre["dropout"], jk=model["jk"], pooling=model["pooling"])
    init_record = None
    if pre.get(INIT_KEY):
        from moladapt.pretrain import init_encoder_from

        init_record = init_encoder_from(encoder, pre[INIT_KEY], feat)
    default = corpus if corpus is not None else labelled.graphs
    stage_data = [(labelled.graphs, labelled.y) if need else None for need in needs]
    stages = [(with_options(names, pre.get(OPTIONS_KEY)), n) for names, n in stages]
    history = pretrain(encoder, None, default, stages=stages, batch_size=pre["batch_size"],
                       lr=pre["lr"], seed=pre["seed"], precision=pre["precision"],
                       checkpoint_dir=directory, resume=True,
                       progress=False, stage_data=stage_data, data_record=trained_on(corpus, labelled),
                       init_from=init_record)
    seconds = time.perf_counter() - t0
    # epochs done by an earlier, interrupted attempt count too: their seconds are in history
    earlier = sum(r["seconds"] for r in history.epochs if r["epoch"] < history.start_epoch)
    summary: dict[str, Any] = {
        **history.to_dict(), "pretrain_seconds": seconds + earlier,
        "epochs_trained_here": len(history.epochs_run),
        "final_loss": history.epochs[-1]["loss"] if history.epochs else None,
        "identity": pretrain_identity(config),
        **trained_on(corpus, labelled),
    }
    write_json(directory / DONE_FILE, summary)  # last: its presence means "encoder.pt is complete"


def _load_labels(labels: str, featurizer: Any, log: Callable[[str], None] | None) -> Any:
    from moladapt.cli.pretrain import _load_labels as load

    return load(labels, "smiles", featurizer, log or (lambda m: None))


# --- the runner -------------------------------------------------------------------------------
def run(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Pretrain (or reuse) the encoder, fine-tune from it; the metrics of the ``train`` runner
    plus the ``pretrain_*`` ones (see the module docstring)."""
    import torch

    threads = int(os.environ.get("MOLADAPT_STUDY_THREADS", "0"))
    if threads:
        torch.set_num_threads(threads)
    run_dir = Path(run_dir)
    pre = ensure_pretrained(config, study_dir_of(run_dir))
    finetune = {k: copy.deepcopy(config[k]) for k in ("data", "model", "train")}
    if pre is not None:
        finetune["train"]["init"] = str(pre.encoder_path)
    metrics = _run_train(finetune, run_dir)
    metrics.update(
        pretrain_hash=None if pre is None else pre.hash,
        pretrain_seconds=0.0 if pre is None else pre.seconds,
        pretrain_built=False if pre is None else pre.built,
        pretrain_wait_seconds=0.0 if pre is None else pre.wait_seconds,
        pretrain_final_loss=None if pre is None else pre.summary.get("final_loss"),
        pretrain_dir=None if pre is None else str(pre.directory),
    )
    return metrics


# --- plan -------------------------------------------------------------------------------------
def _corpus_rows(corpus: str, cache: dict[str, int | None]) -> int | None:
    """Rows of a corpus file (None if it cannot be found), counted once per plan."""
    if corpus not in cache:
        try:
            from moladapt.pretrain.corpus import resolve_corpus

            path, column = resolve_corpus(corpus)
            opener = gzip.open if path.name.lower().endswith(".gz") else open
            with opener(path, "rb") as fh:
                cache[corpus] = sum(1 for _ in fh) - (0 if column is None else 1)
        except Exception:  # noqa: BLE001 - unknown size: left out of the estimate
            cache[corpus] = None
    return cache[corpus]


def plan_cost(runs: list[Any]) -> tuple[float, float, list[str]]:
    """``(molecule-epochs, seconds, plan lines)`` of the pretraining, once per distinct encoder."""
    from moladapt.study.spec import _dataset_size, duration, estimated_throughput

    seen: dict[str, dict[str, Any]] = {}
    for r in runs:
        key = pretrain_hash(r.config)
        if key is not None and key not in seen:
            seen[key] = r.config
    corpus_rows: dict[str, int | None] = {}
    label_sizes: dict[str, int | None] = {}
    mol_epochs = seconds = 0.0
    unknown = 0
    for config in seen.values():
        pre, model = config["pretrain"], config["model"]
        rate = estimated_throughput(model["num_layers"], model["hidden_dim"])
        for names, n_epochs in parse_stages(pre["objective"], pre["epochs"]):
            if _needs_labels(names):
                ds = pre["labels_dataset"]
                n = _dataset_size({"dataset": ds} if not ds.endswith((".csv", ".csv.gz"))
                                  else {"csv": ds}, label_sizes)
            else:
                total = _corpus_rows(pre["corpus"], corpus_rows)
                n = pre["corpus_size"] if total is None else min(pre["corpus_size"] or total, total)
            if n is None:
                unknown += 1
                continue
            factor = sum(OBJECTIVE_COST.get(name, 1.5) for name in names)
            mol_epochs += n * n_epochs
            seconds += n * n_epochs * factor / rate
    lines = [f"pretraining: {len(seen)} distinct encoder(s), built once each and shared: "
             f"{mol_epochs:,.0f} molecule-epochs, ~{duration(seconds)}"
             + (f" ({unknown} stage(s) of unknown size not counted)" if unknown else ""),
             "  assumes pretraining costs per molecule ≈ fine-tuning × "
             + ", ".join(f"{k} {v:g}" for k, v in OBJECTIVE_COST.items()) + " (a guess, not measured)"]
    return mol_epochs, seconds, lines


RUNNERS.add("pretrain_finetune", Runner(run, resolve, plan_cost=plan_cost))
