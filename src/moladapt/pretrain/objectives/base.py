"""The interface every self-supervised (or supervised) pretraining objective implements.

An objective is an ``nn.Module`` holding its own prediction heads (so the trainer's
optimizer trains them and checkpoints save them) with two steps:

* ``transform(batch, generator)``: batch-level corruption / augmentation / target
  extraction on tensors (random numbers only from ``generator``);
* ``loss(encoder, transformed)``: runs the shared ``encoder`` (and the heads) and
  returns a scalar loss.

``objective(encoder, batch, generator)`` does both. Objectives are registered in
:data:`OBJECTIVES` and built with :func:`build_objective`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from moladapt.data.featurize import Featurizer
from moladapt.models.encoders import Encoder
from moladapt.registry import Registry
from moladapt.types import GraphBatch


class PretrainObjective(nn.Module):
    """Base class. Subclasses set ``name`` and implement :meth:`transform` and :meth:`loss`.

    Args:
        featurizer: the featurizer of the batches (vocabulary sizes, MASK indices).
        out_dim: width of the encoder's node / graph embeddings (``encoder.out_dim``).

    Attributes:
        hparams: the keyword options given to the constructor (plain values), recorded in
            pretraining checkpoints so the objective can be rebuilt.
        needs_labels: whether batches must carry ``y`` (only ``supervised``).
        recipe_version: bumped when the objective's default behaviour changes, so encoders
            pretrained under the old recipe are not reused as if they were the new one.
        earlier_recipes: ``{version: options}``, the constructor options that reproduce each
            earlier recipe, so results of an old recipe can be completed under it
            (:func:`recipe_options`).
        derived_options: constructor options the caller fills in from the data (e.g.
            ``supervised``'s ``num_tasks``), so a user does not set them.
        molecule_level: the loss only calls ``encoder(batch)`` on batches as collated (no node
            embeddings, no augmented views without SMILES), so a fingerprint-fused encoder
            (:class:`~moladapt.models.fingerprint.FingerprintFusionEncoder`) can be
            pretrained with it as a whole (only ``supervised``).
    """

    name: ClassVar[str] = ""
    needs_labels: ClassVar[bool] = False
    recipe_version: ClassVar[int] = 1
    earlier_recipes: ClassVar[dict[int, dict[str, Any]]] = {}
    derived_options: ClassVar[tuple[str, ...]] = ()
    molecule_level: ClassVar[bool] = False

    def __init__(self, featurizer: Featurizer, out_dim: int) -> None:
        super().__init__()
        self.featurizer = featurizer
        self.out_dim = int(out_dim)
        self.hparams: dict[str, Any] = {}

    @classmethod
    def from_encoder(
        cls, featurizer: Featurizer, encoder: Encoder, **options: Any
    ) -> PretrainObjective:
        """Build for ``encoder`` (objectives needing more than ``out_dim`` override this)."""
        return cls(featurizer, encoder.out_dim, **options)

    def transform(self, batch: GraphBatch, generator: torch.Generator) -> Any:
        """Corrupt / augment ``batch``; default: unchanged."""
        return batch

    def loss(self, encoder: Encoder, transformed: Any) -> Tensor:
        raise NotImplementedError

    def forward(self, encoder: Encoder, batch: GraphBatch, generator: torch.Generator) -> Tensor:
        return self.loss(encoder, self.transform(batch, generator))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, hparams={self.hparams}"


OBJECTIVES: Registry[type[PretrainObjective]] = Registry("pretrain objective")

# the short names of the pretrain-gnns / Dey & Ning command lines
OBJECTIVE_ALIASES = {"attrmask": "attribute_masking", "masking": "attribute_masking",
                     "contextpred": "context_prediction", "edgepred": "edge_prediction",
                     "contrastive": "graphcl", "dgi": "infomax"}


def canonical_objective(name: str) -> str:
    """The registered name for ``name`` or one of its short aliases (``attrmask`` → ``attribute_masking``)."""
    key = name.strip()
    return OBJECTIVE_ALIASES.get(key.lower(), key)


def objective_option_names(name: str) -> list[str]:
    """The keyword options a user may give objective ``name`` (its constructor's)."""
    cls = OBJECTIVES.get(canonical_objective(name))
    skip = {"self", "featurizer", "out_dim", *cls.derived_options}
    return [p.name for p in inspect.signature(cls.__init__).parameters.values()
            if p.name not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def parse_objective_options(
    items: Sequence[str] | Mapping[str, Mapping[str, Any]] | None, objectives: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """Options per objective from ``name.option=value`` items (or a ``{name: {option: value}}``
    mapping), checked against the objectives in use and their constructors.

    Values are read as YAML (``0.25``, ``false``, ``[node_drop, subgraph]``); names may be
    aliases (``attrmask.mask_rate=0.25``). The result is keyed by registered name, options
    sorted, so equal settings compare (and hash) equal.

    Raises:
        ValueError: an item that is not ``name.option=value``, an objective not among
            ``objectives``, or an option the objective does not take (the message lists those
            it does).
    """
    from moladapt.config import parse_scalar

    used = {canonical_objective(n) for n in objectives}
    pairs: list[tuple[str, str, Any]] = []
    if isinstance(items, Mapping):
        for name, options in items.items():
            if not isinstance(options, Mapping):
                raise ValueError(f"objective options of {name!r} must be a mapping option: value, "
                                 f"got {options!r}")
            pairs += [(str(name), str(k), v) for k, v in options.items()]
    else:
        for item in items or ():
            key, sep, text = str(item).partition("=")
            name, dot, option = key.strip().partition(".")
            if not (sep and dot and name and option):
                raise ValueError(f"objective option {item!r}: write it as objective.option=value, "
                                 "e.g. attribute_masking.mask_rate=0.25")
            pairs.append((name, option.strip(), parse_scalar(text)))
    out: dict[str, dict[str, Any]] = {}
    for raw_name, option, value in pairs:
        name = canonical_objective(raw_name)
        if name not in used:
            raise ValueError(f"objective option {raw_name}.{option}: {raw_name!r} is not among the "
                             f"objectives in use ({', '.join(sorted(used)) or 'none'})")
        allowed = objective_option_names(name)
        if option not in allowed:
            raise ValueError(f"objective {name!r} has no option {option!r}; its options are: "
                             f"{', '.join(allowed) or '(none)'}")
        out.setdefault(name, {})[option] = value
    return {n: dict(sorted(o.items())) for n, o in sorted(out.items())}


def recipe_options(name: str, version: int) -> dict[str, Any]:
    """The constructor options that run objective ``name`` under recipe ``version``: none for
    its current recipe, :attr:`PretrainObjective.earlier_recipes` for an earlier one."""
    cls = OBJECTIVES.get(canonical_objective(name))
    if version == cls.recipe_version:
        return {}
    if version in cls.earlier_recipes:
        return dict(cls.earlier_recipes[version])
    known = sorted({cls.recipe_version, *cls.earlier_recipes})
    raise ValueError(f"objective {cls.name!r} has no recipe {version}: recipes {known} "
                     f"(current {cls.recipe_version})")


def changed_recipes(names: Iterable[str], pinned: Mapping[str, int] | None = None) -> dict[str, int]:
    """``{name: recipe_version}`` of the objectives among ``names`` that run another recipe than
    1 (their current one, or the one ``pinned`` gives them): what must enter a result's identity
    so runs of another recipe never pool with it, while results of recipe 1 keep theirs."""
    names = [canonical_objective(n) for n in names]
    pinned = {canonical_objective(k): int(v) for k, v in (pinned or {}).items()}
    stray = sorted(set(pinned) - set(names))
    if stray:
        raise ValueError(f"recipe given for {stray}, which are not among the objectives {names}")
    out = {}
    for name in names:
        version = pinned.get(name, OBJECTIVES.get(name).recipe_version)
        recipe_options(name, version)  # an unknown version fails here, not mid-run
        if version != 1:
            out[name] = version
    return out


def with_options(names: Iterable[str], options: Mapping[str, Mapping[str, Any]] | None) -> list[Any]:
    """Objective specs for the trainer: ``name``, or ``(name, options)`` where options are set."""
    options = options or {}
    return [(n, dict(options[n])) if options.get(n) else n for n in names]


def build_objective(
    name: str, featurizer: Featurizer, encoder: Encoder, **options: Any
) -> PretrainObjective:
    """The objective registered as ``name``, sized for ``encoder`` and ``featurizer``."""
    return OBJECTIVES.get(name).from_encoder(featurizer, encoder, **options)


def zero_loss(device: torch.device | str) -> Tensor:
    """The loss of a batch an objective has nothing to learn from (no gradient)."""
    return torch.zeros((), device=device)
