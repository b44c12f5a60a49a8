"""A builder for the whole acquisition chain: drivers → memory → scheduler → backend → records → daemon.

:class:`Chain` wires the existing parts, step by step or by keyword
arguments, and runs them as one unit::

    chain = (Chain(name="lab", clock=ManualClock())
             .driver(poisson_copies(rho, 1e4, 5000, seed=1))
             .memory("simulated", capacity=2, t2=1e-3)       # plugin name + options, or an object
             .scheduler("fixed", ratio=0.5)                  # policy name + options, or a Scheduler
             .backend("simulated", seed=2)                   # plugin name + options, or an object
             .daemon({"estimators": [{"name": "z", "type": "shadow", "observables": ["Z0"]}]}))
    result = await chain.run()
    result.estimates["z"], result.report.counters, result.complete

Where the records go (any combination of the first two with one of the last two):

* in-process ``estimators`` (anything with ``update(batch)``, e.g. a
  :class:`~qsense.acquisition.targets.TargetSet`) and plain ``sinks``
  (``await sink(batch)``), handed to the :class:`~qsense.acquisition.pipeline.Pipeline`;
* an in-process :class:`~qsense.streaming.daemon.EstimationDaemon` built from a
  config (TOML path, mapping or :class:`~qsense.streaming.config.DaemonConfig`):
  records travel over a real ZeroMQ DEALER → ROUTER (acknowledged) on 127.0.0.1 into it
  (:class:`~qsense.streaming.transport.RecordPublisher`), and :meth:`RunningChain.run`
  waits until the daemon has folded every record the pipeline sent;
* an external endpoint (a daemon running elsewhere): records are pushed there.

The chain reimplements nothing: it resolves plugin names
(:mod:`qsense.plugins`), shares one clock between memory, scheduler and
pipeline, and orders the lifecycle (daemon up, pipeline run, wait for the
daemon, publisher closed, daemon stopped).  It lives in the apps layer because
it joins acquisition and streaming, which are independent layers.

A chain runs once: drivers are async iterators that the pipeline consumes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from qsense import plugins
from qsense.acquisition.backends import MeasurementBackend
from qsense.acquisition.memory import Clock, MonotonicClock, QuantumMemory
from qsense.acquisition.pipeline import Pipeline, PipelineReport
from qsense.acquisition.scheduler import Policy, Scheduler
from qsense.records import BellBatch, ShadowBatch
from qsense.streaming.config import DaemonConfig, ZmqInputConfig, load_config, parse_config
from qsense.streaming.daemon import EstimationDaemon
from qsense.streaming.transport import RecordPublisher

__all__ = ["Chain", "ChainError", "ChainResult", "Monitor", "RunningChain"]

log = logging.getLogger(__name__)

Record = ShadowBatch | BellBatch
#: a plugin (or policy) by name: ``"simulated"`` or ``("simulated", {"seed": 2})``
Spec = str | tuple[str, Mapping[str, Any]]
#: called with the running chain every ``interval`` seconds (may be a coroutine function)
Monitor = Callable[["RunningChain"], None | Awaitable[None]]

#: the ZeroMQ input the chain adds to a daemon configuration that has none
_DEFAULT_INPUT = "tcp://127.0.0.1:*"
#: Pipeline parameters the chain fills itself (not allowed in ``pipeline_options``)
_CHAIN_SETS = {"drivers", "memory", "scheduler", "backend", "estimators", "sinks", "clock", "name"}


class ChainError(ValueError):
    """The chain is incompletely or inconsistently configured."""


def _split(spec: Any) -> tuple[Any, dict[str, Any]]:
    """``"name"`` / ``("name", {options})`` / an object → (thing, options)."""
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], Mapping):
        return spec[0], dict(spec[1])
    return spec, {}


@dataclass
class _DaemonSpec:
    config: DaemonConfig
    input: str
    resume: bool
    publisher_options: dict[str, Any]


@dataclass
class ChainResult:
    """What a chain run did.

    Attributes
    ----------
    report:
        The pipeline's :class:`~qsense.acquisition.pipeline.PipelineReport`.
    estimates:
        The in-process daemon's estimate bodies by estimator name, taken after it
        folded every record (empty without an in-process daemon).
    stats:
        The daemon's counters (:meth:`EstimationDaemon.stats`; empty without one).
    sent:
        Records sent over ZeroMQ, by record source (``"<name>.shadow"``, ...).
    folded:
        Records of those sources the in-process daemon took during this run.
    errors:
        ``(where, message)``: the pipeline's errors, then the chain's own
        (a failing monitor, a daemon that did not catch up).
    """

    report: PipelineReport
    estimates: dict[str, dict] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    folded: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every record sent reached the in-process daemon (True without one)."""
        return not self.folded or all(self.folded.get(src, 0) >= n for src, n in self.sent.items())

    @property
    def ok(self) -> bool:
        """No errors, every arrival accounted for, every record folded."""
        return not self.errors and self.report.unaccounted == 0 and self.complete


class Chain:
    """Configure an acquisition chain step by step (each step returns the chain) or by keywords.

    Parameters
    ----------
    name:
        The pipeline's name: records carry ``source = "<name>.shadow"`` / ``"<name>.bell"``.
    drivers:
        ``{label: driver}`` or a sequence of drivers; each an async iterable of
        copies or a driver plugin :data:`Spec` (see :meth:`driver`).
    memory, scheduler, backend:
        Objects or :data:`Spec` s (see :meth:`memory`, :meth:`scheduler`, :meth:`backend`).
    estimators, sinks:
        In-process estimators (``update(batch)``) and async sinks (``await sink(batch)``).
    daemon:
        Configuration of an in-process daemon (see :meth:`daemon` for the options).
    endpoint:
        ZeroMQ endpoint of an external daemon (see :meth:`endpoint`).
    monitor:
        A :data:`Monitor` called every ``monitor_interval`` seconds (see :meth:`monitor`).
    clock:
        Shared by memory, scheduler and pipeline.  Default: the memory object's
        clock, else :class:`~qsense.acquisition.memory.MonotonicClock` (wall time).
        A :class:`~qsense.acquisition.memory.ManualClock` means event time.
    batch_size, flush_interval, workers, on_arrival_full:
        Passed to :class:`~qsense.acquisition.pipeline.Pipeline`.
    pipeline_options:
        Any other :class:`~qsense.acquisition.pipeline.Pipeline` keyword (queue bounds, ``tick_interval``).
    settle_timeout:
        Longest wait (s) for the in-process daemon to fold the last records.
    """

    def __init__(
        self,
        *,
        name: str = "pipeline",
        drivers: Mapping[str, Any] | Sequence[Any] = (),
        memory: QuantumMemory | Spec | None = None,
        scheduler: Scheduler | Policy | Spec | None = None,
        backend: MeasurementBackend | Spec | None = None,
        estimators: Iterable[Any] = (),
        sinks: Iterable[Callable[[Record], Awaitable[None]]] = (),
        daemon: DaemonConfig | str | Path | Mapping[str, Any] | None = None,
        endpoint: str | None = None,
        monitor: Monitor | None = None,
        monitor_interval: float = 0.25,
        clock: Clock | None = None,
        batch_size: int = 256,
        flush_interval: float = 0.02,
        workers: int = 1,
        on_arrival_full: str = "block",
        pipeline_options: Mapping[str, Any] | None = None,
        settle_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.clock = clock
        self.pipeline_options: dict[str, Any] = {
            "batch_size": batch_size, "flush_interval": flush_interval, "workers": workers,
            "on_arrival_full": on_arrival_full, **dict(pipeline_options or {}),
        }
        unknown = set(self.pipeline_options) - (set(inspect.signature(Pipeline).parameters) - _CHAIN_SETS)
        if unknown:
            raise ChainError(f"unknown Pipeline option(s) {sorted(unknown)}")
        self.settle_timeout = float(settle_timeout)
        self._drivers: list[tuple[str | None, Any, dict[str, Any]]] = []
        self._memory: tuple[Any, dict[str, Any]] | None = None
        self._scheduler: tuple[Any, dict[str, Any]] | None = None
        self._backend: tuple[Any, dict[str, Any]] | None = None
        self._estimators: list[Any] = []
        self._sinks: list[Callable[[Record], Awaitable[None]]] = []
        self._daemon: _DaemonSpec | None = None
        self._endpoint: tuple[str, dict[str, Any]] | None = None
        self._monitors: list[tuple[Monitor, float]] = []
        self._opened = False
        items = drivers.items() if isinstance(drivers, Mapping) else ((None, d) for d in drivers)
        for label, d in items:
            thing, opts = _split(d)
            self.driver(thing, label=label, **opts)
        for attr, spec in (("memory", memory), ("scheduler", scheduler), ("backend", backend)):
            if spec is not None:
                thing, opts = _split(spec)
                getattr(self, attr)(thing, **opts)
        self.estimator(*estimators)
        self.sink(*sinks)
        if daemon is not None:
            self.daemon(daemon)
        if endpoint is not None:
            self.endpoint(endpoint)
        if monitor is not None:
            self.monitor(monitor, interval=monitor_interval)

    # -- steps ---------------------------------------------------------------------------------
    def driver(self, driver: AsyncIterable[Any] | str, /, *, label: str | None = None, **options: Any) -> Chain:
        """Add a driver: an async iterable of copies (or blocks), or a driver plugin
        name with its options (``.driver("telescope", sim=sim, rate=4000)``).

        ``label`` names it in the pipeline's counters (``arrived.<label>``) and is
        the copies' default source; default: the plugin name, or ``driver<i>``.
        """
        if not isinstance(driver, str) and options:
            raise ChainError("driver options are for a driver plugin given by name, not for a driver object")
        self._drivers.append((label, driver, options))
        return self

    def memory(self, memory: QuantumMemory | str, /, **options: Any) -> Chain:
        """Set the quantum memory: an object, or a memory plugin name with its
        options (``.memory("slots", capacity=4)``; the chain's clock is passed as
        ``clock`` unless given)."""
        if not isinstance(memory, str) and options:
            raise ChainError("memory options are for a memory plugin given by name, not for a memory object")
        self._memory = (memory, options)
        return self

    def scheduler(self, scheduler: Scheduler | Policy | str, /, **options: Any) -> Chain:
        """Set the scheduler: a :class:`~qsense.acquisition.scheduler.Scheduler`
        (its memory becomes the chain's if none is set), or a policy (name or
        object) with :class:`Scheduler` and policy options
        (``.scheduler("fixed", ratio=0.5)``, ``.scheduler("adaptive", targets=ts, replan_every=2000)``)."""
        if isinstance(scheduler, Scheduler) and options:
            raise ChainError("scheduler options are for a policy, not for a Scheduler object")
        self._scheduler = (scheduler, options)
        return self

    def backend(self, backend: MeasurementBackend | str, /, **options: Any) -> Chain:
        """Set the measurement backend: an object, or a backend plugin name with its
        options (``.backend("simulated", seed=2)``)."""
        if not isinstance(backend, str) and options:
            raise ChainError("backend options are for a backend plugin given by name, not for a backend object")
        self._backend = (backend, options)
        return self

    def estimator(self, *estimators: Any) -> Chain:
        """Add in-process estimators (``update(batch)``, optionally ``accepts(kind)``)."""
        self._estimators.extend(estimators)
        return self

    def sink(self, *sinks: Callable[[Record], Awaitable[None]]) -> Chain:
        """Add async sinks, awaited with every record batch."""
        self._sinks.extend(sinks)
        return self

    def daemon(self, config: DaemonConfig | str | Path | Mapping[str, Any], /, *, input: str | None = None,
               resume: bool = True, **publisher_options: Any) -> Chain:
        """Send the records to an in-process :class:`~qsense.streaming.daemon.EstimationDaemon`.

        ``config``: a TOML path, a mapping with the TOML structure or a
        :class:`~qsense.streaming.config.DaemonConfig` (validated now).  Records
        go over ZeroMQ into its ``[[inputs.zmq]]`` named ``input`` (default: the
        first); a configuration without one gets a ROUTER input on a free port of
        127.0.0.1.  ``resume`` is the daemon's (load its checkpoint, if any);
        ``publisher_options`` go to :class:`~qsense.streaming.transport.RecordPublisher`
        (``hwm``, ``curve`` for an input with ``curve = true``, ...).
        """
        if self._endpoint is not None:
            raise ChainError("records already go to an external endpoint; use a daemon or an endpoint, not both")
        if isinstance(config, (str, Path)):
            cfg = load_config(config)
        elif isinstance(config, DaemonConfig):
            cfg = config
        else:
            cfg = parse_config(config)
        if not cfg.zmq_inputs:
            taken = {m.name for m in cfg.mqtt_inputs}
            name = next(n for n in ("records", "chain", "chain-records") if n not in taken)
            cfg = dataclasses.replace(cfg, zmq_inputs=(ZmqInputConfig(_DEFAULT_INPUT, name=name),))
        names = [z.name for z in cfg.zmq_inputs]
        chosen = input if input is not None else names[0]
        zin = next((z for z in cfg.zmq_inputs if z.name == chosen), None)
        if zin is None:
            raise ChainError(f"the daemon configuration has no ZeroMQ input {chosen!r}; it has {names}")
        if not zin.bind:
            raise ChainError(f"daemon input {chosen!r} connects (bind = false); the chain pushes to a binding input")
        if zin.curve and "curve" not in publisher_options:
            raise ChainError(f"daemon input {chosen!r} requires CURVE: pass curve=CurveClientKeys(...)")
        self._daemon = _DaemonSpec(cfg, chosen, resume, publisher_options)
        return self

    def endpoint(self, endpoint: str, /, **publisher_options: Any) -> Chain:
        """Push the records to a ZeroMQ endpoint (a daemon running elsewhere);
        ``publisher_options`` go to :class:`~qsense.streaming.transport.RecordPublisher`."""
        if self._daemon is not None:
            raise ChainError("records already go to an in-process daemon; use a daemon or an endpoint, not both")
        self._endpoint = (endpoint, publisher_options)
        return self

    def monitor(self, callback: Monitor, /, *, interval: float = 0.25) -> Chain:
        """Call ``callback(running_chain)`` every ``interval`` seconds (wall time)
        while the pipeline runs, and once more when the daemon has folded every
        record (progress bars, convergence snapshots).  A monitor that raises is
        logged, reported in :attr:`ChainResult.errors` and not called again."""
        if not interval > 0:
            raise ChainError("the monitor interval must be positive")
        self._monitors.append((callback, float(interval)))
        return self

    # -- building and running -----------------------------------------------------------------
    def open(self) -> RunningChain:
        """Build every part (raising :class:`ChainError` or
        :class:`~qsense.plugins.PluginError` for a bad configuration); use the
        result as ``async with chain.open() as live: result = await live.run()``."""
        if self._opened:
            raise ChainError("this chain has already run (its drivers are consumed); build a new one")
        if not self._drivers:
            raise ChainError("no driver: add one with chain.driver(...)")
        if self._backend is None:
            raise ChainError("no backend: set one with chain.backend(...), e.g. chain.backend('simulated')")
        if self._scheduler is None:
            raise ChainError("no scheduler: set one with chain.scheduler(...), e.g. chain.scheduler('fixed', ratio=0.5)")
        if not (self._estimators or self._sinks or self._daemon or self._endpoint):
            raise ChainError("the records go nowhere: add estimators, sinks, a daemon or an endpoint")
        sched, sched_opts = self._scheduler
        mem_spec = self._memory
        if mem_spec is None:
            if not isinstance(sched, Scheduler):
                raise ChainError("no memory: set one with chain.memory(...), e.g. chain.memory('slots', capacity=2)")
            mem_spec = (sched.memory, {})
        mem, mem_opts = mem_spec
        clock = self.clock
        if clock is None:
            clock = getattr(mem, "clock", None) if not isinstance(mem, str) else None
            clock = clock if clock is not None else MonotonicClock()
        if isinstance(mem, str):
            # plugins.create, not make_memory: its `name` parameter would swallow the memory's own `name` option
            memory = plugins.create("memory", mem, **{"clock": clock, **mem_opts})
        else:
            memory = mem
            if getattr(memory, "clock", clock) is not clock:
                raise ChainError("the memory object has another clock than the chain; build it with the chain's clock")
        if isinstance(sched, Scheduler):
            scheduler = sched
            if scheduler.memory is not memory:
                raise ChainError("the Scheduler object uses another memory than the chain's")
            if scheduler.clock is not clock:
                raise ChainError("the Scheduler object has another clock than the chain; build it with the chain's clock")
        else:
            scheduler = Scheduler(sched, memory, **{"clock": clock, **sched_opts})
        drivers: dict[str, Any] = {}
        for i, (label, d, opts) in enumerate(self._drivers):
            if isinstance(d, str):
                obj = plugins.create("driver", d, **opts)
                label = label or (d if d not in drivers else f"{d}{i}")
            else:
                obj, label = d, label or f"driver{i}"
            if label in drivers:
                raise ChainError(f"two drivers labelled {label!r}")
            drivers[label] = obj
        be, be_opts = self._backend
        backend = plugins.create("backend", be, **be_opts) if isinstance(be, str) else be
        live = RunningChain(self, drivers, memory, scheduler, backend, clock)
        self._opened = True
        return live

    async def run(self, duration: float | None = None) -> ChainResult:
        """Open, run for at most ``duration`` seconds (default: until the drivers
        finish), wait for the daemon, close; see :meth:`RunningChain.run`."""
        async with self.open() as live:
            return await live.run(duration)


class RunningChain:
    """The built parts of a :class:`Chain`, started as an async context manager.

    Entering starts the in-process daemon (if any) and connects the record
    publisher; leaving closes the publisher and stops the daemon (it drains,
    publishes and checkpoints).  Monitors receive this object: ``pipeline``
    (its ``counters`` update live), ``daemon``, ``clock``, ``memory``,
    ``scheduler``, ``backend``, ``drivers``, ``publisher``.
    """

    def __init__(self, chain: Chain, drivers: dict[str, Any], memory: QuantumMemory, scheduler: Scheduler,
                 backend: MeasurementBackend, clock: Clock) -> None:
        self.chain = chain
        self.drivers = drivers
        self.memory = memory
        self.scheduler = scheduler
        self.backend = backend
        self.clock = clock
        self.daemon: EstimationDaemon | None = None
        self.publisher: RecordPublisher | None = None
        self.sent: dict[str, int] = {}
        self.errors: list[tuple[str, str]] = []
        self._base: dict[str, int] = {}
        self._failed: set[int] = set()  # monitors that raised: not called again
        self._entered = False
        sinks = list(chain._sinks)
        if chain._daemon is not None or chain._endpoint is not None:
            sinks.append(self._publish)
        self.pipeline = Pipeline(drivers, memory, scheduler, backend, estimators=chain._estimators, sinks=sinks,
                                 clock=clock, name=chain.name, **chain.pipeline_options)

    async def _publish(self, batch: Record) -> None:
        """The pipeline's ZeroMQ sink: send, then count what left, by source."""
        assert self.publisher is not None
        await self.publisher.send(batch)
        self.sent[batch.source] = self.sent.get(batch.source, 0) + batch.T

    async def __aenter__(self) -> Self:
        spec = self.chain._daemon
        try:
            if spec is not None:
                daemon = EstimationDaemon(spec.config, resume=spec.resume)
                await daemon.start()  # closes what it opened if it fails
                self.daemon = daemon
                # a resumed or shared daemon may already count records of these sources
                self._base = {src: st.records for src, st in self.daemon.tracker.sources.items()}
                self.publisher = RecordPublisher(self.daemon.endpoints[f"input.{spec.input}"], **spec.publisher_options)
            elif self.chain._endpoint is not None:
                endpoint, opts = self.chain._endpoint
                self.publisher = RecordPublisher(endpoint, **opts)
        except BaseException:
            await self._close()
            raise
        self._entered = True
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        await self._close(wait_acks=exc_type is None)

    async def _close(self, wait_acks: bool = False) -> None:
        if self.publisher is not None:
            if wait_acks:
                # a daemon with an [archive] acknowledges at the commit that folds, so the last
                # acknowledgements may still be in flight after _settle: wait for them (bounded)
                # rather than close with a warning about batches the daemon already has
                try:
                    await self.publisher.aclose(self.chain.settle_timeout)
                except TimeoutError as exc:
                    log.warning("%s: %s", self.chain.name, exc)
            self.publisher.close()
        if self.daemon is not None:
            await self.daemon.stop()

    def folded(self) -> dict[str, int]:
        """Records of each source sent so far that the in-process daemon has taken."""
        if self.daemon is None:
            return {}
        sources = self.daemon.tracker.sources
        return {src: (sources[src].records - self._base.get(src, 0)) if src in sources else 0 for src in self.sent}

    async def run(self, duration: float | None = None) -> ChainResult:
        """Run the pipeline (at most ``duration`` seconds of wall time), wait until
        the in-process daemon has folded every record it sent (at most
        ``settle_timeout``), call the monitors a last time and return a :class:`ChainResult`."""
        if not self._entered:
            raise ChainError("start the chain first: `async with chain.open() as live: await live.run()`")
        monitors = [asyncio.create_task(self._watch(i, every), name=f"{self.chain.name}.monitor{i}")
                    for i, (_, every) in enumerate(self.chain._monitors)]
        try:
            report = await self.pipeline.run(duration)
            await self._settle()
        finally:
            for t in monitors:
                t.cancel()
            await asyncio.gather(*monitors, return_exceptions=True)
        for i in range(len(self.chain._monitors)):
            await self._call(i)
        result = ChainResult(report, sent=dict(self.sent), folded=self.folded(), errors=[*report.errors, *self.errors])
        if self.daemon is not None:
            result.estimates = self.daemon.estimates()
            result.stats = self.daemon.stats()
        return result

    async def _settle(self) -> None:
        if self.daemon is None:
            return
        deadline = time.monotonic() + self.chain.settle_timeout
        while True:
            folded = self.folded()
            # a daemon with an [archive] counts a batch when it stores it and folds it at the next
            # commit: wait for that commit too, or the estimates would miss the last batches
            pending = (self.daemon.stats().get("archive") or {}).get("pending", 0) if self.daemon.archive is not None else 0
            if all(folded[src] >= n for src, n in self.sent.items()) and not pending:
                return
            if time.monotonic() >= deadline:
                missing = {src: n - folded[src] for src, n in self.sent.items() if folded[src] < n}
                self.errors.append(("daemon", f"records not folded after {self.chain.settle_timeout:g} s: {missing}"))
                log.error("%s: the daemon did not fold every record in time: %s missing", self.chain.name, missing)
                return
            await asyncio.sleep(0.02)

    async def _call(self, i: int) -> None:
        if i in self._failed:
            return
        cb = self.chain._monitors[i][0]
        try:
            out = cb(self)
            if inspect.isawaitable(out):
                await out
        except Exception as exc:  # a broken progress display must not lose the observation
            self._failed.add(i)
            where = f"monitor {getattr(cb, '__qualname__', type(cb).__name__)}"
            self.errors.append((where, f"{type(exc).__name__}: {exc}"))
            log.exception("%s: %s failed; not calling it again", self.chain.name, where)

    async def _watch(self, i: int, every: float) -> None:
        while i not in self._failed:
            await asyncio.sleep(every)
            await self._call(i)
