"""Visibilities from generic Pauli estimates (e.g. the daemon's ShadowEstimator /
BellEstimator): the sparse Pauli strings to ask for, and the conversion of their
estimates back into visibilities.  The observable order is the contract between
the two halves, so both live here."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .covariance import FULL_COV_MAX_PAIRS, POOLED_MIN, _visibility_covariance, pooled_norm_var
from .geometry import NORMALIZATIONS, _norm_factor
from .results import SquaredVisibilityEstimate, VisibilityEstimate
from .visibility import _pooled

__all__ = [
    "visibility_observables",
    "squared_visibility_observables",
    "visibilities_from_paulis",
    "squared_visibilities_from_paulis",
]


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


def visibilities_from_paulis(
    pairs: np.ndarray, M: int, values: Sequence[float], stderr: Sequence[float] | None = None, count: int = 0,
    normalize: str = "pooled", apertures: Any = None,
) -> VisibilityEstimate:
    """Complex visibilities from Pauli expectations in :func:`visibility_observables` order
    (the output of a generic :class:`~qsense.ShadowEstimator`, e.g. the daemon's).

    With ``count`` (the number of snapshots) the covariance, full across pairs
    when P <= :data:`FULL_COV_MAX_PAIRS`, is the plug-in version of the one
    :class:`VisibilityEstimator` computes: the same formulas with the
    per-snapshot moments replaced by their expectations (E[re^2] = 9/8, E[z^2] =
    3, <Z_j Z_k> = 1 - 2 rho_jj - 2 rho_kk) and rho_uv of pairs not listed taken
    as 0.  Without ``count`` the ``stderr`` of the terms are combined in
    quadrature (no cross-pair covariance).  ``normalize``: see
    :class:`~.visibility.VisibilityEstimator` (default ``"pooled"``, stable for
    many telescopes with few photons each).
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
    f = _norm_factor(M, p, apertures)
    j, k = p[:, 0], p[:, 1]
    if normalize == "pooled":
        # d enters only through its sum, which may be formed from the unclipped terms
        d = (1.0 - z) / 2.0
        D = max(float(d.sum()), POOLED_MIN)
        g = f / D
    else:
        d = np.maximum((1.0 - z) / 2.0, 1e-12)
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
            kappa = None
            if normalize == "pooled":
                N = float(count)
                kappa = pooled_norm_var(float(d.sum()), float(zraw.sum()) / 4.0 / (N - 1.0), N)
            return VisibilityEstimate(p, Vr, cov, int(count), full, kappa)
        # large arrays: per-pair blocks only
        if normalize == "pooled":
            # the pooled population's own variance matters here (the pair-D covariance is
            # O(1 - D), see _pooled); zraw is (M, M), cheap even for 64 telescopes
            _, cov = _pooled(r, raw / (count - 1.0), d, zraw / 4.0 / (count - 1.0), f, M, float(count))
            return VisibilityEstimate(p, Vr, cov, int(count))
        # delta method without the Z terms
        cov = raw * (g**2)[:, None, None] / (count - 1.0)
        return VisibilityEstimate(p, Vr, cov, int(count))
    if stderr is None:
        raise ValueError("give count (preferred) or stderr")
    e = np.asarray(stderr, dtype=np.float64)
    exx, eyy, eyx, exy = (e[0 : 4 * P : 4], e[1 : 4 * P : 4], e[2 : 4 * P : 4], e[3 : 4 * P : 4])
    ez = e[4 * P :]
    var_re = (exx**2 + eyy**2) / 16.0
    var_im = (eyx**2 + exy**2) / 16.0
    # relative variance of sqrt(d_j d_k): (sigma_dj / 2 d_j)^2 + (sigma_dk / 2 d_k)^2 with sigma_d = sigma_z / 2;
    # pooled: of D = sum(d), (sum sigma_z^2 / 4) / D^2 (Z errors taken independent)
    if normalize == "equal":
        var_d = 0.0
    elif normalize == "pooled":
        var_d = float(np.sum(ez**2)) / 4.0 / D**2
    else:
        var_d = (ez[j] / (4.0 * d[j])) ** 2 + (ez[k] / (4.0 * d[k])) ** 2
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
