"""Compiled (numba) kernel of the reweighted Bell sums: one weighted histogram per support.

A reweighted Bell shot contributes ``(-1)^parity * r`` to a term, where the parity
is a function of the shot's Bell codes on the term's support and ``r`` depends on
the shot's wait and the term's decay rate only.  So for each group of terms that
share a support and a rate, the kernel histograms the shots' joint code on the
support (4^k bins, weighted by ``r``) once, and each term of the group then reads
its sum off the 4^k bins with its sign pattern; where the histogram would cost
more than it saves (one term, or 4^k bins against few shots) it sums the shots
directly.  Imported lazily by :mod:`qsense.estimators.bell_weighted`; importing
it fails cleanly (ImportError) where numba is missing.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["bell_weighted_sums_jit"]


@njit(cache=True, nogil=True)
def bell_weighted_sums_jit(codes_t, R, grp_cols, grp_k, grp_rate, grp_start, letters, letter_bit, hist_max, out):
    """``out[j] = sum_t (-1)^parity(t, j) R[rate(j), t]`` for the terms j of every group.

    ``codes_t``: uint8 (n, T) Bell codes, one contiguous row per wire (a support's
    rows are read sequentially); ``R``: float64 (U, T) per-rate shot weights;
    group g holds rows ``grp_start[g]:grp_start[g+1]`` of ``letters`` (uint8 (Mg, kmax),
    in the order of the group's columns ``grp_cols[g, :grp_k[g]]``) and uses row
    ``grp_rate[g]`` of ``R``; ``letter_bit[L, d]``: the parity bit of code d for letter L
    (:data:`qsense.estimators.bell_weighted.LETTER_BIT`); ``hist_max``: the largest histogram (bins) to use.
    """
    T = codes_t.shape[1]
    G = grp_k.shape[0]
    hist = np.empty(max(hist_max, 1), np.float64)
    code = np.empty(T, np.int64)  # the shots' joint code on one support
    for g in range(G):
        k = grp_k[g]
        a = grp_start[g]
        b = grp_start[g + 1]
        nt = b - a
        r = R[grp_rate[g]]
        if k == 0:  # the identity: every shot counts +r
            s = 0.0
            for t in range(T):
                s += r[t]
            for j in range(a, b):
                out[j] = s
            continue
        nbins = 1 << (2 * k)
        # histogram: T*k to fill plus nt*nbins*k to read, against nt*T*k summed directly
        if nbins <= hist_max and nbins * nt + T < nt * T:
            # the code in its own pass over contiguous rows (vectorised), then one scatter-add
            row = codes_t[grp_cols[g, 0]]
            for t in range(T):
                code[t] = row[t]
            for i in range(1, k):
                row = codes_t[grp_cols[g, i]]
                shift = 2 * i
                for t in range(T):
                    code[t] |= np.int64(row[t]) << shift
            for c in range(nbins):
                hist[c] = 0.0
            for t in range(T):
                hist[code[t]] += r[t]
            for j in range(a, b):
                acc = 0.0
                for c in range(nbins):
                    par = 0
                    for i in range(k):
                        par ^= letter_bit[letters[j, i], (c >> (2 * i)) & 3]
                    if par:
                        acc -= hist[c]
                    else:
                        acc += hist[c]
                out[j] = acc
        else:
            for j in range(a, b):
                # the term's parity bit per shot, letter by letter over contiguous rows
                row = codes_t[grp_cols[g, 0]]
                lb = letter_bit[letters[j, 0]]
                for t in range(T):
                    code[t] = lb[row[t]]
                for i in range(1, k):
                    row = codes_t[grp_cols[g, i]]
                    lb = letter_bit[letters[j, i]]
                    for t in range(T):
                        code[t] ^= lb[row[t]]
                acc = 0.0
                for t in range(T):
                    if code[t]:
                        acc -= r[t]
                    else:
                        acc += r[t]
                out[j] = acc
