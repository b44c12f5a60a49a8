"""The derandomization loop (method of conditional expectations), as plain Python
that numba compiles (:mod:`._derandomize_jit`) and that runs uncompiled where
numba is unavailable.

One *repetition* fixes one basis string, qubit by qubit.  For every observable l
that still needs hits, its pessimistic failure bound is

    2 exp( (-eta/2 * hits_l + log1p((e^{-eta/2} - 1) / 3^{r_l})) / w_l - shift )

with r_l the number of its support qubits not fixed yet (no log term once a fixed
qubit disagrees: the observable can no longer be hit this repetition).  At each
qubit the letter whose choice lowers the summed bound most is taken (ties: X, then
Y, then Z).  ``shift`` only rescales every term of a repetition alike (it keeps
exp() in range); it is the mean exponent of the previous repetition, as in the
authors' ``data_acquisition_shadow -d``, and the summation order is theirs too, so
the same targets give the same bases.

Layouts: ``qptr`` int64 (n+1,) and ``qobs``/``qlet`` int64 (E,): the (observable,
letter 0=X 1=Y 2=Z) entries acting on qubit i are ``qptr[i]:qptr[i+1]``, sorted by
letter then observable.  ``k`` int64 (L,) weights (support sizes), ``w`` float64
(L,) cost weights, ``target`` int64 (L,) hits wanted.
"""

from __future__ import annotations

import math

import numpy as np

#: "cannot be hit this repetition" (the reference's INF)
_BROKEN = -1


def design_loop(n, qptr, qobs, qlet, k, w, target, eta, max_bases, hits0, shift0):
    """Run repetitions from ``hits0`` hits (the first one with ``shift0``) until
    every ``hits[l] >= target[l]``; returns
    ``(bases uint8 (B, n), hits int64 (L,), finished bool)`` (``finished`` is False
    when ``max_bases`` was reached first)."""
    L = k.shape[0]
    kmax = 0
    for l in range(L):
        kmax = max(kmax, k[l])
    expm1eta = math.expm1(-eta / 2.0)
    log1p_tab = np.empty(kmax + 1, np.float64)
    for j in range(kmax + 1):
        log1p_tab[j] = math.log1p(math.pow(1.0 / 3.0, j) * expm1eta)
    hits = hits0.copy()
    rem = np.empty(L, np.int64)
    cap = 256
    out = np.empty((cap, n), np.uint8)
    B = 0
    sum_log = shift0
    sum_cnt = 1 if shift0 != 0.0 else 0
    prob = np.zeros(3, np.float64)
    done_all = True
    for l in range(L):
        if hits[l] < target[l]:
            done_all = False
    while not done_all:
        if B >= max_bases:
            return out[:B].copy(), hits, False
        if B == cap:
            grown = np.empty((2 * cap, n), np.uint8)
            grown[:cap] = out
            out = grown
            cap *= 2
        for l in range(L):
            rem[l] = k[l]
        shift = sum_log / sum_cnt if sum_cnt > 0 else 0.0
        sum_log = 0.0
        sum_cnt = 0
        for i in range(n):
            for pauli in range(3):
                prob[pauli] = 0.0
                for e in range(qptr[i], qptr[i + 1]):
                    l = qobs[e]
                    if target[l] <= hits[l]:
                        continue  # satisfied: its bound is 0 whatever we choose
                    base = -eta / 2.0 * hits[l]
                    r = rem[l]
                    if pauli == qlet[e] and r != _BROKEN:
                        nxt = base + log1p_tab[r - 1]
                    else:
                        nxt = base
                    cur = base + (log1p_tab[r] if r != _BROKEN else 0.0)
                    sum_log += nxt / w[l]  # two additions, in the reference's order
                    sum_log += cur / w[l]
                    sum_cnt += 2
                    prob[pauli] += 2.0 * math.exp(nxt / w[l] - shift) - 2.0 * math.exp(cur / w[l] - shift)
            best = 0
            smallest = min(prob[0], min(prob[1], prob[2]))
            for pauli in range(3):
                if prob[pauli] == smallest:
                    best = pauli
                    break
            out[B, i] = best
            for e in range(qptr[i], qptr[i + 1]):
                l = qobs[e]
                if qlet[e] == best:
                    if rem[l] != _BROKEN:
                        rem[l] -= 1
                else:
                    rem[l] = _BROKEN
        done_all = True
        for l in range(L):
            if rem[l] == 0:
                hits[l] += 1
            if hits[l] < target[l]:
                done_all = False
        B += 1
    return out[:B].copy(), hits, True
