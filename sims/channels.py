"""Noise channels and the quantum-memory decoherence model.

Single-qubit channels are returned as Kraus lists in their textbook forms
(Nielsen & Chuang, *Quantum Computation and Quantum Information*, section 8.3):

* :func:`depolarizing` (N&C eq. 8.102): rho -> (1 - p) rho + p I/2, Kraus
  ``sqrt(1 - 3p/4) I, sqrt(p)/2 X, sqrt(p)/2 Y, sqrt(p)/2 Z``; every
  non-identity Pauli is scaled by 1 - p.  (PennyLane's ``DepolarizingChannel(q)``
  is N&C eq. 8.103, the same channel with p = 4q/3.)
* :func:`dephasing` (phase flip, N&C 8.3.3): Kraus ``sqrt(1 - p) I, sqrt(p) Z``;
  X and Y scaled by 1 - 2p, Z kept (PennyLane's ``PhaseFlip(p)``).
* :func:`phase_damping` (N&C 8.3.6): Kraus ``[[1, 0], [0, sqrt(1 - lam)]]``,
  ``[[0, 0], [0, sqrt(lam)]]``; X and Y scaled by sqrt(1 - lam).
* :func:`amplitude_damping` (N&C 8.3.5): Kraus ``[[1, 0], [0, sqrt(1 - g)]]``,
  ``[[0, sqrt(g)], [0, 0]]``; X, Y scaled by sqrt(1 - g), <Z> -> g + (1 - g) <Z>.

:func:`apply_channel` applies a Kraus list to chosen wires of a density matrix
through its superoperator ``S = sum_k K (x) conj(K)`` (one matrix product over
the reshaped density matrix per wire group, no per-element loops).

:func:`decohere` is the memory model later stages use for copies that wait:
every qubit undergoes the channel of duration t (docs/physics.md §3).

Layouts: density matrices complex128 (2^n, 2^n), wire 0 the most significant
bit of the row/column index; Kraus operators (2^k, 2^k) on k wires in the given
wire order.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .samplers import as_state

__all__ = [
    "depolarizing",
    "dephasing",
    "phase_damping",
    "amplitude_damping",
    "apply_channel",
    "superoperator",
    "is_cptp",
    "decohere",
    "memory_channel",
    "DECOHERENCE_MODELS",
]

DECOHERENCE_MODELS = ("depolarizing", "dephasing", "t1t2")

_I = np.eye(2, dtype=np.complex128)
_X = np.array([[0, 1], [1, 0]], dtype=np.complex128)
_Y = np.array([[0, -1j], [1j, 0]], dtype=np.complex128)
_Z = np.array([[1, 0], [0, -1]], dtype=np.complex128)


def _check_prob(name: str, p: float, hi: float = 1.0) -> float:
    p = float(p)
    if not (0.0 <= p <= hi) or not math.isfinite(p):
        raise ValueError(f"{name} must lie in [0, {hi:g}]; got {p!r}")
    return p


def depolarizing(p: float) -> list[np.ndarray]:
    """Depolarizing channel rho -> (1 - p) rho + p I/2 (N&C eq. 8.102), p in [0, 4/3].

    Kraus ``sqrt(1 - 3p/4) I, sqrt(p)/2 X, sqrt(p)/2 Y, sqrt(p)/2 Z``.  Every
    non-identity Pauli expectation is multiplied by 1 - p (p up to 4/3 remains
    completely positive: the Pauli-flip channel with scale -1/3).
    """
    p = _check_prob("p", p, 4.0 / 3.0)
    return [math.sqrt(max(0.0, 1.0 - 0.75 * p)) * _I, math.sqrt(p) / 2 * _X, math.sqrt(p) / 2 * _Y, math.sqrt(p) / 2 * _Z]


def dephasing(p: float) -> list[np.ndarray]:
    """Phase-flip (dephasing) channel rho -> (1 - p) rho + p Z rho Z, p in [0, 1].

    X and Y expectations are multiplied by 1 - 2p; Z is unchanged.
    """
    p = _check_prob("p", p)
    return [math.sqrt(1.0 - p) * _I, math.sqrt(p) * _Z]


def phase_damping(lam: float) -> list[np.ndarray]:
    """Phase damping (N&C 8.3.6), lam in [0, 1]: X and Y scaled by sqrt(1 - lam)."""
    lam = _check_prob("lam", lam)
    return [
        np.array([[1, 0], [0, math.sqrt(1.0 - lam)]], dtype=np.complex128),
        np.array([[0, 0], [0, math.sqrt(lam)]], dtype=np.complex128),
    ]


def amplitude_damping(gamma: float) -> list[np.ndarray]:
    """Amplitude damping (N&C 8.3.5), gamma in [0, 1]: |1> decays to |0> with probability gamma.

    Kraus ``[[1, 0], [0, sqrt(1 - gamma)]]`` and ``[[0, sqrt(gamma)], [0, 0]]``.
    """
    g = _check_prob("gamma", gamma)
    return [
        np.array([[1, 0], [0, math.sqrt(1.0 - g)]], dtype=np.complex128),
        np.array([[0, math.sqrt(g)], [0, 0]], dtype=np.complex128),
    ]


def _kraus_array(kraus: Sequence[Any]) -> np.ndarray:
    ks = np.asarray([np.asarray(k, dtype=np.complex128) for k in kraus])
    if ks.ndim != 3 or ks.shape[1] != ks.shape[2] or ks.shape[0] == 0:
        raise ValueError(f"kraus must be a non-empty list of square matrices; got shape {ks.shape}")
    d = ks.shape[1]
    if d < 2 or d & (d - 1):
        raise ValueError(f"Kraus operators must be 2^k x 2^k; got {d} x {d}")
    return ks


def superoperator(kraus: Sequence[Any]) -> np.ndarray:
    """S = sum_k K (x) conj(K), (d^2, d^2), acting on vec(rho) with index r*d + c."""
    ks = _kraus_array(kraus)
    d = ks.shape[1]
    return np.einsum("kac,kbd->abcd", ks, ks.conj()).reshape(d * d, d * d)


def is_cptp(kraus: Sequence[Any], atol: float = 1e-12) -> bool:
    """Whether sum_k K^dagger K = I (trace preservation; Kraus form is CP by construction)."""
    ks = _kraus_array(kraus)
    s = np.einsum("kji,kjl->il", ks.conj(), ks)
    return bool(np.allclose(s, np.eye(ks.shape[1]), atol=atol, rtol=0))


def _apply_superop(rho: np.ndarray, S: np.ndarray, wires: Sequence[int], n: int) -> np.ndarray:
    k = len(wires)
    t = rho.reshape((2,) * (2 * n))
    axes = list(wires) + [n + w for w in wires]
    t = np.moveaxis(t, axes, list(range(2 * k)))
    shape = t.shape
    t = (S @ t.reshape(4**k, -1)).reshape(shape)
    t = np.moveaxis(t, list(range(2 * k)), axes)
    return t.reshape(2**n, 2**n)


def apply_channel(rho: Any, kraus: Sequence[Any], wires: Sequence[int] | int | None = None) -> np.ndarray:
    """Apply a channel given by Kraus operators to ``wires`` of a density matrix.

    ``kraus`` acting on k qubits (2^k x 2^k) is applied jointly to the k wires
    listed (in that order).  A single-qubit channel given with several wires (or
    ``wires=None``: all wires) is applied to each of them independently.
    Statevectors are converted to density matrices.  Returns a new complex128
    (2^n, 2^n) array.
    """
    r, dens, n = as_state(rho)
    if not dens:
        r = np.outer(r, r.conj())
    ks = _kraus_array(kraus)
    k = ks.shape[1].bit_length() - 1
    if wires is None:
        wires = list(range(n))
    elif isinstance(wires, (int, np.integer)):
        wires = [int(wires)]
    wires = [int(w) for w in wires]
    if any(not 0 <= w < n for w in wires) or len(set(wires)) != len(wires):
        raise ValueError(f"wires must be distinct positions in 0..{n - 1}; got {wires}")
    S = superoperator(ks)
    if k == len(wires):
        return _apply_superop(r, S, wires, n)
    if k == 1:
        for w in wires:
            r = _apply_superop(r, S, [w], n)
        return r
    raise ValueError(f"a {k}-qubit channel needs {k} wires; got {len(wires)}")


def _check_time(name: str, v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    if not (v > 0) or math.isnan(v):
        raise ValueError(f"{name} must be a positive number of seconds (or None for infinite); got {v!r}")
    return v


def memory_channel(t: float, t1: float | None = None, t2: float | None = None, model: str = "depolarizing") -> list[np.ndarray]:
    """Single-qubit Kraus list of a qubit stored for ``t`` seconds (see :func:`decohere`)."""
    t = float(t)
    if not (t >= 0) or not math.isfinite(t):
        raise ValueError(f"t must be a finite non-negative duration in seconds; got {t!r}")
    t1 = _check_time("t1", t1)
    t2 = _check_time("t2", t2)
    if model not in DECOHERENCE_MODELS:
        raise ValueError(f"model must be one of {DECOHERENCE_MODELS}; got {model!r}")
    f2 = 1.0 if t2 is None or math.isinf(t2) else math.exp(-t / t2)
    if model == "depolarizing":
        return depolarizing(1.0 - f2)
    if model == "dephasing":
        return dephasing((1.0 - f2) / 2.0)
    # t1t2: amplitude damping scales coherences by exp(-t/(2 T1)); pure dephasing
    # supplies the rest so that coherences decay as exp(-t/T2) overall.
    if t1 is not None and t2 is not None and not math.isinf(t1) and t2 > 2.0 * t1 * (1 + 1e-12):
        raise ValueError(f"the t1t2 model needs T2 <= 2 T1 (got T1={t1}, T2={t2}): coherences cannot outlive 2 T1")
    gamma = 0.0 if t1 is None or math.isinf(t1) else 1.0 - math.exp(-t / t1)
    if t2 is None or math.isinf(t2):
        rest = 1.0  # T2 = 2 T1 (or both infinite): amplitude damping alone
    else:
        rate = 1.0 / t2 - (0.0 if t1 is None or math.isinf(t1) else 0.5 / t1)
        rest = math.exp(-t * max(rate, 0.0))
    ad = amplitude_damping(gamma)
    ph = dephasing((1.0 - rest) / 2.0)
    return [p @ a for p in ph for a in ad]


def decohere(rho: Any, t: float, t1: float | None = None, t2: float | None = None, model: str = "depolarizing") -> np.ndarray:
    """Density matrix of ``rho`` after every qubit spent ``t`` seconds in memory.

    Models (``t1``/``t2`` in seconds, ``None`` = infinite):

    * ``"depolarizing"``: local depolarizing at rate 1/T2; every non-identity
      single-qubit Pauli factor decays by exp(-t/T2), so tr(P D_t rho) =
      exp(-|P| t/T2) tr(P rho) (docs/physics.md §3).  ``t1`` is ignored.
    * ``"dephasing"``: X and Y factors decay by exp(-t/T2), Z kept.  ``t1`` ignored.
    * ``"t1t2"``: amplitude damping with gamma = 1 - exp(-t/T1), then pure
      dephasing such that coherences decay as exp(-t/T2) in total; requires
      T2 <= 2 T1 (``ValueError`` otherwise).  T2 = None means T2 = 2 T1.

    Statevectors are accepted (converted).  Returns complex128 (2^n, 2^n).
    """
    kraus = memory_channel(t, t1, t2, model)
    return apply_channel(rho, kraus, None)
