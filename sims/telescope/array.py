"""Telescope array geometry: positions, apertures, baselines and the heralded photon's state.

:class:`TelescopeArray` turns a sky source into the mutual coherence ``gamma_jk``
and the single-photon block ``rho_jk``; :func:`golomb_array` and
:func:`demo_array` make standard layouts (positions in metres, East/North).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .sky import Source

__all__ = ["TelescopeArray", "demo_array", "golomb_array"]


@dataclass(frozen=True)
class TelescopeArray:
    """Telescope positions and observing wavelength.

    Parameters
    ----------
    positions:
        float64 (M, 2), metres, columns (East, North).
    wavelength:
        metres.
    apertures:
        optional relative collecting areas (M,), default all equal.  The photon
        is found at telescope j with probability ``a_j / sum(a)``.
    """

    positions: np.ndarray
    wavelength: float
    apertures: np.ndarray | None = None

    def __post_init__(self) -> None:
        pos = np.asarray(self.positions, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] < 2:
            raise ValueError(f"positions must have shape (M, 2) with M >= 2; got {pos.shape}")
        if not (np.isfinite(self.wavelength) and self.wavelength > 0):
            raise ValueError(f"wavelength must be positive metres; got {self.wavelength!r}")
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "wavelength", float(self.wavelength))
        if self.apertures is None:
            ap = np.ones(pos.shape[0])
        else:
            ap = np.asarray(self.apertures, dtype=np.float64)
            if ap.shape != (pos.shape[0],) or np.any(ap <= 0) or not np.all(np.isfinite(ap)):
                raise ValueError("apertures must be M positive numbers")
        object.__setattr__(self, "apertures", ap)

    @property
    def M(self) -> int:
        """Number of telescopes."""
        return int(self.positions.shape[0])

    def pairs(self) -> np.ndarray:
        """int64 (P, 2) all pairs ``j < k`` in lexicographic order, P = M(M-1)/2."""
        j, k = np.triu_indices(self.M, 1)
        return np.stack([j, k], axis=1).astype(np.int64)

    def baselines(self, pairs: np.ndarray | None = None) -> np.ndarray:
        """float64 (P, 2) baseline vectors ``r_j - r_k`` in metres."""
        p = self.pairs() if pairs is None else np.asarray(pairs)
        return self.positions[p[:, 0]] - self.positions[p[:, 1]]

    def uv(self, pairs: np.ndarray | None = None) -> np.ndarray:
        """float64 (P, 2) baselines in wavelengths, ``(r_j - r_k) / lambda``."""
        return self.baselines(pairs) / self.wavelength

    def coherence(self, source: Source) -> np.ndarray:
        """complex128 (M, M) normalised mutual coherence ``gamma_jk`` (unit diagonal)."""
        d = (self.positions[:, None, :] - self.positions[None, :, :]) / self.wavelength
        g = np.asarray(source.visibility(d.reshape(-1, 2)), dtype=np.complex128).reshape(self.M, self.M)
        # enforce exact Hermiticity and unit diagonal against round-off in the models
        g = 0.5 * (g + g.conj().T)
        np.fill_diagonal(g, 1.0)
        return g

    def photon_state(self, source: Source) -> np.ndarray:
        """complex128 (M, M) heralded single-photon block ``rho_jk`` (trace 1)."""
        a = self.apertures
        s = np.sqrt(a)
        return self.coherence(source) * np.outer(s, s) / a.sum()


def golomb_array(marks: Sequence[float] = (0, 1, 4, 9, 11), spacing: float = 10.0, angle_deg: float = 0.0) -> np.ndarray:
    """Positions (M, 2) of a linear array on a Golomb ruler (all baselines distinct).

    ``angle_deg`` is the array's position angle (East of North).
    """
    m = np.asarray(marks, dtype=np.float64) * spacing
    a = math.radians(angle_deg)
    return np.stack([m * math.sin(a), m * math.cos(a)], axis=1)


def demo_array(M: int = 6, scale: float = 60.0, seed: int = 7) -> np.ndarray:
    """A fixed, non-redundant 2-D layout of M telescopes (M, 2) metres.

    The first six positions are a hand-picked layout with baselines from ~25 m to
    ~2.3 * ``scale``; more telescopes are drawn uniformly in a disk of radius
    ``1.5 * scale`` with a fixed seed.
    """
    base = np.array([[0.0, 0.0], [0.45, 0.20], [-0.35, 0.85], [1.10, 1.05], [-1.00, -0.55], [0.80, -0.95]])
    if M <= len(base):
        pos = base[:M]
    else:
        rng = np.random.default_rng(seed)
        extra = []
        while len(extra) < M - len(base):
            p = rng.uniform(-1.5, 1.5, size=2)
            if p @ p <= 1.5**2:
                extra.append(p)
        pos = np.vstack([base, np.asarray(extra)])
    return pos * scale
