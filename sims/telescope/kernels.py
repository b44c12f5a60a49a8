"""Compiled (numba) per-shot loops of the single-excitation shadow and Bell samplers.

The recursions are those of :func:`~qsense.sims.telescope.samplers.shadows_from_amplitudes`
and :func:`~qsense.sims.telescope.samplers.bell_from_amplitudes` (derivations there and
in ``docs/telescope.md``): a shot is an O(M) loop over the qubits on a handful of
complex scalars.  The shadow kernel runs blocks of shots through each qubit together
in a branch-free loop that LLVM vectorises (about 3 ns per qubit and shot); the Bell
kernel runs shot by shot.  Neither makes (T, M) temporaries beyond its inputs and
output.  The running coefficients are kept unnormalised (every outcome test
compares ratios) and rescaled only when they shrink towards underflow.

Each kernel reads one float64 uniform per shot and qubit.  For the shadow sampler
with random bases the basis and the outcome uniform come from the same double
``U``: ``basis = floor(3 U)`` and ``u = 3 U - basis`` are independent, the basis
uniform on {0, 1, 2} and ``u`` uniform on [0, 1) (to the 2^-51 grid of a double),
which halves the random numbers drawn.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["bell_kernel", "rotate_kernel", "shadow_kernel"]

_SQ2 = 1.0 / math.sqrt(2.0)
#: rescale the running coefficients when the selected branch weight drops below this
_TINY = 1e-150


#: fill a block qubit by qubit (rows of the block stay in L1) up to this many qubits, else
#: shot by shot: 1.2x faster at M = 64, 0.9x at M = 256
_COLUMN_FILL_MAX = 128
#: shots measured together: the per-qubit update runs over a block of shots as one
#: vectorised, branch-free loop (the outcome and basis tests of one shot at a time are
#: unpredictable branches, ~3x slower)
_BLOCK = 32


@njit(cache=True, nogil=True, fastmath=True)
def _qubit_loop(M, xr_, xi_, rr, ix, iy, uu, ar, ai, cr, ci, res):  # pragma: no cover - compiled
    """Measure qubits 0..M-1 of a block of shots (arrays (M, _BLOCK): beta_q, rest_q,
    basis indicators X / Y, uniforms; state alpha, c per shot; outcomes 0.0 / 1.0)."""
    for q in range(M):
        xr = xr_[q]
        xi = xi_[q]
        r = rr[q]
        isx = ix[q]
        isy = iy[q]
        uq = uu[q]
        rs = res[q]
        for j in range(_BLOCK):
            cbr = cr[j] * xr[j] - ci[j] * xi[j]  # c beta_q
            cbi = cr[j] * xi[j] + ci[j] * xr[j]
            cc = (cr[j] * cr[j] + ci[j] * ci[j]) * r[j]
            nz = isx[j] + isy[j]
            isz = 1.0 - nz
            # X: t = c beta_q, Y: t = -i c beta_q; outcome 0 -> alpha + t, 1 -> alpha - t (the
            # common 1/sqrt2 dropped).  Z: outcome 0 -> alpha, 1 -> c beta_q with c -> 0.
            tr = isx[j] * cbr + isy[j] * cbi
            ti = isx[j] * cbi - isy[j] * cbr
            a0r = ar[j] + tr
            a0i = ai[j] + ti
            a1r = nz * (ar[j] - tr) + isz * cbr
            a1i = nz * (ai[j] - ti) + isz * cbi
            p0 = a0r * a0r + a0i * a0i + cc
            p1 = a1r * a1r + a1i * a1i + nz * cc
            sf = 1.0 if uq[j] * (p0 + p1) >= p0 else 0.0
            ar[j] = a0r + sf * (a1r - a0r)
            ai[j] = a0i + sf * (a1i - a0i)
            k = 1.0 - sf * isz
            cr[j] = cr[j] * k
            ci[j] = ci[j] * k
            rs[j] = sf
        if (q & 31) == 31:
            # renormalise: X/Y steps drop a 1/sqrt2, so unnormalised coefficients drift by
            # up to 2^(q/2) and would overflow (or underflow) over thousands of qubits
            for j in range(_BLOCK):
                g = ar[j] * ar[j] + ai[j] * ai[j] + (cr[j] * cr[j] + ci[j] * ci[j]) * rr[q, j]
                f = 1.0 / math.sqrt(g) if g > 0.0 else 1.0
                ar[j] *= f
                ai[j] *= f
                cr[j] *= f
                ci[j] *= f


@njit(cache=True, inline="always")
def _start_lane(ar, ai, cr, ci, j, x, rest):  # pragma: no cover - compiled
    """Start lane ``j`` of a block at ``alpha = x / |v|``, ``c = 1 / |v|`` (``x`` the vacuum
    amplitude, ``rest`` the norm squared of the excitation amplitudes); returns 1 for an
    all-zero vector (then started with the norm taken as 1), else 0."""
    nrm = rest + x.real * x.real + x.imag * x.imag
    z = 0
    if nrm == 0.0:
        z = 1
        nrm = 1.0
    s = 1.0 / math.sqrt(nrm)
    ar[j] = x.real * s
    ai[j] = x.imag * s
    cr[j] = s
    ci[j] = 0.0
    return z


@njit(cache=True, nogil=True)
def shadow_kernel(amps, bases, u, draw_bases, out_bases, out):  # pragma: no cover - compiled
    """Outcomes uint8 (T, M) of random-Pauli measurements of per-shot vectors.

    ``amps`` complex128 (T, M+1) (column 0 vacuum; any norm), ``u`` float64 (T, M).
    With ``draw_bases`` the bases come from ``u`` (module docstring) and are written to
    ``out_bases``; otherwise ``bases`` uint8 (T, M) are used.  Returns the number of
    all-zero vectors.
    """
    T, M1 = amps.shape
    M = M1 - 1
    S = _BLOCK
    xr = np.zeros((M, S))
    xi = np.zeros((M, S))
    rr = np.zeros((M, S))
    ix = np.zeros((M, S))
    iy = np.zeros((M, S))
    uu = np.zeros((M, S))
    res = np.zeros((M, S))
    ar = np.empty(S)
    ai = np.empty(S)
    cr = np.empty(S)
    ci = np.empty(S)
    zero = 0
    acc = np.zeros(S)
    for t0 in range(0, T, S):
        L = min(S, T - t0)
        if M <= _COLUMN_FILL_MAX:
            # fill the (M, S) block qubit by qubit: contiguous writes along the shots, and the
            # S amplitude rows being read stay in L1 while q sweeps
            acc[:] = 0.0
            for q in range(M - 1, -1, -1):  # rest_q = sum_{j > q} |beta_j|^2
                for j in range(L):
                    x = amps[t0 + j, q + 1]
                    xr[q, j] = x.real
                    xi[q, j] = x.imag
                    rr[q, j] = acc[j]
                    acc[j] += x.real * x.real + x.imag * x.imag
            for j in range(L):
                zero += _start_lane(ar, ai, cr, ci, j, amps[t0 + j, 0], acc[j])
            if draw_bases:
                for q in range(M):
                    for j in range(L):
                        y = 3.0 * u[t0 + j, q]  # < 3: a double below 1, times 3, rounds below 3
                        b = int(y)
                        uu[q, j] = y - b
                        fb = np.float64(b)
                        # indicators of X (b = 0) and Y (b = 1) as polynomials: no branches
                        ix[q, j] = 0.5 * (1.0 - fb) * (2.0 - fb)
                        iy[q, j] = fb * (2.0 - fb)
                for j in range(L):
                    brow = out_bases[t0 + j]
                    for q in range(M):
                        brow[q] = np.uint8(2.0 - 2.0 * ix[q, j] - iy[q, j])
            else:
                for q in range(M):
                    for j in range(L):
                        fb = np.float64(bases[t0 + j, q])
                        uu[q, j] = u[t0 + j, q]
                        ix[q, j] = 0.5 * (1.0 - fb) * (2.0 - fb)
                        iy[q, j] = fb * (2.0 - fb)
        else:  # long rows: fill shot by shot (the S rows of a block would not fit in L1)
            for j in range(L):
                row = amps[t0 + j]
                urow = u[t0 + j]
                a = 0.0
                for q in range(M - 1, -1, -1):  # rest_q = sum_{j > q} |beta_j|^2
                    x = row[q + 1]
                    xr[q, j] = x.real
                    xi[q, j] = x.imag
                    rr[q, j] = a
                    a += x.real * x.real + x.imag * x.imag
                zero += _start_lane(ar, ai, cr, ci, j, row[0], a)
                if draw_bases:
                    brow = out_bases[t0 + j]
                    for q in range(M):
                        y = 3.0 * urow[q]  # < 3: a double below 1, times 3, rounds below 3
                        b = int(y)
                        brow[q] = b
                        uu[q, j] = y - b
                        fb = np.float64(b)
                        # indicators of X (b = 0) and Y (b = 1) as polynomials: no branches
                        ix[q, j] = 0.5 * (1.0 - fb) * (2.0 - fb)
                        iy[q, j] = fb * (2.0 - fb)
                else:
                    brow = bases[t0 + j]
                    for q in range(M):
                        fb = np.float64(brow[q])
                        uu[q, j] = urow[q]
                        ix[q, j] = 0.5 * (1.0 - fb) * (2.0 - fb)
                        iy[q, j] = fb * (2.0 - fb)
        for j in range(L, S):  # idle lanes of a short last block
            ar[j] = 1.0
            ai[j] = 0.0
            cr[j] = 0.0
            ci[j] = 0.0
        _qubit_loop(M, xr, xi, rr, ix, iy, uu, ar, ai, cr, ci, res)
        for j in range(L):
            orow = out[t0 + j]
            for q in range(M):
                orow[q] = np.uint8(res[q, j])
    return zero


@njit(cache=True, nogil=True)
def bell_kernel(A, B, u, out):  # pragma: no cover - compiled
    """Bell codes uint8 (T, M) of two independent per-shot single-excitation copies
    (``A``, ``B`` complex128 (T, M+1), any norm; ``u`` float64 (T, M)).  Returns the
    number of shots with an all-zero vector."""
    T, M1 = A.shape
    M = M1 - 1
    rA = np.empty(M)
    rB = np.empty(M)
    zero = 0
    for t in range(T):
        accA = 0.0
        accB = 0.0
        for q in range(M - 1, -1, -1):
            rA[q] = accA
            rB[q] = accB
            a = A[t, q + 1]
            b = B[t, q + 1]
            accA += a.real * a.real + a.imag * a.imag
            accB += b.real * b.real + b.imag * b.imag
        nA = accA + abs(A[t, 0]) ** 2
        nB = accB + abs(B[t, 0]) ** 2
        if nA == 0.0 or nB == 0.0:
            zero += 1
        sA = 1.0 / math.sqrt(nA if nA > 0 else 1.0)
        sB = 1.0 / math.sqrt(nB if nB > 0 else 1.0)
        # C[x, y] over x in {vac, A~}, y in {vac, B~}
        c00 = A[t, 0] * B[t, 0] * (sA * sB)
        c01 = A[t, 0] * (sA * sB)
        c10 = B[t, 0] * (sA * sB)
        c11 = complex(sA * sB, 0.0)
        for q in range(M):
            ba = A[t, q + 1]
            bb = B[t, q + 1]
            ra = rA[q]
            rb = rB[q]
            bbc = ba * bb * c11
            phi_p = c00 + bbc
            phi_m = c00 - bbc
            x01 = bb * c01
            x10 = ba * c10
            psi_p = x01 + x10
            psi_m = x01 - x10
            a11 = ba * c11
            b11 = bb * c11
            common_phi = abs(c01) ** 2 * rb + abs(c10) ** 2 * ra + abs(c11) ** 2 * ra * rb
            common_psi = abs(a11) ** 2 * rb + abs(b11) ** 2 * ra
            p0 = abs(phi_p) ** 2 + common_phi
            p1 = abs(psi_p) ** 2 + common_psi
            p2 = abs(phi_m) ** 2 + common_phi
            p3 = abs(psi_m) ** 2 + common_psi
            x = u[t, q] * (p0 + p1 + p2 + p3)
            if x < p0:
                code = 0
                c00 = phi_p
                ps = p0
            elif x < p0 + p1:
                code = 1
                c00, c01, c10, c11 = psi_p, a11, b11, 0j
                ps = p1
            elif x < p0 + p1 + p2:
                code = 2
                c00 = phi_m
                ps = p2
            else:
                code = 3
                c00, c01, c10, c11 = psi_m, -a11, b11, 0j
                ps = p3
            out[t, q] = code
            if ps < _TINY and ps > 0.0:
                g = 1.0 / math.sqrt(ps)
                c00, c01, c10, c11 = c00 * g, c01 * g, c10 * g, c11 * g
    return zero


@njit(cache=True, nogil=True, fastmath=True)
def rotate_kernel(amps, phase):  # pragma: no cover - compiled
    """``amps[:, 1:] *= exp(1j * phase)`` in place (``amps`` complex128 (T, M+1),
    ``phase`` float64 (T, M)): one cos and sin per telescope and copy, no temporaries."""
    T, M1 = amps.shape
    for t in range(T):
        row = amps[t]
        ph = phase[t]
        for q in range(M1 - 1):
            c = math.cos(ph[q])
            s = math.sin(ph[q])
            x = row[q + 1]
            row[q + 1] = complex(x.real * c - x.imag * s, x.real * s + x.imag * c)
