"""Pauli expectation values from single-copy classical shadows.

Batch form :func:`shadow_expval` reproduces ``qml.ClassicalShadow.expval`` exactly
(same ceil(T/K) contiguous grouping, median of group means, then coefficients);
online form :class:`ShadowEstimator` keeps bounded statistics per observable.

Sufficient statistics. For a Pauli term P of weight k the snapshot estimate is
``x = 3^k (-1)^parity`` on snapshots whose bases match P and 0 otherwise, so a
segment of snapshots is summarised by two integers per term: ``matched`` and
``odd`` (matched with odd parity).  Sum = 3^k (matched - 2 odd), sum of squares =
9^k matched.  Integers make the online mean exact however the stream is split.

Online median-of-means block scheme (``groups=K``). Snapshots fill blocks in
arrival order; every block holds ``capacity`` snapshots (the last one may be
partly full).  Capacity starts at 1; whenever a new block is needed and there are
already 2K blocks, adjacent pairs are merged (block 2i with 2i+1) and the
capacity doubles.  So there are always between K and 2K blocks once at least K
snapshots arrived, each of consecutive snapshots, and memory is O(K * M) however
long the stream.  Groups per term (why: docs/physics.md §6).  A weight-k term matches a
random-basis snapshot with probability 3^-k, so a group of B snapshots holds
only ~B/3^k matches; with a handful the group means sit on a coarse lattice
(mostly 0 or 3^k / B) and their median is biased towards 0 while the error bar
no longer describes the spread.  The estimate of a term therefore uses

    G = min(K, floor(N / (3^k * MIN_MATCHES_PER_GROUP)))      (MIN_MATCHES_PER_GROUP = 10)

groups, each expecting at least 10 matching snapshots: the blocks (K to 2K of
them) are pooled, in order, into G contiguous groups of about equal size and the
estimate is the median of the G group means, its error bar the plain-mean one
times :func:`median_inflation` (G).  When G < 3 the median of means is no more
robust than the mean, so the term falls back to the plain (unbiased) mean of all
N snapshots.  Blocks are not changed, so checkpoints and ``merge`` are as
before; ``groups=1`` is the plain mean, bit for bit.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from qsense.pauli import PauliObservable, PauliTable, SumMoments, compile_observables, parse_observable
from qsense.records import ShadowBatch

from .kernels import shadow_counts_batch, shadow_term_values
from .result import Estimate, median_inflation
from .serial import checked_state, counts_array, dump_npz, float_array, load_npz, meta_int, obs_from_json, obs_to_json, wires_from_json, wires_to_json

__all__ = ["ShadowEstimator", "shadow_expval", "matched_ratio_expval", "METHODS", "MIN_MATCHES_PER_GROUP", "SparseGroupWarning"]

METHODS = ("mean", "matched")

#: median-of-means groups must each expect at least this many matching snapshots (docs/physics.md §6)
MIN_MATCHES_PER_GROUP = 10


class SparseGroupWarning(UserWarning):
    """A median-of-means group expects fewer than :data:`MIN_MATCHES_PER_GROUP` matching snapshots."""


def term_groups(n_snapshots: int, weight: np.ndarray, groups: int) -> np.ndarray:
    """Groups G per term, ``min(K, floor(N / (3^k * MIN_MATCHES_PER_GROUP)))``, at least 1.

    Uses the *expected* matches N / 3^k (random uniform bases), not the observed
    ones, so that the choice does not depend on the data it is applied to.
    """
    expected = n_snapshots / np.power(3.0, np.asarray(weight, dtype=np.float64))
    return np.clip(np.floor(expected / MIN_MATCHES_PER_GROUP), 1, groups).astype(np.int64)


def _as_batch(batch: Any) -> ShadowBatch:
    if isinstance(batch, ShadowBatch):
        return batch
    if hasattr(batch, "bits") and hasattr(batch, "recipes"):
        return ShadowBatch.from_pennylane(batch, None)
    raise ValueError(f"expected a ShadowBatch (or qml.ClassicalShadow); got {type(batch).__name__}")


def _parse_all(observables: Any) -> list[PauliObservable]:
    if isinstance(observables, (str, PauliObservable)) or hasattr(observables, "pauli_rep"):
        observables = [observables]
    obs = [parse_observable(o) for o in observables]
    if not obs:
        raise ValueError("at least one observable is needed")
    return obs


def _term_means(matched: np.ndarray, odd: np.ndarray, counts: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per-segment means of the 3^k-weighted snapshot estimates, (G, M)."""
    scale = np.power(3.0, weight)
    return scale * (matched - 2 * odd) / counts[:, None]


def shadow_expval(batch: ShadowBatch, observables: Any, k: int = 1) -> np.ndarray:
    """Median-of-means Pauli expectation values, exactly as PennyLane computes them.

    The T snapshots are split into ``k`` contiguous groups of ``ceil(T/k)``
    (the last ones shorter; empty trailing groups, where PennyLane would produce
    NaN, are left out), each term's estimate is the median of its group means,
    and observables that are Pauli sums recombine their terms' estimates with
    their coefficients.  Returns float64 (n_observables,).

    Warns (:class:`SparseGroupWarning`) when a group of ``ceil(T/k)`` snapshots
    expects fewer than :data:`MIN_MATCHES_PER_GROUP` matches of a term
    (``ceil(T/k) / 3^weight < 10``): the median of such group means is biased
    towards 0 (at weight 6, T = 4,000, k = 10 it is exactly 0 in ~94% of runs).
    The numbers are still PennyLane's; :class:`ShadowEstimator` adapts the
    groups per term instead.
    """
    batch = _as_batch(batch)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}")
    if batch.T == 0:
        raise ValueError("cannot estimate from an empty batch")
    obs = _parse_all(observables)
    table = compile_observables(obs, batch.wires)
    size = -(-batch.T // int(k))
    if k > 1 and table.M:
        per_group = size / 3.0 ** float(table.weight.max())
        if per_group < MIN_MATCHES_PER_GROUP:
            warnings.warn(
                f"shadow_expval: groups of {size} snapshots expect {per_group:.3g} matches of a weight-"
                f"{int(table.weight.max())} term (< {MIN_MATCHES_PER_GROUP}); the median of means is biased towards 0 "
                "(use fewer groups, more snapshots, or ShadowEstimator, which adapts groups per term)",
                SparseGroupWarning,
                stacklevel=2,
            )
    lengths = [min(size, batch.T - s) for s in range(0, batch.T, size)]
    matched, odd = shadow_counts_batch(batch, table, lengths)
    means = _term_means(matched, odd, np.asarray(lengths, dtype=np.float64), table.weight)
    return table.combine(np.median(means, axis=0))


def matched_ratio_expval(batch: ShadowBatch, observables: Any) -> np.ndarray:
    """Huang's reference estimator: mean parity over snapshots whose bases match
    each term (0 where none matches), recombined with coefficients."""
    batch = _as_batch(batch)
    obs = _parse_all(observables)
    table = compile_observables(obs, batch.wires)
    matched, odd = shadow_counts_batch(batch, table, [batch.T])
    m, o = matched[0], odd[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        vals = np.where(m > 0, (m - 2 * o) / np.maximum(m, 1), 0.0)
    return table.combine(vals)


class ShadowEstimator:
    """Online Pauli expectation values from a stream of :class:`ShadowBatch`.

    Parameters
    ----------
    observables:
        Pauli strings (dense ``"XIZ"`` or sparse ``"X0 Z2"``), PennyLane Pauli
        words, products or sums with real coefficients.
    groups:
        K of the median of means (see the module docstring for the block
        scheme); 1 gives the plain mean.
    method:
        ``"mean"`` (the unbiased 3^k-weighted snapshot estimator) or
        ``"matched"`` (Huang's matched-ratio estimator: mean parity over the
        snapshots whose bases match; used with derandomized schemes).

    The estimator binds to the wires of the first batch it sees; later batches
    must carry the same wires.
    """

    def __init__(self, observables: Any, groups: int = 1, method: str = "mean") -> None:
        if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
            raise ValueError(f"groups must be a positive integer; got {groups!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}")
        self.observables: list[PauliObservable] = _parse_all(observables)
        self.groups = int(groups)
        self.method = method
        self.wires: tuple | None = None
        self._table: PauliTable | None = None
        self.capacity = 1
        # block statistics: (B, M) int64 matched / odd, (B,) int64 counts
        self._matched = np.zeros((0, 0), dtype=np.int64)
        self._odd = np.zeros((0, 0), dtype=np.int64)
        self._counts = np.zeros(0, dtype=np.int64)

    # -- binding ----------------------------------------------------------------
    @property
    def labels(self) -> tuple[str, ...]:
        """The observables' labels, in order."""
        return tuple(o.label for o in self.observables)

    @property
    def count(self) -> int:
        """Snapshots seen so far."""
        return int(self._counts.sum())

    def _bind(self, wires: tuple) -> None:
        self._table = compile_observables(self.observables, wires)
        self._sums = SumMoments(self._table)
        self.wires = tuple(wires)
        self._matched = np.zeros((0, self._table.M), dtype=np.int64)
        self._odd = np.zeros((0, self._table.M), dtype=np.int64)

    # -- block scheme -----------------------------------------------------------
    def _merge_pairs(self) -> None:
        B = len(self._counts)
        if B % 2:  # cannot happen (we merge at exactly 2K blocks) but stay safe
            raise AssertionError("odd number of blocks at merge")
        self._matched = self._matched[0::2] + self._matched[1::2]
        self._odd = self._odd[0::2] + self._odd[1::2]
        self._counts = self._counts[0::2] + self._counts[1::2]
        self.capacity *= 2

    @staticmethod
    def _plan(counts: list[int], capacity: int, groups: int, L: int) -> list[tuple[int, int]]:
        """Segments ``(length, block_merges_before)`` a batch of L snapshots splits into."""
        segs = []
        counts = list(counts)
        while L > 0:
            merges = 0
            if groups == 1:
                if not counts:
                    counts.append(0)
                room = L
            else:
                if counts and counts[-1] < capacity:
                    room = capacity - counts[-1]
                else:
                    if len(counts) >= 2 * groups:
                        counts = [counts[i] + counts[i + 1] for i in range(0, len(counts), 2)]
                        capacity *= 2
                        merges = 1
                        # merged blocks are all full, so open a new one
                    counts.append(0)
                    room = capacity
            take = min(room, L)
            counts[-1] += take
            segs.append((take, merges))
            L -= take
        return segs

    def update(self, batch: ShadowBatch) -> None:
        """Fold in a batch of snapshots (any size, including 0)."""
        batch = _as_batch(batch)
        if self._table is None:
            self._bind(batch.wires)
        elif batch.wires != self.wires:
            raise ValueError(f"batch wires {batch.wires} differ from the estimator's {self.wires}")
        if batch.T == 0:
            return
        segs = self._plan(self._counts.tolist(), self.capacity, self.groups, batch.T)
        lengths = [s for s, _ in segs]
        # from the batch's bit planes when it carries them (wire v2, archive): no unpacking
        matched, odd = shadow_counts_batch(batch, self._table, lengths)
        if self._sums:
            for lo in range(0, batch.T, 1 << 14):
                sl = slice(lo, lo + (1 << 14))
                self._sums.add(shadow_term_values(batch.bases[sl], batch.outcomes[sl], self._table, self._sums.terms))
        for g, (length, merges) in enumerate(segs):
            if merges:
                self._merge_pairs()
            new_block = len(self._counts) == 0 or (self.groups > 1 and self._counts[-1] >= self.capacity)
            if new_block:
                self._matched = np.vstack([self._matched, matched[g : g + 1]])
                self._odd = np.vstack([self._odd, odd[g : g + 1]])
                self._counts = np.append(self._counts, length)
            else:
                self._matched[-1] += matched[g]
                self._odd[-1] += odd[g]
                self._counts[-1] += length

    # -- results ----------------------------------------------------------------
    def term_estimate(self) -> tuple[np.ndarray, np.ndarray]:
        """Per deduplicated term: (values, stderr)."""
        if self._table is None or self.count == 0:
            raise ValueError("no data yet: call update() first")
        t = self._table
        N = self.count
        m_all = self._matched.sum(axis=0)
        o_all = self._odd.sum(axis=0)
        if self.method == "matched":
            vals = np.where(m_all > 0, (m_all - 2 * o_all) / np.maximum(m_all, 1), 0.0)
            # the +1 fraction smoothed by one pseudo-count each side (Laplace): when every
            # matched outcome agreed, 1 - v^2 would claim an error of 0 (seen: -1 +- 0 for
            # a true -0.9 after 40 matches); for many matches it is 1 - v^2
            p = (m_all - o_all + 1.0) / (m_all + 2.0)
            var = np.where(m_all > 1, 4.0 * p * (1.0 - p) / np.maximum(m_all - 1, 1), np.inf)
            var = np.where(t.weight == 0, 0.0, var)
            return vals, np.sqrt(var)
        scale = np.power(3.0, t.weight)
        mean = scale * (m_all - 2 * o_all) / N
        # per-snapshot variance from the exact sums: E[x^2] = 9^k matched / N
        second = scale**2 * m_all / N
        var1 = np.maximum(second - mean**2, 0.0) * N / max(N - 1, 1)
        se = np.sqrt(var1 / N) if N > 1 else np.full_like(mean, np.inf)
        if self.groups == 1:
            return mean, se
        vals, inflate = self._grouped(mean)
        return vals, se * inflate

    def _grouped(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per term: median of means over its G groups (module docstring) and the
        error-bar inflation for that G (1 where G < 3 and the plain mean is used)."""
        t = self._table
        N = self.count
        G = term_groups(N, t.weight, self.groups)
        vals = mean.copy()
        inflate = np.ones(t.M)
        nonempty = self._counts > 0
        counts = self._counts[nonempty]
        matched, odd = self._matched[nonempty], self._odd[nonempty]
        # block midpoints in snapshot order decide which of the G groups a block joins
        mid = np.cumsum(counts) - counts / 2.0
        for g in np.unique(G):
            if g < 3:
                continue
            cols = np.flatnonzero(G == g)
            gid = np.minimum((mid * g / N).astype(np.int64), g - 1)
            gc = np.bincount(gid, weights=counts, minlength=g)
            gm = np.zeros((g, len(cols)))
            go = np.zeros((g, len(cols)))
            np.add.at(gm, gid, matched[:, cols])
            np.add.at(go, gid, odd[:, cols])
            keep = gc > 0
            means = _term_means(gm[keep], go[keep], gc[keep], t.weight[cols])
            vals[cols] = np.median(means, axis=0)
            inflate[cols] = median_inflation(int(keep.sum()))
        return vals, inflate

    def estimate(self) -> Estimate:
        """Current estimates: ``values``, ``stderr`` (one sigma) and ``count``.

        Error bars of Pauli sums come from the per-snapshot second moment of the
        whole sum, so the correlation between its terms is included (with
        ``method="matched"`` they combine the terms' errors in quadrature).
        """
        vals, se = self.term_estimate()
        t = self._table
        out, err = t.combine(vals), np.sqrt(t.combine(se**2, squared=True))
        if self._sums and self.method == "mean":
            N = self.count
            plain = t.combine(np.power(3.0, t.weight) * (self._matched.sum(0) - 2 * self._odd.sum(0)) / N)
            if self.groups == 1:
                inflate = np.ones(len(self._sums.obs))
            else:
                # a sum's value recombines its terms' medians: inflate by its widest term's factor
                _, term_inf = self._grouped(np.zeros(t.M))
                per_obs = np.zeros(t.n_obs)
                np.maximum.at(per_obs, t.obs_index, term_inf[t.term_index])
                inflate = per_obs[self._sums.obs]
            err[self._sums.obs] = self._sums.stderr(plain, N) * inflate
        return Estimate(out, err, self.count, self.labels)

    # -- merging and checkpoints --------------------------------------------------
    def merge(self, other: "ShadowEstimator") -> "ShadowEstimator":
        """Fold in another estimator's statistics, as if its data had come after ours.

        With ``groups=1`` this equals updating with the concatenated data exactly.
        With more groups, the other's blocks are appended and adjacent pairs merged
        until at most 2K blocks remain (blocks may then differ in size).
        """
        if not isinstance(other, ShadowEstimator):
            raise ValueError(f"cannot merge a {type(other).__name__} into a ShadowEstimator")
        if [o.terms for o in other.observables] != [o.terms for o in self.observables]:
            raise ValueError("cannot merge estimators of different observables")
        if (other.groups, other.method) != (self.groups, self.method):
            raise ValueError("cannot merge estimators with different groups or method")
        if other._table is None:
            return self
        if self._table is None:
            self._bind(other.wires)
        elif other.wires != self.wires:
            raise ValueError(f"cannot merge estimators bound to different wires: {self.wires} vs {other.wires}")
        self._sums.Q += other._sums.Q
        if self.groups == 1:
            if len(self._counts) == 0:
                self._matched, self._odd, self._counts = other._matched.copy(), other._odd.copy(), other._counts.copy()
            else:
                self._matched[0] += other._matched[0]
                self._odd[0] += other._odd[0]
                self._counts[0] += other._counts[0]
            return self
        self._matched = np.vstack([self._matched, other._matched])
        self._odd = np.vstack([self._odd, other._odd])
        self._counts = np.concatenate([self._counts, other._counts])
        self.capacity = max(self.capacity, other.capacity)
        while len(self._counts) > 2 * self.groups:
            if len(self._counts) % 2:
                self._matched = np.vstack([self._matched, np.zeros_like(self._matched[:1])])
                self._odd = np.vstack([self._odd, np.zeros_like(self._odd[:1])])
                self._counts = np.append(self._counts, 0)
            self._merge_pairs()
        return self

    def to_bytes(self) -> bytes:
        """Serialise statistics and configuration (npz, no pickle)."""
        meta = {
            "type": "ShadowEstimator",
            "version": 1,
            "groups": self.groups,
            "method": self.method,
            "capacity": self.capacity,
            "observables": [obs_to_json(o) for o in self.observables],
            "wires": None if self.wires is None else wires_to_json(self.wires),
        }
        sumsq = self._sums.Q if self._table is not None else np.zeros(0)
        return dump_npz(meta, matched=self._matched, odd=self._odd, counts=self._counts, sumsq=sumsq)

    @classmethod
    @checked_state
    def from_bytes(cls, data: bytes) -> "ShadowEstimator":
        """Inverse of :meth:`to_bytes` (raises ``ValueError`` on malformed data)."""
        z, meta = load_npz(data, "ShadowEstimator")
        est = cls([obs_from_json(o) for o in meta["observables"]], groups=meta["groups"], method=meta["method"])
        if meta["wires"] is not None:
            est._bind(wires_from_json(meta["wires"]))
            counts = z["counts"]
            if counts.ndim != 1 or len(counts) > 2 * est.groups:
                raise ValueError(f"checkpoint counts: {counts.shape} blocks for {est.groups} groups")
            G, M = len(counts), est._table.M
            est._counts = counts_array(counts, "counts")
            est._matched = counts_array(z["matched"], "matched", (G, M))
            est._odd = counts_array(z["odd"], "odd", (G, M))
            # per block: odd <= matched <= snapshots (a forged count cannot make a |mean| > 1 estimate)
            if (est._matched > est._counts[:, None]).any() or (est._odd > est._matched).any():
                raise ValueError("checkpoint matched/odd: more matches than snapshots")
            est._sums.Q = float_array(z["sumsq"], "sumsq", est._sums.Q.shape)
        est.capacity = meta_int(meta, "capacity", 1)
        return est
