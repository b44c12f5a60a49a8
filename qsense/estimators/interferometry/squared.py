"""Two-copy estimator: online |V_jk|^2 from Bell measurements made site by site
(:class:`SquaredVisibilityEstimator`), optionally undoing the atmospheric piston that
accumulates between the arrivals of a pair's two photons (docs/physics.md §5,
docs/telescope.md §5)."""

from __future__ import annotations

from typing import Any

import numpy as np

from qsense.records import BellBatch

from ..serial import checked_state, counts_array, dump_npz, float_array, load_npz, meta_int
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

    Piston between the two photons.  The photons of a pair arrive ``tau`` apart; each
    telescope's piston random-walks with diffusion ``D`` rad^2/s, so the relative phase
    of baseline (j, k) moves by a Gaussian of variance ``2 D tau`` in between and the
    shot's mean is scaled by ``e^{-D tau}`` (``lambda/(lambda + D)`` on average for
    exponential waits at pairing rate lambda).  With ``piston_diffusion=D`` every shot is
    reweighted by ``e^{+D tau}`` (unbiased again, like ``BellEstimator(t2=...)`` for memory
    decoherence; the variance grows by E[e^{2 D tau}], infinite for exponential waits
    when lambda <= 2D, so cap the pairing wait).  ``tau`` is ``BellBatch.wait`` (the delay of
    the first photon when the second is measured on arrival, as :meth:`TelescopeSim.bell`
    records it) unless :meth:`update` gets ``separation``.  :attr:`piston_factor` reports
    the mean ``e^{-D tau}`` seen: the factor by which uncorrected |V|^2 is low.
    """

    def __init__(self, M: int, pairs: np.ndarray | None = None, apertures: Any = None, piston_diffusion: float = 0.0) -> None:
        if int(M) < 2:
            raise ValueError("need at least two telescopes")
        self.M = int(M)
        self.pairs = _pairs(self.M, pairs)
        self.apertures = None if apertures is None else np.asarray(apertures, dtype=np.float64)
        self._factor = _norm_factor(self.M, self.pairs, self.apertures)
        D = float(piston_diffusion)
        if not (np.isfinite(D) and D >= 0):
            raise ValueError(f"piston_diffusion must be a finite rate >= 0 (rad^2/s); got {piston_diffusion!r}")
        self.piston_diffusion = D
        self.S = np.zeros((self.M, self.M), dtype=np.int64)
        self.Q = np.zeros((self.M, self.M), dtype=np.int64)
        # reweighted statistics (only used when D > 0): sum w U^T U, sum w^2 (U^2)^T (U^2), w = e^{D tau}
        self.Sw = np.zeros((self.M, self.M), dtype=np.float64)
        self.Qw = np.zeros((self.M, self.M), dtype=np.float64)
        #: sum over shots of e^{-D tau} (for :attr:`piston_factor`)
        self.decay_sum = 0.0
        self.count = 0

    @property
    def piston_factor(self) -> float:
        """Mean e^{-D tau} over the shots so far: uncorrected |V|^2 is this times the truth (1.0 when D = 0)."""
        return 1.0 if self.piston_diffusion == 0 or self.count == 0 else self.decay_sum / self.count

    def update(self, batch: BellBatch, separation: Any = None) -> None:
        """Fold in a batch of two-copy records on the M sites.

        ``separation`` (seconds, scalar or (T,)): time between the two photons' arrivals, for the piston
        correction; default ``batch.wait``.  Ignored when ``piston_diffusion`` is 0.
        """
        if not isinstance(batch, BellBatch):
            raise ValueError(f"expected a BellBatch; got {type(batch).__name__}")
        if batch.n != self.M:
            raise ValueError(f"batch has {batch.n} pairs; this estimator is for {self.M} telescopes")
        w = None
        if self.piston_diffusion > 0 and batch.T:
            tau = batch.wait if separation is None else separation
            if tau is None:
                raise ValueError("piston_diffusion > 0 needs each shot's photon separation (BellBatch.wait or separation=)")
            tau = np.broadcast_to(np.asarray(tau, dtype=np.float64), (batch.T,))
            if np.any(~np.isfinite(tau)) or np.any(tau < 0):
                raise ValueError("photon separations must be finite and >= 0 seconds")
            w = np.exp(self.piston_diffusion * tau)
            self.decay_sum += float(np.sum(1.0 / w))
        for lo in range(0, batch.T, 1 << 18):
            U = _U_OF_CODE[batch.outcomes[lo : lo + (1 << 18)]]
            # entries are multiples of 4 below 2^20 * 16: exact in float32
            self.S += np.rint(U.T @ U).astype(np.int64)
            U2 = U * U
            self.Q += np.rint(U2.T @ U2).astype(np.int64)
            if w is not None:
                wc = w[lo : lo + (1 << 18), None]
                U64, U2_64 = U.astype(np.float64), U2.astype(np.float64)
                self.Sw += (U64 * wc).T @ U64
                self.Qw += (U2_64 * (wc * wc)).T @ U2_64
        self.count += batch.T

    def merge(self, other: "SquaredVisibilityEstimator") -> "SquaredVisibilityEstimator":
        """Fold in another estimator's statistics."""
        if not isinstance(other, SquaredVisibilityEstimator) or other.M != self.M:
            raise ValueError("can only merge a SquaredVisibilityEstimator for the same array")
        if other.piston_diffusion != self.piston_diffusion:
            raise ValueError("cannot merge estimators with different piston_diffusion")
        self.S += other.S
        self.Q += other.Q
        self.Sw += other.Sw
        self.Qw += other.Qw
        self.decay_sum += other.decay_sum
        self.count += other.count
        return self

    def estimate(self) -> SquaredVisibilityEstimate:
        """Current |V|^2 for the pairs with one-sigma errors (piston-corrected when ``piston_diffusion`` > 0;
        the uncorrected values are :attr:`piston_factor` times lower on average)."""
        if self.count < 2:
            raise ValueError("need at least two shots")
        N = float(self.count)
        j, k = self.pairs[:, 0], self.pairs[:, 1]
        c2 = self._factor**2 / 8.0
        S, Q = (self.Sw, self.Qw) if self.piston_diffusion > 0 else (self.S, self.Q)
        mean = c2 * S[j, k] / N
        second = c2**2 * Q[j, k] / N
        var = np.maximum(second - mean**2, 0.0) * N / (N - 1.0)
        return SquaredVisibilityEstimate(self.pairs, mean, np.sqrt(var / N), self.count)

    def to_bytes(self) -> bytes:
        """Serialise configuration and statistics (npz, no pickle)."""
        meta = {
            "type": "SquaredVisibilityEstimator", "version": 1, "M": self.M, "count": self.count,
            "piston_diffusion": self.piston_diffusion, "decay_sum": self.decay_sum,
        }
        ap = np.zeros(0) if self.apertures is None else self.apertures
        return dump_npz(meta, pairs=self.pairs, S=self.S, Q=self.Q, Sw=self.Sw, Qw=self.Qw, apertures=ap)

    @classmethod
    @checked_state
    def from_bytes(cls, data: bytes) -> "SquaredVisibilityEstimator":
        """Inverse of :meth:`to_bytes`."""
        z, meta = load_npz(data, "SquaredVisibilityEstimator")
        ap = z["apertures"]
        est = cls(meta["M"], z["pairs"], ap if ap.size else None, float(meta.get("piston_diffusion", 0.0)))
        if z["S"].shape != est.S.shape or z["Q"].shape != est.Q.shape:
            raise ValueError("checkpoint statistics do not match its configuration")
        est.S, est.Q, est.count = counts_array(z["S"], "S", signed=True), counts_array(z["Q"], "Q"), meta_int(meta, "count")
        # checkpoints from before the piston correction have no reweighted statistics (and D = 0)
        if "Sw" in z.files:
            if z["Sw"].shape != est.Sw.shape or z["Qw"].shape != est.Qw.shape:
                raise ValueError("checkpoint statistics do not match its configuration")
            est.Sw, est.Qw = float_array(z["Sw"], "Sw"), float_array(z["Qw"], "Qw")
        est.decay_sum = float(meta.get("decay_sum", 0.0))
        return est
