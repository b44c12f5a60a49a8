"""``qsense record --from ENDPOINT ARCHIVE``: store every batch received, durably, then acknowledge it.

A recorder without estimators: a :class:`~qsense.streaming.transport.RecordReceiver`
(ROUTER, ``auto_ack=False``) binds ENDPOINT (or connects to it with
``--connect``), and every valid batch goes into an
:class:`~qsense.streaming.archive.ArchiveWriter` under its ORIGINAL (source,
epoch, seq).  Group commit: what arrives within ``--commit-interval`` seconds
shares one fsync, and only after that fsync are those batches acknowledged,
so a reliable sender (:class:`~qsense.streaming.transport.RecordPublisher`,
``qsense replay``) holds every batch until it is on disk.  A batch the
archive already holds (a resend, a second replay) is not stored again but is
acknowledged (once the archive is durable up to there) and counted as a
duplicate.  Malformed messages are counted by the receiver, never stored.

A full archive (``--capacity-mb``, a full disk: :class:`ArchiveFull`) or a
failing write refuses the batches: they are NOT acknowledged, an error is
logged (throttled), and the recorder keeps running -- senders keep their
batches and resend them, so nothing is lost while someone makes room.

Stops on SIGINT/SIGTERM, after ``--duration`` seconds or ``--max-batches``
valid batches: a final fsync, the last acknowledgements, then the archive is
closed (its open segment sealed) and the exit status is 0.  Bad input
(endpoint in use or invalid, an archive refused) is one line on stderr and
exit status 2.  A status line goes to stderr every ``--status-interval`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run", "Recorder"]

log = logging.getLogger(__name__)

#: Batches stored but not yet durable before receiving waits for the commit (back-pressure).
MAX_PENDING = 4096
#: Messages taken from the socket per admission (one archive message each time).
MAX_GROUP_MESSAGES = 256
#: ... or records.
MAX_GROUP_RECORDS = 1 << 20
#: How long the receiving socket stays open after the last acknowledgements, so they leave before it closes.
ACK_GRACE = 0.3


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``qsense record``."""
    p.add_argument("--from", dest="endpoint", required=True, metavar="ENDPOINT",
                   help="ZeroMQ endpoint to receive record batches on, e.g. tcp://127.0.0.1:5555 (port * picks a free one)")
    p.add_argument("archive", metavar="ARCHIVE", type=Path, help="record archive directory (created if absent or empty)")
    p.add_argument("--connect", action="store_true", help="connect to ENDPOINT instead of binding it (the sender binds)")
    p.add_argument("--commit-interval", type=float, default=0.05, metavar="S",
                   help="group commit: one fsync, then the acknowledgements, per S seconds (default 0.05; 0: per message)")
    p.add_argument("--segment-mb", type=float, default=256.0, metavar="MB", help="rotate the open segment past this size (default 256)")
    p.add_argument("--segment-seconds", type=float, default=3600.0, metavar="S",
                   help="rotate the open segment past this age (default 3600)")
    p.add_argument("--capacity-mb", type=float, metavar="MB",
                   help="refuse (and stop acknowledging) batches past this archive size (default: until the disk is full)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--max-batches", type=int, metavar="N", help="stop after N valid batches (stored, duplicate or refused)")
    p.add_argument("--status-interval", type=float, default=10.0, metavar="S",
                   help="one status line on stderr every S seconds (default 10; 0: none)")
    p.add_argument("--ready-file", metavar="PATH",
                   help="once receiving, write a JSON file with the pid, the bound endpoint and the archive (for scripts/tests)")
    p.add_argument("--quiet", action="store_true", help="no status lines (errors and the final summary still go to stderr)")


class Recorder:
    """The receive -> append -> group commit (fsync) -> acknowledge loop of ``qsense record``.

    ``rx``: a :class:`~qsense.streaming.transport.RecordReceiver` with
    ``auto_ack=False``; ``writer``: an :class:`~qsense.streaming.archive.ArchiveWriter`.
    Counters: :attr:`counts` (``received``, ``stored``, ``stored_records``,
    ``duplicates``, ``refused``, ``acks``, ``commits``, ``commit_failures``).
    """

    def __init__(self, rx: Any, writer: Any, *, commit_interval: float = 0.05, max_batches: int | None = None) -> None:
        from qsense.streaming.transport import ThrottledLog

        self.rx = rx
        self.writer = writer
        self.commit_interval = float(commit_interval)
        self.max_batches = max_batches
        self.counts = {"received": 0, "stored": 0, "stored_records": 0, "duplicates": 0, "refused": 0, "acks": 0,
                       "commits": 0, "commit_failures": 0}
        self.stop = asyncio.Event()
        # (position that must be durable, peer, key): acknowledged once the archive is durable up to the position
        self._pending: list[tuple[int, bytes, tuple[str, int, int]]] = []
        self._wanted = asyncio.Event()
        self._committed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._seal: asyncio.Task | None = None
        self._log = ThrottledLog(log)

    # -- receiving ---------------------------------------------------------------------------
    def admit(self, msgs: list[Any]) -> int:
        """Store the new batches of ``msgs`` (one archive message), queue their acknowledgements; returns how many were stored."""
        from qsense.streaming.archive import ArchiveError, ArchiveFull

        w = self.writer
        new, seen = [], set()
        for m in msgs:
            key = m.key
            self.counts["received"] += 1
            if key in seen or w.contains(*key):
                self.counts["duplicates"] += 1
                if m.wants_ack:  # stored already, maybe not durable yet: acknowledge with what is appended now
                    self._pending.append((w.next_pos - 1, m.peer, key))
                continue
            seen.add(key)
            new.append(m)
        if new:
            try:
                positions = w.append_fitting([(m.batch, m.epoch) for m in new])
            except ArchiveError as exc:
                # not stored, so not acknowledged: the senders keep these batches and resend them
                self.counts["refused"] += len(new)
                what = "archive full" if isinstance(exc, ArchiveFull) else "archive write failed"
                self._log.log(logging.ERROR, "refused", "%s (%s): %d batch(es) refused and not acknowledged; senders keep "
                              "and resend them", what, exc, len(new))
            else:
                if len(positions) < len(new):  # the archive filled up inside this group: the rest is refused
                    self.counts["refused"] += len(new) - len(positions)
                    self._log.log(logging.ERROR, "refused", "archive full: stored %d of %d batch(es); the rest are not "
                                  "acknowledged (senders keep and resend them)", len(positions), len(new))
                    new = new[: len(positions)]
                self.counts["stored"] += len(new)
                self.counts["stored_records"] += sum(m.batch.T for m in new)
                self._pending.extend((pos, m.peer, m.key) for m, pos in zip(new, positions) if m.wants_ack)
        if self._pending or new:
            self._wanted.set()  # unacknowledged senders' batches get their fsync too
        if self.max_batches is not None and self.counts["received"] >= self.max_batches:
            self.stop.set()
        return len(new)

    async def receive(self) -> None:
        """Receive until :attr:`stop`; each group of queued messages becomes one archive message."""
        rx = self.rx
        while not self.stop.is_set():
            while len(self._pending) >= MAX_PENDING:  # back-pressure: wait for the fsync to catch up
                self._wanted.set()
                await self._committed.wait()
            msg = await rx.recv()
            msgs, records = [msg], msg.batch.T
            # recv_nowait never suspends, so nothing can cancel us between receiving and storing
            while len(msgs) < MAX_GROUP_MESSAGES and records < MAX_GROUP_RECORDS and (more := await rx.recv_nowait()) is not None:
                msgs.append(more)
                records += more.batch.T
            self.admit(msgs)
            await asyncio.sleep(0)

    # -- committing --------------------------------------------------------------------------
    async def commit(self) -> None:
        """One group commit: fsync what is appended, then acknowledge exactly what that made durable."""
        from qsense.streaming.archive import ArchiveError

        w = self.writer
        async with self._lock:
            if not self._pending and w.durable_pos >= w.next_pos - 1:
                return
            ticket = w.begin_sync()
            try:
                await asyncio.to_thread(w.run_sync, ticket)
            except ArchiveError as exc:
                self.counts["commit_failures"] += 1
                self._log.log(logging.ERROR, "fsync", "archive commit failed (%s); nothing acknowledged, retrying", exc)
                await asyncio.sleep(0.5)
                self._wanted.set()
                return
            durable = w.end_sync(ticket)
            done = [p for p in self._pending if p[0] <= durable]
            self._pending = [p for p in self._pending if p[0] > durable]
            self._ack(done)
            self.counts["commits"] += 1
            self._committed.set()
            self._committed = asyncio.Event()
        if w.maybe_rotate() or w.pending_seals:
            self._schedule_seal()

    def _ack(self, done: list[tuple[int, bytes, tuple[str, int, int]]]) -> None:
        by_peer: dict[bytes, list] = {}
        for _, peer, key in done:
            by_peer.setdefault(peer, []).append(key)
        for peer, keys in by_peer.items():
            # ack() never raises: an acknowledgement that cannot leave is counted, and the sender resends
            self.rx.ack(peer, keys)
            self.counts["acks"] += len(keys)

    def _schedule_seal(self) -> None:
        if self._seal is not None and not self._seal.done():
            return

        async def seal() -> None:
            try:
                await asyncio.to_thread(self.writer.seal_pending)
            except Exception:  # the .arrows file stays readable; sealed again at close
                log.exception("sealing an archive segment failed")

        self._seal = asyncio.get_running_loop().create_task(seal(), name="qsense-record-seal")

    async def commit_loop(self) -> None:
        """Group commits: after the first pending batch, wait ``commit_interval``, then commit everything."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            if self.commit_interval > 0:
                await asyncio.sleep(self.commit_interval)
            await self.commit()

    async def finish(self) -> None:
        """Final commit and acknowledgements (the caller then closes the writer and the receiver)."""
        await self.commit()
        if self._seal is not None:
            await asyncio.gather(self._seal, return_exceptions=True)

    def status(self, rate: float) -> str:
        c = self.counts
        return (f"qsense record: {c['stored']} batches stored ({c['stored_records']} records, {rate:.0f} records/s), "
                f"{c['duplicates']} duplicates, {self.rx.malformed_total} malformed, {c['refused']} refused")


async def _status_loop(rec: Recorder, every: float) -> None:
    last_t, last_n = time.monotonic(), 0
    while True:
        await asyncio.sleep(every)
        now, n = time.monotonic(), rec.counts["stored_records"]
        print(rec.status((n - last_n) / max(now - last_t, 1e-9)), file=sys.stderr, flush=True)
        last_t, last_n = now, n


async def _record(args: argparse.Namespace) -> int:
    import zmq

    from qsense.streaming.archive import ArchiveError, ArchiveWriter
    from qsense.streaming.transport import RecordReceiver

    try:
        rx = RecordReceiver(args.endpoint, bind=not args.connect, auto_ack=False, name="record")
    except zmq.ZMQError as exc:
        print(f"qsense record: cannot {'connect to' if args.connect else 'bind'} {args.endpoint}: {exc}", file=sys.stderr)
        return 2
    try:
        writer = await asyncio.to_thread(
            ArchiveWriter, args.archive, segment_bytes=int(args.segment_mb * (1 << 20)), segment_seconds=args.segment_seconds,
            capacity_bytes=None if args.capacity_mb is None else int(args.capacity_mb * (1 << 20)))
    except (ArchiveError, OSError) as exc:
        rx.close()
        print(f"qsense record: {exc}", file=sys.stderr)
        return 2
    rec = Recorder(rx, writer, commit_interval=args.commit_interval, max_batches=args.max_batches)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, rec.stop.set)
    tasks = [loop.create_task(rec.receive(), name="qsense-record-rx"), loop.create_task(rec.commit_loop(), name="qsense-record-commit")]
    if args.status_interval > 0 and not args.quiet:
        tasks.append(loop.create_task(_status_loop(rec, args.status_interval), name="qsense-record-status"))
    log.info("recording %s into %s", rx.endpoint, args.archive)
    if args.ready_file:
        tmp = Path(args.ready_file + ".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "endpoint": rx.endpoint, "archive": str(args.archive)}))
        os.replace(tmp, args.ready_file)
    t0 = time.monotonic()
    failed: BaseException | None = None
    try:
        stop = loop.create_task(rec.stop.wait())
        await asyncio.wait([stop, *tasks], timeout=args.duration, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:  # a task that ended by itself failed: report it after the clean shutdown
            if t.done() and not t.cancelled() and t.exception() is not None:
                failed = t.exception()
        stop.cancel()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await rec.finish()
            await asyncio.sleep(ACK_GRACE if rec.counts["acks"] else 0)  # let the last acknowledgements leave
            await asyncio.to_thread(writer.close)
        finally:
            rx.close()
    c = rec.counts
    elapsed = time.monotonic() - t0
    print(f"qsense record: stopped after {elapsed:.1f} s: {c['stored']} batches ({c['stored_records']} records) stored into "
          f"{args.archive}, {c['duplicates']} duplicates, {rx.malformed_total} malformed, {c['refused']} refused, "
          f"{c['acks']} acknowledged", file=sys.stderr)
    if failed is not None:
        log.error("recorder failed: %s: %s", type(failed).__name__, failed)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    """``qsense record``: 0 after a clean stop, 2 on bad input (one line on stderr)."""
    checks = [
        (args.commit_interval >= 0 and math.isfinite(args.commit_interval) and args.commit_interval <= 10,
         "--commit-interval must lie in [0, 10] seconds"),
        (args.segment_mb > 0 and args.segment_seconds > 0, "--segment-mb and --segment-seconds must be positive"),
        (args.capacity_mb is None or args.capacity_mb > 0, "--capacity-mb must be positive"),
        (args.duration is None or args.duration > 0, "--duration must be positive"),
        (args.max_batches is None or args.max_batches > 0, "--max-batches must be positive"),
        (args.status_interval >= 0, "--status-interval must not be negative"),
    ]
    for ok, message in checks:
        if not ok:
            print(f"qsense record: {message}", file=sys.stderr)
            return 2
    try:
        return asyncio.run(_record(args))
    except KeyboardInterrupt:  # a second Ctrl-C during the shutdown
        print("qsense record: interrupted during shutdown", file=sys.stderr)
        return 130
