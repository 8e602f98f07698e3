"""Frozen, serialisable configurations. Every run writes its resolved config as YAML."""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class DataConfig:
    """Which molecules and labels, how they are featurized and split.

    Exactly one of ``dataset`` (a registered benchmark) and ``csv`` (a user's file).
    """

    dataset: str | None = "bbbp"
    csv: str | None = None
    smiles_column: str = "smiles"
    target_columns: tuple[str, ...] | None = None
    task_type: str | None = None
    featurizer: str = "basic"
    split: str = "scaffold"
    split_frac: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int | None = None  # None: use the training seed

    def __post_init__(self) -> None:
        if (self.dataset is None) == (self.csv is None):
            raise ValueError("give exactly one of dataset= (a benchmark name) and csv= (a file)")
        if abs(sum(self.split_frac) - 1.0) > 1e-6 or min(self.split_frac) < 0:
            raise ValueError(f"split_frac must be 3 non-negative numbers summing to 1, got {self.split_frac}")


@dataclass(frozen=True)
class ModelConfig:
    """Encoder and head. Defaults: the pretrain-gnns GIN (5 layers × 300, JK last, mean pool)."""

    encoder: str = "gin"
    hidden_dim: int = 300
    num_layers: int = 5
    dropout: float = 0.5
    jk: str = "last"
    pooling: str = "mean"
    head_hidden_dims: tuple[int, ...] = ()
    # > 0: fuse the graph embedding with this many ECFP bits through an MLP of widths
    # fingerprint_dims (FS-Mol's "gnn+ecfp+fc"; moladapt.models.fingerprint). 0: graph only.
    fingerprint_bits: int = 0
    fingerprint_radius: int = 2
    fingerprint_dims: tuple[int, ...] = (1024, 512)
    # occurrence counts instead of bits (FS-Mol's ECFP input)
    fingerprint_counts: bool = False

    def __post_init__(self) -> None:
        for name, low in (("hidden_dim", 1), ("num_layers", 1), ("fingerprint_bits", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"model.{name} must be an integer of at least {low}, got {value!r}")
        if not isinstance(self.dropout, numbers.Real) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout!r}")
        if self.fingerprint_counts and not self.fingerprint_bits:
            raise ValueError("model.fingerprint_counts needs a fingerprint: set model.fingerprint_bits "
                             "(2048 in FS-Mol)")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. Defaults follow pretrain-gnns fine-tuning (Adam 1e-3, batch 32, 100 epochs)."""

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int | None = None  # early stopping on the validation metric; None = run all epochs
    seed: int = 0
    num_threads: int | None = None
    eval_batch_size: int = 256
    init: str | None = None  # checkpoint to start from
    freeze_encoder: bool = False  # linear probe: only the head trains
    head_only_epochs: int = 0  # staged unfreezing: head only for this many epochs, then all
    encoder_lr_scale: float = 1.0  # encoder lr = lr × this (e.g. 0.1 when fine-tuning a pretrained encoder)
    # Score the test part after every epoch too. Never used to pick the model: it exists so a
    # run can be compared with papers that report the test metric at the last epoch
    # (pretrain-gnns and the works that copy its protocol) as well as at the best-valid epoch.
    track_test: bool = False
    precision: str = "fp32"  # "bf16": bfloat16 autocast in training (mixed precision); eval stays fp32

    def __post_init__(self) -> None:
        # a negative lr scale makes Adam climb the loss (it does not check per-group rates);
        # zero epochs would report an untrained model's metrics as a result
        limits = {"epochs": (self.epochs, 1), "batch_size": (self.batch_size, 1),
                  "eval_batch_size": (self.eval_batch_size, 1), "head_only_epochs": (self.head_only_epochs, 0),
                  "patience": (self.patience, 0), "num_threads": (self.num_threads, 1)}
        for name, (value, low) in limits.items():
            if value is not None and (not isinstance(value, numbers.Integral) or value < low):
                raise ValueError(f"train.{name} must be an integer of at least {low}, got {value!r}")
        for name, value in (("lr", self.lr), ("weight_decay", self.weight_decay),
                            ("encoder_lr_scale", self.encoder_lr_scale)):
            if not isinstance(value, numbers.Real) or not value >= 0:  # also refuses NaN
                raise ValueError(f"train.{name} must be a number >= 0, got {value!r}")


#: ModelConfig fields added after results were stored, each with the value that reproduces what
#: those results ran. Serialised model configs (study run keys, model and resume identities,
#: resolved configs) leave such a field out at that value, so every stored run, model and
#: checkpoint keeps its identity; from_dict fills it back in.
LATER_MODEL_FIELDS: dict[str, Any] = {"fingerprint_counts": False}


def model_config_dict(cfg: ModelConfig) -> dict[str, Any]:
    """``cfg`` as plain data, without the :data:`LATER_MODEL_FIELDS` that are at their old value."""
    d = to_plain(asdict(cfg))
    return {k: v for k, v in d.items() if not (k in LATER_MODEL_FIELDS and v == LATER_MODEL_FIELDS[k])}


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {**to_plain(asdict(self)), "model": model_config_dict(self.model)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        if not isinstance(d, dict):
            raise ValueError(f"a run config is a mapping with sections data, model, train; got {type(d).__name__}")
        sections = {}
        for name, section_cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig)):
            section = dict(d.get(name) or {})
            if name == "data" and section.get("csv") is not None and "dataset" not in section:
                section["dataset"] = None  # a CSV alone: not also the default benchmark
            sections[name] = from_dict(section_cls, section, prefix=f"{name}.")
        return cls(**sections)

    def replace(self, **sections: dict[str, Any]) -> RunConfig:
        """A copy with some fields changed, e.g. ``cfg.replace(train={"epochs": 5})``."""
        parts = {name: getattr(self, name) for name in ("data", "model", "train")}
        for name, changes in sections.items():
            parts[name] = dataclasses.replace(parts[name], **changes)
        return RunConfig(**parts)

    def save(self, path: str | Path) -> None:
        from moladapt.utils import atomic_write_text

        atomic_write_text(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Read a config.yaml; a bad file raises ValueError naming it (and the key)."""
        try:
            return cls.from_dict(read_yaml_mapping(path))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from None


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file that holds a mapping (empty file: ``{}``); ValueError naming the file otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a YAML file")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise ValueError(f"{path}: not valid YAML{at} ({getattr(exc, 'problem', None) or exc})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of sections (key: value), got a {type(loaded).__name__}")
    return loaded


def to_plain(obj: Any) -> Any:
    """Tuples → lists, recursively, so the result is YAML/JSON/torch-weights_only safe."""
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


#: 1e-4, -2.5E+3: numbers that YAML 1.1 (PyYAML) reads as strings, for want of a decimal point
_EXPONENT_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")


def parse_scalar(text: str) -> Any:
    """One value written on a command line (``name=value``), read as YAML — ``0.5`` → 0.5,
    ``true`` → True, ``[16, 64]`` → a list, ``mahalanobis`` → a string; empty → None — except
    that ``1e-4`` is the number PyYAML would leave a string."""
    text = text.strip()
    if not text:
        return None
    if _EXPONENT_NUMBER.fullmatch(text):
        return float(text)
    return yaml.safe_load(text)


def split_list(value: str | None) -> tuple[str, ...] | None:
    """``"a, b"`` → ``("a", "b")``: a list of names written as one comma-separated string (on
    the command line, or in a config file); ``None`` for ``None`` or ``""``."""
    if value is None or value == "":
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def from_dict(cls: type, d: dict[str, Any], prefix: str = ""):
    """Build dataclass ``cls`` from a plain dict, rejecting unknown keys with their names and
    values of the wrong type with the key (``prefix`` + name), not hours later in training."""
    if not isinstance(d, dict):
        raise ValueError(f"{prefix.rstrip('.') or cls.__name__} must be a mapping of options, got {d!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for key, value in d.items():
        annotation = str(known[key].type)
        if isinstance(value, list):
            value = tuple(value)
        elif annotation.startswith("tuple[str") and isinstance(value, str):
            value = split_list(value)  # as on the command line
        elif annotation.startswith("tuple") and value is not None and not isinstance(value, tuple):
            raise ValueError(f"{prefix}{key} must be a list, got {value!r}")
        kwargs[key] = checked_value(f"{prefix}{key}", annotation, value)
    return cls(**kwargs)


def checked_arguments(factory: Any, params: dict[str, Any], what: str) -> dict[str, Any]:
    """``params`` for ``factory(**params)``, each checked and converted by :func:`checked_value`
    against the annotation of ``factory``'s parameter of that name (a ``-p`` value, or a
    number a YAML file wrote as a string, becomes the annotated type before any training);
    errors name ``what`` and the parameter. The names must be ``factory``'s."""
    signature = inspect.signature(factory)

    def annotation(name: str) -> str:
        ann = signature.parameters[name].annotation  # a string under postponed evaluation
        return ann if isinstance(ann, str) else ann.__name__ if isinstance(ann, type) else str(ann)

    return {k: checked_value(f"{what} {k}", annotation(k), v) for k, v in params.items()}


def checked_value(name: str, annotation: str, value: Any) -> Any:
    """``value`` as the scalar type ``annotation`` names (``int``, ``float | None`` ...);
    numbers written as strings (YAML reads ``1e-3`` as one) are converted; others pass."""
    base = annotation.replace(" | None", "").strip()
    if value is None or base not in ("int", "float", "bool"):
        return value
    if base == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {'an integer' if base == 'int' else 'a number'}, got {value!r}") from None
    if base == "float":
        return number
    if not number.is_integer():
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(number)
