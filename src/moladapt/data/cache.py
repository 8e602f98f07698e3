"""On-disk cache of featurized datasets.

Key = sha256 of the SMILES list (in order) + featurizer name + version + vocabulary sizes,
so a changed featurizer (or a changed file) never reuses a stale entry. Entries are single
``.npz`` files written atomically (temporary file + ``os.replace``): a killed process
leaves either the old entry or none, never a torn one.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from moladapt.data.featurize import Featurizer, smiles_hash
from moladapt.types import MolGraphs
from moladapt.utils import temp_sibling


def default_cache_dir() -> Path:
    """``$MOLADAPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/moladapt``, else ``~/.cache/moladapt``."""
    if os.environ.get("MOLADAPT_CACHE_DIR"):
        return Path(os.environ["MOLADAPT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "moladapt"


def cache_key(smiles: Sequence[str], featurizer: Featurizer) -> str:
    ident = hashlib.sha256(featurizer.fingerprint.encode()).hexdigest()[:8]
    return f"{featurizer.name}-v{featurizer.version}-{ident}-{smiles_hash(smiles)[:24]}"


def save_graphs(graphs: MolGraphs, path: Path) -> None:
    """Write ``graphs`` to ``path`` (.npz) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "smiles": np.frombuffer("\n".join(graphs.smiles).encode(), dtype=np.uint8),
        "source_rows": graphs.source_rows,
        "x": graphs.x,
        "edge_index": graphs.edge_index,
        "edge_attr": graphs.edge_attr,
        "node_ptr": graphs.node_ptr,
        "edge_ptr": graphs.edge_ptr,
        "invalid_rows": np.asarray(graphs.invalid_rows, dtype=np.int64),
        "featurizer": np.array([graphs.featurizer, graphs.featurizer_version]),
    }
    fd, tmp = temp_sibling(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_graphs(path: Path) -> MolGraphs:
    with np.load(path, allow_pickle=False) as z:
        text = z["smiles"].tobytes().decode()
        name, version = (str(v) for v in z["featurizer"])
        return MolGraphs(
            smiles=text.split("\n") if text else [],
            source_rows=z["source_rows"],
            x=z["x"],
            edge_index=z["edge_index"],
            edge_attr=z["edge_attr"],
            node_ptr=z["node_ptr"],
            edge_ptr=z["edge_ptr"],
            featurizer=name,
            featurizer_version=version,
            invalid_rows=z["invalid_rows"].tolist(),
        )


def featurize_cached(
    smiles: Sequence[str],
    featurizer: Featurizer,
    cache_dir: Path | None = None,
    n_jobs: int = 1,
    use_cache: bool = True,
) -> MolGraphs:
    """Featurize ``smiles``, reusing the cached result of an identical earlier call."""
    if not use_cache:
        return featurizer.featurize(smiles, n_jobs=n_jobs)
    path = Path(cache_dir or default_cache_dir()) / f"{cache_key(smiles, featurizer)}.npz"
    if path.exists():
        try:
            return load_graphs(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            path.unlink(missing_ok=True)  # unreadable entry: rebuild it
    graphs = featurizer.featurize(smiles, n_jobs=n_jobs)
    save_graphs(graphs, path)
    return graphs
