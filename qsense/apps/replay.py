"""``qsense replay ARCHIVE --to ENDPOINT``: send an archive's batches again, reliably, with their original numbering.

Reads the archive with :class:`qsense.drivers.replay.ArchiveReplaySource`
(filters ``--source``, ``--since``, ``--until``, ``--wires``, ``--kind`` as in
``qsense estimate``) and sends every selected batch through a reliable
:class:`~qsense.streaming.transport.RecordPublisher` (DEALER) under its
ORIGINAL (source, epoch, seq), so a daemon or ``qsense record`` that already
holds a batch recognises it as a duplicate (and acknowledges it without
storing it twice).  As fast as the receiver acknowledges by default, or paced
at ``--rate`` records per second.  Exits 0 only after every batch is
acknowledged (the flush); 1 if the receiver takes or acknowledges nothing for
``--ack-timeout`` seconds; 2 for bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
import time
from typing import Any

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``qsense replay``."""
    from .estimate import add_selection_arguments

    p.add_argument("archive", metavar="ARCHIVE", help="record archive directory (holds archive.json)")
    p.add_argument("--to", required=True, metavar="ENDPOINT",
                   help="ZeroMQ endpoint of the receiver (a daemon input or qsense record), e.g. tcp://127.0.0.1:5555")
    p.add_argument("--bind", action="store_true", help="bind ENDPOINT instead of connecting (the receiver connects)")
    p.add_argument("--rate", type=float, metavar="R",
                   help="records (snapshots or Bell shots) per second of wall time (default: as fast as acknowledged)")
    p.add_argument("--ack-timeout", type=float, default=30.0, metavar="S",
                   help="give up (exit 1) when the receiver takes no batch, or acknowledges not all of them, within S "
                        "seconds (default 30)")
    p.add_argument("--window", type=int, default=64, metavar="N", help="unacknowledged batches in flight at most (default 64)")
    add_selection_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")


async def _replay(args: argparse.Namespace, source: Any) -> int:
    import zmq
    from tqdm import tqdm

    from qsense.streaming.transport import RecordPublisher

    try:
        publisher = RecordPublisher(args.to, bind=args.bind, reliable=True, window=args.window)
    except zmq.ZMQError as exc:
        print(f"qsense replay: cannot {'bind' if args.bind else 'connect'} {args.to}: {exc}", file=sys.stderr)
        return 2
    disable = args.quiet or not sys.stderr.isatty()
    total = None
    if not disable and all(source.selection[k] is None for k in ("since", "until", "wires", "kind", "source")):
        total = sum(source.archive.summary()["records"].values())  # metadata columns only
    bar = tqdm(total=total, unit="rec", unit_scale=True, desc="replay", file=sys.stderr, disable=disable, leave=False)
    t0 = time.monotonic()
    try:
        sent = await source.publish(publisher, flush_timeout=args.ack_timeout, send_timeout=args.ack_timeout,
                                    on_batch=lambda e: bar.update(e.batch.T))
    except TimeoutError as exc:
        bar.close()
        what = str(exc) or f"no receiver took a batch within {args.ack_timeout:g} s"
        print(f"qsense replay: {args.to}: {what}", file=sys.stderr)
        return 1
    finally:
        bar.close()
        publisher.close()
    elapsed = time.monotonic() - t0
    if not args.quiet:
        problems = ", ".join(f"{k}={v}" for k, v in sorted(source.problems.items()) if v) or "none"
        print(f"qsense replay: {sent} batches ({source.records} records) from {args.archive} to {publisher.endpoint} in "
              f"{elapsed:.2f} s ({source.records / max(elapsed, 1e-9):.0f} records/s); all acknowledged (resent "
              f"{publisher.resent}); archive problems: {problems}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    """``qsense replay``: 0 once everything is acknowledged, 1 on a timeout, 2 on bad input."""
    from qsense.drivers.replay import ArchiveReplaySource
    from qsense.streaming.archive import ArchiveError

    from .estimate import UsageError, selection

    try:
        sel = selection(args)
        if args.rate is not None and not (args.rate > 0 and math.isfinite(args.rate)):
            raise UsageError("--rate must be a positive number of records per second")
        if not args.ack_timeout > 0:
            raise UsageError("--ack-timeout must be positive")
        if args.window < 1:
            raise UsageError("--window must be at least 1")
        source = ArchiveReplaySource(args.archive, rate=args.rate, **sel)
    except (UsageError, ArchiveError, ValueError) as exc:
        print(f"qsense replay: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_replay(args, source))
    except KeyboardInterrupt:
        print("qsense replay: interrupted; unacknowledged batches were not confirmed", file=sys.stderr)
        return 130
