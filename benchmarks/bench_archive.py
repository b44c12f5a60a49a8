"""The record archive: daemon throughput with the archive on vs off, and reading an archive back.

One run measures, on simulated records (n = 16 qubits, batches of ``--batch``
random-Pauli snapshots):

1. **daemon end to end** -- ``--producers`` producer processes, each a
   reliable :class:`~qsense.streaming.transport.RecordPublisher` (acks, window)
   sending as fast as the daemon acknowledges, into an in-process
   :class:`~qsense.streaming.daemon.EstimationDaemon` folding 1,000 random
   2-local observables; sustained snapshots/s over ``--seconds``, for

   * the archive **off** (acknowledged after folding),
   * the archive **on, group commit** (one fsync per ``commit_interval``),
   * the archive **on, per-batch fsync**;

   and the ratios on/off;
2. **read back** -- an archive of ``--read-snapshots`` snapshots written once,
   then read into a ``ShadowEstimator`` with 10 observables from a warm page
   cache, next to the peers on the same machine: pyarrow scanning the same
   Parquet files (the I/O ceiling), and the same estimator fed uint8
   ``(bases, outcomes)`` arrays from memory (what an unpacked format would
   cost at best); peak RSS of the reading process (bounded by a segment, not
   the archive).

Usage::

    python benchmarks/bench_archive.py                 # full run (~5 min, ~4 GB of scratch disk)
    python benchmarks/bench_archive.py --quick         # smoke run
    python benchmarks/bench_archive.py --read-snapshots 1e9   # the 10^9-snapshot RSS check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench_daemon import random_paulis  # the same observables as the daemon benchmark


# -- producers -------------------------------------------------------------------------------
def producer_main(endpoint: str, name: str, n: int, T: int, seconds: float, conn) -> None:
    """Send one pre-built batch again and again (new seq each time) through a reliable publisher."""
    from qsense import ShadowBatch
    from qsense.streaming.transport import RecordPublisher

    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    pool = [ShadowBatch(rng.integers(0, 3, (T, n), dtype=np.uint8), rng.integers(0, 2, (T, n), dtype=np.uint8))
            for _ in range(4)]
    for b in pool:
        b.packed()  # built once, as a driver producing packed records would

    async def go() -> int:
        pub = RecordPublisher(endpoint, source=name)  # the default window (64 batches)
        sent = 0
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            await pub.send(pool[sent % len(pool)])
            sent += 1
        try:
            await pub.flush(timeout=30)
        finally:
            pub.close()
        return sent

    conn.send(asyncio.run(go()))


async def run_daemon(mode: str, n: int, T: int, producers: int, seconds: float, observables: list[str], scratch: str,
                     warmup: float = 3.0) -> dict:
    from qsense.streaming.daemon import EstimationDaemon

    doc = {
        "daemon": {"name": f"bench-{mode}", "publish_interval": 1.0, "coalesce_records": 4 * T},
        "inputs": {"zmq": [{"endpoint": "tcp://127.0.0.1:0", "name": "in", "hwm": 16}]},
        "estimators": [{"name": "obs", "type": "shadow", "observables": observables, "wires": n}],
    }
    arch = os.path.join(scratch, f"archive-{mode}")
    if mode != "off":
        doc["archive"] = {"path": arch, "fsync": "group" if mode == "group" else "batch", "commit_interval": 0.05}
    d = EstimationDaemon(doc)
    await d.start()
    ep = d.endpoints["input.in"]
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for i in range(producers):
        a, b = ctx.Pipe()
        p = ctx.Process(target=producer_main, args=(ep, f"p{i}", n, T, seconds + 4.0, b))
        p.start()
        pipes.append(a)
        procs.append(p)
    await asyncio.sleep(warmup)  # spawn, import, connect, warm up
    c0, t0 = d.slots[0].count, time.perf_counter()
    await asyncio.sleep(seconds)
    c1, t1 = d.slots[0].count, time.perf_counter()
    while any(p.is_alive() for p in procs):
        await asyncio.sleep(0.2)
    sent = sum(a.recv() for a in pipes)
    await asyncio.sleep(0.3)
    stats = d.stats()
    await d.stop()
    rate = (c1 - c0) / (t1 - t0)
    out = {"mode": mode, "snapshots_per_s": rate, "batches_sent": sent, "folded": d.slots[0].count // T,
           "archive": {k: stats["archive"].get(k) for k in ("stored", "duplicates", "refused", "commits", "stored_bytes")}
           if mode != "off" else None}
    if mode != "off":
        out["bytes_per_snapshot"] = stats["archive"]["stored_bytes"] / max(1, stats["archive"]["stored"] * T)
        shutil.rmtree(arch, ignore_errors=True)
    return out


# -- read back -------------------------------------------------------------------------------
def write_archive(path: str, n: int, T: int, snapshots: int) -> None:
    from qsense import ShadowBatch
    from qsense.streaming.archive import ArchiveWriter

    rng = np.random.default_rng(5)
    pool = [ShadowBatch(rng.integers(0, 3, (T, n), dtype=np.uint8), rng.integers(0, 2, (T, n), dtype=np.uint8))
            for _ in range(8)]
    with ArchiveWriter(path) as w:
        for i in range(max(1, int(snapshots) // T)):
            w.append(pool[i % 8].with_meta(source="bench", seq=i), epoch=1)
            if i % 64 == 63:
                w.sync()
                w.maybe_rotate()
                w.seal_pending()


READER = r"""
import json, sys, time
import qsense
from qsense.streaming.archive import open_archive
obs = json.loads(sys.argv[2])
best = None
for rep in range(2):  # the first pass warms the page cache
    est = qsense.ShadowEstimator(obs)
    t0 = time.perf_counter()
    for b in open_archive(sys.argv[1]).batches():
        est.update(b)
    dt = time.perf_counter() - t0
    best = dt if best is None else min(best, dt)
# VmHWM: this process image's peak RSS (ru_maxrss would carry over the parent's across fork + exec)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"seconds": best, "count": est.count, "rss_mib": hwm / 1024}))
"""

PEER_SCAN = r"""
import glob, json, sys, time
import pyarrow.parquet as pq
files = sorted(glob.glob(sys.argv[1] + "/segments/*.parquet"))
best = None
for rep in range(2):
    t0 = time.perf_counter(); nbytes = 0
    for f in files:
        pf = pq.ParquetFile(f, memory_map=True)
        for g in range(pf.num_row_groups):
            nbytes += pf.read_row_group(g, columns=["planes", "T"]).nbytes
    dt = time.perf_counter() - t0
    best = dt if best is None else min(best, dt)
print(json.dumps({"seconds": best, "bytes": nbytes}))
"""


def read_back(n: int, T: int, snapshots: float, scratch: str) -> dict:
    from qsense import ShadowBatch, ShadowEstimator

    rng = np.random.default_rng(9)
    obs = random_paulis(rng, n, 10, 1, 2)
    path = os.path.join(scratch, "read-archive")
    t0 = time.perf_counter()
    write_archive(path, n, T, int(snapshots))
    write_s = time.perf_counter() - t0
    total = (int(snapshots) // T) * T
    disk = sum(os.path.getsize(os.path.join(path, "segments", f)) for f in os.listdir(os.path.join(path, "segments")))
    r = json.loads(subprocess.run([sys.executable, "-c", READER, path, json.dumps(obs)], capture_output=True, text=True,
                                  check=True).stdout)
    peer = json.loads(subprocess.run([sys.executable, "-c", PEER_SCAN, path], capture_output=True, text=True,
                                     check=True).stdout)
    # the same estimator on uint8 tables already in memory (no I/O, but the packing step)
    b = ShadowBatch(rng.integers(0, 3, (T, n), dtype=np.uint8), rng.integers(0, 2, (T, n), dtype=np.uint8))
    est = ShadowEstimator(obs)
    reps = max(4, min(200, int(snapshots) // T))
    t0 = time.perf_counter()
    for _ in range(reps):
        est.update(b)
    mem_rate = reps * T / (time.perf_counter() - t0)
    shutil.rmtree(path, ignore_errors=True)
    assert r["count"] == total
    return {"snapshots": total, "write_s": write_s, "disk_bytes": disk, "bytes_per_snapshot": disk / total,
            "read_snapshots_per_s": total / r["seconds"], "reader_rss_mib": r["rss_mib"],
            "pyarrow_scan_snapshots_per_s": total / peer["seconds"], "uint8_in_memory_snapshots_per_s": mem_rate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: short windows, small archive")
    ap.add_argument("--seconds", type=float, default=60.0, help="measuring window per daemon mode")
    ap.add_argument("--producers", type=int, default=3)
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--observables", type=int, default=1000)
    ap.add_argument("--read-snapshots", type=float, default=2.5e8)
    ap.add_argument("--modes", default="off,group,batch")
    ap.add_argument("--scratch", default=None, help="directory for the archives (default: a temporary one)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.read_snapshots, args.observables = 1.5, 5e6, 100
    n = 16
    obs = random_paulis(np.random.default_rng(3), n, args.observables, 2, 2)
    scratch = args.scratch or tempfile.mkdtemp(prefix="qsense-bench-archive-")
    results: dict = {"n": n, "batch": args.batch, "producers": args.producers, "observables": args.observables,
                     "seconds": args.seconds, "daemon": {}}
    try:
        for mode in args.modes.split(","):
            r = asyncio.run(run_daemon(mode, n, args.batch, args.producers, args.seconds, obs, scratch,
                                       warmup=2.0 if args.quick else 3.0))
            results["daemon"][mode] = r
            print(f"daemon, archive {mode:<6} {r['snapshots_per_s'] / 1e6:8.2f} M snapshots/s"
                  + (f"   ({r['bytes_per_snapshot']:.2f} bytes/snapshot on disk)" if mode != "off" else ""), flush=True)
        dm = results["daemon"]
        if "off" in dm:
            for mode in ("group", "batch"):
                if mode in dm:
                    print(f"  ratio archive {mode}/off: {dm[mode]['snapshots_per_s'] / dm['off']['snapshots_per_s']:.2f}")
        rb = read_back(n, args.batch, args.read_snapshots, scratch)
        results["read_back"] = rb
        print(f"read back {rb['snapshots']:.3g} snapshots ({rb['bytes_per_snapshot']:.2f} bytes each on disk, "
              f"uint8 layout 32): {rb['read_snapshots_per_s'] / 1e6:.1f} M snapshots/s into ShadowEstimator(10 obs), "
              f"peak RSS {rb['reader_rss_mib']:.0f} MiB")
        print(f"  peer: pyarrow scan of the same files {rb['pyarrow_scan_snapshots_per_s'] / 1e6:.1f} M/s "
              f"(ratio {rb['read_snapshots_per_s'] / rb['pyarrow_scan_snapshots_per_s']:.2f}); same estimator on uint8 "
              f"arrays in memory {rb['uint8_in_memory_snapshots_per_s'] / 1e6:.1f} M/s "
              f"(ratio {rb['read_snapshots_per_s'] / rb['uint8_in_memory_snapshots_per_s']:.2f})")
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
