"""Shared fixtures. Real data comes from MOLADAPT_DATA_DIR (default: ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
os.environ.setdefault("MOLADAPT_DATA_DIR", str(DEFAULT_DATA_DIR))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ["MOLADAPT_DATA_DIR"])
    if not (path / "BBBP.csv").exists():
        pytest.skip(f"benchmark data not found in {path} (set MOLADAPT_DATA_DIR)")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own featurization/download cache: no test sees another's files."""
    monkeypatch.setenv("MOLADAPT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def bbbp(data_dir) -> pd.DataFrame:
    return pd.read_csv(data_dir / "BBBP.csv")


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark("fsmol.py")``: a script of ``benchmarks/`` imported as a module (its
    siblings importable while it loads), registered in ``sys.modules`` as ``<stem>_bench``
    because dataclasses look their module up."""
    import importlib.util
    import sys

    def load(script: str):
        folder = REPO / "benchmarks"
        spec = importlib.util.spec_from_file_location(f"{Path(script).stem}_bench", folder / script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        sys.path.insert(0, str(folder))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(folder))
        return module

    return load
