"""State sources: the quantum states simulated sensors and tests feed the samplers.

Every function returns a plain numpy array: a statevector complex128 (2^n,) or
a density matrix complex128 (2^n, 2^n), wire 0 the most significant bit
(PennyLane's convention).

* :func:`product_state` - qubit-by-qubit product states from labels or Bloch angles.
* :func:`ghz_state`, :func:`w_state` - the standard entangled families.
* :func:`haar_random_state` - Haar-random pure state (normalised complex Gaussian).
* :func:`random_mixed_state` - random eigenbasis, spectrum tuned to an exact purity.
* :func:`random_circuit_state` - brickwork of Haar-random single-qubit gates and CZs.
* :class:`DriftingSource` - a sensed phase theta(t) that drifts, steps or follows
  any function of time, encoded in a GHZ (Heisenberg-scaling) or product probe,
  optionally decohered; ``source(t)`` gives the state at time t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "product_state",
    "ghz_state",
    "w_state",
    "haar_random_state",
    "haar_random_unitary",
    "random_mixed_state",
    "random_circuit_state",
    "purity",
    "DriftingSource",
]

_SQ2 = 1.0 / math.sqrt(2.0)
#: single-qubit labels: computational, X, Y eigenstates
_LABELS = {
    "0": np.array([1, 0], dtype=np.complex128),
    "1": np.array([0, 1], dtype=np.complex128),
    "+": np.array([_SQ2, _SQ2], dtype=np.complex128),
    "-": np.array([_SQ2, -_SQ2], dtype=np.complex128),
    "r": np.array([_SQ2, 1j * _SQ2], dtype=np.complex128),  # +1 eigenstate of Y
    "l": np.array([_SQ2, -1j * _SQ2], dtype=np.complex128),  # -1 eigenstate of Y
}


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer number of qubits; got {n!r}")
    return int(n)


def _rng(seed: Any) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _kron_all(vecs: Sequence[np.ndarray]) -> np.ndarray:
    out = np.ones(1, dtype=np.complex128)
    for v in vecs:
        out = np.kron(out, v)
    return out


def product_state(spec: str | Sequence[Any]) -> np.ndarray:
    """A product statevector, qubit by qubit (wire 0 first).

    ``spec`` is either a string of labels ``0 1 + - r l`` (``r``/``l`` the +1/-1
    eigenstates of Y), e.g. ``"0+r"``, or a sequence with one entry per qubit:
    a label, a pair of Bloch angles ``(theta, phi)`` giving
    cos(theta/2)|0> + e^{i phi} sin(theta/2)|1>, or a length-2 amplitude vector
    (normalised here).
    """
    if isinstance(spec, str):
        spec = list(spec)
    vecs = []
    for item in spec:
        if isinstance(item, str):
            if item not in _LABELS:
                raise ValueError(f"unknown qubit label {item!r}; use one of {''.join(_LABELS)}")
            vecs.append(_LABELS[item])
            continue
        a = np.asarray(item)
        if a.shape != (2,):
            raise ValueError(f"each qubit needs a label, (theta, phi) or 2 amplitudes; got {item!r}")
        if np.iscomplexobj(a):
            nrm = np.linalg.norm(a)
            if nrm == 0:
                raise ValueError("zero amplitude vector")
            vecs.append(a.astype(np.complex128) / nrm)
        else:
            th, ph = float(a[0]), float(a[1])
            vecs.append(np.array([math.cos(th / 2), np.exp(1j * ph) * math.sin(th / 2)], dtype=np.complex128))
    if not vecs:
        raise ValueError("a product state needs at least one qubit")
    return _kron_all(vecs)


def ghz_state(n: int, phase: float = 0.0) -> np.ndarray:
    """(|0...0> + e^{i phase} |1...1>)/sqrt(2) on n qubits."""
    n = _check_n(n)
    psi = np.zeros(2**n, dtype=np.complex128)
    psi[0] = _SQ2
    psi[-1] = _SQ2 * np.exp(1j * phase)
    return psi


def w_state(n: int) -> np.ndarray:
    """Equal superposition of the n single-excitation basis states."""
    n = _check_n(n)
    psi = np.zeros(2**n, dtype=np.complex128)
    psi[1 << np.arange(n)] = 1.0 / math.sqrt(n)
    return psi


def haar_random_state(n: int, seed: Any = None) -> np.ndarray:
    """Haar-random pure statevector (normalised i.i.d. complex Gaussians)."""
    n = _check_n(n)
    rng = _rng(seed)
    psi = rng.standard_normal(2**n) + 1j * rng.standard_normal(2**n)
    return psi / np.linalg.norm(psi)


def haar_random_unitary(d: int, seed: Any = None) -> np.ndarray:
    """Haar-random d x d unitary (QR of a complex Ginibre matrix with phase fix)."""
    rng = _rng(seed)
    z = (rng.standard_normal((d, d)) + 1j * rng.standard_normal((d, d))) / math.sqrt(2.0)
    q, r = np.linalg.qr(z)
    ph = np.diagonal(r) / np.abs(np.diagonal(r))
    return q * ph[None, :]


def purity(rho: np.ndarray) -> float:
    """tr(rho^2) of a density matrix (or 1 for a statevector)."""
    rho = np.asarray(rho)
    if rho.ndim == 1:
        return float(np.vdot(rho, rho).real) ** 2
    return float(np.vdot(rho, rho).real)  # tr(rho^dagger rho) = tr(rho^2) for Hermitian rho


def _gibbs_purity(x: np.ndarray, beta: float) -> tuple[np.ndarray, float]:
    w = np.exp(beta * (x - x.max()))
    p = w / w.sum()
    return p, float(p @ p)


def random_mixed_state(n: int, purity: float, seed: Any = None) -> np.ndarray:
    """Random density matrix with tr(rho^2) = ``purity`` (to ~1e-12).

    Eigenbasis: Haar-random unitary.  Spectrum: p_i proportional to
    exp(beta x_i) for i.i.d. Gaussian x_i, with beta found by bisection (the
    purity of this family rises monotonically from 1/d at beta = 0 to 1), so
    the state is full rank and generic.  ``purity`` must lie in [1/2^n, 1];
    purity 1 gives a Haar-random pure state's projector.
    """
    n = _check_n(n)
    d = 2**n
    target = float(purity)
    if not (1.0 / d - 1e-15 <= target <= 1.0 + 1e-15):
        raise ValueError(f"purity must lie in [1/2^n, 1] = [{1.0 / d:.6g}, 1]; got {purity!r}")
    rng = _rng(seed)
    U = haar_random_unitary(d, rng)
    if target >= 1.0 - 1e-15:
        v = U[:, 0]
        return np.outer(v, v.conj())
    x = rng.standard_normal(d)
    lo, hi = 0.0, 1.0
    while _gibbs_purity(x, hi)[1] < target:
        hi *= 2.0
        if hi > 1e8:  # near-degenerate maximum: cannot reach the target by beta alone
            break
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _gibbs_purity(x, mid)[1] < target:
            lo = mid
        else:
            hi = mid
    p, _ = _gibbs_purity(x, 0.5 * (lo + hi))
    rho = (U * p[None, :]) @ U.conj().T
    return 0.5 * (rho + rho.conj().T)


_CZ_DIAG = np.array([1, 1, 1, -1], dtype=np.complex128)


def random_circuit_state(n: int, depth: int, seed: Any = None) -> np.ndarray:
    """Statevector of a random brickwork circuit on |0...0>.

    Each of ``depth`` layers applies a Haar-random single-qubit unitary to every
    qubit, then CZ on pairs (0,1), (2,3), ... in even layers and (1,2), (3,4), ...
    in odd layers.  Simulated with per-wire tensordots (no dense 2^n x 2^n matrix).
    """
    n = _check_n(n)
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 0:
        raise ValueError(f"depth must be a non-negative integer; got {depth!r}")
    rng = _rng(seed)
    psi = np.zeros((2,) * n, dtype=np.complex128)
    psi[(0,) * n] = 1.0
    for layer in range(depth):
        for q in range(n):
            u = haar_random_unitary(2, rng)
            psi = np.moveaxis(np.tensordot(u, psi, axes=([1], [q])), 0, q)
        for q in range(layer % 2, n - 1, 2):
            # CZ: flip the sign of the |11> block of wires (q, q+1)
            idx = [slice(None)] * n
            idx[q] = 1
            idx[q + 1] = 1
            psi[tuple(idx)] *= -1.0
    return psi.reshape(-1)


def _as_callable(theta: float | Callable[[float], float]) -> Callable[[float], float]:
    if callable(theta):
        return theta
    value = float(theta)
    return lambda t: value


@dataclass
class DriftingSource:
    """A sensed phase theta(t) encoded in a probe state, changing with time.

    theta(t) = ``theta0 + rate * t + sum of steps`` (``steps``: ``(time, jump)``
    pairs, each adding ``jump`` from ``time`` on) + ``signal(t)`` if given.
    ``probe``:

    * ``"ghz"``: (|0..0> + e^{i n theta}|1..1>)/sqrt2 - Heisenberg-scaling phase;
      <X^{(x)n}> = cos(n theta), <Y X^{(x)n-1}> = sin(n theta).
    * ``"product"``: every qubit (|0> + e^{i theta}|1>)/sqrt2; <X_q> = cos(theta),
      <Y_q> = sin(theta).

    With ``t2`` (seconds) the probe is dephased for ``dwell`` seconds before
    readout (:func:`sims.decohere`, ``model``), so ``source(t)`` is a density
    matrix; otherwise it is a statevector.  Call ``source(t)`` or
    ``source.state(t)``.
    """

    n: int
    theta0: float = 0.0
    rate: float = 0.0
    steps: Sequence[tuple[float, float]] = ()
    signal: Callable[[float], float] | None = None
    probe: str = "ghz"
    t2: float | None = None
    dwell: float = 0.0
    model: str = "dephasing"

    def __post_init__(self) -> None:
        self.n = _check_n(self.n)
        if self.probe not in ("ghz", "product"):
            raise ValueError(f"probe must be 'ghz' or 'product'; got {self.probe!r}")
        self.steps = tuple((float(a), float(b)) for a, b in self.steps)

    def theta(self, t: float) -> float:
        """The sensed parameter at time t (seconds)."""
        th = self.theta0 + self.rate * t + sum(j for ts, j in self.steps if t >= ts)
        if self.signal is not None:
            th += float(self.signal(t))
        return float(th)

    def state(self, t: float) -> np.ndarray:
        """Probe state at time t: statevector, or density matrix when ``t2`` is set."""
        th = self.theta(t)
        if self.probe == "ghz":
            psi = ghz_state(self.n, self.n * th)
        else:
            q = np.array([_SQ2, _SQ2 * np.exp(1j * th)], dtype=np.complex128)
            psi = _kron_all([q] * self.n)
        if self.t2 is None:
            return psi
        from .channels import decohere

        return decohere(psi, self.dwell, t2=self.t2, model=self.model)

    __call__ = state

    def expected_phase_signal(self, t: float) -> tuple[str, str, float, float]:
        """The two Pauli strings whose expectations read the phase at time t, and
        their exact values (including dephasing): ``(cos_label, sin_label, cos, sin)``."""
        th = self.theta(t)
        if self.probe == "ghz":
            w, ph = self.n, self.n * th
            cos_lab, sin_lab = "X" * self.n, "Y" + "X" * (self.n - 1)
        else:
            w, ph = 1, th
            cos_lab, sin_lab = "X" + "I" * (self.n - 1), "Y" + "I" * (self.n - 1)
        decay = 1.0 if self.t2 is None else math.exp(-w * self.dwell / self.t2)
        return cos_lab, sin_lab, decay * math.cos(ph), decay * math.sin(ph)
