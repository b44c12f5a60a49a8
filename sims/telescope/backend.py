"""Pipeline integration: the coherence model and measurement backend for telescope copies.

:class:`TelescopeCoherence` is what ``qsense.acquisition.memory`` plans with,
:class:`TelescopeBackend` measures plans of stored photons (per-copy
``MeasurementPlan`` s, and ``BlockPlan`` s whose ``rows`` are the photons of a
block from the telescope driver), and :func:`photons_of` gathers the
:class:`Photons` rows behind a list of copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from qsense.records import BellBatch, ShadowBatch

from .photons import Photons
from .simulator import TelescopeSim

__all__ = ["TelescopeBackend", "TelescopeCoherence", "photons_of"]


class TelescopeCoherence:
    """The memory coherence model of a :class:`TelescopeSim` for ``qsense.acquisition.memory``.

    ``t2`` is what the scheduler plans with.  The decoherence itself is applied
    exactly by :class:`TelescopeBackend` from each copy's ``wait`` (per-qubit
    dephasing, which keeps the photon in the single-excitation subspace), so
    ``apply`` returns the copy's state object unchanged and ``survival`` is
    ``None`` (not a depolarizing model).
    """

    def __init__(self, t2: float) -> None:
        self.t2 = float(t2)

    def apply(self, state: Any, wait: float) -> Any:
        return state

    def survival(self, wait: Any) -> None:
        return None

    def __repr__(self) -> str:
        return f"TelescopeCoherence(t2={self.t2!r})"


def photons_of(copies: Sequence[Any]) -> Photons:
    """Gather the :class:`Photons` rows behind telescope copies.

    A copy's ``meta`` names its row: ``{"photons": Photons chunk, "index": row}``
    (the per-copy telescope driver) or ``{"rows": Photons, "index": row}`` (a copy
    taken out of a :class:`~qsense.acquisition.blocks.CopyBlock` whose ``rows``
    are the block's photons).  Rows are gathered with one fancy index per
    distinct chunk."""
    chunks: dict[int, tuple[Photons, list[int], list[int]]] = {}
    for pos, c in enumerate(copies):
        meta = c.meta
        try:
            ph = meta["photons"] if "photons" in meta else meta["rows"]
            i = int(meta["index"])
        except (KeyError, TypeError):
            raise ValueError(f"copy {c.source!r}#{c.seq} carries no telescope photon (meta lacks 'photons'/'index')") from None
        if not isinstance(ph, Photons):  # bad input is a ValueError here, as everywhere
            raise ValueError(f"copy {c.source!r}#{c.seq}: its photon rows are a {type(ph).__name__}, not Photons")  # noqa: TRY004
        entry = chunks.setdefault(id(ph), (ph, [], []))
        entry[1].append(i)
        entry[2].append(pos)
    T = len(copies)
    M = next(iter(chunks.values()))[0].piston.shape[1] if chunks else 0
    if len(chunks) == 1:  # one chunk (the usual plan): a single gather, no scatter
        ph, rows, _ = next(iter(chunks.values()))
        return ph[np.asarray(rows, dtype=np.int64)]
    out = Photons(np.empty(T), np.empty(T, bool), np.empty(T, np.int64), np.empty((T, M)))
    for ph, rows, pos in chunks.values():
        r, p = np.asarray(rows), np.asarray(pos)
        out.t[p], out.dark[p], out.site[p], out.piston[p] = ph.t[r], ph.dark[r], ph.site[r], ph.piston[r]
    return out


class TelescopeBackend:
    """A ``qsense`` measurement backend for copies from a :class:`TelescopeSim`.

    Measures plans (``await measure(plan)``, see ``qsense.acquisition.backends``) with the
    O(M) single-excitation samplers: shadow items measure one stored photon in
    random Pauli bases, Bell items Bell-measure the two photons site by site.
    Each copy's memory dephasing is drawn from its own ``wait``; Bell rows carry
    ``wait`` = the total time both photons spent in memory (the backends'
    convention, which ``BellEstimator(t2=...)`` undoes exactly for the X/Y
    Paulis of visibilities).  Rows come back in item order.
    """

    name = "telescope"

    def __init__(self, sim: TelescopeSim, *, offload: bool = False) -> None:
        self.sim = sim
        self.offload = offload

    async def measure(self, plan: Any) -> list[ShadowBatch | BellBatch]:
        if self.offload:
            import asyncio

            return await asyncio.to_thread(self.measure_sync, plan)
        return self.measure_sync(plan)

    async def measure_block(self, plan: Any) -> list[ShadowBatch | BellBatch]:
        """Measure a :class:`~qsense.acquisition.backends.BlockPlan` whose ``rows`` are
        :class:`Photons` (what the scheduler makes of the telescope driver's blocks):
        one sampler call per plan, rows in plan order."""
        if self.offload:
            import asyncio

            return await asyncio.to_thread(self.measure_block_sync, plan)
        return self.measure_block_sync(plan)

    def measure_block_sync(self, plan: Any) -> list[ShadowBatch | BellBatch]:
        """The synchronous core of :meth:`measure_block`."""
        if len(plan) == 0:
            return []
        if any(s is not self.sim for s in plan.states):
            raise ValueError(f"block plan of {plan.source!r} is not from this telescope simulation")
        rows = plan.rows
        if rows is None or not all(isinstance(r, Photons) for r in rows):
            raise ValueError(f"block plan of {plan.source!r} carries no telescope photons (BlockPlan.rows)")
        released = np.asarray(plan.released, dtype=np.float64)
        return self._sample(plan.family, rows, plan.waits.T, released, plan.wires)

    def measure_sync(self, plan: Any) -> list[ShadowBatch | BellBatch]:
        """The synchronous core of :meth:`measure`."""
        items = plan.items
        if not items:
            return []
        for it in items:
            for sc in it:
                if sc.copy.state is not self.sim:
                    raise ValueError(f"copy {sc.copy.source!r}#{sc.copy.seq} is not from this telescope simulation")
        released = np.array([it[-1].released for it in items], dtype=np.float64)
        m = 1 if plan.family == "shadow" else 2
        rows = [photons_of([it[c].copy for it in items]) for c in range(m)]
        waits = [np.array([it[c].wait for it in items], dtype=np.float64) for c in range(m)]
        return self._sample(plan.family, rows, waits, released, items[0][0].copy.wires)

    def _sample(self, family: str, rows: Any, waits: Any, released: np.ndarray, wires: Any) -> list[ShadowBatch | BellBatch]:
        """One sampler call: ``rows`` the photons of each column (one: shadow; two: Bell),
        ``waits`` each column's time in memory, ``wires`` None for the M memory qubits."""
        wires = tuple(wires) if wires is not None else tuple(range(self.sim.M))
        if family == "shadow":
            return [self.sim.shadows(rows[0], waits[0], t=released).with_meta(wires=wires)]
        wa, wb = waits[0], waits[1]
        b = self.sim.bell(rows[0], rows[1], wa, wb, t=released)
        return [b.with_meta(wires=wires, wait=wa + wb)]
