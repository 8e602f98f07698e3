"""Studies: a YAML grid of runs, a SQLite results store, local or Ray execution.

>>> from moladapt.study import StudySpec, run_study  # doctest: +SKIP
>>> run_study("studies/demo.yaml", "results/demo.db")  # doctest: +SKIP
"""

from moladapt.study.executors import (
    RUNNERS,
    Executor,
    LocalExecutor,
    RayExecutor,
    Runner,
    run_study,
)
from moladapt.study.spec import RunSpec, StudyError, StudySpec, plan
from moladapt.study.store import ResultStore

__all__ = ["RUNNERS", "Executor", "LocalExecutor", "RayExecutor", "ResultStore", "RunSpec",
           "Runner", "StudyError", "StudySpec", "plan", "run_study"]
