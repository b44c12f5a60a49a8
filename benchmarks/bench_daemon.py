"""End-to-end daemon throughput and latency over ZeroMQ, next to raw pyzmq on the same bytes.

One run measures, on the same simulated records (n = 16 qubits, batches of
``--batch`` random-Pauli snapshots, 1,000 random Pauli observables):

1. **estimator alone** -- ``ShadowEstimator.update`` on the batches in memory
   (the kernels' ceiling; no transport, no decode);
2. **decode alone** -- ``qsense.decode`` of the encoded frames (validation included);
3. **raw pyzmq** -- a sender process pushes the very same multipart messages
   (header + bases + outcomes + t frames, zero-copy) from a PUSH to a PULL socket
   that only receives them: the transport's ceiling on this machine;
4. **daemon, saturated** -- the same sender process, now a DEALER sending the
   data-plane envelope (flag frame ``b""``: no acknowledgement wanted, then the
   wire frames; see ``docs/reliable-delivery.md``), into an
   :class:`~qsense.streaming.daemon.EstimationDaemon` (ZeroMQ ROUTER input, the estimator,
   estimates published on PUB every ``--publish-interval`` s, checkpoints every
   2 s): sustained snapshots/s over the measuring window;
5. **daemon, paced** -- the sender paced at ``--paced-fraction`` of (4); latency
   from a record's send time to (a) being folded into the estimator and (b) the
   first published estimate that includes it;
6. **profile** -- a short cProfile of the daemon process under (4): where the time goes;
7. **publisher** -- :class:`~qsense.streaming.transport.RecordPublisher` in a sender
   process into a :class:`~qsense.streaming.transport.RecordReceiver` (acknowledging
   each batch as it decodes) that only receives: fire and forget
   (``reliable=False``) next to reliable delivery with copied frames (the default)
   and with zero-copy frames (``copy=False``), on the same batches; also the cost
   of the copy alone.

The sender runs in its own process (``multiprocessing`` spawn), so the two
cores are shared between sending and estimating, as they would be with a
driver on the same host.  Usage::

    python benchmarks/bench_daemon.py                 # full run (~1 min)
    python benchmarks/bench_daemon.py --quick         # smoke run
    python benchmarks/bench_daemon.py --transport ipc --kernel-threads 2
    python benchmarks/bench_daemon.py --only publisher  # part 7 alone
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import multiprocessing as mp
import os
import pstats
import statistics
import tempfile
import time

import numpy as np


# -- data ------------------------------------------------------------------------------------------
def random_paulis(rng: np.random.Generator, n: int, M: int, wmin: int, wmax: int) -> list[str]:
    """M distinct random Pauli words of weight wmin..wmax on n qubits (sparse strings)."""
    out: set[str] = set()
    while len(out) < M:
        k = int(rng.integers(wmin, wmax + 1))
        qs = sorted(rng.choice(n, k, replace=False))
        out.add(" ".join(f"{'XYZ'[rng.integers(3)]}{q}" for q in qs))
    return sorted(out)


def make_pool(n: int, T: int, size: int, seed: int):
    from qsense import ShadowBatch

    rng = np.random.default_rng(seed)
    return [ShadowBatch(rng.integers(0, 3, (T, n), dtype=np.uint8), rng.integers(0, 2, (T, n), dtype=np.uint8),
                        t=np.zeros(T)) for _ in range(size)]


# -- the sender process ------------------------------------------------------------------------------
def sender_main(endpoint: str, n: int, T: int, seconds: float, rate: float, conn, envelope: bool = True, wire: int = 2) -> None:
    """Send encoded batches as fast as backpressure allows (or at ``rate`` snapshots/s).

    ``envelope``: a DEALER sending ``[b"", *wire frames]`` (the daemon's input, no
    acknowledgement wanted); otherwise a PUSH sending the bare wire frames (the
    raw pyzmq baseline).  ``wire``: schema version of the frames (2: bit planes,
    what :class:`~qsense.streaming.transport.RecordPublisher` sends; 1: uint8 tables).
    Every batch carries its send time as timestamps, for the latency measurement."""
    import msgspec
    import zmq

    from qsense.streaming.wire import encode

    pool = make_pool(n, T, 4, seed=1)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER if envelope else zmq.PUSH)
    head = [b""] if envelope else []
    sock.sndhwm = 16
    sock.immediate = True
    sock.connect(endpoint)
    conn.send("ready")
    conn.recv()  # go
    t_arrays = [np.empty(T) for _ in range(32)]  # rotated: a frame may still be in flight zero-copy
    sent = seq = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if rate > 0:
            due = start + sent / rate
            if due > now:
                time.sleep(min(due - now, 0.01))
                continue
        b = pool[seq % len(pool)]
        frames = encode(b, source="bench", seq=seq, epoch=12345, packed=wire == 2)
        # send time: the daemon reports the newest record time it folded in
        if wire == 2:  # regular timestamps travel as header floats t = t0 + dt * i
            header = msgspec.msgpack.decode(frames[0])
            header["t0"], header["dt"] = time.time(), 0.0
            frames[0] = msgspec.msgpack.encode(header)
        else:
            t = t_arrays[seq % len(t_arrays)]
            t.fill(time.time())
            frames[3] = memoryview(t).cast("B")
        sock.send_multipart(head + frames, copy=False)
        sent += T
        seq += 1
    sock.close(linger=10000)
    ctx.term()
    conn.send({"sent": sent, "batches": seq, "seconds": time.perf_counter() - start, "cpu": time.process_time()})


def start_sender(endpoint: str, args, seconds: float, rate: float = 0.0, envelope: bool = True):
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=sender_main, args=(endpoint, args.n, args.batch, seconds, rate, child, envelope, args.wire),
                    daemon=True)
    p.start()
    assert parent.recv() == "ready"
    return p, parent


# -- parts -------------------------------------------------------------------------------------------
def bench_estimator(args, words) -> dict:
    from qsense import ShadowEstimator

    pool = make_pool(args.n, args.batch, 4, seed=1)
    est = ShadowEstimator(words, groups=args.groups)
    est.update(pool[0])
    rates, cpu_rates = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        k = 0
        while time.perf_counter() - t0 < 1.0:
            est.update(pool[k % len(pool)])
            k += 1
        rates.append(k * args.batch / (time.perf_counter() - t0))
        cpu_rates.append(k * args.batch / (time.process_time() - c0))
    return {"snapshots_per_s": statistics.median(rates), "all": rates, "snapshots_per_cpu_s": statistics.median(cpu_rates)}


def bench_decode(args) -> dict:
    import qsense

    pool = make_pool(args.n, args.batch, 4, seed=1)
    frames = [[bytes(f) for f in qsense.encode(b, packed=args.wire == 2)] for b in pool]
    t0 = time.perf_counter()
    k = 0
    while time.perf_counter() - t0 < 1.0:
        qsense.decode(frames[k % len(frames)])
        k += 1
    dt = time.perf_counter() - t0
    return {"snapshots_per_s": k * args.batch / dt, "us_per_batch": dt / k * 1e6}


def bench_raw(args, endpoint: str) -> dict:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.rcvhwm = 16
    sock.bind(endpoint)
    ep = sock.last_endpoint.decode()
    proc, conn = start_sender(ep, args, args.seconds, envelope=False)
    conn.send("go")
    got = nbytes = 0
    warm = args.seconds * 0.2
    t_start = time.perf_counter()
    t0 = r0 = None
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while True:
        if not poller.poll(2000):
            break
        frames = sock.recv_multipart(copy=False)
        got += args.batch
        nbytes += sum(len(f) for f in frames)
        if t0 is None and time.perf_counter() - t_start > warm:
            t0, r0, b0 = time.perf_counter(), got, nbytes
        t_last = time.perf_counter()
    res = conn.recv()
    proc.join(10)
    sock.close(0)
    ctx.term()
    dt = t_last - t0
    return {"snapshots_per_s": (got - r0) / dt, "GB_per_s": (nbytes - b0) / dt / 1e9, "received": got, "sent": res["sent"]}


# -- part 7: the publisher, reliable or not ------------------------------------------------------------
PUBLISHER_MODES = {
    "fire and forget (reliable=False)": {"reliable": False},
    "reliable, copied frames (default)": {"reliable": True},
    "reliable, zero-copy (copy=False)": {"reliable": True, "copy": False},
}


def publisher_main(endpoint: str, n: int, T: int, seconds: float, options: dict, conn) -> None:
    """A RecordPublisher sending the pool's batches for ``seconds``, then flushing."""
    from qsense.streaming.transport import RecordPublisher

    pool = make_pool(n, T, 4, seed=1)

    async def run() -> dict:
        pub = RecordPublisher(endpoint, source="bench", hwm=16, **options)
        conn.send("ready")
        await asyncio.to_thread(conn.recv)  # go
        start = time.perf_counter()
        c0 = time.process_time()
        k = 0
        while time.perf_counter() - start < seconds:
            await pub.send(pool[k % len(pool)])
            k += 1
        await pub.flush(timeout=30)  # a reliable publisher is done when everything is acknowledged
        out = {"batches": k, "seconds": time.perf_counter() - start, "cpu": time.process_time() - c0,
               "acked": pub.acked, "resent": pub.resent}
        pub.close()
        return out

    conn.send(asyncio.run(run()))


async def _receive_from_publisher(args, options: dict) -> dict:
    from qsense.streaming.transport import RecordReceiver

    rx = RecordReceiver("tcp://127.0.0.1:*" if args.transport == "tcp" else f"ipc://{tempfile.mkdtemp()}/pub.sock", hwm=16)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=publisher_main, args=(rx.endpoint, args.n, args.batch, args.seconds, options, child), daemon=True)
    proc.start()
    assert await asyncio.to_thread(parent.recv) == "ready"
    parent.send("go")
    warm = args.seconds * 0.2
    got = 0
    t_start = time.perf_counter()
    t0 = r0 = None
    c0 = time.process_time()
    while True:
        try:
            msg = await asyncio.wait_for(rx.recv(), 1.0)  # decodes, validates and acknowledges
        except asyncio.TimeoutError:
            break  # the sender stopped (and, reliable, flushed)
        got += msg.batch.T
        if t0 is None and time.perf_counter() - t_start > warm:
            t0, r0 = time.perf_counter(), got
        t_last = time.perf_counter()
    cpu = time.process_time() - c0
    res = await asyncio.to_thread(parent.recv)
    await asyncio.to_thread(proc.join, 10)
    rx.close()
    return {"snapshots_per_s": (got - r0) / (t_last - t0), "received": got, "sent": res["batches"] * args.batch,
            "sender_snapshots_per_cpu_s": res["batches"] * args.batch / max(res["cpu"], 1e-9),
            "receiver_snapshots_per_cpu_s": got / max(cpu, 1e-9), "acked": res["acked"], "resent": res["resent"]}


def bench_copy(args) -> dict:
    """What ``copy=True`` costs per batch: the array frames copied into new ``bytes``, with
    64 batches kept (the default window), as the publisher does."""
    from qsense.streaming.wire import encode

    out = {}
    for wire in (2, 1):  # the publisher sends v2; v1 (uint8 tables) for comparison
        frames = encode(make_pool(args.n, args.batch, 1, seed=1)[0], source="bench", seq=0, packed=wire == 2)
        arrays = [f for f in frames if not isinstance(f, bytes)]
        size = sum(memoryview(f).nbytes for f in arrays)
        times, kept = [], []
        for _ in range(400):
            t0 = time.perf_counter()
            kept.append([bytes(memoryview(f)) for f in arrays])
            times.append(time.perf_counter() - t0)
            if len(kept) > 64:  # the oldest is acknowledged and let go
                kept.pop(0)
        t = statistics.median(times)
        out[f"v{wire}"] = {"bytes": size, "us_per_batch": t * 1e6, "GB_per_s": size / t / 1e9, "ns_per_snapshot": t / args.batch * 1e9}
    return out


def bench_publisher(args) -> dict:
    """Each mode ``--repeat`` times, interleaved (a shared machine's load drifts); the median run's numbers."""
    out: dict = {"copy": bench_copy(args)}
    runs: dict[str, list[dict]] = {label: [] for label in PUBLISHER_MODES}
    for _ in range(args.repeat):
        for label, options in PUBLISHER_MODES.items():
            runs[label].append(asyncio.run(_receive_from_publisher(args, options)))
    for label, rs in runs.items():
        rs.sort(key=lambda r: r["snapshots_per_s"])
        out[label] = {**rs[len(rs) // 2], "all": [r["snapshots_per_s"] for r in rs]}
    return out


class _Probe:
    """Latency bookkeeping inside the daemon process."""

    def __init__(self) -> None:
        self.ingest_lat: list[float] = []
        self.publish_lat: list[float] = []


def _daemon_config(args, words, tmp: str, endpoint: str) -> dict:
    return {
        "daemon": {"name": "bench", "publish_interval": args.publish_interval, "drain_timeout": 1.0},
        "inputs": {"zmq": [{"name": "in", "endpoint": endpoint, "hwm": 16}]},
        "estimators": [{"name": "obs", "type": "shadow", "observables": words, "groups": args.groups, "wires": args.n}],
        "outputs": {"zmq": {"endpoint": "tcp://127.0.0.1:*", "snapshot_endpoint": "tcp://127.0.0.1:*", "topic_prefix": "b"}},
        "checkpoint": {"path": os.path.join(tmp, "bench.ckpt"), "period": 2.0},
    }


async def _run_daemon(args, words, endpoint: str, seconds: float, rate: float, profile: bool) -> dict:
    from qsense.streaming.daemon import EstimationDaemon
    from qsense.streaming.transport import EstimateSubscriber

    probe = _Probe()

    class ProbedDaemon(EstimationDaemon):
        def ingest_many(self, items):  # measuring hook: when each batch has been folded in
            n = super().ingest_many(items)
            now = time.time()
            probe.ingest_lat.extend(now - float(b.t[-1]) for b, _ in items if b.T)
            return n

    with tempfile.TemporaryDirectory() as tmp:
        d = ProbedDaemon(_daemon_config(args, words, tmp, endpoint))
        await d.start()
        sub = EstimateSubscriber(d.endpoints["estimates"], None, ["b/estimates/obs"])

        async def listen() -> None:
            while True:
                _, body = await sub.recv()
                if body.get("last_record_time"):
                    probe.publish_lat.append(time.time() - body["last_record_time"])

        lt = asyncio.create_task(listen())
        proc, conn = start_sender(d.endpoints["input.in"], args, seconds, rate)
        conn.send("go")
        prof = cProfile.Profile() if profile else None
        warm = seconds * 0.2
        await asyncio.sleep(warm)
        r0, t0, c0 = d.stats()["totals"]["records"], time.perf_counter(), time.process_time()
        u0 = d.metrics.update_seconds.labels("obs")._sum.get()
        if prof:
            prof.enable()
        # 1-second windows: on a shared machine the rate moves with other people's jobs
        windows = []
        t_end = t0 + seconds - warm - 0.05
        rw, tw = r0, t0
        while (now := time.perf_counter()) < t_end:
            await asyncio.sleep(min(1.0, t_end - now))
            r, t = d.stats()["totals"]["records"], time.perf_counter()
            if t - tw > 0.5:
                windows.append((r - rw) / (t - tw))
            rw, tw = r, t
        if prof:
            prof.disable()
        r1, t1, c1 = d.stats()["totals"]["records"], time.perf_counter(), time.process_time()
        u1 = d.metrics.update_seconds.labels("obs")._sum.get()
        res = await asyncio.to_thread(conn.recv)
        await asyncio.to_thread(proc.join, 10)
        lt.cancel()
        sub.close()
        await d.stop()
        stats = d.stats()
    out = {
        "snapshots_per_s": (r1 - r0) / (t1 - t0),
        "window_rates": windows,
        # CPU time of the daemon process (all its threads) per snapshot: independent of
        # what else runs on a shared machine, unlike the wall-clock rate
        "snapshots_per_cpu_s": (r1 - r0) / max(c1 - c0, 1e-9),
        "sender_snapshots_per_cpu_s": res["sent"] / max(res["cpu"], 1e-9),
        "estimator_busy_fraction": (u1 - u0) / (t1 - t0),
        "sent": res["sent"], "received": stats["totals"]["records"], "malformed": stats["totals"]["malformed"],
        "gaps": stats["totals"]["gaps"], "checkpoints": stats["checkpoint"]["written"],
    }
    if probe.ingest_lat:
        lat = np.array(probe.ingest_lat[len(probe.ingest_lat) // 5:])
        out["ingest_latency_ms"] = {q: float(np.percentile(lat, p) * 1e3) for q, p in (("p50", 50), ("p90", 90), ("max", 100))}
    if probe.publish_lat:
        lat = np.array(probe.publish_lat[len(probe.publish_lat) // 5:])
        out["publish_latency_ms"] = {q: float(np.percentile(lat, p) * 1e3) for q, p in (("p50", 50), ("p90", 90), ("max", 100))}
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(18)
        out["profile"] = s.getvalue()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--observables", type=int, default=1000)
    ap.add_argument("--weight", type=int, nargs=2, default=(2, 2), metavar=("MIN", "MAX"),
                    help="Pauli weights of the random observables (default 2 2, as benchmarks/bench_estimators.py)")
    ap.add_argument("--groups", type=int, default=1)
    ap.add_argument("--batch", type=int, default=65536, help="snapshots per ZeroMQ message")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each streaming measurement")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--transport", choices=["tcp", "ipc"], default="tcp")
    ap.add_argument("--kernel-threads", type=int, default=1, help="qsense.estimators.kernels.set_threads for the daemon")
    ap.add_argument("--publish-interval", type=float, default=0.1)
    ap.add_argument("--paced-fraction", type=float, default=0.5)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--quick", action="store_true", help="short smoke run")
    ap.add_argument("--only", choices=["publisher"], help="run only this part")
    ap.add_argument("--wire", type=int, choices=[1, 2], default=2,
                    help="wire schema of the raw and daemon senders (2: bit planes, the default encoding; 1: uint8 tables)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.repeat, args.observables = 2.0, 1, min(args.observables, 200)

    from qsense.estimators import kernels

    kernels.set_threads(args.kernel_threads)
    words = random_paulis(np.random.default_rng(0), args.n, args.observables, *args.weight)
    tmpdir = tempfile.mkdtemp(prefix="qsense-bench-")

    def endpoint(tag: str) -> str:
        return "tcp://127.0.0.1:*" if args.transport == "tcp" else f"ipc://{tmpdir}/{tag}.sock"

    load = os.getloadavg()
    print(f"qsense daemon benchmark: n={args.n}, {args.observables} observables (weight {args.weight[0]}-{args.weight[1]}), "
          f"groups={args.groups}, batches of {args.batch}, {args.transport}, wire v{args.wire}, kernel threads={args.kernel_threads}, "
          f"{os.cpu_count()} CPUs, load average before {load[0]:.2f}")
    results: dict = {"config": vars(args), "loadavg_before": load}
    if args.only != "publisher":
        run_daemon_parts(args, words, endpoint, results)
    results["publisher"] = pub = bench_publisher(args)
    c = pub["copy"]
    print(f"  publisher -> receiver (receive, decode, acknowledge), {args.transport}:")
    for label in PUBLISHER_MODES:
        r = pub[label]
        print(f"    {label:36s} {r['snapshots_per_s'] / 1e6:8.2f} M snapshots/s  (runs {', '.join(f'{x / 1e6:.1f}' for x in r['all'])}; "
              f"sender {r['sender_snapshots_per_cpu_s'] / 1e6:.1f} M per CPU-s, receiver "
              f"{r['receiver_snapshots_per_cpu_s'] / 1e6:.1f} M per CPU-s; acked {r['acked']}, resent {r['resent']}, "
              f"received {r['received']} of {r['sent']})")
    for wire, r in c.items():
        print(f"    copying a batch's array frames (wire {wire}, {r['bytes'] / 1e6:.2f} MB): {r['us_per_batch']:.0f} us "
              f"({r['GB_per_s']:.1f} GB/s, {r['ns_per_snapshot']:.2f} ns per snapshot)")
    results["loadavg_after"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


def run_daemon_parts(args, words, endpoint, results: dict) -> None:
    """Parts 1-6."""
    results["estimator"] = bench_estimator(args, words)
    print(f"  estimator alone       {results['estimator']['snapshots_per_s'] / 1e6:8.2f} M snapshots/s  "
          f"(runs: {', '.join(f'{r / 1e6:.2f}' for r in results['estimator']['all'])}; "
          f"{results['estimator']['snapshots_per_cpu_s'] / 1e6:.2f} M per CPU-second)")
    results["decode"] = bench_decode(args)
    print(f"  decode alone          {results['decode']['snapshots_per_s'] / 1e6:8.2f} M snapshots/s  "
          f"({results['decode']['us_per_batch']:.0f} us per batch)")
    results["raw"] = bench_raw(args, endpoint("raw"))
    print(f"  raw pyzmq PUSH/PULL   {results['raw']['snapshots_per_s'] / 1e6:8.2f} M snapshots/s  "
          f"({results['raw']['GB_per_s']:.2f} GB/s of the same frames)")
    sat = asyncio.run(_run_daemon(args, words, endpoint("sat"), args.seconds, 0.0, False))
    results["daemon"] = sat
    print(f"  daemon, saturated     {sat['snapshots_per_s'] / 1e6:8.2f} M snapshots/s  "
          f"(estimator busy {100 * sat['estimator_busy_fraction']:.0f}% of the time; sent {sat['sent']}, "
          f"folded {sat['received']}, malformed {sat['malformed']}, gaps {sat['gaps']}, checkpoints {sat['checkpoints']})")
    w = sorted(sat["window_rates"])
    if w:
        print(f"      1-s windows: median {statistics.median(w) / 1e6:.2f}, best {w[-1] / 1e6:.2f}, worst {w[0] / 1e6:.2f} M snapshots/s")
    print(f"      per CPU-second: daemon process {sat['snapshots_per_cpu_s'] / 1e6:.2f} M snapshots, "
          f"sender process {sat['sender_snapshots_per_cpu_s'] / 1e6:.2f} M snapshots")
    if "ingest_latency_ms" in sat:
        print(f"      latency under saturation: record->folded p50 {sat['ingest_latency_ms']['p50']:.0f} ms "
              f"(queueing in the HWM buffers)")
    rate = args.paced_fraction * sat["snapshots_per_s"]
    paced = asyncio.run(_run_daemon(args, words, endpoint("paced"), args.seconds, rate, False))
    results["paced"] = {"rate": rate, **paced}
    il, pl = paced.get("ingest_latency_ms", {}), paced.get("publish_latency_ms", {})
    print(f"  daemon, paced at {rate / 1e6:.2f} M/s: record->folded p50 {il.get('p50', float('nan')):.1f} ms, "
          f"p90 {il.get('p90', float('nan')):.1f} ms, max {il.get('max', float('nan')):.1f} ms; "
          f"record->published estimate p50 {pl.get('p50', float('nan')):.1f} ms, p90 {pl.get('p90', float('nan')):.1f} ms "
          f"(publish interval {args.publish_interval * 1e3:.0f} ms)")
    if not args.no_profile:
        prof = asyncio.run(_run_daemon(args, words, endpoint("prof"), min(args.seconds, 4.0), 0.0, True))
        results["profile"] = prof["profile"]
        print("\n  where the daemon process spends its time (cProfile, saturated, by own time):")
        lines = prof["profile"].splitlines()
        start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
        print("\n".join("    " + line for line in lines[start : start + 19]))


if __name__ == "__main__":
    main()
