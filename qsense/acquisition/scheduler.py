"""The measurement scheduler: copy by copy, single-copy shadow or two-copy Bell.

Two pieces, each with one job:

* a **policy** turns what is known (targets and their running estimates, the
  copy arrival rate λ, the memory's capacity and T2) into a :class:`Plan`: the
  fraction ``pair_fraction`` of arriving copies committed to Bell pairs and the
  longest time ``cap`` a stored copy may wait for its partner.  Policies:
  ``shadow`` (f = 0), ``bell`` (f = 1), ``fixed`` (a given f) and ``adaptive``
  (:func:`plan_adaptive`, derived in docs/scheduler.md);
* the :class:`Scheduler` executes the plan on every arrival.  A copy whose
  pairing key has a partner waiting in memory *closes* the pair (Bell); otherwise
  a deficit counter decides whether it *opens* a pair (stored in memory) or is
  measured at once as a shadow.  Because the partner is always the very next
  arrival with that key, the first copy's wait is τ ~ Exp(λ), the shortest
  possible, whatever f is.  Openers older than ``cap`` are evicted (or, with
  ``salvage=True``, measured as shadows).

The scheduler never measures anything itself: it returns *items*, tuples of
:class:`~qsense.acquisition.memory.StoredCopy` of length 1 (shadow) or 2 (Bell, first copy
first), which the pipeline batches into measurement plans for a backend.

Every decision is counted (``counters``) and every re-plan is logged with its
reasoning (INFO when the plan changes, DEBUG otherwise).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from . import blocks as _blocks
from .backends import BlockPlan
from .blocks import CopyBlock
from .memory import Clock, Copy, Counters, MonotonicClock, QuantumMemory, StoredCopy
from .targets import Purity, Target, TargetSet, WaitMoments

__all__ = [
    "Plan",
    "TargetCost",
    "PlanContext",
    "Policy",
    "ShadowPolicy",
    "BellPolicy",
    "FixedPolicy",
    "AdaptivePolicy",
    "make_policy",
    "plan_adaptive",
    "Scheduler",
    "BlockResult",
    "POLICIES",
]

log = logging.getLogger(__name__)

POLICIES = ("shadow", "bell", "fixed", "adaptive")

#: the second plan is made after this many arrivals (the first rate estimate)
_EARLY_REPLAN = 16

#: the adaptive rule's cap search: caps x/λ for these x (when T2 is finite)
_CAP_GRID = np.geomspace(0.05, 20.0, 36)

#: Item = one measurement: (copy,) for a shadow, (first, second) for a Bell pair.
Item = tuple[StoredCopy, ...]


@dataclass
class BlockResult:
    """What :meth:`Scheduler.on_block` decided for a block.

    ``items``: per-copy measurements (a pair across the block boundary, or
    everything when the block was handled copy by copy); ``plans``: at most one
    :class:`~qsense.acquisition.backends.BlockPlan` per family; ``roles``: int8 ``(N,)``,
    the role of every copy (:mod:`qsense.acquisition.blocks` layout), ``None`` when the
    block went through the per-copy fallback.
    """

    items: list
    plans: list
    roles: np.ndarray | None


@dataclass(frozen=True)
class TargetCost:
    """One row of a plan's reasoning: what each family would cost a target."""

    label: str
    tol: float
    value: float | None
    shadow_copies: float  # snapshots needed by shadows alone
    bell_shots: float  # Bell shots (pairs) needed by Bell alone, at the plan's cap
    family: str  # "shadow", "bell", "both" (share of precision at the optimum) or "unreachable"
    bell_share: float  # fraction of this target's precision that comes from Bell data


@dataclass(frozen=True)
class Plan:
    """What the scheduler does until the next re-plan.

    ``pair_fraction``: fraction of arrivals committed to Bell pairing (openers and
    closers). ``cap``: seconds an opener may wait (None: no cap).
    ``copies_to_finish``: predicted copies until every target reaches its
    tolerance (inf: some target cannot be reached).  ``reason``: one line.
    """

    pair_fraction: float
    cap: float | None = None
    policy: str = ""
    copies_to_finish: float = math.nan
    rate: float = math.nan
    t2: float = math.inf
    costs: tuple[TargetCost, ...] = ()
    reason: str = ""

    @property
    def seconds_to_finish(self) -> float:
        return self.copies_to_finish / self.rate if self.rate and self.rate > 0 else math.nan

    @property
    def assignment(self) -> dict[str, str]:
        return {c.label: c.family for c in self.costs}

    def describe(self) -> str:
        cap = "none" if self.cap is None else f"{self.cap:.3g} s"
        head = (
            f"[{self.policy}] pair_fraction={self.pair_fraction:.3f} cap={cap} "
            f"rate={self.rate:.4g}/s T2={self.t2:.3g} s copies_to_finish={self.copies_to_finish:.4g}"
        )
        rows = [
            f"  {c.label}: {c.family} (value={'prior' if c.value is None else f'{c.value:.4g}'}, tol={c.tol:g}, "
            f"N_shadow={c.shadow_copies:.4g}, shots_bell={c.bell_shots:.4g}, bell_share={c.bell_share:.2f})"
            for c in self.costs
        ]
        return "\n".join([head, "  " + self.reason] + rows)


@dataclass(frozen=True)
class PlanContext:
    """What a policy may look at when it plans."""

    rate: float  # copies per second per pairing key
    t2: float
    capacity: int
    keys: int  # distinct pairing keys active
    n: int | None  # qubits per copy
    copies: int  # copies seen so far
    now: float


@runtime_checkable
class Policy(Protocol):
    name: str

    def plan(self, ctx: PlanContext) -> Plan: ...


def _pairing_limit(ctx: PlanContext) -> float:
    """Largest feasible pair fraction: 0 without memory; with K keys sharing C < K
    slots only C/K of the keys can hold an opener at a time."""
    if ctx.capacity < 1:
        return 0.0
    return min(1.0, ctx.capacity / max(ctx.keys, 1))


class ShadowPolicy:
    """Single-copy only: every copy is a classical-shadow snapshot."""

    name = "shadow"

    def plan(self, ctx: PlanContext) -> Plan:
        return Plan(0.0, None, self.name, rate=ctx.rate, t2=ctx.t2, reason="policy 'shadow': every copy measured on arrival")


class BellPolicy:
    """Two-copy only: every copy is paired (``cap``: optional wait limit)."""

    name = "bell"

    def __init__(self, cap: float | None = None) -> None:
        self.cap = cap

    def plan(self, ctx: PlanContext) -> Plan:
        f = _pairing_limit(ctx)
        why = "policy 'bell': every copy paired" if f == 1.0 else f"policy 'bell' limited to f={f:.3f} by memory capacity {ctx.capacity}"
        return Plan(f, self.cap, self.name, rate=ctx.rate, t2=ctx.t2, reason=why)


class FixedPolicy:
    """A fixed fraction ``ratio`` of copies goes to Bell pairs."""

    name = "fixed"

    def __init__(self, ratio: float, cap: float | None = None) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must lie in [0, 1]; got {ratio!r}")
        self.ratio = float(ratio)
        self.cap = cap

    def plan(self, ctx: PlanContext) -> Plan:
        f = min(self.ratio, _pairing_limit(ctx))
        return Plan(f, self.cap, self.name, rate=ctx.rate, t2=ctx.t2, reason=f"policy 'fixed': ratio {self.ratio:g} (feasible {f:.3f})")


_scratch_local = threading.local()


def _scratch(shape: tuple[int, ...]) -> np.ndarray:
    """A float64 work array of ``shape`` (contents undefined), reused by later
    calls in the same thread.

    :func:`plan_adaptive` needs a few arrays of ~37 × 2001 doubles (0.6 MB) per
    call; fresh ones of that size come from ``mmap`` and are returned to the
    OS when freed, so every call page-faults them in again, which measured
    several times the cost of the arithmetic itself."""
    size = math.prod(shape)
    store = getattr(_scratch_local, "store", None)
    if store is None or store.size < size:
        store = _scratch_local.store = np.empty(size)
    return store[:size].reshape(shape)


def plan_adaptive(
    targets: Sequence[Target],
    values: Mapping[str, float | None] | None = None,
    *,
    rate: float,
    t2: float | None = math.inf,
    capacity: int = 1,
    keys: int = 1,
    tol: float = 0.05,
    n: int | None = None,
    salvage: bool = False,
    caps: Sequence[float | None] | None = None,
    grid: int = 2001,
) -> Plan:
    """The adaptive rule: the pair fraction f and cap c that reach every target's
    tolerance with the fewest copies (docs/scheduler.md).

    Per copy, shadows arrive at rate σ(f) = 1 − f (+ f(1−π)/(1+π) salvaged when
    ``salvage``) and Bell shots at β(f) = fπ/(1+π), π = P(partner within c).
    Target q then gains precision at R_q(f) = σ(f)/N_S(q) + β(f)/S_B(q) per copy
    (N_S: snapshots needed by shadows alone, S_B: shots by Bell alone, both at
    the target's tolerance, from the plug-in ``values``), because the combined
    estimate weights the two families by inverse variance.  The copies needed
    to finish all targets are 1/max_f min_q R_q; the maximising f and the best c
    over a grid are the plan.  Assigning each target to one family (PHYSICS.md
    §4) is one feasible point of this problem, so the optimum is never worse.

    All caps are evaluated at once (NumPy arrays over caps × f, one target at a
    time); the result equals a per-cap loop's, ties going to the first cap and
    the smallest f (tests/test_plan_adaptive.py keeps that loop as the
    reference).  ``t2=None`` means no decoherence model, like ``inf``.
    """
    values = dict(values or {})
    tols = np.array([tol if t.tol is None else float(t.tol) for t in targets])
    for t in targets:
        if isinstance(t, Purity) and t.wires is None and t.n is None:
            if n is None:
                raise ValueError("plan_adaptive needs n for a whole-register purity target")
            t.n = n
    if t2 is None:
        t2 = math.inf  # no decoherence model: waiting costs nothing
    if not t2 > 0:  # 0 would silently read as "perfect memory" below
        raise ValueError(f"t2 must be positive seconds (None or inf for a perfect memory); got {t2!r}")
    vals = [values.get(t.label) for t in targets]
    NS = np.array([t.shadow_copies(v, e) for t, v, e in zip(targets, vals, tols)])  # (Q,)
    fmax = 0.0 if capacity < 1 else min(1.0, capacity / max(keys, 1))
    finite_t2 = math.isfinite(t2) and t2 > 0
    # Every cap is evaluated at once: shapes are Q targets, C caps, F values of f.
    if caps is None:
        cap_s = np.full(1, math.inf)  # (C,) seconds, inf = no cap
        if finite_t2 and rate > 0:
            cap_s = np.concatenate([cap_s, _CAP_GRID / rate])
        caps = [None] + cap_s[1:].tolist()
    else:
        caps = list(caps)
        cap_s = np.array([math.inf if c is None else float(c) for c in caps], dtype=np.float64)
        if not np.all(cap_s > 0):
            raise ValueError(f"caps must be positive seconds or None (no cap); got {caps!r}")
    no_cap = np.array([c is None for c in caps], dtype=bool)  # (C,)
    with np.errstate(invalid="ignore"):
        pi = -np.expm1(-rate * cap_s)  # (C,) P(partner within the cap)
    pi[no_cap] = 1.0
    moments = WaitMoments(rate, t2 if finite_t2 else math.inf, cap_s)
    SB = np.stack([t.bell_shots_caps(v, e, moments) for t, v, e in zip(targets, vals, tols)])  # (Q, C)
    fgrid = np.linspace(0.0, 1.0, grid) * fmax  # (F,)
    # per-copy rates with the same operations (so the same roundings) as the
    # per-cap formulas σ(f) = 1 − f [+ f(1−π)/(1+π)] and β(f) = fπ/(1+π)
    sigma = 1.0 - fgrid  # (F,); with salvage (C, F)
    if salvage:
        sigma = sigma[None, :] + fgrid[None, :] * (1.0 - pi)[:, None] / (1.0 + pi)[:, None]
    C, F = len(caps), fgrid.size
    beta, buf, worst = _scratch((3, C, F))  # (C, F) each
    np.multiply(fgrid[None, :], pi[:, None], out=beta)
    beta /= (1.0 + pi)[:, None]
    # a family that cannot reach a target contributes rate 0: dividing by inf
    # gives the same 0 as np.where(isfinite, ., 0)
    NSf = np.where(np.isfinite(NS), NS, math.inf)  # (Q,)
    SBf = np.where(np.isfinite(SB), SB, math.inf)  # (Q, C)

    def precision(q: int) -> np.ndarray:
        """R_q(f) = σ(f)/N_S + β(f)/S_B per copy at every cap: (C, F), or (F,)
        when it does not depend on the cap (no Bell family, no salvage), in the
        scratch buffer ``buf``."""
        rs = sigma / NSf[q]
        if not salvage and np.isinf(SBf[q]).all():
            return rs  # + β/inf = + 0
        np.divide(beta, SBf[q][:, None], out=buf)
        return np.add(buf, rs, out=buf)

    # worst (C, F): min over the targets some family reaches at that cap (over
    # all targets at a cap where none is reachable), accumulated target by target
    worst.fill(math.inf)
    reach = np.empty((len(targets), C), dtype=bool)  # (Q, C)
    for q in range(len(targets)):
        Rq = precision(q)
        reach[q] = Rq.max(axis=-1) > 0
        if reach[q].all():  # the usual case; a where= mask makes minimum several times slower
            np.minimum(worst, Rq, out=worst)
        else:
            np.minimum(worst, Rq, out=worst, where=reach[q][:, None])
    none = ~reach.any(axis=0)  # (C,)
    if none.any():
        for q in range(len(targets)):
            np.minimum(worst, precision(q), out=worst, where=none[:, None])
    jc = worst.argmax(axis=1)  # (C,) first maximum: the smallest such f
    wj = worst[np.arange(C), jc]  # (C,)
    with np.errstate(divide="ignore"):
        inv = np.where(wj > 0, 1.0 / wj, math.inf)  # (C,)
    copies_c = np.where(reach.all(axis=0), inv, math.inf)  # (C,)
    # the first cap with the smallest (copies, 1/worst): the per-cap loop's strict <
    cand = copies_c == copies_c.min()
    c = int(np.flatnonzero(cand & (inv == inv[cand].min()))[0])
    cap, j = caps[c], int(jc[c])
    copies = float(copies_c[c])
    SB = SB[:, c]
    reachable = reach[:, c]
    rsj = (sigma[c, j] if salvage else sigma[j]) / NSf  # (Q,)
    rbj = beta[c, j] / SBf[:, c]  # (Q,)
    f = float(fgrid[j])
    costs = []
    for i, t in enumerate(targets):
        tot = rsj[i] + rbj[i]
        share = float(rbj[i] / tot) if tot > 0 else 0.0
        if not reachable[i]:
            fam = "unreachable"
        elif share > 0.99:
            fam = "bell"
        elif share < 0.01:
            fam = "shadow"
        else:
            fam = "both"
        costs.append(TargetCost(t.label, float(tols[i]), vals[i], float(NS[i]), float(SB[i]), fam, share))
    fams = {c.family for c in costs}
    if fmax == 0.0:
        why = "no memory slot for a partner: shadows only"
    elif f == 0.0:
        why = "every target is cheaper with single-copy shadows than with Bell pairs"
    elif f >= fmax - 1e-12:
        why = "every target is cheaper with Bell pairs" + (" (limited by memory capacity)" if fmax < 1 else "")
    else:
        why = f"mixing families balances the slowest targets ({', '.join(sorted(fams))})"
    if cap is not None:
        in_t2 = f" = {cap / t2:.3g} T2" if t2 is not None and 0 < t2 < math.inf else ""
        why += f"; cap {cap * rate:.3g}/λ{in_t2} keeps decoherence reweighting affordable"
    if not all(reachable):
        why += "; unreachable: " + ", ".join(c.label for c in costs if c.family == "unreachable")
    return Plan(f, cap, "adaptive", copies, rate, t2, tuple(costs), why)


class AdaptivePolicy:
    """Minimises the copies (time) until every target reaches its tolerance,
    from running plug-in estimates (see :func:`plan_adaptive`).

    Parameters
    ----------
    targets:
        A :class:`~qsense.acquisition.targets.TargetSet` (its running estimates are the
        plug-ins; give the same object to the pipeline as an estimator) or a
        list of targets (priors only).
    tol:
        Default tolerance (a TargetSet's own ``tol`` wins).
    shrink:
        Pseudo-records of prior mixed into each plug-in value, so that a handful
        of early records cannot swing the plan (value = (N v + shrink prior)/(N + shrink)).
    salvage:
        Whether capped openers are measured as shadows (see the Scheduler).
    """

    name = "adaptive"

    def __init__(self, targets: TargetSet | Sequence[Target], tol: float = 0.05, shrink: float = 20.0, salvage: bool = False) -> None:
        if isinstance(targets, TargetSet):
            self.target_set: TargetSet | None = targets
            self.targets = targets.targets
            self.tol = targets.tol
        else:
            self.target_set = None
            self.targets = list(targets)
            self.tol = float(tol)
        self.shrink = float(shrink)
        self.salvage = salvage

    def values(self) -> dict[str, float | None]:
        if self.target_set is None:
            return {}
        raw = self.target_set.plugin()
        c = self.target_set.counts
        N = c["shadow"] + c["bell"]
        out = {}
        for t in self.targets:
            v = raw.get(t.label)
            out[t.label] = None if v is None else (N * v + self.shrink * t.prior) / (N + self.shrink)
        return out

    def plan(self, ctx: PlanContext) -> Plan:
        return plan_adaptive(
            self.targets, self.values(), rate=ctx.rate, t2=ctx.t2, capacity=ctx.capacity, keys=ctx.keys,
            tol=self.tol, n=ctx.n, salvage=self.salvage,
        )


def make_policy(name: str, **kw: Any) -> Policy:
    """``make_policy("fixed", ratio=0.3)``, ``make_policy("adaptive", targets=ts)``..."""
    if name == "shadow":
        return ShadowPolicy()
    if name == "bell":
        return BellPolicy(**kw)
    if name == "fixed":
        return FixedPolicy(**kw)
    if name == "adaptive":
        return AdaptivePolicy(**kw)
    raise ValueError(f"unknown policy {name!r}; choose one of {POLICIES}")


class Scheduler:
    """Executes a policy's plan copy by copy (see the module docstring).

    Parameters
    ----------
    policy:
        A :class:`Policy` (or its name with ``policy_kw``).
    memory:
        Where openers wait (:class:`~qsense.acquisition.memory.QuantumMemory`).
    t2:
        T2 the policy plans with (default: the memory's coherence model's).
    replan_every:
        Re-plan after this many arrivals (and on the first one).
    salvage:
        Measure openers that exceed the plan's cap as shadows instead of
        evicting them.  Their shadow values are then biased by e^{-k·cap/T2}, so
        it is off by default.
    rate_window:
        Arrivals used to estimate the arrival rate (sliding window).
    rate_hint:
        Arrival rate assumed before there are two arrivals to measure it.
    clock:
        Time source for copies without timestamps (default: the memory's).
    """

    def __init__(
        self,
        policy: Policy | str,
        memory: QuantumMemory,
        *,
        t2: float | None = None,
        replan_every: int = 256,
        salvage: bool = False,
        rate_window: int = 512,
        rate_hint: float | None = None,
        clock: Clock | None = None,
        name: str = "scheduler",
        **policy_kw: Any,
    ) -> None:
        self.policy: Policy = make_policy(policy, **policy_kw) if isinstance(policy, str) else policy
        self.memory = memory
        self.t2 = float(t2) if t2 is not None else float(getattr(getattr(memory, "coherence", None), "t2", math.inf))
        if replan_every < 1:
            raise ValueError("replan_every must be >= 1")
        self.replan_every = int(replan_every)
        self.salvage = salvage
        self.name = name
        self.clock: Clock = clock or getattr(memory, "clock", None) or MonotonicClock()
        if rate_hint is None:
            # before any arrival-rate estimate exists, assume a memory that is good
            # for ~1000 arrivals (one re-plan fixes it as soon as data exist)
            rate_hint = 1000.0 / self.t2 if math.isfinite(self.t2) else 1.0
        self.rate_hint = float(rate_hint)
        ts = getattr(self.policy, "target_set", None)
        if ts is not None and math.isfinite(self.t2) and ts.t2 is None:
            log.warning(
                "%s: the memory has T2=%.3g s but the TargetSet was built without t2: its Bell "
                "estimates will not undo the decoherence of waiting copies (pass t2=...)", name, self.t2,
            )
        self.counters = Counters()
        self.plan: Plan | None = None
        self.history: list[tuple[float, Plan]] = []
        self._times: deque[float] = deque(maxlen=rate_window)
        self._keys: deque[Hashable] = deque(maxlen=rate_window)
        self._credit = 0.0
        self._since_plan = 0
        self._n: int | None = None

    # -- planning ----------------------------------------------------------------
    @property
    def rate(self) -> float:
        """Arrival rate per pairing key (copies/s) over the sliding window."""
        if len(self._times) < 2:
            return math.nan
        span = self._times[-1] - self._times[0]
        keys = max(len(set(self._keys)), 1)
        return (len(self._times) - 1) / span / keys if span > 0 else math.inf

    def context(self, now: float) -> PlanContext:
        rate = self.rate
        if not math.isfinite(rate) or rate <= 0:
            rate = self.rate_hint
        return PlanContext(
            rate=rate, t2=self.t2, capacity=int(getattr(self.memory, "capacity", 0)),
            keys=max(len(set(self._keys)), 1), n=self._n, copies=int(self.counters["arrived"]), now=now,
        )

    def replan(self, now: float) -> Plan:
        """Ask the policy for a new plan now; logs and counts the decision."""
        new = self.policy.plan(self.context(now))
        old = self.plan
        self.plan = new
        self._since_plan = 0
        self.counters["replans"] += 1
        self.history.append((now, new))
        changed = (
            old is None
            or abs(new.pair_fraction - old.pair_fraction) > 0.02
            or (new.cap is None) != (old.cap is None)
            or (new.cap is not None and abs(new.cap * new.rate - old.cap * old.rate) > 0.25)
            or new.assignment != old.assignment
        )
        if old is not None and (old.pair_fraction == 0.0) != (new.pair_fraction == 0.0):
            self.counters["family_switches"] += 1
        if old is not None and new.assignment != old.assignment:
            self.counters["assignment_changes"] += 1
        log.log(logging.INFO if changed else logging.DEBUG, "%s: plan at t=%.6g after %d copies:\n%s", self.name, now, self.counters["arrived"], new.describe())
        return new

    # -- execution ---------------------------------------------------------------
    async def _expire(self, now: float) -> list[Item]:
        """Evict (or salvage) openers past the plan's cap, and memory-expired copies."""
        items: list[Item] = []
        sweep = getattr(self.memory, "sweep", None)
        if sweep is not None:
            gone = await sweep(now)
            self.counters["expired_memory"] += len(gone)
        cap = self.plan.cap if self.plan is not None else None
        if cap is None:
            return items
        for info in self.memory.waiting():
            if now - info.arrival > cap:
                at = info.arrival + cap
                if self.salvage:
                    (sc,) = await self.memory.take([info.slot], at=at)
                    items.append((sc,))
                    self.counters["salvaged"] += 1
                    self.counters["shadow_copies"] += 1
                else:
                    await self.memory.evict([info.slot], "cap", at=at)
                    self.counters["expired_cap"] += 1
        return items

    def _observe(self, copy: Copy, now: float) -> None:
        self.counters["arrived"] += 1
        self._times.append(now)
        self._keys.append(copy.pair_key)
        if self._n is None:
            self._n = copy.n_qubits

    async def on_arrival(self, copy: Copy, now: float | None = None) -> list[Item]:
        """Decide what happens to an arriving copy; returns the measurements to make."""
        if now is None:
            now = float(copy.t) if copy.t is not None else self.clock()
        now = float(now)
        self._observe(copy, now)
        items = await self._expire(now)
        # plan on the first copy (rate unknown: rate_hint), again once a rate
        # estimate exists, then every replan_every copies
        if self.plan is None or self._since_plan >= self.replan_every or self.counters["arrived"] == _EARLY_REPLAN:
            self.replan(now)
        self._since_plan += 1
        f = self.plan.pair_fraction
        self._credit = min(self._credit + f, 2.0)
        partner = self.memory.oldest(copy.pair_key) if hasattr(self.memory, "oldest") else next(iter(self.memory.waiting(copy.pair_key)), None)
        if partner is not None:
            (first,) = await self.memory.take([partner.slot], at=now)
            items.append((first, StoredCopy.direct(copy, now)))
            self._credit = max(self._credit - 1.0, -1.0)
            self.counters["bell_pairs"] += 1
            self.counters["bell_copies"] += 2
            self.counters["closed"] += 1
            return items
        if f > 0.0 and self._credit >= 1.0:
            slot = await self.memory.put(copy.stamped(now) if copy.t is None else copy)
            if slot is not None:
                self._credit -= 1.0
                self.counters["opened"] += 1
                return items
            # refused (full memory): the copy is still useful as a shadow
            self.counters["no_slot"] += 1
        items.append((StoredCopy.direct(copy, now),))
        self.counters["shadow_copies"] += 1
        return items

    def _block_fallback_reason(self) -> str | None:
        mem = self.memory
        if not hasattr(mem, "account_block"):
            return "memory has no bulk accounting"
        if self.salvage:
            return "salvage is on"
        return None

    async def on_block(self, block: CopyBlock, now: float | None = None) -> BlockResult:
        """Decide every copy of a :class:`~qsense.acquisition.blocks.CopyBlock` at once.

        The same rule as :meth:`on_arrival`, copy for copy (the compiled scan
        :func:`qsense.acquisition.blocks.schedule_segment`): for the same arrival times and
        plans the roles, pairs, waits and counters are identical.  Differences,
        all at block granularity: re-plans due after ``replan_every`` arrivals
        are made at the start of the next block (the estimates an adaptive plan
        uses cannot change inside a block, whose records are measured after it
        is scheduled; the first plan and the early one at the 16th arrival are
        made at their copies), and stored copies of *other* pairing keys are
        expired at the block's first and last arrivals (released at the time
        they expired, as always; a slot they free is used from the next block
        on, and ``peak_occupancy`` counts them as held through the block).  Copies stored and released
        inside the block are counted by the memory in bulk
        (``account_block``); the opener still waiting at the end is ``put``.

        Falls back to :meth:`on_arrival` per copy (``roles`` None, counted
        ``block_fallback``) when the memory cannot account in bulk, when
        ``salvage`` is on, or when the memory is full with other keys' copies
        and its ``on_full`` is not ``"reject"``.
        """
        N = len(block)
        if N == 0:
            return BlockResult([], [], np.zeros(0, np.int8))
        if block.t is None:
            block = block.stamped(self.clock() if now is None else float(now))
        t = block.t
        key = block.pair_key
        mem = self.memory
        reason = self._block_fallback_reason()
        items: list[Item] = []
        own: list = []
        can_open = False
        if reason is None:
            # arrival 0's expiry (every key, the plan in force), as on_arrival does
            items = await self._expire(float(t[0]))
            own = mem.waiting(key)
            others = len(mem) - len(own)
            can_open = int(getattr(mem, "capacity", 0)) - others >= 1
            if len(own) > 1:
                reason = "several copies of this key wait"
            elif not can_open and getattr(mem, "on_full", "reject") != "reject":
                reason = f"memory full with other keys (on_full={getattr(mem, 'on_full', '?')!r})"
        if reason is not None:
            log.debug("%s: block of %d copies from %r handled copy by copy: %s", self.name, N, block.source, reason)
            self.counters["block_fallback"] += 1
            for copy in block.copies():
                items.extend(await self.on_arrival(copy, copy.t))
            return BlockResult(items, [], None)
        self.counters["blocks"] += 1
        if self._n is None:
            self._n = block.n_qubits
        # -- segments: a re-plan at the block's first copy (when due) and the
        # early one at the 16th arrival, both after observing their copy
        arrived0 = int(self.counters["arrived"])
        window = self._times.maxlen or N
        fed = 0

        def observe_to(j: int) -> None:  # rate window: arrivals up to and including j
            nonlocal fed
            if j + 1 > fed:
                chunk = t[max(fed, j + 1 - window) : j + 1]
                self._times.extend(chunk.tolist())
                self._keys.extend([key] * chunk.size)
                fed = j + 1

        starts = [0]
        j16 = _EARLY_REPLAN - arrived0 - 1
        if 0 < j16 < N:
            starts.append(j16)
        roles = np.empty(N, np.int8)
        credit = float(self._credit)
        has_open = bool(own)
        open_t = float(own[0].arrival) if own else 0.0
        open_idx = -1
        max_wait = _blocks.finite_or_inf(getattr(mem, "max_wait", None))
        kernel = _blocks.segment_kernel()
        last_replan = None
        for s, a in enumerate(starts):
            b = starts[s + 1] if s + 1 < len(starts) else N
            prev_cap = _blocks.finite_or_inf(self.plan.cap) if self.plan is not None else math.inf
            self.counters["arrived"] = arrived0 + a + 1  # what on_arrival's counter says at copy a
            if self.plan is None or self._since_plan >= self.replan_every or arrived0 + a + 1 == _EARLY_REPLAN:
                observe_to(a)
                self.replan(float(t[a]))
                last_replan = a
            else:
                self._since_plan += b - a  # no re-plan: keep counting
            f = float(self.plan.pair_fraction)
            cap = _blocks.finite_or_inf(self.plan.cap)
            # the expiry at a block's first copy was done above; at the early
            # re-plan copy it uses the previous plan's cap, as on_arrival does
            cap0, wait0 = (math.inf, math.inf) if a == 0 else (prev_cap, max_wait)
            credit, has_open, open_t, open_idx = kernel(
                t, a, b, f, cap0, cap, wait0, max_wait, can_open, credit, has_open, open_t, open_idx, roles,
            )
            open_idx = int(open_idx)
        observe_to(N - 1)
        self.counters["arrived"] = arrived0 + N
        if last_replan is not None:
            self._since_plan = N - last_replan
        self._credit = float(credit)
        # -- outcome arrays
        counts = np.bincount(roles, minlength=len(_blocks.ROLE_NAMES))
        n_shadow = int(counts[_blocks.SHADOW] + counts[_blocks.NO_SLOT])
        n_close = int(counts[_blocks.CLOSE])
        n_ecap, n_emem = int(counts[_blocks.EVICT_CAP]), int(counts[_blocks.EVICT_MEMORY])
        n_open_closed, n_waiting = int(counts[_blocks.OPEN]), int(counts[_blocks.WAITING])
        self.counters["arrived_in_blocks"] += N
        self.counters["opened"] += n_open_closed + n_ecap + n_emem + n_waiting
        self.counters["closed"] += n_close
        self.counters["bell_pairs"] += n_close
        self.counters["bell_copies"] += 2 * n_close
        self.counters["shadow_copies"] += n_shadow
        self.counters["no_slot"] += int(counts[_blocks.NO_SLOT])
        self.counters["expired_cap"] += n_ecap
        self.counters["expired_memory"] += n_emem
        closers = np.flatnonzero(roles == _blocks.CLOSE)
        if own and closers.size and closers[0] == 0:
            # the pair across the block boundary: the stored copy is a real slot
            (first,) = await mem.take([own[0].slot], at=float(t[0]))
            items.append((first, StoredCopy.direct(block.copy(0), float(t[0]))))
            closers = closers[1:]
        # other keys' copies that outlived the cap or max_wait during the block are
        # evicted now, at the time they expired (before this key's opener is stored)
        items += await self._expire(float(t[-1]))
        mem.account_block(  # type: ignore[attr-defined]
            stored=n_open_closed + n_ecap + n_emem, taken=n_open_closed,
            evicted={"cap": n_ecap, "expired": n_emem}, rejected=int(counts[_blocks.NO_SLOT]),
            occupancy=(len(mem) + 1) if (n_open_closed + n_ecap + n_emem) else 0,
        )
        if n_waiting:
            (w,) = np.flatnonzero(roles == _blocks.WAITING)
            slot = await mem.put(block.copy(int(w)))
            if slot is None:  # pragma: no cover - can_open said there was a slot
                raise RuntimeError(f"{self.name}: memory refused the block's last opener")
        wires = tuple(block.wires) if block.wires is not None else (tuple(range(self._n)) if self._n is not None else None)
        coherence = getattr(mem, "coherence", None)
        plans: list[BlockPlan] = []
        shadows = np.flatnonzero((roles == _blocks.SHADOW) | (roles == _blocks.NO_SLOT))
        if shadows.size:
            plans.append(BlockPlan(
                "shadow", (block.state,), t[shadows], np.zeros((shadows.size, 1)),
                (block.seq + shadows)[:, None], wires, block.source, block.key, coherence,
            ))
        if closers.size:
            waits = np.zeros((closers.size, 2))
            waits[:, 0] = t[closers] - t[closers - 1]
            seqs = np.stack([block.seq + closers - 1, block.seq + closers], axis=1)
            plans.append(BlockPlan(
                "bell", (block.state, block.state), t[closers], waits, seqs, wires, block.source, block.key, coherence,
            ))
        return BlockResult(items, plans, roles)

    async def on_tick(self, now: float) -> list[Item]:
        """Periodic housekeeping between arrivals (expiries)."""
        return await self._expire(now)

    async def drain(self, now: float) -> list[Item]:
        """End of stream: openers still waiting will never get a partner.

        They are salvaged as shadows when ``salvage`` is on, else evicted and
        counted as ``evicted_drain`` by the memory.
        """
        items = await self._expire(now)
        for info in self.memory.waiting():
            if self.salvage:
                (sc,) = await self.memory.take([info.slot], at=now)
                items.append((sc,))
                self.counters["salvaged"] += 1
                self.counters["shadow_copies"] += 1
            else:
                await self.memory.evict([info.slot], "drain", at=now)
                self.counters["unpaired_at_end"] += 1
        return items
