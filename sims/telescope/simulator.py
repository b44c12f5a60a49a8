"""The simulated telescope array: photon arrivals, piston, dark counts and memory noise.

:class:`TelescopeSim` draws heralds on a simulation clock, turns each stored copy
into a pure single-excitation vector (the noise processes are mixtures of
diagonal phase unitaries and basis-state replacements), and measures copies
with the exact samplers of :mod:`qsense.sims.telescope.samplers`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from qsense.records import BellBatch, ShadowBatch

from .array import TelescopeArray
from .photons import Photons
from .samplers import bell_from_amplitudes, rotate_phases, shadows_from_amplitudes
from .sky import Source

__all__ = ["TelescopeSim"]

log = logging.getLogger(__name__)


class TelescopeSim:
    """A simulated telescope array observing one source, with noise.

    Parameters
    ----------
    array, source:
        geometry and sky.
    epsilon:
        photon probability per time bin (weak thermal light, << 1).
    bin_time:
        seconds per time bin; the photon rate is ``epsilon / bin_time``.
    dark_prob:
        dark-count probability per bin (all detectors together).
    t2:
        memory dephasing time (s); ``<X>`` of a memory qubit decays as exp(-tau/T2).
    t1:
        memory loss time (s): the excitation leaks to |vac>.
    piston_diffusion:
        rad^2 per second of each telescope's piston random walk (0 = no atmosphere).
    seed:
        seed of the simulation's random generator (arrivals, pistons, outcomes).

    Bins with two photons (probability O(epsilon^2)) are neglected.
    """

    def __init__(
        self,
        array: TelescopeArray,
        source: Source,
        *,
        epsilon: float = 1e-5,
        bin_time: float = 1e-9,
        dark_prob: float = 0.0,
        t2: float = math.inf,
        t1: float = math.inf,
        piston_diffusion: float = 0.0,
        seed: Any = None,
    ) -> None:
        if not (0 < epsilon < 1) or not (0 <= dark_prob < 1) or epsilon + dark_prob >= 1:
            raise ValueError("need 0 < epsilon < 1 and 0 <= dark_prob < 1 - epsilon")
        if not (bin_time > 0):
            raise ValueError("bin_time must be positive")
        if not (t2 > 0 and t1 > 0) or piston_diffusion < 0:
            raise ValueError("t1, t2 must be positive and piston_diffusion non-negative")
        self.array = array
        self.source = source
        self.epsilon = float(epsilon)
        self.bin_time = float(bin_time)
        self.dark_prob = float(dark_prob)
        self.t2 = float(t2)
        self.t1 = float(t1)
        self.piston_diffusion = float(piston_diffusion)
        self.rng = np.random.default_rng(seed)
        self.rho = array.photon_state(source)  # (M, M)
        w, v = np.linalg.eigh(self.rho)
        w = np.clip(w, 0.0, None)
        keep = w > 1e-14 * w.max()
        self._w = w[keep] / w[keep].sum()
        self._v = v[:, keep].T.copy()  # (K, M) unit vectors over |1_j>
        self._bins = 0  # simulation clock in bins
        self._piston = np.zeros(array.M)
        log.debug("telescope sim: M=%d, rank %d, photon rate %.3g/s", array.M, len(self._w), self.photon_rate)

    # -- rates and truth ------------------------------------------------------------
    @property
    def M(self) -> int:
        return self.array.M

    @property
    def photon_rate(self) -> float:
        """Real photons per second."""
        return self.epsilon / self.bin_time

    @property
    def herald_rate(self) -> float:
        """Heralds per second (photons and dark counts)."""
        return (self.epsilon + self.dark_prob) / self.bin_time

    @property
    def dark_fraction(self) -> float:
        """Fraction of heralds that are dark counts."""
        return self.dark_prob / (self.epsilon + self.dark_prob)

    @property
    def now(self) -> float:
        """Simulation clock (seconds)."""
        return self._bins * self.bin_time

    def true_visibilities(self, pairs: np.ndarray | None = None) -> np.ndarray:
        """complex128 (P,) source visibilities ``gamma(r_j - r_k)`` for the pairs."""
        return np.asarray(self.source.visibility(self.array.uv(pairs)), dtype=np.complex128)

    def heralded_state(self) -> np.ndarray:
        """complex128 (M, M) average heralded block, dark counts included (no piston,
        no decoherence): ``(1 - f) rho + f I / M``."""
        f = self.dark_fraction
        return (1 - f) * self.rho + f * np.eye(self.M) / self.M

    # -- photon arrivals -------------------------------------------------------------
    def photons(self, count: int | None = None, duration: float | None = None) -> Photons:
        """The next heralds on the simulation clock: exactly ``count`` of them, or all
        arriving within the next ``duration`` seconds.  Advances the clock and the
        piston random walk."""
        if (count is None) == (duration is None):
            raise ValueError("give exactly one of count or duration")
        p = self.epsilon + self.dark_prob
        if count is not None:
            gaps = self.rng.geometric(p, size=int(count)).astype(np.int64)
            bins = self._bins + np.cumsum(gaps)
            end = int(bins[-1]) if len(bins) else self._bins
        else:
            nbins = int(round(duration / self.bin_time))
            n = self.rng.binomial(nbins, p)
            # n photons in distinct bins, uniformly placed: a collision of two draws
            # has probability ~n^2/nbins (a two-photon bin, O(eps^2), dropped anyway)
            # np.unique's result by a sort and a neighbour test (NumPy 2's hash-based
            # unique costs ~10x more for these draws)
            drawn = np.sort(self.rng.integers(0, nbins, size=n))
            if drawn.size > 1:
                drawn = drawn[np.concatenate(([True], drawn[1:] != drawn[:-1]))]
            bins = self._bins + drawn + 1
            end = self._bins + nbins
        T = len(bins)
        t = bins * self.bin_time
        dark = self.rng.random(T) < self.dark_fraction
        site = np.where(dark, self.rng.integers(0, self.M, size=T), -1)
        # piston random walk sampled at the arrival times, continuing from the last state
        if self.piston_diffusion > 0 and T:
            dt = np.diff(np.concatenate([[self.now], t]))
            steps = self.rng.standard_normal((T, self.M)) * np.sqrt(self.piston_diffusion * dt)[:, None]
            piston = self._piston + np.cumsum(steps, axis=0)
            tail = self.rng.standard_normal(self.M) * math.sqrt(self.piston_diffusion * (end - bins[-1]) * self.bin_time)
            self._piston = piston[-1] + tail
        else:
            piston = np.zeros((T, self.M)) + self._piston
        self._bins = int(end)
        return Photons(t.astype(np.float64), dark, site.astype(np.int64), piston)

    # -- the stored copies -----------------------------------------------------------
    def amplitudes(self, photons: Photons, wait: Any = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
        """complex128 (T, M+1) pure vectors, one per copy, whose mixture over the
        simulation's randomness is the stored state after waiting ``wait`` seconds
        (scalar or (T,)) in memory."""
        rng = self.rng if rng is None else rng
        T = len(photons)
        M = self.M
        idx = rng.choice(len(self._w), size=T, p=self._w) if len(self._w) > 1 else np.zeros(T, np.int64)
        amps = np.zeros((T, M + 1), np.complex128)
        amps[:, 1:] = self._v[idx]
        phase = photons.piston.copy()
        tau = np.broadcast_to(np.asarray(wait, dtype=np.float64), (T,))
        if np.isfinite(self.t2) and np.any(tau > 0):
            pflip = 0.5 * (1.0 - np.exp(-tau / self.t2))
            phase = phase + np.pi * (rng.random((T, M)) < pflip[:, None])
        if phase.any():  # the trigonometry dominates a shot's cost: skip it without piston or flips
            rotate_phases(amps, phase)
        if np.any(photons.dark):
            d = np.flatnonzero(photons.dark)
            amps[d] = 0.0
            amps[d, 1 + photons.site[d]] = 1.0
        if np.isfinite(self.t1) and np.any(tau > 0):
            lost = rng.random(T) < (1.0 - np.exp(-tau / self.t1))
            amps[lost] = 0.0
            amps[lost, 0] = 1.0
        return amps

    def shadows(
        self, photons: Photons, wait: Any = 0.0, *, bases: np.ndarray | None = None, source: str = "telescope", seq: int = 0,
        t: np.ndarray | None = None,
    ) -> ShadowBatch:
        """Measure each copy's M memory qubits in random Pauli bases -> ShadowBatch
        (timestamps: arrival times unless ``t`` is given)."""
        if len(photons) == 0:
            return ShadowBatch(np.zeros((0, self.M), np.uint8), np.zeros((0, self.M), np.uint8), source=source, seq=seq)
        amps = self.amplitudes(photons, wait)
        b, o = shadows_from_amplitudes(amps, self.rng, bases)
        return ShadowBatch(b, o, source=source, seq=seq, t=photons.t if t is None else t)

    def bell(
        self, first: Photons, second: Photons, wait_first: Any = 0.0, wait_second: Any = 0.0, *, source: str = "telescope",
        seq: int = 0, t: np.ndarray | None = None,
    ) -> BellBatch:
        """Bell-measure pairs of stored photons site by site -> BellBatch (``wait`` =
        how long the first copy waited)."""
        if len(first) != len(second):
            raise ValueError("need as many first as second copies")
        if len(first) == 0:
            return BellBatch(np.zeros((0, self.M), np.uint8), source=source, seq=seq)
        a = self.amplitudes(first, wait_first)
        b = self.amplitudes(second, wait_second)
        codes = bell_from_amplitudes(a, b, self.rng)
        w = np.broadcast_to(np.asarray(wait_first, dtype=np.float64), (len(first),)).copy()
        return BellBatch(codes, source=source, seq=seq, t=second.t if t is None else t, wait=w)
