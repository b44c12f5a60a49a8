"""Source models: complex visibility of a point, a binary, a uniform disk and a
circular Gaussian (uv in wavelengths, angles in radians; :data:`MAS` converts
milliarcseconds)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["MAS", "point_visibility", "binary_visibility", "disk_visibility", "gaussian_visibility"]

#: One milliarcsecond in radians.
MAS = math.pi / (180.0 * 3600.0 * 1000.0)


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
