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

__all__ = ["count_terms_jit", "count_supports_jit", "pack_shadow_jit"]


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


#: Words per inner block of :func:`count_supports_jit`: the parity and one term's
#: match rows of a block stay in L1 (2 KiB each) while every term of the support reads them.
_BLOCK = 256


@njit(cache=True, nogil=True)
def count_supports_jit(rows, signs, items, grp_start, grp_k, grp_sign, term_match, term_id, r_start, r_end, part_m, part_o):
    """Per work item ``(support s, word range r)``: for every term of support s, add to
    ``part_m[r, j]`` / ``part_o[r, j]`` the records of range r whose bases match term j
    and those of them with odd outcome parity.

    The parity of a support is the same for all its terms, so it is XORed once per
    block of words and shared; each term then costs one AND of its k letter rows and
    two popcounts per word, in loops LLVM vectorises (uint64 accumulators: an int64
    one would mix signed and unsigned and be computed in float64).
    ``rows``/``signs`` as in :func:`count_terms_jit`; ``term_match`` holds the terms
    in support order (``term_id`` maps them back), ``grp_sign`` a support's sign rows.
    """
    p = np.empty(_BLOCK, np.uint64)
    a = np.empty(_BLOCK, np.uint64)
    for it in range(items.shape[0]):
        s = items[it, 0]
        r = items[it, 1]
        k = grp_k[s]
        for w0 in range(r_start[r], r_end[r], _BLOCK):
            L = min(_BLOCK, r_end[r] - w0)
            if k == 0:
                for w in range(L):
                    p[w] = 0
            else:
                q = signs[grp_sign[s, 0], w0 : w0 + L]
                for w in range(L):
                    p[w] = q[w]
                for t in range(1, k):
                    q = signs[grp_sign[s, t], w0 : w0 + L]
                    for w in range(L):
                        p[w] ^= q[w]
            for i in range(grp_start[s], grp_start[s + 1]):
                m = np.uint64(0)
                o = np.uint64(0)
                r0 = rows[term_match[i, 0], w0 : w0 + L]
                if k <= 1:
                    for w in range(L):
                        x = r0[w]
                        m += _popcount64(x)
                        o += _popcount64(x & p[w])
                elif k == 2:
                    r1 = rows[term_match[i, 1], w0 : w0 + L]
                    for w in range(L):
                        x = r0[w] & r1[w]
                        m += _popcount64(x)
                        o += _popcount64(x & p[w])
                else:
                    r1 = rows[term_match[i, 1], w0 : w0 + L]
                    for w in range(L):
                        a[w] = r0[w] & r1[w]
                    for t in range(2, k - 1):
                        rt = rows[term_match[i, t], w0 : w0 + L]
                        for w in range(L):
                            a[w] &= rt[w]
                    rl = rows[term_match[i, k - 1], w0 : w0 + L]
                    for w in range(L):
                        x = a[w] & rl[w]
                        m += _popcount64(x)
                        o += _popcount64(x & p[w])
                j = term_id[i]
                part_m[r, j] += np.int64(m)
                part_o[r, j] += np.int64(o)


@njit(cache=True, nogil=True, inline="always")
def _swap(a, b, s, mask):
    t = ((a >> s) ^ b) & mask
    return a ^ (t << s), b ^ t


@njit(cache=True, nogil=True, inline="always")
def _transpose8(y0, y1, y2, y3, y4, y5, y6, y7):
    """Transpose an 8x8 byte matrix held as 8 words (byte c of word g -> byte g of word c)."""
    s = np.uint64(32)
    m = np.uint64(0x00000000FFFFFFFF)
    y0, y4 = _swap(y0, y4, s, m)
    y1, y5 = _swap(y1, y5, s, m)
    y2, y6 = _swap(y2, y6, s, m)
    y3, y7 = _swap(y3, y7, s, m)
    s = np.uint64(16)
    m = np.uint64(0x0000FFFF0000FFFF)
    y0, y2 = _swap(y0, y2, s, m)
    y1, y3 = _swap(y1, y3, s, m)
    y4, y6 = _swap(y4, y6, s, m)
    y5, y7 = _swap(y5, y7, s, m)
    s = np.uint64(8)
    m = np.uint64(0x00FF00FF00FF00FF)
    y0, y1 = _swap(y0, y1, s, m)
    y2, y3 = _swap(y2, y3, s, m)
    y4, y5 = _swap(y4, y5, s, m)
    y6, y7 = _swap(y6, y7, s, m)
    return y0, y1, y2, y3, y4, y5, y6, y7


@njit(cache=True, nogil=True)
def pack_shadow_jit(B, O, T, n, planes, w0, w1):
    """Words ``w0:w1`` of the shadow bit planes (layout of :mod:`qsense.packing`) of T
    records, padding bits left 0 (the caller sets them).

    ``B`` / ``O`` are the uint8 (T, 8 m) basis / outcome tables (columns padded to a
    multiple of 8, values valid) viewed as uint64 (T, m), little endian: byte c of
    ``B[t, j]`` is column 8 j + c.  Per 8 records and 8 columns, one word per record
    is masked and shifted so that byte c collects the 8 records' bits of column c,
    and an 8x8 byte transpose (SWAR, 24 word swaps) turns 8 such words into the
    8 columns' bytes: about 3x the per-byte loop and NumPy's transpose + packbits.
    """
    m8 = B.shape[1]
    lsb = np.uint64(0x0101010101010101)
    one = np.uint64(1)
    acc = np.empty((3, 8), np.uint64)
    for w in range(w0, w1):
        lo = w * 64
        full = lo + 64 <= T
        for j in range(m8):
            for g in range(8):
                y0 = np.uint64(0)
                y1 = np.uint64(0)
                y2 = np.uint64(0)
                base = lo + 8 * g
                cnt = 8 if full else max(0, min(8, T - base))
                for r in range(cnt):
                    x = B[base + r, j]
                    sr = np.uint64(r)
                    y0 |= (x & lsb) << sr
                    y1 |= ((x >> one) & lsb) << sr
                    y2 |= (O[base + r, j] & lsb) << sr
                acc[0, g] = y0
                acc[1, g] = y1
                acc[2, g] = y2
            q0 = 8 * j
            for p in range(3):
                z = _transpose8(acc[p, 0], acc[p, 1], acc[p, 2], acc[p, 3], acc[p, 4], acc[p, 5], acc[p, 6], acc[p, 7])
                for c in range(min(8, n - q0)):
                    planes[p, q0 + c, w] = z[c]
