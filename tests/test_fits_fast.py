"""The fast full-covariance fits against a straightforward dense reference.

``fit_model`` factorises the covariance in place (one column-major copy, the
``norm_var * y y^T`` downdate and the jitter applied in that buffer, ``dpotrf``)
and appends the common scale's prior as a row instead of building an (n+1)^2
matrix; from 2,048 data on ("mixed") it factorises in float32 and finishes with
one exact Newton step (``C0^-1`` products refined in float64).  Both paths are
run here at M = 20 (the mixed one by lowering its threshold).  Here the optimum is checked without any of that machinery: the chi^2,
its gradient and its curvature are computed from the dense (n+1) x (n+1)
covariance with ``np.linalg.cholesky`` / ``np.linalg.solve`` and a
finite-difference Jacobian of the public models, at the fitted point and the
profiled scale.  The fit must be the reference's minimum (a Gauss-Newton step of
the reference moves it by < 1e-3 of its error bars on the float64 path, whose
optimiser tolerances stop it ~1e-4 sigma short, and by < 1e-6 on the mixed path,
which lands on the minimum), report the reference's chi^2 and the reference's marginal
errors, and leave the caller's covariance intact.  And ``fit_model`` run from the
same start as the same least squares whitened densely (``np.linalg.cholesky`` of
the (n+1)^2 matrix, ``np.linalg.solve``) gives the same numbers to 1e-7 sigma.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from qsense.estimators.interferometry import (
    MAS,
    VisibilityEstimator,
    binary_visibility,
    disk_visibility,
    fit_binary,
    fit_disk,
    fit_model,
)
from qsense.sims.telescope import BinaryStar, TelescopeArray, TelescopeSim, UniformDisk, demo_array

M = 20  # 190 baselines, a 380 x 380 covariance

#: how far (in sigma) each path may stop from the exact minimum
STEP_TOL = {"double": 1e-3, "mixed": 1e-6}


@pytest.fixture(params=["double", "mixed"])
def path(request, monkeypatch):
    """Run a test on the float64 path and on the float32 + exact Newton path."""
    from qsense.estimators.interferometry import fits

    monkeypatch.setattr(fits, "_MIXED_MIN_N", 10**9 if request.param == "double" else 0)
    return request.param


@functools.cache
def _estimate(source, seed: int):
    """(uv, VisibilityEstimate) of a seeded M = 20 observation, shared by the tests (never modified)."""
    sim = TelescopeSim(TelescopeArray(demo_array(M), 800e-9), source, seed=seed)
    est = VisibilityEstimator(M)
    est.update(sim.shadows(sim.photons(count=20_000)))
    e = est.estimate(full_cov=True)
    assert e.full_cov is not None and e.norm_var is not None and e.norm_var > 0
    return sim.array.uv(), e


def _stack(v: np.ndarray) -> np.ndarray:
    return np.concatenate([v.real, v.imag])


def _fd_jac(f, q: np.ndarray) -> np.ndarray:
    cols = []
    for i in range(len(q)):
        h = 1e-6 * max(1.0, abs(q[i]))
        a, b = q.copy(), q.copy()
        a[i] += h
        b[i] -= h
        cols.append((f(a) - f(b)) / (2 * h))
    return np.column_stack(cols)


def _dense_reference(model, y: np.ndarray, cov: np.ndarray, kappa: float | None, p: np.ndarray):
    """chi^2, Newton step and covariance of (p, s) at the fitted p and the best scale s, from the dense
    (n+1)^2 covariance diag(cov - kappa y y^T, 1) (or cov itself without kappa)."""
    from scipy.linalg import solve_triangular

    n = y.size
    if kappa is None:
        C, aug = cov.copy(), lambda q: model(q) - y
        q = p.copy()
    else:
        C = np.zeros((n + 1, n + 1))
        C[:n, :n] = cov - kappa * np.outer(y, y)
        C[n, n] = 1.0
        sd = math.sqrt(kappa)
        aug = lambda q: np.append(q[-1] * model(q[:-1]) - y, (q[-1] - 1.0) / sd)
    L = np.linalg.cholesky(C)
    if kappa is not None:
        # chi^2 is quadratic in s: profile it at the fitted p (W = C0^-1 through L)
        m = model(p)
        wm, wy = (solve_triangular(L[:n, :n], v, lower=True) for v in (m, y))
        s = (wm @ wy + 1.0 / kappa) / (wm @ wm + 1.0 / kappa)
        q = np.append(p, s)
    r = solve_triangular(L, aug(q), lower=True)
    G = solve_triangular(L, _fd_jac(aug, q), lower=True)
    H = G.T @ G
    step = np.linalg.solve(H, G.T @ r)
    return float(r @ r), step, np.linalg.inv(H)


@pytest.mark.parametrize("with_norm_var", [True, False])
def test_binary_fit_is_the_dense_reference_minimum(with_norm_var, path):
    uv, e = _estimate(BinaryStar(3.0 * MAS, math.radians(60.0), 0.5), seed=31)
    cov_before = e.full_cov.copy()
    kappa = e.norm_var if with_norm_var else None
    fit = fit_binary(uv, e.values, e.stderr, cov=e.full_cov, norm_var=kappa)
    assert np.array_equal(e.full_cov, cov_before), "the caller's covariance was modified"
    model = lambda p: _stack(binary_visibility(uv, p[0] * MAS, math.radians(p[1]), p[2]))
    chi2, step, pcov = _dense_reference(model, _stack(e.values), e.full_cov, kappa, fit.values.copy())
    sigma = np.sqrt(np.diag(pcov))
    assert np.all(np.abs(step) < STEP_TOL[path] * sigma), (step / sigma, str(fit))
    assert fit.chi2 == pytest.approx(chi2, rel=1e-9, abs=1e-9)
    assert np.allclose(fit.stderr, sigma[:3], rtol=1e-5), (fit.stderr, sigma)
    assert np.max(np.abs(fit.cov - pcov[:3, :3]) / np.outer(sigma[:3], sigma[:3])) < 1e-5  # in correlation units
    assert fit.dof == 2 * len(uv) - 3 and fit.success


@pytest.mark.parametrize("with_norm_var", [True, False])
def test_disk_fit_is_the_dense_reference_minimum(with_norm_var, path):
    uv, e = _estimate(UniformDisk(1.5 * MAS), seed=32)
    kappa = e.norm_var if with_norm_var else None
    fit = fit_disk(uv, e.values, e.stderr, cov=e.full_cov, norm_var=kappa)
    model = lambda p: _stack(disk_visibility(uv, p[0] * MAS).astype(np.complex128))
    chi2, step, pcov = _dense_reference(model, _stack(e.values), e.full_cov, kappa, fit.values.copy())
    sigma = np.sqrt(np.diag(pcov))
    assert np.all(np.abs(step) < STEP_TOL[path] * sigma), (step / sigma, str(fit))
    assert fit.chi2 == pytest.approx(chi2, rel=1e-9, abs=1e-9)
    assert fit.stderr[0] == pytest.approx(sigma[0], rel=1e-5)
    if with_norm_var:  # the regime the demo fits in: the diameter within its error of the truth
        assert abs(fit.values[0] - 1.5) < 3 * fit.stderr[0], str(fit)


def _dense_least_squares(model, jac, y, cov, kappa, p0, bounds):
    """The common-scale fit as it reads in the formulas: the (n+1)^2 covariance, its Cholesky factor,
    and least squares of the whitened [s m - y, (s - 1)/sd] with the same optimiser settings."""
    from scipy.optimize import least_squares

    n, k = y.size, len(p0)
    C = np.zeros((n + 1, n + 1))
    C[:n, :n] = cov - kappa * np.outer(y, y)
    C[n, n] = 1.0
    L = np.linalg.cholesky(C + np.eye(n + 1) * 1e-15 * np.trace(C) / (n + 1))
    sd = math.sqrt(kappa)
    fun = lambda q: np.linalg.solve(L, np.append(q[k] * model(q[:k]) - y, (q[k] - 1.0) / sd))
    jf = lambda q: np.linalg.solve(L, np.vstack([np.column_stack([q[k] * jac(q[:k]), model(q[:k])]),
                                                 np.append(np.zeros(k), 1.0 / sd)]))
    res = least_squares(fun, [*p0, 1.0], jac=jf, bounds=([*bounds[0], 1e-6], [*bounds[1], np.inf]), x_scale="jac",
                        method="trf")
    pcov = np.linalg.inv(res.jac.T @ res.jac)
    return res.x[:k], np.sqrt(np.diag(pcov))[:k], float(res.fun @ res.fun)


def test_fit_model_equals_the_dense_least_squares_from_the_same_start(monkeypatch):
    """The float64 path takes the dense reference's optimiser path itself."""
    from qsense.estimators.interferometry import fits
    from qsense.estimators.interferometry.jacobians import binary_model_jac, kind_jac

    monkeypatch.setattr(fits, "_MIXED_MIN_N", 10**9)

    uv, e = _estimate(BinaryStar(3.0 * MAS, math.radians(60.0), 0.5), seed=31)
    y = _stack(e.values)
    model = lambda p: _stack(binary_visibility(uv, p[0] * MAS, math.radians(p[1]), p[2]))
    jac = lambda p: kind_jac(*binary_model_jac(uv, p), "complex")
    p0, bounds = [2.5, 50.0, 0.7], ([0.0, -360.0, 1e-4], [np.inf, 720.0, 50.0])
    fast = fit_model(model, y, np.ones_like(y), p0, ("s", "pa", "r"), bounds=bounds, cov=e.full_cov, jac=jac,
                     norm_var=e.norm_var)
    v, se, chi2 = _dense_least_squares(model, jac, y, e.full_cov, e.norm_var, p0, bounds)
    assert np.all(np.abs(fast.values - v) < 1e-7 * se), ((fast.values - v) / se)
    assert np.allclose(fast.stderr, se, rtol=1e-7)
    assert fast.chi2 == pytest.approx(chi2, rel=1e-10)
    assert abs(fast.values[0] - 3.0) < 3 * fast.stderr[0]


def test_fit_model_without_a_jacobian_matches_the_analytic_one(path):
    """The finite-difference route through the same whitening lands on the same minimum."""
    uv, e = _estimate(UniformDisk(1.5 * MAS), seed=32)
    y = _stack(e.values)
    model = lambda p: _stack(disk_visibility(uv, p[0] * MAS).astype(np.complex128))
    ref = fit_disk(uv, e.values, e.stderr, cov=e.full_cov, norm_var=e.norm_var)
    fd = fit_model(model, y, np.ones_like(y), [1.2], ("diameter",), bounds=([0.0], [np.inf]), cov=e.full_cov,
                   norm_var=e.norm_var)
    assert abs(fd.values[0] - ref.values[0]) < 1e-4 * ref.stderr[0]
    assert fd.stderr[0] == pytest.approx(ref.stderr[0], rel=1e-4)
    assert fd.chi2 == pytest.approx(ref.chi2, rel=1e-8)


def test_bad_covariances_are_refused_with_one_line_errors(path):
    uv, e = _estimate(UniformDisk(1.5 * MAS), seed=32)
    n = 2 * len(uv)
    with pytest.raises(ValueError, match=r"cov must be \(380, 380\)"):
        fit_disk(uv, e.values, e.stderr, cov=e.full_cov[:-2, :-2])
    bad = e.full_cov.copy()
    bad[0, 0] = -1.0
    with pytest.raises(ValueError, match="not positive definite"):
        fit_disk(uv, e.values, e.stderr, cov=bad)
    nan = e.full_cov.copy()
    nan[3, 5] = nan[5, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fit_disk(uv, e.values, e.stderr, cov=nan)
    y = _stack(e.values)
    with pytest.raises(ValueError, match="data has non-finite entries"):
        fit_model(lambda p: y * p[0], np.where(np.arange(n) == 7, np.nan, y), np.ones(n), [1.0], ("a",), cov=e.full_cov)
    # a norm_var larger than the covariance allows: cov - norm_var y y^T is indefinite
    big = float(np.max(np.linalg.eigvalsh(e.full_cov))) / float(y @ y) * 10.0
    with pytest.raises(ValueError, match="norm_var"):
        fit_disk(uv, e.values, e.stderr, cov=e.full_cov, norm_var=big)
    assert n == 380


def test_whitener_reads_the_lower_triangle_like_numpy_and_downdates_exactly():
    """CovarianceWhitener.solve is L^-1 of np.linalg.cholesky(cov - kappa y y^T): the lower triangle
    only (an upper triangle of garbage changes nothing), the downdate applied exactly."""
    from scipy.linalg import solve_triangular

    from qsense.estimators.interferometry.whitening import CovarianceWhitener

    rng = np.random.default_rng(7)
    n = 300
    A = rng.normal(size=(n, n))
    C = A @ A.T / n + np.eye(n)
    y = rng.normal(size=n) * 0.1
    garbage = C + np.triu(rng.normal(size=(n, n)), 1)
    B = rng.normal(size=(n, 4))
    for down in (None, (0.5, y)):
        C0 = C - (down[0] * np.outer(y, y) if down else 0.0)
        L = np.linalg.cholesky(C0)
        w = CovarianceWhitener(garbage, n, down)
        assert np.allclose(w.solve(B), solve_triangular(L, B, lower=True), rtol=1e-12, atol=1e-12)
        assert np.allclose(w.solve(B[:, 1]), solve_triangular(L, B[:, 1], lower=True), rtol=1e-12, atol=1e-12)


def test_a_covariance_too_ill_conditioned_for_float32_falls_back_to_float64(monkeypatch):
    """A direction 1e8 times stiffer than the rest defeats float32 (the refinement cannot
    contract): the mixed path says so and the fit is the float64 path's, exactly."""
    from qsense.estimators.interferometry import fits
    from qsense.estimators.interferometry.whitening import MixedCovariance, NeedsDouble

    uv, e = _estimate(UniformDisk(1.5 * MAS), seed=32)
    n = 2 * len(uv)
    v = np.random.default_rng(3).normal(size=n)
    stiff = e.full_cov + 1e8 * float(np.trace(e.full_cov)) / n * np.outer(v, v) / (v @ v)
    with pytest.raises(NeedsDouble):
        MixedCovariance(stiff, n).cinv(np.eye(n)[:, :3])
    monkeypatch.setattr(fits, "_MIXED_MIN_N", 0)
    mixed = fit_disk(uv, e.values, e.stderr, cov=stiff)
    monkeypatch.setattr(fits, "_MIXED_MIN_N", 10**9)
    double = fit_disk(uv, e.values, e.stderr, cov=stiff)
    assert np.array_equal(mixed.values, double.values) and mixed.chi2 == double.chi2


def test_an_active_bound_and_a_flat_direction_on_both_paths(path):
    """A bound the optimum presses against holds the parameter there (the Newton step does not
    cross it), and a model with two parameters the data cannot separate is flagged, on both paths."""
    from qsense.estimators.interferometry.jacobians import kind_jac, symmetric_model_jac

    uv, e = _estimate(UniformDisk(1.5 * MAS), seed=32)
    y = _stack(e.values)
    model = lambda p: _stack(disk_visibility(uv, p[0] * MAS).astype(np.complex128))
    jac = lambda p: kind_jac(*symmetric_model_jac(uv, float(p[0]), "disk"), "complex")
    free = fit_model(model, y, np.ones_like(y), [1.2], ("d",), bounds=([0.0], [np.inf]), cov=e.full_cov, jac=jac,
                     norm_var=e.norm_var)
    cap = free.values[0] - 3 * free.stderr[0]
    held = fit_model(model, y, np.ones_like(y), [1.2], ("d",), bounds=([0.0], [cap]), cov=e.full_cov, jac=jac,
                     norm_var=e.norm_var)
    assert cap - 1e-6 * free.stderr[0] <= held.values[0] <= cap
    assert held.chi2 > free.chi2 + 8.0  # ~9 = a 3-sigma move of the one parameter
    # d = a + b: only the sum is seen
    m2 = lambda p: model([p[0] + p[1]])
    j2 = lambda p: np.column_stack([jac([p[0] + p[1]])] * 2)
    flat = fit_model(m2, y, np.ones_like(y), [0.6, 0.6], ("a", "b"), cov=e.full_cov, jac=j2, norm_var=e.norm_var)
    assert flat.flags and "a, b" in flat.flags[0] and np.all(np.isinf(flat.stderr))
    assert flat.values.sum() == pytest.approx(free.values[0], abs=1e-3 * free.stderr[0])


@pytest.mark.slow
def test_sixty_four_telescopes_land_on_the_dense_minimum():
    """The size the float32 + Newton path is for, unpatched: M = 64 (4,032 data), binary with the
    full covariance and norm_var, against the dense chi^2's minimum and the truth."""
    sim = TelescopeSim(TelescopeArray(demo_array(64), 800e-9), BinaryStar(3.0 * MAS, math.radians(60.0), 0.5), seed=3)
    est = VisibilityEstimator(64)
    est.update(sim.shadows(sim.photons(count=30_000)))
    e = est.estimate(full_cov=True)
    uv = sim.array.uv()
    fit = fit_binary(uv, e.values, e.stderr, cov=e.full_cov, norm_var=e.norm_var)
    model = lambda p: _stack(binary_visibility(uv, p[0] * MAS, math.radians(p[1]), p[2]))
    chi2, step, pcov = _dense_reference(model, _stack(e.values), e.full_cov, e.norm_var, fit.values.copy())
    sigma = np.sqrt(np.diag(pcov))
    assert np.all(np.abs(step) < 1e-6 * sigma), step / sigma
    assert fit.chi2 == pytest.approx(chi2, rel=1e-9)
    assert np.allclose(fit.stderr, sigma[:3], rtol=1e-4)
    for name, truth in (("separation", 3.0), ("position_angle", 60.0), ("flux_ratio", 0.5)):
        v, s = fit[name]
        assert abs(v - truth) < 4 * s, (name, v, s)
