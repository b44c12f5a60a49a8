"""The result type every estimator returns, and small statistics helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

__all__ = ["Estimate", "median_inflation"]


@dataclass(frozen=True)
class Estimate:
    """Point estimates with one-sigma standard errors.

    ``values`` and ``stderr`` are float64 arrays (one entry per target), ``count``
    is the number of records (snapshots or two-copy shots) behind them, ``labels``
    names the targets in order.
    """

    values: np.ndarray
    stderr: np.ndarray
    count: int
    labels: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict:
        """A JSON-friendly view: ``{label: {"value", "stderr"}, "count": N}``."""
        labels = self.labels or tuple(str(i) for i in range(len(self.values)))
        out: dict = {"count": int(self.count), "estimates": {}}
        for lab, v, s in zip(labels, self.values, self.stderr):
            out["estimates"][lab] = {"value": float(v), "stderr": float(s)}
        return out

    def __repr__(self) -> str:
        body = ", ".join(
            f"{lab}={v:.6g}±{s:.2g}" for lab, v, s in zip(self.labels or range(len(self.values)), self.values, self.stderr)
        )
        return f"Estimate(count={self.count}, {body})"


@lru_cache(maxsize=64)
def median_inflation(k: int) -> float:
    """sqrt(k * Var[median of k iid N(0,1)]): how much wider a median of k group
    means is than the mean of all the data (1 for k <= 2, -> sqrt(pi/2) for large k).

    Odd k: numerical integration of the middle order statistic's density; even k:
    a fixed-seed Monte Carlo (deterministic, ~1% accurate).
    """
    if k <= 2:
        return 1.0
    x = np.linspace(-8.0, 8.0, 4001)
    dx = x[1] - x[0]
    Phi = 0.5 * (1.0 + np.array([math.erf(v / math.sqrt(2.0)) for v in x]))
    phi = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)

    def order_var(r: int) -> float:
        # density of the r-th of k order statistics
        logc = math.lgamma(k + 1) - math.lgamma(r) - math.lgamma(k - r + 1)
        with np.errstate(divide="ignore"):
            dens = np.exp(logc + (r - 1) * np.log(Phi) + (k - r) * np.log1p(-Phi)) * phi
        m = np.sum(x * dens) * dx
        return float(np.sum((x - m) ** 2 * dens) * dx)

    if k % 2:
        var = order_var((k + 1) // 2)
    else:
        # the average of the two middle order statistics has no simple closed
        # form; a fixed-seed Monte Carlo is deterministic and good to ~1%.
        rng = np.random.default_rng(20200803)
        rows = max(20000, 2_000_000 // k)
        var = float(np.var(np.median(rng.standard_normal((rows, k)), axis=1)))
    return math.sqrt(k * var)
