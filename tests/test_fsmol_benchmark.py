"""benchmarks/fsmol.py: the multi-task pivot, the relative-gain statistic, and a tiny resumable run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from moladapt.evaluate.protocol import load_results
from moladapt.types import Task

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("fsmol.py")


def _task(tid, smiles, labels):
    return Task(task_id=tid, smiles=tuple(smiles), labels=np.asarray(labels, dtype=np.float64), group="g")


def test_multitask_matrix(bench):
    tasks = [
        _task("A", ["C", "CC", "CCC", "CC"], [1, 0, 0, 1]),  # CC twice, conflicting -> NaN
        _task("B", ["CCC", "CCO", "CCO"], [1, 0, 0]),  # CCO twice, agreeing -> 0
        _task("C", ["CN", "CO"], [0, 0]),  # one class only: dropped
    ]
    smiles, y, ids = bench.multitask_matrix(tasks, min_per_class=1)
    assert ids == ["A", "B"] and smiles == ["C", "CC", "CCC", "CCO"] and y.dtype == np.float32
    expected = np.array([[1, np.nan], [np.nan, np.nan], [0, 1], [np.nan, 0]], dtype=np.float32)
    np.testing.assert_array_equal(y, expected)
    with pytest.raises(ValueError, match="no training task"):
        bench.multitask_matrix(tasks, min_per_class=3)


def test_relative_gain(bench):
    rows = []
    for t, (a, b) in enumerate([(0.6, 0.5), (0.4, 0.4), (0.5, 0.35)]):
        for method, v in (("maml", a), ("mt-finetune", b)):
            for draw in range(2):
                rows.append({"method": method, "task_id": f"t{t}", "k": 16, "draw": draw,
                             "status": "ok", "auprc": v})
    rows.append({"method": "maml", "task_id": "t9", "k": 16, "draw": 0, "status": "ok", "auprc": 0.9})
    g = bench.relative_gain(pd.DataFrame(rows), "maml", "mt-finetune", n_boot=200)
    assert g["n_tasks"] == 3  # t9 has no multi-task cell: not paired, left out
    assert g["gain"] == pytest.approx(1.5 / 1.25 - 1)
    assert g["ci"][0] <= g["gain"] <= g["ci"][1] and g["per_k"][16] == pytest.approx(g["gain"])
    assert bench.relative_gain(pd.DataFrame(rows), "anil", "mt-finetune") is None

    # a baseline with fewer draws: only the episodes both have are compared (paired)
    extra = [{"method": "maml", "task_id": f"t{t}", "k": 16, "draw": 2, "status": "ok", "auprc": 1.0}
             for t in range(3)]
    g3 = bench.relative_gain(pd.DataFrame(rows + extra), "maml", "mt-finetune", n_boot=200)
    assert g3["gain"] == pytest.approx(g["gain"]) and g3["draws"] == g["draws"] == 2


def test_parse_args_rejects_unknown_method(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--methods", "maml,nope"])
    args = bench.parse_args(["--methods", "anil", "--support", "32,16,32"])
    assert args.methods == ["anil"] and args.support == [16, 32]
    assert bench.group_dir_name("toxcast:50") == "toxcast-50"


def test_ecfp_variants_and_hparams(bench):
    args = bench.parse_args(["--methods", "protonet,protonet+ecfp,rf-ecfp",
                             "--hparam", "protonet.distance=mahalanobis",
                             "--hparam", "protonet+ecfp.train_k=64", "--meta-steps", "7"])
    assert bench.model_cfg(args, "protonet").fingerprint_bits == 0
    fused = bench.model_cfg(args, "protonet+ecfp")
    assert fused.fingerprint_bits == 2048 and fused.fingerprint_dims == (1024, 512)
    assert bench.meta_hparams(args, "protonet") == {"meta_steps": 7, "meta_batch_size": 4,
                                                    "distance": "mahalanobis"}
    assert bench.meta_hparams(args, "protonet+ecfp") == {"meta_steps": 7, "meta_batch_size": 4,
                                                         "distance": "mahalanobis", "train_k": 64}
    assert bench.eval_spec(args, "protonet+ecfp", {"protonet+ecfp": Path("m.pt")})["method"] == "protonet"
    assert bench.eval_spec(args, "rf-ecfp", {}) == {"method": "rf-ecfp", "hparams": None}
    counts = bench.parse_args(["--methods", "rf-ecfp,knn-ecfp,protonet+ecfp", "--ecfp-counts"])
    assert bench.eval_spec(counts, "knn-ecfp", {})["hparams"] == {"counts": True}
    assert bench.model_cfg(counts, "protonet+ecfp").fingerprint_counts
    for bad in (["--methods", "rf-ecfp+ecfp"], ["--hparam", "protonet=1"], ["--hparam", "scratch-finetune.x=1"],
                ["--methods", "mt-head@v2"], ["--methods", "protonet@"], ["--methods", "protonet@a b"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_fused_multitask_baselines_have_their_own_model(bench):
    args = bench.parse_args(["--methods", "mt-head+ecfp,mt-finetune+ecfp,mt-head,anil+ecfp"])
    assert [bench.multitask_model(m) for m in args.methods] == [
        "multitask+ecfp", "multitask+ecfp", "multitask", "multitask+ecfp"]
    assert bench.is_multitask("mt-head+ecfp") and not bench.is_meta("mt-head+ecfp")
    ckpts = {"multitask": Path("plain.pt"), "multitask+ecfp": Path("fused.pt")}
    spec = bench.eval_spec(args, "mt-head+ecfp", ckpts)
    assert spec == {"method": "finetune", "checkpoint": Path("fused.pt"), "hparams": {"mode": "head"}}
    assert bench.eval_spec(args, "mt-finetune", ckpts)["checkpoint"] == Path("plain.pt")
    assert bench.mt_identity(args, "multitask+ecfp")["encoder"]["fingerprint_bits"] == 2048
    assert bench.mt_identity(args)["encoder"]["fingerprint_bits"] == 0  # the stored identity
    for bad in ("mt-head@v2", "mt-head+ecfp@v2", "scratch-finetune+ecfp"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--methods", bad])


def test_headline_compares_like_with_like_against_the_strongest_baseline(bench):
    def g(gain):
        return {"gain": gain, "ci": (gain - 0.01, gain + 0.01), "n_tasks": 3}

    gains = {("anil+ecfp", "mt-finetune", "in"): g(0.11), ("anil+ecfp", "mt-head+ecfp", "in"): g(0.02),
             ("anil+ecfp", "mt-head+ecfp", "ood"): g(-0.03),
             ("maml", "mt-finetune", "in"): g(-0.03), ("maml", "mt-head", "in"): g(-0.04),
             ("maml", "mt-head", "ood"): g(0.01)}
    line = bench.headline_gain(gains, ["in", "ood"])[-1]
    # anil+ecfp's +11% is against a graph-only baseline: not a fair pair, not the answer
    assert "**anil+ecfp** vs mt-head+ecfp" in line and "in: +2.0%" in line and "ood: -3.0%" in line
    del gains[("anil+ecfp", "mt-head+ecfp", "in")]
    line = bench.headline_gain(gains, ["in", "ood"])[-1]
    assert "**maml** vs mt-head" in line and "in: -4.0%" in line  # the stronger of its two baselines
    assert "No answer yet" in bench.headline_gain({("anil+ecfp", "mt-head", "in"): g(0.1)}, ["in"])[-1]


def test_headline_names_a_better_prototype_learner_after_the_meta_initialisation(bench):
    def g(gain):
        return {"gain": gain, "ci": (gain - 0.01, gain + 0.01), "n_tasks": 3, "draws": 1}

    gains = {("maml", "mt-head", "in"): g(-0.02), ("maml", "mt-head", "ood"): g(0.01),
             ("protonet+ecfp", "mt-head+ecfp", "in"): g(0.03), ("protonet+ecfp", "mt-finetune+ecfp", "in"): g(0.02),
             ("protonet+ecfp", "mt-finetune+ecfp", "ood"): g(-0.01), ("protonet", "mt-head+ecfp", "in"): g(0.5)}
    lines = [line for line in bench.headline_gain(gains, ["in", "ood"]) if line]
    # the paper's question (fine-tuned initialisations) first; protonet's +50% is against a fused baseline
    assert lines[0].startswith("Best meta-initialisation") and "**maml** vs mt-head" in lines[0]
    assert "**protonet+ecfp** vs mt-finetune+ecfp" in lines[1] and "in: +2.0%" in lines[1]
    assert "ood: -1.0% [-2.0%, +0.0%] (1 shared draw)" in lines[1] and "no fine-tuning" in lines[1]
    del gains[("protonet+ecfp", "mt-head+ecfp", "in")], gains[("protonet+ecfp", "mt-finetune+ecfp", "in")]
    assert len([line for line in bench.headline_gain(gains, ["in", "ood"]) if line]) == 1


def test_variant_tags_get_their_own_hparams_on_top_of_the_methods(bench):
    args = bench.parse_args(["--methods", "protonet+ecfp,protonet+ecfp@fsmol,maml@long",
                             "--hparam", "protonet.distance=mahalanobis",
                             "--hparam", "protonet+ecfp.train_k=64",
                             "--hparam", "protonet+ecfp@fsmol.distance=class_mahalanobis",
                             "--hparam", "protonet+ecfp@fsmol.train_k=16"])
    assert bench.meta_hparams(args, "protonet+ecfp@fsmol") == {
        "meta_steps": 2000, "meta_batch_size": 4, "distance": "class_mahalanobis", "train_k": 16}
    assert bench.meta_hparams(args, "protonet+ecfp")["distance"] == "mahalanobis"  # untouched
    assert bench.model_cfg(args, "protonet+ecfp@fsmol").fingerprint_bits == 2048
    assert bench.model_cfg(args, "maml@long").fingerprint_bits == 0
    assert bench.base_method("protonet+ecfp@fsmol") == "protonet" and bench.is_meta("maml@long")
    assert bench.eval_spec(args, "maml@long", {"maml@long": Path("m.pt")})["method"] == "maml"


def test_estimate_counts_a_tags_own_meta_steps(bench, data_dir, tmp_path, capsys):
    argv = ["--methods", "protonet@long", "--hparam", "protonet@long.meta_steps=7", "--train", "fsmol-valid:4",
            "--test", "fsmol-valid", "--ood", "none", "--max-tasks", "2", "--support", "16", "--draws", "1",
            "--layers", "2", "--hidden", "16", "--meta-batch-size", "2", "--out", str(tmp_path / "results"),
            "--estimate-only"]
    assert bench.main(argv) == 0
    line = next(t for t in capsys.readouterr().out.splitlines() if "train protonet@long" in t)
    assert line.split()[2:4] == ["7", "steps"]


def test_tiny_run_resumes_and_reports(bench, data_dir, tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["--methods", "protonet,mt-head", "--train", "fsmol-valid:4", "--test", "fsmol-valid",
            "--ood", "fsmol-test", "--max-tasks", "2", "--support", "16", "--draws", "1",
            "--layers", "2", "--hidden", "16", "--jk", "concat", "--meta-steps", "2", "--meta-batch-size", "2",
            "--mt-epochs", "1", "--mt-batch-size", "64", "--valid", "fsmol-test:2",
            "--validate-every", "1", "--out", str(out), "--work-dir", str(tmp_path / "work")]
    assert bench.main([*argv, "--estimate-only"]) == 0
    printed = capsys.readouterr().out
    assert "CPU hours" in printed and "protonet" in printed and not (out / "fsmol.md").exists()

    assert bench.main([*argv, "--no-estimate"]) == 0
    raw = out / "raw" / "fsmol"
    for group in ("fsmol-valid", "fsmol-test"):
        for method in ("protonet", "mt-head"):
            frame = load_results(raw / group / method / "results.csv")
            assert len(frame) == 2 and set(frame["method"]) == {method}
    meta = json.loads((raw / "models" / "protonet" / "meta.json").read_text())
    assert meta["step_seconds"] > 0 and meta["threads"] == 1
    assert [step for step, _ in meta["validation"]["scores"]] == [0, 1, 2]
    report = (out / "fsmol.md").read_text()
    for text in ("## ΔAUPRC on `fsmol-valid`", "## ΔAUPRC on `fsmol-test`", "Meta-training speed",
                 "| protonet |", "| mt-head |", "Evaluation time", "Nguyen", "## Trained models"):
        assert text in report
    assert "best of validations on fsmol-test:2 every 1 steps: step" in report
    assert "| GIN 2×16 (jk concat, mean pooling) |" in report
    assert (out / "fsmol_fsmol-valid_delta_auprc_vs_k.png").stat().st_size > 0

    capsys.readouterr()
    assert bench.main([*argv, "--no-estimate"]) == 0  # resumes: reuses models, no new rows
    printed = capsys.readouterr().out
    assert "[protonet] reusing" in printed and "[multitask] reusing" in printed
    assert "0 new rows" in printed and "1 new rows" not in printed
    timing = json.loads((raw / "fsmol-valid" / "protonet" / "timing.json").read_text())
    assert timing["episodes_computed"] == 2 and not math.isnan(timing["wall_seconds"])

    assert bench.main([*argv, "--no-estimate", "--ood", "none"]) == 0  # in distribution only
    report = (out / "fsmol.md").read_text()
    assert "## ΔAUPRC on `fsmol-test` (out of distribution)" in report  # the earlier group's table stays
    assert "--ood fsmol-test --no-estimate" in report

    with pytest.raises(SystemExit, match="another configuration"):  # other meta-steps: refused
        bench.main([*argv, "--no-estimate", "--meta-steps", "3"])


def test_a_variant_changing_only_adaptation_shares_its_bases_model(bench):
    args = bench.parse_args(["--methods", "maml+ecfp,maml+ecfp@t25,maml+ecfp@long",
                             "--hparam", "maml+ecfp@t25.test_inner_steps=25",
                             "--hparam", "maml+ecfp@long.meta_steps=4000",
                             "--hparam", "maml+ecfp@long.test_inner_steps=25"])
    assert bench.model_name(args, "maml+ecfp@t25") == "maml+ecfp"
    assert bench.model_name(args, "maml+ecfp@long") == "maml+ecfp@long"  # trains its own
    assert "test_inner_steps" not in bench.meta_hparams(args, "maml+ecfp@t25")
    assert bench.meta_identity(args, "maml+ecfp") == bench.meta_identity(args, bench.model_name(args, "maml+ecfp@t25"))
    ckpts = {"maml+ecfp": Path("a.pt"), "maml+ecfp@t25": Path("a.pt")}
    assert bench.eval_spec(args, "maml+ecfp@t25", ckpts)["hparams"] == {"test_inner_steps": 25}
    assert bench.eval_spec(args, "maml+ecfp", ckpts)["hparams"] is None  # the checkpoint's own


def test_tiny_adaptation_variant_reuses_the_model_and_reports_its_command(bench, data_dir, tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["--methods", "anil,anil@t3", "--hparam", "anil@t3.test_inner_steps=3", "--train", "fsmol-valid:4",
            "--test", "fsmol-valid", "--ood", "none", "--max-tasks", "2", "--support", "16", "--draws", "1",
            "--layers", "2", "--hidden", "16", "--meta-steps", "2", "--meta-batch-size", "2",
            "--out", str(out), "--no-estimate"]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "[anil] meta-training" in printed and "[anil] reusing" in printed
    raw = out / "raw" / "fsmol"
    assert sorted(p.name for p in (raw / "models").iterdir()) == ["anil"]
    configs = {m: (raw / "fsmol-valid" / m / "config.yaml").read_text() for m in ("anil", "anil@t3")}
    assert "test_inner_steps: 3" in configs["anil@t3"] and "test_inner_steps: null" in configs["anil"]
    report = (out / "fsmol.md").read_text()
    assert "--hparam anil@t3.test_inner_steps=3" in report and "| anil@t3 |" in report


def test_a_seed_variant_trains_from_its_seed_and_is_evaluated_on_the_same_episodes(bench, data_dir, tmp_path):
    out = tmp_path / "results"
    argv = ["--methods", "protonet,protonet@s1", "--hparam", "protonet@s1.seed=1", "--train", "fsmol-valid:4",
            "--test", "fsmol-valid", "--ood", "none", "--max-tasks", "2", "--support", "16", "--draws", "1",
            "--layers", "2", "--hidden", "16", "--meta-steps", "0", "--out", str(out), "--no-estimate"]
    assert bench.main(argv) == 0
    raw = out / "raw" / "fsmol"
    weights = {m: torch.load(raw / "models" / m / "model.pt", weights_only=True)["state_dict"]
               for m in ("protonet", "protonet@s1")}
    assert any(not torch.equal(weights["protonet"][k], weights["protonet@s1"][k]) for k in weights["protonet"])
    episodes = {m: json.loads((raw / "fsmol-valid" / m / "results.csv.episodes.json").read_text())
                for m in ("protonet", "protonet@s1")}
    assert episodes["protonet"] == episodes["protonet@s1"]
    report = (out / "fsmol.md").read_text()
    assert "| meta_steps=0, meta_batch_size=4 | 1 |" in report and "| meta_steps=0, meta_batch_size=4 | 0 |" in report


def test_a_meta_init_variant_has_its_own_model_and_identity(bench):
    args = bench.parse_args(["--methods", "protonet+ecfp,protonet+ecfp@mt", "--meta-init", "protonet+ecfp@mt"])
    assert bench.model_name(args, "protonet+ecfp@mt") == "protonet+ecfp@mt"  # same hparams, other start
    init = bench.meta_identity(args, "protonet+ecfp@mt")["init"]
    assert init == {"model": "multitask+ecfp", **bench.mt_identity(args, "multitask+ecfp")}
    assert "init" not in bench.meta_identity(args, "protonet+ecfp")  # stored identities still match
    for bad in ("mt-head", "rf-ecfp", "nope"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--meta-init", bad])


def test_tiny_meta_init_run_starts_from_the_multitask_model(bench, data_dir, tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["--methods", "protonet+ecfp@mt,mt-head+ecfp", "--meta-init", "protonet+ecfp@mt",
            "--hparam", "protonet+ecfp@mt.meta_steps=0", "--train", "fsmol-valid:4", "--test", "fsmol-valid",
            "--ood", "none", "--max-tasks", "2", "--support", "16", "--draws", "1", "--layers", "2",
            "--hidden", "16", "--mt-epochs", "1", "--mt-batch-size", "64", "--out", str(out),
            "--work-dir", str(tmp_path / "work"), "--no-estimate"]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    models = out / "raw" / "fsmol" / "models"
    assert f"meta-training 0 steps on 4 tasks from {models / 'multitask+ecfp' / 'model.pt'}" in printed
    assert "[multitask+ecfp] reusing" in printed  # pretrained once, for the init and for mt-head+ecfp
    meta = json.loads((models / "protonet+ecfp@mt" / "meta.json").read_text())
    assert meta["init"] == str(models / "multitask+ecfp" / "model.pt")
    start = torch.load(models / "multitask+ecfp" / "model.pt", weights_only=True)["state_dict"]
    kept = torch.load(models / "protonet+ecfp@mt" / "model.pt", weights_only=True)["state_dict"]
    encoder_keys = [k for k in start if k.startswith("encoder.")]
    assert encoder_keys and all(torch.equal(start[k], kept[k]) for k in encoder_keys)  # 0 steps: the init itself
    report = (out / "fsmol.md").read_text()
    assert "from the multi-task model `multitask+ecfp`" in report
    assert "`protonet+ecfp@mt` = meta-trained from the multi-task model `multitask+ecfp` instead of random" in report
    assert "--meta-init protonet+ecfp@mt" in report


def test_baseline_variants_take_their_own_hparams_on_top_of_the_baselines(bench):
    args = bench.parse_args(["--methods", "rf-ecfp,rf-ecfp@fsmol", "--ecfp-counts",
                             "--hparam", "rf-ecfp.n_estimators=50",
                             "--hparam", "rf-ecfp@fsmol.param_grid=fsmol", "--hparam", "rf-ecfp@fsmol.class_weight=null"])
    assert bench.eval_spec(args, "rf-ecfp", {}) == {"method": "rf-ecfp", "hparams": {"counts": True, "n_estimators": 50}}
    assert bench.eval_spec(args, "rf-ecfp@fsmol", {}) == {
        "method": "rf-ecfp", "hparams": {"counts": True, "n_estimators": 50, "param_grid": "fsmol", "class_weight": None}}


def test_tiny_baseline_variant_run_records_and_reports_its_search(bench, data_dir, tmp_path):
    out = tmp_path / "results"
    argv = ["--methods", "knn-ecfp,knn-ecfp@fsmol", "--hparam", "knn-ecfp@fsmol.param_grid=fsmol",
            "--hparam", "knn-ecfp@fsmol.grid_scoring=average_precision", "--test", "fsmol-valid", "--ood", "none",
            "--max-tasks", "2", "--support", "16,32", "--draws", "1", "--ecfp-counts", "--out", str(out), "--no-estimate"]
    assert bench.main(argv) == 0
    group = out / "raw" / "fsmol" / "fsmol-valid"
    frame = load_results(group / "knn-ecfp@fsmol" / "results.csv")
    assert len(frame) == 4 and set(frame["method"]) == {"knn-ecfp@fsmol"} and frame["delta_auprc"].notna().all()
    config = (group / "knn-ecfp@fsmol" / "config.yaml").read_text()
    assert "param_grid: fsmol" in config and "grid_scoring: average_precision" in config
    assert "param_grid" not in (group / "knn-ecfp" / "config.yaml").read_text()
    report = (out / "fsmol.md").read_text()
    assert ("--methods knn-ecfp,knn-ecfp@fsmol --draws 1 --ecfp-counts --hparam knn-ecfp@fsmol.param_grid=fsmol "
            "--hparam knn-ecfp@fsmol.grid_scoring=average_precision --ood none") in report
    assert ("`knn-ecfp@fsmol` = `knn-ecfp` with FS-Mol's grid searched on each support set "
            "(5-fold, average_precision)") in report


def test_report_notes_are_kept_for_every_later_rewrite(bench, tmp_path):
    out = ["--out", str(tmp_path)]
    assert bench.report_notes(bench.parse_args([*out, "--note", "First.", "--note", "Second."])) == ["First.", "Second."]
    assert bench.report_notes(bench.parse_args(out)) == ["First.", "Second."]  # a rerun without --note
    assert bench.report_notes(bench.parse_args([*out, "--note", "Second.", "--note", "Third."])) == [
        "First.", "Second.", "Third."]  # a repeated note is not added twice
    assert (tmp_path / "raw" / "fsmol" / "notes.md").read_text() == "First.\n\nSecond.\n\nThird.\n"


def _result_row(method: str, task: str, k: int, delta_auprc: float) -> dict:
    """One complete few-shot result row (``moladapt.evaluate.protocol.COLUMNS``)."""
    return {"task_id": task, "group": "fsmol-test", "method": method, "k": k, "draw": 0, "status": "ok",
            "reason": "", "n_support": k, "n_query": 100, "query_positive_rate": 0.3, "roc_auc": 0.7,
            "auprc": delta_auprc + 0.3, "delta_auprc": delta_auprc, "seconds": 0.1}


def test_summary_compares_each_published_row_with_the_best_row_of_its_family(bench):
    published = dict(zip(bench.DEFAULT_K, bench.PUBLISHED["protonet"][1], strict=True))
    offsets = {"protonet": -0.05, "protonet+ecfp@fsmol": -0.01, "maml": +0.2, "rf-ecfp": 0.0}
    rows = []
    for method, offset in offsets.items():
        for k in bench.DEFAULT_K:
            if method == "maml" and k == 256:
                continue  # a family row without every published k is not compared
            value = published[k] + offset if method.startswith("protonet") else bench.PUBLISHED[
                "rf-ecfp"][1][bench.DEFAULT_K.index(k)] + (0.01 if k == 16 else -0.01)
            rows += [_result_row(method, f"t{t}", k, value) for t in range(3)]
    lines = bench.published_comparison(bench.summarize_few_shot(pd.DataFrame(rows), ("delta_auprc",)))
    table = [line for line in lines if line.startswith("| ") and "moladapt row" not in line]
    assert table == ["| ProtoNet | protonet+ecfp@fsmol | -0.010/-0.010/-0.010/-0.010/-0.010 | 0 of 5 |",
                     "| RF | rf-ecfp | +0.010/-0.010/-0.010/-0.010/-0.010 | 1 of 5 |"]
    assert bench.published_comparison(bench.summarize_few_shot(pd.DataFrame(rows[:2]), ("delta_auprc",))) == []


def test_report_puts_the_answer_first_and_the_run_notes_last(bench, tmp_path):
    from moladapt.evaluate.protocol import COLUMNS

    out = ["--out", str(tmp_path), "--layers", "2", "--hidden", "16"]
    rows = [_result_row(method, f"t{t}", k, value - 0.3 + 0.01 * t)
            for method, value in (("maml", 0.5), ("mt-head", 0.4), ("rf-ecfp", 0.35))
            for k in bench.DEFAULT_K for t in range(4)]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for method in ("maml", "mt-head", "rf-ecfp"):
        folder = tmp_path / "raw" / "fsmol" / "fsmol-test" / method
        folder.mkdir(parents=True)
        frame[frame["method"] == method].to_csv(folder / "results.csv", index=False)
    (folder / "config.yaml").write_text("method: rf-ecfp\ndraws: 1\nparams:\n  n_estimators: 100\n  counts: true\n")
    bench.report_notes(bench.parse_args([*out, "--note", "A run that changed one thing."]))
    report = bench.write_report(bench.parse_args([*out, "--ood", "none"])).read_text()
    order = [report.index(text) for text in (
        "## Summary", "| GNN-MAML | maml |", "**maml** vs mt-head",
        "Highest mean ΔAUPRC on `fsmol-test` — k = 16: maml 0.215 (+0.100 over mt-head)", "## ΔAUPRC on `fsmol-test`",
        "## Meta-learning vs multi-task", "## Run notes", "A run that changed one thing.")]
    assert order == sorted(order)
    assert "`rf-ecfp` / `knn-ecfp` = random forest / Tanimoto kNN on ECFP4 counts (FS-Mol's input)" in report
    assert "--methods rf-ecfp --draws 1 --ecfp-counts --ood none --no-estimate" in report


def test_seed_replicates_group_models_differing_only_in_seed_and_average_them(bench, tmp_path):
    from moladapt.evaluate.protocol import COLUMNS

    ident = {"train": "fsmol-train", "encoder": {"encoder": "gin"}, "featurizer": "basic", "seed": 0,
             "hparams": {"meta_lr": 0.0001}}
    identities = {"protonet+ecfp@a": {**ident, "method": "protonet+ecfp@a"},
                  "protonet+ecfp@a-s1": {**ident, "method": "protonet+ecfp@a-s1",
                                         "hparams": {"meta_lr": 0.0001, "seed": 1}},
                  "protonet+ecfp@b": {**ident, "method": "protonet+ecfp@b", "hparams": {"meta_lr": 0.001}},
                  "maml@a": {**ident, "method": "maml@a"}}
    assert bench.replicate_sets(identities) == [[(0, "protonet+ecfp@a"), (1, "protonet+ecfp@a-s1")]]
    for name, value in identities.items():
        folder = tmp_path / "raw" / "fsmol" / "models" / name
        folder.mkdir(parents=True)
        (folder / "identity.json").write_text(json.dumps(value))

    published = dict(zip(bench.DEFAULT_K, bench.PUBLISHED["protonet"][1], strict=True))
    rows = [_result_row(m, f"t{t}", k, published[k] + offset) for m, offset in (
        ("protonet+ecfp@a", -0.01), ("protonet+ecfp@a-s1", +0.03)) for k in bench.DEFAULT_K for t in range(3)]
    rows.append({**_result_row("protonet+ecfp@a", "t0", 16, 0.9), "draw": 1})  # a draw only one seed has
    frame = pd.DataFrame(rows, columns=COLUMNS)
    means = bench.seed_means(frame, ["protonet+ecfp@a", "protonet+ecfp@a-s1"])
    assert means["draws"] == 1 and means["n_tasks"] == 3
    assert means["mean"][16] == pytest.approx(published[16] + 0.01)
    assert means["spread"][16] == pytest.approx(0.04)
    lines, summary = bench._seed_lines(bench.parse_args(["--out", str(tmp_path)]), {"fsmol-test": frame},
                                       ["fsmol-test"], bench.DEFAULT_K)
    assert lines[0] == "## Seed replicates"
    row = next(line for line in lines if line.startswith("| protonet+ecfp@a (seeds 0, 1) | fsmol-test |"))
    assert f"| {published[16] + 0.01:.3f} (0.040) |" in row and row.endswith("| 3×1 |")
    assert "| ↳ *seed mean − FS-Mol's ProtoNet* | | +0.010 | +0.010 | +0.010 | +0.010 | +0.010 | |" in lines
    assert summary == ["", "Mean over seeds of protonet+ecfp@a (seeds 0, 1) (1 shared draw) against FS-Mol's "
                       "published ProtoNet: +0.010/+0.010/+0.010/+0.010/+0.010 (*Seed replicates*)."]
    assert bench._seed_lines(bench.parse_args(["--out", str(tmp_path)]), {"fsmol-test": frame[:0]},
                             ["fsmol-test"], bench.DEFAULT_K) == ([], [])
