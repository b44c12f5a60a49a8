"""Compiled (numba) kernel of the reweighted Bell sums: one weighted histogram per support.

A reweighted Bell shot contributes ``(-1)^parity * r`` to a term, where the parity
is a function of the shot's Bell codes on the term's support and ``r`` depends on
the shot's wait and the term's decay rate only.  So for each group of terms that
share a support and a rate, the kernel histograms the shots' joint code on the
support (4^k bins, weighted by ``r``) once, and each term of the group then reads
its sum off the 4^k bins with its sign pattern; where the histogram would cost
more than it saves (one term, or 4^k bins against few shots) it sums the shots
directly.  The reweighted purity is a product over the wires of a per-shot
table of four values (one per Bell code), summed per subsystem in one pass.
Imported lazily by :mod:`qsense.estimators.bell_weighted`; importing
it fails cleanly (ImportError) where numba is missing.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["bell_purity_sums_jit", "bell_weighted_sums_jit"]


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
    bits = np.empty(T, np.uint8)  # the shots' masked code XOR for one term
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
        # histogram: T*k to fill plus nt*nbins*k to read, against nt*T*k summed directly
        # (k <= 15 first: 4^k of a weight-32 term would overflow int64)
        nbins = 1 << (2 * k) if k <= 15 else hist_max + 1
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
                # XOR of the shots' codes masked by each letter's bits (X: a = 0b10, Y: 0b11, Z: b = 0b01),
                # in vectorised passes over contiguous rows; the parity is the XOR of the result's two bits
                for i in range(k):
                    lb = letter_bit[letters[j, i]]
                    mask = np.uint8(2 * lb[2] + lb[1])
                    row = codes_t[grp_cols[g, i]]
                    if i == 0:
                        for t in range(T):
                            bits[t] = row[t] & mask
                    else:
                        for t in range(T):
                            bits[t] ^= row[t] & mask
                # branch-free (the parity is random: a branch mispredicts half the time); r - 2r is
                # exactly -r; four accumulators so that the adds do not wait on each other
                a0 = a1 = a2 = a3 = 0.0
                T4 = T - T % 4
                for t in range(0, T4, 4):
                    a0 += r[t] - 2.0 * ((bits[t] ^ (bits[t] >> 1)) & 1) * r[t]
                    a1 += r[t + 1] - 2.0 * ((bits[t + 1] ^ (bits[t + 1] >> 1)) & 1) * r[t + 1]
                    a2 += r[t + 2] - 2.0 * ((bits[t + 2] ^ (bits[t + 2] >> 1)) & 1) * r[t + 2]
                    a3 += r[t + 3] - 2.0 * ((bits[t + 3] ^ (bits[t + 3] >> 1)) & 1) * r[t + 3]
                for t in range(T4, T):
                    a0 += r[t] - 2.0 * ((bits[t] ^ (bits[t] >> 1)) & 1) * r[t]
                out[j] = (a0 + a1) + (a2 + a3)


@njit(cache=True, nogil=True)
def bell_purity_sums_jit(codes, tab, masks, pS, pQ):
    """Reweighted purity sums: per mask i, ``pS[i] += sum_t v`` and ``pQ[i] += sum_t v^2`` with
    ``v = prod_{q in mask i} tab[t, codes[t, q]]``.

    ``codes``: uint8 (T, n); ``tab``: float64 (T, 4), each shot's per-wire SWAP value for
    Bell codes 0..3; ``masks``: bool (P, n).
    """
    T = codes.shape[0]
    P = masks.shape[0]
    for i in range(P):
        cols = np.flatnonzero(masks[i])
        s = 0.0
        q = 0.0
        for t in range(T):
            v = 1.0
            for c in cols:
                v *= tab[t, codes[t, c]]
            s += v
            q += v * v
        pS[i] += s
        pQ[i] += q
