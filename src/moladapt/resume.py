"""Resume files: the whole state of an unfinished training, saved so that a killed run continues.

A :class:`ResumeFile` is written atomically (:func:`moladapt.utils.atomic_torch_save`), so a
kill leaves the previous state or the new one, never half a file. It carries an ``identity``
(JSON-like: the configuration that decides the trajectory) and a format tag; a file written by
another configuration or another kind of training is refused with a message naming the
fields that differ, instead of being silently mixed into this run. Subclasses name the kind
of training (:class:`moladapt.adapt.base.MetaCheckpoint` for meta-training,
:class:`moladapt.training.TrainCheckpoint` for supervised training).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from moladapt.utils import atomic_torch_save

R = TypeVar("R", bound="ResumeFile")


@dataclass(frozen=True)
class ResumeFile:
    """The resume file at ``path`` for the run described by ``identity``."""

    path: Path
    identity: Mapping[str, Any] = field(default_factory=dict)

    FORMAT: ClassVar[str] = "moladapt-resume-1"
    KIND: ClassVar[str] = "training"
    REMEDY: ClassVar[str] = "delete it or choose another output"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def with_identity(self: R, **more: Any) -> R:
        """A copy whose identity also holds ``more`` (the caller adds what only it knows)."""
        return dataclasses.replace(self, identity={**self.identity, **more})

    def load(self) -> dict[str, Any] | None:
        """The saved state, or ``None`` when there is no file; a file of another identity or
        format raises ``ValueError`` naming it."""
        import torch

        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
            raise ValueError(f"{self.path}: not a readable {self.KIND} checkpoint ({exc})") from exc
        if not isinstance(state, dict) or state.get("format") != self.FORMAT:
            raise ValueError(f"{self.path}: not a {self.KIND} checkpoint of format {self.FORMAT}")
        diff = differences(state["identity"], comparable(self.identity))
        if diff:
            raise ValueError(f"{self.path} was written by another {self.KIND} configuration "
                             f"(differs in: {', '.join(diff)}); {self.REMEDY}")
        return state

    def save(self, state: Mapping[str, Any]) -> None:
        atomic_torch_save({"format": self.FORMAT, "identity": comparable(self.identity), **state}, self.path)

    def discard(self) -> None:
        """Remove the file (the run finished and its results are written)."""
        self.path.unlink(missing_ok=True)


def differences(saved: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ. A field only one side records is not a
    difference: the file was written by a version that did not record it yet, or recorded one
    this version no longer counts (e.g. the thread count)."""
    out = []
    for key in sorted(set(saved) & set(now)):
        a, b = saved[key], now.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def comparable(identity: Mapping[str, Any]) -> dict[str, Any]:
    """``identity`` as plain JSON types (tuples become lists), as it reads back from the file."""
    return json.loads(json.dumps(dict(identity), default=str))
