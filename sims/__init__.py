"""Simulated physics for qsense: exact measurement samplers, state sources, noise.

The repository folder ``sims/``, installed as ``qsense.sims``
(``from qsense import sims``).

* :mod:`qsense.sims.samplers` - exact, vectorised random-Pauli shadow and two-copy Bell
  samplers (:func:`sample_shadows`, :func:`sample_bell`, :func:`sample_bell_pair`).
* :mod:`qsense.sims.channels` - Kraus channels, :func:`apply_channel`, and the memory
  decoherence model :func:`decohere`.
* :mod:`qsense.sims.sources` - product, GHZ, W, Haar-random, random mixed and
  random-circuit states, and a time-varying :class:`DriftingSource`.
* :mod:`qsense.sims.memory_sim`, :mod:`qsense.sims.backend_sim` - the simulated
  quantum memory and measurement backend (plugins ``simulated`` of the
  ``qsense.memories`` and ``qsense.backends`` entry-point groups).
* :mod:`qsense.sims.telescope` - simulated telescope photon arrays, their exact
  single-excitation samplers and backend (plugin ``telescope``).
* :mod:`qsense.sims.exact` - exact values to check estimates against, with the
  estimators' own labels: :func:`exact_expval`, :func:`exact_square`,
  :func:`exact_purity`, :func:`exact_renyi2`.

All states are numpy arrays: a 2^n statevector or a 2^n x 2^n density matrix,
wire 0 the most significant bit (PennyLane's convention).

Layer: above streaming and acquisition, below drivers and apps.  May import
the core (data model, estimators, acquisition, streaming); never
:mod:`qsense.drivers` or :mod:`qsense.apps`, and the core never imports sims
(import-linter, ``docs/architecture.md``).
"""

from __future__ import annotations

from .channels import (
    amplitude_damping,
    apply_channel,
    decohere,
    dephasing,
    depolarizing,
    is_cptp,
    memory_channel,
    phase_damping,
    superoperator,
)
from .samplers import (
    BellSampler,
    ShadowSampler,
    as_state,
    bell_probabilities,
    pauli_vector,
    sample_bell,
    sample_bell_pair,
    sample_shadows,
    shadow_probabilities,
    to_density_matrix,
)
from .sources import (
    DriftingSource,
    ghz_state,
    haar_random_state,
    haar_random_unitary,
    product_state,
    purity,
    random_circuit_state,
    random_mixed_state,
    w_state,
)

from .exact import exact_expval, exact_purity, exact_renyi2, exact_square
from .designed import sample_in_bases

__all__ = [
    "exact_expval",
    "exact_square",
    "exact_purity",
    "exact_renyi2",
    "sample_shadows",
    "sample_in_bases",
    "sample_bell",
    "sample_bell_pair",
    "ShadowSampler",
    "BellSampler",
    "as_state",
    "to_density_matrix",
    "shadow_probabilities",
    "bell_probabilities",
    "pauli_vector",
    "depolarizing",
    "dephasing",
    "phase_damping",
    "amplitude_damping",
    "apply_channel",
    "superoperator",
    "is_cptp",
    "decohere",
    "memory_channel",
    "product_state",
    "ghz_state",
    "w_state",
    "haar_random_state",
    "haar_random_unitary",
    "random_mixed_state",
    "random_circuit_state",
    "purity",
    "DriftingSource",
]
