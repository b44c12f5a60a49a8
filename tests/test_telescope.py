"""Telescope-array physics and the specialised single-excitation samplers (qsense.sims.telescope).

* coherence matrices match the analytic van Cittert-Zernike formulas (point,
  binary |gamma|^2, uniform disk and its first null at 1.22 lambda/theta,
  Gaussian), and pixelised images reproduce the closed forms;
* the O(M) samplers reproduce the exact outcome distributions and agree with the
  generic 2^n samplers (``sims.sample_shadows`` / ``sims.sample_bell``) by
  chi-square at fixed seeds;
* the noise model (dark counts, dephasing, loss, piston) averages to the stated
  channels; >= 64 telescopes run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import chi2_contingency, chisquare

from qsense import sims
from qsense.sims.telescope import (
    MAS,
    BinaryStar,
    GaussianSource,
    ImageSource,
    PointSource,
    TelescopeArray,
    TelescopeSim,
    UniformDisk,
    demo_array,
    golomb_array,
    sample_single_excitation_bell,
    sample_single_excitation_shadows,
    single_excitation_to_qubits,
)

LAM = 800e-9


def _random_extended(M: int, rng: np.random.Generator, rank: int = 3, vac: bool = True) -> np.ndarray:
    A = rng.normal(size=(M + 1, rank)) + 1j * rng.normal(size=(M + 1, rank))
    if not vac:
        A[0] = 0
    rho = A @ A.conj().T
    return rho / np.trace(rho).real


def _codes(table: np.ndarray, base: int) -> np.ndarray:
    n = table.shape[1]
    return table.astype(np.int64) @ (base ** np.arange(n - 1, -1, -1))


def _gof(counts: np.ndarray, probs: np.ndarray) -> float:
    """Chi-square goodness-of-fit p-value over classes with expected count >= 5."""
    T = counts.sum()
    exp = probs * T
    keep = exp >= 5
    assert counts[~keep].sum() <= max(10, 0.01 * T)
    obs = np.append(counts[keep], counts[~keep].sum())
    e = np.append(exp[keep], exp[~keep].sum())
    if e[-1] < 5:  # merge a too-small remainder into the largest class
        obs, e = obs[:-1], e[:-1]
        obs[np.argmax(e)] += counts[~keep].sum()
        e = e / e.sum() * obs.sum()
    return float(chisquare(obs, e).pvalue)


# ----------------------------------------------------------------------------- physics
def test_point_source_on_and_off_axis():
    pos = golomb_array(spacing=7.0, angle_deg=30.0)
    arr = TelescopeArray(pos, LAM)
    g = arr.coherence(PointSource())
    assert np.allclose(g, 1.0)
    off = np.array([2.0, -1.0]) * MAS
    g = arr.coherence(PointSource(tuple(off)))
    B = pos[:, None, :] - pos[None, :, :]
    assert np.allclose(g, np.exp(2j * np.pi * (B @ off) / LAM), atol=1e-12)
    assert np.allclose(np.abs(g), 1.0)
    rho = arr.photon_state(PointSource(tuple(off)))
    assert np.isclose(np.trace(rho).real, 1.0) and np.allclose(rho, rho.conj().T)
    assert np.linalg.matrix_rank(rho, tol=1e-9) == 1  # a point source gives a pure W-like state


def test_binary_squared_visibility_formula():
    arr = TelescopeArray(demo_array(6), LAM)
    for r, s, pa in [(0.5, 3.0, 60.0), (1.0, 1.2, 200.0), (0.2, 7.5, 315.0)]:
        src = BinaryStar(s * MAS, math.radians(pa), r)
        B = arr.baselines()
        svec = src.secondary
        expected = (1 + r**2 + 2 * r * np.cos(2 * np.pi * (B @ svec) / LAM)) / (1 + r) ** 2
        v = src.visibility(arr.uv())
        assert np.allclose(np.abs(v) ** 2, expected, atol=1e-12)
        # the sum-of-point-sources image gives the same complex visibility
        img = ImageSource(np.array([[0.0, 0.0], svec]), np.array([1.0, r]))
        assert np.allclose(img.visibility(arr.uv()), v, atol=1e-12)


def test_disk_first_null_and_pixel_image():
    theta = 2.0 * MAS
    disk = UniformDisk(theta)
    along = lambda b: disk.visibility(np.array([[b / LAM, 0.0]]))[0].real  # noqa: E731
    b0 = brentq(along, 0.5 * LAM / theta, 1.5 * LAM / theta)
    assert b0 == pytest.approx(1.2196698912665045 * LAM / theta, rel=1e-10)  # first zero of J1 / pi
    # a pixelised disk sums to the J1 formula (up to discretisation)
    n = 121
    pix = theta / 100.0
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    img = ((xx * pix) ** 2 + (yy * pix) ** 2 <= (theta / 2) ** 2).astype(float)
    src = ImageSource.from_pixels(img, pix)
    uv = np.stack([np.linspace(0, 2.0, 25), np.linspace(0, 0.7, 25)], axis=1) * LAM / theta / LAM
    assert np.max(np.abs(src.visibility(uv) - disk.visibility(uv))) < 5e-3


def test_gaussian_formula_and_pixel_image():
    fwhm = 1.5 * MAS
    g = GaussianSource(fwhm)
    # half power of |gamma| where pi fwhm |uv| = 2 sqrt(ln2 ln 2)... check the closed form directly
    q = np.linspace(0, 2.0, 30) / fwhm
    uv = np.stack([q * 0.6, q * 0.8], axis=1)
    assert np.allclose(g.visibility(uv), np.exp(-((np.pi * fwhm * q) ** 2) / (4 * np.log(2))), atol=1e-14)
    # |gamma| = 1/2 at |uv| = 2 ln 2 / (pi fwhm)
    assert np.isclose(g.visibility(np.array([[2 * np.log(2) / (np.pi * fwhm), 0.0]]))[0].real, 0.5)
    n = 101
    pix = fwhm / 12.0
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2.0) * pix
    img = np.exp(-4 * np.log(2) * (xx**2 + yy**2) / fwhm**2)
    src = ImageSource.from_pixels(img, pix)
    assert np.max(np.abs(src.visibility(uv) - g.visibility(uv))) < 1e-6


def test_image_orientation_east_left_north_up():
    # a single bright pixel in the top-left corner is North-East of centre
    img = np.zeros((3, 3))
    img[0, 0] = 1.0
    src = ImageSource.from_pixels(img, 1.0 * MAS)
    assert np.allclose(src.offsets, [[1.0 * MAS, 1.0 * MAS]])


def test_unequal_apertures_state():
    arr = TelescopeArray(demo_array(4), LAM, apertures=[1.0, 2.0, 1.0, 4.0])
    rho = arr.photon_state(BinaryStar(2 * MAS, 0.3, 0.7))
    assert np.allclose(np.diag(rho).real, np.array([1, 2, 1, 4]) / 8.0)
    assert np.linalg.eigvalsh(rho).min() > -1e-12


# ----------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("M,vac", [(3, True), (4, False)])
def test_shadow_sampler_matches_exact_distribution(M, vac):
    rng = np.random.default_rng(11 + M)
    rho = _random_extended(M, rng, vac=vac)
    T = 60000
    sb = sample_single_excitation_shadows(rho, T, seed=5)
    probs = sims.shadow_probabilities(single_excitation_to_qubits(rho))
    counts = np.bincount(_codes(2 * sb.bases + sb.outcomes, 6), minlength=6**M)
    assert _gof(counts, probs) > 1e-3
    # two-sample test against the generic sampler at a fixed seed
    ref = sims.sample_shadows(single_excitation_to_qubits(rho), T, seed=6)
    counts_ref = np.bincount(_codes(2 * ref.bases + ref.outcomes, 6), minlength=6**M)
    keep = (counts + counts_ref) >= 10
    assert chi2_contingency(np.stack([counts[keep], counts_ref[keep]])).pvalue > 1e-3


@pytest.mark.parametrize("M", [2, 3])
def test_bell_sampler_matches_exact_distribution(M):
    rng = np.random.default_rng(40 + M)
    rho = _random_extended(M, rng, rank=2)
    T = 60000
    bb = sample_single_excitation_bell(rho, T, seed=9)
    probs = sims.bell_probabilities(single_excitation_to_qubits(rho))
    counts = np.bincount(_codes(bb.outcomes, 4), minlength=4**M)
    assert _gof(counts, probs) > 1e-3
    ref = sims.sample_bell(single_excitation_to_qubits(rho), T, seed=10)
    counts_ref = np.bincount(_codes(ref.outcomes, 4), minlength=4**M)
    keep = (counts + counts_ref) >= 10
    assert chi2_contingency(np.stack([counts[keep], counts_ref[keep]])).pvalue > 1e-3


def test_heralded_block_and_pure_vector_inputs():
    rng = np.random.default_rng(3)
    M = 3
    blk = _random_extended(M, rng, vac=False)[1:, 1:]
    a = sample_single_excitation_shadows(blk, 2000, seed=1, heralded=True)
    ext = np.zeros((M + 1, M + 1), complex)
    ext[1:, 1:] = blk
    b = sample_single_excitation_shadows(ext, 2000, seed=1)
    assert np.array_equal(a.bases, b.bases) and np.array_equal(a.outcomes, b.outcomes)
    # a Z-basis readout of a heralded photon always finds exactly one telescope
    z = sample_single_excitation_shadows(blk, 500, seed=2, heralded=True, bases=np.full((500, M), 2, np.uint8))
    assert np.all(z.outcomes.sum(axis=1) == 1)
    with pytest.raises(ValueError):
        sample_single_excitation_shadows(np.eye(3) * [1, -1, 1], 10)


def test_pure_point_source_bell_is_never_singlet_on_two_sites():
    # identical pure copies are symmetric under SWAP: the singlet count is even
    arr = TelescopeArray(golomb_array(), LAM)
    rho = arr.photon_state(PointSource((0.4 * MAS, 0.0)))
    bb = sample_single_excitation_bell(rho, 5000, seed=3, heralded=True)
    assert np.all((bb.outcomes == 3).sum(axis=1) % 2 == 0)


def test_sixty_four_telescopes_run_fast_and_are_consistent():
    arr = TelescopeArray(demo_array(64), LAM)
    sim = TelescopeSim(arr, UniformDisk(0.8 * MAS), seed=4)
    ph = sim.photons(count=20000)
    sb = sim.shadows(ph)
    assert sb.n == 64 and sb.T == 20000
    # <Z_j> = 1 - 2/M for every telescope
    z = np.where(sb.bases == 2, 3.0 * (1 - 2.0 * sb.outcomes), 0.0).mean(axis=0)
    assert abs(z.mean() - (1 - 2 / 64)) < 4 * 1.7 / math.sqrt(20000 * 64)
    bb = sim.bell(ph[:10000], ph[10000:])
    assert bb.n == 64 and bb.T == 10000
    # with heralded single photons, at most two sites can hold a Psi (one photon each)
    assert np.all(((bb.outcomes == 1) | (bb.outcomes == 3)).sum(axis=1) <= 2)


# ----------------------------------------------------------------------------- noise
def _mixture(sim: TelescopeSim, photons, wait, draws: int = 20000) -> np.ndarray:
    """Average of |psi><psi| over the simulation's randomness, (M+1, M+1)."""
    acc = 0
    for _ in range(draws // len(photons)):
        a = sim.amplitudes(photons, wait)
        acc = acc + np.einsum("ti,tj->ij", a, a.conj())
    return acc / (draws // len(photons) * len(photons))


def test_noise_channels_average_to_the_stated_states():
    arr = TelescopeArray(demo_array(4), LAM)
    src = BinaryStar(2 * MAS, 0.5, 0.6)
    # dark counts: (1 - f) rho + f I/M
    sim = TelescopeSim(arr, src, epsilon=1e-5, dark_prob=0.25e-5, seed=1)
    ph = sim.photons(count=40000)
    assert abs(ph.dark.mean() - 0.2) < 0.01
    avg = _mixture(sim, ph, 0.0, 40000)
    assert np.allclose(avg[1:, 1:], sim.heralded_state(), atol=0.01)
    # dephasing: coherences decay as exp(-2 tau / T2), populations untouched
    sim = TelescopeSim(arr, src, t2=1e-3, seed=2)
    ph = sim.photons(count=20000)
    tau = 0.4e-3
    avg = _mixture(sim, ph, tau, 80000)
    expect = sim.rho * math.exp(-2 * tau / 1e-3)
    np.fill_diagonal(expect, np.diag(sim.rho))
    assert np.allclose(avg[1:, 1:], expect, atol=0.01)
    # loss: population moves to the vacuum
    sim = TelescopeSim(arr, src, t1=1e-3, seed=3)
    ph = sim.photons(count=20000)
    avg = _mixture(sim, ph, 0.5e-3, 40000)
    assert abs(avg[0, 0].real - (1 - math.exp(-0.5))) < 0.01
    assert np.allclose(avg[1:, 1:], sim.rho * math.exp(-0.5), atol=0.01)


def test_arrivals_rate_and_piston_random_walk():
    arr = TelescopeArray(demo_array(3), LAM)
    sim = TelescopeSim(arr, PointSource(), epsilon=2e-6, bin_time=1e-9, piston_diffusion=4.0, seed=8)
    ph = sim.photons(duration=0.5)
    assert abs(len(ph) / 0.5 - 2000.0) < 5 * math.sqrt(1000) / 0.5
    assert np.all(np.diff(ph.t) > 0) and ph.t[-1] <= 0.5
    assert sim.now == pytest.approx(0.5)
    ph2 = sim.photons(count=100)
    assert ph2.t[0] > ph.t[-1]
    # variance of the walk after t seconds is D t per telescope (compare many telescopes)
    big = TelescopeSim(TelescopeArray(demo_array(64), LAM), PointSource(), piston_diffusion=4.0, seed=9)
    p = big.photons(duration=0.25)
    var = np.var(p.piston[-1]) * 64 / 63
    assert 0.5 < var / (4.0 * p.t[-1]) < 1.6


# ----------------------------------------------------------------------------- driver + backend
async def test_driver_paces_copies_and_carries_photons():
    import asyncio

    from qsense.drivers.telescope import TelescopeDriver
    from qsense.sims.telescope import photons_of

    sim = TelescopeSim(TelescopeArray(demo_array(4), LAM), PointSource(), epsilon=1e-5, seed=1)  # 10^4 photons/s
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    copies = [c async for c in TelescopeDriver(sim, rate=5000.0, count=1000, block=0)]  # one Copy per photon
    wall = loop.time() - t0
    assert len(copies) == 1000 and 0.15 < wall < 3.0  # ~0.2 s at 5000 copies/s (loaded CI: slack above)
    assert [c.seq for c in copies] == list(range(1000))
    assert all(c.state is sim and c.wires == (0, 1, 2, 3) for c in copies)
    t = np.array([c.t for c in copies])
    assert np.all(np.diff(t) > 0)
    ph = photons_of(copies[10:20])
    assert np.allclose(ph.t, t[10:20])
    # event time: no pacing, a fixed simulated duration
    sim2 = TelescopeSim(TelescopeArray(demo_array(4), LAM), PointSource(), epsilon=1e-5, seed=2)
    t0 = loop.time()
    fast = [c async for c in TelescopeDriver(sim2, duration=0.5, realtime=False, block=0)]
    assert loop.time() - t0 < 5.0 and abs(len(fast) - 5000) < 5 * math.sqrt(5000)
    chunks = [p async for p in TelescopeDriver(sim2, duration=0.05, realtime=False, chunk_time=0.01).photon_batches()]
    assert len(chunks) == 5 and sum(len(p) for p in chunks) > 300


async def test_backend_in_a_pipeline_event_time():
    from qsense.acquisition.memory import ManualClock, SlotMemory
    from qsense.acquisition.pipeline import Pipeline
    from qsense.acquisition.scheduler import Scheduler
    from qsense.drivers.telescope import TelescopeDriver
    from qsense.estimators.interferometry import SquaredVisibilityEstimator, VisibilityEstimator
    from qsense.sims.telescope import TelescopeBackend, TelescopeCoherence

    src = BinaryStar(3 * MAS, math.radians(60), 0.5)
    sim = TelescopeSim(TelescopeArray(demo_array(5), LAM), src, epsilon=1e-5, t2=0.01, seed=3)
    clock = ManualClock()
    mem = SlotMemory(2, TelescopeCoherence(sim.t2), clock=clock)
    sched = Scheduler("fixed", mem, ratio=0.5, clock=clock)
    vis, vis2 = VisibilityEstimator(5), SquaredVisibilityEstimator(5)
    records = []

    async def sink(batch):
        records.append(batch)

    class Only:
        def __init__(self, est, kind):
            self.est, self.kind = est, kind

        def accepts(self, kind):
            return kind == self.kind

        def update(self, batch):
            self.est.update(batch)

    pipe = Pipeline({"tel": TelescopeDriver(sim, count=6000, realtime=False)}, mem, sched, TelescopeBackend(sim),
                    estimators=[Only(vis, "shadow"), Only(vis2, "bell")], sinks=[sink], clock=clock)
    rep = await pipe.run()
    assert not rep.errors and rep.unaccounted == 0
    assert rep["records.shadow"] + 2 * rep["records.bell"] + rep["lost"] == 6000
    assert all(b.wires == (0, 1, 2, 3, 4) for b in records)
    bell = [b for b in records if b.kind == "bell"]
    waits = np.concatenate([b.wait for b in bell])
    assert np.all(waits > 0) and np.mean(waits) == pytest.approx(1e-4, rel=0.15)  # next photon, 10^4/s
    truth = sim.true_visibilities()
    e = vis.estimate()
    assert np.mean(np.abs(e.values - truth) / np.hypot(e.stderr_re, e.stderr_im)) < 2.0
    # Bell pairs waited ~0.1 ms against T2 = 10 ms: a 2% bias, well inside the errors
    e2 = vis2.estimate()
    assert np.mean(np.abs(e2.values - np.abs(truth) ** 2) / e2.stderr) < 2.0


def test_example_telescope_binary_star_runs_as_written(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "telescope_binary_star.py"
    spec = importlib.util.spec_from_file_location("telescope_binary_star", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main([])  # the defaults, exactly as a user runs it
    text = capsys.readouterr().out
    assert "single-copy fit" in text and "two-copy fit" in text and text.count("±") > 56
    for key in ("fit_single", "fit_double"):
        fit = out[key]
        for name, value in out["params"].items():
            v, e = fit[name]
            assert abs(v - value) < 4 * e, (key, name, v, e)


def test_seeded_paced_pipeline_is_reproducible_batch_for_batch():
    # issue 13 item 7: with the driver's own seed and event-time flushes, a wall-clock-paced run
    # gives the same records, batch for batch, whatever the event loop did in between
    import asyncio

    from qsense.acquisition.memory import ManualClock, SlotMemory
    from qsense.acquisition.pipeline import Pipeline
    from qsense.acquisition.scheduler import Scheduler
    from qsense.drivers.telescope import TelescopeDriver
    from qsense.sims.telescope import TelescopeBackend, TelescopeCoherence

    async def once(jitter: bool) -> list:
        sim = TelescopeSim(TelescopeArray(demo_array(4), LAM), BinaryStar(3 * MAS, 1.0, 0.5), epsilon=1e-5, t2=0.01, seed=5)
        clock = ManualClock()
        mem = SlotMemory(2, TelescopeCoherence(sim.t2), clock=clock)
        records = []

        async def sink(batch):
            records.append(batch)
            if jitter:  # a slow sink: different interleaving of driver, ingest and backend
                await asyncio.sleep(0.003)

        pipe = Pipeline({"tel": TelescopeDriver(sim, rate=20000.0, count=3000, seed=[5, 1])}, mem,
                        Scheduler("fixed", mem, ratio=0.5, clock=clock), TelescopeBackend(sim), sinks=[sink],
                        clock=clock, batch_size=128, flush_interval=2e-3, flush_clock="event")
        rep = await pipe.run()
        assert not rep.errors
        return records

    a, b = asyncio.run(once(False)), asyncio.run(once(True))
    assert len(a) == len(b) > 4
    for x, y in zip(a, b):
        assert x.kind == y.kind and x.seq == y.seq and np.array_equal(x.outcomes, y.outcomes)
        if x.kind == "shadow":
            assert np.array_equal(x.bases, y.bases)
    with pytest.raises(ValueError, match="event-time clock"):
        mem = SlotMemory(1)  # wall clock
        Pipeline([], mem, Scheduler("fixed", mem, ratio=0.5), TelescopeBackend(None), flush_clock="event")
