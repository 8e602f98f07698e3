"""`pretrain()` unchanged under torchrun: 2 CPU processes (gloo) end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from moladapt.pretrain.distributed import DistContext, shard_indices

WORKER = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    import pandas as pd
    import torch

    torch.set_num_threads(1)
    from moladapt.data.featurize import get_featurizer
    from moladapt.models.encoders import build_encoder
    from moladapt.pretrain import pretrain

    out = Path(sys.argv[1])
    smiles = pd.read_csv(sys.argv[2]).iloc[:64, 0].tolist()
    feat = get_featurizer("basic")
    graphs = feat.featurize(smiles)
    rank = int(os.environ["RANK"])
    torch.manual_seed(100 + rank)  # different initial weights: DDP must broadcast rank 0's
    enc = build_encoder("gin", feat.atom_vocab_sizes, feat.bond_vocab_sizes, hidden_dim=16,
                        num_layers=2, dropout=0.1)
    hist = pretrain(enc, ["attribute_masking"], graphs, epochs=2, batch_size=16, seed=0,
                    checkpoint_dir=out / "ckpt", progress=False)
    torch.save(enc.state_dict(), out / f"rank{rank}.pt")
    (out / f"rank{rank}.json").write_text(json.dumps({"n": len(graphs), "epochs": hist.epochs}))

    # the same from a sharded corpus: 40 molecules in shards of 15 (uneven, padded per rank)
    from moladapt.pretrain.corpus import featurize_corpus
    smi = out / f"corpus{rank}.smi"
    smi.write_text("\\n".join(smiles[:40]) + "\\n")
    corpus = featurize_corpus(smi, shard_size=15, cache_dir=out / f"cache{rank}")
    hist = pretrain(enc, ["attribute_masking"], corpus, epochs=1, batch_size=4, seed=1,
                    progress=False)
    torch.save(enc.state_dict(), out / f"corpus_rank{rank}.pt")
    (out / f"corpus_rank{rank}.json").write_text(json.dumps(hist.epochs))
''')


def test_shard_indices_pads_and_splits():
    order = np.arange(10)
    parts = [shard_indices(order, DistContext(r, 3)) for r in range(3)]
    assert [len(p) for p in parts] == [4, 4, 4]
    assert sorted(np.concatenate(parts).tolist()) == sorted([*range(10), 0, 1])
    assert shard_indices(order, DistContext()) is order


def test_two_cpu_ranks_hold_identical_weights(data_dir, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(tmp_path), str(data_dir / "moses_test.csv.gz")],
        env=env, capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    s0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    s1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert s0.keys() == s1.keys()
    for k in s0:  # parameters (all-reduced gradients) and BatchNorm buffers (synced from rank 0)
        assert torch.equal(s0[k], s1[k]), k
    c0 = torch.load(tmp_path / "corpus_rank0.pt", weights_only=True)
    c1 = torch.load(tmp_path / "corpus_rank1.pt", weights_only=True)
    assert all(torch.equal(c0[k], c1[k]) for k in c0) and not torch.equal(c0[k], s0[k])
    # shards of 15, 15, 10 → 8, 8, 5 molecules per rank → 2 + 2 + 1 batches (a batch of 1 is skipped)
    assert json.loads((tmp_path / "corpus_rank0.json").read_text())[0]["batches"] == 5
    h0, h1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert h0["n"] == 64
    # each rank saw half of the 64 molecules per epoch: 32 / 16 = 2 batches; losses averaged
    assert [e["batches"] for e in h0["epochs"]] == [2, 2]
    assert [e["loss"] for e in h0["epochs"]] == pytest.approx([e["loss"] for e in h1["epochs"]])
    # only rank 0 wrote checkpoints; they hold the shared weights
    ckpt = Path(tmp_path / "ckpt")
    assert sorted(p.name for p in ckpt.iterdir()) == ["encoder.pt", "last.pt"]
    last = torch.load(ckpt / "last.pt", weights_only=True)
    assert last["epoch"] == 2
    assert all(torch.equal(last["encoder"]["state_dict"][k], s0[k]) for k in s0)
