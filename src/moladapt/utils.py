"""Small shared helpers: atomic writes, seeding, JSON."""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np


def temp_sibling(path: Path, suffix: str = ".tmp") -> tuple[int, str]:
    """A new file next to ``path`` (open descriptor, name), created like ``tempfile.mkstemp``
    but with the permissions a plain ``open`` gives (0666 less the umask, applied by the
    kernel): mkstemp's 0600 would stay on the file once renamed onto ``path``, and results or
    caches shared with a group (a cluster's project folder) would be unreadable to it."""
    import secrets

    path = Path(path)
    for _ in range(100):
        tmp = path.parent / f"{path.name}.{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half."""
    path = Path(path)
    if path.is_dir():  # else os.replace fails naming the temporary file, not this one
        raise IsADirectoryError(errno.EISDIR, "is a directory; a file name is needed here", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_sibling(path)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(payload: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically (temporary file, fsync, ``os.replace``): a killed
    process leaves the previous file or the new one, never a truncated checkpoint."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def json_safe(obj: Any) -> Any:
    """NaN/inf → None, numpy scalars and arrays (and tensors) → Python, recursively."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if type(obj).__module__.startswith("torch") and hasattr(obj, "detach"):  # no torch import
        return json_safe(obj.detach().cpu().tolist())  # tolist: bfloat16 has no numpy dtype
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(Path(path), json.dumps(json_safe(obj), indent=2) + "\n")


PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    return precision


def autocast(device: Any, precision: str):
    """The forward-pass context for ``precision``: ``fp32`` (nothing) or ``bf16`` autocast.

    bf16 autocast runs matmuls in bfloat16 and keeps weights, optimizer state and losses in
    float32 (mixed precision). On CPUs with AMX or AVX512-BF16 it trains a GIN 5×300 about
    1.5× faster (``benchmarks/pretrain_speed.py`` measures it); CPUs without them gain nothing.
    """
    import contextlib

    import torch

    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def adam(params: Any, lr: float, weight_decay: float = 0.0):
    """``torch.optim.Adam``, fused into one kernel where the parameters allow it.

    The default (for-each) Adam spends 18 ms per step on a GIN 5×300's 1.8 M parameters on one
    CPU thread, the fused one 4.7 ms — about 5% of a batch-32 training step. Same update rule.
    """
    import torch

    groups = list(params)
    tensors = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    fusable = bool(tensors) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors
    ) and len({p.device for p in tensors}) == 1
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, fused=fusable or None)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@functools.lru_cache(maxsize=1)
def cap_heap_retention(threshold_bytes: int = 4 << 20) -> bool:
    """Have glibc serve every allocation of ``threshold_bytes`` or more by ``mmap``, so that
    freeing it returns the memory to the system. Once per process; True if it took effect.

    Why: glibc raises its mmap threshold each time it frees a mapped block (up to 32 MiB), so
    the per-step ``[tasks × params]`` gradient buffers of gradient surgery (≈ 7–30 MiB each for
    GIN 5×300) later land on the heap, where blocks of shifting sizes fragment it and freed
    memory is never handed back: a worker running auxiliary fine-tuning on Tox21 grew to
    23.6 GiB in its third run and was killed by the OOM killer; calling ``malloc_trim`` every
    5 s held a fresh run at 0.7 GiB. A fixed threshold also turns off that adjustment. With
    it, a whole Tox21 run stayed under 1.1 GiB; the price, mapping fresh pages each step,
    made a 4-task GIN 5×300 gradient step ≈ 10% slower here (240 → 262–269 ms). A user's
    own ``MALLOC_MMAP_THRESHOLD_`` wins; other C libraries are left alone (returns False).
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: no mallopt
        return False
    m_mmap_threshold = -3  # from glibc's malloc.h
    return bool(mallopt(ctypes.c_int(m_mmap_threshold), ctypes.c_int(int(threshold_bytes))))


@functools.lru_cache(maxsize=1)
def code_revision() -> dict[str, Any]:
    """The code that produced a result: the package version and, when moladapt runs from a git
    checkout, its commit and whether tracked files differed from it (``dirty``).

    A model trained today and retrained next month can differ only if the code did; the
    version number alone cannot tell two working trees apart, the commit can. Outside a git
    checkout (a wheel install), or when git is missing or slow, only the version is given.
    Asked once per process (cached): a commit made while a long run is going on is not the
    code that run imported, so later checkpoints of that run keep the first answer.
    """
    import moladapt

    info: dict[str, Any] = {"version": moladapt.__version__}
    package_dir = Path(moladapt.__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(package_dir), *args], capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    # An installed copy can sit inside someone else's repository (a venv in a project): only a
    # package whose own files git tracks is a source checkout.
    tracked = git("ls-files", "--error-unmatch", "__init__.py") is not None
    commit = git("rev-parse", "HEAD") if tracked else None
    if commit:
        info["git_commit"] = commit
        status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
        if status is not None:
            info["dirty"] = bool(status)
    return info
