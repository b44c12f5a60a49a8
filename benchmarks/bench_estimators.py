"""Estimator throughput: qsense vs PennyLane's ClassicalShadow, side by side.

Runs, in one process on identical data:

0. The counting kernel at T=100,000, n=16, 1,000 random 2-local Paulis:
   ``ShadowEstimator.update`` on one batch (from bit planes, from uint8 tables;
   2 threads and 1), ten streamed batches, and the previous per-term kernel
   side by side, then a **roofline line**: the machine's measured memory
   bandwidth (large ``np.copyto``) and word-operation rate (the kernel's inner
   loop, AND + AND + 2 popcounts + 2 adds, on L1-resident words, all cores),
   the word-operations and DRAM bytes per obs x snapshot our kernel needs, and
   how close the measured rate is to the ceiling they imply.
1. T=100,000 snapshots, n=16, 1,000 random 2-local Paulis: qsense
   (``ShadowEstimator.update`` streaming in 10 batches, and the batch form
   ``shadow_expval``) against ``qml.ClassicalShadow.expval``.  PennyLane builds a
   (T, M, n) int64 array per call, so it is timed on a subset of the observables
   (``--pl-obs``) in calls of a few observables and its throughput (observable x
   snapshots per second) extrapolated; values are compared on that subset.
2. T=1,000,000 snapshots, n=50, 10,000 Paulis of weight <= 4, streamed in chunks
   of 100,000 through ``ShadowEstimator`` (groups=10): time and peak RSS.
3. Two-copy: ``BellEstimator`` and ``all_pauli_squares`` throughput.

Usage: ``python benchmarks/bench_estimators.py [--quick] [--only-kernel]``
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np


def random_paulis(rng: np.random.Generator, n: int, M: int, wmin: int, wmax: int) -> list[str]:
    out = []
    for _ in range(M):
        k = int(rng.integers(wmin, wmax + 1))
        qs = rng.choice(n, k, replace=False)
        out.append(" ".join(f"{'XYZ'[rng.integers(3)]}{q}" for q in qs))
    return out


def to_pennylane(word: str):
    import pennylane as qml

    ops = {"X": qml.X, "Y": qml.Y, "Z": qml.Z}
    terms = [ops[t[0]](int(t[1:])) for t in word.split()]
    out = terms[0]
    for t in terms[1:]:
        out = out @ t
    return out


def best_of(fn, repeat: int = 3) -> float:
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

def _peak_word_ops(threads: int) -> float:
    """Word-operations per second of the kernel's inner loop on L1-resident words
    (x = a & b; m += popcount(x); o += popcount(x & p): 6 ops per word), ``threads``
    threads side by side (numba, nogil)."""
    from concurrent.futures import ThreadPoolExecutor

    from numba import njit

    from qsense.estimators._jit import _popcount64

    @njit(nogil=True, cache=False)
    def loop(a, b, p, reps):
        m = np.uint64(0)
        o = np.uint64(0)
        for _ in range(reps):
            for w in range(a.shape[0]):
                x = a[w] & b[w]
                m += _popcount64(x)
                o += _popcount64(x & p[w])
        return m + o

    rng = np.random.default_rng(1)
    arrs = [rng.integers(0, 2**63, 256, dtype=np.uint64) for _ in range(3)]
    loop(*arrs, 1)
    reps = 40_000
    with ThreadPoolExecutor(threads) as pool:
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            list(pool.map(lambda _: loop(*arrs, reps), range(threads)))
            best = min(best, time.perf_counter() - t0)
    return 6.0 * 256 * reps * threads / best


def _memory_bandwidth() -> float:
    """Bytes per second (read + write) of a 256 MiB np.copyto, best of 3."""
    src = np.ones(1 << 25, dtype=np.float64)
    dst = np.empty_like(src)
    t = best_of(lambda: np.copyto(dst, src), 3)
    return 2.0 * src.nbytes / t


def part0(T: int, n: int, M: int, rng: np.random.Generator) -> dict:
    import qsense
    from qsense.estimators import kernels as K
    from qsense.estimators.supports import support_groups

    bases = rng.integers(0, 3, (T, n), dtype=np.uint8)
    bits = rng.integers(0, 2, (T, n), dtype=np.uint8)
    tables = qsense.ShadowBatch(bases, bits)
    planes = qsense.ShadowBatch.from_packed(qsense.ShadowBatch(bases, bits).packed(), T)
    words = random_paulis(rng, n, M, 2, 2)
    proto = qsense.ShadowEstimator(words)
    proto._bind(tables.wires)
    table = proto._table

    def fresh():
        e = qsense.ShadowEstimator.__new__(qsense.ShadowEstimator)
        e.__dict__.update(proto.__dict__)
        e._matched = np.zeros((0, table.M), dtype=np.int64)
        e._odd = np.zeros((0, table.M), dtype=np.int64)
        e._counts = np.zeros(0, dtype=np.int64)
        return e

    def one(batch):
        e = fresh()
        e.update(batch)
        return e

    parts = [tables[lo : lo + T // 10] for lo in range(0, T, T // 10)]

    def streamed():
        e = fresh()
        for b in parts:
            e.update(b)
        return e

    threads = K.get_threads()
    out = {"T": T, "n": n, "M": M, "distinct": table.M, "threads": threads}
    for _ in range(2):  # compile and warm the buffers
        one(planes), one(tables), streamed()
    out["planes_s"] = best_of(lambda: one(planes), 15)  # best of many: the machine is shared
    out["tables_s"] = best_of(lambda: one(tables), 15)
    out["stream_s"] = best_of(streamed, 10)
    ref = one(planes).estimate().values
    K.set_threads(1)
    out["planes1_s"] = best_of(lambda: one(planes), 7)
    out["tables1_s"] = best_of(lambda: one(tables), 7)
    # the previous kernel: one fused pass per term (count_terms_jit), terms split over the threads
    K.set_threads(threads)
    keep = K._count_shadow
    K._count_shadow = lambda rows, signs, table, n, mi, si, ws: K.count_terms(rows, signs, mi, si, ws)
    try:
        one(planes)
        out["old_planes_s"] = best_of(lambda: one(planes), 15)
        old_vals = one(planes).estimate().values
    finally:
        K._count_shadow = keep
    out["maxdiff_old"] = float(np.max(np.abs(old_vals - ref)))
    # roofline
    mi, si = K._term_indices(table, n, sign_letter_rows=False)
    g = support_groups(table, mi, si, valid_row=3 * n, zero_row=n)
    W = T / 64.0
    ops = 6.0 * table.M * W + float(g.k.sum()) * W  # term words + parity words (one XOR/copy each)
    dram = 8.0 * 3 * n * W  # the planes, read once (rows and parities stay in L1/L2 per chunk)
    out["supports"] = g.S
    out["ops_per_os"] = ops / (M * T)
    out["bytes_per_os"] = dram / (M * T)
    out["peak_ops"] = _peak_word_ops(threads)
    out["peak_ops1"] = _peak_word_ops(1)
    out["bandwidth"] = _memory_bandwidth()
    out["ceiling"] = min(out["peak_ops"] / out["ops_per_os"], out["bandwidth"] / out["bytes_per_os"])
    return out


def print_part0(r: dict) -> None:
    import os

    thr = lambda t: r["T"] * r["M"] / t
    print("## 0. Counting kernel")
    print(f"T={r['T']:,}, n={r['n']}, M={r['M']} random 2-local Paulis ({r['distinct']} distinct terms on {r['supports']} supports); "
          f"threads={r['threads']}; load {os.getloadavg()[0]:.2f}")
    print("| ShadowEstimator.update (bound) | seconds | obs x snapshots / s | vs previous kernel |")
    print("|---|---|---|---|")
    print(f"| previous per-term kernel, from planes, {r['threads']} threads | {r['old_planes_s'] * 1e3:.2f} ms | {thr(r['old_planes_s']):.3e} | 1 |")
    for key, label in (("planes_s", f"support kernel, from planes, {r['threads']} threads"),
                       ("planes1_s", "support kernel, from planes, 1 thread"),
                       ("tables_s", f"support kernel, from uint8 tables (packing included), {r['threads']} threads"),
                       ("tables1_s", "support kernel, from uint8 tables, 1 thread"),
                       ("stream_s", f"support kernel, 10 streamed table batches of {r['T'] // 10:,}, {r['threads']} threads")):
        print(f"| {label} | {r[key] * 1e3:.2f} ms | {thr(r[key]):.3e} | {r['old_planes_s'] / r[key]:.2f}x |")
    print(f"max |support - previous| over the values: {r['maxdiff_old']:.1e}")
    achieved = thr(r["planes_s"])
    print(f"roofline: {r['ops_per_os']:.4f} word-ops and {r['bytes_per_os']:.5f} DRAM bytes per obs x snapshot; "
          f"machine: {r['peak_ops']:.3e} word-ops/s ({r['threads']} threads; {r['peak_ops1']:.3e} on 1), "
          f"{r['bandwidth'] / 1e9:.1f} GB/s copy bandwidth -> ceiling {r['ceiling']:.3e} obs x snapshots/s "
          f"(compute-bound); from planes we reach {achieved:.3e} = {100 * achieved / r['ceiling']:.0f} % of it")


def part1(T: int, n: int, M: int, pl_obs: int, rng: np.random.Generator) -> dict:
    import pennylane as qml

    import qsense

    bases = rng.integers(0, 3, (T, n), dtype=np.uint8)
    bits = rng.integers(0, 2, (T, n), dtype=np.uint8)
    batch = qsense.ShadowBatch(bases, bits)
    words = random_paulis(rng, n, M, 2, 2)

    def ours_stream():
        qsense.pauli._parse_string.cache_clear()  # time a cold parse
        est = qsense.ShadowEstimator(words, groups=1)
        for lo in range(0, T, T // 10):
            est.update(batch[lo : lo + T // 10])
        return est.estimate().values

    est = qsense.ShadowEstimator(words, groups=1)  # parse once, time the updates
    def ours_update():
        e = qsense.ShadowEstimator.__new__(qsense.ShadowEstimator)
        e.__dict__.update(est.__dict__)
        e._bind(batch.wires)
        for lo in range(0, T, T // 10):
            e.update(batch[lo : lo + T // 10])
        return e.estimate().values

    t_update = best_of(ours_update)
    t_stream = best_of(ours_stream)
    def ours_batch():
        qsense.pauli._parse_string.cache_clear()
        return qsense.shadow_expval(batch, words, k=10)

    t_batch = best_of(ours_batch)
    ours_vals = ours_stream()

    shadow = qml.ClassicalShadow(bits.astype(np.int64), bases.astype(np.int64))
    pl_words = [to_pennylane(w) for w in words[:pl_obs]]
    t0 = time.perf_counter()
    pl_vals = np.concatenate([shadow.expval(pl_words[i : i + 4], k=1) for i in range(0, pl_obs, 4)])
    t_pl = time.perf_counter() - t0
    t0 = time.perf_counter()
    pl_vals10 = np.concatenate([shadow.expval(pl_words[i : i + 4], k=10) for i in range(0, pl_obs, 4)])
    t_pl10 = time.perf_counter() - t0
    diff = float(np.max(np.abs(pl_vals - ours_vals[:pl_obs])))
    diff10 = float(np.max(np.abs(pl_vals10 - qsense.shadow_expval(batch, words[:pl_obs], k=10))))
    thr = lambda t, m: T * m / t
    return {
        "T": T, "n": n, "M": M,
        "ours_update_s": t_update, "ours_stream_s": t_stream, "ours_batch_k10_s": t_batch,
        "ours_thr": thr(t_update, M), "ours_stream_thr": thr(t_stream, M), "ours_batch_thr": thr(t_batch, M),
        "pl_thr": thr(t_pl, pl_obs), "pl_thr_k10": thr(t_pl10, pl_obs), "pl_obs": pl_obs,
        "ratio": thr(t_update, M) / thr(t_pl, pl_obs),
        "ratio_stream": thr(t_stream, M) / thr(t_pl, pl_obs),
        "ratio_batch_k10": thr(t_batch, M) / thr(t_pl10, pl_obs),
        "maxdiff_k1": diff, "maxdiff_k10": diff10,
    }


def part2(T: int, n: int, M: int, chunk: int, rng: np.random.Generator) -> dict:
    import qsense

    words = random_paulis(rng, n, M, 1, 4)
    est = qsense.ShadowEstimator(words, groups=10)
    rss0 = peak_rss_mib()
    t_gen = 0.0
    t0 = time.perf_counter()
    for lo in range(0, T, chunk):
        g0 = time.perf_counter()
        b = qsense.ShadowBatch(rng.integers(0, 3, (chunk, n), dtype=np.uint8), rng.integers(0, 2, (chunk, n), dtype=np.uint8))
        t_gen += time.perf_counter() - g0
        est.update(b)
    r = est.estimate()
    dt = time.perf_counter() - t0 - t_gen
    return {"T": T, "n": n, "M": M, "seconds": dt, "thr": T * M / dt, "snapshots_per_s": T / dt,
            "peak_rss_mib": peak_rss_mib(), "rss_before_mib": rss0, "count": r.count}


def part3(T: int, n: int, rng: np.random.Generator) -> dict:
    import qsense

    batch = qsense.BellBatch(rng.integers(0, 4, (T, n), dtype=np.uint8))
    words = random_paulis(rng, n, 1000, 1, n)
    est = qsense.BellEstimator(words)
    t_est = best_of(lambda: qsense.BellEstimator(words).update(batch), 2)
    t_all = best_of(lambda: qsense.all_pauli_squares(batch), 2)
    return {"T": T, "n": n, "bell_thr": T * 1000 / t_est, "all_s": t_all, "all_values": 4**n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--pl-obs", type=int, default=40, help="observables PennyLane is timed on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only-kernel", action="store_true", help="part 0 only")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    q = args.quick
    print_part0(part0(20_000 if q else 100_000, 16, 200 if q else 1000, rng))
    if args.only_kernel:
        return
    print()
    r1 = part1(20_000 if q else 100_000, 16, 200 if q else 1000, 8 if q else args.pl_obs, rng)
    print("## 1. Shadow Pauli expectations vs PennyLane ClassicalShadow.expval")
    print(f"T={r1['T']}, n={r1['n']}, M={r1['M']} random 2-local Paulis (PennyLane timed on {r1['pl_obs']})")
    print("| implementation | obs x snapshots / s | ratio to PennyLane | max abs diff |")
    print("|---|---|---|---|")
    print(f"| PennyLane expval k=1 | {r1['pl_thr']:.3e} | 1 | |")
    print(f"| qsense ShadowEstimator.update (10 batches, parsed) | {r1['ours_thr']:.3e} | {r1['ratio']:.0f}x | {r1['maxdiff_k1']:.1e} |")
    print(f"| qsense ShadowEstimator incl. cold parsing | {r1['ours_stream_thr']:.3e} | {r1['ratio_stream']:.0f}x | {r1['maxdiff_k1']:.1e} |")
    print(f"| PennyLane expval k=10 | {r1['pl_thr_k10']:.3e} | 1 | |")
    print(f"| qsense shadow_expval k=10 (incl. cold parsing) | {r1['ours_batch_thr']:.3e} | {r1['ratio_batch_k10']:.0f}x | {r1['maxdiff_k10']:.1e} |")
    r2 = part2(200_000 if q else 1_000_000, 50, 1000 if q else 10_000, 100_000, rng)
    print("\n## 2. Streaming, bounded memory")
    print(f"T={r2['T']}, n={r2['n']}, M={r2['M']} Paulis of weight 1..4, groups=10, chunks of 100,000:")
    print(f"{r2['seconds']:.2f} s ({r2['snapshots_per_s']:.3e} snapshots/s, {r2['thr']:.3e} obs x snapshots/s), "
          f"peak RSS {r2['peak_rss_mib']:.0f} MiB (process, incl. PennyLane import; {r2['rss_before_mib']:.0f} MiB before)")
    r3 = part3(200_000 if q else 1_000_000, 10, rng)
    print("\n## 3. Two-copy Bell")
    print(f"BellEstimator, T={r3['T']}, n={r3['n']}, 1000 Paulis: {r3['bell_thr']:.3e} obs x shots / s")
    print(f"all_pauli_squares, T={r3['T']}, n={r3['n']} ({r3['all_values']} values): {r3['all_s']:.3f} s")


if __name__ == "__main__":
    main()
