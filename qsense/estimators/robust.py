"""Noise-robust classical shadows: calibrate the measurement channel on |0...0> and undo it.

Chen, Yu, Zeng, Flammia, PRX Quantum 2, 030348 (2021).  When the noise of the
measurement (readout errors, the rotation gates' errors) does not depend on
which basis was chosen and is the same in every shot, the random-Pauli shadow
channel stays diagonal in the Pauli basis, but a weight-|S| Pauli with support
S is shrunk by a factor f_S instead of being reconstructed with f_S = 1: the
noisy snapshot estimate has mean ``f_S tr(P rho)``.  Snapshots of the known
state |0...0> calibrate it: ``f_S = E[x(Z_S)]`` (the noiseless value of every
Z-string is 1).

Two noise models:

* ``model="qubit"`` (product noise, each qubit's channel its own):
  f_S = prod_{q in S} f_q with f_q = E[x(Z_q)], the n single-qubit means;
* ``model="subset"`` (any gate-independent noise, correlated readout included):
  f_S estimated directly as the mean of x(Z_S) on the calibration stream.

Assumption of both: the noise is symmetric under the outcome flip (bit flips,
depolarizing, any Pauli noise).  Random X/Y/Z bases alone do not twirl
asymmetric readout (P(1|0) != P(0|1)) into this form; Chen et al.'s full local
Clifford twirl would.  Under asymmetric readout the correction leaves a bias of
order the asymmetry.

The calibration keeps the class counts of its snapshots on all n qubits
(:class:`~qsense.estimators.class_kernels.ClassCounts`, n <= 24; mergeable,
``to_bytes``), so any f_S and the covariance of the f_q follow from it later.

Corrected Pauli estimate: xbar_P / f_S.  Error bar (delta method, calibration
and data independent): ``var = se_x^2 / f^2 + xbar^2 var(f) / f^4``, where
var(f_S) comes from the calibration's own spread (``model="qubit"``:
f_S^2 g^T Cov(f_q) g, g_q = 1/f_q).

Corrected purity (``model="qubit"``): tr rho_A^2 = 2^-|A| sum_P tr(P rho)^2, so
each non-identity letter of qubit q is divided by f_q^2; the pair kernel
becomes, per qubit, (1 + 9/f_q^2)/2 (same basis and bit), (1 - 9/f_q^2)/2
(same basis, other bit), 1/2 (other basis): the same U-statistic with
per-qubit kernels, plus the calibration's variance through du/df_q.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from qsense.records import ShadowBatch

from .class_kernels import MAX_KEY_QUBITS, ClassCounts, class_keys, decode_keys, pair_row_sums
from .purity import DENSE_MAX, ShadowPurity, u_statistic
from .result import Estimate
from .serial import dump_npz, load_npz, wires_from_json, wires_to_json
from .shadow import ShadowEstimator, _as_batch

__all__ = ["MODELS", "CalibrationError", "NoiseCalibration", "RobustShadowEstimator", "robust_purity"]

MODELS = ("qubit", "subset")


class CalibrationError(ValueError):
    """The calibration cannot correct these estimates (no data, f too small, wrong wires)."""


class NoiseCalibration:
    """Online calibration of the noisy shadow channel from snapshots of |0...0>.

    ``update(batch)`` with shadow snapshots taken on the all-zeros state of the
    same qubits as the data; then :meth:`f_qubit` / :meth:`f_subset` give the
    channel eigenvalues with their uncertainty.
    """

    def __init__(self) -> None:
        self.wires: tuple | None = None
        self._counts: ClassCounts | None = None

    @property
    def count(self) -> int:
        """Calibration snapshots seen."""
        return 0 if self._counts is None else int(self._counts.counts.sum())

    def update(self, batch: ShadowBatch) -> None:
        """Fold in calibration snapshots (of |0...0>)."""
        batch = _as_batch(batch)
        if self.wires is None:
            if batch.n > MAX_KEY_QUBITS:
                raise CalibrationError(f"calibration holds at most {MAX_KEY_QUBITS} qubits; got {batch.n}")
            self.wires = batch.wires
            self._counts = ClassCounts(batch.n)
        elif batch.wires != self.wires:
            raise CalibrationError(f"calibration batch wires {batch.wires} differ from {self.wires}")
        if batch.T:
            self._counts.add_keys(class_keys(2 * batch.bases.astype(np.int64) + batch.outcomes))

    def merge(self, other: NoiseCalibration) -> NoiseCalibration:
        """Fold in another calibration of the same wires."""
        if other._counts is None:
            return self
        if self._counts is None:
            self.wires, self._counts = other.wires, ClassCounts(other._counts.m)
        elif other.wires != self.wires:
            raise CalibrationError("cannot merge calibrations of different wires")
        self._counts.merge(other._counts)
        return self

    def _z_values(self, supports: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Per distinct class: x(Z_S) for every support (C, len(supports)), and the counts."""
        if self._counts is None or self.count < 2:
            raise CalibrationError("the calibration needs at least two snapshots of |0...0>")
        cls = decode_keys(self._counts.keys, self._counts.m)
        is_z = cls // 2 == 2
        sign = 1 - 2 * (cls % 2)
        x = np.empty((cls.shape[0], len(supports)))
        for j, s in enumerate(supports):
            s = list(s)
            x[:, j] = 3.0 ** len(s) * np.all(is_z[:, s], axis=1) * np.prod(sign[:, s], axis=1)
        return x, self._counts.counts.astype(np.float64)

    def f_qubit(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-qubit eigenvalues f_q (n,) and the covariance of their estimates (n, n)."""
        n = self._counts.m if self._counts is not None else 0
        x, h = self._z_values([[q] for q in range(n)])
        N = h.sum()
        f = h @ x / N
        d = x - f
        cov = (d * h[:, None]).T @ d / (N - 1.0) / N
        return f, cov

    def f_subset(self, supports: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """f_S for each support (positions) estimated directly, and its covariance."""
        x, h = self._z_values(supports)
        N = h.sum()
        f = h @ x / N
        d = x - f
        return f, (d * h[:, None]).T @ d / (N - 1.0) / N

    def to_bytes(self) -> bytes:
        """Serialise the calibration's class counts (npz, no pickle)."""
        meta = {"type": "NoiseCalibration", "version": 1, "wires": None if self.wires is None else wires_to_json(self.wires),
                "n": 0 if self._counts is None else self._counts.m}
        keys = np.zeros(0, np.int64) if self._counts is None else self._counts.keys
        counts = np.zeros(0, np.int64) if self._counts is None else self._counts.counts
        return dump_npz(meta, keys=keys, counts=counts)

    @classmethod
    def from_bytes(cls, data: bytes) -> NoiseCalibration:
        """Inverse of :meth:`to_bytes` (``ValueError`` on malformed data)."""
        z, meta = load_npz(data, "NoiseCalibration")
        out = cls()
        if meta["wires"] is not None:
            out.wires = wires_from_json(meta["wires"])
            out._counts = ClassCounts.from_arrays(int(meta["n"]), z["keys"], z["counts"])
        return out


def _check_f(f: np.ndarray, what: str) -> None:
    bad = ~(np.abs(f) > 1e-3)
    if np.any(bad):
        raise CalibrationError(f"calibrated eigenvalue {what} is {f[bad][0]:.3g}: the noise leaves no signal to correct")


class RobustShadowEstimator:
    """Noise-corrected Pauli expectation values: a plain-mean :class:`ShadowEstimator`
    on the (noisy) data divided by the calibrated f_S of each term's support.

    ``observables``: Pauli words (with a coefficient; sums are refused because their
    terms' errors are correlated); ``calibration``: a :class:`NoiseCalibration` on
    the same wires; ``model``: ``"qubit"`` or ``"subset"`` (module docstring).
    """

    def __init__(self, observables: Any, calibration: NoiseCalibration, model: str = "qubit") -> None:
        if model not in MODELS:
            raise CalibrationError(f"model must be one of {MODELS}; got {model!r}")
        if not isinstance(calibration, NoiseCalibration):
            raise CalibrationError(f"calibration must be a NoiseCalibration; got {type(calibration).__name__}")
        self.model = model
        self.calibration = calibration
        self.data = ShadowEstimator(observables)
        for o in self.data.observables:
            if len(o.terms) != 1:
                raise CalibrationError(f"{o.label}: robust estimates take Pauli words, not sums of {len(o.terms)} terms")

    @property
    def labels(self) -> tuple[str, ...]:
        """The observables' labels."""
        return self.data.labels

    def update(self, batch: ShadowBatch) -> None:
        """Fold in (noisy) data snapshots."""
        self.data.update(batch)

    def merge(self, other: RobustShadowEstimator) -> RobustShadowEstimator:
        """Fold in another estimator's data (the calibration is shared, not merged)."""
        self.data.merge(other.data)
        return self

    def _supports(self) -> list[tuple[int, ...]]:
        return [tuple(int(q) for q, _ in term) for term in self.data._table.terms]

    def estimate(self) -> Estimate:
        """Corrected values and standard errors including the calibration's."""
        if self.data.wires is None:
            raise CalibrationError("no data yet: call update() first")
        if self.calibration.wires != self.data.wires:
            raise CalibrationError(f"calibration wires {self.calibration.wires} differ from the data's {self.data.wires}")
        x, se_x = self.data.term_estimate()
        supports = self._supports()
        nonempty = [s for s in supports if s]
        if self.model == "qubit":
            fq, cov = self.calibration.f_qubit()
            _check_f(fq[sorted({q for s in nonempty for q in s})] if nonempty else np.ones(1), "f_q")
            f = np.array([np.prod(fq[list(s)]) for s in supports])
            var_f = np.array([f_s**2 * _quad(cov, fq, s) for f_s, s in zip(f, supports)])
        else:
            f = np.ones(len(supports))
            var_f = np.zeros(len(supports))
            if nonempty:
                idx = [i for i, s in enumerate(supports) if s]
                fs, cov = self.calibration.f_subset(nonempty)
                _check_f(fs, "f_S")
                f[idx], var_f[idx] = fs, np.diag(cov)
        vals = x / f
        var = se_x**2 / f**2 + x**2 * var_f / f**4
        t = self.data._table
        out = t.combine(vals)
        err = np.sqrt(t.combine(var, squared=True))
        return Estimate(out, err, self.data.count, self.labels)


def _quad(cov: np.ndarray, f: np.ndarray, s: Sequence[int]) -> float:
    """g^T cov g with g_q = 1/f_q on the support: var(log f_S)."""
    if not s:
        return 0.0
    s = list(s)
    g = 1.0 / f[s]
    return float(g @ cov[np.ix_(s, s)] @ g)


def _kernels(f: np.ndarray) -> np.ndarray:
    """Per-qubit corrected pair kernels (m, 6, 6), classes 2*basis + bit."""
    m = f.size
    g = np.full((m, 6, 6), 0.5)
    for b in range(3):
        for u in range(2):
            for v in range(2):
                g[:, 2 * b + u, 2 * b + v] = np.where(u == v, (1 + 9 / f**2) / 2, (1 - 9 / f**2) / 2)
    return g


def _derivative_kernels(f: np.ndarray, q: int) -> np.ndarray:
    """The kernels with qubit q's replaced by its derivative in f_q."""
    g = _kernels(f)
    dq = np.zeros((6, 6))
    for b in range(3):
        for u in range(2):
            for v in range(2):
                dq[2 * b + u, 2 * b + v] = -9 / f[q] ** 3 if u == v else 9 / f[q] ** 3
    g[q] = dq
    return g


def _apply_axes(h: np.ndarray, gs: np.ndarray) -> np.ndarray:
    m = gs.shape[0]
    v = h.reshape((6,) * m)
    for axis in range(m):
        v = np.moveaxis(np.tensordot(gs[axis], v, axes=([1], [axis])), 0, axis)
    return v.reshape(-1)


def _row_sums(counts: ClassCounts, gs: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    if counts.m <= DENSE_MAX:
        h = counts.dense().astype(np.float64)
        nz = np.flatnonzero(h)
        return h[nz], _apply_axes(h, gs)[nz], float(h[nz] @ _apply_axes(h, gs**2)[nz])
    return pair_row_sums(counts, gs)


def robust_purity(purity: ShadowPurity, calibration: NoiseCalibration) -> Estimate:
    """Noise-corrected tr(rho_A^2) for every subsystem of ``purity`` (product noise,
    ``model="qubit"``), with error bars that include the calibration's variance."""
    if not isinstance(purity, ShadowPurity) or purity.wires is None:
        raise CalibrationError("robust_purity needs a ShadowPurity that has seen data")
    if calibration.wires != purity.wires:
        raise CalibrationError(f"calibration wires {calibration.wires} differ from the data's {purity.wires}")
    N = purity.count
    if N < 2:
        raise CalibrationError("purity needs at least two snapshots")
    fq, cov = calibration.f_qubit()
    vals, ses = [], []
    for i, sub in enumerate(purity.subsystems):
        s = list(sub)
        f = fq[s]
        _check_f(f, "f_q")
        counts = purity.class_counts(i)
        gs = _kernels(f)
        diag = float(np.prod((1 + 9 / f**2) / 2))
        u, se = u_statistic(*_row_sums(counts, gs), diag, N)
        grad = np.empty(len(s))
        for j in range(len(s)):
            dg = _derivative_kernels(f, j)
            h, r1, _ = _row_sums(counts, dg)
            d_diag = float(np.prod(np.delete((1 + 9 / f**2) / 2, j)) * (-9 / f[j] ** 3))
            grad[j] = (h @ r1 - d_diag * N) / (N * (N - 1.0))
        var = se**2 + float(grad @ cov[np.ix_(s, s)] @ grad)
        vals.append(u)
        ses.append(math.sqrt(max(var, 0.0)))
    return Estimate(np.array(vals), np.array(ses), N, purity.labels)
