"""Derandomized Pauli measurement design (Huang, Kueng, Preskill, PRL 127, 030503).

:func:`derandomized_bases` returns a deterministic list of Pauli bases in which
every target observable is measured (its bases equal the observable's letters
on its whole support) at least ``ceil(weight * per_observable)`` times.  Bases
are fixed one qubit at a time by the method of conditional expectations over the
authors' pessimistic confidence bound (eta = 0.9, per-observable weights), the
same loop and tie-breaking as their ``data_acquisition_shadow -d``, so the same
targets give the same bases; a final pass then drops bases whose every hit is
surplus, so the list is never longer than theirs.  The loop is compiled with
numba (:mod:`._derandomize_jit`).

Estimate from such data with the matched-ratio estimator
(``ShadowEstimator(..., method="matched")`` or :func:`~qsense.matched_ratio_expval`):
the 3^k-weighted shadow estimator assumes uniformly random bases and is biased
on a designed list.

Layouts: bases uint8 (B, n) with 0 = X, 1 = Y, 2 = Z (:class:`~qsense.ShadowBatch`'s);
a compiled :class:`Design` holds the targets as ``support`` int64 (L, kmax)
(padded with -1) and ``letters`` uint8 (L, kmax) in 0..2.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qsense.pauli import PauliObservable, parse_observable

__all__ = ["ETA", "Design", "DesignError", "compile_design", "derandomized_bases", "design_counts"]

#: the reference's hyper-parameter eta of the confidence bound
ETA = 0.9


class DesignError(ValueError):
    """Bad input to the measurement design (observables, counts, weights)."""


@dataclass
class Design:
    """Target Pauli words compiled for the design loop (layouts: module docstring).

    ``qptr``/``qobs``/``qlet``: per qubit, the (target, letter) entries acting on
    it, sorted by letter then target (the order the reference sums them in).
    """

    n: int
    support: np.ndarray
    letters: np.ndarray
    k: np.ndarray
    weights: np.ndarray
    labels: list[str]
    qptr: np.ndarray
    qobs: np.ndarray
    qlet: np.ndarray

    @property
    def L(self) -> int:
        """Number of target words."""
        return int(self.k.shape[0])

    def targets(self, per_observable: int) -> np.ndarray:
        """Hits wanted per target: ``ceil(weight * per_observable)`` (int64 (L,))."""
        # the 1e-9 keeps 0.3 * 10 = 3.0000000000000004 at 3, not 4
        return np.ceil(self.weights * per_observable - 1e-9).astype(np.int64)

    def counts(self, bases: np.ndarray) -> np.ndarray:
        """How many of ``bases`` (uint8 (B, n)) measure each target (int64 (L,))."""
        out = np.zeros(self.L, dtype=np.int64)
        for _, H in self.hit_chunks(bases):
            out += H.sum(axis=0, dtype=np.int64)
        return out

    def hit_matrix(self, bases: np.ndarray) -> np.ndarray:
        """bool (B, L): basis b measures target l (equal letters on its support)."""
        parts = [H for _, H in self.hit_chunks(bases)]
        return np.concatenate(parts) if parts else np.zeros((0, self.L), dtype=bool)

    def hit_chunks(self, bases: np.ndarray, reverse: bool = False):
        """Yield ``(first_row, bool (rows, L) hits)`` over row chunks of ``bases``
        (memory bounded by the chunk, not by B x L)."""
        bases = np.asarray(bases)
        if bases.ndim != 2 or bases.shape[1] != self.n:
            raise DesignError(f"bases must have shape (B, {self.n}); got {bases.shape}")
        cols = np.maximum(self.support, 0)
        pad = self.support < 0
        # chunks keep the (rows, L, kmax) comparison near 16 M booleans
        step = max(1, (1 << 24) // max(1, self.L * self.support.shape[1]))
        starts = range(0, bases.shape[0], step)
        for lo in reversed(starts) if reverse else starts:
            sub = bases[lo : lo + step]
            yield lo, ((sub[:, cols] == self.letters) | pad).all(axis=2)


def _words(observables: Any, weights: Any) -> tuple[list[tuple], list[float], list[str]]:
    """Single Pauli words (terms of sums expanded, each with its observable's weight)."""
    if isinstance(observables, (str, PauliObservable)) or hasattr(observables, "pauli_rep"):
        observables = [observables]
    try:
        obs = [parse_observable(o) for o in observables]
    except ValueError as exc:
        raise DesignError(str(exc)) from None
    if not obs:
        raise DesignError("at least one observable is needed")
    if weights is None:
        w = np.ones(len(obs))
    else:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != (len(obs),):
            raise DesignError(f"weights must hold one number per observable ({len(obs)}); got {w.size}")
        if not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise DesignError("weights must be positive and finite")
    terms, tw, labels = [], [], []
    for o, wi in zip(obs, w):
        for _, term in o.terms:
            terms.append(term)
            tw.append(float(wi))
            labels.append(str(term) if len(o.terms) > 1 else o.label)
    return terms, tw, labels


def compile_design(
    observables: Any, weights: Any = None, *, n: int | None = None, wires: Sequence[Hashable] | None = None
) -> Design:
    """Compile target observables (strings, :class:`~qsense.PauliObservable`,
    PennyLane Pauli words or sums) into a :class:`Design` on ``n`` qubits.

    String wires are positions; ``n`` defaults to one more than the largest wire.
    PennyLane operators name wire labels, resolved against ``wires``.
    """
    terms, tw, labels = _words(observables, weights)
    if wires is None:
        if any(not t.positional for t in terms):
            raise DesignError("observables with wire labels (PennyLane operators) need wires=[...]")
        top = max((int(w) for t in terms for w, _ in t.ops), default=0)
        if n is None:
            n = top + 1
        wires = range(int(n))
    elif n is not None and int(n) != len(wires):
        raise DesignError(f"n={n} disagrees with the {len(wires)} wires given")
    n = len(wires)
    if n < 1:
        raise DesignError("the design needs at least one qubit")
    try:
        resolved = [t.resolve(wires) for t in terms]
    except ValueError as exc:
        raise DesignError(str(exc)) from None
    L = len(resolved)
    k = np.fromiter((len(r) for r in resolved), dtype=np.int64, count=L)
    kmax = max(1, int(k.max()))
    support = np.full((L, kmax), -1, dtype=np.int64)
    letters = np.zeros((L, kmax), dtype=np.uint8)
    for i, r in enumerate(resolved):
        for s, (col, code) in enumerate(r):
            support[i, s] = col
            letters[i, s] = code - 1  # Pauli codes 1..3 -> basis 0..2
    rows = np.repeat(np.arange(L), k)
    keep = support >= 0
    cols = support[keep]
    lets = letters[keep].astype(np.int64)
    order = np.lexsort((rows, lets, cols))  # by qubit, then letter, then target
    qptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(cols, minlength=n), out=qptr[1:])
    return Design(n, support, letters, k, np.asarray(tw), labels, qptr, rows[order].astype(np.int64), lets[order])


def _loop():
    """The compiled loop, or the plain-Python one where numba is missing or
    ``QSENSE_NO_JIT`` is set (same results, far slower)."""
    if not os.environ.get("QSENSE_NO_JIT"):
        try:
            from ._derandomize_jit import design_loop_jit

            return design_loop_jit
        except ImportError:  # pragma: no cover - numba is a dependency
            pass
    from ._derandomize_kernel import design_loop

    return design_loop


def run_design(
    design: Design, target: np.ndarray, *, max_bases: int, hits: np.ndarray | None = None,
    weights: np.ndarray | None = None, eta: float = ETA, shift: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Run the conditional-expectation loop from ``hits`` until every target is
    met or ``max_bases`` bases were fixed: ``(bases, hits, finished)``."""
    h0 = np.zeros(design.L, np.int64) if hits is None else np.ascontiguousarray(hits, dtype=np.int64)
    w = design.weights if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    return _loop()(
        design.n, design.qptr, design.qobs, design.qlet, design.k, w,
        np.ascontiguousarray(target, dtype=np.int64), float(eta), int(max_bases), h0, float(shift),
    )


def _prune(bases: np.ndarray, design: Design, target: np.ndarray) -> np.ndarray:
    """Drop bases, latest first, whose every hit is surplus (all targets stay met)."""
    counts = design.counts(bases)
    keep = np.ones(len(bases), dtype=bool)
    for lo, H in design.hit_chunks(bases, reverse=True):
        for r in range(H.shape[0] - 1, -1, -1):
            idx = np.flatnonzero(H[r])
            if np.all(counts[idx] > target[idx]):
                counts[idx] -= 1
                keep[lo + r] = False
    return bases[keep]


def derandomized_bases(
    observables: Any,
    per_observable: int = 100,
    weights: Any = None,
    *,
    n: int | None = None,
    wires: Sequence[Hashable] | None = None,
    eta: float = ETA,
    prune: bool = True,
) -> np.ndarray:
    """Deterministic Pauli bases measuring every observable at least
    ``ceil(weight * per_observable)`` times.

    Parameters
    ----------
    observables:
        Pauli words: strings (``"X0 Z3"``, ``"XIZ"``), :class:`~qsense.PauliObservable`
        (for example from ``qsense.streaming.reference.read_observables``),
        PennyLane words; every term of a sum becomes a target.
    per_observable:
        M, the hits wanted for an observable of weight 1.
    weights:
        Positive per-observable weights (default 1): observable l is measured at
        least ``ceil(w_l * M)`` times and its bound's exponent is divided by w_l,
        as in the reference's observable files (``k P q ... weight``).
    n, wires:
        Number of qubits (default: one more than the largest wire) or the wire
        labels PennyLane observables refer to.
    eta:
        The confidence bound's hyper-parameter (the reference's 0.9).
    prune:
        Drop bases whose hits are all surplus after the loop (never lengthens
        the list; ``False`` gives exactly the reference's list).

    Returns uint8 (B, n), 0 = X, 1 = Y, 2 = Z, row order = measurement order.
    Raises :class:`DesignError` (a ``ValueError``) on bad input.
    """
    if isinstance(per_observable, bool) or not isinstance(per_observable, (int, np.integer)) or per_observable < 1:
        raise DesignError(f"per_observable must be a positive integer; got {per_observable!r}")
    if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta > 0):
        raise DesignError(f"eta must be a positive number; got {eta!r}")
    design = compile_design(observables, weights, n=n, wires=wires)
    target = design.targets(int(per_observable))
    # every repetition hits at least one unmet target, so sum(target) bounds B; the
    # factor 2 only guards against a loop that would never end on a bug
    bases, _, finished = run_design(design, target, max_bases=2 * int(target.sum()) + 1, eta=float(eta))
    if not finished:  # pragma: no cover - would be a bug in the loop
        raise DesignError("the derandomization did not meet its targets within its bound on the number of bases")
    return _prune(bases, design, target) if prune else bases


def design_counts(bases: Any, observables: Any, *, n: int | None = None, wires: Sequence[Hashable] | None = None) -> np.ndarray:
    """How many rows of ``bases`` (uint8 (B, n)) measure each observable's terms
    (int64, one entry per term, in order)."""
    bases = np.asarray(bases)
    if bases.ndim != 2:
        raise DesignError(f"bases must be a (B, n) array; got shape {bases.shape}")
    return compile_design(observables, n=bases.shape[1] if n is None and wires is None else n, wires=wires).counts(bases)
