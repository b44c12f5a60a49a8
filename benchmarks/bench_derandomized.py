"""Derandomized measurement design: our count and time against the authors'
``data_acquisition_shadow -d``, and the online policy's trade-off.

Part 1 (offline).  For each observable file (written here, reference format:
40-qubit random 2-, 3- and 4-local words, a few hundred of them; one set with
trailing weights) it runs

* ``qsense.derandomized_bases`` (compiled once before the timing; best of 3,
  CPU seconds of this process: on a shared, loaded machine wall time measures
  the neighbours);
* the reference C++ program, built with ``g++ -O2`` from the source in
  ``--reference-src`` (a checkout of github.com/hsinyuan-huang/predicting-quantum-properties,
  or a bare git mirror of it) and run as ``data_acquisition_shadow -d M file``
  (best of 3, CPU seconds of the child process, which include reading the file);
* uniformly random bases, drawn until every observable has M matches;

and prints the three counts, whether our unpruned list equals the reference's
byte for byte, and the time ratio.  Without a compiler or a source checkout the
reference columns are skipped with a printed message.

The reference reads the rest of the header line as an observable whose letter
count it never initialises when that rest is empty, so it aborts on some runs
(``Assertion `pauli_observable[0] == 'X' ...' failed``); each run is retried up to
20 times and the retries are printed.

Part 2 (online).  An 8-qubit random-circuit state, 20 target words of weight
2-4 and 20 held-out weight-2 words: copies until every target's matched error bar
is <= eps with :class:`~qsense.acquisition.scheduler.DerandomizedBasisPolicy` at
several random fractions and with uniform bases, and the held-out words' mean
matched count and error bar at that point (3 seeds).

Usage: ``python benchmarks/bench_derandomized.py --reference-src DIR [--M 100] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import qsense
from qsense import sims
from qsense.acquisition.scheduler import DerandomizedBasisPolicy, UniformBasisPolicy
from qsense.estimators.derandomize import compile_design, design_counts
from qsense.streaming import reference


def observable_lines(n: int, L: int, k: int, seed: int, weighted: bool = False) -> str:
    """L random k-local words on n qubits in the reference format (as tests/test_derandomized.py)."""
    rng = np.random.default_rng(seed)
    lines = [str(n)]
    for _ in range(L):
        q = rng.choice(n, k, replace=False)
        p = rng.integers(0, 3, k)
        line = f"{k} " + " ".join(f"{'XYZ'[a]} {b}" for a, b in zip(p, q))
        if weighted:
            line += " " + str(rng.choice([0.5, 1.0, 2.0]))
        lines.append(line)
    return "\n".join(lines) + "\n"


def build_reference(src: Path | None, work: Path) -> Path | None:
    """Compile data_acquisition_shadow.cpp, or say why not and return None."""
    if src is not None and not (src / "data_acquisition_shadow.cpp").is_file() and (src / "HEAD").is_file():
        # a bare git mirror: take the file from its HEAD
        text = subprocess.run(["git", f"--git-dir={src}", "show", "HEAD:data_acquisition_shadow.cpp"], capture_output=True, text=True)
        if text.returncode == 0:
            (work / "data_acquisition_shadow.cpp").write_text(text.stdout)
            src = work
    if src is None or not (src / "data_acquisition_shadow.cpp").is_file():
        print(f"reference: no data_acquisition_shadow.cpp under --reference-src {src}; reference columns skipped")
        return None
    gxx = shutil.which("g++")
    if gxx is None:
        print("reference: no g++ on this machine; reference columns skipped")
        return None
    exe = work / "data_acquisition_shadow"
    subprocess.run([gxx, "-O2", "-o", str(exe), str(src / "data_acquisition_shadow.cpp")], check=True)
    return exe


def child_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_reference(exe: Path, path: Path, M: int) -> tuple[np.ndarray, float, int]:
    """(bases, best-of-3 CPU seconds of the process, aborted runs retried)."""
    times, retries, rows = [], 0, None
    while len(times) < 3:
        c0 = child_cpu()
        r = subprocess.run([str(exe), "-d", str(M), str(path)], capture_output=True, text=True)
        dt = child_cpu() - c0
        if r.returncode != 0:
            retries += 1
            if retries > 20:
                raise RuntimeError(f"reference failed 20 times on {path}: {r.stderr.strip().splitlines()[-1:]}")
            continue
        times.append(dt)
        rows = [ln.split() for ln in r.stdout.splitlines() if ln.strip()]
    return np.array([["XYZ".index(c) for c in row] for row in rows], dtype=np.uint8), min(times), retries


def random_count(obs: list, n: int, target: np.ndarray, seed: int = 0, step: int = 2000) -> int:
    """Uniformly random bases needed until every observable has its target matches."""
    rng = np.random.default_rng(seed)
    design = compile_design(obs, n=n)
    have = np.zeros(len(obs), dtype=np.int64)
    T = 0
    while True:
        chunk = rng.integers(0, 3, (step, n), dtype=np.uint8)
        counts = np.cumsum(design.hit_matrix(chunk), axis=0) + have
        done = np.flatnonzero((counts >= target).all(axis=1))
        if done.size:
            return T + int(done[0]) + 1
        have = counts[-1]
        T += step


def offline(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_derand_"))
    exe = build_reference(args.reference_src, work)
    sets = [("40q 2-local", 40, 300, 2, 1, False), ("40q 3-local weighted", 40, 300, 3, 3, True), ("40q 4-local", 40, 300, 4, 2, False)]
    if not args.quick:
        sets.append(("100q 4-local", 100, 500, 4, 4, False))
    qsense.derandomized_bases(["X0 Z1"], 2)  # numba compile (cached) outside the timing
    print(f"\nOffline design, M = {args.M} matches per unit weight")
    print(f"{'set':22s} {'L':>4s} {'ours B':>7s} {'ref B':>6s} {'same list':>9s} {'random B':>9s} {'ours cpu s':>10s} {'ref cpu s':>9s} {'ref/ours':>8s} {'retries':>7s}")
    for name, n, L, k, seed, weighted in sets:
        path = work / f"{name.replace(' ', '_')}.txt"
        path.write_text(observable_lines(n, L, k, seed, weighted))
        n_, obs, w = reference.read_observables(path, with_weights=True)
        ts = []
        for _ in range(3):
            t0 = time.process_time()
            ours = qsense.derandomized_bases(obs, args.M, w, n=n_)
            ts.append(time.process_time() - t0)
        raw = qsense.derandomized_bases(obs, args.M, w, n=n_, prune=False)
        target = np.ceil(w * args.M - 1e-9)
        assert (design_counts(ours, obs) >= target).all()
        rnd = random_count(obs, n_, target) if k <= 3 or args.M <= 100 else -1
        if exe is not None:
            ref, t_ref, retries = run_reference(exe, path, args.M)
            same = "yes" if raw.shape == ref.shape and (raw == ref).all() else "no"
            print(f"{name:22s} {L:4d} {len(ours):7d} {len(ref):6d} {same:>9s} {rnd:9d} {min(ts):10.3f} {t_ref:9.3f} {t_ref / min(ts):8.2f} {retries:7d}")
        else:
            print(f"{name:22s} {L:4d} {len(ours):7d} {'-':>6s} {'-':>9s} {rnd:9d} {min(ts):10.3f} {'-':>9s} {'-':>8s} {'-':>7s}")
    shutil.rmtree(work, ignore_errors=True)


def words(rng, n: int, ks, letters="XYZ") -> list[str]:
    out = []
    for k in ks:
        q = rng.choice(n, k, replace=False)
        out.append(" ".join(f"{letters[rng.integers(len(letters))]}{b}" for b in q))
    return out


def online(args) -> None:
    n, eps, block = 8, args.eps, 100
    fracs = (0.0, 0.1, 0.2, 0.5)
    print(f"\nOnline policy: {n} qubits, 20 targets (weights 2-4), eps = {eps}, blocks of {block}; held-out: 20 weight-2 words")
    print(f"{'policy':>22s} {'copies':>8s} {'vs uniform':>10s} {'held-out matches':>17s} {'min':>5s} {'held-out stderr':>16s}")
    rows: dict[str, list] = {}
    for seed in range(args.seeds):
        rng = np.random.default_rng(100 + seed)
        state = sims.random_circuit_state(n, 4, seed=200 + seed)
        targets = words(rng, n, [2, 3, 4, 3] * 5)
        held = words(rng, n, [2] * 20)
        policies = {f"derandomized r={r:g}": DerandomizedBasisPolicy(targets, eps, random_fraction=r, n=n, seed=seed) for r in fracs}
        policies["uniform"] = UniformBasisPolicy(n, seed=seed)
        for name, pol in policies.items():
            g = np.random.default_rng(300 + seed)
            est = qsense.ShadowEstimator(targets, method="matched")
            side = qsense.ShadowEstimator(held, method="matched")
            held_hits = np.zeros(len(held), dtype=np.int64)
            T = 0
            while True:
                batch = sims.sample_in_bases(state, pol.next_bases(block), g)
                pol.update(batch)
                est.update(batch)
                side.update(batch)
                held_hits += design_counts(batch.bases, held)
                T += block
                if np.all(est.estimate().stderr <= eps) or T >= 200_000:
                    break
            rows.setdefault(name, []).append((T, float(held_hits.mean()), int(held_hits.min()), float(np.median(side.estimate().stderr))))
        offline_B = len(qsense.derandomized_bases(targets, int(1 + np.ceil(1 / eps**2)), n=n))
        rows.setdefault(f"offline M={int(1 + np.ceil(1 / eps**2))}", []).append((offline_B, np.nan, -1, np.nan))
    base = np.mean([r[0] for r in rows["uniform"]])
    for name, rs in rows.items():
        T = np.mean([r[0] for r in rs])
        print(f"{name:>22s} {T:8.0f} {T / base:10.3f} {np.mean([r[1] for r in rs]):17.1f} {min(r[2] for r in rs):5d} {np.mean([r[3] for r in rs]):16.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference-src", type=Path, default=Path(os.environ["QSENSE_HUANG_SRC"]) if os.environ.get("QSENSE_HUANG_SRC") else None)
    ap.add_argument("--M", type=int, default=100)
    ap.add_argument("--eps", type=float, default=0.05)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print(f"load: {os.getloadavg()}")
    offline(args)
    online(args)
    print(f"load: {os.getloadavg()}")


if __name__ == "__main__":
    main()
