"""Pretraining loop: one encoder, one or more objectives, resumable checkpoints.

:func:`pretrain` minimises the sum of the objectives' losses with Adam over the encoder
and the objectives' own heads, optionally as a pipeline of stages (e.g. supervised, then
context prediction, each stage with a fresh optimizer, as pretrain-gnns runs them).

After every epoch ``checkpoint_dir/last.pt`` is written atomically (temporary file +
``os.replace``) with the encoder, objective and optimizer states, the number of completed
epochs, the torch RNG state, the featurizer identity, the config and the history. It holds
only tensors, dicts, lists and plain values, so ``torch.load(weights_only=True)`` reads
it. A later call with the same ``checkpoint_dir`` resumes after the last completed epoch
(``epochs`` is the *total* number of epochs): the shuffling and the corruptions of epoch
``e`` come from a generator seeded by ``(seed, e)`` and dropout from the restored global
RNG, so a resumed run reproduces an uninterrupted one on CPU.

``graphs`` may also be a :class:`~moladapt.pretrain.corpus.ShardedCorpus` (a large
unlabelled corpus read one cache shard at a time; see :mod:`moladapt.pretrain.corpus`), and
``stage_data`` gives a stage its own molecules (e.g. a labelled set for ``supervised``
followed by a corpus for ``context_prediction``). Under ``torchrun`` the same call trains
data-parallel (:mod:`moladapt.pretrain.distributed`).

``init_from`` continues from weights trained elsewhere (pretrain-gnns' supervised pretraining
on top of a context-prediction checkpoint, or more pretraining of the bundled encoder):
:func:`init_encoder_from` loads them and returns the record of where they came from, which
the checkpoints carry, so an ``encoder.pt`` names its whole lineage.

When training ends, ``checkpoint_dir/encoder.pt`` is written by
:func:`save_pretrained_encoder`: a regular moladapt checkpoint, so
``moladapt train --init checkpoint_dir/encoder.pt`` starts from the pretrained encoder.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from moladapt.config import ModelConfig, to_plain
from moladapt.data.featurize import Featurizer, get_featurizer
from moladapt.data.sources import CLASSIFICATION
from moladapt.models.encoders import Encoder
from moladapt.models.fingerprint import FingerprintFusionEncoder, graph_part
from moladapt.pretrain import distributed as ddp
from moladapt.pretrain.corpus import ShardedCorpus
from moladapt.pretrain.objectives import OBJECTIVES, PretrainObjective, build_objective
from moladapt.training import ENCODER_ONLY_TASK, build_model, load_checkpoint, save_checkpoint
from moladapt.types import MolGraphs
from moladapt.utils import adam, atomic_torch_save, autocast, check_precision

PRETRAIN_CHECKPOINT_FORMAT = "moladapt-pretrain/1"
LAST_CHECKPOINT = "last.pt"
ENCODER_CHECKPOINT = "encoder.pt"

ObjectiveSpec = str | tuple[str, dict[str, Any]] | PretrainObjective
PretrainData = MolGraphs | ShardedCorpus


@dataclass
class PretrainHistory:
    """Per-epoch records of a pretraining run (including epochs done before a resume).

    Each record: ``epoch`` (0-based), ``stage``, ``loss`` (mean summed loss per batch),
    ``losses`` (mean per objective), ``batches``, ``seconds``, ``embedding_spread`` (see
    :func:`embedding_spread`; measured on the epoch's last batch).
    ``start_epoch``: epochs already completed when this call started (0 unless resumed).
    ``collapsed``: the first epoch after which the encoder had collapsed (every atom mapped to
    the same vector), or None.
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    checkpoint: str | None = None
    encoder_checkpoint: str | None = None

    @property
    def epochs_run(self) -> list[int]:
        """The epochs this call trained."""
        return [r["epoch"] for r in self.epochs if r["epoch"] >= self.start_epoch]

    @property
    def losses(self) -> list[float]:
        return [r["loss"] for r in self.epochs]

    @property
    def collapsed(self) -> int | None:
        first = first_collapse([r.get("embedding_spread") for r in self.epochs])
        return None if first is None else int(self.epochs[first]["epoch"])

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "start_epoch": self.start_epoch,
                "checkpoint": self.checkpoint, "encoder_checkpoint": self.encoder_checkpoint,
                "collapsed": self.collapsed}


# Below this, the node embeddings of a batch are constant in every dimension: a collapsed encoder.
COLLAPSE_SPREAD = 1e-4


def first_collapse(spreads: Sequence[float | None]) -> int | None:
    """The index of the first spread (:func:`embedding_spread`) of a collapsed encoder, or None;
    ``None`` entries (not measured) are skipped."""
    return next((i for i, s in enumerate(spreads) if s is not None and s < COLLAPSE_SPREAD), None)


def embedding_spread(encoder: Encoder, batch: Any) -> float:
    r"""Largest per-dimension standard deviation of the node embeddings over a batch's atoms.

    :math:`\max_d \operatorname{std}_{i \in \text{atoms}} h_{i,d}` with ``h = encoder.node_embeddings
    (batch)`` ``[N, d]``, in eval mode (running batch-norm statistics) and float32. About 0 means
    representation collapse: every atom gets the same vector (e.g. all ReLUs of a layer dead),
    so the objective is stuck at chance and fine-tuning would start from a constant input —
    observed for edge prediction with unscaled dot-product scores on a GIN 5×300. A
    fingerprint-fused encoder is measured on its graph part.
    """
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            h = graph_part(encoder).node_embeddings(batch).float()
    finally:
        encoder.train(was_training)
    return float(h.std(dim=0).max()) if h.shape[0] > 1 else float("nan")


# -- building ---------------------------------------------------------------------------------
def _make_objective(
    spec: ObjectiveSpec, featurizer: Featurizer, encoder: Encoder, y: np.ndarray | None
) -> PretrainObjective:
    if isinstance(spec, PretrainObjective):
        return spec
    if isinstance(spec, str):
        name, options = spec, {}
    else:
        name, options = spec[0], dict(spec[1])
    from moladapt.pretrain.objectives import OBJECTIVES

    if OBJECTIVES.get(name).needs_labels:
        if y is None:
            raise ValueError(f"objective {name!r} needs labels: pass y= to pretrain()")
        options.setdefault("num_tasks", int(y.shape[1]))
    return build_objective(name, featurizer, encoder, **options)


def _stage_specs(
    objectives: Sequence[ObjectiveSpec] | ObjectiveSpec | None,
    epochs: int | None,
    stages: Sequence[tuple[Any, int]] | None,
) -> list[tuple[list[ObjectiveSpec], int]]:
    def as_list(spec: Any) -> list[ObjectiveSpec]:
        if isinstance(spec, (str, PretrainObjective)):
            return [spec]
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], dict):
            return [spec]
        return list(spec)

    if stages is not None:
        if objectives is not None or epochs is not None:
            raise ValueError("give either objectives= and epochs=, or stages=, not both")
        out = [(as_list(spec), int(n)) for spec, n in stages]
    else:
        if objectives is None:
            raise ValueError("give the objectives to pretrain with (or stages=)")
        out = [(as_list(objectives), 100 if epochs is None else int(epochs))]
    for specs, n in out:
        if not specs:
            raise ValueError("every stage needs at least one objective")
        if n < 0:
            raise ValueError(f"epochs must be >= 0, got {n}")
    return out


def _keys(objs: Sequence[PretrainObjective]) -> list[str]:
    keys: list[str] = []
    for o in objs:
        key, k = o.name, 2
        while key in keys:
            key, k = f"{o.name}#{k}", k + 1
        keys.append(key)
    return keys


def _describe(stages: list[list[PretrainObjective]]) -> list[list[dict[str, Any]]]:
    return [[{"name": o.name, "hparams": to_plain(o.hparams)} for o in objs] for objs in stages]


def _epoch_generator(seed: int, epoch: int, *rank: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), int(epoch), *rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _check_data(data: PretrainData, y: np.ndarray | None, featurizer: Featurizer) -> np.ndarray | None:
    """Validate one stage's molecules (and labels) against the featurizer; ``y`` as ``[M, T]``."""
    if data.featurizer != featurizer.name or data.featurizer_version != featurizer.version:
        raise ValueError(f"graphs were featurized with {data.featurizer} v{data.featurizer_version}, "
                         f"the encoder's featurizer is {featurizer.name} v{featurizer.version}")
    if y is None:
        return None
    if isinstance(data, ShardedCorpus):
        raise ValueError("labels (y) cannot go with a ShardedCorpus: give the supervised stage "
                         "its labelled molecules with stage_data=")
    y = np.asarray(y, dtype=np.float32)
    y = y.reshape(-1, 1) if y.ndim == 1 else y
    if y.shape[0] != len(data):
        raise ValueError(f"y has {y.shape[0]} rows for {len(data)} molecules")
    return y


# -- checkpoints ------------------------------------------------------------------------------
def load_pretrain_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw ``last.pt`` payload (``torch.load(weights_only=True)``), format-checked."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != PRETRAIN_CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a moladapt pretraining checkpoint")
    return payload


def save_pretrained_encoder(
    path: str | Path, encoder: Encoder, featurizer: Featurizer, info: dict[str, Any] | None = None
) -> None:
    """Write ``encoder`` as a regular moladapt checkpoint (:func:`moladapt.training.save_checkpoint`).

    The model is the encoder plus a randomly initialised 1-task dummy head (task
    ``"pretrain_dummy"``); ``info`` is stored under ``extra["pretrain"]``. Load it with
    :func:`moladapt.training.load_checkpoint` (``.model.encoder``), or pass it to
    ``moladapt train --init`` / ``MolPropertyPredictor(init=...)``, which copy the encoder
    weights (the training run must use the same encoder, hidden_dim, num_layers, jk and
    pooling, and the same featurizer).
    """
    hp = encoder.hparams
    if list(hp["atom_vocab_sizes"]) != list(featurizer.atom_vocab_sizes) or list(
        hp["bond_vocab_sizes"]
    ) != list(featurizer.bond_vocab_sizes):
        raise ValueError(f"encoder vocabulary sizes do not match featurizer {featurizer.fingerprint}")
    fusion = {}
    if isinstance(encoder, FingerprintFusionEncoder):
        fusion = {"fingerprint_bits": encoder.n_bits, "fingerprint_radius": encoder.radius,
                  "fingerprint_dims": tuple(hp["fingerprint_dims"])}
    cfg = ModelConfig(encoder=graph_part(encoder).name, hidden_dim=hp["hidden_dim"],
                      num_layers=hp["num_layers"], dropout=hp["dropout"], jk=hp["jk"],
                      pooling=hp["pooling"], **fusion)
    model = build_model(cfg, featurizer, 1)
    model.encoder.load_state_dict({k: v.detach().cpu() for k, v in encoder.state_dict().items()})
    save_checkpoint(path, model, featurizer, cfg, [ENCODER_ONLY_TASK], CLASSIFICATION,
                    extra={"pretrain": info or {}})


def load_pretrained_encoder(
    path: str | Path, expected_featurizer: str | Featurizer | None = None
) -> Encoder:
    """The encoder of a checkpoint written by :func:`save_pretrained_encoder` (or any model)."""
    return load_checkpoint(path, expected_featurizer).model.encoder


def trained_on(corpus: ShardedCorpus | None = None, labelled: Any = None) -> dict[str, Any]:
    """What a pretraining run learned from, for its records: the corpus (source, molecules,
    rows, invalid SMILES skipped, shards) and the labelled set of ``supervised`` stages
    (a :class:`moladapt.training.Prepared`: source, molecules, tasks, invalid rows)."""
    record: dict[str, Any] = {}
    if corpus is not None:
        record["corpus"] = {k: v for k, v in corpus.to_dict().items() if k != "shards"}
    if labelled is not None:
        record["labels"] = {"source": labelled.data.source, "molecules": len(labelled.graphs),
                            "tasks": len(labelled.data.task_names), "invalid": len(labelled.invalid)}
    return record


def init_encoder_from(encoder: Encoder, path: str | Path, featurizer: str | Featurizer) -> dict[str, Any]:
    """Copy the encoder weights of the checkpoint ``path`` into ``encoder`` (in place).

    Any moladapt checkpoint serves (a pretraining ``encoder.pt``, the bundled encoder, a
    fine-tuned ``model.pt``); it must hold a graph encoder of ``encoder``'s architecture, or a
    fingerprint-fused one of the same fusion when ``encoder`` is fused
    (:func:`moladapt.models.fingerprint.load_encoder_weights`), trained on ``featurizer``.

    Returns:
        the provenance record ``{"path", "sha256", "extra", "encoder"}``
        (:func:`moladapt.provenance.checkpoint_record` plus the architecture); ``extra`` is the
        checkpoint's own record, which holds *its* ``init`` in turn. Pass it to :func:`pretrain`
        as ``init_from``.

    Raises:
        ValueError: another featurizer or architecture, named with both sides.
    """
    from moladapt.models.fingerprint import ARCHITECTURE_KEYS, load_encoder_weights
    from moladapt.provenance import checkpoint_record

    loaded = load_checkpoint(path, expected_featurizer=featurizer)
    source = loaded.model.encoder
    if isinstance(source, FingerprintFusionEncoder) and not isinstance(encoder, FingerprintFusionEncoder):
        raise ValueError(f"{path}: its encoder is fingerprint-fused; pretraining a graph encoder "
                         "continues from a graph encoder only (a fused one: --fingerprint-bits)")
    load_encoder_weights(encoder, source, str(path))
    return {**checkpoint_record(path, loaded.extra),
            "encoder": {"name": graph_part(source).name,
                        **{k: source.hparams[k] for k in ARCHITECTURE_KEYS}}}


# -- training ---------------------------------------------------------------------------------
def pretrain(
    encoder: Encoder,
    objectives: Sequence[ObjectiveSpec] | ObjectiveSpec | None,
    graphs: PretrainData,
    y: np.ndarray | None = None,
    *,
    epochs: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    stages: Sequence[tuple[Any, int]] | None = None,
    device: str | torch.device = "cpu",
    stage_data: Sequence[tuple[PretrainData, np.ndarray | None] | None] | None = None,
    precision: str = "fp32",
    init_from: dict[str, Any] | None = None,
    data_record: dict[str, Any] | None = None,
) -> PretrainHistory:
    """Pretrain ``encoder`` (in place) on ``graphs`` with the given objectives.

    Args:
        encoder: built for the featurizer of ``graphs``.
        objectives: names (``"context_prediction"``), ``(name, options)`` pairs or built
            :class:`PretrainObjective` instances; their losses are summed.
        graphs: the molecules (:class:`MolGraphs`, or a
            :class:`~moladapt.pretrain.corpus.ShardedCorpus` read shard by shard); ``y``
            ``[M, T]`` (NaN = missing) only for ``supervised`` (not with a corpus).
        epochs: total number of epochs (default 100); with a checkpoint, only the epochs
            after the saved one run.
        stages: instead of ``objectives``/``epochs``: ``[(objectives, epochs), ...]`` run one
            after the other, each with a fresh Adam (e.g.
            ``[("supervised", 10), ("context_prediction", 10)]``).
        checkpoint_dir: where ``last.pt`` (every epoch) and ``encoder.pt`` (at the end) go.
        resume: continue from ``checkpoint_dir/last.pt`` if it exists (it must match the
            encoder, objectives and featurizer); ``False`` starts over and overwrites it.
        stage_data: one entry per stage: ``(graphs, y)`` that stage trains on instead of
            ``graphs``/``y``, or None to use them.
        device: under ``torchrun`` on GPUs, ``"cuda"`` means ``cuda:<LOCAL_RANK>``.
        precision: ``"fp32"`` or ``"bf16"`` (bfloat16 autocast of the forward pass; weights,
            optimizer and losses stay float32). Saved with the checkpoint's config.
        init_from: where ``encoder``'s starting weights came from (the record
            :func:`init_encoder_from` returns); kept in ``last.pt`` and ``encoder.pt``, and a
            ``last.pt`` that started from other weights (another sha256) is not resumed.
        data_record: what ``graphs`` and ``stage_data`` are (:func:`trained_on`), kept in
            ``encoder.pt`` as ``data``: the arrays themselves do not say where they came from.

    Returns:
        the :class:`PretrainHistory` (the objectives are in ``history`` only by name; the
        trained heads live in the checkpoint).
    """
    featurizer = get_featurizer(graphs.featurizer)
    if featurizer.version != graphs.featurizer_version:
        raise ValueError(f"graphs were featurized with {graphs.featurizer} v{graphs.featurizer_version}, "
                         f"this moladapt has v{featurizer.version}")
    hp = encoder.hparams
    if list(hp["atom_vocab_sizes"]) != list(featurizer.atom_vocab_sizes) or list(
        hp["bond_vocab_sizes"]
    ) != list(featurizer.bond_vocab_sizes):
        raise ValueError(f"the encoder was not built for featurizer {featurizer.fingerprint}")
    y = _check_data(graphs, y, featurizer)
    check_precision(precision)
    if batch_size < 2:
        raise ValueError("batch_size must be >= 2 (BatchNorm and the contrastive objectives)")

    specs = _stage_specs(objectives, epochs, stages)
    if stage_data is not None and len(stage_data) != len(specs):
        raise ValueError(f"stage_data has {len(stage_data)} entries for {len(specs)} stage(s)")
    inputs: list[tuple[PretrainData, np.ndarray | None]] = []
    for k in range(len(specs)):
        own = None if stage_data is None else stage_data[k]
        inputs.append((graphs, y) if own is None else
                      (own[0], _check_data(own[0], own[1], featurizer)))
    _check_fused_objectives(encoder, [s for stage, _ in specs for s in stage])
    torch.manual_seed(seed)
    stage_objs = [[_make_objective(s, featurizer, encoder, y_) for s in stage]
                  for (stage, _), (_, y_) in zip(specs, inputs, strict=True)]
    ctx = ddp.init_from_env(device)
    return _train(encoder, featurizer, specs, stage_objs, inputs, ctx, ddp.resolve_device(device, ctx),
                  batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                  checkpoint_dir=checkpoint_dir, resume=resume, progress=progress, precision=precision,
                  init_from=init_from, data_record=data_record)


#: what a resumed run must share with the run that wrote last.pt (epochs may grow)
_RESUME_FIXED = ("batch_size", "lr", "weight_decay", "seed", "precision", "molecules", "data_sha256")


def _check_fused_objectives(encoder: Encoder, specs: Sequence[ObjectiveSpec]) -> None:
    """A fingerprint-fused encoder is pretrained only by molecule-level objectives
    (:attr:`PretrainObjective.molecule_level`); checked before any objective is built, since
    building one may already need the graph encoder's attributes."""
    if not isinstance(encoder, FingerprintFusionEncoder):
        return
    def cls(spec: ObjectiveSpec) -> type[PretrainObjective]:
        if isinstance(spec, PretrainObjective):
            return type(spec)
        return OBJECTIVES.get(spec if isinstance(spec, str) else spec[0])

    graph_level = sorted({cls(s).name for s in specs if not cls(s).molecule_level})
    if graph_level:
        raise ValueError(f"{', '.join(graph_level)} needs a graph encoder, not a fingerprint-fused one "
                         "(pretrain its .graph_encoder, or use the supervised objective alone)")


def _data_identity(data: PretrainData) -> str:
    """A content hash of a stage's molecules: their SMILES in order, or for a sharded corpus
    its shards' cache keys (themselves content hashes), so another corpus of the same size is
    told apart without reading it."""
    import hashlib

    if isinstance(data, ShardedCorpus):
        h = hashlib.sha256()
        for shard in data.shards:
            h.update(shard.path.name.encode() + b"\n")
        return h.hexdigest()
    from moladapt.data.featurize import smiles_hash

    return smiles_hash(data.smiles)


def _check_resumable_config(path: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse to continue a run with other training settings or data: the epochs done would
    not be the run the records describe (a last.pt from before ``molecules`` was kept is
    checked on the rest)."""
    def shown(key: str, value: Any) -> str:
        return repr([h[:12] for h in value]) if key == "data_sha256" else repr(value)

    diff = [f"{k} {shown(k, saved[k])} there, {shown(k, now[k])} now" for k in _RESUME_FIXED
            if k in saved and saved[k] != now[k]]
    if diff:
        raise ValueError(f"{path}: the saved run used other settings ({'; '.join(diff)}); use "
                         "another checkpoint_dir, or resume=False (--no-resume) to start over")


def _train(encoder: Encoder, featurizer: Featurizer, specs: list[tuple[list[ObjectiveSpec], int]],
           stage_objs: list[list[PretrainObjective]],
           inputs: list[tuple[PretrainData, np.ndarray | None]], ctx: ddp.DistContext,
           device: torch.device, *, batch_size: int, lr: float, weight_decay: float, seed: int,
           checkpoint_dir: str | Path | None, resume: bool, progress: bool,
           precision: str = "fp32", init_from: dict[str, Any] | None = None,
           data_record: dict[str, Any] | None = None) -> PretrainHistory:
    if not hasattr(encoder, "atom_encoder") and not isinstance(encoder, FingerprintFusionEncoder):
        raise ValueError(f"pretraining needs a graph encoder; got {type(encoder).__name__}")
    hp = encoder.hparams
    stage_epochs = [n for _, n in specs]
    bounds = np.cumsum([0, *stage_epochs])
    total_epochs = int(bounds[-1])
    encoder.to(device)
    for objs in stage_objs:
        for o in objs:
            o.to(device)

    config = {"epochs": total_epochs, "stage_epochs": stage_epochs, "batch_size": int(batch_size),
              "lr": float(lr), "weight_decay": float(weight_decay), "seed": int(seed),
              "precision": precision, "init": to_plain(init_from),
              "molecules": [int(len(g)) for g, _ in inputs],
              "data_sha256": [_data_identity(g) for g, _ in inputs]}
    featurizer_info = {"name": featurizer.name, "version": featurizer.version,
                       "fingerprint": featurizer.fingerprint}
    history = PretrainHistory()
    ckpt_path = None if checkpoint_dir is None else Path(checkpoint_dir) / LAST_CHECKPOINT
    history.checkpoint = None if ckpt_path is None else str(ckpt_path)

    start, saved_opt, saved_opt_stage = 0, None, -1
    if ckpt_path is not None and resume and ckpt_path.exists():
        payload = load_pretrain_checkpoint(ckpt_path)
        if payload["featurizer"]["fingerprint"] != featurizer.fingerprint:
            raise ValueError(f"{ckpt_path}: featurizer {payload['featurizer']['fingerprint']} "
                             f"!= {featurizer.fingerprint}; use another checkpoint_dir or resume=False")
        if payload["encoder"]["name"] != encoder.name or payload["encoder"]["hparams"] != to_plain(hp):
            raise ValueError(f"{ckpt_path}: saved encoder {payload['encoder']['name']} "
                             f"{payload['encoder']['hparams']} differs from this one; "
                             "use another checkpoint_dir or resume=False")
        if payload["objectives"] != _describe(stage_objs):
            raise ValueError(f"{ckpt_path}: saved objectives {payload['objectives']} differ from "
                             f"{_describe(stage_objs)}; use another checkpoint_dir or resume=False")
        saved_init = (payload["config"].get("init") or {}).get("sha256")
        if saved_init != (init_from or {}).get("sha256"):
            raise ValueError(f"{ckpt_path}: it started from {_init_label(payload['config'].get('init'))}, "
                             f"this run from {_init_label(init_from)}; use another checkpoint_dir "
                             "or resume=False")
        _check_resumable_config(ckpt_path, payload["config"], config)
        encoder.load_state_dict(payload["encoder"]["state_dict"])
        for objs, states in zip(stage_objs, payload["objective_states"], strict=True):
            for o, state in zip(objs, states, strict=True):
                o.load_state_dict(state)
        torch.set_rng_state(payload["rng"]["torch"])
        start = int(payload["epoch"])
        saved_opt, saved_opt_stage = payload["optimizer"], int(payload["stage"])
        history.epochs = list(payload["history"])
        if start > total_epochs:  # finishing "early" would relabel a longer run as a shorter one
            raise ValueError(f"{ckpt_path}: the saved run already has {start} epochs, more than the "
                             f"{total_epochs} asked for; ask for at least {start}, or use another "
                             "checkpoint_dir / resume=False")
    history.start_epoch = start

    optimizer, opt_stage, model = None, -1, None
    bar = tqdm(range(start, total_epochs), desc="pretrain", disable=not progress or not ctx.is_main,
               leave=False)
    for epoch in bar:
        stage = int(np.searchsorted(bounds, epoch, side="right") - 1)
        objs = stage_objs[stage]
        keys = _keys(objs)
        if stage != opt_stage:
            params = list(encoder.parameters()) + [p for o in objs for p in o.parameters()]
            optimizer = adam(params, lr=lr, weight_decay=weight_decay)
            model = ddp.wrap(encoder, objs, ctx)  # DDP broadcasts rank 0's parameters
            if saved_opt is not None and saved_opt_stage == stage:
                optimizer.load_state_dict(saved_opt)
            saved_opt, opt_stage = None, stage
        assert optimizer is not None and model is not None
        t0 = time.perf_counter()
        encoder.train()
        for o in objs:
            o.train()
        data, data_y = inputs[stage]
        gen = _epoch_generator(seed, epoch)
        if isinstance(data, ShardedCorpus):
            batches_iter = data.batches(epoch, seed, batch_size, ctx.rank, ctx.world_size)
        else:
            batches_iter = _graph_batches(data, data_y, gen, batch_size, ctx)
        if ctx.enabled:  # same shuffle on every rank, different corruptions
            gen = _epoch_generator(seed, epoch, ctx.rank)
        sums = dict.fromkeys(keys, 0.0)
        total, batches = 0.0, 0
        for batch in tqdm(batches_iter, desc=f"epoch {epoch}", unit="batch", leave=False,
                          disable=not progress or not ctx.is_main):
            batch = batch.to(device)  # kept on the device: the epoch's last one is checked for collapse
            with autocast(device, precision):
                losses = model(batch, gen)
            losses = losses.float()
            loss = losses.sum()
            if not loss.requires_grad:
                continue  # (never under DDP: JointModel keeps every rank's loss differentiable)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for key, value in zip(keys, losses.detach().tolist(), strict=True):
                sums[key] += value
            total += float(loss.detach())
            batches += 1
        if ctx.enabled:
            total, *means = ddp.mean_across([total, *sums.values()], ctx, device)
            sums = dict(zip(keys, means, strict=True))
            ddp.sync_buffers(encoder, ctx)
            for o in objs:
                ddp.sync_buffers(o, ctx)
        record = {"epoch": epoch, "stage": stage, "loss": total / max(batches, 1),
                  "losses": {k: v / max(batches, 1) for k, v in sums.items()},
                  "batches": batches, "seconds": time.perf_counter() - t0}
        if batches:
            record["embedding_spread"] = embedding_spread(encoder, batch)
        elif ctx.is_main:
            warnings.warn(f"pretraining epoch {epoch}: no batch had anything to learn for "
                          f"{', '.join(keys)} (molecules too small, or fewer than 2 per batch); "
                          "the encoder did not change", RuntimeWarning, stacklevel=2)
        was_collapsed = history.collapsed is not None
        history.epochs.append(record)
        if not was_collapsed and history.collapsed is not None and ctx.is_main:
            warnings.warn(
                f"pretraining epoch {epoch}: the encoder has collapsed — every atom of a batch gets "
                f"the same embedding (largest per-dimension std {record['embedding_spread']:.2g}), "
                f"so {', '.join(keys)} cannot learn any more and fine-tuning would start from a "
                "constant representation. Lower the learning rate or change the objective's "
                "scoring (edge_prediction: scale_by_sqrt_dim=True); the run goes on and its "
                "summary records 'collapsed'.", RuntimeWarning, stacklevel=2)
        bar.set_postfix(loss=f"{record['loss']:.4f}", stage=stage)
        if ckpt_path is not None and ctx.is_main:
            atomic_torch_save({
                "format": PRETRAIN_CHECKPOINT_FORMAT,
                "epoch": epoch + 1,
                "stage": stage,
                "encoder": {"name": encoder.name, "hparams": to_plain(hp),
                            "state_dict": encoder.state_dict()},
                "objectives": _describe(stage_objs),
                "objective_states": [[o.state_dict() for o in objs_] for objs_ in stage_objs],
                "optimizer": optimizer.state_dict(),
                "rng": {"torch": torch.get_rng_state()},
                "featurizer": featurizer_info,
                "config": config,
                "history": to_plain(history.epochs),
            }, ckpt_path)
        ddp.barrier(ctx)

    if checkpoint_dir is not None:
        enc_path = Path(checkpoint_dir) / ENCODER_CHECKPOINT
        if ctx.is_main:
            save_pretrained_encoder(enc_path, encoder, featurizer, {
                "objectives": _describe(stage_objs), "config": config,
                "epochs_completed": len(history.epochs),
                "final_loss": history.epochs[-1]["loss"] if history.epochs else None,
                "collapsed": history.collapsed,
                "world_size": ctx.world_size,
                "data": to_plain(data_record),
                "init": to_plain(init_from),
            })
        history.encoder_checkpoint = str(enc_path)
    ddp.barrier(ctx)
    return history


def _init_label(init: dict[str, Any] | None) -> str:
    return "random weights" if not init else f"{init['path']} (sha256 {init['sha256'][:12]}…)"


def _graph_batches(graphs: MolGraphs, y: np.ndarray | None, gen: torch.Generator,
                   batch_size: int, ctx: ddp.DistContext):
    """The epoch's batches of an in-memory set: shuffled by ``gen`` (drawn now, before any
    corruption uses it), this rank's share when distributed, batches of fewer than 2 skipped."""
    order = ddp.shard_indices(torch.randperm(len(graphs), generator=gen).numpy(), ctx)
    chunks = (order[begin : begin + batch_size] for begin in range(0, len(order), batch_size))
    return (graphs.collate(idx, y) for idx in chunks if len(idx) >= 2)
