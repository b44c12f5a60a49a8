"""The record data plane: PUSH/PULL sockets carrying record batches in the wire format.

:class:`RecordPublisher` (PUSH, driver side) sends losslessly with backpressure;
:class:`RecordReceiver` (PULL, daemon side) validates with
:func:`qsense.streaming.wire.decode_message` and counts malformed messages.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, AsyncIterator, Sequence

import zmq
import zmq.asyncio

from qsense.records import BellBatch, ShadowBatch

from ..wire import REASONS, Message, WireFormatError, decode_message, encode
from .curve import CurveClientKeys, CurveServerKeys
from .throttled_log import ThrottledLog

__all__ = ["RecordPublisher", "RecordReceiver", "DEFAULT_HWM", "DEFAULT_MAX_MESSAGE_BYTES"]

log = logging.getLogger(__name__)

#: Messages (batches) queued per peer before ``send`` waits.
DEFAULT_HWM = 64
#: Largest frame a receiver accepts; ZeroMQ drops the connection of a peer
#: that sends more, so garbage cannot make us buffer gigabytes.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def context_or_default(context: zmq.asyncio.Context | None) -> zmq.asyncio.Context:
    """``context``, or the shared ``zmq.asyncio.Context.instance()`` when it is ``None``
    (the estimate sockets use it too)."""
    return context if context is not None else zmq.asyncio.Context.instance()


class RecordPublisher:
    """Send record batches to a receiver (PUSH; lossless, with backpressure).

    Parameters
    ----------
    endpoint:
        ZeroMQ endpoint, e.g. ``"tcp://127.0.0.1:5555"`` or ``"ipc:///tmp/q.sock"``.
    bind:
        connect (default: the daemon binds) or bind.
    source:
        If given, every batch is sent under this source name and numbered by the
        publisher (0, 1, 2, ...); otherwise each batch's own ``source``/``seq``.
    hwm:
        batches queued before :meth:`send` waits (backpressure).
    epoch:
        producer-run identifier (random by default) so that the receiver can tell
        a restart of this producer from duplicates.
    curve:
        :class:`CurveClientKeys` to authenticate and encrypt.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        bind: bool = False,
        source: str | None = None,
        hwm: int = DEFAULT_HWM,
        epoch: int | None = None,
        curve: CurveClientKeys | None = None,
        linger_ms: int = 5000,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.source = source
        self.epoch = random.getrandbits(62) + 1 if epoch is None else int(epoch)
        self.next_seq = 0
        self.sent_batches = 0
        self.sent_records = 0
        self._sock = context_or_default(context).socket(zmq.PUSH)
        self._sock.sndhwm = hwm
        self._sock.linger = linger_ms  # give queued batches time to leave on close
        self._sock.immediate = True  # queue only for peers that completed the handshake
        if curve is not None:
            curve.apply(self._sock)
        if bind:
            self._sock.bind(endpoint)
            self.endpoint = self._sock.last_endpoint.decode()
        else:
            self._sock.connect(endpoint)

    async def send(self, batch: ShadowBatch | BellBatch, *, timeout: float | None = None, epoch: int | None = None) -> int:
        """Send one batch; waits while the queue is full. Returns the seq it was sent with.

        The batch's arrays are sent zero-copy: do not modify them afterwards.
        ``timeout`` (seconds) raises ``TimeoutError`` if no peer takes it in time.
        ``epoch`` overrides the publisher's (a relay forwarding another
        producer's numbering passes that producer's epoch).
        """
        epoch = self.epoch if epoch is None else epoch
        if self.source is not None:
            seq = self.next_seq
            frames = encode(batch, source=self.source, seq=seq, epoch=epoch)
        else:
            seq = batch.seq
            frames = encode(batch, epoch=epoch)
        fut = self._sock.send_multipart(frames, copy=False)
        if timeout is None:
            await fut
        else:
            await asyncio.wait_for(fut, timeout)
        if self.source is not None:
            self.next_seq += 1
        self.sent_batches += 1
        self.sent_records += batch.T
        return seq

    async def send_frames(self, frames: Sequence[Any]) -> None:
        """Send already-encoded frames (benchmarks, relays, tests of malformed input)."""
        await self._sock.send_multipart(frames, copy=False)

    def close(self, linger_ms: int | None = None) -> None:
        self._sock.close(linger=linger_ms)

    async def __aenter__(self) -> "RecordPublisher":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


class RecordReceiver:
    """Receive and validate record batches (PULL; binds by default).

    Malformed messages are counted in :attr:`malformed` (by
    :attr:`WireFormatError.reason`) and logged (throttled), never raised.
    Sequence numbers are not judged here: feed ``message.header`` to a
    :class:`SequenceTracker` (the daemon shares one across its inputs).
    """

    def __init__(
        self,
        endpoint: str | Sequence[str],
        *,
        bind: bool = True,
        hwm: int = DEFAULT_HWM,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        curve: CurveServerKeys | None = None,
        context: zmq.asyncio.Context | None = None,
        name: str = "zmq",
    ) -> None:
        self.name = name
        self.malformed: dict[str, int] = {r: 0 for r in REASONS}
        self.received_messages = 0
        self.received_bytes = 0
        self._log = ThrottledLog(log)
        self._sock = context_or_default(context).socket(zmq.PULL)
        self._sock.rcvhwm = hwm
        self._sock.maxmsgsize = max_message_bytes
        self._sock.linger = 0
        if curve is not None:
            curve.apply(self._sock)
        endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        self.endpoints: list[str] = []
        for ep in endpoints:
            if bind:
                self._sock.bind(ep)
                # the real address when the port was 0 or '*'
                self.endpoints.append(self._sock.last_endpoint.decode())
            else:
                self._sock.connect(ep)
                self.endpoints.append(ep)

    @property
    def endpoint(self) -> str:
        return self.endpoints[0]

    def _decode(self, frames: list) -> Message | None:
        self.received_messages += 1
        self.received_bytes += sum(len(getattr(f, "buffer", f)) for f in frames)
        try:
            return decode_message(frames)
        except WireFormatError as exc:
            self.malformed[exc.reason] = self.malformed.get(exc.reason, 0) + 1
            self._log.log(logging.WARNING, exc.reason, "%s: rejected malformed message (%s): %s", self.name, exc.reason, exc)
            return None

    async def recv(self) -> Message:
        """The next valid message (waits; malformed ones are skipped and counted)."""
        while True:
            frames = await self._sock.recv_multipart(copy=False)
            msg = self._decode(frames)
            if msg is not None:
                return msg

    async def recv_nowait(self) -> Message | None:
        """The next valid message already queued, or ``None`` (for draining)."""
        while True:
            try:
                frames = await self._sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return None
            msg = self._decode(frames)
            if msg is not None:
                return msg

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Message]:
        while True:
            yield await self.recv()

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    def close(self) -> None:
        self._sock.close(linger=0)

