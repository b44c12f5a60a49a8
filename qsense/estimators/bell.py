"""Two-copy Bell-basis estimators: tr(P rho)^2 for Paulis, and purity.

Each record holds, per qubit pair i, the Bell code ``2*a + b`` (docs/estimators.md).  Per
pair the eigenvalues are XX = (-1)^a, ZZ = (-1)^b, YY = -(-1)^(a+b), so a Pauli
P has the per-shot value ``(-1)^{#Y(P)} (-1)^{parity}`` with parity the XOR over
its support of a (X), a xor b (Y) or b (Z).  Its mean estimates tr(P rho)^2 with
per-shot variance 1 - tr(P rho)^4, whatever the weight of P.  Purity uses the
SWAP eigenvalue: -1 for each singlet (code 3), +1 otherwise.

Copies that waited in memory (``BellBatch.wait``) decohere; with local
depolarizing at rate 1/T2 this biases the means by exp(-k tau / T2), and with
``t2=...`` every shot is reweighted to remove it (docs/physics.md §3), at the
price of extra variance.  The reweighting follows the memory's model per Pauli
letter (:mod:`qsense.estimators.decoherence`): ``decoherence="dephasing"`` leaves
Z factors alone (reweighting them as if depolarizing over-corrects ZZZ by
+18.5%), ``"t1t2"`` divides Z factors by e^{-tau/T1}.  A shot's Pauli value is
multiplied by prod_L e^{tau r_L} over its letters L; the purity's per-wire SWAP
value (1 + XX + YY + ZZ)/2 becomes (1 + XX/f_X + YY/f_Y + ZZ/f_Z)/2 with the
letters' survival factors f_L = e^{-tau r_L} (for depolarizing: triplet (1+w)/2,
singlet (1-3w)/2, w = e^{tau/T2}).
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

from qsense.pauli import PauliObservable, PauliTable, SumMoments, compile_observables
from qsense.records import BellBatch

from .decoherence import DecoherenceModel, Depolarizing, make_decoherence
from .bell_weighted import purity_table, shot_weights, weighted_plan, weighted_purity, weighted_sums, weighted_term_values
from .kernels import bell_counts_batch, bell_term_values
from .result import Estimate, renyi2_from_purity
from .serial import checked_state, counts_array, dump_npz, float_array, load_npz, meta_int, obs_from_json, obs_to_json, wires_from_json, wires_to_json
from .shadow import _parse_all

__all__ = ["BellEstimator", "AllPauliSquares", "all_pauli_squares", "pauli_square_labels", "MAX_ALL_PAULI_QUBITS"]

#: all_pauli_squares holds 4^n float64 values (n = 12: 128 MiB); above this it refuses.
MAX_ALL_PAULI_QUBITS = 12


def _as_bell(batch: Any) -> BellBatch:
    if not isinstance(batch, BellBatch):
        raise ValueError(f"expected a BellBatch; got {type(batch).__name__}")
    return batch


class BellEstimator:
    """Online tr(P rho)^2 and purity from a stream of :class:`BellBatch`.

    Parameters
    ----------
    observables:
        Pauli strings or PennyLane Pauli words. For Pauli sums the squared
        expectation of each term is estimated and recombined with the
        coefficients (that is, ``sum_j c_j tr(P_j rho)^2``).
    t2:
        If given (seconds), undo the decoherence of the first copy of each pair
        from ``BellBatch.wait`` with the ``decoherence`` model (default: local
        depolarizing at rate 1/T2).
    purity_subsystems:
        Subsystems (lists of wire positions) whose purity is tracked; the whole
        register (``None``) is always tracked.
    decoherence:
        ``"depolarizing"`` (default), ``"dephasing"``, ``"t1t2"`` (needs ``t1``)
        or a :class:`~qsense.estimators.decoherence.DecoherenceModel` (then
        ``t2``/``t1`` come from it).  Pass the memory's own model object
        (``memory.decoherence``) so the reweighting cannot disagree with it.
    t1:
        T1 in seconds, for ``decoherence="t1t2"``.
    """

    def __init__(
        self,
        observables: Any = (),
        t2: float | None = None,
        purity_subsystems: Sequence[Sequence[int]] = (),
        decoherence: "str | DecoherenceModel | None" = None,
        t1: float | None = None,
    ) -> None:
        empty = isinstance(observables, (list, tuple)) and len(observables) == 0
        self.observables: list[PauliObservable] = [] if empty else _parse_all(observables)
        if t2 is not None and not (np.isfinite(t2) and t2 > 0):
            raise ValueError(f"t2 must be a positive finite number of seconds; got {t2!r}")
        if isinstance(decoherence, DecoherenceModel):
            if t2 is not None and float(t2) != decoherence.t2:
                raise ValueError(f"t2={t2!r} disagrees with the decoherence model {decoherence!r}")
            model: DecoherenceModel | None = decoherence if decoherence.finite else None
        else:
            model = make_decoherence(decoherence, t2=t2, t1=t1)
            if model is not None and not model.finite:
                model = None  # a name without times: nothing decays, nothing to undo
        #: the model the shots are reweighted with (None: no reweighting)
        self.decoherence: DecoherenceModel | None = model
        self.t2 = None if model is None or not np.isfinite(model.t2) else float(model.t2)
        if model is not None and not model.unital:
            warnings.warn(
                f"{model!r} is not unital: the reweighting divides out e^(-tau/T1) per Z letter but cannot remove the "
                "relaxation towards |0> (a bias of order 1 - e^(-tau/T1) per Z letter on states with <Z>-type "
                "sub-Paulis; docs/estimators.md)",
                RuntimeWarning,
                stacklevel=2,
            )
        self.purity_subsystems = [tuple(int(q) for q in s) for s in purity_subsystems]
        self.wires: tuple | None = None
        self._table: PauliTable | None = None
        self._count = 0
        self._S = np.zeros(0)
        self._Q = np.zeros(0)
        self._pS = np.zeros(1 + len(self.purity_subsystems))
        self._pQ = np.zeros(1 + len(self.purity_subsystems))

    @property
    def labels(self) -> tuple[str, ...]:
        """The observables' labels, in order."""
        return tuple(o.label for o in self.observables)

    @property
    def count(self) -> int:
        """Two-copy shots seen so far."""
        return self._count

    def _bind(self, wires: tuple) -> None:
        n = len(wires)
        for s in self.purity_subsystems:
            if any(not 0 <= q < n for q in s) or len(set(s)) != len(s):
                raise ValueError(f"purity subsystem {s} is not a set of wire positions in 0..{n - 1}")
        self._table = compile_observables(self.observables, wires)
        self._sums = SumMoments(self._table)
        self.wires = tuple(wires)
        self._S = np.zeros(self._table.M)
        self._Q = np.zeros(self._table.M)

    def _masks(self, n: int) -> np.ndarray:
        masks = np.zeros((1 + len(self.purity_subsystems), n), dtype=bool)
        masks[0] = True
        for i, s in enumerate(self.purity_subsystems):
            masks[i + 1, list(s)] = True
        return masks

    @staticmethod
    def _odd_singlets(batch: BellBatch, masks: np.ndarray) -> np.ndarray:
        """Per mask, the number of shots with an odd number of singlets (code 3) on it."""
        if batch.has_packed:
            planes = batch.packed()
            singlet = planes[0] & planes[1]  # (n, W) words; padding bits are 0
            par = [np.bitwise_xor.reduce(singlet[m], axis=0) for m in masks]
            return np.array([int(np.bitwise_count(p).sum()) for p in par], dtype=np.float64)
        if not batch.n:
            return np.zeros(len(masks))
        singlet = (batch.outcomes == 3).astype(np.uint8)
        return ((singlet @ masks.T.astype(np.uint8)) % 2).sum(axis=0, dtype=np.int64).astype(np.float64)

    def update(self, batch: BellBatch) -> None:
        """Fold in a batch of two-copy records."""
        batch = _as_bell(batch)
        if self._table is None:
            self._bind(batch.wires)
        elif batch.wires != self.wires:
            raise ValueError(f"batch wires {batch.wires} differ from the estimator's {self.wires}")
        T = batch.T
        if T == 0:
            return
        t = self._table
        masks = self._masks(batch.n)
        if self.decoherence is None:
            ysign = np.where((t.letters == 2).sum(axis=1) % 2 == 1, -1.0, 1.0)
            # from the batch's bit planes when it carries them (wire v2, archive): no unpacking
            total, odd = bell_counts_batch(batch, t, [T])
            self._S += ysign * (total[0] - 2 * odd[0])
            self._Q += total[0]
            if self._sums:
                for lo in range(0, T, 1 << 14):
                    self._sums.add(bell_term_values(batch.outcomes[lo : lo + (1 << 14)], t, self._sums.terms))
            # (-1)^{#singlets on A}: the sum over shots is T - 2 (#shots with odd parity)
            self._pS += T - 2.0 * self._odd_singlets(batch, masks)
            self._pQ += T
        else:
            model = self.decoherence
            depol = isinstance(model, Depolarizing)
            w = np.exp(batch.wait / self.t2) if depol else None  # (T,): the historical arithmetic, kept bit for bit
            if t.M:
                # grouped by support and rate: no (shots x terms) matrix (qsense.estimators.bell_weighted)
                plan = weighted_plan(t, model)
                R = shot_weights(plan, batch.wait, w)
                S, Q = weighted_sums(batch.outcomes, R, plan)
                self._S += S
                self._Q += Q
                if self._sums:
                    for lo in range(0, T, 8192):
                        hi = min(T, lo + 8192)
                        vals = bell_term_values(batch.outcomes[lo:hi], t, self._sums.terms)
                        self._sums.add(weighted_term_values(R[:, lo:hi], plan, self._sums.terms, vals))
            # the purity: per wire a SWAP value per Bell code, divided by the letters' survival
            pS, pQ = weighted_purity(batch.outcomes, purity_table(model, batch.wait, w), masks)
            self._pS += pS
            self._pQ += pQ
        self._count += T

    def _finish(self, S: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        N = self._count
        mean = S / N
        if N < 2:
            return mean, np.full_like(mean, np.inf)
        var = np.maximum(Q / N - mean**2, 0.0) * N / (N - 1)
        return mean, np.sqrt(var / N)

    def estimate(self) -> Estimate:
        """tr(P rho)^2 for each observable (recombined with coefficients for sums)."""
        if self._count == 0:
            raise ValueError("no data yet: call update() first")
        vals, se = self._finish(self._S, self._Q)
        t = self._table
        out, err = t.combine(vals), np.sqrt(t.combine(se**2, squared=True))
        if self._sums:  # per-shot second moment of the whole sum: term correlations included
            err[self._sums.obs] = self._sums.stderr(out, self._count)
        return Estimate(out, err, self._count, self.labels)

    def purity(self, subsystem: Sequence[int] | None = None) -> Estimate:
        """tr(rho_A^2) for the whole register (default) or a tracked subsystem."""
        if self._count == 0:
            raise ValueError("no data yet: call update() first")
        if subsystem is None:
            i = 0
            label = "purity"
        else:
            key = tuple(int(q) for q in subsystem)
            if key not in self.purity_subsystems:
                raise ValueError(f"subsystem {key} is not tracked; pass it in purity_subsystems={[key]!r}")
            i = 1 + self.purity_subsystems.index(key)
            label = f"purity{list(key)}"
        v, s = self._finish(self._pS[i : i + 1], self._pQ[i : i + 1])
        return Estimate(v, s, self._count, (label,))

    def entropy(self, subsystem: Sequence[int] | None = None) -> Estimate:
        """Renyi-2 entropy -log2 tr(rho_A^2) in bits of :meth:`purity`, with the
        purity's one-sigma interval mapped to ``lower``/``upper`` (clipped to
        [0, |A|]) and the flag ``"purity<=0"`` where there is no point estimate
        (see :func:`~qsense.estimators.result.renyi2_from_purity`)."""
        p = self.purity(subsystem)
        size = len(self.wires) if subsystem is None else len(tuple(subsystem))
        e = renyi2_from_purity(p, [size])
        return Estimate(e.values, e.stderr, e.count, ("S2" + p.labels[0][len("purity"):],), e.lower, e.upper, e.flags)

    def merge(self, other: "BellEstimator") -> "BellEstimator":
        """Fold in another estimator's statistics (equals updating with both data sets)."""
        if not isinstance(other, BellEstimator):
            raise ValueError(f"cannot merge a {type(other).__name__} into a BellEstimator")
        if [o.terms for o in other.observables] != [o.terms for o in self.observables] or other.decoherence != self.decoherence or other.purity_subsystems != self.purity_subsystems:
            raise ValueError("cannot merge Bell estimators with different configuration")
        if other._table is None:
            return self
        if self._table is None:
            self._bind(other.wires)
        elif other.wires != self.wires:
            raise ValueError("cannot merge Bell estimators bound to different wires")
        self._S += other._S
        self._Q += other._Q
        self._sums.Q += other._sums.Q
        self._pS += other._pS
        self._pQ += other._pQ
        self._count += other._count
        return self

    def to_bytes(self) -> bytes:
        """Serialise configuration and sums (npz, no pickle)."""
        meta = {
            "type": "BellEstimator",
            "version": 1,
            "t2": self.t2,
            "decoherence": None if self.decoherence is None else self.decoherence.to_json(),
            "purity_subsystems": [list(s) for s in self.purity_subsystems],
            "observables": [obs_to_json(o) for o in self.observables],
            "wires": None if self.wires is None else wires_to_json(self.wires),
            "count": self._count,
        }
        sumsq = self._sums.Q if self._table is not None else np.zeros(0)
        return dump_npz(meta, S=self._S, Q=self._Q, pS=self._pS, pQ=self._pQ, sumsq=sumsq)

    @classmethod
    @checked_state
    def from_bytes(cls, data: bytes) -> "BellEstimator":
        """Inverse of :meth:`to_bytes` (raises ``ValueError`` on malformed data)."""
        z, meta = load_npz(data, "BellEstimator")
        # checkpoints before the decoherence key meant depolarizing at t2
        model = meta.get("decoherence")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the non-unital warning was given when it was built
            if model is None:
                est = cls([obs_from_json(o) for o in meta["observables"]], t2=meta["t2"], purity_subsystems=meta["purity_subsystems"])
            else:
                est = cls([obs_from_json(o) for o in meta["observables"]], purity_subsystems=meta["purity_subsystems"],
                          decoherence=make_decoherence(model))
        if meta["wires"] is not None:
            est._bind(wires_from_json(meta["wires"]))
            M, P = (est._table.M,), (1 + len(est.purity_subsystems),)
            est._S, est._Q = float_array(z["S"], "S", M), float_array(z["Q"], "Q", M)
            est._pS, est._pQ = float_array(z["pS"], "pS", P), float_array(z["pQ"], "pQ", P)
            est._sums.Q = float_array(z["sumsq"], "sumsq", est._sums.Q.shape)
        est._count = meta_int(meta, "count")
        return est


def pauli_square_labels(n: int) -> list[str]:
    """Dense Pauli strings in the order of :func:`all_pauli_squares` (I, X, Y, Z per
    wire, wire 0 most significant)."""
    import itertools

    return ["".join(p) for p in itertools.product("IXYZ", repeat=n)]


def _outcome_histogram(batch: BellBatch) -> np.ndarray:
    """Counts of the 4^n joint Bell outcomes, index = base-4 codes, wire 0 most significant."""
    n = batch.n
    weights = 4 ** np.arange(n - 1, -1, -1, dtype=np.int64)
    idx = batch.outcomes.astype(np.int64) @ weights if n else np.zeros(batch.T, dtype=np.int64)
    return np.bincount(idx, minlength=4**n)


def _squares_from_histogram(hist: np.ndarray, n: int) -> np.ndarray:
    """2n-bit Walsh-Hadamard transform of the outcome histogram, signed, per shot."""
    F = hist.astype(np.float64)
    for bit in range(2 * n):
        F = F.reshape(-1, 2, 2**bit)
        F0 = F[:, 0, :].copy()
        F[:, 0, :] += F[:, 1, :]
        F[:, 1, :] = F0 - F[:, 1, :]
    F = F.reshape((4,) * n) if n else F.reshape(())
    # digit (u, v) = 2u + v; letters I, X, Y, Z have (u, v) = (0,0), (1,0), (1,1), (0,1)
    perm = np.array([0, 2, 3, 1])
    for axis in range(n):
        F = np.take(F, perm, axis=axis)
    sign = np.array([1.0])
    for _ in range(n):
        sign = np.kron(sign, np.array([1.0, 1.0, -1.0, 1.0]))
    return F.reshape(-1) * sign / hist.sum()


def _check_all_n(n: int, max_qubits: int) -> None:
    if n > max_qubits:
        raise ValueError(f"all_pauli_squares holds 4^n values; n={n} exceeds the limit of {max_qubits} qubits")


def all_pauli_squares(batch: BellBatch, max_qubits: int = MAX_ALL_PAULI_QUBITS) -> np.ndarray:
    """Estimates of tr(P rho)^2 for all 4^n Paulis P from one Bell batch.

    Index: base-4 digits (I=0, X=1, Y=2, Z=3) per wire, wire 0 most significant.
    Method: histogram the 2n-bit outcomes (T work), 2n-bit Walsh-Hadamard
    transform (O(n 4^n)), sign (-1)^{#Y}.  Refuses n > ``max_qubits`` (default
    12, i.e. 128 MiB of output) with a ``ValueError``.  For a stream, use
    :class:`AllPauliSquares`.
    """
    batch = _as_bell(batch)
    _check_all_n(batch.n, max_qubits)
    if batch.T == 0:
        raise ValueError("cannot estimate from an empty batch")
    return _squares_from_histogram(_outcome_histogram(batch), batch.n)


class AllPauliSquares:
    """Online tr(P rho)^2 for all 4^n Paulis: the outcome histogram (4^n integers)
    is the sufficient statistic, so memory is fixed however long the stream.

    ``estimate()`` returns values and standard errors (per-shot variance
    1 - v^2, since every shot is +-1) in the order of :func:`pauli_square_labels`.
    """

    def __init__(self, max_qubits: int = MAX_ALL_PAULI_QUBITS) -> None:
        self.max_qubits = int(max_qubits)
        self.wires: tuple | None = None
        self._hist: np.ndarray | None = None

    @property
    def count(self) -> int:
        """Two-copy shots seen so far."""
        return 0 if self._hist is None else int(self._hist.sum())

    def update(self, batch: BellBatch) -> None:
        """Fold in a batch of two-copy records."""
        batch = _as_bell(batch)
        if self._hist is None:
            _check_all_n(batch.n, self.max_qubits)
            self.wires = batch.wires
            self._hist = np.zeros(4**batch.n, dtype=np.int64)
        elif batch.wires != self.wires:
            raise ValueError(f"batch wires {batch.wires} differ from the estimator's {self.wires}")
        if batch.T:
            self._hist += _outcome_histogram(batch)

    def estimate(self) -> Estimate:
        """All 4^n estimates with one-sigma errors and Pauli-string labels."""
        if not self.count:
            raise ValueError("no data yet: call update() first")
        n = len(self.wires)
        v = _squares_from_histogram(self._hist, n)
        N = self.count
        se = np.sqrt(np.maximum(1.0 - v * v, 0.0) / max(N - 1, 1)) if N > 1 else np.full_like(v, np.inf)
        return Estimate(v, se, N, tuple(pauli_square_labels(n)))

    def merge(self, other: "AllPauliSquares") -> "AllPauliSquares":
        """Fold in another estimator's histogram."""
        if not isinstance(other, AllPauliSquares):
            raise ValueError(f"cannot merge a {type(other).__name__} into AllPauliSquares")
        if other._hist is None:
            return self
        if self._hist is None:
            self.wires, self._hist = other.wires, other._hist.copy()
        elif other.wires != self.wires:
            raise ValueError("cannot merge estimators bound to different wires")
        else:
            self._hist += other._hist
        return self

    def to_bytes(self) -> bytes:
        """Serialise the histogram (npz, no pickle)."""
        meta = {
            "type": "AllPauliSquares",
            "version": 1,
            "max_qubits": self.max_qubits,
            "wires": None if self.wires is None else wires_to_json(self.wires),
        }
        return dump_npz(meta, hist=np.zeros(0, np.int64) if self._hist is None else self._hist)

    @classmethod
    @checked_state
    def from_bytes(cls, data: bytes) -> "AllPauliSquares":
        """Inverse of :meth:`to_bytes` (raises ``ValueError`` on malformed data)."""
        z, meta = load_npz(data, "AllPauliSquares")
        est = cls(meta["max_qubits"])
        if meta["wires"] is not None:
            est.wires = wires_from_json(meta["wires"])
            if len(est.wires) > est.max_qubits:
                raise ValueError(f"checkpoint wires: {len(est.wires)} qubits, more than max_qubits {est.max_qubits}")
            est._hist = counts_array(z["hist"], "hist", (4 ** len(est.wires),))
        return est
