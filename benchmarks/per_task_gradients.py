"""Per-task gradients: a loop of ``torch.autograd.grad`` vs ``torch.func`` (vjp + vmap).

A GIN 3×64 with a 3-task linear head on a batch of BBBP molecules; the three task losses
are masked BCE on the BBBP label and two random binary labels. Both methods include the
forward pass and return the ``[3, P]`` gradients of the encoder (shared) parameters.

    MOLADAPT_DATA_DIR=../shared/data python benchmarks/per_task_gradients.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from moladapt.adapt.gradients.pertask import benchmark_per_task_gradients
from moladapt.data.featurize import get_featurizer
from moladapt.models.encoders import build_encoder
from moladapt.models.heads import MolecularModel, PredictionHead
from moladapt.training import masked_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    data_dir = Path(os.environ.get("MOLADAPT_DATA_DIR", Path(__file__).parents[2] / "shared" / "data"))
    df = pd.read_csv(data_dir / "BBBP.csv").head(4 * args.batch_size)
    feat = get_featurizer("basic")
    graphs = feat.featurize(df["smiles"].tolist())
    rng = np.random.default_rng(args.seed)
    y_all = np.stack([
        df["p_np"].to_numpy()[graphs.source_rows],
        rng.integers(0, 2, len(graphs)),
        rng.integers(0, 2, len(graphs)),
    ], axis=1).astype(np.float32)
    batch = graphs.collate(np.arange(min(args.batch_size, len(graphs))), y_all)

    encoder = build_encoder("gin", feat.atom_vocab_sizes, feat.bond_vocab_sizes,
                            hidden_dim=64, num_layers=3, dropout=0.0)
    model = MolecularModel(encoder, PredictionHead(encoder.out_dim, 3)).train()
    names = [f"encoder.{n}" for n, _ in encoder.named_parameters()]

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        return torch.stack([masked_loss(out[:, [k]], batch.y[:, [k]], "classification")
                            for k in range(3)])

    res = benchmark_per_task_gradients(model, loss_fn, batch, param_names=names,
                                       steps=args.steps)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"threads={args.threads}, batch={batch.num_graphs} molecules / {batch.num_nodes} atoms, "
          f"T={int(res['num_tasks'])}, P={int(res['num_params'])}")
    print(f"autograd.grad loop : {res['loop_ms']:.2f} ms/step")
    print(f"torch.func vmap    : {res['func_ms']:.2f} ms/step")
    print(f"max |diff|         : {res['max_abs_diff']:.2e}")


if __name__ == "__main__":
    main()
