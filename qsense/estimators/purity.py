"""Subsystem purity and Renyi-2 entropy from single-copy classical shadows.

Unbiased U-statistic over pairs of distinct snapshots (docs/estimators.md):
``tr rho_A^2 ~ [N(N-1)]^-1 sum_{i != j} prod_{q in A} g(i, j, q)`` with
g = 5 (same basis, same bit), -4 (same basis, different bit), 1/2 (different
basis).  A snapshot restricted to A is one of 6^|A| classes (basis and bit per
qubit), so the class counts h are a sufficient statistic and

    sum_{i != j} k(i, j) = h^T G h - 5^|A| N,     G = g^{(x)|A|}.

Two ways to hold and evaluate h, chosen per subsystem:

* dense (|A| <= :data:`DENSE_MAX`): the full 6^|A| histogram, G h by applying
  the 6x6 matrix g along each axis (O(|A| 6^(|A|+1)));
* sparse (larger |A|, up to :data:`MAX_SUBSYSTEM`): only the C distinct classes
  seen (:class:`~qsense.estimators.class_kernels.ClassCounts`, memory O(C),
  C <= min(N, 6^|A|)) and G h on them by the closed-form pair kernel
  (:func:`~qsense.estimators.class_kernels.pair_row_sums`, O(C^2 / 2) pairs) or,
  when cheaper (|A| <= 10, 2^|A| << C), through the Pauli sums of the classes
  (:func:`~qsense.estimators.class_kernels.pauli_row_sums`, O(C 2^|A|)); up to
  |A| = 9 the histogram is scattered back to dense when that is cheaper still.
  All give the same value (to rounding); the Pauli route's error bar uses an
  equally unbiased estimate of the kernel's second moment, so it differs from
  the others' by sampling noise (a few per cent).

This is the same number as the per-Pauli form sum_P (S_P^2 - Q_P) / (2^|A| N(N-1)),
without enumerating 4^|A| Paulis.

Standard error: the U-statistic variance [4(N-2) zeta1 + 2 zeta2] / [N(N-1)],
with zeta1 the variance of the kernel's conditional mean and zeta2 the kernel's
variance, both estimated from the same counts (the plug-in zeta1 is corrected
for the noise of the conditional means it is built from).  PennyLane's
``ClassicalShadow.entropy`` instead uses the biased plug-in estimate.
``method="matched"`` gives the lower-variance matched-term form instead
(:mod:`.purity_matched`, docs/estimators.md "Precision of purity estimates").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from qsense import packing
from qsense.records import ShadowBatch

from .class_kernels import PAULI_ROUTE_MAX, ClassCounts, class_keys, pair_row_sums, pauli_row_sums
from .result import Estimate, renyi2_from_purity
from .serial import checked_state, counts_array, dump_npz, load_npz, meta_int, wires_from_json, wires_to_json
from .shadow import _as_batch

__all__ = ["DENSE_MAX", "MAX_SUBSYSTEM", "METHODS", "ShadowPurity", "class_kernel", "u_statistic", "window_subsystems"]

#: largest subsystem (qubits); the sparse class counts and pair kernel carry it
MAX_SUBSYSTEM = 16
#: subsystems up to this size keep the dense 6^|A| histogram (6^6 = 46,656 counts)
DENSE_MAX = 6
#: the dense evaluation is possible (scattering sparse counts) up to this size
_DENSE_EVAL_MAX = 9
METHODS = ("u", "matched")

#: class c = 2*basis + bit; kernel g between two single-qubit classes
_G = np.empty((6, 6))
for _c1 in range(6):
    for _c2 in range(6):
        if _c1 // 2 != _c2 // 2:
            _G[_c1, _c2] = 0.5
        else:
            _G[_c1, _c2] = 5.0 if _c1 == _c2 else -4.0


def class_kernel() -> np.ndarray:
    """The 6x6 single-qubit kernel g (classes 2*basis + bit)."""
    return _G.copy()


def _apply(h: np.ndarray, g: np.ndarray, m: int) -> np.ndarray:
    """(g^{(x)m}) h for h of length 6^m."""
    v = h.reshape((6,) * m) if m else h.reshape(())
    for axis in range(m):
        v = np.moveaxis(np.tensordot(g, v, axes=([1], [axis])), 0, axis)
    return v.reshape(-1)




def window_subsystems(n: int, sizes: Sequence[int] | range) -> list[tuple[int, ...]]:
    """All windows of consecutive qubits of the given sizes on n qubits, sizes in order."""
    out = []
    for k in sizes:
        if not 1 <= k <= n:
            raise ValueError(f"window size {k} must lie in 1..{n}")
        out.extend(tuple(range(i, i + k)) for i in range(n - k + 1))
    return out


def _parse_windows(spec: str) -> list[int]:
    """``"windows:1..k"`` (or ``"windows:a..b"`` / ``"windows:k"``) -> the sizes."""
    body = spec[len("windows:"):] if spec.startswith("windows:") else None
    try:
        if body is None:
            raise ValueError
        lo, _, hi = body.partition("..")
        sizes = list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"subsystems must be a list of qubit lists or 'windows:1..k'; got {spec!r}") from None
    if not sizes or sizes[0] < 1 or sizes[-1] > MAX_SUBSYSTEM:
        raise ValueError(f"window sizes {spec!r} must lie in 1..{MAX_SUBSYSTEM}")
    return sizes


def u_statistic(h: np.ndarray, r1: np.ndarray, hr2: float, diag: float, N: int) -> tuple[float, float]:
    """Value and standard error of the pair U-statistic from class counts h, the row
    sums r1 = G h on the same classes, ``hr2 = h . (G^2 h)`` (G^2 elementwise) and the
    kernel's diagonal."""
    pairs = N * (N - 1.0)
    u = (h @ r1 - diag * N) / pairs
    # conditional mean of the kernel for a snapshot of each class
    h1 = (r1 - diag) / (N - 1.0)
    zeta1_plugin = float(h @ (h1 - u) ** 2) / N
    second = (hr2 - diag**2 * N) / pairs
    zeta2 = max(second - u * u, 0.0)
    # each h1 is itself a mean over N-1 partners, so the plug-in spread
    # carries (zeta2 - zeta1)/(N-1) of noise on top of zeta1; remove it
    # (otherwise the error bar is ~sqrt(3) too wide when 7^|A|/N dominates)
    zeta1 = max((zeta1_plugin - zeta2 / (N - 1.0)) / (1.0 - 1.0 / (N - 1.0)), 0.0) if N > 2 else zeta1_plugin
    var = (4.0 * (N - 2.0) * zeta1 + 2.0 * zeta2) / pairs
    return float(u), math.sqrt(max(var, 0.0))


Counts = np.ndarray | ClassCounts


class ShadowPurity:
    """Online purity tr(rho_A^2) and Renyi-2 entropy of subsystems from shadows.

    ``subsystems``: lists of wire positions (0-based columns of the records), up
    to :data:`MAX_SUBSYSTEM` qubits each, or ``"windows:1..k"``: every window
    of 1..k consecutive qubits, resolved when the first batch gives the number
    of qubits (:func:`window_subsystems`).  All subsystems are counted in one
    pass over each batch.

    ``method``: ``"u"`` (default) the pair U-statistic; ``"matched"`` the
    matched-term form (|A| <= 8; lower variance for nearly pure subsystems,
    jackknife error bars; :mod:`.purity_matched`).
    """

    def __init__(self, subsystems: Sequence[Sequence[int]] | str, method: str = "u") -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}")
        self.method = method
        self.spec: str | None = None
        self.subsystems: list[tuple[int, ...]] = []
        self._counts: list[Counts] = []
        self.wires: tuple | None = None
        self._count = 0
        if isinstance(subsystems, str):
            self._window_sizes = _parse_windows(subsystems)
            self.spec = subsystems
            return
        subs = [tuple(int(q) for q in s) for s in subsystems]
        if not subs:
            raise ValueError("at least one subsystem is needed")
        self._set_subsystems(subs)

    def _set_subsystems(self, subs: list[tuple[int, ...]]) -> None:
        for s in subs:
            if not s:
                raise ValueError("a subsystem needs at least one qubit")
            if len(set(s)) != len(s):
                raise ValueError(f"subsystem {s} repeats a qubit")
            if len(s) > MAX_SUBSYSTEM:
                raise ValueError(f"subsystem {s} has {len(s)} qubits; the limit is {MAX_SUBSYSTEM}")
            if self.method == "matched" and len(s) > _matched_max():
                raise ValueError(f"subsystem {s} has {len(s)} qubits; method='matched' allows at most {_matched_max()}")
        self.subsystems = subs
        self._counts = [np.zeros(6 ** len(s), dtype=np.int64) if len(s) <= DENSE_MAX else ClassCounts(len(s)) for s in subs]

    @property
    def count(self) -> int:
        """Snapshots seen so far."""
        return self._count

    @property
    def labels(self) -> tuple[str, ...]:
        """The subsystems as labels, in order (empty while a window spec is unresolved)."""
        return tuple(f"{list(s)}" for s in self.subsystems)

    def update(self, batch: ShadowBatch) -> None:
        """Fold in a batch of snapshots."""
        batch = _as_batch(batch)
        if self.wires is None:
            if self.spec is not None and not self.subsystems:
                if self._window_sizes[-1] > batch.n:
                    raise ValueError(f"windows up to {self._window_sizes[-1]} qubits do not fit the data's {batch.n} qubits")
                self._set_subsystems(window_subsystems(batch.n, self._window_sizes))
            for s in self.subsystems:
                if max(s) >= batch.n or min(s) < 0:
                    raise ValueError(f"subsystem {s} lies outside the data's {batch.n} qubits")
            self.wires = batch.wires
        elif batch.wires != self.wires:
            raise ValueError(f"batch wires {batch.wires} differ from the estimator's {self.wires}")
        if batch.T == 0:
            return
        cls, col = self._classes(batch)
        for s, h in zip(self.subsystems, self._counts):
            keys = class_keys(cls[:, [col[q] for q in s]])
            if isinstance(h, ClassCounts):
                h.add_keys(keys)
            else:
                h += np.bincount(keys, minlength=h.size)
        self._count += batch.T

    def _classes(self, batch: ShadowBatch) -> tuple[np.ndarray, dict[int, int]]:
        """Classes ``2 * basis + bit`` (int64 (T, c)) of the c columns the subsystems
        use, and where each column went.  A batch that has its bit planes but not
        its tables (wire v2, archive) unpacks only those columns."""
        if batch.has_tables or not batch.has_packed:
            return (2 * batch.bases + batch.outcomes).astype(np.int64), {q: q for q in range(batch.n)}
        used = sorted({q for s in self.subsystems for q in s})
        bases, outcomes = packing.unpack_shadow(batch.packed()[:, used, :], batch.T)
        return (2 * bases + outcomes).astype(np.int64), {q: i for i, q in enumerate(used)}

    def class_counts(self, index: int) -> ClassCounts:
        """The class counts of subsystem ``index`` (a copy, as sparse counts)."""
        h = self._counts[index]
        m = len(self.subsystems[index])
        if isinstance(h, ClassCounts):
            return ClassCounts.from_arrays(m, h.keys.copy(), h.counts.copy())
        nz = np.flatnonzero(h)
        return ClassCounts.from_arrays(m, nz.astype(np.int64), h[nz])

    def _row_sums(self, index: int) -> tuple[np.ndarray, np.ndarray, float]:
        """(h, G h, h . G^2 h) on the classes present, by the cheapest of three paths:
        the dense contractions (O(|A| 6^(|A|+1))), the Pauli route (O(C 2^|A|), cache
        friendly up to |A| = 10) or the pair kernel (O(C^2 / 2))."""
        h = self._counts[index]
        m = len(self.subsystems[index])
        if isinstance(h, ClassCounts):
            C = h.distinct
            pair = C * C / 2.0
            pauli = 8.0 * C * 2.0**m if m <= PAULI_ROUTE_MAX else math.inf
            dense = m * 6.0 ** (m + 1) if m <= _DENSE_EVAL_MAX else math.inf
            if pauli < min(pair, dense):
                return pauli_row_sums(h)
            if pair <= dense:
                return pair_row_sums(h)
            h = h.dense()
        nz = np.flatnonzero(h)
        hf = h.astype(np.float64)
        return hf[nz], _apply(hf, _G, m)[nz], float(hf[nz] @ _apply(hf, _G**2, m)[nz])

    def purity(self) -> Estimate:
        """Unbiased tr(rho_A^2) per subsystem with standard errors (U-statistic
        variance, or the jackknife for ``method="matched"``)."""
        N = self._count
        if N < 2:
            raise ValueError("purity needs at least two snapshots")
        vals, ses = [], []
        for i, s in enumerate(self.subsystems):
            if self.method == "matched":
                from .purity_matched import matched_purity

                u, se = matched_purity(self.class_counts(i))
            else:
                u, se = u_statistic(*self._row_sums(i), 5.0 ** len(s), N)
            vals.append(u)
            ses.append(se)
        return Estimate(np.array(vals), np.array(ses), N, self.labels)

    def entropy(self) -> Estimate:
        """Renyi-2 entropy S2 = -log2 tr(rho_A^2) in bits, with a one-sigma interval.

        ``values``: -log2 of the unbiased purity (NaN where the purity estimate is
        not positive), ``stderr`` by the delta method; ``lower``/``upper``: the
        purity's interval p +- se mapped through -log2 and clipped to [0, |A|]
        bits, always defined (flag ``"purity<=0"`` where there is no point
        estimate).  The point estimate is biased upwards (-log2 is convex): about
        se^2 / (2 p^2 ln 2) bits, measured +0.11 bits at |A| = 6 (see
        :func:`~qsense.estimators.result.renyi2_from_purity` and docs/estimators.md).
        """
        return renyi2_from_purity(self.purity(), [len(s) for s in self.subsystems])

    def merge(self, other: ShadowPurity) -> ShadowPurity:
        """Fold in another estimator's class counts (equals updating with both data sets)."""
        if not isinstance(other, ShadowPurity) or other.method != self.method:
            raise ValueError("cannot merge purity estimators of different methods")
        if other.spec != self.spec or (
            other.subsystems != self.subsystems and other.subsystems and self.subsystems
        ):
            raise ValueError("cannot merge purity estimators of different subsystems")
        if other.wires is not None and self.wires is not None and other.wires != self.wires:
            raise ValueError("cannot merge purity estimators bound to different wires")
        if not other.subsystems:
            return self
        if not self.subsystems:
            self._set_subsystems(list(other.subsystems))
        self.wires = self.wires or other.wires
        for h, o in zip(self._counts, other._counts):
            if isinstance(h, ClassCounts):
                h.merge(o)
            else:
                h += o
        self._count += other._count
        return self

    def to_bytes(self) -> bytes:
        """Serialise the class counts (npz, no pickle): dense histograms ``h{i}``,
        sparse ones as sorted keys ``k{i}`` and counts ``c{i}``."""
        meta = {
            "type": "ShadowPurity",
            "version": 2,
            "method": self.method,
            "spec": self.spec,
            "subsystems": [list(s) for s in self.subsystems],
            "wires": None if self.wires is None else wires_to_json(self.wires),
            "count": self._count,
        }
        arrays = {}
        for i, h in enumerate(self._counts):
            if isinstance(h, ClassCounts):
                arrays[f"k{i}"], arrays[f"c{i}"] = h.keys, h.counts
            else:
                arrays[f"h{i}"] = h
        return dump_npz(meta, **arrays)

    @classmethod
    @checked_state
    def from_bytes(cls, data: bytes) -> ShadowPurity:
        """Inverse of :meth:`to_bytes`; also reads version-1 (all dense) checkpoints
        (raises ``ValueError`` on malformed data)."""
        z, meta = load_npz(data, "ShadowPurity")
        spec = meta.get("spec")
        est = cls(spec if spec and not meta["subsystems"] else meta["subsystems"], method=meta.get("method", "u"))
        est.spec = spec
        est.wires = None if meta["wires"] is None else wires_from_json(meta["wires"])
        for i, s in enumerate(est.subsystems):
            m = len(s)
            if f"h{i}" in z.files:
                stored = counts_array(z[f"h{i}"], f"h{i}", (6**m,))
                if isinstance(est._counts[i], ClassCounts):
                    nz = np.flatnonzero(stored)
                    est._counts[i] = ClassCounts.from_arrays(m, nz.astype(np.int64), stored[nz])
                else:
                    est._counts[i] = stored
            elif f"k{i}" in z.files and f"c{i}" in z.files:
                keys = counts_array(z[f"k{i}"], f"k{i}")
                counts = ClassCounts.from_arrays(m, keys, counts_array(z[f"c{i}"], f"c{i}", keys.shape))
                est._counts[i] = counts if isinstance(est._counts[i], ClassCounts) else counts.dense()
            else:
                raise ValueError(f"checkpoint lacks the class counts of subsystem {list(s)}")
        est._count = meta_int(meta, "count")
        return est


def _matched_max() -> int:
    from .purity_matched import MATCHED_MAX

    return MATCHED_MAX
