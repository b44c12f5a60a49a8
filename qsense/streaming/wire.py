"""Wire format: measurement records as ZeroMQ multipart messages (and single blobs).

A record batch travels as one multipart message::

    frame 0   header   msgpack map (msgspec), at most MAX_HEADER_BYTES
    frame 1.. arrays   raw little-endian array bytes, C order, in the order the
                       header's ``arrays`` list declares them

The header is a small versioned map (``v``, one of :data:`SCHEMA_VERSIONS`)
naming the record ``kind`` (``"shadow"`` or ``"bell"``), the producer
``source``, its per-source sequence number ``seq``, a producer ``epoch``
(random per producer run, 0 = unspecified), the sizes ``n`` and ``T``, the
``wires`` (``nil`` for the default ``0..n-1``), and per array frame
``[name, dtype, shape]``.  Array frames are sent zero-copy: :func:`encode`
returns memoryviews on the batch's own arrays, so the producer must not modify
them until ZeroMQ has sent them.

Two layouts of the arrays, chosen by ``v``:

``v = 1``  the uint8 tables as they are (``bases``, ``outcomes`` (T, n) bytes)
           and float64 ``t`` (and ``wait`` for Bell) of T values each.
``v = 2``  (the default, :data:`SCHEMA_VERSION`) the bit planes of
           :mod:`qsense.packing` in one ``planes`` frame, ``<u8`` (3, n, W) or
           (2, n, W), W = ceil(T / 64); timestamps as header floats ``t0``,
           ``dt`` (``t = t0 + dt * arange(T)``) unless a raw ``t`` frame follows,
           Bell waits likewise as ``wait0``, ``dwait`` or a raw ``wait`` frame.
           6 bytes per 16-qubit snapshot instead of 32 + 8 (timestamps).

A v2 message decodes to a batch built with ``from_packed``: the planes are a
read-only view on the frame (copied only when the frame is not 8-byte aligned)
and the uint8 tables are unpacked only if something reads them, so the
estimators count straight from the received words.

:func:`decode` trusts nothing: it checks the version, every field's type, that
the declared arrays are exactly the ones of the kind with the fixed dtypes, that
each frame's length equals its declared shape, and the value ranges (through
the record constructors; for v2 the planes' padding bits and the absence of
basis code 3).  It never allocates memory sized by the header before every
frame length has been checked -- arrays are views on the received frames --
and refuses headers above :data:`MAX_HEADER_BYTES`, more than
:data:`MAX_RECORDS` records or more than :data:`~qsense.records.MAX_QUBITS`
wires, so a hostile peer cannot make it allocate gigabytes.  (v2 timestamps
given as ``t0``/``dt`` are computed after the checks: at most 8 bytes per
record, and T is bounded by the planes frame, 64 records per word; a v2
message with ``n = 0`` must carry raw timestamps for that reason.)  Any
problem raises :class:`WireFormatError`, and nothing else.

MQTT carries one payload per message, so :func:`pack` / :func:`unpack` put the
same frames in one blob: ``b"QSNS"``, the header length as uint32 little
endian, the header, then the array frames back to back.

The full byte-level description is ``docs/wire-format.md``.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Sequence, Union

import msgspec
import numpy as np

from qsense import packing
from qsense.records import MAX_QUBITS, BellBatch, ShadowBatch

__all__ = [
    "WireFormatError",
    "REASONS",
    "WireHeader",
    "Message",
    "encode",
    "decode",
    "decode_message",
    "pack",
    "unpack",
    "unpack_message",
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "MAX_HEADER_BYTES",
    "MAX_RECORDS",
    "MAX_SOURCE_CHARS",
    "PACK_MAGIC",
]

#: The newest layout: what :func:`encode` writes by default (bit planes).
SCHEMA_VERSION = 2
#: The layouts :func:`decode` reads; it refuses any other ``v`` (reason "version").
SCHEMA_VERSIONS = (1, 2)
#: The header frame is tiny (~100 bytes for n=16); anything bigger is refused.
MAX_HEADER_BYTES = 64 * 1024
#: Records per batch. 2^24 snapshots of 16 qubits is 512 MiB of frames already.
MAX_RECORDS = 1 << 24
#: Longest accepted ``source`` name and wire label (characters).
MAX_SOURCE_CHARS = 256
#: Magic prefix of the single-blob form (:func:`pack`).
PACK_MAGIC = b"QSNS"

_U8 = "|u1"
_F8 = "<f8"
_W8 = "<u8"
#: v1 arrays of each kind, in frame order: (name, dtype, is a (T, n) table).
_LAYOUT: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "shadow": (("bases", _U8, True), ("outcomes", _U8, True), ("t", _F8, False)),
    "bell": (("outcomes", _U8, True), ("t", _F8, False), ("wait", _F8, False)),
}
#: v2: the planes frame, then the optional raw float64 arrays allowed, in order.
_PLANES = {"shadow": packing.SHADOW_PLANES, "bell": packing.BELL_PLANES}
_RAW_V2 = {"shadow": ("t",), "bell": ("t", "wait")}
_ITEMSIZE = {_U8: 1, _F8: 8, _W8: 8}

Batch = Union[ShadowBatch, BellBatch]


class WireFormatError(ValueError):
    """A message is not a valid qsense record: the only exception :func:`decode` raises.

    ``reason`` is a short fixed category (one of :data:`REASONS`) suitable as a
    metrics label; the message says what exactly was wrong.
    """

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


#: The categories of :attr:`WireFormatError.reason`.
REASONS = ("frames", "header", "version", "limits", "layout", "size", "values", "invalid")


class WireHeader(msgspec.Struct, forbid_unknown_fields=False):
    """Frame 0 of a record message (msgpack map; unknown keys are ignored so
    that a later minor revision can add optional fields)."""

    v: int
    kind: str
    source: str
    seq: int
    n: int
    T: int
    wires: Union[list[Union[int, str]], None]
    arrays: list[tuple[str, str, list[int]]]
    epoch: int = 0
    # v2 only: t = t0 + dt * arange(T) unless a raw "t" frame is sent (then both 0);
    # Bell waits likewise (shadow messages leave them 0)
    t0: float = 0.0
    dt: float = 0.0
    wait0: float = 0.0
    dwait: float = 0.0


class _HeaderV1(msgspec.Struct):
    """What the v1 encoder writes: exactly the fields (and bytes) it always wrote."""

    v: int
    kind: str
    source: str
    seq: int
    n: int
    T: int
    wires: Union[list[Union[int, str]], None]
    arrays: list[tuple[str, str, list[int]]]
    epoch: int = 0


class _HeaderV2Shadow(_HeaderV1):
    t0: float = 0.0
    dt: float = 0.0


class _HeaderV2Bell(_HeaderV2Shadow):
    wait0: float = 0.0
    dwait: float = 0.0


@dataclass(frozen=True)
class Message:
    """A decoded message: the validated header and the record batch it carries."""

    header: WireHeader
    batch: Batch

    @property
    def epoch(self) -> int:
        return self.header.epoch


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(WireHeader)


# -- encoding -----------------------------------------------------------------------
def _wires_field(wires: tuple, n: int) -> list | None:
    if wires == tuple(range(n)):
        return None  # the default labels: no need to send n integers
    out: list = []
    for w in wires:
        if isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, np.integer, str)):
            raise WireFormatError(f"only int or str wire labels can be sent; got {w!r}")
        if isinstance(w, str) and len(w) > MAX_SOURCE_CHARS:
            raise WireFormatError(f"wire label longer than {MAX_SOURCE_CHARS} characters")
        out.append(int(w) if not isinstance(w, str) else w)
    return out


def _frame(arr: np.ndarray, dtype: str) -> memoryview:
    if arr.dtype != np.dtype(dtype):
        arr = arr.astype(dtype)  # big-endian host: the wire is little endian
    arr = np.ascontiguousarray(arr)
    # a flat byte view: zero-copy, and every buffer consumer understands it
    return memoryview(arr.reshape(-1)).cast("B") if arr.size else memoryview(b"")


def _check_int_arg(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2**63:
        raise WireFormatError(f"{name} must be an int in 0..2^63-1; got {value!r}")


def encode(
    batch: Batch, *, source: str | None = None, seq: int | None = None, epoch: int = 0, packed: bool = True
) -> list[bytes | memoryview]:
    """Frames of one multipart message carrying ``batch``.

    ``source`` and ``seq`` override the batch's own (a publisher numbering its
    batches uses this instead of copying the batch); ``epoch`` identifies the
    producer run (see the module docstring).  ``packed=True`` (the default)
    writes schema version 2, the bit planes (``batch.packed()``: computed once
    and cached on the batch, free for a batch that arrived packed); ``False``
    writes version 1, the uint8 tables.  Frame 0 is ``bytes``; the array
    frames are memoryviews on the batch's arrays (zero-copy).
    """
    if isinstance(batch, ShadowBatch):
        kind = "shadow"
    elif isinstance(batch, BellBatch):
        kind = "bell"
    else:
        raise WireFormatError(f"can only encode ShadowBatch or BellBatch; got {type(batch).__name__}")
    source = batch.source if source is None else source
    seq = batch.seq if seq is None else seq
    if not isinstance(source, str) or len(source) > MAX_SOURCE_CHARS:
        raise WireFormatError(f"source must be a str of at most {MAX_SOURCE_CHARS} characters")
    _check_int_arg("seq", seq)
    _check_int_arg("epoch", epoch)
    T, n = batch.T, batch.n
    if T > MAX_RECORDS:
        raise WireFormatError(f"a batch holds at most {MAX_RECORDS} records; split it (got {T})")
    wires = _wires_field(batch.wires, n)
    specs: list[tuple[str, str, list[int]]] = []
    frames: list[bytes | memoryview] = [b""]
    extra: dict[str, float] = {}
    if packed:
        planes = batch.packed()
        specs.append(("planes", _W8, list(planes.shape)))
        frames.append(_frame(planes, _W8))
        series = [("t", batch.t, "t0", "dt")]
        if kind == "bell":
            series.append(("wait", batch.wait, "wait0", "dwait"))
        for name, values, start, step in series:
            # n = 0: no planes bound T, so the timestamps travel raw (see the docstring)
            x0, dx, raw = packing.encode_times(values) if n else (0.0, 0.0, values)
            if raw is None:
                extra[start], extra[step] = x0, dx
            else:
                specs.append((name, _F8, [T]))
                frames.append(_frame(raw, _F8))
    else:
        arrays = (batch.bases, batch.outcomes, batch.t) if kind == "shadow" else (batch.outcomes, batch.t, batch.wait)
        for (name, dtype, table), arr in zip(_LAYOUT[kind], arrays):
            specs.append((name, dtype, [T, n] if table else [T]))
            frames.append(_frame(arr, dtype))
    make = (_HeaderV2Shadow if kind == "shadow" else _HeaderV2Bell) if packed else _HeaderV1
    header = make(
        v=SCHEMA_VERSION if packed else 1, kind=kind, source=source, seq=int(seq), n=n, T=T,
        wires=wires, arrays=specs, epoch=int(epoch), **extra,
    )
    frames[0] = _encoder.encode(header)
    return frames


def pack(
    batch: Batch, *, source: str | None = None, seq: int | None = None, epoch: int = 0, packed: bool = True
) -> bytes:
    """The single-blob form: ``PACK_MAGIC``, uint32 LE header length, header, arrays
    (``packed`` as for :func:`encode`)."""
    frames = encode(batch, source=source, seq=seq, epoch=epoch, packed=packed)
    head = frames[0]
    return b"".join([PACK_MAGIC, struct.pack("<I", len(head)), head, *frames[1:]])


# -- decoding -------------------------------------------------------------------------
def _buffer(frame: Any) -> memoryview:
    """A flat byte view of one frame: bytes, bytearray, memoryview, zmq.Frame."""
    buf = getattr(frame, "buffer", frame)  # zmq.Frame exposes .buffer
    try:
        mv = memoryview(buf)
    except TypeError:
        raise WireFormatError(f"frame is not bytes-like: {type(frame).__name__}", "frames") from None
    if not mv.contiguous:
        raise WireFormatError("frame is not a contiguous buffer", "frames")
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    return mv


def _check_int(name: str, value: int, lo: int, hi: int) -> int:
    if not lo <= value <= hi:
        raise WireFormatError(f"header field {name}={value} outside {lo}..{hi}", "limits")
    return value


def _parse_header(frame: Any) -> WireHeader:
    mv = _buffer(frame)
    if len(mv) > MAX_HEADER_BYTES:
        raise WireFormatError(f"header frame of {len(mv)} bytes exceeds {MAX_HEADER_BYTES}", "limits")
    if len(mv) == 0:
        raise WireFormatError("empty header frame", "header")
    try:
        h = _decoder.decode(mv)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise WireFormatError(f"bad header: {exc}", "header") from None
    except Exception as exc:  # msgspec is robust, but nothing else may escape
        raise WireFormatError(f"bad header: {type(exc).__name__}: {exc}", "header") from None
    if h.v not in SCHEMA_VERSIONS:
        raise WireFormatError(f"unsupported schema version {h.v} (this build reads {SCHEMA_VERSIONS})", "version")
    if h.kind not in _LAYOUT:
        raise WireFormatError(f"unknown record kind {h.kind!r}; expected one of {sorted(_LAYOUT)}", "header")
    if len(h.source) > MAX_SOURCE_CHARS:
        raise WireFormatError(f"source longer than {MAX_SOURCE_CHARS} characters", "limits")
    _check_int("seq", h.seq, 0, 2**63 - 1)
    _check_int("epoch", h.epoch, 0, 2**63 - 1)
    _check_int("n", h.n, 0, MAX_QUBITS)
    _check_int("T", h.T, 0, MAX_RECORDS)
    if h.wires is not None:
        if len(h.wires) != h.n:
            raise WireFormatError(f"header lists {len(h.wires)} wires for n={h.n}", "layout")
        for w in h.wires:
            if isinstance(w, str) and len(w) > MAX_SOURCE_CHARS:
                raise WireFormatError(f"wire label longer than {MAX_SOURCE_CHARS} characters", "limits")
        if len(set(h.wires)) != h.n:
            raise WireFormatError("wire labels must be distinct", "values")
    if h.v == 2:
        _check_layout_v2(h)
        return h
    layout = _LAYOUT[h.kind]
    if len(h.arrays) != len(layout):
        raise WireFormatError(f"a {h.kind} message declares {len(layout)} arrays; got {len(h.arrays)}", "layout")
    for (name, dtype, shape), (want_name, want_dtype, table) in zip(h.arrays, layout):
        if name != want_name:
            raise WireFormatError(f"expected array {want_name!r}, got {name!r}", "layout")
        if dtype != want_dtype:
            raise WireFormatError(f"array {name!r} must have dtype {want_dtype!r}; got {dtype!r}", "layout")
        want_shape = [h.T, h.n] if table else [h.T]
        if shape != want_shape:
            raise WireFormatError(f"array {name!r} declared with shape {shape}; T={h.T}, n={h.n} give {want_shape}", "layout")
    return h


def _check_layout_v2(h: WireHeader) -> None:
    """The v2 arrays: ``planes`` first with its exact shape, then raw float64 series
    (a subset of the kind's, in order), and header floats that agree with them."""
    if not h.arrays:
        raise WireFormatError("a v2 message declares its planes array first; got none", "layout")
    want = ["planes", _W8, [_PLANES[h.kind], h.n, packing.n_words(h.T)]]
    name, dtype, shape = h.arrays[0]
    if [name, dtype, shape] != want:
        raise WireFormatError(f"a v2 {h.kind} message starts with array {want}; got {[name, dtype, shape]}", "layout")
    allowed = list(_RAW_V2[h.kind])
    raw = []
    for name, dtype, shape in h.arrays[1:]:
        if name not in allowed:
            raise WireFormatError(f"unexpected array {name!r} in a v2 {h.kind} message (allowed here: {allowed})", "layout")
        allowed = allowed[allowed.index(name) + 1 :]
        if dtype != _F8 or shape != [h.T]:
            raise WireFormatError(f"array {name!r} must be [{_F8!r}, [{h.T}]]; got [{dtype!r}, {shape}]", "layout")
        raw.append(name)
    fields = {"t0": h.t0, "dt": h.dt, "wait0": h.wait0, "dwait": h.dwait}
    for key, value in fields.items():
        if not math.isfinite(value):
            raise WireFormatError(f"header field {key}={value} is not finite", "values")
    for name, start, step in (("t", "t0", "dt"), ("wait", "wait0", "dwait")):
        sent_raw = name in raw or (name == "wait" and h.kind == "shadow")
        if sent_raw and (fields[start] != 0.0 or fields[step] != 0.0):
            raise WireFormatError(f"{start}/{step} must be 0 when {name!r} is not given by them", "layout")
    if h.n == 0 and h.T and "t" not in raw:
        # with no planes the frames would not bound T: a few header bytes must not
        # make the decoder compute 2^24 timestamps
        raise WireFormatError("a v2 message with n = 0 must carry its timestamps as a 't' array", "layout")


def _frame_array(name: str, dtype: str, shape: list[int], mv: memoryview) -> np.ndarray:
    """A read-only view of a frame as ``dtype[shape]`` after checking its length."""
    want = _ITEMSIZE[dtype]
    for s in shape:
        want *= s
    if len(mv) != want:
        raise WireFormatError(f"array {name!r} frame holds {len(mv)} bytes; its declared shape {shape} needs {want}", "size")
    # a view on the received frame: no copy, nothing sized by the header alone
    arr = np.frombuffer(mv, dtype=dtype).reshape(shape)
    arr.flags.writeable = False  # a view on someone else's buffer: never write through it
    return arr


def _build_v2(h: WireHeader, bufs: Sequence[memoryview]) -> Batch:
    arrays = {name: _frame_array(name, dtype, shape, mv) for (name, dtype, shape), mv in zip(h.arrays, bufs)}
    planes = arrays["planes"]
    if planes.size and planes.ctypes.data % 8:
        # the kernels want aligned words (a blob puts the planes after a header of
        # any length): one copy into a fresh, aligned array
        aligned = np.empty(planes.shape, dtype=_W8)
        aligned.reshape(-1).view(np.uint8)[:] = np.frombuffer(bufs[0], dtype=np.uint8)
        aligned.flags.writeable = False
        planes = aligned
    wires = None if h.wires is None else tuple(h.wires)
    try:
        # after every frame length is checked: at most 8 bytes per record each, and
        # all-zero series stay None (the constructors' zeros are untouched pages)
        t = arrays.get("t")
        if t is None and (h.t0 or h.dt):
            t = packing.decode_times(h.T, h.t0, h.dt)
        if h.kind == "shadow":
            return ShadowBatch.from_packed(planes, h.T, wires=wires, source=h.source, seq=h.seq, t=t)
        wait = arrays.get("wait")
        if wait is None and (h.wait0 or h.dwait):
            wait = packing.decode_times(h.T, h.wait0, h.dwait)
        return BellBatch.from_packed(planes, h.T, wires=wires, source=h.source, seq=h.seq, t=t, wait=wait)
    except ValueError as exc:  # the planes' and the constructors' checks
        raise WireFormatError(f"invalid {h.kind} record: {exc}", "values") from None


def _build(h: WireHeader, bufs: Sequence[memoryview]) -> Batch:
    if h.v == 2:
        return _build_v2(h, bufs)
    arrays = [_frame_array(name, dtype, shape, mv) for (name, dtype, shape), mv in zip(h.arrays, bufs)]
    wires = None if h.wires is None else tuple(h.wires)
    try:
        if h.kind == "shadow":
            bases, outcomes, t = arrays
            return ShadowBatch(bases, outcomes, wires=wires, source=h.source, seq=h.seq, t=t)
        outcomes, t, wait = arrays
        return BellBatch(outcomes, wires=wires, source=h.source, seq=h.seq, t=t, wait=wait)
    except ValueError as exc:  # the constructors check value ranges
        raise WireFormatError(f"invalid {h.kind} record: {exc}", "values") from None


def decode_message(frames: Sequence[Any]) -> Message:
    """Validate a multipart message and return its header and batch.

    ``frames``: bytes-like objects or ``zmq.Frame``.  The batch's arrays are
    read-only views on the frames.  Raises :class:`WireFormatError` only.
    """
    try:
        count = len(frames)
    except TypeError:
        raise WireFormatError(f"frames must be a sequence; got {type(frames).__name__}", "frames") from None
    if count == 0:
        raise WireFormatError("empty message", "frames")
    try:
        h = _parse_header(frames[0])
        if count != 1 + len(h.arrays):
            raise WireFormatError(f"a {h.kind} message has {1 + len(h.arrays)} frames; got {count}", "frames")
        return Message(h, _build(h, [_buffer(f) for f in frames[1:]]))
    except WireFormatError:
        raise
    except Exception as exc:  # defensive: a bug here must not become a crash upstream
        raise WireFormatError(f"undecodable message: {type(exc).__name__}: {exc}") from None


def decode(frames: Sequence[Any]) -> Batch:
    """The batch carried by a multipart message (see :func:`decode_message`)."""
    return decode_message(frames).batch


def unpack_message(payload: Any) -> Message:
    """Inverse of :func:`pack`, with the header. Raises :class:`WireFormatError` only."""
    try:
        mv = _buffer(payload)
        if len(mv) < 8 or bytes(mv[:4]) != PACK_MAGIC:
            raise WireFormatError("not a packed qsense record (missing QSNS magic)", "header")
        (hlen,) = struct.unpack("<I", mv[4:8])
        if hlen > MAX_HEADER_BYTES or 8 + hlen > len(mv):
            raise WireFormatError(f"declared header length {hlen} does not fit the payload", "size")
        h = _parse_header(mv[8 : 8 + hlen])
        bufs, pos = [], 8 + hlen
        for name, dtype, shape in h.arrays:
            size = _ITEMSIZE[dtype]
            for s in shape:
                size *= s
            if pos + size > len(mv):
                raise WireFormatError(f"payload ends inside array {name!r}", "size")
            bufs.append(mv[pos : pos + size])
            pos += size
        if pos != len(mv):
            raise WireFormatError(f"{len(mv) - pos} trailing bytes after the arrays", "size")
        return Message(h, _build(h, bufs))
    except WireFormatError:
        raise
    except Exception as exc:
        raise WireFormatError(f"undecodable payload: {type(exc).__name__}: {exc}") from None


def unpack(payload: Any) -> Batch:
    """The batch in a :func:`pack` blob."""
    return unpack_message(payload).batch
