"""Visibility estimators and source fits (qsense.estimators.interferometry).

* the memory-qubit readout formulas (<XX+YY>/2 = 2 Re rho_jk, <YX-XY>/2 =
  2 Im rho_jk, <Z> = 1 - 2 rho_jj, Bell sum = 8|rho_jk|^2) hold on the exact
  density matrix;
* the estimators equal the generic Pauli estimators on the same data and
  recover the truth within their error bars (pull distributions over seeds);
* fitted binary / disk / Gaussian parameters land within their uncertainties.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from exact import expval

import qsense
from qsense.estimators.interferometry import (
    MAS,
    SquaredVisibilityEstimator,
    VisibilityEstimator,
    all_pairs,
    binary_visibility,
    disk_visibility,
    fit_binary,
    fit_disk,
    fit_gaussian,
    squared_visibilities_from_paulis,
    squared_visibility_observables,
    uv_coordinates,
    visibilities_from_paulis,
    visibility_observables,
)
from qsense.sims.telescope import (
    BinaryStar,
    GaussianSource,
    PointSource,
    TelescopeArray,
    TelescopeSim,
    UniformDisk,
    demo_array,
    single_excitation_to_qubits,
)

LAM = 800e-9


def _word(M: int, ops: dict[int, str]) -> str:
    return "".join(ops.get(i, "I") for i in range(M))


def test_readout_sign_convention_against_density_matrix():
    rng = np.random.default_rng(0)
    M = 4
    A = rng.normal(size=(M, 3)) + 1j * rng.normal(size=(M, 3))
    rho1 = A @ A.conj().T
    rho1 /= np.trace(rho1).real
    R = single_excitation_to_qubits(rho1, heralded=True)
    for j in range(M):
        assert np.isclose(expval(R, _word(M, {j: "Z"})), 1 - 2 * rho1[j, j].real)
        for k in range(M):
            if j == k:
                continue
            xx = expval(R, _word(M, {j: "X", k: "X"}))
            yy = expval(R, _word(M, {j: "Y", k: "Y"}))
            yx = expval(R, _word(M, {j: "Y", k: "X"}))
            xy = expval(R, _word(M, {j: "X", k: "Y"}))
            assert np.isclose((xx + yy) / 2, 2 * rho1[j, k].real)
            assert np.isclose((yx - xy) / 2, 2 * rho1[j, k].imag)  # the sign of docs/physics.md §5 is right
            assert np.isclose(xx, yy) and np.isclose(yx, -xy)
            assert np.isclose(xx**2 + xy**2 + yx**2 + yy**2, 8 * abs(rho1[j, k]) ** 2)


def _sim(source, M=6, seed=0, **kw):
    return TelescopeSim(TelescopeArray(demo_array(M), LAM), source, seed=seed, **kw)


def test_single_copy_estimator_equals_generic_pauli_estimates():
    sim = _sim(BinaryStar(3 * MAS, math.radians(60), 0.5), M=5, seed=1)
    sb = sim.shadows(sim.photons(count=5000))
    pairs = all_pairs(5)
    obs = visibility_observables(pairs, 5)
    vals = qsense.shadow_expval(sb, obs)
    r = qsense.ShadowEstimator(obs)
    r.update(sb)
    for norm in ("pooled", "diagonal", "equal"):
        est = VisibilityEstimator(5, normalize=norm)
        est.update(sb[:1234])
        est.update(sb[1234:])
        exact = est.estimate()
        generic = visibilities_from_paulis(pairs, 5, vals, count=sb.T, normalize=norm)
        assert np.allclose(exact.values, generic.values, atol=1e-12)
        # the plug-in covariance (expected moments) is close to the exact-count one
        ratio = np.sqrt(np.diag(generic.full_cov) / np.diag(exact.full_cov))
        assert np.all(np.abs(ratio - 1) < 0.06)
        sd = np.sqrt(np.diag(exact.full_cov))
        assert np.max(np.abs((generic.full_cov - exact.full_cov) / np.outer(sd, sd))) < 0.08
        # without a count: terms in quadrature, no cross-pair covariance
        quad = visibilities_from_paulis(pairs, 5, vals, r.estimate().stderr, normalize=norm)
        assert quad.full_cov is None and np.all(np.abs(quad.stderr_re / exact.stderr_re - 1) < 0.25)


def test_two_copy_estimator_equals_generic_bell_estimates():
    sim = _sim(UniformDisk(1.0 * MAS), M=4, seed=2)
    ph = sim.photons(count=6000)
    bb = sim.bell(ph[:3000], ph[3000:])
    pairs = all_pairs(4)
    b = qsense.BellEstimator(squared_visibility_observables(pairs))
    b.update(bb)
    r = b.estimate()
    est = SquaredVisibilityEstimator(4)
    est.update(bb)
    exact = est.estimate()
    generic = squared_visibilities_from_paulis(pairs, 4, r.values, count=r.count)
    assert np.allclose(exact.values, generic.values, atol=1e-12)
    assert np.all(np.abs(generic.stderr / exact.stderr - 1) < 0.1)
    # adding the four correlated terms' errors in quadrature overstates the error
    quad = squared_visibilities_from_paulis(pairs, 4, r.values, r.stderr)
    assert np.all(quad.stderr > 1.3 * exact.stderr)  # ~sqrt(M/2) too large


@pytest.mark.parametrize("normalize", ["pooled", "diagonal", "equal"])
def test_visibilities_recover_truth_within_error_bars(normalize):
    src = BinaryStar(3 * MAS, math.radians(60), 0.5)
    pulls = []
    for seed in range(8):
        sim = _sim(src, seed=seed)
        est = VisibilityEstimator(6, normalize=normalize)
        est.update(sim.shadows(sim.photons(count=8000)))
        e = est.estimate()
        d = e.values - sim.true_visibilities()
        pulls += list(d.real / e.stderr_re) + list(d.imag / e.stderr_im)
    pulls = np.asarray(pulls)
    assert abs(pulls.mean()) < 0.25 and 0.8 < pulls.std() < 1.2
    assert np.mean(np.abs(pulls) < 2) > 0.9


def test_squared_visibilities_recover_truth_and_ignore_piston():
    src = UniformDisk(1.2 * MAS)
    pulls = []
    for seed in range(6):
        # strong atmosphere: 100 rad^2/s, photons paired 0.1 ms apart on average
        sim = _sim(src, seed=seed, epsilon=1e-5, piston_diffusion=100.0)
        ph = sim.photons(count=10000)
        est = SquaredVisibilityEstimator(6)
        est.update(sim.bell(ph[0::2], ph[1::2]))
        e = est.estimate()
        pulls += list((e.values - np.abs(sim.true_visibilities()) ** 2) / e.stderr)
    pulls = np.asarray(pulls)
    assert abs(pulls.mean()) < 0.3 and 0.75 < pulls.std() < 1.25
    # the single-copy (signed) visibility is washed out by the same atmosphere
    sim = _sim(src, seed=9, epsilon=1e-5, piston_diffusion=100.0)
    est = VisibilityEstimator(6)
    est.update(sim.shadows(sim.photons(count=20000)))
    truth = np.abs(sim.true_visibilities())
    assert np.mean(est.estimate().amplitude) < 0.6 * np.mean(truth)


@pytest.mark.parametrize("normalize", ["pooled", "diagonal", "equal"])
def test_full_covariance_matches_monte_carlo(normalize):
    sim = _sim(BinaryStar(3 * MAS, math.radians(60), 0.5), M=4, seed=21)
    vs, covs = [], []
    for _ in range(500):
        est = VisibilityEstimator(4, normalize=normalize)
        est.update(sim.shadows(sim.photons(count=1500)))
        e = est.estimate()
        assert np.allclose(np.diag(e.full_cov)[:6], e.cov[:, 0, 0], rtol=1e-9)
        assert np.allclose(np.diag(e.full_cov)[6:], e.cov[:, 1, 1], rtol=1e-9)
        vs.append(np.concatenate([e.values.real, e.values.imag]))
        covs.append(e.full_cov)
    emp = np.cov(np.asarray(vs).T)
    ana = np.mean(covs, axis=0)
    sd = np.sqrt(np.diag(ana))
    assert np.allclose(np.sqrt(np.diag(emp)) / sd, 1.0, atol=0.15)
    # correlations agree to Monte Carlo accuracy (sd ~ 1/sqrt(500) = 0.045)
    iu = np.triu_indices(12, 1)
    dz = ((emp - ana) / np.outer(sd, sd))[iu] / 0.045
    assert np.sqrt(np.mean(dz**2)) < 1.5
    # and the correlations are real: ignoring them would be wrong
    assert np.max(np.abs((ana / np.outer(sd, sd))[iu])) > 0.1


def test_dark_counts_dilute_and_loss_is_normalised_away():
    src = PointSource((0.5 * MAS, 0.2 * MAS))
    sim = _sim(src, seed=4, dark_prob=0.25e-5)  # dark fraction 0.2
    est = VisibilityEstimator(6)
    est.update(sim.shadows(sim.photons(count=20000)))
    e = est.estimate()
    expect = 0.8 * sim.true_visibilities()
    assert np.mean(np.abs(e.values - expect) / np.hypot(e.stderr_re, e.stderr_im)) < 2.0
    # photon loss in memory (T1): the diagonal normalisation removes the bias
    sim = _sim(src, seed=5, t1=1e-3)
    ph = sim.photons(count=20000)
    sb = sim.shadows(ph, wait=0.7e-3)
    diag = VisibilityEstimator(6)
    diag.update(sb)
    eq = VisibilityEstimator(6, normalize="equal")
    eq.update(sb)
    truth = sim.true_visibilities()
    d = diag.estimate()
    assert np.all(np.abs(d.values - truth) < 4 * np.hypot(d.stderr_re, d.stderr_im))
    assert np.mean(np.abs(eq.estimate().values)) == pytest.approx(math.exp(-0.7), abs=0.06)


def test_merge_and_checkpoint_roundtrip():
    sim = _sim(GaussianSource(1.0 * MAS), M=4, seed=6)
    ph = sim.photons(count=4000)
    sb = sim.shadows(ph)
    a, b, whole = VisibilityEstimator(4), VisibilityEstimator(4), VisibilityEstimator(4)
    a.update(sb[:1500])
    b.update(sb[1500:])
    whole.update(sb)
    a.merge(b)
    c = VisibilityEstimator.from_bytes(a.to_bytes())
    assert np.array_equal(c.estimate().values, whole.estimate().values)
    assert np.allclose(c.estimate().cov, whole.estimate().cov)
    bb = sim.bell(ph[:2000], ph[2000:])
    x, y = SquaredVisibilityEstimator(4), SquaredVisibilityEstimator(4)
    x.update(bb[:700])
    y.update(bb[700:])
    z = SquaredVisibilityEstimator.from_bytes(x.merge(y).to_bytes())
    w = SquaredVisibilityEstimator(4)
    w.update(bb)
    assert np.array_equal(z.estimate().values, w.estimate().values)
    with pytest.raises(ValueError):
        VisibilityEstimator.from_bytes(b"garbage")
    with pytest.raises(ValueError):
        VisibilityEstimator(5).update(sb)


def _pull_ok(fit, truth: dict, k: float = 3.0) -> None:
    for name, value in truth.items():
        v, e = fit[name]
        assert abs(v - value) < k * e, (name, v, e, value, str(fit))


def test_binary_fit_lands_within_uncertainty():
    truth = {"separation": 3.0, "position_angle": 60.0, "flux_ratio": 0.5}
    src = BinaryStar(3.0 * MAS, math.radians(60.0), 0.5)
    sim = _sim(src, seed=12)
    uv = sim.array.uv()
    ph = sim.photons(count=30000)
    est = VisibilityEstimator(6)
    est.update(sim.shadows(ph[:15000]))
    e = est.estimate()
    fit = fit_binary(uv, e.values, e.stderr, cov=e.full_cov, norm_var=e.norm_var)
    _pull_ok(fit, truth)
    assert fit.chi2 < fit.dof + 5 * math.sqrt(2 * fit.dof)
    b = SquaredVisibilityEstimator(6)
    b.update(sim.bell(ph[15000::2], ph[15001::2]))
    be = b.estimate()
    fit2 = fit_binary(uv, be.values, be.stderr, kind="squared")
    _pull_ok(fit2, truth)


def test_disk_and_gaussian_fits():
    sim = _sim(UniformDisk(1.5 * MAS), seed=13)
    ph = sim.photons(count=20000)
    b = SquaredVisibilityEstimator(6)
    b.update(sim.bell(ph[0::2], ph[1::2]))
    be = b.estimate()
    _pull_ok(fit_disk(sim.array.uv(), be.values, be.stderr, kind="squared"), {"diameter": 1.5})
    est = VisibilityEstimator(6)
    est.update(sim.shadows(ph))
    e = est.estimate()
    _pull_ok(fit_disk(sim.array.uv(), e.values, e.stderr, cov=e.full_cov, norm_var=e.norm_var), {"diameter": 1.5})
    sim = _sim(GaussianSource(1.0 * MAS), seed=14)
    est = VisibilityEstimator(6)
    est.update(sim.shadows(sim.photons(count=20000)))
    e = est.estimate()
    _pull_ok(fit_gaussian(sim.array.uv(), e.values, e.stderr, cov=e.full_cov, norm_var=e.norm_var), {"fwhm": 1.0})


def test_models_and_geometry_helpers():
    pos = demo_array(5)
    uv = uv_coordinates(pos, LAM)
    assert uv.shape == (10, 2)
    assert np.allclose(uv, TelescopeArray(pos, LAM).uv())
    src = BinaryStar(2 * MAS, 1.0, 0.3)
    assert np.allclose(binary_visibility(uv, 2 * MAS, 1.0, 0.3), src.visibility(uv))
    assert np.allclose(disk_visibility(uv, 1 * MAS), UniformDisk(1 * MAS).visibility(uv).real)
    assert visibility_observables([[0, 2]], 3) == ["X0 X2", "Y0 Y2", "Y0 X2", "X0 Y2", "Z0", "Z1", "Z2"]


# -- issue 13 item 5: fits the data cannot constrain ------------------------------------------
def test_fits_with_no_degrees_of_freedom_are_refused():
    # two telescopes: one baseline, so 1 |V|^2 or 2 (Re, Im) numbers for 3 binary parameters;
    # before: flux_ratio 0.999 +- 0.000, PA 92.351 +- 0.003 with chi2/dof 0.0/-2
    src = BinaryStar(3.0 * MAS, math.radians(60.0), 0.5)
    sim = TelescopeSim(TelescopeArray(demo_array(2), LAM), src, epsilon=1e-3, seed=3)
    ph = sim.photons(count=4000)
    est = VisibilityEstimator(2)
    est.update(sim.shadows(ph[:2000]))
    e = est.estimate()
    b = SquaredVisibilityEstimator(2)
    b.update(sim.bell(ph[2000::2], ph[2001::2]))
    be = b.estimate()
    uv = sim.array.uv()
    for fit in (fit_binary(uv, e.values, e.stderr, cov=e.full_cov, norm_var=e.norm_var), fit_binary(uv, be.values, be.stderr, kind="squared"),
                fit_disk(uv, be.values, be.stderr, kind="squared")):
        assert fit.dof <= 0 and not fit.constrained and np.all(np.isnan(fit.values)) and np.all(np.isnan(fit.stderr))
        assert "unconstrained" in str(fit) and fit.as_dict()["constrained"] is False
        assert all(q["value"] is None and q["stderr"] is None for q in fit.as_dict()["parameters"].values())
    # one |V|^2 for one diameter is dof 0 too
    assert fit_disk(uv, be.values, be.stderr, kind="squared").dof == 0


def test_squared_binary_fit_flags_the_180_degree_ambiguity_and_flat_directions():
    truth = {"separation": 3.0, "position_angle": 60.0, "flux_ratio": 0.5}
    src = BinaryStar(3.0 * MAS, math.radians(60.0), 0.5)
    sim = _sim(src, seed=21)
    uv = sim.array.uv()
    b = SquaredVisibilityEstimator(6)
    ph = sim.photons(count=30000)
    b.update(sim.bell(ph[::2], ph[1::2]))
    be = b.estimate()
    fit = fit_binary(uv, be.values, be.stderr, kind="squared")
    assert fit.constrained and fit.dof == 12
    assert any("modulo 180" in f for f in fit.flags) and "modulo 180" in str(fit)
    _pull_ok(fit, truth)
    # the complex fit sees the sign: no such flag
    est = VisibilityEstimator(6)
    est.update(sim.shadows(ph[:15000]))
    e = est.estimate()
    assert not any("modulo 180" in f for f in fit_binary(uv, e.values, e.stderr, cov=e.full_cov, norm_var=e.norm_var).flags)
    # a model that only sees p0 + p1: the flat direction gets infinite errors and a flag, not the
    # pseudo-inverse's small ones
    x = np.linspace(0, 1, 20)
    flat = qsense.estimators.interferometry.fit_model(lambda p: (p[0] + p[1]) * x + p[2], 2 * x + 1, np.full(20, 0.1),
                                                      [0.5, 0.5, 0.0], ("a", "b", "c"))
    assert flat.constrained and np.isinf(flat.stderr[:2]).all() and np.isfinite(flat.stderr[2])
    assert any("a, b" in f for f in flat.flags)


# -- issue 13 item 4: normalisation with many telescopes and few photons each -----------------
@pytest.mark.parametrize("M, N", [(48, 2500), (64, 3300)])
def test_pooled_normalisation_is_stable_with_many_telescopes_and_few_photons(M, N):
    # M telescopes, ~52 photons per telescope: rho_jj = 1/M known to only ~40%.
    # Before: dividing by sqrt(rho_jj rho_kk) gave |V| up to ~4e10 with error bars as large.
    seeds = 4
    pairs = all_pairs(M)
    obs = visibility_observables(pairs, M)
    pulls, n_out = [], 0
    for seed in range(seeds):
        sim = _sim(GaussianSource(1.5 * MAS), M=M, seed=100 + seed)
        sb = sim.shadows(sim.photons(count=N))
        truth = sim.true_visibilities()
        est = VisibilityEstimator(M)  # default: pooled
        est.update(sb)
        exact = est.estimate()
        # the daemon's route: generic Pauli means (P = 1128 > FULL_COV_MAX_PAIRS: per-pair blocks)
        generic = visibilities_from_paulis(pairs, M, qsense.shadow_expval(sb, obs), count=N)
        for e in (exact, generic):
            assert np.all(np.isfinite(e.values)) and np.all(np.isfinite(e.cov))
            sig = np.sqrt(e.cov[:, 0, 0] + e.cov[:, 1, 1])
            # physical range up to the error bar, and error bars of the size shot noise allows
            # (per component c sqrt(9/8 / N) ~ 1.0 here; nothing absurd)
            n_out += int(np.sum(np.abs(e.values) > 1.0 + 4.0 * sig))
            assert np.all(sig < 2.0 * M * math.sqrt(9.0 / 4.0 / N))
            d = e.values - truth
            pulls.append(np.concatenate([d.real / e.stderr_re, d.imag / e.stderr_im]))
        assert np.allclose(exact.values, generic.values, atol=1e-9)
    assert n_out == 0
    pulls = np.concatenate(pulls)
    # 1-sigma coverage within a binomial tolerance (4 sigma; pairs sharing a telescope are
    # correlated, so count half the pulls as independent)
    p, n = 0.6827, len(pulls) / 2
    assert abs(np.mean(np.abs(pulls) < 1.0) - p) < 4.0 * math.sqrt(p * (1 - p) / n)
    assert 0.9 < pulls.std() < 1.1
    # the old per-pair normalisation is the unstable one: some estimate is absurd
    diag = VisibilityEstimator(M, normalize="diagonal")
    diag.update(sb)
    assert np.abs(diag.estimate(full_cov=False).values).max() > 10.0


@pytest.mark.parametrize("D", [100.0, 1000.0])
def test_piston_between_the_two_photons_is_reported_and_corrected(D):
    """Issue 13 item 6: the two photons of a pair arrive tau apart, the piston moves by variance 2 D tau in between,
    so uncorrected |V|^2 is scaled by E[e^{-D tau}] = lambda/(lambda + D) (0.8 at lambda = 4000/s, D = 1000 rad^2/s);
    ``piston_diffusion=D`` reweights each shot by e^{+D tau} and is unbiased with honest error bars.
    ``python -m pytest -q -s tests/test_interferometry.py -k piston_between`` prints the numbers docs/telescope.md quotes."""
    src = UniformDisk(1.2 * MAS)
    pulls, ratios, fixed_ratios, factors = [], [], [], []
    for seed in range(30):
        sim = _sim(src, seed=seed, epsilon=4e-6, piston_diffusion=D)  # lambda = 4e-6 / 1 ns = 4000 photons/s
        ph = sim.photons(count=12000)
        first, second = ph[0::2], ph[1::2]
        # the second photon is measured on arrival: the first one's wait is the separation
        batch = sim.bell(first, second, second.t - first.t)
        truth = np.abs(sim.true_visibilities()) ** 2
        plain, fixed = SquaredVisibilityEstimator(6), SquaredVisibilityEstimator(6, piston_diffusion=D)
        plain.update(batch)
        fixed.update(batch)
        e, p = fixed.estimate(), plain.estimate()
        pulls += list((e.values - truth) / e.stderr)
        strong = truth > 0.3
        ratios.append(np.sum(p.values[strong]) / np.sum(truth[strong]))
        fixed_ratios.append(np.sum(e.values) / np.sum(truth))
        factors.append(fixed.piston_factor)
        assert plain.piston_factor == 1.0
    pulls = np.asarray(pulls)
    lam = 4000.0
    print(
        f"\nD={D:g} rad^2/s, lambda={lam:g}/s: uncorrected |V|^2 / truth = {np.mean(ratios):.3f}, piston_factor = "
        f"{np.mean(factors):.3f} (theory lambda/(lambda+D) = {lam / (lam + D):.3f}); corrected sum |V|^2 / truth = "
        f"{np.mean(fixed_ratios):.3f} +- {np.std(fixed_ratios) / math.sqrt(len(fixed_ratios)):.3f}, "
        f"pulls mean {pulls.mean():+.2f}, "
        f"sd {pulls.std():.2f}; stderr corrected/uncorrected {np.mean(e.stderr / p.stderr):.2f}"
    )
    # unbiased: the pooled ratio within 4 standard errors of 1 (seed to seed spread); pulls near N(0, 1)
    assert abs(np.mean(fixed_ratios) - 1.0) < 4 * np.std(fixed_ratios) / math.sqrt(len(fixed_ratios))
    assert abs(pulls.mean()) < 0.4 and 0.75 < pulls.std() < 1.3
    assert np.mean(factors) == pytest.approx(lam / (lam + D), abs=0.01)
    assert np.mean(ratios) == pytest.approx(np.mean(factors), abs=0.05)
    # checkpoints and merges keep the reweighted statistics
    back = SquaredVisibilityEstimator.from_bytes(fixed.to_bytes())
    assert back.piston_factor == fixed.piston_factor and np.allclose(back.estimate().values, e.values)
    with pytest.raises(ValueError):
        fixed.merge(SquaredVisibilityEstimator(6))
    with pytest.raises(ValueError):
        fixed.update(batch, separation=-1.0)


def test_full_covariance_fit_evaluates_the_common_normalisation_at_the_model():
    """With the pooled normalisation the full covariance holds norm_var * V V^T; evaluated at the noisy
    estimate it points along the estimate's own noise, so a chi^2 at the truth fell far below its dof
    (860 for 992 at 32 telescopes) and a disk fit landed ~6 sigma high. Evaluated at the model (the fit's
    common scale with prior N(1, norm_var)) the chi^2 at the truth is ~dof and the fit lands on the truth."""
    from qsense.estimators.interferometry.fits import _data_vector

    M, N = 32, 40000
    old_chi, new_chi, pulls, pulls_old = [], [], [], []
    for seed in range(3):
        sim = _sim(UniformDisk(1.5 * MAS), M=M, seed=200 + seed)
        est = VisibilityEstimator(M)
        est.update(sim.shadows(sim.photons(count=N)))
        e = est.estimate(full_cov=True)
        assert e.norm_var is not None and e.norm_var > 0
        y, _ = _data_vector(e.values, e.stderr, "complex")
        t, _ = _data_vector(sim.true_visibilities(), e.stderr, "complex")
        r = y - t
        old_chi.append(r @ np.linalg.solve(e.full_cov, r))
        C_model = e.full_cov - e.norm_var * np.outer(y, y) + e.norm_var * np.outer(t, t)
        new_chi.append(r @ np.linalg.solve(C_model, r))
        uv = sim.array.uv()
        f = fit_disk(uv, e.values, e.stderr, cov=e.full_cov, norm_var=e.norm_var)
        pulls.append((f.values[0] - 1.5) / f.stderr[0])
        assert f.chi2 < f.dof + 4 * math.sqrt(2 * f.dof)
        f_old = fit_disk(uv, e.values, e.stderr, cov=e.full_cov)
        pulls_old.append((f_old.values[0] - 1.5) / f_old.stderr[0])
    dof = 2 * M * (M - 1) // 2
    tol = 4 * math.sqrt(2 * dof)
    assert all(abs(c - dof) < tol for c in new_chi), (new_chi, dof)
    assert all(c < dof - 2 * math.sqrt(2 * dof) for c in old_chi), old_chi  # the bias this fixes, visible
    assert max(abs(p) for p in pulls) < 3.5, pulls
    assert np.mean(pulls_old) > 3.0, pulls_old


def test_a_rival_separation_in_the_grid_is_flagged():
    """Few photons per baseline: a binary fit may land in one of several equally good minima; the grid
    search has seen them all, so a rival within chi^2 9 of the best is named in the flags."""
    from qsense.estimators.interferometry.fits import _rival_separation

    seps = np.geomspace(0.1, 100.0, 160)
    n_pa, R = 36, 3
    base = 50.0 * (np.log(seps / 3.0)) ** 2  # one basin at 3 mas
    rival = np.minimum(base, 400.0 * (np.log(seps / 27.0)) ** 2 + 4.0)  # a second basin at 27 mas, 4 worse
    for per_sep, expect in ((base, None), (rival, 27.0)):
        chi = np.repeat(per_sep[:, None, None], n_pa, axis=1).repeat(R, axis=2).reshape(len(seps) * n_pa, R)
        got = _rival_separation(chi, seps, n_pa, len(seps) * n_pa)
        if expect is None:
            assert got is None
        else:
            assert got is not None and abs(got[0] / expect - 1) < 0.05 and abs(got[1] - 4.0) < 0.5
    # a rival 20 worse is no rival
    far = np.minimum(base, 400.0 * (np.log(seps / 27.0)) ** 2 + 20.0)
    chi = np.repeat(far[:, None, None], n_pa, axis=1).repeat(R, axis=2).reshape(len(seps) * n_pa, R)
    assert _rival_separation(chi, seps, n_pa, len(seps) * n_pa) is None


def test_a_rival_separation_in_the_mirrored_rows_is_flagged():
    """Complex data scan PA + 180 deg as a second block of grid rows: a rival basin that shows only
    there (or a best fit that lies there) is found as in the direct rows."""
    from qsense.estimators.interferometry.fits import _rival_separation

    seps = np.geomspace(0.1, 100.0, 160)
    n_pa, R = 36, 3
    G = len(seps) * n_pa
    base = 50.0 * (np.log(seps / 3.0)) ** 2
    rival = np.minimum(base, 400.0 * (np.log(seps / 27.0)) ** 2 + 4.0)
    block = lambda per_sep: np.repeat(per_sep[:, None, None], n_pa, axis=1).repeat(R, axis=2).reshape(G, R)  # noqa: E731
    for chi in (np.vstack([block(base), block(rival)]), np.vstack([block(rival), block(base)])):
        got = _rival_separation(chi, seps, n_pa, G)
        assert got is not None and abs(got[0] / 27.0 - 1) < 0.05 and abs(got[1] - 4.0) < 0.5, got
    assert _rival_separation(np.vstack([block(base), block(base + 1.0)]), seps, n_pa, G) is None
