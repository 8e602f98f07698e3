"""Unlabelled pretraining corpora, featurized into shards of the featurization cache.

:func:`featurize_corpus` reads a SMILES file in chunks of ``shard_size`` rows (pandas
``chunksize``, so the whole file is never in memory) and featurizes each chunk into one
``.npz`` of the featurization cache (:mod:`moladapt.data.cache`: same key scheme, written
atomically), skipping the chunks already there. It returns a :class:`ShardedCorpus`, which
loads one shard at a time: memory is bounded by one shard, whatever the corpus size.

Sources: a CSV / CSV.gz with a SMILES column, a ``.smi`` / ``.txt`` (/ ``.gz``) file with
one SMILES per line (the first whitespace-separated token; a ``smiles`` header line is
skipped), or the names ``moses_train``, ``moses_test`` and ``moses_test_scaffolds``,
which resolve to ``<name>.csv.gz`` (column ``SMILES``) in ``$MOLADAPT_DATA_DIR``.

Shuffling: epoch ``e`` visits the shards in an order drawn from a generator seeded by
``(seed, e)`` and the molecules of each shard in an order drawn from the same generator,
so every valid molecule is seen exactly once per epoch, in a different order each epoch,
and every process of a distributed run computes the same order (``rank``/``world_size``
then pick every ``world_size``-th molecule of each shard, DistributedSampler-style).
"""

from __future__ import annotations

import gzip
import weakref
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moladapt.data.cache import cache_key, default_cache_dir, load_graphs, save_graphs
from moladapt.data.featurize import Featurizer, get_featurizer
from moladapt.data.sources import DataError, data_dirs
from moladapt.types import GraphBatch, MolGraphs

#: Corpus names and the file each resolves to (searched in ``data_dirs()``).
CORPORA: dict[str, tuple[str, str]] = {
    "moses_train": ("moses_train.csv.gz", "SMILES"),
    "moses_test": ("moses_test.csv.gz", "SMILES"),
    "moses_test_scaffolds": ("moses_test_scaffolds.csv.gz", "SMILES"),
}
_LINE_SUFFIXES = (".smi", ".txt", ".smi.gz", ".txt.gz")
_MAX_INVALID_EXAMPLES = 20


@dataclass(frozen=True)
class CorpusShard:
    """One cached shard: ``num_molecules`` valid molecules out of ``num_rows`` input rows.

    ``row_offset`` is the 0-based data row (in the source file) of the shard's first row.
    """

    path: Path
    num_molecules: int
    num_rows: int
    row_offset: int

    @property
    def num_invalid(self) -> int:
        return self.num_rows - self.num_molecules


@dataclass
class ShardedCorpus:
    """A featurized corpus stored as cache shards, loaded one at a time.

    Attributes:
        shards: the shards, in file order.
        featurizer, featurizer_version: as in :class:`~moladapt.types.MolGraphs`.
        source: the file it was read from.
        num_rows: input rows read (valid + invalid).
        invalid: ``(line in the file, SMILES)`` of the first invalid SMILES (at most 20).
        num_invalid: how many SMILES RDKit could not parse (all of them).
        shard_loads: how many times a shard was read from disk.
        max_resident_shards: the most shards alive in memory at once when a shard was
            loaded (tracked with weak references, so a caller holding on to old shards
            shows up here); 1 when memory stays bounded by one shard.
    """

    shards: list[CorpusShard]
    featurizer: str
    featurizer_version: str
    source: str = ""
    num_rows: int = 0
    num_invalid: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)
    shard_loads: int = 0
    max_resident_shards: int = 0

    def __post_init__(self) -> None:
        self._current: tuple[int, MolGraphs] | None = None
        self._alive: list[weakref.ref] = []

    def __len__(self) -> int:
        return sum(s.num_molecules for s in self.shards)

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def invalid_summary(self, limit: int = 10) -> str:
        if not self.num_invalid:
            return ""
        shown = "; ".join(f"line {line}: '{smi}'" for line, smi in self.invalid[:limit])  # verbatim
        more = f" … and {self.num_invalid - min(limit, len(self.invalid))} more" if (
            self.num_invalid > min(limit, len(self.invalid))) else ""
        return f"{self.source}: skipped {self.num_invalid} invalid SMILES ({shown}{more})"

    # -- loading ----------------------------------------------------------------------
    def load_shard(self, index: int) -> MolGraphs:
        """Shard ``index`` (the previously loaded shard is released first)."""
        if self._current is not None and self._current[0] == index:
            return self._current[1]
        self._current = None  # drop our reference before reading the next shard
        graphs = load_graphs(self.shards[index].path)
        self.shard_loads += 1
        self._alive = [r for r in self._alive if r() is not None]
        self._alive.append(weakref.ref(graphs))
        self.max_resident_shards = max(self.max_resident_shards, len(self._alive))
        self._current = (index, graphs)
        return graphs

    def release(self) -> None:
        """Forget the shard held in memory."""
        self._current = None

    # -- epoch order ------------------------------------------------------------------
    def epoch_plan(
        self, epoch: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(shard index, molecule indices within it)`` of epoch ``epoch``, in visiting order.

        Same ``(seed, epoch)`` → same order in every process. With ``world_size > 1`` each
        shard's permutation is padded (repeating its start) to a multiple of
        ``world_size`` and ``rank`` takes every ``world_size``-th index, so all ranks get
        the same number of molecules from each shard.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        rng = np.random.default_rng([int(seed), int(epoch)])
        for s in rng.permutation(len(self.shards)):
            n = self.shards[s].num_molecules
            perm = rng.permutation(n)
            if n == 0:
                continue
            if world_size > 1:
                per_rank = -(-n // world_size)
                perm = np.resize(perm, per_rank * world_size)[rank::world_size]
            yield int(s), perm

    def batches(
        self,
        epoch: int,
        seed: int = 0,
        batch_size: int = 256,
        rank: int = 0,
        world_size: int = 1,
        min_batch: int = 2,
    ) -> Iterator[GraphBatch]:
        """The batches of epoch ``epoch``, shard by shard (see :meth:`epoch_plan`).

        A batch never spans two shards, so the last batch of a shard may be smaller;
        batches of fewer than ``min_batch`` molecules are skipped. Only one shard is in
        memory at a time (none is referenced by the yielded batches).
        """
        try:
            for s, order in self.epoch_plan(epoch, seed, rank, world_size):
                graphs = self.load_shard(s)
                for begin in range(0, len(order), batch_size):
                    idx = order[begin : begin + batch_size]
                    if len(idx) < min_batch:
                        continue
                    yield graphs.collate(idx)
                del graphs
        finally:
            self.release()

    def iter_smiles(self, epoch: int, seed: int = 0) -> Iterator[str]:
        """The SMILES of epoch ``epoch`` in its training order (for inspection and tests)."""
        try:
            for s, order in self.epoch_plan(epoch, seed):
                smiles = self.load_shard(s).smiles
                yield from (smiles[i] for i in order)
        finally:
            self.release()

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "featurizer": self.featurizer,
                "featurizer_version": self.featurizer_version, "num_molecules": len(self),
                "num_rows": self.num_rows, "num_invalid": self.num_invalid,
                "num_shards": self.num_shards, "shards": [str(s.path) for s in self.shards]}


# -- reading ------------------------------------------------------------------------------
def resolve_corpus(path_or_name: str | Path, smiles_column: str | None = None) -> tuple[Path, str | None]:
    """The file of a corpus name or path, and its SMILES column (None for line files)."""
    key = str(path_or_name)
    if key.lower() in CORPORA:
        filename, column = CORPORA[key.lower()]
        for d in data_dirs():
            if (d / filename).exists():
                return d / filename, smiles_column or column
        raise FileNotFoundError(
            f"corpus {key!r}: {filename} not found in {', '.join(str(d) for d in data_dirs())}; "
            "put the MOSES file there (or set MOLADAPT_DATA_DIR)")
    path = Path(path_or_name)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such corpus file (names: {', '.join(CORPORA)})")
    if path.name.lower().endswith(_LINE_SUFFIXES):
        return path, None
    return path, smiles_column


def _line_chunks(path: Path, size: int, limit: int | None) -> Iterator[tuple[list[str], int]]:
    """Chunks of ``size`` SMILES of a one-per-line file, with the file line of the first."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    chunk: list[str] = []
    first_line = 1
    count = 0
    with opener(path, "rt") as fh:
        for lineno, line in enumerate(fh, start=1):
            tokens = line.split()
            if lineno == 1 and tokens and tokens[0].lower() == "smiles":
                first_line = 2
                continue
            if limit is not None and count >= limit:
                break
            chunk.append(tokens[0] if tokens else "")
            count += 1
            if len(chunk) == size:
                yield chunk, first_line
                first_line += size
                chunk = []
    if chunk:
        yield chunk, first_line


def _csv_chunks(path: Path, column: str | None, size: int,
                limit: int | None) -> Iterator[tuple[list[str], int]]:
    try:
        columns = list(pd.read_csv(path, nrows=0).columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if column is None:
        lowered = [c for c in columns if str(c).lower() == "smiles"]
        if lowered:
            column = lowered[0]
        elif len(columns) == 1:
            column = columns[0]
        else:
            raise DataError(f"{path}: which column holds the SMILES? Pass smiles_column "
                            f"(the columns are {columns[:20]})")
    if column not in columns:
        raise DataError(f"{path}: no SMILES column {column!r}; the columns are {columns[:20]}")
    reader = pd.read_csv(path, usecols=[column], dtype={column: str}, keep_default_na=False,
                         chunksize=size, nrows=limit)
    line = 2  # header = line 1
    for frame in reader:
        smiles = [s.strip() for s in frame[column].tolist()]
        yield smiles, line
        line += len(smiles)


def featurize_corpus(
    path_or_name: str | Path,
    smiles_column: str | None = None,
    featurizer: str | Featurizer = "basic",
    limit: int | None = None,
    shard_size: int = 100_000,
    n_jobs: int = 1,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> ShardedCorpus:
    """Featurize an unlabelled SMILES file into cache shards; see the module docstring.

    Args:
        path_or_name: a CSV/CSV.gz, a ``.smi``/``.txt`` file, or a name of :data:`CORPORA`.
        smiles_column: the CSV's SMILES column (default: one named ``smiles`` in any case,
            or the only column).
        limit: read only the first ``limit`` rows.
        shard_size: rows per shard (each shard is one cache entry; change it and the
            shards are rebuilt).
        n_jobs: worker processes for featurization (``-1``: all cores).
        cache_dir: the featurization cache (default :func:`default_cache_dir`).
        log: called with one line per shard built and with the invalid-SMILES summary.

    Returns:
        the :class:`ShardedCorpus`; ``num_invalid`` / ``invalid`` report unparseable SMILES.
    """
    feat = get_featurizer(featurizer) if isinstance(featurizer, str) else featurizer
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    path, column = resolve_corpus(path_or_name, smiles_column)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    chunks = (_line_chunks(path, shard_size, limit) if path.name.lower().endswith(_LINE_SUFFIXES)
              else _csv_chunks(path, column, shard_size, limit))
    corpus = ShardedCorpus([], feat.name, feat.version, source=str(path))
    row = 0
    for smiles, first_line in chunks:
        shard_path = cache / f"{cache_key(smiles, feat)}.npz"
        invalid_rows = _cached_invalid_rows(shard_path, len(smiles))
        if invalid_rows is None:
            graphs = feat.featurize(smiles, n_jobs=n_jobs)
            save_graphs(graphs, shard_path)
            invalid_rows = list(graphs.invalid_rows)
            del graphs
            if log is not None:
                log(f"featurized shard {len(corpus.shards)} ({len(smiles)} SMILES) -> {shard_path}")
        corpus.shards.append(CorpusShard(shard_path, len(smiles) - len(invalid_rows), len(smiles), row))
        corpus.num_invalid += len(invalid_rows)
        for r in invalid_rows:
            if len(corpus.invalid) >= _MAX_INVALID_EXAMPLES:
                break
            corpus.invalid.append((first_line + r, smiles[r]))
        row += len(smiles)
    corpus.num_rows = row
    if row == 0:
        raise DataError(f"{path}: no SMILES found")
    if len(corpus) == 0:
        raise DataError(f"{path}: none of the {row} SMILES could be parsed by RDKit")
    if corpus.num_invalid and log is not None:
        log(corpus.invalid_summary())
    return corpus


def _cached_invalid_rows(path: Path, n_rows: int) -> list[int] | None:
    """The invalid rows of a cached shard (reading only that array), or None if unusable."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            invalid = z["invalid_rows"].tolist()
            n_mols = int(z["node_ptr"].shape[0]) - 1
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # cut short: rebuild it
        path.unlink(missing_ok=True)
        return None
    if n_mols + len(invalid) != n_rows:
        path.unlink(missing_ok=True)
        return None
    return invalid
