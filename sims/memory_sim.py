"""Simulated quantum memory: :class:`qsense.acquisition.memory.SlotMemory` with the
``sims.decohere`` coherence model.

A stored copy is decohered by exactly the time it waited, when it is released
(``StoredCopy.state``).  For the local-depolarizing model the memory also
reports the per-qubit survival probability e^{-wait/T2}, which lets samplers
decohere exactly without building a density matrix per copy
(``qsense.acquisition.backends.depolarize_shadow_bits`` / ``depolarize_bell_codes``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qsense.acquisition.memory import Clock, SlotMemory

from .channels import decohere

__all__ = ["SimsCoherence", "SimulatedMemory"]


class SimsCoherence:
    """Memory decoherence through :func:`sims.decohere`.

    ``model``: ``"depolarizing"`` (every non-identity Pauli factor decays as
    e^{-t/T2}), ``"dephasing"`` or ``"t1t2"`` (see :func:`sims.decohere`);
    ``t1``/``t2`` in seconds, ``None`` for infinite.
    """

    def __init__(self, t2: float | None = None, t1: float | None = None, model: str = "depolarizing") -> None:
        self.t2 = math.inf if t2 is None else float(t2)
        self.t1 = t1
        self.model = model
        # validate once, up front, rather than on the first release
        decohere(np.array([1.0, 0.0]), 0.0, t1=t1, t2=None if math.isinf(self.t2) else self.t2, model=model)

    def apply(self, state: Any, wait: float) -> np.ndarray:
        t2 = None if math.isinf(self.t2) else self.t2
        return decohere(state, float(wait), t1=self.t1, t2=t2, model=self.model)

    def survival(self, wait: float | np.ndarray) -> np.ndarray | None:
        if self.model != "depolarizing":
            return None
        w = np.asarray(wait, dtype=np.float64)
        return np.ones_like(w) if math.isinf(self.t2) else np.exp(-w / self.t2)

    def __repr__(self) -> str:
        return f"SimsCoherence(t2={self.t2}, t1={self.t1}, model={self.model!r})"


class SimulatedMemory(SlotMemory):
    """A slot memory for simulated copies that decohere while they wait.

    Parameters are those of :class:`qsense.acquisition.memory.SlotMemory` plus ``t2``,
    ``t1`` and ``model`` of the coherence model (:class:`SimsCoherence`).
    """

    def __init__(
        self,
        capacity: int = 1,
        t2: float | None = None,
        *,
        t1: float | None = None,
        model: str = "depolarizing",
        max_wait: float | None = None,
        on_full: str = "reject",
        clock: Clock | None = None,
        name: str = "memory",
    ) -> None:
        super().__init__(capacity, SimsCoherence(t2, t1, model), max_wait=max_wait, on_full=on_full, clock=clock, name=name)
