"""Online estimation daemon: records in (ZeroMQ, MQTT), estimates out (ZeroMQ, MQTT, Prometheus).

:class:`EstimationDaemon` runs inside any asyncio program (``qsense demo``
does); ``qsense daemon --config daemon.toml`` (:mod:`qsense.apps.daemon`) runs
it from the command line.  The TOML schema is in :mod:`qsense.streaming.config` and ``docs/daemon.md``.

One event loop, a few small tasks, each with one job:

* one receive task per ZeroMQ input (ROUTER, acknowledging) and per MQTT input (the
  ``mqtt`` driver plugin, found through its entry point so the streaming layer
  never imports :mod:`qsense.drivers`); every batch goes through :meth:`EstimationDaemon.ingest`: sequence
  check (gaps, duplicates, producer restarts), then each estimator that wants it;
* a publish task: every ``publish_interval`` seconds the current estimates as
  JSON (``Estimate.as_dict`` plus counters) on the ZeroMQ PUB socket (with
  snapshots for late joiners) and as retained MQTT messages, and a status
  message with the counters; on ZeroMQ also each estimator's mergeable state
  (``{prefix}/state/{name}``, ``[outputs.zmq] states``) for a reducer merging
  several daemons' shards (:mod:`qsense.streaming.reducer`, ``docs/sharding.md``);
* a checkpoint task: every ``checkpoint.period`` seconds the estimator states
  and the last seq per source, written atomically (:mod:`qsense.streaming.checkpoint`);
* the ``/metrics`` HTTP endpoint (:mod:`qsense.streaming.metrics`).

Robustness rules: malformed messages are counted and logged (throttled) and
never reach an estimator; a batch an estimator refuses (other wires, say) is
counted per estimator and leaves it untouched; duplicates are dropped; a batch
whose seq jumps further than ``max_seq_jump`` is refused (``docs/daemon.md``,
trust model); an input task that dies anyway is restarted.  On restart the
daemon resumes from its checkpoint and says so (one WARNING line: counts, age,
sources), refusing a checkpointed estimator of another configuration unless
told to start it from zero; the first batch of each source then tells whether
batches were lost across the restart (logged and counted as a gap).  Every
start-up failure is a :class:`DaemonError` naming the setting, raised at once.  SIGTERM/SIGINT: stop receiving, drain what is queued (up to
``drain_timeout``), publish, checkpoint, exit 0.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, Sequence

import numpy as np
import zmq
import zmq.asyncio

from qsense import plugins
from qsense.estimators import kernels
from qsense.estimators.bell import AllPauliSquares, BellEstimator
from qsense.estimators.purity import ShadowPurity
from qsense.estimators.shadow import ShadowEstimator
from qsense.records import BellBatch, ShadowBatch, concatenate

from .archive import ArchiveError, ArchiveWriter, open_archive
from .checkpoint import Checkpoint, CheckpointError, EstimatorState, read_checkpoint, write_checkpoint
from .config import ConfigError, DaemonConfig, EstimatorConfig, load_config, parse_config
from .metrics import DaemonMetrics, MetricsServer, top_sources
from .transport import (
    Backoff,
    CurveServerKeys,
    EstimatePublisher,
    MqttEstimatePublisher,
    RecordReceiver,
    SequenceTracker,
    SeqVerdict,
    ThrottledLog,
    start_authenticator,
    supervise,
)
from .transport.connections import ConnectionMonitor, PeerLimit
from .transport.curve import public_key_id

__all__ = ["EstimationDaemon", "EstimatorSlot", "DaemonError", "estimate_body", "make_estimator"]

log = logging.getLogger(__name__)

#: Batches smaller than this are joined into one estimator update (up to this many records).
JOIN_BELOW_RECORDS = 16384
#: Records of the large synthetic batch an estimator slot folds at start to load every compiled kernel path.
WARM_RECORDS = 65536
#: Sources listed by name in the status body (the others are summed in "other_sources").
STATUS_SOURCES = 256
#: Batches stored but not yet durable before the inputs wait for a commit.
MAX_PENDING_BATCHES = 1024
#: Recently folded batches kept in memory, so a back-filled estimator catches
#: up with the live stream without re-reading the open segment.
RECENT_BATCHES = 256


class DaemonError(RuntimeError):
    """The daemon cannot start (address in use, unreadable checkpoint, ...)."""


# -- estimators ---------------------------------------------------------------------------
def _short(wires: tuple) -> str:
    return str(list(wires)) if len(wires) <= 8 else f"[{len(wires)} wires]"


def estimate_body(cfg: EstimatorConfig, est: Any, *, sources: Mapping[str, int] | None = None, updated: float = 0.0,
                  last_record_time: float | None = None) -> dict:
    """The published estimate body of estimator ``est`` configured by ``cfg``.

    Shared by :class:`EstimatorSlot` and the reducer (which builds it from
    merged states), so that a combined estimate has exactly a single daemon's shape.
    """
    count = int(est.count)
    out: dict[str, Any] = {"count": count, "estimates": {}}
    try:
        if cfg.type in ("shadow", "all_pauli_squares"):
            if count:
                out = est.estimate().as_dict()
        elif cfg.type == "bell":
            if count:
                out = est.estimate().as_dict() if est.observables else {"count": count, "estimates": {}}
                for sub in [None, *cfg.purity_subsystems]:
                    out["estimates"].update(est.purity(sub).as_dict()["estimates"])
        else:
            if count >= 2:
                p = est.purity().as_dict()["estimates"]
                s = est.entropy().as_dict()["estimates"]
                out["estimates"] = {**{f"purity{k}": v for k, v in p.items()}, **{f"S2{k}": v for k, v in s.items()}}
    except ValueError as exc:  # e.g. not bound yet; publish the count only
        log.debug("estimator %r has no estimate yet: %s", cfg.name, exc)
    out.update(estimator=cfg.name, type=cfg.type, sources=dict(sources or {}), updated=updated,
               last_record_time=last_record_time)
    return out


def make_estimator(cfg: EstimatorConfig) -> Any:
    """A fresh estimator for ``cfg``."""
    if cfg.type == "shadow":
        return ShadowEstimator(list(cfg.observables), groups=cfg.groups, method=cfg.method)
    if cfg.type == "bell":
        return BellEstimator(list(cfg.observables), t2=cfg.t2, purity_subsystems=[list(s) for s in cfg.purity_subsystems],
                             decoherence=cfg.decoherence)
    if cfg.type == "all_pauli_squares":
        return AllPauliSquares(max_qubits=cfg.max_qubits)
    return ShadowPurity([list(s) for s in cfg.subsystems])


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
        #: False while the slot is being back-filled from the archive (not fed, not published, not checkpointed)
        self.live = True
        #: whether its state came from a checkpoint
        self.restored = False
        self._log = ThrottledLog(log)

    def _make(self) -> Any:
        return make_estimator(self.cfg)

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

    def warm(self) -> None:
        """Fold two synthetic batches (4 and :data:`WARM_RECORDS` records) into a throwaway estimator of this
        configuration and build its body, so that the kernels' first-call compilation (numba: ~1.5 s per
        process even from its disk cache) happens at start -- not on the event loop while the first real
        batch waits. Needs declared wires."""
        wires = self.cfg.wires
        if wires is None:
            return
        rng = np.random.default_rng(0)
        n = len(wires)
        est = self._make()
        # a small batch and a large one: the kernels split large work over threads and count a
        # batch's bit planes through other compiled paths than a few records' tables
        for T in (4, WARM_RECORDS):
            if self.cfg.record_kind == "shadow":
                batch: ShadowBatch | BellBatch = ShadowBatch(rng.integers(0, 3, (T, n), dtype=np.uint8),
                                                             rng.integers(0, 2, (T, n), dtype=np.uint8), wires=wires)
            else:
                batch = BellBatch(rng.integers(0, 4, (T, n), dtype=np.uint8), wires=wires, wait=np.zeros(T))
            est.update(batch)
        estimate_body(self.cfg, est)

    def body(self) -> dict:
        """The JSON-friendly estimate: ``Estimate.as_dict()`` plus identification."""
        return estimate_body(self.cfg, self.est, sources=self.last_seq, updated=self.last_update,
                             last_record_time=self.last_record_time)

    def state_body(self, *, archive_pos: int | None = None) -> dict:
        """The ``{prefix}/state/{name}`` body: the mergeable ``to_bytes()`` state (base64) plus identification.

        A reducer (:mod:`qsense.streaming.reducer`) merges these across daemons;
        the fingerprint tells it whether two daemons' estimators may be merged.
        """
        return {"estimator": self.name, "type": self.cfg.type, "fingerprint": self.cfg.fingerprint(), "count": self.count,
                "archive_pos": archive_pos, "sources": dict(self.last_seq), "updated": self.last_update,
                "last_record_time": self.last_record_time, "state": base64.b64encode(self.est.to_bytes()).decode("ascii")}

    def state(self) -> EstimatorState:
        return EstimatorState(type=self.cfg.type, fingerprint=self.cfg.fingerprint(), state=self.est.to_bytes())

    def changes(self, st: EstimatorState) -> str | None:
        """How the configuration differs from the one that made checkpointed state ``st``
        (``"observables ['Z0'] -> ['Z0', 'X1']"``), or None if it does not."""
        now = self.cfg.fingerprint()
        if st.type == self.cfg.type and st.fingerprint == now:
            return None
        old = st.fingerprint if isinstance(st.fingerprint, Mapping) else {}
        diff = [f"{k} {_brief(old.get(k))} -> {_brief(now.get(k))}" for k in sorted(set(old) | set(now), key=str)
                if old.get(k) != now.get(k)]
        if st.type != self.cfg.type and not any(d.startswith("type ") for d in diff):
            diff.insert(0, f"type {st.type} -> {self.cfg.type}")
        return ", ".join(diff) or "its configuration fingerprint differs"

    def restore(self, st: EstimatorState) -> bool:
        """Adopt a checkpointed state if it was made by the same configuration (else False, state untouched)."""
        if self.changes(st) is not None:
            return False
        cls = type(self.est)
        try:
            self.est = cls.from_bytes(st.state)
        except ValueError as exc:
            raise CheckpointError(f"estimator {self.name!r}: unusable checkpoint state: {exc}") from None
        self.restored = True
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
    reset_sources:
        sources whose sequence state is forgotten once the checkpoint (and archive) are
        loaded (:meth:`reset_source`; ``qsense daemon --reset-source``).
    reset_estimators, allow_config_change:
        a checkpointed estimator whose configuration fingerprint differs from the
        configured one is refused (:class:`DaemonError`) unless it is named in
        ``reset_estimators`` or ``allow_config_change`` is set: then it starts from
        zero (back-filled from the archive if there is one).

    Typical use::

        async with EstimationDaemon("daemon.toml") as d:   # started
            d.ingest(batch)                                  # or via ZeroMQ/MQTT
            print(d.estimates()["visibility"])
        # leaving the block drains, publishes and checkpoints

    or ``await d.serve()`` until :meth:`request_stop` (the CLI wires SIGTERM and
    SIGINT to it).
    """

    def __init__(self, config: DaemonConfig | str | Path | Mapping[str, Any], *,
                 context: zmq.asyncio.Context | None = None, resume: bool = True, reset_sources: Sequence[str] = (),
                 reset_estimators: Sequence[str] = (), allow_config_change: bool = False) -> None:
        if isinstance(config, (str, Path)):
            config = load_config(config)
        elif not isinstance(config, DaemonConfig):
            config = parse_config(config)
        self.config: DaemonConfig = config
        self.name = config.name
        self.resume = resume
        self.reset_sources = tuple(reset_sources)
        self.reset_estimators = frozenset(reset_estimators)
        self.allow_config_change = allow_config_change
        self.tracker = SequenceTracker(logging.getLogger("qsense.sequence"), max_seq_jump=config.max_seq_jump,
                                       max_sources=config.max_sources)
        self.slots = [EstimatorSlot(c) for c in config.estimators]
        self.metrics = DaemonMetrics(self.stats)
        self.endpoints: dict[str, Any] = {}
        self.start_time = time.time()
        self.resumed_from: Checkpoint | None = None
        #: the line saying what was resumed (None until resumed from a checkpoint)
        self.resume_summary: str | None = None
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
        self._started_ok = False
        self._ckpt_lock = asyncio.Lock()
        self._acknowledged: dict[str, dict[str, int]] = {}
        self._update_hist = {s.name: self.metrics.update_seconds.labels(s.name) for s in self.slots}
        # -- the record archive (None without [archive]) --
        self.archive: ArchiveWriter | None = None
        #: last archive position folded into the estimators (what a checkpoint includes)
        self.folded_pos = -1
        self.archive_counts: dict[str, float] = {"stored": 0, "duplicates": 0, "refused": 0, "commits": 0,
                                                 "commit_seconds": 0.0, "sync_failures": 0, "replayed": 0, "acks": 0}
        #: admitted, waiting for the next commit: (batch, epoch, ack, key)
        self._staged: list[tuple[ShadowBatch | BellBatch, int, Any, tuple]] = []
        #: staged or being committed (not yet folded): key -> the batch's bytes (counted against byte_budget)
        self._inflight: dict[tuple, int] = {}
        self._held_bytes = 0
        #: stored but not yet fsync-ed (a failed fsync): (pos, staged item), folded and acknowledged after the next one
        self._unsynced: list[tuple[int, tuple]] = []
        self._store_lock = threading.Lock()  # keys staged or being committed (duplicates of these wait)
        self._dup_acks: list[tuple[Any, tuple]] = []  # duplicates to acknowledge once their original is durable
        self._commit_wanted = asyncio.Event()
        self._committed = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._seal_task: asyncio.Future | None = None
        self._recent: collections.deque = collections.deque(maxlen=RECENT_BATCHES)
        self._archive_log = ThrottledLog(log)
        #: input name -> times its task died and was restarted
        self.task_restarts: dict[str, int] = {}
        #: times the inputs stopped reading because byte_budget bytes were held (back-pressure)
        self.budget_waits = 0
        #: connected record peers of all ZeroMQ inputs together (max_peers), and each input's socket monitor
        self._peer_limit = PeerLimit(config.max_peers)
        self._monitors: list[ConnectionMonitor] = []
        #: [curve.sources]: source -> the client key ids (z85) that may send under its name
        self._source_keys: dict[str, frozenset[str]] = {}
        #: source -> batches refused because the sender's key may not use that name
        self._refused_identity: dict[str, int] = {}
        self._task_log = ThrottledLog(log)

    # -- ingest -----------------------------------------------------------------------------
    def ingest(self, batch: ShadowBatch | BellBatch, *, epoch: int = 0) -> bool:
        """Sequence-check ``batch`` and fold it into every estimator that wants it.

        Returns False for a duplicate (dropped).  Synchronous: in-process
        producers may call it directly instead of going through ZeroMQ.  With
        an archive the batch is stored and fsync-ed first; if the archive
        cannot keep it, :class:`~qsense.streaming.archive.ArchiveError` is
        raised and nothing is folded.
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
        if self.archive is not None:
            # in-process callers get the archive's guarantee too: stored, fsync-ed, then folded
            admitted = self._admit([(b, e, None) for b, e in items])
            group, self._staged = self._staged, []
            try:
                positions, synced = self._store([(b, e) for b, e, _, _ in group])
            except ArchiveError:
                self._release(key for _, _, _, key in group)
                raise
            self._release(key for _, _, _, key in group[len(positions):])
            self._unsynced.extend(zip(positions, group))
            if not synced:
                raise ArchiveError(f"archive {self.archive.path}: fsync failed; the batches are stored but not durable")
            done, self._unsynced = self._unsynced, []
            self._release(key for _, (_, _, _, key) in done)
            self._complete_commit(done)
            if len(positions) < len(group):
                self.archive_counts["refused"] += len(group) - len(positions)
                raise ArchiveError(f"archive {self.archive.path} is full: stored {len(positions)} of {len(group)} batch(es)")
            return len(admitted)
        accepted = []
        for batch, epoch in items:
            if self.tracker.observe(batch.source, batch.seq, epoch, batch.T).accepted:
                accepted.append(batch)
        self._fold(accepted)
        return len(accepted)

    def _fold(self, accepted: Sequence[ShadowBatch | BellBatch], slots: Sequence[EstimatorSlot] | None = None) -> None:
        """Update the live estimators (or ``slots``) with accepted batches, consecutive runs on the same wires joined."""
        if not accepted:
            return
        for slot in (self.slots if slots is None else slots):
            if slots is None and not slot.live:
                continue
            mine = [b for b in accepted if slot.wants(b)]
            i = 0
            while i < len(mine):
                j = i + 1
                # join small batches (the kernels' per-call cost dominates them); a large one goes
                # alone: joining it would only copy megabytes (measured 27 ms per join of 40 x 65,536)
                if mine[i].T < JOIN_BELOW_RECORDS:
                    records = mine[i].T
                    while (j < len(mine) and mine[j].wires == mine[i].wires and mine[j].T < JOIN_BELOW_RECORDS
                           and records < JOIN_BELOW_RECORDS):
                        records += mine[j].T
                        j += 1
                self._update(slot, mine[i:j])
                i = j

    # -- the archive: store, make durable, then fold and acknowledge ---------------------
    def _admit(self, items: Sequence[tuple[ShadowBatch | BellBatch, int, Any]]) -> list:
        """Stage the batches not yet in the archive for the next commit; returns those staged.

        ``items``: ``(batch, epoch, ack)`` where ``ack`` is ``(receiver, peer)``
        for a sender that wants an acknowledgement, else None.  The archive's
        index decides what is a duplicate -- it remembers every (source,
        epoch, seq) ever stored -- so a resend is recognised whatever the
        sequence tracker's window; the tracker still counts gaps and restarts.
        Staged batches are written and fsync-ed by the commit in a worker
        thread (the event loop never waits for the disk), then folded and
        acknowledged; a batch the archive cannot store is refused there: not
        folded, not acknowledged (the sender keeps it and resends).
        """
        assert self.archive is not None
        new = []
        for batch, epoch, ack in items:
            if self.tracker.observe(batch.source, batch.seq, epoch, batch.T).refused:
                # refused before it is stored: a forged seq must reach neither the archive nor a checkpoint;
                # not acknowledged either (counted in the source's "refused")
                continue
            key = (batch.source, int(epoch), int(batch.seq))
            if key in self._inflight or self.archive.contains(*key):
                self.archive_counts["duplicates"] += 1
                if ack is not None:
                    self._dup_acks.append((ack, key))
                continue
            self._hold(key, batch_bytes(batch))
            new.append((batch, int(epoch), ack, key))
        self._staged.extend(new)
        if self._staged or self._dup_acks:
            self._commit_wanted.set()
        return new

    async def _commit(self) -> None:
        """One group commit: write and fsync the staged batches (worker thread), then fold and acknowledge them."""
        assert self.archive is not None
        async with self._commit_lock:
            group, self._staged = self._staged, []
            if not group and not self._dup_acks and not self._unsynced:
                return
            t0 = time.perf_counter()
            work = asyncio.ensure_future(asyncio.to_thread(self._store, [(b, e) for b, e, _, _ in group]))
            cancelled = False
            positions: list[int] = []
            synced = False
            try:
                while True:
                    try:
                        positions, synced = await asyncio.shield(work)
                        break
                    except asyncio.CancelledError:
                        # the worker is writing these batches: finish the commit (fold, acknowledge), then stop
                        cancelled = True
                        if work.cancelled():
                            raise
            except ArchiveError as exc:
                self._archive_log.log(logging.ERROR, "refused", "archive cannot store %d batch(es) (%s); not acknowledging "
                                      "them: senders keep and resend them", len(group), exc)
            stored, refused = group[: len(positions)], group[len(positions):]
            self._release(key for _, _, _, key in refused)
            if refused:
                self.archive_counts["refused"] += len(refused)
                if stored:
                    self._archive_log.log(logging.ERROR, "refused", "archive full: stored %d of %d batch(es); the rest are not "
                                          "acknowledged (senders keep and resend them)", len(stored), len(group))
            self._unsynced.extend(zip(positions, stored))
            if synced:
                done, self._unsynced = self._unsynced, []
                self._release(key for _, (_, _, _, key) in done)
                self._complete_commit(done)
            elif self._unsynced:
                # stored but the fsync failed: not durable, so neither folded nor acknowledged; the next commit retries
                self.archive_counts["sync_failures"] += 1
                self._commit_wanted.set()
            self.archive_counts["commit_seconds"] = time.perf_counter() - t0
            if cancelled:
                raise asyncio.CancelledError
        if self.archive.pending_seals:
            self._schedule_seal()

    def _store(self, items: Sequence[tuple[ShadowBatch | BellBatch, int]]) -> tuple[list[int], bool]:
        """Append and fsync (runs in a worker thread; one at a time): ``(positions, durable)``."""
        assert self.archive is not None
        with self._store_lock:
            positions = self.archive.append_fitting(items) if items else []
            try:
                self.archive.sync()
            except ArchiveError as exc:
                log.error("archive fsync failed (%s): nothing acknowledged until a later fsync succeeds", exc)
                time.sleep(0.2)  # in the worker thread: do not spin on a failing disk
                return positions, False
            self.archive.maybe_rotate()
        return positions, True

    def _complete_commit(self, done: Sequence[tuple[int, tuple]]) -> None:
        """Fold and acknowledge what a commit made durable; acknowledge duplicates of durable batches."""
        acks = [(ack, key) for _, (_, _, ack, key) in done if ack is not None]
        # a duplicate is acknowledged once its original is durable; one whose original is
        # still staged waits for that commit, one whose original was refused is dropped
        waiting = []
        for ack, key in self._dup_acks:
            if key in self._inflight:
                waiting.append((ack, key))
            elif self.archive is not None and self.archive.contains(*key):
                acks.append((ack, key))
        self._dup_acks = waiting
        self._fold([b for _, (b, _, _, _) in done])
        if done:
            self.folded_pos = done[-1][0]
            self._recent.extend((pos, b) for pos, (b, _, _, _) in done)
            self.archive_counts["stored"] += len(done)
        self._send_acks(acks)
        self.archive_counts["commits"] += 1
        self._committed.set()
        self._committed = asyncio.Event()

    def _send_acks(self, acks: Sequence[tuple[Any, tuple]]) -> None:
        by_peer: dict[tuple[int, bytes], tuple[Any, list]] = {}
        for (rx, peer), key in acks:
            by_peer.setdefault((id(rx), peer), (rx, []))[1].append(key)
        for (_, peer), (rx, keys) in by_peer.items():
            try:
                rx.ack(peer, keys)
            except Exception as exc:  # noqa: BLE001 -- a vanished peer resends; never stop receiving for it
                log.debug("acknowledgement to a peer failed: %s", exc)
            self.archive_counts["acks"] += len(keys)

    def _schedule_seal(self) -> None:
        if self.archive is None or (self._seal_task is not None and not self._seal_task.done()):
            return

        async def seal() -> None:
            try:
                await asyncio.to_thread(self.archive.seal_pending)  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001 -- the .arrows file stays readable; retried at the next rotation
                log.exception("sealing an archive segment failed")

        self._seal_task = asyncio.get_running_loop().create_task(seal(), name="qsense-archive-seal")

    async def _commit_loop(self) -> None:
        assert self.config.archive is not None
        interval = self.config.archive.commit_interval
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            if interval > 0:
                await asyncio.sleep(interval)  # group commit: what arrives meanwhile shares the fsync
            await self._commit()

    async def _wait_commit_room(self) -> None:
        """Back-pressure on the inputs while too much is stored but not yet durable (batches or bytes)."""
        while len(self._inflight) >= MAX_PENDING_BATCHES or self._held_bytes >= self.config.byte_budget:
            if self._held_bytes >= self.config.byte_budget:
                self.budget_waits += 1
            self._commit_wanted.set()
            self._committed.clear()
            await self._committed.wait()

    def _hold(self, key: tuple, nbytes: int) -> None:
        self._inflight[key] = nbytes
        self._held_bytes += nbytes

    def _release(self, keys: Iterable[tuple]) -> None:
        for key in keys:
            self._held_bytes -= self._inflight.pop(key, 0)

    def _open_archive(self) -> None:
        ac = self.config.archive
        assert ac is not None
        try:
            self.archive = ArchiveWriter(ac.path, segment_bytes=ac.segment_bytes, segment_seconds=ac.segment_seconds,
                                         retention_bytes=ac.retention_bytes, retention_seconds=ac.retention_seconds,
                                         capacity_bytes=ac.capacity_bytes)
        except ArchiveError as exc:
            raise DaemonError(f"archive: {exc}") from None
        self.archive.protect_pos = self.folded_pos

    def _replay(self) -> None:
        """Fold the archive after the checkpoint (and all of it into estimators the checkpoint lacks)."""
        assert self.archive is not None
        full = [s for s in self.slots if not s.restored] if self.resumed_from is not None else []
        start = -1 if full else self.folded_pos
        last = self.archive.durable_pos
        if last < self.folded_pos:
            log.warning("checkpoint includes archive position %d but the archive ends at %d: its estimates include "
                        "batches no longer in the archive", self.folded_pos, last)
        n = 0
        t0 = time.perf_counter()
        for e in open_archive(self.archive.path).entries(after=start, upto=last):
            if e.pos > self.folded_pos:
                self.tracker.observe(e.batch.source, e.batch.seq, e.epoch, e.batch.T)
                self._fold([e.batch])
                self.folded_pos = e.pos
                n += 1
            elif full:
                self._fold([e.batch], slots=full)
        self.archive_counts["replayed"] = n
        if n or full:
            log.info("replayed %d archived batch(es) after position %d%s in %.2fs", n, start if not full else self.folded_pos - n,
                     f"; back-filled {', '.join(s.name for s in full)} from the whole archive" if full else "",
                     time.perf_counter() - t0)

    # -- estimators added while running -------------------------------------------------
    async def add_estimator(self, cfg: EstimatorConfig) -> EstimatorSlot:
        """Add an estimator to the running daemon, back-filled from the archive.

        The new estimator first folds every archived batch up to the current
        position (in a worker thread, while the daemon keeps receiving), then
        catches up with what was folded meanwhile, then goes live: its
        estimate equals one over the whole archive plus what arrives after.
        Without an archive it starts empty (and says so).
        """
        if any(s.name == cfg.name for s in self.slots):
            raise ValueError(f"an estimator named {cfg.name!r} exists already")
        slot = EstimatorSlot(cfg)
        self._update_hist[slot.name] = self.metrics.update_seconds.labels(slot.name)
        if self.archive is None:
            self.slots.append(slot)
            log.info("estimator %r added; no [archive], so it starts from zero", slot.name)
            return slot
        slot.live = False
        self.slots.append(slot)
        t0 = time.perf_counter()
        done = -1
        path = self.archive.path

        def fill(after: int, upto: int) -> None:
            for e in open_archive(path).entries(after=after, upto=upto):
                self._fold([e.batch], slots=[slot])

        try:
            while self.folded_pos - done > RECENT_BATCHES // 2:
                target = self.folded_pos
                await asyncio.to_thread(fill, done, target)
                done = target
            # the last few from memory, with no await before going live: nothing is folded in between
            recent = [b for pos, b in self._recent if pos > done]
            covered = not recent or min(pos for pos, _ in self._recent if pos > done) == done + 1
            if covered:
                self._fold(recent, slots=[slot])
            else:
                fill(done, self.folded_pos)
        except BaseException:
            self.slots.remove(slot)
            raise
        slot.live = True
        log.info("estimator %r added and back-filled from the archive up to position %d (%d records) in %.2fs",
                 slot.name, self.folded_pos, slot.count, time.perf_counter() - t0)
        return slot

    def remove_estimator(self, name: str) -> None:
        """Stop and forget an estimator (its archived data stays)."""
        self.slots = [s for s in self.slots if s.name != name]

    async def reload(self, config: DaemonConfig | str | Path | Mapping[str, Any] | None = None) -> dict[str, list[str]]:
        """Apply a changed ``[[estimators]]`` list without a restart (SIGHUP does this).

        New estimators are back-filled from the archive, removed ones dropped,
        changed ones replaced (and back-filled).  Other sections need a
        restart: a change there is logged and ignored.  Returns the names
        ``{"added": [...], "removed": [...], "replaced": [...]}``.
        """
        if config is None:
            if self.config.source_file is None:
                raise ConfigError("this daemon was not started from a config file; nothing to reload")
            config = self.config.source_file
        if isinstance(config, (str, Path)):
            new = load_config(config)
        elif isinstance(config, DaemonConfig):
            new = config
        else:
            new = parse_config(config)
        others = [f.name for f in dataclasses.fields(DaemonConfig) if f.name not in ("estimators", "source_file")
                  and getattr(new, f.name) != getattr(self.config, f.name)]
        if others:
            log.warning("reload: changes to %s need a restart; kept the running settings", ", ".join(others))
        old = {s.name: s for s in self.slots}
        wanted = {c.name: c for c in new.estimators}
        out: dict[str, list[str]] = {"added": [], "removed": [], "replaced": []}
        for name in list(old):
            if name not in wanted:
                self.remove_estimator(name)
                out["removed"].append(name)
        for name, c in wanted.items():
            if name in old and old[name].cfg == c:
                continue
            if name in old:
                self.remove_estimator(name)
                out["replaced"].append(name)
            else:
                out["added"].append(name)
            await self.add_estimator(c)
        self.config = dataclasses.replace(self.config, estimators=tuple(s.cfg for s in self.slots))
        log.info("reload: added %s, removed %s, replaced %s", out["added"] or "none", out["removed"] or "none",
                 out["replaced"] or "none")
        return out

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
        return {s.name: s.body() for s in self.slots if s.live}

    def stats(self) -> dict[str, Any]:
        """All counters (the Prometheus collector and the status message read this)."""
        conns = {m.name: dict(m.counts) for m in self._monitors}
        zin = {
            r.name: {"messages": r.received_messages, "bytes": r.received_bytes, "malformed": dict(r.malformed),
                     "connections": conns.get(r.name, {})}
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
            "task_restarts": dict(self.task_restarts),
            "refused_identity": dict(self._refused_identity),
            "limits": {"sources": len(self.tracker.sources), "max_sources": self.config.max_sources,
                       "refused_sources": self.tracker.refused_sources,
                       "peers": self._peer_limit.connected, "max_peers": self.config.max_peers,
                       "held_bytes": self._held_bytes, "byte_budget": self.config.byte_budget,
                       "budget_waits": self.budget_waits},
            "mqtt_clients": clients,
            "checkpoint": dict(self.checkpoints) if self.config.checkpoint else {},
            "archive": ({**self.archive.stats(), **self.archive_counts, "folded_pos": self.folded_pos,
                         "pending": len(self._inflight)} if self.archive is not None else {}),
        }

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Restore the checkpoint, bind every socket, start the tasks."""
        if self._started:
            return
        self._started = True
        self._started_ok = False
        cfg = self.config
        try:
            if cfg.kernel_threads is not None and cfg.kernel_threads != kernels.get_threads():
                # process-wide: the counting kernels of every estimator use them
                kernels.set_threads(cfg.kernel_threads)
            t_warm = time.perf_counter()
            for slot in self.slots:
                try:
                    slot.warm()
                except Exception as exc:  # noqa: BLE001 -- a warm-up problem only costs the first batch's latency
                    log.debug("warming estimator %r failed: %s", slot.name, exc)
            log.debug("estimator kernels ready in %.2f s", time.perf_counter() - t_warm)
            if cfg.checkpoint is not None:  # also without resume: the key signs every checkpoint written
                self._restore(cfg.checkpoint)
            if cfg.archive is not None:
                self._open_archive()
                self._replay()
            for name in self.reset_sources:  # after the replay, which rebuilds the marks from the archive
                self.reset_source(name)
            if self._ctx is None:
                self._ctx = zmq.asyncio.Context()
            curve = None
            if cfg.curve is not None:
                curve = CurveServerKeys(cfg.curve.server_secret_key, cfg.curve.authorized_keys)
                try:
                    self._source_keys.update({src: frozenset(public_key_id(f) for f in files) for src, files in cfg.curve.sources})
                except Exception as exc:  # noqa: BLE001 -- an unreadable key file is a start-up error
                    raise DaemonError(f"curve.sources: {exc}") from None
                try:
                    curve.load()  # before any socket: a public key given as the secret one must not leave one half made
                except Exception as exc:  # noqa: BLE001 -- any unreadable key file is a start-up error
                    raise DaemonError(f"curve.server_secret_key: {cfg.curve.server_secret_key}: {exc}") from None
                try:
                    self._auth = start_authenticator(self._ctx, cfg.curve.authorized_keys)
                except (ValueError, OSError) as exc:
                    raise DaemonError(f"curve.authorized_keys: {exc}") from None
            for i, zc in enumerate(cfg.zmq_inputs):
                _check_hwm(zc.hwm, f"inputs.zmq[{i}].hwm")
                before = self._open_sockets()
                try:
                    # acknowledged by the daemon itself: after the durable write with an archive, after folding without
                    rx = _BoundReceiver(self._source_keys, self._refused_identity, zc.endpoint, bind=zc.bind, hwm=zc.hwm, max_message_bytes=zc.max_message_bytes,
                                        curve=curve if zc.curve else None, context=self._ctx, name=zc.name, auto_ack=False)
                except (zmq.ZMQError, ValueError, OverflowError) as exc:
                    self._close_new_sockets(before)
                    raise DaemonError(f"inputs.zmq[{i}].endpoint (input {zc.name!r}): cannot {'bind' if zc.bind else 'connect'} "
                                      f"{zc.endpoint}: {exc}") from None
                self._receivers.append(rx)
                self.endpoints[f"input.{zc.name}"] = rx.endpoint
                if zc.bind:
                    _warn_all_interfaces(zc.endpoint, f"inputs.zmq[{i}].endpoint", zc.curve)
            if cfg.zmq_output is not None:
                zo = cfg.zmq_output
                _check_hwm(zo.hwm, "outputs.zmq.hwm")
                before = self._open_sockets()
                try:
                    self._publisher = EstimatePublisher(zo.endpoint, zo.snapshot_endpoint, hwm=zo.hwm,
                                                        curve=curve if zo.curve else None, context=self._ctx)
                except (zmq.ZMQError, ValueError, OverflowError) as exc:
                    # the PUB socket binds first: if it got an address, the snapshot socket is the one that failed
                    pub_bound = any(s.type == zmq.PUB and s.get(zmq.LAST_ENDPOINT) for s in self._open_sockets() - before)
                    self._close_new_sockets(before)
                    key, ep = ("snapshot_endpoint", zo.snapshot_endpoint) if pub_bound else ("endpoint", zo.endpoint)
                    raise DaemonError(f"outputs.zmq.{key}: cannot bind {ep}: {exc}") from None
                if self.resumed_from is not None:
                    self._publisher.pub_seq = self.resumed_from.pub_seq  # keep pub_seq increasing for subscribers
                self._publisher.start()
                self.endpoints["estimates"] = self._publisher.endpoint
                _warn_all_interfaces(zo.endpoint, "outputs.zmq.endpoint", zo.curve)
                if zo.snapshot_endpoint:
                    _warn_all_interfaces(zo.snapshot_endpoint, "outputs.zmq.snapshot_endpoint", zo.curve)
                if self._publisher.snapshot_endpoint:
                    self.endpoints["snapshot"] = self._publisher.snapshot_endpoint
            if cfg.prometheus is not None:
                self._metrics_server = MetricsServer(self.metrics, cfg.prometheus.host, cfg.prometheus.port)
                try:
                    self.endpoints["metrics"] = f"http://{cfg.prometheus.host}:{await self._metrics_server.start()}/metrics"
                except OSError as exc:
                    raise DaemonError(f"metrics: cannot listen on {cfg.prometheus.host}:{cfg.prometheus.port}: {exc}") from None
                _warn_all_interfaces(f"tcp://{cfg.prometheus.host}:{cfg.prometheus.port}", "outputs.prometheus.host", False)
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
                        flush_interval=mc.flush_interval, max_queued_batches=mc.max_queued_batches,
                        max_payload_bytes=mc.max_payload_bytes, name=mc.name,
                    )
                    src.start()
                    self._mqtt_sources.append(src)
                    self._input_tasks.append(loop.create_task(
                        self._supervised(mc.name, lambda src=src: self._mqtt_loop(src)), name=f"qsense-in-{mc.name}"))
            for rx in self._receivers:
                mon = ConnectionMonitor(rx.socket, rx.name, self._peer_limit)
                self._monitors.append(mon)
                self._service_tasks.append(loop.create_task(mon.run(), name=f"qsense-monitor-{rx.name}"))
                self._input_tasks.append(loop.create_task(
                    self._supervised(rx.name, lambda rx=rx: self._zmq_loop(rx)), name=f"qsense-in-{rx.name}"))
            self._service_tasks.append(loop.create_task(self._publish_loop(), name="qsense-publish"))
            if cfg.checkpoint is not None:
                self._service_tasks.append(loop.create_task(self._checkpoint_loop(), name="qsense-checkpoint"))
            if self.archive is not None:
                self._service_tasks.append(loop.create_task(self._commit_loop(), name="qsense-archive-commit"))
        except BaseException:
            await self._close_resources()
            raise
        self._started_ok = True
        log.info("daemon %r running: %s", self.name, ", ".join(f"{k}={v}" for k, v in self.endpoints.items()) or "in-process only")

    #: ``qsense daemon --fresh-on-bad-checkpoint``: a refused checkpoint (forged, corrupt, inconsistent) is moved
    #: aside and the daemon starts from zero; by default it is moved aside and :meth:`start` raises CheckpointError
    fresh_on_bad_checkpoint: bool = False
    #: ``qsense daemon --trust-unsigned-checkpoint``: accept (once) a checkpoint of the earlier unauthenticated format
    trust_unsigned_checkpoint: bool = False

    def _restore(self, ck: Any) -> None:
        """Ready the checkpoint file (key, stale temporaries); when resuming, validate
        the checkpoint completely -- MAC, schema, every estimator state against its
        configuration, the sequence marks -- and only then adopt it."""
        from qsense.estimators.serial import configuration

        from .checkpoint import CheckpointFile

        path = ck.path
        store = CheckpointFile(path, ck.key_file, fresh_on_bad=self.fresh_on_bad_checkpoint,
                               trust_unsigned=self.trust_unsigned_checkpoint)
        store.remove_temporaries()
        if not self.resume:
            return
        ckpt = store.load()  # a refused file is moved aside: CheckpointError, or None with fresh_on_bad_checkpoint
        if ckpt is None:
            log.info("no checkpoint at %s; starting fresh", path)
            return
        unknown = sorted(self.reset_estimators - {s.name for s in self.slots})
        if unknown:
            raise DaemonError(f"--reset-estimators: no estimator named {', '.join(map(repr, unknown))} is configured")
        # refuse before adopting anything: a changed estimator must not silently restart from zero
        refused = []
        fresh = []
        for slot in self.slots:
            st = ckpt.estimators.get(slot.name)
            if st is None:
                continue
            if slot.name in self.reset_estimators:
                fresh.append(f"{slot.name} (as asked)")
            elif (what := slot.changes(st)) is not None:
                if self.allow_config_change:
                    fresh.append(f"{slot.name} (changed: {what})")
                else:
                    refused.append((slot.name, f"estimator {slot.name!r} was checkpointed with another configuration ({what})"))
        if refused:
            names = ",".join(n for n, _ in refused)
            raise DaemonError(f"checkpoint {path}: {'; '.join(w for _, w in refused)}; refusing to resume it: --reset-estimators {names} starts "
                              f"it from zero (--allow-config-change: every changed one), --no-resume ignores the checkpoint")

        def checked(slot: EstimatorSlot, st: EstimatorState) -> Any:
            try:
                est = type(slot.est).from_bytes(st.state)
            except ValueError as exc:
                raise CheckpointError(f"estimator {slot.name!r}: unusable state: {exc}") from None
            # the fingerprint is only what the writer claims: the state itself must hold the configured
            # observables, groups, subsystems ... (else a kept fingerprint would publish whatever the state holds)
            want, got = configuration(slot._make()), configuration(est)
            if got != want:
                keys = ", ".join(k for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k))
                raise CheckpointError(f"estimator {slot.name!r}: the state's {keys} differ from the configuration "
                                      "although its fingerprint matches (forged or inconsistent checkpoint)")
            wires = getattr(est, "wires", None)
            if slot.cfg.wires is not None and wires is not None and tuple(wires) != tuple(slot.cfg.wires):
                raise CheckpointError(f"estimator {slot.name!r}: the state is bound to wires {_short(tuple(wires))}, "
                                      f"configured {_short(slot.cfg.wires)}")
            return est

        states: dict[str, Any] = {}
        try:
            for slot in self.slots:
                st = ckpt.estimators.get(slot.name)
                if st is not None and slot.name not in self.reset_estimators and slot.changes(st) is None:
                    states[slot.name] = checked(slot, st)
            try:  # on a scratch tracker first: a refused checkpoint leaves the real one untouched
                SequenceTracker(logging.getLogger("qsense.sequence"), max_seq_jump=self.config.max_seq_jump).restore(ckpt.sources)
            except ValueError as exc:
                raise CheckpointError(f"sources: {exc}") from None
        except CheckpointError as exc:
            store.refuse(str(exc))  # raises unless fresh_on_bad_checkpoint
            log.info("no usable checkpoint at %s; starting fresh", path)
            return
        for slot in self.slots:
            if slot.name in states:
                slot.est, slot.restored = states[slot.name], True
        self.tracker.restore(ckpt.sources)
        self.resumed_from = ckpt
        self.folded_pos = ckpt.archive_pos
        self._acknowledged = {k: dict(v) for k, v in ckpt.sources.items()}
        restored = ", ".join(f"{s.name}={s.count}" for s in self.slots if s.restored) or "no estimator"
        sources = ", ".join(f"{k}@seq {v['seq']}" for k, v in ckpt.sources.items()) or "none"
        zero = f"; started from zero: {', '.join(fresh)}" if fresh else ""
        age = max(0.0, time.time() - ckpt.written_at)
        self.resume_summary = f"resumed from checkpoint {path} (written {age:.1f}s ago): {restored}{zero}; sources {sources}"
        # WARNING, not INFO: state carried over from an earlier run must never go unnoticed
        log.warning("%s", self.resume_summary)

    def reset_source(self, name: str) -> bool:
        """Forget a source's sequence state (an operator reset); its next batch starts it afresh.

        For a source silenced by a forged sequence number (``docs/daemon.md``,
        trust model).  The next checkpoint no longer holds its marks.  With an
        archive, batches stored before keep being recognised as duplicates by
        the archive's index.  Returns whether the source was known.
        """
        known = self.tracker.forget(name)
        self._acknowledged.pop(name, None)
        log.warning("source %r reset by the operator%s", name, "" if known else " (it was not known)")
        return known

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
        if self.archive is not None:
            await self._commit()  # what was stored is made durable, folded and acknowledged before the checkpoint
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
        if self.archive is not None:
            if self._seal_task is not None:
                await asyncio.gather(self._seal_task, return_exceptions=True)
            try:
                await asyncio.to_thread(self.archive.close)
            except Exception:  # noqa: BLE001 -- the open segment stays and is sealed on the next start
                log.exception("closing the archive failed")
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
                if self._unbound_mqtt(item.batch, src.name):
                    self._accept_items([(item.batch, item.epoch, None)])
                n += 1
        for rx in self._receivers:
            while time.monotonic() < deadline:
                items = []
                while len(items) < 64 and (msg := await rx.recv_nowait()) is not None:
                    items.append((msg.batch, msg.epoch, _ack_ref(rx, msg)))
                if not items:
                    break
                self._accept_items(items)
                n += len(items)
        return n

    def _open_sockets(self) -> set:
        """The context's open sockets (to close those a failed constructor left behind)."""
        # pyzmq keeps a WeakSet of a context's sockets; a socket left open blocks Context.term() forever
        return {s for s in list(getattr(self._ctx, "_sockets", ())) if not s.closed}

    def _close_new_sockets(self, before: set) -> None:
        for s in self._open_sockets() - before:
            s.close(linger=0)

    async def _close_resources(self) -> None:
        if self.archive is not None:  # a no-op after a clean close; releases the lock after a failed start
            try:
                self.archive.close(seal_open=False)
            except Exception:  # noqa: BLE001
                log.exception("releasing the archive failed")
        for src in self._mqtt_sources:
            await src.close()
        for t in self._service_tasks:
            t.cancel()
        await asyncio.gather(*self._service_tasks, return_exceptions=True)
        self._service_tasks = []
        for mon in self._monitors:  # before the sockets: an open monitor keeps the context from terminating
            mon.close()
        self._monitors = []
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
            # destroy, not term: a socket some failed start-up step left open must not block the exit
            self._ctx.destroy(linger=0)
            self._ctx = None

    async def __aenter__(self) -> "EstimationDaemon":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # -- tasks -------------------------------------------------------------------------------
    async def _supervised(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run an input task, restarting it if it dies (:func:`~qsense.streaming.transport.supervise`):
        a bug costs a logged restart (``task_restarts``), never the input."""

        def restarted() -> None:
            self.task_restarts[name] = self.task_restarts.get(name, 0) + 1

        await supervise(body, what=f"input {name!r}", log=self._task_log, backoff=Backoff(0.05, 2.0), on_restart=restarted)

    async def _zmq_loop(self, rx: RecordReceiver) -> None:
        limit = self.config.coalesce_records
        budget = self.config.byte_budget
        while True:
            if self.archive is not None:
                await self._wait_commit_room()
            msg = await rx.recv()
            items, records, size = [(msg.batch, msg.epoch, _ack_ref(rx, msg))], msg.batch.T, batch_bytes(msg.batch)
            room = budget - self._held_bytes  # what the budget has left (staged and committing batches hold the rest)
            # take what is already queued (recv_nowait never suspends, so a
            # cancellation cannot strike between receiving and ingesting)
            while records < limit and size < room and (more := await rx.recv_nowait()) is not None:
                items.append((more.batch, more.epoch, _ack_ref(rx, more)))
                records += more.batch.T
                size += batch_bytes(more.batch)
            self._accept_items(items)
            if self.archive is not None and self.config.archive.fsync == "batch":  # type: ignore[union-attr]
                await self._commit()
            # a queued message makes recv() return without suspending; yield so
            # that publishing and checkpoints run while data pours in
            await asyncio.sleep(0)

    async def _mqtt_loop(self, src: Any) -> None:
        limit = self.config.coalesce_records
        budget = self.config.byte_budget
        while True:
            if self.archive is not None:
                await self._wait_commit_room()
            item = await src.get()
            items, records, size = [(item.batch, item.epoch, None)], item.batch.T, batch_bytes(item.batch)
            room = budget - self._held_bytes
            while records < limit and size < room and (more := src.get_nowait()) is not None:
                items.append((more.batch, more.epoch, None))
                records += more.batch.T
                size += batch_bytes(more.batch)
            self._accept_items([it for it in items if self._unbound_mqtt(it[0], src.name)])
            await asyncio.sleep(0)

    def _unbound_mqtt(self, batch: ShadowBatch | BellBatch, input_name: str) -> bool:
        """False (counted, logged) for a batch under a ``[curve.sources]`` name: MQTT carries no CURVE key."""
        if batch.source not in self._source_keys:
            return True
        self._refused_identity[batch.source] = self._refused_identity.get(batch.source, 0) + 1
        self._task_log.log(logging.WARNING, f"id:{batch.source}", "input %r: refused a batch for source %r: that name is bound "
                           "to CURVE keys ([curve.sources]) and MQTT carries none", input_name, batch.source)
        return False

    def _accept_items(self, items: list[tuple[ShadowBatch | BellBatch, int, Any]]) -> None:
        """Inputs' batches in: through the archive (stored now; folded and acknowledged at the
        commit), or without one sequence-checked, folded and acknowledged at once."""
        if self.archive is not None:
            self._admit(items)
            return
        self.ingest_many([(b, e) for b, e, _ in items])
        self._send_acks([(ack, (b.source, int(e), int(b.seq))) for b, e, ack in items if ack is not None])

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
        # bounded however many sources there are: the busiest STATUS_SOURCES by name, the rest summed
        shown, rest, n_rest = top_sources(s["sources"], STATUS_SOURCES)
        return {
            "daemon": self.name, "time": time.time(), "uptime": time.time() - self.start_time,
            "totals": s["totals"], "sources": shown, "estimators": s["estimators"],
            **({"other_sources": {"count": n_rest, **rest}} if n_rest else {}),
            "inputs": s["inputs"], "checkpoint": s["checkpoint"], "limits": s["limits"],
            "acknowledged": {k: v for k, v in self._acknowledged.items() if k in shown} if n_rest else self._acknowledged,
        }

    async def publish_estimates(self) -> None:
        """Publish every estimator's current body and the status once."""
        if self._publisher is None and self._mqtt_out is None:
            return  # no outputs (e.g. the in-process demo daemon): building bodies of 8,064 targets would be wasted
        now = time.time()
        bodies = {s.name: {"daemon": self.name, "time": now, **s.body()} for s in self.slots if s.live}
        states: dict[str, dict] = {}
        if self._publisher is not None and self.config.zmq_output.states:  # type: ignore[union-attr]
            # taken in the same synchronous step as the bodies: states and archive position agree
            pos = self.folded_pos if self.archive is not None else None
            states = {s.name: {"daemon": self.name, "time": now, **s.state_body(archive_pos=pos)} for s in self.slots if s.live}
        status = self.status()
        if self._publisher is not None:
            prefix = self.config.zmq_output.topic_prefix  # type: ignore[union-attr]
            for name, body in bodies.items():
                await self._publisher.publish(f"{prefix}/estimates/{name}", body)
            for name, body in states.items():
                await self._publisher.publish(f"{prefix}/state/{name}", body)
            await self._publisher.publish(f"{prefix}/status", status)
            self.published["zmq"] += len(bodies) + len(states) + 1
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
            archive_pos = self.folded_pos
            try:
                ckpt = Checkpoint(
                    daemon=self.name, written_at=time.time(), sources=marks,
                    estimators={s.name: s.state() for s in self.slots if s.live},
                    pub_seq=self._publisher.pub_seq if self._publisher is not None else 0,
                    archive_pos=archive_pos,
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
            if self.archive is not None:
                self.archive.protect_pos = archive_pos  # retention may now delete what this checkpoint includes
            self.metrics.checkpoint_seconds.observe(time.perf_counter() - t0)
            log.debug("checkpoint written to %s (%d bytes)", path, size)
            return path


class _BoundReceiver(RecordReceiver):
    """A :class:`RecordReceiver` that refuses batches whose source name the sender's CURVE key may not use.

    ``source_keys`` (``[curve.sources]``): source -> allowed client key ids (the
    ZAP ``User-Id``, z85 of the public key, read from the message's frames).  A
    bound source sent by another key, or over a socket without CURVE (no
    ``User-Id``), is dropped before the sequence check -- not folded, stored,
    acknowledged or checkpointed -- and counted in ``refused``; sources not
    listed are open to every authorized key.
    """

    def __init__(self, source_keys: Mapping[str, frozenset[str]], refused: dict[str, int], *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._source_keys = source_keys
        self._refused = refused
        self._id_log = ThrottledLog(log)

    def _accept(self, frames: list) -> Any:
        got = super()._accept(frames)
        if got is None or not self._source_keys:
            return got
        allowed = self._source_keys.get(got.batch.source)
        if allowed is None:
            return got
        try:
            user = frames[-1].get("User-Id")
        except (zmq.ZMQError, AttributeError, OSError):  # no metadata: not a CURVE connection
            user = None
        if user in allowed:
            return got
        self._refused[got.batch.source] = self._refused.get(got.batch.source, 0) + 1
        self._id_log.log(logging.WARNING, f"id:{got.batch.source}", "%s: refused a batch for source %r from %s: that key may "
                         "not use this source name ([curve.sources])", self.name, got.batch.source,
                         f"client key {user}" if user else "an unauthenticated connection")
        return None


def batch_bytes(batch: ShadowBatch | BellBatch) -> int:
    """Memory a received batch holds (its arrays, packed or not), for the daemon's byte budget."""
    return 128 + sum(v.nbytes for v in vars(batch).values() if isinstance(v, np.ndarray))


def _brief(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


#: hosts that bind every interface of the machine
_ALL_INTERFACES = {"*", "0.0.0.0", "::", "[::]", ""}


def _warn_all_interfaces(endpoint: str, setting: str, curve: bool) -> None:
    """One WARNING when a socket listens on every interface: any host of the network can then reach it."""
    if not endpoint.startswith(("tcp://", "ws://", "wss://")):
        return
    host = endpoint.split("://", 1)[1].rsplit(":", 1)[0]
    if host.split(";")[-1] in _ALL_INTERFACES:
        log.warning("%s = %s listens on every network interface: any host that can reach this machine can connect%s; "
                    "bind 127.0.0.1 or one interface's address unless that is meant", setting, endpoint,
                    " (CURVE authenticates it)" if curve else " and nothing authenticates it (no CURVE)")


def _check_hwm(hwm: int, setting: str) -> None:
    # a ZeroMQ high-water mark is a C int; pyzmq would raise OverflowError half way through making a socket
    if not 1 <= hwm <= 2**31 - 1:
        raise DaemonError(f"{setting}: {hwm} is out of range (1..{2**31 - 1})")


def _ack_ref(rx: RecordReceiver, msg: Any) -> tuple[RecordReceiver, bytes] | None:
    """Where to send a message's acknowledgement, if its sender asked for one."""
    return (rx, msg.peer) if getattr(msg, "wants_ack", False) else None
