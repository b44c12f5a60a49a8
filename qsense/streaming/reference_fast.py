"""Read reference measurement files (Huang-Kueng-Preskill text format) at disk speed.

The file is read in chunks of :data:`CHUNK_BYTES` into one reused buffer and
each chunk is scanned by a compiled pass (:mod:`._reference_scan`) that sets
the snapshot bits straight into shadow bit planes (:mod:`qsense.packing`).
The result is a :class:`~qsense.records.ShadowBatch` built from those planes:
the estimators count from them without ever unpacking, and ``bases`` /
``outcomes`` are unpacked only if something reads them.

Memory: the buffer plus planes sized for the most snapshots the file could
hold (a snapshot line takes at least 4n bytes, so 3/32 of the file size),
then trimmed: about 0.2x the file at the peak, never a copy of the text.

Accepted: outcomes ``1``, ``+1``, ``-1``; spaces and tabs between tokens,
trailing blanks, CRLF line ends, empty lines anywhere, a last line without a
newline.  Anything else is refused with a :class:`MeasurementFileError` (a
``ValueError``) naming the line and column.  Without numba the token reader
(:func:`read_measurements_tokens`, NumPy string arrays, ~10x the memory) is used.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from qsense import packing
from qsense.records import ShadowBatch

__all__ = ["MeasurementFileError", "read_measurements", "read_measurements_tokens", "CHUNK_BYTES"]

#: Bytes read and scanned per step (the buffer is reused).
CHUNK_BYTES = 1 << 24

_BASIS = {"X": 0, "Y": 1, "Z": 2}


class MeasurementFileError(ValueError):
    """A measurement file that is not in the reference format (the message names the line)."""


def _header(path: str, f) -> tuple[int, int, int]:
    """Read up to the first non-empty line: ``(n, lines read, bytes read)``."""
    line = 0
    offset = 0
    while True:
        raw = f.readline(4096)
        if not raw:
            raise MeasurementFileError(f"{path}: empty file (the first line must be the number of qubits)")
        offset += len(raw)
        if not raw.endswith(b"\n") and len(raw) == 4096:
            raise MeasurementFileError(f"{path}: line {line + 1}: the first line must be the number of qubits; got a line of over 4096 bytes")
        line += 1
        text = raw.strip(b" \t\r\n")
        if text:
            break
    try:
        n = int(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        shown = text[:40].decode("ascii", "replace")
        raise MeasurementFileError(f"{path}: line {line}: the first line must be the number of qubits; got {shown!r}") from None
    if n < 1:
        raise MeasurementFileError(f"{path}: line {line}: number of qubits must be positive; got {n}")
    return n, line, offset


def _describe(byte: int) -> str:
    if byte < 0:
        return "the end of the line"
    if 33 <= byte < 127:
        return repr(chr(byte))
    return f"byte 0x{byte:02x}"


def _token(line: bytes) -> str:
    """The token at the start of ``line`` as printable text (at most 20 characters)."""
    tok = line.split(None, 1)[0] if line.strip() else line[:1]
    text = tok[:20].decode("ascii", "backslashreplace")
    return repr(text + ("..." if len(tok) > 20 else ""))


def _error(path: str, status: int, n: int, line: int, col: int, byte: int, rest: bytes) -> MeasurementFileError:
    """The message for a scanner status; ``rest`` is the line from the column on."""
    from . import _reference_scan as S

    where = f"{path}: line {line}, column {col}"
    if status == S.BAD_LETTER:
        return MeasurementFileError(f"{where}: expected a basis letter X, Y or Z followed by a blank; got {_describe(byte)}")
    if status == S.BAD_OUTCOME:
        return MeasurementFileError(f"{where}: outcome must be 1, +1 or -1; got {_token(rest)}")
    if status == S.MISSING_OUTCOME:
        return MeasurementFileError(f"{where}: a basis letter without its outcome")
    if status == S.TOO_MANY:
        return MeasurementFileError(f"{where}: more than n={n} (basis, outcome) pairs on the line")
    if status == S.TOO_FEW:
        return MeasurementFileError(f"{path}: line {line}: {byte} (basis, outcome) pairs; the header says n={n}")
    return MeasurementFileError(f"{where}: more snapshots than the file size allows (internal error)")


def read_measurements(path: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES, **kw) -> ShadowBatch:
    """Read a reference measurement file into a :class:`ShadowBatch` backed by bit planes.

    ``kw`` goes to :meth:`ShadowBatch.from_packed` (``wires``, ``source``, ...).
    Raises :class:`MeasurementFileError` naming the line for malformed contents,
    ``OSError`` when the file cannot be read.
    """
    try:
        from ._reference_scan import OK, scan_measurements  # numba: imported on first read
    except ImportError:  # pragma: no cover - numba is a dependency
        return read_measurements_tokens(path, **kw)
    name = str(path)
    size = os.path.getsize(path)
    with open(path, "rb", buffering=0) as f:
        n, line, offset = _header(name, f)
        f.seek(offset)
        # a snapshot line holds at least n "B s" tokens and n separators: >= 4n bytes
        t_max = (size - offset) // (4 * n) + 1
        planes = np.zeros((packing.SHADOW_PLANES, n, packing.n_words(t_max)), dtype=np.uint64)
        # a line may be as long as 8n bytes plus blanks; a chunk must hold at least one
        buf = np.empty(max(int(chunk_bytes), 16 * n + 4096), dtype=np.uint8)
        view = memoryview(buf)
        held = 0  # bytes of an unfinished line carried over from the previous chunk
        t = 0
        while True:
            got = f.readinto(view[held:])
            final = not got
            L = held + (got or 0)
            status, used, t, line, col, byte = scan_measurements(buf, L, final, n, planes, t, line)
            if status != OK:
                rest = bytes(buf[used + max(col, 1) - 1 : min(L, used + col + 63)])
                raise _error(name, status, n, line, col, byte, rest)
            if final:
                break
            held = L - used
            if held == buf.shape[0]:
                raise MeasurementFileError(f"{name}: line {line + 1}: longer than {buf.shape[0]} bytes (n={n} needs about {8 * n})")
            buf[:held] = buf[used:L]
    W = packing.n_words(t)
    out = np.ascontiguousarray(planes[:, :, :W]) if W != planes.shape[2] else planes
    del planes
    if t % 64:  # padding records: basis code 11 (no basis), outcome 0
        pad = ~packing.valid_words(t)[-1]
        out[0, :, -1] |= pad
        out[1, :, -1] |= pad
    return ShadowBatch.from_packed(out, t, **kw)


def read_measurements_tokens(path: str | os.PathLike, **kw) -> ShadowBatch:
    """The token reader (NumPy string arrays): the fallback without numba and the
    reference the compiled reader is tested against.  Same accepted format and
    results; errors name the problem but not always the line."""
    text = Path(path).read_text(encoding="ascii", errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise MeasurementFileError(f"{path}: empty file (the first line must be the number of qubits)")
    try:
        n = int(lines[0])
    except ValueError:
        raise MeasurementFileError(f"{path}: the first line must be the number of qubits; got {lines[0][:40]!r}") from None
    if n < 1:
        raise MeasurementFileError(f"{path}: number of qubits must be positive; got {n}")
    body = lines[1:]
    tokens = np.array(" ".join(body).split())
    if tokens.size != len(body) * 2 * n:
        raise MeasurementFileError(f"{path}: expected {2 * n} tokens per line for n={n}")
    tokens = tokens.reshape(len(body), n, 2)
    letters, signs = tokens[:, :, 0], tokens[:, :, 1]
    bases = np.full(letters.shape, 255, dtype=np.int16)
    for k, v in _BASIS.items():
        bases[letters == k] = v
    if (bases == 255).any():
        raise MeasurementFileError(f"{path}: unknown basis letter {letters[bases == 255][0]!r} (use X, Y, Z)")
    outcomes = np.full(signs.shape, 255, dtype=np.int16)
    outcomes[(signs == "1") | (signs == "+1")] = 0
    outcomes[signs == "-1"] = 1
    if (outcomes == 255).any():
        raise MeasurementFileError(f"{path}: outcome must be 1, +1 or -1; got {signs[outcomes == 255][0]!r}")
    return ShadowBatch(bases=bases.astype(np.uint8), outcomes=outcomes.astype(np.uint8), **kw)
