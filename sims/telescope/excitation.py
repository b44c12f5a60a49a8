"""Single-excitation states: the (M+1)-dimensional span ``{|vac>, |1_0>, ..., |1_{M-1}>}``.

Turns a statevector or density matrix in that span (index 0 = vacuum; or, when
heralded, over the ``|1_j>`` only) into a mixture of pure vectors, draws per-shot
vectors from such a mixture, and embeds a state densely into the 2^M qubit space
for checks at small M.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_extended_state", "single_excitation_to_qubits"]


def as_extended_state(state: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mixture decomposition of a state in span{|vac>, |1_0>, ..., |1_{M-1}>}.

    ``state`` may be a statevector (M+1,), a density matrix (M+1, M+1) in that
    basis (index 0 = vacuum).
    Returns ``(weights (K,), vectors (K, M+1))``: non-negative weights summing to 1
    and unit vectors with ``rho = sum_k w_k |v_k><v_k|`` (eigendecomposition).
    """
    s = np.asarray(state, dtype=np.complex128)
    if s.ndim == 1:
        nrm = np.linalg.norm(s)
        if nrm == 0:
            raise ValueError("zero statevector")
        return np.ones(1), (s / nrm)[None, :]
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"state must be a vector or a square matrix; got shape {s.shape}")
    if not np.allclose(s, s.conj().T, atol=1e-10):
        raise ValueError("density matrix is not Hermitian")
    if abs(np.trace(s).real) <= 0:
        raise ValueError("density matrix has zero trace")
    w, v = np.linalg.eigh(s)
    if w.min() < -1e-8 * max(1.0, w.max()):
        raise ValueError(f"density matrix is not positive semidefinite (eigenvalue {w.min():.3g})")
    w = np.clip(w, 0.0, None)
    keep = w > 1e-14 * w.max()
    w, v = w[keep], v[:, keep].T
    return w / w.sum(), v


def _draw_from_mixture(weights: np.ndarray, vectors: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
    """(shots, M+1) pure vectors drawn from the mixture."""
    if len(weights) == 1:
        return np.repeat(vectors, shots, axis=0)
    idx = rng.choice(len(weights), size=shots, p=weights)
    return vectors[idx]


def _parse_state(state: Any, heralded: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`as_extended_state` of ``state``; a ``heralded`` state lacks the vacuum entry."""
    s = np.asarray(state, dtype=np.complex128)
    if heralded:
        if s.ndim == 1:
            return as_extended_state(np.concatenate([[0.0], s]))
        w, v = as_extended_state(s)
        return w, np.concatenate([np.zeros((v.shape[0], 1), np.complex128), v], axis=1)
    return as_extended_state(s)


def single_excitation_to_qubits(state: Any, heralded: bool = False) -> np.ndarray:
    """Embed a single-excitation state into the 2^M qubit space.

    Wire 0 is the most significant bit (PennyLane order), so ``|1_j>`` is index
    ``2^(M-1-j)`` and the vacuum index 0.  Returns a statevector (2^M,) for a
    vector input, else a density matrix (2^M, 2^M).  For tests at small M.
    """
    s = np.asarray(state, dtype=np.complex128)
    if heralded:
        if s.ndim == 1:
            s = np.concatenate([[0.0], s])
        else:
            z = np.zeros((s.shape[0] + 1, s.shape[0] + 1), np.complex128)
            z[1:, 1:] = s
            s = z
    M = s.shape[0] - 1
    if M > 14:
        raise ValueError("embedding more than 14 qubits densely is not sensible")
    idx = np.array([0] + [1 << (M - 1 - j) for j in range(M)])
    if s.ndim == 1:
        out = np.zeros(2**M, np.complex128)
        out[idx] = s
        return out
    out = np.zeros((2**M, 2**M), np.complex128)
    out[np.ix_(idx, idx)] = s
    return out
