"""The pretrained encoder shipped inside the package, and its model card.

A bundled encoder lives at ``moladapt/bundled/encoder_<name>.pt`` (a checkpoint written by
:func:`moladapt.pretrain.save_pretrained_encoder`: GIN 5×300, ``basic`` features) with a
model card ``encoder_<name>.md`` and its pretraining identity ``encoder_<name>.identity.json``
(the hash :func:`moladapt.study.pretrain_runner.pretrain_hash` gives its configuration, the
identity behind it, the file's sha256) beside it. ``benchmarks/build_bundled_encoder.py``
builds all three. ``moladapt train --init bundled`` / ``MolPropertyModel(init="bundled")`` start from it
(via :func:`resolve_init`); ``bundled:<name>`` picks one by name.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

BUNDLED = "bundled"
DEFAULT_NAME = "attribute_masking"
BUILD_COMMAND = "python benchmarks/build_bundled_encoder.py --objective {name}"


def bundled_dir() -> Path:
    """The package's ``bundled`` data directory."""
    return Path(str(resources.files("moladapt") / BUNDLED))


def encoder_path(name: str = DEFAULT_NAME) -> Path:
    """Where the bundled encoder ``name`` is (whether or not it exists)."""
    return bundled_dir() / f"encoder_{name}.pt"


def card_path(name: str = DEFAULT_NAME) -> Path:
    return bundled_dir() / f"encoder_{name}.md"


def identity_path(name: str = DEFAULT_NAME) -> Path:
    return bundled_dir() / f"encoder_{name}.identity.json"


def find_by_pretrain_hash(key: str) -> tuple[str, dict[str, Any]] | None:
    """The bundled encoder built by the pretraining configuration whose hash is ``key``, as
    ``(name, identity record)``; None when no bundled encoder records that hash, or when the
    one that does no longer has the sha256 its record names (a stale record is never trusted).

    A study or benchmark that asks for exactly the bundled encoder's pretraining then starts
    from the shipped file instead of spending the CPU hours again.
    """
    for name in available():
        path = identity_path(name)
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        if record.get("hash") == key and record.get("sha256") == sha256_file(encoder_path(name)):
            return name, record
    return None


def available() -> list[str]:
    """Names of the bundled encoders present, sorted."""
    d = bundled_dir()
    if not d.is_dir():
        return []
    return sorted(p.name[len("encoder_"):-len(".pt")] for p in d.glob("encoder_*.pt"))


def is_bundled(init: object) -> bool:
    """Whether an ``init`` value names a bundled encoder (``bundled`` or ``bundled:<name>``)
    rather than a file."""
    text = str(init) if isinstance(init, (str, Path)) else ""
    return text == BUNDLED or text.startswith(f"{BUNDLED}:")


def resolve_init(init: str | Path | None) -> str | Path | None:
    """The checkpoint file an ``init`` option names.

    * ``None`` → ``None`` (no initialisation);
    * ``"bundled"`` → the bundled encoder ``encoder_<DEFAULT_NAME>.pt``, or, when that one is
      absent and exactly one other ``encoder_*.pt`` is bundled, that one;
    * ``"bundled:<name>"`` → ``encoder_<name>.pt``;
    * anything else (a path) → unchanged.

    Raises:
        FileNotFoundError: a bundled encoder is asked for but not built; the message names
            the expected file and the command that builds it.
    """
    if init is None:
        return None
    if not isinstance(init, str):
        # a CLI option typed Path: "bundled" arrives as Path("bundled")
        if not is_bundled(init):
            return init
        init = str(init)
    if init == BUNDLED:
        present = available()
        name = DEFAULT_NAME
        if not encoder_path(DEFAULT_NAME).exists() and len(present) == 1:
            name = present[0]
    elif init.startswith(f"{BUNDLED}:"):
        name = init[len(BUNDLED) + 1:]
        if not name:
            raise ValueError("init 'bundled:' needs a name, e.g. 'bundled:attribute_masking'")
    else:
        return init
    path = encoder_path(name)
    if path.exists():
        return str(path)
    others = ", ".join(f"bundled:{n}" for n in available()) or "none"
    raise FileNotFoundError(
        f"init {init!r}: the bundled pretrained encoder {path} is not there (bundled encoders "
        f"present: {others}); build it with `{BUILD_COMMAND.format(name=name)}` "
        "(about 2 h on 2 CPU cores), or pass the path of a pretrained encoder.pt")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


CARD_FIELDS = ("name", "objectives", "corpus", "corpus_size", "epochs", "hparams", "featurizer",
               "featurizer_version", "command", "wall_seconds", "sha256")


def model_card(info: dict[str, Any]) -> str:
    """The Markdown model card of a bundled encoder.

    ``info`` keys: ``name``, ``objectives`` (names, or stages ``[(names, epochs), ...]``),
    ``corpus`` (source), ``corpus_size`` (molecules used), ``epochs``, ``hparams`` (dict:
    encoder dims, batch size, lr, ...), ``featurizer``, ``featurizer_version``, ``command``,
    ``wall_seconds``, ``sha256``; optional ``file_size``, ``labels`` (supervised stage data),
    ``final_loss``, ``environment`` (dict), ``date``, ``downstream`` (a Markdown table of the
    measured fine-tuning effect, or None: "not measured").
    """
    missing = [k for k in CARD_FIELDS if k not in info]
    if missing:
        raise ValueError(f"model card: missing field(s) {missing}")
    name = info["name"]
    objectives = info["objectives"]
    if objectives and isinstance(objectives[0], (list, tuple)):
        objectives = " → ".join(f"{'+'.join(n)} ({e} epochs)" for n, e in objectives)
    else:
        objectives = _fmt(objectives)
    hp = info["hparams"] or {}
    hp_lines = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in hp.items())
    wall = float(info["wall_seconds"])
    size = info.get("file_size")
    lines = [
        f"# Bundled pretrained encoder `{name}`",
        "",
        f"File: `moladapt/bundled/encoder_{name}.pt`"
        + (f" ({size / 1e6:.1f} MB)" if size else "") + f"; use it with `moladapt train --init "
        f"bundled:{name}` or `MolPropertyModel(init=\"bundled:{name}\")` "
        f"(the fine-tuned model must use the same encoder dimensions and featurizer).",
        "",
        "## Pretraining",
        "",
        "| field | value |",
        "|---|---|",
        f"| objective(s) | {objectives} |",
        f"| corpus | {_fmt(info['corpus'])} |",
        f"| corpus size (molecules) | {_fmt(info['corpus_size'])} |",
    ]
    if info.get("labels"):
        lines.append(f"| supervised labels | {_fmt(info['labels'])} |")
    lines += [
        f"| epochs | {_fmt(info['epochs'])} |",
        f"| featurizer | `{info['featurizer']}` version {info['featurizer_version']} |",
        f"| wall time | {wall:.0f} s ({wall / 3600:.2f} h) |",
    ]
    if info.get("final_loss") is not None:
        lines.append(f"| final loss | {float(info['final_loss']):.4f} |")
    if info.get("date"):
        lines.append(f"| date | {info['date']} |")
    lines.append(f"| sha256 | `{info['sha256']}` |")
    lines += ["", "## Hyper-parameters", "", "| name | value |", "|---|---|", hp_lines, "",
              "## Command", "", "```", str(info["command"]), "```", ""]
    env = info.get("environment")
    if env:
        lines += ["## Environment", "", ", ".join(f"{k} {v}" for k, v in env.items()), ""]
    lines += ["## Measured downstream effect", ""]
    downstream = info.get("downstream")
    lines.append(downstream.strip() if downstream else
                 "Not measured yet: run `benchmarks/pretraining.py` and rebuild the card with "
                 "`--downstream benchmarks/results/pretraining.md`.")
    return "\n".join(lines) + "\n"
