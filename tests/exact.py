"""Exact reference values from density matrices, for tests (wire 0 = most significant)."""

from __future__ import annotations

import itertools
from functools import reduce

import numpy as np

PAULI = {
    "I": np.eye(2, dtype=complex),
    "X": np.array([[0, 1], [1, 0]], dtype=complex),
    "Y": np.array([[0, -1j], [1j, 0]], dtype=complex),
    "Z": np.array([[1, 0], [0, -1]], dtype=complex),
}


def pauli_matrix(word: str) -> np.ndarray:
    """Dense matrix of a dense Pauli string (leftmost letter on wire 0)."""
    return reduce(np.kron, [PAULI[c] for c in word])


def expval(rho: np.ndarray, word: str) -> float:
    return float(np.real(np.trace(pauli_matrix(word) @ rho)))


def random_state(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=2**n) + 1j * rng.normal(size=2**n)
    return v / np.linalg.norm(v)


def random_density(n: int, rng: np.random.Generator, rank: int = 2) -> np.ndarray:
    A = rng.normal(size=(2**n, rank)) + 1j * rng.normal(size=(2**n, rank))
    rho = A @ A.conj().T
    return rho / np.trace(rho).real


def dm(psi: np.ndarray) -> np.ndarray:
    return np.outer(psi, psi.conj())


def reduced(rho: np.ndarray, keep: tuple[int, ...], n: int) -> np.ndarray:
    """Partial trace keeping wires ``keep`` (in the given order)."""
    t = rho.reshape((2,) * (2 * n))
    drop = [q for q in range(n) if q not in keep]
    letters = list(range(2 * n))
    for q in drop:
        letters[n + q] = letters[q]
    out_idx = list(keep) + [n + q for q in keep]
    r = np.einsum(t, letters, out_idx)
    d = 2 ** len(keep)
    return r.reshape(d, d)


def all_words(n: int) -> list[str]:
    return ["".join(p) for p in itertools.product("IXYZ", repeat=n)]
