"""Benchmark: exact sims samplers vs PennyLane, side by side in one run.

What is timed (wall clock, best of ``--repeat`` runs, one process):

1. n=8 Haar-random pure state, random-Pauli shadow snapshots:
   ``sims.sample_shadows`` (fresh call: validation + table build + sampling) for
   1,000,000 snapshots, the tree sampler forced, and PennyLane ``default.qubit``
   with ``qml.classical_shadow`` (``StatePrep`` + shadow) on fewer shots
   (throughput is what is compared; PennyLane's cost is linear in shots).
2. n=8 two-copy Bell shots: ``sims.sample_bell`` vs a 16-wire two-copy circuit
   (StatePrep twice, CNOT/H per pair, ``qml.sample``) on ``default.qubit`` and
   ``lightning.qubit``.
3. Scaling of the bounded-memory tree: statevectors n = 12, 16, 20 and density
   matrices n = 6, 8, 10 (with PennyLane ``default.mixed`` classical shadows
   for the density matrices where it runs in reasonable time); with
   ``--memory`` also the peak traced memory of each sampler call.

4. Large registers and arrays (issue 17; ``--large`` runs only this section):
   pure-state shadows at n = 16, 20, 24 with the compiled prefix tree
   (:mod:`qsense.sims.pure_tree`) vs PennyLane ``default.qubit``
   ``qml.classical_shadow`` (n = 16, 20; a few shots, per-snapshot rates) and vs
   the NumPy tree it replaced (``_Tree``), with the peak traced memory at n = 24;
   the single-excitation telescope samplers at M = 64 and 256 (shadows and Bell)
   vs the NumPy implementations they replaced (``benchmarks/_reference_samplers.py``),
   and ``TelescopeSim.shadows`` end to end (amplitudes with piston, then sampling).

Usage::

    python benchmarks/bench_samplers.py            # full run (~2-3 min on 2 cores)
    python benchmarks/bench_samplers.py --quick    # smaller shot counts
    python benchmarks/bench_samplers.py --large    # section 4 only (~1-2 min)
    python benchmarks/bench_samplers.py --json out.json

Timings are CPU seconds of this process (``time.process_time``; on a shared
machine wall time also counts other people's work) unless ``--wall``.

Prints one row per case: snapshots (or shots) per second, and the ratio to
PennyLane measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import tracemalloc
import warnings
from typing import Callable

import numpy as np

from qsense import sims
from qsense.sims.samplers import ShadowSampler


#: the clock best_time uses (main() switches to perf_counter with --wall)
CLOCK: Callable[[], float] = time.process_time


def best_time(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = CLOCK()
        fn()
        best = min(best, CLOCK() - t0)
    return best


def peak_mib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return (tracemalloc.get_traced_memory()[1] - base) / 2**20
    finally:
        tracemalloc.stop()


def pennylane_shadow(state: np.ndarray, shots: int, device: str = "default.qubit") -> Callable[[], object]:
    import pennylane as qml

    n = int(np.log2(state.shape[0]))
    dev = qml.device(device, wires=n, seed=1)
    prep = qml.StatePrep if state.ndim == 1 else qml.QubitDensityMatrix

    @qml.set_shots(shots)
    @qml.qnode(dev)
    def circuit():
        prep(state, wires=range(n))
        return qml.classical_shadow(wires=range(n))

    return circuit


def pennylane_bell(state: np.ndarray, shots: int, device: str) -> Callable[[], object]:
    import pennylane as qml

    n = int(np.log2(state.shape[0]))
    dev = qml.device(device, wires=2 * n, seed=1)
    a = [2 * i for i in range(n)]
    b = [2 * i + 1 for i in range(n)]

    @qml.set_shots(shots)
    @qml.qnode(dev)
    def circuit():
        qml.StatePrep(state, wires=a)
        qml.StatePrep(state, wires=b)
        for i in range(n):
            qml.CNOT([a[i], b[i]])
            qml.Hadamard(a[i])
        return qml.sample(wires=range(2 * n))

    return circuit


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller shot counts")
    ap.add_argument("--repeat", type=int, default=3, help="timing repeats (best is kept)")
    ap.add_argument("--memory", action="store_true", help="also measure peak traced memory of the scaling cases")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ap.add_argument("--large", action="store_true", help="only section 4: large registers and telescope arrays")
    ap.add_argument("--wall", action="store_true", help="time wall clock instead of process CPU time")
    args = ap.parse_args()
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter
    warnings.filterwarnings("ignore")
    import pennylane as qml

    q = args.quick
    if q:
        args.repeat = 1  # a smoke run: one timing each (< 20 s in all)
    rows: list[dict] = []

    def report(case: str, count: int, seconds: float, unit: str, ref: str | None = None, **extra: object) -> dict:
        rate = count / seconds
        row = {"case": case, "count": count, "seconds": seconds, "per_second": rate, "unit": unit, **extra}
        if ref is not None:
            base = next(r for r in rows if r["case"] == ref)
            row["ratio_vs"] = ref
            row["ratio"] = rate / base["per_second"]
        rows.append(row)
        ratio = f"  x{row['ratio']:8.1f} vs {ref}" if ref is not None else ""
        mem = f"  peak {extra['peak_mib']:.1f} MiB" if "peak_mib" in extra else ""
        print(f"{case:<48} {count:>9} {unit:<9} {seconds:8.3f} s  {rate:12,.0f} /s{ratio}{mem}", flush=True)
        return row

    print(f"qsense sims samplers vs PennyLane {qml.__version__} (numpy {np.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)\n")

    print(f"clock: {'wall' if args.wall else 'process CPU'}; load average {os.getloadavg()[0]:.2f} at start\n")
    if args.large:
        large_section(args, report, rows)
        return finish(args, qml, rows)

    # 1. n=8 pure state shadows ------------------------------------------------------
    n = 8
    psi = sims.haar_random_state(n, seed=1)
    pl_shots = 1_000 if q else 20_000
    ours_shots = 50_000 if q else 1_000_000
    circuit = pennylane_shadow(psi, pl_shots)
    circuit()  # warm-up (construction, caches)
    report("pennylane default.qubit classical_shadow n=8", pl_shots, best_time(circuit, max(1, args.repeat - 1)), "snapshots")
    report("sims.sample_shadows n=8 (table)", ours_shots,
           best_time(lambda: sims.sample_shadows(psi, ours_shots, seed=2), args.repeat), "snapshots",
           ref="pennylane default.qubit classical_shadow n=8")
    sampler = ShadowSampler(psi)
    sampler.sample(ours_shots, seed=0)  # builds the table once
    report("ShadowSampler n=8, table cached (streaming)", ours_shots,
           best_time(lambda: sampler.sample(ours_shots, seed=3), args.repeat), "snapshots",
           ref="pennylane default.qubit classical_shadow n=8")
    from qsense.sims import samplers as _samplers

    previous = _samplers.set_threads(2)
    try:
        report("sims.sample_shadows n=8, 2 threads (set_threads)", ours_shots,
               best_time(lambda: sims.sample_shadows(psi, ours_shots, seed=2), args.repeat), "snapshots",
               ref="pennylane default.qubit classical_shadow n=8")
        report("ShadowSampler n=8, cached, 2 threads", ours_shots,
               best_time(lambda: sampler.sample(ours_shots, seed=3), args.repeat), "snapshots",
               ref="pennylane default.qubit classical_shadow n=8")
    finally:
        _samplers.set_threads(previous)
    report("sims tree sampler n=8", ours_shots,
           best_time(lambda: ShadowSampler(psi, method="tree").sample(ours_shots, seed=4), args.repeat), "snapshots",
           ref="pennylane default.qubit classical_shadow n=8")
    rho8 = sims.to_density_matrix(psi)
    report("sims.sample_shadows n=8 density matrix", ours_shots,
           best_time(lambda: sims.sample_shadows(rho8, ours_shots, seed=5), args.repeat), "snapshots",
           ref="pennylane default.qubit classical_shadow n=8")

    # 2. n=8 Bell shots ------------------------------------------------------------------
    print()
    pl_bell = 300 if q else 10_000
    for dev in ("default.qubit",) if q else ("default.qubit", "lightning.qubit"):
        c = pennylane_bell(psi, pl_bell, dev)
        c()
        report(f"pennylane {dev} two-copy Bell n=8 (16 wires)", pl_bell, best_time(c, max(1, args.repeat - 1)), "shots")
    report("sims.sample_bell n=8", ours_shots, best_time(lambda: sims.sample_bell(psi, ours_shots, seed=6), args.repeat),
           "shots", ref="pennylane default.qubit two-copy Bell n=8 (16 wires)")
    report("sims.sample_bell_pair n=8 (decohered A, fresh B)", ours_shots,
           best_time(lambda: sims.sample_bell_pair(sims.decohere(psi, 0.1, t2=1.0), psi, ours_shots, seed=7), args.repeat),
           "shots", ref="pennylane default.qubit two-copy Bell n=8 (16 wires)")

    # 3. scaling of the bounded-memory tree ----------------------------------------------------
    print()
    cases = [(12, False, 10_000), (16, False, 10_000), (20, False, 2_000), (6, True, 100_000), (8, True, 20_000),
             (10, True, 5_000)]
    if q:  # the smoke run keeps one statevector and one density case
        cases = [(12, False, 2_000), (6, True, 5_000)]
    for nq, dense, shots in cases:
        st = sims.haar_random_state(nq, seed=nq)
        if dense:
            st = sims.to_density_matrix(st)
        kind = "density" if dense else "statevector"
        label = f"sims shadows {kind} n={nq}"
        ref = None
        if dense and nq <= 8:
            pls = min(shots, 300 if q else 2_000)
            c = pennylane_shadow(st, pls, "default.mixed")
            c()
            report(f"pennylane default.mixed classical_shadow n={nq}", pls, best_time(c, 1), "snapshots")
            ref = f"pennylane default.mixed classical_shadow n={nq}"
        extra = {}
        if args.memory:
            extra["peak_mib"] = peak_mib(lambda: sims.sample_shadows(st, shots, seed=8))
            extra["state_mib"] = st.nbytes / 2**20
        report(label, shots, best_time(lambda: sims.sample_shadows(st, shots, seed=8), max(1, args.repeat - 1)),
               "snapshots", ref=ref, **extra)

    print()
    large_section(args, report, rows)
    return finish(args, qml, rows)


def finish(args: argparse.Namespace, qml: object, rows: list[dict]) -> int:
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"pennylane": qml.__version__, "numpy": np.__version__, "cpus": os.cpu_count(),
                       "load": os.getloadavg()[0], "rows": rows}, fh, indent=2)
    return 0


def large_section(args: argparse.Namespace, report: Callable[..., dict], rows: list[dict]) -> None:
    """Section 4: n = 16 / 20 / 24 pure-state shadows and M = 64 / 256 telescope samplers."""
    import sys

    from qsense.sims import pure_tree
    from qsense.sims.samplers import _Tree
    from qsense.sims.telescope import TelescopeArray, TelescopeSim, UniformDisk, demo_array
    from qsense.sims.telescope.samplers import bell_from_amplitudes, shadows_from_amplitudes

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _reference_samplers as ref

    q = args.quick
    rep = max(1, args.repeat - 1)
    pure_tree.sample_pure_shadows(sims.haar_random_state(3, seed=0), 10, np.random.default_rng(0))  # compile / load
    for n, shots, pl_shots, old_shots in ((16, 20_000 if q else 100_000, 20 if q else 100, 2_000 if q else 10_000),
                                          (20, 5_000 if q else 20_000, 3 if q else 10, 300 if q else 1_000),
                                          (20, 0 if q else 100_000, 0, 0),
                                          (24, 200 if q else 1_000, 0, 0)):
        if shots == 0:
            continue
        psi = sims.haar_random_state(n, seed=n)
        base = None
        if pl_shots:
            c = pennylane_shadow(psi, pl_shots)
            c()  # warm-up
            base = f"pennylane default.qubit classical_shadow n={n}"
            report(base, pl_shots, best_time(c, 1), "snapshots")
        if old_shots:
            report(f"numpy prefix tree (replaced) n={n}", old_shots,
                   best_time(lambda: _Tree(n, False, np.random.default_rng(1), 1 << 22).run(psi, old_shots), 1),
                   "snapshots", ref=base)
        extra = {}
        if n >= 24:
            extra["peak_mib"] = peak_mib(lambda: pure_tree.sample_pure_shadows(psi, 50, np.random.default_rng(2)))
            extra["state_mib"] = psi.nbytes / 2**20
        tree = pure_tree.PureShadowTree(psi)
        report(f"sims compiled prefix tree n={n}, {shots} shots per call", shots,
               best_time(lambda: tree.sample(shots, np.random.default_rng(3)), rep if n < 24 else 1), "snapshots",
               ref=base, **extra)
        del psi, tree

    print()
    rng = np.random.default_rng(5)
    for M, shots, old in ((64, 100_000 if q else 1_000_000, 20_000 if q else 100_000),
                          (256, 25_000 if q else 250_000, 5_000 if q else 25_000)):
        arr = TelescopeArray(demo_array(M), 800e-9)
        sim = TelescopeSim(arr, UniformDisk(0.8e-9), piston_diffusion=100.0, seed=M)
        ph = sim.photons(count=old)
        amps_old = sim.amplitudes(ph)
        base = f"numpy single-excitation shadows (replaced) M={M}"
        report(base, old, best_time(lambda: ref.numpy_shadows_from_amplitudes(amps_old, rng), 1), "shots")
        reps = -(-shots // old)
        amps = np.concatenate([amps_old] * reps)[:shots]
        shadows_from_amplitudes(amps[:10], rng)  # compile / load
        report(f"sims compiled single-excitation shadows M={M}", shots,
               best_time(lambda: shadows_from_amplitudes(amps, rng), rep), "shots", ref=base)
        bbase = f"numpy single-excitation Bell (replaced) M={M}"
        half = old // 2
        report(bbase, half, best_time(lambda: ref.numpy_bell_from_amplitudes(amps_old[:half], amps_old[half:2 * half], rng), 1),
               "pairs")
        bell_from_amplitudes(amps[:10], amps[10:20], rng)
        bshots = shots // 4
        report(f"sims compiled single-excitation Bell M={M}", bshots,
               best_time(lambda: bell_from_amplitudes(amps[:bshots], amps[bshots:2 * bshots], rng), rep), "pairs",
               ref=bbase)
        ph_all = sim.photons(count=shots // 4)
        report(f"TelescopeSim.shadows end to end (piston) M={M}", shots // 4, best_time(lambda: sim.shadows(ph_all), rep),
               "shots", ref=base)
        del amps, amps_old, ph, ph_all


if __name__ == "__main__":
    raise SystemExit(main())
