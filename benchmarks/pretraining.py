"""Does pretraining help? Each objective pretrained once, fine-tuned on six MoleculeNet sets.

Objectives (Hu et al., ICLR 2020): ``attribute_masking``, ``context_prediction``,
``edge_prediction``, ``infomax``, ``graphcl`` (self-supervised, on the first
``--corpus-size`` molecules of MOSES train, ``--pretrain-epochs`` epochs), ``supervised``
(multi-task BCE on ToxCast labels) and ``supervised+best``: the best self-supervised
objective (highest mean *validation* ROC-AUC over the datasets, so the test sets do not pick
it), then supervised on ToxCast, the order of Hu et al. GIN 5×300, ``basic`` features,
batch 256, Adam 1e-3, dropout 0 while pretraining (:mod:`moladapt.study.pretrain_runner`).

Fine-tuning: the protocol of ``benchmarks/moleculenet.py`` (``finetune_protocol.py``:
scaffold split 80/10/10, batch 32, Adam 1e-3, dropout 0.5, ``--epochs``; the headline is the
test ROC-AUC after the last epoch, as Hu et al. report it, and the best-validation epoch's is
tabled too; with ``--patience`` the best-validation figure is the headline), on BBBP, Tox21,
ToxCast, SIDER, ClinTox, BACE × ``--seeds``. The no-pretraining row reuses
``benchmarks/results/raw/moleculenet_<featurizer>/<d>_seed<k>_e<epochs>`` when its budget
and the model (5×300) match; otherwise it is run here. ``--pretrain-precision bf16`` pretrains
under bfloat16 autocast (1.8–2.5× faster per objective on a CPU with AMX-BF16, see
``results/pretrain_speed.md``); fine-tuning always runs in fp32, as the
baseline did.

Statistics: per objective, the paired difference (objective − none) over the dataset × seed
pairs, with a percentile-bootstrap CI and the Wilcoxon signed-rank test, Holm-adjusted over
the objectives (:func:`moladapt.evaluate.statistics.paired_comparisons`). ToxCast (and
Tox21, whose assays ToxCast contains) are left out of the pairs of the supervised
objectives: their pretraining saw those molecules' labels, test set included (marked † in
the table).

Everything resumes: encoders are built once per configuration under ``--checkpoint-dir``
(``pretrained/<hash>/last.pt`` after every epoch), each finished fine-tuning run writes
``<raw>/<objective>/<dataset>_seed<k>_e<epochs>/summary.json`` and is skipped next time. ``--jobs``
single-threaded processes run in parallel (first the pretrainings, then the fine-tunings).

    MOLADAPT_DATA_DIR=../shared/data python benchmarks/pretraining.py --jobs 2 \
        --corpus-size 50000 --pretrain-epochs 10 --seeds 0,1,2
    # corpus-size curve for one objective (adds a section to pretraining.md; the point at
    # --corpus-size reuses the table's runs of that objective: same encoder, same hash)
    MOLADAPT_DATA_DIR=../shared/data python benchmarks/pretraining.py --jobs 2 \
        --corpus-sizes 10000,50000,200000 --curve-objective attribute_masking --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from finetune_protocol import finetune_record, run_name, truncated_record

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
SSL = ["attribute_masking", "context_prediction", "edge_prediction", "infomax", "graphcl"]
ALL = [*SSL, "supervised", "supervised+best"]
DATASETS = "bbbp,tox21,toxcast,sider,clintox,bace"
LEAKY = {"toxcast", "tox21"}  # labels seen by supervised pretraining on toxcast


def objective_spec(key: str, best: str | None, epochs: int) -> str:
    """The pretrain_runner objective string of a benchmark row."""
    if key == "supervised+best":
        if best is None:
            raise ValueError("supervised+best needs the best self-supervised objective")
        return f"{best}:{epochs},supervised:{epochs}"
    return key


def pretrain_config(args, spec: str, corpus_size: int) -> dict:
    from moladapt.study.pretrain_runner import resolve

    return resolve({
        "data": {"dataset": "bbbp", "featurizer": args.featurizer},
        "model": {"encoder": "gin", "hidden_dim": args.hidden_dim, "num_layers": args.num_layers},
        "train": {},
        "pretrain": {"objective": spec, "corpus": args.corpus, "corpus_size": corpus_size,
                     "labels_dataset": args.labels_dataset, "epochs": args.pretrain_epochs,
                     "batch_size": args.pretrain_batch_size, "lr": 1e-3, "seed": 0,
                     "precision": args.pretrain_precision},
    })


def pretrain_one(config: dict, checkpoint_dir: str) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from moladapt.study.pretrain_runner import ensure_pretrained

    built = ensure_pretrained(config, checkpoint_dir)
    collapsed = built.summary["collapsed"] if "collapsed" in built.summary else _collapse_check(built, config)
    return {"hash": built.hash, "encoder": str(built.encoder_path), "seconds": built.seconds,
            "final_loss": built.summary.get("final_loss"), "collapsed": collapsed,
            "source": built.summary.get("source"), "built_on": built.summary.get("built_on")}


def _collapse_check(built, config: dict) -> int | str | None:
    """For an encoder built before pretraining checked for collapse: measure it now on the
    first 256 corpus molecules (None = not collapsed; the epoch is unknown)."""
    import pandas as pd

    from moladapt.pretrain.corpus import resolve_corpus
    from moladapt.pretrain.trainer import COLLAPSE_SPREAD, embedding_spread
    from moladapt.training import load_checkpoint

    loaded = load_checkpoint(built.encoder_path)
    if config["pretrain"]["objective"].startswith("supervised"):
        from moladapt.data.sources import load_dataset

        smiles = list(load_dataset(config["pretrain"]["labels_dataset"]).smiles[:256])
    else:
        path, column = resolve_corpus(config["pretrain"]["corpus"])
        frame = pd.read_csv(path, nrows=256)
        smiles = frame[column or frame.columns[0]].astype(str).tolist()
    graphs = loaded.featurizer.featurize(smiles)
    spread = embedding_spread(loaded.model.encoder, graphs.collate(list(range(len(graphs)))))
    return "yes (checked after pretraining)" if spread < COLLAPSE_SPREAD else None


def record_pretraining(directory: Path, built: dict) -> None:
    """Keep what building the encoder cost beside its fine-tuning runs (the checkpoint directory
    is not part of the results)."""
    from moladapt.utils import atomic_write_text

    directory.mkdir(parents=True, exist_ok=True)
    info = {"hash": built["hash"], "seconds": built["seconds"], "final_loss": built["final_loss"],
            "collapsed": built.get("collapsed"), "cpu": _cpu_model(),
            "date": built.get("built_on") or str(dt.date.today())}
    if built.get("source"):  # copied from the bundled file: its build's cost, not a copy's
        info["source"] = built["source"]
    atomic_write_text(directory / "pretrain.json", json.dumps(info, indent=2) + "\n")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def finetune_one(method: str, dataset: str, seed: int, init: str | None, args: dict, out_dir: str) -> dict:
    return finetune_record(dataset, seed, args["featurizer"], args["epochs"], args["patience"], out_dir,
                           init=init, hidden_dim=args["hidden_dim"], num_layers=args["num_layers"],
                           method=method, corpus_size=args.get("corpus_size"))


def _run_pool(jobs: int, calls: list[tuple], label) -> list:
    out = []
    if not calls:
        return out
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(fn, *a): a for fn, *a in calls}
        for fut in as_completed(futures):
            try:
                r = fut.result()
                out.append(r)
                print(label(r), flush=True)
            except Exception as exc:  # noqa: BLE001 - report and go on with the other runs
                print(f"FAILED {futures[fut][:3]}: {exc!r}", flush=True)
    return out


def baseline_record(args, dataset: str, seed: int) -> dict | None:
    """The moleculenet.py run of (dataset, seed) if its protocol matches this benchmark's."""
    if (args.hidden_dim, args.num_layers) != (300, 5):
        return None
    p = args.baseline_dir / run_name(dataset, seed, args.epochs, args.patience) / "summary.json"
    if p.exists():
        r = json.loads(p.read_text())
        if (r.get("epochs"), r.get("patience"), r.get("featurizer")) == (args.epochs, args.patience,
                                                                         args.featurizer):
            return {**r, "method": "none", "reused_from": str(p)}
    if args.patience is not None:
        return None
    # a shorter budget: the first args.epochs epochs of the shortest longer run (no schedule)
    budgets = {}
    for q in args.baseline_dir.glob(f"{dataset}_seed{seed}_e*"):
        tail = q.name[len(f"{dataset}_seed{seed}_e"):]
        if tail.isdigit() and int(tail) > args.epochs:
            budgets[int(tail)] = q
    for n in sorted(budgets):
        r = truncated_record(budgets[n], args.epochs)
        if r is not None and r.get("featurizer") == args.featurizer:
            return {**r, "method": "none", "reused_from": r["truncated_from"]}
    return None


def load_records(raw: Path, args) -> list[dict]:
    """Finished fine-tuning runs of this budget (epochs, patience) under ``raw/<method>/``."""
    records = [json.loads(p.read_text()) for p in sorted(raw.glob("*/*/summary.json"))]
    return [r for r in records if (r["epochs"], r["patience"]) == (args.epochs, args.patience)]


def table_records(records: list[dict], datasets: list[str], seeds: list[int],
                  objectives: list[str]) -> list[dict]:
    """The runs the table shows: the named datasets, seeds and objectives, and the ``none``
    baseline every objective is compared with."""
    return [r for r in records if r["dataset"] in datasets and r["seed"] in seeds
            and (r["method"] == "none" or r["method"] in objectives)]


def finetune_calls(args, method: str, init: str | None, raw: Path, corpus_size: int | None = None) -> list:
    fargs = {"featurizer": args.featurizer, "hidden_dim": args.hidden_dim, "num_layers": args.num_layers,
             "epochs": args.epochs, "patience": args.patience, "corpus_size": corpus_size}
    return [(finetune_one, method, d, s, init, fargs, str(raw / method / _name(args, d, s)))
            for d in args.datasets for s in args.seeds
            if not (raw / method / _name(args, d, s) / "summary.json").exists()]


def _name(args, dataset: str, seed: int) -> str:
    return run_name(dataset, seed, args.epochs, args.patience)


def ft_label(r: dict) -> str:
    return (f"{r['method']} {r['dataset']} seed {r['seed']}: test ROC-AUC {r['test_roc_auc']:.4f} "
            f"({r['epochs_run']} epochs)")


def pt_label(r: dict) -> str:
    return f"pretrained {r['hash']} in {r['seconds']:.0f} s (final loss {r['final_loss']})"


def none_records(args, raw: Path) -> tuple[list[dict], list[tuple]]:
    """The no-pretraining runs: reused from moleculenet.py where possible, else to run here."""
    reused, todo = [], []
    for d in args.datasets:
        for s in args.seeds:
            r = baseline_record(args, d, s)
            if r is not None:
                reused.append(r)
            elif not (raw / "none" / _name(args, d, s) / "summary.json").exists():
                todo.append((d, s))
    fargs = {"featurizer": args.featurizer, "hidden_dim": args.hidden_dim, "num_layers": args.num_layers,
             "epochs": args.epochs, "patience": args.patience, "corpus_size": None}
    calls = [(finetune_one, "none", d, s, None, fargs, str(raw / "none" / _name(args, d, s)))
             for d, s in todo]
    return reused, calls


def best_ssl(records: list[dict], datasets: list[str]) -> str | None:
    """The self-supervised objective with the highest mean validation ROC-AUC (all datasets run)."""
    scores = {}
    for m in SSL:
        rs = [r for r in records if r["method"] == m and r["dataset"] in datasets]
        if rs and {r["dataset"] for r in rs} == set(datasets):
            scores[m] = float(np.mean([r["valid_roc_auc"] for r in rs]))
    return max(scores, key=scores.get) if scores else None


def _cell(vals: list[float]) -> str:
    if not vals:
        return "—"
    v = np.array(vals) * 100
    return f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0:.1f}"


def _metric_key(args) -> str:
    """Last epoch for a full budget (the paper's protocol), best validation epoch with patience."""
    return "test_roc_auc_last_epoch" if args.patience is None else "test_roc_auc"


def _metric_words(args) -> str:
    return (f"after the last of {args.epochs} epochs (Hu et al. read out the last epoch too, after 100)"
            if args.patience is None else "at the epoch of best validation ROC-AUC")


def _dataset_cells(records: list[dict], datasets: list[str], key: str, leaky: bool = False,
                   averages: tuple[list[str], ...] | None = None) -> list[str]:
    """One row's cells: mean ± std per dataset (``†`` where ``leaky`` and the dataset is in
    :data:`LEAKY`), then one average per dataset list in ``averages`` (default: all of
    ``datasets``; ``—`` unless every dataset of the list has runs; ``†`` when it averages a
    leaky cell)."""
    cells, means = [], {}
    for d in datasets:
        vals = [r[key] for r in records if r["dataset"] == d]
        cells.append(_cell(vals) + ("†" if leaky and d in LEAKY and vals else ""))
        if vals:
            means[d] = np.mean(vals) * 100
    for subset in averages or (datasets,):
        have = [means[d] for d in subset if d in means]
        mark = "†" if leaky and any(d in LEAKY for d in subset) else ""
        cells.append(f"{np.mean(have):.1f}{mark}" if have and len(have) == len(subset) else "—")
    return cells


def common_datasets(records: list[dict], methods: list[str], datasets: list[str]) -> list[str]:
    """The datasets on which every method has runs (the ground all rows share)."""
    present = {(r["method"], r["dataset"]) for r in records}
    return [d for d in datasets if all((m, d) in present for m in methods)]


def beyond_ground(records: list[dict], methods: list[str], datasets: list[str],
                  common: list[str]) -> dict[str, list[str]]:
    """Per objective (not ``none``) fine-tuned on more than the ``common`` datasets, every
    dataset it can be paired with ``none`` on (leaky datasets of the supervised objectives
    excluded, as in the statistics)."""
    present = {(r["method"], r["dataset"]) for r in records}
    out = {}
    for m in methods:
        on = [d for d in datasets if (m, d) in present and ("none", d) in present
              and not (m.startswith("supervised") and d in LEAKY)]
        if m != "none" and len(on) > len(common):
            out[m] = on
    return out


def _average_columns(datasets: list[str], common: list[str]) -> tuple[list[str], tuple[list[str], ...]]:
    """Header cells and dataset lists of a table's average columns: one over every dataset, and
    one over the ``common`` datasets when some rows lack runs on the others."""
    if common == datasets or not common:
        return ["average"], (datasets,)
    return [f"average ({', '.join(common)})", f"average (all {len(datasets)})"], (common, datasets)


def _table_rows(records: list[dict], methods: list[str], datasets: list[str], key: str,
                averages: tuple[list[str], ...] | None = None) -> list[str]:
    return [f"| {m} | " + " | ".join(_dataset_cells([r for r in records if r["method"] == m], datasets,
                                                    key, leaky=m.startswith("supervised"),
                                                    averages=averages)) + " |"
            for m in methods]


def _pretraining_costs(args, methods: list[str]) -> list[tuple[str, dict]]:
    raw = args.results_dir / "raw" / f"pretraining_{args.featurizer}"
    out = []
    for m in methods:
        p = raw / m / "pretrain.json"
        if p.exists():
            out.append((m, json.loads(p.read_text())))
        # A rebuild of the same configuration on another machine (its file names the runs that
        # fine-tuned it): bf16 pretraining is not bit-reproducible across CPUs, so it gets its own row.
        for rebuild in sorted((raw / m).glob("pretrain_rerun_*.json")):
            info = json.loads(rebuild.read_text())
            used = ", ".join(info.get("fine_tuned_on", []))
            label = f"{m} (rebuilt; used by its {used} runs)" if used else f"{m} (rebuilt)"
            out.append((label, {**info, "rebuild": True}))
    return out


def table_curve_records(args, raw: Path) -> list[dict]:
    """The table's runs of ``--curve-objective`` as the curve's ``--corpus-size`` point.

    They fine-tuned the very encoder that point would build (same pretraining hash, checked on
    each run's ``init``), so the curve reuses them instead of running them twice.
    """
    from moladapt.study.pretrain_runner import pretrain_hash

    n = args.corpus_size
    key = pretrain_hash(pretrain_config(args, args.curve_objective, n))
    return [{**r, "method": f"{args.curve_objective}@{n}", "corpus_size": n, "shared_with_table": True}
            for r in load_records(raw, args)
            if r["method"] == args.curve_objective and r.get("init") and Path(r["init"]).parent.name == key]


def curve_records(args, raw: Path, curve_raw: Path) -> list[dict]:
    """The curve's own runs plus the table's runs of the same encoder (see above)."""
    own = load_records(curve_raw, args) if curve_raw.exists() else []
    seen = {(r["corpus_size"], r["dataset"], r["seed"]) for r in own}
    shared = [r for r in table_curve_records(args, raw)
              if (r["corpus_size"], r["dataset"], r["seed"]) not in seen]
    return [r for r in own + shared if r["dataset"] in args.datasets and r["seed"] in args.seeds]


def _curve_figure(objective: str, sizes: list[int], stats: dict) -> bytes:
    """Paired gain over no pretraining (mean, 95% bootstrap CI) against corpus size (log axis)."""
    from matplotlib.figure import Figure

    from moladapt.evaluate.report import figure_png

    rows = [(n, stats[f"{n:,}"]) for n in sizes if f"{n:,}" in stats]
    xs = np.array([n for n, _ in rows], dtype=float)
    mean = np.array([c["mean_diff"] for _, c in rows])
    lo = np.array([c["ci_low"] for _, c in rows])
    hi = np.array([c["ci_high"] for _, c in rows])
    fig = Figure(figsize=(5.6, 3.6))
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.3", lw=1, label="no pretraining")
    ax.fill_between(xs, lo, hi, color="#3b6fd8", alpha=0.2, lw=0, label="95% bootstrap CI")
    ax.errorbar(xs, mean, yerr=[mean - lo, hi - mean], marker="o", color="#3b6fd8", capsize=3,
                label=f"{objective}: mean paired gain")
    for x, c in zip(xs, [c for _, c in rows], strict=True):
        if c["significant"]:
            ax.annotate("*", (x, c["mean_diff"]), textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=12)
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{int(x):,}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel("pretraining corpus size (molecules)")
    ax.set_ylabel("test ROC-AUC gain (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return figure_png(fig)


def _curve_section(args, records: list[dict], curve: list[dict], key: str) -> list[str]:
    """Downstream ROC-AUC per corpus size, with the paired gain over no pretraining."""
    import pandas as pd

    from moladapt.evaluate.statistics import paired_comparisons

    sizes = sorted({r["corpus_size"] for r in curve})
    # the table may hold the shared size's runs on datasets the curve never ran
    datasets = [d for d in args.datasets
                if all(any(r["corpus_size"] == n and r["dataset"] == d for r in curve) for n in sizes)]
    curve = [r for r in curve if r["dataset"] in datasets]
    if not curve:
        return []
    obj = curve[0]["method"].split("@")[0]
    none = [r for r in records if r["method"] == "none" and r["dataset"] in datasets]
    frame = pd.DataFrame([{"method": "none" if r["method"] == "none" else f"{r['corpus_size']:,}",
                           "dataset": r["dataset"], "seed": r["seed"], "roc_auc": r[key] * 100}
                          for r in none + curve])
    cmp = paired_comparisons(frame, "roc_auc", baseline="none", unit_cols=["dataset", "seed"])
    stats = {c["method"]: c for _, c in cmp.iterrows()}
    curve_raw = args.results_dir / "raw" / f"pretraining_curve_{args.featurizer}"
    table_raw = args.results_dir / "raw" / f"pretraining_{args.featurizer}"
    lines = [f"## Corpus-size curve: {obj}", "",
             f"Pretrained on the first N molecules of `{args.corpus}` for {args.pretrain_epochs} epochs "
             "(so a larger corpus also means proportionally more pretraining steps), fine-tuned as "
             f"above. Δ: paired mean gain over no pretraining (dataset × seed pairs), Wilcoxon p "
             "Holm-adjusted over the sizes.", "",
             "| corpus size | " + " | ".join(datasets) + " | average | Δ [95% CI] | Holm p | pretraining |",
             "|---|" + "---|" * (len(datasets) + 4)]
    rows = [("0 (none)", none, None)] + [(f"{n:,}", [r for r in curve if r["corpus_size"] == n], n)
                                         for n in sizes]
    for label, rs, n in rows:
        c = stats.get(label)
        delta = "" if c is None else f"{c['mean_diff']:+.2f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"
        holm = "" if c is None else f"{c['p_wilcoxon_holm']:.3g}"
        cost = ""
        if n is not None:
            shared = all(r.get("shared_with_table") for r in rs)
            p = (table_raw / obj if shared else curve_raw / f"{obj}@{n}") / "pretrain.json"
            cost = f"{json.loads(p.read_text())['seconds'] / 60:.0f} min" if p.exists() else "not recorded"
            if shared:
                cost += " (the table's run)"
        lines.append(f"| {label} | " + " | ".join(_dataset_cells(rs, datasets, key))
                     + f" | {delta} | {holm} | {cost} |")
    figure = args.results_dir / "pretraining_curve.png"
    figure.write_bytes(_curve_figure(obj, sizes, stats))
    lines += ["", f"![gain over no pretraining against corpus size]({figure.name})"]
    command = (f"--corpus-sizes {','.join(str(n) for n in sizes)} --curve-objective {obj} "
               f"--corpus-size {args.corpus_size} --datasets {','.join(datasets)} "
               f"--seeds {','.join(map(str, args.seeds))} --epochs {args.epochs} "
               f"--pretrain-epochs {args.pretrain_epochs} --pretrain-precision {args.pretrain_precision}"
               + (f" --patience {args.patience}" if args.patience else ""))
    lines += ["", "Command: `MOLADAPT_DATA_DIR=../shared/data python benchmarks/pretraining.py "
              f"{command} --jobs 2` (the {args.corpus_size:,} point is the table's {obj} row when its "
              "encoder matches, and is not run again).", ""]
    return lines


def _comparison_rows(cmp) -> list[str]:
    lines = ["| objective | pairs | mean Δ | 95% CI | Wilcoxon p | Holm p | significant | direction | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, c in cmp.iterrows():
        lines.append(f"| {c['method']} | {c['n_pairs']} | {c['mean_diff']:+.2f} | "
                     f"[{c['ci_low']:+.2f}, {c['ci_high']:+.2f}] | {c['p_wilcoxon']:.3g} | "
                     f"{c['p_wilcoxon_holm']:.3g} | {'yes' if c['significant'] else 'no'} | "
                     f"{c['direction']} | {c['note']} |")
    return lines


CURVE_ONLY = ("--corpus-sizes", "--curve-objective")  # curve mode; its section has its own command


def table_command(argv: list[str]) -> list[str]:
    """The arguments that produce the table's runs: ``argv`` less ``--report-only`` and the
    curve-mode options (with them the script runs the curve, not the table's objectives)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--report-only" or arg.split("=", 1)[0] in CURVE_ONLY:
            skip = arg in CURVE_ONLY  # "--opt value": drop the value too
        else:
            out.append(arg)
    return out


def stored_encoder_mismatches(args, raw: Path, curve_raw: Path) -> list[str]:
    """Objective folders whose stored encoder (``pretrain.json``'s hash) is not the one these
    settings (corpus, sizes, pretraining epochs and precision, labels, model, featurizer) build:
    their runs must not be resumed into, nor reported under, this command's settings."""
    from moladapt.study.pretrain_runner import pretrain_hash

    out = []
    for info in sorted(raw.glob("*/pretrain.json")) + sorted(curve_raw.glob("*/pretrain.json")):
        name = info.parent.name
        objective, _, size = name.partition("@")
        if objective == "supervised+best":
            best_file = info.parent / "best_ssl.txt"
            if not best_file.exists():
                continue
            spec = objective_spec(objective, best_file.read_text().strip(), args.pretrain_epochs)
        elif objective in ALL:
            spec = objective
        else:
            continue
        corpus_size = int(size) if size.isdigit() else args.corpus_size
        want = pretrain_hash(pretrain_config(args, spec, corpus_size))
        have = json.loads(info.read_text()).get("hash")
        if have != want:
            out.append(f"{info.parent}: its encoder is {have}; these settings build {want}")
    return out


def report(args, records: list[dict], curve: list[dict], best: str | None) -> str:
    import pandas as pd

    from moladapt.evaluate.statistics import paired_comparisons

    datasets = args.datasets
    methods = ["none", *[m for m in ALL if any(r["method"] == m for r in records)]]
    common = common_datasets(records, methods, datasets)
    avg_head, averages = _average_columns(datasets, common)
    lines = [f"# Pretraining: does it help? GIN {args.num_layers}×{args.hidden_dim}, `{args.featurizer}` "
             "features, scaffold split", "",
             f"Test ROC-AUC (%) {_metric_words(args)}, mean ± std over seeds "
             f"{','.join(map(str, args.seeds))}. Date {dt.date.today()}, {platform.machine()} with "
             f"{os.cpu_count()} cores, one thread per process.", "",
             f"Pretraining: first {args.corpus_size:,} molecules of `{args.corpus}`, {args.pretrain_epochs} "
             f"epochs, batch {args.pretrain_batch_size}, Adam 1e-3, {args.pretrain_precision}; "
             f"supervised: `{args.labels_dataset}` labels"
             + (f"; supervised+best = {best} then supervised (best by mean validation ROC-AUC)" if best else "")
             + f". Fine-tuning: batch 32, Adam 1e-3, dropout 0.5, {args.epochs} epochs"
             + (f", patience {args.patience}" if args.patience else "") + ".", "",
             "| objective | " + " | ".join([*datasets, *avg_head]) + " |",
             "|---|" + "---|" * (len(datasets) + len(avg_head))]
    key = _metric_key(args)
    lines += _table_rows(records, methods, datasets, key, averages)
    lines.append("")
    if len(averages) > 1:
        lines += [f"Not every objective was fine-tuned on {', '.join(d for d in datasets if d not in common)} "
                  "(a `—`): the first average column is the ground all rows share.", ""]
    if any(r["method"].startswith("supervised") and r["dataset"] in LEAKY for r in records):
        lines += ["† pretraining saw these molecules' labels (ToxCast, which includes the Tox21 "
                  "assays), test set included: left out of the statistics below; an average marked † "
                  "includes such cells, so it is not comparable with the unmarked ones.", ""]
    if key != "test_roc_auc":
        lines += ["The same runs, test ROC-AUC at the epoch of best validation ROC-AUC (the weights "
                  "moladapt keeps):", "", "| objective | " + " | ".join([*datasets, *avg_head]) + " |",
                  "|---|" + "---|" * (len(datasets) + len(avg_head)),
                  *_table_rows(records, methods, datasets, "test_roc_auc", averages), ""]

    def pairs_frame(on: list[str], among: list[str]) -> pd.DataFrame:
        return pd.DataFrame([{"method": r["method"], "dataset": r["dataset"], "seed": r["seed"],
                              "roc_auc": r[key] * 100} for r in records
                             if r["dataset"] in on and r["method"] in among
                             and not (r["method"].startswith("supervised") and r["dataset"] in LEAKY)])

    frame = pairs_frame(averages[0], methods)
    if len(methods) > 1 and not frame.empty:
        cmp = paired_comparisons(frame, "roc_auc", baseline="none", unit_cols=["dataset", "seed"])
        ground = "" if len(averages) == 1 else f" on {', '.join(common)}"
        lines += [f"## Paired comparison with no pretraining (dataset × seed pairs{ground})", "",
                  "Mean difference (objective − none, ROC-AUC points), 95% bootstrap CI, two-sided "
                  "Wilcoxon signed-rank p, Holm-adjusted over the objectives.", "",
                  *_comparison_rows(cmp), ""]
        wider = beyond_ground(records, methods, datasets, common)
        if len(averages) > 1 and wider:
            every = pairs_frame(datasets, ["none", *wider])
            spans = "; ".join(f"{m}: {'all ' + str(len(datasets)) if on == datasets else ', '.join(on)}"
                              for m, on in wider.items())
            lines += ["The objectives fine-tuned beyond that ground, each over every dataset it "
                      f"ran on ({spans}; Holm over these):", "",
                      *_comparison_rows(paired_comparisons(every, "roc_auc", baseline="none",
                                                           unit_cols=["dataset", "seed"])), ""]
        from moladapt.evaluate.report import forest_plot

        figure = args.results_dir / "pretraining_gain.png"
        figure.write_bytes(forest_plot(cmp, xlabel="test ROC-AUC points: objective − none",
                                       title=f"Gain over no pretraining ({len(averages[0])} datasets × "
                                             f"{len(args.seeds)} seeds, paired)"))
        lines += [f"![paired gain per objective, 95% CI; filled = significant after Holm]({figure.name})", ""]
    reused = sum(1 for r in records if r.get("reused_from"))
    if reused:
        truncated = sum(1 for r in records if r.get("truncated_from"))
        lines += [f"The no-pretraining row reuses {reused} run(s) of `benchmarks/moleculenet.py` "
                  f"(`{args.baseline_dir.relative_to(ROOT) if args.baseline_dir.is_relative_to(ROOT) else args.baseline_dir}`)"
                  + (f"; {truncated} of them are longer runs read at epoch {args.epochs} (the "
                     "learning rate is constant and selection only looks back, so the first "
                     f"{args.epochs} epochs of a longer run are a run of {args.epochs} epochs)"
                     if truncated else "") + ".", ""]
    if curve:
        lines += _curve_section(args, records, curve, key)
    costs = _pretraining_costs(args, methods)
    if costs:
        lines += ["## What pretraining cost", "",
                  "Wall time of building each encoder (one thread), as recorded beside its fine-tuning "
                  "runs; with `--jobs` > 1 other runs shared the cores, so read it as an upper bound.", "",
                  "| objective | pretraining wall time | final loss | collapsed | CPU | date |",
                  "|---|---|---|---|---|---|"]
        for m, c in costs:
            loss = c.get("final_loss")
            collapsed = "no" if c.get("collapsed") is None else f"at epoch {c['collapsed']}"
            built = " (the bundled encoder's build)" if str(c.get("source", "")).startswith("bundled") else ""
            lines.append(f"| {m} | {c['seconds'] / 60:.0f} min{built} | "
                         f"{'—' if loss is None else f'{loss:.4g}'} | {collapsed} | "
                         f"{c.get('cpu', '—')} | {c.get('date', '—')} |")
        if any(c.get("rebuild") for _, c in costs):
            lines.append("\nA rebuilt encoder has the first build's configuration (same hash), pretrained "
                         "again on another machine because the first checkpoint was not kept; bf16 "
                         "arithmetic differs between CPUs, so its final loss differs a little. The runs "
                         "named in its row fine-tuned the rebuild, the objective's other runs the first build.")
        missing = [m for m in methods if m != "none" and m not in dict(costs)]
        if missing:
            lines.append(f"\nNot recorded (built before costs were kept): {', '.join(missing)}.")
        lines.append("")
    lines += ["Command: `MOLADAPT_DATA_DIR=../shared/data python benchmarks/pretraining.py "
              + " ".join(table_command(args.argv)) + "`", ""]
    return "\n".join(lines)


def main() -> None:
    import sys

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objectives", default=",".join(ALL))
    parser.add_argument("--datasets", default=DATASETS)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--featurizer", default="basic")
    parser.add_argument("--corpus", default="moses_train")
    parser.add_argument("--corpus-size", type=int, default=50_000)
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--pretrain-batch-size", type=int, default=256)
    parser.add_argument("--pretrain-precision", default="fp32", choices=["fp32", "bf16"],
                        help="bf16 autocast while pretraining (fine-tuning stays fp32, as the baseline)")
    parser.add_argument("--labels-dataset", default="toxcast")
    parser.add_argument("--best-ssl", default="auto", help="objective before supervised in supervised+best, "
                        "or auto (best mean validation ROC-AUC)")
    parser.add_argument("--epochs", type=int, default=100, help="fine-tuning epochs")
    parser.add_argument("--patience", type=int, default=None, help="fine-tuning early stopping (as the "
                        "stored moleculenet_basic runs)")
    parser.add_argument("--hidden-dim", type=int, default=300)
    parser.add_argument("--num-layers", type=int, default=5)
    parser.add_argument("--corpus-sizes", default=None, help="corpus-size curve mode: e.g. 10000,50000,200000")
    parser.add_argument("--curve-objective", default="attribute_masking")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="pretraining.md and raw/ go here")
    parser.add_argument("--baseline-dir", type=Path, default=None,
                        help="moleculenet.py raw runs (default RESULTS/raw/moleculenet_<featurizer>)")
    parser.add_argument("--checkpoint-dir", type=Path, default=ROOT / "runs" / "pretraining_benchmark")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    args.datasets = [d.strip().lower() for d in args.datasets.split(",") if d.strip()]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if args.baseline_dir is None:
        args.baseline_dir = RESULTS / "raw" / f"moleculenet_{args.featurizer}"
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    unknown = sorted(set(objectives) - set(ALL))
    if unknown:
        raise SystemExit(f"unknown objective(s) {unknown}; choose from {ALL}")
    raw = args.results_dir / "raw" / f"pretraining_{args.featurizer}"
    curve_raw = args.results_dir / "raw" / f"pretraining_curve_{args.featurizer}"
    ckpt = str(args.checkpoint_dir)
    mismatched = stored_encoder_mismatches(args, raw, curve_raw)
    if mismatched:
        raise SystemExit(f"{len(mismatched)} stored objective folder(s) hold runs of another "
                         "pretraining configuration; pass the settings they were run with "
                         "(--corpus-size, --pretrain-epochs, --pretrain-precision, --labels-dataset, "
                         "--hidden-dim, --num-layers, --featurizer) or another --results-dir:\n  "
                         + "\n  ".join(mismatched))
    reused, none_calls = none_records(args, raw)

    if args.corpus_sizes and not args.report_only:
        sizes = [int(n) for n in args.corpus_sizes.split(",")]
        configs = {n: pretrain_config(args, args.curve_objective, n) for n in sizes}
        covered = {(r["corpus_size"], r["dataset"], r["seed"]) for r in table_curve_records(args, raw)}
        todo = [n for n in sizes
                if any((n, d, s) not in covered for d in args.datasets for s in args.seeds)]
        _run_pool(args.jobs, [(pretrain_one, configs[n], ckpt) for n in todo], pt_label)
        calls = list(none_calls)
        for n in todo:
            built = pretrain_one(configs[n], ckpt)  # done: returns at once
            method = f"{args.curve_objective}@{n}"
            record_pretraining(curve_raw / method, built)
            calls += [c for c in finetune_calls(args, method, built["encoder"], curve_raw, corpus_size=n)
                      if (n, c[2], c[3]) not in covered]
        _run_pool(args.jobs, calls, ft_label)
        none_calls = []
    elif not args.report_only:
        first = [o for o in objectives if o != "supervised+best"]
        configs = {o: pretrain_config(args, objective_spec(o, None, args.pretrain_epochs), args.corpus_size)
                   for o in first}
        print(f"pretraining {len(configs)} encoder(s), then fine-tuning ({args.jobs} processes)", flush=True)
        _run_pool(args.jobs, [(pretrain_one, c, ckpt) for c in configs.values()], pt_label)
        calls = list(none_calls)
        for o in first:
            built = pretrain_one(configs[o], ckpt)  # done: returns at once
            record_pretraining(raw / o, built)
            calls += finetune_calls(args, o, built["encoder"], raw)
        _run_pool(args.jobs, calls, ft_label)
        none_calls = []
        if "supervised+best" in objectives:
            best = (best_ssl(load_records(raw, args), args.datasets) if args.best_ssl == "auto" else args.best_ssl)
            if best is None:
                print("supervised+best: no self-supervised objective finished on every dataset; skipped")
            else:
                cfg = pretrain_config(args, objective_spec("supervised+best", best, args.pretrain_epochs),
                                      args.corpus_size)
                built = pretrain_one(cfg, ckpt)
                record_pretraining(raw / "supervised+best", built)
                _run_pool(args.jobs, finetune_calls(args, "supervised+best", built["encoder"], raw), ft_label)
                (raw / "supervised+best" / "best_ssl.txt").write_text(best + "\n")

    records = reused + load_records(raw, args) if raw.exists() else list(reused)
    records = table_records(records, args.datasets, args.seeds, objectives)
    curve = curve_records(args, raw, curve_raw) if curve_raw.exists() else []
    best_file = raw / "supervised+best" / "best_ssl.txt"
    best = best_file.read_text().strip() if best_file.exists() else None
    md = report(args, records, curve, best)
    out = args.results_dir / "pretraining.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
