"""Compiled prefix-tree sampler of random-Pauli shadows of a pure state (large n).

:func:`sample_pure_shadows` draws exact classical-shadow snapshots of a 2^n
statevector for registers too large for the 6^n class table (n = 16 ... 24 and
beyond, as far as the statevector fits in memory).

Algorithm
---------
The random bases are drawn first (they do not depend on the state), and the
shots are sorted by their basis string, wire 0 first.  Shots that agree on the
bases *and* outcomes of wires 0..q-1 share the collapsed state of wires
q..n-1, so the sampler walks a prefix tree, depth first, one node per distinct
(basis, outcome) prefix:

* a node holds the unnormalised state of its remaining m wires (2^m amplitudes)
  and the three numbers that fix the Born marginal of its next wire for every
  basis: ``n0 = |a0|^2``, ``n1 = |a1|^2`` and ``c = <a0, a1>`` of its two halves
  (``p(X=+1) = (n0 + n1 + 2 Re c) / 2N``, ``p(Y=+1) = (N + 2 Im c) / 2N``,
  ``p(Z=+1) = n0 / N``);
* every shot of the node compares its own fresh uniform with the marginal of its
  basis, which gives its outcome exactly; a stable partition by outcome inside
  each basis group keeps the children's shots contiguous *and* still sorted by
  their remaining bases;
* a Z child is a view of one half of its parent (no copy); an X/Y child
  ``a0 + w a1`` (w = +-1, -+i; the common 1/sqrt2 is dropped) is written into the
  buffer of its depth, and its own ``n0, n1, c`` are summed in the same pass.

Work per node is one pass over its 2^m amplitudes, so the top levels cost a few
passes over the state for all shots together and the deep levels (one shot per
node) cost ~2^(m+1) per shot.  Only one root-to-leaf path of buffers is alive:
depth d owns 2^(n-d) amplitudes, 2^n - 2 in all, so the memory is one extra
state-sized complex128 array plus O(shots x n) bytes.  The uniform a shot uses
at wire q is the q-th row entry of its current *position*: positions are
assigned by earlier draws only, so each shot still gets an independent uniform
and the law is exactly the Born rule.

*Cache sets.*  A pass streams six blocks per plane (the node's four quarters and
the child's two halves), all at power-of-two distances, hence in the same L1/L2
cache sets; with the real and imaginary planes page-aligned as well, twelve
streams shared one set of an 8-way cache and a pass ran at ~0.75 ns per
amplitude instead of ~0.33.  The two planes of the state, and of the work
buffers, are therefore one allocation each, the second plane starting an odd
number of cache lines (not a multiple of 4 KiB) after the first ends.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["MAX_CHUNK_SHOTS", "PureShadowTree", "sample_pure_shadows"]

#: shots per tree run: more shots share more of the tree (faster per snapshot);
#: the per-shot arrays cost ~ (8 n + 24) bytes each
MAX_CHUNK_SHOTS = 1 << 18


# The loops index views that start at 0, so the compiled code needs no negative-index
# fix-ups and LLVM vectorises them (about 2.5x faster than indexing at an offset).
@njit(cache=True, nogil=True, fastmath=True)
def _halves(re: np.ndarray, im: np.ndarray, off: int, size: int) -> tuple[float, float, float, float]:
    """n0, n1, Re c, Im c (c = <a0, a1>) of the two halves of the amplitudes [off, off + size)."""
    h = size >> 1
    xr = re[off : off + h]
    xi = im[off : off + h]
    yr = re[off + h : off + size]
    yi = im[off + h : off + size]
    n0 = 0.0
    n1 = 0.0
    cr = 0.0
    ci = 0.0
    for i in range(h):
        n0 += xr[i] * xr[i] + xi[i] * xi[i]
        n1 += yr[i] * yr[i] + yi[i] * yi[i]
        cr += xr[i] * yr[i] + xi[i] * yi[i]
        ci += xr[i] * yi[i] - xi[i] * yr[i]
    return n0, n1, cr, ci


@njit(cache=True, nogil=True, fastmath=True)
def _mix(
    sre: np.ndarray, sim: np.ndarray, soff: int, h: int, p: float, q: float, dre: np.ndarray, dim: np.ndarray, doff: int
) -> tuple[float, float, float, float]:
    """Child a0 + (p - i q) a1 of the node [soff, soff + 2h) written to [doff, doff + h)
    (X: p = +-1, q = 0; Y: p = 0, q = +-1); returns n0, n1, Re c, Im c of the child's
    halves, summed in the same pass."""
    g = h >> 1
    a, b = soff, soff + h
    x0r = sre[a : a + g]
    x0i = sim[a : a + g]
    y0r = sre[a + g : a + h]
    y0i = sim[a + g : a + h]
    x1r = sre[b : b + g]
    x1i = sim[b : b + g]
    y1r = sre[b + g : b + h]
    y1i = sim[b + g : b + h]
    oxr = dre[doff : doff + g]
    oxi = dim[doff : doff + g]
    oyr = dre[doff + g : doff + h]
    oyi = dim[doff + g : doff + h]
    n0 = 0.0
    n1 = 0.0
    cr = 0.0
    ci = 0.0
    for i in range(g):
        xr = x0r[i] + p * x1r[i] + q * x1i[i]
        xi = x0i[i] + p * x1i[i] - q * x1r[i]
        yr = y0r[i] + p * y1r[i] + q * y1i[i]
        yi = y0i[i] + p * y1i[i] - q * y1r[i]
        oxr[i] = xr
        oxi[i] = xi
        oyr[i] = yr
        oyi[i] = yi
        n0 += xr * xr + xi * xi
        n1 += yr * yr + yi * yi
        cr += xr * yr + xi * yi
        ci += xr * yi - xi * yr
    return n0, n1, cr, ci


#: float64 entries between the end of the real plane and the start of the imaginary one:
#: 37 cache lines, so the planes' streams fall on different cache sets (module docstring)
_PLANE_SKEW = 37 * 8


def _planes(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Two float64 planes of ``size`` entries, the second starting _PLANE_SKEW entries after
    the first ends (one allocation)."""
    buf = np.empty(2 * size + _PLANE_SKEW)
    return buf[:size], buf[size + _PLANE_SKEW :]


#: per class 2*basis + bit of an X/Y child a0 + (p - i q) a1 (sqrt2 <b| = (1, p - i q))
_P = np.array([1.0, -1.0, 0.0, 0.0, 0.0, 0.0])
_Q = np.array([0.0, 0.0, 1.0, -1.0, 0.0, 0.0])


@njit(cache=True, nogil=True)
def _run(pre_, pim, wre, wim, key, u, pow3, ocode_out, ptab, qtab):
    n = pow3.shape[0]
    T = key.shape[0]
    order = np.arange(T).astype(np.int64)
    tmp_o = np.empty(T, np.int64)
    tmp_k = np.empty(T, np.int64)
    # per depth: node state location (0 = psi, 1 = work) and offset, marginals, shot range,
    # outcome prefix, class ranges and the next class to visit
    where = np.zeros(n, np.int64)
    off = np.zeros(n, np.int64)
    m0 = np.zeros(n)
    m1 = np.zeros(n)
    mc = np.zeros(n, np.complex128)
    lo = np.zeros(n, np.int64)
    hi = np.zeros(n, np.int64)
    pre = np.zeros(n, np.int64)
    cs = np.zeros((n, 6), np.int64)
    ce = np.zeros((n, 6), np.int64)
    nxt = np.zeros(n, np.int64)
    region = np.zeros(n + 1, np.int64)  # work offset owned by depth d (d >= 1)
    for d in range(1, n):
        region[d + 1] = region[d] + (np.int64(1) << (n - d))
    N = pre_.shape[0]
    a, b, cr, ci = _halves(pre_, pim, 0, N)
    m0[0], m1[0], mc[0] = a, b, complex(cr, ci)
    lo[0], hi[0] = 0, T
    d = 0
    fresh = True
    while d >= 0:
        if fresh:
            # split this node's shots by basis (already grouped) and outcome (stable)
            fresh = False
            p = pow3[n - 1 - d]
            n0, n1, cc = m0[d], m1[d], mc[d]
            tot = n0 + n1
            s = lo[d]
            e = hi[d]
            i = s
            for bq in range(3):
                g0 = i
                while i < e and (key[i] // p) % 3 == bq:
                    i += 1
                g1 = i
                if bq == 0:
                    thr = 0.5 * (tot + 2.0 * cc.real)
                elif bq == 1:
                    thr = 0.5 * (tot + 2.0 * cc.imag)
                else:
                    thr = n0
                row = u[d]
                z = g0
                w = 0
                for j in range(g0, g1):
                    if row[j] * tot >= thr:  # outcome 1 (eigenvalue -1)
                        tmp_o[w] = order[j]
                        tmp_k[w] = key[j]
                        w += 1
                    else:
                        order[z] = order[j]
                        key[z] = key[j]
                        z += 1
                for j in range(w):
                    order[z + j] = tmp_o[j]
                    key[z + j] = tmp_k[j]
                cs[d, 2 * bq] = g0
                ce[d, 2 * bq] = z
                cs[d, 2 * bq + 1] = z
                ce[d, 2 * bq + 1] = g1
            if d == n - 1:
                for k in range(6):
                    code = pre[d] * 2 + (k & 1)
                    for j in range(cs[d, k], ce[d, k]):
                        ocode_out[order[j]] = code
                nxt[d] = 6
            else:
                nxt[d] = 0
        if nxt[d] >= 6:
            d -= 1
            continue
        k = nxt[d]
        nxt[d] += 1
        if cs[d, k] == ce[d, k]:
            continue
        size = np.int64(1) << (n - d)
        h = size >> 1
        if where[d] == 0:
            sre, sim = pre_, pim
        else:
            sre, sim = wre, wim
        if k >= 4:  # Z: a view of one half
            where[d + 1] = where[d]
            off[d + 1] = off[d] + (k & 1) * h
            a, b, cr, ci = _halves(sre, sim, off[d + 1], h)
        else:
            where[d + 1] = 1
            off[d + 1] = region[d + 1]
            a, b, cr, ci = _mix(sre, sim, off[d], h, ptab[k], qtab[k], wre, wim, region[d + 1])
        m0[d + 1], m1[d + 1], mc[d + 1] = a, b, complex(cr, ci)
        lo[d + 1] = cs[d, k]
        hi[d + 1] = ce[d, k]
        pre[d + 1] = pre[d] * 2 + (k & 1)
        d += 1
        fresh = True


def _bits(code: np.ndarray, n: int) -> np.ndarray:
    """uint8 (T, n) bits of ``code``, wire 0 the most significant."""
    shifts = np.arange(n - 1, -1, -1, dtype=np.int64)
    return ((code[:, None] >> shifts) & 1).astype(np.uint8)


class PureShadowTree:
    """Repeated exact random-Pauli snapshots of one normalised statevector.

    ``psi`` complex128 (2^n,), wire 0 the most significant bit; n <= 39.  Holds
    the state as two float64 planes (real, imaginary) and the per-depth work
    buffers (2^n - 2 amplitudes), so the memory is two state-sized arrays beyond
    the caller's; :meth:`sample` adds O(shots x n) bytes per run of at most
    :data:`MAX_CHUNK_SHOTS` shots.
    """

    def __init__(self, psi: np.ndarray) -> None:
        psi = np.asarray(psi, dtype=np.complex128)
        n = psi.shape[0].bit_length() - 1
        if psi.ndim != 1 or psi.shape[0] != 1 << n or n < 1:
            raise ValueError(f"statevector must have 2^n entries with n >= 1; got shape {psi.shape}")
        if n > 39:
            raise ValueError(f"pure-state shadows support n <= 39 qubits; got n = {n}")
        self.n = n
        self._re, self._im = _planes(psi.shape[0])
        self._re[:] = psi.real
        self._im[:] = psi.imag
        self._wre, self._wim = _planes(max(psi.shape[0] - 2, 1))
        self._pow3 = 3 ** np.arange(n, dtype=np.int64)
        self._weights = self._pow3[::-1].copy()

    def sample(self, shots: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (shots, n) bases (0 = X, 1 = Y, 2 = Z) and outcomes (0 = eigenvalue +1),
        in draw order.  Each run of shots draws its bases, sorts them, and walks the
        prefix tree (module docstring)."""
        n = self.n
        bases = np.empty((shots, n), np.uint8)
        outcomes = np.empty((shots, n), np.uint8)
        for lo in range(0, shots, MAX_CHUNK_SHOTS):
            hi = min(shots, lo + MAX_CHUNK_SHOTS)
            T = hi - lo
            b = rng.integers(0, 3, size=(T, n), dtype=np.uint8)
            key = b.astype(np.int64) @ self._weights
            order = np.argsort(key, kind="stable")
            skey = np.ascontiguousarray(key[order])
            u = rng.random((n, T))
            ocode = np.empty(T, np.int64)
            _run(self._re, self._im, self._wre, self._wim, skey, u, self._pow3, ocode, _P, _Q)
            back = np.empty(T, np.int64)
            back[order] = ocode  # ocode is indexed by sorted position; back to draw order
            bases[lo:hi] = b
            outcomes[lo:hi] = _bits(back, n)
        return bases, outcomes


def sample_pure_shadows(psi: np.ndarray, shots: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Exact random-Pauli snapshots of a normalised statevector: uint8 (shots, n)
    bases and outcomes (see :class:`PureShadowTree`)."""
    return PureShadowTree(psi).sample(int(shots), rng)
