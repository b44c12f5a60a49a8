"""Measurement records: the compact array batches every other module passes around.

Two record kinds, both validated on construction so that nothing downstream ever
sees a malformed array:

``ShadowBatch``  single-copy random-Pauli snapshots (PennyLane layout)
    bases     uint8 (T, n)  0 = X, 1 = Y, 2 = Z   (``qml.classical_shadow`` recipes)
    outcomes  uint8 (T, n)  0 = eigenvalue +1, 1 = eigenvalue -1

``BellBatch``    two-copy Bell measurements, one code per qubit pair
    outcomes  uint8 (T, n)  code = 2*a + b after CNOT(A_i -> B_i), H(A_i)
                            0 = Phi+, 1 = Psi+, 2 = Phi-, 3 = Psi- (singlet)

Both carry ``wires`` (labels of the n columns), ``source`` (a producer name),
``seq`` (per-source sequence number, for gap detection on the wire) and ``t``
(float64 timestamps in seconds, shape (T,)). Bell batches may also carry
``wait`` (float64 (T,)): how long the first copy of each pair sat in memory,
used to undo decoherence bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["ShadowBatch", "BellBatch", "concatenate", "MAX_QUBITS"]

#: Hard limit on the number of qubits of a record. Far above anything a
#: dense simulation reaches; it exists so that hostile input cannot make us
#: allocate absurd tables.
MAX_QUBITS = 4096


def _as_uint8_table(name: str, arr: Any, max_value: int) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (T, n); got shape {a.shape}")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == bool:
        a = a.astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > max_value):
            raise ValueError(f"{name} values must lie in 0..{max_value}; got {a.min()}..{a.max()}")
        a = a.astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if a.size and not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if a.size and not np.all(a == np.round(a)):
            raise ValueError(f"{name} must hold integers; got non-integral floats")
        if a.size and (a.min() < 0 or a.max() > max_value):
            raise ValueError(f"{name} values must lie in 0..{max_value}; got {a.min()}..{a.max()}")
        a = a.astype(np.uint8)
    else:
        raise ValueError(f"{name} must be an integer array; got dtype {a.dtype}")
    if a.size and a.max() > max_value:
        raise ValueError(f"{name} values must lie in 0..{max_value}; got max {a.max()}")
    if a.shape[1] > MAX_QUBITS:
        raise ValueError(f"{name} has {a.shape[1]} qubits; the limit is {MAX_QUBITS}")
    return np.ascontiguousarray(a)


def _check_common(T: int, n: int, wires: Any, t: Any, seq: Any, source: Any) -> tuple:
    if wires is None:
        wires_t = tuple(range(n))
    else:
        wires_t = tuple(wires)
        if len(wires_t) != n:
            raise ValueError(f"wires has {len(wires_t)} labels but the records have {n} columns")
        if len(set(wires_t)) != n:
            raise ValueError(f"wires must be distinct; got {wires_t}")
    if t is None:
        t_arr = np.zeros(T, dtype=np.float64)
    else:
        t_arr = np.ascontiguousarray(np.asarray(t, dtype=np.float64))
        if t_arr.shape != (T,):
            raise ValueError(f"t must have shape ({T},); got {t_arr.shape}")
        if not np.all(np.isfinite(t_arr)):
            raise ValueError("t contains NaN or infinite timestamps")
    if isinstance(seq, (bool, np.bool_)) or not isinstance(seq, (int, np.integer)) or seq < 0:
        raise ValueError(f"seq must be a non-negative int; got {seq!r}")
    if not isinstance(source, str):
        raise ValueError(f"source must be a str; got {type(source).__name__}")
    return wires_t, t_arr, int(seq)


@dataclass(frozen=True, eq=False)
class ShadowBatch:
    """A batch of T single-copy classical-shadow snapshots on n qubits.

    Parameters
    ----------
    bases:
        (T, n) integers in {0, 1, 2} (X, Y, Z), PennyLane's ``recipes``.
    outcomes:
        (T, n) bits, 0 for eigenvalue +1 and 1 for eigenvalue -1 (PennyLane's ``bits``).
    wires:
        labels of the n columns (default ``0..n-1``).
    source, seq, t:
        producer name, per-source sequence number, per-snapshot timestamps (s).
    """

    bases: np.ndarray
    outcomes: np.ndarray
    wires: tuple = None  # type: ignore[assignment]
    source: str = ""
    seq: int = 0
    t: np.ndarray = None  # type: ignore[assignment]

    kind = "shadow"

    def __post_init__(self) -> None:
        b = _as_uint8_table("bases", self.bases, 2)
        o = _as_uint8_table("outcomes", self.outcomes, 1)
        if b.shape != o.shape:
            raise ValueError(f"bases {b.shape} and outcomes {o.shape} must have the same shape")
        wires, t, seq = _check_common(b.shape[0], b.shape[1], self.wires, self.t, self.seq, self.source)
        object.__setattr__(self, "bases", b)
        object.__setattr__(self, "outcomes", o)
        object.__setattr__(self, "wires", wires)
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "seq", seq)

    @property
    def T(self) -> int:
        """Number of snapshots."""
        return int(self.bases.shape[0])

    @property
    def n(self) -> int:
        """Number of qubits."""
        return int(self.bases.shape[1])

    def __len__(self) -> int:
        return self.T

    def __getitem__(self, idx: slice | np.ndarray) -> "ShadowBatch":
        if isinstance(idx, (int, np.integer)):
            idx = slice(int(idx), int(idx) + 1 if int(idx) != -1 else None)
        return ShadowBatch(self.bases[idx], self.outcomes[idx], self.wires, self.source, self.seq, self.t[idx])

    # -- conversions -----------------------------------------------------------------
    @classmethod
    def from_pennylane(cls, bits: Any, recipes: Any, **kw: Any) -> "ShadowBatch":
        """From the ``(bits, recipes)`` pair returned by ``qml.classical_shadow``
        (or a ``qml.ClassicalShadow`` object as ``bits``)."""
        if hasattr(bits, "bits") and hasattr(bits, "recipes"):
            shadow = bits
            kw.setdefault("wires", tuple(shadow.wire_map))
            bits, recipes = shadow.bits, shadow.recipes
        return cls(bases=np.asarray(recipes), outcomes=np.asarray(bits), **kw)

    def to_pennylane(self) -> Any:
        """A ``qml.ClassicalShadow`` holding the same data."""
        import pennylane as qml

        return qml.ClassicalShadow(self.outcomes.astype(np.int64), self.bases.astype(np.int64), wire_map=list(self.wires))

    def with_meta(self, **kw: Any) -> "ShadowBatch":
        """Copy with replaced ``wires``/``source``/``seq``/``t``."""
        args = dict(wires=self.wires, source=self.source, seq=self.seq, t=self.t)
        args.update(kw)
        return ShadowBatch(self.bases, self.outcomes, **args)


@dataclass(frozen=True, eq=False)
class BellBatch:
    """A batch of T two-copy Bell measurements on n qubit pairs.

    ``outcomes[t, i]`` is the Bell code of pair i (qubit i of copy A with qubit i of
    copy B): ``2*a + b`` after CNOT(A_i -> B_i), H(A_i) and a computational-basis
    readout giving bits (a, b).  ``wait`` (optional, seconds) is how long the first
    copy of each pair waited in quantum memory before the measurement.
    """

    outcomes: np.ndarray
    wires: tuple = None  # type: ignore[assignment]
    source: str = ""
    seq: int = 0
    t: np.ndarray = None  # type: ignore[assignment]
    wait: np.ndarray = None  # type: ignore[assignment]

    kind = "bell"

    def __post_init__(self) -> None:
        o = _as_uint8_table("outcomes", self.outcomes, 3)
        wires, t, seq = _check_common(o.shape[0], o.shape[1], self.wires, self.t, self.seq, self.source)
        if self.wait is None:
            wait = np.zeros(o.shape[0], dtype=np.float64)
        else:
            wait = np.ascontiguousarray(np.asarray(self.wait, dtype=np.float64))
            if wait.shape != (o.shape[0],):
                raise ValueError(f"wait must have shape ({o.shape[0]},); got {wait.shape}")
            if not np.all(np.isfinite(wait)) or (wait.size and wait.min() < 0):
                raise ValueError("wait must hold finite non-negative seconds")
        object.__setattr__(self, "outcomes", o)
        object.__setattr__(self, "wires", wires)
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "wait", wait)

    @property
    def T(self) -> int:
        """Number of two-copy shots."""
        return int(self.outcomes.shape[0])

    @property
    def n(self) -> int:
        """Number of qubit pairs."""
        return int(self.outcomes.shape[1])

    def __len__(self) -> int:
        return self.T

    def __getitem__(self, idx: slice | np.ndarray) -> "BellBatch":
        if isinstance(idx, (int, np.integer)):
            idx = slice(int(idx), int(idx) + 1 if int(idx) != -1 else None)
        return BellBatch(self.outcomes[idx], self.wires, self.source, self.seq, self.t[idx], self.wait[idx])

    @property
    def bits(self) -> tuple[np.ndarray, np.ndarray]:
        """The raw readout bits (a, b), each uint8 (T, n)."""
        return self.outcomes >> 1, self.outcomes & 1

    @classmethod
    def from_bits(cls, a: Any, b: Any, **kw: Any) -> "BellBatch":
        """From the two readout bit tables: ``a`` (copy A after H) and ``b`` (copy B)."""
        a8 = _as_uint8_table("a", a, 1)
        b8 = _as_uint8_table("b", b, 1)
        if a8.shape != b8.shape:
            raise ValueError(f"a {a8.shape} and b {b8.shape} must have the same shape")
        return cls(outcomes=(a8 << 1) | b8, **kw)

    @classmethod
    def from_interleaved(cls, samples: Any, **kw: Any) -> "BellBatch":
        """From ReCirq-style two-copy samples ``[a0, b0, a1, b1, ...]`` of shape (T, 2n).

        This is also the layout of ``qml.sample()`` on a 2n-wire circuit whose wires
        are ordered (A_0, B_0, A_1, B_1, ...).
        """
        s = _as_uint8_table("samples", samples, 1)
        if s.shape[1] % 2:
            raise ValueError(f"interleaved samples need an even number of columns; got {s.shape[1]}")
        return cls.from_bits(s[:, 0::2], s[:, 1::2], **kw)

    def to_interleaved(self) -> np.ndarray:
        """The inverse of :meth:`from_interleaved`: uint8 (T, 2n)."""
        a, b = self.bits
        out = np.empty((self.T, 2 * self.n), dtype=np.uint8)
        out[:, 0::2] = a
        out[:, 1::2] = b
        return out

    def with_meta(self, **kw: Any) -> "BellBatch":
        """Copy with replaced ``wires``/``source``/``seq``/``t``/``wait``."""
        args = dict(wires=self.wires, source=self.source, seq=self.seq, t=self.t, wait=self.wait)
        args.update(kw)
        return BellBatch(self.outcomes, **args)


def concatenate(batches: Sequence[ShadowBatch] | Sequence[BellBatch] | Iterable) -> ShadowBatch | BellBatch:
    """Join batches of one kind on the same wires, in order (metadata of the first)."""
    batches = list(batches)
    if not batches:
        raise ValueError("concatenate needs at least one batch")
    first = batches[0]
    for b in batches[1:]:
        if type(b) is not type(first):
            raise ValueError(f"cannot concatenate {type(first).__name__} with {type(b).__name__}")
        if b.wires != first.wires:
            raise ValueError(f"cannot concatenate batches on different wires: {first.wires} vs {b.wires}")
    t = np.concatenate([b.t for b in batches])
    if isinstance(first, ShadowBatch):
        return ShadowBatch(
            np.concatenate([b.bases for b in batches]),
            np.concatenate([b.outcomes for b in batches]),
            first.wires, first.source, first.seq, t,
        )
    return BellBatch(
        np.concatenate([b.outcomes for b in batches]), first.wires, first.source, first.seq, t,
        np.concatenate([b.wait for b in batches]),
    )
