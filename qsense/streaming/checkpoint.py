"""Daemon checkpoints: estimator states and the last sequence number per source.

A checkpoint is written atomically -- to a temporary file in the same
directory, flushed and ``fsync``-ed, then ``os.replace``-d over the old one
(and the directory ``fsync``-ed) -- so after a crash, power loss or ``kill -9``
the path holds either the previous complete checkpoint or the new complete one,
never a mixture.

File layout (all little endian)::

    8 bytes   magic  b"QSCKPT01"
    N bytes   body   msgpack map (msgspec), see :class:`Checkpoint`
    32 bytes  SHA-256 of the body (detects truncation and bit rot)

Estimator states are their own ``to_bytes()`` (npz, no pickle).  A record is
*acknowledged* once a checkpoint that counts it is on disk: its source's
``seq`` in :attr:`Checkpoint.sources` is at least the record's batch seq.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["Checkpoint", "EstimatorState", "CheckpointError", "write_checkpoint", "read_checkpoint", "MAGIC", "FORMAT_VERSION"]

MAGIC = b"QSCKPT01"
FORMAT_VERSION = 1
_DIGEST = 32


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used (corrupt, truncated, other format)."""


class EstimatorState(msgspec.Struct):
    """One estimator: its type, the config it was built from, and its ``to_bytes()``."""

    type: str
    fingerprint: dict[str, Any]
    state: bytes


class Checkpoint(msgspec.Struct):
    """The daemon state that survives a restart."""

    daemon: str
    written_at: float
    #: per source: the sequence tracker's marks (``SequenceTracker.marks()``):
    #: at least {"epoch": int, "seq": highest accepted seq}, plus its dedup windows
    sources: dict[str, dict[str, Any]]
    estimators: dict[str, EstimatorState]
    #: the estimate publisher's counter, so that pub_seq keeps increasing
    pub_seq: int = 0
    #: the last record-archive position folded into these estimator states
    #: (-1: none, or no archive); a restart replays the archive after it
    archive_pos: int = -1
    format_version: int = FORMAT_VERSION


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Checkpoint)


def write_checkpoint(path: str | Path, ckpt: Checkpoint) -> int:
    """Atomically replace ``path`` with ``ckpt``; returns the bytes written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = _encoder.encode(ckpt)
    data = MAGIC + body + hashlib.sha256(body).digest()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some filesystems cannot fsync a directory; the rename is still atomic
        pass
    return len(data)


def read_checkpoint(path: str | Path) -> Checkpoint | None:
    """The checkpoint at ``path``, ``None`` if there is none; raises
    :class:`CheckpointError` if the file is unusable."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc}") from None
    if len(data) < len(MAGIC) + _DIGEST or not data.startswith(MAGIC):
        raise CheckpointError(f"{path}: not a qsense checkpoint (bad magic or too short)")
    body, digest = data[len(MAGIC) : -_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(f"{path}: checksum mismatch (truncated or corrupted file)")
    try:
        ckpt = _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CheckpointError(f"{path}: malformed checkpoint: {exc}") from None
    if ckpt.format_version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {ckpt.format_version} is not {FORMAT_VERSION}")
    for src, m in ckpt.sources.items():
        if "seq" not in m:
            raise CheckpointError(f"{path}: source {src!r} has no seq")
    return ckpt


def age(ckpt: Checkpoint) -> float:
    """Seconds since the checkpoint was written."""
    return max(0.0, time.time() - ckpt.written_at)
