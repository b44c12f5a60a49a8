"""Reweighted Bell update: the support-grouped kernel vs the dense path it replaced, side by side.

``BellEstimator.update`` with a decoherence model (copies that waited in memory)
used to build a dense (8192 x terms) parity matrix per block of shots and raise
``w`` to each term's weight over the whole block; it now histograms each
support's Bell codes, weighted per distinct rate
(:mod:`qsense.estimators.bell_weighted`).  This script times both on the same
batches, in one process, and checks they agree (max difference of S relative to sqrt(T Q), the size of sum |value|):

* the term set of ``qsense demo -M 16`` (16 wires, 120 baselines x XX/XY/YX/YY = 480
  terms) and of ``-M 64`` (64 wires, 8,064 terms), depolarizing at T2 = 20 ms;
* 1,000 random Paulis of weight <= 4 on n = 16 (about one term per support: the
  kernel's direct branch), dephasing;

at T = 512 shots (a demo batch) and T = 8,192 (one dense block); the new kernel
also at T = 65,536 (the daemon's warm-up batch; the dense path takes minutes there).
The peer is the dense update copied verbatim.  CPU seconds per update (process
time), best of a few repeats.

Usage: ``python benchmarks/bench_bell.py [--quick]``
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from qsense import BellBatch, BellEstimator
from qsense.estimators.decoherence import Dephasing, Depolarizing


def _sign_table(outcomes: np.ndarray) -> np.ndarray:
    a = outcomes >> 1
    b = outcomes & 1
    return np.concatenate([a, a ^ b, b, np.zeros((outcomes.shape[0], 1), np.uint8)], axis=1)


def dense_update(est: BellEstimator, batch: BellBatch) -> None:
    """The historical dense decoherence branch of ``BellEstimator.update`` (verbatim; no Pauli sums here)."""
    if est._table is None:
        est._bind(batch.wires)
    t, T, model = est._table, batch.T, est.decoherence
    ysign = np.where((t.letters == 2).sum(axis=1) % 2 == 1, -1.0, 1.0)
    masks = est._masks(batch.n)
    depol = isinstance(model, Depolarizing)
    singlet = batch.outcomes == 3
    if depol:
        w = np.exp(batch.wait / est.t2)
    else:
        rate_p = model.pauli_rate(np.where(t.support < 0, 0, t.letters))
    sign_idx = np.where(t.support < 0, 3 * batch.n, (t.letters.astype(np.int64) - 1) * batch.n + np.maximum(t.support, 0))
    for lo in range(0, T, 8192):
        hi = min(T, lo + 8192)
        st = _sign_table(batch.outcomes[lo:hi])
        par = np.zeros((hi - lo, t.M), dtype=np.uint8)
        for s in range(sign_idx.shape[1]):
            par ^= st[:, sign_idx[:, s]]
        if depol:
            reweight = np.power(w[lo:hi, None], t.weight[None, :])
        else:
            reweight = np.exp(batch.wait[lo:hi, None] * rate_p[None, :])
        vals = (1.0 - 2.0 * par) * ysign * reweight
        est._S += vals.sum(axis=0)
        est._Q += (vals**2).sum(axis=0)
    if depol:
        f_trip = (1.0 + w) / 2.0
        f_sing = (1.0 - 3.0 * w) / 2.0
        per_wire = np.where(singlet, f_sing[:, None], f_trip[:, None])
    else:
        inv = 1.0 / model.factors(batch.wait)
        a = (batch.outcomes >> 1).astype(np.float64)
        b = (batch.outcomes & 1).astype(np.float64)
        lx, lz = 1.0 - 2.0 * a, 1.0 - 2.0 * b
        per_wire = 0.5 * (1.0 + lx * inv[:, 0:1] - lx * lz * inv[:, 1:2] + lz * inv[:, 2:3])
    for i, m in enumerate(masks):
        v = np.prod(per_wire[:, m], axis=1)
        est._pS[i] += v.sum()
        est._pQ[i] += (v**2).sum()
    est._count += T


def cpu_best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def pair_words(M: int) -> list[str]:
    return [f"{a}{j} {b}{k}" for j in range(M) for k in range(j + 1, M) for a in "XY" for b in "XY"]


def random_words(rng: np.random.Generator, n: int, count: int, kmax: int) -> list[str]:
    out = []
    for _ in range(count):
        qs = rng.choice(n, int(rng.integers(1, kmax + 1)), replace=False)
        out.append(" ".join(f"{'XYZ'[rng.integers(3)]}{q}" for q in qs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, no T = 8192 dense run at -M 64")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    cases = [("demo -M 16 terms", 16, pair_words(16), Depolarizing(0.02)),
             ("demo -M 64 terms", 64, pair_words(64), Depolarizing(0.02)),
             ("1000 random weight<=4, n=16", 16, random_words(rng, 16, 1000, 4), Dephasing(0.02))]
    reps = 2 if args.quick else 3
    print(f"load average {os.getloadavg()[0]:.2f}; CPU seconds per update, best of {reps}")
    print(f"{'term set':>30} {'terms':>6} {'T':>6} {'dense s':>9} {'grouped s':>10} {'ratio':>7} {'max rel dS':>11}")
    for name, n, words, model in cases:
        def make(words=words, model=model) -> BellEstimator:
            return BellEstimator(words, decoherence=model)

        for T in (512, 8192, 65536):
            batch = BellBatch(rng.integers(0, 4, (T, n), dtype=np.uint8), wait=rng.exponential(2e-3, T))
            est = make()
            est.update(batch)  # binds, compiles, caches the grouping: then one update is timed
            S1 = est._S.copy()
            t_new = cpu_best(lambda est=est, batch=batch: est.update(batch), reps)
            if T > 8192 or (args.quick and T == 8192 and n == 64):
                print(f"{name:>30} {len(words):6d} {T:6d} {'-':>9} {t_new:10.4f} {'-':>7} {'-':>11}")
                continue
            ref = make()
            dense_update(ref, batch)
            S_old = ref._S.copy()
            t_old = cpu_best(lambda ref=ref, batch=batch: dense_update(ref, batch), 1 if T == 8192 and n == 64 else reps)
            scale = np.maximum(np.sqrt(ref._Q / ref.count * T * T), 1.0)
            rel = float(np.max(np.abs(S1 - S_old) / scale))
            print(f"{name:>30} {len(words):6d} {T:6d} {t_old:9.4f} {t_new:10.4f} {t_old / t_new:7.1f} {rel:11.1e}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
