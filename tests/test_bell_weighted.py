"""The support-grouped reweighted Bell sums equal the dense path they replaced, and are right.

The reference is the historical dense update of BellEstimator's decoherence branch,
copied verbatim below (a (shots x terms) parity matrix per block of 8192 shots).
Sums S, second moments Q, the purity sums and the Pauli-sum moments must agree
to 1e-12 relative (the grouped kernel adds in another order) for every model, both
kernel paths (numba histogram / direct, NumPy), packed and unpacked batches and
batch sizes that are not multiples of any block; and the estimates must be
unbiased against exact values for a decohered state.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from exact import dm, random_state

import qsense.estimators.kernels as K
from qsense import BellBatch, BellEstimator, sims
from qsense.estimators import bell_weighted as BW
from qsense.estimators.bell import Depolarizing
from qsense.estimators.decoherence import T1T2, Dephasing
from qsense.pauli import PauliObservable, parse_observable


# --------------------------------------------------------------------------- reference
def _sign_table(outcomes: np.ndarray) -> np.ndarray:
    a = outcomes >> 1
    b = outcomes & 1
    return np.concatenate([a, a ^ b, b, np.zeros((outcomes.shape[0], 1), np.uint8)], axis=1)


class DenseBell(BellEstimator):
    """BellEstimator with the historical dense decoherence update (verbatim)."""

    def update(self, batch: BellBatch) -> None:
        if self._table is None:
            self._bind(batch.wires)
        T = batch.T
        if T == 0:
            return
        t = self._table
        ysign = np.where((t.letters == 2).sum(axis=1) % 2 == 1, -1.0, 1.0)
        masks = self._masks(batch.n)
        model = self.decoherence
        depol = isinstance(model, Depolarizing)
        singlet = batch.outcomes == 3
        if depol:
            w = np.exp(batch.wait / self.t2)  # (T,): the historical arithmetic, kept bit for bit
        else:
            rate_p = model.pauli_rate(np.where(t.support < 0, 0, t.letters))  # (M,) 1/s
        if t.M:
            sign_idx = np.where(t.support < 0, 3 * batch.n, (t.letters.astype(np.int64) - 1) * batch.n + np.maximum(t.support, 0))
            for lo in range(0, T, 8192):
                hi = min(T, lo + 8192)
                st = _sign_table(batch.outcomes[lo:hi])
                par = np.zeros((hi - lo, t.M), dtype=np.uint8)
                for s in range(sign_idx.shape[1]):
                    par ^= st[:, sign_idx[:, s]]
                if depol:
                    reweight = np.power(w[lo:hi, None], t.weight[None, :])
                else:
                    reweight = np.exp(batch.wait[lo:hi, None] * rate_p[None, :])
                vals = (1.0 - 2.0 * par) * ysign * reweight
                self._S += vals.sum(axis=0)
                self._Q += (vals**2).sum(axis=0)
                if self._sums:
                    self._sums.add(vals[:, self._sums.terms])
        if depol:
            f_trip = (1.0 + w) / 2.0
            f_sing = (1.0 - 3.0 * w) / 2.0
            per_wire = np.where(singlet, f_sing[:, None], f_trip[:, None])  # (T, n)
        else:
            inv = 1.0 / model.factors(batch.wait)  # (T, 3)
            a = (batch.outcomes >> 1).astype(np.float64)
            b = (batch.outcomes & 1).astype(np.float64)
            lx, lz = 1.0 - 2.0 * a, 1.0 - 2.0 * b
            per_wire = 0.5 * (1.0 + lx * inv[:, 0:1] - lx * lz * inv[:, 1:2] + lz * inv[:, 2:3])
        for i, m in enumerate(masks):
            v = np.prod(per_wire[:, m], axis=1)
            self._pS[i] += v.sum()
            self._pQ[i] += (v**2).sum()
        self._count += T


# --------------------------------------------------------------------------- helpers
MODELS = {"depolarizing": lambda: Depolarizing(2e-3), "dephasing": lambda: Dephasing(2e-3),
          "t1t2": lambda: T1T2(3e-3, 2e-3)}


@pytest.fixture
def jit_state():
    had = K._use_jit and K.jit_available()
    yield
    K.use_jit(had)


def _words(rng: np.random.Generator, n: int, count: int, kmax: int, supports: list | None = None) -> list[str]:
    out = []
    for _ in range(count):
        qs = supports[int(rng.integers(len(supports)))] if supports else rng.choice(n, int(rng.integers(0, kmax + 1)), replace=False)
        out.append(" ".join(f"{'XYZ'[rng.integers(3)]}{q}" for q in qs) or "I")
    return out


def _sums(rng: np.random.Generator, words: list[str], count: int) -> list[PauliObservable]:
    """Pauli sums of 3 of the words (their moments are tracked per shot)."""
    out = []
    for i in range(count):
        pick = rng.choice(len(words), 3, replace=False)
        terms = tuple((float(rng.uniform(0.2, 1.5)), parse_observable(words[j]).terms[0][1]) for j in pick)
        out.append(PauliObservable(terms, f"sum{i}"))
    return out


def _batch(rng: np.random.Generator, T: int, n: int, packed: bool, mean_wait: float = 1e-3) -> BellBatch:
    b = BellBatch(rng.integers(0, 4, (T, n), dtype=np.uint8), wait=rng.exponential(mean_wait, T))
    return BellBatch.from_packed(b.packed(), T, wait=b.wait) if packed else b


def _compare(new: BellEstimator, old: BellEstimator) -> None:
    for a, b in ((new._S, old._S), (new._Q, old._Q), (new._pS, old._pS), (new._pQ, old._pQ)):
        assert a.shape == b.shape
    # relative to the sum of |values| (= sqrt(Q * T) scale): S may cancel to ~0
    scale = np.maximum(np.sqrt(old._Q * max(old.count, 1)), 1.0)
    assert np.all(np.abs(new._S - old._S) <= 1e-12 * scale), np.max(np.abs(new._S - old._S) / scale)
    np.testing.assert_allclose(new._Q, old._Q, rtol=1e-12)
    np.testing.assert_allclose(new._pS, old._pS, rtol=1e-12, atol=1e-12 * max(old.count, 1))
    np.testing.assert_allclose(new._pQ, old._pQ, rtol=1e-12)
    if new._sums:
        np.testing.assert_allclose(new._sums.Q, old._sums.Q, rtol=1e-12)
    assert new.count == old.count


def _run_both(obs: list[str], model, batches: list[BellBatch], subsystems=()) -> tuple[BellEstimator, BellEstimator]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # t1t2 is not unital (documented)
        new = BellEstimator(obs, decoherence=model, purity_subsystems=subsystems)
        old = DenseBell(obs, decoherence=model, purity_subsystems=subsystems)
    for b in batches:
        new.update(b)
        old.update(b)
    return new, old


# --------------------------------------------------------------------------- equality with the dense path
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("jit", [True, False])
def test_small_registers_equal_the_dense_path(model, jit, jit_state):
    """n = 1..8, random supports (identity and weight n included) and few repeated supports
    (the histogram path), Pauli sums, several batch sizes, packed and unpacked."""
    if jit and not K.jit_available():
        pytest.skip("numba unavailable")
    K.use_jit(jit)
    rng = np.random.default_rng(2 * list(MODELS).index(model) + jit)  # hash(str) changes per process
    for n in range(1, 9):
        words = _words(rng, n, 25, n) + ["I", " ".join(f"Y{q}" for q in range(n))]
        few = [rng.choice(n, min(n, 1 + q % 3), replace=False) for q in range(3)]
        words += _words(rng, n, 30, n, supports=few)
        obs = words + _sums(rng, words, 4)
        batches = [_batch(rng, T, n, packed=(i % 2 == 1)) for i, T in enumerate((1, 63, 700, 8193 if n in (3, 7) else 257))]
        new, old = _run_both(obs, MODELS[model](), batches, subsystems=[(0,), tuple(range(0, n, 2))])
        _compare(new, old)
        np.testing.assert_allclose(new.estimate().values, old.estimate().values, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("model", list(MODELS))
def test_64_wires_weights_1_2_3_and_sums(model):
    """The demo's regime: 64 wires, all-pairs XX/XY/YX/YY (4 terms per support), plus
    weight-1 and weight-3 terms and Pauli sums; T = 9000 crosses the dense path's block."""
    rng = np.random.default_rng(64)
    n = 64
    pairs = [(j, k) for j in range(0, n, 3) for k in range(j + 1, n, 5)]
    words = [f"{a}{j} {b}{k}" for j, k in pairs for a in "XY" for b in "XY"]
    words += [f"{'XYZ'[q % 3]}{q}" for q in range(n)]
    words += [f"Z{q} X{(q + 7) % n} Y{(q + 30) % n}" for q in range(0, n, 2)]
    obs = words + _sums(rng, words, 10)
    batches = [_batch(rng, 9000, n, packed=True), _batch(rng, 37, n, packed=False)]
    new, old = _run_both(obs, MODELS[model](), batches, subsystems=[(0, 1, 2)])
    _compare(new, old)


def test_grouping_uses_both_kernel_branches():
    """The plan of the demo's term set has 4 terms per (support, rate) group: the histogram
    branch; a lone weight-8 term has 4^8 bins, more than HIST_MAX: the direct branch."""
    from qsense.pauli import compile_observables

    t = compile_observables([parse_observable(w) for w in ["X0 X1", "X0 Y1", "Y0 X1", "Y0 Y1", "Z0 X1", " ".join(f"X{q}" for q in range(8))]],
                            tuple(range(8)))
    dep = BW.weighted_plan(t, Depolarizing(1.0))
    assert dep.grp_k.tolist() == [2, 8] and np.diff(dep.grp_start).tolist() == [5, 1]
    deph = BW.weighted_plan(t, Dephasing(1.0))  # Z0 X1 decays at one rate, the XY words at two
    assert sorted(zip(deph.grp_k.tolist(), np.diff(deph.grp_start).tolist())) == [(2, 1), (2, 4), (8, 1)]
    assert 4 ** 8 > BW.HIST_MAX and 4**2 * 4 < BW.HIST_MAX


def test_identity_and_no_wires_cases():
    rng = np.random.default_rng(3)
    b = _batch(rng, 100, 2, packed=False)
    new, old = _run_both(["I", "X0", "Y1 Z0", *_sums(rng, ["I", "X0", "Z1"], 2)], Depolarizing(1e-3), [b])
    _compare(new, old)
    empty = BellBatch(np.zeros((5, 0), np.uint8), wait=np.full(5, 1e-4))
    new, old = _run_both(["I"], Dephasing(1e-3), [empty])
    _compare(new, old)
    assert new.estimate().values[0] == 1.0


def test_checkpoint_round_trip_keeps_the_sums():
    rng = np.random.default_rng(5)
    obs = _words(rng, 6, 40, 4) + _sums(rng, _words(rng, 6, 10, 3), 3)
    est = BellEstimator(obs, decoherence=Dephasing(2e-3), purity_subsystems=[(1, 2)])
    est.update(_batch(rng, 500, 6, packed=True))
    again = BellEstimator.from_bytes(est.to_bytes())
    for name in ("_S", "_Q", "_pS", "_pQ"):
        np.testing.assert_array_equal(getattr(again, name), getattr(est, name))
    np.testing.assert_array_equal(again._sums.Q, est._sums.Q)
    b = _batch(rng, 300, 6, packed=False)
    est.update(b)
    again.update(b)
    np.testing.assert_array_equal(again.estimate().values, est.estimate().values)
    # a state the dense path accumulated (same S/Q layout) continues under the grouped kernel
    old = DenseBell(obs, decoherence=Dephasing(2e-3), purity_subsystems=[(1, 2)])
    old.update(_batch(np.random.default_rng(6), 400, 6, packed=False))
    resumed = BellEstimator.from_bytes(old.to_bytes())
    resumed.update(b)
    old.update(b)
    _compare(resumed, old)


# --------------------------------------------------------------------------- physics
@pytest.mark.parametrize("model", ["depolarizing", "dephasing"])
def test_reweighted_estimates_are_unbiased_for_a_decohered_state(model):
    """A 3-qubit pure state, the first copy decohered for tau in {0.1, 0.3} T2: the
    reweighted tr(P rho)^2 agree with the exact values within their error bars."""
    rng = np.random.default_rng(11)
    rho = dm(random_state(3, rng))
    words = ["X0 X1", "X0 Y1", "Y1 Z2", "Z0 Z1 Z2", "X0 Y1 Z2", "Z2", "Y0"]
    truth = sims.exact_square(rho, words)
    t2 = 1.0
    est = BellEstimator(words, t2=t2, decoherence=model, purity_subsystems=[(0,)])
    for j, tau in enumerate((0.1, 0.3)):
        est.update(sims.sample_bell_pair(sims.decohere(rho, tau, t2=t2, model=model), rho, 40000, seed=(7, j), wait=tau))
    r = est.estimate()
    z = (r.values - truth) / r.stderr
    assert np.all(np.abs(z) < 4.5), z
    # and the same data without the reweighting is biased by the decay (the test can fail)
    naive = BellEstimator(words)
    for j, tau in enumerate((0.1, 0.3)):
        naive.update(sims.sample_bell_pair(sims.decohere(rho, tau, t2=t2, model=model), rho, 40000, seed=(7, j), wait=tau))
    zn = (naive.estimate().values - truth) / naive.estimate().stderr
    assert np.max(np.abs(zn)) > 6
    p = est.purity()
    assert abs(p.values[0] - 1.0) < 4.5 * p.stderr[0]


def test_exact_expectation_over_all_outcomes():
    """The estimator's expectation over the exact Bell distribution of a decohered pair is
    tr(P rho)^2 exactly (unital models), term by term, through the grouped kernel."""
    rng = np.random.default_rng(2)
    n, tau, t2 = 3, 0.35, 1.0
    rho = dm(random_state(n, rng))
    words = ["X0 X1", "X0 Y1", "Y0 X1", "Y0 Y1", "Z0 Z2", "X0 Y1 Z2", "Y2", "I"]
    truth = sims.exact_square(rho, words)
    for model in ("depolarizing", "dephasing"):
        p = sims.bell_probabilities(sims.decohere(rho, tau, t2=t2, model=model), rho)
        codes = np.array([[(c >> (2 * (n - 1 - q))) & 3 for q in range(n)] for c in range(4**n)], dtype=np.uint8)
        est = BellEstimator(words, t2=t2, decoherence=model)
        # weighting each outcome by its probability: one batch with every outcome once and
        # S_j = sum_c value_c; the expectation is sum_c p_c value_c
        vals = np.zeros(len(words))
        for c in range(4**n):
            e = BellEstimator(words, t2=t2, decoherence=model)
            e.update(BellBatch(codes[c : c + 1], wait=np.array([tau])))
            vals += p[c] * e._S
        np.testing.assert_allclose(vals, truth, atol=1e-12)
        est.update(BellBatch(codes, wait=np.full(4**n, tau)))  # all outcomes in one batch: the histogram path
        ref = DenseBell(words, t2=t2, decoherence=model)
        ref.update(BellBatch(codes, wait=np.full(4**n, tau)))
        _compare(est, ref)
    assert math.isfinite(vals.sum())


def test_threads_give_the_same_sums(jit_state):
    """Large jobs split the (support, rate) groups over the counting threads: each group is still
    summed by one thread in shot order, so 1 and 3 threads agree bit for bit."""
    if not K.jit_available():
        pytest.skip("numba unavailable")
    had = K.get_threads()
    rng = np.random.default_rng(8)
    n = 24
    words = [f"{a}{j} {b}{k}" for j in range(n) for k in range(j + 1, n) for a in "XY" for b in "XZ"] + _words(rng, n, 200, 5)
    batch = _batch(rng, 6000, n, packed=False)
    assert 6000 * len(words) > BW.PARALLEL_MIN_SHOT_GROUPS
    out = []
    try:
        for threads in (1, 3):
            K.set_threads(threads)
            est = BellEstimator(words, decoherence=Dephasing(1e-3))
            est.update(batch)
            out.append(est._S.copy())
    finally:
        K.set_threads(had)
    np.testing.assert_array_equal(out[0], out[1])
    ref = DenseBell(words, decoherence=Dephasing(1e-3))
    ref.update(batch)
    _compare(est, ref)


def test_no_shots_by_terms_matrix_at_the_daemons_warm_up_size():
    """The daemon folds a 65,536-shot batch into each estimator at start; with the 8,064 terms of
    -M 64 the dense path allocated (8192 x 8064) float64 blocks (0.5 GiB each, 2.4 GB RSS in the
    demo). The grouped path's NumPy allocations stay at the batch's own size (tracemalloc sees them)."""
    import tracemalloc

    n, T = 64, 65536
    words = [f"{a}{j} {b}{k}" for j in range(n) for k in range(j + 1, n) for a in "XY" for b in "XY"]
    rng = np.random.default_rng(4)
    batch = BellBatch(rng.integers(0, 4, (T, n), dtype=np.uint8), wait=np.zeros(T))
    est = BellEstimator(words, t2=0.02)
    est.update(batch[:10])  # bind, group and compile outside the measurement
    tracemalloc.start()
    try:
        est.update(batch)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{peak / 2**20:.0f} MiB"
    # wait 0: no decay, so the reweighted sums are the plain Bell sums of the same shots
    plain = BellEstimator(words)
    plain.update(batch[:10])
    plain.update(batch)
    np.testing.assert_allclose(est._S, plain._S, rtol=0, atol=1e-9)


@pytest.mark.parametrize("model", ["depolarizing", "t1t2"])
@pytest.mark.parametrize("jit", [True, False])
def test_high_weights_on_64_wires(model, jit, jit_state):
    """Weight-64 and weight-40 terms, several per support (4^64 bins would overflow: the
    direct branch), next to low-weight ones: the same sums as the dense path, compiled
    and through the NumPy fallback (64 parity slots per term)."""
    if jit and not K.jit_available():
        pytest.skip("numba unavailable")
    K.use_jit(jit)
    rng = np.random.default_rng(40)
    n = 64
    full = [" ".join(f"{'XYZ'[(q * s) % 3]}{q}" for q in range(n)) for s in (1, 2, 5)]
    forty = [" ".join(f"{'XYZ'[(q + s) % 3]}{q}" for q in range(0, 80, 2) if q < n) for s in range(3)]
    forty += [" ".join(f"{'XY'[(q + s) % 2]}{q}" for q in range(40)) for s in range(2)]
    words = full + forty + _words(rng, n, 30, 3)
    # short waits: w^64 stays O(1)
    batches = [_batch(rng, 700, n, packed=True, mean_wait=1e-5), _batch(rng, 65, n, packed=False, mean_wait=1e-5)]
    new, old = _run_both(words + _sums(rng, words, 3), MODELS[model](), batches, subsystems=[tuple(range(n))])
    _compare(new, old)
