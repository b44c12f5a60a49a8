"""The archive's Arrow schema: one row per record batch, and the conversions batch <-> row.

One row holds one accepted :class:`~qsense.records.ShadowBatch` or
:class:`~qsense.records.BellBatch` exactly as it arrived (``docs/archive.md``
is the byte-level description; this module is its implementation):

============  ==================  ===============================================
column        Arrow type          meaning
============  ==================  ===============================================
pos           int64               archive-wide position: 0, 1, 2, ... in the
                                  order batches were stored (checkpoints name
                                  the last position they include)
kind          string              ``"shadow"`` or ``"bell"``
source        string              the producer's source name
epoch         int64               the producer run (0 = unspecified)
seq           int64               the producer's sequence number in that run
n             int32               qubits (shadow) or qubit pairs (Bell)
T             int32               records in the batch
wires         string (nullable)   JSON list of the n wire labels; null = 0..n-1
planes        binary              bit planes, little-endian uint64 words,
                                  (3, n, W) shadow [basis low bit, basis high
                                  bit, outcome] or (2, n, W) Bell [a, b];
                                  W = ceil(T / 64); layout of
                                  :mod:`qsense.packing`
t0, dt        float64             timestamps are ``t0 + dt * arange(T)`` when
                                  ``t`` is null (regular or absent clocks)
t             list<float64>       per-record timestamps (s) otherwise
t_min, t_max  float64             range of the timestamps (filters, statistics)
wait          list<float64>       Bell: memory wait per shot (s); null = zeros
received      float64             when the archive stored it (Unix seconds)
crc32         uint32              zlib CRC-32 of :func:`checksum_bytes`
============  ==================  ===============================================
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import pyarrow as pa

from qsense import packing
from qsense.records import BellBatch, ShadowBatch

__all__ = ["SCHEMA", "FORMAT", "FORMAT_VERSION", "Entry", "batch_row", "rows_to_entries", "checksum_bytes", "ArchiveError"]

Batch = Union[ShadowBatch, BellBatch]

#: Name written into every archive's manifest and every segment's metadata.
FORMAT = "qsense-archive"
#: Version of the layout below; readers refuse newer versions.
FORMAT_VERSION = 1

SCHEMA = pa.schema(
    [
        ("pos", pa.int64()),
        ("kind", pa.string()),
        ("source", pa.string()),
        ("epoch", pa.int64()),
        ("seq", pa.int64()),
        ("n", pa.int32()),
        ("T", pa.int32()),
        ("wires", pa.string()),
        ("planes", pa.binary()),
        ("t0", pa.float64()),
        ("dt", pa.float64()),
        ("t", pa.list_(pa.float64())),
        ("t_min", pa.float64()),
        ("t_max", pa.float64()),
        ("wait", pa.list_(pa.float64())),
        ("received", pa.float64()),
        ("crc32", pa.uint32()),
    ],
    metadata={b"qsense.format": FORMAT.encode(), b"qsense.format_version": str(FORMAT_VERSION).encode()},
)


class ArchiveError(RuntimeError):
    """The path is not a usable archive, or the archive cannot store a batch."""


@dataclass(frozen=True)
class Entry:
    """One stored batch with its archive bookkeeping."""

    pos: int
    epoch: int
    received: float
    batch: Batch

    @property
    def key(self) -> tuple[str, int, int]:
        """``(source, epoch, seq)``: what makes a batch unique."""
        return (self.batch.source, self.epoch, self.batch.seq)


def _wires_json(wires: tuple, n: int) -> str | None:
    if wires == tuple(range(n)):
        return None
    out = []
    for w in wires:
        if isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, np.integer, str)):
            raise ArchiveError(f"only int or str wire labels can be archived; got {w!r}")
        out.append(w if isinstance(w, str) else int(w))
    return json.dumps(out, separators=(",", ":"))


def checksum_bytes(kind: str, source: str, epoch: int, seq: int, n: int, T: int, wires: str | None,
                   planes: bytes | memoryview, t0: float, dt: float, t: np.ndarray | None, wait: np.ndarray | None) -> int:
    """CRC-32 over the identity and the data of one row (what ``crc32`` stores).

    Covered, in order: the UTF-8 text ``kind|source|epoch|seq|n|T|wires``
    (``wires`` as stored, empty when null), the plane bytes, ``t0`` and ``dt``
    as float64 little endian, then the ``t`` and ``wait`` values as float64
    little endian when present.
    """
    head = f"{kind}|{source}|{epoch}|{seq}|{n}|{T}|{wires or ''}".encode()
    crc = zlib.crc32(head)
    crc = zlib.crc32(planes, crc)
    crc = zlib.crc32(np.array([t0, dt], dtype="<f8").tobytes(), crc)
    if t is not None:
        crc = zlib.crc32(np.ascontiguousarray(t, dtype="<f8"), crc)
    if wait is not None:
        crc = zlib.crc32(np.ascontiguousarray(wait, dtype="<f8"), crc)
    return crc


def batch_row(batch: Batch, *, pos: int, epoch: int, received: float) -> dict[str, Any]:
    """The column values of one row (a dict of Python/NumPy values)."""
    kind = batch.kind
    planes = np.ascontiguousarray(batch.packed())
    pbytes = memoryview(planes.reshape(-1)).cast("B") if planes.size else memoryview(b"")
    t0, dt, raw = packing.encode_times(batch.t)
    wait = None
    if isinstance(batch, BellBatch) and batch.T and np.any(batch.wait):
        wait = batch.wait
    wires = _wires_json(batch.wires, batch.n)
    crc = checksum_bytes(kind, batch.source, epoch, batch.seq, batch.n, batch.T, wires, pbytes, t0, dt, raw, wait)
    return {
        "pos": pos, "kind": kind, "source": batch.source, "epoch": int(epoch), "seq": int(batch.seq),
        "n": batch.n, "T": batch.T, "wires": wires, "planes": pbytes, "t0": t0, "dt": dt, "t": raw,
        "t_min": _t_range(batch.T, t0, dt, raw)[0],
        "t_max": _t_range(batch.T, t0, dt, raw)[1],
        "wait": wait, "received": float(received), "crc32": crc,
    }


def _t_range(T: int, t0: float, dt: float, raw: np.ndarray | None) -> tuple[float, float]:
    """(min, max) of the timestamps without a pass over regular ones."""
    if T == 0:
        return float("nan"), float("nan")
    if raw is not None:
        return float(raw.min()), float(raw.max())
    last = float(t0 + dt * (T - 1))
    return (min(t0, last), max(t0, last))


def _binary_array(values: list) -> pa.Array:
    """A binary column from buffers with one copy (pa.array over a list copies through Python buffers)."""
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    if lengths.sum() >= 2**31:
        raise ArchiveError("one archive message holds at most 2 GiB of planes; commit smaller groups")
    np.cumsum(lengths, out=offsets[1:])
    data = b"".join(values)
    return pa.Array.from_buffers(pa.binary(), len(values), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _list_array(values: list[np.ndarray | None]) -> pa.Array:
    """A list<float64> column from NumPy arrays (None = null) without Python floats."""
    lengths = np.array([0 if v is None else len(v) for v in values], dtype=np.int32)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = [v for v in values if v is not None]
    data = np.concatenate(flat).astype("<f8", copy=False) if flat else np.zeros(0)
    mask = np.array([v is None for v in values])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(data), mask=pa.array(mask) if mask.any() else None)


def rows_to_record_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """Rows from :func:`batch_row` as one Arrow record batch of :data:`SCHEMA`."""
    cols = []
    for field in SCHEMA:
        name = field.name
        if name in ("t", "wait"):
            cols.append(_list_array([r[name] for r in rows]))
        elif name == "planes":
            cols.append(_binary_array([r[name] for r in rows]))
        else:
            cols.append(pa.array([r[name] for r in rows], type=field.type))
    return pa.RecordBatch.from_arrays(cols, schema=SCHEMA)


def _binary_slices(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and the data buffer of a binary column (no per-row copies)."""
    bufs = col.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32)[col.offset : col.offset + len(col) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


def _list_values(col: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, values, is_null) of a list<float64> column."""
    offsets = col.offsets.to_numpy(zero_copy_only=False)
    values = col.values.to_numpy(zero_copy_only=False) if len(col.values) else np.zeros(0)
    nulls = col.is_null().to_numpy(zero_copy_only=False)
    return offsets, values, nulls


class RowProblem(ValueError):
    """One row failed its checksum or its validation (``reason`` for counters)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def rows_to_entries(rb: pa.RecordBatch | pa.Table, *, verify: bool = True):
    """Yield an :class:`Entry` or a :class:`RowProblem` per row of ``rb`` (in order).

    Arrays are views on the Arrow buffers where the layout allows (the planes
    always: the kernels count on them without unpacking).  A row whose
    checksum or content is wrong yields a :class:`RowProblem` instead, so a
    reader can count it and go on.
    """
    if isinstance(rb, pa.Table):
        rb = rb.combine_chunks().to_batches()[0] if rb.num_rows else None
        if rb is None:
            return
    names = set(rb.schema.names)
    missing = [f.name for f in SCHEMA if f.name not in names]
    if missing:
        raise ArchiveError(f"segment lacks columns {missing}: not a qsense archive of format {FORMAT_VERSION}")
    c = {name: rb.column(name) for name in rb.schema.names}
    pos = c["pos"].to_numpy(zero_copy_only=False)
    epoch = c["epoch"].to_numpy(zero_copy_only=False)
    seq = c["seq"].to_numpy(zero_copy_only=False)
    n_ = c["n"].to_numpy(zero_copy_only=False)
    T_ = c["T"].to_numpy(zero_copy_only=False)
    t0 = c["t0"].to_numpy(zero_copy_only=False)
    dt = c["dt"].to_numpy(zero_copy_only=False)
    received = c["received"].to_numpy(zero_copy_only=False)
    crc = c["crc32"].to_numpy(zero_copy_only=False)
    kinds = c["kind"].to_pylist()
    sources = c["source"].to_pylist()
    wires_col = c["wires"].to_pylist()
    p_off, p_data = _binary_slices(c["planes"])
    t_off, t_val, t_null = _list_values(c["t"])
    w_off, w_val, w_null = _list_values(c["wait"])
    for i in range(rb.num_rows):
        kind, source, wires = kinds[i], sources[i], wires_col[i]
        T, n = int(T_[i]), int(n_[i])
        planes_b = p_data[p_off[i] : p_off[i + 1]]
        t = None if t_null[i] else t_val[t_off[i] : t_off[i + 1]]
        wait = None if w_null[i] else w_val[w_off[i] : w_off[i + 1]]
        if verify:
            got = checksum_bytes(kind, source, int(epoch[i]), int(seq[i]), n, T, wires, planes_b, float(t0[i]), float(dt[i]), t, wait)
            if got != int(crc[i]):
                yield RowProblem(f"row pos={int(pos[i])}: checksum mismatch (stored {int(crc[i]):#010x}, computed {got:#010x})",
                                 "checksum")
                continue
        try:
            yield Entry(int(pos[i]), int(epoch[i]), float(received[i]),
                        _build(kind, source, int(seq[i]), n, T, wires, planes_b, float(t0[i]), float(dt[i]), t, wait))
        except (ValueError, TypeError) as exc:
            yield RowProblem(f"row pos={int(pos[i])}: invalid record: {exc}", "invalid")


def _build(kind: str, source: str, seq: int, n: int, T: int, wires: str | None, planes_b: np.ndarray,
           t0: float, dt: float, t: np.ndarray | None, wait: np.ndarray | None) -> Batch:
    W = (T + 63) // 64
    planes_n = {"shadow": 3, "bell": 2}.get(kind)
    if planes_n is None:
        raise ValueError(f"unknown kind {kind!r}")
    if len(planes_b) != planes_n * n * W * 8:
        raise ValueError(f"planes hold {len(planes_b)} bytes; {kind} T={T} n={n} needs {planes_n * n * W * 8}")
    if len(planes_b) and planes_b.ctypes.data % 8 == 0:
        planes = planes_b.view("<u8").reshape(planes_n, n, W)
    else:  # unaligned buffer (rare): one copy
        planes = np.frombuffer(planes_b.tobytes(), dtype="<u8").reshape(planes_n, n, W)
    times = packing.decode_times(T, t0, dt, t)
    wl = None if wires is None else tuple(json.loads(wires))
    if kind == "shadow":
        return ShadowBatch.from_packed(planes, T, wires=wl, source=source, seq=seq, t=times)
    return BellBatch.from_packed(planes, T, wires=wl, source=source, seq=seq, t=times, wait=wait)
