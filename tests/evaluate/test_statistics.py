"""Paired tests, Holm correction and Friedman/Nemenyi against hand-worked values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from moladapt.evaluate.statistics import (
    COMPARISON_COLUMNS,
    FriedmanResult,
    bootstrap_mean_ci,
    friedman_nemenyi,
    holm_bonferroni,
    paired_comparisons,
)


def _table(scores: dict[str, np.ndarray], dataset: str = "d") -> pd.DataFrame:
    """Tidy table: one row per (seed, method) with the given per-seed scores."""
    rows = [
        {"dataset": dataset, "seed": s, "method": m, "roc_auc": float(v)}
        for m, values in scores.items()
        for s, v in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_holm_hand_worked():
    # Sorted p: 0.01, 0.02, 0.03, 0.04 (m = 4) → ×4, ×3, ×2, ×1 = 0.04, 0.06, 0.06, 0.04;
    # running max → 0.04, 0.06, 0.06, 0.06. Returned in the input order.
    adj = holm_bonferroni([0.03, 0.01, 0.04, 0.02])
    np.testing.assert_allclose(adj, [0.06, 0.04, 0.06, 0.06])


def test_holm_nan_aware_and_capped():
    # NaN is not in the family (m = 2): 0.01·2 = 0.02, max(0.02, 0.6·1) = 0.6.
    adj = holm_bonferroni([np.nan, 0.6, 0.01])
    assert math.isnan(adj[0])
    np.testing.assert_allclose(adj[1:], [0.6, 0.02])
    np.testing.assert_allclose(holm_bonferroni([0.5, 0.6, 0.9]), [1.0, 1.0, 1.0])
    assert np.isnan(holm_bonferroni([np.nan, np.nan])).all()
    with pytest.raises(ValueError):
        holm_bonferroni([1.5])


def test_holm_monotone_in_raw_p():
    p = np.random.default_rng(0).uniform(size=30) ** 3
    adj = holm_bonferroni(p)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0) and np.all(adj >= p) and np.all(adj <= 1)


def test_pvalues_equal_scipy():
    rng = np.random.default_rng(1)
    base = rng.normal(0.7, 0.05, size=12)
    new = base + rng.normal(0.01, 0.02, size=12)
    res = paired_comparisons(_table({"base": base, "new": new}), "roc_auc", baseline="base")
    assert list(res.columns) == list(COMPARISON_COLUMNS)
    row = res.iloc[0]
    assert (row["method"], row["baseline"], row["n_pairs"]) == ("new", "base", 12)
    assert row["mean_diff"] == pytest.approx(np.mean(new - base))
    assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(new - base).pvalue)
    assert row["p_ttest"] == pytest.approx(stats.ttest_rel(new, base).pvalue)
    # A family of one: Holm leaves the p-value as it is.
    assert row["p_wilcoxon_holm"] == pytest.approx(row["p_wilcoxon"])


def test_better_is_significant_identical_is_not():
    rng = np.random.default_rng(2)
    base = rng.normal(0.7, 0.05, size=15)
    scores = {"base": base, "better": base + 0.05 + rng.normal(0, 0.005, 15), "same": base.copy()}
    res = paired_comparisons(_table(scores), "roc_auc", baseline="base").set_index("method")
    assert res.loc["better", "significant"] and res.loc["better", "direction"] == "better"
    assert res.loc["better", "p_wilcoxon_holm"] < 0.05
    same = res.loc["same"]
    assert not same["significant"]
    assert same["p_wilcoxon"] == 1.0 and same["p_ttest"] == 1.0
    assert "differences are zero" in same["note"] and same["mean_diff"] == 0.0


def test_lower_is_better_flips_direction_not_sign():
    base = np.linspace(1.0, 2.0, 8)
    res = paired_comparisons(
        _table({"base": base, "new": base - 0.3}), "roc_auc", "base", higher_is_better=False
    )
    assert res.loc[0, "mean_diff"] == pytest.approx(-0.3)
    assert res.loc[0, "direction"] == "better"


def test_wilcoxon_direction_follows_the_typical_unit_not_the_mean():
    """15 of 16 units gain ~0.01, one loses 0.3: the rank test is significant, the mean is
    negative; the verdict must not read 'significantly worse'."""
    d = np.r_[np.full(15, 0.01) + np.arange(15) * 1e-4, -0.3]
    base = np.linspace(0.6, 0.8, 16)
    row = paired_comparisons(_table({"b": base, "a": base + d}), "roc_auc", "b").iloc[0]
    assert row["significant"] and row["mean_diff"] < 0 < row["median_shift"]
    assert row["direction"] == "better" and "the mean difference has the other sign" in row["note"]
    by_t = paired_comparisons(_table({"b": base, "a": base + d}), "roc_auc", "b", test="ttest").iloc[0]
    assert by_t["direction"] == "worse"  # the t-test is about the mean


def test_differences_equal_up_to_rounding_tie():
    a = np.array([0.80, 0.63, 0.91, 0.55, 0.72, 0.68])
    b = np.array([0.70, 0.73, 0.80, 0.50, 0.70, 0.60])  # +0.1 and -0.1 tie in |d|
    row = paired_comparisons(_table({"b": b, "a": a}), "roc_auc", "b").iloc[0]
    assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(np.round(a - b, 12)).pvalue)
    const = paired_comparisons(_table({"b": b, "a": b + 0.1}), "roc_auc", "b").iloc[0]
    assert "differences are constant" in const["note"]


def test_too_few_pairs_gives_nan_and_note():
    res = paired_comparisons(
        _table({"base": [0.7, 0.6, 0.8, 0.75], "new": [0.8, 0.7, 0.9, 0.8]}), "roc_auc", "base"
    ).iloc[0]
    assert res["n_pairs"] == 4
    assert math.isnan(res["p_wilcoxon"]) and math.isnan(res["p_wilcoxon_holm"])
    assert not math.isnan(res["p_ttest"])  # t needs only 3
    assert "too few pairs (n=4" in res["note"] and not res["significant"]
    two = paired_comparisons(_table({"a": [0.1, 0.2], "b": [0.3, 0.5]}), "roc_auc").iloc[0]
    assert math.isnan(two["p_wilcoxon"]) and math.isnan(two["p_ttest"])
    assert "too few pairs (n=2" in two["note"]


def test_pairs_only_on_matched_units_and_duplicates_rejected():
    df = _table({"base": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "new": [0.2, 0.3, 0.4, 0.5, 0.6, 0.8]})
    df.loc[(df.method == "new") & (df.seed == 0), "roc_auc"] = np.nan
    df = df[~((df.method == "base") & (df.seed == 5))]
    assert paired_comparisons(df, "roc_auc", "base").loc[0, "n_pairs"] == 4
    with pytest.raises(ValueError, match="ambiguous"):
        paired_comparisons(pd.concat([df, df]), "roc_auc", "base")
    with pytest.raises(ValueError, match="baseline"):
        paired_comparisons(df, "roc_auc", "nope")


def test_all_pairs_and_by_groups_share_one_holm_family():
    rng = np.random.default_rng(3)
    parts = []
    for ds in ("a", "b"):
        base = rng.normal(0.7, 0.05, size=10)
        parts.append(
            _table({"x": base, "y": base + 0.02 + rng.normal(0, 0.01, 10), "z": base + 0.01}, ds)
        )
    df = pd.concat(parts, ignore_index=True)
    pairs = paired_comparisons(df, "roc_auc")
    assert list(zip(pairs.method, pairs.baseline, strict=True)) == [
        ("x", "y"),
        ("x", "z"),
        ("y", "z"),
    ]
    assert (pairs.n_pairs == 20).all()
    by = paired_comparisons(df, "roc_auc", "x", by="dataset")
    assert list(by.columns[:3]) == ["dataset", "method", "baseline"] and len(by) == 4
    np.testing.assert_allclose(by.p_wilcoxon_holm, holm_bonferroni(by.p_wilcoxon))


def test_bootstrap_ci_covers_truth_and_is_seeded():
    rng = np.random.default_rng(4)
    base = rng.normal(0.7, 0.05, size=40)
    new = base + 0.03 + rng.normal(0, 0.01, size=40)
    df = _table({"base": base, "new": new})
    a = paired_comparisons(df, "roc_auc", "base", n_boot=2000, seed=7).iloc[0]
    b = paired_comparisons(df, "roc_auc", "base", n_boot=2000, seed=7).iloc[0]
    c = paired_comparisons(df, "roc_auc", "base", n_boot=2000, seed=8).iloc[0]
    assert a["ci_low"] < 0.03 < a["ci_high"]
    assert a["ci_low"] < a["mean_diff"] < a["ci_high"]
    assert (a["ci_low"], a["ci_high"]) == (b["ci_low"], b["ci_high"])
    assert (a["ci_low"], a["ci_high"]) != (c["ci_low"], c["ci_high"])
    assert np.isnan(bootstrap_mean_ci(np.array([1.0]), n_boot=100)).all()  # n < 3: no CI
    assert np.isnan(bootstrap_mean_ci(np.array([1.0, 2.0]), n_boot=100)).all()  # only their range


def test_friedman_average_ranks_hand_example():
    # Higher is better. Block 1: A > B > C → ranks 1, 2, 3. Block 2: B > A = C → 2.5, 1, 2.5.
    # Block 3: A > C > B → 1, 3, 2. Averages: A = 4.5/3 = 1.5, B = 2, C = 7.5/3 = 2.5.
    df = pd.DataFrame(
        {
            "dataset": ["d1"] * 3 + ["d2"] * 3 + ["d3"] * 3,
            "method": ["A", "B", "C"] * 3,
            "roc_auc": [0.9, 0.8, 0.7, 0.6, 0.7, 0.6, 0.9, 0.5, 0.6],
        }
    )
    res = friedman_nemenyi(df, "roc_auc", ["dataset"])
    assert isinstance(res, FriedmanResult)
    assert res.avg_ranks == pytest.approx({"A": 1.5, "B": 2.0, "C": 2.5})
    assert res.methods == ("A", "B", "C") and res.n_blocks == 3
    expected = stats.friedmanchisquare([0.9, 0.6, 0.9], [0.8, 0.7, 0.5], [0.7, 0.6, 0.6])
    assert res.statistic == pytest.approx(expected.statistic)
    assert res.pvalue == pytest.approx(expected.pvalue)
    # Lower is better reverses the ranks.
    low = friedman_nemenyi(df, "roc_auc", ["dataset"], higher_is_better=False)
    assert low.avg_ranks == pytest.approx({"A": 2.5, "B": 2.0, "C": 1.5})


def test_nemenyi_cd_matches_demsar_table():
    # Demšar (2006), Table 5(a): q_0.05 = 2.569 for k = 4; N = 10 → CD = 2.569·sqrt(20/60).
    rng = np.random.default_rng(5)
    df = pd.DataFrame(
        [
            {"dataset": d, "method": m, "roc_auc": rng.uniform()}
            for d in range(10)
            for m in ("A", "B", "C", "D")
        ]
    )
    res = friedman_nemenyi(df, "roc_auc", ["dataset"])
    assert res.q_alpha == pytest.approx(2.569, abs=5e-4)
    assert res.cd == pytest.approx(1.483, abs=1e-3)
    p = res.nemenyi_p
    assert p.shape == (4, 4) and np.allclose(np.diag(p), 1.0) and np.allclose(p, p.T)


def test_nemenyi_p_is_alpha_at_the_critical_difference():
    # Two methods exactly CD apart in average rank have Nemenyi p = alpha.
    df = pd.DataFrame(
        [
            {"dataset": d, "method": m, "roc_auc": v}
            for d in range(10)
            for m, v in zip("ABCD", (4, 3, 2, 1), strict=True)
        ]
    )
    res = friedman_nemenyi(df, "roc_auc", ["dataset"])
    se = math.sqrt(4 * 5 / 60)
    z = res.cd / se
    assert stats.studentized_range.sf(z * math.sqrt(2), 4, np.inf) == pytest.approx(0.05, abs=1e-4)
    # Ranks 1, 2, 3, 4 with CD ≈ 1.48: A–B, B–C, C–D are joined, A–C (2 apart) is not.
    assert res.cliques() == [("A", "B"), ("B", "C"), ("C", "D")]
    assert res.nemenyi_p.loc["A", "D"] < 0.05 < res.nemenyi_p.loc["A", "B"]


def test_friedman_needs_three_methods_and_two_blocks():
    two = pd.DataFrame({"dataset": [1, 1, 2, 2], "method": ["A", "B"] * 2, "roc_auc": [1, 2, 3, 1]})
    res = friedman_nemenyi(two, "roc_auc", ["dataset"])
    assert math.isnan(res.statistic) and math.isnan(res.pvalue) and "needs >= 3" in res.note
    one = pd.DataFrame({"dataset": [1, 1, 1], "method": ["A", "B", "C"], "roc_auc": [1, 2, 3]})
    res = friedman_nemenyi(one, "roc_auc", ["dataset"])
    assert math.isnan(res.pvalue) and res.n_blocks == 1
    # An incomplete block is dropped, with a note.
    gap = pd.concat(
        [one, pd.DataFrame({"dataset": [2, 2], "method": ["A", "B"], "roc_auc": [1, 2]})]
    )
    assert "1 of 2 blocks dropped" in friedman_nemenyi(gap, "roc_auc", ["dataset"]).note
