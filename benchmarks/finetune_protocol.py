"""The fine-tuning protocol shared by the MoleculeNet benchmarks (no pretraining, pretrained).

Hu et al. (ICLR 2020) fine-tune GIN 5×300 on the scaffold split with batch 32, Adam 1e-3 and
dropout 0.5 for 100 epochs and report the test ROC-AUC of the last epoch. One run here records
both that figure and the test ROC-AUC at the epoch of best validation ROC-AUC (moladapt's own
selection); the test part is scored every epoch and never steers training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def run_name(dataset: str, seed: int, epochs: int, patience: int | None) -> str:
    """Run folder name; the budget is part of it so runs with different budgets never mix."""
    return f"{dataset}_seed{seed}_e{epochs}" + (f"_p{patience}" if patience is not None else "")


def truncated_record(run_dir: str | Path, epochs: int) -> dict | None:
    """The summary of an E-epoch run read off the first ``epochs`` epochs of a longer one.

    Sound because nothing in a fine-tuning run depends on its total number of epochs (constant
    learning rate, no schedule, selection on the best validation epoch so far): epoch ``e`` of a
    100-epoch run is a draw of epoch ``e`` of a 50-epoch run. It is not the same draw bit for
    bit when the runs are on different machines (floating-point order), so such a record says
    where it came from (``truncated_from``). ``None`` when the run is shorter, has no
    per-epoch test metric (``track_test``) or stopped early.
    """
    run_dir = Path(run_dir)
    summary_path, metrics_path = run_dir / "summary.json", run_dir / "metrics.json"
    if not (summary_path.exists() and metrics_path.exists()):
        return None
    summary = json.loads(summary_path.read_text())
    history = json.loads(metrics_path.read_text())["history"]["epochs"][:epochs]
    if summary.get("patience") is not None or len(history) < epochs or any(
            "test" not in (h.get("monitored") or {}) for h in history):
        return None
    # the first best epoch, as the Trainer keeps it (strict improvement)
    best = max(range(len(history)), key=lambda e: (history[e]["valid_metric"], -e))
    return {**summary, "epochs": epochs, "epochs_run": epochs, "best_epoch": best,
            "test_roc_auc": history[best]["monitored"]["test"],
            "test_roc_auc_last_epoch": history[-1]["monitored"]["test"],
            "valid_roc_auc": history[best]["valid_metric"],
            "train_seconds": sum(h["seconds"] for h in history),
            "truncated_from": str(run_dir)}


def finetune_record(dataset: str, seed: int, featurizer: str, epochs: int, patience: int | None,
                    out_dir: str | Path, init: str | None = None, hidden_dim: int = 300,
                    num_layers: int = 5, **extra) -> dict:
    """Train one (dataset, seed) in this process on one thread; write and return summary.json."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from moladapt.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from moladapt.experiment import run_training

    cfg = RunConfig(data=DataConfig(dataset=dataset, split="scaffold", featurizer=featurizer),
                    model=ModelConfig(encoder="gin", hidden_dim=hidden_dim, num_layers=num_layers,
                                      dropout=0.5),
                    train=TrainConfig(epochs=epochs, batch_size=32, lr=1e-3, seed=seed,
                                      patience=patience, num_threads=1, track_test=True, init=init))
    out = Path(out_dir)
    result = run_training(cfg, out, progress=False, log=lambda m: None)
    history = json.loads((out / "metrics.json").read_text())["history"]["epochs"]
    record = {**extra, "dataset": dataset, "seed": seed, "featurizer": featurizer,
              "epochs": epochs, "patience": patience, "init": init,
              "hidden_dim": hidden_dim, "num_layers": num_layers,
              "test_roc_auc": result.test.mean["roc_auc"],
              "test_roc_auc_last_epoch": history[-1]["monitored"]["test"],
              "valid_roc_auc": result.valid.mean["roc_auc"], "best_epoch": result.best_epoch,
              "epochs_run": len(history),
              "tasks_scored": result.test.n_tasks_scored, "tasks_skipped": len(result.test.skipped),
              "train_seconds": result.train_seconds, "mol_per_s": result.molecules_per_second}
    (out / "summary.json").write_text(json.dumps(record, indent=2))
    (out / "model.pt").unlink(missing_ok=True)  # keep results, not 7 MB of weights per run
    return record
