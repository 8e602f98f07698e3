"""Featurization throughput on MOSES SMILES; prints a Markdown table.

    python benchmarks/featurize.py --n 50000

Measures molecules per second (wall clock, worker start-up included) for: RDKit
``MolFromSmiles`` alone (the floor any RDKit featurizer pays), moladapt's ``basic`` and
``rich`` featurizers with 1 and 2 processes, OGB's ``smiles2graph`` when ``ogb`` is
installed (``pip install --no-deps ogb``: ``smiles2graph`` needs only RDKit and NumPy, and
the full install would pull another torch), and reloading the featurized set from an ``.npz`` (what a cache hit costs).
Timings on a shared machine vary: the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rdkit
from rdkit import Chem, RDLogger

from moladapt.data.featurize import get_featurizer
from moladapt.types import MolGraphs

DEFAULT_DATA = Path(os.environ.get("MOLADAPT_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")) / "moses_train.csv.gz"
ARRAYS = ("source_rows", "x", "edge_index", "edge_attr", "node_ptr", "edge_ptr")


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def save_npz(graphs: MolGraphs, path: Path) -> None:
    np.savez(
        path,
        smiles=np.frombuffer("\n".join(graphs.smiles).encode(), dtype=np.uint8),
        invalid_rows=np.asarray(graphs.invalid_rows, dtype=np.int64),
        featurizer=np.array([graphs.featurizer, graphs.featurizer_version]),
        **{name: getattr(graphs, name) for name in ARRAYS},
    )


def load_npz(path: Path) -> MolGraphs:
    with np.load(path, allow_pickle=False) as z:
        text = z["smiles"].tobytes().decode()
        name, version = (str(v) for v in z["featurizer"])
        return MolGraphs(
            smiles=text.split("\n") if text else [],
            featurizer=name,
            featurizer_version=version,
            invalid_rows=z["invalid_rows"].tolist(),
            **{k: z[k] for k in ARRAYS},
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50000, help="first N SMILES of the file")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CSV with a SMILES column")
    args = parser.parse_args()

    smiles = pd.read_csv(args.data, nrows=args.n, usecols=["SMILES"])["SMILES"].tolist()
    n = len(smiles)
    rows: list[tuple[str, str, float, str]] = []

    def record(method: str, procs: str, seconds: float, note: str = "") -> None:
        rows.append((method, procs, seconds, note))
        print(f"  {method} ({procs} proc): {n / seconds:,.0f} mol/s", file=sys.stderr, flush=True)

    RDLogger.DisableLog("rdApp.*")
    mols, t = timed(lambda: [Chem.MolFromSmiles(s) for s in smiles])
    record("RDKit `MolFromSmiles` only", "1", t, f"{sum(m is None for m in mols)} invalid")
    del mols

    graphs = {}
    for name in ("basic", "rich"):
        featurizer = get_featurizer(name)
        for procs in (1, 2):
            g, t = timed(lambda f=featurizer, p=procs: f.featurize(smiles, n_jobs=p))
            graphs[name, procs] = g
            record(f"moladapt `{name}`", str(procs), t, f"{g.x.shape[0] / len(g):.1f} atoms/mol")
        same = all(
            np.array_equal(getattr(graphs[name, 1], k), getattr(graphs[name, 2], k)) for k in ARRAYS
        )
        if not same:
            raise SystemExit(f"{name}: 2-process output differs from 1-process output")

    try:
        from ogb.utils import smiles2graph
    except ImportError:
        smiles2graph = None
        print("ogb not installed: skipping ogb.utils.smiles2graph", file=sys.stderr)
    if smiles2graph is not None:
        _, t = timed(lambda: [smiles2graph(s) for s in smiles])
        record("OGB `smiles2graph`", "1", t)

    basic = graphs["basic", 1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "basic.npz"
        save_npz(basic, path)
        size_mb = path.stat().st_size / 2**20
        best = float("inf")
        for _ in range(3):  # the first load may hit a cold page cache
            loaded, t = timed(lambda: load_npz(path))
            best = min(best, t)
        for k in ARRAYS:
            assert np.array_equal(getattr(loaded, k), getattr(basic, k)), k
        assert loaded.smiles == basic.smiles
        record("cached reload (`.npz` → `MolGraphs`)", "1", best, f"{size_mb:.1f} MiB, best of 3")

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"### Featurization throughput — {dt.date.today().isoformat()}\n\n"
        f"{n:,} SMILES (first rows of `{args.data.name}`); CPU count {os.cpu_count()}; "
        f"load average (1/5/15 min) at the end {load}; Python {platform.python_version()}, "
        f"RDKit {rdkit.__version__}, NumPy {np.__version__}.\n"
    )
    parse_seconds = rows[0][2]
    print("| method | processes | mol/s | seconds | vs. parse only | notes |")
    print("|---|---:|---:|---:|---:|---|")
    for method, procs, seconds, note in rows:
        ratio = f"{parse_seconds / seconds:.2f}×"
        print(f"| {method} | {procs} | {n / seconds:,.0f} | {seconds:.2f} | {ratio} | {note} |")
    if smiles2graph is None:
        print("\nogb not installed: `ogb.utils.smiles2graph` skipped.")


if __name__ == "__main__":
    main()
