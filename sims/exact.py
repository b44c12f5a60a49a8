"""Exact values to check estimates against: the same observable labels the estimators take.

``exact_expval(state, observables)`` gives tr(P ρ) (and sums), ``exact_square``
tr(P ρ)² (what :class:`~qsense.BellEstimator` estimates), ``exact_purity`` and
``exact_renyi2`` the subsystem purity tr(ρ_A²) and Rényi-2 entropy
−log₂ tr(ρ_A²) (what :class:`~qsense.ShadowPurity` estimates), for a
statevector (2ⁿ,) or a density matrix (2ⁿ, 2ⁿ) — e.g. ``qml.state()`` or
``qml.density_matrix(...)`` of a PennyLane QNode.  Labels are those of
:func:`qsense.parse_observable`: dense ``"XZI"``, sparse ``"X0 Z2"``, or PennyLane
operators and their sums (``0.5 * qml.X(0) @ qml.Z(1) - qml.Z(2)``); wire w is column w (wire 0 the
most significant qubit of the state, PennyLane's order).

Cost: O(2ⁿ) per Pauli word on a statevector (it is applied, never built),
O(4ⁿ) on a density matrix; meant for checking, up to ~14 qubits.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from qsense.pauli import parse_observable

from .samplers import as_state

__all__ = ["exact_expval", "exact_square", "exact_purity", "exact_renyi2"]


def _apply_word(ops: Sequence[tuple[int, str]], vec: np.ndarray, n: int) -> np.ndarray:
    """P applied to the columns of ``vec`` (2^n, m) without building P."""
    t = vec.reshape((2,) * n + (-1,))
    for q, letter in ops:
        if letter == "X":
            t = np.flip(t, axis=q)
        elif letter == "Y":
            t = np.flip(t, axis=q) * np.array([-1j, 1j]).reshape((1,) * q + (2,) + (1,) * (n - q))
        elif letter == "Z":
            t = t * np.array([1, -1]).reshape((1,) * q + (2,) + (1,) * (n - q))
    return t.reshape(vec.shape)


def _observables(observables: Any) -> list:
    if isinstance(observables, str) or not isinstance(observables, Iterable):
        return [parse_observable(observables)]
    return [parse_observable(o) for o in observables]


def _word_value(state: np.ndarray, dens: bool, n: int, ops: Sequence[tuple[int, str]]) -> float:
    for q, _ in ops:
        if not 0 <= q < n:
            raise ValueError(f"wire {q} outside the {n}-qubit state")
    if dens:
        return float(np.trace(_apply_word(ops, state, n)).real)  # tr(P rho)
    return float(np.vdot(state, _apply_word(ops, state[:, None], n)[:, 0]).real)


def exact_expval(state: Any, observables: Any) -> np.ndarray:
    """tr(O ρ) for each observable (a label, a list of labels, or PennyLane operators): float64 (M,)."""
    a, dens, n = as_state(state)
    out = []
    for obs in _observables(observables):
        out.append(sum(c * _word_value(a, dens, n, term.ops) for c, term in obs.terms))
    return np.asarray(out, dtype=np.float64)


def exact_square(state: Any, observables: Any) -> np.ndarray:
    """tr(P ρ)² for each Pauli word (what two-copy Bell measurements estimate): float64 (M,)."""
    obs = _observables(observables)
    for o in obs:
        if len(o.terms) != 1 or o.terms[0][0] != 1.0:
            raise ValueError(f"tr(P rho)^2 is defined per Pauli word; {o.label!r} is a sum or scaled")
    return exact_expval(state, obs) ** 2


def _reduced(state: np.ndarray, dens: bool, n: int, keep: Sequence[int]) -> np.ndarray:
    keep = [int(q) for q in keep]
    if len(set(keep)) != len(keep) or any(not 0 <= q < n for q in keep):
        raise ValueError(f"subsystem {keep} must list distinct wires of the {n}-qubit state")
    rest = [q for q in range(n) if q not in keep]
    if not dens:
        t = np.transpose(state.reshape((2,) * n), keep + rest).reshape(2 ** len(keep), -1)
        return t @ t.conj().T
    t = state.reshape((2,) * (2 * n))
    t = np.transpose(t, keep + rest + [n + q for q in keep] + [n + q for q in rest])
    k, r = 2 ** len(keep), 2 ** len(rest)
    return np.einsum("arbr->ab", t.reshape(k, r, k, r))


def exact_purity(state: Any, subsystems: Any = None) -> np.ndarray:
    """tr(ρ_A²) for each subsystem A (lists of wires; ``None``: the whole register): float64."""
    a, dens, n = as_state(state)
    subs = [list(range(n))] if subsystems is None else [list(s) for s in subsystems]
    out = []
    for s in subs:
        r = _reduced(a, dens, n, s)
        out.append(float(np.vdot(r, r).real))
    return np.asarray(out, dtype=np.float64)


def exact_renyi2(state: Any, subsystems: Any = None) -> np.ndarray:
    """Rényi-2 entropy −log₂ tr(ρ_A²) in bits for each subsystem: float64."""
    return -np.log2(exact_purity(state, subsystems))
