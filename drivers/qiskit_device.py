"""Async driver that streams measurement batches from a Qiskit circuit on Aer, a Sampler or a backend.

:class:`QiskitDriver` is the Qiskit twin of
:class:`qsense.drivers.pennylane_device.PennyLaneDriver`: the same options, modes,
kinds and streaming API, so one can be swapped for the other.  It turns a
state-preparing ``QuantumCircuit`` (free ``Parameter``s allowed) into an async
stream of :class:`qsense.ShadowBatch` or :class:`qsense.BellBatch` records.

Two modes, same records:

``mode="state"``
    The state of the circuit is computed once per parameter setting -- by
    ``qiskit.quantum_info`` (no backend), or by an ``AerSimulator`` given as the
    backend (``save_statevector`` / ``save_density_matrix``, with the simulator's
    noise model) -- and qsense's exact samplers measure it.
``mode="device"``
    The backend runs the measurements: any Sampler V2 primitive
    (``qiskit.primitives.StatevectorSampler``, ``qiskit_aer.primitives.SamplerV2``,
    a runtime sampler) or any ``BackendV2`` (``AerSimulator`` with a noise model,
    a fake or real device; circuits are transpiled for it).  Shadows: every shot
    draws a random Pauli basis per qubit, shots are grouped by basis setting, and
    one job runs a parametrised rotation layer (``U(theta, 0, lambda)`` after a
    barrier) with as many shots per setting as drew it (on simulators, one
    parameter sweep at the largest count, each setting keeping its first shots:
    ``pad_shots``); the rows go back in draw order.  Bell shots: one two-copy
    circuit on 2N qubits, copies interleaved (qubit j of copy A on 2j, of copy B
    on 2j+1), then CNOT(A, B) and H(A) per register qubit.

Chosen bases: ``bases=`` a fixed (B, n) array or a basis policy
(:class:`qsense.acquisition.scheduler.DerandomizedBasisPolicy`) replaces the
random shadow bases -- sampled exactly in those bases in state mode, run through
the same grouped rotation layer in device mode.

Qubit order.  Qiskit is little-endian (qubit 0 is the rightmost character of a
bitstring and of a ``Pauli`` label); qsense records are wire-ordered: column i of
``bases``/``outcomes`` is register qubit i, and a dense qsense label such as
``"XIZ"`` reads wire 0 first.  The qsense label ``L`` is Qiskit's
``Pauli(L[::-1])`` (:func:`observable` converts); the sparse form ``"X0 Z2"``
names register positions, which are the qubit indices with the default register.

Parameters: a dict ``{Parameter | ParameterVector | name: value}``, keyword
arguments by name, a sequence of values in ``circuit.parameters`` order, or a
callable ``params(t)`` of stream time returning any of these; or pass a callable
``circuit(*args, **kwargs) -> QuantumCircuit`` and the arguments it takes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qsense.pauli import PauliObservable, parse_observable
from qsense.records import BellBatch, ShadowBatch

from .record_stream import KINDS, MODES, RecordStreamDriver, freeze

__all__ = ["KINDS", "MODES", "QiskitBackendError", "QiskitDriver", "QiskitDriverError", "observable", "sample_records"]

log = logging.getLogger(__name__)

#: classical register the driver measures into (circuits must not measure themselves)
CREG = "qsense"
#: state mode refuses states larger than these (a 13-qubit density matrix is 1 GiB, 14 qubits 4 GiB;
#: the samplers copy it once more) with a clear error instead of exhausting memory
MAX_DENSITY_QUBITS = 12
MAX_STATEVECTOR_QUBITS = 26
#: U(theta, 0, lambda) angles of the rotation before a Z readout, per basis code 0 = X, 1 = Y, 2 = Z:
#: U(pi/2, 0, pi) = H, U(pi/2, 0, pi/2) = H S^dagger, U(0, 0, 0) = I
_THETA = np.array([math.pi / 2, math.pi / 2, 0.0])
_LAMBDA = np.array([math.pi, math.pi / 2, 0.0])


class QiskitDriverError(ValueError):
    """Bad input to the Qiskit driver: the message names the problem."""


class QiskitBackendError(RuntimeError):
    """The backend or sampler failed to run the driver's circuits (one-line message; cause chained)."""


def _qiskit() -> Any:
    try:
        import qiskit
    except ImportError as exc:  # pragma: no cover - the [qiskit] extra installs it
        raise ImportError("the Qiskit driver needs qiskit: pip install 'qsense-streams[qiskit]'") from exc
    return qiskit


def _aer_simulator_type() -> type | None:
    try:
        from qiskit_aer import AerSimulator
    except ImportError:  # Aer is optional for samplers and non-Aer backends
        return None
    return AerSimulator


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _wire_order(state: np.ndarray, n: int, order: Sequence[int]) -> np.ndarray:
    """A little-endian Qiskit state of n qubits as qsense's wire-ordered array, wire i
    being qubit ``order[i]`` (most significant first)."""
    shape = (2,) * (n * state.ndim)
    # reshaped little-endian, axis a holds qubit n-1-a
    axes = [n - 1 - q for q in order]
    if state.ndim == 2:
        axes = axes + [n + a for a in axes]
    return state.reshape(shape).transpose(axes).reshape(state.shape)


@dataclass
class _Template:
    """A transpiled measurement circuit and where each of its parameters' values come from."""

    circuit: Any
    user_cols: np.ndarray  # template columns bound to the user's parameters
    user_idx: np.ndarray  # ... and which user parameter each takes
    rot_cols: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # rotation-angle columns
    rot_qubit: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # register position of each
    rot_is_theta: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


class QiskitDriver(RecordStreamDriver):
    """Stream shadow or Bell batches from a Qiskit circuit.

    Parameters
    ----------
    circuit:
        A ``QuantumCircuit`` that prepares the state (no measurements; free
        ``Parameter``s are bound from ``params``), or a callable returning one
        for the arguments in ``params``.
    backend:
        State mode: ``None`` (``qiskit.quantum_info``) or an ``AerSimulator``
        (its noise model applies).  Device mode: a Sampler V2 primitive or a
        ``BackendV2`` (``None``: ``StatevectorSampler`` seeded by ``seed``).
        Device-mode Bell shots need 2N qubits (N = circuit width).
    wires:
        The register: qubit indices (or ``Qubit`` objects) of the circuit, wire
        0 first (default: all qubits in order).  Others are ancillas: traced
        out (state mode) or left unmeasured (device mode).  Records carry the
        indices as labels.
    kind, mode:
        ``"shadow"`` or ``"bell"``; ``"state"`` or ``"device"`` (module docstring).
    params:
        Initial parameter values (module docstring), or a callable
        ``params(t)`` evaluated at the start of every batch.
    batch_size, total, rate, realtime:
        Records per batch; records in all (``None``: endless); records per
        second (``None``: as fast as possible); whether to sleep to honour ``rate``.
    seed:
        Seeds the state-mode samplers, the random bases and -- where the backend
        is a simulator that takes a seed (Aer, ``StatevectorSampler``, fake
        backends) -- a fresh simulator seed per job, so a seeded run is
        reproducible and batches are independent.
    source, seq0, time_origin:
        Record metadata: ``source`` name, first ``seq`` (+1 per batch), offset
        added to stream-relative timestamps.
    state:
        State mode: ``"auto"`` (a statevector when the register is the whole
        circuit, it is unitary and there is no noise model; else a density
        matrix) or ``"density"``.
    shadow_method:
        ``"auto"`` or ``"rotations"`` (the same thing: Qiskit has no native
        classical-shadow measurement; accepted so options carry over from
        :class:`~qsense.drivers.pennylane_device.PennyLaneDriver`).
    optimization_level, pass_manager:
        How circuits are transpiled for a ``BackendV2`` (a preset pass manager
        of this level, seeded by ``seed``); ``pass_manager`` replaces it and is
        also applied for samplers (e.g. ISA circuits for a runtime sampler).
    pad_shots:
        Device-mode shadows: run all basis settings of a batch as one parameter
        sweep at the largest setting's shot count, each setting keeping its first
        shots (``None``: on simulators -- Aer, ``StatevectorSampler`` -- where
        one sweep is much cheaper than many pubs), or, ``False``, one pub per
        distinct count so that no shot is wasted (other backends).
    bases:
        Shadows only: ``None`` (random bases), a fixed uint8 (B, n) array of
        bases (0 = X, 1 = Y, 2 = Z, column i = register wire i; rows measured in
        turn, cycled), or a basis policy with ``next_bases(count)`` whose
        ``update(batch)``, if it has one, gets every batch before it is yielded.
    """

    error = QiskitDriverError

    def __init__(
        self,
        circuit: Any,
        backend: Any = None,
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
        source: str = "qiskit",
        seq0: int = 0,
        time_origin: float = 0.0,
        state: str = "auto",
        shadow_method: str = "auto",
        optimization_level: int = 1,
        pass_manager: Any = None,
        pad_shots: bool | None = None,
        bases: Any = None,
    ) -> None:
        qiskit = _qiskit()
        if state not in ("auto", "density"):
            raise QiskitDriverError(f"state must be 'auto' or 'density'; got {state!r}")
        if shadow_method == "native":
            raise QiskitDriverError("Qiskit has no native classical-shadow measurement; use shadow_method='auto' or 'rotations'")
        if shadow_method not in ("auto", "rotations"):
            raise QiskitDriverError(f"shadow_method must be 'auto' or 'rotations'; got {shadow_method!r}")
        if optimization_level not in (0, 1, 2, 3):
            raise QiskitDriverError(f"optimization_level must be 0, 1, 2 or 3; got {optimization_level!r}")
        try:
            super().__init__(kind=kind, mode=mode, params=params, batch_size=batch_size, total=total, rate=rate,
                             realtime=realtime, seed=seed, source=source, seq0=seq0, time_origin=time_origin, bases=bases)
        except QiskitDriverError:
            raise
        except ValueError as exc:
            raise QiskitDriverError(str(exc)) from None
        self.state_method = state
        self.shadow_method = shadow_method
        self.optimization_level = int(optimization_level)
        self._static = isinstance(circuit, qiskit.QuantumCircuit)
        if not self._static and not callable(circuit):
            raise QiskitDriverError(f"circuit must be a qiskit QuantumCircuit or a callable returning one; got {type(circuit).__name__}")
        self.circuit = circuit
        self._wires_arg = None if wires is None else list(wires)
        self._reg: tuple[int, ...] | None = None
        self._width: int | None = None
        self._built: dict[Any, Any] = {}  # callable circuits per argument key (small)
        self._templates: dict[Any, _Template] = {}
        self.backend, self._backend_kind = self._classify_backend(backend)
        self._user_pm = pass_manager
        if pad_shots is None:
            from qiskit.primitives import StatevectorSampler

            pad_shots = self._backend_kind == "aer" or isinstance(self.backend, StatevectorSampler)
        self._pad = bool(pad_shots)
        self._pm: Any = None
        self.jobs = 0  # jobs submitted (device mode) or state computations (state mode)
        if self._static:
            self._prepared = self._check_circuit(circuit)
            self._check_bases_width(len(self._reg))
            # bad parameters fail here, not in the first batch
            if not callable(self._params):
                self._values(self._prepared, *self._params)

    # -- inputs ------------------------------------------------------------------------------
    def _classify_backend(self, backend: Any) -> tuple[Any, str]:
        from qiskit.primitives import BaseSamplerV2, StatevectorSampler
        from qiskit.providers import BackendV2

        Aer = _aer_simulator_type()
        if self.mode == "state":
            if backend is None:
                return None, "info"
            if Aer is not None and isinstance(backend, Aer):
                return backend, "aer"
            raise QiskitDriverError(
                f"state mode computes the state exactly: pass backend=None or an AerSimulator, not {type(backend).__name__} "
                "(for a sampler or a device use mode='device')"
            )
        if backend is None:
            return StatevectorSampler(seed=self._rng), "sampler"
        if isinstance(backend, BackendV2):
            if Aer is not None and isinstance(backend, Aer):
                return backend, "aer"
            return backend, "backend"
        if isinstance(backend, BaseSamplerV2) or (callable(getattr(backend, "run", None)) and not hasattr(backend, "target")):
            if isinstance(backend, StatevectorSampler):
                if not isinstance(backend.seed, np.random.Generator):
                    # an int seed would replay the same shots on every identical circuit; a generator
                    # seeded with it is just as reproducible and advances from job to job
                    seed = self._rng if backend.seed is None else np.random.default_rng(backend.seed)
                    backend = StatevectorSampler(default_shots=backend.default_shots, seed=seed)
            elif isinstance(getattr(backend, "seed", None), (int, np.integer)):
                raise QiskitDriverError(
                    f"{type(backend).__name__} was created with a fixed seed, so every job would repeat the same shots; "
                    "create it without a seed (or pass the AerSimulator as backend) and seed the driver (seed=...)"
                )
            return backend, "sampler"
        raise QiskitDriverError(
            f"backend must be a Sampler V2 primitive or a BackendV2 (e.g. AerSimulator); got {type(backend).__name__}"
        )

    def _check_circuit(self, circ: Any) -> Any:
        """A measurement-free copy of ``circ`` without classical bits, after checking it."""
        qiskit = _qiskit()
        if not isinstance(circ, qiskit.QuantumCircuit):
            raise QiskitDriverError(f"the circuit callable must return a QuantumCircuit; got {type(circ).__name__}")
        if circ.num_qubits < 1:
            raise QiskitDriverError("the circuit has no qubits")
        for k, inst in enumerate(circ.data):
            name = inst.operation.name
            if name == "measure":
                raise QiskitDriverError(
                    f"the circuit already measures (instruction {k}, qubit {circ.find_bit(inst.qubits[0]).index}); "
                    "qsense adds its own measurements: build it without them or use circuit.remove_final_measurements()"
                )
            if inst.clbits:
                raise QiskitDriverError(f"the circuit uses classical bits (instruction {k}, {name!r}); qsense needs a state-preparation circuit")
        if self._width is not None and circ.num_qubits != self._width:
            raise QiskitDriverError(f"the circuit has {circ.num_qubits} qubits; earlier settings had {self._width}")
        if self._reg is None:
            self._reg = self._register(circ)
            self._width = circ.num_qubits
        clean = qiskit.QuantumCircuit(circ.num_qubits, global_phase=circ.global_phase)
        for inst in circ.data:
            clean.append(inst.operation, [circ.find_bit(q).index for q in inst.qubits])
        return clean

    def _register(self, circ: Any) -> tuple[int, ...]:
        from qiskit.circuit.exceptions import CircuitError

        N = circ.num_qubits
        if self._wires_arg is None:
            return tuple(range(N))
        reg = []
        for w in self._wires_arg:
            if isinstance(w, (int, np.integer)) and not isinstance(w, bool):
                idx = int(w)
                if not 0 <= idx < N:
                    raise QiskitDriverError(f"wires names qubit {idx}, but the circuit has {N} qubits (0..{N - 1})")
            else:
                try:
                    idx = circ.find_bit(w).index
                except (CircuitError, TypeError, AttributeError):
                    raise QiskitDriverError(f"wires entry {w!r} is neither a qubit index nor a qubit of the circuit") from None
            reg.append(idx)
        if not reg:
            raise QiskitDriverError("wires is empty; the register needs at least one qubit")
        if len(set(reg)) != len(reg):
            raise QiskitDriverError(f"wires must be distinct qubits; got {reg}")
        return tuple(reg)

    @property
    def wires(self) -> tuple | None:
        """The register: qubit indices of the circuit, wire 0 first (known after the first batch for callables)."""
        return self._reg

    def _values(self, circ: Any, args: tuple, kwargs: dict) -> np.ndarray:
        """Values of ``circ.parameters``, in that order, from the given arguments."""
        from qiskit.circuit import ParameterVector

        params = list(circ.parameters)
        if len(args) == 1 and isinstance(args[0], dict) and not kwargs:
            binding, args = dict(args[0]), ()
        else:
            binding = dict(kwargs)
        if args and binding:
            raise QiskitDriverError("give parameter values either by position or by name, not both")
        if args:
            flat = args[0] if len(args) == 1 and np.ndim(args[0]) == 1 else args
            try:
                vals = np.asarray(flat, dtype=float).reshape(-1)
            except (TypeError, ValueError):
                raise QiskitDriverError(f"parameter values must be real numbers; got {args!r}") from None
            if vals.size != len(params):
                names = ", ".join(p.name for p in params) or "none"
                raise QiskitDriverError(f"the circuit has {len(params)} parameters ({names}); got {vals.size} values")
        else:
            by_name = {p.name: p for p in params}
            index = {p: i for i, p in enumerate(params)}
            vals = np.full(len(params), np.nan)
            for key, value in binding.items():
                keys = list(key) if isinstance(key, ParameterVector) else [key]
                v = np.asarray(value, dtype=object).reshape(-1) if isinstance(key, ParameterVector) else [value]
                if len(v) != len(keys):
                    raise QiskitDriverError(f"{key.name} has {len(keys)} elements; got {len(v)} values")
                for k, x in zip(keys, v):
                    p = by_name.get(k) if isinstance(k, str) else k
                    if p not in index:
                        raise QiskitDriverError(f"the circuit has no parameter {getattr(k, 'name', k)!r} (it has: {', '.join(by_name) or 'none'})")
                    try:
                        vals[index[p]] = float(x)
                    except (TypeError, ValueError):
                        raise QiskitDriverError(f"parameter {p.name} must be a real number; got {x!r}") from None
            missing = [p.name for p, v in zip(params, vals) if np.isnan(v)]
            if missing:
                raise QiskitDriverError(f"circuit parameters without values: {', '.join(missing)} (pass params=... or set_params)")
        if not np.all(np.isfinite(vals)):
            raise QiskitDriverError("parameter values must be finite real numbers")
        return vals

    def _program(self, args: tuple, kwargs: dict) -> tuple[Any, np.ndarray, Any, Any]:
        """``(circuit, values, state key, template key)`` for one batch's arguments."""
        if self._static:
            vals = self._values(self._prepared, args, kwargs)
            return self._prepared, vals, ("values", vals.tobytes()), "static"
        key = (freeze(args), freeze(kwargs))
        circ = self._built.get(key)
        if circ is None:
            try:
                built = self.circuit(*args, **kwargs)
            except QiskitDriverError:
                raise
            except Exception as exc:
                raise QiskitDriverError(f"the circuit callable failed for arguments {args!r} {kwargs!r}: {_one_line(exc)}") from exc
            circ = self._check_circuit(built)
            if circ.parameters:
                names = ", ".join(p.name for p in circ.parameters)
                raise QiskitDriverError(f"circuit parameters without values: {names} (a callable must return a bound circuit)")
            if len(self._built) >= 16:
                oldest = next(iter(self._built))
                self._built.pop(oldest)
                self._templates.pop(oldest, None)
            self._built[key] = circ
        return circ, np.zeros(0), ("call", key), key

    # -- transpiling and running ------------------------------------------------------------------
    def _pass_manager(self) -> Any:
        if self._user_pm is not None:
            return self._user_pm
        if self._backend_kind not in ("aer", "backend"):
            return None
        if self._pm is None:
            from qiskit.transpiler import generate_preset_pass_manager

            self._pm = generate_preset_pass_manager(
                optimization_level=self.optimization_level, backend=self.backend,
                seed_transpiler=int(self._rng.integers(2**31)),
            )
        return self._pm

    def _transpile(self, qc: Any) -> Any:
        pm = self._pass_manager()
        if pm is None:
            return qc
        try:
            return pm.run(qc)
        except Exception as exc:
            raise QiskitBackendError(f"transpiling for {self._backend_name()} failed: {_one_line(exc)}") from exc

    def _backend_name(self) -> str:
        b = self.backend
        name = getattr(b, "name", None)
        name = name() if callable(name) else name
        return str(name or type(b).__name__)

    def _check_width(self, needed: int) -> None:
        nq = getattr(self.backend, "num_qubits", None) if self._backend_kind in ("aer", "backend") else None
        if nq is not None and nq < needed:
            what = f"two copies on 2N = {needed} qubits" if self.kind == "bell" and self.mode == "device" else f"{needed} qubits"
            raise QiskitDriverError(f"the driver's circuits need {what}; {self._backend_name()} has {nq}")

    def _job_sampler(self) -> Any:
        """The sampler for one job; simulators get a fresh seed from the driver's generator."""
        if self._backend_kind == "sampler":
            return self.backend
        seed = int(self._rng.integers(2**31))
        if self._backend_kind == "aer":
            from qiskit_aer.primitives import SamplerV2

            return SamplerV2.from_backend(self.backend, seed=seed)
        from qiskit.primitives import BackendSamplerV2

        opts = {"seed_simulator": seed} if hasattr(getattr(self.backend, "options", None), "seed_simulator") else {}
        return BackendSamplerV2(backend=self.backend, options=opts)

    def _run(self, pubs: list) -> list[np.ndarray]:
        """Run sampler pubs as one job: per pub, uint8 bits (..., shots, clbits), column k = clbit k."""
        try:
            result = self._job_sampler().run(pubs).result()
        except Exception as exc:
            raise QiskitBackendError(f"{self._backend_name()} failed to run {len(pubs)} circuit(s): {_one_line(exc)}") from exc
        self.jobs += 1
        out = []
        for r in result:
            ba = getattr(r.data, CREG)
            packed = np.asarray(ba.array, dtype=np.uint8)
            out.append(np.unpackbits(packed, axis=-1, bitorder="big")[..., ::-1][..., : ba.num_bits])
        return out

    def _template(self, circ: Any, tkey: Any) -> _Template:
        tpl = self._templates.get(tkey)
        if tpl is not None:
            return tpl
        qiskit = _qiskit()
        from qiskit.circuit import ParameterVector

        N, reg = circ.num_qubits, self._reg
        n = len(reg)
        creg = qiskit.ClassicalRegister(2 * n if self.kind == "bell" else n, CREG)
        if self.kind == "shadow":
            self._check_width(N)
            qc = qiskit.QuantumCircuit(N)
            qc.compose(circ, inplace=True)
            qc.barrier()  # the rotations measure the prepared state: nothing merges across
            theta, lam = ParameterVector("_qsense_theta", n), ParameterVector("_qsense_lambda", n)
            for i, r in enumerate(reg):
                qc.u(theta[i], 0.0, lam[i], r)
            qc.add_register(creg)
            qc.measure(list(reg), creg)
        else:
            self._check_width(2 * N)
            qc = qiskit.QuantumCircuit(2 * N)
            qc.compose(circ, qubits=list(range(0, 2 * N, 2)), inplace=True)
            qc.compose(circ, qubits=list(range(1, 2 * N, 2)), inplace=True)
            qc.barrier()
            qc.add_register(creg)
            for i, r in enumerate(reg):
                qc.cx(2 * r, 2 * r + 1)
                qc.h(2 * r)
                qc.measure(2 * r, creg[2 * i])
                qc.measure(2 * r + 1, creg[2 * i + 1])
        tc = self._transpile(qc)
        user = {p: i for i, p in enumerate(circ.parameters)}
        cols = list(tc.parameters)
        ucols = [c for c, p in enumerate(cols) if p in user]
        tpl = _Template(tc, np.array(ucols, int), np.array([user[cols[c]] for c in ucols], int))
        if self.kind == "shadow":
            rot = {p: (i, True) for i, p in enumerate(theta)} | {p: (i, False) for i, p in enumerate(lam)}
            rcols = [c for c, p in enumerate(cols) if p in rot]
            tpl.rot_cols = np.array(rcols, int)
            tpl.rot_qubit = np.array([rot[cols[c]][0] for c in rcols], int)
            tpl.rot_is_theta = np.array([rot[cols[c]][1] for c in rcols], bool)
        self._templates[tkey] = tpl
        log.info("%s: transpiled the %s circuit for %s (%d qubits, depth %d)", self.source, self.kind,
                 self._backend_name(), tc.num_qubits, tc.depth())
        return tpl

    # -- batch producers (run in a worker thread) -------------------------------------------------
    def _make_batch(self, args: tuple, kwargs: dict, shots: int, seq: int, t: np.ndarray) -> ShadowBatch | BellBatch:
        circ, vals, skey, tkey = self._program(args, kwargs)
        if self.mode == "state":
            return self._state_batch(skey, lambda: self._compute_state(circ, vals), shots, seq, t)
        tpl = self._template(circ, tkey)
        if self.kind == "bell":
            return self._device_bell(tpl, vals, shots, seq, t)
        return self._device_shadow(tpl, vals, shots, seq, t)

    def _compute_state(self, circ: Any, vals: np.ndarray) -> np.ndarray:
        """The register's state, wire 0 most significant (qsense's order)."""
        bound = circ.assign_parameters(vals) if circ.parameters else circ
        self._check_state_size(bound)
        self.jobs += 1
        if self._backend_kind == "aer":
            return self._aer_state(bound)
        from qiskit.exceptions import QiskitError
        from qiskit.quantum_info import DensityMatrix, Statevector, partial_trace

        reg, N = list(self._reg), bound.num_qubits
        whole = sorted(reg) == list(range(N))
        try:
            if self.state_method == "auto" and whole:
                try:
                    psi = np.asarray(Statevector(bound).data)
                    return _wire_order(psi, N, reg)
                except QiskitError:  # not unitary (reset, channels): the density-matrix path handles it
                    log.debug("%s: circuit is not unitary; computing its density matrix", self.source)
            rho = DensityMatrix(bound)
            others = [q for q in range(N) if q not in reg]
            if others:
                rho = partial_trace(rho, others)
        except Exception as exc:
            raise QiskitBackendError(f"qiskit.quantum_info could not simulate the circuit: {_one_line(exc)}") from exc
        kept = sorted(reg)  # partial_trace keeps the rest in increasing index order
        return _wire_order(np.asarray(rho.data), len(kept), [kept.index(r) for r in reg])

    def _check_state_size(self, bound: Any) -> None:
        N = bound.num_qubits
        noisy = self._backend_kind == "aer" and getattr(self.backend.options, "noise_model", None) is not None
        density = self.state_method == "density" or noisy or sorted(self._reg) != list(range(N))
        if density and N > MAX_DENSITY_QUBITS:
            raise QiskitDriverError(
                f"state mode would hold the density matrix of {N} qubits ({4.0**N * 16 / 2**30:.0f} GiB); the limit is "
                f"{MAX_DENSITY_QUBITS} qubits: use mode='device' (or a pure, ancilla-free circuit up to {MAX_STATEVECTOR_QUBITS} qubits)"
            )
        if N > MAX_STATEVECTOR_QUBITS:
            raise QiskitDriverError(
                f"state mode would hold the statevector of {N} qubits; the limit is {MAX_STATEVECTOR_QUBITS}: use mode='device'"
            )

    def _aer_state(self, bound: Any) -> np.ndarray:
        tc = self._transpile(bound)
        layout = tc.layout.final_index_layout() if tc.layout is not None else list(range(bound.num_qubits))
        phys = [layout[r] for r in self._reg]
        noisy = getattr(self.backend.options, "noise_model", None) is not None
        whole = sorted(self._reg) == list(range(bound.num_qubits))
        pure = self.state_method == "auto" and not noisy and whole and tc.num_qubits == bound.num_qubits
        tc = tc.copy()
        # Aer orders a saved state little-endian in the listed qubits: list wire 0 last so that
        # it comes out most significant
        if pure and phys == list(range(tc.num_qubits)):
            tc.save_statevector(label="qsense_state")
            method = "statevector"
        else:
            tc.save_density_matrix(qubits=phys[::-1], label="qsense_state")
            method = "density_matrix"
        try:
            res = self.backend.run(tc, shots=1, method=method, seed_simulator=int(self._rng.integers(2**31))).result()
            st = np.asarray(res.data(0)["qsense_state"])
        except Exception as exc:
            raise QiskitBackendError(f"{self._backend_name()} could not compute the state: {_one_line(exc)}") from exc
        if method == "statevector":
            st = _wire_order(st, tc.num_qubits, list(self._reg))
        return st

    def _device_shadow(self, tpl: _Template, vals: np.ndarray, shots: int, seq: int, t: np.ndarray) -> ShadowBatch:
        n = len(self._reg)
        drawn = self._settings(shots, n)
        S = len(drawn.settings)
        table = np.empty((S, len(tpl.circuit.parameters)))
        table[:, tpl.user_cols] = vals[tpl.user_idx]
        basis = drawn.settings[:, tpl.rot_qubit]  # (S, rotation columns)
        table[:, tpl.rot_cols] = np.where(tpl.rot_is_theta, _THETA[basis], _LAMBDA[basis])
        if self._pad:
            # a simulator: one parameter sweep over all settings at the largest count; setting s
            # keeps its first counts[s] shots (i.i.d. like all of them), the rest cost only sampling
            m = int(drawn.counts.max())
            bits = self._run([(tpl.circuit, table, m)])[0].reshape(S, m, n)
            grouped = bits[np.arange(m)[None, :] < drawn.counts[:, None]]
        else:
            # a device: no shot is wasted; settings drawn equally often share one pub
            start = np.cumsum(drawn.counts) - drawn.counts
            groups = [(int(c), np.flatnonzero(drawn.counts == c)) for c in np.unique(drawn.counts)]
            results = self._run([(tpl.circuit, table[idx], c) for c, idx in groups])
            grouped = np.empty((shots, n), np.uint8)
            for (c, idx), bits in zip(groups, results):
                rows = (start[idx][:, None] + np.arange(c)).reshape(-1)
                grouped[rows] = bits.reshape(len(idx) * c, n)
        return ShadowBatch(drawn.bases, drawn.ungroup(grouped), wires=self._reg, source=self.source, seq=seq, t=t)

    def _device_bell(self, tpl: _Template, vals: np.ndarray, shots: int, seq: int, t: np.ndarray) -> BellBatch:
        P = len(tpl.circuit.parameters)
        row = np.empty(P)
        row[tpl.user_cols] = vals[tpl.user_idx]
        pub = (tpl.circuit, row if P else None, shots)
        bits = self._run([pub])[0].reshape(shots, 2 * len(self._reg))
        return BellBatch.from_interleaved(bits, wires=self._reg, source=self.source, seq=seq, t=t)


def observable(op: Any, name: str | None = None) -> PauliObservable:
    """A Qiskit Pauli operator as a qsense observable, for any estimator's label list.

    ``op`` is a ``SparsePauliOp`` (real coefficients: Hermitian), a ``Pauli`` or a
    Qiskit label string (qubit 0 *last*); the qsense terms read wire 0 first, so
    ``observable(SparsePauliOp("ZIX"))`` is X on wire 0 and Z on wire 2.  Wires
    are register positions (qubit i of the circuit with the default register)::

        H = SparsePauliOp(["ZZI", "IXX"], coeffs=[0.5, -1.2])
        est = qsense.ShadowEstimator([observable(H, "H")])    # <H> with its error bar
    """
    from qiskit.exceptions import QiskitError
    from qiskit.quantum_info import Pauli, SparsePauliOp

    if isinstance(op, str):
        try:
            op = Pauli(op)
        except QiskitError as exc:
            raise QiskitDriverError(f"{op!r} is not a Qiskit Pauli label: {_one_line(exc)}") from None
    if isinstance(op, Pauli):
        op = SparsePauliOp(op)
    if not isinstance(op, SparsePauliOp):
        raise QiskitDriverError(f"observable() takes a SparsePauliOp, a Pauli or a Qiskit label; got {type(op).__name__}")
    terms = []
    for label, coeff in op.to_list():
        c = complex(coeff)
        if abs(c.imag) > 1e-12 * max(1.0, abs(c.real)):
            raise QiskitDriverError(f"{label} has the complex coefficient {c}; an observable must be Hermitian (real coefficients)")
        ((_, term),) = parse_observable(label[::-1]).terms  # Qiskit reads qubit 0 last; qsense wire 0 first
        terms.append((float(c.real), term))
    if name is not None:
        text = name
    elif len(terms) == 1 and terms[0][0] == 1.0:
        text = str(terms[0][1])
    else:
        text = " + ".join(f"{c:g}*{t}" for c, t in terms)
    return PauliObservable(tuple(terms), text)


def sample_records(circuit: Any, shots: int, *args: Any, backend: Any = None, kind: str = "shadow", mode: str = "state",
                   wires: Sequence[Any] | None = None, seed: Any = None, **kwargs: Any) -> ShadowBatch | BellBatch:
    """Records of a Qiskit circuit, synchronously: ``shots`` shadow snapshots or two-copy Bell shots.

    ``args``/``kwargs`` are the parameter values (a dict, values in
    ``circuit.parameters`` order, or names as keywords).  Example::

        from qiskit import QuantumCircuit
        ghz = QuantumCircuit(3); ghz.h(0); ghz.cx(0, 1); ghz.cx(1, 2)
        batch = sample_records(ghz, 20_000, seed=1)                     # ShadowBatch
        qsense.ShadowEstimator(["XXX", "Z0 Z1"]).update(batch)
        pairs = sample_records(ghz, 500, kind="bell", seed=2)           # BellBatch
        noisy = sample_records(ghz, 5000, backend=AerSimulator(noise_model=nm), mode="device", seed=3)
    """
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
        raise QiskitDriverError(f"shots must be a positive integer; got {shots!r}")
    params: Any = args[0] if len(args) == 1 and isinstance(args[0], dict) else (dict(kwargs) if kwargs else tuple(args))
    driver = QiskitDriver(circuit, backend, wires=wires, kind=kind, mode=mode, seed=seed, batch_size=int(shots), params=params)
    return driver.sample(int(shots))

