"""The two-copy advantage, reproduced (Huang et al., Science 376, 1182 (2022)).

Task (docs/physics.md §2, reference check): an unknown n-qubit state
ρ = (I + αP)/2^n, where P is one of two known candidate Paulis {P, Q} of full
weight n (random letters X/Y/Z on every qubit).  Decide which one is present.

* **Single-copy shadows** (random Pauli basis per qubit): a snapshot says
  anything about P only when its n random bases all match P, which happens with
  probability 3^-n.  Decision: the larger of |⟨P⟩| and |⟨Q⟩| estimated from the
  snapshots.  Copies needed grow like 3^n.
* **Two-copy Bell measurements**: every shot gives the ±1 eigenvalue of P⊗P and
  of Q⊗Q at once, with means tr(Pρ)² = α² and tr(Qρ)² = 0, whatever n is.
  Decision: the sign of Σ(x_P − x_Q).  Copies needed are constant in n
  (accuracy 1/2 + α²/4 with one pair).

What the separation is against: single copies measured *first*, in bases chosen
without knowing P and Q (random Pauli bases: the setting of the exponential lower
bound), or equivalently P being one unknown among many.  With P and Q announced,
single copies measured in P's eigenbasis (:func:`accuracy_informed`) decide as well
as Bell pairs: the outcome product has mean α under P and is a fair coin under Q,
and the likelihood-ratio rule reaches ½ Σ_k max(Bin(k; 8, (1+α)/2), Bin(k; 8, ½)) =
0.954 with 8 copies (α = 0.9) at every n.  The report prints it beside the rest.

Decisions go through qsense's own estimators (``engine="estimator"``:
:class:`qsense.BellEstimator` for P⊗P and Q⊗Q, :class:`qsense.ShadowEstimator` for
⟨P⟩ and ⟨Q⟩, ``ShadowEstimator(method="matched")`` for the informed baseline) on
:class:`qsense.BellBatch` / :class:`qsense.ShadowBatch` records.  The long
copies-needed scans use ``engine="arith"``, the same per-shot values vectorised over
trials (one estimator per trial costs ~2 ms); on the same records both engines give
identical decisions (tests/test_advantage.py).

For these states the outcome distributions have closed forms, so we sample them
exactly without 2^n matrices (checked against the generic ``sims`` samplers in
tests/test_advantage.py):

* shadows: bases uniform; outcome bits uniform except that, when every basis on
  supp(P) matches P, the parity of the bits on supp(P) is even with probability
  (1 + α)/2 (a snapshot's probability is 2^-n (1 + α Π_q ⟨b_q|P_q|b_q⟩)/3^n);
* Bell: p(codes) = 4^-n (1 + α² λ_P(codes)), with λ_P the product of the pair
  eigenvalues XX = (-1)^a, ZZ = (-1)^b, YY = -(-1)^(a+b): codes uniform, then
  the P-eigenvalue fixed to +1 with probability (1 + α²)/2 by flipping one bit
  on supp(P) (a bijection between the two eigenvalue classes).

For large n the shadow experiment needs ~10^8 snapshots per trial; there we
sample the sufficient statistic directly: per snapshot the only relevant events
are "matches P with sign ±" and "matches Q with sign ±" (probabilities
3^-n (1 ± α)/2 and 3^-n/2; a snapshot cannot match both), so the counts are one
multinomial draw per trial: the same distribution as the explicit sampler.

Theory: Bell accuracy after T pairs is exact (a sum of T i.i.d. steps +1, 0, -1
with probabilities (1+α²)/4, 1/2, (1−α²)/4); shadow accuracy depends on
μ = N 3^-n only, through two independent Skellam variables (exact as 3^-n → 0),
so the shadow copies needed are μ* 3^n.

Run:  python examples/two_copy_advantage.py --nmax 12 --trials 400 --out /tmp/advantage.png
(by default the plot goes to a qsense-examples folder in the system temp dir, never into the repository)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from typing import Callable, Sequence

import numpy as np

LETTERS = "XYZ"
BASIS = {"X": 0, "Y": 1, "Z": 2}

#: explicit per-snapshot sampling is used while trials * copies * n stays below this
EXPLICIT_BUDGET = 2 * 10**7


# -- states and exact fast samplers -------------------------------------------------
def random_full_weight_paulis(n: int, rng: np.random.Generator) -> tuple[str, str]:
    """Two distinct Pauli strings with a non-identity letter on every qubit."""
    while True:
        P = "".join(rng.choice(list(LETTERS), n))
        Q = "".join(rng.choice(list(LETTERS), n))
        if P != Q:
            return P, Q


def pauli_state(P: str, alpha: float) -> np.ndarray:
    """The density matrix (I + αP)/2^n (small n only: for checks)."""
    mats = {
        "I": np.eye(2),
        "X": np.array([[0, 1], [1, 0]]),
        "Y": np.array([[0, -1j], [1j, 0]]),
        "Z": np.diag([1.0, -1.0]),
    }
    op = np.array([[1.0]])
    for c in P:
        op = np.kron(op, mats[c])
    d = 2 ** len(P)
    return (np.eye(d) + alpha * op) / d


def _support(P: str) -> tuple[np.ndarray, np.ndarray]:
    supp = np.array([i for i, c in enumerate(P) if c != "I"], dtype=np.int64)
    letters = np.array([BASIS[P[i]] for i in supp], dtype=np.uint8)
    return supp, letters


def sample_pauli_state_shadows(P: str, alpha: float, shots: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Exact random-Pauli snapshots of (I + αP)/2^n: uint8 (shots, n) bases and bits."""
    n = len(P)
    supp, letters = _support(P)
    bases = rng.integers(0, 3, size=(shots, n), dtype=np.uint8)
    bits = rng.integers(0, 2, size=(shots, n), dtype=np.uint8)
    if supp.size:
        matched = np.all(bases[:, supp] == letters, axis=1)
        m = int(matched.sum())
        if m:
            # eigenvalue product +1 (even parity) with probability (1 + alpha)/2
            want_odd = rng.random(m) < (1.0 - alpha) / 2.0
            rows = np.flatnonzero(matched)
            odd = np.bitwise_xor.reduce(bits[np.ix_(rows, supp)], axis=1).astype(bool)
            flip = rows[odd != want_odd]
            bits[flip, supp[0]] ^= 1
    return bases, bits


def _bell_parity_bit(P: str) -> list[tuple[int, int]]:
    """Per qubit of supp(P): which code bits enter the eigenvalue parity (mask on 2a+b)."""
    # X: a (mask 2), Z: b (mask 1), Y: a xor b (mask 3) with an extra sign -1
    return [(i, {"X": 2, "Y": 3, "Z": 1}[c]) for i, c in enumerate(P) if c != "I"]


def bell_values(codes: np.ndarray, P: str) -> np.ndarray:
    """±1 eigenvalue of P⊗P per Bell shot (float64 (T,))."""
    parity = np.zeros(codes.shape[0], dtype=np.uint8)
    ny = 0
    for i, mask in _bell_parity_bit(P):
        c = codes[:, i] & mask
        parity ^= (c >> 1) ^ (c & 1)
        ny += P[i] == "Y"
    return (1.0 - 2.0 * parity) * (-1.0) ** ny


def sample_pauli_state_bell(P: str, alpha: float, shots: int, rng: np.random.Generator) -> np.ndarray:
    """Exact two-copy Bell codes of (I + αP)/2^n ⊗ itself: uint8 (shots, n)."""
    n = len(P)
    codes = rng.integers(0, 4, size=(shots, n), dtype=np.uint8)
    terms = _bell_parity_bit(P)
    if not terms:
        return codes
    want = np.where(rng.random(shots) < (1.0 + alpha * alpha) / 2.0, 1.0, -1.0)
    have = bell_values(codes, P)
    i, mask = terms[0]
    # flipping a (mask 2 or 3 letters X, Y) or b (Z) on one qubit flips the eigenvalue
    codes[have != want, i] ^= 2 if mask in (2, 3) else 1
    return codes


def shadow_values(bases: np.ndarray, bits: np.ndarray, P: str) -> np.ndarray:
    """Snapshot estimates 3^k Π(1 − 2b) of ⟨P⟩ (0 when a basis misses), float64 (T,)."""
    supp, letters = _support(P)
    matched = np.all(bases[:, supp] == letters, axis=1)
    parity = np.bitwise_xor.reduce(bits[:, supp], axis=1) if supp.size else np.zeros(len(bases), np.uint8)
    return np.where(matched, 3.0 ** supp.size * (1.0 - 2.0 * parity), 0.0)


def shadow_match_counts(n: int, alpha: float, copies: int, trials: int, rng: np.random.Generator) -> np.ndarray:
    """Sufficient statistic of ``trials`` shadow experiments of ``copies`` snapshots
    for full-weight P ≠ Q: int64 (trials, 4) counts of (P+, P−, Q+, Q−)."""
    p = 3.0**-n
    probs = [p * (1 + alpha) / 2, p * (1 - alpha) / 2, p / 2, p / 2]
    probs.append(max(0.0, 1.0 - sum(probs)))
    return rng.multinomial(copies, probs, size=trials)[:, :4]


# -- accuracies (measured) ------------------------------------------------------------
def _decide(score: np.ndarray, rng: np.random.Generator) -> float:
    """Fraction correct when deciding 'P' for score > 0 and a coin flip on ties."""
    return float(np.mean(np.where(score > 0, 1.0, np.where(score < 0, 0.0, rng.random(score.shape) < 0.5))))


def _estimator_scores_bell(codes: np.ndarray, P: str, Q: str, pairs: int) -> np.ndarray:
    """Per trial: T·(est⟨P⊗P⟩ − est⟨Q⊗Q⟩) from a :class:`qsense.BellEstimator` fed that trial's records."""
    from qsense import BellBatch, BellEstimator

    rows = codes.reshape(-1, pairs, codes.shape[1])
    out = np.empty(len(rows))
    for j, c in enumerate(rows):
        est = BellEstimator([P, Q])
        est.update(BellBatch(c))
        v = est.estimate().values
        out[j] = pairs * (v[0] - v[1])  # the sum of ±1 values: exact integers, so ties stay ties
    return np.round(out)


def _estimator_scores_shadow(bases: np.ndarray, bits: np.ndarray, P: str, Q: str, copies: int) -> np.ndarray:
    """Per trial: |est⟨P⟩| − |est⟨Q⟩| from a :class:`qsense.ShadowEstimator` (plain mean) on that trial's snapshots."""
    from qsense import ShadowBatch, ShadowEstimator

    n = bases.shape[1]
    out = np.empty(len(bases) // copies)
    for j in range(len(out)):
        est = ShadowEstimator([P, Q])
        est.update(ShadowBatch(bases[j * copies : (j + 1) * copies], bits[j * copies : (j + 1) * copies]))
        v = est.estimate().values
        # back to integer match counts (x 3^-n copies) so that exact ties are seen as ties
        out[j] = np.round(copies * np.abs(v[0]) / 3.0**n) - np.round(copies * np.abs(v[1]) / 3.0**n)
    return out


def accuracy_bell(n: int, alpha: float, pairs: int, trials: int, rng: np.random.Generator, engine: str = "arith") -> float:
    """Measured P-vs-Q accuracy with ``pairs`` Bell shots per trial (fresh P, Q per block of trials).

    ``engine="estimator"`` decides from :class:`qsense.BellEstimator` estimates (one estimator per trial,
    ~2 ms each); ``"arith"`` computes the same per-shot eigenvalues directly, vectorised over trials.  On the
    same records both give the same decisions (tests/test_advantage.py), so long scans use ``"arith"``.
    """
    score = np.empty(trials)
    # a fresh random pair (P, Q) per block of trials; the accuracy does not depend on them
    blocks = max(1, min(trials, 20))
    edges = np.linspace(0, trials, blocks + 1).astype(int)
    for lo, hi in zip(edges[:-1], edges[1:]):
        P, Q = random_full_weight_paulis(n, rng)
        codes = sample_pauli_state_bell(P, alpha, (hi - lo) * pairs, rng)
        if engine == "estimator":
            score[lo:hi] = _estimator_scores_bell(codes, P, Q, pairs)
        else:
            d = (bell_values(codes, P) - bell_values(codes, Q)).reshape(hi - lo, pairs)
            score[lo:hi] = d.sum(axis=1)
    return _decide(score, rng)


def accuracy_shadow(
    n: int, alpha: float, copies: int, trials: int, rng: np.random.Generator,
    explicit: bool | None = None, engine: str = "arith",
) -> tuple[float, str]:
    """Measured P-vs-Q accuracy with ``copies`` snapshots per trial; returns
    (accuracy, method) with method ``"explicit"`` or ``"statistic"``.  ``engine`` as in :func:`accuracy_bell`
    (explicit records only: the sufficient statistic has no records to feed an estimator)."""
    if explicit is None:
        explicit = trials * copies * n <= EXPLICIT_BUDGET
    if explicit:
        score = np.empty(trials)
        P, Q = random_full_weight_paulis(n, rng)
        chunk = max(1, EXPLICIT_BUDGET // 8 // max(copies * n, 1))
        for lo in range(0, trials, chunk):
            hi = min(trials, lo + chunk)
            b, o = sample_pauli_state_shadows(P, alpha, (hi - lo) * copies, rng)
            if engine == "estimator":
                score[lo:hi] = _estimator_scores_shadow(b, o, P, Q, copies)
            else:
                # integer match sums (the 3^n factor is common to P and Q)
                sP = shadow_values(b, o, P).reshape(hi - lo, copies).sum(axis=1) / 3.0**n
                sQ = shadow_values(b, o, Q).reshape(hi - lo, copies).sum(axis=1) / 3.0**n
                score[lo:hi] = np.abs(sP) - np.abs(sQ)
        return _decide(score, rng), "explicit"
    c = shadow_match_counts(n, alpha, copies, trials, rng)
    score = np.abs(c[:, 0] - c[:, 1]) - np.abs(c[:, 2] - c[:, 3])
    return _decide(score.astype(np.float64), rng), "statistic"


def accuracy_informed(
    n: int, alpha: float, copies: int, trials: int, rng: np.random.Generator, engine: str = "estimator"
) -> float:
    """Measured accuracy of the *informed* single-copy protocol: P and Q are announced, so every copy is measured
    in P's eigenbasis (no random bases).  Half the trials hold P, half Q.

    In P's basis the eigenvalue product x = ±1 has mean α under P; under Q ≠ P (full weight) the bits are uniform,
    because a letter of Q differing from P's on one qubit has zero diagonal in P's basis there.  Decision: the
    likelihood ratio Π(1 + α x_i) > 1 (ties: coin flip), computed from the mean of x, which a
    :class:`qsense.ShadowEstimator` with ``method="matched"`` gives (every snapshot matches P).
    """
    from qsense import ShadowBatch, ShadowEstimator

    P, _ = random_full_weight_paulis(n, rng)
    letters = np.array([BASIS[c] for c in P], dtype=np.uint8)
    truth_P = np.arange(trials) < (trials + 1) // 2
    bits = rng.integers(0, 2, size=(trials, copies, n), dtype=np.uint8)
    want_odd = rng.random((trials, copies)) < (1.0 - alpha) / 2.0
    odd = np.bitwise_xor.reduce(bits, axis=2).astype(bool)
    fix = truth_P[:, None] & (odd != want_odd)
    bits[..., 0] ^= fix.astype(np.uint8)
    if engine == "estimator":
        m = np.empty(trials)
        bases = np.broadcast_to(letters, (copies, n)).copy()
        for j in range(trials):
            est = ShadowEstimator([P], method="matched")
            est.update(ShadowBatch(bases, bits[j]))
            m[j] = est.estimate().values[0]
    else:
        m = (1.0 - 2.0 * np.bitwise_xor.reduce(bits, axis=2)).mean(axis=1)
    plus = np.round(copies * (1.0 + m) / 2.0)  # copies with x = +1
    llr = plus * math.log1p(alpha) + (copies - plus) * math.log1p(-alpha)
    say_P = np.where(np.abs(llr) < 1e-9, rng.random(trials) < 0.5, llr > 0)
    return float(np.mean(say_P == truth_P))


def theory_informed_accuracy(alpha: float, copies: int) -> float:
    """Exact accuracy of :func:`accuracy_informed`: ½ Σ_k max(Bin(k; N, (1+α)/2), Bin(k; N, ½))."""
    from scipy.stats import binom

    k = np.arange(copies + 1)
    return float(0.5 * np.sum(np.maximum(binom.pmf(k, copies, (1 + alpha) / 2), binom.pmf(k, copies, 0.5))))


# -- theory ------------------------------------------------------------------------------------
def theory_bell_accuracy(alpha: float, pairs: int) -> float:
    """Exact accuracy of the Bell decision after ``pairs`` shots."""
    a2 = alpha * alpha
    step = np.array([(1 - a2) / 4, 0.5, (1 + a2) / 4])  # values -1, 0, +1
    dist = np.array([1.0])
    for _ in range(int(pairs)):
        dist = np.convolve(dist, step)
    mid = len(dist) // 2  # index of S = 0
    return float(dist[mid + 1 :].sum() + 0.5 * dist[mid])


def theory_shadow_accuracy(alpha: float, n: int, copies: float) -> float:
    """Accuracy of the shadow decision with N snapshots (Poisson limit, μ = N 3^-n)."""
    from scipy.stats import skellam

    mu = copies * 3.0**-n
    if mu <= 0:
        return 0.5
    K = int(mu + 12 * math.sqrt(mu) + 30)
    k = np.arange(-K, K + 1)
    pP = skellam.pmf(k, mu * (1 + alpha) / 2, mu * (1 - alpha) / 2)
    pQ = skellam.pmf(k, mu / 2, mu / 2)
    aP = np.bincount(np.abs(k), weights=pP, minlength=K + 1)
    aQ = np.bincount(np.abs(k), weights=pQ, minlength=K + 1)
    below = np.concatenate([[0.0], np.cumsum(aQ)[:-1]])
    return float(np.sum(aP * (below + 0.5 * aQ)))


def _solve_monotone(f: Callable[[float], float], target: float, lo: float, hi: float) -> float:
    """Smallest x in [lo, hi] with f(x) >= target for increasing f (bisection in log x)."""
    if f(lo) >= target:
        return lo
    while f(hi) < target:
        hi *= 2
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if f(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def theory_copies(n: int, alpha: float, target: float) -> tuple[float, float]:
    """(shadow copies, Bell copies) for accuracy ``target`` in theory."""
    mu = _solve_monotone(lambda m: theory_shadow_accuracy(alpha, 0, m), target, 0.01, 10.0)
    # pairs are integers; interpolate the crossing as the measurement does
    grid = list(range(1, 400))
    acc = []
    for T in grid:
        acc.append(theory_bell_accuracy(alpha, T))
        if acc[-1] >= target:
            break
    return mu * 3.0**n, 2.0 * _interpolate_crossing(grid[: len(acc)], acc, target)


def _interpolate_crossing(xs: Sequence[float], ys: Sequence[float], target: float) -> float:
    """x where the measured (noisy, roughly increasing) y first reaches target,
    interpolated linearly in log x; inf if it never does."""
    for i, (x, y) in enumerate(zip(xs, ys)):
        if y >= target:
            if i == 0:
                return float(x)
            x0, y0 = xs[i - 1], ys[i - 1]
            if y == y0:
                return float(x)
            frac = (target - y0) / (y - y0)
            return float(math.exp(math.log(x0) + frac * (math.log(x) - math.log(x0))))
    return math.inf


def measured_copies(n: int, alpha: float, target: float, trials: int, rng: np.random.Generator) -> dict:
    """Measured copies needed for accuracy ``target`` by both families at n qubits."""
    # Bell: scan pairs 1, 2, ... until the accuracy reaches the target
    pairs_grid, acc_b = [], []
    for T in range(1, 200):
        a = accuracy_bell(n, alpha, T, trials, rng)
        pairs_grid.append(T)
        acc_b.append(a)
        if a >= target and T >= 2 and acc_b[-2] >= target:
            break
    bell_pairs = _interpolate_crossing(pairs_grid, acc_b, target)
    # shadows: a geometric grid around the theory value
    th_s, _ = theory_copies(n, alpha, target)
    grid = sorted({max(1, int(round(x))) for x in th_s * np.geomspace(0.25, 4.0, 13)})
    acc_s, methods = [], set()
    for N in grid:
        a, m = accuracy_shadow(n, alpha, N, trials, rng)
        acc_s.append(a)
        methods.add(m)
    return {
        "n": n,
        "bell_copies": 2 * bell_pairs,
        "shadow_copies": _interpolate_crossing(grid, acc_s, target),
        "shadow_method": "/".join(sorted(methods)),
        "bell_curve": (pairs_grid, acc_b),
        "shadow_curve": (grid, acc_s),
    }


def reference_check(
    alpha: float, trials: int, rng: np.random.Generator, ns: Sequence[int] = (4, 6, 8, 10), engine: str = "estimator"
) -> list[dict]:
    """docs/physics.md §2: Bell accuracy with 1 and 25 pairs, random-basis shadows with 50 copies, and the
    informed single-copy baseline (P's eigenbasis) with 8 copies; every decision from a qsense estimator."""
    rows = []
    for n in ns:
        rows.append({
            "n": n,
            "bell_1": accuracy_bell(n, alpha, 1, trials, rng, engine=engine),
            "bell_25": accuracy_bell(n, alpha, 25, trials, rng, engine=engine),
            "shadow_50": accuracy_shadow(n, alpha, 50, trials, rng, explicit=True, engine=engine)[0],
            "informed_8": accuracy_informed(n, alpha, 8, trials, rng, engine=engine),
        })
    return rows


def estimation_check(n: int, alpha: float, eps: float, trials: int, rng: np.random.Generator) -> dict:
    """Estimate |tr(Pρ)| to ``eps``: theory copies for both families, and the
    measured RMSE when exactly that many copies are used (should be ≈ eps).

    Shadows: |mean of snapshot estimates|, Var = (3^n − α²)/N.  Bell: sqrt of the
    mean ±1 value (an estimate of α²), delta method Var = (1 − α⁴)/(4α² T).
    """
    N = int(math.ceil((3.0**n - alpha**2) / eps**2))
    T = int(math.ceil((1 - alpha**4) / (4 * alpha**2 * eps**2)))
    c = shadow_match_counts(n, alpha, N, trials, rng)
    est_s = np.abs(3.0**n * ((c[:, 0] - c[:, 1]) - 0.0) / N)
    P = "".join(rng.choice(list(LETTERS), n))
    x = bell_values(sample_pauli_state_bell(P, alpha, trials * T, rng), P).reshape(trials, T).mean(axis=1)
    est_b = np.sqrt(np.maximum(x, 0.0))
    return {
        "n": n,
        "shadow_copies": N,
        "bell_copies": 2 * T,
        "shadow_rmse": float(np.sqrt(np.mean((est_s - alpha) ** 2))),
        "bell_rmse": float(np.sqrt(np.mean((est_b - alpha) ** 2))),
    }


def run(nmax: int = 12, trials: int = 400, alpha: float = 0.9, target: float = 0.9, seed: int = 2022, nmin: int = 1, eps: float = 0.1) -> dict:
    """The whole experiment; returns a dict of results (see :func:`report`)."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in range(nmin, nmax + 1):
        t0 = time.perf_counter()
        r = measured_copies(n, alpha, target, trials, rng)
        r["theory_shadow"], r["theory_bell"] = theory_copies(n, alpha, target)
        r["seconds"] = time.perf_counter() - t0
        rows.append(r)
    ref = reference_check(alpha, trials, rng, [n for n in (4, 6, 8, 10) if n <= max(nmax, 4)])
    est = [estimation_check(n, alpha, eps, trials, rng) for n in sorted({min(nmax, 4), min(nmax, 8), nmax})]
    return {"alpha": alpha, "target": target, "trials": trials, "seed": seed, "eps": eps, "rows": rows, "reference": ref, "estimation": est}


def report(res: dict) -> str:
    """A plain-text table of :func:`run`'s results."""
    out = [
        f"P vs Q discrimination, rho = (I + {res['alpha']}P)/2^n, full-weight P, Q; copies for accuracy >= {res['target']} "
        f"({res['trials']} trials per point, seed {res['seed']})",
        f"{'n':>3} {'shadow meas':>12} {'shadow theory':>14} {'bell meas':>10} {'bell theory':>12} {'shadow method':>14}",
    ]
    for r in res["rows"]:
        out.append(
            f"{r['n']:>3} {r['shadow_copies']:>12.4g} {r['theory_shadow']:>14.4g} {r['bell_copies']:>10.3g} "
            f"{r['theory_bell']:>12.3g} {r['shadow_method']:>14}"
        )
    out.append(
        "reference check (docs/physics.md §2; decisions from qsense.BellEstimator / ShadowEstimator): accuracy with 1 / 25 "
        "Bell pairs, 50 random-basis single copies, and 8 single copies measured in P's eigenbasis (P, Q announced)"
    )
    for r in res["reference"]:
        out.append(
            f"  n={r['n']:>2}: bell(1 pair)={r['bell_1']:.3f}  bell(25 pairs)={r['bell_25']:.3f}  "
            f"shadows(50 copies)={r['shadow_50']:.3f}  informed(8 copies)={r['informed_8']:.3f}"
        )
    a = res["alpha"]
    out.append(
        f"  theory: bell(1 pair)={theory_bell_accuracy(a, 1):.4f}, informed(8 copies)={theory_informed_accuracy(a, 8):.4f} "
        f"(any n): the exponential separation is against measure-first (random-basis) single copies, not informed ones"
    )
    out.append(f"estimating |tr(P rho)| to eps={res['eps']}: theory copies, and measured RMSE at that many copies")
    for r in res["estimation"]:
        out.append(
            f"  n={r['n']:>2}: shadows {r['shadow_copies']:.4g} copies (RMSE {r['shadow_rmse']:.3f}), "
            f"Bell {r['bell_copies']} copies (RMSE {r['bell_rmse']:.3f})"
        )
    return "\n".join(out)


def plot(res: dict, path: str) -> str:
    """Copies vs n for both families, measured (markers) and theory (lines); PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = np.array([r["n"] for r in res["rows"]])
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.semilogy(ns, [r["shadow_copies"] for r in res["rows"]], "o", color="C0", label="single-copy shadows (measured)")
    ax.semilogy(ns, [r["theory_shadow"] for r in res["rows"]], "-", color="C0", alpha=0.7, label=r"theory: $\mu^*\,3^n$")
    ax.semilogy(ns, [r["bell_copies"] for r in res["rows"]], "s", color="C3", label="two-copy Bell (measured)")
    ax.semilogy(ns, [r["theory_bell"] for r in res["rows"]], "-", color="C3", alpha=0.7, label="theory: constant")
    ax.set_xlabel("qubits n")
    ax.set_ylabel(f"copies for accuracy {res['target']}")
    ax.set_title(rf"P vs Q for $\rho=(I+{res['alpha']}P)/2^n$ ({res['trials']} trials/point)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--nmin", type=int, default=1)
    ap.add_argument("--nmax", type=int, default=12)
    ap.add_argument("--trials", type=int, default=400, help="trials per (n, copies) point")
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--target", type=float, default=0.9, help="accuracy to reach")
    ap.add_argument("--eps", type=float, default=0.1, help="accuracy for the |tr(P rho)| estimation check")
    ap.add_argument("--seed", type=int, default=2022)
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "qsense-examples", "two_copy_advantage.png"),
                    help="PNG path ('' for no plot; default: a qsense-examples folder in the system temp dir)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = run(args.nmax, args.trials, args.alpha, args.target, args.seed, args.nmin, args.eps)
    print(report(res))
    if args.out:
        print(f"plot: {plot(res, args.out)}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
