"""Cross-pair covariance of complex visibilities estimated from single-copy shadows.

Pairs that share a telescope are correlated because they come from the same
snapshots; :func:`_visibility_covariance` gives the (2P, 2P) covariance of
``[Re V..., Im V...]``.  Both :class:`~.visibility.VisibilityEstimator` (exact
moments) and :func:`~.paulis.visibilities_from_paulis` (plug-in moments) use it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FULL_COV_MAX_PAIRS", "POOLED_MIN", "pooled_norm_var"]

#: floor of the pooled population D = sum_l rho_ll (physically (0, 1]: the heralded
#: photons still stored); only an estimate many sigma below its value reaches it
POOLED_MIN = 1e-3

#: VisibilityEstimator.estimate() computes the full cross-pair covariance up to
#: this many pairs by default (2P x 2P float64: 11 MB at 600 pairs).
FULL_COV_MAX_PAIRS = 600


def pooled_norm_var(d_sum: float, var_d_sum: float, N: float) -> float:
    """kappa of the pooled normalisation: ``full_cov = C0 + kappa V V^T`` (V the visibilities).

    ``V = c y / D`` with ``D = sum_l rho_ll`` estimated from the same snapshots: the
    normalisation's error is one factor common to every pair, so its part of the
    covariance is rank one along V -- ``var(D) / D^2`` less the y-D cross term
    ``2 (1 - D) / (N D)`` (cov(y_p, D) = y_p (1 - D) / N, see ``_pooled``).  Evaluated
    at the *estimated* V that term points along the estimate's own noise (at 64
    telescopes its eigenvalue dwarfs the per-pair noise, and a chi^2 at the truth
    came out 1,814 for 4,032 degrees of freedom); fits evaluate it at the model
    instead (:func:`~.fits.fit_model` ``norm_var``)."""
    D = max(float(d_sum), POOLED_MIN)
    corr = N / (N - 1.0) if N > 1 else 1.0
    return float(var_d_sum) / D**2 - 2.0 * (1.0 - float(d_sum)) * corr / (max(N, 1.0) * D)


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
    if normalize == "pooled":
        # V = c y / D with D = sum(d): dV/dy = c/D, dV/dd_l = -V/D for every l
        D = max(float(d.sum()), POOLED_MIN)
        f2 = np.concatenate([factor, factor]) / D
        Vp = mu * np.concatenate([factor, factor]) / D
        cyD = Cyd.sum(axis=1)  # cov(y, D)
        vD = float(Cdd.sum())
        full = np.outer(f2, f2) * Cyy - (np.outer(f2 * cyD, Vp) + np.outer(Vp, f2 * cyD)) / D + np.outer(Vp, Vp) * vD / D**2
        return 0.5 * (full + full.T)
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
