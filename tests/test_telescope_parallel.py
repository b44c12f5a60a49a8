"""The telescope samplers on several threads: the same records as on one, the same
uniform stream as one ``rng.random((T, M))`` draw, errors raised in a worker reach the caller."""

from __future__ import annotations

import time

import numpy as np
import pytest

from qsense.estimators import kernels
from qsense.sims.telescope import TelescopeArray, TelescopeSim, UniformDisk, demo_array
from qsense.sims.telescope.kernels import bell_kernel, shadow_kernel
from qsense.sims.telescope.parallel import UNIFORM_RUN, map_runs, run_in_chunks
from qsense.sims.telescope.samplers import bell_from_amplitudes, shadows_from_amplitudes


@pytest.fixture
def restore_threads():
    before = kernels.get_threads()
    yield
    kernels.set_threads(before)


def _amps(M: int, T: int) -> np.ndarray:
    sim = TelescopeSim(TelescopeArray(demo_array(M), 800e-9), UniformDisk(0.8e-9), piston_diffusion=100.0, seed=M)
    return sim.amplitudes(sim.photons(count=T))


@pytest.mark.parametrize("M", [4, 64])
def test_records_do_not_depend_on_the_thread_count(M, restore_threads):
    T = 3 * (UNIFORM_RUN // M) + 17  # several runs and a short last one
    amps = _amps(M, T)
    given = np.random.default_rng(9).integers(0, 3, size=(T, M), dtype=np.uint8)
    given0 = given.copy()  # the sampler returns ``given`` itself: compare with a copy
    out = {}
    for threads in (1, 2, 3):
        kernels.set_threads(threads)
        drawn = shadows_from_amplitudes(amps, np.random.default_rng(3))
        fixed = shadows_from_amplitudes(amps, np.random.default_rng(3), given)
        bell = bell_from_amplitudes(amps[: T // 2], amps[T // 2 : 2 * (T // 2)], np.random.default_rng(4))
        out[threads] = (drawn, fixed, bell)
    for threads in (2, 3):
        (b1, o1), (_, fo1), bell1 = out[1]
        (b, o), (fb, fo), bell = out[threads]
        assert np.array_equal(b, b1) and np.array_equal(o, o1)
        assert np.array_equal(fb, given0) and np.array_equal(fo, fo1)  # given bases not overwritten
        assert np.array_equal(bell, bell1)
    # drawn bases are not the given ones: the comparison above can fail
    assert not np.array_equal(out[1][0][0], given0)


def test_bell_uniforms_are_one_draw_of_the_whole_table(restore_threads):
    M, T = 64, 2 * (UNIFORM_RUN // 64) + 5
    amps = _amps(M, 2 * T)
    A, B = np.ascontiguousarray(amps[:T]), np.ascontiguousarray(amps[T:])
    want = np.empty((T, M), dtype=np.uint8)
    bell_kernel(A, B, np.random.default_rng(11).random((T, M)), want)
    kernels.set_threads(2)
    assert np.array_equal(bell_from_amplitudes(A, B, np.random.default_rng(11)), want)


def test_shadow_runs_equal_one_kernel_call(restore_threads):
    M, T = 16, 2 * (UNIFORM_RUN // 16) + 3
    amps = _amps(M, T)
    b = np.empty((T, M), dtype=np.uint8)
    o = np.empty((T, M), dtype=np.uint8)
    shadow_kernel(amps, b, np.random.default_rng(5).random((T, M)), True, b, o)
    kernels.set_threads(2)
    b2, o2 = shadows_from_amplitudes(amps, np.random.default_rng(5))
    assert np.array_equal(b2, b) and np.array_equal(o2, o)


def test_a_worker_error_reaches_the_caller_and_nothing_runs_on(restore_threads):
    kernels.set_threads(2)
    seen = []

    def kernel(lo, hi, u):
        seen.append(lo)
        if lo >= 2 * (UNIFORM_RUN // 8):
            raise RuntimeError("kernel failed")
        return 0

    with pytest.raises(RuntimeError, match="kernel failed"):
        run_in_chunks(10 * (UNIFORM_RUN // 8), 8, np.random.default_rng(0), kernel)
    n = len(seen)
    assert n < 10  # stopped at the failure, not run to the end
    time.sleep(0.2)
    assert len(seen) == n  # no run was left going after the call returned


def test_map_runs_leaves_no_run_going_after_an_error(restore_threads):
    kernels.set_threads(2)
    done = []

    def fn(lo, hi):
        if lo == 0:
            time.sleep(0.05)
            raise RuntimeError("run failed")
        time.sleep(0.2)  # still running when the first run fails
        done.append(lo)

    with pytest.raises(RuntimeError, match="run failed"):
        map_runs(40, 10, fn)
    n = len(done)
    assert n >= 1  # the run already going was waited for, not abandoned
    time.sleep(0.4)
    assert len(done) == n  # and nothing ran on after the call returned


def test_zero_vectors_are_counted_across_runs(restore_threads):
    kernels.set_threads(2)
    M = 8
    T = 3 * (UNIFORM_RUN // M)
    amps = np.ones((T, M + 1), dtype=np.complex128)
    amps[[5, T - 1]] = 0.0
    with pytest.raises(ValueError, match=r"zero amplitude vector \(2 of"):
        shadows_from_amplitudes(amps, np.random.default_rng(0))


def test_phase_rotation_equals_numpy_on_any_thread_count(restore_threads):
    from qsense.sims.telescope.samplers import rotate_phases

    rng = np.random.default_rng(2)
    T, M = 3 * (UNIFORM_RUN // 64) + 9, 64
    amps = rng.standard_normal((T, M + 1)) + 1j * rng.standard_normal((T, M + 1))
    phase = rng.standard_normal((T, M)) * 40.0  # far beyond 2 pi: argument reduction matters
    want = amps.copy()
    want[:, 1:] *= np.exp(1j * phase)
    for threads in (1, 2):
        kernels.set_threads(threads)
        got = amps.copy()
        rotate_phases(got, phase)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)
        assert np.array_equal(got[:, 0], amps[:, 0])  # the vacuum column is not rotated
    with pytest.raises(ValueError, match="complex128 C-contiguous"):
        rotate_phases(amps[:, ::2], phase)


@pytest.mark.parametrize("draw", [True, False])
def test_the_column_and_row_fills_of_the_shadow_kernel_agree(monkeypatch, draw):
    # the kernel fills its blocks qubit by qubit up to _COLUMN_FILL_MAX telescopes, shot by shot
    # above (only M > 128 reaches that branch when compiled): run the Python body both ways
    from qsense.sims.telescope import kernels as kmod

    M, T = 6, 2 * kmod._BLOCK + 7  # two full blocks and a short one
    amps = _amps(M, T)
    amps[3] = 0.0  # an all-zero vector is counted on both
    u = np.random.default_rng(8).random((T, M))
    given = np.random.default_rng(9).integers(0, 3, size=(T, M), dtype=np.uint8)
    out = {}
    for fill_max in (M, M - 1):  # column fill, then row fill
        monkeypatch.setattr(kmod, "_COLUMN_FILL_MAX", fill_max)
        b = given.copy() if not draw else np.empty((T, M), dtype=np.uint8)
        o = np.empty((T, M), dtype=np.uint8)
        zero = kmod.shadow_kernel.py_func(amps, b, u, draw, b, o)
        out[fill_max] = (zero, b, o)
    (z0, b0, o0), (z1, b1, o1) = out[M], out[M - 1]
    assert z0 == z1 == 1
    assert np.array_equal(b0, b1) and np.array_equal(o0, o1)
    if not draw:
        assert np.array_equal(b0, given)
    # and the compiled kernel (column fill at this M) gives the same records
    b = given.copy() if not draw else np.empty((T, M), dtype=np.uint8)
    o = np.empty((T, M), dtype=np.uint8)
    assert kmod.shadow_kernel(amps, b, u, draw, b, o) == 1
    assert np.array_equal(b, b0) and np.array_equal(o, o0)
