"""Telescope pairs and baselines, and the aperture normalisation of a pair.

Pairs are int64 (P, 2) with ``j < k`` in lexicographic order (:func:`all_pairs`);
baselines are ``r_j - r_k`` and uv coordinates the same in wavelengths,
(East, North).  :func:`_norm_factor` is the per-pair factor ``c_jk`` with
``gamma_jk = c_jk rho_jk`` under known apertures, shared by every estimator here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["all_pairs", "baselines", "uv_coordinates", "NORMALIZATIONS"]

#: ``"pooled"`` (default): gamma_jk = c_jk rho_jk / D with D = sum_l rho_ll, the population of
#: all M telescopes together (stable however small each rho_ll is); ``"diagonal"``:
#: rho_jk / sqrt(rho_jj rho_kk) from each pair's own populations (unbiased for unequal
#: throughput, but unstable when N rho_jj is small); ``"equal"``: c_jk rho_jk (trusts D = 1)
NORMALIZATIONS = ("pooled", "diagonal", "equal")


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


def _norm_factor(M: int, pairs: np.ndarray, apertures: np.ndarray | None) -> np.ndarray:
    """(P,) factor c_jk with gamma_jk = c_jk rho_jk under known apertures."""
    a = np.ones(M) if apertures is None else np.asarray(apertures, dtype=np.float64)
    if a.shape != (M,) or np.any(a <= 0):
        raise ValueError("apertures must be M positive numbers")
    return a.sum() / np.sqrt(a[pairs[:, 0]] * a[pairs[:, 1]])
