"""MQTT detector driver: detection events published by hardware become record batches.

Detectors (or their controllers) publish to MQTT topics; :class:`MqttDetectorSource`
subscribes (aiomqtt >= 2.5), parses each message, groups single events into
:class:`~qsense.ShadowBatch` / :class:`~qsense.BellBatch` records and hands them
out through a bounded queue.  It reconnects with exponential backoff when the
broker goes away (re-subscribing every time), counts invalid messages by reason
and records dropped because the consumer fell behind, and supports
username/password and TLS through :class:`qsense.streaming.transport.MqttSettings`.

Payload schema (``docs/daemon.md`` has the full description)
-----------------------------------------------------------------
JSON (UTF-8), for humans and small rigs -- one event::

    {"kind": "shadow", "source": "det-a", "t": 12.5, "bases": "XZY", "outcomes": "100"}
    {"kind": "bell", "source": "pair-1", "t": 12.5, "outcomes": "0312", "wait": 1e-4}

``bases``: letters X/Y/Z (or a list of codes 0/1/2), one per qubit;
``outcomes``: bits 0/1 for shadows, Bell codes 0..3 for Bell shots (a digit
string or a list).  ``kind`` defaults to the input's kind, ``source`` to the MQTT
topic, ``t`` to the arrival time, ``wait`` to 0.  Or several at once::

    {"kind": "shadow", "source": "det-a", "seq": 7, "events": [{...}, {...}]}

Binary, for rates where JSON is too slow: the qsense wire format as one blob
(:func:`qsense.streaming.wire.pack`: ``b"QSNS"``, uint32 header length, msgpack header,
raw arrays), exactly the frames of a ZeroMQ record message back to back.

Sequencing: messages that carry a ``seq`` (every binary message; JSON with a
``"seq"`` key) keep it, so the daemon detects gaps and duplicates end to end.
Events without one are numbered by this driver (per source, under a random
epoch) when it closes a batch.  Do not mix the two on one source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Iterator, NamedTuple, Sequence

import msgspec
import numpy as np

from qsense.records import BellBatch, ShadowBatch
from qsense.streaming.transport import Backoff, MqttSettings, ThrottledLog, supervise
from qsense.streaming.wire import MAX_RECORDS, PACK_MAGIC, WireFormatError, pack, unpack_message

__all__ = [
    "MqttDetectorSource",
    "DetectorBatch",
    "PayloadError",
    "parse_payload",
    "event_json",
    "batch_json",
    "binary_payload",
    "MAX_PAYLOAD_BYTES",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "INLINE_PARSE_BYTES",
]

log = logging.getLogger(__name__)

#: Larger MQTT payloads are refused (and counted) before parsing, whatever the source's own limit.
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
#: :class:`MqttDetectorSource`'s default limit (``[[inputs.mqtt]] max_payload_bytes``): larger messages are
#: dropped and counted (reason ``too_large``); a detector sends events in many small messages, not one huge one
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 20
#: messages up to this size are parsed on the event loop; larger ones in a worker thread
INLINE_PARSE_BYTES = 64 * 1024
_LETTERS = {"X": 0, "Y": 1, "Z": 2}
#: events converted to an array at a time (bounds how long one conversion holds the GIL)
_EVENT_CHUNK = 2048


class DetectorBatch(NamedTuple):
    """One record batch from MQTT and the producer epoch its seq belongs to."""

    batch: ShadowBatch | BellBatch
    epoch: int


class PayloadError(ValueError):
    """An MQTT payload that is not a valid detection message (``reason`` for metrics)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class _Parsed:
    """A parsed message: either a finished batch (``seq`` given) or loose events."""

    kind: str
    source: str
    rows: np.ndarray          # shadow: (T, 2, n) bases/outcomes; bell: (T, n) codes
    t: np.ndarray
    wait: np.ndarray | None
    seq: int | None = None
    epoch: int = 0
    wires: tuple | None = None
    batch: ShadowBatch | BellBatch | None = None


# -- parsing ------------------------------------------------------------------------------
def _codes(value: Any, what: str, letters: bool, max_code: int) -> list[int]:
    if isinstance(value, str):
        out = []
        for ch in value:
            if letters and ch.upper() in _LETTERS:
                out.append(_LETTERS[ch.upper()])
            elif "0" <= ch <= "9" and int(ch) <= max_code:  # ASCII only: str.isdigit() accepts '²', which int() refuses
                out.append(int(ch))
            elif ch in " ,":
                continue
            else:
                raise PayloadError(f"{what}: invalid character {ch!r}", "values")
        return out
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if any(v < 0 or v > max_code for v in value):
            raise PayloadError(f"{what}: codes must lie in 0..{max_code}", "values")
        return list(value)
    raise PayloadError(f"{what}: expected a string or a list of integers", "schema")


def _number(d: dict, key: str, default: float | None) -> float | None:
    v = d.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise PayloadError(f"{key!r} must be a finite number", "schema")
    return float(v)


def _events(kind: str, events: Sequence[Any], now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if len(events) > MAX_RECORDS:
        raise PayloadError(f"more than {MAX_RECORDS} events in one message", "too_large")
    rows: list = []
    ts: list = []
    waits: list = []
    # converted to arrays in chunks: one np.asarray over a list of 600,000 rows would hold the GIL (and
    # stall the event loop, when parsing in a worker thread) for as long as the whole conversion takes
    row_chunks: list[np.ndarray] = []
    n = None
    for i, ev in enumerate(events):
        if len(rows) == _EVENT_CHUNK:
            row_chunks.append(np.asarray(rows, dtype=np.uint8))
            rows = []
        if not isinstance(ev, dict):
            raise PayloadError(f"event {i} is not an object", "schema")
        if kind == "shadow":
            if "bases" not in ev or "outcomes" not in ev:
                raise PayloadError(f"event {i} needs 'bases' and 'outcomes'", "schema")
            b = _codes(ev["bases"], "bases", True, 2)
            o = _codes(ev["outcomes"], "outcomes", False, 1)
            if len(b) != len(o):
                raise PayloadError(f"event {i}: {len(b)} bases but {len(o)} outcomes", "values")
            row: Any = (b, o)
            width = len(b)
        else:
            if "outcomes" not in ev:
                raise PayloadError(f"event {i} needs 'outcomes'", "schema")
            row = _codes(ev["outcomes"], "outcomes", False, 3)
            width = len(row)
            w = _number(ev, "wait", 0.0)
            if w < 0:
                raise PayloadError("'wait' must be non-negative", "values")
            waits.append(w)
        if n is None:
            n = width
        elif width != n:
            raise PayloadError(f"event {i} has {width} qubits, earlier ones {n}", "values")
        rows.append(row)
        ts.append(_number(ev, "t", now))
    t = np.asarray(ts, dtype=np.float64)
    shape = (2, n or 0) if kind == "shadow" else (n or 0,)
    row_chunks.append(np.asarray(rows, dtype=np.uint8).reshape(len(rows), *shape))
    arr = np.concatenate([c.reshape(len(c), *shape) for c in row_chunks]) if len(row_chunks) > 1 else row_chunks[0]
    if kind == "shadow":
        return arr, t, None
    return arr, t, np.asarray(waits, dtype=np.float64)


def parse_payload(payload: bytes, topic: str, default_kind: str = "shadow", now: float | None = None) -> _Parsed:
    """Parse one MQTT payload (JSON or binary). Raises :class:`PayloadError`."""
    now = time.time() if now is None else now
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}", "too_large")
    if payload[:4] == PACK_MAGIC:
        try:
            msg = unpack_message(payload)
        except WireFormatError as exc:
            raise PayloadError(f"binary payload: {exc}", "binary") from None
        b = msg.batch
        if not b.source:
            b = b.with_meta(source=topic)
        return _Parsed(b.kind, b.source, np.empty(0), b.t, None, seq=b.seq, epoch=msg.epoch, batch=b)
    try:
        doc = msgspec.json.decode(payload)
    except msgspec.DecodeError as exc:
        raise PayloadError(f"not JSON and not a binary record: {exc}", "json") from None
    if not isinstance(doc, dict):
        raise PayloadError("a JSON payload must be an object", "schema")
    kind = doc.get("kind", default_kind)
    if kind not in ("shadow", "bell"):
        raise PayloadError(f"unknown kind {kind!r}", "schema")
    source = doc.get("source", topic)
    if not isinstance(source, str) or len(source) > 256:
        raise PayloadError("'source' must be a string of at most 256 characters", "schema")
    seq = doc.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63):
        raise PayloadError("'seq' must be a non-negative integer", "schema")
    epoch = doc.get("epoch", 0)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < 2**63:
        raise PayloadError("'epoch' must be a non-negative integer", "schema")
    wires = doc.get("wires")
    if wires is not None and (not isinstance(wires, list) or not all(isinstance(w, (int, str)) and not isinstance(w, bool) for w in wires)):
        raise PayloadError("'wires' must be a list of ints or strings", "schema")
    if "events" in doc:
        events = doc["events"]
        if not isinstance(events, list):
            raise PayloadError("'events' must be a list", "schema")
    else:
        events = [doc]
    rows, t, wait = _events(kind, events, now)
    parsed = _Parsed(kind, source, rows, t, wait, seq=seq, epoch=epoch, wires=None if wires is None else tuple(wires))
    if seq is not None or wires is not None:
        parsed.batch = _to_batch(parsed, seq or 0)
    return parsed


def _to_batch(p: _Parsed, seq: int) -> ShadowBatch | BellBatch:
    try:
        if p.kind == "shadow":
            return ShadowBatch(p.rows[:, 0, :], p.rows[:, 1, :], wires=p.wires, source=p.source, seq=seq, t=p.t)
        return BellBatch(p.rows, wires=p.wires, source=p.source, seq=seq, t=p.t, wait=p.wait)
    except ValueError as exc:
        raise PayloadError(f"invalid records: {exc}", "values") from None


# -- publishing helpers (detector side) -------------------------------------------------------
def event_json(kind: str, outcomes: Iterable[int], bases: Iterable[int] | None = None, *, t: float | None = None,
               source: str | None = None, wait: float | None = None) -> bytes:
    """One event in the JSON schema (bases/outcomes written as digit/letter strings)."""
    d: dict[str, Any] = {"kind": kind}
    if source is not None:
        d["source"] = source
    if t is not None:
        d["t"] = float(t)
    if kind == "shadow":
        if bases is None:
            raise ValueError("a shadow event needs bases")
        d["bases"] = "".join("XYZ"[int(b)] for b in bases)
    d["outcomes"] = "".join(str(int(o)) for o in outcomes)
    if wait is not None:
        d["wait"] = float(wait)
    return msgspec.json.encode(d)


def batch_json(batch: ShadowBatch | BellBatch, *, with_seq: bool = True) -> bytes:
    """A whole batch in the JSON ``events`` form."""
    events: list[dict] = []
    for i in range(batch.T):
        ev: dict[str, Any] = {"t": float(batch.t[i]), "outcomes": "".join(map(str, batch.outcomes[i].tolist()))}
        if isinstance(batch, ShadowBatch):
            ev["bases"] = "".join("XYZ"[b] for b in batch.bases[i].tolist())
        else:
            ev["wait"] = float(batch.wait[i])
        events.append(ev)
    d: dict[str, Any] = {"kind": batch.kind, "source": batch.source, "events": events}
    if with_seq:
        d["seq"] = batch.seq
    return msgspec.json.encode(d)


def binary_payload(batch: ShadowBatch | BellBatch, **kw: Any) -> bytes:
    """The compact binary form (:func:`qsense.streaming.wire.pack`)."""
    return pack(batch, **kw)


# -- the driver -----------------------------------------------------------------------------
class _Pending:
    """Loose events of one (source, kind, width) waiting to become a batch."""

    def __init__(self, kind: str, since: float) -> None:
        self.kind = kind
        self.since = since
        self.parts: list[_Parsed] = []
        self.count = 0


class MqttDetectorSource:
    """Subscribe to detector topics and produce record batches.

    Parameters
    ----------
    settings:
        broker address, credentials, TLS (:class:`qsense.streaming.transport.MqttSettings`).
    topics:
        topic filters, e.g. ``["lab/detectors/+/events"]``.
    qos:
        subscription QoS.
    kind:
        record kind of JSON events that do not say.
    batch_size, flush_interval:
        loose events are grouped per source into batches of up to ``batch_size``,
        closed at the latest ``flush_interval`` seconds after their first event.
    max_queued_batches:
        batches waiting for the consumer; beyond that new batches are dropped
        (MQTT cannot slow the publisher down) and counted in ``dropped_records``.
    max_payload_bytes:
        larger messages are dropped and counted (``invalid["too_large"]``);
        messages over :data:`INLINE_PARSE_BYTES` are parsed in a worker thread.

    Use as ``async with MqttDetectorSource(...) as src: async for item in src: ...``
    (items are :class:`DetectorBatch`), or :meth:`start` / :meth:`get` / :meth:`close`.
    """

    def __init__(
        self,
        settings: MqttSettings,
        topics: Sequence[str],
        *,
        qos: int = 1,
        kind: str = "shadow",
        batch_size: int = 4096,
        flush_interval: float = 0.1,
        max_queued_batches: int = 256,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        name: str = "mqtt",
    ) -> None:
        if kind not in ("shadow", "bell"):
            raise ValueError(f"kind must be 'shadow' or 'bell'; got {kind!r}")
        if not topics:
            raise ValueError("at least one topic filter is needed")
        self.settings = settings
        self.topics = list(topics)
        self.qos = qos
        self.kind = kind
        self.batch_size = int(batch_size)
        self.flush_interval = float(flush_interval)
        self.max_payload_bytes = int(max_payload_bytes)
        self.name = name
        self.epoch = random.getrandbits(62) + 1
        # counters (read by the daemon's metrics)
        self.messages = 0
        self.events = 0
        self.invalid: dict[str, int] = {}
        self.dropped_records = 0
        self.reconnects = 0
        self.connected = False
        self.batches = 0
        #: the connection or flush task died and was restarted by the supervisor
        self.task_restarts = 0
        self._queue: asyncio.Queue[DetectorBatch] = asyncio.Queue(maxsize=max_queued_batches)
        self._pending: dict[tuple, _Pending] = {}
        self._next_seq: dict[str, int] = {}
        self._tasks: list[asyncio.Task] = []
        self._closed = False
        self._subscribed = asyncio.Event()
        self._log = ThrottledLog(log)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the connection and flush tasks (needs a running loop)."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._supervise(self._run, "connection"), name=f"qsense-mqtt-{self.name}"),
                loop.create_task(self._supervise(self._flusher, "flush"), name=f"qsense-mqtt-flush-{self.name}"),
            ]

    async def wait_subscribed(self, timeout: float = 10.0) -> None:
        """Wait until subscribed (after a (re)connection)."""
        await asyncio.wait_for(self._subscribed.wait(), timeout)

    async def close(self) -> None:
        """Disconnect; loose events are closed into batches and stay readable with
        :meth:`get_nowait`."""
        self._closed = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: PERF203 - shutdown path
                pass
        self._tasks = []
        self._flush(force=True)

    async def __aenter__(self) -> "MqttDetectorSource":
        self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- consuming ------------------------------------------------------------------------
    async def get(self) -> DetectorBatch:
        """The next batch (waits)."""
        return await self._queue.get()

    def get_nowait(self) -> DetectorBatch | None:
        """The next batch if one is queued."""
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def __aiter__(self) -> AsyncIterator[DetectorBatch]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[DetectorBatch]:
        while True:
            if self._closed and self._queue.empty():
                return
            yield await self._queue.get()

    def stats(self) -> dict[str, Any]:
        """Counters, JSON-friendly."""
        return {
            "messages": self.messages, "events": self.events, "batches": self.batches,
            "invalid": dict(self.invalid), "dropped_records": self.dropped_records,
            "reconnects": self.reconnects, "connected": self.connected, "task_restarts": self.task_restarts,
        }

    # -- internals ------------------------------------------------------------------------
    async def _supervise(self, body: Callable[[], Awaitable[None]], what: str) -> None:
        """Run ``body`` until closed, restarting it with backoff whenever it dies (:func:`supervise`)."""

        def restarted() -> None:
            self.task_restarts += 1
            self.connected = False
            self._subscribed.clear()

        await supervise(body, what=f"{self.name}: {what}", log=self._log, on_restart=restarted,
                        backoff=Backoff(self.settings.reconnect_min, self.settings.reconnect_max),
                        keep_going=lambda: not self._closed)

    async def _run(self) -> None:
        import aiomqtt

        backoff = Backoff(self.settings.reconnect_min, self.settings.reconnect_max)
        # with a fixed client id, a persistent session lets the broker keep QoS>0
        # messages for us across our own reconnects
        persistent = self.settings.client_id is not None
        while not self._closed:
            try:
                async with self.settings.client(client_id_suffix="-detectors", clean_session=not persistent) as client:
                    self.connected = True
                    for topic in self.topics:
                        await client.subscribe(topic, qos=self.qos)
                    backoff.reset()
                    self._subscribed.set()
                    log.info("%s: subscribed to %s on %s", self.name, ", ".join(self.topics), self.settings.describe())
                    async for msg in client.messages:
                        await self.receive(bytes(msg.payload) if not isinstance(msg.payload, bytes) else msg.payload,
                                           msg.topic.value)
            except aiomqtt.MqttError as exc:
                self.reconnects += 1
                delay = backoff.next()
                self._log.log(logging.WARNING, "conn", "%s: broker %s unreachable (%s); reconnecting in %.2fs",
                              self.name, self.settings.describe(), exc, delay)
                await asyncio.sleep(delay)
            finally:
                self.connected = False
                self._subscribed.clear()

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval / 2)
            self._flush(force=False)

    def handle(self, payload: bytes | str, topic: str) -> None:
        """Process one message (also usable without a broker, e.g. for replay); parses on the calling thread."""
        if (payload := self._admit(payload, topic)) is not None:
            with self._guard(topic):
                self._take(parse_payload(payload, topic, self.kind))

    async def receive(self, payload: bytes | str, topic: str) -> None:
        """:meth:`handle` for the event loop: a message over :data:`INLINE_PARSE_BYTES` is parsed in a
        worker thread, so a large JSON document never stalls ZeroMQ ingestion, publishing or checkpoints
        (messages stay in order: the next one waits for this one)."""
        if (payload := self._admit(payload, topic)) is None:
            return
        if len(payload) <= INLINE_PARSE_BYTES:
            with self._guard(topic):
                self._take(parse_payload(payload, topic, self.kind))
            return
        with self._guard(topic):
            self._take(await asyncio.to_thread(parse_payload, payload, topic, self.kind))

    def _admit(self, payload: bytes | str, topic: str) -> bytes | None:
        self.messages += 1
        if isinstance(payload, str):
            payload = payload.encode()
        if len(payload) > self.max_payload_bytes:
            self._invalid("too_large", topic, f"{len(payload)} bytes, more than max_payload_bytes = {self.max_payload_bytes}")
            return None
        return payload

    @contextlib.contextmanager
    def _guard(self, topic: str) -> Iterator[None]:
        """Any exception from one message is counted by reason and logged (throttled); ingestion goes on."""
        try:
            yield
        except PayloadError as exc:
            self._invalid(exc.reason, topic, str(exc))
        except RecursionError:  # JSON nested too deep for the decoder or our checks
            self._invalid("json", topic, "JSON nested too deeply")
        except Exception as exc:  # noqa: BLE001 -- one message must never end ingestion
            self._invalid("error", topic, f"{type(exc).__name__}: {exc}")

    def _invalid(self, reason: str, topic: str, what: str) -> None:
        self.invalid[reason] = self.invalid.get(reason, 0) + 1
        self._log.log(logging.WARNING, reason, "%s: invalid message on %s (%s): %s", self.name, topic, reason, what[:300])

    def _take(self, p: _Parsed) -> None:
        if p.batch is not None:
            # keep per-source order: loose events of this source go first
            self._flush(force=True, source=p.source)
            self.events += p.batch.T
            self._emit(DetectorBatch(p.batch, p.epoch))
            return
        n_rec = len(p.t)
        if n_rec == 0:
            return
        self.events += n_rec
        width = p.rows.shape[-1]
        key = (p.source, p.kind, width)
        for other in [k for k in self._pending if k[0] == p.source and k != key]:
            self._close_pending(other)  # a change of kind or width ends the batch
        pend = self._pending.get(key)
        if pend is None:
            pend = self._pending[key] = _Pending(p.kind, time.monotonic())
        pend.parts.append(p)
        pend.count += n_rec
        if pend.count >= self.batch_size:
            self._close_pending(key)

    def _flush(self, force: bool, source: str | None = None) -> None:
        now = time.monotonic()
        for key in list(self._pending):
            if source is not None and key[0] != source:
                continue
            if force or now - self._pending[key].since >= self.flush_interval:
                self._close_pending(key)

    def _close_pending(self, key: tuple) -> None:
        pend = self._pending.pop(key, None)
        if pend is None or pend.count == 0:
            return
        source = key[0]
        seq = self._next_seq.get(source, 0)
        parts = pend.parts
        merged = _Parsed(
            pend.kind, source, np.concatenate([p.rows for p in parts]), np.concatenate([p.t for p in parts]),
            None if pend.kind == "shadow" else np.concatenate([p.wait for p in parts]),
        )
        try:
            batch = _to_batch(merged, seq)
        except PayloadError as exc:  # cannot happen after per-event checks; never crash
            self.invalid[exc.reason] = self.invalid.get(exc.reason, 0) + 1
            return
        self._next_seq[source] = seq + 1
        self._emit(DetectorBatch(batch, self.epoch))

    def _emit(self, item: DetectorBatch) -> None:
        try:
            self._queue.put_nowait(item)
            self.batches += 1
        except asyncio.QueueFull:
            self.dropped_records += item.batch.T
            self._log.log(logging.WARNING, "drop", "%s: consumer behind, dropped a batch of %d records from %r",
                          self.name, item.batch.T, item.batch.source)
