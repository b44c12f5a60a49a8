"""Reduced density matrices of small subsystems from classical shadows, and their entropies.

The shadow estimate of rho_A is the mean snapshot, ``(1/N) sum_t prod_q (3
U_q^dag |b_q><b_q| U_q - I)`` restricted to A, i.e. in Paulis
``2^-k sum_P xbar(P) P`` with xbar(P) the mean 3^|P|-weighted snapshot estimate
of every one of the 4^k Paulis on A (the streaming Pauli sums).  A single-qubit
snapshot of class ``2*basis + bit`` is ``(I + 3 (-1)^bit sigma_basis) / 2``, so
the mean snapshot is the class histogram h (6^k counts) contracted on each axis
with those six 2x2 matrices: O(6^k 4) per axis, no per-snapshot work.  It is
exactly PennyLane's ``np.mean(ClassicalShadow(bits, recipes).global_snapshots(wires), 0)``
(tested to 1e-12).

Streaming: the class counts live in a :class:`~qsense.estimators.purity.ShadowPurity`
(online, mergeable, ``to_bytes``), so ``reduced_state(purity_estimator, wires)``
works at any point of a stream for any subsystem that estimator tracks;
a :class:`~qsense.ShadowEstimator` tracking all 4^k - 1 Paulis on the wires
(``groups=1``, ``method="mean"``) works too.

The estimate is unbiased but not a state: it has negative eigenvalues at any
finite N.  ``project="physical"`` returns the nearest density matrix in
Frobenius norm (Smolin, Gambetta, Smith, PRL 108, 070502 (2012): keep the
eigenvectors, project the eigenvalues onto the probability simplex).  Entropies
of either matrix (:func:`entropy`) are *biased*: plug-in functionals of a noisy
matrix (docs/estimators.md "Reduced states and entropies" gives measured biases).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .class_kernels import ClassCounts, class_keys

__all__ = ["MAX_RECONSTRUCT", "entropy", "project_physical", "reduced_state"]

#: 6^8 classes and a 256 x 256 matrix; beyond that a shadow estimate of the full state is meaningless
MAX_RECONSTRUCT = 8

_PAULI = {
    0: np.array([[0, 1], [1, 0]], dtype=complex),
    1: np.array([[0, -1j], [1j, 0]], dtype=complex),
    2: np.array([[1, 0], [0, -1]], dtype=complex),
}
#: single-qubit snapshot per class 2*basis + bit, (6, 2, 2)
_SNAP = np.stack([(np.eye(2) + 3.0 * (1 - 2 * bit) * _PAULI[basis]) / 2.0 for basis in range(3) for bit in range(2)])


class ReconstructionError(ValueError):
    """The source cannot give a reduced state for these wires."""


def _from_histogram(h: np.ndarray, k: int) -> np.ndarray:
    N = h.sum()
    if N == 0:
        raise ReconstructionError("no snapshots: cannot reconstruct a state")
    v = h.astype(np.complex128).reshape((6,) * k)
    # contract class axis q with _SNAP -> (row_q, col_q); keep axes in qubit order
    for q in range(k):
        v = np.tensordot(v, _SNAP, axes=([0], [0]))  # consumed axis 0, appended (row, col)
    v = v.reshape((2, 2) * k)
    perm = [2 * q for q in range(k)] + [2 * q + 1 for q in range(k)]
    rho = v.transpose(perm).reshape(2**k, 2**k) / N
    return (rho + rho.conj().T) / 2.0


def _positions(wires: Sequence, labels: tuple, what: str) -> list[int]:
    index = {w: i for i, w in enumerate(labels)}
    out = []
    for w in wires:
        if w not in index:
            raise ReconstructionError(f"wire {w!r} is not among the {what}'s wires {labels}")
        out.append(index[w])
    if len(set(out)) != len(out):
        raise ReconstructionError(f"wires {list(wires)} repeat a wire")
    return out


def _histogram_from_purity(est: Any, pos: list[int]) -> np.ndarray:
    for i, sub in enumerate(est.subsystems):
        if sorted(sub) == sorted(pos):
            counts = est.class_counts(i)
            h = counts.dense().reshape((6,) * len(sub))
            # reorder the estimator's axes into the order asked for
            return np.ascontiguousarray(h.transpose([sub.index(q) for q in pos])).reshape(-1)
    raise ReconstructionError(f"the purity estimator does not track the subsystem {pos}; it tracks {list(est.subsystems)}")


def _from_shadow_estimator(est: Any, pos: list[int], k: int) -> np.ndarray:
    if est.method != "mean" or est.groups != 1:
        raise ReconstructionError("a ShadowEstimator gives a reduced state only with method='mean' and groups=1")
    # single positional Pauli words, keyed by their (position, letter) pairs
    values = {}
    for o, v in zip(est.observables, est.estimate().values):
        if len(o.terms) == 1 and o.terms[0][0] == 1.0 and o.terms[0][1].positional:
            values[tuple(sorted(o.terms[0][1].ops))] = v
    letters = "IXYZ"
    rho = np.zeros((2**k, 2**k), dtype=complex)
    for idx in range(4**k):
        digits = [(idx // 4 ** (k - 1 - q)) % 4 for q in range(k)]
        key = tuple(sorted((q, letters[d]) for q, d in zip(pos, digits) if d))
        if not key:
            coef = 1.0
        elif key in values:
            coef = values[key]
        else:
            word = " ".join(f"{L}{q}" for q, L in key)
            raise ReconstructionError(f"the ShadowEstimator does not track {word}; it needs all 4^k - 1 Paulis on the wires")
        mat = np.ones((1, 1), dtype=complex)
        for d in digits:
            mat = np.kron(mat, np.eye(2) if d == 0 else _PAULI[d - 1])
        rho += coef * mat
    rho /= 2.0**k
    return (rho + rho.conj().T) / 2.0


def reduced_state(source: Any, wires: Sequence | None = None, *, project: str | None = None) -> np.ndarray:
    """The shadow estimate of the reduced density matrix on ``wires`` (2^k x 2^k).

    ``source``: a :class:`~qsense.ShadowBatch` or ``qml.ClassicalShadow`` (wires
    are its wire labels, default all of them), a
    :class:`~qsense.ShadowPurity` that tracks the subsystem (in any order), or a
    :class:`~qsense.ShadowEstimator` tracking every Pauli on the wires.  Tensor
    factors follow the order of ``wires`` (first most significant, as PennyLane).
    ``project``: None (the raw, unbiased, Hermitian trace-1 estimate) or
    ``"physical"`` (the nearest density matrix, :func:`project_physical`).
    """
    from qsense.records import ShadowBatch

    from .purity import ShadowPurity
    from .shadow import ShadowEstimator, _as_batch

    if project not in (None, "physical"):
        raise ReconstructionError(f"project must be None or 'physical'; got {project!r}")
    if isinstance(source, ShadowPurity):
        if source.wires is None:
            raise ReconstructionError("the purity estimator has seen no data yet")
        wires = list(source.wires) if wires is None else list(wires)
        pos = _positions(wires, source.wires, "estimator")
        _check_size(len(pos))
        rho = _from_histogram(_histogram_from_purity(source, pos), len(pos))
    elif isinstance(source, ShadowEstimator):
        if source.wires is None:
            raise ReconstructionError("the shadow estimator has seen no data yet")
        wires = list(source.wires) if wires is None else list(wires)
        pos = _positions(wires, source.wires, "estimator")
        _check_size(len(pos))
        rho = _from_shadow_estimator(source, pos, len(pos))
    elif isinstance(source, ShadowBatch) or (hasattr(source, "bits") and hasattr(source, "recipes")):
        batch = _as_batch(source)
        wires = list(batch.wires) if wires is None else list(wires)
        pos = _positions(wires, batch.wires, "batch")
        k = _check_size(len(pos))
        cls = 2 * batch.bases[:, pos].astype(np.int64) + batch.outcomes[:, pos]
        counts = ClassCounts(k)
        counts.add_keys(class_keys(cls))
        rho = _from_histogram(counts.dense(), k)
    else:
        raise ReconstructionError(
            f"expected a ShadowBatch, qml.ClassicalShadow, ShadowPurity or ShadowEstimator; got {type(source).__name__}")
    return project_physical(rho) if project == "physical" else rho


def _check_size(k: int) -> int:
    if k == 0:
        raise ReconstructionError("a reduced state needs at least one wire")
    if k > MAX_RECONSTRUCT:
        raise ReconstructionError(f"{k} wires: reduced states are limited to {MAX_RECONSTRUCT} qubits (6^k classes, 4^k Paulis)")
    return k


def _simplex(values: np.ndarray) -> np.ndarray:
    """Euclidean projection of a real vector onto the probability simplex."""
    u = np.sort(values)[::-1]
    css = np.cumsum(u) - 1.0
    r = np.arange(1, u.size + 1)
    rho = np.nonzero(u - css / r > 0)[0][-1]
    theta = css[rho] / (rho + 1.0)
    return np.maximum(values - theta, 0.0)


def _check_square(rho: Any) -> np.ndarray:
    r = np.asarray(rho)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0 or r.shape[0] & (r.shape[0] - 1):
        raise ReconstructionError(f"expected a 2^k x 2^k matrix; got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ReconstructionError("the matrix contains NaN or infinite entries")
    if not np.allclose(r, r.conj().T, atol=1e-9):
        raise ReconstructionError("the matrix is not Hermitian")
    return (r + r.conj().T) / 2.0


def project_physical(rho: Any) -> np.ndarray:
    """Nearest density matrix (Frobenius norm) to a Hermitian matrix of any trace
    normalised to 1: eigenvalues projected onto the simplex, eigenvectors kept
    (Smolin, Gambetta, Smith 2012)."""
    r = _check_square(rho)
    r = r / np.trace(r).real if abs(np.trace(r).real) > 1e-12 else r
    lam, vec = np.linalg.eigh(r)
    p = _simplex(lam)
    return (vec * p) @ vec.conj().T


def entropy(rho: Any, alpha: float = 1, base: float = 2) -> float:
    """Renyi-alpha entropy of a density matrix, ``log(tr rho^alpha) / (1 - alpha)``
    (alpha = 1: von Neumann, alpha = inf: min-entropy), in units of log ``base``
    (bits by default).

    Raises :class:`ReconstructionError` (a ``ValueError``) for a matrix with
    eigenvalues below -1e-9 (a raw shadow estimate: project it first, or use
    :class:`~qsense.ShadowPurity` for an unbiased tr rho^2).  Applied to a shadow
    estimate this is a *biased* estimator (docs/estimators.md).
    """
    if not (isinstance(alpha, (int, float, np.integer, np.floating)) and not isinstance(alpha, bool)) or not alpha > 0:
        raise ReconstructionError(f"alpha must be a positive number (or inf); got {alpha!r}")
    if not (isinstance(base, (int, float)) and base > 0 and base != 1):
        raise ReconstructionError(f"base must be a positive number other than 1; got {base!r}")
    r = _check_square(rho)
    lam = np.linalg.eigvalsh(r)
    if lam.min() < -1e-9:
        raise ReconstructionError(
            f"the matrix has a negative eigenvalue ({lam.min():.3g}): not a state; use reduced_state(..., project='physical')")
    lam = np.clip(lam, 0.0, None)
    lam = lam / lam.sum()
    log = math.log(base)
    if alpha == 1:
        nz = lam[lam > 0]
        return float(-(nz * np.log(nz)).sum() / log)
    if math.isinf(alpha):
        return float(-math.log(lam.max()) / log)
    return float(math.log(np.sum(lam**alpha)) / ((1.0 - alpha) * log))
