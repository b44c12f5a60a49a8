"""Merge several daemons' estimator states into one combined estimate stream (live sharding).

Several :class:`~qsense.streaming.daemon.EstimationDaemon` s share one stream
(a :class:`~qsense.streaming.transport.ShardedPublisher` spreads the batches,
each daemon keeps its own archive shard) and publish their estimators'
mergeable states on ``{prefix}/state/{name}``.  A :class:`Reducer` subscribes
to every daemon (SUB + the snapshot DEALER, the ZeroMQ guide's "clone"
pattern, so a late or restarted reducer has each daemon's latest state at
once), keeps the latest state per ``(daemon, estimator)``, merges them in the
fixed daemon order given and publishes ``{prefix}/estimates/{name}`` with a
single daemon's body (the same code builds it:
:func:`~qsense.streaming.daemon.estimate_body`) plus a combined
``{prefix}/status``.

Rules (``docs/sharding.md``):

* a state whose fingerprint (type and configuration) differs from the first
  daemon's (in the given order) that reported the estimator is refused: left
  out of the total, logged, and listed under ``mismatches`` in the status;
* a daemon silent for more than ``stale_after`` seconds (no state message
  received, measured on the reducer's clock) is marked ``stale`` in the status;
  its last state stays in the total: a vanished shard's data is never dropped silently;
* nothing is persisted: the daemons' snapshots are the reducer's recovery.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import time
from typing import Any, Sequence

import zmq
import zmq.asyncio

from qsense.estimators.bell import AllPauliSquares, BellEstimator
from qsense.estimators.purity import ShadowPurity
from qsense.estimators.shadow import ShadowEstimator

from .config import EstimatorConfig
from .daemon import estimate_body
from .transport import EstimatePublisher, EstimateSubscriber, ThrottledLog

__all__ = ["Reducer", "DaemonSource", "ReducerError"]

log = logging.getLogger(__name__)

_CLASSES: dict[str, Any] = {"shadow": ShadowEstimator, "bell": BellEstimator, "all_pauli_squares": AllPauliSquares,
                            "purity": ShadowPurity}


class ReducerError(RuntimeError):
    """The reducer cannot start (bad endpoint, address in use)."""


@dataclasses.dataclass
class DaemonSource:
    """One daemon the reducer follows, and what it last heard from it."""

    endpoint: str
    snapshot_endpoint: str | None = None
    #: the daemon's name, from its state bodies (None until the first one)
    name: str | None = None
    #: estimator name -> the latest state body
    states: dict[str, dict] = dataclasses.field(default_factory=dict)
    #: time.monotonic() of the last state received (None: never)
    last_seen: float | None = None
    recovered_from_snapshot: bool = False
    messages: int = 0


def _config_from(name: str, fp: dict) -> EstimatorConfig:
    """The estimator configuration a fingerprint describes (enough to build bodies)."""
    return EstimatorConfig(
        name=name, type=fp["type"], observables=tuple(fp.get("observables", ())), groups=int(fp.get("groups", 1)),
        method=fp.get("method", "mean"), t2=fp.get("t2"),
        purity_subsystems=tuple(tuple(s) for s in fp.get("purity_subsystems", ())),
        subsystems=tuple(tuple(s) for s in fp.get("subsystems", ())), max_qubits=int(fp.get("max_qubits", 6)),
        wires=None if fp.get("wires") is None else tuple(fp["wires"]),
    )


class Reducer:
    """Combine the estimator states of several daemons into one estimate stream.

    Parameters
    ----------
    sources:
        ``(pub endpoint, snapshot endpoint or None)`` per daemon; this order is the merge order.
    endpoint, snapshot_endpoint:
        where the combined estimates are published (PUB, and the snapshot ROUTER).
    prefix:
        topic prefix, on both sides (the daemons' ``[outputs.zmq] topic_prefix``).
    stale_after:
        seconds without a state message after which a daemon is marked stale.
    publish_interval:
        seconds between publications of the combined estimates and status.
    name:
        the ``daemon`` field of the combined bodies.

    Use ``async with Reducer(...) as r:`` or :meth:`start` / :meth:`stop`;
    :meth:`combined` gives the current bodies without any socket.
    """

    def __init__(self, sources: Sequence[tuple[str, str | None]], endpoint: str | None = None,
                 snapshot_endpoint: str | None = None, *, prefix: str = "qsense", stale_after: float = 10.0,
                 publish_interval: float = 1.0, snapshot_timeout: float = 1.0, name: str = "reducer",
                 context: zmq.asyncio.Context | None = None) -> None:
        if not sources:
            raise ValueError("a reducer needs at least one source")
        self.sources = [DaemonSource(pub, snap or None) for pub, snap in sources]
        self.prefix = prefix
        self.stale_after = float(stale_after)
        self.publish_interval = float(publish_interval)
        self.snapshot_timeout = float(snapshot_timeout)
        self.name = name
        self.endpoint_request = endpoint
        self.snapshot_request = snapshot_endpoint
        self.endpoints: dict[str, str] = {}
        self.mismatches: dict[tuple[int, str], str] = {}
        self.published = 0
        self.start_time = time.time()
        self._own_context = context is None
        self._ctx = context
        self._subs: list[EstimateSubscriber] = []
        self._publisher: EstimatePublisher | None = None
        self._tasks: list[asyncio.Task] = []
        self._decoded: dict[tuple[int, str], tuple[str, Any]] = {}  # (source, estimator) -> (state b64, estimator)
        self._log = ThrottledLog(log)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to every daemon, bind the outputs, start following (needs a running loop)."""
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context()
        try:
            for src in self.sources:
                try:
                    self._subs.append(EstimateSubscriber(src.endpoint, src.snapshot_endpoint, [f"{self.prefix}/state/"],
                                                         context=self._ctx))
                except zmq.ZMQError as exc:
                    raise ReducerError(f"cannot connect to {src.endpoint}: {exc}") from None
                if src.snapshot_endpoint:
                    _check_endpoint(self._ctx, src.snapshot_endpoint)
            if self.endpoint_request is not None:
                try:
                    self._publisher = EstimatePublisher(self.endpoint_request, self.snapshot_request, context=self._ctx)
                except zmq.ZMQError as exc:
                    where = " / ".join(e for e in (self.endpoint_request, self.snapshot_request) if e)
                    raise ReducerError(f"cannot bind {where}: {exc}") from None
                self._publisher.start()
                self.endpoints["estimates"] = self._publisher.endpoint
                if self._publisher.snapshot_endpoint:
                    self.endpoints["snapshot"] = self._publisher.snapshot_endpoint
        except BaseException:
            await self._close()
            raise
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow(i), name=f"qsense-reduce-in-{i}") for i in range(len(self.sources))]
        self._tasks.append(loop.create_task(self._publish_loop(), name="qsense-reduce-publish"))
        log.info("reducer following %d daemon(s): %s", len(self.sources), ", ".join(s.endpoint for s in self.sources))

    async def stop(self) -> None:
        """Publish once more and close everything."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._publisher is not None:
            try:
                await self.publish()
            except Exception:  # noqa: BLE001
                log.exception("final publication failed")
        await self._close()

    async def _close(self) -> None:
        for sub in self._subs:
            sub.close()
        self._subs = []
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None
        if self._own_context and self._ctx is not None:
            # destroy, not term: a socket whose connect/bind failed inside a constructor is still open
            self._ctx.destroy(linger=0)
            self._ctx = None

    async def __aenter__(self) -> "Reducer":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # -- input -------------------------------------------------------------------------------
    async def _follow(self, i: int) -> None:
        """Take daemon ``i``'s snapshot (retrying while it is away), then its live state messages."""
        src, sub = self.sources[i], self._subs[i]
        need_snapshot = src.snapshot_endpoint is not None
        while True:
            if need_snapshot:
                try:
                    bodies = await sub.snapshot(timeout=self.snapshot_timeout)
                except (TimeoutError, ValueError) as exc:
                    self._log.log(logging.WARNING, f"snap{i}", "no snapshot from %s yet (%s); retrying",
                                  src.snapshot_endpoint, type(exc).__name__)
                else:
                    need_snapshot = False
                    for topic, body in bodies.items():
                        self._apply(i, topic, body)
                    src.recovered_from_snapshot = bool(bodies)
            try:
                topic, body = await sub.recv(timeout=self.snapshot_timeout if need_snapshot else None)
            except TimeoutError:
                continue
            # live data flows: the PUB stream carries everything from here on.  Forget the snapshot's
            # pub_seq, so a daemon restarted without a checkpoint (pub_seq from 1 again) is still heard
            sub.snapshot_seq = 0
            need_snapshot = False
            self._apply(i, topic, body)

    def _apply(self, i: int, topic: str, body: dict) -> None:
        src = self.sources[i]
        name = body.get("estimator")
        if not isinstance(name, str) or "state" not in body or "fingerprint" not in body:
            self._log.log(logging.WARNING, "malformed", "ignoring a malformed state message on %r from %s",
                          topic, src.endpoint)
            return
        src.name = str(body.get("daemon", src.name or src.endpoint))
        src.states[name] = body
        src.last_seen = time.monotonic()
        src.messages += 1

    # -- merging -----------------------------------------------------------------------------
    def _estimator(self, i: int, name: str, body: dict) -> Any:
        key = (i, name)
        cached = self._decoded.get(key)
        if cached is None or cached[0] is not body["state"]:
            est = _CLASSES[body["type"]].from_bytes(base64.b64decode(body["state"]))
            cached = self._decoded[key] = (body["state"], est)
        return cached[1]

    def stale(self, i: int, now: float | None = None) -> bool:
        """Whether daemon ``i`` has been silent for more than ``stale_after`` seconds (or never spoke)."""
        seen = self.sources[i].last_seen
        now = time.monotonic() if now is None else now
        return seen is None or now - seen > self.stale_after

    def combined(self) -> tuple[dict[str, dict], dict]:
        """``(bodies by estimator name, status)``: the merged estimates now, and the combined status."""
        now_wall, now = time.time(), time.monotonic()
        names: list[str] = []
        for src in self.sources:
            names += [n for n in src.states if n not in names]
        bodies: dict[str, dict] = {}
        per_est: dict[str, dict] = {}
        mismatches: dict[tuple[int, str], str] = {}
        for name in names:
            ref: dict | None = None
            merged: Any = None
            sources: dict[str, int] = {}
            included, stale_in = [], []
            updated, last_rt = 0.0, None
            for i, src in enumerate(self.sources):
                body = src.states.get(name)
                if body is None:
                    continue
                label = src.name or src.endpoint
                if ref is None:
                    ref = body
                elif body["fingerprint"] != ref["fingerprint"] or body.get("type") != ref.get("type"):
                    mismatches[(i, name)] = (f"daemon {label!r}: estimator {name!r} configured differently from daemon "
                                             f"{ref.get('daemon')!r}; left out of the total")
                    continue
                try:
                    est = self._estimator(i, name, body)
                    if merged is None:
                        # a fresh copy: the cached decoded state stays as received
                        merged = type(est).from_bytes(est.to_bytes())
                    else:
                        merged.merge(est)
                except (ValueError, KeyError) as exc:
                    mismatches[(i, name)] = (f"daemon {label!r}: estimator {name!r}: unusable state ({exc}); "
                                             "left out of the total")
                    continue
                included.append(label)
                if self.stale(i, now):
                    stale_in.append(label)
                for s, q in (body.get("sources") or {}).items():
                    sources[f"{label}/{s}"] = int(q)
                updated = max(updated, float(body.get("updated") or 0.0))
                if body.get("last_record_time") is not None:
                    last_rt = max(last_rt or float("-inf"), float(body["last_record_time"]))
            if merged is None or ref is None:
                continue
            cfg = _config_from(name, ref["fingerprint"])
            bodies[name] = {"daemon": self.name, "time": now_wall,
                            **estimate_body(cfg, merged, sources=sources, updated=updated, last_record_time=last_rt)}
            per_est[name] = {"count": int(merged.count), "daemons": included, "stale": stale_in}
        for key, text in mismatches.items():
            if key not in self.mismatches:
                log.error("reducer refused a state: %s", text)
        self.mismatches = mismatches
        status = {
            "daemon": self.name, "reducer": True, "time": now_wall, "uptime": now_wall - self.start_time,
            "daemons": [{"daemon": src.name, "endpoint": src.endpoint, "stale": self.stale(i, now),
                         "seen_ago": None if src.last_seen is None else now - src.last_seen,
                         "last_state_time": max((float(b.get("time") or 0.0) for b in src.states.values()), default=None),
                         "counts": {n: int(b.get("count", 0)) for n, b in src.states.items()},
                         "archive_pos": max((b["archive_pos"] for b in src.states.values()
                                             if b.get("archive_pos") is not None), default=None),
                         "from_snapshot": src.recovered_from_snapshot, "messages": src.messages}
                        for i, src in enumerate(self.sources)],
            "estimators": per_est,
            "mismatches": [{"daemon": self.sources[i].name, "endpoint": self.sources[i].endpoint, "estimator": n, "reason": t}
                           for (i, n), t in mismatches.items()],
        }
        return bodies, status

    # -- output ------------------------------------------------------------------------------
    async def publish(self) -> None:
        """Publish the combined estimates and status once."""
        bodies, status = self.combined()
        if self._publisher is None:
            return
        for name, body in bodies.items():
            await self._publisher.publish(f"{self.prefix}/estimates/{name}", body)
        await self._publisher.publish(f"{self.prefix}/status", status)
        self.published += len(bodies) + 1

    async def _publish_loop(self) -> None:
        # periodic (not per incoming state): the staleness flags must be republished even when nothing arrives
        while True:
            try:
                await self.publish()
            except Exception:  # noqa: BLE001 -- a failing publication must not stop the reducer
                log.exception("publishing combined estimates failed")
            await asyncio.sleep(self.publish_interval)


def _check_endpoint(ctx: zmq.asyncio.Context, endpoint: str) -> None:
    """Fail now on an endpoint ZeroMQ cannot connect to (bad syntax), not at the first snapshot request."""
    probe = ctx.socket(zmq.DEALER)
    try:
        probe.connect(endpoint)
    except zmq.ZMQError as exc:
        raise ReducerError(f"cannot connect to {endpoint}: {exc}") from None
    finally:
        probe.close(linger=0)
