"""Benchmark: source fits at M = 16 and M = 64 telescopes (120 and 2,016 baselines).

Data: a simulated array (``demo_array(M)``, 800 nm) observing a binary
(3 mas, PA 60 deg, r = 0.5) and a uniform disk (1.5 mas); single-copy visibilities
with their full (2P x 2P) covariance and ``norm_var`` from 30,000 shadows and
squared visibilities from 15,000 Bell pairs, as the demo fits them.

Timed (process CPU seconds, best of ``--repeat``; ``--wall`` for wall clock):

* ``fit_binary`` / ``fit_disk`` complex with ``cov`` and ``norm_var`` (as the demo
  fits: grid start + one factorisation of the covariance + least squares), complex
  with ``cov`` only, and squared;
* "dense": the same calls on the fits as they were before the full-covariance
  speed-up (``_fits_before.py``: ``np.linalg.cholesky`` of fresh copies, the prior
  on the common scale as an (n+1)^2 matrix).  Their results are compared with the
  current ones: the largest ``|difference| / stderr`` over values and errors, and
  the chi^2 difference, are printed;
* for the complex fits with ``cov``, how far each result is from the exact minimum:
  the largest Gauss-Newton step (in sigma) that the dense chi^2 (``cho_factor`` of
  ``cov - norm_var y y^T``, finite-difference Jacobian, the common scale profiled)
  takes from it.  The script exits 1 if a new fit is 1e-3 sigma or more from the
  minimum (or, for the fits without a covariance, from the dense fit);
* "pre-17": the implementation before issue 17 (``_reference_fits.py``:
  finite-difference Jacobians, one whitening solve per evaluation, a grid loop
  per flux ratio; no ``norm_var``).  At M = 64 its binary grid alone takes ~20
  CPU-seconds, so its complex binary fit is timed from the new fit's start (``p0``);
* the floor: one in-place Cholesky factorisation (``dpotrf``) of the (2P x 2P)
  covariance, and ``np.linalg.cholesky`` for comparison.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_fits.py     # M = 16 and 64 (~1-2 min, data simulation included)
    python benchmarks/bench_fits.py --M 16
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable

import numpy as np

from qsense.estimators.interferometry import (
    MAS,
    SquaredVisibilityEstimator,
    VisibilityEstimator,
    binary_visibility,
    disk_visibility,
    fit_binary,
)
from qsense.sims.telescope import BinaryStar, TelescopeArray, TelescopeSim, UniformDisk, demo_array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _fits_before as dense
import _reference_fits as old

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
    return {"uv": sim.array.uv(), "v": e.values, "se": e.stderr, "cov": e.full_cov, "nv": e.norm_var,
            "uv2": sim.array.uv()[ok], "v2": be.values[ok], "se2": be.stderr[ok]}


def agreement(new: object, ref: object) -> tuple[float, float]:
    """Largest |new - ref| / stderr over the values and the errors, and chi2(new) - chi2(ref)."""
    se = np.where(np.isfinite(ref.stderr) & (ref.stderr > 0), ref.stderr, 1.0)
    dv = np.abs(np.asarray(new.values) - np.asarray(ref.values))
    if "position_angle" in ref.names:  # PA is reported modulo its fold
        i = ref.names.index("position_angle")
        dv[i] = min(dv[i], abs(dv[i] - 180.0), abs(dv[i] - 360.0))
    return float(max(np.max(dv / se), np.max(np.abs(new.stderr - ref.stderr) / se))), float(new.chi2 - ref.chi2)


def _fd_jac(f: Callable[[np.ndarray], np.ndarray], q: np.ndarray) -> np.ndarray:
    cols = []
    for i in range(len(q)):
        h = 1e-6 * max(1.0, abs(q[i]))
        a, b = q.copy(), q.copy()
        a[i] += h
        b[i] -= h
        cols.append((f(a) - f(b)) / (2 * h))
    return np.column_stack(cols)


class ExactChi2:
    """The dense chi^2 of a complex fit with ``cov`` (and ``norm_var``): one ``cho_factor`` of
    ``cov - kappa y y^T``; ``step(values)`` is the largest Gauss-Newton step from ``values`` to
    the minimum, in sigma (the common scale profiled out exactly: chi^2 is quadratic in it)."""

    def __init__(self, model: Callable[[np.ndarray], np.ndarray], v: np.ndarray, cov: np.ndarray, kappa: float | None):
        from scipy.linalg import cho_factor

        self.model, self.y, self.kappa = model, np.concatenate([v.real, v.imag]), kappa
        self.F = cho_factor(cov - (kappa * np.outer(self.y, self.y) if kappa else 0.0), lower=True)

    def step(self, values: np.ndarray) -> float:
        from scipy.linalg import cho_solve

        p = np.asarray(values, dtype=np.float64)
        y, kap = self.y, self.kappa
        if not kap:
            r, J = self.model(p) - y, _fd_jac(self.model, p)
            X = cho_solve(self.F, np.column_stack([r, J]))
            H, g = J.T @ X[:, 1:], J.T @ X[:, 0]
        else:
            m = self.model(p)
            W = cho_solve(self.F, np.column_stack([m, y]))
            s = (m @ W[:, 1] + 1.0 / kap) / (m @ W[:, 0] + 1.0 / kap)
            q = np.append(p, s)
            f = lambda q: q[-1] * self.model(q[:-1]) - y
            r, J = f(q), _fd_jac(f, q)
            X = cho_solve(self.F, np.column_stack([r, J]))
            H = J.T @ X[:, 1:]
            H[-1, -1] += 1.0 / kap
            g = J.T @ X[:, 0]
            g[-1] += (s - 1.0) / kap
        Hi = np.linalg.inv(0.5 * (H + H.T))
        return float(np.max(np.abs(Hi @ g) / np.sqrt(np.diag(Hi))))


def floors(cov: np.ndarray, repeat: int) -> tuple[float, float]:
    """CPU of one in-place dpotrf of a column-major copy (what the fits do), and of np.linalg.cholesky."""
    from scipy.linalg import lapack

    n = len(cov)
    buf = np.array(cov.T, order="F")

    def potrf() -> None:
        buf[...] = cov.T
        lapack.dpotrf(buf, lower=1, clean=0, overwrite_a=1)

    tp, _ = best(potrf, repeat)
    tn, _ = best(lambda: np.linalg.cholesky(cov + np.eye(n) * 1e-15 * np.trace(cov) / n), repeat)
    return tp, tn


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--M", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--wall", action="store_true")
    ap.add_argument("--no-pre17", action="store_true", help="skip the (slow) pre-issue-17 reference")
    args = ap.parse_args()
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter
    print(f"source fits, new vs dense (before the full-covariance speed-up) vs pre-issue-17 "
          f"({'wall' if args.wall else 'process CPU'} seconds); load average {os.getloadavg()[0]:.2f}\n")
    new_mod = sys.modules[fit_binary.__module__]
    worst = 0.0
    for M in args.M:
        b = data(M, BinaryStar(3.0 * MAS, math.radians(60.0), 0.5), 3)
        d = data(M, UniformDisk(1.5 * MAS), 4)
        P = len(b["uv"])
        tp, tn = floors(b["cov"], args.repeat)
        print(f"M={M}: {P} baselines, covariance {2 * P}x{2 * P}; floor: one in-place dpotrf {tp:.3f} s "
              f"(np.linalg.cholesky {tn:.3f} s); load {os.getloadavg()[0]:.2f}")
        print(f"  {'case':<32} {'new s':>6} {'dense s':>7} {'pre-17 s':>8} {'new>min':>8} {'dense>min':>9} "
              f"{'max|d|/se':>9} {'d chi2':>8}   new fit")

        def bmod(p: np.ndarray) -> np.ndarray:
            v = binary_visibility(b["uv"], p[0] * MAS, math.radians(p[1]), p[2])
            return np.concatenate([v.real, v.imag])

        def dmod(p: np.ndarray) -> np.ndarray:
            return np.concatenate([disk_visibility(d["uv"], p[0] * MAS), np.zeros(P)])

        cases = [
            ("binary complex, cov + norm_var", True, (bmod, b, b["nv"]), lambda m, **k: m.fit_binary(b["uv"], b["v"], b["se"], cov=b["cov"], norm_var=b["nv"], **k)),
            ("disk complex, cov + norm_var", True, (dmod, d, d["nv"]), lambda m, **k: m.fit_disk(d["uv"], d["v"], d["se"], cov=d["cov"], norm_var=d["nv"], **k)),
            ("binary complex, cov", False, (bmod, b, None), lambda m, **k: m.fit_binary(b["uv"], b["v"], b["se"], cov=b["cov"], **k)),
            ("disk complex, cov", False, (dmod, d, None), lambda m, **k: m.fit_disk(d["uv"], d["v"], d["se"], cov=d["cov"], **k)),
            ("binary |V|^2", False, None, lambda m, **k: m.fit_binary(b["uv2"], b["v2"], b["se2"], kind="squared", **k)),
            ("disk |V|^2", False, None, lambda m, **k: m.fit_disk(d["uv2"], d["v2"], d["se2"], kind="squared", **k)),
        ]
        for name, with_nv, exact, call in cases:
            tn_, fn = best(lambda: call(new_mod), args.repeat)
            td, fd = best(lambda: call(dense), 1)
            dev, dchi = agreement(fn, fd)
            if exact is not None:
                ref = ExactChi2(exact[0], exact[1]["v"], exact[1]["cov"], exact[2])
                to_min, dense_min = ref.step(fn.values), ref.step(fd.values)
                worst = max(worst, to_min)
                mins = f"{to_min:8.1e} {dense_min:9.1e}"
            else:
                worst = max(worst, dev)
                mins = f"{'-':>8} {'-':>9}"
            pre = "-"
            if not with_nv and not args.no_pre17:
                kw = {"p0": list(fn.values)} if M >= 64 and name.startswith("binary complex") else {}
                to, _ = best(lambda: call(old, **kw), 1)  # at M = 64 the old binary grid alone is ~20 CPU-s
                pre = f"{to:.3f}" + ("*" if kw else "")
            print(f"  {name:<32} {tn_:6.3f} {td:7.3f} {pre:>8} {mins} {dev:9.1e} {dchi:8.1e}   {fn}", flush=True)
    print("\n* pre-17 binary complex at M >= 64 started from the new fit's values (p0)")
    print(f"new fits: at most {worst:.1e} sigma from the exact minimum (|V|^2 fits: from the dense fits); "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0 if worst < 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
