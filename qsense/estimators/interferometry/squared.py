"""Two-copy estimator: online |V_jk|^2 from Bell measurements made site by site
(:class:`SquaredVisibilityEstimator`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from qsense.records import BellBatch

from ..serial import dump_npz, load_npz
from .geometry import _norm_factor, _pairs
from .results import SquaredVisibilityEstimate

__all__ = ["SquaredVisibilityEstimator"]

#: per Bell code, u = lambda_X + lambda_Y of the pair: Phi+ 0, Psi+ +2, Phi- 0, Psi- -2
_U_OF_CODE = np.array([0.0, 2.0, 0.0, -2.0], dtype=np.float32)


class SquaredVisibilityEstimator:
    """Online |V_jk|^2 from two-copy Bell measurements made site by site.

    Pair j of a :class:`~qsense.BellBatch` is memory qubit j of photon A with memory
    qubit j of photon B (both stored at telescope j).  Per shot,
    ``y_jk = c_jk^2 u_j u_k / 8`` with ``u = lambda_X + lambda_Y`` of the site's Bell
    outcome (+2 for Psi+, -2 for Psi-, 0 for Phi+-) and ``c_jk`` the aperture
    factor (M for equal apertures) is an unbiased estimate of ``|gamma_jk|^2``: its
    mean is ``c^2 sum_{P in XX,XY,YX,YY} tr(P rho_A) tr(P rho_B) / 8 = c^2 Re(rho^A_jk
    conj(rho^B_jk))``, insensitive to piston phases common to both photons.

    Statistics: ``S = U^T U`` and ``Q = (U^2)^T (U^2)`` (M x M) with U the (T, M) table
    of u values, so memory is O(M^2) however long the stream.
    """

    def __init__(self, M: int, pairs: np.ndarray | None = None, apertures: Any = None) -> None:
        if int(M) < 2:
            raise ValueError("need at least two telescopes")
        self.M = int(M)
        self.pairs = _pairs(self.M, pairs)
        self.apertures = None if apertures is None else np.asarray(apertures, dtype=np.float64)
        self._factor = _norm_factor(self.M, self.pairs, self.apertures)
        self.S = np.zeros((self.M, self.M), dtype=np.int64)
        self.Q = np.zeros((self.M, self.M), dtype=np.int64)
        self.count = 0

    def update(self, batch: BellBatch) -> None:
        """Fold in a batch of two-copy records on the M sites."""
        if not isinstance(batch, BellBatch):
            raise ValueError(f"expected a BellBatch; got {type(batch).__name__}")
        if batch.n != self.M:
            raise ValueError(f"batch has {batch.n} pairs; this estimator is for {self.M} telescopes")
        for lo in range(0, batch.T, 1 << 18):
            U = _U_OF_CODE[batch.outcomes[lo : lo + (1 << 18)]]
            # entries are multiples of 4 below 2^20 * 16: exact in float32
            self.S += np.rint(U.T @ U).astype(np.int64)
            U2 = U * U
            self.Q += np.rint(U2.T @ U2).astype(np.int64)
        self.count += batch.T

    def merge(self, other: "SquaredVisibilityEstimator") -> "SquaredVisibilityEstimator":
        """Fold in another estimator's statistics."""
        if not isinstance(other, SquaredVisibilityEstimator) or other.M != self.M:
            raise ValueError("can only merge a SquaredVisibilityEstimator for the same array")
        self.S += other.S
        self.Q += other.Q
        self.count += other.count
        return self

    def estimate(self) -> SquaredVisibilityEstimate:
        """Current |V|^2 for the pairs with one-sigma errors."""
        if self.count < 2:
            raise ValueError("need at least two shots")
        N = float(self.count)
        j, k = self.pairs[:, 0], self.pairs[:, 1]
        c2 = self._factor**2 / 8.0
        mean = c2 * self.S[j, k] / N
        second = c2**2 * self.Q[j, k] / N
        var = np.maximum(second - mean**2, 0.0) * N / (N - 1.0)
        return SquaredVisibilityEstimate(self.pairs, mean, np.sqrt(var / N), self.count)

    def to_bytes(self) -> bytes:
        """Serialise configuration and statistics (npz, no pickle)."""
        meta = {"type": "SquaredVisibilityEstimator", "version": 1, "M": self.M, "count": self.count}
        ap = np.zeros(0) if self.apertures is None else self.apertures
        return dump_npz(meta, pairs=self.pairs, S=self.S, Q=self.Q, apertures=ap)

    @classmethod
    def from_bytes(cls, data: bytes) -> "SquaredVisibilityEstimator":
        """Inverse of :meth:`to_bytes`."""
        z, meta = load_npz(data, "SquaredVisibilityEstimator")
        ap = z["apertures"]
        est = cls(meta["M"], z["pairs"], ap if ap.size else None)
        if z["S"].shape != est.S.shape or z["Q"].shape != est.Q.shape:
            raise ValueError("checkpoint statistics do not match its configuration")
        est.S, est.Q, est.count = z["S"], z["Q"], int(meta["count"])
        return est
