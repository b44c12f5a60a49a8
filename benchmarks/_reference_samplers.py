"""Reference copies of the NumPy samplers that qsense replaced (issue 17), for benchmarks.

``numpy_shadows_from_amplitudes`` / ``numpy_bell_from_amplitudes``: the vectorised-
over-shots NumPy single-excitation samplers (per qubit, ~20 array operations on
blocks of 8192 shots) as they were before the compiled kernels of
``qsense.sims.telescope.kernels``.  Kept verbatim so that ``bench_samplers.py``
times old and new side by side in one run.  Not used by qsense itself.
"""

from __future__ import annotations

import math

import numpy as np

_SQ2 = 1.0 / math.sqrt(2.0)

#: shots processed together by the samplers' per-qubit loops
_SHOT_BLOCK = 8192
#: per basis code (X, Y, Z): coefficient of c*beta_q in the projected vacuum
#: amplitude for outcome 0, up to the common factor (b0 / a0 for X and Y)
_PHASE = np.array([1.0, -1j, 0.0], dtype=np.complex128)


def _shadow_block(amps: np.ndarray, bases: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Outcomes uint8 (T, M) for one block of shots (see :func:`shadows_from_amplitudes`)."""
    T, M1 = amps.shape
    M = M1 - 1
    beta = amps[:, 1:]
    p2 = beta.real**2 + beta.imag**2
    suffix = np.cumsum(p2[:, ::-1], axis=1)[:, ::-1] - p2  # sum over j > q
    alpha = amps[:, 0].copy()
    c = np.ones(T, dtype=np.complex128)
    out = np.empty((T, M), dtype=np.uint8)
    for q in range(M):
        bq = bases[:, q]
        z = bq == 2
        cb = c * beta[:, q]
        rest = suffix[:, q]
        # X / Y: e0,1 = (|0> +- w|1>)/sqrt2 with w = 1 or i, so (conjugated)
        # alpha_{0,1} = (alpha +- conj(w) c beta_q)/sqrt2 and c_{0,1} = c/sqrt2.
        # Z: alpha_0 = alpha, c_0 = c; alpha_1 = c beta_q, c_1 = 0.
        t = _PHASE[bq] * cb
        al0 = np.where(z, alpha, (alpha + t) * _SQ2)
        al1 = np.where(z, cb, (alpha - t) * _SQ2)
        cc = c.real**2 + c.imag**2
        c0sq = np.where(z, cc, 0.5 * cc)
        c1sq = np.where(z, 0.0, 0.5 * cc)
        p0 = al0.real**2 + al0.imag**2 + c0sq * rest
        p1 = al1.real**2 + al1.imag**2 + c1sq * rest
        s = u[:, q] * (p0 + p1) >= p0
        out[:, q] = s
        ps = np.where(s, p1, p0)
        # renormalise so the running state keeps unit norm (no underflow for large M)
        inv = 1.0 / np.sqrt(np.where(ps > 0, ps, 1.0))
        alpha = np.where(s, al1, al0) * inv
        c = c * np.where(z, np.where(s, 0.0, 1.0), _SQ2) * inv
    return out




def numpy_shadows_from_amplitudes(amps: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The old NumPy shadow sampler (random bases)."""
    amps = np.asarray(amps, dtype=np.complex128)
    T, M1 = amps.shape
    M = M1 - 1
    nrm = np.sqrt(np.sum(np.abs(amps) ** 2, axis=1))
    if np.any(nrm == 0):
        raise ValueError("zero amplitude vector")
    amps = amps / nrm[:, None]
    bases = rng.integers(0, 3, size=(T, M), dtype=np.uint8)
    u = rng.random((T, M))
    outcomes = np.empty((T, M), dtype=np.uint8)
    # blocks of shots small enough for the per-qubit working arrays to stay in cache
    for lo in range(0, T, _SHOT_BLOCK):
        hi = min(T, lo + _SHOT_BLOCK)
        outcomes[lo:hi] = _shadow_block(amps[lo:hi], bases[lo:hi], u[lo:hi])
    return bases, outcomes


def numpy_bell_from_amplitudes(amps_a: np.ndarray, amps_b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The old NumPy Bell sampler."""
    A = np.asarray(amps_a, dtype=np.complex128)
    B = np.asarray(amps_b, dtype=np.complex128)
    if A.shape != B.shape:
        raise ValueError(f"copies must have the same shape; got {A.shape} and {B.shape}")
    T, M1 = A.shape
    M = M1 - 1
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    B = B / np.linalg.norm(B, axis=1, keepdims=True)
    u = rng.random((T, M))
    out = np.empty((T, M), dtype=np.uint8)
    for lo in range(0, T, _SHOT_BLOCK):
        hi = min(T, lo + _SHOT_BLOCK)
        out[lo:hi] = _bell_block(A[lo:hi], B[lo:hi], u[lo:hi])
    return out


def _bell_block(A: np.ndarray, B: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Bell codes uint8 (T, M) for one block of shots (see :func:`bell_from_amplitudes`)."""
    T, M1 = A.shape
    M = M1 - 1
    bA, bB = A[:, 1:], B[:, 1:]
    pA, pB = np.abs(bA) ** 2, np.abs(bB) ** 2
    sufA = np.cumsum(pA[:, ::-1], axis=1)[:, ::-1] - pA  # sum over j > q
    sufB = np.cumsum(pB[:, ::-1], axis=1)[:, ::-1] - pB
    # C[x, y] over x in {vac, A~}, y in {vac, B~}, kept as four (T,) arrays
    c00 = A[:, 0] * B[:, 0]
    c01 = A[:, 0].copy()
    c10 = B[:, 0].copy()
    c11 = np.ones(T, dtype=np.complex128)
    out = np.empty((T, M), dtype=np.uint8)
    for q in range(M):
        ba, bb = bA[:, q], bB[:, q]
        rA, rB = sufA[:, q], sufB[:, q]
        # Projections (times sqrt 2) onto the Bell states of pair q, from the
        # decomposition vac = |0>vac', A~ = |0>A~' + beta^A_q |1>vac' (same for B):
        #   Phi+-: C' = [[c00 +- ba bb c11, c01], [c10, c11]]
        #   Psi+-: C' = [[bb c01 +- ba c10, +- ba c11], [bb c11, 0]]
        bbc = ba * bb * c11
        phi_p, phi_m = c00 + bbc, c00 - bbc
        x01, x10 = bb * c01, ba * c10
        psi_p, psi_m = x01 + x10, x01 - x10
        a11, b11 = ba * c11, bb * c11
        common_phi = np.abs(c01) ** 2 * rB + np.abs(c10) ** 2 * rA + np.abs(c11) ** 2 * rA * rB
        common_psi = np.abs(a11) ** 2 * rB + np.abs(b11) ** 2 * rA
        p = np.stack([np.abs(phi_p) ** 2 + common_phi, np.abs(psi_p) ** 2 + common_psi,
                      np.abs(phi_m) ** 2 + common_phi, np.abs(psi_m) ** 2 + common_psi], axis=1)  # (T, 4) x 2
        cum = np.cumsum(p, axis=1)
        code = (u[:, q, None] * cum[:, -1:] >= cum[:, :-1]).sum(axis=1)
        out[:, q] = code
        ps = p[np.arange(T), code]
        inv = 1.0 / np.sqrt(np.where(ps > 0, ps, 1.0))
        is_phi = (code % 2) == 0
        sign = np.where(code >= 2, -1.0, 1.0)  # Phi- and Psi- carry the minus sign
        n00 = np.where(is_phi, np.where(code == 0, phi_p, phi_m), np.where(code == 1, psi_p, psi_m))
        n01 = np.where(is_phi, c01, sign * a11)
        n10 = np.where(is_phi, c10, b11)
        n11 = np.where(is_phi, c11, 0.0)
        c00, c01, c10, c11 = n00 * inv, n01 * inv, n10 * inv, n11 * inv
    return out
