"""Interferometric visibilities from memory-qubit records, and source fits.

A heralded photon collected by M telescopes is a single excitation over M memory
qubits (qubit j = |1> when the photon is at telescope j) with state
``rho_jk = sqrt(a_j a_k) gamma_jk / sum(a)`` (apertures ``a``; ``gamma`` the
normalised mutual coherence, i.e. the complex visibility).  Derivation and sign
checks: ``docs/telescope.md``.  For such states (checked against the density
matrix in ``tests/test_interferometry.py``)::

    <X_j X_k> = <Y_j Y_k> = 2 Re rho_jk        <Y_j X_k> = -<X_j Y_k> = 2 Im rho_jk
    <Z_j> = 1 - 2 rho_jj

so ``Re rho_jk = (<XX> + <YY>)/4`` and ``Im rho_jk = (<YX> - <XY>)/4`` (letter
order = qubit j then qubit k).  Only weight-2 Paulis are needed because the
herald guarantees the state lies in the single-excitation subspace.

Single copies (:class:`VisibilityEstimator`) give the signed complex V_jk.  Two
copies Bell-measured site by site (:class:`SquaredVisibilityEstimator`) give
``sum_{P in XX, XY, YX, YY} tr(P rho)^2 = 8 |rho_jk|^2``: per shot and per site the
sum of the X and Y pair eigenvalues is ``u = +2`` (Psi+), ``-2`` (Psi-) or 0 (Phi+-),
and ``u_j u_k / 8`` estimates ``|rho_jk|^2``.

Both estimators keep sufficient statistics only (matrices of size M x M built
with one matrix product per batch), merge, and serialise.

Array layouts:

* pairs  int64 (P, 2), ``j < k``, lexicographic (``all_pairs(M)``)
* uv     float64 (P, 2) baselines ``(r_j - r_k)/lambda`` in wavelengths, (East, North)
* visibilities complex128 (P,); covariance float64 (P, 2, 2) of (Re, Im)

This module is core: it imports numpy/scipy only, never ``sims`` or ``drivers``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from qsense.records import BellBatch, ShadowBatch

from .serial import dump_npz, load_npz

__all__ = [
    "MAS",
    "all_pairs",
    "baselines",
    "uv_coordinates",
    "visibility_observables",
    "squared_visibility_observables",
    "VisibilityEstimate",
    "SquaredVisibilityEstimate",
    "VisibilityEstimator",
    "SquaredVisibilityEstimator",
    "visibilities_from_paulis",
    "squared_visibilities_from_paulis",
    "point_visibility",
    "binary_visibility",
    "disk_visibility",
    "gaussian_visibility",
    "FitResult",
    "fit_model",
    "fit_binary",
    "fit_disk",
    "fit_gaussian",
]

log = logging.getLogger(__name__)

#: One milliarcsecond in radians.
MAS = math.pi / (180.0 * 3600.0 * 1000.0)
NORMALIZATIONS = ("diagonal", "equal")
#: VisibilityEstimator.estimate() computes the full cross-pair covariance up to
#: this many pairs by default (2P x 2P float64: 11 MB at 600 pairs).
FULL_COV_MAX_PAIRS = 600


# --------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------
def all_pairs(M: int) -> np.ndarray:
    """int64 (P, 2) all telescope pairs ``j < k`` in lexicographic order."""
    j, k = np.triu_indices(int(M), 1)
    return np.stack([j, k], axis=1).astype(np.int64)


def _pairs(M: int, pairs: Any) -> np.ndarray:
    if pairs is None:
        return all_pairs(M)
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if p.size and (p.min() < 0 or p.max() >= M or np.any(p[:, 0] == p[:, 1])):
        raise ValueError(f"pairs must be distinct telescope indices in 0..{M - 1}")
    return p


def baselines(positions: np.ndarray, pairs: np.ndarray | None = None) -> np.ndarray:
    """float64 (P, 2) baseline vectors ``r_j - r_k`` (same units as ``positions`` (M, 2))."""
    pos = np.asarray(positions, dtype=np.float64)
    p = _pairs(pos.shape[0], pairs)
    return pos[p[:, 0]] - pos[p[:, 1]]


def uv_coordinates(positions: np.ndarray, wavelength: float, pairs: np.ndarray | None = None) -> np.ndarray:
    """float64 (P, 2) baselines in wavelengths for positions in metres."""
    return baselines(positions, pairs) / float(wavelength)


def visibility_observables(pairs: np.ndarray, M: int | None = None) -> list[str]:
    """Sparse Pauli strings a generic shadow estimator needs for visibilities.

    Order: for each pair (j, k): ``"X{j} X{k}"``, ``"Y{j} Y{k}"``, ``"Y{j} X{k}"``,
    ``"X{j} Y{k}"``; then ``"Z{j}"`` for every telescope 0..M-1 (M defaults to
    ``max(pairs) + 1``).  :func:`visibilities_from_paulis` reads them back.
    """
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    M = int(p.max()) + 1 if M is None else int(M)
    out = []
    for j, k in p:
        out += [f"X{j} X{k}", f"Y{j} Y{k}", f"Y{j} X{k}", f"X{j} Y{k}"]
    out += [f"Z{j}" for j in range(M)]
    return out


def squared_visibility_observables(pairs: np.ndarray) -> list[str]:
    """For each pair (j, k): ``XX``, ``XY``, ``YX``, ``YY`` on (j, k) (sparse strings),
    whose squared expectations (a Bell estimator's output) sum to 8 |rho_jk|^2."""
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = []
    for j, k in p:
        out += [f"X{j} X{k}", f"X{j} Y{k}", f"Y{j} X{k}", f"Y{j} Y{k}"]
    return out


def _norm_factor(M: int, pairs: np.ndarray, apertures: np.ndarray | None) -> np.ndarray:
    """(P,) factor c_jk with gamma_jk = c_jk rho_jk under known apertures."""
    a = np.ones(M) if apertures is None else np.asarray(apertures, dtype=np.float64)
    if a.shape != (M,) or np.any(a <= 0):
        raise ValueError("apertures must be M positive numbers")
    return a.sum() / np.sqrt(a[pairs[:, 0]] * a[pairs[:, 1]])


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VisibilityEstimate:
    """Complex visibilities with their (Re, Im) covariance.

    ``pairs`` int64 (P, 2); ``values`` complex128 (P,); ``cov`` float64 (P, 2, 2);
    ``count`` records behind the estimate; ``full_cov`` (2P, 2P) the covariance of
    ``[Re V_1..Re V_P, Im V_1..Im V_P]`` across pairs (pairs that share a telescope
    are correlated because they come from the same snapshots), or ``None``.  Amplitudes ``|V|`` from a noisy complex
    mean are biased up by ~sigma^2/(2|V|) at low signal-to-noise;
    :attr:`squared_amplitude` subtracts the noise power.
    """

    pairs: np.ndarray
    values: np.ndarray
    cov: np.ndarray
    count: int
    full_cov: np.ndarray | None = None

    @property
    def stderr_re(self) -> np.ndarray:
        return np.sqrt(self.cov[:, 0, 0])

    @property
    def stderr_im(self) -> np.ndarray:
        return np.sqrt(self.cov[:, 1, 1])

    @property
    def stderr(self) -> np.ndarray:
        """(P, 2) one-sigma errors of (Re, Im)."""
        return np.stack([self.stderr_re, self.stderr_im], axis=1)

    @property
    def amplitude(self) -> np.ndarray:
        return np.abs(self.values)

    @property
    def amplitude_err(self) -> np.ndarray:
        """Delta-method error of |V| (the radial projection of the covariance)."""
        re, im = self.values.real, self.values.imag
        a2 = np.maximum(re**2 + im**2, 1e-300)
        var = (re**2 * self.cov[:, 0, 0] + im**2 * self.cov[:, 1, 1] + 2 * re * im * self.cov[:, 0, 1]) / a2
        # at |V| ~ 0 the radial error is ill-defined; use the mean of the two variances
        iso = 0.5 * (self.cov[:, 0, 0] + self.cov[:, 1, 1])
        return np.sqrt(np.where(a2 > 1e-24, var, iso))

    @property
    def phase(self) -> np.ndarray:
        """arg V in radians (-pi, pi]."""
        return np.angle(self.values)

    @property
    def phase_err(self) -> np.ndarray:
        """Delta-method error of arg V (radians; large when |V| ~ its error)."""
        re, im = self.values.real, self.values.imag
        a2 = np.maximum(re**2 + im**2, 1e-300)
        var = (im**2 * self.cov[:, 0, 0] + re**2 * self.cov[:, 1, 1] - 2 * re * im * self.cov[:, 0, 1]) / a2**2
        return np.minimum(np.sqrt(var), np.pi)

    @property
    def squared_amplitude(self) -> np.ndarray:
        """|V|^2 with the noise power subtracted (unbiased for Gaussian errors)."""
        return self.amplitude**2 - self.cov[:, 0, 0] - self.cov[:, 1, 1]

    def as_dict(self) -> dict:
        """JSON-friendly view."""
        return {
            "count": int(self.count),
            "pairs": self.pairs.tolist(),
            "re": self.values.real.tolist(),
            "im": self.values.imag.tolist(),
            "stderr_re": self.stderr_re.tolist(),
            "stderr_im": self.stderr_im.tolist(),
        }


@dataclass(frozen=True)
class SquaredVisibilityEstimate:
    """|V_jk|^2 estimates: ``pairs`` (P, 2), ``values`` (P,), ``stderr`` (P,), ``count``."""

    pairs: np.ndarray
    values: np.ndarray
    stderr: np.ndarray
    count: int

    @property
    def amplitude(self) -> np.ndarray:
        """sqrt of the clipped |V|^2 (biased near 0; use ``values`` for fits)."""
        return np.sqrt(np.clip(self.values, 0.0, None))

    @property
    def amplitude_err(self) -> np.ndarray:
        """Delta-method error of |V| = sqrt(|V|^2), regularised at |V|^2 ~ 0."""
        a = self.amplitude
        return self.stderr / (2.0 * np.maximum(a, np.sqrt(np.maximum(self.stderr, 1e-300))))

    def as_dict(self) -> dict:
        return {"count": int(self.count), "pairs": self.pairs.tolist(), "v2": self.values.tolist(), "stderr": self.stderr.tolist()}


# --------------------------------------------------------------------------------------
# Single-copy estimator
# --------------------------------------------------------------------------------------
class VisibilityEstimator:
    """Online complex visibilities from single-copy shadows of the memory qubits.

    Parameters
    ----------
    M:
        number of telescopes (= qubits of every batch, in telescope order).
    pairs:
        int (P, 2) pairs to report (default all ``j < k``).
    normalize:
        ``"diagonal"`` (default): ``V = rho_jk / sqrt(rho_jj rho_kk)`` with
        ``rho_jj = (1 - <Z_j>)/2`` estimated from the same snapshots; this is the
        definition of the normalised coherence and is robust to unequal
        throughput and to memory loss.  ``"equal"``: ``V = c_jk rho_jk`` with the
        known apertures (``c = M`` for equal apertures); lower variance, but
        trusts the aperture model.
    apertures:
        relative collecting areas for ``normalize="equal"``.

    Statistics (all int64, from matrix products per batch): ``S[a, b]`` (M, M)
    = sum over snapshots with qubit j in basis a and qubit k in basis b of
    ``s_j s_k`` (s = +-1), ``N[a, b]`` the number of such snapshots, for a, b in
    {X, Y}, plus ``S[Z, Z]``, the Z counts on the diagonal of ``N[Z, Z]`` and
    ``z1`` (the signed Z sums); so means and exact per-snapshot variances follow.  Covariances between a
    pair's terms and the Z of a third telescope (O(|rho_jk| rho_ll)) are neglected.
    """

    def __init__(self, M: int, pairs: np.ndarray | None = None, normalize: str = "diagonal", apertures: Any = None) -> None:
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
    def from_bytes(cls, data: bytes) -> "VisibilityEstimator":
        """Inverse of :meth:`to_bytes` (``ValueError`` on malformed data)."""
        z, meta = load_npz(data, "VisibilityEstimator")
        ap = z["apertures"]
        est = cls(meta["M"], z["pairs"], meta["normalize"], ap if ap.size else None)
        if z["S"].shape != est.S.shape or z["N"].shape != est.N.shape or z["z1"].shape != (est.M,):
            raise ValueError("checkpoint statistics do not match its configuration")
        est.S, est.N, est.z1, est.count = z["S"], z["N"], z["z1"], int(meta["count"])
        return est



def _visibility_covariance(
    pairs: np.ndarray, M: int, N: float, r: np.ndarray, R: np.ndarray, d: np.ndarray, raw_pp: np.ndarray,
    zraw: np.ndarray, normalize: str, factor: np.ndarray,
) -> np.ndarray:
    """(2P, 2P) covariance of ``[Re V..., Im V...]`` estimated from N snapshots.

    Inputs: ``r`` (P,) rho estimates of the pairs, ``R`` (M, M) rho_uv for every
    off-diagonal (u, v), ``d`` (M,) the diagonal, ``raw_pp`` (P, 2, 2) per-snapshot
    covariance of a pair's (Re, Im) terms, ``zraw`` (M, M) per-snapshot covariance
    of the Z terms.

    Per snapshot, with y = (Re rho_p..., Im rho_p...) built from shadow terms
    x_P = 9 s s [match]: two terms on pairs sharing one telescope s (others u, v)
    have E[x_P x_Q] = 3 [same letter on s] <P_u Q_v>, a weight-2 Pauli on (u, v)
    read off rho_uv; terms on disjoint pairs have E[x_P x_Q] = <weight-4 Pauli> = 0
    on single-excitation states; a pair term and Z_l with l outside the pair have
    E = <P> (Z_l = +1 wherever the pair term acts), with l inside 0.  Then the
    delta method for the normalisation.
    """
    P = len(pairs)
    mu = np.concatenate([r.real, r.imag])  # (2P,)
    E = np.zeros((2 * P, 2 * P))
    # coefficient of x_{l_a l_b} in (re, im); rows = letter on pairs[:, 0], cols on pairs[:, 1]
    Ck = np.array([[[0.25, 0.0], [0.0, 0.25]], [[0.0, -0.25], [0.25, 0.0]]])  # (kind, l_a, l_b)
    for s_ in range(M):
        i0 = np.flatnonzero(pairs[:, 0] == s_)
        i1 = np.flatnonzero(pairs[:, 1] == s_)
        idx = np.concatenate([i0, i1])
        if len(idx) < 2:
            continue
        other = np.concatenate([pairs[i0, 1], pairs[i1, 0]])
        # oriented coefficients Chat[p, kind, l_s, l_other]
        Chat = np.concatenate(
            [np.broadcast_to(Ck, (len(i0), 2, 2, 2)), np.broadcast_to(Ck.transpose(0, 2, 1), (len(i1), 2, 2, 2))]
        )
        Ruv = R[other[:, None], other[None, :]]  # (n, n) rho_{u v}
        W = np.empty(Ruv.shape + (2, 2))
        W[..., 0, 0] = W[..., 1, 1] = 2.0 * Ruv.real  # <X_u X_v> = <Y_u Y_v>
        W[..., 1, 0] = 2.0 * Ruv.imag  # <Y_u X_v>
        W[..., 0, 1] = -2.0 * Ruv.imag  # <X_u Y_v>
        Eb = 3.0 * np.einsum("pasu,pquv,qbsv->apbq", Chat, W, Chat)  # (2, n, 2, n)
        rows = (np.arange(2)[:, None] * P + idx[None, :]).ravel()
        E[np.ix_(rows, rows)] = Eb.reshape(2 * len(idx), 2 * len(idx))
    Cyy = E - np.outer(mu, mu)
    # same-pair blocks (this also overwrites the u = v entries filled above)
    ar = np.arange(P)
    Cyy[ar, ar] = raw_pp[:, 0, 0]
    Cyy[P + ar, P + ar] = raw_pp[:, 1, 1]
    Cyy[ar, P + ar] = Cyy[P + ar, ar] = raw_pp[:, 0, 1]
    z = 1.0 - 2.0 * d
    outside = np.ones((P, M))
    outside[ar, pairs[:, 0]] = 0.0
    outside[ar, pairs[:, 1]] = 0.0
    outside2 = np.concatenate([outside, outside])  # (2P, M)
    Cyz = mu[:, None] * outside2 - np.outer(mu, z)
    corr = N / (N - 1.0)
    Cyy = Cyy * corr / N
    if normalize == "equal":
        f2 = np.concatenate([factor, factor])
        return Cyy * np.outer(f2, f2)
    # theta = (y, d) with d = (1 - z)/2
    Cyd = -Cyz / 2.0 * corr / N
    Cdd = zraw / 4.0 * corr / N
    j, k = pairs[:, 0], pairs[:, 1]
    dj, dk = np.maximum(d[j], 1e-12), np.maximum(d[k], 1e-12)
    g = 1.0 / np.sqrt(dj * dk)
    g2 = np.concatenate([g, g])
    V = np.concatenate([r.real * g, r.imag * g])
    K = np.zeros((2 * P, M))  # dV / dd
    rows = np.arange(2 * P)
    K[rows, np.concatenate([j, j])] += -V / (2.0 * np.concatenate([dj, dj]))
    K[rows, np.concatenate([k, k])] += -V / (2.0 * np.concatenate([dk, dk]))
    GCyd = g2[:, None] * Cyd
    full = np.outer(g2, g2) * Cyy + GCyd @ K.T + K @ GCyd.T + K @ Cdd @ K.T
    return 0.5 * (full + full.T)

# --------------------------------------------------------------------------------------
# Two-copy estimator
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# From generic Pauli estimates (e.g. the daemon's ShadowEstimator / BellEstimator)
# --------------------------------------------------------------------------------------
def visibilities_from_paulis(
    pairs: np.ndarray, M: int, values: Sequence[float], stderr: Sequence[float] | None = None, count: int = 0,
    normalize: str = "diagonal", apertures: Any = None,
) -> VisibilityEstimate:
    """Complex visibilities from Pauli expectations in :func:`visibility_observables` order
    (the output of a generic :class:`~qsense.ShadowEstimator`, e.g. the daemon's).

    With ``count`` (the number of snapshots) the covariance, full across pairs
    when P <= :data:`FULL_COV_MAX_PAIRS`, is the plug-in version of the one
    :class:`VisibilityEstimator` computes: the same formulas with the
    per-snapshot moments replaced by their expectations (E[re^2] = 9/8, E[z^2] =
    3, <Z_j Z_k> = 1 - 2 rho_jj - 2 rho_kk) and rho_uv of pairs not listed taken
    as 0.  Without ``count`` the ``stderr`` of the terms are combined in
    quadrature (no cross-pair covariance).
    """
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    P = len(p)
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (4 * P + M,):
        raise ValueError(f"expected {4 * P + M} values in visibility_observables order; got {v.shape}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}")
    xx, yy, yx, xy = (v[0 : 4 * P : 4], v[1 : 4 * P : 4], v[2 : 4 * P : 4], v[3 : 4 * P : 4])
    r = (xx + yy) / 4.0 + 1j * (yx - xy) / 4.0
    z = v[4 * P :]
    d = np.maximum((1.0 - z) / 2.0, 1e-12)
    f = _norm_factor(M, p, apertures)
    j, k = p[:, 0], p[:, 1]
    g = f if normalize == "equal" else 1.0 / np.sqrt(d[j] * d[k])
    Vr = r * g
    if count and count > 1:
        R = np.zeros((M, M), np.complex128)
        R[j, k] = r
        R[k, j] = np.conj(r)
        raw = np.empty((P, 2, 2))
        raw[:, 0, 0] = 9.0 / 8.0 - r.real**2
        raw[:, 1, 1] = 9.0 / 8.0 - r.imag**2
        raw[:, 0, 1] = raw[:, 1, 0] = -r.real * r.imag
        zraw = (1.0 - 2.0 * d[:, None] - 2.0 * d[None, :]) - np.outer(z, z)
        np.fill_diagonal(zraw, 3.0 - z**2)
        if P <= FULL_COV_MAX_PAIRS:
            full = _visibility_covariance(p, M, float(count), r, R, d, raw, zraw, normalize, f)
            ar = np.arange(P)
            cov = np.empty((P, 2, 2))
            cov[:, 0, 0] = full[ar, ar]
            cov[:, 1, 1] = full[P + ar, P + ar]
            cov[:, 0, 1] = cov[:, 1, 0] = full[ar, P + ar]
            return VisibilityEstimate(p, Vr, cov, int(count), full)
        # large arrays: per-pair blocks only (delta method without the Z terms)
        cov = raw * (g**2)[:, None, None] / (count - 1.0)
        return VisibilityEstimate(p, Vr, cov, int(count))
    if stderr is None:
        raise ValueError("give count (preferred) or stderr")
    e = np.asarray(stderr, dtype=np.float64)
    exx, eyy, eyx, exy = (e[0 : 4 * P : 4], e[1 : 4 * P : 4], e[2 : 4 * P : 4], e[3 : 4 * P : 4])
    ez = e[4 * P :]
    var_re = (exx**2 + eyy**2) / 16.0
    var_im = (eyx**2 + exy**2) / 16.0
    # relative variance of sqrt(d_j d_k): (sigma_dj / 2 d_j)^2 + (sigma_dk / 2 d_k)^2 with sigma_d = sigma_z / 2
    var_d = 0.0 if normalize == "equal" else (ez[j] / (4.0 * d[j])) ** 2 + (ez[k] / (4.0 * d[k])) ** 2
    cov = np.zeros((P, 2, 2))
    cov[:, 0, 0] = var_re * g**2 + Vr.real**2 * var_d
    cov[:, 1, 1] = var_im * g**2 + Vr.imag**2 * var_d
    cov[:, 0, 1] = cov[:, 1, 0] = Vr.real * Vr.imag * var_d
    return VisibilityEstimate(p, Vr, cov, int(count))


def squared_visibilities_from_paulis(
    pairs: np.ndarray, M: int, values: Sequence[float], stderr: Sequence[float] | None = None, count: int = 0,
    apertures: Any = None,
) -> SquaredVisibilityEstimate:
    """|V|^2 from tr(P rho)^2 estimates in :func:`squared_visibility_observables` order
    (the output of a generic :class:`~qsense.BellEstimator`).

    The four terms of a pair are strongly correlated shot by shot (their sum is
    ``u_j u_k``, zero unless both sites hold a Psi), so adding their errors in
    quadrature overstates the error about twofold.  With ``count`` (shots) the
    error is the plug-in one: per-shot variance ``16 P(Psi_j, Psi_k) - (8|rho_jk|^2)^2``
    with ``P(Psi_j, Psi_k) = (1 - z_j^2 - z_k^2 + z_jk^2)/4``, z from the aperture
    populations (``z_j = 1 - 2 a_j/sum(a)``, ``z_jk = z_j + z_k - 1``).
    """
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    v = np.asarray(values, dtype=np.float64).reshape(-1, 4)
    if v.shape[0] != len(p):
        raise ValueError("need four values per pair")
    c2 = _norm_factor(M, p, apertures) ** 2 / 8.0
    s = v.sum(axis=1)
    if count and count > 1:
        a = np.ones(M) if apertures is None else np.asarray(apertures, dtype=np.float64)
        zd = 1.0 - 2.0 * a / a.sum()
        zj, zk = zd[p[:, 0]], zd[p[:, 1]]
        both = (1.0 - zj**2 - zk**2 + (zj + zk - 1.0) ** 2) / 4.0
        var = np.maximum(16.0 * both - s**2, 0.0)
        return SquaredVisibilityEstimate(p, c2 * s, c2 * np.sqrt(var / (count - 1.0)), int(count))
    if stderr is None:
        raise ValueError("give count (preferred) or stderr")
    e = np.asarray(stderr, dtype=np.float64).reshape(-1, 4)
    return SquaredVisibilityEstimate(p, c2 * s, c2 * np.sqrt((e**2).sum(axis=1)), int(count))


# --------------------------------------------------------------------------------------
# Source models (uv in wavelengths, angles in radians)
# --------------------------------------------------------------------------------------
def point_visibility(uv: np.ndarray, offset: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    """exp(2 pi i uv . offset) for uv (..., 2)."""
    return np.exp(2j * np.pi * (np.asarray(uv, dtype=np.float64) @ np.asarray(offset, dtype=np.float64)))


def binary_visibility(uv: np.ndarray, separation: float, position_angle: float, flux_ratio: float) -> np.ndarray:
    """Primary at the phase centre, secondary at ``separation`` (rad) towards
    ``position_angle`` (rad, East of North), ``flux_ratio = I2/I1``:
    ``(1 + r e^{2 pi i uv.s}) / (1 + r)``."""
    s = separation * np.array([math.sin(position_angle), math.cos(position_angle)])
    return (1.0 + flux_ratio * point_visibility(uv, s)) / (1.0 + flux_ratio)


def disk_visibility(uv: np.ndarray, diameter: float) -> np.ndarray:
    """Uniform disk (centred): ``2 J1(x)/x``, ``x = pi |uv| diameter``."""
    from scipy.special import j1

    uv = np.asarray(uv, dtype=np.float64)
    x = np.pi * np.hypot(uv[..., 0], uv[..., 1]) * diameter
    safe = np.where(x == 0, 1.0, x)
    return np.where(x == 0, 1.0, 2.0 * j1(safe) / safe)


def gaussian_visibility(uv: np.ndarray, fwhm: float) -> np.ndarray:
    """Circular Gaussian (centred): ``exp(-(pi fwhm |uv|)^2 / (4 ln 2))``."""
    uv = np.asarray(uv, dtype=np.float64)
    return np.exp(-((np.pi * fwhm) ** 2) * (uv[..., 0] ** 2 + uv[..., 1] ** 2) / (4.0 * math.log(2.0)))


# --------------------------------------------------------------------------------------
# Fits
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitResult:
    """Best-fit parameters with one-sigma errors from the Jacobian.

    ``names``/``units`` per parameter, ``values``/``stderr`` (K,), ``cov`` (K, K),
    ``chi2`` at the optimum, ``dof`` = data - parameters.  Errors are absolute
    (the data's error bars are taken at face value); multiply by
    ``sqrt(chi2/dof)`` if they are doubted.
    """

    names: tuple[str, ...]
    units: tuple[str, ...]
    values: np.ndarray
    stderr: np.ndarray
    cov: np.ndarray
    chi2: float
    dof: int
    success: bool
    message: str = ""

    def __getitem__(self, name: str) -> tuple[float, float]:
        i = self.names.index(name)
        return float(self.values[i]), float(self.stderr[i])

    def as_dict(self) -> dict:
        return {
            "parameters": {n: {"value": float(v), "stderr": float(e), "unit": u} for n, u, v, e in zip(self.names, self.units, self.values, self.stderr)},
            "chi2": float(self.chi2),
            "dof": int(self.dof),
        }

    def __str__(self) -> str:
        body = ", ".join(f"{n} = {v:.4g} ± {e:.2g} {u}".rstrip() for n, u, v, e in zip(self.names, self.units, self.values, self.stderr))
        return f"{body} (chi2/dof = {self.chi2:.1f}/{self.dof})"


def _data_vector(data: np.ndarray, err: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Stack data and one-sigma errors into real vectors for least squares."""
    if kind == "complex":
        d = np.asarray(data, dtype=np.complex128)
        e = np.asarray(err, dtype=np.float64)
        if e.ndim == 1:
            e = np.stack([e, e], axis=1)
        return np.concatenate([d.real, d.imag]), np.concatenate([e[:, 0], e[:, 1]])
    return np.asarray(data, dtype=np.float64), np.asarray(err, dtype=np.float64)


def _model_vector(v: np.ndarray, kind: str) -> np.ndarray:
    if kind == "complex":
        return np.concatenate([v.real, v.imag], axis=-1)
    if kind == "squared":
        return np.abs(v) ** 2
    if kind == "amplitude":
        return np.abs(v)
    raise ValueError(f"kind must be 'complex', 'squared' or 'amplitude'; got {kind!r}")


def fit_model(
    model: Callable[[np.ndarray], np.ndarray],
    data: np.ndarray,
    err: np.ndarray,
    p0: Sequence[float],
    names: Sequence[str],
    units: Sequence[str] | None = None,
    bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    cov: np.ndarray | None = None,
) -> FitResult:
    """Weighted least squares of a real model vector ``model(params)`` to ``data``.

    Residuals are whitened by the one-sigma ``err`` or, when given, by the
    Cholesky factor of the full data covariance ``cov`` (correlated data);
    parameter covariance ``(J^T J)^-1`` of the whitened residuals.
    """
    from scipy.linalg import solve_triangular
    from scipy.optimize import least_squares

    data = np.asarray(data, dtype=np.float64)
    err = np.asarray(err, dtype=np.float64)
    if cov is not None:
        C = np.asarray(cov, dtype=np.float64)
        if C.shape != (data.size, data.size):
            raise ValueError(f"cov must be ({data.size}, {data.size}); got {C.shape}")
        L = np.linalg.cholesky(C + np.eye(len(C)) * 1e-15 * np.trace(C) / len(C))
        fun = lambda p: solve_triangular(L, model(p) - data, lower=True)  # noqa: E731
    else:
        if np.any(~(err > 0)):
            raise ValueError("all error bars must be positive")
        fun = lambda p: (model(p) - data) / err  # noqa: E731
    lo, hi = bounds if bounds is not None else (-np.inf, np.inf)
    res = least_squares(fun, np.asarray(p0, dtype=np.float64), bounds=(lo, hi), x_scale="jac", method="trf")
    J = res.jac
    try:
        cov = np.linalg.inv(J.T @ J)
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(J.T @ J)
    chi2 = float(np.sum(res.fun**2))
    k = len(p0)
    return FitResult(
        tuple(names), tuple(units or [""] * k), res.x, np.sqrt(np.clip(np.diag(cov), 0, None)), cov, chi2,
        int(len(data) - k), bool(res.success), str(res.message),
    )


def fit_binary(
    uv: np.ndarray, data: np.ndarray, err: np.ndarray, kind: str = "complex", p0: Sequence[float] | None = None,
    max_separation: float | None = None, cov: np.ndarray | None = None,
) -> FitResult:
    """Fit a binary (primary at the phase centre) to visibilities.

    ``kind``: ``"complex"`` (data complex V, err (P,) or (P, 2) for Re/Im),
    ``"squared"`` (data |V|^2) or ``"amplitude"`` (|V|).  Parameters:
    ``separation`` (mas), ``position_angle`` (deg East of North) and
    ``flux_ratio``.  Without ``p0`` a grid search over separation (log-spaced up to
    ``max_separation``, default 2 / min |uv|), position angle and flux ratio picks
    the start.  |V|^2 and |V| are unchanged by PA -> PA + 180 deg and r -> 1/r, so
    for those kinds PA is reported in [0, 180) and r <= 1.  ``cov``: full data
    covariance (for ``"complex"`` the (2P, 2P) ``VisibilityEstimate.full_cov``
    over ``[Re..., Im...]``), used for the final fit.
    """
    uv = np.asarray(uv, dtype=np.float64)
    y, e = _data_vector(data, err, kind)
    folded = kind != "complex"
    pa_hi = 180.0 if folded else 360.0
    r_hi = 1.0 if folded else 50.0

    def model(p: np.ndarray) -> np.ndarray:
        return _model_vector(binary_visibility(uv, p[0] * MAS, math.radians(p[1]), p[2]), kind)

    if p0 is None:
        q = np.hypot(uv[:, 0], uv[:, 1])
        smax = max_separation / MAS if max_separation else 2.0 / max(q.min(), 1e-30) / MAS
        smin = 0.05 / max(q.max(), 1e-30) / MAS
        seps = np.geomspace(smin, smax, 160)
        pas = np.linspace(0.0, pa_hi, 73)[:-1]
        rs = np.array([0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 1.0] + ([1.5, 2.5, 5.0] if not folded else []))
        S, A = np.meshgrid(seps, np.radians(pas), indexing="ij")
        svec = np.stack([S * np.sin(A), S * np.cos(A)], axis=-1).reshape(-1, 2) * MAS  # (G, 2)
        f = np.exp(2j * np.pi * (svec @ uv.T))  # (G, P)
        best = (np.inf, None)
        for r in rs:
            mv = _model_vector((1.0 + r * f) / (1.0 + r), kind)
            chi = np.sum(((mv - y) / e) ** 2, axis=1)
            i = int(np.argmin(chi))
            if chi[i] < best[0]:
                best = (chi[i], (S.ravel()[i], math.degrees(A.ravel()[i]), r))
        p0 = best[1]
    p0 = [float(p0[0]), float(p0[1]) % pa_hi, min(max(float(p0[2]), 1e-3), r_hi)]
    # let PA wander past its fold so the optimiser is not pinned at a bound
    fit = fit_model(model, y, e, p0, ("separation", "position_angle", "flux_ratio"), ("mas", "deg", ""),
                    bounds=([0.0, -pa_hi, 1e-4], [np.inf, 2 * pa_hi, r_hi]), cov=cov)
    vals = fit.values.copy()
    vals[1] %= pa_hi
    return FitResult(fit.names, fit.units, vals, fit.stderr, fit.cov, fit.chi2, fit.dof, fit.success, fit.message)


def _fit_symmetric(uv, data, err, kind, fn, name, p0, cov) -> FitResult:
    uv = np.asarray(uv, dtype=np.float64)
    y, e = _data_vector(data, err, kind)

    def model(p: np.ndarray) -> np.ndarray:
        return _model_vector(fn(uv, p[0] * MAS).astype(np.complex128), kind)

    if p0 is None:
        q = np.hypot(uv[:, 0], uv[:, 1])
        grid = np.geomspace(0.02 / q.max(), 3.0 / max(q.min(), 1e-30), 400) / MAS
        chi = [np.sum(((model([g]) - y) / e) ** 2) for g in grid]
        p0 = [grid[int(np.argmin(chi))]]
    return fit_model(model, y, e, [float(p0[0])], (name,), ("mas",), bounds=([0.0], [np.inf]), cov=cov)


def fit_disk(
    uv: np.ndarray, data: np.ndarray, err: np.ndarray, kind: str = "complex", p0: Sequence[float] | None = None,
    cov: np.ndarray | None = None,
) -> FitResult:
    """Fit a centred uniform disk: parameter ``diameter`` (mas); see :func:`fit_binary`
    for ``kind`` and ``cov``."""
    return _fit_symmetric(uv, data, err, kind, disk_visibility, "diameter", p0, cov)


def fit_gaussian(
    uv: np.ndarray, data: np.ndarray, err: np.ndarray, kind: str = "complex", p0: Sequence[float] | None = None,
    cov: np.ndarray | None = None,
) -> FitResult:
    """Fit a centred circular Gaussian: parameter ``fwhm`` (mas)."""
    return _fit_symmetric(uv, data, err, kind, gaussian_visibility, "fwhm", p0, cov)
