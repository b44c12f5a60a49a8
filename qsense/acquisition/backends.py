"""Measurement backends: turn a measurement plan into records.

A :class:`MeasurementPlan` names a family (``"shadow"`` or ``"bell"``) and the
copies to measure: items of one :class:`~qsense.acquisition.memory.StoredCopy` (shadow) or
two (Bell, the first copy is the one that waited).  Every backend implements

    async def measure(plan) -> list[ShadowBatch | BellBatch]

with one record row per item, in item order (split into several batches only
when items live on different wires).  Row timestamps ``t`` are the items'
release times; a Bell row's ``wait`` is the *total* time its two copies spent in
memory (under local depolarizing, tr(P D_a ρ) tr(P D_b ρ) = e^{-k(a+b)/T2} tr(Pρ)²,
so the sum is exactly what ``BellEstimator(t2=...)`` must undo; it equals the
first copy's wait when the second is measured on arrival).

Backends here:

* :class:`PennyLaneBackend` runs the shadow and two-copy Bell circuits on a
  ``qml.device`` (``default.qubit`` for statevectors, ``default.mixed`` for
  density matrices); :func:`pennylane_shadows` / :func:`pennylane_bell` are the
  one-call versions.
* ``qsense.sims.backend_sim.SimulatedBackend`` samples with the fast ``sims`` samplers
  (:func:`make_backend` finds it as the ``simulated`` plugin of the
  ``qsense.backends`` entry-point group, so the core never imports ``sims``).

Depolarizing memories have a structure both use (:func:`depolarize_shadow_bits`,
:func:`depolarize_bell_codes`): a qubit depolarized for time τ is untouched with
probability p = e^{-τ/T2} and otherwise replaced by I/2.  Measuring I/2 in any
basis gives a uniform bit independent of everything else, and a Bell measurement
of I/2 ⊗ σ gives a uniform code; so sampling the *undecohered* state with many
shots and re-randomising the affected qubits of each row is exact, and lets one
device call serve copies that waited different times.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from qsense import plugins
from qsense.records import BellBatch, ShadowBatch

from .memory import StoredCopy

__all__ = [
    "MeasurementPlan",
    "BlockPlan",
    "MeasurementBackend",
    "PennyLaneBackend",
    "pennylane_shadows",
    "pennylane_bell",
    "depolarize_shadow_bits",
    "depolarize_bell_codes",
    "group_items",
    "assemble_records",
    "measure_grouped",
    "survival_rows",
    "make_backend",
]

log = logging.getLogger(__name__)

@dataclass(frozen=True, eq=False)
class MeasurementPlan:
    """Which copies to measure and how.

    ``family``: ``"shadow"`` (items of one copy) or ``"bell"`` (items of two:
    qubit i of the first with qubit i of the second).  ``seq``: plan number.
    """

    family: str
    items: tuple[tuple[StoredCopy, ...], ...]
    seq: int = 0

    def __post_init__(self) -> None:
        if self.family not in ("shadow", "bell"):
            raise ValueError(f"family must be 'shadow' or 'bell'; got {self.family!r}")
        size = 1 if self.family == "shadow" else 2
        for it in self.items:
            if len(it) != size:
                raise ValueError(f"a {self.family} item holds {size} copies; got {len(it)}")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def copies(self) -> int:
        """Copies consumed by the plan."""
        return len(self.items) * (1 if self.family == "shadow" else 2)


@dataclass(frozen=True, eq=False)
class BlockPlan:
    """Many measurements of one family on copies of the same state(s), as arrays.

    What :meth:`~qsense.acquisition.scheduler.Scheduler.on_block` produces for a
    :class:`~qsense.acquisition.blocks.CopyBlock`.  Layout (``T`` rows, one per item):

    * ``states``: ``(state,)`` for shadows, ``(state_a, state_b)`` for Bell pairs
      (the raw, undecohered states shared by every row);
    * ``released``: float64 ``(T,)``, the release (measurement) time of each row;
    * ``waits``: float64 ``(T, m)``, m = 1 (shadow) or 2 (Bell: first copy, second
      copy), the time each copy spent in memory;
    * ``seqs``: int64 ``(T, m)``, the copies' sequence numbers (for the per-copy
      fallback and for logs);
    * ``rows``: ``None``, or one per-copy payload per column (the block's
      :attr:`~qsense.acquisition.blocks.CopyBlock.rows` gathered for that
      column's copies, each of length ``T``): what a backend needs of each copy
      besides the shared state (the telescope's photon rows).

    ``coherence`` is the memory's coherence model (decoherence by ``waits``).
    A backend with ``measure_block(plan)`` measures it with one sampler call;
    :meth:`to_plan` gives the equivalent per-copy :class:`MeasurementPlan` for any
    other backend.  ``len(plan)`` and ``plan.copies`` mean what they mean for a
    :class:`MeasurementPlan`.
    """

    family: str
    states: tuple
    released: np.ndarray
    waits: np.ndarray
    seqs: np.ndarray
    wires: tuple | None = None
    source: str = ""
    key: Any = None
    coherence: Any = None
    seq: int = 0
    rows: tuple | None = None

    def __post_init__(self) -> None:
        if self.family not in ("shadow", "bell"):
            raise ValueError(f"family must be 'shadow' or 'bell'; got {self.family!r}")
        m = 1 if self.family == "shadow" else 2
        if len(self.states) != m:
            raise ValueError(f"a {self.family} block plan holds {m} states; got {len(self.states)}")
        T = int(np.shape(self.released)[0])
        if np.shape(self.waits) != (T, m) or np.shape(self.seqs) != (T, m):
            raise ValueError(f"waits and seqs must have shape ({T}, {m})")
        if self.rows is not None and (len(self.rows) != m or any(len(r) != T for r in self.rows)):
            raise ValueError(f"rows must hold {m} per-copy payloads of {T} rows each")

    def __len__(self) -> int:
        return int(self.released.shape[0])

    @property
    def copies(self) -> int:
        """Copies consumed by the plan."""
        return len(self) * (1 if self.family == "shadow" else 2)

    @property
    def bell_wait(self) -> np.ndarray:
        """float64 (T,): total memory time of each row's copies (a Bell row's ``wait``)."""
        return self.waits.sum(axis=1)

    def survival(self, n: int) -> np.ndarray | None:
        """float64 (T, n): per-row, per-qubit probability that no qubit of the
        row's copies was depolarized (product over the copies); ``None`` when the
        coherence model is not local depolarizing."""
        T, m = self.waits.shape
        if self.coherence is None or not np.any(self.waits > 0):
            return np.ones((T, n))
        p = np.ones((T, n))
        for c in range(m):
            s = self.coherence.survival(self.waits[:, c])
            if s is None:
                return None
            s = np.asarray(s, dtype=np.float64)
            p *= s[:, None] if s.ndim == 1 else s
        return p

    def to_plan(self) -> MeasurementPlan:
        """The same measurements as a per-copy :class:`MeasurementPlan` (with ``rows``,
        each copy's ``meta`` is ``{"rows": rows[column], "index": row}``)."""
        from .memory import Copy

        items = []
        for r in range(len(self)):
            row = []
            for c, state in enumerate(self.states):
                w = float(self.waits[r, c])
                at = float(self.released[r])
                meta = {} if self.rows is None else {"rows": self.rows[c], "index": r}
                copy = Copy(state, at - w, self.source, int(self.seqs[r, c]), self.wires, self.key, meta)
                row.append(StoredCopy(copy, w, at, None, self.coherence if w > 0 else None))
            items.append(tuple(row))
        return MeasurementPlan(self.family, tuple(items), self.seq)


@runtime_checkable
class MeasurementBackend(Protocol):
    """Anything that measures plans: ``await backend.measure(plan)``."""

    name: str

    async def measure(self, plan: MeasurementPlan) -> list[ShadowBatch | BellBatch]: ...


# -- helpers shared by backends ---------------------------------------------------------
def _wires_of(sc: StoredCopy) -> tuple:
    if sc.copy.wires is not None:
        return tuple(sc.copy.wires)
    n = sc.copy.n_qubits
    if n is None:
        raise ValueError(f"cannot tell the number of qubits of a copy from {sc.copy.source!r}")
    return tuple(range(n))


def group_items(items: Sequence[tuple[StoredCopy, ...]], decohered: bool = False) -> dict[tuple, list[int]]:
    """Indices of items that can share one sampler call, keyed by
    (wires, id of each copy's state object).  ``decohered``: key on the
    decohered states (``StoredCopy.state``) instead of the raw ones."""
    groups: dict[tuple, list[int]] = {}
    # the wires of a copy follow from (its state, its wires): work them out once per
    # distinct pair, not once per copy (the per-copy path's plans repeat one state)
    known: dict[tuple, tuple] = {}

    def wires_of(sc: StoredCopy) -> tuple:
        cw = sc.copy.wires
        k = (id(sc.copy.state), cw if cw is None or type(cw) is tuple else tuple(cw))
        w = known.get(k)
        if w is None:
            w = known[k] = _wires_of(sc)
        return w

    for i, it in enumerate(items):
        wires = wires_of(it[0])
        for other in it[1:]:
            if wires_of(other) != wires:
                raise ValueError(f"a Bell pair needs copies on the same wires; got {wires} and {_wires_of(other)}")
        states = tuple(id(sc.state if decohered else sc.raw_state) for sc in it)
        groups.setdefault((wires,) + states, []).append(i)
    return groups


def survival_rows(ps: Sequence[Any], n: int) -> np.ndarray:
    """(T, n) per-row, per-qubit survival probabilities from scalars or (n,) arrays."""
    out = np.empty((len(ps), n))
    try:
        arr = np.asarray(ps, dtype=np.float64)
    except ValueError:  # scalars mixed with arrays: row by row
        arr = None
    if arr is not None and arr.ndim in (1, 2) and arr.shape[0] == len(ps):
        # one array op instead of a broadcast per copy (the per-copy path's hot spot)
        out[:] = arr[:, None] if arr.ndim == 1 else arr
        return out
    for i, p in enumerate(ps):
        out[i] = np.broadcast_to(np.asarray(p, dtype=np.float64), (n,))
    return out


def depolarize_shadow_bits(outcomes: np.ndarray, survival: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shadow outcome bits of depolarized copies from those of the clean state:
    each qubit is kept with probability ``survival`` (broadcast to (T, n)) and
    otherwise replaced by a uniform bit (measuring I/2 in any basis)."""
    out = np.array(outcomes, dtype=np.uint8, copy=True)
    p = np.broadcast_to(np.asarray(survival, dtype=np.float64), out.shape)
    hit = rng.random(out.shape) >= p
    if hit.any():
        out[hit] = rng.integers(0, 2, size=int(hit.sum()), dtype=np.uint8)
    return out


def depolarize_bell_codes(codes: np.ndarray, survival: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bell codes of depolarized pairs from those of the clean pair: wire i is
    kept with probability ``survival`` (the product of the two copies' survival
    probabilities, broadcast to (T, n)) and otherwise replaced by a uniform code
    (a Bell measurement of I/2 ⊗ σ is uniform and independent of the rest)."""
    out = np.array(codes, dtype=np.uint8, copy=True)
    p = np.broadcast_to(np.asarray(survival, dtype=np.float64), out.shape)
    hit = rng.random(out.shape) >= p
    if hit.any():
        out[hit] = rng.integers(0, 4, size=int(hit.sum()), dtype=np.uint8)
    return out


def make_backend(name: str, /, **kw: Any) -> MeasurementBackend:
    """A backend by plugin name: ``make_backend("simulated", seed=1)``.

    Backends are entry points of the ``qsense.backends`` group
    (:mod:`qsense.plugins`): ``simulated`` (:mod:`qsense.sims`), ``pennylane``,
    ``telescope``, and any an installed package adds.  An unknown name raises
    :class:`~qsense.plugins.PluginError` (a ``ValueError``) listing the installed ones.
    """
    return plugins.create("backend", name, **kw)


# -- PennyLane -------------------------------------------------------------------------------
def _is_density(state: np.ndarray) -> bool:
    return np.ndim(state) == 2


def _device(device: Any, wires: int, seed: Any, density: bool) -> Any:
    import pennylane as qml

    if not isinstance(device, str):
        return device
    if density and device == "default.qubit":
        device = "default.mixed"  # default.qubit cannot prepare a density matrix
    return qml.device(device, wires=wires, seed=seed)


def _prepare(state: np.ndarray, wires: Sequence[int]) -> None:
    import pennylane as qml

    if _is_density(state):
        qml.QubitDensityMatrix(np.asarray(state, dtype=complex), wires=list(wires))
    else:
        qml.StatePrep(np.asarray(state, dtype=complex), wires=list(wires), normalize=True)


def pennylane_shadows(
    state: Any, shots: int, *, device: Any = "default.qubit", seed: Any = None, wires: Sequence | None = None,
    source: str = "", seq: int = 0, t: Any = None,
) -> ShadowBatch:
    """``shots`` classical-shadow snapshots of ``state`` (statevector or density
    matrix) measured on a PennyLane device with ``qml.classical_shadow``."""
    import pennylane as qml

    state = np.asarray(state)
    n = int(round(np.log2(state.shape[0])))
    dev = _device(device, n, seed, _is_density(state))

    @qml.qnode(dev)
    def circuit():
        _prepare(state, range(n))
        return qml.classical_shadow(wires=list(range(n)))

    bits, recipes = qml.set_shots(circuit, shots=int(shots))()
    bits = np.asarray(bits).reshape(int(shots), n)
    recipes = np.asarray(recipes).reshape(int(shots), n)
    return ShadowBatch(recipes, bits, wires=wires, source=source, seq=seq, t=t)


def pennylane_bell(
    state_a: Any, state_b: Any, shots: int, *, device: Any = "default.qubit", seed: Any = None,
    wires: Sequence | None = None, source: str = "", seq: int = 0, t: Any = None, wait: Any = None,
) -> BellBatch:
    """``shots`` two-copy Bell measurements of ``state_a ⊗ state_b`` on a PennyLane
    device: copy A on wires 0, 2, 4..., copy B on 1, 3, 5...; per pair
    CNOT(A_i → B_i), H(A_i), then ``qml.sample`` (the ReCirq interleaved layout)."""
    import pennylane as qml

    a = np.asarray(state_a)
    b = np.asarray(state_b)
    n = int(round(np.log2(a.shape[0])))
    density = _is_density(a) or _is_density(b)
    if density:
        a = a if _is_density(a) else np.outer(a, a.conj())
        b = b if _is_density(b) else np.outer(b, b.conj())
    dev = _device(device, 2 * n, seed, density)
    A = [2 * i for i in range(n)]
    B = [2 * i + 1 for i in range(n)]
    # reorder the joint state's qubits (A_0..A_n-1, B_0..B_n-1) into the interleaved
    # wire order ourselves: not every device honours an unsorted wire list in state prep
    perm = [q for i in range(n) for q in (i, n + i)]
    joint = np.kron(a, b)
    if density:
        joint = joint.reshape((2,) * (4 * n)).transpose(perm + [2 * n + q for q in perm]).reshape(4**n, 4**n)
    else:
        joint = joint.reshape((2,) * (2 * n)).transpose(perm).reshape(-1)

    @qml.qnode(dev)
    def circuit():
        _prepare(joint, range(2 * n))
        for i in range(n):
            qml.CNOT(wires=[A[i], B[i]])
            qml.Hadamard(wires=A[i])
        return qml.sample(wires=list(range(2 * n)))

    samples = np.asarray(qml.set_shots(circuit, shots=int(shots))()).reshape(int(shots), 2 * n)
    return BellBatch.from_interleaved(samples.astype(np.uint8), wires=wires, source=source, seq=seq, t=t, wait=wait)


class PennyLaneBackend:
    """Measure plans by running circuits on a PennyLane device.

    Items that share a state object share one circuit execution (``shots`` =
    their number).  Decoherence from waiting: with a local-depolarizing memory the
    clean state is executed once and the affected qubits re-randomised per row
    (exact, see the module docstring); otherwise each copy's decohered state is
    executed on its own.

    Parameters
    ----------
    device:
        A device name (``"default.qubit"``; density matrices switch to
        ``"default.mixed"``) or a device instance with enough wires.
    seed:
        Seed for the devices and the re-randomisation.
    """

    name = "pennylane"

    def __init__(self, device: Any = "default.qubit", seed: Any = None) -> None:
        self.device = device
        self.rng = np.random.default_rng(seed)

    def _seed(self) -> int:
        return int(self.rng.integers(2**31 - 1))

    async def measure(self, plan: MeasurementPlan) -> list[ShadowBatch | BellBatch]:
        # circuits are CPU-bound: run them off the event loop
        return await asyncio.to_thread(self._measure, plan)

    def _measure(self, plan: MeasurementPlan) -> list[ShadowBatch | BellBatch]:
        def shadows(state: Any, shots: int) -> tuple[np.ndarray, np.ndarray]:
            b = pennylane_shadows(state, shots, device=self.device, seed=self._seed())
            return b.bases, b.outcomes

        def bells(a: Any, b: Any, shots: int) -> np.ndarray:
            return pennylane_bell(a, b, shots, device=self.device, seed=self._seed()).outcomes

        return measure_grouped(plan, shadows, bells, self.rng)


def measure_grouped(
    plan: MeasurementPlan,
    shadow_rows: Callable[[Any, int], tuple[np.ndarray, np.ndarray]],
    bell_rows: Callable[[Any, Any, int], np.ndarray],
    rng: np.random.Generator,
    fast_ok: bool = True,
) -> list[ShadowBatch | BellBatch]:
    """The measurement loop shared by backends: group the plan's items by state
    and wires, sample each group with one call, then assemble records in item order.

    ``shadow_rows(state, shots) -> (bases, outcomes)`` and
    ``bell_rows(state_a, state_b, shots) -> codes`` are the backend's samplers.
    When every stored copy reports a ``survival`` (a depolarizing memory) and
    ``fast_ok``, the undecohered states are sampled once per group and each
    copy's own decoherence is applied to its outcomes (exact for depolarizing
    noise); otherwise each distinct decohered state is sampled.
    """
    items = plan.items
    if not items:
        return []
    fast = fast_ok and all(sc.survival is not None for it in items for sc in it)
    rows: dict[tuple, list[tuple[int, Any]]] = {}
    for key, idx in group_items(items, decohered=not fast).items():
        wires, n = key[0], len(key[0])
        states = [sc.raw_state if fast else sc.state for sc in items[idx[0]]]
        if plan.family == "shadow":
            bases, outs = shadow_rows(states[0], len(idx))
            if fast:
                outs = depolarize_shadow_bits(outs, survival_rows([items[i][0].survival for i in idx], n), rng)
            for r, i in enumerate(idx):
                rows.setdefault(wires, []).append((i, (bases[r], outs[r])))
        else:
            codes = bell_rows(states[0], states[1], len(idx))
            if fast:
                p = survival_rows([items[i][0].survival for i in idx], n) * survival_rows([items[i][1].survival for i in idx], n)
                codes = depolarize_bell_codes(codes, p, rng)
            for r, i in enumerate(idx):
                rows.setdefault(wires, []).append((i, codes[r]))
    return assemble_records(plan, rows)


def assemble_records(plan: MeasurementPlan, rows: dict[tuple, list[tuple[int, Any]]]) -> list[ShadowBatch | BellBatch]:
    """Records in item order per wires group (shared by backends)."""
    out: list[ShadowBatch | BellBatch] = []
    for wires, lst in rows.items():
        lst.sort(key=lambda r: r[0])
        idx = [i for i, _ in lst]
        t = np.array([plan.items[i][-1].released for i in idx], dtype=np.float64)
        if plan.family == "shadow":
            bases = np.stack([r[0] for _, r in lst]).astype(np.uint8)
            outs = np.stack([r[1] for _, r in lst]).astype(np.uint8)
            out.append(ShadowBatch(bases, outs, wires=wires, t=t))
        else:
            codes = np.stack([r for _, r in lst]).astype(np.uint8)
            wait = np.array([sum(sc.wait for sc in plan.items[i]) for i in idx], dtype=np.float64)
            out.append(BellBatch(codes, wires=wires, t=t, wait=wait))
    return out
