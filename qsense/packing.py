"""Bit-packed record layouts shared by the wire format, the archive and the counting kernels.

One packed form for each record kind, the *bit planes*: per plane and per
qubit column, a bit mask over the records packed into little-endian 64-bit
words.  Bit ``r % 64`` of word ``r // 64`` (bit 0 = least significant) is
record ``r``; ``W = ceil(T / 64)`` words per column; the last word of a column
holds ``64 W - T`` padding records (bits ``T % 64 .. 63`` when ``T % 64 != 0``).
This is exactly what the counting kernels (:mod:`qsense.estimators.kernels`)
work on, so a consumer that only counts never unpacks.

Shadow planes (:func:`pack_shadow`): ``uint64`` array of shape ``(3, n, W)``

======  ========================================  ==================
plane   bit of record r, column q                 padding records
======  ========================================  ==================
0       b0 = low bit of the basis code            1
1       b1 = high bit of the basis code           1
2       outcome bit (1 = eigenvalue -1)           0
======  ========================================  ==================

Basis code ``b1 b0``: X = 00, Y = 01 (b0 = 1), Z = 10 (b1 = 1); code 11 means
"no basis" and matches no Pauli letter.  Real records never have code 11
(:func:`unpack_shadow` refuses it); padding records always do, so a count of
matches over whole words is correct without masking the last word.

Bell planes (:func:`pack_bell`): ``uint64`` array of shape ``(2, n, W)``:
plane 0 = ``a = code >> 1``, plane 1 = ``b = code & 1`` (Bell code ``2a + b``),
padding bits 0 in both.

Serialised (wire format v2, the record archive), a plane array is its C-order
bytes: plane-major, then column, then word, each word 8 bytes little endian;
:func:`packed_nbytes` gives the length, ``8 * planes * n * W``.  Byte
``8 (p n W + q W + w) + k`` holds records ``64 w + 8 k .. 64 w + 8 k + 7`` of
column q in plane p, record ``64 w + 8 k + j`` in bit j.

Timestamps (:func:`encode_times`): ``(t0, dt, raw)`` with ``raw`` None when the
float64 timestamps equal, bit for bit, ``t0 + dt * arange(T)`` evaluated in
float64 (regular clocks, constant and all-zero timestamps), otherwise ``raw``
is the float64 array itself.  Lossless either way; :func:`decode_times`
inverts it.

This module sits in the lowest import layer: NumPy and the standard library
only.  The functions work on whole tables with word-wide NumPy operations (no
per-record Python loops): packing transposes the (T, n) tables once so that
``np.packbits`` runs along contiguous memory; unpacking runs ``np.unpackbits``
along the words and writes the (T, n) tables one column at a time (a long
strided copy per column is several times faster than NumPy's transposed copy
with the short axis innermost).
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

__all__ = [
    "SHADOW_PLANES",
    "BELL_PLANES",
    "n_words",
    "valid_words",
    "pack_shadow",
    "unpack_shadow",
    "check_shadow_planes",
    "pack_bell",
    "unpack_bell",
    "check_bell_planes",
    "encode_times",
    "decode_times",
    "packed_nbytes",
]

#: Planes per record kind.
SHADOW_PLANES = 3
BELL_PLANES = 2
_PLANES = {"shadow": SHADOW_PLANES, "bell": BELL_PLANES}

_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_U8 = [np.uint8(i) for i in range(8)]

_local = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A per-thread scratch array reused across calls: fresh multi-megabyte
    temporaries are page-faulted on every call, which costs more than the
    arithmetic here."""
    cache = _local.__dict__.setdefault("buffers", {})
    size = math.prod(shape)
    key = (name, np.dtype(dtype))
    buf = cache.get(key)
    if buf is None or buf.size < size:
        buf = cache[key] = np.empty(max(size, 1), dtype=dtype)
    return buf[:size].reshape(shape)


def n_words(T: int) -> int:
    """Words per column for T records: ``ceil(T / 64)``."""
    return -(-int(T) // 64)


def valid_words(T: int) -> np.ndarray:
    """uint64 (W,): bit r set for the real records r < T, clear for the padding."""
    W = n_words(T)
    out = np.full(W, _ALL, dtype=np.uint64)
    if T % 64:
        out[-1] = np.uint64((1 << (T % 64)) - 1)
    return out


def packed_nbytes(kind: str, T: int, n: int) -> int:
    """Bytes of the packed planes of T records on n columns: ``8 * planes * n * W``."""
    if kind not in _PLANES:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {sorted(_PLANES)}")
    return 8 * _PLANES[kind] * int(n) * n_words(T)


# -- packing ---------------------------------------------------------------------------
def _table(name: str, a: Any, max_value: int) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or a.dtype != np.uint8:
        raise ValueError(f"{name} must be a uint8 (T, n) table; got {a.dtype} {a.shape}")
    if a.size and a.max() > max_value:
        raise ValueError(f"{name} values must lie in 0..{max_value}; got max {a.max()}")
    return a


def _transposed(table: np.ndarray, fill: int) -> np.ndarray:
    """(T, n) -> scratch (n, 64 W): records along the contiguous axis, ``fill`` in the padding."""
    T, n = table.shape
    R = 64 * n_words(T)
    C = _scratch("C", (n, R), np.uint8)
    C[:, :T] = table.T
    C[:, T:] = fill
    return C


def _pack_rows(mask: np.ndarray) -> np.ndarray:
    """bool (n, 64 W) -> uint64 (n, W), bit r % 64 of word r // 64 = record r."""
    return np.packbits(mask, axis=1, bitorder="little").view("<u8")


def pack_shadow(bases: Any, outcomes: Any) -> np.ndarray:
    """Shadow bit planes, uint64 (3, n, W): basis code low bit, high bit, outcome
    (layout in the module docstring).  ``bases`` and ``outcomes`` are uint8
    (T, n) tables as :class:`~qsense.records.ShadowBatch` holds them."""
    b = _table("bases", bases, 2)
    o = _table("outcomes", outcomes, 1)
    if b.shape != o.shape:
        raise ValueError(f"bases {b.shape} and outcomes {o.shape} must have the same shape")
    T, n = b.shape
    out = np.empty((SHADOW_PLANES, n, n_words(T)), dtype=np.uint64)
    if out.size == 0:
        return out
    # one transpose of basis + 4 * outcome (padding: basis code 3, outcome 0), then
    # three bit planes by masks and comparisons (NumPy's uint8 shifts are slow)
    code = np.multiply(o, _U8[4], out=_scratch("code", (T, n), np.uint8))
    code += b
    C = _transposed(code, 3)
    tmp = _scratch("tmp", C.shape, np.uint8)
    out[0] = _pack_rows(np.bitwise_and(C, _U8[1], out=tmp).view(bool))
    np.bitwise_and(C, _U8[3], out=tmp)
    out[1] = _pack_rows(np.greater_equal(tmp, _U8[2], out=tmp.view(bool)))
    out[2] = _pack_rows(np.greater_equal(C, _U8[4], out=tmp.view(bool)))
    return out


def pack_bell(outcomes: Any) -> np.ndarray:
    """Bell bit planes, uint64 (2, n, W): plane 0 = a = code >> 1, plane 1 = b = code & 1
    (padding 0).  ``outcomes`` is a uint8 (T, n) table of Bell codes 0..3."""
    c = _table("outcomes", outcomes, 3)
    T, n = c.shape
    out = np.empty((BELL_PLANES, n, n_words(T)), dtype=np.uint64)
    if out.size == 0:
        return out
    C = _transposed(c, 0)
    tmp = _scratch("tmp", C.shape, np.uint8)
    out[0] = _pack_rows(np.greater_equal(C, _U8[2], out=tmp.view(bool)))
    out[1] = _pack_rows(np.bitwise_and(C, _U8[1], out=tmp).view(bool))
    return out


# -- validation ------------------------------------------------------------------------
def _planes(planes: Any, T: Any, count: int, kind: str) -> np.ndarray:
    """Shape and dtype checks shared by both kinds; returns native uint64 planes."""
    if isinstance(T, (bool, np.bool_)) or not isinstance(T, (int, np.integer)) or T < 0:
        raise ValueError(f"T must be a non-negative int; got {T!r}")
    p = np.asarray(planes)
    if p.dtype.kind != "u" or p.dtype.itemsize != 8:
        raise ValueError(f"{kind} planes must be uint64; got dtype {p.dtype}")
    W = n_words(T)
    if p.ndim != 3 or p.shape[0] != count or p.shape[2] != W:
        raise ValueError(f"{kind} planes must have shape ({count}, n, {W}) for T={T}; got {p.shape}")
    if not p.dtype.isnative:
        p = p.astype(np.uint64)
    return p


def check_shadow_planes(planes: Any, T: int) -> np.ndarray:
    """Validate shadow planes for T records (shape, no basis code 3 in a real record,
    padding bits b0 = b1 = 1, outcome 0) and return them as native uint64.

    Raises ``ValueError`` saying what is wrong: the planes may come from a file or
    a socket.  Costs a few word-wide passes, no unpacking.
    """
    p = _planes(planes, T, SHADOW_PLANES, "shadow")
    n, W = p.shape[1], p.shape[2]
    if n == 0 or W == 0:
        return p
    pad = ~valid_words(T)[-1]  # bits of the padding records in the last word
    # code 3 exactly where the padding is: any other pattern is a code-3 record or bad padding
    # (into a reused per-thread buffer: a fresh one is page-faulted on every call)
    both = np.bitwise_and(p[0], p[1], out=_thread_scratch("both", (n, W), np.uint64))
    if W > 1 and np.any(both[:, :-1]):
        raise ValueError("shadow planes hold basis code 3 (no basis) in a real record")
    last = both[:, -1]
    if np.any(last & ~pad):
        raise ValueError("shadow planes hold basis code 3 (no basis) in a real record")
    if np.any(last != pad):
        raise ValueError("shadow planes: padding records must have both basis bits set")
    if np.any(p[2, :, -1] & pad):
        raise ValueError("shadow planes: padding records must have outcome bit 0")
    return p


def check_bell_planes(planes: Any, T: int) -> np.ndarray:
    """Validate Bell planes for T records (shape, padding bits 0) and return them as
    native uint64.  Raises ``ValueError`` saying what is wrong."""
    p = _planes(planes, T, BELL_PLANES, "bell")
    n, W = p.shape[1], p.shape[2]
    if n == 0 or W == 0 or T % 64 == 0:
        return p
    if np.any(p[:, :, -1] & ~valid_words(T)[-1]):
        raise ValueError("bell planes: padding records must have both bits 0")
    return p


# -- unpacking -------------------------------------------------------------------------
def _bits(planes: np.ndarray) -> np.ndarray:
    """uint64 planes (p, n, W) -> uint8 (p, n, 64 W) of 0/1, record r at index r."""
    return np.unpackbits(planes.astype("<u8", copy=False).view(np.uint8), axis=-1, bitorder="little")


def _records_major(rows: np.ndarray, T: int, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 (n, >= T) -> C-contiguous (T, n) table (the transpose of its first T columns)."""
    n = rows.shape[0]
    if out is None:
        out = np.empty((T, n), dtype=np.uint8)
    if T > n:
        # one strided column write per qubit: a long inner loop (NumPy copies a
        # (T, n) transpose with the n-long axis innermost, about 5x slower)
        for q in range(n):
            out[:, q] = rows[q, :T]
    else:
        out[...] = rows[:, :T].T
    return out


def unpack_shadow(planes: Any, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_shadow`: ``(bases, outcomes)``, uint8 (T, n) each.

    Validates first (:func:`check_shadow_planes`; ``ValueError`` on malformed
    planes), so the tables are always valid records.
    """
    p = check_shadow_planes(planes, T)
    n = p.shape[1]
    if T == 0 or n == 0:
        return np.zeros((T, n), np.uint8), np.zeros((T, n), np.uint8)
    bits = _bits(p)
    # one transpose of 4 outcome + 2 b1 + b0 (the slow step), then two cheap passes
    code = np.add(bits[2], bits[2], out=_scratch("code", bits.shape[1:], np.uint8))
    code += bits[1]
    code += code
    code += bits[0]
    table = _records_major(code, T, _scratch("table", (T, n), np.uint8))
    outcomes = np.greater_equal(table, _U8[4]).view(np.uint8)
    return np.bitwise_and(table, _U8[3]), outcomes


def unpack_bell(planes: Any, T: int) -> np.ndarray:
    """Inverse of :func:`pack_bell`: the Bell codes ``2a + b``, uint8 (T, n).

    Validates first (:func:`check_bell_planes`; ``ValueError`` on malformed planes).
    """
    p = check_bell_planes(planes, T)
    n = p.shape[1]
    if T == 0 or n == 0:
        return np.zeros((T, n), np.uint8)
    bits = _bits(p)
    code = np.add(bits[0], bits[0], out=_scratch("code", bits.shape[1:], np.uint8))  # 2 a + b
    code += bits[1]
    return _records_major(code, T)


# -- timestamps ------------------------------------------------------------------------
_arange: np.ndarray = np.arange(0, dtype=np.float64)


def _regular(T: int, t0: float, dt: float, out: np.ndarray | None = None) -> np.ndarray:
    """``t0 + dt * arange(T)`` in float64: the one expression both sides evaluate
    (elementwise IEEE operations, no fused multiply-add, so bit-reproducible)."""
    global _arange
    if _arange.shape[0] < T:
        _arange = np.arange(max(T, 2 * _arange.shape[0]), dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow gives inf: the records refuse it
        out = np.multiply(_arange[:T], np.float64(dt), out=out)
        out += np.float64(t0)
    return out


def encode_times(t: Any) -> tuple[float, float, np.ndarray | None]:
    """Lossless compact form of float64 timestamps: ``(t0, dt, raw)``.

    ``raw`` is None when ``t`` equals ``t0 + dt * arange(T)`` bit for bit
    (regular clocks, constant and all-zero timestamps: nothing to store);
    otherwise ``raw`` is ``t`` as float64 and ``t0 = dt = 0``.
    """
    a = np.ascontiguousarray(np.asarray(t, dtype=np.float64))
    if a.ndim != 1:
        raise ValueError(f"timestamps must be a 1-D array; got shape {a.shape}")
    T = a.shape[0]
    if T == 0:
        return 0.0, 0.0, None
    t0 = float(a[0])
    if _constants.get((T, t0)) is a:  # decode_times' shared constant: known without a look (the daemon
        return t0, 0.0, None          # archives what it decoded, so this is the common case)
    if T == 1:
        return (t0, 0.0, None) if _same(_regular(1, t0, 0.0), a) else (0.0, 0.0, a)
    # candidate steps: the first difference, the mean one, and the mean one rounded
    # to 1..16 significant digits (a clock computing start + i * 1e-6 in float64
    # has a decimal period that no difference of its timestamps reproduces)
    mean = float((a[-1] - a[0]) / (T - 1))
    steps = [float(a[1] - a[0]), mean]
    if math.isfinite(mean):
        steps += [float(f"{mean:.{k}g}") for k in range(1, 17)]
    probe = np.unique(np.array([1, T // 3, (2 * T) // 3, T - 1]))
    for dt in dict.fromkeys(steps):
        if not math.isfinite(dt):
            continue
        # a few samples first (the same float64 expression), the full check only then
        with np.errstate(over="ignore", invalid="ignore"):
            sample = np.float64(t0) + np.float64(dt) * probe.astype(np.float64)
        if not _same(sample, a[probe]):
            continue
        if _same(_regular(T, t0, dt, _scratch("t", (T,), np.float64)), a):
            return t0, dt, None
    return 0.0, 0.0, a


def _same(x: np.ndarray, y: np.ndarray) -> bool:
    """Bitwise equality of float64 arrays (so -0.0 != 0.0 and a NaN equals itself)."""
    return bool(np.array_equal(x.view(np.uint64), y.view(np.uint64)))


def decode_times(T: int, t0: float, dt: float, raw: Any = None) -> np.ndarray:
    """Inverse of :func:`encode_times`: float64 (T,).  ``raw``, when given, must
    have shape (T,) and is returned as float64 (no copy if it already is).

    Constant timestamps (``dt == 0``: absent clocks are all zero) come back as a
    shared read-only array, so records without timestamps cost no memory traffic.
    """
    if raw is not None:
        a = np.asarray(raw, dtype=np.float64)
        if a.shape != (T,):
            raise ValueError(f"raw timestamps must have shape ({T},); got {a.shape}")
        return a
    if dt == 0.0 and np.isfinite(t0):
        return _constant(T, float(t0))
    return _regular(T, t0, dt)


_constants: dict[tuple[int, float], np.ndarray] = {}
_constants_lock = threading.Lock()


def _constant(T: int, value: float) -> np.ndarray:
    key = (T, value)
    a = _constants.get(key)
    if a is None:
        a = np.full(T, value, dtype=np.float64)
        a.flags.writeable = False
        with _constants_lock:
            if len(_constants) >= 16:  # a few batch sizes recur; bound the rest
                _constants.pop(next(iter(_constants)))
            _constants[key] = a
    return a


_local = threading.local()


def _thread_scratch(name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A per-thread reusable buffer (valid until the next call with the same name)."""
    cache = _local.__dict__.setdefault("buffers", {})
    size = int(np.prod(shape))
    buf = cache.get(name)
    if buf is None or buf.size < size or buf.dtype != np.dtype(dtype):
        buf = cache[name] = np.empty(max(size, 1), dtype=dtype)
    return buf[:size].reshape(shape)
