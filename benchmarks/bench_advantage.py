"""The two-copy advantage, measured: copies needed vs n, single-copy shadows vs
two-copy Bell measurements, against theory (exponential vs constant).

Runs ``examples/two_copy_advantage.py`` (the experiment, its exact fast samplers
and its theory) at full size and adds:

* a side-by-side timing of the fast closed-form samplers against the generic
  ``sims`` samplers on the same states (they draw from the same distribution,
  tests/test_advantage.py checks it);
* the plot (PNG) and a JSON dump of every number.

Usage: ``python benchmarks/bench_advantage.py [--quick] [--nmax 16] [--trials 1000]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import pathlib
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_example():
    spec = importlib.util.spec_from_file_location("two_copy_advantage", ROOT / "examples" / "two_copy_advantage.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sampler_timing(adv, ns=(4, 8, 10), shots: int = 100_000) -> list[dict]:
    """Seconds per call for the fast samplers and the generic sims samplers."""
    from qsense import sims

    rng = np.random.default_rng(0)
    rows = []
    for n in ns:
        P, _ = adv.random_full_weight_paulis(n, rng)
        rho = adv.pauli_state(P, 0.9)

        def best(fn, repeat=3):
            ts = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            return min(ts)

        row = {"n": n, "shots": shots}
        row["fast_bell"] = best(lambda: adv.sample_pauli_state_bell(P, 0.9, shots, rng))
        row["fast_shadow"] = best(lambda: adv.sample_pauli_state_shadows(P, 0.9, shots, rng))
        # generic: including building the sampler's tables for this state (cold), and warm
        t0 = time.perf_counter()
        bs = sims.BellSampler(rho)
        bs.sample_codes(shots, rng)
        row["sims_bell_cold"] = time.perf_counter() - t0
        row["sims_bell_warm"] = best(lambda: bs.sample_codes(shots, rng))
        ss = sims.ShadowSampler(rho)
        t0 = time.perf_counter()
        ss.sample_arrays(shots, rng)
        row["sims_shadow_cold"] = time.perf_counter() - t0
        row["sims_shadow_warm"] = best(lambda: ss.sample_arrays(shots, rng))
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--nmin", type=int, default=1)
    ap.add_argument("--nmax", type=int, default=16)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=2022)
    ap.add_argument("--out", default=str(ROOT / "docs" / "figures" / "two_copy_advantage.png"))
    ap.add_argument("--json", default="")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.nmax, args.trials = min(args.nmax, 6), 200
    adv = load_example()
    t0 = time.perf_counter()
    res = adv.run(args.nmax, args.trials, args.alpha, args.target, args.seed, args.nmin)
    print(adv.report(res))
    # exponential fit of the measured shadow copies, for the record
    ns = np.array([r["n"] for r in res["rows"]])
    sc = np.array([r["shadow_copies"] for r in res["rows"]])
    ok = np.isfinite(sc) & (ns >= 3)
    if ok.sum() >= 2:
        slope, icpt = np.polyfit(ns[ok], np.log(sc[ok]), 1)
        print(f"measured shadow copies ~ {math.exp(icpt):.3g} x {math.exp(slope):.3f}^n (theory {adv.theory_copies(0, args.alpha, args.target)[0]:.3g} x 3^n)")
        res["fit"] = {"base": math.exp(slope), "prefactor": math.exp(icpt)}
    bc = np.array([r["bell_copies"] for r in res["rows"]])
    print(f"measured Bell copies: mean {bc.mean():.3g}, range {bc.min():.3g}..{bc.max():.3g} over n = {ns.min()}..{ns.max()}")
    print(f"experiment: {time.perf_counter() - t0:.1f} s")
    timing = sampler_timing(adv, ns=(4, 8) if args.quick else (4, 8, 10))
    print("\nsampler timing, seconds per 100,000 shots (fast closed form vs generic sims, cold = incl. building tables)")
    print(f"{'n':>3} {'fast bell':>10} {'sims bell cold':>15} {'warm':>8} {'fast shadow':>12} {'sims shadow cold':>17} {'warm':>8}")
    for r in timing:
        print(
            f"{r['n']:>3} {r['fast_bell']:>10.4f} {r['sims_bell_cold']:>15.4f} {r['sims_bell_warm']:>8.4f} "
            f"{r['fast_shadow']:>12.4f} {r['sims_shadow_cold']:>17.4f} {r['sims_shadow_warm']:>8.4f}"
        )
    res["timing"] = timing
    if args.out:
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        print(f"plot: {adv.plot(res, args.out)}")
    if args.json:
        for r in res["rows"]:
            r.pop("bell_curve", None)
            r.pop("shadow_curve", None)
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
