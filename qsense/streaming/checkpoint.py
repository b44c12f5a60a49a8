"""Daemon checkpoints: estimator states and the last sequence number per source,
written atomically and authenticated with a per-daemon key.

A checkpoint is written atomically -- to a temporary file in the same
directory, flushed and ``fsync``-ed, then ``os.replace``-d over the old one
(and the directory ``fsync``-ed) -- so after a crash, power loss or ``kill -9``
the path holds either the previous complete checkpoint or the new complete one,
never a mixture.  A temporary left behind by a killed write is removed at the
next start (:meth:`CheckpointFile.remove_temporaries`).

File layout (all little endian)::

    8 bytes   magic  b"QSCKPT02"
    N bytes   body   msgpack map (msgspec), see :class:`Checkpoint`
    32 bytes  HMAC-SHA256(key, magic + body)

The key is 32 random bytes (hex) in a key file only the daemon's user may read
(created ``0600`` on first use, refused when group or others have any access).
Whoever can write the checkpoint but not read the key cannot forge one: a file
whose MAC fails is refused before a byte of it is parsed.  After the MAC, the
body is validated -- schema, types, ranges, sizes -- and each estimator state
is checked against its configuration by the daemon before anything is adopted.

Files of the earlier format (``b"QSCKPT01"``, a plain SHA-256 that anyone can
recompute) are *unsigned*: refused (:class:`UnsignedCheckpointError`) unless
the caller trusts them once (``trust_unsigned``).

Estimator states are their own ``to_bytes()`` (npz, no pickle; read with
bounded sizes by :mod:`qsense.estimators.serial`).  A record is *acknowledged*
once a checkpoint that counts it is on disk: its source's ``seq`` in
:attr:`Checkpoint.sources` is at least the record's batch seq.
"""

from __future__ import annotations

import glob
import hashlib
import hmac
import logging
import math
import os
import secrets
import stat
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec

__all__ = [
    "Checkpoint", "EstimatorState", "CheckpointError", "UnsignedCheckpointError", "CheckpointFile", "write_checkpoint",
    "read_checkpoint", "load_key", "default_key_file", "key_file_for", "private_file_problem", "MAGIC", "LEGACY_MAGIC",
    "FORMAT_VERSION", "MAX_CHECKPOINT_BYTES",
]

log = logging.getLogger(__name__)

MAGIC = b"QSCKPT02"
#: the unauthenticated format written before checkpoints carried a MAC
LEGACY_MAGIC = b"QSCKPT01"
FORMAT_VERSION = 1
_DIGEST = 32
_KEY_BYTES = 32
#: a checkpoint file larger than this is refused before it is read (states are at most
#: :data:`qsense.estimators.serial.MAX_STATE_BYTES` each once unpacked)
MAX_CHECKPOINT_BYTES = 2 << 30
_MAX_ESTIMATORS = 4096
_MAX_SOURCES = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used (forged, corrupt, truncated, other format, inconsistent)."""


class UnsignedCheckpointError(CheckpointError):
    """A checkpoint of the earlier unauthenticated format: intact, but nothing proves who wrote it."""


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

#: checkpoint path -> its configured key file (set by :class:`CheckpointFile`), so that the daemon's
#: periodic ``write_checkpoint(path, ckpt)`` signs with it
_KEY_FILES: dict[Path, Path] = {}


# -- keys ---------------------------------------------------------------------------------------
def default_key_file(path: str | Path) -> Path:
    """Where the key of checkpoint ``path`` lives unless configured: ``<path>.key``."""
    p = Path(path)
    return p.with_name(p.name + ".key")


def private_file_problem(path: str | Path, what: str = "file") -> str | None:
    """Why ``path`` is not a private regular file (as ssh demands of a private key), or None.

    Refused: not a regular file, owned by another user than this process's
    (or root) -- whoever could put their own key there could sign a forged
    checkpoint -- or any permission for group or others (``chmod 600`` fixes it)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        return f"{what} {p}: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return f"{what} {p} is not a regular file"
    if hasattr(os, "geteuid") and st.st_uid not in (os.geteuid(), 0):
        return f"{what} {p} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}) or root"
    if st.st_mode & 0o077:
        return (f"{what} {p} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"run: chmod 600 {p}")
    return None


def load_key(key_file: str | Path, create: bool = True) -> bytes:
    """The HMAC key in ``key_file``; with ``create``, a new random key is written
    there first if there is none (mode 0600, never over an existing file).
    :class:`CheckpointError` if it is unreadable, malformed or not private."""
    p = Path(key_file)
    if create and not os.path.lexists(p):
        _create_key(p)
    if (why := private_file_problem(p, "checkpoint key file")) is not None:
        raise CheckpointError(why)
    try:
        with open(p, "rb") as f:
            raw = f.read(4 * _KEY_BYTES + 1)
    except OSError as exc:
        raise CheckpointError(f"checkpoint key file {p}: {exc.strerror or exc}") from None
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != _KEY_BYTES:
        raise CheckpointError(f"checkpoint key file {p}: expected {_KEY_BYTES} bytes as hex")
    return key


def key_file_for(path: str | Path) -> Path:
    """The key file checkpoint ``path`` is signed with: the one a :class:`CheckpointFile` configured, else ``<path>.key``."""
    p = Path(path)
    return _KEY_FILES.get(p.absolute(), default_key_file(p))


def _create_key(p: Path) -> None:
    """Write a new random key to ``p``, never over an existing file, never half-written.

    The key goes into a temporary (O_EXCL, mode 0600 from the first byte on),
    is fsync-ed, then hard-linked to its name: a ``kill -9`` in between leaves
    no empty key file behind, and of two daemons racing, one key wins."""
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_bytes(_KEY_BYTES).hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, p)
            log.info("created checkpoint key file %s", p)
        except FileExistsError:
            pass  # another process made it first: use theirs
    except OSError as exc:
        raise CheckpointError(f"checkpoint key file {p}: cannot create it: {exc.strerror or exc}") from None
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass


def _key_for(path: Path, create: bool) -> bytes:
    # read at every use (a 65-byte file): a replaced or re-permissioned key file is noticed at once
    kf = key_file_for(path)
    if not create and not os.path.lexists(kf):
        raise CheckpointError(f"{path}: cannot authenticate it: its key file {kf} does not exist (written with "
                              "another key file?)")
    return load_key(kf, create=create)


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, MAGIC + body, hashlib.sha256).digest()


# -- write / read ---------------------------------------------------------------------------------
def write_checkpoint(path: str | Path, ckpt: Checkpoint, key: bytes | None = None) -> int:
    """Atomically replace ``path`` with ``ckpt`` signed with ``key`` (default: the
    key registered for ``path`` by :class:`CheckpointFile`, else ``<path>.key``,
    created if missing); returns the bytes written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = _key_for(path, create=True) if key is None else key
    body = _encoder.encode(ckpt)
    data = MAGIC + body + _mac(key, body)
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


def _read_bounded(path: Path) -> bytes | None:
    """The file's bytes, None if absent; refuses what is not a regular file or too large before reading it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the start
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"{path}: not a regular file")
        if st.st_size > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(f"{path}: {st.st_size} bytes, more than the {MAX_CHECKPOINT_BYTES} a checkpoint may have")
        data = f.read(MAX_CHECKPOINT_BYTES + 1)
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{path}: grew past {MAX_CHECKPOINT_BYTES} bytes while being read")
    return data


def read_checkpoint(path: str | Path, key: bytes | None = None, *, trust_unsigned: bool = False) -> Checkpoint | None:
    """The checkpoint at ``path``, ``None`` if there is none.

    The MAC is checked with ``key`` (default as for :func:`write_checkpoint`)
    before the body is parsed; then the body is validated (:func:`validate`).
    Raises :class:`CheckpointError` (one line naming the problem) if the file is
    unusable, :class:`UnsignedCheckpointError` for an intact file of the earlier
    unauthenticated format unless ``trust_unsigned``."""
    path = Path(path)
    data = _read_bounded(path)
    if data is None:
        return None
    if len(data) < len(MAGIC) + _DIGEST or not data.startswith((MAGIC, LEGACY_MAGIC)):
        raise CheckpointError(f"{path}: not a qsense checkpoint (bad magic or too short)")
    body, digest = data[len(MAGIC) : -_DIGEST], data[-_DIGEST:]
    if data.startswith(LEGACY_MAGIC):
        if not hmac.compare_digest(hashlib.sha256(body).digest(), digest):
            raise CheckpointError(f"{path}: checksum mismatch (truncated or corrupted file)")
        if not trust_unsigned:
            raise UnsignedCheckpointError(
                f"{path}: unsigned checkpoint of the earlier format (its SHA-256 proves nothing about who wrote it); "
                "if you trust this file, start once with --trust-unsigned-checkpoint (the next checkpoint is signed), "
                "or --fresh-on-bad-checkpoint to move it aside and start fresh")
    else:
        key = _key_for(path, create=False) if key is None else key
        if not hmac.compare_digest(_mac(key, body), digest):
            raise CheckpointError(f"{path}: authentication failed (MAC mismatch: forged, truncated or corrupted, or "
                                  "written with another key file)")
    try:
        ckpt = _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CheckpointError(f"{path}: malformed checkpoint: {exc}") from None
    validate(ckpt, str(path))
    return ckpt


def _int_field(v: Any, what: str, lo: int, hi: int = 2**63 - 1) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise CheckpointError(f"{what}: expected an integer in {lo}..{hi}, got {str(v)[:40]!r}")


def validate(ckpt: Checkpoint, where: str = "checkpoint") -> None:
    """Refuse (:class:`CheckpointError` naming the field) a decoded checkpoint whose
    values are out of range: counters, timestamps, sequence marks, state sizes.
    The estimator states themselves are checked against the configuration by their user."""
    from qsense.estimators.serial import MAX_STATE_BYTES

    if ckpt.format_version != FORMAT_VERSION:
        raise CheckpointError(f"{where}: checkpoint format {ckpt.format_version} is not {FORMAT_VERSION}")
    if not math.isfinite(ckpt.written_at) or ckpt.written_at < 0:
        raise CheckpointError(f"{where}: written_at: expected a time, got {ckpt.written_at!r}")
    _int_field(ckpt.pub_seq, f"{where}: pub_seq", 0)
    _int_field(ckpt.archive_pos, f"{where}: archive_pos", -1)
    if len(ckpt.sources) > _MAX_SOURCES or len(ckpt.estimators) > _MAX_ESTIMATORS:
        raise CheckpointError(f"{where}: {len(ckpt.sources)} sources / {len(ckpt.estimators)} estimators is more than allowed")
    for src, m in ckpt.sources.items():
        if "seq" not in m:
            raise CheckpointError(f"{where}: source {src!r} has no seq")
        _int_field(m["seq"], f"{where}: sources[{src!r}].seq", -1)
        if "epoch" in m:
            _int_field(m["epoch"], f"{where}: sources[{src!r}].epoch", 0)
    for name, st in ckpt.estimators.items():
        if len(st.state) > MAX_STATE_BYTES:
            raise CheckpointError(f"{where}: estimators[{name!r}].state: {len(st.state)} bytes (limit {MAX_STATE_BYTES})")


# -- the file a daemon resumes from -----------------------------------------------------------------
class CheckpointFile:
    """One daemon's checkpoint path with its key, and the policy for a bad file.

    Registers the key file for ``path``, so every later :func:`write_checkpoint`
    to ``path`` is signed with it; the key is created (0600) by the first write,
    and an existing key file that is not private is refused here, at start.  :meth:`load` reads
    the checkpoint; a refused one goes through :meth:`refuse`: it is renamed
    ``<name>.refused-<UTC time>`` (kept for inspection, never overwritten) and,
    unless ``fresh_on_bad``, :class:`CheckpointError` says why and where it went.
    A start that finds no checkpoint but a refused one also stops unless
    ``fresh_on_bad``: the operator decides whether to lose the state.
    """

    def __init__(self, path: str | Path, key_file: str | Path | None = None, *, fresh_on_bad: bool = False,
                 trust_unsigned: bool = False) -> None:
        self.path = Path(path)
        self.key_file = default_key_file(self.path) if key_file is None else Path(key_file)
        self.fresh_on_bad = fresh_on_bad
        self.trust_unsigned = trust_unsigned
        if os.path.lexists(self.key_file):
            load_key(self.key_file, create=False)  # refuse a readable or malformed key now, not at the first write
        _KEY_FILES[self.path.absolute()] = self.key_file

    def remove_temporaries(self) -> list[Path]:
        """Delete ``.<name>.<pid>.tmp`` files a killed checkpoint write left (not this process's); returns them."""
        gone = []
        mine = f".{self.path.name}.{os.getpid()}.tmp"
        for p in self.path.parent.glob(f".{glob.escape(self.path.name)}.*.tmp"):
            if p.name == mine:
                continue
            try:
                p.unlink()
            except OSError as exc:
                log.warning("cannot remove the stale checkpoint temporary %s: %s", p, exc)
                continue
            gone.append(p)
        if gone:
            log.warning("removed %d temporary file(s) left by an interrupted checkpoint write: %s", len(gone),
                        ", ".join(str(p) for p in gone))
        return gone

    def refused(self) -> list[Path]:
        """Earlier refused checkpoints (``<name>.refused-*``), oldest first."""
        return sorted(self.path.parent.glob(f"{glob.escape(self.path.name)}.refused-*"))

    def load(self) -> Checkpoint | None:
        """The validated checkpoint, or None (none there, or refused with ``fresh_on_bad``)."""
        try:
            ckpt = read_checkpoint(self.path, trust_unsigned=self.trust_unsigned)
        except UnsignedCheckpointError:
            if not self.fresh_on_bad:
                raise  # not moved aside: --trust-unsigned-checkpoint must still find it
            self.refuse("unsigned checkpoint of the earlier format")
            return None
        except CheckpointError as exc:
            self.refuse(str(exc).removeprefix(f"{self.path}: "))
            return None
        if ckpt is None:
            earlier = self.refused()
            if earlier and not self.fresh_on_bad:
                raise CheckpointError(
                    f"checkpoint {self.path}: none there, but an earlier one was refused ({earlier[-1]}); start with "
                    "--fresh-on-bad-checkpoint to start from zero, or restore a good checkpoint to that path")
        elif self.trust_unsigned:
            log.warning("checkpoint %s: trusted as asked (--trust-unsigned-checkpoint); the next checkpoint is signed", self.path)
        return ckpt

    def refuse(self, why: str) -> Path:
        """Move the checkpoint aside; raise :class:`CheckpointError` unless ``fresh_on_bad`` (then log and return where it went)."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        dest = self.path.with_name(f"{self.path.name}.refused-{stamp}")
        try:
            os.replace(self.path, dest)
        except OSError as exc:
            raise CheckpointError(f"checkpoint {self.path} refused ({why}) and cannot be moved aside: {exc}") from None
        if not self.fresh_on_bad:
            raise CheckpointError(f"checkpoint {self.path} refused: {why}; moved aside to {dest}; start with "
                                  "--fresh-on-bad-checkpoint to start from zero")
        log.error("checkpoint %s refused: %s; moved aside to %s; starting fresh (--fresh-on-bad-checkpoint)", self.path, why, dest)
        return dest


def age(ckpt: Checkpoint) -> float:
    """Seconds since the checkpoint was written."""
    return max(0.0, time.time() - ckpt.written_at)
