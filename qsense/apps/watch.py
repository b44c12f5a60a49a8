"""``qsense watch ENDPOINT``: a live terminal view of a running daemon's estimates.

Subscribes to the daemon's estimate PUB socket, first asks its snapshot
socket for the current body of every topic (the "clone" pattern the daemon
serves, so the view is complete at once), then follows live updates.  Shows
per estimator the values with their standard errors, the record count and its
rate, and the age of the newest record; the status line shows the daemon's
counters (batches, gaps, missing, duplicates, malformed, archive).  ``--json``
prints one JSON object per update instead (``{"topic": ..., "body": ...}``),
for scripts.

    qsense watch tcp://127.0.0.1:5556 --snapshot tcp://127.0.0.1:5557
    qsense watch tcp://127.0.0.1:5556 --snapshot tcp://127.0.0.1:5557 --json --count 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from typing import Any

import zmq

from qsense.streaming.transport import EstimateSubscriber

__all__ = ["add_arguments", "run", "render"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``qsense watch``."""
    p.add_argument("endpoint", help="the daemon's estimate PUB endpoint ([outputs.zmq] endpoint), e.g. tcp://127.0.0.1:5556")
    p.add_argument("--snapshot", metavar="EP", help="its snapshot endpoint ([outputs.zmq] snapshot_endpoint): the current "
                   "estimates at once, before any update")
    p.add_argument("--prefix", default="qsense", help="topic prefix of the daemon (default qsense)")
    p.add_argument("--json", action="store_true", help="one JSON object per update on stdout instead of the view")
    p.add_argument("--count", type=int, metavar="N", help="stop after N updates (snapshot bodies count)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="wait this long for the snapshot (default 5)")
    p.add_argument("--refresh", type=float, default=0.5, metavar="S", help="redraw the view at most this often (default 0.5)")


def _fmt(x: Any, width: int = 10) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—".rjust(width)
    return f"{x:{width}.5f}"


def render(state: dict[str, dict], rates: dict[str, float], now: float) -> str:
    """The text view of the latest bodies (``topic -> body``)."""
    lines = []
    status = next((b for t, b in state.items() if t.endswith("/status")), None)
    if status is not None:
        tot = status.get("totals", {})
        arch = status.get("archive") or {}
        line = (f"daemon {status.get('daemon', '?')}  up {status.get('uptime', 0):.0f}s  batches {tot.get('batches', 0)}  "
                f"records {tot.get('records', 0)}  gaps {tot.get('gaps', 0)} (missing {tot.get('missing', 0)})  "
                f"duplicates {tot.get('duplicates', 0)}  malformed {tot.get('malformed', 0)}")
        if arch:
            line += f"  archive stored {arch.get('stored', 0)} refused {arch.get('refused', 0)}"
        lines.append(line)
    for topic in sorted(t for t in state if "/estimates/" in t):
        body = state[topic]
        name = body.get("estimator", topic.rsplit("/", 1)[-1])
        age = now - body["last_record_time"] if body.get("last_record_time") else None
        head = f"{name} ({body.get('type', '?')})  count {body.get('count', 0)}"
        if topic in rates:
            head += f"  {rates[topic]:,.0f} records/s"
        if age is not None:
            head += f"  newest record {age:.1f}s old"
        lines.append("")
        lines.append(head)
        for label, e in (body.get("estimates") or {}).items():
            lines.append(f"  {label:<28} {_fmt(e.get('value'))} ± {_fmt(e.get('stderr'), 9)}")
    return "\n".join(lines)


async def _watch(args: argparse.Namespace) -> int:
    topics = [f"{args.prefix}/estimates/", f"{args.prefix}/status"]
    try:
        sub = EstimateSubscriber(args.endpoint, args.snapshot, topics)
    except zmq.ZMQError as exc:
        print(f"qsense watch: cannot connect to {args.endpoint}: {exc}", file=sys.stderr)
        return 2
    state: dict[str, dict] = {}
    last_count: dict[str, tuple[float, int]] = {}
    rates: dict[str, float] = {}
    seen = 0
    t_end = None if args.duration is None else time.monotonic() + args.duration
    tty = sys.stdout.isatty() and not args.json
    last_draw = 0.0

    def take(topic: str, body: dict) -> bool:
        nonlocal seen
        state[topic] = body
        now = time.monotonic()
        if "count" in body:
            prev = last_count.get(topic)
            if prev is not None and now > prev[0]:
                rates[topic] = (body["count"] - prev[1]) / (now - prev[0])
            last_count[topic] = (now, body["count"])
        if args.json:
            print(json.dumps({"topic": topic, "body": body}, allow_nan=False, default=str), flush=True)
        seen += 1
        return args.count is not None and seen >= args.count

    try:
        if args.snapshot:
            try:
                snap = await sub.snapshot(timeout=args.timeout)
            except (TimeoutError, asyncio.TimeoutError):
                print(f"qsense watch: no answer from the snapshot endpoint {args.snapshot} within {args.timeout:g} s "
                      "(wrong address, daemon not running, or CURVE refused us)", file=sys.stderr)
                return 2
            except ValueError as exc:
                print(f"qsense watch: {args.snapshot}: {exc}", file=sys.stderr)
                return 2
            for topic, body in sorted(snap.items()):
                if take(topic, body):
                    return 0
        while True:
            left = None if t_end is None else t_end - time.monotonic()
            if left is not None and left <= 0:
                return 0
            wait = args.refresh if left is None else min(args.refresh, left)
            try:
                topic, body = await sub.recv(timeout=wait)
            except (TimeoutError, asyncio.TimeoutError):
                topic = None
            except ValueError:  # an undecodable body from a foreign publisher: skip it
                continue
            if topic is not None and take(topic, body):
                return 0
            if not args.json and time.monotonic() - last_draw >= args.refresh:
                last_draw = time.monotonic()
                view = render(state, rates, time.time())
                if tty:
                    sys.stdout.write("\x1b[H\x1b[2J" + view + "\n")
                    sys.stdout.flush()
                elif topic is not None:
                    print(view + "\n", flush=True)
    finally:
        sub.close()


def run(args: argparse.Namespace) -> int:
    """``qsense watch``: exit 0 after --count/--duration or Ctrl-C, 2 when the daemon cannot be reached."""
    if args.count is not None and args.count < 1:
        print("qsense watch: --count must be at least 1", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_watch(args))
    except KeyboardInterrupt:
        return 0
