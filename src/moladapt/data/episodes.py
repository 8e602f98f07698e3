"""Few-shot episodes: a stratified support set of ``k`` molecules, the rest of the task as query.

What FS-Mol does (Stanley et al. 2021, ``fs_mol/data/fsmol_task_sampler.py``,
``StratifiedTaskSampler``): for a support ("train") size ``k`` it calls scikit-learn's
``StratifiedShuffleSplit(n_splits=1, train_size=k, test_size=..., random_state=seed)`` on
the task's binary labels, so the support holds about ``k * positive_rate`` positives
(sklearn rounds class counts down and hands the remainder to the classes with the largest
remainders, breaking ties at random). The query ("test") set is the rest of the task,
optionally capped by ``test_size_or_ratio``. If the support or the query then lacks a class,
or the task is too small, it raises (``FoldTooSmallException``, ``DatasetTooSmallException``,
sklearn's ``ValueError``) and the evaluation scripts skip that (task, k, seed). Evaluation
draws the repeats with seeds ``seed + run_idx``.

How :class:`EpisodeSampler` differs:

* the number of support positives is ``round(k * positive_rate)`` (halves rounded up, no
  random tie-break), then **clamped** so that the support has at least ``min_per_class``
  molecules of each class and the query keeps at least one of each, instead of failing when
  rounding would leave a class out of the support;
* the query is always all the remaining molecules (no cap), and must hold at least
  ``min_query`` of them;
* the random stream is derived from a SHA-256 hash of ``(task_id, k, seed)``, so episodes
  of different tasks or support sizes are independent even with the same ``seed``, and the
  same triple gives the same episode in any process, on any Python or numpy version. The
  episodes are therefore *not* the ones FS-Mol draws for the same seed: use FS-Mol's sampler
  when an exact replay of its episodes is needed.

Like FS-Mol, support sets of different ``k`` drawn with the same seed are not nested.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable

import numpy as np

from moladapt.types import Episode, Task

__all__ = ["EpisodeSampler", "TaskTooSmall", "episode_rng"]


class TaskTooSmall(ValueError):
    """A task cannot provide the requested episode.

    Attributes ``task_id``, ``size``, ``k``, ``n_pos``, ``n_neg`` and ``reason`` say why;
    callers typically log the message and skip the (task, k) pair, as FS-Mol does.
    """

    def __init__(
        self, task_id: str, size: int, k: int, n_pos: int, n_neg: int, reason: str
    ) -> None:
        self.task_id = task_id
        self.size = size
        self.k = k
        self.n_pos = n_pos
        self.n_neg = n_neg
        self.reason = reason
        super().__init__(
            f"task {task_id!r} is too small for a k={k} episode: {reason} "
            f"(task has {size} molecules: {n_pos} positives, {n_neg} negatives)"
        )

    def __reduce__(self):  # keep it picklable across worker processes
        return (
            type(self),
            (self.task_id, self.size, self.k, self.n_pos, self.n_neg, self.reason),
        )


def episode_rng(task_id: str, k: int, seed: int) -> random.Random:
    """The random stream of episode ``(task_id, k, seed)``: stable across processes and versions.

    Seeded by SHA-256 of a JSON encoding of the triple (never Python's salted ``hash()``).
    """
    payload = json.dumps(["moladapt.episode", str(task_id), int(k), int(seed)])
    digest = hashlib.sha256(payload.encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _shuffled(items: list[int], rng: random.Random) -> list[int]:
    # Only Random.random() is promised to give the same stream across Python versions
    # (shuffle/sample are not), so shuffle by sorting on random keys.
    keys = [rng.random() for _ in items]
    return [items[j] for j in sorted(range(len(items)), key=keys.__getitem__)]


class EpisodeSampler:
    """Draws stratified few-shot episodes from a binary :class:`~moladapt.types.Task`.

    Args:
        min_query: the fewest query molecules an episode may have; tasks with
            ``len(task) - k < min_query`` raise :class:`TaskTooSmall`.
        min_per_class: the fewest support molecules of each class.

    A task can serve ``k`` when ``len(task) - k >= min_query`` and each class has at least
    ``min_per_class + 1`` molecules (``min_per_class`` for the support, one for the query).
    """

    def __init__(self, min_query: int = 16, min_per_class: int = 1) -> None:
        if int(min_query) < 0 or int(min_per_class) < 0:
            raise ValueError("min_query and min_per_class must be >= 0")
        self.min_query = int(min_query)
        self.min_per_class = int(min_per_class)

    def __repr__(self) -> str:
        return f"EpisodeSampler(min_query={self.min_query}, min_per_class={self.min_per_class})"

    def num_support_positives(self, task: Task, k: int) -> int:
        """How many positives a ``k``-shot support of ``task`` holds (raises if impossible)."""
        labels = _binary_labels(task)
        return self._n_support_pos(task, labels, k)

    def _n_support_pos(self, task: Task, labels: np.ndarray, k: int) -> int:
        n = len(labels)
        n_pos = int(labels.sum())
        n_neg = n - n_pos

        def too_small(reason: str) -> TaskTooSmall:
            return TaskTooSmall(task.task_id, n, k, n_pos, n_neg, reason)

        if k > n:
            raise too_small(f"it has fewer than k={k} molecules")
        if n - k < self.min_query:
            raise too_small(f"only {n - k} query molecules would remain, need {self.min_query}")
        need = self.min_per_class + 1
        if n_pos < need:
            raise too_small(
                f"{n_pos} positives, need {need} ({self.min_per_class} for support, 1 for query)"
            )
        if n_neg < need:
            raise too_small(
                f"{n_neg} negatives, need {need} ({self.min_per_class} for support, 1 for query)"
            )
        target = int(np.floor(k * n_pos / n + 0.5))
        lo = max(self.min_per_class, k - (n_neg - 1))
        hi = min(k - self.min_per_class, n_pos - 1)
        if lo > hi:
            raise too_small(
                f"no support of {k} keeps {self.min_per_class} of each class in the support "
                "and one of each in the query"
            )
        return min(max(target, lo), hi)

    def sample(self, task: Task, k: int, seed: int) -> Episode:
        """A support of exactly ``k`` molecules stratified by class; the query is the rest.

        The support holds ``round(k * task.positive_rate)`` positives, clamped to
        ``[min_per_class, k - min_per_class]`` and so that the query keeps a molecule of
        each class. Same ``(task.task_id, k, seed)`` -> identical episode, always. Indices
        in the episode are sorted positions in the task.

        Raises:
            TaskTooSmall: the task has too few molecules, or too few of one class.
            ValueError: ``k < 2 * min_per_class``, or labels that are not binary.
        """
        k = _as_int(k, "k")
        seed = _as_int(seed, "seed")
        if k < max(1, 2 * self.min_per_class):
            raise ValueError(
                f"k={k} is too small: the support needs {self.min_per_class} molecule(s) "
                "of each class"
            )
        labels = _binary_labels(task)
        n_support_pos = self._n_support_pos(task, labels, k)

        rng = episode_rng(task.task_id, k, seed)
        pos = _shuffled(np.flatnonzero(labels == 1).tolist(), rng)
        neg = _shuffled(np.flatnonzero(labels == 0).tolist(), rng)
        support = np.sort(np.asarray(pos[:n_support_pos] + neg[: k - n_support_pos], np.int64))
        query = np.sort(np.asarray(pos[n_support_pos:] + neg[k - n_support_pos :], np.int64))
        return Episode(task_id=task.task_id, k=k, seed=seed, support=support, query=query)

    def sample_many(self, task: Task, k: int, seeds: Iterable[int]) -> list[Episode]:
        """One episode per seed (raises :class:`TaskTooSmall` on the first that can't be drawn,
        which for a given task and ``k`` means all of them)."""
        return [self.sample(task, k, seed) for seed in seeds]


def _as_int(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _binary_labels(task: Task) -> np.ndarray:
    labels = np.asarray(task.labels, dtype=np.float64).reshape(-1)
    if len(labels) != len(task):
        raise ValueError(f"task {task.task_id!r} has {len(task)} SMILES but {len(labels)} labels")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError(f"task {task.task_id!r} labels must be binary 0/1 without NaN")
    return labels.astype(np.int64)
