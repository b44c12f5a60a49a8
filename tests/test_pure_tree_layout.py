"""Memory layout of the compiled prefix tree (:mod:`qsense.sims.pure_tree`): the cache-set fix stays in.

A tree pass streams six blocks per float64 plane at power-of-two distances; if
the real and imaginary planes were page-aligned to each other, all twelve
streams would share one set of the 8-way L1 and a pass would run ~2x slower
(``docs/benchmarks.md``, large registers).  The second plane must start at least a
cache line away from any 4 KiB multiple of the first, and they must hold the state exactly (the law of the
records is checked in ``tests/test_samplers_large.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

from qsense import sims
from qsense.sims import pure_tree


@pytest.mark.parametrize("n", [1, 2, 9, 14])
def test_planes_do_not_share_cache_sets(n):
    psi = sims.haar_random_state(n, seed=n)
    tree = pure_tree.PureShadowTree(psi)
    np.testing.assert_array_equal(tree._re + 1j * tree._im, psi)
    assert tree._wre.shape == tree._wim.shape == (max((1 << n) - 2, 1),)
    for a, b in ((tree._re, tree._im), (tree._wre, tree._wim)):
        gap = b.ctypes.data - a.ctypes.data
        # the second plane starts at least a cache line away from any 4 KiB multiple of the first
        assert 64 <= gap % 4096 <= 4096 - 64, gap
        assert not np.shares_memory(a, b)

