"""End-to-end runs with auxiliary tasks (moladapt.auxiliary_runs) and the study runner."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from moladapt.auxiliary_runs import (
    AuxConfig,
    load_configs,
    resolve_columns,
    run_auxiliary,
)
from moladapt.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from moladapt.study.executors import RUNNERS
from moladapt.training import load_checkpoint

torch.set_num_threads(1)

TINY_MODEL = ModelConfig(hidden_dim=32, num_layers=2)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("aux_cache"))


@pytest.fixture
def cache(shared_cache, monkeypatch):
    """One featurization cache for this module's tests (bbbp is featurized once)."""
    monkeypatch.setenv("MOLADAPT_CACHE_DIR", shared_cache)


@pytest.fixture(scope="module")
def tox21_csv(tmp_path_factory, data_dir):
    frame = pd.read_csv(data_dir / "tox21.csv").iloc[:400]
    path = tmp_path_factory.mktemp("tox21") / "tox21_400.csv"
    frame[["smiles", "NR-AhR", "NR-AR", "SR-ARE"]].to_csv(path, index=False)
    return path


def test_config_validation_and_labels():
    assert AuxConfig().label() == "rcgrad"
    assert AuxConfig(aux_objectives=()).label() == "finetune"
    assert AuxConfig(method="bilevel", combiner=None).label() == "blo"
    assert AuxConfig(method="bilevel").label() == "blo+rcgrad"
    assert AuxConfig(method="bilevel", source_tasks="a, b").source_tasks == ("a", "b")
    with pytest.raises(ValueError, match="need method 'bilevel'"):
        AuxConfig(source_tasks=("a",))
    with pytest.raises(ValueError, match="unknown method"):
        AuxConfig(method="magic")
    with pytest.raises(ValueError, match="needs tasks to weight: auxiliary objectives"):
        AuxConfig(method="bilevel", aux_objectives=())
    with pytest.raises(KeyError, match="unknown objective|unknown .*'nope'"):
        AuxConfig(aux_objectives=("nope",)).validate()
    with pytest.raises(ValueError, match="needs labels"):
        AuxConfig(aux_objectives=("supervised",)).validate()
    with pytest.raises(KeyError, match="combiner"):
        AuxConfig(combiner="magic").validate()
    cols = ["a", "b", "c"]
    assert resolve_columns(cols, AuxConfig()) == ([0, 1, 2], [])
    assert resolve_columns(cols, AuxConfig(method="bilevel", target="b", source_tasks="all")) == ([1], [0, 2])
    assert resolve_columns(cols, AuxConfig(method="bilevel", source_tasks=("c",))) == ([0], [2])
    # bi-level over auxiliary objectives only: every column is (one joint) target
    assert resolve_columns(cols, AuxConfig(method="bilevel", aux_objectives=("edge_prediction",))) == (
        [0, 1, 2], [])
    with pytest.raises(ValueError, match="not a label column"):
        resolve_columns(cols, AuxConfig(method="bilevel", source_tasks=("z",)))
    with pytest.raises(ValueError, match="cannot also be a source"):
        resolve_columns(cols, AuxConfig(method="bilevel", target="a", source_tasks=("a",)))


def test_auxiliary_run_on_bbbp_writes_files(tmp_path, data_dir, cache):
    cfg = RunConfig(data=DataConfig(dataset="bbbp"), model=TINY_MODEL,
                    train=TrainConfig(epochs=1, batch_size=128, num_threads=1))
    aux = AuxConfig(aux_objectives=("attribute_masking", "edge_prediction"), combiner="rcgrad")
    out = tmp_path / "run"
    result = run_auxiliary(cfg, aux, out, log=lambda m: None)
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "metrics.json", "model.pt"}
    run_cfg, aux_cfg = load_configs(out / "config.yaml")
    assert run_cfg == cfg and aux_cfg == aux
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "auxiliary" and metrics["label"] == "rcgrad"
    assert 0.0 <= metrics["test"]["mean"]["roc_auc"] <= 1.0
    assert metrics["test"]["primary"] == pytest.approx(result.test.primary)
    log = metrics["gradient_log"]
    assert log["steps"] == metrics["steps"] > 0
    assert set(log["tasks"]) == {"attribute_masking", "edge_prediction"}
    assert -1.0 <= log["tasks"]["edge_prediction"]["mean_cosine"] <= 1.0
    assert set(metrics["final_losses"]) == {"target", "attribute_masking", "edge_prediction"}
    assert sum(metrics["split_sizes"].values()) == 2039  # 2,050 rows, 11 invalid SMILES
    loaded = load_checkpoint(out / "model.pt")
    assert loaded.task_names == ["p_np"] and loaded.extra["aux_config"]["combiner"] == "rcgrad"


def test_bilevel_with_source_columns_records_weights(tmp_path, tox21_csv, cache):
    cfg = RunConfig(data=DataConfig(dataset=None, csv=str(tox21_csv), split="random"),
                    model=TINY_MODEL, train=TrainConfig(batch_size=64, num_threads=1))
    aux = AuxConfig(method="bilevel", aux_objectives=(), combiner=None,
                    source_tasks=("NR-AR", "SR-ARE"), outer_steps=3, inner_steps=2,
                    hypergradient="unrolled")
    result = run_auxiliary(cfg, aux, tmp_path / "blo", log=lambda m: None)
    metrics = json.loads((tmp_path / "blo" / "metrics.json").read_text())
    assert metrics["task_names"] == ["NR-AhR"] and result.task_names == ["NR-AhR"]
    assert metrics["source_tasks"] == ["NR-AR", "SR-ARE"] and metrics["aux_tasks"] == []
    history = metrics["weights_history"]
    assert len(history) == 4 and all(len(row) == 2 for row in history)
    assert history[0] == pytest.approx([0.5, 0.5])
    assert set(metrics["weights"]) == {"NR-AR", "SR-ARE"}
    assert list(metrics["weights"].values()) == pytest.approx(history[-1])
    assert len(metrics["hypergradient_history"]) == 3 and len(metrics["valid_metric_history"]) == 3
    assert 0.0 <= metrics["test"]["mean"]["roc_auc"] <= 1.0
    saved = yaml.safe_load((tmp_path / "blo" / "config.yaml").read_text())
    assert saved["aux"]["source_tasks"] == ["NR-AR", "SR-ARE"]
    # what was read off the CSV, so that the saved config replays the run
    assert saved["data"]["target_columns"] == ["NR-AhR", "NR-AR", "SR-ARE"]
    assert saved["data"]["task_type"] == "classification" and saved["data"]["smiles_column"] == "smiles"


def test_bilevel_with_auxiliary_objectives_trains_every_target_column(tmp_path, tox21_csv, cache):
    cfg = RunConfig(data=DataConfig(dataset=None, csv=str(tox21_csv), split="random",
                                    target_columns=("NR-AhR", "NR-AR", "SR-ARE")),
                    model=TINY_MODEL, train=TrainConfig(batch_size=64, num_threads=1))
    aux = AuxConfig(method="bilevel", aux_objectives=("edge_prediction",), combiner="rcgrad",
                    outer_steps=2, inner_steps=2, hypergradient="unrolled")
    result = run_auxiliary(cfg, aux, tmp_path / "blo", log=lambda m: None)
    assert result.task_names == ["NR-AhR", "NR-AR", "SR-ARE"]
    assert set(result.test.per_task) | set(result.test.skipped) == {"NR-AhR", "NR-AR", "SR-ARE"}
    metrics = json.loads((tmp_path / "blo" / "metrics.json").read_text())
    assert metrics["source_tasks"] == [] and metrics["aux_tasks"] == ["edge_prediction"]
    assert set(metrics["weights"]) == {"edge_prediction"}
    assert load_checkpoint(tmp_path / "blo" / "model.pt").task_names == ["NR-AhR", "NR-AR", "SR-ARE"]


def test_study_runner_resolves_and_runs(tmp_path, tox21_csv, cache):
    runner = RUNNERS.get("auxiliary")
    config = {"data": {"csv": str(tox21_csv), "dataset": None, "split": "random",
                       "target_columns": ["NR-AhR", "NR-AR"]},
              "model": {"hidden_dim": 32, "num_layers": 2},
              "train": {"epochs": 1, "batch_size": 128, "num_threads": 1, "lr": "1e-3"},
              "aux": {"aux_objectives": ["edge_prediction"], "combiner": "pcgrad", "grad_clip": 1}}
    resolved = runner.resolve(config)
    assert resolved["aux"]["combiner"] == "pcgrad" and resolved["aux"]["grad_clip"] == 1.0
    assert resolved["train"]["lr"] == 1e-3 and resolved["model"]["encoder"] == "gin"
    assert config["aux"]["grad_clip"] == 1  # the input is not changed
    assert runner.resolve(resolved) == resolved
    metrics = runner.run(resolved, tmp_path / "run")
    assert metrics["label"] == "pcgrad" and metrics["n_train"] > 0
    assert 0.0 <= metrics["test.roc_auc"] <= 1.0 and "cosine.edge_prediction" in metrics
    assert (tmp_path / "run" / "model.pt").exists()
    with pytest.raises(ValueError, match="unknown key 'aux.combinr'"):
        runner.resolve({"aux": {"combinr": "sum"}})
    with pytest.raises(ValueError, match="unknown key 'extra'"):
        runner.resolve({"extra": {}})
    with pytest.raises(KeyError, match="combiner"):
        runner.resolve({"aux": {"combiner": "magic"}})
    # objective options: absent unless set (earlier keys stay), normalised when set
    assert "objective_options" not in resolved["aux"]
    with_options = runner.resolve({**config, "aux": {**config["aux"], "objective_options": {
        "edgepred": {"scale_by_sqrt_dim": False}}}})
    assert with_options["aux"]["objective_options"] == {"edge_prediction": {"scale_by_sqrt_dim": False}}
    with pytest.raises(ValueError, match="aux.objective_options: .*'graphcl' is not among"):
        runner.resolve({**config, "aux": {**config["aux"], "objective_options": {"graphcl": {"temperature": 1}}}})


def test_aux_specs_carry_objective_options_to_the_objectives():
    from moladapt.adapt.auxiliary import build_aux_objectives
    from moladapt.data.featurize import get_featurizer
    from moladapt.models.encoders import build_encoder

    cfg = AuxConfig(aux_objectives=("attribute_masking", "edge_prediction"),
                    objective_options={"attrmask": {"mask_rate": 0.4}})
    assert cfg.aux_specs() == [("attribute_masking", {"mask_rate": 0.4}), "edge_prediction"]
    assert "objective_options" not in AuxConfig().to_dict()
    feat = get_featurizer("basic")
    encoder = build_encoder("gin", feat.atom_vocab_sizes, feat.bond_vocab_sizes, hidden_dim=16, num_layers=2)
    built = build_aux_objectives(cfg.aux_specs(), feat, encoder)
    assert built[0].hparams["mask_rate"] == 0.4 and built[1].hparams["scale_by_sqrt_dim"] is True


def test_method_changes_is_the_inverse_of_label():
    import dataclasses

    import pytest

    from moladapt.auxiliary_runs import AuxConfig, method_changes

    for label in ("finetune", "sum", "gcs", "gns", "pcgrad", "rcgrad", "blo", "blo+rcgrad", "blo+gns"):
        assert dataclasses.replace(AuxConfig(), **method_changes(label)).label() == label
    assert dataclasses.replace(AuxConfig(combiner="pcgrad"), **method_changes("aux")).label() == "pcgrad"
    with pytest.raises(ValueError, match="unknown adaptation method 'blo\\+magic'"):
        method_changes("blo+magic")


def test_study_aux_method_takes_a_label():
    """One study axis `aux.method: [finetune, rcgrad, blo+rcgrad]` spans the comparison."""
    runner = RUNNERS.get("auxiliary")
    base = {"aux": {"aux_objectives": ["edge_prediction"], "combiner": "pcgrad"}}
    resolved = {m: runner.resolve({"aux": {**base["aux"], "method": m}})["aux"]
                for m in ("finetune", "rcgrad", "blo+rcgrad", "blo", "auxiliary")}
    assert resolved["finetune"]["aux_objectives"] == [] and resolved["finetune"]["method"] == "auxiliary"
    assert resolved["rcgrad"]["combiner"] == "rcgrad" and resolved["rcgrad"]["method"] == "auxiliary"
    assert resolved["blo+rcgrad"]["method"] == "bilevel" and resolved["blo+rcgrad"]["combiner"] == "rcgrad"
    assert resolved["blo"]["method"] == "bilevel" and resolved["blo"]["combiner"] is None
    assert resolved["auxiliary"]["combiner"] == "pcgrad"  # a plain method name keeps the combiner
    assert all(AuxConfig.from_dict(r).label() == m for m, r in resolved.items() if m != "auxiliary")
    with pytest.raises(ValueError, match="unknown adaptation method 'magic'"):
        runner.resolve({"aux": {"method": "magic"}})


def test_a_validation_part_with_one_class_is_warned_and_never_stops_the_run(tmp_path, data_dir, cache):
    """As `moladapt train`: every epoch is the latest best, patience never runs out; inspect says what ran."""
    from moladapt.experiment import load_data, split_data
    from moladapt.provenance import describe_checkpoint, format_description
    from moladapt.training import prepare

    frame = pd.read_csv(data_dir / "BBBP.csv").iloc[:120][["smiles", "p_np"]]
    path = tmp_path / "mine.csv"
    frame.to_csv(path, index=False)
    cfg = RunConfig(data=DataConfig(dataset=None, csv=str(path), split="random", task_type="classification"),
                    model=TINY_MODEL, train=TrainConfig(epochs=3, batch_size=32, patience=0, num_threads=1))
    prepared = prepare(load_data(cfg), "basic")
    valid_rows = prepared.graphs.source_rows[split_data(prepared, cfg).valid]
    frame.loc[frame.index[valid_rows], "p_np"] = 0  # the random split does not look at labels
    frame.to_csv(path, index=False)
    said = []
    aux = AuxConfig(aux_objectives=("attribute_masking",), combiner="rcgrad")
    result = run_auxiliary(cfg, aux, tmp_path / "run", log=said.append)
    assert any("no task has both classes in the validation part" in m for m in said)
    assert result.best_epoch == 2  # the last of 3 epochs: none was cut short
    lines = format_description(describe_checkpoint(tmp_path / "run" / "model.pt"))
    assert "auxiliary tasks: attribute_masking; auxiliary, combiner rcgrad" in lines
    blo = run_auxiliary(cfg, AuxConfig(method="bilevel", aux_objectives=("attribute_masking",),
                                       outer_steps=3, inner_steps=1), tmp_path / "blo", log=said.append)
    assert blo.best_epoch == 2  # no step could be scored: the last state is kept and reported
    kept = json.loads((tmp_path / "blo" / "metrics.json").read_text())["weights_at_best_step"]
    assert set(kept) == {"attribute_masking"}
