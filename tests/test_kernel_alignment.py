"""The counting kernels' scratch buffers start on a cache line, whatever glibc's malloc settings.

Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536``, which
fixes glibc's mmap threshold: a large block then starts 16 bytes past a page
boundary, and NumPy's copies from the page-aligned Arrow planes into such a
buffer ran ~6x slower (+50% CPU per shadow update in every worker).  The
check runs in a fresh interpreter with that variable set (glibc reads it at
start-up), and first shows that plain allocations there are indeed 16 bytes
off, so the test would fail without the aligned buffers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from qsense.estimators import kernels

CHILD = r"""
import json
import numpy as np
from qsense.estimators import kernels
from qsense.estimators.shadow import ShadowEstimator
from qsense.pauli import parse_observable
from qsense.records import ShadowBatch

plain = [np.empty(n, np.uint64).ctypes.data % 64 for n in (50_000, 200_000)]
rng = np.random.default_rng(1)
batch = ShadowBatch(rng.integers(0, 3, (65536, 16), dtype=np.uint8), rng.integers(0, 2, (65536, 16), dtype=np.uint8))
batch.packed()
est = ShadowEstimator([parse_observable("XZ" + "I" * 14), parse_observable("I" * 15 + "Y")])
est.update(batch)  # the packed path's scratch buffers ('rows', 'signs') are made here
bufs = {k[0]: v.ctypes.data % 64 for k, v in kernels._local.__dict__.get("buffers", {}).items()}
print(json.dumps({"plain": plain, "buffers": bufs, "count": int(est.count)}))
"""


def test_buffers_aligned_in_this_process():
    for name, shape, dtype in [("a", (49, 1024), np.uint64), ("b", (7,), np.uint8), ("c", (3, 5000), np.int64),
                               ("a", (60, 1024), np.uint64)]:  # the last one grows 'a'
        buf = kernels._buffer(name, shape, dtype)
        assert buf.shape == shape and buf.dtype == np.dtype(dtype)
        assert buf.ctypes.data % 64 == 0
        buf[...] = 7  # writable, and the whole view lies inside its allocation
        assert int(buf.sum()) == 7 * buf.size


def test_buffers_aligned_under_dasks_malloc_trim_threshold():
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # the condition that made the workers slow is there: glibc's large blocks are 16 bytes off a cache line
    assert got["plain"] == [16, 16], got
    assert got["count"] == 65536
    assert got["buffers"] and set(got["buffers"].values()) == {0}, got
