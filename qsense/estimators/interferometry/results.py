"""What the visibility estimators return: complex visibilities with their (Re, Im)
covariance (:class:`VisibilityEstimate`) and squared visibilities with their errors
(:class:`SquaredVisibilityEstimate`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["VisibilityEstimate", "SquaredVisibilityEstimate"]


@dataclass(frozen=True)
class VisibilityEstimate:
    """Complex visibilities with their (Re, Im) covariance.

    ``pairs`` int64 (P, 2); ``values`` complex128 (P,); ``cov`` float64 (P, 2, 2);
    ``count`` records behind the estimate; ``full_cov`` (2P, 2P) the covariance of
    ``[Re V_1..Re V_P, Im V_1..Im V_P]`` across pairs (pairs that share a telescope
    are correlated because they come from the same snapshots), or ``None``; ``norm_var`` (pooled
    normalisation with ``full_cov``): the part of ``full_cov`` due to the common normalisation is
    ``norm_var * outer(V, V)`` over the same layout -- fits evaluate it at the model
    (:func:`~qsense.estimators.interferometry.fits.fit_model`).  Amplitudes ``|V|`` from a noisy complex
    mean are biased up by ~sigma^2/(2|V|) at low signal-to-noise;
    :attr:`squared_amplitude` subtracts the noise power.
    """

    pairs: np.ndarray
    values: np.ndarray
    cov: np.ndarray
    count: int
    full_cov: np.ndarray | None = None
    norm_var: float | None = None

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
