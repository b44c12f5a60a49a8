"""The fixed policies (``shadow``, ``bell``, ``fixed``), the :class:`Policy`
protocol every policy follows, and :func:`make_policy`, which builds any
policy, the adaptive one included, by name."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .adaptive import AdaptivePolicy
from .plans import Plan, PlanContext

__all__ = ["Policy", "ShadowPolicy", "BellPolicy", "FixedPolicy", "make_policy", "POLICIES"]

POLICIES = ("shadow", "bell", "fixed", "adaptive")


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
