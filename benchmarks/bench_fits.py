"""Benchmark: source fits at M = 16 and M = 64 telescopes (120 and 2,016 baselines).

Data: a simulated array (``demo_array(M)``, 800 nm) observing a binary
(3 mas, PA 60 deg, r = 0.5) and a uniform disk (1.5 mas); single-copy visibilities
with their full (2P x 2P) covariance from 30,000 shadows and squared visibilities
from 15,000 Bell pairs, as the demo fits them.

Timed (process CPU seconds, best of ``--repeat``; ``--wall`` for wall clock):

* ``fit_binary`` complex with ``cov`` (grid start + Cholesky whitening + least
  squares), ``fit_binary`` squared, ``fit_disk`` complex with ``cov`` and squared;
* the same calls on the implementation before issue 17 (``_reference_fits.py``:
  finite-difference Jacobians, one whitening solve per evaluation, a grid loop
  per flux ratio).  At M = 64 the old binary grid alone takes ~20 CPU-seconds, so
  the old complex binary fit is timed from the new fit's start (``p0``), which is
  what the demo's subset seeding gave it;
* the floor: one Cholesky factorisation of the (2P x 2P) covariance.

Fitted values of old and new are printed side by side (they agree to the
optimiser's tolerance).

Usage::

    python benchmarks/bench_fits.py            # M = 16 and 64 (~1-2 min, data simulation included)
    python benchmarks/bench_fits.py --M 16
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Callable

import numpy as np

from qsense.estimators.interferometry import MAS, SquaredVisibilityEstimator, VisibilityEstimator, fit_binary, fit_disk
from qsense.sims.telescope import BinaryStar, TelescopeArray, TelescopeSim, UniformDisk, demo_array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _reference_fits as old  # noqa: E402

CLOCK: Callable[[], float] = time.process_time


def best(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    t, out = float("inf"), None
    for _ in range(repeat):
        t0 = CLOCK()
        out = fn()
        t = min(t, CLOCK() - t0)
    return t, out


def data(M: int, source: object, seed: int) -> dict:
    sim = TelescopeSim(TelescopeArray(demo_array(M), 800e-9), source, seed=seed)
    ph = sim.photons(count=60_000)
    est = VisibilityEstimator(M)
    est.update(sim.shadows(ph[:30_000]))
    e = est.estimate(full_cov=True)
    b = SquaredVisibilityEstimator(M)
    b.update(sim.bell(ph[30_000::2], ph[30_001::2]))
    be = b.estimate()
    ok = be.stderr > 0  # as the demo does: |V|^2 fits use the baselines with a positive error bar
    return {"uv": sim.array.uv(), "v": e.values, "se": e.stderr, "cov": e.full_cov, "uv2": sim.array.uv()[ok],
            "v2": be.values[ok], "se2": be.stderr[ok]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--M", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--wall", action="store_true")
    args = ap.parse_args()
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter
    print(f"source fits, new vs before issue 17 ({'wall' if args.wall else 'process CPU'} seconds); "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print(f"{'case':<44} {'new s':>8} {'old s':>8} {'speed-up':>9}   new fit | old fit")
    for M in args.M:
        b = data(M, BinaryStar(3.0 * MAS, math.radians(60.0), 0.5), 3)
        d = data(M, UniformDisk(1.5 * MAS), 4)
        P = len(b["uv"])
        tc, _ = best(lambda: np.linalg.cholesky(b["cov"] + np.eye(2 * P) * 1e-15 * np.trace(b["cov"]) / (2 * P)), args.repeat)
        print(f"M={M}: {P} baselines, covariance {2 * P}x{2 * P}; one Cholesky {tc:.3f} s (the floor of a full-cov fit)")
        cases = [
            ("binary complex, full cov", lambda m, **k: m.fit_binary(b["uv"], b["v"], b["se"], cov=b["cov"], **k)),
            ("binary |V|^2", lambda m, **k: m.fit_binary(b["uv2"], b["v2"], b["se2"], kind="squared", **k)),
            ("disk complex, full cov", lambda m, **k: m.fit_disk(d["uv"], d["v"], d["se"], cov=d["cov"], **k)),
            ("disk |V|^2", lambda m, **k: m.fit_disk(d["uv2"], d["v2"], d["se2"], kind="squared", **k)),
        ]
        new_mod = sys.modules[fit_binary.__module__]
        for name, call in cases:
            tn, fn = best(lambda: call(new_mod), args.repeat)
            kw = {}
            label = name
            if M >= 64 and name.startswith("binary complex"):
                kw = {"p0": list(fn.values)}  # the old grid alone is ~20 CPU-s here
                label += " (old from p0)"
            to, fo = best(lambda: call(old, **kw), 1)
            print(f"  {label:<42} {tn:8.3f} {to:8.3f} {to / tn:8.1f}x   {fn} | {fo}", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
