import numpy as np
import pytest

from moladapt.data.sources import load_dataset
from moladapt.data.tasks import load_fsmol_tasks, tasks_from_table


@pytest.fixture(scope="module")
def fsmol_test(data_dir):
    return load_fsmol_tasks("test")


def test_fsmol_test_split_is_complete(fsmol_test):
    assert len(fsmol_test) == 157
    assert all(t.group == "fsmol-test" for t in fsmol_test)
    sizes = [len(t) for t in fsmol_test]
    assert min(sizes) >= 32
    t = fsmol_test[0]
    assert t.labels.shape == (len(t),) and set(np.unique(t.labels)) <= {0.0, 1.0}
    assert t.values is not None and t.values.shape == t.labels.shape


def test_fsmol_bad_split_name(data_dir):
    with pytest.raises(ValueError, match="FS-Mol split"):
        load_fsmol_tasks("holdout")


def test_tasks_from_toxcast_keep_only_measured_molecules(data_dir):
    data = load_dataset("tox21")
    tasks = tasks_from_table(data, min_per_class=10)
    assert len(tasks) == 12
    nr_ar = tasks[0]
    assert nr_ar.task_id == "NR-AR"
    assert len(nr_ar) == int((~np.isnan(data.labels[:, 0])).sum())
    assert not np.isnan(nr_ar.labels).any()
