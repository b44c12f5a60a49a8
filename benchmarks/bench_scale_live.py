"""Live sharding: one daemon vs two daemons + a reducer on the same stream, rate and per-CPU-second.

Both configurations in one run, on simulated records (n = 16 qubits, batches
of ``--batch`` random-Pauli snapshots, 1,000 random 2-local observables as in
``bench_archive.py``):

* **1 daemon**: ``--producers`` producer processes, each a
  :class:`~qsense.streaming.transport.ShardedPublisher` over one endpoint,
  into one ``qsense daemon`` process (archive on, group commit);
* **2 daemons + reducer**: the same producers, each a ShardedPublisher over
  both daemons' endpoints (batch k to shard k % 2), into two ``qsense daemon``
  processes (each its own archive shard), merged by an in-process
  :class:`~qsense.streaming.reducer.Reducer`.

Every daemon, producer and the reducer is its own process, so each one's CPU
time is read with psutil.  The rate is measured from the daemons' own state
messages (``count`` and ``time`` of ``{prefix}/state/obs``) over the window;
the reducer's combined count is checked against their sum.  Per-CPU-second:
snapshots folded per second of daemon CPU (user + system), and per second of
all the processes' CPU; ``machine_busy`` is the CPU used by everything over
the window divided by the cores, ``system_busy`` the whole machine's (other
users included): near 1.0 the machine, not the daemons, is the limit.

Usage::

    python benchmarks/bench_scale_live.py            # ~1 min
    python benchmarks/bench_scale_live.py --quick    # smoke run

``run_live(args)`` is what ``bench_scale.py --part live`` calls (an
``argparse.Namespace`` with the options below; missing ones take their defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_daemon import random_paulis  # the same observables as the daemon benchmarks

PRODUCER = r"""
import asyncio, json, sys, time
import numpy as np
from qsense import ShadowBatch
from qsense.streaming.transport import ShardedPublisher
endpoints, name, n, T, seconds = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
rng = np.random.default_rng(abs(hash(name)) % 2**32)
pool = [ShadowBatch(rng.integers(0, 3, (T, n), dtype=np.uint8), rng.integers(0, 2, (T, n), dtype=np.uint8)) for _ in range(4)]
for b in pool:
    b.packed()
async def go():
    sp = ShardedPublisher(endpoints, source=name)
    sent, t_end = 0, time.monotonic() + seconds
    while time.monotonic() < t_end:
        await sp.send(pool[sent % 4])
        sent += 1
    try:
        await sp.flush(timeout=60)
    finally:
        sp.close()
    return sent
print(json.dumps({"sent": asyncio.run(go())}))
"""

DEFAULTS = {"quick": False, "seconds": 20.0, "producers": 2, "batch": 65536, "observables": 1000, "scratch": None}


def _toml_list(xs: list[str]) -> str:
    return "[" + ", ".join(json.dumps(x) for x in xs) + "]"


def _start_daemon(scratch: Path, name: str, observables: list[str], T: int) -> tuple[subprocess.Popen, dict]:
    cfg = scratch / f"{name}.toml"
    ready = scratch / f"{name}.ready"
    cfg.write_text(f"""
[daemon]
name = "{name}"
publish_interval = 0.5
coalesce_records = {4 * T}
[[inputs.zmq]]
endpoint = "tcp://127.0.0.1:0"
name = "in"
hwm = 16
[[estimators]]
name = "obs"
type = "shadow"
observables = {_toml_list(observables)}
wires = 16
[outputs.zmq]
endpoint = "tcp://127.0.0.1:0"
snapshot_endpoint = "tcp://127.0.0.1:0"
[archive]
path = "{scratch / (name + '-archive')}"
fsync = "group"
commit_interval = 0.05
""")
    p = subprocess.Popen([sys.executable, "-m", "qsense", "--log-level", "WARNING", "daemon", "--config", str(cfg),
                          "--ready-file", str(ready)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"daemon {name} did not start")
        time.sleep(0.05)
    return p, json.loads(ready.read_text())["endpoints"]


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


async def _measure(daemons: int, args: argparse.Namespace, observables: list[str], scratch: Path) -> dict:
    from qsense.streaming.reducer import Reducer

    T = args.batch
    procs = [_start_daemon(scratch, f"d{daemons}-{i}", observables, T) for i in range(daemons)]
    inputs = [ep["input.in"] for _, ep in procs]
    producers = [subprocess.Popen([sys.executable, "-c", PRODUCER, json.dumps(inputs), f"p{i}", "16", str(T),
                                   str(args.seconds + 6.0)], stdout=subprocess.PIPE)
                 for i in range(args.producers)]
    reducer = Reducer([(ep["estimates"], ep["snapshot"]) for _, ep in procs], publish_interval=0.5, stale_after=5.0)
    await reducer.start()
    me = psutil.Process()
    try:
        await asyncio.sleep(4.0)  # spawn, import, connect, warm up

        def sample() -> tuple[list[tuple[float, int]], float, float, float, float]:
            marks = [(float(s.states["obs"]["time"]), int(s.states["obs"]["count"])) if "obs" in s.states else (0.0, 0)
                     for s in reducer.sources]
            t = me.cpu_times()
            return (marks, _cpu([p.pid for p, _ in procs]), _cpu([p.pid for p in producers]), t.user + t.system,
                    time.perf_counter())

        sys0 = psutil.cpu_times()
        m0, d0, p0, r0, t0 = sample()
        await asyncio.sleep(args.seconds)
        m1, d1, p1, r1, t1 = sample()
        sys1 = psutil.cpu_times()
        combined = reducer.combined()[0].get("obs", {}).get("count", 0)
        sums = sum(c for _, c in m1)
        sent = [json.loads(p.communicate(timeout=120)[0])["sent"] for p in producers]
    finally:
        await reducer.stop()
        for p, _ in procs:
            p.terminate()
        for p, _ in procs:
            p.wait(timeout=60)
    rate = sum((c1 - c0) / (s1 - s0) for (s0, c0), (s1, c1) in zip(m0, m1) if s1 > s0)
    wall = t1 - t0
    folded = rate * wall
    dcpu, pcpu, rcpu = d1 - d0, p1 - p0, r1 - r0
    allcpu = dcpu + pcpu + rcpu
    # the whole machine, other users included (a shared host): idle near 0 means the cores are the limit
    idle = (sys1.idle + getattr(sys1, "iowait", 0.0)) - (sys0.idle + getattr(sys0, "iowait", 0.0))
    total = sum(sys1) - sum(sys0)
    return {"daemons": daemons, "snapshots_per_s": rate, "daemon_cpu_s": dcpu, "producer_cpu_s": pcpu, "reducer_cpu_s": rcpu,
            "per_daemon_cpu_s": folded / dcpu if dcpu else None, "per_cpu_s_all": folded / allcpu if allcpu else None,
            "machine_busy": allcpu / wall / (os.cpu_count() or 1), "system_busy": 1.0 - idle / total if total else None,
            "window_s": wall,
            "batches_sent": sum(sent), "combined_count_at_end": combined, "sum_of_daemon_counts_at_end": sums}


def run_live(args: argparse.Namespace) -> dict:
    """1 daemon vs 2 daemons + reducer on the same stream; returns the results (and prints a summary)."""
    for k, v in DEFAULTS.items():
        if not hasattr(args, k) or getattr(args, k) is None and v is not None:
            setattr(args, k, v)
    if args.quick:
        args.seconds, args.observables, args.batch = 5.0, 200, 16384
    n = 16
    obs = random_paulis(np.random.default_rng(3), n, args.observables, 2, 2)
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="qsense-bench-live-"))
    results: dict = {"n": n, "batch": args.batch, "producers": args.producers, "observables": args.observables,
                     "seconds": args.seconds, "cpus": os.cpu_count(), "runs": {}}
    try:
        for d in (1, 2):
            r = asyncio.run(_measure(d, args, obs, scratch))
            results["runs"][f"{d}_daemon" + ("s_reducer" if d > 1 else "")] = r
            print(f"{d} daemon(s){' + reducer' if d > 1 else '          '}: {r['snapshots_per_s'] / 1e6:7.2f} M snapshots/s, "
                  f"{r['per_daemon_cpu_s'] / 1e6:6.2f} M per daemon-CPU-s, {r['per_cpu_s_all'] / 1e6:6.2f} M per CPU-s (all), "
                  f"ours {r['machine_busy']:.0%} / whole machine {r['system_busy']:.0%} busy of {os.cpu_count()} cores",
                  flush=True)
        one, two = results["runs"]["1_daemon"], results["runs"]["2_daemons_reducer"]
        results["speedup"] = two["snapshots_per_s"] / one["snapshots_per_s"] if one["snapshots_per_s"] else None
        print(f"  2 daemons / 1 daemon: {results['speedup']:.2f}x rate")
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: short window, 200 observables, small batches")
    ap.add_argument("--seconds", type=float, default=DEFAULTS["seconds"], help="measuring window per configuration")
    ap.add_argument("--producers", type=int, default=DEFAULTS["producers"])
    ap.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    ap.add_argument("--observables", type=int, default=DEFAULTS["observables"])
    ap.add_argument("--scratch", default=None, help="directory for the archives (default: a temporary one)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    results = run_live(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
