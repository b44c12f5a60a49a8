"""``qsense reduce --from PUB[,SNAPSHOT] ...``: merge several daemons' estimator states into one estimate stream.

Follows each daemon's ``{prefix}/state/{name}`` topics (with its snapshot, so a
restarted reducer recovers at once), merges them in the order of the
``--from`` options and publishes the combined ``{prefix}/estimates/{name}``
(a single daemon's body) and ``{prefix}/status`` (each daemon, stale or not)
until SIGTERM/SIGINT (:mod:`qsense.streaming.reducer`, ``docs/sharding.md``).
Bad endpoints: one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from qsense.streaming.reducer import Reducer, ReducerError

__all__ = ["add_arguments", "run"]

_SCHEMES = ("tcp://", "ipc://", "inproc://")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``qsense reduce``."""
    parser.add_argument("--from", dest="sources", action="append", required=True, metavar="PUB[,SNAPSHOT]",
                        help="a daemon's estimates PUB endpoint and (recommended) its snapshot endpoint; repeat per daemon, "
                             "in merge order")
    parser.add_argument("--publish", required=True, metavar="EP", help="PUB endpoint to bind for the combined estimates")
    parser.add_argument("--snapshot", metavar="EP", help="snapshot ROUTER endpoint to bind (late joiners)")
    parser.add_argument("--prefix", default="qsense", help="topic prefix on both sides (default qsense)")
    parser.add_argument("--stale-after", type=float, default=10.0, metavar="S",
                        help="mark a daemon stale after S seconds without a state message (default 10)")
    parser.add_argument("--publish-interval", type=float, default=1.0, metavar="S",
                        help="seconds between publications (default 1)")
    parser.add_argument("--name", default="reducer", help="the 'daemon' field of the combined bodies (default reducer)")
    parser.add_argument("--ready-file", metavar="PATH",
                        help="once running, write a JSON file with the pid and the bound endpoints")


def _endpoint(text: str, what: str) -> str:
    text = text.strip()
    if not text.startswith(_SCHEMES):
        raise ValueError(f"{what} {text!r} is not a ZeroMQ endpoint (tcp://host:port, ipc://path)")
    return text


def _sources(values: list[str]) -> list[tuple[str, str | None]]:
    out = []
    for v in values:
        parts = v.split(",")
        if len(parts) > 2:
            raise ValueError(f"--from {v!r}: expected PUB[,SNAPSHOT]")
        out.append((_endpoint(parts[0], "--from"), _endpoint(parts[1], "--from snapshot") if len(parts) == 2 else None))
    return out


async def _serve(reducer: Reducer, ready_file: str | None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await reducer.start()
    except ReducerError as exc:
        print(f"qsense reduce: {exc}", file=sys.stderr)
        return 2
    if ready_file:
        tmp = Path(ready_file + ".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "endpoints": reducer.endpoints}))
        os.replace(tmp, ready_file)
    try:
        await stop.wait()
    finally:
        await reducer.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    """``qsense reduce``: exit 0 after SIGTERM/SIGINT, 2 on bad arguments or endpoints."""
    try:
        sources = _sources(args.sources)
        publish = _endpoint(args.publish, "--publish")
        snapshot = _endpoint(args.snapshot, "--snapshot") if args.snapshot else None
        if args.stale_after <= 0 or args.publish_interval <= 0:
            raise ValueError("--stale-after and --publish-interval must be positive")
        reducer = Reducer(sources, publish, snapshot, prefix=args.prefix, stale_after=args.stale_after,
                          publish_interval=args.publish_interval, name=args.name)
    except ValueError as exc:
        print(f"qsense reduce: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(reducer, args.ready_file))
