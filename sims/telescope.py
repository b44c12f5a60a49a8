"""Telescope arrays that store collected starlight in quantum memories.

Physics (derived in ``docs/telescope.md``; PHYSICS.md section 5):

* M telescopes at positions ``r_j`` (metres, East/North) observe at wavelength
  ``lambda``.  Weak thermal light: in each time bin of length ``bin_time`` a photon
  arrives with probability ``epsilon << 1``; most bins are empty.  A detector
  dark count heralds a "photon" with probability ``dark_prob`` per bin.
* A heralded photon is one excitation shared by the telescopes and is stored as M
  memory qubits, qubit j = |1> when the photon is at telescope j.  In the basis
  ``{|vac>, |1_0>, ..., |1_{M-1}>}`` (index 0 = vacuum, index j+1 = |1_j>) its
  state is ``rho_jk = sqrt(a_j a_k) gamma_jk / sum(a)`` (apertures ``a``; equal
  apertures give ``gamma_jk / M``) with the van Cittert-Zernike coherence
  ``gamma_jk = gamma(r_j - r_k) = int I(s) exp(2 pi i (r_j - r_k) . s / lambda) ds / int I``.
* A dark count is an excitation at a uniformly random telescope (the block
  ``I / M``, no coherence).
* Atmospheric piston: every telescope adds a phase ``phi_j(t)`` performing an
  independent random walk (diffusion ``piston_diffusion`` rad^2/s), so the stored
  photon is ``D rho D^dagger`` with ``D = diag(1, e^{i phi_0}, ...)``.
* Memory decoherence while a photon waits ``tau``: pure dephasing of each memory
  qubit (``<X>`` decays as ``exp(-tau/T2)``) is an exact random Z flip with
  probability ``(1 - exp(-tau/T2))/2`` per qubit, so coherences decay as
  ``exp(-2 tau/T2)``; optional loss (``T1``) returns the excitation to |vac>
  with probability ``1 - exp(-tau/T1)``.

Every noise process above is a *mixture of diagonal phase unitaries and
replacements by basis states*, so each copy can be drawn as a pure vector in the
(M+1)-dimensional span, and measuring it costs O(M) (see
:func:`sample_single_excitation_shadows`), not O(2^M).

Array layouts used throughout:

* positions  float64 (M, 2)  metres, columns (East, North)
* offsets    float64 (N, 2)  radians on the sky, columns (East, North)
* uv         float64 (..., 2) baselines in wavelengths, ``(r_j - r_k) / lambda``
* amplitudes complex128 (T, M+1) per-shot pure vectors, column 0 = vacuum
* pairs      int64 (P, 2) telescope index pairs ``j < k`` in lexicographic order
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.special import j1

from qsense.records import BellBatch, ShadowBatch

__all__ = [
    "MAS",
    "TelescopeArray",
    "Source",
    "PointSource",
    "BinaryStar",
    "UniformDisk",
    "GaussianSource",
    "ImageSource",
    "Photons",
    "TelescopeSim",
    "sample_single_excitation_shadows",
    "sample_single_excitation_bell",
    "shadows_from_amplitudes",
    "bell_from_amplitudes",
    "single_excitation_to_qubits",
    "as_extended_state",
    "demo_array",
    "golomb_array",
    "TelescopeCoherence",
    "TelescopeBackend",
    "photons_of",
]

log = logging.getLogger(__name__)

#: One milliarcsecond in radians.
MAS = math.pi / (180.0 * 3600.0 * 1000.0)

_SQ2 = 1.0 / math.sqrt(2.0)


# --------------------------------------------------------------------------------------
# Array geometry
# --------------------------------------------------------------------------------------
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

    def coherence(self, source: "Source") -> np.ndarray:
        """complex128 (M, M) normalised mutual coherence ``gamma_jk`` (unit diagonal)."""
        d = (self.positions[:, None, :] - self.positions[None, :, :]) / self.wavelength
        g = np.asarray(source.visibility(d.reshape(-1, 2)), dtype=np.complex128).reshape(self.M, self.M)
        # enforce exact Hermiticity and unit diagonal against round-off in the models
        g = 0.5 * (g + g.conj().T)
        np.fill_diagonal(g, 1.0)
        return g

    def photon_state(self, source: "Source") -> np.ndarray:
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


# --------------------------------------------------------------------------------------
# Sources (van Cittert-Zernike); uv in wavelengths, offsets in radians (East, North)
# --------------------------------------------------------------------------------------
class Source:
    """A sky brightness distribution with a normalised visibility ``gamma(uv)``."""

    def visibility(self, uv: np.ndarray) -> np.ndarray:
        """complex128 (P,) ``int I(s) e^{2 pi i uv.s} ds / int I`` for uv (P, 2) in wavelengths."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Parameters for tables and fits (angles in mas, angles of position in degrees)."""
        return {}


def _fringe(uv: np.ndarray, offset: np.ndarray) -> np.ndarray:
    uv = np.asarray(uv, dtype=np.float64)
    return np.exp(2j * np.pi * (uv @ np.asarray(offset, dtype=np.float64)))


@dataclass(frozen=True)
class PointSource(Source):
    """A point source at ``offset`` (radians, East/North); on axis by default."""

    offset: tuple[float, float] = (0.0, 0.0)

    def visibility(self, uv: np.ndarray) -> np.ndarray:
        return _fringe(uv, self.offset)

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
        r = self.flux_ratio
        return (_fringe(uv, self.primary) + r * _fringe(uv, self.secondary)) / (1.0 + r)

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
        uv = np.asarray(uv, dtype=np.float64)
        x = np.pi * np.hypot(uv[..., 0], uv[..., 1]) * self.diameter
        safe = np.where(x == 0, 1.0, x)
        amp = np.where(x == 0, 1.0, 2.0 * j1(safe) / safe)
        return amp * _fringe(uv, self.center)

    def describe(self) -> dict:
        return {"type": "disk", "diameter_mas": self.diameter / MAS}


@dataclass(frozen=True)
class GaussianSource(Source):
    """A circular Gaussian of full width at half maximum ``fwhm`` (radians).

    gamma = exp(-(pi fwhm |uv|)^2 / (4 ln 2))."""

    fwhm: float
    center: tuple[float, float] = (0.0, 0.0)

    def visibility(self, uv: np.ndarray) -> np.ndarray:
        uv = np.asarray(uv, dtype=np.float64)
        q2 = uv[..., 0] ** 2 + uv[..., 1] ** 2
        return np.exp(-((np.pi * self.fwhm) ** 2) * q2 / (4.0 * math.log(2.0))) * _fringe(uv, self.center)

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
    def from_pixels(cls, image: np.ndarray, pixel_scale: float, center: tuple[float, float] = (0.0, 0.0)) -> "ImageSource":
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


# --------------------------------------------------------------------------------------
# Specialised single-excitation samplers
# --------------------------------------------------------------------------------------
def as_extended_state(state: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mixture decomposition of a state in span{|vac>, |1_0>, ..., |1_{M-1}>}.

    ``state`` may be a statevector (M+1,), a density matrix (M+1, M+1) in that
    basis (index 0 = vacuum).
    Returns ``(weights (K,), vectors (K, M+1))``: non-negative weights summing to 1
    and unit vectors with ``rho = sum_k w_k |v_k><v_k|`` (eigendecomposition).
    """
    s = np.asarray(state, dtype=np.complex128)
    if s.ndim == 1:
        nrm = np.linalg.norm(s)
        if nrm == 0:
            raise ValueError("zero statevector")
        return np.ones(1), (s / nrm)[None, :]
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"state must be a vector or a square matrix; got shape {s.shape}")
    if not np.allclose(s, s.conj().T, atol=1e-10):
        raise ValueError("density matrix is not Hermitian")
    if abs(np.trace(s).real) <= 0:
        raise ValueError("density matrix has zero trace")
    w, v = np.linalg.eigh(s)
    if w.min() < -1e-8 * max(1.0, w.max()):
        raise ValueError(f"density matrix is not positive semidefinite (eigenvalue {w.min():.3g})")
    w = np.clip(w, 0.0, None)
    keep = w > 1e-14 * w.max()
    w, v = w[keep], v[:, keep].T
    return w / w.sum(), v


def _draw_from_mixture(weights: np.ndarray, vectors: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
    """(shots, M+1) pure vectors drawn from the mixture."""
    if len(weights) == 1:
        return np.repeat(vectors, shots, axis=0)
    idx = rng.choice(len(weights), size=shots, p=weights)
    return vectors[idx]


def _parse_state(state: Any, heralded: bool) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(state, dtype=np.complex128)
    if heralded:
        if s.ndim == 1:
            return as_extended_state(np.concatenate([[0.0], s]))
        w, v = as_extended_state(s)
        return w, np.concatenate([np.zeros((v.shape[0], 1), np.complex128), v], axis=1)
    return as_extended_state(s)


#: shots processed together by the samplers' per-qubit loops
_SHOT_BLOCK = 8192
#: per basis code (X, Y, Z): coefficient of c*beta_q in the projected vacuum
#: amplitude for outcome 0, up to the common factor (b0 / a0 for X and Y)
_PHASE = np.array([1.0, -1j, 0.0], dtype=np.complex128)


def _shadow_block(amps: np.ndarray, bases: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Outcomes uint8 (T, M) for one block of shots (see :func:`shadows_from_amplitudes`)."""
    T, M1 = amps.shape
    M = M1 - 1
    beta = amps[:, 1:]
    p2 = beta.real**2 + beta.imag**2
    suffix = np.cumsum(p2[:, ::-1], axis=1)[:, ::-1] - p2  # sum over j > q
    alpha = amps[:, 0].copy()
    c = np.ones(T, dtype=np.complex128)
    out = np.empty((T, M), dtype=np.uint8)
    for q in range(M):
        bq = bases[:, q]
        z = bq == 2
        cb = c * beta[:, q]
        rest = suffix[:, q]
        # X / Y: e0,1 = (|0> +- w|1>)/sqrt2 with w = 1 or i, so (conjugated)
        # alpha_{0,1} = (alpha +- conj(w) c beta_q)/sqrt2 and c_{0,1} = c/sqrt2.
        # Z: alpha_0 = alpha, c_0 = c; alpha_1 = c beta_q, c_1 = 0.
        t = _PHASE[bq] * cb
        al0 = np.where(z, alpha, (alpha + t) * _SQ2)
        al1 = np.where(z, cb, (alpha - t) * _SQ2)
        cc = c.real**2 + c.imag**2
        c0sq = np.where(z, cc, 0.5 * cc)
        c1sq = np.where(z, 0.0, 0.5 * cc)
        p0 = al0.real**2 + al0.imag**2 + c0sq * rest
        p1 = al1.real**2 + al1.imag**2 + c1sq * rest
        s = u[:, q] * (p0 + p1) >= p0
        out[:, q] = s
        ps = np.where(s, p1, p0)
        # renormalise so the running state keeps unit norm (no underflow for large M)
        inv = 1.0 / np.sqrt(np.where(ps > 0, ps, 1.0))
        alpha = np.where(s, al1, al0) * inv
        c = c * np.where(z, np.where(s, 0.0, 1.0), _SQ2) * inv
    return out


def shadows_from_amplitudes(
    amps: np.ndarray, rng: np.random.Generator, bases: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact random-Pauli measurement of per-shot pure single-excitation vectors.

    ``amps`` complex (T, M+1), column 0 the vacuum amplitude, column j+1 that of
    |1_j> (need not be normalised).  ``bases`` uint8 (T, M) (default uniformly
    random).  Returns ``(bases, outcomes)``, both uint8 (T, M).

    Qubits are measured in order 0..M-1.  After measuring qubits < q with
    eigenvectors ``e`` the unnormalised state is ``alpha |vac> + c sum_{j>=q}
    beta_j |1_j>``: projecting qubit q onto ``e = a|0> + b|1>`` maps
    ``alpha -> a* alpha + b* c beta_q`` and ``c -> a* c``, and the outcome
    probability is ``|alpha'|^2 + |c'|^2 sum_{j>q} |beta_j|^2``.  Each step is O(1)
    per shot (vectorised over shots), so a shot costs O(M).
    """
    amps = np.asarray(amps, dtype=np.complex128)
    T, M1 = amps.shape
    M = M1 - 1
    nrm = np.sqrt(np.sum(np.abs(amps) ** 2, axis=1))
    if np.any(nrm == 0):
        raise ValueError("zero amplitude vector")
    amps = amps / nrm[:, None]
    if bases is None:
        bases = rng.integers(0, 3, size=(T, M), dtype=np.uint8)
    else:
        bases = np.asarray(bases, dtype=np.uint8)
        if bases.shape != (T, M) or (bases.size and bases.max() > 2):
            raise ValueError(f"bases must be (T, M) = ({T}, {M}) values in 0..2")
    u = rng.random((T, M))
    outcomes = np.empty((T, M), dtype=np.uint8)
    # blocks of shots small enough for the per-qubit working arrays to stay in cache
    for lo in range(0, T, _SHOT_BLOCK):
        hi = min(T, lo + _SHOT_BLOCK)
        outcomes[lo:hi] = _shadow_block(amps[lo:hi], bases[lo:hi], u[lo:hi])
    return bases, outcomes


def bell_from_amplitudes(amps_a: np.ndarray, amps_b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exact per-site Bell measurement of two independent single-excitation copies.

    ``amps_a``, ``amps_b`` complex (T, M+1) per-shot pure vectors (column 0 vacuum).
    Pair q is qubit q of copy A with qubit q of copy B, measured as CNOT(A->B),
    H(A), giving code ``2a + b`` (0 Phi+, 1 Psi+, 2 Phi-, 3 Psi-).  Returns uint8
    (T, M) codes.

    The joint state of the unmeasured qubits stays in span{|vac>, A~} (x)
    span{|vac>, B~} with ``A~ = sum_{j unmeasured} beta^A_j |1_j>``, so it is a
    2x2 coefficient matrix ``C`` per shot; a Bell projection on pair q updates it
    in O(1) (formulas in the loop; derivation in ``docs/telescope.md``), so a
    shot costs O(M).
    """
    A = np.asarray(amps_a, dtype=np.complex128)
    B = np.asarray(amps_b, dtype=np.complex128)
    if A.shape != B.shape:
        raise ValueError(f"copies must have the same shape; got {A.shape} and {B.shape}")
    T, M1 = A.shape
    M = M1 - 1
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    B = B / np.linalg.norm(B, axis=1, keepdims=True)
    u = rng.random((T, M))
    out = np.empty((T, M), dtype=np.uint8)
    for lo in range(0, T, _SHOT_BLOCK):
        hi = min(T, lo + _SHOT_BLOCK)
        out[lo:hi] = _bell_block(A[lo:hi], B[lo:hi], u[lo:hi])
    return out


def _bell_block(A: np.ndarray, B: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Bell codes uint8 (T, M) for one block of shots (see :func:`bell_from_amplitudes`)."""
    T, M1 = A.shape
    M = M1 - 1
    bA, bB = A[:, 1:], B[:, 1:]
    pA, pB = np.abs(bA) ** 2, np.abs(bB) ** 2
    sufA = np.cumsum(pA[:, ::-1], axis=1)[:, ::-1] - pA  # sum over j > q
    sufB = np.cumsum(pB[:, ::-1], axis=1)[:, ::-1] - pB
    # C[x, y] over x in {vac, A~}, y in {vac, B~}, kept as four (T,) arrays
    c00 = A[:, 0] * B[:, 0]
    c01 = A[:, 0].copy()
    c10 = B[:, 0].copy()
    c11 = np.ones(T, dtype=np.complex128)
    out = np.empty((T, M), dtype=np.uint8)
    for q in range(M):
        ba, bb = bA[:, q], bB[:, q]
        rA, rB = sufA[:, q], sufB[:, q]
        # Projections (times sqrt 2) onto the Bell states of pair q, from the
        # decomposition vac = |0>vac', A~ = |0>A~' + beta^A_q |1>vac' (same for B):
        #   Phi+-: C' = [[c00 +- ba bb c11, c01], [c10, c11]]
        #   Psi+-: C' = [[bb c01 +- ba c10, +- ba c11], [bb c11, 0]]
        bbc = ba * bb * c11
        phi_p, phi_m = c00 + bbc, c00 - bbc
        x01, x10 = bb * c01, ba * c10
        psi_p, psi_m = x01 + x10, x01 - x10
        a11, b11 = ba * c11, bb * c11
        common_phi = np.abs(c01) ** 2 * rB + np.abs(c10) ** 2 * rA + np.abs(c11) ** 2 * rA * rB
        common_psi = np.abs(a11) ** 2 * rB + np.abs(b11) ** 2 * rA
        p = np.stack([np.abs(phi_p) ** 2 + common_phi, np.abs(psi_p) ** 2 + common_psi,
                      np.abs(phi_m) ** 2 + common_phi, np.abs(psi_m) ** 2 + common_psi], axis=1)  # (T, 4) x 2
        cum = np.cumsum(p, axis=1)
        code = (u[:, q, None] * cum[:, -1:] >= cum[:, :-1]).sum(axis=1)
        out[:, q] = code
        ps = p[np.arange(T), code]
        inv = 1.0 / np.sqrt(np.where(ps > 0, ps, 1.0))
        is_phi = (code % 2) == 0
        sign = np.where(code >= 2, -1.0, 1.0)  # Phi- and Psi- carry the minus sign
        n00 = np.where(is_phi, np.where(code == 0, phi_p, phi_m), np.where(code == 1, psi_p, psi_m))
        n01 = np.where(is_phi, c01, sign * a11)
        n10 = np.where(is_phi, c10, b11)
        n11 = np.where(is_phi, c11, 0.0)
        c00, c01, c10, c11 = n00 * inv, n01 * inv, n10 * inv, n11 * inv
    return out


def sample_single_excitation_shadows(
    state: Any, shots: int, seed: Any = None, *, heralded: bool = False, bases: np.ndarray | None = None
) -> ShadowBatch:
    """Classical shadows (random Pauli basis per qubit) of a single-excitation state.

    ``state``: statevector (M+1,) or density matrix (M+1, M+1) in the basis
    ``{|vac>, |1_0>, ..., |1_{M-1}>}``; with ``heralded=True`` a vector (M,) or
    block (M, M) over ``|1_j>`` only.  Same output as ``sims.sample_shadows`` on the
    2^M embedding (qubit j = |1> iff the photon is at telescope j), in O(M) per
    shot after an O(M^3) eigendecomposition.
    """
    rng = np.random.default_rng(seed)
    w, v = _parse_state(state, heralded)
    amps = _draw_from_mixture(w, v, int(shots), rng)
    b, o = shadows_from_amplitudes(amps, rng, bases)
    return ShadowBatch(b, o, source="telescope-sim")


def sample_single_excitation_bell(state: Any, shots: int, seed: Any = None, *, heralded: bool = False) -> BellBatch:
    """Two-copy Bell measurements (pair j = qubit j of copy A with qubit j of copy B)
    of two independent copies of a single-excitation state (see
    :func:`sample_single_excitation_shadows` for ``state``)."""
    rng = np.random.default_rng(seed)
    w, v = _parse_state(state, heralded)
    a = _draw_from_mixture(w, v, int(shots), rng)
    b = _draw_from_mixture(w, v, int(shots), rng)
    return BellBatch(bell_from_amplitudes(a, b, rng), source="telescope-sim")


def single_excitation_to_qubits(state: Any, heralded: bool = False) -> np.ndarray:
    """Embed a single-excitation state into the 2^M qubit space.

    Wire 0 is the most significant bit (PennyLane order), so ``|1_j>`` is index
    ``2^(M-1-j)`` and the vacuum index 0.  Returns a statevector (2^M,) for a
    vector input, else a density matrix (2^M, 2^M).  For tests at small M.
    """
    s = np.asarray(state, dtype=np.complex128)
    if heralded:
        if s.ndim == 1:
            s = np.concatenate([[0.0], s])
        else:
            z = np.zeros((s.shape[0] + 1, s.shape[0] + 1), np.complex128)
            z[1:, 1:] = s
            s = z
    M = s.shape[0] - 1
    if M > 14:
        raise ValueError("embedding more than 14 qubits densely is not sensible")
    idx = np.array([0] + [1 << (M - 1 - j) for j in range(M)])
    if s.ndim == 1:
        out = np.zeros(2**M, np.complex128)
        out[idx] = s
        return out
    out = np.zeros((2**M, 2**M), np.complex128)
    out[np.ix_(idx, idx)] = s
    return out


# --------------------------------------------------------------------------------------
# Photon stream and noise
# --------------------------------------------------------------------------------------
@dataclass
class Photons:
    """A batch of T heralded copies as collected (before storage).

    ``t``       float64 (T,)   arrival time, seconds (simulation clock)
    ``dark``    bool (T,)      herald came from a detector dark count
    ``site``    int64 (T,)     telescope of a dark count (-1 for real photons)
    ``piston``  float64 (T, M) atmospheric piston phase of each telescope at arrival
    """

    t: np.ndarray
    dark: np.ndarray
    site: np.ndarray
    piston: np.ndarray

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def __getitem__(self, idx: Any) -> "Photons":
        if isinstance(idx, (int, np.integer)):
            idx = slice(int(idx), int(idx) + 1 if int(idx) != -1 else None)
        return Photons(self.t[idx], self.dark[idx], self.site[idx], self.piston[idx])

    @staticmethod
    def concatenate(items: Sequence["Photons"]) -> "Photons":
        """Join batches in order."""
        items = list(items)
        if not items:
            raise ValueError("nothing to concatenate")
        return Photons(
            np.concatenate([p.t for p in items]),
            np.concatenate([p.dark for p in items]),
            np.concatenate([p.site for p in items]),
            np.concatenate([p.piston for p in items]),
        )


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
            bins = self._bins + np.unique(self.rng.integers(0, nbins, size=n)) + 1
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
        amps[:, 1:] *= np.exp(1j * phase)
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


# --------------------------------------------------------------------------------------
# Pipeline integration: coherence model and measurement backend for telescope copies
# --------------------------------------------------------------------------------------
class TelescopeCoherence:
    """The memory coherence model of a :class:`TelescopeSim` for ``qsense.acquisition.memory``.

    ``t2`` is what the scheduler plans with.  The decoherence itself is applied
    exactly by :class:`TelescopeBackend` from each copy's ``wait`` (per-qubit
    dephasing, which keeps the photon in the single-excitation subspace), so
    ``apply`` returns the copy's state object unchanged and ``survival`` is
    ``None`` (not a depolarizing model).
    """

    def __init__(self, t2: float) -> None:
        self.t2 = float(t2)

    def apply(self, state: Any, wait: float) -> Any:
        return state

    def survival(self, wait: Any) -> None:
        return None

    def __repr__(self) -> str:
        return f"TelescopeCoherence(t2={self.t2!r})"


def photons_of(copies: Sequence[Any]) -> Photons:
    """Gather the :class:`Photons` rows behind telescope copies (``Copy.meta`` holds
    ``{"photons": Photons chunk, "index": row}``, as :mod:`qsense.drivers.telescope` makes them)."""
    chunks: dict[int, tuple[Photons, list[int], list[int]]] = {}
    for pos, c in enumerate(copies):
        meta = c.meta
        try:
            ph, i = meta["photons"], int(meta["index"])
        except (KeyError, TypeError):
            raise ValueError(f"copy {c.source!r}#{c.seq} carries no telescope photon (meta lacks 'photons'/'index')") from None
        entry = chunks.setdefault(id(ph), (ph, [], []))
        entry[1].append(i)
        entry[2].append(pos)
    T = len(copies)
    M = next(iter(chunks.values()))[0].piston.shape[1] if chunks else 0
    out = Photons(np.empty(T), np.empty(T, bool), np.empty(T, np.int64), np.empty((T, M)))
    for ph, rows, pos in chunks.values():
        r, p = np.asarray(rows), np.asarray(pos)
        out.t[p], out.dark[p], out.site[p], out.piston[p] = ph.t[r], ph.dark[r], ph.site[r], ph.piston[r]
    return out


class TelescopeBackend:
    """A ``qsense`` measurement backend for copies from a :class:`TelescopeSim`.

    Measures plans (``await measure(plan)``, see ``qsense.acquisition.backends``) with the
    O(M) single-excitation samplers: shadow items measure one stored photon in
    random Pauli bases, Bell items Bell-measure the two photons site by site.
    Each copy's memory dephasing is drawn from its own ``wait``; Bell rows carry
    ``wait`` = the total time both photons spent in memory (the backends'
    convention, which ``BellEstimator(t2=...)`` undoes exactly for the X/Y
    Paulis of visibilities).  Rows come back in item order.
    """

    name = "telescope"

    def __init__(self, sim: TelescopeSim, *, offload: bool = False) -> None:
        self.sim = sim
        self.offload = offload

    async def measure(self, plan: Any) -> list[ShadowBatch | BellBatch]:
        if self.offload:
            import asyncio

            return await asyncio.to_thread(self.measure_sync, plan)
        return self.measure_sync(plan)

    def measure_sync(self, plan: Any) -> list[ShadowBatch | BellBatch]:
        """The synchronous core of :meth:`measure`."""
        items = plan.items
        if not items:
            return []
        for it in items:
            for sc in it:
                if sc.copy.state is not self.sim:
                    raise ValueError(f"copy {sc.copy.source!r}#{sc.copy.seq} is not from this telescope simulation")
        wires = tuple(items[0][0].copy.wires) if items[0][0].copy.wires is not None else tuple(range(self.sim.M))
        released = np.array([it[-1].released for it in items], dtype=np.float64)
        if plan.family == "shadow":
            ph = photons_of([it[0].copy for it in items])
            wait = np.array([it[0].wait for it in items], dtype=np.float64)
            b = self.sim.shadows(ph, wait, t=released)
            return [b.with_meta(wires=wires)]
        first = photons_of([it[0].copy for it in items])
        second = photons_of([it[1].copy for it in items])
        wa = np.array([it[0].wait for it in items], dtype=np.float64)
        wb = np.array([it[1].wait for it in items], dtype=np.float64)
        b = self.sim.bell(first, second, wa, wb, t=released)
        return [b.with_meta(wires=wires, wait=wa + wb)]
