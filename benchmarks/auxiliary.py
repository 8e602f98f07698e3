"""Fine-tuning with auxiliary tasks vs plain fine-tuning (Dey & Ning, J Cheminform 16:85, 2024).

For every dataset and seed, the same (optionally pretrained: ``--init``) encoder is
fine-tuned on the target

* ``finetune``: without auxiliary tasks (the baseline; the same training loop);
* ``sum``, ``gcs``, ``gns``, ``pcgrad``, ``rcgrad``: jointly with the auxiliary objectives
  (``--aux``), the encoder's per-task gradients merged by that combiner (``rcgrad`` with
  w_i = 1, so each auxiliary coefficient is ≥ ½);
* ``rcgrad-w0``: RCGrad without BLO with fixed w_i = 0 (coefficient = half the GNS scale);
* ``blo``, ``blo+rcgrad``: the auxiliary tasks' weights learned by bi-level optimisation,
  with the weighted-sum / RCGrad direction in the inner loop.

Datasets: the TDC ADMET classification sets (their predefined split as published) and BBBP,
BACE and ClinTox (scaffold split 80/10/10). Every finished run writes
``<raw-dir>/<dataset>/<method>_seed<s>_e<epochs>_<settings hash>/summary.json`` at once, so
an interrupted benchmark resumes where it stopped; runs with other settings (epochs, auxiliary
objectives, encoder) are kept apart and never pooled into one table. The report gives the
test metric, mean ± std over seeds, per dataset and method, and paired tests of each method against ``finetune`` over
the (dataset, seed) units: Wilcoxon signed-rank and paired t, Holm-corrected across the
methods (:func:`moladapt.evaluate.statistics.paired_comparisons`).

    MOLADAPT_DATA_DIR=../shared/data python benchmarks/auxiliary.py --init pretrained.pt \
        --seeds 0,1,2 --jobs 2

Smoke test (writes nothing under benchmarks/results):

    python benchmarks/auxiliary.py --datasets bbbp --seeds 0 --methods finetune,rcgrad \
        --hidden-dim 32 --num-layers 2 --epochs 2 --output /tmp/aux_smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("finetune", "sum", "gcs", "gns", "pcgrad", "rcgrad", "rcgrad-w0", "blo", "blo+rcgrad")
MOLECULENET = ("bbbp", "bace", "clintox")
DEFAULT_AUX = "attribute_masking,edge_prediction,context_prediction,infomax,graphcl"
BASELINE = "finetune"


def relative_cost(method: str) -> float:
    """Training time relative to fine-tuning, roughly (measured: combiners ≈ 4×, BLO ≈ 9–15×)."""
    return 1.0 if method == BASELINE else 10.0 if method.startswith("blo") else 4.0


def default_datasets() -> list[str]:
    from moladapt.data.sources import CLASSIFICATION, DATASETS

    tdc = [name for name in DATASETS.names()
           if DATASETS.get(name).group == "tdc_admet" and DATASETS.get(name).task_type == CLASSIFICATION]
    return [*tdc, *MOLECULENET]


def aux_section(method: str, aux: tuple[str, ...], inner_steps: int,
                recipes: dict[str, int] | None = None) -> dict:
    """The ``aux`` config of ``method``; ``recipes`` (the settings' ``aux_recipes``: versions
    other than 1; an objective absent from it runs recipe 1) become objective options."""
    if method == "finetune":
        return {"method": "auxiliary", "aux_objectives": []}
    from moladapt.pretrain.objectives import recipe_options
    from moladapt.pretrain.objectives.base import canonical_objective

    options = {a: recipe_options(a, (recipes or {}).get(canonical_objective(a), 1)) for a in aux}
    section = {"method": "auxiliary", "aux_objectives": list(aux), "combiner": method,
               "objective_options": {a: o for a, o in options.items() if o} or None}
    if method in ("blo", "blo+rcgrad"):
        return {**section, "method": "bilevel", "inner_steps": inner_steps,
                "combiner": None if method == "blo" else "rcgrad"}
    if method == "rcgrad-w0":  # RCGrad without BLO and fixed w_i = 0: coefficient GNS scale / 2
        return {**section, "combiner": "rcgrad", "task_weights": [0.0] * len(aux)}
    return section


def run_one(dataset: str, method: str, seed: int, args: dict, raw_dir: str,
            encoder_sha: str | None = None) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from moladapt.auxiliary_runs import AuxConfig, run_auxiliary
    from moladapt.config import RunConfig

    split = "predefined" if dataset.startswith("tdc_") else "scaffold"
    run_cfg = RunConfig.from_dict({
        "data": {"dataset": dataset, "split": split, "featurizer": args["featurizer"]},
        "model": {"encoder": args["encoder"], "hidden_dim": args["hidden_dim"],
                  "num_layers": args["num_layers"], "dropout": args["dropout"]},
        "train": {"epochs": args["epochs"], "batch_size": args["batch_size"], "lr": args["lr"],
                  "seed": seed, "patience": args["patience"], "num_threads": 1,
                  "init": args["init"], "encoder_lr_scale": args["encoder_lr_scale"]},
    })
    aux_cfg = AuxConfig.from_dict(aux_section(method, tuple(args["aux"]), args["inner_steps"],
                                              args.get("aux_recipes", {})))
    out = Path(raw_dir) / dataset / run_name(method, seed, args)
    result = run_auxiliary(run_cfg, aux_cfg, out, log=lambda m: None)
    record = {"dataset": dataset, "method": method, "seed": seed, "split": split,
              "test_roc_auc": result.test.mean.get("roc_auc"),
              "test_auprc": result.test.mean.get("auprc"),
              "valid_roc_auc": result.valid.mean.get("roc_auc"),
              "best_epoch": result.best_epoch, "train_seconds": result.train_seconds,
              "mol_per_s": result.molecules_per_second,
              "gradient_log": result.details.get("gradient_log"),
              "weights": result.details.get("weights"),
              "settings": {k: v for k, v in args.items() if k != "aux"} | {"aux": list(args["aux"])},
              "init_sha256": encoder_sha}
    (out / "summary.json").write_text(json.dumps(record, indent=2, default=float))
    (out / "model.pt").unlink(missing_ok=True)  # keep results, not weights
    return record


def comparable(settings: dict) -> dict:
    """The settings that decide a run's result; the encoder checkpoint by file name, not by
    where this checkout happens to lie (its content is checked apart: :func:`other_encoder`)."""
    return settings | {"init": Path(settings["init"]).name if settings.get("init") else None}


def init_sha256(settings: dict) -> str | None:
    """The checkpoint's sha256; None without one, or where it is not here (a report only)."""
    from moladapt.bundled_models import sha256_file

    init = settings.get("init")
    return sha256_file(init) if init and Path(init).is_file() else None


def other_encoder(record: dict, sha256: str | None) -> bool:
    """Whether a stored run started from another checkpoint than the file now at its path
    (a rebuilt encoder keeps its name). Runs stored before the hash was recorded predate
    every rebuild of the bundled encoder (2026-12-02 06:49), so they pass."""
    return None not in (record.get("init_sha256"), sha256) and record["init_sha256"] != sha256


def run_name(method: str, seed: int, settings: dict) -> str:
    """Budgets and auxiliary sets are never pooled: each gets its own run directory."""
    digest = hashlib.sha1(json.dumps(comparable(settings), sort_keys=True).encode()).hexdigest()[:8]
    return f"{method}_seed{seed}_e{settings['epochs']}_{digest}"


def fmt(values: np.ndarray) -> str:
    if len(values) == 0:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f} (1 seed)"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def table(records: list[dict], metric: str, methods: list[str]) -> str:
    import pandas as pd

    from moladapt.evaluate.statistics import paired_comparisons

    frame = pd.DataFrame([{k: r[k] for k in ("dataset", "method", "seed")} | {metric: r.get(metric)}
                          for r in records])
    frame[metric] = frame[metric].astype(float) * 100
    methods = [m for m in methods if m in set(frame["method"])]
    lines = ["| dataset | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for dataset in dict.fromkeys(frame["dataset"]):
        sub = frame[frame["dataset"] == dataset]
        cells = [fmt(sub.loc[sub["method"] == m, metric].dropna().to_numpy()) for m in methods]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    # A mean over different datasets per method would compare methods on different problems:
    # average only over the datasets on which every shown method has runs, and name them.
    per_dataset = frame.dropna(subset=[metric]).groupby(["method", "dataset"])[metric].mean()
    shared = [d for d in dict.fromkeys(frame["dataset"])
              if all((m, d) in per_dataset.index for m in methods)]
    partial = len(shared) < frame["dataset"].nunique()
    label = (f"mean over {', '.join(shared)}" if partial else "mean over datasets")
    if shared:
        means = [per_dataset.loc[m].loc[shared].mean() for m in methods]
        lines.append(f"| **{label}** | " + " | ".join(f"{v:.1f}" for v in means) + " |")
    if BASELINE in methods and shared:
        base = per_dataset.loc[BASELINE].loc[shared]
        # the mean of the per-dataset relative changes (not the relative change of the mean row)
        rel = [100 * ((per_dataset.loc[m].loc[shared] - base) / base).mean() for m in methods]
        lines.append(f"| relative change vs finetune (mean of the per-dataset changes {label.removeprefix('mean ')}) | "
                     + " | ".join(f"{v:+.1f}%" for v in rel) + " |")
    out = "\n".join(lines)
    if BASELINE in methods and len(methods) > 1:
        comp = paired_comparisons(frame, metric, baseline=BASELINE, unit_cols=("dataset", "seed"),
                                  n_boot=2000)
        rows = ["| method | pairs | mean Δ vs finetune | 95% CI | p Wilcoxon (Holm) | "
                "p t-test (Holm) | direction | note |", "|---|---|---|---|---|---|---|---|"]

        def p(v: float) -> str:
            return "–" if np.isnan(v) else f"{v:.3g}"

        for r in comp.itertuples():
            ci = "–" if np.isnan(r.ci_low) else f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
            rows.append(f"| {r.method} | {r.n_pairs} | {r.mean_diff:+.2f} | {ci} | "
                        f"{p(r.p_wilcoxon_holm)} | {p(r.p_ttest_holm)} | "
                        f"{r.direction}{' *' if r.significant else ''} | {r.note} |")
        out += ("\n\nPaired over (dataset, seed) units, each method vs `finetune`; Holm-corrected "
                "across the methods; `*`: Wilcoxon (Holm) p < 0.05.\n\n" + "\n".join(rows))
    return out


def cost_table(records: list[dict], methods: list[str]) -> str:
    """Training time of each method relative to ``finetune`` on the same (dataset, seed)."""
    import pandas as pd

    frame = pd.DataFrame([{k: r[k] for k in ("dataset", "method", "seed", "train_seconds")}
                          for r in records])
    base = frame[frame["method"] == BASELINE].set_index(["dataset", "seed"])["train_seconds"]
    lines = ["| method | mean training time (s) | × finetune (same dataset and seed) |",
             "|---|---|---|"]
    for m in methods:
        sub = frame[frame["method"] == m].set_index(["dataset", "seed"])["train_seconds"]
        ratio = (sub / base).dropna()
        lines.append(f"| {m} | {sub.mean():.0f} | "
                     f"{'–' if ratio.empty else f'{ratio.mean():.1f}×'} |")
    return "\n".join(lines)


def gradient_table(records: list[dict]) -> str:
    """How the auxiliary gradients relate to the target's (from the plain ``sum`` runs, whose
    update does not alter them) and the weights bi-level optimisation settles on."""
    rows: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in records:
        log = (r.get("gradient_log") or {}).get("tasks", {})
        for task, stats in log.items():
            if r["method"] == "sum":
                cell = rows.setdefault((r["dataset"], task), {})
                cell.setdefault("cos", []).append(stats["mean_cosine"])
                cell.setdefault("conflict", []).append(stats["conflict_fraction"])
            if r["method"] == "gns":  # min(1, |g_t| / |g_i|): how much larger the aux gradient is
                rows.setdefault((r["dataset"], task), {}).setdefault("gns", []).append(
                    stats["mean_coefficient"])
        for task, weight in (r.get("weights") or {}).items():
            cell = rows.setdefault((r["dataset"], task), {})
            cell.setdefault(r["method"], []).append(weight)
    if not rows:
        return ""

    def mean(values: list[float] | None, percent: bool = False) -> str:
        if not values:
            return "–"
        return f"{100 * np.mean(values):.0f}%" if percent else f"{np.mean(values):.2f}"

    lines = ["| dataset | auxiliary task | cosine to target (sum) | steps in conflict (sum) | "
             "GNS scale min(1, ‖g_t‖/‖g_i‖) (gns) | learned weight (blo) | "
             "learned weight (blo+rcgrad) |", "|---|---|---|---|---|---|---|"]
    for (dataset, task), cell in sorted(rows.items()):
        lines.append(f"| {dataset} | {task} | {mean(cell.get('cos'))} | "
                     f"{mean(cell.get('conflict'), percent=True)} | {mean(cell.get('gns'))} | "
                     f"{mean(cell.get('blo'))} | {mean(cell.get('blo+rcgrad'))} |")
    return "\n".join(lines)


def constant_predictor_loss(dataset: str) -> float:
    """The BCE of predicting each task's positive rate for every molecule (the loss of a model
    that learned nothing but the base rates), pooled over the present labels as the training
    loss is; rates from the whole file, which the 80% training split follows closely."""
    from moladapt.data.sources import load_dataset

    y = np.asarray(load_dataset(dataset).labels, dtype=float)
    present = ~np.isnan(y)
    rate = np.clip(np.nanmean(y, axis=0), 1e-6, 1 - 1e-6)
    entropy = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    return float((entropy * present.sum(axis=0)).sum() / present.sum())


def learning_table(records: list[dict], methods: list[str]) -> str:
    """Does the target learn at all? Each run's target training loss in its last epoch (from its
    metrics.json; bi-level runs keep no per-epoch target loss) over the loss of predicting the base
    rates: about 1 means nothing was learnt. Plus the atom-embedding spread where runs record it."""
    final: dict[tuple[str, str], list[float]] = {}
    spread: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        path = Path(r.get("_dir", "")) / "metrics.json"
        if "_dir" not in r or not path.exists():
            continue
        metrics = json.loads(path.read_text())
        epochs = (metrics.get("history") or {}).get("epochs") or []
        if epochs:
            final.setdefault((r["dataset"], r["method"]), []).append(epochs[-1]["train_loss"])
        if metrics.get("embedding_spread"):
            spread.setdefault(r["method"], []).append(
                (metrics["embedding_spread"][0], metrics["embedding_spread"][-1]))
    shown = [m for m in methods if any(k[1] == m for k in final)]
    out = []
    if shown:
        out += ["| dataset | base-rate loss | " + " | ".join(shown) + " |", "|---|---|" + "---|" * len(shown)]
        for dataset in dict.fromkeys(k[0] for k in final):
            base = constant_predictor_loss(dataset)
            cells = [f"{np.mean(final[(dataset, m)]) / base:.2f}" if (dataset, m) in final else "–"
                     for m in shown]
            out.append(f"| {dataset} | {base:.3f} | " + " | ".join(cells) + " |")
    if spread:
        out += ["", "| method | atom-embedding spread, before → after | runs |", "|---|---|---|"]
        out += [f"| {m} | {np.mean([a for a, _ in v]):.2f} → {np.mean([b for _, b in v]):.2f} | {len(v)} |"
                for m, v in spread.items()]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=None, help="comma-separated (default: TDC ADMET "
                        "classification sets + bbbp,bace,clintox)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--aux", default=DEFAULT_AUX, help="auxiliary objectives")
    parser.add_argument("--aux-recipe", action="append", default=[], metavar="OBJECTIVE=VERSION",
                        help="run an auxiliary objective under an earlier recipe (e.g. "
                             "edge_prediction=1, the plain dot product) to complete results of it")
    parser.add_argument("--init", default=None, help="pretrained encoder checkpoint, or bundled[:name] (optional)")
    parser.add_argument("--featurizer", default="basic")
    parser.add_argument("--encoder", default="gin")
    parser.add_argument("--hidden-dim", type=int, default=300)
    parser.add_argument("--num-layers", type=int, default=5)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--encoder-lr-scale", type=float, default=1.0)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--inner-steps", type=int, default=10, help="bi-level: steps per weight update")
    parser.add_argument("--metric", default="test_roc_auc", choices=("test_roc_auc", "test_auprc"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--note", default="", help="a paragraph for the report (setting, caveats)")
    parser.add_argument("--report-only", action="store_true", help="write the report from the "
                        "finished runs; start none")
    parser.add_argument("--output", default=None, help="write raw runs and the table here instead "
                        "of benchmarks/results (for smoke tests)")
    args = parser.parse_args()

    datasets = args.datasets.split(",") if args.datasets else default_datasets()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if args.output:
        root = Path(args.output)
        raw, table_path = root / "raw", root / "auxiliary.md"
    else:
        raw, table_path = RESULTS / "raw" / "auxiliary", RESULTS / "auxiliary.md"
    raw.mkdir(parents=True, exist_ok=True)
    init_given = args.init
    if args.init:
        from moladapt.bundled_models import resolve_init

        args.init = str(Path(resolve_init(args.init)).resolve())  # "bundled[:name]" or a path
    settings = {"featurizer": args.featurizer, "encoder": args.encoder, "hidden_dim": args.hidden_dim,
                "num_layers": args.num_layers, "dropout": args.dropout, "epochs": args.epochs,
                "batch_size": args.batch_size, "lr": args.lr, "patience": args.patience,
                "init": args.init, "encoder_lr_scale": args.encoder_lr_scale,
                "inner_steps": args.inner_steps,
                "aux": [a.strip() for a in args.aux.split(",") if a.strip()]}
    from moladapt.pretrain.objectives import changed_recipes

    # runs of a changed objective recipe must not pool with earlier ones (which keep their dirs)
    pins = {}
    for item in args.aux_recipe:
        name, _, version = item.partition("=")
        if not version.strip().isdigit():
            parser.error(f"--aux-recipe {item!r}: expected OBJECTIVE=VERSION, e.g. edge_prediction=1")
        pins[name.strip()] = int(version)
    try:
        recipes = changed_recipes(settings["aux"], pins)
    except (KeyError, ValueError) as exc:
        parser.error(f"--aux-recipe: {exc}")
    if recipes:
        settings["aux_recipes"] = recipes
    encoder_sha = init_sha256(settings)
    todo, stale = [], []
    for d in datasets:
        for s in (int(s) for s in args.seeds.split(",")):
            for m in methods:
                run_dir = raw / d / run_name(m, s, settings)
                if (run_dir / "summary.json").exists():
                    if other_encoder(json.loads((run_dir / "summary.json").read_text()), encoder_sha):
                        stale.append(str(run_dir))
                    continue
                if run_dir.exists():  # an interrupted run: start it again
                    shutil.rmtree(run_dir)
                todo.append((d, m, s))
    if stale:
        raise SystemExit(f"{len(stale)} stored run(s) started from another checkpoint than "
                         f"{settings['init']} holds now (its sha256 {encoder_sha[:12]}…); move them "
                         "away or use another --output:\n  " + "\n  ".join(stale[:10]))
    # Seed by seed (an interrupted benchmark leaves whole seeds), and the slowest methods first
    # within a seed so that the pool does not end on one long run with the other cores idle.
    if args.report_only:
        todo = []
    todo.sort(key=lambda run: (run[2], -relative_cost(run[1])))
    print(f"{len(todo)} runs to do ({args.jobs} processes)", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_one, d, m, s, settings, str(raw), encoder_sha): (d, m, s)
                   for d, m, s in todo}
        for fut in as_completed(futures):
            d, m, s = futures[fut]
            try:
                r = fut.result()
                print(f"{d} {m} seed {s}: test ROC-AUC {r['test_roc_auc']:.4f} "
                      f"({r['train_seconds']:.0f} s)", flush=True)
            except Exception as exc:  # noqa: BLE001 - report and go on with the other runs
                print(f"{d} {m} seed {s}: FAILED {exc!r}", flush=True)
    records = [json.loads(p.read_text()) | {"_dir": str(p.parent)} for p in sorted(raw.glob("*/*/summary.json"))]
    seeds = {int(s) for s in args.seeds.split(",")}
    records = [r for r in records if r["dataset"] in datasets and r["method"] in methods
               and r["seed"] in seeds and comparable(r["settings"]) == comparable(settings)]
    if not records:
        print("no finished runs")
        return
    init = f" --init {init_given}" if init_given else ""
    md = (f"# Fine-tuning with auxiliary tasks (Dey & Ning 2024 style)\n\n"
          f"Test {args.metric.removeprefix('test_')} (%) at the best validation epoch; "
          f"{args.encoder.upper()} {args.num_layers}×{args.hidden_dim}, `{args.featurizer}` "
          f"features, auxiliary objectives {', '.join(settings['aux'])}"
          + "".join(f" ({n}: recipe {v})" for n, v in settings.get("aux_recipes", {}).items())
          + "; encoder "
          f"{'from ' + Path(args.init).name if args.init else 'randomly initialised'}. "
          f"Date {dt.date.today()}, {platform.machine()} with {os.cpu_count()} cores, one "
          f"thread per run.\n\n" + (f"{args.note.strip()}\n\n" if args.note.strip() else "") +
          f"Command: `python benchmarks/auxiliary.py --datasets {','.join(datasets)} --methods "
          f"{','.join(methods)} --seeds {args.seeds} --epochs {args.epochs} --hidden-dim "
          f"{args.hidden_dim} --num-layers {args.num_layers} --aux {','.join(settings['aux'])}{init}"
          + "".join(f" --aux-recipe {r}" for r in args.aux_recipe) + "`\n\n"
          + table(records, args.metric, methods)
          + f"\n\nSeeds: {', '.join(str(s) for s in sorted({r['seed'] for r in records}))}. "
          f"Runs: {len(records)}.\n\n## Cost\n\n" + cost_table(records, methods)
          + "\n\n## Gradients and learned weights\n\nMean over seeds; cosine and conflict "
          "(cosine < 0) per step between each auxiliary gradient and the target gradient on the "
          "shared encoder, from the `sum` runs; the GNS scale (mean over steps, from the `gns` runs) "
          "is below 1 when the auxiliary gradient is longer than the target's; learned weights at "
          "the end of bi-level training."
          "\n\n" + gradient_table(records)
          + "\n\n## Does the target learn?\n\nThe target's training loss in the last epoch (mean "
          "over the epoch's batches of the masked BCE it is trained on), divided by the loss of "
          "predicting each task's base rate for every molecule; mean over seeds. About 1: the "
          "target learnt nothing beyond the base rates; below 1: it fits the training set. "
          "Bi-level runs keep no per-epoch target loss. Spread (runs that record it): the largest "
          "per-dimension standard deviation of the atom embeddings of 256 training molecules "
          "(about 0 would mean the encoder collapsed).\n\n"
          + learning_table(records, methods) + "\n")
    table_path.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
