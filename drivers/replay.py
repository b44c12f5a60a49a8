"""Replay driver: the batches of a record archive again, with their original (source, epoch, seq).

:class:`ArchiveReplaySource` reads a record archive
(:mod:`qsense.streaming.archive`) in storage order, filtered like
:meth:`~qsense.streaming.archive.Archive.entries` (source, time, kind, wires,
position), and hands the batches out unchanged -- the producer's ``source``
and ``seq`` stay on each batch and its ``epoch`` comes with it -- so that a
daemon or recorder that already holds them recognises them as duplicates:

* ``async for batch in source`` -- the :class:`~qsense.records.ShadowBatch` /
  :class:`~qsense.records.BellBatch` objects (in-process consumers,
  estimators, pipeline sinks);
* ``async for entry in source.entries()`` -- the archive's
  :class:`~qsense.streaming.archive.Entry` (``pos``, ``epoch``, ``received``,
  ``batch``): what a daemon's ``ingest(entry.batch, entry.epoch)`` takes;
* ``await source.publish(publisher)`` -- through a reliable
  :class:`~qsense.streaming.transport.RecordPublisher` (``source=None``, so
  the batches keep their numbering), then wait until every batch is
  acknowledged (``qsense replay`` is this with a progress bar).

``rate`` paces the stream at that many records (snapshots or Bell shots) per
second of wall time, measured from the first batch: after each batch the
source waits until ``records_so_far / rate`` seconds have passed, so a
replay of N records takes about N / rate seconds and the instantaneous rate
is never above ``rate`` by more than one batch.  Without ``rate`` it goes as
fast as the consumer takes batches.

The archive is read in a worker thread, a chunk of batches ahead of the
consumer (:data:`CHUNK_BATCHES` batches or :data:`CHUNK_RECORDS` records at
most), so reading a Parquet row group never blocks the event loop and memory
stays bounded by two chunks plus one row group (or the open segment of a
live archive).  This source yields record batches, not copies: it feeds
record consumers (daemon, recorder, estimators, sinks), not the acquisition
:class:`~qsense.acquisition.pipeline.Pipeline`, whose drivers bring copies
to be measured.  Plugin name ``replay``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from typing import Any, AsyncIterator, Callable, Iterable, Iterator, Sequence

from qsense.records import BellBatch, ShadowBatch
from qsense.streaming.archive import Entry, open_archive

__all__ = ["ArchiveReplaySource", "CHUNK_BATCHES", "CHUNK_RECORDS"]

log = logging.getLogger(__name__)

#: Batches read ahead per chunk (the worker thread reads one chunk while the consumer takes the previous).
CHUNK_BATCHES = 64
#: ... or records, whichever comes first.
CHUNK_RECORDS = 1 << 20


def _take(it: Iterator[Entry], batches: int, records: int) -> list[Entry]:
    """The next entries of ``it``, at most ``batches`` of them or ``records`` records (runs in a worker thread)."""
    out: list[Entry] = []
    n = 0
    for e in it:
        out.append(e)
        n += e.batch.T
        if len(out) >= batches or n >= records:
            break
    return out


class ArchiveReplaySource:
    """Stream the batches of a record archive, optionally paced.

    Parameters
    ----------
    path:
        the archive directory (:class:`~qsense.streaming.archive.ArchiveError`
        at once if it is not one this qsense reads).
    source, kind, since, until, wires, after, upto:
        the selection, as :meth:`~qsense.streaming.archive.Archive.entries`:
        source name(s), ``"shadow"``/``"bell"``, record timestamps
        ``since <= t < until`` (batches straddling a bound are cut, and keep
        their (source, epoch, seq)), exact wires, positions ``after < pos <= upto``.
    rate:
        records per second of wall time (``None``: as fast as possible).
    verify:
        check every row's CRC-32 while reading (default).

    Counters: :attr:`batches`, :attr:`records` (handed out so far).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        source: str | Iterable[str] | None = None,
        kind: str | None = None,
        since: float | None = None,
        until: float | None = None,
        wires: Sequence | None = None,
        after: int | None = None,
        upto: int | None = None,
        rate: float | None = None,
        verify: bool = True,
    ) -> None:
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of records per second; got {rate!r}")
        if kind is not None and kind not in ("shadow", "bell"):
            raise ValueError(f"kind must be 'shadow' or 'bell'; got {kind!r}")
        self.archive = open_archive(path, verify=verify)
        self.selection: dict[str, Any] = {"source": source, "kind": kind, "since": since, "until": until,
                                          "wires": None if wires is None else tuple(wires), "after": after, "upto": upto}
        self.rate = None if rate is None else float(rate)
        self.batches = 0
        self.records = 0
        self.started: float | None = None
        self._stop = False

    @property
    def path(self) -> Any:
        return self.archive.path

    @property
    def problems(self) -> dict[str, int]:
        """Damage the reader met and skipped so far (see :attr:`~qsense.streaming.archive.Archive.problems`)."""
        return self.archive.problems

    def stop(self) -> None:
        """Finish after the batch being handed out."""
        self._stop = True

    def __aiter__(self) -> AsyncIterator[ShadowBatch | BellBatch]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[ShadowBatch | BellBatch]:
        async for e in self.entries():
            yield e.batch

    async def entries(self) -> AsyncIterator[Entry]:
        """The selected :class:`~qsense.streaming.archive.Entry` objects, in storage order, paced by :attr:`rate`."""
        loop = asyncio.get_running_loop()
        it = self.archive.entries(**self.selection)
        start = self.started = loop.time()
        ahead = asyncio.ensure_future(asyncio.to_thread(_take, it, CHUNK_BATCHES, CHUNK_RECORDS))
        try:
            while not self._stop:
                chunk = await ahead
                if not chunk:
                    break
                # read the next chunk while this one is handed out
                ahead = asyncio.ensure_future(asyncio.to_thread(_take, it, CHUNK_BATCHES, CHUNK_RECORDS))
                for e in chunk:
                    if self._stop:
                        break
                    yield e
                    self.batches += 1
                    self.records += e.batch.T
                    if self.rate is not None:
                        delay = start + self.records / self.rate - loop.time()
                        await asyncio.sleep(max(delay, 0.0))
        finally:
            # the reader thread owns the archive iterator until its chunk is done
            if not ahead.done():
                await asyncio.wait([ahead])
            if ahead.done() and not ahead.cancelled():
                ahead.exception()  # retrieved: a read error after a stop is not "never retrieved"

    async def publish(self, publisher: Any, *, flush_timeout: float | None = None, send_timeout: float | None = None,
                      on_batch: Callable[[Entry], None] | None = None) -> int:
        """Send every selected batch through ``publisher`` with its original (source, epoch, seq), then
        wait until all are acknowledged; returns how many batches were sent.

        ``publisher``: a :class:`~qsense.streaming.transport.RecordPublisher`
        built with ``source=None`` (one with its own ``source`` would renumber
        the batches, and a receiver could no longer recognise them).
        ``send_timeout``: the longest wait for the publisher to take one batch
        (no receiver, a full window); ``flush_timeout``: the longest wait for
        the last acknowledgements; both raise ``TimeoutError``.
        ``on_batch(entry)`` is called after each send (progress displays).
        """
        if getattr(publisher, "source", None) is not None:
            raise ValueError("the publisher renumbers batches (source=...); replay needs source=None to keep the original "
                             "(source, epoch, seq)")
        sent = 0
        async for e in self.entries():
            await publisher.send(e.batch, epoch=e.epoch, timeout=send_timeout)
            sent += 1
            if on_batch is not None:
                on_batch(e)
        if getattr(publisher, "reliable", False):
            await publisher.flush(flush_timeout)
        elapsed = asyncio.get_running_loop().time() - self.started if self.started is not None else 0.0
        log.debug("replayed %d batches (%d records) from %s in %.2fs", sent, self.records, self.path, elapsed)
        return sent
