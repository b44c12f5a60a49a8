"""The record data plane: DEALER -> ROUTER sockets carrying record batches, acknowledged per batch.

:class:`RecordPublisher` (DEALER, driver side) sends batches in the wire format
(:func:`qsense.streaming.wire.encode`) and, in reliable mode (the default), keeps
each one until the receiver acknowledges it, resending after a timeout or a
reconnect; :class:`RecordReceiver` (ROUTER, daemon side) validates with
:func:`qsense.streaming.wire.decode_message`, counts malformed messages and
sends the acknowledgements.  This is the ZeroMQ guide's client-side reliability
("Lazy Pirate": the client keeps what it sent and retries) with the server
acknowledging each request, on an asynchronous DEALER/ROUTER pair so that many
batches are in flight at once.  ``docs/reliable-delivery.md`` describes the
pattern and what it guarantees.

Envelope.  The publisher sends ``[flag, header, *arrays]``; the ROUTER adds the
peer's identity in front, so the receiver sees ``[identity, flag, header, *arrays]``:

* ``flag`` is ``b""`` (no acknowledgement wanted) or ``b"A"`` (acknowledge it);
* ``header, *arrays`` are exactly the wire-format frames (``docs/wire-format.md``).

Anything else (no flag frame, an unknown flag) is a malformed message
(reason ``"frames"``), counted, never raised.  An acknowledgement goes back to
the identity as ``[identity, b"ACK", ack-list]`` (the publisher's DEALER sees
``[b"ACK", ack-list]``), where ``ack-list`` is a msgpack array of
``[source, epoch, seq]`` arrays: one message may acknowledge many batches, in any
order (acknowledgements are per batch, not cumulative).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, AsyncIterator, Iterable, Sequence

import msgspec
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from qsense.records import BellBatch, ShadowBatch

from ..wire import REASONS, Message, WireFormatError, decode_message, encode
from .curve import CurveClientKeys, CurveServerKeys
from .throttled_log import ThrottledLog

__all__ = [
    "RecordPublisher",
    "RecordReceiver",
    "ReceivedBatch",
    "BatchKey",
    "DEFAULT_HWM",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_WINDOW",
    "DEFAULT_WINDOW_BYTES",
    "DEFAULT_ACK_TIMEOUT",
    "FLAG_NO_ACK",
    "FLAG_ACK",
    "ACK_COMMAND",
    "MAX_ACKS_PER_MESSAGE",
]

log = logging.getLogger(__name__)

#: Messages (batches) queued per peer before ``send`` waits.
DEFAULT_HWM = 64
#: Largest frame a receiver accepts; ZeroMQ drops the connection of a peer
#: that sends more, so garbage cannot make us buffer gigabytes.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
#: Unacknowledged batches a reliable publisher keeps before ``send`` waits.
DEFAULT_WINDOW = 64
#: ... and their total encoded size.
DEFAULT_WINDOW_BYTES = 256 * 1024 * 1024
#: Seconds without an acknowledgement before a batch is sent again (doubling per retry).
DEFAULT_ACK_TIMEOUT = 5.0

#: Envelope flags (frame 0 of what the publisher sends).
FLAG_NO_ACK = b""
FLAG_ACK = b"A"
#: First frame of an acknowledgement as the publisher receives it.
ACK_COMMAND = b"ACK"
#: Batches acknowledged in one message at most (keeps ack messages far below the publisher's size limit).
MAX_ACKS_PER_MESSAGE = 1024
#: A publisher takes nothing bigger from its peer: only acknowledgements come back.
MAX_ACK_MESSAGE_BYTES = 1024 * 1024
#: Acknowledgement messages queued per peer on the receiver before more are dropped (and counted).
ACK_HWM = 10_000
#: How often a publisher retries a resend that found the socket full or without a peer.
RETRY_INTERVAL = 0.05

#: A batch's identity: ``(source, epoch, seq)``.
BatchKey = tuple[str, int, int]

_ack_encoder = msgspec.msgpack.Encoder()
_ack_decoder = msgspec.msgpack.Decoder(list[tuple[str, int, int]])
#: The event after which a connection can carry messages (ZMTP handshake done; libzmq >= 4.3).
_READY_EVENT = getattr(zmq, "EVENT_HANDSHAKE_SUCCEEDED", zmq.EVENT_CONNECTED)


def context_or_default(context: zmq.asyncio.Context | None) -> zmq.asyncio.Context:
    """``context``, or the shared ``zmq.asyncio.Context.instance()`` when it is ``None``
    (the estimate sockets use it too)."""
    return context if context is not None else zmq.asyncio.Context.instance()


def _nbytes(frame: Any) -> int:
    return len(frame) if isinstance(frame, bytes) else memoryview(frame).nbytes


class _Unacked:
    """A sent batch the receiver has not acknowledged yet."""

    __slots__ = ("frames", "records", "nbytes", "sent_at", "timeout", "busy", "retry", "losses")

    def __init__(self, frames: list, records: int, nbytes: int, timeout: float) -> None:
        self.frames = frames
        self.records = records
        self.nbytes = nbytes
        self.sent_at: float | None = None  # monotonic time of the last transmission
        self.timeout = timeout  # current ack timeout (grows on repeated timeouts)
        self.busy = False  # a transmission is queued in pyzmq right now
        self.retry = False  # resend as soon as the socket takes it
        self.losses = 0  # connections lost while it was unacknowledged


class RecordPublisher:
    """Send record batches to a receiver (DEALER), reliably by default.

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
        batches queued in ZeroMQ before :meth:`send` waits.
    epoch:
        producer-run identifier (random by default) so that the receiver can tell
        a restart of this producer from duplicates.
    curve:
        :class:`CurveClientKeys` to authenticate and encrypt (acknowledgements come
        back over the same connection).
    reliable:
        keep every batch until the receiver acknowledges it (``(source, epoch,
        seq)``), resend it after ``ack_timeout`` (doubling per retry, at most
        ``max_ack_timeout``) and resend all unacknowledged batches after every
        (re)connection; ``False``: fire and forget (the ``b""`` flag).
    window, window_bytes:
        at most this many unacknowledged batches / encoded bytes; a full window
        makes :meth:`send` wait (back-pressure, never a drop).  A single batch
        larger than ``window_bytes`` is still sent when nothing else is pending.
    copy:
        reliable mode keeps the batch's bytes until acknowledged.  ``True``
        (default) copies the array frames once, so the caller may reuse its arrays
        as soon as :meth:`send` returns (about 40 us for the 0.4 MB of bit planes
        of 65,536 x 16 snapshots, see ``docs/reliable-delivery.md``); ``False``
        keeps zero-copy views: then do not modify a batch's arrays until it is
        acknowledged (:attr:`unacked` is 0 after :meth:`flush`).
    identity:
        ZeroMQ routing id (default: ZeroMQ's automatic one).  A fixed identity
        reconnecting while the receiver still holds its old connection is refused
        until that one is gone (the ROUTER does not hand over identities).
    heartbeat:
        seconds without any traffic from the peer after which the connection is
        considered dead (ZMTP heartbeats every ``heartbeat / 5`` s) and
        reconnected, so a half-open TCP connection cannot hold batches forever;
        ``None`` disables heartbeats.
    linger_ms:
        on :meth:`close`, how long ZeroMQ still tries to deliver queued messages;
        ``async with`` also waits at most this long for acknowledgements.

    Counters: :attr:`sent_batches`, :attr:`sent_records` (each batch once),
    :attr:`acked`, :attr:`resent` (transmissions after the first),
    :attr:`unacked`, :attr:`bad_acks` (undecodable acknowledgement messages),
    :attr:`unknown_acks` (acknowledgements of nothing pending: repeats after a
    resend, or a confused peer), :attr:`connections`, :attr:`disconnects`.
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
        reliable: bool = True,
        window: int = DEFAULT_WINDOW,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        max_ack_timeout: float = 60.0,
        copy: bool = True,
        identity: bytes | None = None,
        heartbeat: float | None = 30.0,
    ) -> None:
        if window < 1 or window_bytes < 1:
            raise ValueError("window and window_bytes must be positive")
        if ack_timeout <= 0 or max_ack_timeout < ack_timeout:
            raise ValueError("need 0 < ack_timeout <= max_ack_timeout")
        self.endpoint = endpoint
        self.source = source
        self.epoch = random.getrandbits(62) + 1 if epoch is None else int(epoch)
        self.reliable = reliable
        self.window = int(window)
        self.window_bytes = int(window_bytes)
        self.ack_timeout = float(ack_timeout)
        self.max_ack_timeout = float(max_ack_timeout)
        self.copy = copy
        self.linger_ms = linger_ms
        self.next_seq = 0
        self.sent_batches = 0
        self.sent_records = 0
        self.acked = 0
        self.resent = 0
        self.bad_acks = 0
        self.unknown_acks = 0
        self.connections = 0
        self.disconnects = 0
        self._pending: dict[BatchKey, _Unacked] = {}  # insertion order = oldest first
        self._pending_bytes = 0
        self._released = asyncio.Event()  # set whenever acknowledgements free entries
        self._wake = asyncio.Event()  # a connection came or went: look at resends now
        self._service: asyncio.Task | None = None
        self._closed = False
        self._log = ThrottledLog(log)
        self._sock = context_or_default(context).socket(zmq.DEALER)
        self._sock.sndhwm = hwm
        self._sock.linger = linger_ms  # give queued batches time to leave on close
        self._sock.immediate = True  # queue only for peers that completed the handshake
        self._sock.maxmsgsize = MAX_ACK_MESSAGE_BYTES  # only acknowledgements come back
        if identity is not None:
            self._sock.routing_id = identity
        if heartbeat is not None:
            self._sock.heartbeat_ivl = max(1, int(heartbeat * 200))
            self._sock.heartbeat_timeout = max(1, int(heartbeat * 1000))
        if curve is not None:
            curve.apply(self._sock)
        self._monitor: zmq.asyncio.Socket | None = None
        if reliable:  # before connecting, so that no connection event is missed
            self._monitor = self._sock.get_monitor_socket(_READY_EVENT | zmq.EVENT_DISCONNECTED)
        if bind:
            self._sock.bind(endpoint)
            self.endpoint = self._sock.last_endpoint.decode()
        else:
            self._sock.connect(endpoint)

    # -- sending -------------------------------------------------------------------------------
    @property
    def unacked(self) -> int:
        """Batches sent and not acknowledged yet (0 unless reliable)."""
        return len(self._pending)

    @property
    def unacked_bytes(self) -> int:
        return self._pending_bytes

    async def send(self, batch: ShadowBatch | BellBatch, *, timeout: float | None = None, epoch: int | None = None) -> int:
        """Send one batch; returns the seq it was sent with.

        Waits while the window (reliable) or ZeroMQ's queue is full, or while no
        peer is connected.  ``timeout`` (seconds) raises ``TimeoutError`` if the
        batch could not be handed to ZeroMQ in time (it is then not kept, not
        numbered, and not sent).  ``epoch`` overrides the publisher's (a relay
        forwarding another producer's numbering passes that producer's epoch).
        Unreliable mode sends zero-copy: do not modify the arrays afterwards.
        """
        self._check_open()
        epoch = self.epoch if epoch is None else int(epoch)
        if self.source is not None:
            source, seq = self.source, self.next_seq
            frames = encode(batch, source=source, seq=seq, epoch=epoch)
        else:
            source, seq = batch.source, batch.seq
            frames = encode(batch, epoch=epoch)
        async with asyncio.timeout(timeout):
            if self.reliable:
                await self._send_reliable((source, epoch, int(seq)), frames, batch.T)
            else:
                await self._sock.send_multipart([FLAG_NO_ACK, *frames], copy=False)
        if self.source is not None:
            self.next_seq += 1
        self.sent_batches += 1
        self.sent_records += batch.T
        return seq

    async def _send_reliable(self, key: BatchKey, frames: list, records: int) -> None:
        self._ensure_service()
        nbytes = sum(_nbytes(f) for f in frames)
        while self._pending and (len(self._pending) >= self.window or self._pending_bytes + nbytes > self.window_bytes):
            self._released.clear()
            await self._released.wait()
        if self.copy:
            # the caller may reuse its arrays once send returns (the header is bytes already);
            # ~0.6 ns per snapshot, see docs/reliable-delivery.md
            frames = [f if isinstance(f, bytes) else bytes(memoryview(f)) for f in frames]
        entry = _Unacked([FLAG_ACK, *frames], records, nbytes, self.ack_timeout)
        if key in self._pending:  # the same batch sent again before its ack: keep the newest
            self._drop(key)
        self._pending[key] = entry
        self._pending_bytes += nbytes
        entry.busy = True  # the resend task leaves it alone while this first transmission waits
        try:
            await self._sock.send_multipart(entry.frames, copy=False)
        except BaseException:
            if self._pending.get(key) is entry:  # never left: not ours to keep
                self._drop(key)
            raise
        finally:
            entry.busy = False
        entry.sent_at = time.monotonic()

    async def send_frames(self, frames: Sequence[Any]) -> None:
        """Send already-encoded wire frames with the ``b""`` flag (relays, tests of malformed input).

        Not kept or acknowledged, whatever :attr:`reliable` says."""
        self._check_open()
        await self._sock.send_multipart([FLAG_NO_ACK, *frames], copy=False)

    async def send_raw(self, frames: Sequence[Any]) -> None:
        """Send exactly ``frames``, no envelope added (tests of missing or garbage envelopes)."""
        self._check_open()
        await self._sock.send_multipart(list(frames), copy=False)

    async def flush(self, timeout: float | None = None) -> None:
        """Return once every batch sent so far is acknowledged.

        Raises ``TimeoutError`` naming how many are still unacknowledged after
        ``timeout`` seconds (they stay kept and are still resent)."""
        if not self._pending:
            return
        self._check_open()
        self._ensure_service()
        try:
            async with asyncio.timeout(timeout):
                while self._pending:
                    self._released.clear()
                    await self._released.wait()
        except TimeoutError:
            raise TimeoutError(f"{len(self._pending)} batch(es) ({sum(e.records for e in self._pending.values())} records) "
                               f"still unacknowledged after {timeout:g} s") from None

    # -- acknowledgements, resends ---------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the publisher is closed")

    def _drop(self, key: BatchKey) -> _Unacked:
        entry = self._pending.pop(key)
        self._pending_bytes -= entry.nbytes
        return entry

    def _ensure_service(self) -> None:
        """The background task reading acknowledgements and resending: started on the running loop at first use."""
        if self._service is not None and not self._service.done():
            return
        if self._service is not None and not self._service.cancelled() and self._service.exception() is not None:
            log.error("publisher to %s: acknowledgement task failed (%r); restarting it", self.endpoint, self._service.exception())
        self._service = asyncio.get_running_loop().create_task(self._serve(), name=f"qsense-publisher-acks:{self.endpoint}")

    async def _serve(self) -> None:
        while not self._closed:
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._read_acks())
                    tg.create_task(self._watch_connections())
                    tg.create_task(self._resend_loop())
                return  # the socket was closed under them
            except Exception:  # a bug must not leave send() waiting for acks nobody reads
                log.exception("publisher to %s: acknowledgement task failed; restarting it", self.endpoint)
                await asyncio.sleep(0.1)

    async def _read_acks(self) -> None:
        while True:
            try:
                frames = await self._sock.recv_multipart()
            except zmq.ZMQError:
                if self._closed:
                    return
                raise
            self._on_ack(frames)

    def _on_ack(self, frames: list[bytes]) -> int:
        """Release what ``frames`` acknowledges; anything else is counted, never raised."""
        if len(frames) != 2 or frames[0] != ACK_COMMAND:
            self.bad_acks += 1
            self._log.log(logging.WARNING, "bad-ack", "publisher to %s: ignored a message that is no acknowledgement (%d frames)",
                          self.endpoint, len(frames))
            return 0
        try:
            keys = _ack_decoder.decode(frames[1])
        except Exception as exc:  # msgspec raises DecodeError/ValidationError; nothing may escape
            self.bad_acks += 1
            self._log.log(logging.WARNING, "bad-ack", "publisher to %s: ignored an undecodable acknowledgement: %s", self.endpoint, exc)
            return 0
        released = 0
        for key in keys:
            if key in self._pending:
                self._drop(key)
                released += 1
            else:
                self.unknown_acks += 1  # a repeat after a resend, or not ours
        if released:
            self.acked += released
            self._released.set()
        return released

    async def _watch_connections(self) -> None:
        assert self._monitor is not None
        while True:
            try:
                msg = await self._monitor.recv_multipart()
                event = parse_monitor_message(msg)["event"]
            except zmq.ZMQError:
                if self._closed:
                    return
                raise
            except Exception:  # an odd monitor message must not stop resends
                continue
            if event == zmq.EVENT_DISCONNECTED:
                self.disconnects += 1
                # what was queued for the lost connection died with it (IMMEDIATE: nothing
                # waits for a reconnect), so everything handed to ZeroMQ goes again, at once
                # if another peer is there, else as soon as one completes its handshake
                for key, e in self._pending.items():
                    if e.busy:
                        continue
                    e.losses += 1
                    if e.losses == 1:
                        e.retry = True
                        e.timeout = self.ack_timeout
                    else:
                        # lost with the connection again and again: the receiver may be dropping us
                        # because of this very batch (larger than its max_message_bytes); back off
                        e.timeout = min(2 * e.timeout, self.max_ack_timeout)
                        self._log.log(logging.WARNING, "lost", "publisher to %s: batch %r was in flight on %d lost connections "
                                      "(larger than the receiver's max_message_bytes?); resending it every %.0f s at most",
                                      self.endpoint, key, e.losses, e.timeout)
                self._wake.set()
            elif event == _READY_EVENT:
                self.connections += 1
                self._wake.set()

    async def _resend_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._next_check())
            except TimeoutError:
                pass
            self._wake.clear()
            self._resend_due()

    def _next_check(self) -> float:
        if not self._pending:
            return 1.0
        now, soonest = time.monotonic(), 1.0
        for e in self._pending.values():
            if e.retry:
                return RETRY_INTERVAL
            if e.sent_at is not None:
                soonest = min(soonest, e.sent_at + e.timeout - now)
        return max(0.01, soonest)

    def _resend_due(self) -> None:
        """Resend every batch due: lost with a connection, or past its ack timeout."""
        now = time.monotonic()
        blocked = False
        for key, e in list(self._pending.items()):
            if e.busy or self._pending.get(key) is not e:
                continue
            timed_out = e.sent_at is not None and now - e.sent_at >= e.timeout
            if not (e.retry or timed_out):
                continue
            if timed_out and not e.retry:
                e.timeout = min(2 * e.timeout, self.max_ack_timeout)  # the peer is slow or gone: back off
            if blocked or not self._transmit(e):
                blocked = True  # the socket takes nothing now: the rest waits for the next round
                e.retry = True

    def _transmit(self, e: _Unacked) -> bool:
        """Hand ``e`` to ZeroMQ without waiting; False if the socket has no room (no peer, queue full)."""
        fut = self._sock.send_multipart(e.frames, copy=False, flags=zmq.NOBLOCK)
        if not fut.done():  # queued behind a send() waiting for the socket: settles with it
            e.busy = True
            fut.add_done_callback(partial(self._transmitted, e))
            return False
        self._transmitted(e, fut)
        return not e.retry

    def _transmitted(self, e: _Unacked, fut: asyncio.Future) -> None:
        e.busy = False
        if fut.cancelled() or fut.exception() is not None:
            exc = None if fut.cancelled() else fut.exception()
            if exc is not None and not isinstance(exc, zmq.Again):
                self._log.log(logging.WARNING, "resend", "publisher to %s: resend failed: %s", self.endpoint, exc)
            e.retry = True
            return
        e.retry = False
        e.sent_at = time.monotonic()
        self.resent += 1

    # -- closing ---------------------------------------------------------------------------------
    def _take_queued_acks(self) -> None:
        """Process acknowledgements already received (the task may not run again before we close)."""
        try:
            sync = zmq.Socket.shadow(self._sock.underlying)
            while True:
                self._on_ack(sync.recv_multipart(zmq.NOBLOCK))
        except zmq.ZMQError:
            pass

    def close(self, linger_ms: int | None = None) -> None:
        """Close now.  Unacknowledged batches are dropped, with a warning: use :meth:`aclose`
        (or ``async with``) to wait for the acknowledgements first."""
        if self._closed:
            return
        if self._pending:
            self._take_queued_acks()
        if self._pending:
            log.warning("publisher to %s closed with %d unacknowledged batch(es) (%d records): dropped, not resent",
                        self.endpoint, len(self._pending), sum(e.records for e in self._pending.values()))
        self._closed = True
        if self._service is not None:
            try:
                self._service.cancel()
            except RuntimeError:  # its loop is already closed
                pass
        if self._monitor is not None:
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(linger=0)
        self._sock.close(linger=linger_ms)

    async def aclose(self, timeout: float | None = None) -> None:
        """:meth:`flush` (at most ``timeout`` seconds), then close; the ``TimeoutError``
        of an incomplete flush propagates after closing."""
        try:
            if not self._closed:
                await self.flush(timeout)
        finally:
            self.close()

    async def __aenter__(self) -> "RecordPublisher":
        return self

    async def __aexit__(self, exc_type: Any, *exc: Any) -> None:
        """Wait for the acknowledgements (at most ``linger_ms``), then close."""
        try:
            if exc_type is None or issubclass(exc_type, Exception):
                bound = None if self.linger_ms < 0 else self.linger_ms / 1000
                try:
                    await self.flush(bound)
                except TimeoutError:
                    pass  # close() names what is dropped
        finally:
            self.close()


@dataclass(frozen=True, slots=True)
class ReceivedBatch:
    """A valid batch as received: the decoded message and where it came from."""

    message: Message
    #: the sender's ZeroMQ identity (where :meth:`RecordReceiver.ack` sends to)
    peer: bytes
    #: the sender asked for an acknowledgement (flag ``b"A"``)
    wants_ack: bool

    @property
    def header(self) -> Any:
        return self.message.header

    @property
    def batch(self) -> ShadowBatch | BellBatch:
        return self.message.batch

    @property
    def epoch(self) -> int:
        return self.message.epoch

    @property
    def key(self) -> BatchKey:
        """``(source, epoch, seq)``: what an acknowledgement names."""
        return (self.batch.source, int(self.epoch), int(self.batch.seq))


class RecordReceiver:
    """Receive and validate record batches (ROUTER; binds by default) and acknowledge them.

    Malformed messages (envelope or wire format) are counted in :attr:`malformed`
    (by :attr:`WireFormatError.reason`) and logged (throttled), never raised.
    Sequence numbers are not judged here: feed ``message.batch`` / ``.epoch`` to
    a :class:`SequenceTracker` (the daemon shares one across its inputs).

    ``auto_ack=True``: a valid batch whose sender wants an acknowledgement is
    acknowledged as soon as it decodes (plain taps, tests).  ``auto_ack=False``:
    the owner calls :meth:`ack` once the batch is safe (stored durably) -- and
    should acknowledge duplicates too, or their sender keeps resending them.

    Counters besides the message counts: :attr:`acks_sent` (batches acknowledged),
    :attr:`acks_dropped` (acknowledgements not sent: the peer's queue was full or
    the peer is gone; the publisher's timeout resend recovers).
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
        auto_ack: bool = True,
    ) -> None:
        self.name = name
        self.auto_ack = auto_ack
        self.malformed: dict[str, int] = {r: 0 for r in REASONS}
        self.received_messages = 0
        self.received_bytes = 0
        self.acks_sent = 0
        self.acks_dropped = 0
        self._log = ThrottledLog(log)
        self._sock = context_or_default(context).socket(zmq.ROUTER)
        self._sock.rcvhwm = hwm
        self._sock.sndhwm = ACK_HWM
        self._sock.maxmsgsize = max_message_bytes
        self._sock.linger = 0
        # an ack to a full or vanished peer then fails at once (EAGAIN / EHOSTUNREACH),
        # which we count, instead of vanishing silently; ack() never lets it escape
        self._sock.router_mandatory = True
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

    @property
    def socket(self) -> zmq.asyncio.Socket:
        """The ROUTER socket (for a :class:`~qsense.streaming.transport.connections.ConnectionMonitor`)."""
        return self._sock

    def _reject(self, reason: str, text: str) -> None:
        self.malformed[reason] = self.malformed.get(reason, 0) + 1
        self._log.log(logging.WARNING, reason, "%s: rejected malformed message (%s): %s", self.name, reason, text)

    def _accept(self, frames: list) -> ReceivedBatch | None:
        self.received_messages += 1
        self.received_bytes += sum(len(getattr(f, "buffer", f)) for f in frames[1:])
        if len(frames) < 2:
            self._reject("frames", "no envelope flag frame")
            return None
        flag = frames[1]
        if len(flag) > 1 or (flag_bytes := flag.bytes) not in (FLAG_NO_ACK, FLAG_ACK):
            self._reject("frames", "unknown envelope flag (expected b'' or b'A' before the header)")
            return None
        try:
            msg = decode_message(frames[2:])
        except WireFormatError as exc:
            self._reject(exc.reason, str(exc))
            return None
        got = ReceivedBatch(msg, frames[0].bytes, flag_bytes == FLAG_ACK)
        if self.auto_ack and got.wants_ack:
            self.ack(got.peer, [got.key])
        return got

    def ack(self, peer: bytes, keys: Iterable[BatchKey]) -> int:
        """Acknowledge batches ``(source, epoch, seq)`` to ``peer``; returns how many were sent.

        Synchronous and never blocking: an acknowledgement the peer's queue has
        no room for, or to a peer that is gone, is dropped and counted
        (:attr:`acks_dropped`); the publisher then resends and we acknowledge again."""
        items = [[str(s), int(e), int(q)] for s, e, q in keys]
        sent = 0
        for i in range(0, len(items), MAX_ACKS_PER_MESSAGE):
            chunk = items[i : i + MAX_ACKS_PER_MESSAGE]
            try:
                fut = self._sock.send_multipart([peer, ACK_COMMAND, _ack_encoder.encode(chunk)], flags=zmq.NOBLOCK)
                # the ROUTER never has a blocked send queued, so the NOBLOCK attempt has settled already
                exc = fut.exception() if fut.done() else None
            except zmq.ZMQError as err:  # a closed socket
                exc = err
            if exc is None:
                sent += len(chunk)
                continue
            self.acks_dropped += len(chunk)
            why = "the peer's queue is full" if isinstance(exc, zmq.Again) else str(exc)
            self._log.log(logging.WARNING, "ack-dropped", "%s: acknowledgement of %d batch(es) dropped (%s); the sender will resend",
                          self.name, len(chunk), why)
        self.acks_sent += sent
        return sent

    async def recv(self) -> ReceivedBatch:
        """The next valid batch (waits; malformed messages are skipped and counted)."""
        while True:
            frames = await self._sock.recv_multipart(copy=False)
            got = self._accept(frames)
            if got is not None:
                return got

    async def recv_nowait(self) -> ReceivedBatch | None:
        """The next valid batch already queued, or ``None`` (for draining)."""
        while True:
            try:
                frames = await self._sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return None
            got = self._accept(frames)
            if got is not None:
                return got

    def __aiter__(self) -> AsyncIterator[ReceivedBatch]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[ReceivedBatch]:
        while True:
            yield await self.recv()

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    def close(self) -> None:
        self._sock.close(linger=0)
