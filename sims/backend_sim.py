"""Simulated measurement backend: plans measured with the ``sims`` samplers.

Copies that share a state object share one sampler call (the samplers cache
their tables per state, so a long stream costs O(records)).  Decoherence from
waiting in memory:

* local-depolarizing memories (``StoredCopy.survival`` is not None): the clean
  state is sampled and each row's depolarized qubits re-randomised
  (``qsense.acquisition.backends.depolarize_*``), exact and vectorised;
* any other model (or ``exact=True``): each copy's decohered density matrix
  (``StoredCopy.state``, from ``sims.decohere``) is sampled on its own.

Bell rows carry ``wait`` = the total time the pair's copies spent in memory.

Block plans (:class:`qsense.acquisition.backends.BlockPlan`, from the pipeline's block path)
are measured by :meth:`SimulatedBackend.measure_block` with one sampler call per
plan and the same depolarizing re-randomisation, vectorised over the rows.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import numpy as np

from qsense.acquisition.backends import (
    BlockPlan,
    MeasurementPlan,
    depolarize_bell_codes,
    depolarize_shadow_bits,
    measure_grouped,
)
from qsense.acquisition.memory import Copy
from qsense.records import BellBatch, ShadowBatch

from . import samplers

__all__ = ["SimulatedBackend"]


class SimulatedBackend:
    """Measure plans with exact ``sims`` samplers.

    Parameters
    ----------
    seed:
        Seed of the backend's random generator (all sampling draws from it).
    exact:
        Always sample each copy's decohered density matrix separately (slow;
        for cross-checking the depolarizing fast path).
    offload:
        Run sampling in a worker thread (keeps a live event loop responsive
        when batches are large).
    cache:
        Number of per-state samplers kept (LRU).
    """

    name = "simulated"

    def __init__(self, seed: Any = None, *, exact: bool = False, offload: bool = False, cache: int = 8) -> None:
        self.rng = np.random.default_rng(seed)
        self.exact = exact
        self.offload = offload
        self._cache: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()
        self._cache_size = int(cache)

    async def measure(self, plan: MeasurementPlan) -> list[ShadowBatch | BellBatch]:
        if self.offload:
            return await asyncio.to_thread(self.measure_sync, plan)
        return self.measure_sync(plan)

    async def measure_block(self, plan: BlockPlan) -> list[ShadowBatch | BellBatch]:
        """Measure a :class:`~qsense.acquisition.backends.BlockPlan` (one sampler call)."""
        if self.offload:
            return await asyncio.to_thread(self.measure_block_sync, plan)
        return self.measure_block_sync(plan)

    def measure_block_sync(self, plan: BlockPlan) -> list[ShadowBatch | BellBatch]:
        """The synchronous core of :meth:`measure_block`.

        Every row shares the plan's raw states, so one sampler call gives all
        rows; rows whose copies waited are depolarized by their own survival
        probabilities (exact for local depolarizing).  Other coherence models,
        or ``exact=True``, go through the per-copy path (each decohered state
        sampled on its own).
        """
        T = len(plan)
        if T == 0:
            return []
        wires = tuple(plan.wires) if plan.wires is not None else tuple(range(Copy(plan.states[0]).n_qubits or 0))
        n = len(wires)
        p = None if self.exact else plan.survival(n)
        if p is None:
            return self.measure_sync(plan.to_plan())
        waited = bool(np.any(plan.waits > 0))
        if plan.family == "shadow":
            bases, outs = self._shadow_rows(plan.states[0], T)
            if waited:
                outs = depolarize_shadow_bits(outs, p, self.rng)
            return [ShadowBatch(bases, outs, wires=wires, t=plan.released)]
        codes = self._bell_rows(plan.states[0], plan.states[1], T)
        if waited:
            codes = depolarize_bell_codes(codes, p, self.rng)
        return [BellBatch(codes, wires=wires, t=plan.released, wait=plan.bell_wait)]

    # -- samplers, cached per state object --------------------------------------------
    def _sampler(self, kind: str, *states: Any) -> Any:
        key = (kind,) + tuple(id(s) for s in states)
        hit = self._cache.get(key)
        # the cache keeps the state objects alive, so an id cannot be reused while cached
        if hit is not None and all(a is b for a, b in zip(hit[1], states)):
            self._cache.move_to_end(key)
            return hit[0]
        if kind == "shadow":
            s = samplers.ShadowSampler(states[0])
        else:
            s = samplers.BellSampler(states[0], None if states[1] is states[0] else states[1])
        self._cache[key] = (s, states)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return s

    def _shadow_rows(self, state: Any, shots: int) -> tuple[np.ndarray, np.ndarray]:
        return self._sampler("shadow", state).sample_arrays(shots, self.rng)

    def _bell_rows(self, a: Any, b: Any, shots: int) -> np.ndarray:
        return self._sampler("bell", a, b).sample_codes(shots, self.rng)

    # -- measuring ---------------------------------------------------------------------------
    def measure_sync(self, plan: MeasurementPlan) -> list[ShadowBatch | BellBatch]:
        """The synchronous core of :meth:`measure`."""
        return measure_grouped(plan, self._shadow_rows, self._bell_rows, self.rng, fast_ok=not self.exact)
