"""A study file (YAML) → a grid of fully-resolved runs.

.. code-block:: yaml

    name: encoders
    runner: train                 # default
    fixed:                        # nested config values shared by every run
      model: {hidden_dim: 64, num_layers: 3}
      train: {epochs: 5}
    axes:                         # dotted key → list of values; the grid is their product
      data.dataset: [bbbp, bace]
      model.encoder: [gin, sage]
      train.seed: [0, 1, 2]
    zip:                          # optional: axes that vary together (one grid dimension)
      - [model.hidden_dim, train.lr]
    exclude:                      # optional: partial assignments removed from the grid
      - {data.dataset: bace, model.encoder: sage}

Each grid point becomes a :class:`RunSpec` whose ``key`` hashes the resolved config and the
runner name: the same run has the same key in every study, whatever the order of its axes.
Relative file paths (``data.csv``, ``train.init``, a corpus or labels file) are read from the
study file's folder, not from where the command runs (:func:`anchor_paths`).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

TOP_LEVEL_KEYS = ("name", "runner", "description", "fixed", "axes", "zip", "exclude")

# Training throughput of one run using the whole machine (2 CPU cores), measured on this
# project's machines: GIN 5 layers × 300 ≈ 300 molecules/s, GIN 3 × 128 ≈ 2,000 molecules/s.
# Between and beyond those we interpolate as a power law in layers × hidden², capped at the
# small-model rate's ceiling below (data loading and Python overhead dominate tiny models).
REFERENCE_THROUGHPUT = ((5 * 300**2, 300.0), (3 * 128**2, 2000.0))
MAX_THROUGHPUT = 4000.0
PER_RUN_OVERHEAD_S = 5.0  # process start, featurization (cached after the first), evaluation


class StudyError(ValueError):
    """A bad study file: the message names the file and the offending key."""


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def run_key(runner: str, config: dict[str, Any], files: dict[str, str] | None = None) -> str:
    """First 16 hex digits of sha256 over the canonical JSON of ``{runner, config}``, plus
    ``files`` (config key → sha256 of the file it names) when there are any, so that a run
    reading an edited CSV or checkpoint is a new run, not the stored result of the old file."""
    identity: dict[str, Any] = {"runner": runner, "config": config}
    if files:
        identity["files"] = files
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunSpec:
    """One fully-resolved run of a study.

    ``config`` is a plain nested dict (for runner ``train``: ``RunConfig.to_dict()`` with every
    default filled in); ``axes`` holds this point's value of each axis (dotted keys), for tables.
    """

    key: str
    runner: str
    config: dict[str, Any] = field(compare=False)
    axes: dict[str, Any] = field(compare=False)

    def __hash__(self) -> int:
        return hash((self.key, self.runner))


def set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        nxt = d.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ValueError(f"{dotted!r}: {part!r} is a value, not a section")
        d = nxt
    d[parts[-1]] = value


def get_dotted(d: dict[str, Any], dotted: str) -> Any:
    """``d["a"]["b"]`` for ``"a.b"``; ``None`` where a part is missing."""
    node: Any = d
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


@dataclass
class StudySpec:
    """A parsed, validated study file. :meth:`runs` expands it into the grid."""

    name: str
    runner: str = "train"
    fixed: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    zip: list[list[str]] = field(default_factory=list)
    exclude: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""
    source: str = "<study>"
    base_dir: str | None = None  # the study file's folder: relative file paths are read from it

    # --- loading ------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> StudySpec:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"study file not found: {path}")
        from moladapt.config import read_yaml_mapping

        try:
            raw = read_yaml_mapping(path)
        except ValueError as exc:
            raise StudyError(str(exc)) from None
        if not raw:
            raise StudyError(f"{path}: the study file is empty (it needs at least 'name' and 'axes' or 'fixed')")
        spec = cls.from_dict(raw, source=str(path), default_name=path.stem)
        return replace(spec, base_dir=str(path.resolve().parent))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<study>",
                  default_name: str = "study") -> StudySpec:
        def err(msg: str) -> StudyError:
            return StudyError(f"{source}: {msg}")

        if not isinstance(raw, dict):
            raise err("a study file is a mapping with keys " + ", ".join(TOP_LEVEL_KEYS))
        unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
        if unknown:
            raise err(f"unknown key(s) {unknown}; a study file has: {', '.join(TOP_LEVEL_KEYS)}")
        fixed = raw.get("fixed") or {}
        if not isinstance(fixed, dict):
            raise err("'fixed' must be a mapping of config sections, e.g. {train: {epochs: 5}}")
        axes = raw.get("axes") or {}
        if not isinstance(axes, dict):
            raise err("'axes' must map dotted keys to lists, e.g. {train.seed: [0, 1, 2]}")
        for key, values in axes.items():
            if not isinstance(values, list) or not values:
                raise err(f"axis {key!r} must be a non-empty list of values, got {values!r}")
        zips = raw.get("zip") or []
        if not isinstance(zips, list) or not all(isinstance(g, list) for g in zips):
            raise err("'zip' must be a list of lists of axis names, e.g. [[model.hidden_dim, train.lr]]")
        seen: set[str] = set()
        for group in zips:
            for key in group:
                if key not in axes:
                    raise err(f"zip names {key!r}, which is not an axis; the axes are {list(axes)}")
                if key in seen:
                    raise err(f"axis {key!r} is in more than one zip group")
                seen.add(key)
            lengths = {key: len(axes[key]) for key in group}
            if len(set(lengths.values())) > 1:
                raise err(f"zipped axes must have equal lengths, got {lengths}")
        exclude = raw.get("exclude") or []
        if not isinstance(exclude, list) or not all(isinstance(e, dict) and e for e in exclude):
            raise err("'exclude' must be a list of non-empty mappings of axis → value")
        for entry in exclude:
            for key, value in entry.items():
                if key not in axes:
                    raise err(f"exclude names {key!r}, which is not an axis; the axes are {list(axes)}")
                if value not in axes[key]:  # a typo would silently exclude nothing
                    raise err(f"exclude entry {entry} matches no grid point: axis {key!r} has "
                              f"the values {axes[key]}")
        spec = cls(name=str(raw.get("name") or default_name), runner=str(raw.get("runner") or "train"),
                   fixed=copy.deepcopy(fixed), axes={str(k): list(v) for k, v in axes.items()},
                   zip=[list(g) for g in zips], exclude=[dict(e) for e in exclude],
                   description=str(raw.get("description") or ""), source=source)
        spec._runner()  # unknown runner → error now
        for entry in spec.exclude:  # zipped axes take their values together, index by index
            for dim in spec.dimensions():
                keys = [k for k in dim if k in entry]
                if len(keys) > 1 and not any(all(spec.axes[k][i] == entry[k] for k in keys)
                                             for i in range(len(spec.axes[dim[0]]))):
                    raise err(f"exclude entry {entry} matches no grid point: {', '.join(keys)} "
                              "are zipped and never take these values together")
        return spec

    def _runner(self):
        from moladapt.study.executors import RUNNERS

        try:
            return RUNNERS.get(self.runner)
        except KeyError as exc:
            raise StudyError(f"{self.source}: {exc.args[0]}") from None

    # --- expansion ----------------------------------------------------------------------
    def dimensions(self) -> list[list[str]]:
        """Grid dimensions in file order: a single axis, or a zip group (at its first axis)."""
        group_of = {key: tuple(g) for g in self.zip for key in g}
        dims: list[list[str]] = []
        placed: set[tuple[str, ...]] = set()
        for key in self.axes:
            group = group_of.get(key, (key,))
            if group not in placed:
                placed.add(group)
                dims.append(list(group))
        return dims

    def points(self) -> list[dict[str, Any]]:
        """Every grid point (dotted axis → value), exclusions removed, in file order."""
        dims = self.dimensions()
        choices = [[{key: self.axes[key][i] for key in dim} for i in range(len(self.axes[dim[0]]))]
                   for dim in dims]
        points = []
        for combo in itertools.product(*choices):
            point: dict[str, Any] = {}
            for part in combo:
                point.update(part)
            if not any(_matches(point, entry) for entry in self.exclude):
                points.append(point)
        return points

    def grid_size(self) -> int:
        return math.prod(len(self.axes[dim[0]]) for dim in self.dimensions())

    def runs(self) -> list[RunSpec]:
        """The resolved runs; raises :class:`StudyError` naming the file and key on bad values."""
        runner = self._runner()
        runs: list[RunSpec] = []
        keys: dict[str, dict[str, Any]] = {}
        digests: dict[str, str] = {}  # a file read once for all the runs naming it
        for point in self.points():
            config = {}
            try:
                # fixed: nested sections, then dotted keys as the axes take them (train.epochs: 2)
                fixed = sorted(self.fixed.items(), key=lambda item: "." in item[0])
                for dotted, value in [*fixed, *point.items()]:
                    set_dotted(config, dotted, copy.deepcopy(value))
                if self.base_dir is not None:
                    anchor_paths(config, Path(self.base_dir))
                files = input_files(config, digests)
                resolved = runner.resolve(config)
            except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
                msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
                where = f" at {point}" if point else ""
                raise StudyError(f"{self.source}{where}: {msg}") from None
            key = run_key(self.runner, key_config(config, resolved), files)
            if key in keys:
                raise StudyError(f"{self.source}: grid points {keys[key]} and {point} give the same "
                                 "run (an axis lists a value twice?)")
            keys[key] = point
            runs.append(RunSpec(key=key, runner=self.runner, config=resolved, axes=dict(point)))
        return runs


# config keys that hold a file path (always: the first two; the pretrain keys also take names)
PATH_KEYS = ("data.csv", "train.init", "pretrain.corpus", "pretrain.labels_dataset", "pretrain.init")
CORPUS_SUFFIXES = (".csv", ".csv.gz", ".smi", ".txt", ".smi.gz", ".txt.gz")  # a corpus file, not a name


def file_keys(config: dict[str, Any]) -> list[str]:
    """The :data:`PATH_KEYS` of ``config`` whose values name files: ``data.csv`` and
    ``train.init`` always (a bundled encoder aside), the pretrain keys when the value looks
    like a path (a ``/``, or a corpus or checkpoint suffix) rather than a name."""
    keys = []
    for dotted in PATH_KEYS:
        value = get_dotted(config, dotted)
        if not isinstance(value, str) or not value:
            continue
        if _bundled(dotted, value):
            continue  # a bundled encoder: keyed by name and weights (input_files, key_config)
        always = dotted in ("data.csv", "train.init")
        if always or "/" in value or value.lower().endswith((*CORPUS_SUFFIXES, ".pt")):
            keys.append(dotted)
    return keys


def anchor_paths(config: dict[str, Any], base_dir: Path) -> None:
    """Make the relative file paths of ``config`` (:func:`file_keys`) absolute against
    ``base_dir``, the study file's folder, so a study means the same files wherever it is run
    from, and a run's key names the file it read rather than a path relative to somewhere."""
    for dotted in file_keys(config):
        section, _, name = dotted.partition(".")
        path = Path(config[section][name]).expanduser()  # "~/x.csv": the loaders do not expand it
        config[section][name] = str(path if path.is_absolute() else (base_dir / path).resolve())


def _bundled(dotted: str, value: Any) -> bool:
    from moladapt.bundled_models import is_bundled

    return dotted.endswith(".init") and isinstance(value, str) and is_bundled(value)


def input_files(config: dict[str, Any], digests: dict[str, str]) -> dict[str, str]:
    """Config key → sha256 of the file it names, for :func:`file_keys` and bundled encoders
    (``digests``: path → sha256, filled as files are read). Taken from the study's config before
    a runner resolves it, where a bundled encoder is still a name; its weights count through
    this digest, so another release's encoder is a new run. A missing file is refused here,
    before any run starts."""
    from moladapt.bundled_models import resolve_init, sha256_file

    files: dict[str, str] = {}
    named = {dotted: get_dotted(config, dotted) for dotted in file_keys(config)}
    for dotted in PATH_KEYS:
        value = get_dotted(config, dotted)
        if _bundled(dotted, value):
            try:
                named[dotted] = str(resolve_init(value))
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"{dotted}: {exc}") from None
    for dotted, value in named.items():
        if not Path(value).is_file():
            raise FileNotFoundError(f"{dotted}: no file {value}")
        if value not in digests:
            digests[value] = sha256_file(value)
        files[dotted] = digests[value]
    return files


def key_config(config: dict[str, Any], resolved: dict[str, Any]) -> dict[str, Any]:
    """``resolved`` as :func:`run_key` hashes it: a bundled encoder as ``bundled``, not by the
    path a runner resolved it to (which depends on where moladapt is installed) nor by which of
    its names was written; its weights are in the key through :func:`input_files`, so
    ``bundled`` and ``bundled:<default>`` are one run, and another encoder is another run."""
    bundled = [dotted for dotted in PATH_KEYS if _bundled(dotted, get_dotted(config, dotted))]
    if not bundled:
        return resolved
    keyed = copy.deepcopy(resolved)
    for dotted in bundled:
        set_dotted(keyed, dotted, "bundled")
    return keyed


def _matches(point: dict[str, Any], entry: dict[str, Any]) -> bool:
    return all(point.get(k) == v for k, v in entry.items())


# --- plan -----------------------------------------------------------------------------------
def estimated_throughput(num_layers: int, hidden_dim: int) -> float:
    """Training molecules/s of one run on 2 CPU cores, from :data:`REFERENCE_THROUGHPUT`."""
    (c1, t1), (c2, t2) = REFERENCE_THROUGHPUT
    exponent = math.log(t2 / t1) / math.log(c1 / c2)
    cost = max(1, num_layers) * max(1, hidden_dim) ** 2
    return min(MAX_THROUGHPUT, t1 * (c1 / cost) ** exponent)


def _dataset_size(data: dict[str, Any], cache: dict[str, int | None]) -> int | None:
    name = data.get("dataset") or data.get("csv")
    if name is None:
        return None
    if name not in cache:
        try:
            if data.get("dataset"):
                from moladapt.data.sources import load_dataset

                cache[name] = len(load_dataset(data["dataset"], download=False))
            else:
                import pandas as pd

                cache[name] = len(pd.read_csv(data["csv"], usecols=[0]))  # rows; any SMILES column name
        except Exception:  # noqa: BLE001 - a size we cannot read is just "unknown" in a plan
            cache[name] = None
    return cache[name]


def duration(seconds: float) -> str:
    """``seconds`` for people: "40 s", "12 min", "2.1 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan(spec: StudySpec, runs: list[RunSpec] | None = None) -> str:
    """A human-readable summary: grid size, per-axis counts and (runner train) a cost estimate."""
    runs = spec.runs() if runs is None else runs
    lines = [f"study {spec.name!r} ({spec.source}), runner {spec.runner!r}"]
    if spec.description:
        lines.append(f"  {spec.description}")
    full = spec.grid_size()
    lines.append(f"runs: {len(runs)}" + (f" (grid {full}, {full - len(runs)} excluded)" if full != len(runs) else ""))
    lines.append("axes:")
    for dim in spec.dimensions():
        n = len(spec.axes[dim[0]])
        label = " × ".join(dim) if len(dim) == 1 else "zip(" + ", ".join(dim) + ")"
        shown = [spec.axes[k] for k in dim]
        values = ", ".join(str(v) for v in (shown[0] if len(dim) == 1 else zip(*shown, strict=True)))
        lines.append(f"  {label}: {n}  [{values}]")
    if not spec.axes:
        lines.append("  (none: a single run)")
    runner = spec._runner()
    extra_cost = runner.plan_cost  # e.g. pretraining shared between runs
    cost_factor = runner.cost_factor  # e.g. auxiliary tasks: a multiple of plain training
    if (spec.runner != "train" and extra_cost is None and cost_factor is None) or not runs:
        return "\n".join(lines)

    sizes: dict[str, int | None] = {}
    total_mol_epochs = 0.0
    total_seconds = 0.0
    unknown = 0
    for run in runs:
        data, model, train = run.config["data"], run.config["model"], run.config["train"]
        n = _dataset_size(data, sizes)
        if n is None:
            unknown += 1
            continue
        mol_epochs = n * float(data["split_frac"][0]) * int(train["epochs"])
        total_mol_epochs += mol_epochs
        seconds = mol_epochs / estimated_throughput(model["num_layers"], model["hidden_dim"])
        total_seconds += seconds * (cost_factor(run.config) if cost_factor else 1.0) + PER_RUN_OVERHEAD_S
    known = ", ".join(f"{k}: {v:,}" for k, v in sizes.items() if v is not None)
    lines.append(f"dataset sizes: {known or 'unknown'}")
    lines.append(f"cost: {total_mol_epochs:,.0f} training molecule-epochs"
                 + (f" ({unknown} run(s) of unknown size not counted)" if unknown else ""))
    if extra_cost is not None:
        _, extra_seconds, extra_lines = extra_cost(runs)
        lines.append(f"  fine-tuning: ~{duration(total_seconds)}")
        lines.extend(extra_lines)
        total_seconds += extra_seconds
    here = "" if _cpu_count() == 2 else (
        f" (about {duration(total_seconds * 2 / max(2, _cpu_count()))} on this machine's "
        f"{_cpu_count()} cores)")
    lines.append(f"estimated time: ~{duration(total_seconds)} on a 2-core CPU machine{here}")
    lines.append("  assumes GIN-like throughput measured on 2 cores: 5×300 ≈ 300 mol/s, "
                 "3×128 ≈ 2,000 mol/s, power law in layers × hidden² in between, "
                 f"≤ {MAX_THROUGHPUT:,.0f} mol/s, + {PER_RUN_OVERHEAD_S:.0f} s per run; "
                 "time scales ~linearly with cores")
    if cost_factor is not None and getattr(cost_factor, "__doc__", None):
        lines.append("  " + " ".join(cost_factor.__doc__.split()))
    return "\n".join(lines)


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1
