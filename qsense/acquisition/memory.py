"""Quantum memory: where copies wait for a partner before a two-copy measurement.

A *copy* (:class:`Copy`) is one preparation of the unknown state: a photon
heralded at a telescope array, a register prepared by a device, or (simulated)
a statevector / density matrix.  The scheduler either sends an arriving copy
straight to a single-copy measurement or stores it in a :class:`QuantumMemory`
slot until a partner arrives; while it waits it decoheres.

What every memory provides (the :class:`QuantumMemory` protocol):

* ``capacity`` slots; ``put(copy)`` stores a copy and returns its slot id (or
  ``None`` when it was refused; the refusal is counted, never silent);
* per-copy arrival times and ``waiting()``, the list of occupied slots, oldest
  first (for a hardware memory: the slots the device reports);
* ``take(slots, at)`` releases copies to the measurement port at time ``at``
  and returns :class:`StoredCopy` records that know how long each copy waited
  and (simulated) the state *decohered by that wait*;
* ``sweep(now)``: eviction of copies that waited longer than ``max_wait``
  (counted as ``evicted_expired``); ``evict(slots, reason)`` for any other
  eviction (counted by reason);
* ``counters``: a :class:`Counters` of everything that happened.

:class:`SlotMemory` is the in-process implementation (simulated copies; the
coherence model is pluggable, see ``qsense.sims.memory_sim.SimulatedMemory`` for the
one backed by ``sims.decohere``).  A hardware-backed memory implements the same
five coroutines by talking to the device: ``put`` is "the device reports a
photon stored in slot k", ``take`` is "release slots to the Bell/single-qubit
measurement port", ``waiting`` reflects the device's slot table, and arrival
times come from the device's clock.  Nothing above the memory needs to know.

Clocks are injectable (``clock=``) so that tests and event-time simulations are
deterministic: :class:`ManualClock` is advanced explicitly (the pipeline
advances it to each copy's arrival time when simulating), :class:`MonotonicClock`
is wall time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Hashable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from qsense import plugins
from qsense.estimators.decoherence import DecoherenceMismatchWarning, DecoherenceModel, decoherence_of

__all__ = [
    "Clock",
    "MonotonicClock",
    "ManualClock",
    "Counters",
    "Copy",
    "SlotInfo",
    "StoredCopy",
    "CoherenceModel",
    "IdealCoherence",
    "QuantumMemory",
    "SlotMemory",
    "ON_FULL",
    "make_memory",
]

log = logging.getLogger(__name__)

#: Policies for a ``put`` into a full memory.
ON_FULL = ("reject", "evict_oldest", "block")

#: A clock returns the current time in seconds (any epoch, monotone).
Clock = Callable[[], float]


class MonotonicClock:
    """Wall-clock time (``time.monotonic``) for live acquisition."""

    def __call__(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to: tests and event-time simulation.

    ``advance(dt)`` moves forward by ``dt``; ``advance_to(t)`` moves to ``t`` if
    that is later (it never goes backwards, so out-of-order arrivals from
    several drivers do not rewind time).
    """

    def __init__(self, t: float = 0.0) -> None:
        self.t = float(t)

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> float:
        if dt < 0:
            raise ValueError(f"a clock cannot go backwards (dt={dt})")
        self.t += float(dt)
        return self.t

    def advance_to(self, t: float) -> float:
        self.t = max(self.t, float(t))
        return self.t


class Counters(Counter):
    """Named event counts (a ``collections.Counter`` of str -> int).

    Every component keeps one so that nothing is dropped without being counted;
    ``snapshot()`` is a plain dict for logs, tests and metrics exporters.
    """

    def snapshot(self) -> dict[str, int]:
        return {k: int(v) for k, v in sorted(self.items())}


@dataclass(frozen=True, eq=False)
class Copy:
    """One copy of the unknown state, as a driver delivers it.

    Parameters
    ----------
    state:
        Simulated copies: a 2^n statevector or a (2^n, 2^n) density matrix.
        Hardware copies: ``None`` or a device handle (the backend knows what to
        do with it).  Copies that share the *same* state object are batched
        together by simulated backends, so a source should reuse its array.
    t:
        Arrival time in seconds on the pipeline's clock; ``None`` means "stamp
        it on arrival".
    source, seq:
        Producer name and its sequence number (for logs and gap checks).
    wires:
        Wire labels of the copy's qubits (default ``0..n-1``).
    key:
        Pairing key: only copies with equal keys are Bell-paired (they must be
        copies of the same state).  Defaults to ``source``.
    meta:
        Free-form metadata carried along (never interpreted).
    """

    state: Any = None
    t: float | None = None
    source: str = ""
    seq: int = 0
    wires: tuple | None = None
    key: Hashable = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pair_key(self) -> Hashable:
        return self.source if self.key is None else self.key

    @property
    def n_qubits(self) -> int | None:
        """Number of qubits (from the wires or the state's dimension)."""
        if self.wires is not None:
            return len(self.wires)
        if self.state is None:
            return None
        dim = int(np.shape(self.state)[0])
        n = int(round(math.log2(dim)))
        return n if 2**n == dim else None

    def stamped(self, t: float) -> "Copy":
        """The same copy with arrival time ``t``."""
        return Copy(self.state, float(t), self.source, self.seq, self.wires, self.key, self.meta)


@dataclass(frozen=True)
class SlotInfo:
    """One occupied memory slot: id, arrival time, pairing key, source."""

    slot: int
    arrival: float
    key: Hashable
    source: str


@runtime_checkable
class CoherenceModel(Protocol):
    """How a stored copy changes while it waits.

    ``t2`` (seconds, ``inf`` for none) is what the scheduler plans with.
    ``apply(state, wait)`` returns the decohered state (simulated copies).
    ``survival(wait)`` returns, when the model is *local depolarizing*, the
    probability that a qubit is untouched after ``wait`` (so the channel is "with
    probability 1 - p replace the qubit by I/2"), which lets samplers decohere
    exactly without building density matrices; it returns ``None`` for models
    without that structure.
    """

    t2: float

    def apply(self, state: Any, wait: float) -> Any: ...

    def survival(self, wait: float | np.ndarray) -> np.ndarray | None: ...


class IdealCoherence:
    """A perfect memory: copies do not change while they wait (T2 = inf)."""

    t2 = math.inf

    def apply(self, state: Any, wait: float) -> Any:
        return state

    def survival(self, wait: float | np.ndarray) -> np.ndarray:
        return np.ones_like(np.asarray(wait, dtype=np.float64))

    def __repr__(self) -> str:
        return "IdealCoherence()"


@dataclass(frozen=True, eq=False)
class StoredCopy:
    """A copy released for measurement.

    ``wait`` is how long it sat in quantum memory (0 for a copy measured on
    arrival), ``released`` the time it left.  ``state`` is the copy's state
    decohered by ``wait`` under the memory's coherence model (computed on first
    access); ``raw_state`` the state as it arrived.
    """

    copy: Copy
    wait: float
    released: float
    slot: int | None = None
    coherence: CoherenceModel | None = None

    @property
    def raw_state(self) -> Any:
        return self.copy.state

    @cached_property
    def state(self) -> Any:
        if self.coherence is None or self.wait <= 0 or self.copy.state is None:
            return self.copy.state
        return self.coherence.apply(self.copy.state, self.wait)

    @property
    def survival(self) -> np.ndarray | None:
        """Per-qubit survival probability after ``wait`` (None: not depolarizing)."""
        if self.coherence is None or self.wait <= 0:
            return np.float64(1.0)
        return self.coherence.survival(self.wait)

    @classmethod
    def direct(cls, copy: Copy, at: float) -> "StoredCopy":
        """A copy that goes to measurement straight from arrival (no memory)."""
        return cls(copy=copy, wait=0.0, released=float(at), slot=None, coherence=None)


@runtime_checkable
class QuantumMemory(Protocol):
    """The interface the scheduler and pipeline use (see the module docstring).

    Implementations: :class:`SlotMemory` (in-process, simulated copies) and any
    hardware memory that implements the same coroutines over its own link.
    """

    capacity: int
    coherence: CoherenceModel | None
    counters: Counters
    max_wait: float | None

    def __len__(self) -> int: ...

    @property
    def free(self) -> int: ...

    def waiting(self, key: Hashable = ...) -> list[SlotInfo]: ...

    async def put(self, copy: Copy) -> int | None: ...

    async def take(self, slots: Sequence[int], at: float | None = None) -> list[StoredCopy]: ...

    async def evict(self, slots: Sequence[int], reason: str, at: float | None = None) -> list[StoredCopy]: ...

    async def sweep(self, now: float | None = None) -> list[StoredCopy]: ...


_ANY = object()


class SlotMemory:
    """An in-process quantum memory with a fixed number of slots.

    Parameters
    ----------
    capacity:
        Number of slots (>= 0; 0 means "no memory": every ``put`` is refused).
    coherence:
        A :class:`CoherenceModel` applied to each copy according to the time it
        actually waited (default :class:`IdealCoherence`).
    max_wait:
        Copies older than this (seconds) are evicted by :meth:`sweep` and counted
        as ``evicted_expired``; ``None`` keeps them forever.
    on_full:
        What ``put`` does when every slot is occupied: ``"reject"`` refuses the
        new copy (``rejected``), ``"evict_oldest"`` evicts the oldest stored copy
        (``evicted_full``) to make room, ``"block"`` waits until another task
        frees a slot (backpressure; counted as ``blocked`` once per wait).
    clock:
        Time source (default :class:`MonotonicClock`).
    decoherence:
        The :class:`~qsense.estimators.decoherence.DecoherenceModel` this memory
        declares (per-letter decay; docs/physics.md §3), the one object that
        Bell estimators (``BellEstimator(..., decoherence=memory.decoherence)``)
        and the scheduler plan and reweight with.  Default: read from the
        coherence model (``model``/``t1``/``t2`` attributes; only ``t2`` means
        depolarizing).  A model that contradicts the coherence model's is a
        :class:`~qsense.estimators.decoherence.DecoherenceMismatchWarning`.
    """

    def __init__(
        self,
        capacity: int,
        coherence: CoherenceModel | None = None,
        *,
        max_wait: float | None = None,
        on_full: str = "reject",
        clock: Clock | None = None,
        name: str = "memory",
        decoherence: DecoherenceModel | None = None,
    ) -> None:
        if decoherence is not None and not isinstance(decoherence, DecoherenceModel):
            raise ValueError(f"decoherence must be a DecoherenceModel or None; got {type(decoherence).__name__}")
        if not isinstance(capacity, (int, np.integer)) or isinstance(capacity, bool) or capacity < 0:
            raise ValueError(f"capacity must be a non-negative int; got {capacity!r}")
        if on_full not in ON_FULL:
            raise ValueError(f"on_full must be one of {ON_FULL}; got {on_full!r}")
        if max_wait is not None and not (max_wait > 0):
            raise ValueError(f"max_wait must be positive seconds or None; got {max_wait!r}")
        self.capacity = int(capacity)
        self.coherence: CoherenceModel = coherence if coherence is not None else IdealCoherence()
        self._decoherence = decoherence
        if decoherence is not None and coherence is not None:
            declared = decoherence_of(self.coherence)
            if declared is not None and declared != decoherence:
                import warnings

                warnings.warn(
                    f"{name}: decoherence={decoherence!r} contradicts the coherence model {self.coherence!r} "
                    f"({declared!r}); estimators and the scheduler will use {decoherence!r}",
                    DecoherenceMismatchWarning,
                    stacklevel=2,
                )
        self.max_wait = None if max_wait is None else float(max_wait)
        self.on_full = on_full
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.name = name
        self.counters = Counters()
        # slot id -> (copy, arrival); dicts keep insertion (= arrival) order
        self._slots: dict[int, tuple[Copy, float]] = {}
        # (arrival, serial, slot, entry) of every put, pruned lazily: the earliest arrival
        # in O(1), so the expiry checks made on every arrival cost nothing when nothing is due
        self._deadlines: list[tuple[float, int, int, tuple[Copy, float]]] = []
        self._serial = itertools.count()
        self._free_ids = list(range(self.capacity - 1, -1, -1))
        self._freed = asyncio.Event()

    # -- inspection ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._slots)

    @property
    def free(self) -> int:
        """Unoccupied slots."""
        return self.capacity - len(self._slots)

    @property
    def t2(self) -> float:
        """T2 in seconds (inf for none): the declared model's, else the coherence model's."""
        if self._decoherence is not None:
            return float(self._decoherence.t2)
        return float(getattr(self.coherence, "t2", math.inf))

    @property
    def decoherence(self) -> DecoherenceModel | None:
        """The decoherence model (see the ``decoherence`` parameter); None for a perfect memory."""
        model = self._decoherence if self._decoherence is not None else decoherence_of(self.coherence)
        return model if model is not None and model.finite else None

    def waiting(self, key: Hashable = _ANY) -> list[SlotInfo]:
        """Occupied slots, oldest first (optionally only those with pairing ``key``)."""
        out = []
        for slot, (copy, arrival) in self._slots.items():
            if key is _ANY or copy.pair_key == key:
                out.append(SlotInfo(slot, arrival, copy.pair_key, copy.source))
        return out

    def earliest_arrival(self) -> float | None:
        """The earliest arrival time of a stored copy, ``None`` when empty (amortised
        O(1): a heap of the stores, released entries dropped as they surface)."""
        heap, slots = self._deadlines, self._slots
        while heap:
            _, _, slot, entry = heap[0]
            if slots.get(slot) is entry:
                return entry[1]
            heapq.heappop(heap)
        return None

    def oldest(self, key: Hashable = _ANY) -> SlotInfo | None:
        """The oldest occupied slot (with ``key``), or None."""
        for slot, (copy, arrival) in self._slots.items():
            if key is _ANY or copy.pair_key == key:
                return SlotInfo(slot, arrival, copy.pair_key, copy.source)
        return None

    # -- storing -----------------------------------------------------------------
    async def put(self, copy: Copy) -> int | None:
        """Store ``copy``; returns its slot id, or ``None`` if it was refused.

        The arrival time is ``copy.t`` if set, else the clock's now.
        """
        arrival = float(copy.t) if copy.t is not None else self.clock()
        if self.capacity == 0:
            self.counters["rejected"] += 1
            log.debug("%s: no slots at all; copy from %r refused", self.name, copy.source)
            return None
        if not self._free_ids:
            if self.on_full == "reject":
                self.counters["rejected"] += 1
                log.debug("%s: full (%d slots); copy from %r refused", self.name, self.capacity, copy.source)
                return None
            if self.on_full == "evict_oldest":
                oldest = next(iter(self._slots))
                self._release(oldest, arrival, "evicted_full", coherent=False)
                log.debug("%s: full; evicted the copy in slot %d to make room", self.name, oldest)
            else:  # block until another task frees a slot
                self.counters["blocked"] += 1
                while not self._free_ids:
                    self._freed.clear()
                    await self._freed.wait()
        slot = self._free_ids.pop()
        entry = (copy, arrival)
        self._slots[slot] = entry
        heap = self._deadlines
        heapq.heappush(heap, (arrival, next(self._serial), slot, entry))
        if len(heap) > 4 * self.capacity + 64:  # released entries that never surfaced: rebuild
            self._deadlines = heap = [e for e in heap if self._slots.get(e[2]) is e[3]]
            heapq.heapify(heap)
        self.counters["stored"] += 1
        self.counters["peak_occupancy"] = max(self.counters["peak_occupancy"], len(self._slots))
        return slot

    def account_block(
        self, *, stored: int = 0, taken: int = 0, evicted: Mapping[str, int] | None = None,
        rejected: int = 0, occupancy: int = 0,
    ) -> None:
        """Count, in bulk, copies that passed through this memory inside a block.

        The block path (:meth:`qsense.acquisition.scheduler.Scheduler.on_block`) decides a
        whole :class:`~qsense.acquisition.blocks.CopyBlock` at once; a copy stored and then
        taken (or evicted) within the block never needs a slot object, but it is
        counted exactly as :meth:`put` / :meth:`take` / :meth:`evict` would count
        it: ``stored``, ``taken``, ``evicted_<reason>`` and ``rejected``;
        ``occupancy`` is the most slots those copies held at once (for
        ``peak_occupancy``).  A copy still waiting at the end of the block is
        stored with :meth:`put` as usual.
        """
        for name, v in (("stored", stored), ("taken", taken), ("rejected", rejected)):
            if v:
                self.counters[name] += int(v)
        for reason, v in (evicted or {}).items():
            if v:
                self.counters[f"evicted_{reason}"] += int(v)
        if occupancy:
            self.counters["peak_occupancy"] = max(self.counters["peak_occupancy"], int(occupancy))

    # -- releasing ---------------------------------------------------------------
    def _release(self, slot: int, at: float, counter: str, coherent: bool = True) -> StoredCopy:
        try:
            copy, arrival = self._slots.pop(slot)
        except KeyError:
            raise KeyError(f"{self.name}: slot {slot} is empty") from None
        self._free_ids.append(slot)
        self._freed.set()
        self.counters[counter] += 1
        # a copy cannot have waited a negative time even if clocks jitter
        wait = max(0.0, float(at) - arrival)
        return StoredCopy(copy=copy, wait=wait, released=float(at), slot=slot, coherence=self.coherence if coherent else None)

    async def take(self, slots: Sequence[int], at: float | None = None) -> list[StoredCopy]:
        """Release ``slots`` to measurement at time ``at`` (default: now).

        Raises ``KeyError`` (and releases nothing) if any slot is empty.
        """
        at = self.clock() if at is None else float(at)
        slots = list(slots)
        missing = [s for s in slots if s not in self._slots]
        if missing or len(set(slots)) != len(slots):
            raise KeyError(f"{self.name}: cannot take slots {slots}: empty or repeated {missing}")
        return [self._release(s, at, "taken") for s in slots]

    async def take_oldest(self, key: Hashable = _ANY, count: int = 1, at: float | None = None) -> list[StoredCopy]:
        """Release the ``count`` oldest copies (with ``key``); fewer if fewer wait."""
        infos = self.waiting(key)[:count]
        return await self.take([i.slot for i in infos], at)

    async def evict(self, slots: Sequence[int], reason: str, at: float | None = None) -> list[StoredCopy]:
        """Remove ``slots`` without measuring them; counted as ``evicted_<reason>``."""
        at = self.clock() if at is None else float(at)
        out = [self._release(s, at, f"evicted_{reason}", coherent=False) for s in list(slots) if s in self._slots]
        if out:
            log.debug("%s: evicted %d copies (%s)", self.name, len(out), reason)
        return out

    def expired(self, now: float, max_wait: float) -> list[SlotInfo]:
        """Occupied slots whose copy has waited longer than ``max_wait`` at ``now``."""
        return [i for i in self.waiting() if now - i.arrival > max_wait]

    async def sweep(self, now: float | None = None) -> list[StoredCopy]:
        """Evict copies that waited longer than ``max_wait`` (``evicted_expired``).

        Each is released at the moment it expired (arrival + max_wait), which is
        what its record would say on a device that drops it on time.
        """
        if self.max_wait is None or not self._slots:
            return []
        now = self.clock() if now is None else float(now)
        first = self.earliest_arrival()
        if first is None or now - first <= self.max_wait:  # nothing has expired (the usual case)
            return []
        out = []
        for info in self.expired(now, self.max_wait):
            out.append(self._release(info.slot, info.arrival + self.max_wait, "evicted_expired", coherent=False))
        if out:
            log.info("%s: %d copies waited longer than max_wait=%.3g s and were evicted", self.name, len(out), self.max_wait)
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(capacity={self.capacity}, occupied={len(self)}, coherence={self.coherence!r}, "
            f"max_wait={self.max_wait}, on_full={self.on_full!r})"
        )


def make_memory(name: str, /, **kw: Any) -> QuantumMemory:
    """A memory by plugin name: ``make_memory("simulated", capacity=2, t2=1e-3, clock=clk)``.

    Memories are entry points of the ``qsense.memories`` group
    (:mod:`qsense.plugins`); an unknown name raises
    :class:`~qsense.plugins.PluginError` (a ``ValueError``) listing the installed ones.
    """
    return plugins.create("memory", name, **kw)
