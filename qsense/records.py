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

Packed form.  Both kinds also exist as the bit planes of :mod:`qsense.packing`
(the layout the wire format v2, the record archive and the counting kernels
share).  ``batch.packed()`` computes them once and caches them on the batch;
``ShadowBatch.from_packed`` / ``BellBatch.from_packed`` build a batch from
planes after validating them (word-wide checks, no unpacking) and leave the
uint8 tables unpacked until something reads ``bases`` / ``outcomes``: the
attribute access unpacks on first use (and keeps the result), so the
dataclass API is unchanged while a consumer that only counts (the estimators,
through ``has_packed``) never pays for unpacking.  ``with_meta`` keeps the
packed form, ``concatenate`` joins planes directly when every batch has them
and all but the last hold a multiple of 64 records, slicing unpacks.  The
planes are read-only; like the tables, they are a snapshot: do not modify a
batch's arrays after handing it on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from qsense import packing

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
        # one shared read-only zeros array per size: a fresh 512 KB np.zeros per batch was the
        # largest single cost of the daemon's receive path (measured 0.6 ms per call)
        t_arr = packing.decode_times(T, 0.0, 0.0)
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


def _check_width(planes: Any, what: str) -> None:
    shape = np.shape(planes)
    if len(shape) == 3 and shape[1] > MAX_QUBITS:  # before any pass over the words
        raise ValueError(f"planes have {shape[1]} {what}; the limit is {MAX_QUBITS}")


def _read_only(planes: np.ndarray) -> np.ndarray:
    view = planes.view()  # never flip the flag on the caller's own array
    view.flags.writeable = False
    return view


class _Packed:
    """Packed-form behaviour shared by both record kinds: the cached planes, lazy
    tables and pickling without the cache.  ``_TABLES`` names the dataclass fields
    that a batch built from planes unpacks on first access."""

    _TABLES: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Any:
        # only reached when normal lookup fails: a table of a batch built from
        # planes that nobody has read yet
        if name in type(self)._TABLES and "_lazy_shape" in self.__dict__:
            self._unpack()
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _unpack(self) -> None:
        raise NotImplementedError

    def _shape(self) -> tuple[int, int]:
        d = self.__dict__
        table = d.get(type(self)._TABLES[0]) if type(self)._TABLES else None
        return table.shape if table is not None else d["_lazy_shape"]

    @property
    def has_packed(self) -> bool:
        """Whether the bit planes are at hand (built from planes, or :meth:`packed`
        already called): counting from them then costs no packing."""
        return "_packed" in self.__dict__

    @property
    def has_tables(self) -> bool:
        """Whether the uint8 tables exist (False for a batch built from planes whose
        tables nobody has read yet)."""
        return all(name in self.__dict__ for name in type(self)._TABLES)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.has_tables:
            state.pop("_packed", None)  # a cache: pickles of ordinary batches stay as they were
        return state


def _check_wait(T: int, wait: Any) -> np.ndarray:
    if wait is None:
        return packing.decode_times(T, 0.0, 0.0)  # shared read-only zeros
    w = np.ascontiguousarray(np.asarray(wait, dtype=np.float64))
    if w.shape != (T,):
        raise ValueError(f"wait must have shape ({T},); got {w.shape}")
    if not np.all(np.isfinite(w)) or (w.size and w.min() < 0):
        raise ValueError("wait must hold finite non-negative seconds")
    return w


@dataclass(frozen=True, eq=False)
class ShadowBatch(_Packed):
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
    _TABLES = ("bases", "outcomes")

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
        return int(self._shape()[0])

    @property
    def n(self) -> int:
        """Number of qubits."""
        return int(self._shape()[1])

    def __len__(self) -> int:
        return self.T

    # -- packed form ------------------------------------------------------------------
    def packed(self) -> np.ndarray:
        """The bit planes, read-only uint64 (3, n, W) (:func:`qsense.packing.pack_shadow`),
        computed on first call and cached."""
        planes = self.__dict__.get("_packed")
        if planes is None:
            planes = _read_only(packing.pack_shadow(self.bases, self.outcomes))
            object.__setattr__(self, "_packed", planes)
        return planes

    @classmethod
    def from_packed(
        cls, planes: Any, T: int, *, wires: Any = None, source: str = "", seq: int = 0, t: Any = None
    ) -> "ShadowBatch":
        """A batch from shadow bit planes (uint64 (3, n, ceil(T/64)), layout of
        :mod:`qsense.packing`) holding T snapshots.

        The planes are validated (``ValueError`` on a wrong shape, basis code 3 in
        a real record, wrong padding bits) and kept as a read-only view, not
        copied; ``bases`` / ``outcomes`` are unpacked when first read.
        """
        _check_width(planes, "qubits")
        p = packing.check_shadow_planes(planes, T)
        return cls._from_valid_planes(_read_only(p), int(T), wires, source, seq, t)

    @classmethod
    def _from_valid_planes(cls, planes: np.ndarray, T: int, wires: Any, source: Any, seq: Any, t: Any) -> "ShadowBatch":
        wires_t, t_arr, seq_i = _check_common(T, planes.shape[1], wires, t, seq, source)
        self = object.__new__(cls)
        for name, value in (("wires", wires_t), ("source", source), ("seq", seq_i), ("t", t_arr)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_packed", planes)
        object.__setattr__(self, "_lazy_shape", (T, planes.shape[1]))
        return self

    def _unpack(self) -> None:
        bases, outcomes = packing.unpack_shadow(self._packed, self._lazy_shape[0])
        object.__setattr__(self, "bases", bases)
        object.__setattr__(self, "outcomes", outcomes)

    def __getitem__(self, idx: slice | np.ndarray) -> "ShadowBatch":
        if isinstance(idx, (int, np.integer)):
            idx = slice(int(idx), int(idx) + 1 if int(idx) != -1 else None)
        return ShadowBatch(self.bases[idx], self.outcomes[idx], self.wires, self.source, self.seq, self.t[idx])

    # -- conversions -----------------------------------------------------------------
    @classmethod
    def from_pennylane(cls, bits: Any, recipes: Any = None, **kw: Any) -> "ShadowBatch":
        """From what PennyLane gives: ``ShadowBatch.from_pennylane(bits, recipes)`` for the
        pair ``qml.classical_shadow`` returns (its stacked ``(2, T, n)`` array works
        too), or ``ShadowBatch.from_pennylane(shadow)`` for a ``qml.ClassicalShadow``
        (its ``wire_map`` becomes the wires)."""
        if recipes is None:
            if hasattr(bits, "bits") and hasattr(bits, "recipes"):
                shadow = bits
                kw.setdefault("wires", tuple(shadow.wire_map))
                bits, recipes = shadow.bits, shadow.recipes
            else:
                stacked = np.asarray(bits)
                if stacked.ndim != 3 or stacked.shape[0] != 2:
                    raise ValueError("give (bits, recipes), their stacked (2, T, n) array, or a qml.ClassicalShadow; "
                                     f"got one array of shape {stacked.shape}")
                bits, recipes = stacked[0], stacked[1]
        return cls(bases=np.asarray(recipes), outcomes=np.asarray(bits), **kw)

    def to_pennylane(self) -> Any:
        """A ``qml.ClassicalShadow`` holding the same data."""
        import pennylane as qml

        return qml.ClassicalShadow(self.outcomes.astype(np.int64), self.bases.astype(np.int64), wire_map=list(self.wires))

    def with_meta(self, **kw: Any) -> "ShadowBatch":
        """Copy with replaced ``wires``/``source``/``seq``/``t`` (the packed form, if
        at hand, is carried over; a batch built from planes stays unpacked)."""
        args = dict(wires=self.wires, source=self.source, seq=self.seq, t=self.t)
        args.update(kw)
        if not self.has_tables:
            return ShadowBatch._from_valid_planes(self._packed, self.T, **args)
        out = ShadowBatch(self.bases, self.outcomes, **args)
        if self.has_packed:
            object.__setattr__(out, "_packed", self._packed)
        return out


@dataclass(frozen=True, eq=False)
class BellBatch(_Packed):
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
    _TABLES = ("outcomes",)

    def __post_init__(self) -> None:
        o = _as_uint8_table("outcomes", self.outcomes, 3)
        wires, t, seq = _check_common(o.shape[0], o.shape[1], self.wires, self.t, self.seq, self.source)
        wait = _check_wait(o.shape[0], self.wait)
        object.__setattr__(self, "outcomes", o)
        object.__setattr__(self, "wires", wires)
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "wait", wait)

    @property
    def T(self) -> int:
        """Number of two-copy shots."""
        return int(self._shape()[0])

    @property
    def n(self) -> int:
        """Number of qubit pairs."""
        return int(self._shape()[1])

    def __len__(self) -> int:
        return self.T

    # -- packed form ------------------------------------------------------------------
    def packed(self) -> np.ndarray:
        """The bit planes, read-only uint64 (2, n, W) (:func:`qsense.packing.pack_bell`),
        computed on first call and cached."""
        planes = self.__dict__.get("_packed")
        if planes is None:
            planes = _read_only(packing.pack_bell(self.outcomes))
            object.__setattr__(self, "_packed", planes)
        return planes

    @classmethod
    def from_packed(
        cls, planes: Any, T: int, *, wires: Any = None, source: str = "", seq: int = 0, t: Any = None, wait: Any = None
    ) -> "BellBatch":
        """A batch from Bell bit planes (uint64 (2, n, ceil(T/64)): a, b) holding T shots.

        Validated (``ValueError`` on a wrong shape or padding bits), kept as a
        read-only view; ``outcomes`` is unpacked when first read.
        """
        _check_width(planes, "qubit pairs")
        p = packing.check_bell_planes(planes, T)
        return cls._from_valid_planes(_read_only(p), int(T), wires, source, seq, t, wait)

    @classmethod
    def _from_valid_planes(
        cls, planes: np.ndarray, T: int, wires: Any, source: Any, seq: Any, t: Any, wait: Any
    ) -> "BellBatch":
        wires_t, t_arr, seq_i = _check_common(T, planes.shape[1], wires, t, seq, source)
        wait_arr = _check_wait(T, wait)
        self = object.__new__(cls)
        for name, value in (("wires", wires_t), ("source", source), ("seq", seq_i), ("t", t_arr), ("wait", wait_arr)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_packed", planes)
        object.__setattr__(self, "_lazy_shape", (T, planes.shape[1]))
        return self

    def _unpack(self) -> None:
        object.__setattr__(self, "outcomes", packing.unpack_bell(self._packed, self._lazy_shape[0]))

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
        """Copy with replaced ``wires``/``source``/``seq``/``t``/``wait`` (the packed
        form, if at hand, is carried over; a batch built from planes stays unpacked)."""
        args = dict(wires=self.wires, source=self.source, seq=self.seq, t=self.t, wait=self.wait)
        args.update(kw)
        if not self.has_tables:
            return BellBatch._from_valid_planes(self._packed, self.T, **args)
        out = BellBatch(self.outcomes, **args)
        if self.has_packed:
            object.__setattr__(out, "_packed", self._packed)
        return out


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
    T = int(t.shape[0])
    if all(b.has_packed for b in batches) and all(b.T % 64 == 0 for b in batches[:-1]):
        # whole words: the planes join end to end (the last batch's padding stays
        # the padding), 16/3 times fewer bytes than the tables and nothing to unpack
        planes = _read_only(np.concatenate([b.packed() for b in batches], axis=2))
        if isinstance(first, ShadowBatch):
            return ShadowBatch._from_valid_planes(planes, T, first.wires, first.source, first.seq, t)
        return BellBatch._from_valid_planes(
            planes, T, first.wires, first.source, first.seq, t, np.concatenate([b.wait for b in batches])
        )
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
