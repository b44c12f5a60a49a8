"""Subsystem purity / Renyi-2 at |A| = 9, 12, 16: qsense's class-pair path, the old dense
6^|A| histogram path and Huang's reference program, side by side on the same data.

* ``sparse``: :class:`qsense.ShadowPurity` (update + purity) with the distinct-class
  counts and the popcount pair kernel (cost ~ C^2 / 2 pairs, C distinct classes seen);
* ``dense``: the previous estimator's path, a full 6^|A| histogram and |A| tensor
  contractions (only where it fits: |A| <= 9);
* ``reference``: ``prediction_shadow -e`` built with ``g++ -O3`` from
  github.com/hsinyuan-huang/predicting-quantum-properties (``--reference-src``: a
  file or a git directory; default the local mirror if present).  It enumerates 4^|A|
  Pauli accumulators in static arrays of 10^8 entries, so it runs to |A| = 13; its
  time includes reading the text file, so the time for |A| = 1 (reading alone) is
  printed too.  Its estimator is the matched-term form (``method="matched"`` here,
  |A| <= 8, so not at these sizes): its entropy is printed, not compared.

Times are CPU seconds (``time.process_time`` for ours, the child's rusage for the
reference), so that the ratios hold on a machine shared with other jobs.

Data: N random-basis snapshots (``--shots``, default 20,000) of a random 16-qubit
circuit state.  Prints times, ratios and the values (identical estimators agree).

    python benchmarks/bench_purity.py [--shots N] [--reference-src PATH]
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

from qsense import ShadowPurity, sims
from qsense.estimators.class_kernels import class_keys
from qsense.estimators.purity import _G, _apply, u_statistic
from qsense.streaming import reference

MIRROR = "/work/.mirror/hsinyuan-huang+predicting-quantum-properties/repo"


def build_reference(src: str | None, work: Path) -> tuple[Path | None, str]:
    gxx = shutil.which("g++")
    if gxx is None:
        return None, "no g++ on this machine: reference skipped"
    cpp = work / "prediction_shadow.cpp"
    s = Path(src) if src else Path(MIRROR)
    if s.is_file():
        shutil.copyfile(s, cpp)
    elif s.exists():
        for cmd in (["git", "-C", str(s), "show", "HEAD:prediction_shadow.cpp"],
                    ["git", "--git-dir", str(s), "show", "HEAD:prediction_shadow.cpp"]):
            r = subprocess.run(cmd, capture_output=True, check=False)
            if r.returncode == 0:
                cpp.write_bytes(r.stdout)
                break
    if not cpp.exists():
        return None, "reference source not found (give --reference-src): reference skipped"
    exe = work / "prediction_shadow"
    r = subprocess.run([gxx, "-std=c++0x", "-O3", str(cpp), "-o", str(exe)], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return None, f"g++ failed: {r.stderr.strip()[-200:]}"
    return exe, f"built with g++ -O3 from {s}"


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_reference(exe: Path, meas: Path, work: Path, n: int, sub: tuple[int, ...]) -> tuple[float, float]:
    """(CPU seconds of the reference program, its printed entropy)."""
    sf = work / f"sub{len(sub)}.txt"
    sf.write_text(f"{n}\n{len(sub)} " + " ".join(str(q) for q in sub) + "\n")
    c = _child_cpu()
    out = subprocess.run([str(exe), "-e", str(meas), str(sf)], capture_output=True, text=True, check=True).stdout
    return _child_cpu() - c, float(out.split()[0])


def dense_path(b, sub) -> tuple[float, float]:
    m = len(sub)
    keys = class_keys(2 * b.bases[:, list(sub)].astype(np.int64) + b.outcomes[:, list(sub)])
    h = np.bincount(keys, minlength=6**m).astype(np.float64)
    nz = np.flatnonzero(h)
    return u_statistic(h[nz], _apply(h, _G, m)[nz], float(h[nz] @ _apply(h, _G**2, m)[nz]), 5.0**m, b.T)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shots", type=int, default=20000)
    ap.add_argument("--reference-src", default=None)
    args = ap.parse_args()
    n = 16
    psi = sims.random_circuit_state(n, 3, seed=1)
    b = sims.sample_shadows(psi, args.shots, seed=2)
    print(f"N = {b.T} snapshots of a 16-qubit random circuit state; load {os.getloadavg()[0]:.2f}")
    print("times are CPU seconds (process / child CPU time: robust to a loaded machine); 'wall' is ours")
    for m in (9, 12):  # load the compiled kernels (pair and Pauli routes) outside the timings
        est = ShadowPurity([tuple(range(m))])
        est.update(b[: 40 if m == 12 else 4000])
        est.purity()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        exe, how = build_reference(args.reference_src, work)
        print(f"reference: {how}")
        meas = work / "measurement.txt"
        reference.write_measurements(meas, b)
        read_only = run_reference(exe, meas, work, n, (0,))[0] if exe else None
        if read_only is not None:
            print(f"reference reading the file alone (|A| = 1): {read_only:.2f} s")
        print(f"{'|A|':>4s} {'C':>7s} {'wall':>6s} {'sparse s':>9s} {'dense s':>8s} {'ref s':>7s} {'dense/sparse':>12s} "
              f"{'ref/sparse':>10s} {'(ref-read)/sparse':>17s}  purity sparse | dense | S2 ref (matched, clamped)")
        for m in (9, 12, 16):
            sub = tuple(range(m))
            t, w = time.process_time(), time.perf_counter()
            est = ShadowPurity([sub])
            est.update(b)
            p = est.purity()
            ts, wall = time.process_time() - t, time.perf_counter() - w
            C = est.class_counts(0).distinct
            td = vd = None
            if m <= 9:
                t = time.process_time()
                vd = dense_path(b, sub)[0]
                td = time.process_time() - t
            tr = vr = None
            if exe and m <= 13:
                tr, vr = run_reference(exe, meas, work, n, sub)
            def fmt(x: float | None) -> str:
                return f"{x:8.2f}" if x is not None else "       -"

            def ratio(x: float | None, ts: float = ts) -> str:
                return f"{x / ts:10.1f}" if x is not None else "         -"

            print(f"{m:4d} {C:7d} {wall:6.2f} {ts:9.2f} {fmt(td)} {fmt(tr)[1:]} {ratio(td):>12s} {ratio(tr)} "
                  f"{ratio(tr - read_only if tr is not None else None):>17s}  {p.values[0]:.4f}±{p.stderr[0]:.2g} | "
                  f"{'-' if vd is None else f'{vd:.4f}'} | {'-' if vr is None else vr}")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
