"""Estimation targets, their cost under each measurement family, and one
estimator that combines both families.

A *target* is a number the experimentalist wants with a tolerance ``tol``:

=======================  ==================================  ==================
target                   single-copy shadows                 two-copy Bell
=======================  ==================================  ==================
:class:`Expval` ⟨P⟩       mean of 3^k-weighted snapshots      impossible (sign)
:class:`PauliSquare`      U-statistic of snapshot pairs       mean of ±1 shots
:class:`SquareSum`        Σ c_i tr(P_i ρ)² (e.g. |visib.|²)   Σ c_i (shot means)
:class:`Purity`           U-statistic (ShadowPurity)          mean of (−1)^#singlets
=======================  ==================================  ==================

Each target knows, from a plug-in value of itself, how many copies each family
needs to reach ``tol`` (docs/scheduler.md has the derivations):

* ``shadow_copies(value, tol)``: snapshots N_S with Var ≤ tol²;
* ``bell_shot_variance(value, moment)``: the variance of one reweighted Bell shot
  when the first copy waited τ ~ Exp(λ) (truncated at the cap), given
  ``moment(j) = E[e^{jτ/T2}]``; shots needed = variance / tol²;
* ``bell_shot_variances(value, moments)`` / ``bell_shots_caps(...)``: the same
  for a whole grid of caps at once (:class:`WaitMoments`), which is what the
  adaptive scheduler's cap search evaluates.

:class:`TargetSet` is an ordinary online estimator (``update(batch)`` with either
record kind, ``estimate()``) that feeds both families' data into each target and
combines them by inverse variance, and the source of plug-in values for the
adaptive scheduler.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from qsense.estimators.bell import BellEstimator
from qsense.estimators.decoherence import make_decoherence
from qsense.estimators.kernels import shadow_counts
from qsense.estimators.purity import MAX_SUBSYSTEM, ShadowPurity
from qsense.estimators.result import Estimate
from qsense.pauli import PauliObservable, PauliTerm, compile_observables, parse_observable
from qsense.records import BellBatch, ShadowBatch

__all__ = [
    "Target",
    "Expval",
    "PauliSquare",
    "SquareSum",
    "Purity",
    "visibility_squared",
    "TargetSet",
    "wait_moment",
    "WaitMoments",
    "check_piston",
    "square_shadow_variance",
    "purity_shadow_variance",
    "copies_for_variance",
]

log = logging.getLogger(__name__)

Moment = Callable[[int], float]


# -- the waiting-time moments ---------------------------------------------------
def _exponent(j: float, t2: float, piston: float) -> float:
    """The growth rate a of the reweighting second moment E[e^{a τ}]: j/T2 from
    the memory, 2D from the piston (the shot's signal decays as e^{−Dτ}, so its
    reweighting factor e^{Dτ} squares to e^{2Dτ}); 0 for j = 0 (no signal to undo)."""
    if j == 0:
        return 0.0
    return (j / t2 if math.isfinite(t2) else 0.0) + 2.0 * piston


def wait_moment(j: int, rate: float, t2: float, cap: float | None = None, piston: float = 0.0) -> float:
    """E[exp(j τ / T2 + 2 D τ) | τ < cap] for a wait τ ~ Exp(rate), D = ``piston``.

    This is the second moment of the reweighting factor of a Bell shot whose
    first copy waited τ (j = 2k for a weight-k Pauli): e^{kτ/T2} undoes the
    memory's decoherence and e^{Dτ} the piston phase diffusion between the two
    copies (D rad²/s; the visibility of a pair decays as e^{−Dτ}).  Infinite
    when the untruncated integral diverges (rate <= j/T2 + 2D and no cap).
    """
    a = _exponent(j, t2, piston)
    if a == 0.0:
        return 1.0
    if rate <= 0:
        return math.inf
    r = rate - a
    if cap is None or not math.isfinite(cap):
        return rate / r if r > 0 else math.inf
    lc = rate * cap
    denom = -math.expm1(-lc)  # P(τ < cap)
    x = r * cap
    try:
        num = lc if abs(x) < 1e-12 else rate * (-math.expm1(-x)) / r
    except OverflowError:
        return math.inf
    return num / denom


class WaitMoments:
    """:func:`wait_moment` on a grid of caps at once: ``moments(j)`` is the float64
    ``(C,)`` array of E[exp(j τ / T2 + 2Dτ) | τ < cap_c] for τ ~ Exp(rate).

    ``caps``: ``(C,)`` seconds, ``inf`` (or NaN) for "no cap"; ``piston``: the
    piston phase diffusion D (rad²/s, 0 = none).  Each ``j`` is
    computed once and cached, because the targets of one plan ask for the same
    few moments (j = 2k) again and again.  Values equal :func:`wait_moment`'s to
    a few ulps (NumPy's ``expm1`` against ``math.expm1``).
    """

    def __init__(self, rate: float, t2: float, caps: Sequence[float] | np.ndarray, piston: float = 0.0) -> None:
        self.rate = float(rate)
        self.t2 = float(t2)
        self.piston = check_piston(piston)
        self.caps = np.asarray(caps, dtype=np.float64).reshape(-1)
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.caps.size

    def __call__(self, j: int) -> np.ndarray:
        out = self._cache.get(j)
        if out is None:
            out = self.many((j,))[0]
        return out

    def many(self, js: Sequence[int]) -> np.ndarray:
        """The moments of several ``js`` at once: float64 ``(J, C)``.  Missing ones
        are computed in one vectorised pass (a target such as an m-qubit purity
        needs m + 1 of them, and per-j NumPy calls cost more than the arithmetic)."""
        todo = [j for j in dict.fromkeys(js) if j not in self._cache]
        if todo:
            for j, row in zip(todo, self._compute(np.array(todo, dtype=np.float64))):
                self._cache[j] = row
        return np.stack([self._cache[j] for j in js]) if js else np.empty((0, self.caps.size))

    def at(self, c: int) -> Moment:
        """The scalar moment function of cap ``c`` (for targets without a
        vectorised ``bell_shot_variances``)."""
        return lambda j: float(self(j)[c])

    def _compute(self, js: np.ndarray) -> np.ndarray:
        """wait_moment(j, rate, t2, cap) for ``js`` ``(J,)`` × caps ``(C,)``: ``(J, C)``,
        the same cases and the same operations as the scalar function."""
        rate, t2, caps = self.rate, self.t2, self.caps
        shape = (js.size, caps.size)
        # the exponent a_j of E[e^{a_j τ}], as _exponent computes it (the same roundings)
        a = (js / t2 if math.isfinite(t2) else np.zeros(js.size)) + 2.0 * self.piston
        a[js == 0] = 0.0
        if not np.any(a > 0):
            return np.ones(shape)
        if rate <= 0:
            return np.where((a == 0)[:, None], 1.0, np.full(shape, math.inf))
        r = (rate - a)[:, None]  # (J, 1)
        lc = rate * caps  # (C,)
        # expm1 overflows to inf (wait_moment's OverflowError branch); r = 0 and
        # the uncapped caps (inf) produce NaN/inf in branches np.where discards
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            x = r * caps  # (J, C)
            num = np.where(np.abs(x) < 1e-12, lc, rate * (-np.expm1(-x)) / r)
            capped = num / -np.expm1(-lc)
            uncapped = np.where(r > 0, rate / r, math.inf)  # (J, 1)
        out = np.where(np.isfinite(caps), capped, uncapped)
        out[a == 0] = 1.0
        return out


def check_piston(piston: Any) -> float:
    """``piston_diffusion`` as a float, or a ValueError naming it (it must be a finite rate >= 0, rad²/s)."""
    try:
        d = float(piston)
    except (TypeError, ValueError):
        raise ValueError(f"piston_diffusion must be a finite rate >= 0 (rad^2/s); got {piston!r}") from None
    if not (math.isfinite(d) and d >= 0):
        raise ValueError(f"piston_diffusion must be a finite rate >= 0 (rad^2/s); got {piston!r}")
    return d


def copies_for_variance(a: float, b: float, tol: float) -> float:
    """Smallest N with a/N + b/N² <= tol² (a, b >= 0)."""
    e2 = tol * tol
    if a <= 0 and b <= 0:
        return 1.0
    return (a + math.sqrt(a * a + 4.0 * b * e2)) / (2.0 * e2)


def square_shadow_variance(s: float, k: int) -> tuple[float, float]:
    """(a, b) of Var ≈ a/N + b/N² for the U-statistic estimate of s = tr(Pρ)² from
    N snapshots, weight-k P: a = 4 s (3^k − s), b = 2 (9^k − s²)."""
    s = min(max(s, 0.0), 1.0)
    return 4.0 * s * (3.0**k - s), 2.0 * (9.0**k - s * s)


def _local_r2(p: float, m: int) -> float:
    """Per-qubit squared Bloch length of a product state with purity p on m qubits."""
    p = min(max(p, 2.0**-m), 1.0)
    return min(max(2.0 * p ** (1.0 / m) - 1.0, 0.0), 1.0)


def purity_shadow_variance(p: float, m: int) -> tuple[float, float]:
    """(a, b) of Var ≈ a/N + b/N² for the shadow purity U-statistic on m qubits.

    Product-state model with per-qubit purity p^(1/m) (Bloch length² r²):
    zeta1 = ((1 + 5 r²)/4)^m − p² (variance of tr(ρ̂ ρ) over snapshots),
    zeta2 = (7 + r²/2)^m − p² (second moment of the kernel over independent
    pairs: ~7^m); Var = 4 zeta1 / N + 2 zeta2 / N².
    """
    r2 = _local_r2(p, m)
    p = min(max(p, 0.0), 1.0)
    z1 = max(((1.0 + 5.0 * r2) / 4.0) ** m - p * p, 0.0)
    z2 = max((7.0 + r2 / 2.0) ** m - p * p, 0.0)
    return 4.0 * z1, 2.0 * z2


def _purity_bell_second_moment(p: float, m: int, moment: Moment) -> float:
    """E[(Π_wires f)^2] of the reweighted Bell purity shot (docs/physics.md §3: triplet
    (1+w)/2, singlet (1−3w)/2, w = e^{τ/T2}).

    For one wire of a product state with Bloch length² r², E[f²] =
    (1 + 3w² + 2r²(1 − w))/4 ≤ (1 + 3w²)/4 (w ≥ 1), with equality for maximally
    mixed marginals.  We use the bound for every state: exact at w = 1 (the
    familiar 1 − p² per-shot variance), an upper bound for product states, and
    within a few per cent of the measured variance for entangled states, whose
    marginals are close to maximally mixed (docs/scheduler.md).  Its m-th power
    is a polynomial in w², averaged term by term with E[w^j] = moment(j).
    """
    per_wire = np.array([0.25, 0.0, 0.75])
    poly = np.array([1.0])
    for _ in range(m):
        poly = np.convolve(poly, per_wire)
    top = moment(2 * m)
    if not math.isfinite(top):
        return math.inf
    return float(sum(c * moment(j) for j, c in enumerate(poly) if c != 0.0))


@lru_cache(maxsize=None)
def _purity_bell_poly(m: int) -> tuple[tuple[int, float], ...]:
    """Nonzero (j, coefficient) of ((1 + 3w²)/4)^m as a polynomial in w (the
    same convolution as :func:`_purity_bell_second_moment`, computed once per m)."""
    per_wire = np.array([0.25, 0.0, 0.75])
    poly = np.array([1.0])
    for _ in range(m):
        poly = np.convolve(poly, per_wire)
    return tuple((j, float(c)) for j, c in enumerate(poly) if c != 0.0)


def _purity_bell_second_moments(m: int, moments: WaitMoments) -> np.ndarray:
    """:func:`_purity_bell_second_moment` on every cap of ``moments``: ``(C,)``.

    The terms are summed in the same order as the scalar version (so the sums
    agree to the moments' own ulps); inf wherever the top moment is."""
    poly = _purity_bell_poly(m)
    table = moments.many([j for j, _ in poly] + [2 * m])  # (len(poly) + 1, C)
    acc: Any = 0
    for row, (_, c) in zip(table, poly):
        acc = acc + c * row
    acc = np.broadcast_to(np.asarray(acc, dtype=np.float64), (len(moments),))
    return np.where(np.isfinite(table[-1]), acc, math.inf)


# -- targets --------------------------------------------------------------------
def _single_term(p: Any) -> PauliTerm:
    obs = parse_observable(p)
    if len(obs.terms) != 1 or obs.terms[0][0] != 1.0:
        raise ValueError(f"a target needs a single Pauli word with coefficient 1; got {p!r}")
    term = obs.terms[0][1]
    if term.weight == 0:
        raise ValueError("the identity is not a target (its value is 1)")
    return term


class Target:
    """Base class: ``label``, ``tol`` (None: the TargetSet's default)."""

    label: str
    tol: float | None = None
    #: families that can estimate it
    families: tuple[str, ...] = ("shadow", "bell")
    #: plug-in value before any data (documented per target)
    prior: float = 0.5

    def shadow_copies(self, value: float | None, tol: float) -> float:
        raise NotImplementedError

    def bell_shot_variance(self, value: float | None, moment: Moment) -> float:
        raise NotImplementedError

    def bell_shots(self, value: float | None, tol: float, moment: Moment) -> float:
        """Bell shots (pairs) needed to reach ``tol``."""
        if "bell" not in self.families:
            return math.inf
        v = self.bell_shot_variance(value, moment)
        return max(v, 1e-12) / (tol * tol) if math.isfinite(v) else math.inf

    def bell_shot_variances(self, value: float | None, moments: WaitMoments) -> np.ndarray:
        """:meth:`bell_shot_variance` at every cap of ``moments``: float64 ``(C,)``.

        This default calls the scalar method once per cap; the built-in
        targets override it with array arithmetic."""
        return np.array([self.bell_shot_variance(value, moments.at(c)) for c in range(len(moments))], dtype=np.float64)

    def bell_shots_caps(self, value: float | None, tol: float, moments: WaitMoments) -> np.ndarray:
        """:meth:`bell_shots` at every cap of ``moments``: float64 ``(C,)``."""
        if "bell" not in self.families:
            return np.full(len(moments), math.inf)
        v = self.bell_shot_variances(value, moments)
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(v), np.maximum(v, 1e-12) / (tol * tol), math.inf)

    def _value(self, value: float | None) -> float:
        return self.prior if value is None or not math.isfinite(value) else float(value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label!r}, tol={self.tol})"


class Expval(Target):
    """Signed ⟨P⟩ = tr(Pρ): single-copy shadows only (Bell data lose the sign).
    Shadow variance per snapshot 3^k − ⟨P⟩²; prior ⟨P⟩ = 0 (the worst case)."""

    families = ("shadow",)
    prior = 0.0

    def __init__(self, pauli: Any, tol: float | None = None, label: str | None = None) -> None:
        self.term = _single_term(pauli)
        self.k = self.term.weight
        self.label = label or f"<{self.term}>"
        self.tol = tol

    def shadow_copies(self, value: float | None, tol: float) -> float:
        mu = min(abs(self._value(value)), 1.0)
        return max(3.0**self.k - mu * mu, 1e-12) / (tol * tol)

    def bell_shot_variance(self, value: float | None, moment: Moment) -> float:
        return math.inf

    def bell_shot_variances(self, value: float | None, moments: WaitMoments) -> np.ndarray:
        return np.full(len(moments), math.inf)


class PauliSquare(Target):
    """tr(Pρ)² (the square of a Pauli expectation, e.g. |⟨P⟩|² of a stabiliser).

    Shadows: U-statistic, Var ≈ 4s(3^k − s)/N + 2(9^k − s²)/N².  Bell: each shot is
    ±1 reweighted by e^{kτ/T2}: variance E[e^{2kτ/T2}] − s².  Prior s = 1/2.
    """

    def __init__(self, pauli: Any, tol: float | None = None, label: str | None = None) -> None:
        self.term = _single_term(pauli)
        self.k = self.term.weight
        self.label = label or f"<{self.term}>^2"
        self.tol = tol

    def shadow_copies(self, value: float | None, tol: float) -> float:
        a, b = square_shadow_variance(self._value(value), self.k)
        return copies_for_variance(a, b, tol)

    def bell_shot_variance(self, value: float | None, moment: Moment) -> float:
        s = min(max(self._value(value), 0.0), 1.0)
        return moment(2 * self.k) - s * s

    def bell_shot_variances(self, value: float | None, moments: WaitMoments) -> np.ndarray:
        s = min(max(self._value(value), 0.0), 1.0)
        return moments(2 * self.k) - s * s


class SquareSum(Target):
    """Σ_i c_i tr(P_i ρ)² over several Paulis (for example |visibility|²).

    Error bars of the sum are taken as Σ|c_i| σ_i (the terms are measured on the
    same records and may be correlated; the linear sum is an upper bound).
    ``value`` plug-ins are split evenly over the terms for the cost model.
    """

    def __init__(self, terms: Mapping[Any, float], tol: float | None = None, label: str | None = None) -> None:
        if not terms:
            raise ValueError("a SquareSum needs at least one term")
        self.terms = [(_single_term(p), float(c)) for p, c in terms.items()]
        self.label = label or " + ".join(f"{c:g}*<{t}>^2" for t, c in self.terms)
        self.tol = tol

    def _split(self, value: float | None) -> list[float]:
        total = sum(abs(c) for _, c in self.terms)
        v = self._value(value) if value is not None else self.prior * total
        # the same s for each term such that sum c_i s = value
        s = min(max(v / total, 0.0), 1.0) if total > 0 else 0.0
        return [s] * len(self.terms)

    def shadow_copies(self, value: float | None, tol: float) -> float:
        ab = [square_shadow_variance(s, t.weight) for s, (t, _) in zip(self._split(value), self.terms)]
        cs = [abs(c) for _, c in self.terms]

        def se(N: float) -> float:
            return sum(c * math.sqrt(a / N + b / (N * N)) for c, (a, b) in zip(cs, ab))

        lo, hi = 1.0, 1.0
        while se(hi) > tol:
            hi *= 2.0
            if hi > 1e40:
                return math.inf
        for _ in range(80):  # bisection in log space
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if se(mid) > tol else (lo, mid)
        return hi

    def bell_shot_variance(self, value: float | None, moment: Moment) -> float:
        sd = 0.0
        for s, (t, c) in zip(self._split(value), self.terms):
            v = moment(2 * t.weight) - s * s
            if not math.isfinite(v):
                return math.inf
            sd += abs(c) * math.sqrt(max(v, 0.0))
        return sd * sd

    def bell_shot_variances(self, value: float | None, moments: WaitMoments) -> np.ndarray:
        # the scalar loop on (C,) arrays, term by term in the same order; a cap
        # where any term's variance is infinite gives inf, as the early return does
        sd = np.zeros(len(moments))
        bad = np.zeros(len(moments), dtype=bool)
        for s, (t, c) in zip(self._split(value), self.terms):
            v = moments(2 * t.weight) - s * s
            bad |= ~np.isfinite(v)
            with np.errstate(invalid="ignore"):
                sd = sd + abs(c) * np.sqrt(np.maximum(v, 0.0))
        return np.where(bad, math.inf, sd * sd)


def visibility_squared(j: int, k: int, tol: float | None = None) -> SquareSum:
    """|ρ_jk|² = (⟨XX⟩² + ⟨XY⟩² + ⟨YX⟩² + ⟨YY⟩²)/8 on qubits (j, k).

    For a heralded photon spread over M telescopes (docs/physics.md §5) this is
    |γ_jk|²/M², the squared fringe visibility, insensitive to a common piston
    phase; Bell pairs measure it without the sign problem of single copies.
    """
    terms = {f"{a}{j} {b}{k}": 0.125 for a in "XY" for b in "XY"}
    return SquareSum(terms, tol=tol, label=f"|rho_{j}{k}|^2")


class Purity(Target):
    """tr(ρ_A²) of a subsystem A (``wires``: positions; None = the whole register).

    Shadows: U-statistic with Var ≈ 4ζ1/N + 2ζ2/N², ζ2 ~ (7 + r²/2)^|A|
    (:func:`purity_shadow_variance`); Bell: mean of (−1)^{#singlets}, reweighted
    per wire for waiting (:func:`_purity_bell_second_moment`).  Prior p = 1/2.
    """

    def __init__(self, wires: Sequence[int] | None = None, tol: float | None = None, label: str | None = None, n: int | None = None) -> None:
        self.wires = None if wires is None else tuple(int(q) for q in wires)
        if self.wires is not None and (not self.wires or len(set(self.wires)) != len(self.wires)):
            raise ValueError(f"purity wires must be distinct positions; got {wires!r}")
        self.n = n
        self.label = label or ("purity" if self.wires is None else f"purity{list(self.wires)}")
        self.tol = tol

    def size(self, n: int | None = None) -> int:
        if self.wires is not None:
            return len(self.wires)
        n = self.n if n is None else n
        if n is None:
            raise ValueError("the whole-register purity needs the number of qubits (bind the TargetSet first)")
        return n

    def shadow_copies(self, value: float | None, tol: float, n: int | None = None) -> float:
        m = self.size(n)
        if m > MAX_SUBSYSTEM:
            return math.inf
        a, b = purity_shadow_variance(self._value(value), m)
        return copies_for_variance(a, b, tol)

    def bell_shot_variance(self, value: float | None, moment: Moment, n: int | None = None) -> float:
        m = self.size(n)
        p = min(max(self._value(value), 0.0), 1.0)
        m2 = _purity_bell_second_moment(p, m, moment)
        return m2 - p * p if math.isfinite(m2) else math.inf

    def bell_shot_variances(self, value: float | None, moments: WaitMoments, n: int | None = None) -> np.ndarray:
        m = self.size(n)
        p = min(max(self._value(value), 0.0), 1.0)
        m2 = _purity_bell_second_moments(m, moments)
        return np.where(np.isfinite(m2), m2 - p * p, math.inf)


# -- the combined estimator -------------------------------------------------------
def _inverse_variance(parts: list[tuple[float, float]]) -> tuple[float, float]:
    good = [(v, s) for v, s in parts if math.isfinite(v) and math.isfinite(s)]
    if not good:
        return (parts[0][0] if parts else math.nan), math.inf
    if len(good) == 1:
        return good[0]
    w = np.array([1.0 / max(s, 1e-12) ** 2 for _, s in good])
    v = np.array([v for v, _ in good])
    return float(w @ v / w.sum()), float(1.0 / math.sqrt(w.sum()))


class TargetSet:
    """Online estimates of a list of targets from both record kinds.

    Parameters
    ----------
    targets:
        :class:`Target` objects (or Pauli strings, read as :class:`Expval`).
    tol:
        Default tolerance for targets without their own.
    t2:
        Memory T2 in seconds: Bell shots are reweighted by their ``wait`` to undo
        decoherence (``None`` or ``inf``: no reweighting).
    decoherence:
        The memory's model (:mod:`qsense.estimators.decoherence`: ``"depolarizing"``,
        ``"dephasing"`` or a model object such as ``memory.decoherence``); the Bell
        estimates reweight per Pauli letter as it says.  Default: depolarizing at ``t2``.
    piston_diffusion:
        Piston phase diffusion D (rad²/s) between the two copies of a pair (a
        telescope array's atmosphere; docs/telescope.md): Bell visibilities decay
        as e^{−Dτ} with the wait τ.  Used by the adaptive scheduler's cost model
        (it shortens the wait cap as D grows); the estimates here are *not*
        corrected for it (``SquaredVisibilityEstimator(piston_diffusion=D)`` is).

    ``update(batch)`` accepts :class:`ShadowBatch` and :class:`BellBatch`;
    ``estimate()`` combines, per target, the shadow and Bell estimates by inverse
    variance; ``by_family()`` shows both separately; ``plugin()`` is what the
    adaptive scheduler plans with.
    """

    def __init__(self, targets: Iterable[Target | str], tol: float = 0.05, t2: float | None = None,
                 decoherence: Any = None, piston_diffusion: float = 0.0) -> None:
        self.targets: list[Target] = [t if isinstance(t, Target) else Expval(t) for t in targets]
        if not self.targets:
            raise ValueError("at least one target is needed")
        labels = [t.label for t in self.targets]
        if len(set(labels)) != len(labels):
            raise ValueError(f"target labels must be unique; got {labels}")
        if not tol > 0:
            raise ValueError(f"tol must be positive; got {tol!r}")
        self.tol = float(tol)
        self.piston_diffusion = check_piston(piston_diffusion)
        if decoherence is not None and not isinstance(decoherence, str):
            model_t2 = getattr(decoherence, "t2", None)
            if t2 is None and model_t2 is not None:
                t2 = model_t2  # the model object carries its own T2
        self.t2 = None if t2 is None or not math.isfinite(t2) else float(t2)
        self.decoherence = None if self.t2 is None else make_decoherence(decoherence, t2=self.t2)
        # unique Pauli terms, for shadows (signed and squared) and Bell (squared)
        self._terms: list[PauliTerm] = []
        self._bell_terms: list[PauliTerm] = []
        for t in self.targets:
            for term in self._terms_of(t):
                if term not in self._terms:
                    self._terms.append(term)
                if not isinstance(t, Expval) and term not in self._bell_terms:
                    self._bell_terms.append(term)
        self.n: int | None = None
        self.wires: tuple | None = None
        self._table = None
        self._S = np.zeros(len(self._terms))
        self._Q = np.zeros(len(self._terms))
        self._N = 0
        self._spurity: ShadowPurity | None = None
        self._purity_keys: list[tuple[int, ...]] = []
        self._bell: BellEstimator | None = None
        self._cache: dict | None = None

    @staticmethod
    def _terms_of(t: Target) -> list[PauliTerm]:
        if isinstance(t, (Expval, PauliSquare)):
            return [t.term]
        if isinstance(t, SquareSum):
            return [term for term, _ in t.terms]
        return []

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(t.label for t in self.targets)

    def tol_of(self, t: Target) -> float:
        return self.tol if t.tol is None else float(t.tol)

    @property
    def counts(self) -> dict[str, int]:
        """Records folded in so far per family."""
        return {"shadow": self._N, "bell": 0 if self._bell is None else self._bell.count}

    def accepts(self, kind: str) -> bool:
        return kind in ("shadow", "bell")

    # -- binding -----------------------------------------------------------------
    def _bind(self, wires: tuple) -> None:
        if self.wires is not None:
            if tuple(wires) != self.wires:
                raise ValueError(f"batch wires {tuple(wires)} differ from the target set's {self.wires}")
            return
        self.wires = tuple(wires)
        self.n = len(self.wires)
        for t in self.targets:
            if isinstance(t, Purity) and t.wires is None:
                t.n = self.n
        obs = [PauliObservable(((1.0, term),), str(term)) for term in self._terms]
        if obs:
            self._table = compile_observables(obs, self.wires)
            self._weights = self._table.weight[self._table.term_index].astype(np.float64)
        keys = []
        for t in self.targets:
            if isinstance(t, Purity):
                key = tuple(range(self.n)) if t.wires is None else t.wires
                if any(not 0 <= q < self.n for q in key):
                    raise ValueError(f"{t.label}: wires {key} outside the data's {self.n} qubits")
                if key not in keys:
                    keys.append(key)
        self._purity_keys = keys
        shadow_keys = [k for k in keys if len(k) <= MAX_SUBSYSTEM]
        if shadow_keys:
            self._spurity = ShadowPurity(shadow_keys)
        sub = [k for k in keys if len(k) != self.n]
        self._bell = BellEstimator([str(t) for t in self._bell_terms], t2=self.t2, purity_subsystems=sub,
                                   **({"decoherence": self.decoherence} if self.decoherence is not None else {}))

    # -- data --------------------------------------------------------------------
    def update(self, batch: ShadowBatch | BellBatch) -> None:
        """Fold in a batch of either kind."""
        if batch.T == 0:
            return
        self._bind(batch.wires)
        self._cache = None
        if isinstance(batch, ShadowBatch):
            if self._table is not None:
                matched, odd = shadow_counts(batch.bases, batch.outcomes, self._table, [batch.T])
                m = self._table.combine(matched[0].astype(np.float64))
                o = self._table.combine(odd[0].astype(np.float64))
                self._S += 3.0**self._weights * (m - 2.0 * o)
                self._Q += 9.0**self._weights * m
            if self._spurity is not None:
                self._spurity.update(batch)
            self._N += batch.T
        elif isinstance(batch, BellBatch):
            self._bell.update(batch)
        else:
            raise ValueError(f"expected a ShadowBatch or BellBatch; got {type(batch).__name__}")

    # -- per-family estimates ------------------------------------------------------
    def _shadow_term(self, i: int) -> tuple[float, float, float, float]:
        """(mean, se of mean, square U-statistic, se of square) of term i."""
        N = self._N
        if N < 2:
            return math.nan, math.inf, math.nan, math.inf
        S, Q = self._S[i], self._Q[i]
        mean = S / N
        ex2 = Q / N
        var1 = max(ex2 - mean * mean, 0.0) * N / (N - 1)
        u = (S * S - Q) / (N * (N - 1.0))
        mu2 = max(u, 0.0)
        z1 = mu2 * max(ex2 - mu2, 0.0)
        z2 = max(ex2 * ex2 - mu2 * mu2, 0.0)
        var_u = (4.0 * (N - 2.0) * z1 + 2.0 * z2) / (N * (N - 1.0))
        return mean, math.sqrt(var1 / N), u, math.sqrt(var_u)

    def by_family(self, purity_from_shadows: bool = True) -> dict[str, dict[str, tuple[float, float, int]]]:
        """Per target, per family: ``(value, stderr, records)`` (missing: no data)."""
        if self._cache is not None and self._cache.get("_pfs") == purity_from_shadows:
            return self._cache["fam"]
        out: dict[str, dict[str, tuple[float, float, int]]] = {t.label: {} for t in self.targets}
        if self.wires is None:
            return out
        idx = {term: i for i, term in enumerate(self._terms)}
        bell_est = bell_idx = None
        if self._bell is not None and self._bell.count > 0:
            if self._bell_terms:
                bell_est = self._bell.estimate()
            bell_idx = {term: i for i, term in enumerate(self._bell_terms)}
        sp = None
        if purity_from_shadows and self._spurity is not None and self._N >= 2:
            sp = self._spurity.purity()
        for t in self.targets:
            fam = out[t.label]
            if isinstance(t, Expval):
                if self._N >= 2:
                    m, s, _, _ = self._shadow_term(idx[t.term])
                    fam["shadow"] = (m, s, self._N)
            elif isinstance(t, (PauliSquare, SquareSum)):
                terms = [(t.term, 1.0)] if isinstance(t, PauliSquare) else t.terms
                if self._N >= 2:
                    vals = [self._shadow_term(idx[term])[2:] for term, _ in terms]
                    fam["shadow"] = (
                        sum(c * v for (_, c), (v, _) in zip(terms, vals)),
                        sum(abs(c) * s for (_, c), (_, s) in zip(terms, vals)),
                        self._N,
                    )
                if bell_est is not None and self._bell.count >= 2:
                    v = sum(c * bell_est.values[bell_idx[term]] for term, c in terms)
                    s = sum(abs(c) * bell_est.stderr[bell_idx[term]] for term, c in terms)
                    fam["bell"] = (float(v), float(s), self._bell.count)
            elif isinstance(t, Purity):
                key = tuple(range(self.n)) if t.wires is None else t.wires
                if sp is not None and key in self._spurity.subsystems:
                    j = self._spurity.subsystems.index(key)
                    fam["shadow"] = (float(sp.values[j]), float(sp.stderr[j]), self._N)
                if bell_idx is not None and self._bell.count >= 2:
                    e = self._bell.purity(None if len(key) == self.n else key)
                    fam["bell"] = (float(e.values[0]), float(e.stderr[0]), self._bell.count)
        self._cache = {"fam": out, "_pfs": purity_from_shadows}
        return out

    def estimate(self, purity_from_shadows: bool = True) -> Estimate:
        """Combined (inverse-variance) estimate of every target; NaN/inf where
        no family has data yet.  ``count`` is the number of copies behind them
        (snapshots + 2 × Bell shots).

        ``purity_from_shadows=False`` leaves the shadow purity out (its U-statistic
        costs O(snapshots²) per call; beside Bell data it adds little precision)."""
        fam = self.by_family(purity_from_shadows)
        vals, ses = [], []
        for t in self.targets:
            parts = []
            for v, s, N in fam[t.label].values():
                # a zero sample variance from few shots is not certainty: floor at 1/N
                parts.append((v, max(s, 1.0 / max(N, 1))))
            v, s = _inverse_variance(parts)
            vals.append(v)
            ses.append(s)
        c = self.counts
        return Estimate(np.array(vals), np.array(ses), c["shadow"] + 2 * c["bell"], self.labels)

    def plugin(self) -> dict[str, float | None]:
        """Current values for the cost model (None where there is no data yet).

        Purity from shadows is skipped when Bell data exist (the 6^|A| histogram
        transform is the one expensive step, and the Bell value is far better).
        """
        bell_has = self._bell is not None and self._bell.count >= 2
        fam = self.by_family(purity_from_shadows=not bell_has)
        out: dict[str, float | None] = {}
        for t in self.targets:
            parts = [(v, max(s, 1.0 / max(N, 1))) for v, s, N in fam[t.label].values()]
            out[t.label] = _inverse_variance(parts)[0] if parts else None
            if out[t.label] is not None and not math.isfinite(out[t.label]):
                out[t.label] = None
        return out
