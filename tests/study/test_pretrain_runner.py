"""The pretrain_finetune study runner: shared, locked, content-addressed pretraining."""

import json
import multiprocessing
import re
from pathlib import Path

import pytest
import torch

from moladapt.study.executors import RUNNERS
from moladapt.study.pretrain_runner import (
    ensure_pretrained,
    pretrain_hash,
    pretrain_identity,
    resolve,
    study_dir_of,
)
from moladapt.study.spec import StudyError, StudySpec, plan

REPO = Path(__file__).resolve().parents[2]
STUDY = REPO / "studies" / "pretraining_ablation.yaml"

TINY = {
    "data": {"dataset": "bbbp", "split": "scaffold", "featurizer": "basic"},
    "model": {"encoder": "gin", "hidden_dim": 16, "num_layers": 2},
    "train": {"epochs": 1, "batch_size": 128, "num_threads": 1},
    "pretrain": {"objective": "attribute_masking", "corpus": "moses_test", "corpus_size": 64,
                 "epochs": 1, "batch_size": 32},
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**changes):
    config = json.loads(json.dumps(TINY))
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        config[section][key] = value
    return resolve(config)


def test_pretrains_once_then_reuses_the_encoder(tmp_path, data_dir):
    runner = RUNNERS.get("pretrain_finetune")
    config = tiny()
    first = runner.run(config, tmp_path / "runs" / "a")
    key = pretrain_hash(config)
    pre_dir = tmp_path / "pretrained" / key
    assert first["pretrain_hash"] == key and first["pretrain_built"] is True
    assert first["pretrain_dir"] == str(pre_dir) and first["pretrain_seconds"] > 0
    assert 0 <= first["test.roc_auc"] <= 1 and first["n_train"] > 1000
    assert {"encoder.pt", "last.pt", "pretrain.json", "identity.json"} <= {
        p.name for p in pre_dir.iterdir()}
    summary = json.loads((pre_dir / "pretrain.json").read_text())
    assert summary["epochs_trained_here"] == 1 and summary["corpus"]["num_molecules"] > 0
    saved = (tmp_path / "runs" / "a" / "config.yaml").read_text()
    assert str(pre_dir / "encoder.pt") in saved  # fine-tuned from the pretrained encoder

    # same pretrain section, another fine-tuning: no second pretraining
    mtime = (pre_dir / "encoder.pt").stat().st_mtime_ns
    second = runner.run(tiny(**{"train.seed": 1}), tmp_path / "runs" / "b")
    assert second["pretrain_hash"] == key and second["pretrain_built"] is False
    assert second["pretrain_seconds"] == first["pretrain_seconds"]
    assert (pre_dir / "encoder.pt").stat().st_mtime_ns == mtime
    assert json.loads((pre_dir / "pretrain.json").read_text()) == summary
    assert [p.name for p in (tmp_path / "pretrained").iterdir()] == [key]

    # objective none: fine-tune from scratch, nothing pretrained
    none = runner.run(tiny(**{"pretrain.objective": "none"}), tmp_path / "runs" / "c")
    assert none["pretrain_hash"] is None and none["pretrain_seconds"] == 0.0
    assert none["pretrain_built"] is False and 0 <= none["test.roc_auc"] <= 1
    assert [p.name for p in (tmp_path / "pretrained").iterdir()] == [key]
    assert "init: null" in (tmp_path / "runs" / "c" / "config.yaml").read_text()


def test_the_hash_covers_what_changes_the_encoder():
    base = pretrain_hash(tiny())
    assert base == pretrain_hash(tiny(**{"train.seed": 3, "data.dataset": "bace",
                                         "data.split": "random", "model.dropout": 0.1}))
    for change in ({"model.hidden_dim": 32}, {"model.encoder": "sage"},
                   {"data.featurizer": "rich"}, {"pretrain.corpus_size": 65},
                   {"pretrain.objective": "infomax"}, {"pretrain.epochs": 2},
                   {"pretrain.seed": 1}, {"pretrain.precision": "bf16"}):
        assert pretrain_hash(tiny(**change)) != base, change
    assert pretrain_hash(tiny(**{"pretrain.objective": "none"})) is None
    assert study_dir_of(Path("/s/runs/abc")) == Path("/s")


def test_a_changed_objective_recipe_changes_only_its_encoders_hash(monkeypatch):
    from moladapt.pretrain.objectives.edge_prediction import EdgePrediction
    from moladapt.pretrain.objectives.infomax import Infomax

    edge = tiny(**{"pretrain.objective": "edge_prediction"})
    both = tiny(**{"pretrain.objective": "infomax:1,edge_prediction:1"})
    infomax = tiny(**{"pretrain.objective": "infomax"})
    assert pretrain_identity(edge)["objective_recipes"] == {"edge_prediction": EdgePrediction.recipe_version}
    assert "objective_recipes" not in pretrain_identity(infomax)  # hashes of unchanged recipes stay
    before = {k: pretrain_hash(c) for k, c in (("edge", edge), ("both", both), ("infomax", infomax))}
    monkeypatch.setattr(EdgePrediction, "recipe_version", EdgePrediction.recipe_version + 1)
    monkeypatch.setattr(Infomax, "recipe_version", 1)
    assert pretrain_hash(edge) != before["edge"] and pretrain_hash(both) != before["both"]
    assert pretrain_hash(infomax) == before["infomax"]


def test_resolve_normalises_unused_fields_and_names_bad_keys():
    assert tiny(**{"pretrain.objective": "none"})["pretrain"]["corpus_size"] is None
    sup = tiny(**{"pretrain.objective": "supervised", "pretrain.labels_dataset": "toxcast"})
    assert sup["pretrain"]["corpus"] is None and sup["pretrain"]["labels_dataset"] == "toxcast"
    assert tiny(**{"pretrain.labels_dataset": "toxcast"})["pretrain"]["labels_dataset"] is None
    staged = tiny(**{"pretrain.objective": "supervised:1, context_prediction:2",
                     "pretrain.labels_dataset": "toxcast"})["pretrain"]
    assert staged["objective"] == "supervised:1,context_prediction:2" and staged["epochs"] is None
    for change, needle in [({"pretrain.epoch": 1}, "pretrain.epoch"),
                           ({"pretrain.objective": "atribute_masking"}, "atribute_masking"),
                           ({"pretrain.objective": "supervised"}, "labels_dataset"),
                           ({"pretrain.corpus": "moses_trian"}, "moses_trian"),
                           ({"pretrain.corpus_size": 0}, "corpus_size"),
                           ({"pretrain.precision": "fp16"}, "pretrain.precision"),
                           ({"train.init": "x.pt"}, "train.init")]:
        with pytest.raises(ValueError, match=re.escape(needle)):
            tiny(**change)


def test_none_at_every_corpus_size_is_one_run_and_plan_counts_pretraining_once(tmp_path):
    study = {"runner": "pretrain_finetune", "fixed": {k: v for k, v in TINY.items()},
             "axes": {"pretrain.objective": ["none", "attribute_masking"],
                      "pretrain.corpus_size": [64, 128], "train.seed": [0, 1, 2]}}
    with pytest.raises(StudyError, match="give the same run"):
        StudySpec.from_dict(study).runs()
    spec = StudySpec.from_dict({**study, "exclude": [{"pretrain.objective": "none",
                                                      "pretrain.corpus_size": 128}]})
    runs = spec.runs()
    assert len(runs) == 9 and len({pretrain_hash(r.config) for r in runs} - {None}) == 2
    text = plan(spec, runs)
    assert "pretraining: 2 distinct encoder(s)" in text and " 192 molecule-epochs" in text
    assert "estimated time" in text


def test_the_ablation_study_expands_to_the_size_its_header_says():
    spec = StudySpec.load(STUDY)
    runs = spec.runs()
    header = STUDY.read_text()
    n, grid, excluded = (int(x) for x in re.search(
        r"runs: (\d+) \(grid (\d+), (\d+) excluded\)", header).groups())
    assert (len(runs), spec.grid_size(), spec.grid_size() - len(runs)) == (n, grid, excluded)
    assert len({r.key for r in runs}) == n
    hashes = {pretrain_hash(r.config) for r in runs} - {None}
    assert f"sharing {len(hashes)} pretrained encoders" in header
    objectives = {r.config["pretrain"]["objective"] for r in runs}
    assert {"none", "graphcl", "supervised", "context_prediction:100,supervised:100"} <= objectives


def _build(config, study_dir, barrier, queue):
    torch.set_num_threads(1)
    barrier.wait()
    result = ensure_pretrained(config, study_dir)
    queue.put((result.hash, result.built, result.encoder_path.stat().st_mtime_ns))


def test_two_processes_asking_for_the_same_encoder_build_it_once(tmp_path, data_dir):
    config = tiny()
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_build, args=(config, tmp_path, barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(built for _, built, _ in results) == [False, True]
    assert len({(h, mtime) for h, _, mtime in results}) == 1
    summary = json.loads((tmp_path / "pretrained" / results[0][0] / "pretrain.json").read_text())
    assert summary["epochs_trained_here"] == 1 and len(summary["epochs"]) == 1


def test_objective_options_enter_the_hash_only_when_set():
    base = tiny()
    assert "objective_options" not in base["pretrain"]  # every earlier encoder keeps its hash
    set_ = tiny(**{"pretrain.objective_options": {"attrmask": {"mask_rate": 0.3}}})
    assert set_["pretrain"]["objective_options"] == {"attribute_masking": {"mask_rate": 0.3}}
    assert pretrain_hash(set_) != pretrain_hash(base)
    assert pretrain_hash(tiny(**{"pretrain.objective_options": {}})) == pretrain_hash(base)
    for change, needle in [({"pretrain.objective_options": {"graphcl": {"temperature": 1}}},
                            "not among the objectives in use"),
                           ({"pretrain.objective_options": {"attribute_masking": {"rate": 1}}},
                            "its options are"),
                           ({"pretrain.objective": "none",
                             "pretrain.objective_options": {"attribute_masking": {"mask_rate": 0.3}}},
                            "objective is none")]:
        with pytest.raises(ValueError, match=needle):
            tiny(**change)


def test_a_study_axis_over_an_objective_option():
    study = {"runner": "pretrain_finetune", "fixed": {k: v for k, v in TINY.items()},
             "axes": {"pretrain.objective_options.attrmask.mask_rate": [0.15, 0.3]}}
    runs = StudySpec.from_dict(study).runs()
    assert [r.config["pretrain"]["objective_options"] for r in runs] == [
        {"attribute_masking": {"mask_rate": 0.15}}, {"attribute_masking": {"mask_rate": 0.3}}]
    assert len({pretrain_hash(r.config) for r in runs}) == 2


def _bundled_build_config():
    """The configuration of the shipped encoder, as its model card's command resolves it."""
    return resolve({
        "data": {"dataset": "bbbp", "featurizer": "basic"},
        "model": {"encoder": "gin", "hidden_dim": 300, "num_layers": 5},
        "train": {},
        "pretrain": {"objective": "attribute_masking", "corpus": "moses_train", "corpus_size": 50000,
                     "labels_dataset": "toxcast", "epochs": 10, "batch_size": 256, "lr": 1e-3,
                     "seed": 0, "precision": "bf16"},
    })


def test_the_bundled_encoders_configuration_copies_the_shipped_file(tmp_path, monkeypatch):
    from moladapt import bundled_models

    config = _bundled_build_config()
    key = pretrain_hash(config)
    assert bundled_models.find_by_pretrain_hash(key)[0] == bundled_models.DEFAULT_NAME
    # no corpus reachable: anything but a copy would fail
    monkeypatch.setenv("MOLADAPT_DATA_DIR", str(tmp_path / "no_data"))
    built = ensure_pretrained(config, tmp_path)
    assert not built.built and built.summary["source"] == f"bundled:{bundled_models.DEFAULT_NAME}"
    assert bundled_models.sha256_file(built.encoder_path) == bundled_models.sha256_file(
        bundled_models.encoder_path())
    assert built.seconds > 0  # the build's recorded cost, not this copy's


def test_a_stale_bundled_identity_is_not_trusted(tmp_path, monkeypatch):
    import shutil

    from moladapt import bundled_models

    record = json.loads(bundled_models.identity_path().read_text())
    shutil.copyfile(bundled_models.encoder_path(), tmp_path / "encoder_x.pt")
    (tmp_path / "encoder_x.identity.json").write_text(json.dumps({**record, "sha256": "0" * 64}))
    monkeypatch.setattr(bundled_models, "bundled_dir", lambda: tmp_path)
    assert bundled_models.find_by_pretrain_hash(record["hash"]) is None
    (tmp_path / "encoder_x.identity.json").write_text(json.dumps(record))
    assert bundled_models.find_by_pretrain_hash(record["hash"])[0] == "x"


def _tiny_encoder_file(path: Path, seed: int = 0) -> Path:
    from moladapt.data.featurize import get_featurizer
    from moladapt.models.encoders import build_encoder
    from moladapt.pretrain import save_pretrained_encoder

    feat = get_featurizer("basic")
    torch.manual_seed(seed)
    save_pretrained_encoder(path, build_encoder("gin", feat.atom_vocab_sizes, feat.bond_vocab_sizes,
                                                hidden_dim=16, num_layers=2), feat, {"note": "start"})
    return path


def test_pretrain_init_enters_the_hash_by_content_not_by_path(tmp_path):
    import shutil

    start = _tiny_encoder_file(tmp_path / "start.pt")
    plain = tiny()
    from_start = tiny(**{"pretrain.init": str(start)})
    assert "init" not in plain["pretrain"] and from_start["pretrain"]["init"] == str(start.resolve())
    assert pretrain_hash(from_start) != pretrain_hash(plain)
    moved = tmp_path / "copy.pt"
    shutil.copy(start, moved)
    assert pretrain_hash(tiny(**{"pretrain.init": str(moved)})) == pretrain_hash(from_start)
    other = _tiny_encoder_file(tmp_path / "other.pt", seed=1)
    assert pretrain_hash(tiny(**{"pretrain.init": str(other)})) != pretrain_hash(from_start)
    with pytest.raises(ValueError, match="no checkpoint at"):
        tiny(**{"pretrain.init": str(tmp_path / "missing.pt")})
    with pytest.raises(ValueError, match="pretrain.init is set but pretrain.objective is none"):
        tiny(**{"pretrain.init": str(start), "pretrain.objective": "none"})


def test_pretraining_from_an_init_records_it_in_the_encoder(tmp_path, data_dir):
    from moladapt.provenance import describe_checkpoint

    start = _tiny_encoder_file(tmp_path / "start.pt")
    built = ensure_pretrained(tiny(**{"pretrain.init": str(start)}), tmp_path / "study")
    (step,) = describe_checkpoint(built.encoder_path)["lineage"]
    assert step["path"] == str(start.resolve()) and step["extra"]["pretrain"] == {"note": "start"}
    data = describe_checkpoint(built.encoder_path)["extra"]["pretrain"]["data"]
    assert data["corpus"]["num_molecules"] == 64


def test_the_supervised_on_bundled_study_has_three_arms_and_two_encoders():
    from moladapt.bundled_models import encoder_path

    spec = StudySpec.load(REPO / "studies" / "supervised_on_bundled.yaml")
    runs = spec.runs()
    assert len(runs) == 36 and spec.grid_size() == 48
    arms = {(r.config["pretrain"]["objective"], r.config["pretrain"].get("init")) for r in runs}
    assert arms == {("none", None), ("supervised", None), ("supervised", str(encoder_path().resolve()))}
    assert len({pretrain_hash(r.config) for r in runs} - {None}) == 2
