"""Compiled (numba) counting kernel: one fused pass per term over the packed words.

The NumPy kernel in :mod:`qsense.estimators.kernels` makes about ten passes over a
(terms x words) working array (gathers, AND/XOR, two popcounts, two sums); this
one ANDs/XORs a term's k rows into two L1-resident word buffers and popcounts
them with LLVM's ``ctpop`` in the same loop, 2.7x faster on 1,000 terms.
Compiled on first use and cached on disk (``cache=True``); importing this
module fails cleanly (ImportError) where numba is not installed, and the
kernels fall back to NumPy.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["count_terms_jit"]


@intrinsic
def _popcount64(typingctx, x):  # noqa: ARG001 - numba intrinsic signature
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(64), [ir.IntType(64)])
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)], fnty)
        return builder.call(fn, args)

    return sig, codegen


@njit(cache=True, nogil=True)
def count_terms_jit(match_rows, sign_rows, match_idx, sign_idx, word_starts, word_ends, matched, odd):
    """Fill ``matched[g, j]`` / ``odd[g, j]`` for segments g and terms j (layouts as in
    :func:`qsense.estimators.kernels.count_terms`; ``word_ends[g]`` is one past segment g)."""
    M, kmax = match_idx.shape
    G = word_starts.shape[0]
    W = match_rows.shape[1]
    a = np.empty(W, np.uint64)
    p = np.empty(W, np.uint64)
    for j in range(M):
        r = match_rows[match_idx[j, 0]]
        q = sign_rows[sign_idx[j, 0]]
        for w in range(W):
            a[w] = r[w]
            p[w] = q[w]
        for s in range(1, kmax):
            r = match_rows[match_idx[j, s]]
            q = sign_rows[sign_idx[j, s]]
            for w in range(W):
                a[w] &= r[w]
                p[w] ^= q[w]
        for g in range(G):
            m = 0
            o = 0
            for w in range(word_starts[g], word_ends[g]):
                m += _popcount64(a[w])
                o += _popcount64(p[w] & a[w])
            matched[g, j] = m
            odd[g, j] = o
