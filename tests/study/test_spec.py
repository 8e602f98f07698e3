"""Study files → grids of resolved runs."""

from pathlib import Path

import pytest
import yaml

from moladapt.study.spec import StudyError, StudySpec, plan


def write(tmp_path, study, name="study.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


BASE = {"name": "s", "fixed": {"model": {"hidden_dim": 32, "num_layers": 2}, "train": {"epochs": 1}}}


def test_grid_is_the_product_of_the_axes(tmp_path):
    spec = StudySpec.load(write(tmp_path, {**BASE, "axes": {
        "data.dataset": ["bbbp", "bace"], "model.encoder": ["gin", "sage"], "train.seed": [0, 1, 2]}}))
    runs = spec.runs()
    assert len(runs) == 12
    assert runs[0].axes == {"data.dataset": "bbbp", "model.encoder": "gin", "train.seed": 0}
    assert runs[-1].axes == {"data.dataset": "bace", "model.encoder": "sage", "train.seed": 2}
    cfg = runs[-1].config
    assert cfg["data"]["dataset"] == "bace" and cfg["model"]["encoder"] == "sage"
    assert cfg["model"]["hidden_dim"] == 32 and cfg["train"]["seed"] == 2
    assert cfg["model"]["pooling"] == "mean"  # resolved: defaults filled in
    assert len({r.key for r in runs}) == 12
    assert all(len(r.key) == 16 and r.runner == "train" for r in runs)


def test_zip_and_exclude(tmp_path):
    spec = StudySpec.load(write(tmp_path, {**BASE, "axes": {
        "model.hidden_dim": [16, 32, 64], "train.lr": [0.01, 0.003, 0.001], "train.seed": [0, 1]},
        "zip": [["model.hidden_dim", "train.lr"]],
        "exclude": [{"model.hidden_dim": 64, "train.seed": 1}, {"train.lr": 0.01}]}))
    points = [r.axes for r in spec.runs()]
    assert spec.grid_size() == 6
    assert points == [
        {"model.hidden_dim": 32, "train.lr": 0.003, "train.seed": 0},
        {"model.hidden_dim": 32, "train.lr": 0.003, "train.seed": 1},
        {"model.hidden_dim": 64, "train.lr": 0.001, "train.seed": 0},
    ]
    text = plan(spec)
    assert "runs: 3 (grid 6, 3 excluded)" in text
    assert "zip(model.hidden_dim, train.lr): 3" in text and "train.seed: 2" in text
    with pytest.raises(StudyError, match=r"exclude entry \{'train.seed': 3\} matches no grid "
                                         r"point: axis 'train.seed' has the values \[0, 1\]"):
        StudySpec.load(write(tmp_path, {**BASE, "axes": {"train.seed": [0, 1]},
                                        "exclude": [{"train.seed": 3}]}))
    with pytest.raises(StudyError, match="model.hidden_dim, train.lr are zipped and never take"):
        StudySpec.load(write(tmp_path, {**BASE, "axes": {
            "model.hidden_dim": [16, 32], "train.lr": [0.01, 0.003]},
            "zip": [["model.hidden_dim", "train.lr"]],
            "exclude": [{"model.hidden_dim": 16, "train.lr": 0.003}]}))


def test_keys_are_stable_and_ignore_axis_order(tmp_path):
    a = StudySpec.load(write(tmp_path, {**BASE, "axes": {"train.seed": [0, 1], "model.encoder": ["gin"]}}, "a.yaml"))
    b = StudySpec.load(write(tmp_path, {"name": "other", "fixed": {"train": {"epochs": 1}},
                                        "axes": {"model.encoder": ["gin"], "train.seed": [1, 0],
                                                 "model.num_layers": [2], "model.hidden_dim": [32]}}, "b.yaml"))
    assert {r.key for r in a.runs()} == {r.key for r in b.runs()}
    assert [r.key for r in a.runs()] == [r.key for r in a.runs()]
    # runner name is part of the key
    c = StudySpec.from_dict({"runner": "sleep", "axes": {"seconds": [0]}})
    d = StudySpec.from_dict({"runner": "sleep", "axes": {"seconds": [0], "x": [1]}})
    assert c.runs()[0].key != d.runs()[0].key


@pytest.mark.parametrize("study, needle", [
    ({"axes": {"model.hiden_dim": [1]}}, "'model.hiden_dim'"),
    ({"fixed": {"modle": {"hidden_dim": 3}}}, "'modle'"),
    ({"axes": {"train.seed": [0]}, "exlude": []}, "'exlude'"),
    ({"axes": {"train.seed": [0]}, "exclude": [{"train.sed": 0}]}, "'train.sed'"),
    ({"axes": {"train.seed": [0]}, "zip": [["train.seed", "model.encoder"]]}, "'model.encoder'"),
    ({"axes": {"model.encoder": ["gni"]}}, "'gni'"),
    ({"runner": "trian"}, "'trian'"),
])
def test_unknown_keys_name_the_key_and_the_file(tmp_path, study, needle):
    path = write(tmp_path, {**BASE, **study}, "bad.yaml")
    with pytest.raises(StudyError) as info:
        StudySpec.load(path).runs()
    assert needle in str(info.value) and str(path) in str(info.value)


def test_zipped_axes_need_equal_lengths(tmp_path):
    path = write(tmp_path, {**BASE, "axes": {"train.seed": [0, 1], "train.lr": [0.1]},
                            "zip": [["train.seed", "train.lr"]]})
    with pytest.raises(StudyError, match="equal lengths"):
        StudySpec.load(path)


def test_demo_study_plans(data_dir):
    from pathlib import Path

    spec = StudySpec.load(Path(__file__).resolve().parents[2] / "studies" / "demo.yaml")
    runs = spec.runs()
    assert len(runs) == 6
    text = plan(spec, runs)
    assert "bbbp: 2,050" in text and "molecule-epochs" in text and "estimated time" in text


def test_auxiliary_study_plans_with_each_strategy_costed(data_dir):
    """The shipped strategy study resolves every label of its aux.method axis, and its plan
    costs a bi-level run above an auxiliary one above plain fine-tuning."""
    import re
    from pathlib import Path

    from moladapt.study.executors import RUNNERS

    spec = StudySpec.load(Path(__file__).resolve().parents[2] / "studies" / "auxiliary_strategies.yaml")
    runs = spec.runs()
    assert len(runs) == 60
    factor = RUNNERS.get("auxiliary").cost_factor
    by_label = {r.config["aux"]["method"] + "/" + str(r.config["aux"]["combiner"])
                + f"/{len(r.config['aux']['aux_objectives'])}": factor(r.config) for r in runs}
    assert by_label == pytest.approx({"auxiliary/rcgrad/0": 1.0, "auxiliary/gns/3": 3.7, "auxiliary/rcgrad/3": 3.7,
                                      "bilevel/None/3": 10.5, "bilevel/rcgrad/3": 16.0})
    text = plan(spec, runs)
    assert "estimated time" in text and "BLO+RCGrad ≈ 16×" in text
    hours = float(re.search(r"estimated time: ~([0-9.]+) h", text).group(1))
    plain = plan(spec, [r for r in runs if factor(r.config) == 1.0])
    assert hours > 10 * float(re.search(r"estimated time: ~([0-9.]+) min", plain).group(1)) / 60


def test_numbers_are_normalised_so_equal_configs_share_a_key():
    a = StudySpec.from_dict({**BASE, "axes": {"train.lr": ["1e-3"], "model.dropout": [0]}}).runs()[0]
    b = StudySpec.from_dict({**BASE, "axes": {"train.lr": [0.001], "model.dropout": [0.0]}}).runs()[0]
    assert a.key == b.key and a.config["train"]["lr"] == 0.001
    with pytest.raises(StudyError, match="train.lr must be a number"):
        StudySpec.from_dict({**BASE, "axes": {"train.lr": ["fast"]}}).runs()


def test_an_edited_csv_is_a_new_run_and_a_missing_one_is_refused_before_running(tmp_path):
    csv = tmp_path / "mine.csv"
    csv.write_text("smiles,y\nCCO,1\nCCN,0\n")
    path = write(tmp_path, {**BASE, "fixed": {**BASE["fixed"], "data": {"csv": "mine.csv"}},
                            "axes": {"train.seed": [0]}})
    (before,) = StudySpec.load(path).runs()
    csv.write_text("smiles,y\nCCO,1\nCCN,0\nCCC,1\n")
    (after,) = StudySpec.load(path).runs()
    assert before.key != after.key and before.config == after.config
    csv.unlink()
    with pytest.raises(StudyError, match="data.csv: no file"):
        StudySpec.load(path).runs()


def test_relative_files_are_read_from_the_study_files_folder(tmp_path, monkeypatch):
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "mine.csv").write_text("smiles,y\nCCO,1\nCCN,0\n")
    path = write(folder, {**BASE, "fixed": {**BASE["fixed"], "data": {"csv": "mine.csv"}},
                          "axes": {"train.seed": [0]}})
    keys = set()
    for cwd in (tmp_path, folder):  # the same file, so the same run, from wherever it is run
        monkeypatch.chdir(cwd)
        (run,) = StudySpec.load(path).runs()
        assert run.config["data"]["csv"] == str(folder / "mine.csv")
        keys.add(run.key)
    assert len(keys) == 1
    # names stay names: a bundled encoder, a corpus and a benchmark
    from moladapt.study.spec import anchor_paths

    config = {"train": {"init": "bundled:attribute_masking"},
              "pretrain": {"corpus": "moses_train", "labels_dataset": "toxcast", "init": "enc.pt"}}
    anchor_paths(config, tmp_path)
    assert config == {"train": {"init": "bundled:attribute_masking"},
                      "pretrain": {"corpus": "moses_train", "labels_dataset": "toxcast",
                                   "init": str(tmp_path / "enc.pt")}}
    config = {"data": {"csv": "bundled_runs.csv"}, "pretrain": {"corpus": "~/corpus.smi"}}
    anchor_paths(config, tmp_path)  # a file named bundled…, and a home path the loaders read
    assert config == {"data": {"csv": str(tmp_path / "bundled_runs.csv")},
                      "pretrain": {"corpus": str(Path("~/corpus.smi").expanduser())}}


def test_a_column_list_written_as_a_string_is_read_as_on_the_command_line():
    fixed = {**BASE["fixed"], "data": {"dataset": "tox21", "target_columns": "NR-AR, SR-ARE"}}
    (run,) = StudySpec.from_dict({**BASE, "fixed": fixed}).runs()
    assert run.config["data"]["target_columns"] == ["NR-AR", "SR-ARE"]  # not split into letters
    bad = {**BASE["fixed"], "model": {"fingerprint_dims": 512}}
    with pytest.raises(StudyError, match="model.fingerprint_dims must be a list"):
        StudySpec.from_dict({**BASE, "fixed": bad}).runs()


def test_fixed_takes_dotted_keys_like_the_axes():
    nested = StudySpec.from_dict({**BASE, "fixed": {**BASE["fixed"], "train": {"epochs": 3, "lr": 0.01}}}).runs()
    dotted = StudySpec.from_dict({**BASE, "fixed": {"train.epochs": 3, "model": BASE["fixed"]["model"],
                                                    "train.lr": 0.01}}).runs()
    assert nested[0].key == dotted[0].key and dotted[0].config["train"]["epochs"] == 3


@pytest.mark.parametrize("study, n_runs, keys_sha256", [
    ("demo.yaml", 6, "ff2fdf8aa295d0e4"),
    # moved on 2026-12-06: the bundled encoder's sha256 entered the keys (input_files)
    ("auxiliary_strategies.yaml", 60, "8eecc3f4aa8c0f62"),
    ("pretraining_ablation_cpu.yaml", 480, "1d7404885b0ac370"),
    # pinnable since 2026-12-06: pretrain.init bundled is keyed by name, not install path
    ("supervised_on_bundled.yaml", 36, "b3ceab9b7c11336a"),
])
def test_run_keys_of_the_repo_studies_do_not_move(study, n_runs, keys_sha256):
    """Stored results are found by run key: a change that moves these keys orphans every
    stored run of these studies (a deliberate change updates the pins and says so)."""
    import hashlib

    keys = sorted(run.key for run in StudySpec.load(Path(__file__).parents[2] / "studies" / study).runs())
    assert (len(keys), hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]) == (n_runs, keys_sha256)


def test_a_bundled_encoder_is_keyed_by_name_and_weights_not_by_install_path(tmp_path, monkeypatch):
    """``pretrain.init: bundled`` resolves to a file inside the installed package: two installs
    of the same release give the same run keys, and another encoder under the name a new key."""
    import shutil

    import torch

    import moladapt.bundled_models as bundled
    from moladapt.data.featurize import get_featurizer
    from moladapt.models.encoders import build_encoder
    from moladapt.pretrain import save_pretrained_encoder

    feat = get_featurizer("basic")
    weights = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        weights.append(tmp_path / f"w{seed}.pt")
        save_pretrained_encoder(weights[-1], build_encoder("gin", feat.atom_vocab_sizes, feat.bond_vocab_sizes,
                                                           hidden_dim=16, num_layers=2), feat)
    spec = {"name": "b", "runner": "pretrain_finetune",
            "fixed": {"data": {"dataset": "bbbp"}, "model": {"hidden_dim": 16, "num_layers": 2},
                      "train": {"epochs": 1}, "pretrain": {"objective": "supervised",
                                                           "labels_dataset": "toxcast"}},
            "axes": {"pretrain.init": ["bundled"]}}
    keys = []
    for install, source in (("a", weights[0]), ("b", weights[0]), ("c", weights[1])):
        path = tmp_path / install / "encoder_x.pt"
        path.parent.mkdir()
        shutil.copyfile(source, path)
        monkeypatch.setattr(bundled, "resolve_init", lambda init, path=path: path)
        (run,) = StudySpec.from_dict(spec).runs()
        assert run.config["pretrain"]["init"] == str(path)  # the runner reads the installed file
        keys.append(run.key)
    assert keys[0] == keys[1] != keys[2]


def test_an_init_checkpoint_of_another_architecture_is_refused_at_plan_time(tmp_path):
    """Not run by run, hours into the study: the plan names the key and what differs."""
    import torch

    from moladapt.data.featurize import get_featurizer
    from moladapt.models.encoders import build_encoder
    from moladapt.pretrain import save_pretrained_encoder

    feat = get_featurizer("basic")
    torch.manual_seed(0)
    ckpt = tmp_path / "enc16.pt"
    save_pretrained_encoder(ckpt, build_encoder("gin", feat.atom_vocab_sizes, feat.bond_vocab_sizes,
                                                hidden_dim=16, num_layers=2), feat)
    fits = {**BASE, "fixed": {"model": {"hidden_dim": 16, "num_layers": 2, "dropout": 0.3},
                              "train": {"epochs": 1, "init": str(ckpt)}}}
    assert len(StudySpec.from_dict(fits).runs()) == 1  # dropout is not architecture
    with pytest.raises(StudyError, match=r"train.init: .*hidden_dim 16 \(asked 32\)"):
        StudySpec.from_dict({**BASE, "fixed": {**BASE["fixed"], "train": {"epochs": 1, "init": str(ckpt)}}}).runs()
    with pytest.raises(StudyError, match="train.init: .*featurizer"):
        StudySpec.from_dict({**fits, "axes": {"data.featurizer": ["rich"]}}).runs()
    pre = {"name": "p", "runner": "pretrain_finetune",
           "fixed": {"data": {"dataset": "bbbp"}, "model": {"hidden_dim": 32, "num_layers": 2},
                     "train": {"epochs": 1},
                     "pretrain": {"objective": "supervised", "labels_dataset": "toxcast", "init": str(ckpt)}}}
    with pytest.raises(StudyError, match=r"pretrain.init: .*hidden_dim 16 \(asked 32\)"):
        StudySpec.from_dict(pre).runs()


def test_bundled_aliases_are_one_run_and_an_unbuilt_encoder_names_its_key(tmp_path, monkeypatch):
    import moladapt.bundled_models as bundled

    spec = {**BASE, "axes": {"train.init": ["bundled", "bundled:attribute_masking"]}}
    enc = tmp_path / "encoder_attribute_masking.pt"
    from moladapt.data.featurize import get_featurizer
    from moladapt.models.encoders import build_encoder
    from moladapt.pretrain import save_pretrained_encoder

    feat = get_featurizer("basic")
    save_pretrained_encoder(enc, build_encoder("gin", feat.atom_vocab_sizes, feat.bond_vocab_sizes,
                                               hidden_dim=32, num_layers=2), feat)
    monkeypatch.setattr(bundled, "resolve_init", lambda init: enc)  # both names: the default encoder
    with pytest.raises(StudyError, match="give the same run"):
        StudySpec.from_dict(spec).runs()

    def unbuilt(init):
        raise FileNotFoundError("no bundled encoder 'attribute_masking': build it with make bundled")

    monkeypatch.setattr(bundled, "resolve_init", unbuilt)
    with pytest.raises(StudyError, match="train.init: no bundled encoder"):
        StudySpec.from_dict({**BASE, "axes": {"train.init": ["bundled"]}}).runs()


def test_a_csv_study_is_sized_whatever_its_smiles_column_is_called(tmp_path):
    (tmp_path / "assay.csv").write_text("SMILES,y\n" + "".join(f"{'C' * (i + 1)}O,{i % 2}\n" for i in range(30)))
    spec = StudySpec.load(write(tmp_path, {**BASE, "fixed": {**BASE["fixed"], "data": {
        "dataset": None, "csv": "assay.csv"}}, "axes": {"train.seed": [0, 1]}}))
    assert "assay.csv: 30" in plan(spec, spec.runs())
