"""Estimates over ZeroMQ: PUB for live updates plus a ROUTER/DEALER snapshot for
late joiners (the ZeroMQ guide's "clone" pattern)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable, Mapping

import msgspec
import zmq
import zmq.asyncio

from .curve import CurveClientKeys, CurveServerKeys
from .records import context_or_default

__all__ = ["EstimatePublisher", "EstimateSubscriber"]

log = logging.getLogger(__name__)

_SNAPSHOT = b"SNAPSHOT"


#: JSON of estimate bodies, shared with the MQTT publisher; NaN/inf become null
#: (valid JSON for dashboards)
encode_body = msgspec.json.Encoder().encode
decode_body = msgspec.json.decode


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
        ctx = context_or_default(context)
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
        data = encode_body({**body, "pub_seq": self.pub_seq})
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
        self._ctx = context_or_default(context)
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
        return {reply[i].decode(): decode_body(reply[i + 1]) for i in range(3, len(reply), 2)}

    async def recv(self, timeout: float | None = None) -> tuple[str, dict]:
        """The next live ``(topic, body)`` newer than the last snapshot."""
        while True:
            fut = self._sub.recv_multipart()
            topic, data = await (fut if timeout is None else asyncio.wait_for(fut, timeout))
            body = decode_body(data)
            if int(body.get("pub_seq", 0)) > self.snapshot_seq:
                return topic.decode(), body

    def close(self) -> None:
        self._sub.close(linger=0)

    async def __aenter__(self) -> "EstimateSubscriber":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

