"""moladapt.resume: what a resume file accepts and refuses."""

import pytest

from moladapt.resume import ResumeFile


def test_a_resume_file_names_the_nested_field_that_differs_and_accepts_older_files(tmp_path):
    older = ResumeFile(tmp_path / "r.pt", identity={"train": {"lr": 0.001, "seed": 0}, "data": "x"})
    older.save({"epoch": 1})
    # a later version also records patience: the older file did not, which is no difference
    now = ResumeFile(tmp_path / "r.pt", identity={"train": {"lr": 0.001, "seed": 0, "patience": 5}, "data": "x"})
    assert now.load()["epoch"] == 1
    # and a field this version no longer counts (the thread count) is no difference either
    leaner = ResumeFile(tmp_path / "r.pt", identity={"train": {"lr": 0.001}, "data": "x"})
    assert leaner.load()["epoch"] == 1
    other = ResumeFile(tmp_path / "r.pt", identity={"train": {"lr": 0.01, "seed": 0}, "data": "y"})
    with pytest.raises(ValueError, match=r"differs in: data, train.lr\)"):
        other.load()
