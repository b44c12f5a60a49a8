"""Who is connected to a receiving socket: a ZeroMQ socket monitor with counts and a peer cap.

ZeroMQ hides connections behind a socket, so a refused CURVE handshake, a peer
dropped for a frame over ``max_message_bytes`` or the hundredth idle connection
are invisible to the application.  The socket monitor
(``zmq_socket_monitor``) reports them as events; :class:`ConnectionMonitor`
reads those events for one socket, counts them by kind (the daemon's
``/metrics`` and status show the counts), logs the refusals (throttled) and
enforces :class:`PeerLimit`, the cap on connected peers shared by all of a
daemon's inputs: a connection accepted beyond the cap is shut down at once
(``shutdown(2)`` on its descriptor; libzmq then sees the end of the stream and
drops the connection, so no queue is ever allocated for it).

What each count means (``docs/daemon.md``, "Connections"):

=========================  ====================================================
``accepted``               TCP/IPC connections accepted
``disconnected``           connections that ended, for any reason -- a peer
                           that sent a frame over ``max_message_bytes`` is
                           disconnected by libzmq and shows up here (libzmq
                           reports no separate event for it)
``refused_peers``          connections shut down because ``max_peers`` peers
                           were connected already
``handshake_failed_auth``  CURVE handshakes refused by the authenticator (a key
                           not in ``authorized_keys``)
``handshake_failed_protocol``  handshakes that failed otherwise (a plain client
                           on a CURVE socket, the wrong server key, garbage)
=========================  ====================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from .throttled_log import ThrottledLog

__all__ = ["PeerLimit", "ConnectionMonitor", "EVENT_COUNTS"]

log = logging.getLogger(__name__)

#: the counters every monitor keeps (in this order in stats)
EVENT_COUNTS = ("accepted", "disconnected", "refused_peers", "handshake_failed_auth", "handshake_failed_protocol")

_EVENTS = (zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
           | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class PeerLimit:
    """The connected peers of all inputs together, at most ``max_peers``."""

    def __init__(self, max_peers: int) -> None:
        if max_peers < 1:
            raise ValueError(f"max_peers must be positive; got {max_peers}")
        self.max_peers = int(max_peers)
        self._open: set[tuple[str, int]] = set()

    @property
    def connected(self) -> int:
        return len(self._open)

    def admit(self, input_name: str, fd: int) -> bool:
        """Count a new connection in; False (not counted) when the cap is reached."""
        if len(self._open) >= self.max_peers:
            return False
        self._open.add((input_name, fd))
        return True

    def release(self, input_name: str, fd: int) -> bool:
        """A connection ended; whether it was one counted in."""
        try:
            self._open.remove((input_name, fd))
        except KeyError:
            return False
        return True


def _peer_of(fd: int) -> str:
    """The remote address of a connection's descriptor, for log lines (best effort)."""
    s = None
    try:
        s = socket.socket(fileno=fd)
        peer = s.getpeername()
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else (peer or "a local peer")
    except OSError:
        return "an unknown peer"
    finally:
        if s is not None:
            s.detach()  # the descriptor belongs to libzmq: never close it here


def _shutdown(fd: int) -> None:
    s = None
    try:
        s = socket.socket(fileno=fd)
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone
    finally:
        if s is not None:
            s.detach()


class ConnectionMonitor:
    """Read one socket's monitor events: count them, log refusals, enforce the peer cap.

    ``await monitor.run()`` until cancelled; :meth:`close` stops monitoring
    (call it before closing the socket or terminating the context: a monitor
    left open would keep ``Context.term()`` waiting)."""

    def __init__(self, sock: zmq.asyncio.Socket, name: str, limit: PeerLimit | None = None) -> None:
        self.name = name
        self.limit = limit
        self.counts: dict[str, int] = {k: 0 for k in EVENT_COUNTS}
        self._sock = sock
        self._mon: Any = sock.get_monitor_socket(_EVENTS)
        self._log = ThrottledLog(log)

    async def run(self) -> None:
        while True:
            frames = await self._mon.recv_multipart()
            try:
                ev = parse_monitor_message(frames)
            except Exception:  # noqa: BLE001 -- a monitor message we cannot read changes nothing
                continue
            self.handle(int(ev["event"]), int(ev["value"]))

    def handle(self, event: int, value: int) -> None:
        """One monitor event (``value``: the descriptor, or the error code of a failed handshake)."""
        if event == zmq.EVENT_ACCEPTED:
            self.counts["accepted"] += 1
            if self.limit is not None and not self.limit.admit(self.name, value):
                self.counts["refused_peers"] += 1
                self._log.log(logging.WARNING, "peers", "%s: refused a connection from %s: %d peers are connected already "
                              "(max_peers)", self.name, _peer_of(value), self.limit.max_peers)
                _shutdown(value)
        elif event == zmq.EVENT_DISCONNECTED:
            self.counts["disconnected"] += 1
            if self.limit is not None:
                self.limit.release(self.name, value)
        elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self.counts["handshake_failed_auth"] += 1
            self._log.log(logging.WARNING, "auth", "%s: refused a CURVE handshake (ZAP status %d): the client key is not "
                          "in authorized_keys", self.name, value)
        else:  # HANDSHAKE_FAILED_PROTOCOL / NO_DETAIL
            self.counts["handshake_failed_protocol"] += 1
            self._log.log(logging.WARNING, "protocol", "%s: a connection failed its handshake (error 0x%x): a plain client on "
                          "a CURVE socket, the wrong server key, or not ZeroMQ at all", self.name, value)

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        self._mon.close(linger=0)
