"""The report directory from a synthetic results table: files, headline, table, plots."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest

from moladapt.evaluate.report import write_report

METHODS = ("base", "good", "same")


def _results(with_k: bool, n_seeds: int = 8) -> pd.DataFrame:
    """3 datasets × seeds (× k): "good" is 0.05 above "base" everywhere, "same" ≈ "base"."""
    rng = np.random.default_rng(0)
    rows = []
    for ds in ("bbbp", "tox21", "sider"):
        for k in (4, 8, 16) if with_k else (None,):
            for seed in range(n_seeds):
                base = rng.normal(0.7, 0.03)
                for method, offset in zip(METHODS, (0.0, 0.05, 0.0), strict=True):
                    row = {"method": method, "dataset": ds, "seed": seed}
                    if with_k:
                        row["k"] = k
                    row["featurizer"] = "ecfp" if seed % 2 else "rdkit"
                    row["roc_auc"] = base + offset + rng.normal(0, 0.005)
                    rows.append(row)
    return pd.DataFrame(rows)


def test_report_files_headline_and_table(tmp_path):
    df = _results(with_k=False, n_seeds=10)
    out = write_report(
        df, tmp_path / "rep", metric="roc_auc", baseline="base", title="Demo", n_boot=300
    )
    assert out == tmp_path / "rep"
    for name in ("report.md", "report.html", "bars.png", "cd_diagram.png", "differences.png",
                 "comparisons.csv"):
        assert (out / name).is_file(), name
    assert not (out / "roc_auc_vs_k.png").exists()  # no k column, no few-shot curve

    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    headline = "Best method on average: good (mean rank 1.00"
    # The answer is the first paragraph after the title, in both formats.
    assert md.split("\n\n")[1].startswith(headline)
    assert "significantly better than the baseline base on 3 of 3 datasets" in md
    assert page.index('<p class="answer">Best method on average: good') < page.index("<table>")

    # Markdown table: one row per method, best bolded, * where better than the baseline.
    table = md.split("## roc_auc")[1].split("\n\n")[1].splitlines()
    rows = [line for line in table[2:] if line.startswith("|")]
    assert [r.split("|")[1].strip() for r in rows] == ["base (baseline)", "good", "same"]
    good = rows[1]
    assert good.count("**") == 2 * 4 and good.count("\\*") == 3  # 3 datasets + mean rank bold

    # Self-contained HTML: every plot embedded, no external assets.
    assert page.count('src="data:image/png;base64,') == 3
    png = (out / "bars.png").read_bytes()
    assert base64.b64encode(png).decode() in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    comps = pd.read_csv(out / "comparisons.csv")
    assert len(comps) == 6 and set(comps.method) == {"good", "same"}


def test_fewshot_curve_and_heatmap(tmp_path):
    df = _results(with_k=True, n_seeds=6)
    out = write_report(df, tmp_path, heatmap=("featurizer", "k"), n_boot=300)
    for name in ("roc_auc_vs_k.png", "heatmap_featurizer_k.png", "cd_diagram.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 5
    md = (out / "report.md").read_text()
    assert "](roc_auc_vs_k.png)" in md and "](heatmap_featurizer_k.png)" in md
    # Default baseline: the first method of the table. Runs are paired on seed, k, featurizer.
    assert "base (baseline)" in md and "paired on seed, k, featurizer" in md


def test_too_few_seeds_is_said_not_starred(tmp_path):
    df = _results(with_k=False, n_seeds=4)
    md = (write_report(df, tmp_path, baseline="base", n_boot=300) / "report.md").read_text()
    assert "on 0 of 3 datasets" in md
    assert "6 of 6 comparisons had too few paired runs" in md
    assert "too few pairs (n=4" in md


def test_bad_input_is_rejected(tmp_path):
    df = _results(with_k=False, n_seeds=3)
    with pytest.raises(ValueError, match="column 'auprc'"):
        write_report(df, tmp_path, metric="auprc")
    with pytest.raises(ValueError, match="baseline"):
        write_report(df, tmp_path, baseline="nope")
    with pytest.raises(ValueError, match="column 'encoder'"):
        write_report(df, tmp_path, heatmap=("featurizer", "encoder"))


def test_breakdown_shows_where_a_gain_holds(tmp_path):
    """A gain that exists with one featurizer only must show up in that column alone."""
    rng = np.random.default_rng(1)
    rows = []
    for ds in ("bbbp", "bace", "sider"):
        for featurizer in ("basic", "rich"):
            for seed in range(6):
                base = rng.normal(0.7, 0.03)
                gain = 0.04 if featurizer == "basic" else 0.0
                rows.append({"method": "none", "dataset": ds, "seed": seed,
                             "featurizer": featurizer, "roc_auc": base})
                rows.append({"method": "pretrained", "dataset": ds, "seed": seed,
                             "featurizer": featurizer,
                             "roc_auc": base + gain + rng.normal(0, 0.003)})
    out = write_report(pd.DataFrame(rows), tmp_path, baseline="none",
                       breakdown=("featurizer",), n_boot=300)
    md = (out / "report.md").read_text()
    section = md.split("## Gain over the baseline by featurizer")[1].split("\n## ")[0]
    header, _, row = [line for line in section.splitlines() if line.startswith("|")][:3]
    assert "featurizer = basic" in header and "featurizer = rich" in header
    basic, rich = [c.strip() for c in row.split("|")[2:4]]
    assert basic.startswith("**+0.04") and "\\*" in basic and "(18)" in basic  # 3 datasets × 6 seeds
    assert "\\*" not in rich and "†" not in rich and "(18)" in rich
    assert "Gain over the baseline by featurizer" in (out / "report.html").read_text()
    table = pd.read_csv(out / "breakdown.csv")
    assert set(table["value"]) == {"basic", "rich"} and table["n_pairs"].tolist() == [18, 18]
    with pytest.raises(ValueError, match="split"):
        write_report(pd.DataFrame(rows), tmp_path, breakdown=("split",))


def test_forest_plot_marks_what_the_tests_support():
    from moladapt.evaluate.report import forest_plot
    from moladapt.evaluate.statistics import paired_comparisons

    df = _results(with_k=False, n_seeds=10)
    comps = paired_comparisons(df, "roc_auc", "base", unit_cols=["dataset", "seed"], by="dataset", n_boot=200)
    png = forest_plot(comps, label_cols=("dataset", "method"), title="t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # rows without a CI (one pair) still plot: the point alone
    one = comps.head(1).assign(ci_low=float("nan"), ci_high=float("nan"), significant=False)
    assert forest_plot(one)[:8] == b"\x89PNG\r\n\x1a\n"
