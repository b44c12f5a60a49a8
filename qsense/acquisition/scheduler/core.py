"""The :class:`Scheduler`: executes a policy's plan copy by copy
(:meth:`~Scheduler.on_arrival`) or block by block (:meth:`~Scheduler.on_block`),
and the measurements it returns (:data:`Item`, :class:`BlockResult`)."""

from __future__ import annotations

import itertools
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Hashable

import numpy as np

from qsense.estimators.decoherence import DecoherenceModel, check_decoherence, decoherence_of, make_decoherence

from .. import blocks as _blocks
from ..backends import BlockPlan
from ..blocks import CopyBlock
from ..memory import Clock, Copy, Counters, MonotonicClock, QuantumMemory, StoredCopy
from ..targets import check_piston
from .plans import Plan, PlanContext
from .policies import Policy, make_policy

__all__ = ["Scheduler", "BlockResult", "Item"]

# the package's name, as before the split: logging configured for
# qsense.acquisition.scheduler (qsense.apps.demo quiets it) sees the same records
log = logging.getLogger(__package__)

#: the second plan is made after this many arrivals (the first rate estimate)
_EARLY_REPLAN = 16

#: Item = one measurement: (copy,) for a shadow, (first, second) for a Bell pair.
Item = tuple[StoredCopy, ...]


@dataclass
class BlockResult:
    """What :meth:`Scheduler.on_block` decided for a block.

    ``items``: per-copy measurements (a pair across the block boundary, or
    everything when the block was handled copy by copy); ``plans``: at most one
    :class:`~qsense.acquisition.backends.BlockPlan` per family; ``roles``: int8 ``(N,)``,
    the role of every copy (:mod:`qsense.acquisition.blocks` layout), ``None`` when the
    block went through the per-copy fallback.
    """

    items: list
    plans: list
    roles: np.ndarray | None


class Scheduler:
    """Executes a policy's plan copy by copy (see :mod:`qsense.acquisition.scheduler`).

    Parameters
    ----------
    policy:
        A :class:`Policy` (or its name with ``policy_kw``).
    memory:
        Where openers wait (:class:`~qsense.acquisition.memory.QuantumMemory`).
    t2:
        T2 the policy plans with (default: the ``decoherence`` model's when one is
        passed, else the memory's coherence model's).
    decoherence:
        The memory's :class:`~qsense.estimators.decoherence.DecoherenceModel`
        (default: ``memory.decoherence``).  When the policy's TargetSet reweights
        its Bell estimates with another model (it assumes depolarizing at its
        ``t2``) a :class:`~qsense.estimators.decoherence.DecoherenceMismatchWarning`
        is raised: those estimates would be biased (dephasing: +18.5% on ZZZ).
    replan_every:
        Re-plan after this many arrivals (and on the first one).
    salvage:
        Measure openers that exceed the plan's cap as shadows instead of
        evicting them.  Their shadow values are then biased by e^{-k·cap/T2}, so
        it is off by default.
    rate_window:
        Arrivals used to estimate the arrival rate (sliding window).
    rate_hint:
        Arrival rate assumed before there are two arrivals to measure it.
    clock:
        Time source for copies without timestamps (default: the memory's).
    piston_diffusion:
        Piston phase diffusion D (rad²/s) between the two copies of a pair (a
        telescope array's atmosphere): a pair's visibility decays as e^{−Dτ}
        with the first copy's wait τ, on top of the memory's decoherence, so an
        adaptive policy shortens its wait cap as D grows.  Default: the
        policy's TargetSet's ``piston_diffusion`` (0 without one).
    """

    def __init__(
        self,
        policy: Policy | str,
        memory: QuantumMemory,
        *,
        t2: float | None = None,
        replan_every: int = 256,
        salvage: bool = False,
        rate_window: int = 512,
        rate_hint: float | None = None,
        clock: Clock | None = None,
        name: str = "scheduler",
        decoherence: DecoherenceModel | None = None,
        piston_diffusion: float | None = None,
        **policy_kw: Any,
    ) -> None:
        self.policy: Policy = make_policy(policy, **policy_kw) if isinstance(policy, str) else policy
        self.memory = memory
        #: the one decoherence model shared with the memory (and, ideally, the Bell estimators)
        self.decoherence: DecoherenceModel | None = decoherence if decoherence is not None else decoherence_of(memory)
        if t2 is not None:
            self.t2 = float(t2)
        elif decoherence is not None:
            self.t2 = float(decoherence.t2)
        else:
            self.t2 = float(getattr(getattr(memory, "coherence", None), "t2", math.inf))
        if replan_every < 1:
            raise ValueError("replan_every must be >= 1")
        self.replan_every = int(replan_every)
        self.salvage = salvage
        self.name = name
        self.clock: Clock = clock or getattr(memory, "clock", None) or MonotonicClock()
        #: whether ``rate_hint`` is the caller's (else a guess, which an adaptive policy does not pair on)
        self.rate_hint_given = rate_hint is not None
        if rate_hint is None:
            # before any arrival-rate estimate exists, assume a memory that is good
            # for ~1000 arrivals (one re-plan fixes it as soon as data exist)
            rate_hint = 1000.0 / self.t2 if math.isfinite(self.t2) else 1.0
        self.rate_hint = float(rate_hint)
        ts = getattr(self.policy, "target_set", None)
        if ts is not None and math.isfinite(self.t2) and ts.t2 is None:
            log.warning(
                "%s: the memory has T2=%.3g s but the TargetSet was built without t2: its Bell "
                "estimates will not undo the decoherence of waiting copies (pass t2=...)", name, self.t2,
            )
        if ts is not None and ts.t2 is not None and self.decoherence is not None and self.decoherence.finite:
            # the TargetSet's BellEstimator reweights with its own model (depolarizing at ts.t2 unless it says otherwise)
            check_decoherence(self.decoherence, getattr(ts, "decoherence", None) or make_decoherence(None, t2=ts.t2), where=name)
        #: piston diffusion the policy plans with (None: the policy's own default)
        self.piston_diffusion: float | None = None if piston_diffusion is None else check_piston(piston_diffusion)
        self.counters = Counters()
        self.plan: Plan | None = None
        self.history: list[tuple[float, Plan]] = []
        self._times: deque[float] = deque(maxlen=rate_window)
        self._keys: deque[Hashable] = deque(maxlen=rate_window)
        self._credit = 0.0
        self._since_plan = 0
        self._n: int | None = None

    # -- planning ----------------------------------------------------------------
    @property
    def rate(self) -> float:
        """Arrival rate per pairing key (copies/s) over the sliding window."""
        if len(self._times) < 2:
            return math.nan
        span = self._times[-1] - self._times[0]
        keys = max(len(set(self._keys)), 1)
        return (len(self._times) - 1) / span / keys if span > 0 else math.inf

    def context(self, now: float) -> PlanContext:
        rate = self.rate
        known = True
        if not math.isfinite(rate) or rate <= 0:
            rate, known = self.rate_hint, self.rate_hint_given
        return PlanContext(
            rate=rate, t2=self.t2, capacity=int(getattr(self.memory, "capacity", 0)),
            keys=max(len(set(self._keys)), 1), n=self._n, copies=int(self.counters["arrived"]), now=now,
            piston=self.piston_diffusion, rate_known=known,
        )

    def replan(self, now: float) -> Plan:
        """Ask the policy for a new plan now; logs and counts the decision."""
        new = self.policy.plan(self.context(now))
        old = self.plan
        self.plan = new
        self._since_plan = 0
        self.counters["replans"] += 1
        self.history.append((now, new))
        changed = (
            old is None
            or abs(new.pair_fraction - old.pair_fraction) > 0.02
            or (new.cap is None) != (old.cap is None)
            or (new.cap is not None and abs(new.cap * new.rate - old.cap * old.rate) > 0.25)
            or new.assignment != old.assignment
        )
        if old is not None and (old.pair_fraction == 0.0) != (new.pair_fraction == 0.0):
            self.counters["family_switches"] += 1
        if old is not None and new.assignment != old.assignment:
            self.counters["assignment_changes"] += 1
        level = logging.INFO if changed else logging.DEBUG
        if log.isEnabledFor(level):  # describe() formats a table: only for a log that shows it
            log.log(level, "%s: plan at t=%.6g after %d copies:\n%s", self.name, now, self.counters["arrived"], new.describe())
        return new

    # -- execution ---------------------------------------------------------------
    def _quiet(self, now: float) -> bool:
        """Whether nothing can expire at ``now``: the check made on every arrival, in
        O(1) for a memory with ``earliest_arrival`` (when the oldest stored copy is
        within the plan's cap and the memory's ``max_wait``, the full pass of
        :meth:`_expire` would do nothing).  False (do the pass) for other memories."""
        earliest = getattr(self.memory, "earliest_arrival", None)
        if earliest is None:
            return False
        first = earliest()
        if first is not None:
            age = now - first
            cap = self.plan.cap if self.plan is not None else None
            max_wait = getattr(self.memory, "max_wait", None)
            if (max_wait is not None and age > max_wait) or (cap is not None and age > cap):
                return False
        if "expired_memory" not in self.counters:  # as the sweep's count would have made it
            self.counters["expired_memory"] = 0
        return True

    async def _expire(self, now: float) -> list[Item]:
        """Evict (or salvage) openers past the plan's cap, and memory-expired copies."""
        items: list[Item] = []
        if self._quiet(now):
            return items
        sweep = getattr(self.memory, "sweep", None)
        if sweep is not None:
            gone = await sweep(now)
            self.counters["expired_memory"] += len(gone)
        cap = self.plan.cap if self.plan is not None else None
        if cap is None:
            return items
        for info in self.memory.waiting():
            if now - info.arrival > cap:
                await self._release_opener(info.slot, info.arrival + cap, "cap", "expired_cap", items)
        return items

    async def _release_opener(self, slot: int, at: float, reason: str, counter: str, items: list[Item]) -> None:
        """An opener that will not be paired: measured as a shadow when
        ``salvage`` is on (appended to ``items``), else evicted with ``reason``
        and counted under ``counter``."""
        if self.salvage:
            (sc,) = await self.memory.take([slot], at=at)
            items.append((sc,))
            self.counters["salvaged"] += 1
            self.counters["shadow_copies"] += 1
        else:
            await self.memory.evict([slot], reason, at=at)
            self.counters[counter] += 1

    def _observe(self, copy: Copy, now: float) -> None:
        self.counters["arrived"] += 1
        self._times.append(now)
        self._keys.append(copy.pair_key)
        if self._n is None:
            self._n = copy.n_qubits

    async def on_arrival(self, copy: Copy, now: float | None = None) -> list[Item]:
        """Decide what happens to an arriving copy; returns the measurements to make."""
        if now is None:
            now = float(copy.t) if copy.t is not None else self.clock()
        now = float(now)
        self._observe(copy, now)
        # the usual case (nothing due) without the coroutine of the full pass
        items: list[Item] = [] if self._quiet(now) else await self._expire(now)
        # plan on the first copy (rate unknown: rate_hint), again once a rate
        # estimate exists, then every replan_every copies
        if self.plan is None or self._since_plan >= self.replan_every or self.counters["arrived"] == _EARLY_REPLAN:
            self.replan(now)
        self._since_plan += 1
        f = self.plan.pair_fraction
        self._credit = min(self._credit + f, 2.0)
        partner = self.memory.oldest(copy.pair_key) if hasattr(self.memory, "oldest") else next(iter(self.memory.waiting(copy.pair_key)), None)
        if partner is not None:
            (first,) = await self.memory.take([partner.slot], at=now)
            items.append((first, StoredCopy.direct(copy, now)))
            self._credit = max(self._credit - 1.0, -1.0)
            self.counters["bell_pairs"] += 1
            self.counters["bell_copies"] += 2
            self.counters["closed"] += 1
            return items
        if f > 0.0 and self._credit >= 1.0:
            slot = await self.memory.put(copy.stamped(now) if copy.t is None else copy)
            if slot is not None:
                self._credit -= 1.0
                self.counters["opened"] += 1
                return items
            # refused (full memory): the copy is still useful as a shadow
            self.counters["no_slot"] += 1
        items.append((StoredCopy.direct(copy, now),))
        self.counters["shadow_copies"] += 1
        return items

    def _block_fallback_reason(self) -> str | None:
        mem = self.memory
        if not hasattr(mem, "account_block"):
            return "memory has no bulk accounting"
        if self.salvage:
            return "salvage is on"
        return None

    async def on_block(self, block: CopyBlock, now: float | None = None) -> BlockResult:
        """Decide every copy of a :class:`~qsense.acquisition.blocks.CopyBlock` at once.

        The same rule as :meth:`on_arrival`, copy for copy (the compiled scan
        :func:`qsense.acquisition.blocks.schedule_segment`): for the same arrival times and
        plans the roles, pairs, waits and counters are identical.  Differences,
        all at block granularity: re-plans due after ``replan_every`` arrivals
        are made at the start of the next block (the estimates an adaptive plan
        uses cannot change inside a block, whose records are measured after it
        is scheduled; the first plan and the early one at the 16th arrival are
        made at their copies), and stored copies of *other* pairing keys are
        expired at the block's first and last arrivals (released at the time
        they expired, as always; a slot they free is used from the next block
        on, and ``peak_occupancy`` counts them as held through the block).  Copies stored and released
        inside the block are counted by the memory in bulk
        (``account_block``); the opener still waiting at the end is ``put``.
        A block's per-copy ``rows`` are gathered into each plan's ``rows``
        (``rows[shadows]``; ``rows[openers]``, ``rows[closers]``).

        Falls back to :meth:`on_arrival` per copy (``roles`` None, counted
        ``block_fallback``) when the memory cannot account in bulk, when
        ``salvage`` is on, or when the memory is full with other keys' copies
        and its ``on_full`` is not ``"reject"``.
        """
        N = len(block)
        if N == 0:
            return BlockResult([], [], np.zeros(0, np.int8))
        if block.t is None:
            block = block.stamped(self.clock() if now is None else float(now))
        t = block.t
        key = block.pair_key
        mem = self.memory
        reason = self._block_fallback_reason()
        items: list[Item] = []
        own: list = []
        can_open = False
        if reason is None:
            # arrival 0's expiry (every key, the plan in force), as on_arrival does
            items = await self._expire(float(t[0]))
            own = mem.waiting(key)
            others = len(mem) - len(own)
            can_open = int(getattr(mem, "capacity", 0)) - others >= 1
            if len(own) > 1:
                reason = "several copies of this key wait"
            elif not can_open and getattr(mem, "on_full", "reject") != "reject":
                reason = f"memory full with other keys (on_full={getattr(mem, 'on_full', '?')!r})"
        if reason is not None:
            log.debug("%s: block of %d copies from %r handled copy by copy: %s", self.name, N, block.source, reason)
            self.counters["block_fallback"] += 1
            for copy in block.copies():
                items.extend(await self.on_arrival(copy, copy.t))
            return BlockResult(items, [], None)
        self.counters["blocks"] += 1
        if self._n is None:
            self._n = block.n_qubits
        # -- segments: a re-plan at the block's first copy (when due) and the
        # early one at the 16th arrival, both after observing their copy
        arrived0 = int(self.counters["arrived"])
        window = self._times.maxlen or N
        fed = 0

        def observe_to(j: int) -> None:  # rate window: arrivals up to and including j
            nonlocal fed
            if j + 1 > fed:
                chunk = t[max(fed, j + 1 - window) : j + 1]
                self._times.extend(chunk.tolist())
                self._keys.extend(itertools.repeat(key, chunk.size))
                fed = j + 1

        starts = [0]
        j16 = _EARLY_REPLAN - arrived0 - 1
        if 0 < j16 < N:
            starts.append(j16)
        roles = np.empty(N, np.int8)
        credit = float(self._credit)
        has_open = bool(own)
        open_t = float(own[0].arrival) if own else 0.0
        open_idx = -1
        max_wait = _blocks.finite_or_inf(getattr(mem, "max_wait", None))
        kernel = _blocks.segment_kernel()
        last_replan = None
        for s, a in enumerate(starts):
            b = starts[s + 1] if s + 1 < len(starts) else N
            prev_cap = _blocks.finite_or_inf(self.plan.cap) if self.plan is not None else math.inf
            self.counters["arrived"] = arrived0 + a + 1  # what on_arrival's counter says at copy a
            if self.plan is None or self._since_plan >= self.replan_every or arrived0 + a + 1 == _EARLY_REPLAN:
                observe_to(a)
                self.replan(float(t[a]))
                last_replan = a
            else:
                self._since_plan += b - a  # no re-plan: keep counting
            f = float(self.plan.pair_fraction)
            cap = _blocks.finite_or_inf(self.plan.cap)
            # the expiry at a block's first copy was done above; at the early
            # re-plan copy it uses the previous plan's cap, as on_arrival does
            cap0, wait0 = (math.inf, math.inf) if a == 0 else (prev_cap, max_wait)
            credit, has_open, open_t, open_idx = kernel(
                t, a, b, f, cap0, cap, wait0, max_wait, can_open, credit, has_open, open_t, open_idx, roles,
            )
            open_idx = int(open_idx)
        observe_to(N - 1)
        self.counters["arrived"] = arrived0 + N
        if last_replan is not None:
            self._since_plan = N - last_replan
        self._credit = float(credit)
        # -- outcome arrays
        counts = np.bincount(roles, minlength=len(_blocks.ROLE_NAMES))
        n_shadow = int(counts[_blocks.SHADOW] + counts[_blocks.NO_SLOT])
        n_close = int(counts[_blocks.CLOSE])
        n_ecap, n_emem = int(counts[_blocks.EVICT_CAP]), int(counts[_blocks.EVICT_MEMORY])
        n_open_closed, n_waiting = int(counts[_blocks.OPEN]), int(counts[_blocks.WAITING])
        self.counters["arrived_in_blocks"] += N
        self.counters["opened"] += n_open_closed + n_ecap + n_emem + n_waiting
        self.counters["closed"] += n_close
        self.counters["bell_pairs"] += n_close
        self.counters["bell_copies"] += 2 * n_close
        self.counters["shadow_copies"] += n_shadow
        self.counters["no_slot"] += int(counts[_blocks.NO_SLOT])
        self.counters["expired_cap"] += n_ecap
        self.counters["expired_memory"] += n_emem
        closers = np.flatnonzero(roles == _blocks.CLOSE)
        if own and closers.size and closers[0] == 0:
            # the pair across the block boundary: the stored copy is a real slot
            (first,) = await mem.take([own[0].slot], at=float(t[0]))
            items.append((first, StoredCopy.direct(block.copy(0), float(t[0]))))
            closers = closers[1:]
        # other keys' copies that outlived the cap or max_wait during the block are
        # evicted now, at the time they expired (before this key's opener is stored)
        items += await self._expire(float(t[-1]))
        mem.account_block(  # type: ignore[attr-defined]
            stored=n_open_closed + n_ecap + n_emem, taken=n_open_closed,
            evicted={"cap": n_ecap, "expired": n_emem}, rejected=int(counts[_blocks.NO_SLOT]),
            occupancy=(len(mem) + 1) if (n_open_closed + n_ecap + n_emem) else 0,
        )
        if n_waiting:
            (w,) = np.flatnonzero(roles == _blocks.WAITING)
            slot = await mem.put(block.copy(int(w)))
            if slot is None:  # pragma: no cover - can_open said there was a slot
                raise RuntimeError(f"{self.name}: memory refused the block's last opener")
        wires = tuple(block.wires) if block.wires is not None else (tuple(range(self._n)) if self._n is not None else None)
        coherence = getattr(mem, "coherence", None)
        plans: list[BlockPlan] = []
        shadows = np.flatnonzero((roles == _blocks.SHADOW) | (roles == _blocks.NO_SLOT))
        if shadows.size:
            plans.append(BlockPlan(
                "shadow", (block.state,), t[shadows], np.zeros((shadows.size, 1)),
                (block.seq + shadows)[:, None], wires, block.source, block.key, coherence,
                rows=None if block.rows is None else (block.rows[shadows],),
            ))
        if closers.size:
            waits = np.zeros((closers.size, 2))
            waits[:, 0] = t[closers] - t[closers - 1]
            seqs = np.stack([block.seq + closers - 1, block.seq + closers], axis=1)
            plans.append(BlockPlan(
                "bell", (block.state, block.state), t[closers], waits, seqs, wires, block.source, block.key, coherence,
                rows=None if block.rows is None else (block.rows[closers - 1], block.rows[closers]),
            ))
        return BlockResult(items, plans, roles)

    async def on_tick(self, now: float) -> list[Item]:
        """Periodic housekeeping between arrivals (expiries)."""
        return await self._expire(now)

    async def drain(self, now: float) -> list[Item]:
        """End of stream: openers still waiting will never get a partner.

        They are salvaged as shadows when ``salvage`` is on, else evicted and
        counted as ``evicted_drain`` by the memory.
        """
        items = await self._expire(now)
        for info in self.memory.waiting():
            await self._release_opener(info.slot, now, "drain", "unpaired_at_end", items)
        return items
