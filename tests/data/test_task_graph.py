"""TaskGraph construction (edge lists, co-activity without leakage, ToxCast names) and Dense-N."""

import numpy as np
import pytest

from moladapt.data.dense import dense_subset, filtered_random_split
from moladapt.data.sources import DataError, LabeledData
from moladapt.data.splits import split_has_both_classes
from moladapt.data.task_graph import TaskGraph, toxcast_target_key

NAMES = ["a", "b", "c", "d"]


def test_edge_list_csv_and_tsv(tmp_path):
    f = tmp_path / "g.csv"
    f.write_text("task_a,task_b,weight\nb,a,0.5\nc,d,2\n")
    g = TaskGraph.from_edge_list(f, NAMES)
    assert g.edges.tolist() == [[0, 1], [2, 3]]
    assert g.weights.tolist() == [0.5, 2.0]
    t = tmp_path / "g.tsv"
    t.write_text("task_a\ttask_b\na\tc\n")
    g2 = TaskGraph.from_edge_list(t, NAMES)
    assert g2.edges.tolist() == [[0, 2]] and g2.weights.tolist() == [1.0]
    s = g.stats()
    assert s == {"nodes": 4, "edges": 2, "mean_degree": 1.0, "max_degree": 1,
                 "isolated_nodes": 0, "components": 2, "density": pytest.approx(2 / 6)}


@pytest.mark.parametrize(
    "body, match",
    [
        ("task_a,task_b\na,b\na,zzz\n", r"g\.csv: line 3: unknown task 'zzz' in column 'task_b'"),
        ("task_a,task_b\nb,b\n", r"line 2: self-loop"),
        ("task_a,task_b,weight\na,b,heavy\n", r"line 2: weight 'heavy' is not a number"),
        ("task_a,task_b,weight\na,b,-1\n", r"line 2: weight must be finite and >= 0"),
        ("task_a,task_b\na,b\nb,a\n", r"line 3: edge 'b'-'a' already listed on line 2"),
        ("source,target\na,b\n", r"missing column\(s\) \['task_a', 'task_b'\]"),
    ],
)
def test_edge_list_errors_name_file_and_line(tmp_path, body, match):
    f = tmp_path / "g.csv"
    f.write_text(body)
    with pytest.raises(DataError, match=match):
        TaskGraph.from_edge_list(f, NAMES)


def test_edge_list_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        TaskGraph.from_edge_list(tmp_path / "nope.csv", NAMES)


def _coactive_labels(seed=0, m=300):
    rng = np.random.default_rng(seed)
    base = rng.random(m) < 0.4
    y = np.stack([base, base ^ (rng.random(m) < 0.1), rng.random(m) < 0.4, ~base], 1).astype(np.float32)
    y[rng.random(y.shape) < 0.2] = np.nan
    return y


@pytest.mark.parametrize("method", ["jaccard", "correlation"])
def test_coactivity_graph_uses_training_rows_only(method):
    y = _coactive_labels()
    train = np.arange(0, 200)
    g = TaskGraph.from_coactivity(y, train, NAMES, method=method, threshold=0.3, min_common=10)
    assert [0, 1] in g.edges.tolist()  # near-copies are linked
    if method == "correlation":
        assert [0, 3] in g.edges.tolist()  # anti-correlated tasks too, weight |phi|
        assert g.weights.min() > 0
    altered = y.copy()
    rng = np.random.default_rng(1)
    altered[200:] = rng.integers(0, 2, size=altered[200:].shape)  # scramble valid/test labels
    g2 = TaskGraph.from_coactivity(altered, train, NAMES, method=method, threshold=0.3, min_common=10)
    np.testing.assert_array_equal(g.edges, g2.edges)
    np.testing.assert_array_equal(g.weights, g2.weights)


def test_coactivity_jaccard_value_and_min_common():
    y = np.array([[1, 1], [1, 0], [0, 1], [0, 0], [1, np.nan]], dtype=np.float32)
    g = TaskGraph.from_coactivity(y, np.arange(5), ["x", "y"], threshold=0.0, min_common=4)
    assert g.weights.tolist() == pytest.approx([1 / 3])  # the NaN row is not common
    assert TaskGraph.from_coactivity(y, np.arange(5), ["x", "y"], threshold=0.0, min_common=5).num_edges == 0
    with pytest.raises(ValueError, match="unknown co-activity method"):
        TaskGraph.from_coactivity(y, np.arange(5), method="cosine")


def test_toxcast_name_rule():
    names = ["ATG_PXRE_CIS_up", "ATG_PXRE_CIS_dn", "ATG_AP_1_CIS_up", "ATG_AP_2_CIS_up",
             "TOX21_AR_BLA_Agonist_ratio", "TOX21_AR_LUC_MDAKB2_Antagonist", "NVS_NR_hAR",
             "BSK_3C_VCAM1_down", "BSK_hDFCGF_VCAM1_down", "NHEERL"]
    g = TaskGraph.from_toxcast_names(names)
    pairs = {(names[i], names[j]) for i, j in g.edges.tolist()}
    assert pairs == {("ATG_PXRE_CIS_up", "ATG_PXRE_CIS_dn"),
                     ("TOX21_AR_BLA_Agonist_ratio", "TOX21_AR_LUC_MDAKB2_Antagonist"),
                     ("BSK_3C_VCAM1_down", "BSK_hDFCGF_VCAM1_down")}
    assert toxcast_target_key("ATG_AP_1_CIS_up") == ("ATG", "ap_1")
    cross = TaskGraph.from_toxcast_names(names, cross_source=True)
    crossed = {(names[i], names[j]) for i, j in cross.edges.tolist()}
    assert ("TOX21_AR_BLA_Agonist_ratio", "NVS_NR_hAR") in crossed
    assert g.stats()["isolated_nodes"] == 4


def test_graph_helpers():
    g = TaskGraph(("a", "b", "c"), np.array([[1, 0], [1, 2]]), np.array([1.0, 3.0]))
    assert g.edges.tolist() == [[0, 1], [1, 2]]  # canonical i < j
    a = g.normalized_adjacency().numpy()
    np.testing.assert_allclose(a, a.T)
    colors = g.coloring()
    assert all(colors[i] != colors[j] for i, j in g.edges.tolist())
    assert g.subset(["c", "b"]).edges.tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="duplicate"):
        TaskGraph(("a", "b"), np.array([[0, 1], [1, 0]]), np.ones(2))


def _labeled(y):
    return LabeledData("toy", [f"C{i}" for i in range(len(y))], y, [f"t{j}" for j in range(y.shape[1])],
                       "classification", "toy.csv", np.arange(len(y)))


def test_dense_subset_thresholds():
    rng = np.random.default_rng(0)
    y = (rng.random((400, 5)) < 0.3).astype(np.float32)
    y[:, 3] = 0.0  # no positives: dropped
    y[:380, 4] = np.nan  # only 20 measured: dropped
    y[:50, :3] = np.nan
    d = dense_subset(_labeled(y), n_min=30, min_tasks_per_molecule=2)
    assert d.task_names == ["t0", "t1", "t2"]
    assert len(d) == 350 and d.rows.min() == 50
    kept = d.labels
    assert ((kept == 1).sum(0) >= 30).all() and ((kept == 0).sum(0) >= 30).all()
    assert ((~np.isnan(kept)).sum(1) >= 2).all()
    assert d.metadata["dense"]["task_indices"] == [0, 1, 2]
    with pytest.raises(DataError, match="no task has >= 1000"):
        dense_subset(_labeled(y), n_min=1000)


def test_filtered_random_split_keeps_both_classes():
    rng = np.random.default_rng(0)
    y = (rng.random((120, 4)) < 0.3).astype(np.float32)
    y[:, 3] = 0
    y[rng.choice(120, 4, replace=False), 3] = 1  # rare task: many random splits miss it
    split = filtered_random_split(y, (0.8, 0.1, 0.1), seed=3)
    split.check(120)
    assert all(not v for v in split_has_both_classes(y, split).values())
    assert split == filtered_random_split(y, (0.8, 0.1, 0.1), seed=3)
    y[:, 3] = 0
    y[0, 3] = 1
    with pytest.raises(ValueError, match="task columns: \\[3"):
        filtered_random_split(y, max_tries=5)
