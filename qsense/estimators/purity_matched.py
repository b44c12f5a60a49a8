"""Matched-term purity: tr(rho_A^2) from per-Pauli U-statistics over matching snapshots.

The pair U-statistic of :mod:`.purity` weights every Pauli P on A by the
*expected* number of snapshots whose bases match it (N 3^-|P|); this form uses
the *observed* number n_P instead, which is what Huang's reference program
(``prediction_shadow -e``) does:

    tr rho_A^2 = 2^-|A| sum_P tr(P rho)^2,
    tr(P rho)^2 ~ t_P = (s_P^2 - n_P) / (n_P (n_P - 1))      (n_P >= 2)

with s_P the sum of the parities (+-1) of the n_P matching snapshots.  Given
the bases (which do not depend on the state) the matching outcomes are i.i.d.
with mean tr(P rho), so t_P is an unbiased U-statistic of tr(P rho)^2
conditionally on n_P, and conditioning removes the variance the random n_P adds
to the pair U-statistic (about 4 tr(P rho)^4 3^|P| / N per term: large for
nearly pure subsystems).  Paulis with n_P < 2 have no estimate; like the
reference, each weight level's sum is scaled by (Paulis of that weight) /
(Paulis of that weight with an estimate), which is unbiased only when every
Pauli has n_P >= 2 (N >> 3^|A|) and is reported otherwise in ``complete``.

n_P and s_P come from the dense 6^|A| class histogram by two 4x6 transforms per
axis; the error bar is the delete-one jackknife over snapshots, computed per
distinct class (a snapshot changes only the 2^|A| Paulis it matches), so the
cost is O(4^|A| |A| + C 2^|A|) for C distinct classes.  |A| <= :data:`MATCHED_MAX`.
"""

from __future__ import annotations

import math

import numpy as np

from .class_kernels import ClassCounts, decode_keys

__all__ = ["MATCHED_MAX", "matched_purity", "pauli_counts"]

#: 4^8 Paulis and a 6^8 histogram (1.7 M counts) are the most this form enumerates
MATCHED_MAX = 8

# rows I, X, Y, Z; columns class 2*basis + bit
_MATCH = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]], dtype=np.float64)
_SIGN = _MATCH * np.array([1, -1, 1, -1, 1, -1], dtype=np.float64)
_SIGN[0] = 1.0  # the identity letter carries no parity


def _axes(h: np.ndarray, mat: np.ndarray, m: int) -> np.ndarray:
    """Apply mat (4x6) along each of the m base-6 axes of h: a 4^m vector."""
    v = h.reshape((6,) * m)
    for axis in range(m):
        v = np.moveaxis(np.tensordot(mat, v, axes=([1], [axis])), 0, axis)
    return v.reshape(-1)


def pauli_counts(counts: ClassCounts) -> tuple[np.ndarray, np.ndarray]:
    """(n_P, s_P) for all 4^m Paulis on the subsystem (base-4 digits I, X, Y, Z, first
    qubit most significant): matching snapshots and the sum of their parities."""
    m = counts.m
    if m > MATCHED_MAX:
        raise ValueError(f"the matched-term form enumerates 4^|A| Paulis; |A| = {m} exceeds {MATCHED_MAX}")
    h = counts.dense().astype(np.float64)
    return np.rint(_axes(h, _MATCH, m)), np.rint(_axes(h, _SIGN, m))


def _weights(m: int) -> np.ndarray:
    digits = decode_base(np.arange(4**m), m, 4)
    return (digits != 0).sum(axis=1)


def decode_base(idx: np.ndarray, m: int, base: int) -> np.ndarray:
    """Digits (len(idx), m) of idx in the given base, first digit most significant."""
    out = np.empty((idx.size, m), dtype=np.int64)
    k = np.asarray(idx, dtype=np.int64).copy()
    for q in range(m - 1, -1, -1):
        out[:, q] = k % base
        k //= base
    return out


def _terms(n: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = n >= 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(ok, (s * s - n) / (n * (n - 1.0)), 0.0)
    return t, ok


def _combine(level_sum: np.ndarray, level_avail: np.ndarray, level_total: np.ndarray, m: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(level_avail > 0, level_sum * level_total / np.maximum(level_avail, 1), 0.0)
    return scaled.sum(axis=-1) / 2.0**m


def matched_purity(counts: ClassCounts, *, return_complete: bool = False) -> tuple[float, float] | tuple[float, float, bool]:
    """Matched-term purity and its jackknife standard error from class counts.

    ``return_complete`` adds whether every Pauli had an estimate (n_P >= 2), the
    condition for the estimate to be exactly unbiased.
    """
    m = counts.m
    N = int(counts.counts.sum())
    if N < 3:
        raise ValueError("the matched-term purity needs at least three snapshots")
    n, s = pauli_counts(counts)
    w = _weights(m)
    t, ok = _terms(n, s)
    level_total = np.bincount(w, minlength=m + 1).astype(np.float64)
    level_sum = np.bincount(w, weights=t, minlength=m + 1)
    level_avail = np.bincount(w, weights=ok.astype(np.float64), minlength=m + 1)
    value = float(_combine(level_sum, level_avail, level_total, m))

    # delete-one jackknife, one row per distinct class (all snapshots of a class give the same value)
    classes = decode_keys(counts.keys, m)
    basis, bit = classes // 2, classes % 2
    subsets = decode_base(np.arange(2**m), m, 2)  # (2^m, m) membership
    sub_w = subsets.sum(axis=1)
    onehot = np.zeros((2**m, m + 1))
    onehot[np.arange(2**m), sub_w] = 1.0
    place = 4 ** np.arange(m - 1, -1, -1, dtype=np.int64)
    h = counts.counts.astype(np.float64)
    loo = np.empty(h.size)
    chunk = max(1, (1 << 21) // 2**m)
    for lo in range(0, h.size, chunk):
        b, o = basis[lo : lo + chunk], bit[lo : lo + chunk]
        idx = (subsets[None, :, :] * (b[:, None, :] + 1)) @ place  # (c, 2^m) matched Pauli per subset
        sign = 1.0 - 2.0 * ((subsets[None, :, :] * o[:, None, :]).sum(axis=2) % 2)
        n2, s2 = n[idx] - 1.0, s[idx] - sign
        t2, ok2 = _terms(n2, s2)
        d_sum = (t2 - t[idx]) @ onehot
        d_avail = (ok2.astype(np.float64) - ok[idx]) @ onehot
        loo[lo : lo + chunk] = _combine(level_sum + d_sum, level_avail + d_avail, level_total, m)
    mean = float(h @ loo) / N
    var = (N - 1.0) / N * float(h @ (loo - mean) ** 2)
    se = math.sqrt(max(var, 0.0))
    if return_complete:
        return value, se, bool(ok.all())
    return value, se
