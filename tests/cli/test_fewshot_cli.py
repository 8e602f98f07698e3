"""The few-shot commands (meta-train, few-shot, few-shot-plot, few-shot-compare) on a tiny typer app."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

import moladapt
from moladapt.cli.fewshot import compare_command, few_shot_command, meta_train_command, plot_command

torch.set_num_threads(1)

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command("meta-train")(meta_train_command)
app.command("few-shot")(few_shot_command)
app.command("few-shot-plot")(plot_command)
app.command("few-shot-compare")(compare_command)


def invoke(*args, code=0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exit_code != code:
        raise AssertionError(f"{' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}"
                             f"\n{result.exception!r}")
    return result


def test_meta_train_then_few_shot_then_plot(tmp_path, data_dir):
    mt = tmp_path / "meta"

    def meta_train(steps):
        return invoke("meta-train", "--method", "fomaml", "--tasks", "fsmol-train", "--max-tasks", 4,
                      "--hidden-dim", 16, "--num-layers", 2, "--jk", "concat", "--meta-steps", steps,
                      "--inner-steps", 1, "--valid-tasks", "fsmol-valid:2", "--validate-every", 1,
                      "--validation-support", "16,32", "--threads", 1, "--output", mt)

    out = meta_train(2)
    assert "fomaml: 2 meta steps in" in out.output
    assert "validation on fsmol-valid:2: 3 checks; kept step" in out.output
    for name in ("model.pt", "meta.json", "config.yaml"):
        assert (mt / name).exists()
    meta = json.loads((mt / "meta.json").read_text())
    assert meta["method"] == "fomaml" and meta["has_head"] and len(meta["history"]) == 2
    assert meta["n_train_tasks"] == 4 and meta["params"]["inner_steps"] == 1
    assert meta["code"]["version"] == moladapt.__version__  # which code trained it
    config = yaml.safe_load((mt / "config.yaml").read_text())
    assert config["tasks"] == "fsmol-train:4" and config["encoder"]["hidden_dim"] == 16
    assert [step for step, _ in meta["validation"]["scores"]] == [0, 1, 2]
    assert meta["validation"]["best_step"] in (0, 1, 2)
    assert config["validation"] == {"tasks": "fsmol-valid:2", "n_tasks": 2, "every": 1,
                                    "support_sizes": [16, 32], "draws": 1, "best_step": meta["validation"]["best_step"]}

    from moladapt.training import load_checkpoint

    loaded = load_checkpoint(mt / "model.pt")  # a regular checkpoint: `train --init` reads it
    assert loaded.extra["meta"]["method"] == "fomaml" and loaded.model.encoder.out_dim == 2 * 16  # jk concat

    more = meta_train(3)
    assert "fomaml: 3 meta steps (resumed from step 2)" in more.output  # same output: continues
    assert json.loads((mt / "meta.json").read_text())["resumed_from_step"] == 2

    fs = tmp_path / "fs"
    args = ["few-shot", "--method", "fomaml", "--checkpoint", mt / "model.pt",
            "--tasks", "fsmol-test:2", "--support", "16", "--draws", 1, "--no-progress",
            "--threads", 1, "--output", fs]
    out = invoke(*args)
    assert "2 new episodes" in out.output and "ΔAUPRC" in out.output
    for name in ("results.csv", "summary.csv", "config.yaml", "delta_auprc_vs_k.png"):
        assert (fs / name).exists(), name
    results = pd.read_csv(fs / "results.csv")
    assert len(results) == 2 and set(results["k"]) == {16} and set(results["method"]) == {"fomaml"}
    summary = pd.read_csv(fs / "summary.csv")
    assert list(summary["n_tasks"]) == [2] and summary["delta_auprc_mean"].notna().all()
    config = yaml.safe_load((fs / "config.yaml").read_text())
    assert config["meta_learned_head"] and config["params"]["inner_steps"] == 1
    assert config["tasks"] == "fsmol-test:2" and config["n_tasks"] == 2

    # rerunning resumes: nothing new is computed, no row is added
    out = invoke(*args)
    assert "0 new episodes, 2 from" in out.output
    assert len(pd.read_csv(fs / "results.csv")) == 2

    # a baseline beside it, then both in one plot
    rf = tmp_path / "rf"
    invoke("few-shot", "--method", "rf-ecfp", "--tasks", "fsmol-test:2", "--support", "16",
           "--draws", 1, "--no-progress", "--no-plot", "--output", rf)
    assert not (rf / "delta_auprc_vs_k.png").exists()
    out = invoke("few-shot", "--method", "rf-ecfp", "--tasks", "fsmol-test:2", "--support", "100000",
                 "--draws", 1, "--no-progress", "--no-plot", "--output", tmp_path / "none", code=1)
    assert "no episode could be scored" in out.output
    png = tmp_path / "both.png"
    out = invoke("few-shot-plot", fs / "results.csv", rf / "results.csv", "-o", png)
    assert png.read_bytes()[:4] == b"\x89PNG" and f"wrote {png}" in out.output
    table = tmp_path / "compare.csv"
    out = invoke("few-shot-compare", fs / "results.csv", rf / "results.csv", "--baseline", "rf-ecfp",
                 "-o", table)
    assert "k=  16  fomaml vs rf-ecfp: delta_auprc" in out.output and "Holm p" in out.output
    assert pd.read_csv(table)[["k", "method", "baseline"]].values.tolist() == [[16, "fomaml", "rf-ecfp"]]


@pytest.mark.parametrize("args, message", [
    (["few-shot", "--method", "rf-ecfp", "--checkpoint", "nope.pt"], "takes no checkpoint"),
    (["few-shot", "--method", "reptile"], "unknown few-shot method"),
    (["few-shot", "--method", "rf-ecfp", "--support", "16,x"], "comma-separated integers"),
    (["meta-train", "--method", "protonet", "--inner-lr", "0.1"], "no hyper-parameter"),
    (["meta-train", "--method", "rf-ecfp"], "fingerprint baseline"),
    (["few-shot-plot", "missing.csv"], "does not exist"),
    (["few-shot-compare", "missing.csv"], "does not exist"),
])
def test_bad_input_is_one_clean_line(tmp_path, data_dir, args, message):
    result = invoke(*args, "--output", tmp_path / "out", code=2)
    assert message in result.output


@pytest.mark.parametrize("counts", [False, True])
def test_protonet_on_the_fingerprint_fused_encoder(tmp_path, data_dir, counts):
    """FS-Mol's ProtoNet features (gnn+ecfp+fc, bits or FS-Mol's counts): meta-train, then
    evaluate from the checkpoint."""
    mt = tmp_path / "meta"
    invoke("meta-train", "--method", "protonet", "--tasks", "fsmol-train", "--max-tasks", 4,
           "--hidden-dim", 16, "--num-layers", 2, "--fingerprint-bits", 256, "--meta-steps", 2,
           *(["--fingerprint-counts"] if counts else []),
           "-p", "distance=mahalanobis", "--threads", 1, "--output", mt)
    config = yaml.safe_load((mt / "config.yaml").read_text())
    assert config["encoder"]["fingerprint_bits"] == 256 and config["params"]["distance"] == "mahalanobis"
    # bits, the older setting, is left out of the record (stored models keep their identity)
    assert config["encoder"].get("fingerprint_counts", False) is counts
    assert ("fingerprint_counts" in config["encoder"]) is counts
    from moladapt.models.fingerprint import FingerprintFusionEncoder
    from moladapt.training import load_checkpoint

    encoder = load_checkpoint(mt / "model.pt").model.encoder
    assert isinstance(encoder, FingerprintFusionEncoder) and encoder.out_dim == 512
    assert encoder.counts is counts
    fs = tmp_path / "fs"
    out = invoke("few-shot", "--method", "protonet", "--checkpoint", mt / "model.pt",
                 "--tasks", "fsmol-test:2", "--support", "16", "--draws", 1, "--no-progress",
                 "--no-plot", "--threads", 1, "--output", fs)
    assert "2 new episodes" in out.output
    assert pd.read_csv(fs / "results.csv")["auprc"].notna().all()


def test_meta_training_from_a_checkpoint_records_it(tmp_path, data_dir):
    from moladapt.data.featurize import get_featurizer
    from moladapt.models.encoders import build_encoder
    from moladapt.pretrain import save_pretrained_encoder
    from moladapt.provenance import describe_checkpoint

    feat = get_featurizer("basic")
    start = tmp_path / "encoder.pt"
    save_pretrained_encoder(start, build_encoder("gin", feat.atom_vocab_sizes, feat.bond_vocab_sizes,
                                                 hidden_dim=16, num_layers=2), feat, {"objectives": []})
    invoke("meta-train", "--method", "protonet", "--tasks", "fsmol-train", "--max-tasks", 2, "--meta-steps", 1,
           "--init", start, "--threads", 1, "--output", tmp_path / "meta")
    (step,) = describe_checkpoint(tmp_path / "meta" / "model.pt")["lineage"]
    assert step["path"] == str(start) and step["extra"]["pretrain"] == {"objectives": []}


def test_meta_train_init_checks_typed_architecture_and_sets_dropout(tmp_path, data_dir):
    """With --init the checkpoint fixes the architecture: a typed option that differs is refused
    (not silently ignored), and a supervised checkpoint's dropout 0.5 becomes meta-training's 0."""
    from moladapt.config import ModelConfig
    from moladapt.data.featurize import get_featurizer
    from moladapt.models.fingerprint import graph_part
    from moladapt.training import build_model, load_checkpoint, save_checkpoint

    feat = get_featurizer("basic")
    cfg = ModelConfig(hidden_dim=16, num_layers=2, dropout=0.5)
    ckpt = tmp_path / "sup.pt"
    save_checkpoint(ckpt, build_model(cfg, feat, 1), feat, cfg, ["y"], "classification")
    base = ["meta-train", "--method", "protonet", "--tasks", "fsmol-train", "--max-tasks", 2,
            "--meta-steps", 1, "--meta-batch-size", 1, "--init", ckpt, "--checkpoint-every", 0, "--threads", 1]
    clash = invoke(*base, "--hidden-dim", 32, "--output", tmp_path / "x", code=2)
    assert "hidden_dim: asked 32, checkpoint 16" in clash.output
    invoke(*base, "--output", tmp_path / "ok")
    config = yaml.safe_load((tmp_path / "ok" / "config.yaml").read_text())
    assert config["encoder"]["hidden_dim"] == 16 and config["encoder"]["dropout"] == 0.0
    assert graph_part(load_checkpoint(tmp_path / "ok" / "model.pt").model.encoder).dropout == 0.0
