"""Memory decoherence models: how a copy that waited ``t`` seconds changes, per Pauli letter.

One model object is shared by everything that needs to know it (docs/physics.md
section 3): :class:`~qsense.estimators.bell.BellEstimator` reweights the shots
of waited copies with it, the quantum memory
(:class:`qsense.acquisition.memory.SlotMemory`) reports it, and the scheduler's
cost model prices waiting with it, so the three cannot disagree.

Every model is local and exponential in the wait: a single-qubit Pauli factor
``L`` in {X, Y, Z} of tr(P D_t rho) is multiplied by ``exp(-t * rates[L])``:

=====================  =============  =============  ===========================
model                  X              Y              Z
=====================  =============  =============  ===========================
``Depolarizing(t2)``   e^{-t/T2}      e^{-t/T2}      e^{-t/T2}
``Dephasing(t2)``      e^{-t/T2}      e^{-t/T2}      1 (no decay)
``T1T2(t1, t2)``       e^{-t/T2}      e^{-t/T2}      e^{-t/T1}, plus relaxation
=====================  =============  =============  ===========================

``T1T2`` is amplitude damping (T1) plus dephasing, with coherences decaying as
e^{-t/T2} in total (T2 <= 2 T1).  It is not unital: <Z>_t = e^{-t/T1} <Z> +
(1 - e^{-t/T1}), so a waited copy's Pauli expectation also picks up the
expectations of the Paulis with some Z letters replaced by I.  A Bell shot sees
tr(P D_t(rho)) tr(P rho); the relaxation part tr(P_S rho) tr(P rho) cannot be
separated from Bell data alone (the per-wire Bell outcomes only reveal
<XX>, <YY>, <ZZ> of the two copies), so the reweighting divides by the
multiplicative factors above and leaves a bias of order (1 - e^{-t/T1}) per Z
letter whenever the state has non-zero <Z>-type sub-Paulis; see
:meth:`DecoherenceModel.unital` and ``docs/estimators.md``.

This module imports only NumPy (estimators may not import the simulators).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

__all__ = ["DecoherenceModel", "Depolarizing", "Dephasing", "T1T2", "MODELS", "make_decoherence", "decoherence_of",
           "check_decoherence", "DecoherenceMismatchWarning"]

#: model names accepted by :func:`make_decoherence` (and the ``decoherence`` config key)
MODELS = ("depolarizing", "dephasing", "t1t2")


def _time(name: str, v: Any, allow_none: bool = True) -> float:
    """Seconds as float (``None`` -> inf when allowed); positive, not NaN."""
    if v is None:
        if allow_none:
            return math.inf
        raise ValueError(f"{name} is required")
    v = float(v)
    if not v > 0 or math.isnan(v):
        raise ValueError(f"{name} must be a positive number of seconds (inf or None for no decay); got {v!r}")
    return v


class DecoherenceModel:
    """Base class: per-letter decay rates ``rates`` = (r_X, r_Y, r_Z) in 1/s.

    Subclasses set ``name``, ``t1``, ``t2`` and ``rates``.  ``t2`` is what older
    code (scheduler, memory) plans with; ``rates`` is what is exact.
    """

    name: str = ""
    t1: float = math.inf
    t2: float = math.inf
    rates: np.ndarray = np.zeros(3)

    @property
    def unital(self) -> bool:
        """True when the channel maps I/2 to itself (no relaxation), so that the
        per-letter reweighting is exactly unbiased."""
        return True

    @property
    def finite(self) -> bool:
        """Whether any letter decays at all."""
        return bool(np.any(self.rates > 0))

    def factors(self, wait: float | np.ndarray) -> np.ndarray:
        """Survival factors (..., 3) of the X, Y, Z letters after ``wait`` seconds."""
        w = np.asarray(wait, dtype=np.float64)
        return np.exp(-w[..., None] * self.rates)

    def pauli_rate(self, letters: np.ndarray) -> np.ndarray:
        """Decay rate (1/s) of each Pauli: the sum of its letters' rates.

        ``letters``: int array (..., k) with codes 0 = I (or padding), 1 = X,
        2 = Y, 3 = Z.  tr(P D_t rho) = exp(-t * rate) tr(P rho) for unital models.
        """
        L = np.asarray(letters, dtype=np.int64)
        table = np.concatenate([[0.0], self.rates])
        return table[L].sum(axis=-1)

    def wait_cost(self, rate_p: float, arrival_rate: float) -> float:
        """E[e^{2 r_P tau}] for exponential waits at ``arrival_rate`` (1/s): the
        per-shot second moment of a reweighted Bell shot, lambda / (lambda - 2 r_P)
        (docs/physics.md §3 and §4); inf when it diverges.  For depolarizing
        with r_P = k/T2 it is lambda T2 / (lambda T2 - 2k)."""
        if rate_p <= 0:
            return 1.0
        if not arrival_rate > 2.0 * rate_p:
            return math.inf
        return arrival_rate / (arrival_rate - 2.0 * rate_p)

    def to_json(self) -> dict:
        """``{"model": name, "t1": ..., "t2": ...}`` (None for infinite)."""
        fin = lambda v: None if math.isinf(v) else float(v)  # noqa: E731
        return {"model": self.name, "t1": fin(self.t1), "t2": fin(self.t2)}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DecoherenceModel):
            return NotImplemented
        return self.name == other.name and np.array_equal(self.rates, other.rates) and self.t1 == other.t1 and self.t2 == other.t2

    def __hash__(self) -> int:
        return hash((self.name, self.t1, self.t2))

    def __repr__(self) -> str:
        args = f"t1={self.t1:g}, t2={self.t2:g}" if self.name == "t1t2" else f"t2={self.t2:g}"
        return f"{type(self).__name__}({args})"


class Depolarizing(DecoherenceModel):
    """Local depolarizing at rate 1/T2: every non-identity letter decays as e^{-t/T2}."""

    name = "depolarizing"

    def __init__(self, t2: float | None) -> None:
        self.t2 = _time("t2", t2)
        r = 0.0 if math.isinf(self.t2) else 1.0 / self.t2
        self.rates = np.array([r, r, r])


class Dephasing(DecoherenceModel):
    """Pure dephasing: X and Y decay as e^{-t/T2}; Z (and I) do not decay."""

    name = "dephasing"

    def __init__(self, t2: float | None) -> None:
        self.t2 = _time("t2", t2)
        r = 0.0 if math.isinf(self.t2) else 1.0 / self.t2
        self.rates = np.array([r, r, 0.0])


class T1T2(DecoherenceModel):
    """Amplitude damping (T1) plus dephasing: X, Y decay as e^{-t/T2} in total, Z
    as e^{-t/T1} towards +1 (not unital).  Needs T2 <= 2 T1; ``t2=None`` means 2 T1."""

    name = "t1t2"

    def __init__(self, t1: float | None, t2: float | None = None) -> None:
        self.t1 = _time("t1", t1)
        self.t2 = 2.0 * self.t1 if t2 is None else _time("t2", t2)
        if self.t2 > 2.0 * self.t1 * (1 + 1e-12):
            raise ValueError(f"the t1t2 model needs T2 <= 2 T1 (got T1={self.t1}, T2={self.t2}): coherences cannot outlive 2 T1")
        rxy = 0.0 if math.isinf(self.t2) else 1.0 / self.t2
        rz = 0.0 if math.isinf(self.t1) else 1.0 / self.t1
        self.rates = np.array([rxy, rxy, rz])

    @property
    def unital(self) -> bool:
        return math.isinf(self.t1)


def make_decoherence(model: "str | DecoherenceModel | dict | None" = None, t2: float | None = None, t1: float | None = None) -> DecoherenceModel | None:
    """A model from a name and times, a ``to_json`` dict, or a model (returned as is).

    ``make_decoherence("dephasing", t2=1e-3)``; ``make_decoherence(None, t2=...)``
    is depolarizing (the historical default); ``None`` when there is nothing to model.
    """
    if isinstance(model, DecoherenceModel):
        return model
    if isinstance(model, dict):
        return make_decoherence(model.get("model"), t2=model.get("t2"), t1=model.get("t1"))
    name = "depolarizing" if model is None else model
    if name not in MODELS:
        raise ValueError(f"decoherence must be one of {MODELS} (or a DecoherenceModel); got {model!r}")
    if name == "t1t2":
        if t1 is None:
            raise ValueError("the t1t2 decoherence model needs t1 (seconds)")
        return T1T2(t1, t2)
    if t2 is None:
        return None if model is None else (Depolarizing if name == "depolarizing" else Dephasing)(None)
    return Depolarizing(t2) if name == "depolarizing" else Dephasing(t2)


def decoherence_of(obj: Any) -> DecoherenceModel | None:
    """The decoherence model an object (memory, coherence model, estimator) declares.

    Looks for a ``decoherence`` attribute holding a model, then for the
    ``model``/``t1``/``t2`` attributes that simulated coherence models carry; an
    object with only ``t2`` is depolarizing (what the estimators assumed so far).
    """
    if obj is None:
        return None
    if isinstance(obj, DecoherenceModel):
        return obj
    d = getattr(obj, "decoherence", None)
    if isinstance(d, DecoherenceModel):
        return d
    coh = getattr(obj, "coherence", None)
    if coh is not None and coh is not obj:
        return decoherence_of(coh)
    t2 = getattr(obj, "t2", None)
    t1 = getattr(obj, "t1", None)
    name = getattr(obj, "model", None)
    if not isinstance(name, str) or name not in MODELS:
        name = None
    if t2 is not None and math.isinf(float(t2)):
        t2 = None
    if t1 is not None and math.isinf(float(t1)):
        t1 = None
    if name == "t1t2" and t1 is None:
        name = "dephasing"  # t1t2 without T1 is pure dephasing at T2
    try:
        return make_decoherence(name, t2=t2, t1=t1)
    except ValueError:
        return None


class DecoherenceMismatchWarning(UserWarning):
    """The memory's decoherence model and an estimator's reweighting model differ."""


def check_decoherence(memory: Any, estimator: Any, where: str = "") -> bool:
    """Warn (:class:`DecoherenceMismatchWarning`) when ``estimator`` reweights waited copies
    with a different model than ``memory`` declares; returns whether they agree.

    Both sides are read with :func:`decoherence_of` (a model object, a memory, a
    coherence model, a :class:`~qsense.estimators.bell.BellEstimator`); a side
    that declares nothing (perfect memory, no reweighting) counts as None.
    """
    mem, est = decoherence_of(memory), decoherence_of(estimator)
    if mem is not None and not mem.finite:
        mem = None
    if est is not None and not est.finite:
        est = None
    if mem == est:
        return True
    prefix = f"{where}: " if where else ""
    warnings.warn(
        f"{prefix}the memory decoheres as {mem!r} but the estimator reweights as {est!r}: its Bell estimates of "
        "waited copies are biased (pass the memory's model: BellEstimator(..., decoherence=memory.decoherence))",
        DecoherenceMismatchWarning,
        stacklevel=3,
    )
    return False
