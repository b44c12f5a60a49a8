"""Reweighted Bell sums (copies that waited in a decohering memory), grouped by support.

With a decoherence model, a Bell shot's value for a Pauli term is
``sign * r`` with ``sign = (-1)^{#Y} (-1)^{parity}`` and ``r = w^weight`` (depolarizing,
``w = e^{wait/T2}``) or ``r = exp(wait * rate(term))`` (any model,
:meth:`~qsense.estimators.decoherence.DecoherenceModel.pauli_rate`).  Two facts make
the estimator's sums cheap, without the dense (shots x terms) value matrix:

* ``Q = sum r^2`` does not depend on the outcomes: it is one column sum per
  distinct rate, shared by all terms with that rate;
* ``S = sum sign * r`` of the terms that share a support (the same wires) and a
  rate are read off one weighted histogram of the shots' joint Bell code on that
  support (4^k bins for k wires) with each term's sign pattern
  (:func:`qsense.estimators._bell_weighted_jit.bell_weighted_sums_jit`).

The reweighted purity is a product over a subsystem's wires of one of four values
per shot (its SWAP value for each Bell code, :func:`purity_table`), summed in one
compiled pass (:func:`weighted_purity`).  The grouping is computed once per table and model and cached on the
:class:`~qsense.pauli.PauliTable`.  Where numba is unavailable (or
``QSENSE_NO_JIT`` / :func:`qsense.estimators.kernels.use_jit` turns it off) a NumPy
path computes the same sums in blocks of shots.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qsense.pauli import PauliTable

from .decoherence import DecoherenceModel, Depolarizing
from .supports import column_order, group_rows

__all__ = [
    "HIST_MAX",
    "WeightedPlan",
    "purity_table",
    "shot_weights",
    "weighted_plan",
    "weighted_purity",
    "weighted_sums",
    "weighted_term_values",
]

log = logging.getLogger(__name__)

#: Largest per-support histogram (bins = 4^k): 4^6 float64 bins are 32 KiB, L1-resident.
HIST_MAX = 4**6
#: Shots x (support, rate) groups below which one thread does all the work (about 1 ms).
PARALLEL_MIN_SHOT_GROUPS = 1 << 20
#: Shot-term values per block of the NumPy path (32 MiB of float64).
_NUMPY_BLOCK = 1 << 22

#: LETTER_BIT[L, d]: the parity bit of Bell code d (= 2a + b) for letter L (0 = I, X: a, Y: a^b, Z: b)
LETTER_BIT = np.array([[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 1, 0], [0, 1, 0, 1]], dtype=np.uint8)

_kernels: tuple | None = None
_tried = False


def _jit(which: int = 0) -> Callable[..., None] | None:
    """Compiled kernel ``which`` (0: term sums, 1: purity sums), or None (numba missing,
    ``QSENSE_NO_JIT``, or :func:`~qsense.estimators.kernels.use_jit` off)."""
    global _kernels, _tried
    from . import kernels

    if not _tried:
        _tried = True
        try:
            if os.environ.get("QSENSE_NO_JIT"):
                raise ImportError("disabled by QSENSE_NO_JIT")
            from ._bell_weighted_jit import bell_purity_sums_jit, bell_weighted_sums_jit

            _kernels = (bell_weighted_sums_jit, bell_purity_sums_jit)
        except ImportError as exc:  # pragma: no cover - depends on the environment
            log.info("compiled reweighted Bell kernel unavailable (%s); using NumPy", exc)
    return _kernels[which] if _kernels is not None and kernels._use_jit else None


@dataclass(frozen=True)
class WeightedPlan:
    """Terms of a table grouped by (support, rate) for one decoherence model."""

    depolarizing: bool
    rate_key: np.ndarray  # (U,): per distinct rate, the weight k (depolarizing) or the rate in 1/s
    term_rate: np.ndarray  # int64 (M,): each term's index into rate_key
    ysign: np.ndarray  # float64 (M,): (-1)^{#Y} of each term
    grp_cols: np.ndarray  # int64 (G, kmax): the group's columns (padding 0)
    grp_k: np.ndarray  # int64 (G,): support size
    grp_rate: np.ndarray  # int64 (G,): row of the shot-weight table
    grp_start: np.ndarray  # int64 (G + 1,): group g holds rows grp_start[g]:grp_start[g+1]
    letters: np.ndarray  # uint8 (M, kmax): letters of the rows, in the group's column order
    term_id: np.ndarray  # int64 (M,): the table's index of each row

    @property
    def M(self) -> int:
        """Number of terms."""
        return int(self.term_id.shape[0])


def weighted_plan(table: PauliTable, model: DecoherenceModel) -> WeightedPlan:
    """The (support, rate) grouping of ``table``'s terms under ``model`` (cached on the table)."""
    cache = table.__dict__.setdefault("_weighted_plan_cache", {})
    key = (type(model).__name__, tuple(np.asarray(model.rates, dtype=np.float64).tolist()))
    if key not in cache:
        cache[key] = _compute_plan(table, model)
    return cache[key]


def _compute_plan(table: PauliTable, model: DecoherenceModel) -> WeightedPlan:
    M = table.M
    sup = np.asarray(table.support, dtype=np.int64).reshape(M, -1)
    let = np.asarray(table.letters, dtype=np.uint8).reshape(M, -1)
    kmax = sup.shape[1]
    depol = isinstance(model, Depolarizing)
    if depol:
        # all terms of one weight share r = w^weight (the historical np.power arithmetic)
        rate_key, term_rate = np.unique(np.asarray(table.weight, dtype=np.int64), return_inverse=True)
    else:
        rate_p = model.pauli_rate(np.where(sup < 0, 0, let))
        rate_key, term_rate = np.unique(rate_p, return_inverse=True)
    term_rate = term_rate.reshape(-1).astype(np.int64)
    # order each term's slots by column (resolve() already does; a hand-built table may not)
    order = column_order(sup)
    sup = np.take_along_axis(sup, order, axis=1)
    let = np.take_along_axis(let, order, axis=1)
    keys = np.concatenate([np.where(sup < 0, -1, sup), term_rate[:, None]], axis=1)
    uniq, by_group, grp_start = group_rows(keys)
    cols = uniq[:, :kmax]
    return WeightedPlan(
        depolarizing=depol,
        rate_key=rate_key,
        term_rate=term_rate,
        ysign=np.where((np.asarray(table.letters) == 2).sum(axis=1) % 2 == 1, -1.0, 1.0),
        grp_cols=np.ascontiguousarray(np.where(cols < 0, 0, cols)),
        grp_k=(cols >= 0).sum(axis=1).astype(np.int64),
        grp_rate=np.ascontiguousarray(uniq[:, kmax]).astype(np.int64),
        grp_start=grp_start,
        letters=np.ascontiguousarray(np.where(sup < 0, 0, let)[by_group]).astype(np.uint8),
        term_id=by_group.astype(np.int64),
    )


def shot_weights(plan: WeightedPlan, wait: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """float64 (U, T): each distinct rate's per-shot reweighting factor.

    Depolarizing: ``w ** k`` for the weights k of ``plan.rate_key`` (``w``: the
    estimator's e^{wait/T2}); other models: ``exp(wait * rate)``.
    """
    if plan.depolarizing:
        if w is None:
            raise ValueError("the depolarizing reweighting needs w = exp(wait / T2)")
        return np.power(w[None, :], plan.rate_key[:, None])
    return np.exp(np.asarray(wait, dtype=np.float64)[None, :] * plan.rate_key[:, None])


def weighted_sums(codes: np.ndarray, R: np.ndarray, plan: WeightedPlan) -> tuple[np.ndarray, np.ndarray]:
    """Per term of the table: ``S = sum_t value`` and ``Q = sum_t value^2`` of the reweighted
    Bell values, from the Bell codes ``codes`` (uint8 (T, n)) and ``R = shot_weights(...)``."""
    M = plan.M
    S = np.zeros(M)
    Q = (R * R).sum(axis=1)[plan.term_rate] if M else np.zeros(0)
    if not M:
        return S, Q
    R = np.ascontiguousarray(R, dtype=np.float64)
    raw = np.empty(M)
    kernel = _jit()
    if kernel is not None:
        # wire-major: each support's rows are read sequentially (3.4x faster than (T, n) rows at n = 64)
        _run_kernel(kernel, np.ascontiguousarray(np.asarray(codes, dtype=np.uint8).T), R, plan, raw)
    else:
        raw = _sums_numpy(np.asarray(codes, dtype=np.uint8), R, plan)
    S[plan.term_id] = raw
    return S * plan.ysign, Q


def _run_kernel(kernel: Callable[..., None], codes_t: np.ndarray, R: np.ndarray, plan: WeightedPlan, raw: np.ndarray) -> None:
    """The compiled kernel over all groups; large jobs split into contiguous runs of groups
    (disjoint rows of ``raw``) on the counting kernels' worker threads (it releases the GIL)."""
    from . import kernels

    T = codes_t.shape[1]
    G = plan.grp_k.shape[0]
    args = (plan.letters, LETTER_BIT, HIST_MAX, raw)
    pool = kernels._get_pool()
    threads = kernels.get_threads()
    if pool is None or G < 2 * threads or T * G < PARALLEL_MIN_SHOT_GROUPS:
        kernel(codes_t, R, plan.grp_cols, plan.grp_k, plan.grp_rate, plan.grp_start, *args)
        return
    # balance by the kernel's own cost model: histogram fill + read, or the direct sum
    nt = np.diff(plan.grp_start)
    nbins = np.left_shift(1, 2 * np.minimum(plan.grp_k, 16))
    cost = np.cumsum(np.maximum(plan.grp_k, 1) * np.minimum(nt * T, T + nt * nbins))
    cuts = np.searchsorted(cost, cost[-1] * np.arange(1, threads) / threads)
    bounds = sorted({0, *cuts.tolist(), G})
    futs = [pool.submit(kernel, codes_t, R, plan.grp_cols[a:b], plan.grp_k[a:b], plan.grp_rate[a:b], plan.grp_start[a : b + 1], *args)
            for a, b in itertools.pairwise(bounds) if b > a]
    for f in futs:
        f.result()


def _row_params(plan: WeightedPlan) -> tuple[np.ndarray, np.ndarray]:
    """Per row (group order): its columns and its rate row."""
    per_row_group = np.repeat(np.arange(plan.grp_k.shape[0]), np.diff(plan.grp_start))
    return plan.grp_cols[per_row_group], plan.grp_rate[per_row_group]


def _parity(codes: np.ndarray, cols: np.ndarray, letters: np.ndarray) -> np.ndarray:
    """uint8 (T, rows): the XOR over slots of each row's letter bit (identity slots give 0)."""
    par = np.zeros((codes.shape[0], cols.shape[0]), dtype=np.uint8)
    if not codes.shape[1]:  # no wires: identity terms only
        return par
    for i in range(cols.shape[1]):
        par ^= LETTER_BIT[letters[None, :, i], codes[:, cols[:, i]]]
    return par


def _sums_numpy(codes: np.ndarray, R: np.ndarray, plan: WeightedPlan) -> np.ndarray:
    """The kernel's sums without numba: (shots x terms) blocks of signed weights."""
    cols, rate = _row_params(plan)
    T = codes.shape[0]
    out = np.zeros(plan.M)
    step = max(1, _NUMPY_BLOCK // max(plan.M, 1))
    for lo in range(0, T, step):
        hi = min(T, lo + step)
        par = _parity(codes[lo:hi], cols, plan.letters)
        out += ((1.0 - 2.0 * par) * R[rate, lo:hi].T).sum(axis=0)
    return out


def weighted_term_values(R: np.ndarray, plan: WeightedPlan, term_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-shot reweighted values float64 (T, len(term_ids)) of some terms (for the sums' moments),
    given their unweighted Bell values ``values`` (as :func:`~qsense.estimators.kernels.bell_term_values`)."""
    return values * R[plan.term_rate[term_ids]].T


def purity_table(model: DecoherenceModel, wait: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """float64 (T, 4): each shot's reweighted per-wire SWAP value for Bell codes 0..3.

    SWAP = (II + XX + YY + ZZ) / 2 per wire with each letter divided by its survival
    factor; depolarizing (``w`` = e^{wait/T2}): triplet (1 + w)/2, singlet (1 - 3w)/2,
    the historical arithmetic.
    """
    if isinstance(model, Depolarizing):
        if w is None:
            raise ValueError("the depolarizing reweighting needs w = exp(wait / T2)")
        f_trip = (1.0 + w) / 2.0
        f_sing = (1.0 - 3.0 * w) / 2.0
        return np.stack([f_trip, f_trip, f_trip, f_sing], axis=1)
    inv = 1.0 / model.factors(wait)  # (T, 3)
    # code d = 2a + b: XX = (-1)^a, ZZ = (-1)^b, YY = -(-1)^(a+b)
    lx = np.array([1.0, 1.0, -1.0, -1.0])
    lz = np.array([1.0, -1.0, 1.0, -1.0])
    return 0.5 * (1.0 + lx[None, :] * inv[:, 0:1] - (lx * lz)[None, :] * inv[:, 1:2] + lz[None, :] * inv[:, 2:3])


def weighted_purity(codes: np.ndarray, tab: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per subsystem mask (bool (P, n)): the sums of ``v`` and ``v^2`` over shots of the
    reweighted SWAP value ``v = prod_{wires in mask} tab[t, code]``."""
    P = masks.shape[0]
    pS, pQ = np.zeros(P), np.zeros(P)
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    kernel = _jit(1)
    if kernel is not None:
        kernel(codes, np.ascontiguousarray(tab, dtype=np.float64), np.ascontiguousarray(masks, dtype=np.bool_), pS, pQ)
        return pS, pQ
    per_wire = np.take_along_axis(tab, codes.astype(np.intp), axis=1) if codes.shape[1] else np.zeros((codes.shape[0], 0))
    for i, m in enumerate(masks):
        v = np.prod(per_wire[:, m], axis=1)
        pS[i], pQ[i] = v.sum(), (v**2).sum()
    return pS, pQ
