"""Reading recorded data: qsense's readers vs Huang's reference C++ program, end to end.

One run, on one data set (``--snapshots`` random-Pauli snapshots of n = 16
qubits, default 3.7 M, a 270 MB reference text file written to ``--dir``):

1. **reader**: the reference measurement file read by
   :func:`qsense.streaming.reference_fast.read_measurements` (MB/s from a warm
   page cache, and the growth of peak RSS over the process before reading, in
   multiples of the file size); the token reader it replaced on a
   ``--old-mb`` prefix of the file (the whole file would take ~4 GB of memory);
2. **end to end** (file -> values, each command a fresh process, wall time and
   its own peak RSS): ``qsense estimate FILE --observables-file obs.txt --method
   matched`` on the text file, on an ``.npz`` of the same snapshots and on a
   record archive of them, next to the reference program
   ``prediction_shadow -o FILE obs.txt`` (matched-ratio estimates of the same
   1,000 random 2-local observables); the values are compared (the reference
   prints 6 decimals).  Wall time and CPU time (user + system) are both
   reported: on a shared machine the CPU seconds are the steadier measure of
   the work each program does; the fixed start-up of a qsense process (Python,
   imports, numba's first load of its cached code) is printed separately, as
   the same command on a 2,000-snapshot prefix of the file.  With
   ``--repeat R`` every command (the reference too) runs R times and the
   fastest run is reported.

The reference program is built from the authors' repository
(github.com/hsinyuan-huang/predicting-quantum-properties) with ``g++ -O3``:
give its ``prediction_shadow.cpp`` with ``--reference-src`` (a file, or a git
directory to read it from), or the benchmark tries ``git clone``; without a
compiler or the source it says so and skips the comparison.

Usage::

    python benchmarks/bench_readers.py                       # full run (~2 min, ~0.8 GB of scratch disk)
    python benchmarks/bench_readers.py --snapshots 200000    # smoke run
    python benchmarks/bench_readers.py --reference-src /path/to/predicting-quantum-properties

The scratch directory is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N = 16
OBS = 1000


def write_text(path: Path, rng: np.random.Generator, T: int, n: int, chunk: int = 200_000) -> None:
    """A reference measurement file of T random snapshots, written with NumPy in chunks:
    ``B s B s ... \\n`` as the reference's own data (``1`` / ``-1``, one blank between tokens)."""
    with open(path, "wb") as f:
        f.write(f"{n}\n".encode())
        for lo in range(0, T, chunk):
            t = min(chunk, T - lo)
            b = rng.integers(0, 3, (t, n), dtype=np.uint8)
            o = rng.integers(0, 2, (t, n), dtype=np.uint8)
            cells = np.zeros((t, 5 * n + 1), np.uint8)  # "B -1 " per qubit; 0 bytes are dropped
            cells[:, 0 : 5 * n : 5] = np.frombuffer(b"XYZ", np.uint8)[b]
            cells[:, 1 : 5 * n : 5] = ord(" ")
            cells[:, 2 : 5 * n : 5] = np.where(o == 1, ord("-"), 0)
            cells[:, 3 : 5 * n : 5] = ord("1")
            cells[:, 4 : 5 * n : 5] = ord(" ")
            cells[:, -1] = ord("\n")
            flat = cells.ravel()
            flat[flat != 0].tofile(f)


def build_reference(src: str | None, work: Path) -> tuple[Path | None, str]:
    """Compile prediction_shadow.cpp; returns (binary or None, what happened)."""
    gxx = shutil.which("g++")
    if gxx is None:
        return None, "no g++ on this machine: the reference program is skipped"
    cpp = work / "prediction_shadow.cpp"
    if src:
        s = Path(src)
        if s.is_file():
            shutil.copyfile(s, cpp)
        else:  # a clone or a bare git directory
            for cmd in (["git", "-C", str(s), "show", "HEAD:prediction_shadow.cpp"],
                        ["git", "--git-dir", str(s), "show", "HEAD:prediction_shadow.cpp"]):
                r = subprocess.run(cmd, capture_output=True, check=False)
                if r.returncode == 0:
                    cpp.write_bytes(r.stdout)
                    break
    if not cpp.exists():
        r = subprocess.run(["git", "clone", "--depth", "1", "https://github.com/hsinyuan-huang/predicting-quantum-properties",
                            str(work / "ref")], capture_output=True, timeout=60, check=False)
        if r.returncode == 0:
            shutil.copyfile(work / "ref" / "prediction_shadow.cpp", cpp)
    if not cpp.exists():
        return None, "reference source not found (give --reference-src; git clone failed): the reference program is skipped"
    exe = work / "prediction_shadow"
    r = subprocess.run([gxx, "-std=c++0x", "-O3", str(cpp), "-o", str(exe)], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return None, f"g++ failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
    return exe, f"built {exe.name} with g++ -O3 from {src or 'a git clone'}"


#: Runs a command and reports its wall time and its own peak RSS: from a small launcher,
#: since a child's ru_maxrss starts at its parent's RSS (kept across fork and exec).
_LAUNCH = """
import os, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
out = p.stdout.read()
_, status, usage = os.wait4(p.pid, 0)
dt = time.perf_counter() - t0
sys.stdout.buffer.write(out)
sys.stderr.write(f"\\n@@ {dt} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)} {usage.ru_utime + usage.ru_stime}\\n")
"""


def timed(cmd: list[str], repeat: int = 1) -> tuple[float, float, str, float]:
    """Run a command in a fresh process: (wall seconds, its peak RSS in MiB, stdout,
    its CPU seconds, user + system: the work done, less sensitive to a shared machine);
    with ``repeat`` > 1 the run of least wall time (its own CPU and RSS)."""
    if repeat > 1:
        return min((timed(cmd) for _ in range(repeat)), key=lambda r: r[0])
    r = subprocess.run([sys.executable, "-c", _LAUNCH, *cmd], capture_output=True, check=False)
    tail = r.stderr.decode().rsplit("@@ ", 1)
    if len(tail) != 2:
        raise RuntimeError(f"{cmd[0]}: launcher failed: {r.stderr.decode()[-500:]}")
    dt, rss_kib, rc, cpu = tail[1].split()
    if int(rc) != 0:
        raise RuntimeError(f"{cmd[0]} failed ({rc}): {tail[0][-500:]}")
    return float(dt), int(rss_kib) / 1024.0, r.stdout.decode(), float(cpu)


def qsense_values(out: str) -> np.ndarray:
    """The value column of ``qsense estimate``'s table (after its header line)."""
    return np.array([float(line.split()[-2]) for line in out.splitlines()[1:] if line.strip()])


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snapshots", type=float, default=3.7e6)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a new one under /tmp)")
    ap.add_argument("--reference-src", default=None, help="prediction_shadow.cpp, or the authors' repository (git dir)")
    ap.add_argument("--old-mb", type=float, default=20.0, help="MB of the file the token reader is timed on")
    ap.add_argument("--keep", action="store_true", help="keep the scratch files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each end-to-end command (the fastest is reported)")
    args = ap.parse_args()
    T = int(args.snapshots)
    work = Path(args.dir or tempfile.mkdtemp(prefix="qsense_bench_readers_", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run(args, T, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, T: int, work: Path) -> None:
    import qsense
    from qsense.streaming import reference
    from qsense.streaming.archive import ArchiveWriter
    from qsense.streaming.reference_fast import read_measurements, read_measurements_tokens

    rng = np.random.default_rng(args.seed)
    txt, obs_file = work / "measurement.txt", work / "observables.txt"
    write_text(txt, rng, T, N)
    size = txt.stat().st_size
    words = []
    for _ in range(OBS):
        q = rng.choice(N, 2, replace=False)
        words.append(f"{'XYZ'[rng.integers(3)]}{q[0]} {'XYZ'[rng.integers(3)]}{q[1]}")
    obs = [qsense.pauli.parse_observable(w) for w in words]
    reference.write_observables(obs_file, N, obs)
    print(f"# load before: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)")
    print(f"data: {T:,} snapshots, n={N}, {size / 1e6:.1f} MB reference text; {OBS} random 2-local observables")

    # 1. the reader in this process (warm page cache: read once first)
    with open(txt, "rb") as f:  # into the page cache, in pieces
        while f.read(1 << 24):
            pass
    warm = work / "warm.txt"
    warm.write_text("2\nX 1 Y -1\n")
    read_measurements(warm)  # numba's compiled code loaded before the clock starts
    before = rss_mib()
    peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    t0, c0 = time.perf_counter(), time.process_time()
    batch = read_measurements(txt)
    t_read, c_read = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    growth = max(peak, peak0) - before
    print("\n## 1. Reading the reference text format")
    print("| reader | MB/s | peak RSS growth | x file size |")
    print("|---|---|---|---|")
    print(f"| qsense reference_fast (bytes -> bit planes) | {size / t_read / 1e6:.0f} | {growth:.0f} MiB | {growth * 2**20 / size:.2f} |")
    print(f"| the same, per CPU-second (all its threads; the work, whatever the load) | {size / c_read / 1e6:.0f} | | |")
    # the ceiling: the same bytes copied from the page cache into a buffer, no parsing
    raw = bytearray(1 << 24)
    t0 = time.perf_counter()
    with open(txt, "rb", buffering=0) as f:
        while f.readinto(raw):
            pass
    t_raw = time.perf_counter() - t0
    print(f"| raw read of the same file into a 16 MiB buffer (no parsing: the ceiling) | {size / t_raw / 1e6:.0f} | | |")
    print(f"qsense reader: {100 * t_raw / t_read:.0f} % of the raw read rate")
    old_bytes = int(args.old_mb * 1e6)
    with open(txt, "rb") as f:
        head = f.read(old_bytes)
    small = work / "prefix.txt"
    small.write_bytes(head[: head.rfind(b"\n") + 1])
    t0 = time.perf_counter()
    old = read_measurements_tokens(small)
    t_old = time.perf_counter() - t0
    new_small = read_measurements(small)
    assert np.array_equal(new_small.packed(), old.packed()), "fast and token readers disagree"
    print(f"| token reader (the previous one), {small.stat().st_size / 1e6:.0f} MB prefix | {small.stat().st_size / t_old / 1e6:.1f} | | |")
    print(f"fast / token reader: {(size / t_read) / (small.stat().st_size / t_old):.0f}x")

    # the same snapshots as .npz and as a record archive
    npz = work / "measurement.npz"
    np.savez(npz, bases=batch.bases, outcomes=batch.outcomes)
    arch = work / "archive"
    with ArchiveWriter(arch) as w:
        step = 1 << 16
        for i, lo in enumerate(range(0, T, step)):
            w.append(qsense.ShadowBatch.from_packed(batch[lo : lo + step].packed(), min(step, T - lo)).with_meta(source="bench", seq=i),
                     epoch=1)
    del batch, old, new_small

    # 2. end to end, fresh processes
    exe, how = build_reference(args.reference_src, work)
    print(f"\n## 2. End to end: file -> {OBS} matched-ratio values (fresh process each, wall time)")
    print(f"reference program: {how}")
    q = [sys.executable, "-m", "qsense", "estimate"]
    common = ["--observables-file", str(obs_file), "--method", "matched", "--quiet"]
    rows = []
    R = max(1, args.repeat)
    print(f"# load before the end-to-end runs: {os.getloadavg()[0]:.2f}; fastest of {R} run(s) each")
    t_txt, rss_txt, out_txt, c_txt = timed(q + [str(txt)] + common, R)
    vals = qsense_values(out_txt)
    rows.append(("qsense estimate measurement.txt", t_txt, c_txt, rss_txt, size))
    t_npz, rss_npz, out_npz, c_npz = timed(q + [str(npz)] + common, R)
    assert np.allclose(qsense_values(out_npz), vals, atol=1e-12)
    rows.append(("qsense estimate measurement.npz", t_npz, c_npz, rss_npz, npz.stat().st_size))
    t_arc, rss_arc, out_arc, c_arc = timed(q + [str(arch)] + common, R)
    arch_vals = qsense_values(out_arc)
    assert np.allclose(arch_vals, vals, atol=1e-12)
    arch_bytes = sum(p.stat().st_size for p in arch.rglob("*") if p.is_file())
    rows.append(("qsense estimate archive/", t_arc, c_arc, rss_arc, arch_bytes))
    # the fixed cost: the same command on a 2,000-snapshot prefix (imports, numba's loads of the
    # scanner and the counting kernel from its cache; the work itself is ~1 ms)
    head_txt = work / "prefix2000.txt"
    with open(txt, "rb") as f:
        head_txt.write_bytes(b"".join(f.readline() for _ in range(2001)))
    t_start, _, _, c_start = timed(q + [str(head_txt)] + common, R)
    t_ref = c_ref = None
    if exe is not None:
        t_ref, rss_ref, out_ref, c_ref = timed([str(exe), "-o", str(txt), str(obs_file)], R)
        ref_vals = np.array([float(x) for x in out_ref.split()])
        diff = float(np.max(np.abs(ref_vals - vals)))
        rows.insert(0, ("reference prediction_shadow -o (C++, g++ -O3)", t_ref, c_ref, rss_ref, size))
    print("| command | input | wall s | x reference (wall) | CPU s | x reference (CPU) | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for name, t, c, rss, nbytes in rows:
        rw = f"{t_ref / t:.1f}x" if t_ref else "n/a"
        rc = f"{c_ref / c:.1f}x" if c_ref else "n/a"
        print(f"| {name} | {nbytes / 1e6:.0f} MB | {t:.2f} | {rw} | {c:.2f} | {rc} | {rss:.0f} MiB |")
    print(f"(fixed cost of each qsense command: the same command on a 2,000-snapshot prefix of the file, "
          f"{t_start:.2f} s wall, {c_start:.2f} s CPU)")
    if exe is not None:
        print(f"max |qsense - reference| over the {OBS} values: {diff:.1e} (reference prints 6 decimals)")
    print(f"# load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
