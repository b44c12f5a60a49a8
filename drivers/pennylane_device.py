"""Async driver that streams measurement batches from any PennyLane circuit and device.

:class:`PennyLaneDriver` has one job: turn a state-preparing PennyLane quantum
function (plus a device) into an async stream of :class:`qsense.ShadowBatch` or
:class:`qsense.BellBatch` records, in the ophyd-async style (a small object you
configure, then ``async for batch in driver:``).

Two modes, same records:

``mode="state"``
    The device computes the state (``qml.state()`` or ``qml.density_matrix``,
    e.g. on ``default.qubit``, ``default.mixed``, ``lightning.qubit``) once per
    parameter setting, and the exact :mod:`sims` samplers measure it (cached per
    setting, so a stream of batches costs O(shots) each).
``mode="device"``
    The device executes the measurements itself, as hardware would:
    shadows through ``qml.classical_shadow`` where the device supports it, or
    (``shadow_method="rotations"``, and automatically when the device rejects
    ``classical_shadow``, e.g. ``lightning.qubit``) by drawing a random basis
    per shot, grouping shots by basis setting and running one rotated circuit
    with ``qml.sample`` per distinct setting; Bell shots by a two-copy circuit on
    2n wires ordered (A_0, B_0, A_1, B_1, ...), CNOT(A_i, B_i), H(A_i) and
    ``qml.sample`` (:meth:`qsense.BellBatch.from_interleaved`).

Chosen bases: ``bases=`` a fixed (B, n) array or a basis policy
(:class:`qsense.acquisition.scheduler.DerandomizedBasisPolicy`) replaces the
random shadow bases -- sampled exactly in those bases in state mode, run as the
rotated ``qml.sample`` circuits grouped per setting in device mode.

The quantum function only prepares the state: its operations are recorded with
``qml.tape.make_qscript`` and anything it returns is ignored.  Parameters are the
positional/keyword arguments passed to it; change them while streaming with
:meth:`PennyLaneDriver.set_params`, or give ``params`` as a callable of stream
time ``t`` (seconds) returning an argument tuple (a time-varying signal).

Pacing: ``rate`` records per second (snapshots, or two-copy shots); batches are
spaced so the average rate never exceeds it, and record ``t`` timestamps are
evenly spread at that rate.  ``realtime=False`` keeps the timestamps but skips
the sleeping (simulated time runs as fast as the device).  Without ``rate``
every record of a batch carries the stream time at which its batch started.
``total`` bounds the number of records (the last batch is cut short).

Device work runs in a worker thread (``asyncio.to_thread``) so the event loop
stays responsive; cancelling the consuming task or leaving the ``async for``
stops the stream at once and leaves no task behind (a device call already in
flight finishes in its thread and is discarded).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from qsense.records import BellBatch, ShadowBatch

from .record_stream import KINDS, MODES, RecordStreamDriver, freeze

__all__ = ["KINDS", "MODES", "PennyLaneDriver", "sample_records"]

log = logging.getLogger(__name__)


def _device_errors() -> tuple[type[BaseException], ...]:
    """Exceptions with which a device says it cannot run ``qml.classical_shadow``."""
    import pennylane as qml

    errs: list[type[BaseException]] = [NotImplementedError]
    exc_mod = getattr(qml, "exceptions", None)
    for name in ("DeviceError", "QuantumFunctionError"):
        e = getattr(exc_mod, name, None) or getattr(qml, name, None)
        if isinstance(e, type):
            errs.append(e)
    return tuple(errs)


class PennyLaneDriver(RecordStreamDriver):
    """Stream shadow or Bell batches from a PennyLane quantum function.

    Parameters
    ----------
    qfunc:
        A function that applies PennyLane operations (its return value is
        ignored), or a ``qml.QNode`` (its function and, if ``device`` is not
        given, its device are used).
    device:
        A PennyLane device.  Device-mode Bell shots need 2n wires (a device
        created with ``wires=None`` or at least 2n wires; the first 2n are used
        as A_0, B_0, A_1, B_1, ...).
    wires:
        The register, wire 0 first (default: the wires the circuit touches,
        in sorted order).  Records use these labels.
    kind:
        ``"shadow"`` (:class:`qsense.ShadowBatch`) or ``"bell"`` (:class:`qsense.BellBatch`).
    mode:
        ``"state"`` or ``"device"`` (module docstring).
    params:
        Initial circuit arguments: a tuple of positional arguments, a dict of
        keyword arguments, or a callable ``params(t) -> tuple | dict`` evaluated
        at the start of every batch (t = stream time in seconds).
    batch_size, total, rate, realtime:
        Records per batch; records in all (``None``: endless); records per second
        (``None``: as fast as possible); whether to sleep to honour ``rate``.
    seed:
        Seeds the samplers (state mode) and the random bases (of
        ``qml.classical_shadow`` and of ``shadow_method="rotations"``).  The
        device's own shot noise is seeded where the device is created
        (``qml.device(..., seed=...)``).
    source, seq0, time_origin:
        Record metadata: ``source`` name, first ``seq`` (then +1 per batch), and
        an offset added to the stream-relative timestamps (e.g. ``time.time()``).
    state:
        State mode: ``"auto"`` (``qml.state()`` when the circuit and device hold
        exactly the register, else ``qml.density_matrix(wires)``) or ``"density"``.
    shadow_method:
        Device mode shadows: ``"auto"``, ``"native"`` (``qml.classical_shadow``) or
        ``"rotations"``.
    bases:
        Shadows only: ``None`` (random bases), a fixed uint8 (B, n) array of
        bases (0 = X, 1 = Y, 2 = Z; rows measured in turn, cycled), or a basis
        policy with ``next_bases(count)`` whose ``update(batch)``, if it has one,
        gets every batch before it is yielded.  Device mode then runs the
        rotated circuits (``qml.classical_shadow`` draws its own bases).
    """

    def __init__(
        self,
        qfunc: Callable[..., Any],
        device: Any = None,
        *,
        wires: Sequence[Any] | None = None,
        kind: str = "shadow",
        mode: str = "state",
        params: Any = (),
        batch_size: int = 1000,
        total: int | None = None,
        rate: float | None = None,
        realtime: bool = True,
        seed: Any = None,
        source: str = "pennylane",
        seq0: int = 0,
        time_origin: float = 0.0,
        state: str = "auto",
        shadow_method: str = "auto",
        bases: Any = None,
    ) -> None:
        import pennylane as qml

        if isinstance(qfunc, qml.QNode):
            device = qfunc.device if device is None else device
            qfunc = qfunc.func
        if device is None:
            raise ValueError("a PennyLane device is needed (pass device=..., or a QNode)")
        if not callable(qfunc):
            raise ValueError("qfunc must be a callable that applies PennyLane operations")
        if state not in ("auto", "density"):
            raise ValueError(f"state must be 'auto' or 'density'; got {state!r}")
        if shadow_method not in ("auto", "native", "rotations"):
            raise ValueError(f"shadow_method must be 'auto', 'native' or 'rotations'; got {shadow_method!r}")
        if bases is not None and shadow_method == "native":
            raise ValueError("qml.classical_shadow draws its own random bases: use shadow_method='auto' or 'rotations' with bases=")
        super().__init__(kind=kind, mode=mode, params=params, batch_size=batch_size, total=total, rate=rate,
                         realtime=realtime, seed=seed, source=source, seq0=seq0, time_origin=time_origin, bases=bases)
        self.qfunc = qfunc
        self.device = device
        self.state_method = state
        self.shadow_method = shadow_method
        self._wires = None if wires is None else tuple(wires)
        if self._wires is not None:
            self._check_bases_width(len(self._wires))
        # chosen bases need the rotated circuits: the native measurement picks its own
        self._native_ok: bool | None = (
            False if bases is not None else None if shadow_method == "auto" else shadow_method == "native"
        )

    # -- circuit pieces ----------------------------------------------------------------
    def _ops(self, args: tuple, kwargs: dict) -> list:
        import pennylane as qml

        tape = qml.tape.make_qscript(self.qfunc)(*args, **kwargs)
        ops = list(tape.operations)
        if self._wires is None:
            touched = qml.wires.Wires.all_wires([op.wires for op in ops])
            try:
                self._wires = tuple(sorted(touched.tolist()))
            except TypeError:
                self._wires = tuple(touched.tolist())
            if not self._wires:
                raise ValueError("the circuit touches no wires; pass wires=...")
            log.info("%s: register wires %s", self.source, self._wires)
        return ops

    @property
    def wires(self) -> tuple | None:
        """The register wires (known after the first batch if not given)."""
        return self._wires

    def _register_ops(self, ops: list) -> list:
        import pennylane as qml

        # identities first so that dynamic-wire devices order the state by the register
        return [qml.Identity(w) for w in self._wires] + ops

    def _compute_state(self, ops: list) -> np.ndarray:
        import pennylane as qml

        reg = list(self._wires)
        extra = set(qml.wires.Wires.all_wires([op.wires for op in ops]).tolist()) - set(reg)
        dev_wires = None if self.device.wires is None else list(self.device.wires)
        full = self.state_method == "auto" and not extra and (dev_wires is None or set(dev_wires) == set(reg))
        if full:
            tape = qml.tape.QuantumScript(self._register_ops(ops), [qml.state()])
            st = np.asarray(qml.execute([tape], self.device)[0])
            order = reg if dev_wires is None else dev_wires
            if order != reg:
                # the device orders the state by its own wires; permute to the register order
                n = len(reg)
                perm = [order.index(w) for w in reg]
                if st.ndim == 1:
                    st = st.reshape((2,) * n).transpose(perm).reshape(-1)
                else:
                    st = st.reshape((2,) * (2 * n)).transpose(perm + [n + p for p in perm]).reshape(2**n, 2**n)
            return st
        tape = qml.tape.QuantumScript(self._register_ops(ops), [qml.density_matrix(wires=reg)])
        return np.asarray(qml.execute([tape], self.device)[0])

    # -- batch producers (run in a worker thread) ----------------------------------------
    def _make_batch(self, args: tuple, kwargs: dict, shots: int, seq: int, t: np.ndarray) -> ShadowBatch | BellBatch:
        if self.mode == "state":
            key = (freeze(args), freeze(kwargs))
            return self._state_batch(key, lambda: self._compute_state(self._ops(args, kwargs)), shots, seq, t)
        ops = self._ops(args, kwargs)
        if self.kind == "bell":
            return self._device_bell(ops, shots, seq, t)
        return self._device_shadow(ops, shots, seq, t)

    def _device_shadow(self, ops: list, shots: int, seq: int, t: np.ndarray) -> ShadowBatch:
        import pennylane as qml

        reg = list(self._wires)
        if self._native_ok is not False:
            # the measurement draws its bases from its own seed (unseeded it would not
            # replay): a fresh one per batch from the driver's generator
            mp = qml.classical_shadow(wires=reg, seed=int(self._rng.integers(2**31)))
            tape = qml.tape.QuantumScript(self._register_ops(ops), [mp], shots=shots)
            try:
                bits, recipes = np.asarray(qml.execute([tape], self.device)[0])
                self._native_ok = True
                return ShadowBatch(recipes, bits, wires=self._wires, source=self.source, seq=seq, t=t)
            except _device_errors() as exc:
                if self._native_ok:
                    raise
                log.info("%s: device rejects qml.classical_shadow (%s); using rotated qml.sample circuits", self.source, exc)
                self._native_ok = False
        # draw (or take the chosen) bases, run one rotated circuit per distinct setting with
        # as many shots as drew it, and put the rows back in draw order (exactly i.i.d.)
        n = len(reg)
        drawn = self._settings(shots, n)
        tapes = []
        for s, count in zip(drawn.settings, drawn.counts):
            rot = []
            for w, b in zip(reg, s):
                if b == 0:  # X: H maps |+>, |-> to |0>, |1>
                    rot.append(qml.Hadamard(w))
                elif b == 1:  # Y: H S^dagger maps (|0> +- i|1>)/sqrt2 to |0>, |1>
                    rot += [qml.adjoint(qml.S(w)), qml.Hadamard(w)]
            tapes.append(qml.tape.QuantumScript(self._register_ops(ops) + rot, [qml.sample(wires=reg)], shots=int(count)))
        results = qml.execute(tapes, self.device)
        grouped = np.concatenate([np.asarray(r, dtype=np.uint8).reshape(-1, n) for r in results])
        return ShadowBatch(drawn.bases, drawn.ungroup(grouped), wires=self._wires, source=self.source, seq=seq, t=t)

    def _device_bell(self, ops: list, shots: int, seq: int, t: np.ndarray) -> BellBatch:
        import pennylane as qml

        reg = list(self._wires)
        n = len(reg)
        extra = set(qml.wires.Wires.all_wires([op.wires for op in ops]).tolist()) - set(reg)
        if extra:
            raise ValueError(f"device-mode Bell shots need a circuit on the register only; it also touches {sorted(map(str, extra))}")
        if self.device.wires is None:
            slots = list(range(2 * n))
        else:
            if len(self.device.wires) < 2 * n:
                raise ValueError(
                    f"device-mode Bell shots run two copies on 2n = {2 * n} wires; the device has {len(self.device.wires)}"
                )
            slots = list(self.device.wires)[: 2 * n]
        a_map = {w: slots[2 * i] for i, w in enumerate(reg)}
        b_map = {w: slots[2 * i + 1] for i, w in enumerate(reg)}
        circ = [qml.Identity(s) for s in slots]
        circ += [qml.map_wires(op, a_map) for op in ops]
        circ += [qml.map_wires(op, b_map) for op in ops]
        for i in range(n):
            circ += [qml.CNOT([slots[2 * i], slots[2 * i + 1]]), qml.Hadamard(slots[2 * i])]
        tape = qml.tape.QuantumScript(circ, [qml.sample(wires=slots)], shots=shots)
        samples = np.asarray(qml.execute([tape], self.device)[0]).reshape(shots, 2 * n)
        return BellBatch.from_interleaved(samples, wires=self._wires, source=self.source, seq=seq, t=t)

def sample_records(qnode: Any, shots: int, *args: Any, kind: str = "shadow", mode: str = "state", wires: Sequence[Any] | None = None,
                   seed: Any = None, device: Any = None, **kwargs: Any) -> ShadowBatch | BellBatch:
    """Records of a PennyLane circuit, synchronously: ``shots`` shadow snapshots or two-copy Bell shots.

    ``qnode`` is a ``qml.QNode`` (or a quantum function with ``device=``);
    ``args``/``kwargs`` are its arguments.  ``mode="state"`` samples exactly
    from the circuit's state (fast, any shots); ``mode="device"`` runs the
    device itself (``qml.classical_shadow`` or measurement rotations).  Example::

        dev = qml.device("default.qubit", wires=3)

        @qml.qnode(dev)
        def ghz():
            qml.Hadamard(0); qml.CNOT([0, 1]); qml.CNOT([1, 2])
            return qml.state()

        batch = sample_records(ghz, 20_000, seed=1)              # ShadowBatch
        qsense.ShadowEstimator(["XXX", "Z0 Z1"]).update(batch)
        pairs = sample_records(ghz, 500, kind="bell", seed=2)    # BellBatch
    """
    driver = PennyLaneDriver(qnode, device, wires=wires, kind=kind, mode=mode, seed=seed, batch_size=max(1, int(shots)))
    return driver.sample(shots, *args, **kwargs)
