"""Spread one producer's batches over several daemons, each batch kept by exactly one shard.

:class:`ShardedPublisher` holds one reliable :class:`~.records.RecordPublisher`
(DEALER) per daemon endpoint.  A batch is assigned to a shard once, when it is
sent, and from then on lives only in that shard's publisher: its resends
(after an acknowledgement timeout or a reconnection) go down the same
connection to the same daemon.  That is what makes sharding exact: each daemon
deduplicates only what it stored itself, so a resend routed to another shard
would be counted twice.

Routing rule (``docs/sharding.md``):

* with ``source`` given, batch number ``k`` of this producer (0, 1, 2, ...) goes
  to shard ``k % n``; each shard numbers its own batches 0, 1, 2, ... under
  ``source`` with its own epoch (``epoch + i``), so every daemon sees a
  contiguous sequence (no false gaps) and ``(source, epoch, seq)`` stays unique
  across all archive shards;
* without ``source`` (a relay keeping each batch's own numbering) batch ``seq``
  goes to shard ``seq % n``.

A shard whose daemon is away keeps its share: once its window is full,
:meth:`ShardedPublisher.send` waits (back-pressure), and nothing is dropped or
moved to another shard.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Sequence

import zmq.asyncio

from qsense.records import BellBatch, ShadowBatch

from .records import RecordPublisher

__all__ = ["ShardedPublisher"]


class ShardedPublisher:
    """Reliable fan-out of record batches across daemons (one :class:`RecordPublisher` each).

    Parameters
    ----------
    endpoints:
        the daemons' input endpoints, in shard order (the order is the routing rule's).
    source:
        number batches per shard under this source name (see the module docstring);
        ``None``: each batch's own ``source``/``seq``, routed by ``seq % n``.
    epoch:
        base epoch (random by default); shard ``i`` uses ``epoch + i``.
    context:
        ZeroMQ context shared by the shards' sockets.
    **kwargs:
        passed to every :class:`RecordPublisher` (``window``, ``ack_timeout``, ``hwm``, ...).
    """

    def __init__(self, endpoints: Sequence[str], *, source: str | None = None, epoch: int | None = None,
                 context: zmq.asyncio.Context | None = None, **kwargs: Any) -> None:
        if not endpoints:
            raise ValueError("a ShardedPublisher needs at least one endpoint")
        self.endpoints = list(endpoints)
        self.source = source
        self.epoch = random.getrandbits(61) + 1 if epoch is None else int(epoch)
        self.shards: list[RecordPublisher] = []
        try:
            for i, ep in enumerate(self.endpoints):
                self.shards.append(RecordPublisher(ep, source=source, epoch=self.epoch + i, context=context, **kwargs))
        except BaseException:
            for p in self.shards:
                p.close(linger_ms=0)
            raise
        #: batches handed to :meth:`send` so far (the routing counter with ``source``)
        self.next_index = 0

    def __len__(self) -> int:
        return len(self.shards)

    def shard_for(self, batch: ShadowBatch | BellBatch) -> int:
        """The shard the next :meth:`send` of ``batch`` goes to (deterministic, see the module docstring)."""
        if self.source is not None:
            return self.next_index % len(self.shards)
        return int(batch.seq) % len(self.shards)

    async def send(self, batch: ShadowBatch | BellBatch, *, timeout: float | None = None) -> tuple[int, int]:
        """Send ``batch`` to its shard; returns ``(shard, seq)``.

        Waits while that shard's window is full (its daemon slow or away): the
        batch is never given to another shard.  ``timeout``: as
        :meth:`RecordPublisher.send` (``TimeoutError``; the batch is then not
        sent and the routing counter does not advance, so a retry goes to the same shard).
        """
        i = self.shard_for(batch)
        seq = await self.shards[i].send(batch, timeout=timeout)
        if self.source is not None:
            self.next_index += 1
        return i, seq

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every shard has every batch acknowledged; ``TimeoutError`` names the shards still owing."""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(p.flush() for p in self.shards))
        except TimeoutError:
            owing = {p.endpoint: p.unacked for p in self.shards if p.unacked}
            raise TimeoutError(f"unacknowledged after {timeout:g} s: "
                               + ", ".join(f"{ep}: {n} batch(es)" for ep, n in owing.items())) from None

    def stats(self) -> list[dict[str, Any]]:
        """Per-shard counters, in shard order."""
        return [{"endpoint": p.endpoint, "epoch": p.epoch, "sent_batches": p.sent_batches, "sent_records": p.sent_records,
                 "acked": p.acked, "resent": p.resent, "unacked": p.unacked, "connections": p.connections,
                 "disconnects": p.disconnects} for p in self.shards]

    @property
    def sent_batches(self) -> int:
        return sum(p.sent_batches for p in self.shards)

    @property
    def unacked(self) -> int:
        return sum(p.unacked for p in self.shards)

    def close(self, linger_ms: int | None = None) -> None:
        """Close every shard now (unacknowledged batches are dropped with a warning; see :meth:`aclose`)."""
        for p in self.shards:
            p.close(linger_ms)

    async def aclose(self, timeout: float | None = None) -> None:
        """:meth:`flush` (at most ``timeout`` seconds), then close; a flush ``TimeoutError`` propagates after closing."""
        try:
            await self.flush(timeout)
        finally:
            self.close()

    async def __aenter__(self) -> "ShardedPublisher":
        return self

    async def __aexit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            await self.aclose(max(p.linger_ms for p in self.shards) / 1000 if all(p.linger_ms >= 0 for p in self.shards)
                              else None)
        else:
            self.close()
