"""Small shared helpers: the fused Adam, the precision context, the code revision and the
heap-retention cap."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import moladapt
from moladapt.utils import adam, atomic_write_text, autocast, code_revision


def test_adam_is_fused_on_cpu_and_takes_the_same_steps_as_plain_adam():
    torch.manual_seed(0)
    w0 = torch.randn(50, 20)
    grads = [torch.randn(50, 20) for _ in range(5)]
    results = []
    for make in (lambda p: adam([p], lr=1e-2, weight_decay=1e-4),
                 lambda p: torch.optim.Adam([p], lr=1e-2, weight_decay=1e-4)):
        p = torch.nn.Parameter(w0.clone())
        opt = make(p)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        results.append(p.detach())
    assert adam([torch.nn.Parameter(w0)], lr=1e-3).defaults["fused"]
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)


def test_adam_with_parameter_groups_keeps_their_learning_rates():
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    opt = adam([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}], lr=1.0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]


def test_autocast_contexts():
    x = torch.randn(4, 8)
    lin = torch.nn.Linear(8, 2)
    with autocast("cpu", "fp32"):
        assert lin(x).dtype == torch.float32
    with autocast("cpu", "bf16"):
        assert lin(x).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown precision"):
        autocast("cpu", "fp8")


def test_code_revision_names_the_checkout_commit_or_only_the_version():
    info = code_revision()
    assert info["version"] == moladapt.__version__
    package_dir = Path(moladapt.__file__).resolve().parent

    def git(*args):
        return subprocess.run(["git", "-C", str(package_dir), *args], capture_output=True, text=True,
                              check=False)

    if git("ls-files", "--error-unmatch", "__init__.py").returncode == 0:  # a source checkout
        assert info["git_commit"] == git("rev-parse", "HEAD").stdout.strip()
        assert isinstance(info["dirty"], bool)
    else:
        assert set(info) == {"version"}


_HEAP_CHECK = """
import os, torch
from moladapt.utils import cap_heap_retention

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

assert cap_heap_retention() is True
assert cap_heap_retention() is True  # once per process, idempotent
torch.empty(20 << 20, dtype=torch.uint8).fill_(1)
before = rss()
blocks = [torch.ones(2 << 20) for _ in range(16)]  # 16 x 8 MiB, touched
held = rss()
del blocks
print(held - before, rss() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")
def test_cap_heap_retention_returns_freed_gradient_buffers_to_the_system():
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        pytest.skip("the user's own threshold wins")
    # A fresh interpreter: in this one, memory freed by earlier tests sits in glibc's free
    # lists and would serve the blocks below without touching new pages.
    # 8 MiB blocks: the size of a GIN 5×300 gradient row; glibc's adaptive threshold would
    # otherwise put them on the heap after a larger block is freed.
    out = subprocess.run([sys.executable, "-c", _HEAP_CHECK], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert out.returncode == 0, out.stderr
    held, after = (int(v) for v in out.stdout.split())
    assert held > 100 << 20
    assert after < 32 << 20


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    """mkstemp's 0600 must not survive the rename: a group sharing results has to read them."""
    import os
    import stat

    from moladapt.data.cache import save_graphs
    from moladapt.data.featurize import get_featurizer
    from moladapt.data.sources import download_file

    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
        save_graphs(get_featurizer("basic").featurize(["CCO"]), tmp_path / "graphs.npz")
        download_file((tmp_path / "plain.txt").as_uri(), tmp_path / "copy.txt", None)
    finally:
        os.umask(old)
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert expected == 0o644
    for name in ("config.yaml", "graphs.npz", "copy.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_json_safe_turns_arrays_and_tensors_into_lists():
    import json

    import numpy as np
    import torch

    from moladapt.utils import json_safe

    value = json_safe({"a": np.array([1.0, np.nan]), "t": torch.tensor([[1, 2]]), "s": torch.tensor(0.5)})
    assert value == {"a": [1.0, None], "t": [[1, 2]], "s": 0.5}
    json.dumps(value)
