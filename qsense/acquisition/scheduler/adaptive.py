"""The adaptive policy: :func:`plan_adaptive`, the pair fraction and cap that
reach every target's tolerance with the fewest copies (docs/scheduler.md), and
:class:`AdaptivePolicy`, which feeds it the running plug-in estimates."""

from __future__ import annotations

import math
import threading
from typing import Mapping, Sequence

import numpy as np

from ..targets import Purity, Target, TargetSet, WaitMoments, check_piston
from .plans import Plan, PlanContext, TargetCost

__all__ = ["plan_adaptive", "AdaptivePolicy"]

#: the adaptive rule's cap search: caps x/λ for these x (when T2 is finite)
_CAP_GRID = np.geomspace(0.05, 20.0, 36)

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
    piston_diffusion: float = 0.0,
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
    over a grid are the plan.  Assigning each target to one family (docs/physics.md
    §4) is one feasible point of this problem, so the optimum is never worse.

    All caps are evaluated at once (NumPy arrays over caps × f, one target at a
    time); the result equals a per-cap loop's, ties going to the first cap and
    the smallest f (tests/test_plan_adaptive.py keeps that loop as the
    reference).  ``t2=None`` means no decoherence model, like ``inf``.

    ``piston_diffusion`` D (rad²/s): the relative phase of the two copies of a
    pair diffuses while the first one waits, so a Bell shot's signal decays by
    e^{−Dτ} on top of the memory's e^{−kτ/T2}; its reweighted second moment is
    then E[e^{(2k/T2 + 2D)τ}] (:class:`~qsense.acquisition.targets.WaitMoments`), and
    the cap search runs whenever T2 is finite or D > 0.
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
    piston = check_piston(piston_diffusion)
    vals = [values.get(t.label) for t in targets]
    NS = np.array([t.shadow_copies(v, e) for t, v, e in zip(targets, vals, tols)])  # (Q,)
    fmax = 0.0 if capacity < 1 else min(1.0, capacity / max(keys, 1))
    finite_t2 = math.isfinite(t2) and t2 > 0
    waiting_costs = finite_t2 or piston > 0  # some signal is lost while a copy waits: search caps
    # Every cap is evaluated at once: shapes are Q targets, C caps, F values of f.
    if caps is None:
        cap_s = np.full(1, math.inf)  # (C,) seconds, inf = no cap
        if waiting_costs and rate > 0:
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
    moments = WaitMoments(rate, t2 if finite_t2 else math.inf, cap_s, piston=piston)
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
        what = "decoherence and piston" if piston > 0 and finite_t2 else "piston" if piston > 0 else "decoherence"
        why += f"; cap {cap * rate:.3g}/λ{in_t2} keeps {what} reweighting affordable"
    if not all(reachable):
        why += "; unreachable: " + ", ".join(c.label for c in costs if c.family == "unreachable")
    return Plan(f, cap, "adaptive", copies, rate, t2, tuple(costs), why, piston)


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

    @property
    def piston_diffusion(self) -> float:
        """The TargetSet's piston phase diffusion (0 without one)."""
        return 0.0 if self.target_set is None else float(getattr(self.target_set, "piston_diffusion", 0.0))

    def plan(self, ctx: PlanContext) -> Plan:
        piston = self.piston_diffusion if getattr(ctx, "piston", None) is None else ctx.piston
        if not getattr(ctx, "rate_known", True) and (math.isfinite(ctx.t2) or piston > 0):
            # a pair's wait, hence its cap, is sized by the arrival rate: with a guessed
            # rate an uncapped opener can wait long enough for a single reweighted Bell shot
            # to swamp a target (a 2 ms wait at T2 = 1 ms weighs an 8-qubit purity shot by
            # e^32); the scheduler re-plans after 16 arrivals, with a measured rate
            return Plan(0.0, None, "adaptive", math.inf, ctx.rate, ctx.t2, (),
                        "arrival rate not measured yet: shadows only until it is", piston or 0.0)
        return plan_adaptive(
            self.targets, self.values(), rate=ctx.rate, t2=ctx.t2, capacity=ctx.capacity, keys=ctx.keys,
            tol=self.tol, n=ctx.n, salvage=self.salvage, piston_diffusion=piston,
        )
