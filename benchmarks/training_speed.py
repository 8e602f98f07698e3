"""Training throughput: moladapt's Trainer vs a bare loop over pre-collated batches.

Both train the same GIN 5×300 on the same BBBP molecules for the same number of epochs.
The bare loop gets every batch collated in advance (as PyG's DataLoader would hand
them over), so the ratio measures what moladapt's pipeline (on-the-fly collation from the
packed arrays, masked loss, shuffling) costs. Target: ratio ≥ 0.9.

    MOLADAPT_DATA_DIR=../shared/data python benchmarks/training_speed.py --threads 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time

import numpy as np
import torch

from moladapt.config import ModelConfig, TrainConfig
from moladapt.data.sources import load_dataset
from moladapt.training import Trainer, build_model, masked_loss, prepare


def bare_loop(model, batches, epochs: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    n = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        for batch in batches:
            loss = masked_loss(model(batch), batch.y, "classification")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += batch.num_graphs
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--molecules", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prepared = prepare(load_dataset("bbbp"), "basic")
    idx = np.arange(min(args.molecules, len(prepared.graphs)))
    rows = [f"# Training throughput — GIN 5×300, BBBP, {args.threads} thread(s), {dt.date.today()}, "
            f"{platform.machine()} ({os.cpu_count()} cores)", "",
            "| batch | moladapt Trainer (mol/s) | bare loop, pre-collated (mol/s) | ratio |", "|---|---|---|---|"]
    for batch_size in (32, 256):
        ours, bare = [], []
        for rep in range(args.repeats):
            torch.manual_seed(rep)
            model = build_model(ModelConfig(), prepared.featurizer, 1)
            trainer = Trainer(model, "classification",
                              TrainConfig(epochs=args.epochs, batch_size=batch_size, seed=rep), progress=False)
            trainer.fit(prepared.graphs, prepared.y, idx)  # no validation: training time only
            ours.append(trainer.history_.molecules_per_second)
            torch.manual_seed(rep)
            model = build_model(ModelConfig(), prepared.featurizer, 1)
            order = np.random.default_rng(rep).permutation(idx)
            batches = [prepared.graphs.collate(order[s : s + batch_size], prepared.y)
                       for s in range(0, len(order), batch_size) if len(order[s : s + batch_size]) > 1]
            bare.append(bare_loop(model, batches, args.epochs))
        o, b = float(np.median(ours)), float(np.median(bare))
        rows.append(f"| {batch_size} | {o:.0f} | {b:.0f} | {o / b:.2f} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
