"""Telescope arrays that store collected starlight in quantum memories.

Physics (derived in ``docs/telescope.md``; docs/physics.md §5):

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

Modules:

* :mod:`~qsense.sims.telescope.array` - :class:`TelescopeArray` (positions,
  apertures, baselines, coherence and heralded photon state) and the layouts
  :func:`golomb_array`, :func:`demo_array`.
* :mod:`~qsense.sims.telescope.stations` - real layouts by name (CHARA, VLTI;
  table ``stations.toml`` with its sources): :func:`named_array`, :class:`StationLayout`.
* :mod:`~qsense.sims.telescope.sky` - sky sources and their visibilities:
  :class:`Source`, :class:`PointSource`, :class:`BinaryStar`, :class:`UniformDisk`,
  :class:`GaussianSource`, :class:`ImageSource` (and :data:`MAS`, one
  milliarcsecond in radians).
* :mod:`~qsense.sims.telescope.excitation` - single-excitation states: mixture
  decomposition :func:`as_extended_state` and the dense 2^M embedding
  :func:`single_excitation_to_qubits`.
* :mod:`~qsense.sims.telescope.samplers` - the exact O(M) samplers
  :func:`shadows_from_amplitudes`, :func:`bell_from_amplitudes`,
  :func:`sample_single_excitation_shadows`, :func:`sample_single_excitation_bell`.
* :mod:`~qsense.sims.telescope.photons` - :class:`Photons`, a batch of heralds as
  collected (times, dark counts, piston).
* :mod:`~qsense.sims.telescope.simulator` - :class:`TelescopeSim`, the array
  observing one source with noise.
* :mod:`~qsense.sims.telescope.backend` - pipeline integration:
  :class:`TelescopeCoherence`, :class:`TelescopeBackend`, :func:`photons_of`.
"""

from __future__ import annotations

from .array import TelescopeArray, demo_array, golomb_array
from .backend import TelescopeBackend, TelescopeCoherence, photons_of
from .excitation import as_extended_state, single_excitation_to_qubits
from .photons import Photons
from .samplers import (
    bell_from_amplitudes,
    sample_single_excitation_bell,
    sample_single_excitation_shadows,
    shadows_from_amplitudes,
)
from .simulator import TelescopeSim
from .sky import MAS, BinaryStar, GaussianSource, ImageSource, PointSource, Source, UniformDisk
from .stations import StationLayout, UnknownArrayError, array_names, named_array

__all__ = [
    "MAS",
    "BinaryStar",
    "GaussianSource",
    "ImageSource",
    "Photons",
    "PointSource",
    "Source",
    "StationLayout",
    "TelescopeArray",
    "TelescopeBackend",
    "TelescopeCoherence",
    "TelescopeSim",
    "UniformDisk",
    "UnknownArrayError",
    "array_names",
    "as_extended_state",
    "bell_from_amplitudes",
    "demo_array",
    "golomb_array",
    "named_array",
    "photons_of",
    "sample_single_excitation_bell",
    "sample_single_excitation_shadows",
    "shadows_from_amplitudes",
    "single_excitation_to_qubits",
]
