"""Sky sources and their normalised visibilities (van Cittert-Zernike).

uv in wavelengths, offsets in radians (East, North).  The centred profiles of
the point, disk and Gaussian are the estimators' model functions
(:mod:`qsense.estimators.interferometry`), so the simulated sky and the fits
share one formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qsense.estimators.interferometry import MAS, disk_visibility, gaussian_visibility, point_visibility

__all__ = ["MAS", "BinaryStar", "GaussianSource", "ImageSource", "PointSource", "Source", "UniformDisk"]


class Source:
    """A sky brightness distribution with a normalised visibility ``gamma(uv)``."""

    def visibility(self, uv: np.ndarray) -> np.ndarray:
        """complex128 (P,) ``int I(s) e^{2 pi i uv.s} ds / int I`` for uv (P, 2) in wavelengths."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Parameters for tables and fits (angles in mas, angles of position in degrees)."""
        return {}


@dataclass(frozen=True)
class PointSource(Source):
    """A point source at ``offset`` (radians, East/North); on axis by default."""

    offset: tuple[float, float] = (0.0, 0.0)

    def visibility(self, uv: np.ndarray) -> np.ndarray:
        return point_visibility(uv, self.offset)

    def describe(self) -> dict:
        return {"type": "point", "offset_E_mas": self.offset[0] / MAS, "offset_N_mas": self.offset[1] / MAS}


@dataclass(frozen=True)
class BinaryStar(Source):
    """Two point stars: the primary at ``primary`` (radians, default the phase
    centre) and the secondary at ``separation`` (radians) towards position angle
    ``position_angle`` (radians, East of North), with flux ratio
    ``flux_ratio = I2 / I1``."""

    separation: float
    position_angle: float = 0.0
    flux_ratio: float = 1.0
    primary: tuple[float, float] = (0.0, 0.0)

    @property
    def secondary(self) -> np.ndarray:
        """Offset of the secondary (2,) radians."""
        pa = self.position_angle
        return np.asarray(self.primary) + self.separation * np.array([math.sin(pa), math.cos(pa)])

    def visibility(self, uv: np.ndarray) -> np.ndarray:
        # not binary_visibility: that model keeps the primary at the phase centre
        r = self.flux_ratio
        return (point_visibility(uv, self.primary) + r * point_visibility(uv, self.secondary)) / (1.0 + r)

    def describe(self) -> dict:
        return {
            "type": "binary",
            "separation_mas": self.separation / MAS,
            "position_angle_deg": math.degrees(self.position_angle) % 360.0,
            "flux_ratio": self.flux_ratio,
        }


@dataclass(frozen=True)
class UniformDisk(Source):
    """A uniformly bright disk of angular ``diameter`` (radians) centred at ``center``.

    gamma = e^{2 pi i uv.center} 2 J1(x)/x, x = pi |uv| diameter (first null at
    |B| = 1.2197 lambda / diameter)."""

    diameter: float
    center: tuple[float, float] = (0.0, 0.0)

    def visibility(self, uv: np.ndarray) -> np.ndarray:
        return disk_visibility(uv, self.diameter) * point_visibility(uv, self.center)

    def describe(self) -> dict:
        return {"type": "disk", "diameter_mas": self.diameter / MAS}


@dataclass(frozen=True)
class GaussianSource(Source):
    """A circular Gaussian of full width at half maximum ``fwhm`` (radians).

    gamma = exp(-(pi fwhm |uv|)^2 / (4 ln 2))."""

    fwhm: float
    center: tuple[float, float] = (0.0, 0.0)

    def visibility(self, uv: np.ndarray) -> np.ndarray:
        return gaussian_visibility(uv, self.fwhm) * point_visibility(uv, self.center)

    def describe(self) -> dict:
        return {"type": "gaussian", "fwhm_mas": self.fwhm / MAS}


@dataclass(frozen=True)
class ImageSource(Source):
    """An arbitrary small image as a sum of point sources.

    ``offsets`` float64 (N, 2) radians (East, North); ``fluxes`` (N,) non-negative.
    The visibility is the direct (non-FFT) sum, exact for the discrete image.
    """

    offsets: np.ndarray
    fluxes: np.ndarray

    def __post_init__(self) -> None:
        off = np.asarray(self.offsets, dtype=np.float64).reshape(-1, 2)
        fl = np.asarray(self.fluxes, dtype=np.float64).reshape(-1)
        if off.shape[0] != fl.shape[0] or fl.size == 0:
            raise ValueError("offsets (N, 2) and fluxes (N,) must describe at least one pixel")
        if np.any(fl < 0) or fl.sum() <= 0:
            raise ValueError("fluxes must be non-negative with a positive total")
        object.__setattr__(self, "offsets", off)
        object.__setattr__(self, "fluxes", fl)

    @classmethod
    def from_pixels(cls, image: np.ndarray, pixel_scale: float, center: tuple[float, float] = (0.0, 0.0)) -> ImageSource:
        """From a 2-D brightness grid ``image[row, col]`` (row 0 = North edge, column 0 =
        East edge, as on the sky) with square pixels of ``pixel_scale`` radians,
        centred on ``center``."""
        img = np.asarray(image, dtype=np.float64)
        if img.ndim != 2:
            raise ValueError("image must be 2-D")
        ny, nx = img.shape
        # East increases to the left on the sky, North upwards
        east = (np.arange(nx)[::-1] - (nx - 1) / 2.0) * pixel_scale + center[0]
        north = (np.arange(ny)[::-1] - (ny - 1) / 2.0) * pixel_scale + center[1]
        E, N = np.meshgrid(east, north)
        keep = img > 0
        return cls(np.stack([E[keep], N[keep]], axis=1), img[keep])

    def visibility(self, uv: np.ndarray) -> np.ndarray:
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        out = np.zeros(uv.shape[0], dtype=np.complex128)
        w = self.fluxes / self.fluxes.sum()
        # chunk over uv so the (P, N) phase table stays small for large images
        for lo in range(0, uv.shape[0], 4096):
            ph = 2.0 * np.pi * (uv[lo : lo + 4096] @ self.offsets.T)
            out[lo : lo + 4096] = np.exp(1j * ph) @ w
        return out

    def describe(self) -> dict:
        return {"type": "image", "pixels": int(self.fluxes.size)}
