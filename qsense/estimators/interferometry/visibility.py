"""Single-copy estimator: online complex visibilities V_jk from classical shadows
of the memory qubits (:class:`VisibilityEstimator`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from qsense.records import ShadowBatch

from ..serial import checked_state, counts_array, dump_npz, load_npz, meta_int
from .covariance import FULL_COV_MAX_PAIRS, POOLED_MIN, _visibility_covariance, pooled_norm_var
from .geometry import NORMALIZATIONS, _norm_factor, _pairs
from .results import VisibilityEstimate

__all__ = ["VisibilityEstimator"]


def _pooled(r: np.ndarray, cov: np.ndarray, d: np.ndarray, dcov: np.ndarray, factor: np.ndarray, M: int,
            N: float) -> tuple[np.ndarray, np.ndarray]:
    """``V = c r / D`` (D = sum(d)) and its per-pair (Re, Im) covariance by the delta method.

    ``cov`` (P, 2, 2) of (Re, Im) rho, ``dcov`` (M, M) of the populations.  Per
    snapshot a pair term x and Z_l have E[x z_l] = <x> for l outside the pair (Z_l
    = +1 wherever x is non-zero on a single excitation) and 0 inside, so
    cov(x, sum_l z_l) = <x>(M - 2 - sum z) and, with sum z = M - 2D,
    cov(x, D) = <x>(1 - D): the pooled population barely correlates with a pair.
    """
    D = max(float(d.sum()), POOLED_MIN)
    g = factor / D
    V = r * g
    vD = float(dcov.sum())
    cxD = np.stack([r.real, r.imag], axis=1) * (1.0 - float(d.sum())) / max(N - 1.0, 1.0)  # (P, 2)
    Vv = np.stack([V.real, V.imag], axis=1)
    vcov = (g**2)[:, None, None] * cov
    vcov -= (g[:, None, None] / D) * (cxD[:, :, None] * Vv[:, None, :] + Vv[:, :, None] * cxD[:, None, :])
    vcov += Vv[:, :, None] * Vv[:, None, :] * vD / D**2
    return V, vcov


class VisibilityEstimator:
    """Online complex visibilities from single-copy shadows of the memory qubits.

    Parameters
    ----------
    M:
        number of telescopes (= qubits of every batch, in telescope order).
    pairs:
        int (P, 2) pairs to report (default all ``j < k``).
    normalize:
        ``"pooled"`` (default): ``V = c_jk rho_jk / D`` with the known aperture
        factor ``c_jk`` (M for equal apertures) and ``D = sum_l rho_ll``, the
        population of all telescopes together, estimated from the same
        snapshots: it removes dark-count-free memory loss and any common
        throughput loss, and its relative error ~ sqrt(M / 2N) stays small when
        every single ``rho_jj ~ 1/M`` is buried in noise (many telescopes, few
        photons each).  ``"diagonal"``: ``V = rho_jk / sqrt(rho_jj rho_kk)``,
        the textbook normalised coherence, robust to unequal throughput but a
        ratio of noisy small numbers unless ``N rho_jj >> 100`` (it diverges
        where an estimated ``rho_jj`` reaches 0; see ``docs/telescope.md``).
        ``"equal"``: ``V = c_jk rho_jk``; trusts ``D = 1``.
    apertures:
        relative collecting areas for ``normalize="equal"``.

    Statistics (all int64, from matrix products per batch): ``S[a, b]`` (M, M)
    = sum over snapshots with qubit j in basis a and qubit k in basis b of
    ``s_j s_k`` (s = +-1), ``N[a, b]`` the number of such snapshots, for a, b in
    {X, Y}, plus ``S[Z, Z]``, the Z counts on the diagonal of ``N[Z, Z]`` and
    ``z1`` (the signed Z sums); so means and exact per-snapshot variances follow.  Covariances between a
    pair's terms and the Z of a third telescope (O(|rho_jk| rho_ll)) are neglected.
    """

    def __init__(self, M: int, pairs: np.ndarray | None = None, normalize: str = "pooled", apertures: Any = None) -> None:
        if int(M) < 2:
            raise ValueError("need at least two telescopes")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}; got {normalize!r}")
        self.M = int(M)
        self.pairs = _pairs(self.M, pairs)
        self.normalize = normalize
        self.apertures = None if apertures is None else np.asarray(apertures, dtype=np.float64)
        self._factor = _norm_factor(self.M, self.pairs, self.apertures)
        self.S = np.zeros((3, 3, self.M, self.M), dtype=np.int64)
        self.N = np.zeros((3, 3, self.M, self.M), dtype=np.int64)
        self.z1 = np.zeros(self.M, dtype=np.int64)  # sum over Z-basis snapshots of s_j
        self.count = 0

    def update(self, batch: ShadowBatch) -> None:
        """Fold in a batch of snapshots on the M memory qubits (any size)."""
        if not isinstance(batch, ShadowBatch):
            raise ValueError(f"expected a ShadowBatch; got {type(batch).__name__}")
        if batch.n != self.M:
            raise ValueError(f"batch has {batch.n} qubits; this estimator is for {self.M} telescopes")
        if batch.T == 0:
            return
        # Only the blocks the estimates use are accumulated: S and N for the X/Y
        # letters (one (T, 2M) product each), S[Z, Z] and the Z counts on the
        # diagonal of N[Z, Z].  float32 BLAS products are exact for counts below
        # 2^24, hence the chunking.
        M = self.M
        for lo in range(0, batch.T, 1 << 20):
            b = batch.bases[lo : lo + (1 << 20)]
            s = 1.0 - 2.0 * batch.outcomes[lo : lo + (1 << 20)].astype(np.float32)
            ind = np.concatenate([b == 0, b == 1], axis=1).astype(np.float32)  # (T, 2M): X block, Y block
            sig = ind * np.concatenate([s, s], axis=1)
            Sxy = np.rint(sig.T @ sig).astype(np.int64).reshape(2, M, 2, M).transpose(0, 2, 1, 3)
            Nxy = np.rint(ind.T @ ind).astype(np.int64).reshape(2, M, 2, M).transpose(0, 2, 1, 3)
            self.S[:2, :2] += Sxy
            self.N[:2, :2] += Nxy
            zi = (b == 2).astype(np.float32)
            zs = zi * s
            self.S[2, 2] += np.rint(zs.T @ zs).astype(np.int64)
            idx = np.arange(M)
            self.N[2, 2, idx, idx] += zi.sum(axis=0).astype(np.int64)
            self.z1 += np.rint(zs.sum(axis=0)).astype(np.int64)
        self.count += batch.T

    def merge(self, other: "VisibilityEstimator") -> "VisibilityEstimator":
        """Fold in another estimator's statistics (same as having seen its data)."""
        if not isinstance(other, VisibilityEstimator) or other.M != self.M:
            raise ValueError("can only merge a VisibilityEstimator for the same array")
        self.S += other.S
        self.N += other.N
        self.z1 += other.z1
        self.count += other.count
        return self

    # -- the estimate ------------------------------------------------------------------
    def rho(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Estimates of rho_jk for the pairs and of the diagonal, with covariances.

        Returns ``(rho_pairs complex (P,), cov (P, 2, 2) of (Re, Im), diag (M,),
        diag_cov (M, M))`` where ``diag`` estimates rho_jj = (1 - <Z_j>)/2.
        """
        if self.count < 2:
            raise ValueError("need at least two snapshots")
        Nt = float(self.count)
        j, k = self.pairs[:, 0], self.pairs[:, 1]
        X, Y, Z = 0, 1, 2
        S, N = self.S.astype(np.float64), self.N.astype(np.float64)
        re = 9.0 * (S[X, X, j, k] + S[Y, Y, j, k]) / (4.0 * Nt)
        im = 9.0 * (S[Y, X, j, k] - S[X, Y, j, k]) / (4.0 * Nt)
        # per-snapshot second moments: XX and YY (or YX and XY) never both match
        e_re2 = 81.0 * (N[X, X, j, k] + N[Y, Y, j, k]) / (16.0 * Nt)
        e_im2 = 81.0 * (N[Y, X, j, k] + N[X, Y, j, k]) / (16.0 * Nt)
        corr = Nt / (Nt - 1.0)
        cov = np.empty((len(j), 2, 2))
        cov[:, 0, 0] = (e_re2 - re**2) * corr / Nt
        cov[:, 1, 1] = (e_im2 - im**2) * corr / Nt
        cov[:, 0, 1] = cov[:, 1, 0] = (0.0 - re * im) * corr / Nt
        idx = np.arange(self.M)
        z = 3.0 * self.z1.astype(np.float64) / Nt  # <Z_j>
        # E[z_j z_k] per snapshot: 9 S[Z, Z, j, k] off the diagonal, 9 N[Z, Z, j, j] on it
        ezz = 9.0 * S[Z, Z] / Nt
        ezz[idx, idx] = 9.0 * N[Z, Z, idx, idx] / Nt
        zcov = (ezz - np.outer(z, z)) * corr / Nt
        diag = (1.0 - z) / 2.0
        return re + 1j * im, cov, diag, zcov / 4.0

    def _rho_matrix(self) -> np.ndarray:
        """(M, M) complex plug-in estimate of every off-diagonal rho_uv."""
        X, Y = 0, 1
        S = self.S.astype(np.float64)
        R = 9.0 * (S[X, X] + S[Y, Y]) / 4.0 + 1j * 9.0 * (S[Y, X] - S[X, Y]) / 4.0
        R /= float(self.count)
        np.fill_diagonal(R, 0.0)
        return R

    def estimate(self, full_cov: bool | None = None) -> VisibilityEstimate:
        """Current complex visibilities with (Re, Im) covariances.

        ``full_cov``: also compute the (2P, 2P) covariance across pairs (default:
        when P <= :data:`FULL_COV_MAX_PAIRS`).  Fits should use it: pairs sharing
        a telescope are correlated (a third of the snapshots that measure pair
        (j, k) in matching bases also measure (j, l)), and ignoring that
        understates parameter errors by up to ~25% for a binary's flux ratio.
        """
        r, cov, d, dcov = self.rho()
        P = len(self.pairs)
        if full_cov is None:
            full_cov = P <= FULL_COV_MAX_PAIRS
        full = self._full_covariance(r, d) if full_cov else None
        if self.normalize == "equal":
            f = self._factor
            return VisibilityEstimate(self.pairs, r * f, cov * (f**2)[:, None, None], self.count, full)
        if self.normalize == "pooled":
            V, vcov = _pooled(r, cov, d, dcov, self._factor, self.M, self.count)
            kappa = pooled_norm_var(float(d.sum()), float(dcov.sum()), float(self.count)) if full is not None else None
            return VisibilityEstimate(self.pairs, V, vcov, self.count, full, kappa)
        j, k = self.pairs[:, 0], self.pairs[:, 1]
        dj = np.maximum(d[j], 1e-12)
        dk = np.maximum(d[k], 1e-12)
        g = 1.0 / np.sqrt(dj * dk)
        V = r * g
        # delta method over (Re rho, Im rho, d_j, d_k).  Per snapshot a pair term and
        # Z_j never both match, so cov(x, z_j) = -<x><z_j>/N, and with d = (1 - z)/2,
        # cov(Re rho, d_j) = +Re rho <Z_j> / (2N).
        Nt = float(self.count)
        zj, zk = 1.0 - 2.0 * d[j], 1.0 - 2.0 * d[k]
        Sig = np.zeros((P, 4, 4))
        Sig[:, :2, :2] = cov
        Sig[:, 2, 2] = dcov[j, j]
        Sig[:, 3, 3] = dcov[k, k]
        Sig[:, 2, 3] = Sig[:, 3, 2] = dcov[j, k]
        for c, part in ((0, r.real), (1, r.imag)):
            Sig[:, c, 2] = Sig[:, 2, c] = part * zj / (2.0 * (Nt - 1.0))
            Sig[:, c, 3] = Sig[:, 3, c] = part * zk / (2.0 * (Nt - 1.0))
        Jm = np.zeros((P, 2, 4))
        Jm[:, 0, 0] = g
        Jm[:, 1, 1] = g
        Jm[:, 0, 2] = -V.real / (2.0 * dj)
        Jm[:, 0, 3] = -V.real / (2.0 * dk)
        Jm[:, 1, 2] = -V.imag / (2.0 * dj)
        Jm[:, 1, 3] = -V.imag / (2.0 * dk)
        vcov = np.einsum("pab,pbc,pdc->pad", Jm, Sig, Jm)
        return VisibilityEstimate(self.pairs, V, vcov, self.count, full)

    def _full_covariance(self, r: np.ndarray, d: np.ndarray) -> np.ndarray:
        """(2P, 2P) covariance across pairs from the exact same-pair moments."""
        N = float(self.count)
        corr = N / (N - 1.0)
        _, cov_pp, _, dcov = self.rho()
        return _visibility_covariance(
            self.pairs, self.M, N, r, self._rho_matrix(), d, cov_pp * (N / corr), dcov * 4.0 * (N / corr),
            self.normalize, self._factor,
        )

    # -- checkpoints -------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialise configuration and statistics (npz, no pickle)."""
        meta = {"type": "VisibilityEstimator", "version": 1, "M": self.M, "normalize": self.normalize, "count": self.count}
        ap = np.zeros(0) if self.apertures is None else self.apertures
        return dump_npz(meta, pairs=self.pairs, S=self.S, N=self.N, z1=self.z1, apertures=ap)

    @classmethod
    @checked_state
    def from_bytes(cls, data: bytes) -> "VisibilityEstimator":
        """Inverse of :meth:`to_bytes` (``ValueError`` on malformed data)."""
        z, meta = load_npz(data, "VisibilityEstimator")
        ap = z["apertures"]
        est = cls(meta["M"], z["pairs"], meta["normalize"], ap if ap.size else None)
        if z["S"].shape != est.S.shape or z["N"].shape != est.N.shape or z["z1"].shape != (est.M,):
            raise ValueError("checkpoint statistics do not match its configuration")
        est.S, est.N = counts_array(z["S"], "S", signed=True), counts_array(z["N"], "N")
        est.z1 = counts_array(z["z1"], "z1", signed=True)
        est.count = meta_int(meta, "count")
        return est
