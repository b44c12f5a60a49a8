"""Exact Pauli-basis measurements in *given* bases (for designed, e.g.
derandomized, measurement lists), as :func:`sample_in_bases`.

Where :func:`qsense.sims.sample_shadows` draws every basis uniformly at random,
this measures row t of ``bases`` (uint8 (T, n), 0 = X, 1 = Y, 2 = Z) in exactly
that basis and draws the outcome bits from the Born rule.  Rows are grouped by
distinct basis string; for each group the state is rotated wire by wire (the
2x2 bras of :data:`qsense.sims.samplers._V`, all groups of a chunk at once), the
2^n outcome probabilities are read off (|amplitude|^2, or the diagonal of
U rho U^dagger for a density matrix), and every shot of the group draws its
outcome by inverse-CDF lookup.  Work O(U n 2^n) (statevector) or O(U n 4^n)
(density matrix) for U distinct bases, plus O(T 2^n) for the draws, all
vectorised; n up to ~14 (statevector) or ~7 (density matrix) is practical.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from qsense.records import ShadowBatch

from .samplers import _V, _rng, as_state

__all__ = ["basis_probabilities", "sample_in_bases"]

#: complex numbers per working chunk (64 MiB)
_BUDGET = 1 << 22


def _rotate(t: np.ndarray, mats: np.ndarray, axis: int) -> np.ndarray:
    """Apply per-row 2x2 ``mats`` (U, 2, 2) to tensor axis ``axis`` (>= 1) of ``t`` (U, ...)."""
    moved = np.moveaxis(t, axis, -1)
    out = np.einsum("u...b,uab->u...a", moved, mats)
    return np.moveaxis(out, -1, axis)


def basis_probabilities(state: Any, bases: np.ndarray) -> np.ndarray:
    """Outcome probabilities float64 (U, 2^n) for each row of ``bases`` (U, n):
    index bits = outcome bits, wire 0 most significant, bit 0 = eigenvalue +1."""
    psi, density, n = as_state(state)
    bases = np.asarray(bases, dtype=np.uint8)
    if bases.ndim != 2 or bases.shape[1] != n:
        raise ValueError(f"bases must have shape (U, {n}) for this {n}-qubit state; got {bases.shape}")
    if bases.size and bases.max() > 2:
        raise ValueError("bases must hold 0 (X), 1 (Y) or 2 (Z)")
    V = _V.reshape(3, 2, 2)  # V[basis, outcome bit, computational index]
    U = bases.shape[0]
    dim = 2**n
    out = np.empty((U, dim))
    per = max(1, _BUDGET // (dim * dim if density else dim))
    for lo in range(0, U, per):
        b = bases[lo : lo + per]
        u = b.shape[0]
        if density:
            t = np.broadcast_to(psi.reshape((1,) + (2,) * (2 * n)), (u,) + (2,) * (2 * n)).copy()
            for q in range(n):
                m = V[b[:, q]]
                t = _rotate(t, m, 1 + q)
                t = _rotate(t, m.conj(), 1 + n + q)
            p = np.einsum("uii->ui", t.reshape(u, dim, dim)).real
        else:
            t = np.broadcast_to(psi.reshape((1,) + (2,) * n), (u,) + (2,) * n).copy()
            for q in range(n):
                t = _rotate(t, V[b[:, q]], 1 + q)
            p = np.abs(t.reshape(u, dim)) ** 2
        out[lo : lo + u] = np.maximum(p, 0.0)
    return out / out.sum(axis=1, keepdims=True)


def sample_in_bases(
    state: Any, bases: Any, seed: Any = None, *, wires: Sequence | None = None, source: str = "", seq: int = 0
) -> ShadowBatch:
    """Measure ``state`` once in each row of ``bases`` (uint8 (T, n), 0 = X,
    1 = Y, 2 = Z): an exact Born-rule :class:`qsense.ShadowBatch` with exactly
    those bases.  ``seed``: int, ``None`` or a ``np.random.Generator``."""
    bases = np.asarray(bases)
    if bases.ndim != 2:
        raise ValueError(f"bases must be a (T, n) array; got shape {bases.shape}")
    _, _, n = as_state(state)
    if bases.shape[1] != n:
        raise ValueError(f"bases have {bases.shape[1]} columns for a {n}-qubit state")
    if not np.issubdtype(bases.dtype, np.integer) or (bases.size and (bases.min() < 0 or bases.max() > 2)):
        raise ValueError("bases must hold integers 0 (X), 1 (Y) or 2 (Z)")
    bases = bases.astype(np.uint8)
    rng = _rng(seed)
    T = bases.shape[0]
    if T == 0:
        return ShadowBatch(bases, np.zeros((0, n), np.uint8), wires=wires, source=source, seq=seq)
    uniq, inv = np.unique(bases, axis=0, return_inverse=True)
    cdf = np.cumsum(basis_probabilities(state, uniq), axis=1)
    cdf[:, -1] = 1.0
    x = rng.random(T)
    idx = np.empty(T, dtype=np.int64)
    per = max(1, _BUDGET // cdf.shape[1])
    for lo in range(0, T, per):
        sl = slice(lo, lo + per)
        idx[sl] = (cdf[inv.ravel()[sl]] < x[sl, None]).sum(axis=1)
    shifts = np.arange(n - 1, -1, -1, dtype=np.int64)
    outcomes = ((idx[:, None] >> shifts) & 1).astype(np.uint8)
    return ShadowBatch(bases, outcomes, wires=wires, source=source, seq=seq)
