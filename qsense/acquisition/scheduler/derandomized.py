"""Basis policies: which Pauli basis the next single-copy measurements use.

:class:`DerandomizedBasisPolicy` is the online form of
:func:`qsense.derandomized_bases`: before each block of measurements it asks
every target how many matched snapshots it still needs for its precision,

    need_l = max(min_hits, 1 + ceil(4 p_l (1 - p_l) / eps_l^2)),   p_l = (m_l (1 + v_l) / 2 + 1) / (m_l + 2)

(the matched-ratio estimator's error is sqrt(4p(1 - p) / (m - 1)) after m
matches, p its smoothed fraction of +1 outcomes; v_l is the current estimate
once m_l >= min_hits, else p_l = 1/2, the worst case), and fixes the block's bases by the same conditional-expectation loop,
with each target's weight proportional to its need.  A fraction
``random_fraction`` of the bases is drawn uniformly at random instead, so the
data still answer questions nobody asked yet (a held-out word of weight k is
matched by ~random_fraction / 3^k of the snapshots); the designed bases alone may
never measure it.  Once every target has what it needs, all bases are random.

:class:`UniformBasisPolicy` is the plain classical-shadow choice (every basis
uniformly random), with the same interface, for comparison.

Both return bases as uint8 (count, n) with 0 = X, 1 = Y, 2 = Z, the layout of
:class:`~qsense.records.ShadowBatch`; whoever measures (a backend that can set
bases, or ``qsense.sims.sample_in_bases`` in simulation) hands the records back
through :meth:`DerandomizedBasisPolicy.update`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from qsense.estimators.derandomize import ETA, DesignError, compile_design, run_design
from qsense.estimators.result import Estimate
from qsense.estimators.shadow import ShadowEstimator
from qsense.pauli import PauliTerm
from qsense.records import ShadowBatch

__all__ = ["DerandomizedBasisPolicy", "UniformBasisPolicy"]


def _rng(seed: Any) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _count(count: Any) -> int:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative integer; got {count!r}")
    return int(count)


class UniformBasisPolicy:
    """Every basis uniformly random (plain classical shadows) on ``n`` qubits."""

    name = "uniform"

    def __init__(self, n: int, *, seed: Any = None) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer; got {n!r}")
        self.n = int(n)
        self._rng = _rng(seed)

    def next_bases(self, count: int = 1) -> np.ndarray:
        """uint8 (count, n) uniformly random bases."""
        return self._rng.integers(0, 3, (_count(count), self.n), dtype=np.uint8)

    def update(self, batch: ShadowBatch) -> None:
        """Uniform bases ignore the data (same interface as the derandomized policy)."""


class DerandomizedBasisPolicy:
    """Online derandomized bases that steer a stream onto its targets' precision.

    Parameters
    ----------
    observables:
        The targets (Pauli words or sums, as for :func:`qsense.derandomized_bases`;
        each term of a sum is a target).
    precision:
        One-sigma error wanted per target (a number, or one per observable).
    random_fraction:
        Fraction of bases drawn uniformly at random (0 to 1), which keeps the
        data usable for observables chosen later (docs/scheduler.md: the trade-off).
    n, wires:
        As for :func:`qsense.derandomized_bases`.
    min_hits:
        Matches a target needs before its estimate may lower its need.
    seed:
        Seed (or ``np.random.Generator``) of the random fraction.

    A basis counts towards a target as soon as it is issued (so one block does
    not repeat what the previous one planned while its records are in flight);
    :meth:`resync` resets that to the matches actually received, after records
    were lost.  The matched-ratio estimates are :meth:`estimate`.
    """

    name = "derandomized"

    def __init__(
        self,
        observables: Any,
        precision: Any = 0.05,
        *,
        random_fraction: float = 0.1,
        n: int | None = None,
        wires: Sequence[Hashable] | None = None,
        min_hits: int = 10,
        eta: float = ETA,
        seed: Any = None,
    ) -> None:
        self.design = compile_design(observables, n=n, wires=wires)
        self.n = self.design.n
        L = self.design.L
        eps = np.asarray(precision, dtype=np.float64).ravel()
        if eps.size == 1:
            eps = np.full(L, float(eps[0]))
        elif eps.size != L:
            raise DesignError(f"precision must be one number or one per target word ({L}); got {eps.size}")
        if not np.all(np.isfinite(eps)) or np.any(eps <= 0):
            raise DesignError("precision must be positive and finite")
        if not (isinstance(random_fraction, (int, float)) and 0.0 <= float(random_fraction) <= 1.0):
            raise DesignError(f"random_fraction must lie in [0, 1]; got {random_fraction!r}")
        if isinstance(min_hits, bool) or not isinstance(min_hits, (int, np.integer)) or min_hits < 2:
            raise DesignError(f"min_hits must be an integer >= 2; got {min_hits!r}")
        self.precision = eps
        self.random_fraction = float(random_fraction)
        self.min_hits = int(min_hits)
        self.eta = float(eta)
        self._rng = _rng(seed)
        terms = [PauliTerm(tuple(zip(map(int, s[s >= 0]), ("XYZ"[c] for c in lt[s >= 0]))), True)
                 for s, lt in zip(self.design.support, self.design.letters)]
        self.estimator = ShadowEstimator(terms, method="matched")
        self.issued = np.zeros(L, dtype=np.int64)  # matches planned so far, per target
        self.received = np.zeros(L, dtype=np.int64)  # matches measured so far, per target
        self._wires = None if wires is None else tuple(wires)
        self.counters = {"designed": 0, "random": 0}
        self._log1p = np.log1p(np.power(1.0 / 3.0, np.arange(int(self.design.k.max()) + 1)) * math.expm1(-self.eta / 2))

    # -- what the targets need --------------------------------------------------------
    def _received(self) -> tuple[np.ndarray, np.ndarray]:
        """Per target: current estimate and stderr (0 and inf before any data)."""
        if self.estimator.count == 0:
            L = self.design.L
            return np.zeros(L), np.full(L, np.inf)
        r = self.estimator.estimate()
        return r.values, r.stderr

    def needed(self) -> np.ndarray:
        """Matched snapshots each target needs for its precision (int64 (L,))."""
        m = self.received
        v, _ = self._received()
        # the matched estimator's smoothed +1 fraction (its error bar's); v = 0 until min_hits
        p = np.where(m >= self.min_hits, (m * (1.0 + v) / 2.0 + 1.0) / (m + 2.0), 0.5)
        var = 4.0 * p * (1.0 - p)
        return np.maximum(self.min_hits, 1 + np.ceil(var / self.precision**2)).astype(np.int64)

    @property
    def converged(self) -> bool:
        """Every target's current error bar is within its precision."""
        return bool(np.all(self._received()[1] <= self.precision))

    # -- choosing bases ----------------------------------------------------------------
    def next_bases(self, count: int = 1) -> np.ndarray:
        """uint8 (count, n): the next ``count`` bases, in measurement order."""
        count = _count(count)
        out = self._rng.integers(0, 3, (count, self.n), dtype=np.uint8)
        slots = np.flatnonzero(self._rng.random(count) >= self.random_fraction)
        designed = np.zeros((0, self.n), np.uint8)
        if slots.size:
            need = self.needed()
            hits = np.maximum(self.issued, self.received)
            w = need / float(np.median(need))
            open_ = hits < need
            # the first repetition's shift (later ones use the loop's own): keeps exp() in range
            shift = float(np.mean(((-self.eta / 2) * hits + self._log1p[self.design.k])[open_] / w[open_])) if open_.any() else 0.0
            designed, _, _ = run_design(self.design, need, max_bases=slots.size, hits=hits, weights=w, eta=self.eta, shift=shift)
            # once every target is covered the remaining slots keep their random bases
            out[slots[: len(designed)]] = designed
        self.counters["designed"] += len(designed)
        self.counters["random"] += count - len(designed)
        self.issued += self.design.counts(out)
        return out

    def update(self, batch: ShadowBatch) -> None:
        """Fold in measured snapshots (any bases; the estimates use the matched ones)."""
        if not isinstance(batch, ShadowBatch):
            raise ValueError(f"expected a ShadowBatch; got {type(batch).__name__}")
        if batch.n != self.n or (self._wires is not None and tuple(batch.wires) != self._wires):
            raise ValueError(f"batch wires {batch.wires} do not match the policy's {self._wires or self.n} qubits")
        self.estimator.update(batch)
        self.received += self.design.counts(batch.bases)

    def resync(self) -> None:
        """Count only the matches received so far (after records were lost)."""
        self.issued = self.received.copy()

    def estimate(self) -> Estimate:
        """Matched-ratio estimates of the target words, with error bars."""
        return self.estimator.estimate()
