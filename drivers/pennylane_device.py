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

import asyncio
import logging
from typing import Any, AsyncIterator, Callable, Sequence

import numpy as np

from qsense.records import BellBatch, ShadowBatch
from qsense.sims.samplers import BellSampler, ShadowSampler

__all__ = ["PennyLaneDriver", "sample_records", "MODES", "KINDS"]

log = logging.getLogger(__name__)

MODES = ("state", "device")
KINDS = ("shadow", "bell")


def _freeze(value: Any) -> Any:
    """A hashable, value-comparable key for circuit arguments (arrays by value)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    try:
        a = np.asarray(value)
    except Exception:  # pragma: no cover - exotic objects compare by identity
        return ("id", id(value))
    if a.dtype == object:
        return ("id", id(value))
    return (a.dtype.str, a.shape, a.tobytes())


def _normalize_params(p: Any) -> tuple[tuple, dict]:
    """Circuit arguments as ``(args, kwargs)``: a dict is keyword arguments, a tuple
    or list positional arguments, anything else a single positional argument."""
    if isinstance(p, dict):
        return (), dict(p)
    if isinstance(p, (tuple, list)):
        return tuple(p), {}
    return (p,), {}


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


class PennyLaneDriver:
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
        Seeds the samplers (state mode) and the random bases of
        ``shadow_method="rotations"``.  The device's own randomness is seeded
        where the device is created (``qml.device(..., seed=...)``).
    source, seq0, time_origin:
        Record metadata: ``source`` name, first ``seq`` (then +1 per batch), and
        an offset added to the stream-relative timestamps (e.g. ``time.time()``).
    state:
        State mode: ``"auto"`` (``qml.state()`` when the circuit and device hold
        exactly the register, else ``qml.density_matrix(wires)``) or ``"density"``.
    shadow_method:
        Device mode shadows: ``"auto"``, ``"native"`` (``qml.classical_shadow``) or
        ``"rotations"``.
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
    ) -> None:
        import pennylane as qml

        if isinstance(qfunc, qml.QNode):
            device = qfunc.device if device is None else device
            qfunc = qfunc.func
        if device is None:
            raise ValueError("a PennyLane device is needed (pass device=..., or a QNode)")
        if not callable(qfunc):
            raise ValueError("qfunc must be a callable that applies PennyLane operations")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        if state not in ("auto", "density"):
            raise ValueError(f"state must be 'auto' or 'density'; got {state!r}")
        if shadow_method not in ("auto", "native", "rotations"):
            raise ValueError(f"shadow_method must be 'auto', 'native' or 'rotations'; got {shadow_method!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        if total is not None and (isinstance(total, bool) or not isinstance(total, (int, np.integer)) or total < 0):
            raise ValueError(f"total must be a non-negative integer or None; got {total!r}")
        if rate is not None and not (np.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number of records per second or None; got {rate!r}")
        if isinstance(seq0, bool) or not isinstance(seq0, (int, np.integer)) or seq0 < 0:
            raise ValueError(f"seq0 must be a non-negative integer; got {seq0!r}")
        self.qfunc = qfunc
        self.device = device
        self.kind = kind
        self.mode = mode
        self.batch_size = int(batch_size)
        self.total = None if total is None else int(total)
        self.rate = None if rate is None else float(rate)
        self.realtime = bool(realtime)
        self.source = str(source)
        self.seq = int(seq0)
        self.time_origin = float(time_origin)
        self.state_method = state
        self.shadow_method = shadow_method
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self._params: Any = params if callable(params) else _normalize_params(params)
        self._wires = None if wires is None else tuple(wires)
        self._cache_key: Any = None
        self._sampler: ShadowSampler | BellSampler | None = None
        self._native_ok: bool | None = None if shadow_method == "auto" else shadow_method == "native"
        self._stop = False
        self.produced = 0

    # -- parameters -----------------------------------------------------------------
    def set_params(self, *args: Any, **kwargs: Any) -> None:
        """Change the circuit arguments; takes effect from the next batch.

        ``set_params(0.3, w)`` sets positional arguments, ``set_params(theta=0.3)``
        keyword arguments, and ``set_params(fn)`` with a single callable makes
        them a function of stream time.
        """
        if len(args) == 1 and not kwargs and callable(args[0]):
            self._params = args[0]
        else:
            self._params = (tuple(args), dict(kwargs))
        log.debug("%s: parameters changed", self.source)

    def stop(self) -> None:
        """Finish the stream after the batch being produced (a clean end, no exception)."""
        self._stop = True

    def _args_at(self, t: float) -> tuple[tuple, dict]:
        p = self._params
        return _normalize_params(p(t)) if callable(p) else p

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
            key = (_freeze(args), _freeze(kwargs))
            if self._sampler is None or key != self._cache_key:
                ops = self._ops(args, kwargs)
                st = self._compute_state(ops)
                self._sampler = ShadowSampler(st) if self.kind == "shadow" else BellSampler(st)
                self._cache_key = key
                log.debug("%s: new %s state for seq %d", self.source, "density" if st.ndim == 2 else "pure", seq)
            return self._sampler.sample(shots, self._rng, wires=self._wires, source=self.source, seq=seq, t=t)
        ops = self._ops(args, kwargs)
        if self.kind == "bell":
            return self._device_bell(ops, shots, seq, t)
        return self._device_shadow(ops, shots, seq, t)

    def _device_shadow(self, ops: list, shots: int, seq: int, t: np.ndarray) -> ShadowBatch:
        import pennylane as qml

        reg = list(self._wires)
        if self._native_ok is not False:
            tape = qml.tape.QuantumScript(self._register_ops(ops), [qml.classical_shadow(wires=reg)], shots=shots)
            try:
                bits, recipes = np.asarray(qml.execute([tape], self.device)[0])
                self._native_ok = True
                return ShadowBatch(recipes, bits, wires=self._wires, source=self.source, seq=seq, t=t)
            except _device_errors() as exc:
                if self._native_ok:
                    raise
                log.info("%s: device rejects qml.classical_shadow (%s); using rotated qml.sample circuits", self.source, exc)
                self._native_ok = False
        # draw every shot's bases, run one rotated circuit per distinct setting with as
        # many shots as drew it, and put the rows back in draw order (exactly i.i.d.)
        n = len(reg)
        bases = self._rng.integers(0, 3, size=(shots, n), dtype=np.uint8)
        settings, inverse = np.unique(bases, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        counts = np.bincount(inverse, minlength=len(settings))
        order = np.argsort(inverse, kind="stable")  # shots grouped by setting
        tapes = []
        for s, count in zip(settings, counts):
            rot = []
            for w, b in zip(reg, s):
                if b == 0:  # X: H maps |+>, |-> to |0>, |1>
                    rot.append(qml.Hadamard(w))
                elif b == 1:  # Y: H S^dagger maps (|0> +- i|1>)/sqrt2 to |0>, |1>
                    rot += [qml.adjoint(qml.S(w)), qml.Hadamard(w)]
            tapes.append(qml.tape.QuantumScript(self._register_ops(ops) + rot, [qml.sample(wires=reg)], shots=int(count)))
        results = qml.execute(tapes, self.device)
        grouped = np.concatenate([np.asarray(r, dtype=np.uint8).reshape(-1, n) for r in results])
        outcomes = np.empty((shots, n), dtype=np.uint8)
        outcomes[order] = grouped
        return ShadowBatch(bases, outcomes, wires=self._wires, source=self.source, seq=seq, t=t)

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

    # -- streaming -------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[ShadowBatch | BellBatch]:
        return self.stream()

    async def stream(self) -> AsyncIterator[ShadowBatch | BellBatch]:
        """Yield batches until ``total`` records were produced or :meth:`stop` is called."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        virtual = 0.0  # stream time when the rate is honoured without sleeping
        self._stop = False
        log.info(
            "%s: streaming %s batches (%s mode, batch %d, total %s, rate %s/s)",
            self.source, self.kind, self.mode, self.batch_size, self.total, self.rate,
        )
        try:
            while not self._stop and (self.total is None or self.produced < self.total):
                shots = self.batch_size if self.total is None else min(self.batch_size, self.total - self.produced)
                if self.rate is not None:
                    now = virtual if not self.realtime else self.produced / self.rate
                    t = self.time_origin + (self.produced + np.arange(shots)) / self.rate
                else:
                    now = loop.time() - start
                    t = np.full(shots, self.time_origin + now)
                args, kwargs = self._args_at(now)
                batch = await asyncio.to_thread(self._make_batch, args, kwargs, shots, self.seq, t)
                self.seq += 1
                self.produced += shots
                log.debug("%s: batch seq=%d T=%d", self.source, batch.seq, batch.T)
                yield batch
                if self.rate is not None:
                    if self.realtime:
                        delay = start + self.produced / self.rate - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    else:
                        virtual = self.produced / self.rate
        finally:
            log.info("%s: stream ended after %d records (next seq %d)", self.source, self.produced, self.seq)

    def sample(self, shots: int, *args: Any, **kwargs: Any) -> ShadowBatch | BellBatch:
        """One batch of ``shots`` records, synchronously (no event loop needed).

        ``args``/``kwargs`` are the circuit's arguments for this batch (default:
        the driver's ``params``); numbering (``seq``) and ``produced`` advance as
        in the stream.
        """
        if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
            raise ValueError(f"shots must be a positive integer; got {shots!r}")
        if not args and not kwargs:
            args, kwargs = self._args_at(0.0)
        t = self.time_origin + np.zeros(int(shots))
        batch = self._make_batch(tuple(args), dict(kwargs), int(shots), self.seq, t)
        self.seq += 1
        self.produced += int(shots)
        return batch

    async def collect(self, batches: int | None = None) -> list[ShadowBatch | BellBatch]:
        """Run the stream and return its batches (at most ``batches`` of them)."""
        out: list = []
        stream = self.stream()
        try:
            async for b in stream:
                out.append(b)
                if batches is not None and len(out) >= batches:
                    break
        finally:
            await stream.aclose()
        return out


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
