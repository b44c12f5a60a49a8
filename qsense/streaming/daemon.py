"""Online estimation daemon: records in (ZeroMQ, MQTT), estimates out (ZeroMQ, MQTT, Prometheus).

:class:`EstimationDaemon` runs inside any asyncio program (``qsense demo``
does); ``qsense daemon --config daemon.toml`` (:mod:`qsense.apps.daemon`) runs
it from the command line.  The TOML schema is in :mod:`qsense.streaming.config` and ``docs/daemon.md``.

One event loop, a few small tasks, each with one job:

* one receive task per ZeroMQ input (PULL) and per MQTT input (the
  ``mqtt`` driver plugin, found through its entry point so the streaming layer
  never imports :mod:`qsense.drivers`); every batch goes through :meth:`EstimationDaemon.ingest`: sequence
  check (gaps, duplicates, producer restarts), then each estimator that wants it;
* a publish task: every ``publish_interval`` seconds the current estimates as
  JSON (``Estimate.as_dict`` plus counters) on the ZeroMQ PUB socket (with
  snapshots for late joiners) and as retained MQTT messages, and a status
  message with the counters;
* a checkpoint task: every ``checkpoint.period`` seconds the estimator states
  and the last seq per source, written atomically (:mod:`qsense.streaming.checkpoint`);
* the ``/metrics`` HTTP endpoint (:mod:`qsense.streaming.metrics`).

Robustness rules: malformed messages are counted and logged (throttled) and
never reach an estimator; a batch an estimator refuses (other wires, say) is
counted per estimator and leaves it untouched; duplicates are dropped.  On
restart the daemon resumes from its checkpoint; the first batch of each source
then tells whether batches were lost across the restart (logged and counted as
a gap).  SIGTERM/SIGINT: stop receiving, drain what is queued (up to
``drain_timeout``), publish, checkpoint, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import zmq
import zmq.asyncio

from qsense import plugins
from qsense.estimators import kernels
from qsense.estimators.bell import AllPauliSquares, BellEstimator
from qsense.estimators.purity import ShadowPurity
from qsense.estimators.shadow import ShadowEstimator
from qsense.records import BellBatch, ShadowBatch, concatenate

from .checkpoint import Checkpoint, CheckpointError, EstimatorState, read_checkpoint, write_checkpoint
from .config import DaemonConfig, EstimatorConfig, load_config, parse_config
from .metrics import DaemonMetrics, MetricsServer
from .transport import (
    CurveServerKeys,
    EstimatePublisher,
    MqttEstimatePublisher,
    RecordReceiver,
    SequenceTracker,
    ThrottledLog,
    start_authenticator,
)

__all__ = ["EstimationDaemon", "EstimatorSlot", "DaemonError"]

log = logging.getLogger(__name__)

#: The module providing ``MqttDetectorSource`` (looked up by name: qsense core
#: does not import ``drivers``).


class DaemonError(RuntimeError):
    """The daemon cannot start (address in use, unreadable checkpoint, ...)."""


# -- estimators ---------------------------------------------------------------------------
def _short(wires: tuple) -> str:
    return str(list(wires)) if len(wires) <= 8 else f"[{len(wires)} wires]"


class EstimatorSlot:
    """One configured estimator: routing, guarded updates, JSON bodies, checkpoint state."""

    def __init__(self, cfg: EstimatorConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.est = self._make()
        self.rejected: dict[str, int] = {}
        self.updates = 0
        self.last_seq: dict[str, int] = {}  # source -> last seq folded in
        self.last_update = 0.0
        self.last_record_time: float | None = None  # timestamp of the newest record folded in
        self._log = ThrottledLog(log)

    def _make(self) -> Any:
        c = self.cfg
        if c.type == "shadow":
            return ShadowEstimator(list(c.observables), groups=c.groups, method=c.method)
        if c.type == "bell":
            return BellEstimator(list(c.observables), t2=c.t2, purity_subsystems=[list(s) for s in c.purity_subsystems])
        if c.type == "all_pauli_squares":
            return AllPauliSquares(max_qubits=c.max_qubits)
        return ShadowPurity([list(s) for s in c.subsystems])

    @property
    def count(self) -> int:
        return int(self.est.count)

    def wants(self, batch: ShadowBatch | BellBatch) -> bool:
        if batch.kind != self.cfg.record_kind:
            return False
        return not self.cfg.sources or batch.source in self.cfg.sources

    def update(self, batch: ShadowBatch | BellBatch, parts: Sequence[ShadowBatch | BellBatch] | None = None) -> bool:
        """Fold ``batch`` in; on refusal count it, log why, and leave the state alone.

        ``parts``: the batches ``batch`` was concatenated from (for per-source
        bookkeeping and counting refusals per batch).
        """
        parts = [batch] if parts is None else list(parts)
        if self.cfg.wires is not None and batch.wires != self.cfg.wires:
            self.rejected["wires"] = self.rejected.get("wires", 0) + len(parts)
            self._log.log(logging.WARNING, "pinned", "estimator %r refused a batch from %r (seq %d): wires %s, configured %s",
                          self.name, parts[0].source, parts[0].seq, _short(batch.wires), _short(self.cfg.wires))
            return False
        try:
            self.est.update(batch)
        except ValueError as exc:
            reason = "wires" if "wire" in str(exc) or "outside" in str(exc) else "invalid"
            self.rejected[reason] = self.rejected.get(reason, 0) + len(parts)
            self._log.log(logging.WARNING, reason, "estimator %r refused a batch from %r (seq %d): %s",
                          self.name, parts[0].source, parts[0].seq, exc)
            return False
        self.updates += len(parts)
        for p in parts:
            self.last_seq[p.source] = p.seq
        self.last_update = time.time()
        if batch.T:
            self.last_record_time = float(batch.t[-1])
        return True

    def body(self) -> dict:
        """The JSON-friendly estimate: ``Estimate.as_dict()`` plus identification."""
        out: dict[str, Any] = {"count": self.count, "estimates": {}}
        try:
            if self.cfg.type == "shadow":
                if self.count:
                    out = self.est.estimate().as_dict()
            elif self.cfg.type == "all_pauli_squares":
                if self.count:
                    out = self.est.estimate().as_dict()
            elif self.cfg.type == "bell":
                if self.count:
                    out = self.est.estimate().as_dict() if self.est.observables else {"count": self.count, "estimates": {}}
                    for sub in [None, *self.cfg.purity_subsystems]:
                        out["estimates"].update(self.est.purity(sub).as_dict()["estimates"])
            else:
                if self.count >= 2:
                    p = self.est.purity().as_dict()["estimates"]
                    s = self.est.entropy().as_dict()["estimates"]
                    out["estimates"] = {**{f"purity{k}": v for k, v in p.items()}, **{f"S2{k}": v for k, v in s.items()}}
        except ValueError as exc:  # e.g. not bound yet; publish the count only
            log.debug("estimator %r has no estimate yet: %s", self.name, exc)
        out.update(estimator=self.name, type=self.cfg.type, sources=dict(self.last_seq), updated=self.last_update,
                   last_record_time=self.last_record_time)
        return out

    def state(self) -> EstimatorState:
        return EstimatorState(type=self.cfg.type, fingerprint=self.cfg.fingerprint(), state=self.est.to_bytes())

    def restore(self, st: EstimatorState) -> bool:
        """Adopt a checkpointed state if it was made by the same configuration."""
        if st.type != self.cfg.type or st.fingerprint != self.cfg.fingerprint():
            log.warning("estimator %r: configuration changed since the checkpoint; starting it from zero", self.name)
            return False
        cls = type(self.est)
        try:
            self.est = cls.from_bytes(st.state)
        except ValueError as exc:
            raise CheckpointError(f"estimator {self.name!r}: unusable checkpoint state: {exc}") from None
        return True


# -- the daemon ---------------------------------------------------------------------------
class EstimationDaemon:
    """The online estimation daemon, usable in-process.

    Parameters
    ----------
    config:
        a :class:`~qsense.streaming.config.DaemonConfig`, a path to a TOML file, or a
        mapping with the TOML structure.
    context:
        ZeroMQ context to use (default: the daemon makes and terminates its own;
        with CURVE it must be one without another authenticator).
    resume:
        load the checkpoint if there is one (default True).

    Typical use::

        async with EstimationDaemon("daemon.toml") as d:   # started
            d.ingest(batch)                                  # or via ZeroMQ/MQTT
            print(d.estimates()["visibility"])
        # leaving the block drains, publishes and checkpoints

    or ``await d.serve()`` until :meth:`request_stop` (the CLI wires SIGTERM and
    SIGINT to it).
    """

    def __init__(self, config: DaemonConfig | str | Path | Mapping[str, Any], *,
                 context: zmq.asyncio.Context | None = None, resume: bool = True) -> None:
        if isinstance(config, (str, Path)):
            config = load_config(config)
        elif not isinstance(config, DaemonConfig):
            config = parse_config(config)
        self.config: DaemonConfig = config
        self.name = config.name
        self.resume = resume
        self.tracker = SequenceTracker(logging.getLogger("qsense.sequence"))
        self.slots = [EstimatorSlot(c) for c in config.estimators]
        self.metrics = DaemonMetrics(self.stats)
        self.endpoints: dict[str, Any] = {}
        self.start_time = time.time()
        self.resumed_from: Checkpoint | None = None
        self.published: dict[str, int] = {k: 0 for k, on in (("zmq", config.zmq_output), ("mqtt", config.mqtt_output)) if on}
        self.checkpoints = {"written": 0, "failures": 0, "last_success": None, "bytes": 0}
        self._own_context = context is None
        self._ctx = context
        self._auth: Any = None
        self._receivers: list[RecordReceiver] = []
        self._mqtt_sources: list[Any] = []
        self._publisher: EstimatePublisher | None = None
        self._mqtt_out: MqttEstimatePublisher | None = None
        self._metrics_server: MetricsServer | None = None
        self._input_tasks: list[asyncio.Task] = []
        self._service_tasks: list[asyncio.Task] = []
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self._started = False
        self._ckpt_lock = asyncio.Lock()
        self._acknowledged: dict[str, dict[str, int]] = {}
        self._update_hist = {s.name: self.metrics.update_seconds.labels(s.name) for s in self.slots}

    # -- ingest -----------------------------------------------------------------------------
    def ingest(self, batch: ShadowBatch | BellBatch, *, epoch: int = 0) -> bool:
        """Sequence-check ``batch`` and fold it into every estimator that wants it.

        Returns False for a duplicate (dropped).  Synchronous: in-process
        producers may call it directly instead of going through ZeroMQ.
        """
        return self.ingest_many([(batch, epoch)]) == 1

    def ingest_many(self, items: Sequence[tuple[ShadowBatch | BellBatch, int]]) -> int:
        """:meth:`ingest` for several ``(batch, epoch)`` in arrival order; returns
        how many were accepted.

        Every batch is sequence-checked on its own, then each estimator gets its
        accepted batches with consecutive runs on the same wires concatenated
        into one update.  The estimators' results do not depend on how the
        stream is split (the median-of-means blocks follow arrival order
        snapshot by snapshot), so this only saves the kernels' per-call
        overhead when producers send small batches.
        """
        accepted = []
        for batch, epoch in items:
            if self.tracker.observe(batch.source, batch.seq, epoch, batch.T).accepted:
                accepted.append(batch)
        if not accepted:
            return 0
        for slot in self.slots:
            mine = [b for b in accepted if slot.wants(b)]
            i = 0
            while i < len(mine):
                j = i + 1
                while j < len(mine) and mine[j].wires == mine[i].wires:
                    j += 1
                self._update(slot, mine[i:j])
                i = j
        return len(accepted)

    def _update(self, slot: EstimatorSlot, run: list[ShadowBatch | BellBatch]) -> None:
        t0 = time.perf_counter()
        try:
            slot.update(run[0] if len(run) == 1 else concatenate(run), parts=run)
        except Exception:  # an estimator bug must not take the daemon down
            slot.rejected["error"] = slot.rejected.get("error", 0) + len(run)
            log.exception("estimator %r failed on %d batch(es) from %r", slot.name, len(run), run[0].source)
        self._update_hist[slot.name].observe(time.perf_counter() - t0)

    # -- state ------------------------------------------------------------------------------
    def estimates(self) -> dict[str, dict]:
        """Current estimate bodies by estimator name (as published)."""
        return {s.name: s.body() for s in self.slots}

    def stats(self) -> dict[str, Any]:
        """All counters (the Prometheus collector and the status message read this)."""
        zin = {
            r.name: {"messages": r.received_messages, "bytes": r.received_bytes, "malformed": dict(r.malformed)}
            for r in self._receivers
        }
        mq = {s.name: s.stats() for s in self._mqtt_sources}
        clients = {s.name: {"reconnects": s.reconnects, "connected": s.connected} for s in self._mqtt_sources}
        if self._mqtt_out is not None:
            clients["estimates"] = {"reconnects": self._mqtt_out.reconnects, "connected": self._mqtt_out.connected}
        return {
            "daemon": self.name,
            "start_time": self.start_time,
            "inputs": {"zmq": zin, "mqtt": mq},
            "sources": self.tracker.as_dict(),
            "totals": {**self.tracker.totals(),
                       "malformed": sum(r.malformed_total for r in self._receivers)
                       + sum(sum(s.invalid.values()) for s in self._mqtt_sources)},
            "estimators": {s.name: {"count": s.count, "updates": s.updates, "rejected": dict(s.rejected)} for s in self.slots},
            "published": dict(self.published),
            "mqtt_clients": clients,
            "checkpoint": dict(self.checkpoints) if self.config.checkpoint else {},
        }

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Restore the checkpoint, bind every socket, start the tasks."""
        if self._started:
            return
        self._started = True
        cfg = self.config
        try:
            if cfg.kernel_threads is not None and cfg.kernel_threads != kernels.get_threads():
                # process-wide: the counting kernels of every estimator use them
                kernels.set_threads(cfg.kernel_threads)
            if cfg.checkpoint is not None and self.resume:
                self._restore(cfg.checkpoint.path)
            if self._ctx is None:
                self._ctx = zmq.asyncio.Context()
            curve = None
            if cfg.curve is not None:
                curve = CurveServerKeys(cfg.curve.server_secret_key, cfg.curve.authorized_keys)
                self._auth = start_authenticator(self._ctx, cfg.curve.authorized_keys)
            for zc in cfg.zmq_inputs:
                try:
                    rx = RecordReceiver(zc.endpoint, bind=zc.bind, hwm=zc.hwm, max_message_bytes=zc.max_message_bytes,
                                        curve=curve if zc.curve else None, context=self._ctx, name=zc.name)
                except zmq.ZMQError as exc:
                    raise DaemonError(f"input {zc.name}: cannot {'bind' if zc.bind else 'connect'} {zc.endpoint}: {exc}") from None
                self._receivers.append(rx)
                self.endpoints[f"input.{zc.name}"] = rx.endpoint
            if cfg.zmq_output is not None:
                zo = cfg.zmq_output
                try:
                    self._publisher = EstimatePublisher(zo.endpoint, zo.snapshot_endpoint, hwm=zo.hwm,
                                                        curve=curve if zo.curve else None, context=self._ctx)
                except zmq.ZMQError as exc:
                    raise DaemonError(f"output: cannot bind {zo.endpoint} / {zo.snapshot_endpoint}: {exc}") from None
                if self.resumed_from is not None:
                    self._publisher.pub_seq = self.resumed_from.pub_seq  # keep pub_seq increasing for subscribers
                self._publisher.start()
                self.endpoints["estimates"] = self._publisher.endpoint
                if self._publisher.snapshot_endpoint:
                    self.endpoints["snapshot"] = self._publisher.snapshot_endpoint
            if cfg.prometheus is not None:
                self._metrics_server = MetricsServer(self.metrics, cfg.prometheus.host, cfg.prometheus.port)
                try:
                    self.endpoints["metrics"] = f"http://{cfg.prometheus.host}:{await self._metrics_server.start()}/metrics"
                except OSError as exc:
                    raise DaemonError(f"metrics: cannot listen on {cfg.prometheus.host}:{cfg.prometheus.port}: {exc}") from None
            loop = asyncio.get_running_loop()
            if cfg.mqtt_output is not None:
                assert cfg.broker is not None
                self._mqtt_out = MqttEstimatePublisher(
                    cfg.broker.settings(), qos=cfg.mqtt_output.qos, retain=cfg.mqtt_output.retain,
                    online_topic=f"{cfg.mqtt_output.topic_prefix}/online",
                )
                self._service_tasks.append(loop.create_task(self._mqtt_out.run(), name="qsense-mqtt-out"))
            if cfg.mqtt_inputs:
                assert cfg.broker is not None
                try:
                    mqtt_source = plugins.load("driver", "mqtt")
                except plugins.PluginError as exc:
                    raise DaemonError(f"MQTT inputs need the mqtt driver plugin: {exc}") from None
                for mc in cfg.mqtt_inputs:
                    src = mqtt_source(
                        cfg.broker.settings(), mc.topics, qos=mc.qos, kind=mc.kind, batch_size=mc.batch_size,
                        flush_interval=mc.flush_interval, max_queued_batches=mc.max_queued_batches, name=mc.name,
                    )
                    src.start()
                    self._mqtt_sources.append(src)
                    self._input_tasks.append(loop.create_task(self._mqtt_loop(src), name=f"qsense-in-{mc.name}"))
            for rx in self._receivers:
                self._input_tasks.append(loop.create_task(self._zmq_loop(rx), name=f"qsense-in-{rx.name}"))
            self._service_tasks.append(loop.create_task(self._publish_loop(), name="qsense-publish"))
            if cfg.checkpoint is not None:
                self._service_tasks.append(loop.create_task(self._checkpoint_loop(), name="qsense-checkpoint"))
        except BaseException:
            await self._close_resources()
            raise
        log.info("daemon %r running: %s", self.name, ", ".join(f"{k}={v}" for k, v in self.endpoints.items()) or "in-process only")

    def _restore(self, path: Path) -> None:
        ckpt = read_checkpoint(path)  # CheckpointError propagates: refuse to start on a corrupt file
        if ckpt is None:
            log.info("no checkpoint at %s; starting fresh", path)
            return
        for slot in self.slots:
            st = ckpt.estimators.get(slot.name)
            if st is not None:
                slot.restore(st)
        self.tracker.restore(ckpt.sources)
        self.resumed_from = ckpt
        self._acknowledged = {k: dict(v) for k, v in ckpt.sources.items()}
        log.info("resumed from checkpoint %s (written %.1fs ago): %s; sources %s", path, max(0.0, time.time() - ckpt.written_at),
                 ", ".join(f"{s.name}={s.count}" for s in self.slots),
                 ", ".join(f"{k}@seq {v['seq']}" for k, v in ckpt.sources.items()) or "none")

    def request_stop(self) -> None:
        """Ask the daemon to drain, checkpoint and stop (safe from signal handlers)."""
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def serve(self) -> None:
        """Start if needed, run until :meth:`request_stop`, then shut down cleanly."""
        await self.start()
        try:
            await self._stop.wait()
        finally:
            await self.shutdown()

    async def stop(self) -> None:
        """Request a stop and shut down (drain, publish, checkpoint)."""
        self.request_stop()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop inputs, drain queued messages, publish and checkpoint, close everything."""
        if self._stopped.is_set():
            return
        self._stop.set()
        for t in self._input_tasks:
            t.cancel()
        await asyncio.gather(*self._input_tasks, return_exceptions=True)
        self._input_tasks = []
        drained = await self._drain()
        if drained:
            log.info("drained %d queued batch(es)", drained)
        for t in self._service_tasks:
            if t.get_name() != "qsense-mqtt-out":
                t.cancel()
        await asyncio.gather(*[t for t in self._service_tasks if t.get_name() != "qsense-mqtt-out"], return_exceptions=True)
        try:
            await self.publish_estimates()
        except Exception:
            log.exception("final publication failed")
        if self.config.checkpoint is not None:
            await self.checkpoint()
        if self._mqtt_out is not None:
            if not await self._mqtt_out.flush(timeout=min(5.0, self.config.drain_timeout + 1.0)):
                log.warning("MQTT broker unreachable: the last estimates were not published there")
            self._mqtt_out.stop()
            # let it mark us offline and disconnect cleanly (cancelled below if the broker is away)
            out = [t for t in self._service_tasks if t.get_name() == "qsense-mqtt-out"]
            if out:
                await asyncio.wait(out, timeout=2.0)
        await self._close_resources()
        self._stopped.set()
        log.info("daemon %r stopped", self.name)

    async def _drain(self) -> int:
        """Ingest what already arrived, for at most ``drain_timeout`` seconds."""
        deadline = time.monotonic() + self.config.drain_timeout
        n = 0
        for src in self._mqtt_sources:
            await src.close()  # closes loose events into batches
            while (item := src.get_nowait()) is not None:
                self.ingest(item.batch, epoch=item.epoch)
                n += 1
        for rx in self._receivers:
            while time.monotonic() < deadline:
                items = []
                while len(items) < 64 and (msg := await rx.recv_nowait()) is not None:
                    items.append((msg.batch, msg.epoch))
                if not items:
                    break
                self.ingest_many(items)
                n += len(items)
        return n

    async def _close_resources(self) -> None:
        for src in self._mqtt_sources:
            await src.close()
        for t in self._service_tasks:
            t.cancel()
        await asyncio.gather(*self._service_tasks, return_exceptions=True)
        self._service_tasks = []
        for rx in self._receivers:
            rx.close()
        if self._publisher is not None:
            await self._publisher.close()
        if self._metrics_server is not None:
            await self._metrics_server.close()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_context and self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    async def __aenter__(self) -> "EstimationDaemon":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # -- tasks -------------------------------------------------------------------------------
    async def _zmq_loop(self, rx: RecordReceiver) -> None:
        limit = self.config.coalesce_records
        while True:
            msg = await rx.recv()
            items, records = [(msg.batch, msg.epoch)], msg.batch.T
            # take what is already queued (recv_nowait never suspends, so a
            # cancellation cannot strike between receiving and ingesting)
            while records < limit and (more := await rx.recv_nowait()) is not None:
                items.append((more.batch, more.epoch))
                records += more.batch.T
            self.ingest_many(items)
            # a queued message makes recv() return without suspending; yield so
            # that publishing and checkpoints run while data pours in
            await asyncio.sleep(0)

    async def _mqtt_loop(self, src: Any) -> None:
        limit = self.config.coalesce_records
        while True:
            item = await src.get()
            items, records = [(item.batch, item.epoch)], item.batch.T
            while records < limit and (more := src.get_nowait()) is not None:
                items.append((more.batch, more.epoch))
                records += more.batch.T
            self.ingest_many(items)
            await asyncio.sleep(0)

    async def _publish_loop(self) -> None:
        # publish at once too, so that snapshots and retained topics show the
        # resumed state right after a restart
        while True:
            try:
                await self.publish_estimates()
            except Exception:  # a failing output must not stop estimation
                log.exception("publishing estimates failed")
            await asyncio.sleep(self.config.publish_interval)

    async def _checkpoint_loop(self) -> None:
        assert self.config.checkpoint is not None
        while True:
            await asyncio.sleep(self.config.checkpoint.period)
            await self.checkpoint()

    def status(self) -> dict:
        """The status body: counters plus what the last checkpoint acknowledged."""
        s = self.stats()
        return {
            "daemon": self.name, "time": time.time(), "uptime": time.time() - self.start_time,
            "totals": s["totals"], "sources": s["sources"], "estimators": s["estimators"],
            "inputs": s["inputs"], "checkpoint": s["checkpoint"],
            "acknowledged": self._acknowledged,
        }

    async def publish_estimates(self) -> None:
        """Publish every estimator's current body and the status once."""
        now = time.time()
        bodies = {s.name: {"daemon": self.name, "time": now, **s.body()} for s in self.slots}
        status = self.status()
        if self._publisher is not None:
            prefix = self.config.zmq_output.topic_prefix  # type: ignore[union-attr]
            for name, body in bodies.items():
                await self._publisher.publish(f"{prefix}/estimates/{name}", body)
            await self._publisher.publish(f"{prefix}/status", status)
            self.published["zmq"] += len(bodies) + 1
        if self._mqtt_out is not None:
            prefix = self.config.mqtt_output.topic_prefix  # type: ignore[union-attr]
            for name, body in bodies.items():
                self._mqtt_out.publish(f"{prefix}/estimates/{name}", body)
            self._mqtt_out.publish(f"{prefix}/status", status)
            self.published["mqtt"] += len(bodies) + 1

    async def checkpoint(self) -> Path | None:
        """Write a checkpoint now (atomic); returns its path, None if not configured or failed."""
        if self.config.checkpoint is None:
            return None
        path = self.config.checkpoint.path
        async with self._ckpt_lock:
            t0 = time.perf_counter()
            # captured in one synchronous step: estimator states and the seq marks agree
            marks = self.tracker.marks()
            try:
                ckpt = Checkpoint(
                    daemon=self.name, written_at=time.time(), sources=marks,
                    estimators={s.name: s.state() for s in self.slots},
                    pub_seq=self._publisher.pub_seq if self._publisher is not None else 0,
                )
                # the file write and fsync run in a worker thread so the loop keeps receiving
                size = await asyncio.to_thread(write_checkpoint, path, ckpt)
            except Exception as exc:  # disk full, unserialisable wire labels, ...: keep running, say so
                self.checkpoints["failures"] += 1
                log.error("checkpoint to %s failed: %s: %s", path, type(exc).__name__, exc)
                return None
            self.checkpoints["written"] += 1
            self.checkpoints["last_success"] = ckpt.written_at
            self.checkpoints["bytes"] = size
            self._acknowledged = marks
            self.metrics.checkpoint_seconds.observe(time.perf_counter() - t0)
            log.debug("checkpoint written to %s (%d bytes)", path, size)
            return path
