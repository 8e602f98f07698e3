"""Does edge prediction collapse the encoder? Loss and spread every 100 steps, scaled vs plain.

Edge prediction scores an atom pair by the dot product of its node embeddings. With a GIN
5×300 whose last layer ends in batch norm, the plain dot product (pretrain-gnns) gives logits
of ±tens; this script follows the loss and the last GIN layer's output spread before batch
norm (mean over dimensions of the std over a batch's atoms; 0 = every atom gets the same
embedding) for ``--score plain`` and ``--score scaled`` (h_u·h_v/√d, moladapt's default).
Setting as ``benchmarks/pretraining.py``: the first 50,000 MOSES-train molecules, batch 256,
Adam 1e-3, dropout 0, one thread.

    MOLADAPT_DATA_DIR=../shared/data python benchmarks/edge_prediction_collapse.py \
        --score plain --precision fp32 --steps 1500
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--score", choices=["plain", "scaled"], default="scaled")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--molecules", type=int, default=50_000)
    parser.add_argument("--hidden-dim", type=int, default=300)
    parser.add_argument("--num-layers", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    import pandas as pd

    from moladapt.data.featurize import get_featurizer
    from moladapt.models.encoders import build_encoder
    from moladapt.pretrain import build_objective
    from moladapt.pretrain.corpus import resolve_corpus
    from moladapt.utils import adam, autocast

    path, column = resolve_corpus("moses_train")
    frame = pd.read_csv(path, nrows=args.molecules)
    feat = get_featurizer("basic")
    graphs = feat.featurize(frame[column or frame.columns[0]].astype(str).tolist())
    encoder = build_encoder("gin", feat.atom_vocab_sizes, feat.bond_vocab_sizes,
                            hidden_dim=args.hidden_dim, num_layers=args.num_layers, dropout=0.0)
    objective = build_objective("edge_prediction", feat, encoder,
                                scale_by_sqrt_dim=args.score == "scaled")
    optimizer = adam(list(encoder.parameters()) + list(objective.parameters()), lr=1e-3)
    captured = {}
    encoder.batch_norms[-1].register_forward_hook(lambda m, inputs, out: captured.update(x=inputs[0].detach()))
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    order, cursor, losses, t0 = rng.permutation(len(graphs)), 0, [], time.perf_counter()
    print(json.dumps(vars(args)), flush=True)
    for step in range(1, args.steps + 1):
        if cursor + 256 > len(order):
            order, cursor = rng.permutation(len(graphs)), 0
        batch = graphs.collate(order[cursor:cursor + 256])
        cursor += 256
        with autocast("cpu", args.precision):
            loss = objective(encoder, batch, generator)
        loss = loss.float()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 100 == 0:
            spread = float(captured["x"].float().std(dim=0).mean())
            print(json.dumps({"step": step, "loss": round(float(np.mean(losses)), 4),
                              "pre_norm_spread": round(spread, 4),
                              "seconds": round(time.perf_counter() - t0)}), flush=True)
            losses = []


if __name__ == "__main__":
    main()
