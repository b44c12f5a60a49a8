"""The data a policy plans with and produces: :class:`PlanContext` in,
:class:`Plan` (with one :class:`TargetCost` row per target) out."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Plan", "TargetCost", "PlanContext"]


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
    piston: float = 0.0  # piston phase diffusion D (rad^2/s) the plan allowed for

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
            + (f" piston D={self.piston:.3g} rad^2/s" if self.piston > 0 else "")
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
    #: piston phase diffusion D (rad^2/s) between the two copies of a pair; None: not given
    #: (an adaptive policy then uses its TargetSet's ``piston_diffusion``)
    piston: float | None = None
    #: False while ``rate`` is the scheduler's own guess (no arrivals measured, no ``rate_hint`` given)
    rate_known: bool = True
