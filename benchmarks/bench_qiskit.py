"""Benchmark: QiskitDriver device-mode snapshots/s vs the same shots through Qiskit's own sampler.

What is timed (wall clock, best of ``--repeat``, one process, same backend object):

1. Random-Pauli shadows, n qubits, ``--shots`` snapshots per batch:
   * ``driver``: ``QiskitDriver(..., mode="device").sample(shots)`` -- draws the
     bases, runs the batch as one sampler job, returns a ShadowBatch (after a
     warm-up call that transpiles its measurement template once);
   * ``qiskit by hand``: what a Qiskit user writes for the same random-basis
     measurement: draw bases with NumPy, build one rotated circuit per distinct
     setting (H / Sdg+H, ``measure_all``), transpile them, run them as pubs with
     each setting's number of shots in one sampler job, read the bitstrings;
   * ``sampler only``: the same per-setting circuits, built and transpiled
     beforehand; only ``sampler.run(pubs).result()`` and reading the bits.
2. Two-copy Bell shots, n qubits on 2n: the driver's ``sample(shots)`` vs the
   sampler running the same (pre-transpiled) two-copy circuit with the same shots.

Samplers: ``qiskit_aer.primitives.SamplerV2`` on an ``AerSimulator`` (the driver
is given the AerSimulator; ``--threads`` sets Aer's ``max_parallel_threads`` for
both sides) and ``qiskit.primitives.StatevectorSampler``.

Usage::

    python benchmarks/bench_qiskit.py              # n = 3, 6; ~1 min on 2 cores
    python benchmarks/bench_qiskit.py --quick      # smaller
    python benchmarks/bench_qiskit.py --n 4 --shots 8000 --repeat 5
    python benchmarks/bench_qiskit.py --clock cpu  # CPU seconds: steadier when the cores are shared

Prints one row per case: snapshots (or Bell shots) per second and the ratio
driver / peer measured in the same run, plus the machine's load average.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

#: "wall" (perf_counter) or "cpu" (process_time: all of this process's threads, Aer's
#: included); on a shared machine the CPU seconds are the steadier measure
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCK["wall"]


def best_time(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def prep(n: int) -> Any:
    """A parametrised entangling circuit on n qubits (one free Parameter)."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter

    theta = Parameter("theta")
    qc = QuantumCircuit(n)
    qc.ry(theta, 0)
    for q in range(n - 1):
        qc.cx(q, q + 1)
        qc.ry(0.3 + 0.1 * q, q + 1)
    return qc


def rotated(qc: Any, setting: np.ndarray) -> Any:
    """The by-hand random-basis circuit: rotate each qubit to its basis, then measure."""
    c = qc.copy()
    for q, b in enumerate(setting):
        if b == 0:
            c.h(q)
        elif b == 1:
            c.sdg(q)
            c.h(q)
    c.measure_all()
    return c


def make_backends(threads: int) -> dict[str, tuple[Any, Callable[[], Any], Callable[[Any], Any]]]:
    """name -> (driver backend, sampler factory, transpile function)."""
    from qiskit.primitives import StatevectorSampler
    from qiskit.transpiler import generate_preset_pass_manager
    from qiskit_aer import AerSimulator
    from qiskit_aer.primitives import SamplerV2

    aer = AerSimulator(max_parallel_threads=threads)
    pm = generate_preset_pass_manager(optimization_level=1, backend=aer, seed_transpiler=1)
    return {
        "aer": (aer, lambda: SamplerV2.from_backend(aer), pm.run),
        "statevector": (None, lambda: StatevectorSampler(), lambda c: c),
    }


def bench_shadows(n: int, shots: int, repeat: int, name: str, backend: Any, new_sampler: Callable[[], Any],
                  transpile: Callable[[Any], Any]) -> list[tuple[str, float]]:
    from qsense.drivers.qiskit_device import QiskitDriver

    qc = prep(n)
    bound = qc.assign_parameters([0.7])
    drv = QiskitDriver(qc, backend, mode="device", params=(0.7,), batch_size=shots, seed=1)
    drv.sample(shots)  # warm-up: transpiles the measurement template once
    t_drv = best_time(lambda: drv.sample(shots), repeat)

    rng = np.random.default_rng(2)

    def by_hand(prebuilt: list | None = None) -> np.ndarray:
        bases = rng.integers(0, 3, size=(shots, n), dtype=np.uint8)
        settings, counts = np.unique(bases, axis=0, return_counts=True)
        circuits = prebuilt if prebuilt is not None else transpile([rotated(bound, s) for s in settings])
        res = new_sampler().run([(c, None, int(k)) for c, k in zip(circuits, counts)]).result()
        return np.concatenate([np.asarray(r.data.meas.array) for r in res])

    t_hand = best_time(by_hand, repeat)
    # sampler only: the same circuits for one fixed draw, built and transpiled before timing
    bases = np.random.default_rng(3).integers(0, 3, size=(shots, n), dtype=np.uint8)
    settings, counts = np.unique(bases, axis=0, return_counts=True)
    circuits = transpile([rotated(bound, s) for s in settings])
    pubs = [(c, None, int(k)) for c, k in zip(circuits, counts)]

    def sampler_only() -> None:
        res = new_sampler().run(pubs).result()
        for r in res:
            np.asarray(r.data.meas.array)

    t_samp = best_time(sampler_only, repeat)
    return [("driver", shots / t_drv), ("qiskit by hand", shots / t_hand), ("sampler only", shots / t_samp),
            ("settings", float(len(settings)))]


def bench_bell(n: int, shots: int, repeat: int, name: str, backend: Any, new_sampler: Callable[[], Any],
               transpile: Callable[[Any], Any]) -> list[tuple[str, float]]:
    from qiskit import QuantumCircuit

    from qsense.drivers.qiskit_device import QiskitDriver

    qc = prep(n)
    bound = qc.assign_parameters([0.7])
    drv = QiskitDriver(qc, backend, kind="bell", mode="device", params=(0.7,), batch_size=shots, seed=1)
    drv.sample(shots)
    t_drv = best_time(lambda: drv.sample(shots), repeat)
    two = QuantumCircuit(2 * n)
    two.compose(bound, qubits=list(range(0, 2 * n, 2)), inplace=True)
    two.compose(bound, qubits=list(range(1, 2 * n, 2)), inplace=True)
    for q in range(n):
        two.cx(2 * q, 2 * q + 1)
        two.h(2 * q)
    two.measure_all()
    tc = transpile(two)

    def sampler_only() -> None:
        res = new_sampler().run([(tc, None, shots)]).result()
        np.asarray(res[0].data.meas.array)

    t_samp = best_time(sampler_only, repeat)
    return [("driver", shots / t_drv), ("sampler only", shots / t_samp)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="*", default=None, help="qubit counts (default 3 6)")
    ap.add_argument("--shots", type=int, default=None, help="snapshots per batch (default 6000; --quick 2000)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="Aer max_parallel_threads for both sides (0: all cores)")
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                    help="wall seconds, or CPU seconds of this process (steadier on a loaded machine)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    global clock
    clock = CLOCK[args.clock]
    ns = args.n or ([3] if args.quick else [3, 6])
    shots = args.shots or (2000 if args.quick else 6000)
    repeat = 2 if args.quick else args.repeat
    backends = make_backends(args.threads)
    print(f"load average before: {os.getloadavg()[0]:.2f}; cores {os.cpu_count()}; Aer threads {args.threads}; "
          f"{args.clock} clock; {shots} shots per batch, best of {repeat}")
    print(f"{'case':<34}{'driver /s':>12}{'by hand /s':>12}{'sampler /s':>12}{'driver/hand':>12}{'driver/sampler':>15}")
    for n in ns:
        for name, (backend, new_sampler, transpile) in backends.items():
            r = dict(bench_shadows(n, shots, repeat, name, backend, new_sampler, transpile))
            label = f"shadows n={n} {name} ({int(r['settings'])} settings)"
            print(f"{label:<34}{r['driver']:>12,.0f}{r['qiskit by hand']:>12,.0f}{r['sampler only']:>12,.0f}"
                  f"{r['driver'] / r['qiskit by hand']:>12.2f}{r['driver'] / r['sampler only']:>15.2f}", flush=True)
        for name, (backend, new_sampler, transpile) in backends.items():
            r = dict(bench_bell(n, shots, repeat, name, backend, new_sampler, transpile))
            label = f"bell n={n} (2n={2 * n}) {name}"
            print(f"{label:<34}{r['driver']:>12,.0f}{'':>12}{r['sampler only']:>12,.0f}{'':>12}"
                  f"{r['driver'] / r['sampler only']:>15.2f}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
