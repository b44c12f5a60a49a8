"""Moving records and estimates between processes: ZeroMQ (and MQTT for estimates).

Socket patterns, all on pyzmq's asyncio API (``zmq.asyncio``) with no threads of
our own (ZeroMQ's I/O threads aside):

=====================  =========  =================================================
class                  socket     job
=====================  =========  =================================================
RecordPublisher        PUSH       driver side: send record batches, lossless. A
                                  full queue (SNDHWM) makes ``send`` wait, so a
                                  fast producer is slowed down, never dropped
                                  (``IMMEDIATE``: nothing is queued for a peer
                                  that has not completed its handshake).
RecordReceiver         PULL       daemon side: receive, validate (wire.decode),
                                  count and log malformed messages.
EstimatePublisher      PUB +      publish estimates as ``[topic, JSON]``; keep the
                       ROUTER     latest body per topic and hand it to late
                                  joiners on request (the "clone" pattern).
EstimateSubscriber     SUB +      subscribe, ask for the snapshot, then follow
                       DEALER     live updates newer than the snapshot.
=====================  =========  =================================================

:class:`SequenceTracker` turns per-source ``(epoch, seq)`` into gap, duplicate
and restart counts (and log lines).  CURVE security is optional:
:func:`start_authenticator` runs pyzmq's ``AsyncioAuthenticator`` (a task on the
event loop) allowing only the public keys in a directory; a client with any
other key completes no handshake and so gets nothing.

:class:`MqttEstimatePublisher` publishes retained estimates to an MQTT broker
(aiomqtt), reconnecting with exponential backoff; :class:`MqttSettings` holds the
broker connection options shared with ``drivers/mqtt_detectors.py``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterable, Mapping, Sequence

import msgspec
import zmq
import zmq.asyncio

from qsense.records import BellBatch, ShadowBatch

from .wire import REASONS, Message, WireFormatError, decode_message, encode

__all__ = [
    "CurveServerKeys",
    "CurveClientKeys",
    "generate_keypair",
    "start_authenticator",
    "SequenceTracker",
    "SourceState",
    "SeqVerdict",
    "RecordPublisher",
    "RecordReceiver",
    "EstimatePublisher",
    "EstimateSubscriber",
    "MqttSettings",
    "MqttEstimatePublisher",
    "Backoff",
    "ThrottledLog",
    "DEFAULT_HWM",
    "DEFAULT_MAX_MESSAGE_BYTES",
]

log = logging.getLogger(__name__)

#: Messages (batches) queued per peer before ``send`` waits.
DEFAULT_HWM = 64
#: Largest frame a receiver accepts; ZeroMQ drops the connection of a peer
#: that sends more, so garbage cannot make us buffer gigabytes.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024

_json_encode = msgspec.json.Encoder().encode  # NaN/inf become null: valid JSON for dashboards
_json_decode = msgspec.json.decode


class ThrottledLog:
    """Log at most one line per key every ``interval`` seconds, reporting how many
    similar lines were suppressed -- a garbage stream must not flood the log."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        n = self._suppressed.pop(key, 0)
        if n:
            msg += f" ({n} similar messages suppressed)"
        self.logger.log(level, msg, *args)


# -- CURVE ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CurveServerKeys:
    """Server side of CURVE: our key pair and the clients we accept.

    ``secret_key_file`` is a ``zmq.auth`` ``.key_secret`` certificate (it holds
    both keys); ``authorized_keys`` is a directory of client ``.key`` files
    (public keys).  Any other client key is refused during the handshake.
    """

    secret_key_file: Path
    authorized_keys: Path

    def load(self) -> tuple[bytes, bytes]:
        import zmq.auth

        public, secret = zmq.auth.load_certificate(str(self.secret_key_file))
        if not secret:
            raise ValueError(f"{self.secret_key_file} holds no secret key (use the .key_secret file)")
        return public, secret

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server (before bind/connect)."""
        public, secret = self.load()
        sock.curve_publickey = public
        sock.curve_secretkey = secret
        sock.curve_server = True


@dataclass(frozen=True)
class CurveClientKeys:
    """Client side of CURVE: our ``.key_secret`` file and the server's public ``.key``."""

    secret_key_file: Path
    server_public_key_file: Path

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the server (before connect)."""
        import zmq.auth

        public, secret = zmq.auth.load_certificate(str(self.secret_key_file))
        if not secret:
            raise ValueError(f"{self.secret_key_file} holds no secret key (use the .key_secret file)")
        server_public, _ = zmq.auth.load_certificate(str(self.server_public_key_file))
        sock.curve_publickey = public
        sock.curve_secretkey = secret
        sock.curve_serverkey = server_public


def generate_keypair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Create ``NAME.key`` (public) and ``NAME.key_secret`` in ``directory`` with
    ``zmq.auth.create_certificates``; returns both paths."""
    import zmq.auth

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(d), name)
    return Path(public), Path(secret)


def start_authenticator(context: zmq.asyncio.Context, authorized_keys: str | Path) -> Any:
    """Start ZAP authentication on ``context``: CURVE clients must present a public
    key found in ``authorized_keys`` (a directory of ``.key`` files).

    Uses ``zmq.auth.asyncio.AsyncioAuthenticator`` (a task on the running loop,
    not a thread).  One authenticator per context; call ``.stop()`` when done.
    """
    from zmq.auth.asyncio import AsyncioAuthenticator

    d = Path(authorized_keys)
    if not d.is_dir():
        raise ValueError(f"authorized_keys {d} is not a directory of public .key files")
    auth = AsyncioAuthenticator(context, log=logging.getLogger("qsense.streaming.transport.auth"))
    auth.start()
    auth.configure_curve(domain="*", location=str(d))
    return auth


# -- sequence tracking ------------------------------------------------------------------
class SeqVerdict(enum.Enum):
    """What :meth:`SequenceTracker.observe` concluded about one batch."""

    FIRST = "first"          # first batch ever seen from this source: accept
    OK = "ok"                # the next seq: accept
    GAP = "gap"              # batches are missing before this one: accept, counted
    DUPLICATE = "duplicate"  # seq not newer than the last accepted: drop
    RESTART = "restart"      # the producer restarted (new epoch): accept, counted

    @property
    def accepted(self) -> bool:
        return self is not SeqVerdict.DUPLICATE


@dataclass
class SourceState:
    """Bookkeeping for one source."""

    epoch: int = 0
    last_seq: int = -1
    batches: int = 0
    records: int = 0
    gaps: int = 0
    missing: int = 0
    duplicates: int = 0
    restarts: int = 0
    #: restored from a checkpoint, no batch seen since (a gap now spans the restart)
    resumed: bool = False


class SequenceTracker:
    """Per-source sequence numbers: detects gaps, duplicates and producer restarts.

    A source's batches carry ``seq`` increasing by one and an ``epoch`` chosen
    at random by each producer run (0 = not given).  Rules:

    * a new epoch (both non-zero and different) is a producer restart: accept
      and start following the new numbering;
    * ``seq == last + 1``: in order;  ``seq > last + 1``: ``seq - last - 1``
      batches are missing (a gap), accept;  ``seq <= last``: a duplicate or a
      replay, drop it.

    The state (:meth:`marks`) goes into checkpoints; after :meth:`restore` the
    first batch of a source tells whether anything was lost across the restart.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.sources: dict[str, SourceState] = {}
        self._log = ThrottledLog(logger or log)

    def observe(self, source: str, seq: int, epoch: int = 0, records: int = 0) -> SeqVerdict:
        """Classify one batch and update the counts (``records`` counted if accepted)."""
        st = self.sources.get(source)
        if st is None:
            st = self.sources[source] = SourceState(epoch=epoch, last_seq=seq)
            verdict = SeqVerdict.FIRST
        elif epoch and st.epoch and epoch != st.epoch:
            st.restarts += 1
            self._log.log(logging.INFO, f"restart:{source}", "source %r restarted (epoch %x -> %x); following its numbering from seq %d",
                          source, st.epoch, epoch, seq)
            st.epoch, st.last_seq = epoch, seq
            verdict = SeqVerdict.RESTART
        elif seq <= st.last_seq:
            st.duplicates += 1
            self._log.log(logging.WARNING, f"dup:{source}", "duplicate batch from source %r: seq %d not after %d; dropped",
                          source, seq, st.last_seq)
            return SeqVerdict.DUPLICATE
        elif seq == st.last_seq + 1:
            st.last_seq = seq
            verdict = SeqVerdict.OK
        else:
            missing = seq - st.last_seq - 1
            st.gaps += 1
            st.missing += missing
            where = " across the daemon restart" if st.resumed else ""
            self._log.log(logging.WARNING, f"gap:{source}", "gap%s on source %r: %d batch(es) missing (seq %d..%d)",
                          where, source, missing, st.last_seq + 1, seq - 1)
            st.last_seq = seq
            verdict = SeqVerdict.GAP
        if epoch and not st.epoch:
            st.epoch = epoch
        st.resumed = False
        st.batches += 1
        st.records += records
        return verdict

    def totals(self) -> dict[str, int]:
        """Sums over sources of batches, records, gaps, missing, duplicates, restarts."""
        keys = ("batches", "records", "gaps", "missing", "duplicates", "restarts")
        return {k: sum(getattr(s, k) for s in self.sources.values()) for k in keys}

    def marks(self) -> dict[str, dict[str, int]]:
        """``{source: {"epoch", "seq"}}``: what a checkpoint must remember."""
        return {src: {"epoch": s.epoch, "seq": s.last_seq} for src, s in self.sources.items()}

    def restore(self, marks: Mapping[str, Mapping[str, int]]) -> None:
        """Continue from checkpointed marks (counts restart from zero)."""
        for src, m in marks.items():
            self.sources[str(src)] = SourceState(epoch=int(m.get("epoch", 0)), last_seq=int(m["seq"]), resumed=True)

    def as_dict(self) -> dict[str, dict[str, int]]:
        """Per-source counters, JSON-friendly."""
        return {
            src: {"epoch": s.epoch, "last_seq": s.last_seq, "batches": s.batches, "records": s.records, "gaps": s.gaps,
                  "missing": s.missing, "duplicates": s.duplicates, "restarts": s.restarts}
            for src, s in self.sources.items()
        }


# -- record data plane: PUSH / PULL -----------------------------------------------------
def _context(context: zmq.asyncio.Context | None) -> zmq.asyncio.Context:
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
        self._sock = _context(context).socket(zmq.PUSH)
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
        self._sock = _context(context).socket(zmq.PULL)
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


# -- estimates: PUB + snapshot (clone pattern) ---------------------------------------------
_SNAPSHOT = b"SNAPSHOT"


class EstimatePublisher:
    """Publish estimates as ``[topic, JSON]`` on a PUB socket, with late-joiner snapshots.

    Every body gets a ``pub_seq`` (increasing over all topics).  The latest body
    of each topic is kept; a ROUTER socket on ``snapshot_endpoint`` answers a
    request ``["SNAPSHOT", prefix, ...]`` with ``["SNAPSHOT", pub_seq, topic1,
    body1, topic2, body2, ...]`` for the topics starting with any prefix, so a
    subscriber that joins late gets the current state at once and then follows
    live updates with a larger ``pub_seq`` (see :class:`EstimateSubscriber`).
    Call :meth:`start` from a running loop to serve snapshots.
    """

    def __init__(
        self,
        endpoint: str,
        snapshot_endpoint: str | None = None,
        *,
        hwm: int = 10000,
        curve: CurveServerKeys | None = None,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        ctx = _context(context)
        self.pub_seq = 0
        self.latest: dict[str, bytes] = {}
        self.published = 0
        self._pub = ctx.socket(zmq.PUB)
        self._pub.sndhwm = hwm  # PUB drops for a slow subscriber rather than block us
        self._pub.linger = 0
        if curve is not None:
            curve.apply(self._pub)
        self._pub.bind(endpoint)
        self.endpoint = self._pub.last_endpoint.decode()
        self._router: zmq.asyncio.Socket | None = None
        self.snapshot_endpoint: str | None = None
        if snapshot_endpoint:
            self._router = ctx.socket(zmq.ROUTER)
            self._router.linger = 0
            self._router.router_mandatory = False  # a vanished requester is just skipped
            if curve is not None:
                curve.apply(self._router)
            self._router.bind(snapshot_endpoint)
            self.snapshot_endpoint = self._router.last_endpoint.decode()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Begin answering snapshot requests (needs a running event loop)."""
        if self._router is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._serve_snapshots(), name="qsense-snapshot")

    async def publish(self, topic: str, body: Mapping[str, Any]) -> int:
        """Publish one body under ``topic``; returns its ``pub_seq``."""
        self.pub_seq += 1
        data = _json_encode({**body, "pub_seq": self.pub_seq})
        self.latest[topic] = data
        await self._pub.send_multipart([topic.encode(), data])
        self.published += 1
        return self.pub_seq

    async def _serve_snapshots(self) -> None:
        assert self._router is not None
        while True:
            msg = await self._router.recv_multipart()
            # DEALER request: [identity, b"", b"SNAPSHOT", prefix...]
            try:
                delim = msg.index(b"", 1)
            except ValueError:
                continue
            envelope, body = msg[: delim + 1], msg[delim + 1 :]
            if not body or body[0] != _SNAPSHOT:
                log.debug("ignoring a malformed snapshot request")
                continue
            prefixes = [p.decode("utf-8", "replace") for p in body[1:]] or [""]
            reply = [*envelope, _SNAPSHOT, str(self.pub_seq).encode()]
            for topic, data in self.latest.items():
                if any(topic.startswith(p) for p in prefixes):
                    reply += [topic.encode(), data]
            await self._router.send_multipart(reply)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, zmq.ZMQError):
                pass
            self._task = None
        self._pub.close(linger=0)
        if self._router is not None:
            self._router.close(linger=0)


class EstimateSubscriber:
    """Follow estimates from an :class:`EstimatePublisher` (SUB, plus DEALER for the snapshot).

    Usage::

        async with EstimateSubscriber(pub, snap, topics=["qsense/estimates/"]) as sub:
            state = await sub.snapshot()          # current bodies, late join OK
            topic, body = await sub.recv()        # live, newer than the snapshot
    """

    def __init__(
        self,
        endpoint: str,
        snapshot_endpoint: str | None = None,
        topics: Iterable[str] = ("",),
        *,
        curve: CurveClientKeys | None = None,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self._ctx = _context(context)
        self._curve = curve
        self.topics = list(topics)
        self.snapshot_endpoint = snapshot_endpoint
        self.snapshot_seq = 0
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.linger = 0
        if curve is not None:
            curve.apply(self._sub)
        for t in self.topics:
            self._sub.subscribe(t.encode())
        self._sub.connect(endpoint)

    async def snapshot(self, timeout: float = 5.0) -> dict[str, dict]:
        """The publisher's latest body per subscribed topic. Raises ``TimeoutError``
        if no answer comes (wrong endpoint, or CURVE refused us)."""
        if not self.snapshot_endpoint:
            raise ValueError("no snapshot_endpoint given")
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.linger = 0
        try:
            if self._curve is not None:
                self._curve.apply(dealer)
            dealer.connect(self.snapshot_endpoint)
            await dealer.send_multipart([b"", _SNAPSHOT, *[t.encode() for t in self.topics]])
            reply = await asyncio.wait_for(dealer.recv_multipart(), timeout)
        finally:
            dealer.close(linger=0)
        if len(reply) < 3 or reply[1] != _SNAPSHOT or (len(reply) - 3) % 2:
            raise ValueError("malformed snapshot reply")
        self.snapshot_seq = int(reply[2])
        return {reply[i].decode(): _json_decode(reply[i + 1]) for i in range(3, len(reply), 2)}

    async def recv(self, timeout: float | None = None) -> tuple[str, dict]:
        """The next live ``(topic, body)`` newer than the last snapshot."""
        while True:
            fut = self._sub.recv_multipart()
            topic, data = await (fut if timeout is None else asyncio.wait_for(fut, timeout))
            body = _json_decode(data)
            if int(body.get("pub_seq", 0)) > self.snapshot_seq:
                return topic.decode(), body

    def close(self) -> None:
        self._sub.close(linger=0)

    async def __aenter__(self) -> "EstimateSubscriber":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


# -- MQTT ------------------------------------------------------------------------------
class Backoff:
    """Exponential backoff with jitter: ``min``, ``2 min``, ... up to ``max`` seconds."""

    def __init__(self, minimum: float = 0.2, maximum: float = 10.0, factor: float = 2.0, jitter: float = 0.1) -> None:
        self.minimum, self.maximum, self.factor, self.jitter = minimum, maximum, factor, jitter
        self._next = minimum

    def next(self) -> float:
        d = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return d * (1.0 + self.jitter * random.random())

    def reset(self) -> None:
        self._next = self.minimum


@dataclass(frozen=True)
class MqttSettings:
    """How to reach an MQTT broker (shared by the detector driver and the daemon).

    TLS is used when ``tls`` is true or any of ``ca_file``/``cert_file``/``key_file``
    is given; ``ca_file`` verifies the broker (system CAs otherwise),
    ``cert_file``/``key_file`` authenticate us by certificate.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    client_id: str | None = None
    keepalive: int = 30
    connect_timeout: float = 5.0
    reconnect_min: float = 0.2
    reconnect_max: float = 10.0

    @property
    def uses_tls(self) -> bool:
        return bool(self.tls or self.ca_file or self.cert_file or self.key_file)

    def client(self, *, will: Any = None, client_id_suffix: str = "", **kw: Any) -> Any:
        """A fresh ``aiomqtt.Client`` for these settings (use it as ``async with``)."""
        import aiomqtt

        tls_params = None
        if self.uses_tls:
            tls_params = aiomqtt.TLSParameters(ca_certs=self.ca_file, certfile=self.cert_file, keyfile=self.key_file)
        ident = None if self.client_id is None else self.client_id + client_id_suffix
        return aiomqtt.Client(
            self.host, self.port, username=self.username, password=self.password, identifier=ident,
            tls_params=tls_params, tls_insecure=self.tls_insecure if self.uses_tls else None,
            keepalive=self.keepalive, timeout=self.connect_timeout, will=will, **kw,
        )

    def describe(self) -> str:
        scheme = "mqtts" if self.uses_tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


class MqttEstimatePublisher:
    """Publish the latest estimate per topic to MQTT, retained, surviving broker restarts.

    :meth:`publish` only records the newest body for a topic and wakes the
    sender task (it never waits on the network); :meth:`run` keeps a connection
    (exponential backoff on failure) and sends what is pending.  Retained
    messages mean a dashboard that subscribes later sees the current values, and
    after a reconnect only the newest value of each topic is sent.  An
    ``online_topic`` (retained) reads ``online`` while connected and ``offline``
    after a clean stop or, through the broker's last will, after a crash.
    """

    def __init__(self, settings: MqttSettings, *, qos: int = 1, retain: bool = True, online_topic: str | None = None) -> None:
        self.settings = settings
        self.qos = qos
        self.retain = retain
        self.online_topic = online_topic
        self.published = 0
        self.reconnects = 0
        self.connected = False
        self._pending: dict[str, bytes] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._log = ThrottledLog(log, interval=30.0)

    def publish(self, topic: str, body: Mapping[str, Any] | bytes) -> None:
        """Queue ``body`` (JSON-encoded if a mapping) as the newest value of ``topic``."""
        self._pending[topic] = body if isinstance(body, bytes) else _json_encode(body)
        self._idle.clear()
        self._wake.set()

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued was sent; False on timeout (broker away)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def run(self) -> None:
        """Connection loop; run it as a task and cancel it (after :meth:`stop`) to end."""
        import aiomqtt

        backoff = Backoff(self.settings.reconnect_min, self.settings.reconnect_max)
        will = aiomqtt.Will(self.online_topic, b"offline", qos=1, retain=True) if self.online_topic else None
        while not self._stopping:
            try:
                async with self.settings.client(will=will, client_id_suffix="-estimates") as client:
                    self.connected = True
                    backoff.reset()
                    log.info("publishing estimates to %s", self.settings.describe())
                    if self.online_topic:
                        await client.publish(self.online_topic, b"online", qos=1, retain=True)
                    while True:
                        if not self._pending:
                            self._idle.set()
                            if self._stopping:
                                break
                            self._wake.clear()
                            await self._wake.wait()
                            continue
                        topic = next(iter(self._pending))
                        data = self._pending.pop(topic)
                        try:
                            await client.publish(topic, data, qos=self.qos, retain=self.retain)
                        except BaseException:
                            # keep it for the next connection unless a newer one came
                            self._pending.setdefault(topic, data)
                            raise
                        self.published += 1
                    if self.online_topic:
                        await client.publish(self.online_topic, b"offline", qos=1, retain=True)
                    return
            except aiomqtt.MqttError as exc:
                self.connected = False
                self.reconnects += 1
                delay = backoff.next()
                self._log.log(logging.WARNING, "conn", "MQTT estimates: %s unreachable (%s); retrying in %.1fs",
                              self.settings.describe(), exc, delay)
                await asyncio.sleep(delay)
            finally:
                self.connected = False

    def stop(self) -> None:
        """Ask :meth:`run` to send what is pending, mark offline and return."""
        self._stopping = True
        self._wake.set()
