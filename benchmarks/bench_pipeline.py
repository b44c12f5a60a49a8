"""Pipeline throughput: one copy at a time vs the default (coalesced) vs explicit blocks.

The whole acquisition pipeline runs in event time (driver → memory → scheduler →
simulated backend → records → a ``TargetSet`` estimator), as in
docs/scheduler.md: a simulated memory with 2 slots and T2 = 2 ms, arrivals at
λ = 10^4 copies/s (event time, so the CPU is the only limit), targets ⟨Z0⟩,
⟨X1 Y2⟩, tr(Z^{⊗n} ρ)² and the n-qubit purity (tolerance 0.05).  States: a
depth-3 random circuit state on n = 3, 5, 8 qubits with 15% white noise.

Policies: ``adaptive`` (re-planning every 500 arrivals; on the block paths at
the first block boundary after that) and ``fixed`` (ratio 0.25, cap 2/λ).

Paths, side by side in one run:

* ``per-copy``: ``poisson_copies`` (one ``Copy`` per arrival) with
  ``Pipeline(coalesce=0)``: one scheduler decision, queue entry and plan row
  per copy — the behaviour before coalescing, the peer;
* ``default``: the same per-copy driver and a ``Pipeline`` with default
  options: its copies are coalesced into ``CopyBlock`` s of up to 4096 at the
  driver (``coalesce_at == "driver"``);
* ``blocks``: ``poisson_blocks(..., block=4096)``, a driver that yields blocks;
* ``driver only``: iterating ``poisson_copies`` with nothing behind it — the
  floor of any per-copy driver (one Python object per copy);
* ``wall clock``: a ``MonotonicClock`` pipeline fed by a source that never
  sleeps (copies stamped on arrival), ``coalesce=0`` vs default (the ingest
  takes the queued backlog as blocks), n = 5, fixed policy;
* ``telescope``: the telescope chain at M = 16 and 64 telescopes
  (``TelescopeDriver`` → ``SlotMemory(4)`` with ``TelescopeCoherence(T2 = 10 ms)``
  → fixed policy, ratio 0.5 → ``TelescopeBackend`` → a counting sink; a binary
  star, 10^6 heralds/s of simulation time, 1% dark counts, event time, no
  estimators: the acquisition side alone).  ``per-copy`` is
  ``TelescopeDriver(block=0)`` with ``coalesce=0`` (one ``Copy`` per photon,
  photon rows in ``meta``: the path before driver blocks), ``blocks`` the
  default driver (``CopyBlock`` s of up to 4096 photons with their rows).

Every pipeline run is checked: ``report.unaccounted == 0`` and no errors.
Throughput is copies / wall time of ``Pipeline.run()`` (best of ``--reps``,
after one warm-up per configuration: numba compiles the scheduling scan once
and caches it, the 8-qubit sampler builds its table); ``cpu µs/copy`` is the
process CPU time of that run per copy, which the load of a shared machine
disturbs much less than wall time.  ``uptime`` is printed before and after.

Usage: ``python benchmarks/bench_pipeline.py [--quick] [--reps R] [--json PATH] [--telescope-only]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from typing import Any

import numpy as np

from qsense import sims
from qsense.acquisition.memory import Copy, ManualClock, MonotonicClock
from qsense.acquisition.pipeline import Pipeline, poisson_copies
from qsense.acquisition.scheduler import FixedPolicy, Scheduler
from qsense.acquisition.targets import Expval, PauliSquare, Purity, TargetSet
from qsense.sims.backend_sim import SimulatedBackend
from qsense.sims.memory_sim import SimulatedMemory

RATE = 1e4
T2 = 2e-3
BLOCK = 4096
PATHS = ("per-copy", "default", "blocks")


def make_state(n: int) -> np.ndarray:
    psi = sims.random_circuit_state(n, 3, seed=5)
    return 0.85 * sims.to_density_matrix(psi) + 0.15 * np.eye(2**n) / 2**n


async def timed_run(pipe: Pipeline, copies: int) -> tuple[Any, dict]:
    """``pipe.run()``, checked (every copy accounted, no errors), and its wall and CPU rates."""
    c0, t0 = time.process_time(), time.perf_counter()
    rep = await pipe.run()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    if rep.unaccounted != 0 or rep.errors:
        raise RuntimeError(f"bad run: unaccounted={rep.unaccounted} errors={rep.errors}")
    return rep, {"seconds": dt, "copies_per_s": copies / dt, "cpu_us_per_copy": cpu / copies * 1e6}


async def one_run(rho: np.ndarray, n: int, policy: str, copies: int, path: str, seed: int) -> dict:
    mem = SimulatedMemory(capacity=2, t2=T2, clock=ManualClock())
    ts = TargetSet([Expval("Z0"), Expval("X1 Y2"), PauliSquare("Z" * n), Purity()], tol=0.05, t2=T2)
    if policy == "adaptive":
        sched = Scheduler("adaptive", mem, targets=ts, replan_every=500)
    else:
        sched = Scheduler(FixedPolicy(0.25, cap=2.0 / RATE), mem)
    drv = poisson_copies(rho, RATE, copies, seed=seed, source="a", block=BLOCK if path == "blocks" else None)
    opts = {"coalesce": 0} if path == "per-copy" else {}
    pipe = Pipeline({"a": drv}, mem, sched, SimulatedBackend(seed=seed + 1), estimators=[ts], batch_size=512, **opts)
    rep, rates = await timed_run(pipe, copies)
    return {
        **rates,
        "bell_pairs": rep["scheduler.bell_pairs"], "shadows": rep["scheduler.shadow_copies"],
        "replans": rep["scheduler.replans"], "blocks": rep["scheduler.blocks"],
    }


async def wall_run(rho: np.ndarray, copies: int, coalesce: int | None, seed: int) -> dict:
    """A wall-clock pipeline fed by a source that outruns one-by-one handling
    (copies stamped on arrival, the driver never sleeps): fixed policy, n = 5."""
    mem = SimulatedMemory(capacity=2, t2=T2, clock=MonotonicClock())
    ts = TargetSet([Expval("Z0"), Expval("X1 Y2"), PauliSquare("Z" * 5), Purity()], tol=0.05, t2=T2)
    sched = Scheduler(FixedPolicy(0.25, cap=2.0 / RATE), mem)

    async def flood():
        for i in range(copies):
            yield Copy(rho, t=None, source="a", seq=i)
            if i % 1024 == 1023:
                await asyncio.sleep(0)  # a live source lets the loop run now and then

    opts = {} if coalesce is None else {"coalesce": coalesce}
    pipe = Pipeline({"a": flood()}, mem, sched, SimulatedBackend(seed=seed + 1), estimators=[ts], batch_size=512,
                    arrival_queue=8192, **opts)
    rep, rates = await timed_run(pipe, copies)
    return {**rates, "coalesced": rep["coalesced_copies"] / copies}


async def driver_only(rho: np.ndarray, copies: int) -> dict:
    c0, t0 = time.process_time(), time.perf_counter()
    async for _ in poisson_copies(rho, RATE, copies, seed=1, source="a"):
        pass
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": dt, "copies_per_s": copies / dt, "cpu_us_per_copy": cpu / copies * 1e6}


async def telescope_run(M: int, copies: int, block: int, seed: int) -> dict:
    """The telescope chain, event time: per copy (``block=0``, ``coalesce=0``) or in driver blocks."""
    from qsense.acquisition.memory import SlotMemory
    from qsense.drivers.telescope import TelescopeDriver
    from qsense.sims.telescope import (
        MAS,
        BinaryStar,
        TelescopeArray,
        TelescopeBackend,
        TelescopeCoherence,
        TelescopeSim,
        demo_array,
    )

    sim = TelescopeSim(TelescopeArray(demo_array(M), 800e-9), BinaryStar(3 * MAS, 1.0, 0.5), epsilon=0.99e-3,
                       dark_prob=1e-5, t2=0.01, seed=seed)
    clock = ManualClock()
    mem = SlotMemory(4, TelescopeCoherence(sim.t2), clock=clock)
    sched = Scheduler(FixedPolicy(0.5), mem, clock=clock)
    rows = [0]

    async def sink(batch):
        rows[0] += batch.T

    drv = TelescopeDriver(sim, count=copies, realtime=False, seed=[seed, 1], block=block)
    pipe = Pipeline({"tel": drv}, mem, sched, TelescopeBackend(sim), sinks=[sink], clock=clock, batch_size=512,
                    **({} if block else {"coalesce": 0}))
    rep, rates = await timed_run(pipe, copies)
    if rep["arrived"] != copies:
        raise RuntimeError(f"bad run: arrived={rep['arrived']} of {copies}")
    return {**rates, "records": rows[0],
            "bell_pairs": rep["scheduler.bell_pairs"], "blocks": rep["scheduler.blocks"]}


def telescope_rows(reps: int, quick: bool) -> list[dict]:
    """Per copy vs driver blocks at M = 16 and 64, side by side (best of ``reps`` each)."""
    counts = {"per-copy": 5000 if quick else 30_000, "blocks": 50_000 if quick else 400_000}
    rows = []
    for M in (16, 64):
        res = {}
        for path, block in (("per-copy", 0), ("blocks", 4096)):
            copies = counts[path] if M == 16 else counts[path] // 2
            asyncio.run(telescope_run(M, min(copies, 10_000), block, seed=99))  # warm-up (numba caches)
            res[path] = max((asyncio.run(telescope_run(M, copies, block, seed=r)) for r in range(reps)),
                            key=lambda r: r["copies_per_s"])
            rows.append({"telescopes": M, "path": f"telescope {path}", "copies": copies, **res[path]})
            print(f"telescope M={M:3d} {path:9s} {copies:>7d} copies  {res[path]['copies_per_s']:>10,.0f} copies/s  "
                  f"{res[path]['cpu_us_per_copy']:6.2f} cpu µs/copy  (pairs {res[path]['bell_pairs']}, blocks {res[path]['blocks']})",
                  flush=True)
        a, b = res["per-copy"], res["blocks"]
        print(f"telescope M={M:3d}: blocks / per-copy {b['copies_per_s'] / a['copies_per_s']:.1f}x wall, "
              f"{a['cpu_us_per_copy'] / b['cpu_us_per_copy']:.1f}x cpu", flush=True)
    return rows


def load() -> str:
    return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer copies, one repetition (smoke test)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    ap.add_argument("--telescope-only", action="store_true", help="only the telescope chain (per copy vs driver blocks)")
    args = ap.parse_args()
    if args.quick:
        args.reps = 1
    logging.basicConfig(level=logging.WARNING)
    if args.telescope_only:
        print(f"before: {load()} ({os.cpu_count()} CPUs)", flush=True)
        rows = telescope_rows(args.reps, args.quick)
        print(f"after: {load()}")
        print()
        print("| M | per-copy (block=0, coalesce=0) | blocks (default driver) | blocks / per-copy (wall · cpu) |")
        print("|---|---|---|---|")
        for M in (16, 64):
            a, b = (next(x for x in rows if x["telescopes"] == M and x["path"] == f"telescope {p}") for p in ("per-copy", "blocks"))
            print(f"| {M} | {a['copies_per_s']:,.0f}/s · {a['cpu_us_per_copy']:.2f} µs | {b['copies_per_s']:,.0f}/s · "
                  f"{b['cpu_us_per_copy']:.2f} µs | {b['copies_per_s'] / a['copies_per_s']:.1f}× · "
                  f"{a['cpu_us_per_copy'] / b['cpu_us_per_copy']:.1f}× |")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)
        return
    counts = {"per-copy": 3000, "default": 50_000, "blocks": 50_000} if args.quick else \
             {"per-copy": 20_000, "default": 200_000, "blocks": 400_000}
    print(f"before: {load()} ({os.cpu_count()} CPUs)", flush=True)
    rows = []
    for n in (3, 5, 8):
        rho = make_state(n)
        for policy in ("adaptive", "fixed"):
            for path in PATHS:
                copies = counts[path]
                asyncio.run(one_run(rho, n, policy, min(copies, 20_000), path, seed=99))  # warm-up
                runs = [asyncio.run(one_run(rho, n, policy, copies, path, seed=r)) for r in range(args.reps)]
                best = max(runs, key=lambda r: r["copies_per_s"])
                rows.append({"n": n, "policy": policy, "path": path, "copies": copies, **best})
                print(f"n={n} {policy:8s} {path:9s} {copies:>8d} copies  {best['copies_per_s']:>10,.0f} copies/s  "
                      f"{best['cpu_us_per_copy']:6.2f} cpu µs/copy  (pairs {best['bell_pairs']}, replans {best['replans']}, "
                      f"blocks {best['blocks']})", flush=True)
    floor = max((asyncio.run(driver_only(make_state(3), counts["default"])) for _ in range(args.reps)),
                key=lambda r: r["copies_per_s"])
    rows.append({"n": None, "policy": None, "path": "driver only", "copies": counts["default"], **floor})
    print(f"driver only (poisson_copies, nothing behind it): {floor['copies_per_s']:,.0f} copies/s, "
          f"{floor['cpu_us_per_copy']:.2f} cpu µs/copy")
    wall = {}
    for label, co, copies in (("per-copy", 0, counts["per-copy"]), ("default", None, counts["default"] // 2)):
        asyncio.run(wall_run(make_state(5), min(copies, 10_000), co, seed=99))  # warm-up
        wall[label] = max((asyncio.run(wall_run(make_state(5), copies, co, seed=r)) for r in range(args.reps)),
                          key=lambda r: r["copies_per_s"])
        rows.append({"n": 5, "policy": "fixed", "path": f"wall clock {label}", "copies": copies, **wall[label]})
        print(f"wall clock, flooding source, n=5 fixed, {label:8s}: {wall[label]['copies_per_s']:>10,.0f} copies/s  "
              f"{wall[label]['cpu_us_per_copy']:6.2f} cpu µs/copy  ({wall[label]['coalesced']:.0%} of copies coalesced)")
    rows += telescope_rows(args.reps, args.quick)
    print(f"after: {load()}")
    print()
    print("| n | policy | per-copy (coalesce=0) | default | blocks 4096 | default / per-copy | blocks / default |")
    print("|---|---|---|---|---|---|---|")
    for n in (3, 5, 8):
        for policy in ("adaptive", "fixed"):
            r = {x["path"]: x for x in rows if x["n"] == n and x["policy"] == policy}
            cells = [f"{r[p]['copies_per_s']:,.0f}/s · {r[p]['cpu_us_per_copy']:.2f} µs" for p in PATHS]
            sp = r["default"]["copies_per_s"] / r["per-copy"]["copies_per_s"]
            cpu_sp = r["per-copy"]["cpu_us_per_copy"] / r["default"]["cpu_us_per_copy"]
            bd = r["blocks"]["copies_per_s"] / r["default"]["copies_per_s"]
            print(f"| {n} | {policy} | {' | '.join(cells)} | {sp:.1f}× (cpu {cpu_sp:.1f}×) | {bd:.1f}× |")
    print(f"\ndriver only: {floor['copies_per_s']:,.0f}/s · {floor['cpu_us_per_copy']:.2f} µs "
          "(the ceiling of any pipeline fed one Copy object at a time)")
    w0, w1 = wall["per-copy"], wall["default"]
    print(f"wall clock, flooding source (n = 5, fixed): per-copy {w0['copies_per_s']:,.0f}/s · {w0['cpu_us_per_copy']:.2f} µs, "
          f"default {w1['copies_per_s']:,.0f}/s · {w1['cpu_us_per_copy']:.2f} µs ({w1['coalesced']:.0%} coalesced at the ingest): "
          f"{w1['copies_per_s'] / w0['copies_per_s']:.1f}×")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
