"""Adaptive scheduling versus fixed policies on a mixed target set.

An 8-qubit state (a depth-3 random circuit state with 25% white noise) streams
through the full pipeline (event time, λ = 10^4 copies/s, simulated memory with
local depolarizing at 1/T2, simulated backend).  Targets, all with tolerance
0.05: the signed 1-local ⟨Z0⟩, ⟨X1⟩, the signed 2-local ⟨Z2 Z3⟩, ⟨X4 X5⟩ and the
8-qubit purity tr ρ².  Every policy gets the same copy budget and the same
``TargetSet`` estimator (both families combined by inverse variance, Bell shots
reweighted for waiting when T2 is finite).

Policies: ``shadow``, ``bell``, ``fixed`` (ratios 0.25 and 0.5) and ``adaptive``.
The non-adaptive ones get a wait cap of 0.1 T2 when T2 is finite (a common
rule of thumb; without one the reweighted 8-qubit purity has infinite variance
when λT2 < 16); the adaptive policy chooses its own.  Two fixed ratios with
one cap say nothing about the *best* fixed policy: ``bench_scheduler_fair.py``
sweeps fraction × cap, picks the best with hindsight and compares with
confidence intervals.

Figure of merit: the worst target's standard error divided by its tolerance
(``worst se/tol``, the estimators' reported error bars, averaged in quadrature
over repetitions: far less noisy than a realised error), the same with the
realised RMSE over repetitions against the exact values (``worst RMSE/tol``,
which checks that the error bars are honest), and the copies the policy would
need to bring every target to its tolerance, ``copies × (worst se/tol)²``
(errors scale as 1/sqrt(copies)): lower is better.

Usage: ``python benchmarks/bench_scheduler.py [--quick] [--reps R] [--copies N] [--json FILE]``; the closing
summary (adaptive vs the fixed ratios, the plan's prediction error) is printed at the end of a run and, from a
saved run, by ``python benchmarks/bench_scheduler.py --summarize FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import time

import numpy as np

from qsense import sims
from qsense.acquisition.memory import ManualClock
from qsense.acquisition.pipeline import Pipeline, poisson_copies
from qsense.acquisition.scheduler import AdaptivePolicy, BellPolicy, FixedPolicy, Scheduler, ShadowPolicy
from qsense.acquisition.targets import Expval, Purity, TargetSet
from qsense.sims.backend_sim import SimulatedBackend
from qsense.sims.memory_sim import SimulatedMemory

RATE = 1e4
TOL = 0.05
N_QUBITS = 8


def make_state(n: int = N_QUBITS, noise: float = 0.25, seed: int = 17) -> np.ndarray:
    psi = sims.random_circuit_state(n, 3, seed=seed)
    return (1 - noise) * sims.to_density_matrix(psi) + noise * np.eye(2**n) / 2**n


def make_targets() -> list:
    return [Expval("Z0"), Expval("X1"), Expval("Z2 Z3"), Expval("X4 X5"), Purity()]


def truth(rho: np.ndarray, n: int = N_QUBITS) -> dict[str, float]:
    pv = dict(zip(("".join(w) for w in itertools.product("IXYZ", repeat=n)), sims.pauli_vector(rho)))

    def word(sparse: str) -> str:
        w = ["I"] * n
        for tok in sparse.split():
            w[int(tok[1:])] = tok[0]
        return "".join(w)

    out = {f"<{s}>": pv[word(s)] for s in ("Z0", "X1", "Z2 Z3", "X4 X5")}
    out["purity"] = float(np.trace(rho @ rho).real)
    return out


def policy(name: str, ts: TargetSet, t2: float):
    cap = None if math.isinf(t2) else 0.1 * t2
    if name == "shadow":
        return ShadowPolicy()
    if name == "bell":
        return BellPolicy(cap=cap)
    if name.startswith("fixed"):
        return FixedPolicy(float(name.split()[1]), cap=cap)
    if name == "adaptive":
        return AdaptivePolicy(ts)
    raise ValueError(name)


async def one_run(name: str, rho: np.ndarray, copies: int, t2: float, seed: int) -> dict:
    clock = ManualClock()
    mem = SimulatedMemory(capacity=1, t2=None if math.isinf(t2) else t2, clock=clock)
    ts = TargetSet(make_targets(), tol=TOL, t2=t2)
    sched = Scheduler(policy(name, ts, t2), mem, replan_every=256)
    pipe = Pipeline(
        {"src": poisson_copies(rho, RATE, copies, seed=seed)}, mem, sched, SimulatedBackend(seed=seed + 1),
        estimators=[ts], batch_size=256,
    )
    rep = await pipe.run()
    assert rep.unaccounted == 0 and not rep.errors, (rep.unaccounted, rep.errors)
    est = ts.estimate()
    plans = [p for _, p in sched.history]
    last = plans[-1]
    return {
        "values": dict(zip(est.labels, est.values.tolist())),
        "stderr": dict(zip(est.labels, est.stderr.tolist())),
        "pair_fraction": rep["scheduler.bell_copies"] / copies,
        "planned_fraction": last.pair_fraction,
        "cap": last.cap,
        "predicted_copies": last.copies_to_finish if name == "adaptive" else math.nan,
        "lost": rep["lost"],
        "seconds": rep.elapsed,
    }


def evaluate(runs: list[dict], exact: dict[str, float]) -> dict:
    """Per target: realised RMSE over the runs and the mean reported stderr;
    ``worst``: the largest stderr / tol (the low-noise figure of merit; the RMSE
    column checks that the error bars are honest), ``worst_rmse`` likewise."""
    rmse, se = {}, {}
    for lab, v in exact.items():
        vals = np.array([r["values"][lab] for r in runs])
        errs = np.array([r["stderr"][lab] for r in runs])
        ok = np.all(np.isfinite(vals)) and np.all(np.isfinite(errs))
        rmse[lab] = float(np.sqrt(np.mean((vals - v) ** 2))) if ok else math.inf
        se[lab] = float(np.sqrt(np.mean(errs**2))) if ok else math.inf
    return {
        "rmse": rmse,
        "stderr": se,
        "worst": max(x / TOL for x in se.values()),
        "worst_rmse": max(x / TOL for x in rmse.values()),
    }


def summary(results: list[dict]) -> list[str]:
    """Per T2: adaptive copies to tolerance against the best and worst fixed ratio, and the plan's prediction
    error (the figures docs/scheduler.md quotes)."""
    out = []
    for t2 in dict.fromkeys(r["t2"] for r in results):
        rows = {r["policy"]: r for r in results if r["t2"] == t2}
        fixed = [r["copies_to_tol"] for k, r in rows.items() if k.startswith("fixed") and math.isfinite(r["copies_to_tol"])]
        if "adaptive" not in rows or not fixed:
            continue
        a = rows["adaptive"]
        need, pred = a["copies_to_tol"], a["predicted"]
        line = (
            f"T2 = {t2:g} s: adaptive {need:.4g} copies, {100 * (1 - need / min(fixed)):.1f}% fewer than the best fixed "
            f"ratio ({min(fixed):.4g}); the worst fixed ratio costs {max(fixed) / need:.2f}x adaptive"
        )
        if pred is not None and math.isfinite(pred):
            line += f"; plan predicted {pred:.4g} ({100 * (pred / need - 1):+.1f}% vs measured)"
        if "shadow" in rows:
            line += f"; shadows only {rows['shadow']['copies_to_tol']:.3g} ({rows['shadow']['copies_to_tol'] / need:.0f}x)"
        out.append(line)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--copies", type=int, default=6000)
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--t2", type=float, nargs="*", default=[math.inf, 1e-2, 1e-3], help="T2 values in seconds (inf allowed)")
    ap.add_argument("--policies", nargs="*", default=["shadow", "bell", "fixed 0.25", "fixed 0.5", "adaptive"])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--json", default="", help="write the results here")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--summarize", default="", help="print the summary of a run saved with --json, run nothing")
    args = ap.parse_args(argv)
    if args.summarize:
        with open(args.summarize) as fh:
            print("\n".join(summary(json.load(fh))))
        return 0
    if args.quick:
        args.copies, args.reps = 2000, 2
    logging.basicConfig(level=logging.WARNING)
    rho = make_state()
    exact = truth(rho)
    print(f"state: 8 qubits, purity {exact['purity']:.4f}; targets (tol {TOL}): " + ", ".join(f"{k}={v:+.4f}" for k, v in exact.items()))
    print(f"copies per run {args.copies}, repetitions {args.reps}, arrival rate {RATE:g}/s")
    results = []
    t_start = time.perf_counter()
    for t2 in args.t2:
        print(f"\nT2 = {t2:g} s (λ T2 = {RATE * t2:g})")
        print(f"{'policy':>11} {'bell frac':>9} {'cap/T2':>7} {'worst se/tol':>12} {'worst RMSE/tol':>14} {'copies to tol':>13}  per-target stderr (RMSE)")
        for name in args.policies:
            runs = [asyncio.run(one_run(name, rho, args.copies, t2, args.seed + 17 * r)) for r in range(args.reps)]
            ev = evaluate(runs, exact)
            frac = float(np.mean([r["pair_fraction"] for r in runs]))
            caps = [r["cap"] for r in runs if r["cap"] is not None]
            cap_t2 = float(np.mean(caps)) / t2 if caps and math.isfinite(t2) else math.nan
            need = args.copies * ev["worst"] ** 2
            row = {"t2": t2, "policy": name, "bell_fraction": frac, "cap_over_t2": cap_t2, **ev, "copies_to_tol": need,
                   "predicted": float(np.nanmean([r["predicted_copies"] for r in runs])) if name == "adaptive" else None,
                   "seconds": float(np.mean([r["seconds"] for r in runs]))}
            results.append(row)
            per = " ".join(f"{k}={ev['stderr'][k]:.3g}({ev['rmse'][k]:.3g})" for k in ev["rmse"])
            print(f"{name:>11} {frac:>9.3f} {cap_t2:>7.3g} {ev['worst']:>12.3g} {ev['worst_rmse']:>14.3g} {need:>13.4g}  {per}")
            if name == "adaptive":
                print(f"{'':>11} (plan predicted {row['predicted']:.4g} copies to tolerance; {row['seconds']:.2f} s per run)")
    print(f"\n({time.perf_counter() - t_start:.0f} s)")
    print("\n".join(summary(results)))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
