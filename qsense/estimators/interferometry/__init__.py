"""Interferometric visibilities from memory-qubit records, and source fits.

A heralded photon collected by M telescopes is a single excitation over M memory
qubits (qubit j = |1> when the photon is at telescope j) with state
``rho_jk = sqrt(a_j a_k) gamma_jk / sum(a)`` (apertures ``a``; ``gamma`` the
normalised mutual coherence, i.e. the complex visibility).  Derivation and sign
checks: ``docs/telescope.md``.  For such states (checked against the density
matrix in ``tests/test_interferometry.py``)::

    <X_j X_k> = <Y_j Y_k> = 2 Re rho_jk        <Y_j X_k> = -<X_j Y_k> = 2 Im rho_jk
    <Z_j> = 1 - 2 rho_jj

so ``Re rho_jk = (<XX> + <YY>)/4`` and ``Im rho_jk = (<YX> - <XY>)/4`` (letter
order = qubit j then qubit k).  Only weight-2 Paulis are needed because the
herald guarantees the state lies in the single-excitation subspace.

Single copies (:class:`VisibilityEstimator`) give the signed complex V_jk, by
default normalised by the pooled population ``sum_l rho_ll`` of all telescopes
(``normalize="pooled"``: stable with many telescopes and few photons each; the
per-pair ``sqrt(rho_jj rho_kk)`` of ``"diagonal"`` is not).  Two
copies Bell-measured site by site (:class:`SquaredVisibilityEstimator`) give
``sum_{P in XX, XY, YX, YY} tr(P rho)^2 = 8 |rho_jk|^2``: per shot and per site the
sum of the X and Y pair eigenvalues is ``u = +2`` (Psi+), ``-2`` (Psi-) or 0 (Phi+-),
and ``u_j u_k / 8`` estimates ``|rho_jk|^2``.

Both estimators keep sufficient statistics only (matrices of size M x M built
with one matrix product per batch), merge, and serialise.

Array layouts:

* pairs  int64 (P, 2), ``j < k``, lexicographic (``all_pairs(M)``)
* uv     float64 (P, 2) baselines ``(r_j - r_k)/lambda`` in wavelengths, (East, North)
* visibilities complex128 (P,); covariance float64 (P, 2, 2) of (Re, Im)

Modules:

* :mod:`.geometry`: telescope pairs, baselines, uv coordinates, and the aperture
  normalisation factor of a pair (``NORMALIZATIONS``)
* :mod:`.results`: :class:`VisibilityEstimate`, :class:`SquaredVisibilityEstimate`
* :mod:`.covariance`: the cross-pair covariance of complex visibilities
  (``FULL_COV_MAX_PAIRS``), shared by the single-copy estimator and the Pauli route
* :mod:`.visibility`: :class:`VisibilityEstimator` (single copies, shadows)
* :mod:`.squared`: :class:`SquaredVisibilityEstimator` (two copies, Bell)
* :mod:`.paulis`: the Pauli observables a generic estimator needs, and
  :func:`visibilities_from_paulis` / :func:`squared_visibilities_from_paulis`
* :mod:`.models`: source models (point, binary, disk, Gaussian) and :data:`MAS`
* :mod:`.fits`: :class:`FitResult`, :func:`fit_model` and the binary, disk and
  Gaussian fits
* :mod:`.jacobians`: the models' analytic derivatives and the binary grid search
* :mod:`.whitening`: the fits' whitening by a full covariance (one in-place
  Cholesky factorisation)

This package is core: it imports numpy/scipy only, never ``sims`` or ``drivers``.
"""

# NORMALIZATIONS and FULL_COV_MAX_PAIRS stay importable from here, and (as before) outside __all__
from .covariance import FULL_COV_MAX_PAIRS as FULL_COV_MAX_PAIRS
from .fits import FitResult, fit_binary, fit_disk, fit_gaussian, fit_model
from .geometry import NORMALIZATIONS as NORMALIZATIONS
from .geometry import all_pairs, baselines, uv_coordinates
from .models import MAS, binary_visibility, disk_visibility, gaussian_visibility, point_visibility
from .paulis import (
    squared_visibilities_from_paulis,
    squared_visibility_observables,
    visibilities_from_paulis,
    visibility_observables,
)
from .results import SquaredVisibilityEstimate, VisibilityEstimate
from .squared import SquaredVisibilityEstimator
from .visibility import VisibilityEstimator

__all__ = [
    "MAS",
    "all_pairs",
    "baselines",
    "uv_coordinates",
    "visibility_observables",
    "squared_visibility_observables",
    "VisibilityEstimate",
    "SquaredVisibilityEstimate",
    "VisibilityEstimator",
    "SquaredVisibilityEstimator",
    "visibilities_from_paulis",
    "squared_visibilities_from_paulis",
    "point_visibility",
    "binary_visibility",
    "disk_visibility",
    "gaussian_visibility",
    "FitResult",
    "fit_model",
    "fit_binary",
    "fit_disk",
    "fit_gaussian",
]
