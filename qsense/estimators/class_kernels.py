"""Sparse (basis, outcome) class counts of shadow snapshots and the pair kernel over them.

A snapshot restricted to a subsystem A of m qubits is one *class*: its basis
and bit on every qubit, ``d_q = 2*basis + bit`` in 0..5.  Classes are encoded
as base-6 integers with the first qubit of A most significant (the index of
the dense 6^m histogram of :mod:`qsense.estimators.purity`), so a key fits an
int64 up to m = 24.  :class:`ClassCounts` keeps the distinct keys seen and
their multiplicities: memory grows with the number C of distinct classes
(at most min(N, 6^m)), never with 6^m itself.

:func:`pair_row_sums` is the pair kernel of the purity U-statistic over those
classes: for every class c the row sums ``r1[c] = sum_d h_d K(c, d)`` and
the total ``sum_{c,d} h_c h_d K(c, d)^2`` with ``K = prod_q g(c_q, d_q)`` (g = 5 same
basis and bit, -4 same basis and other bit, 1/2 other basis), i.e. exactly the
entries of ``(g^{(x)m}) h`` that the dense path computes, in O(C^2 / 2) pair
evaluations.  Per pair the closed form needs only two popcounts: with the basis
codes split into two bit masks (low and high bit of the code) and the outcome
bits in a third, ``same = ~((lo_c ^ lo_d) | (hi_c ^ hi_d))``, a = |same & ~(bit_c
^ bit_d)|, b = |same & (bit_c ^ bit_d)|, and K = 5^a (-4)^b (1/2)^(m-a-b) from a
table.  A per-qubit kernel (noise-corrected shadows, :mod:`.robust`) takes the
general product loop instead.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_KEY_QUBITS", "PAULI_ROUTE_MAX", "ClassCounts", "class_keys", "decode_keys", "pair_row_sums", "pauli_row_sums"]

#: 6^24 < 2^63: base-6 keys of up to 24 qubits fit an int64
MAX_KEY_QUBITS = 24

try:  # numba is a core dependency; the NumPy fallback keeps the module importable without it
    from numba import njit

    from ._jit import _popcount64 as _popcount  # the one LLVM ctpop intrinsic the compiled kernels share

except ImportError:  # pragma: no cover - exercised only where numba is missing
    njit = None


def class_keys(classes: np.ndarray) -> np.ndarray:
    """Base-6 keys (int64 (T,)) of class rows (T, m), first column most significant."""
    c = np.asarray(classes, dtype=np.int64)
    m = c.shape[1]
    if m > MAX_KEY_QUBITS:
        raise ValueError(f"a class key holds at most {MAX_KEY_QUBITS} qubits; got {m}")
    return c @ (6 ** np.arange(m - 1, -1, -1, dtype=np.int64))


def decode_keys(keys: np.ndarray, m: int) -> np.ndarray:
    """Inverse of :func:`class_keys`: int64 (C, m) classes ``2*basis + bit``."""
    k = np.asarray(keys, dtype=np.int64)
    out = np.empty((k.size, m), dtype=np.int64)
    for q in range(m - 1, -1, -1):
        out[:, q] = k % 6
        k = k // 6
    return out


class ClassCounts:
    """Distinct class keys seen and their counts, mergeable and exact.

    New keys are buffered and folded into the sorted unique arrays lazily (when
    the buffer outgrows them, or when read), so a stream of small batches does
    not re-sort the whole table on every update.
    """

    def __init__(self, m: int) -> None:
        if not 1 <= m <= MAX_KEY_QUBITS:
            raise ValueError(f"class counts need 1..{MAX_KEY_QUBITS} qubits; got {m}")
        self.m = int(m)
        self._keys = np.zeros(0, dtype=np.int64)
        self._counts = np.zeros(0, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_size = 0

    def add_keys(self, keys: np.ndarray) -> None:
        """Count one snapshot per key."""
        if keys.size == 0:
            return
        u, c = np.unique(keys, return_counts=True)
        self._add(u, c.astype(np.int64))

    def _add(self, keys: np.ndarray, counts: np.ndarray) -> None:
        self._pending.append((keys, counts))
        self._pending_size += keys.size
        if self._pending_size > max(self._keys.size, 1 << 16):
            self._compact()

    def _compact(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self._keys] + [k for k, _ in self._pending])
        counts = np.concatenate([self._counts] + [c for _, c in self._pending])
        u, inv = np.unique(keys, return_inverse=True)
        self._keys = u
        self._counts = np.bincount(inv, weights=counts, minlength=u.size).astype(np.int64)
        self._pending, self._pending_size = [], 0

    @property
    def keys(self) -> np.ndarray:
        """Sorted distinct keys (int64 (C,))."""
        self._compact()
        return self._keys

    @property
    def counts(self) -> np.ndarray:
        """Snapshots per key (int64 (C,)), aligned with :attr:`keys`."""
        self._compact()
        return self._counts

    @property
    def distinct(self) -> int:
        """C, the number of distinct classes seen."""
        return int(self.keys.size)

    def merge(self, other: ClassCounts) -> ClassCounts:
        """Fold in another table of the same subsystem size."""
        if other.m != self.m:
            raise ValueError("cannot merge class counts of different subsystem sizes")
        self._add(other.keys.copy(), other.counts.copy())
        return self

    def dense(self) -> np.ndarray:
        """The dense 6^m histogram (only sensible for small m)."""
        h = np.zeros(6**self.m, dtype=np.int64)
        h[self.keys] = self.counts
        return h

    @classmethod
    def from_arrays(cls, m: int, keys: np.ndarray, counts: np.ndarray) -> ClassCounts:
        """From stored keys and counts (validated: sorted, unique, in range, positive)."""
        out = cls(m)
        k = np.asarray(keys)
        c = np.asarray(counts)
        if k.ndim != 1 or c.shape != k.shape or not np.issubdtype(k.dtype, np.integer) or not np.issubdtype(c.dtype, np.integer):
            raise ValueError("class counts must be two aligned 1-D integer arrays")
        if k.size and (k.min() < 0 or k.max() >= 6**m or np.any(np.diff(k) <= 0) or c.min() <= 0):
            raise ValueError("class counts: keys must be sorted, unique and in 0..6^m - 1 with positive counts")
        out._keys, out._counts = k.astype(np.int64), c.astype(np.int64)
        return out


def _masks(classes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class: low / high bit of the basis code and the outcome bit, as uint64 masks."""
    m = classes.shape[1]
    w = np.left_shift(np.uint64(1), np.arange(m, dtype=np.uint64))
    basis = classes // 2
    bit = classes % 2
    lo = ((basis & 1).astype(np.uint64) * w).sum(axis=1, dtype=np.uint64)
    hi = ((basis >> 1).astype(np.uint64) * w).sum(axis=1, dtype=np.uint64)
    ob = (bit.astype(np.uint64) * w).sum(axis=1, dtype=np.uint64)
    return lo, hi, ob


def _tables(m: int, g: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """K[a, b] = g_same^a g_diff^b g_other^(m-a-b) and its square."""
    a = np.arange(m + 1)[:, None]
    b = np.arange(m + 1)[None, :]
    rest = np.maximum(m - a - b, 0)
    K = np.where(a + b <= m, g[0] ** a * g[1] ** b * g[2] ** rest, 0.0)
    return K, K * K


def _pair_rows_py(lo, hi, ob, h, K, K2, full, r1):
    stride = int(full).bit_count() + 1
    total2 = 0.0
    for i in range(lo.size):
        same = ~((lo[i] ^ lo) | (hi[i] ^ hi)) & full
        x = ob[i] ^ ob
        b = np.bitwise_count(same & x).astype(np.int64)
        idx = (np.bitwise_count(same).astype(np.int64) - b) * stride + b
        r1[i] = np.dot(h, K[idx])
        total2 += h[i] * np.dot(h, K2[idx])
    return total2


def _pair_rows_loop(lo, hi, ob, h, K, K2, full, r1):
    # symmetric half: every unordered pair once, both rows of G h updated; of G^2 h only
    # the total h . (G^2 h) is needed.  K, K2 are flat tables indexed a * (m + 1) + b
    C = lo.size
    m = _popcount(full)
    stride = m + 1
    total2 = 0.0
    for i in range(C):
        li, hii, oi, hi_w = lo[i], hi[i], ob[i], h[i]
        s1 = 0.0
        s2 = 0.0
        for j in range(i + 1, C):
            same = ~((li ^ lo[j]) | (hii ^ hi[j])) & full
            b = _popcount(same & (oi ^ ob[j]))
            idx = (_popcount(same) - b) * stride + b
            hj = h[j]
            k = K[idx]
            s1 += hj * k
            s2 += hj * K2[idx]
            r1[j] += hi_w * k
        r1[i] += s1 + hi_w * K[m * stride]
        total2 += hi_w * (2.0 * s2 + hi_w * K2[m * stride])
    return total2


def _general_rows_loop(cls, h, g, g2, r1):
    # per-qubit kernels g[q] (6x6): no popcount shortcut, m products per pair
    C, m = cls.shape
    total2 = 0.0
    for i in range(C):
        s1 = 0.0
        s2 = 0.0
        for j in range(i, C):
            k = 1.0
            k2 = 1.0
            for q in range(m):
                k *= g[q, cls[i, q], cls[j, q]]
                k2 *= g2[q, cls[i, q], cls[j, q]]
            if j == i:
                s1 += h[i] * k
                total2 += h[i] * h[i] * k2
            else:
                s1 += h[j] * k
                s2 += h[j] * k2
                r1[j] += h[i] * k
        r1[i] += s1
        total2 += 2.0 * h[i] * s2
    return total2


if njit is not None:
    _pair_rows = njit(cache=True, nogil=True)(_pair_rows_loop)
    _general_rows = njit(cache=True, nogil=True)(_general_rows_loop)
else:  # pragma: no cover
    _pair_rows = None
    _general_rows = None


def pair_row_sums(counts: ClassCounts, g: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """``(h, r1, hr2)`` over the distinct classes: counts h, the row sums r1 = G h and
    the total ``hr2 = h . (G^2 h)`` (G^2 elementwise), in C^2 / 2 pair evaluations.

    ``g``: None for the standard kernel (5, -4, 1/2 on every qubit), or per-qubit
    kernels float64 (m, 6, 6).  Diagonal pairs (c, c) are included, as in the
    dense ``(g^{(x)m}) h``; the caller removes the i = j terms.
    """
    m = counts.m
    h = counts.counts.astype(np.float64)
    classes = decode_keys(counts.keys, m)
    r1 = np.zeros(h.size)
    if g is None:
        lo, hi, ob = _masks(classes)
        K, K2 = (t.reshape(-1) for t in _tables(m, (5.0, -4.0, 0.5)))
        full = np.uint64((1 << m) - 1)
        rows = _pair_rows if _pair_rows is not None else _pair_rows_py
        hr2 = rows(lo, hi, ob, h, K, K2, full, r1)
    else:
        g = np.ascontiguousarray(g, dtype=np.float64)
        if g.shape != (m, 6, 6):
            raise ValueError(f"per-qubit kernels must have shape ({m}, 6, 6); got {g.shape}")
        rows = _general_rows if _general_rows is not None else _general_rows_loop
        hr2 = rows(classes, h, g, g * g, r1)
    return h, r1, float(hr2)

#: the Pauli route scatters into two dense 4^m arrays; beyond 4^10 (8 MB each) every
#: scatter is a cache miss and the route is slower than the pair kernel (measured 37 s at m = 12)
PAULI_ROUTE_MAX = 10


def _pauli_sums_loop(off, sgn, toggle, h, S, n):
    # every class adds its 2^m matched Paulis, enumerated in Gray-code order so that
    # each step toggles one qubit of the support (Huang's reference does the same);
    # off[c, q] = (basis + 1) 4^(m-1-q) is qubit q's digit of the Pauli index
    C, m = off.shape
    for c in range(C):
        enc = 0
        val = h[c]
        w = h[c]
        S[0] += w
        n[0] += w
        member = 0
        for b in range(1, 1 << m):
            i = toggle[b]
            member ^= 1 << i
            if (member >> i) & 1:
                enc += off[c, i]
                val *= 3.0 * sgn[c, i]
            else:
                enc -= off[c, i]
                val *= sgn[c, i] / 3.0
            S[enc] += val
            n[enc] += w


def _pauli_rows_loop(off, sgn, toggle, S, r1):
    C, m = off.shape
    for c in range(C):
        enc = 0
        val = 1.0
        acc = S[0]
        member = 0
        for b in range(1, 1 << m):
            i = toggle[b]
            member ^= 1 << i
            if (member >> i) & 1:
                enc += off[c, i]
                val *= 3.0 * sgn[c, i]
            else:
                enc -= off[c, i]
                val *= sgn[c, i] / 3.0
            acc += val * S[enc]
        r1[c] = acc / 2.0**m


if njit is not None:
    _pauli_sums = njit(cache=True, nogil=True)(_pauli_sums_loop)
    _pauli_rows = njit(cache=True, nogil=True)(_pauli_rows_loop)
else:  # pragma: no cover
    _pauli_sums, _pauli_rows = _pauli_sums_loop, _pauli_rows_loop


def pauli_row_sums(counts: ClassCounts) -> tuple[np.ndarray, np.ndarray, float]:
    """``(h, r1, hr2)`` by the Pauli route, O(C 2^m + 4^m) instead of O(C^2) (m <= 10).

    The kernel is ``K(c, d) = 2^-m sum_P x_c(P) x_d(P)`` (x the 3^|P|-weighted
    snapshot estimate), so ``r1[c] = 2^-m sum_{P matched by c} x_c(P) S_P`` with
    the Pauli sums S_P: exact.  ``hr2`` stands for ``h . (G^2 h)``, which has no
    such factorisation; it is replaced by an unbiased estimate of the same
    expectation, ``E[K^2] = 7^m sum_P 14^-|P| tr(P rho)^2``, from the per-Pauli
    U-statistics (S_P^2 - 9^|P| n_P): the error bar's zeta2 term then differs
    from the pair path's by sampling noise only.
    """
    m = counts.m
    if m > PAULI_ROUTE_MAX:
        raise ValueError(f"the Pauli route holds 4^m sums; m = {m} exceeds {PAULI_ROUTE_MAX}")
    h = counts.counts.astype(np.float64)
    classes = decode_keys(counts.keys, m)
    off = np.ascontiguousarray((classes // 2 + 1) * 4 ** np.arange(m - 1, -1, -1, dtype=np.int64))
    sgn = np.ascontiguousarray(1.0 - 2.0 * (classes % 2))
    b = np.arange(1 << m, dtype=np.int64)
    gray = b ^ (b >> 1)
    toggle = np.zeros(1 << m, dtype=np.int64)  # the qubit Gray step b toggles
    toggle[1:] = np.log2((gray[1:] ^ gray[:-1]).astype(np.float64)).astype(np.int64)
    S = np.zeros(4**m)
    n = np.zeros(4**m)
    _pauli_sums(off, sgn, toggle, h, S, n)
    r1 = np.empty(h.size)
    _pauli_rows(off, sgn, toggle, S, r1)
    weight = np.zeros(4**m, dtype=np.int64)
    idx = np.arange(4**m, dtype=np.int64)
    for _ in range(m):
        weight += (idx % 4 != 0)
        idx //= 4
    N = h.sum()
    w = 7.0 ** (m - weight) * 0.5**weight
    hr2 = float(w @ (S * S - 9.0**weight * n)) + 25.0**m * N
    return h, r1, hr2
