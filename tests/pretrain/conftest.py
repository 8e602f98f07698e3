"""Shared fixtures of the pretraining tests: one torch thread, and small real BBBP slices."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from moladapt.data.featurize import get_featurizer


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: tiny graphs gain nothing from more, and the CI box is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def bbbp_slice():
    """``load(n) -> (featurizer, graphs, y)`` for the first ``n`` BBBP molecules (cached)."""
    path = Path(os.environ["MOLADAPT_DATA_DIR"]) / "BBBP.csv"  # set by tests/conftest.py
    cache: dict[int, tuple] = {}

    def load(n: int):
        if not path.exists():
            pytest.skip(f"{path} not available")
        if n not in cache:
            import pandas as pd

            df = pd.read_csv(path).iloc[:n]
            feat = get_featurizer("basic")
            graphs = feat.featurize(df["smiles"].tolist())
            y = df["p_np"].to_numpy(np.float32)[graphs.source_rows].reshape(-1, 1)
            cache[n] = (feat, graphs, y)
        return cache[n]

    return load
