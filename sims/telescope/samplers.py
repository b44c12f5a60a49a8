"""Exact O(M)-per-shot shadow and Bell samplers for single-excitation states.

Measuring a single-excitation state qubit by qubit keeps the unmeasured part
in a two-dimensional span (one copy) or a product of two (two copies), so each
qubit is an O(1) update per shot and a shot costs O(M), not O(2^M).  The
samplers are exact: their outcomes are distributed as those of measuring the
2^M embedding (:func:`~qsense.sims.telescope.single_excitation_to_qubits`).
The per-shot loops are compiled (:mod:`qsense.sims.telescope.kernels`): about
10 ns per qubit and shot on one core; long jobs run on every core
(:mod:`~qsense.sims.telescope.parallel`, records independent of the thread count).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qsense.records import BellBatch, ShadowBatch

from .excitation import _draw_from_mixture, _parse_state
from .parallel import UNIFORM_RUN, map_runs, run_in_chunks

__all__ = [
    "bell_from_amplitudes",
    "rotate_phases",
    "sample_single_excitation_bell",
    "sample_single_excitation_shadows",
    "shadows_from_amplitudes",
]



def shadows_from_amplitudes(
    amps: np.ndarray, rng: np.random.Generator, bases: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact random-Pauli measurement of per-shot pure single-excitation vectors.

    ``amps`` complex (T, M+1), column 0 the vacuum amplitude, column j+1 that of
    |1_j> (need not be normalised).  ``bases`` uint8 (T, M) (default uniformly
    random).  Returns ``(bases, outcomes)``, both uint8 (T, M).

    Qubits are measured in order 0..M-1.  After measuring qubits < q with
    eigenvectors ``e`` the unnormalised state is ``alpha |vac> + c sum_{j>=q}
    beta_j |1_j>``: projecting qubit q onto ``e = a|0> + b|1>`` maps
    ``alpha -> a* alpha + b* c beta_q`` and ``c -> a* c``, and the outcome
    probability is ``|alpha'|^2 + |c'|^2 sum_{j>q} |beta_j|^2``.  Each step is O(1)
    per shot (a compiled loop), so a shot costs O(M).  Without ``bases``, each
    shot and qubit draws one uniform for both its basis and its outcome
    (:mod:`~qsense.sims.telescope.kernels`).
    """
    from .kernels import shadow_kernel  # compiled on first use

    amps = np.ascontiguousarray(amps, dtype=np.complex128)
    if amps.ndim != 2 or amps.shape[1] < 2:
        raise ValueError(f"amplitudes must be (T, M+1) with M >= 1; got shape {amps.shape}")
    T, M1 = amps.shape
    M = M1 - 1
    outcomes = np.empty((T, M), dtype=np.uint8)
    draw = bases is None
    if draw:
        bases = np.empty((T, M), dtype=np.uint8)
    else:
        bases = np.ascontiguousarray(bases, dtype=np.uint8)
        if bases.shape != (T, M) or (bases.size and bases.max() > 2):
            raise ValueError(f"bases must be (T, M) = ({T}, {M}) values in 0..2")
    # uniforms in cache-sized runs of shots, drawn in order; the runs' kernels on every core
    zero = run_in_chunks(
        T, M, rng, lambda lo, hi, u: shadow_kernel(amps[lo:hi], bases[lo:hi], u, draw, bases[lo:hi], outcomes[lo:hi])
    )
    if zero:
        raise ValueError(f"zero amplitude vector ({zero} of {T} shots)")
    return bases, outcomes


def rotate_phases(amps: np.ndarray, phase: np.ndarray) -> None:
    """``amps[:, 1:] *= exp(1j * phase)`` in place, compiled and on every core for long
    jobs (``amps`` complex128 (T, M+1) C-contiguous, ``phase`` float64 (T, M)); equal to
    the NumPy expression to a few ulp."""
    from .kernels import rotate_kernel  # compiled on first use

    phase = np.ascontiguousarray(phase, dtype=np.float64)
    if amps.dtype != np.complex128 or not amps.flags.c_contiguous or phase.shape != (amps.shape[0], amps.shape[1] - 1):
        raise ValueError(f"need complex128 C-contiguous (T, M+1) amplitudes and (T, M) phases; got {amps.shape}, {phase.shape}")
    run = max(1, UNIFORM_RUN // max(phase.shape[1], 1))
    map_runs(len(amps), run, lambda lo, hi: rotate_kernel(amps[lo:hi], phase[lo:hi]))


def bell_from_amplitudes(amps_a: np.ndarray, amps_b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exact per-site Bell measurement of two independent single-excitation copies.

    ``amps_a``, ``amps_b`` complex (T, M+1) per-shot pure vectors (column 0 vacuum).
    Pair q is qubit q of copy A with qubit q of copy B, measured as CNOT(A->B),
    H(A), giving code ``2a + b`` (0 Phi+, 1 Psi+, 2 Phi-, 3 Psi-).  Returns uint8
    (T, M) codes.

    The joint state of the unmeasured qubits stays in span{|vac>, A~} (x)
    span{|vac>, B~} with ``A~ = sum_{j unmeasured} beta^A_j |1_j>``, so it is a
    2x2 coefficient matrix ``C`` per shot; a Bell projection on pair q updates it
    in O(1) (formulas in the loop; derivation in ``docs/telescope.md``), so a
    shot costs O(M).
    """
    from .kernels import bell_kernel  # compiled on first use

    A = np.ascontiguousarray(amps_a, dtype=np.complex128)
    B = np.ascontiguousarray(amps_b, dtype=np.complex128)
    if A.shape != B.shape:
        raise ValueError(f"copies must have the same shape; got {A.shape} and {B.shape}")
    if A.ndim != 2 or A.shape[1] < 2:
        raise ValueError(f"amplitudes must be (T, M+1) with M >= 1; got shape {A.shape}")
    T, M1 = A.shape
    out = np.empty((T, M1 - 1), dtype=np.uint8)
    # the uniforms of rng.random((T, M)), drawn run by run (no (T, M) float64 temporary)
    zero = run_in_chunks(T, M1 - 1, rng, lambda lo, hi, u: bell_kernel(A[lo:hi], B[lo:hi], u, out[lo:hi]))
    if zero:
        raise ValueError(f"zero amplitude vector ({zero} of {T} shots)")
    return out


def sample_single_excitation_shadows(
    state: Any, shots: int, seed: Any = None, *, heralded: bool = False, bases: np.ndarray | None = None
) -> ShadowBatch:
    """Classical shadows (random Pauli basis per qubit) of a single-excitation state.

    ``state``: statevector (M+1,) or density matrix (M+1, M+1) in the basis
    ``{|vac>, |1_0>, ..., |1_{M-1}>}``; with ``heralded=True`` a vector (M,) or
    block (M, M) over ``|1_j>`` only.  Same output as ``sims.sample_shadows`` on the
    2^M embedding (qubit j = |1> iff the photon is at telescope j), in O(M) per
    shot after an O(M^3) eigendecomposition.
    """
    rng = np.random.default_rng(seed)
    w, v = _parse_state(state, heralded)
    amps = _draw_from_mixture(w, v, int(shots), rng)
    b, o = shadows_from_amplitudes(amps, rng, bases)
    return ShadowBatch(b, o, source="telescope-sim")


def sample_single_excitation_bell(state: Any, shots: int, seed: Any = None, *, heralded: bool = False) -> BellBatch:
    """Two-copy Bell measurements (pair j = qubit j of copy A with qubit j of copy B)
    of two independent copies of a single-excitation state (see
    :func:`sample_single_excitation_shadows` for ``state``)."""
    rng = np.random.default_rng(seed)
    w, v = _parse_state(state, heralded)
    a = _draw_from_mixture(w, v, int(shots), rng)
    b = _draw_from_mixture(w, v, int(shots), rng)
    return BellBatch(bell_from_amplitudes(a, b, rng), source="telescope-sim")
