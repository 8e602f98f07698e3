"""Sharded pretraining corpora and the `moladapt pretrain` command."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from moladapt.cli.pretrain import parse_objectives, pretrain_command
from moladapt.data.featurize import get_featurizer
from moladapt.models.encoders import build_encoder
from moladapt.pretrain import pretrain
from moladapt.pretrain.corpus import ShardedCorpus, featurize_corpus

INVALID = ["not_a_smiles", "C1CC", ""]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def moses_head(data_dir):
    path = data_dir / "moses_test.csv.gz"
    if not path.exists():
        pytest.skip(f"{path} not available")
    return pd.read_csv(path, nrows=200)["SMILES"].tolist()


@pytest.fixture
def smi_file(tmp_path, moses_head):
    """33 lines after a header: 30 valid SMILES with 3 invalid ones at lines 3, 14 and 25."""
    lines = list(moses_head[:30])
    for pos, bad in zip((1, 12, 23), INVALID, strict=True):
        lines.insert(pos, bad)
    path = tmp_path / "corpus.smi"
    path.write_text("smiles\n" + "\n".join(f"{s} mol{i}" if s else "" for i, s in enumerate(lines)) + "\n")
    return path, moses_head[:30]


def test_shards_invalid_report_and_epoch_order(smi_file, tmp_path):
    path, valid = smi_file
    cache = tmp_path / "cache"
    logs: list[str] = []
    corpus = featurize_corpus(path, featurizer="basic", shard_size=8, cache_dir=cache, log=logs.append)
    assert corpus.num_shards == 5 and corpus.num_rows == 33 and len(corpus) == 30
    assert sorted(p.name for p in cache.glob("*.npz")) == sorted(s.path.name for s in corpus.shards)
    assert corpus.num_invalid == 3
    assert [line for line, _ in corpus.invalid] == [3, 14, 25]  # header = line 1
    assert [s for _, s in corpus.invalid] == INVALID
    assert "skipped 3 invalid SMILES" in logs[-1]

    # every valid molecule exactly once per epoch; the order depends on the epoch only
    e0, e1 = list(corpus.iter_smiles(0, seed=1)), list(corpus.iter_smiles(1, seed=1))
    assert Counter(e0) == Counter(valid) == Counter(e1)
    assert e0 != e1 and e0 == list(corpus.iter_smiles(0, seed=1))
    # ranks split each shard, together covering it
    parts = [[(s, i) for s, idx in corpus.epoch_plan(0, 1, r, 2) for i in idx] for r in (0, 1)]
    assert len(parts[0]) == len(parts[1])
    assert set(parts[0]) | set(parts[1]) == {(s, i) for s, sh in enumerate(corpus.shards)
                                             for i in range(sh.num_molecules)}

    # a second call reuses the cached shards (no featurization)
    logs.clear()
    again = featurize_corpus(path, shard_size=8, cache_dir=cache, log=logs.append)
    assert [s.path for s in again.shards] == [s.path for s in corpus.shards]
    assert not any(m.startswith("featurized") for m in logs)
    assert featurize_corpus(path, shard_size=8, cache_dir=cache, limit=10).num_rows == 10


def test_a_shard_cut_short_is_rebuilt(smi_file, tmp_path):
    path, _ = smi_file
    cache = tmp_path / "cache"
    corpus = featurize_corpus(path, shard_size=8, cache_dir=cache)
    first, second = corpus.shards[0].path, corpus.shards[1].path
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    second.write_bytes(b"")
    again = featurize_corpus(path, shard_size=8, cache_dir=cache)
    assert len(again) == len(corpus) and [line for line, _ in again.invalid] == [3, 14, 25]


def test_memory_bounded_by_one_shard_during_pretraining(smi_file, tmp_path):
    path, _ = smi_file
    corpus = featurize_corpus(path, shard_size=8, cache_dir=tmp_path / "cache")
    assert isinstance(corpus, ShardedCorpus)
    feat = get_featurizer("basic")
    torch.manual_seed(0)
    enc = build_encoder("gin", feat.atom_vocab_sizes, feat.bond_vocab_sizes, hidden_dim=16, num_layers=2)
    hist = pretrain(enc, ["attribute_masking"], corpus, epochs=2, batch_size=4, progress=False,
                    checkpoint_dir=tmp_path / "run")
    assert corpus.shard_loads == 2 * corpus.num_shards
    assert corpus.max_resident_shards == 1
    # 5 shards of 7, 7, 8, 7, 1 valid molecules: 2 + 2 + 2 + 2 + 0 batches of >= 2
    assert [r["batches"] for r in hist.epochs] == [8, 8]
    with pytest.raises(ValueError, match="ShardedCorpus"):
        pretrain(enc, ["supervised"], corpus, y=torch.zeros(30, 1).numpy(), epochs=1, progress=False)


def test_csv_column_detection_and_errors(tmp_path, moses_head):
    csv = tmp_path / "c.csv.gz"
    pd.DataFrame({"id": range(20), "Smiles": moses_head[:20]}).to_csv(csv, index=False)
    corpus = featurize_corpus(csv, shard_size=100, cache_dir=tmp_path / "cache")
    assert len(corpus) == 20 and corpus.num_shards == 1
    with pytest.raises(ValueError, match="no SMILES column"):
        featurize_corpus(csv, smiles_column="nope", cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError):
        featurize_corpus(tmp_path / "missing.smi")


def test_parse_objectives():
    assert parse_objectives("attribute_masking", 7) == [(["attribute_masking"], 7)]
    assert parse_objectives("edge_prediction,infomax", 3) == [(["edge_prediction", "infomax"], 3)]
    assert parse_objectives("supervised:5, context_prediction+infomax:10", 1) == [
        (["supervised"], 5), (["context_prediction", "infomax"], 10)]
    assert parse_objectives("attrmask,edgepred,contextpred,contrastive", 2) == [
        (["attribute_masking", "edge_prediction", "context_prediction", "graphcl"], 2)]
    with pytest.raises(ValueError):
        parse_objectives("supervised:5,infomax", 1)


def test_cli_end_to_end_then_fine_tune(tmp_path, moses_head, data_dir):
    from moladapt.config import RunConfig
    from moladapt.experiment import run_training
    from moladapt.training import load_checkpoint

    app = typer.Typer()
    app.command()(pretrain_command)
    out = tmp_path / "pre"
    common = ["--corpus", "moses_test", "--limit", "200", "--shard-size", "100", "--hidden-dim", "16",
              "--num-layers", "2", "--batch-size", "64", "--output", str(out), "--no-progress"]
    res = CliRunner().invoke(app, ["--objective", "attribute_masking", "--epochs", "1", *common])
    assert res.exit_code == 0, res.output
    for name in ("config.yaml", "last.pt", "encoder.pt", "history.json"):
        assert (out / name).exists(), name
    hist = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in hist["epochs"]] == [0]
    assert hist["corpus"]["num_molecules"] == 200 and hist["corpus"]["num_shards"] == 2

    # resumed: one more epoch
    res = CliRunner().invoke(app, ["--objective", "attribute_masking", "--epochs", "2", *common])
    assert res.exit_code == 0, res.output
    hist = json.loads((out / "history.json").read_text())
    assert hist["start_epoch"] == 1 and [e["epoch"] for e in hist["epochs"]] == [0, 1]

    # objective options: recorded in config.yaml and the checkpoint; resuming with others is
    # refused, and the refused call leaves config.yaml describing the saved run
    before = (out / "config.yaml").read_text()
    res = CliRunner().invoke(app, ["--objective", "attribute_masking", "--epochs", "2",
                                   "-O", "attrmask.mask_rate=0.3", *common])
    assert res.exit_code == 2 and "use another checkpoint_dir" in res.output, res.output
    res = CliRunner().invoke(app, ["--objective", "attribute_masking", "--epochs", "3", "--seed", "9", *common])
    assert res.exit_code == 2 and "seed 0 there, 9 now" in res.output, res.output
    assert (out / "config.yaml").read_text() == before
    opt_out = tmp_path / "pre_opt"
    res = CliRunner().invoke(app, ["--objective", "attribute_masking", "--epochs", "1",
                                   "-O", "attrmask.mask_rate=0.3", *common[:-2], str(opt_out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "mask_rate: 0.3" in (opt_out / "config.yaml").read_text()
    saved = torch.load(opt_out / "last.pt", weights_only=True)
    assert saved["objectives"][0][0]["hparams"]["mask_rate"] == 0.3
    res = CliRunner().invoke(app, ["--objective", "attribute_masking", "-O", "graphcl.temperature=1",
                                   *common])
    assert res.exit_code == 2 and "not among the objectives in use" in res.output

    # fine-tuning starts from the pretrained encoder (frozen: it stays exactly as saved)
    labels = tmp_path / "labels.csv"
    pd.read_csv(data_dir / "BBBP.csv").iloc[:80][["smiles", "p_np"]].to_csv(labels, index=False)
    cfg = RunConfig().replace(
        data={"dataset": None, "csv": str(labels), "smiles_column": "smiles", "split": "random"},
        model={"hidden_dim": 16, "num_layers": 2},
        train={"epochs": 1, "batch_size": 32, "init": str(out / "encoder.pt"), "freeze_encoder": True},
    )
    run_training(cfg, tmp_path / "ft", progress=False, log=lambda m: None)
    pre = load_checkpoint(out / "encoder.pt").model.encoder.state_dict()
    tuned = load_checkpoint(tmp_path / "ft" / "model.pt").model.encoder.state_dict()
    assert all(torch.equal(pre[k], tuned[k]) for k in pre)

    # staged supervised → self-supervised, labels from a CSV; a missing corpus is a clean error
    res = CliRunner().invoke(app, ["--objective", "supervised:1,attribute_masking:1",
                                   "--labels-dataset", str(labels), *common[:4],
                                   "--hidden-dim", "16", "--num-layers", "2", "--batch-size", "32",
                                   "--output", str(tmp_path / "staged"), "--no-progress"])
    assert res.exit_code == 0, res.output
    hist = json.loads((tmp_path / "staged" / "history.json").read_text())
    assert [e["stage"] for e in hist["epochs"]] == [0, 1] and hist["labels"]["tasks"] == 1
    res = CliRunner().invoke(app, ["--objective", "infomax", "--output", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--corpus" in res.output

    # supervised pretraining on top of the self-supervised encoder (pretrain-gnns' recipe)
    on_top = tmp_path / "on_top"
    sup = ["--objective", "supervised", "--epochs", "1", "--labels-dataset", str(labels),
           "--num-layers", "2", "--batch-size", "32", "--no-progress", "--init", str(out / "encoder.pt")]
    res = CliRunner().invoke(app, [*sup, "--hidden-dim", "16", "--output", str(on_top)])
    assert res.exit_code == 0, res.output
    assert "starting from" in res.output
    assert yaml.safe_load((on_top / "config.yaml").read_text())["init"]["path"] == str(out / "encoder.pt")
    lineage = load_checkpoint(on_top / "encoder.pt").extra["pretrain"]["init"]
    assert lineage["extra"]["pretrain"]["epochs_completed"] == 2  # the SSL run's own record came along
    res = CliRunner().invoke(app, [*sup, "--hidden-dim", "32", "--output", str(tmp_path / "wide")])
    assert res.exit_code == 2 and "hidden_dim 16 (asked 32)" in res.output, res.output

    # a fingerprint-fused encoder, multi-task pretrained as a whole on top of the SSL graph encoder
    fused = tmp_path / "fused"
    res = CliRunner().invoke(app, [*sup, "--hidden-dim", "16", "--fingerprint-bits", "256",
                                   "--output", str(fused)])
    assert res.exit_code == 0, res.output
    assert "--fingerprint-bits 256" in res.output  # the fine-tune command rebuilds the fusion
    loaded = load_checkpoint(fused / "encoder.pt")
    assert loaded.model_config.fingerprint_bits == 256
    assert yaml.safe_load((fused / "config.yaml").read_text())["model"]["fingerprint_bits"] == 256
    res = CliRunner().invoke(app, ["--objective", "attribute_masking", "--fingerprint-bits", "256", *common])
    assert res.exit_code == 2 and "only 'supervised' stages" in res.output, res.output
