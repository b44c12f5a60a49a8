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

import itertools
import os
from pathlib import Path

import numpy as np

from qsense import packing
from qsense.records import MAX_QUBITS, ShadowBatch

__all__ = ["CHUNK_BYTES", "PARALLEL_BYTES", "MeasurementFileError", "read_measurements", "read_measurements_tokens"]

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
    if n > MAX_QUBITS:  # before sizing anything by n
        raise MeasurementFileError(f"{path}: line {line}: {n} qubits; the limit is {MAX_QUBITS}")
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
        return MeasurementFileError(f"{where}: unknown basis letter {_describe(byte)} (use X, Y or Z, then a blank)")
    if status == S.BAD_OUTCOME:
        return MeasurementFileError(f"{where}: outcome must be 1 or -1 (or +1); got {_token(rest)}")
    if status == S.MISSING_OUTCOME:
        return MeasurementFileError(f"{where}: a basis letter without its outcome (an odd number of tokens)")
    if status == S.TOO_MANY:
        return MeasurementFileError(f"{where}: more than {2 * n} tokens (n={n} basis, outcome pairs) on the line")
    if status == S.TOO_FEW:
        return MeasurementFileError(f"{path}: line {line}: {2 * byte} tokens ({byte} basis, outcome pairs); n={n} needs {2 * n}")
    return MeasurementFileError(f"{where}: more snapshots than the file size allows (internal error)")


#: Bodies larger than this are split over threads (each part at least this large).
PARALLEL_BYTES = 32 << 20


class _Part:
    """One byte range of the body, scanned on its own: its planes (snapshot 0 = the
    range's first), snapshot and line counts, or the error it met."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        self.planes: np.ndarray | None = None
        self.t = 0
        self.lines = 0
        self.error: tuple | None = None  # (status, local line, col, byte, rest of the line)


def _scan_part(path: str, part: _Part, n: int, chunk_bytes: int) -> _Part:
    from ._reference_scan import OK, scan_measurements

    # a snapshot line holds at least n "B s" tokens and n separators: >= 4n bytes
    t_max = (part.end - part.start) // (4 * n) + 1
    planes = np.zeros((packing.SHADOW_PLANES, n, packing.n_words(t_max)), dtype=np.uint64)
    # a line may be as long as 8n bytes plus blanks; a chunk must hold at least one
    buf = np.empty(max(int(chunk_bytes), 16 * n + 4096), dtype=np.uint8)
    view = memoryview(buf)
    held = 0  # bytes of an unfinished line carried over from the previous chunk
    t = line = 0
    left = part.end - part.start
    with open(path, "rb", buffering=0) as f:
        f.seek(part.start)
        while True:
            got = f.readinto(view[held : held + min(left, buf.shape[0] - held)]) if left else 0
            left -= got
            final = not got
            L = held + got
            status, used, t, line, col, byte = scan_measurements(buf, L, final, n, planes, t, line)
            if status != OK:
                part.error = (status, line, col, byte, bytes(buf[used + max(col, 1) - 1 : min(L, used + col + 63)]))
                return part
            if final:
                break
            held = L - used
            if held == buf.shape[0]:
                part.error = (-1, line + 1, buf.shape[0], 0, b"")
                return part
            buf[:held] = buf[used:L]
    part.planes, part.t, part.lines = planes, t, line
    return part


def _split(path: str, start: int, end: int, parts: int) -> list[_Part]:
    """``parts`` byte ranges of ``[start, end)``, each ending just after a newline."""
    cuts = [start]
    with open(path, "rb") as f:
        for i in range(1, parts):
            guess = start + (end - start) * i // parts
            if guess <= cuts[-1]:
                continue
            f.seek(guess)
            rest = f.readline()  # up to and including the next newline
            cut = guess + len(rest)
            if cut < end:
                cuts.append(cut)
    cuts.append(end)
    return [_Part(a, b) for a, b in itertools.pairwise(cuts) if b > a] or [_Part(start, end)]


def _join(parts: list[_Part], n: int) -> tuple[np.ndarray, int]:
    """The parts' planes end to end: part i shifted by the snapshots before it."""
    T = sum(p.t for p in parts)
    if len(parts) == 1:
        W = packing.n_words(T)
        planes = parts[0].planes
        return (np.ascontiguousarray(planes[:, :, :W]) if W != planes.shape[2] else planes), T
    out = np.zeros((packing.SHADOW_PLANES, n, packing.n_words(T)), dtype=np.uint64)
    t0 = 0
    for p in parts:
        w = packing.n_words(p.t)
        src = p.planes[:, :, :w]
        p.planes = None
        w0, r = divmod(t0, 64)
        if r == 0:
            out[:, :, w0 : w0 + w] = src
        else:  # bits beyond p.t are 0 in src, so ORing whole words is exact
            out[:, :, w0 : w0 + w] |= src << np.uint64(r)
            hi = src >> np.uint64(64 - r)
            m = min(w, out.shape[2] - w0 - 1)
            out[:, :, w0 + 1 : w0 + 1 + m] |= hi[:, :, :m]
        t0 += p.t
    return out, T


def read_measurements(path: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES, threads: int | None = None, **kw) -> ShadowBatch:
    """Read a reference measurement file into a :class:`ShadowBatch` backed by bit planes.

    Files with a body over :data:`PARALLEL_BYTES` are split at line ends into
    ``threads`` parts scanned side by side (default: the counting kernels'
    :func:`~qsense.estimators.kernels.get_threads`), then joined by word shifts.
    ``kw`` goes to :meth:`ShadowBatch.from_packed` (``wires``, ``source``, ...).
    Raises :class:`MeasurementFileError` naming the line for malformed contents,
    ``OSError`` when the file cannot be read.
    """
    try:
        from . import _reference_scan  # noqa: F401 -- numba: imported on first read
    except ImportError:  # pragma: no cover - numba is a dependency
        return read_measurements_tokens(path, **kw)
    name = str(path)
    size = os.path.getsize(path)
    with open(path, "rb", buffering=0) as f:
        n, head_lines, offset = _header(name, f)
    if threads is None:
        from qsense.estimators.kernels import get_threads

        threads = get_threads()
    k = max(1, min(int(threads), (size - offset) // PARALLEL_BYTES))
    parts = _split(name, offset, size, k)
    if len(parts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(parts), thread_name_prefix="qsense-read") as pool:
            parts = list(pool.map(lambda p: _scan_part(name, p, n, chunk_bytes), parts))
    else:
        parts = [_scan_part(name, parts[0], n, chunk_bytes)]
    before = head_lines
    for p in parts:  # the first error in file order, with its line number in the file
        if p.error is not None:
            status, line, col, byte, rest = p.error
            if status == -1:
                raise MeasurementFileError(f"{name}: line {before + line}: longer than {col} bytes (n={n} needs about {8 * n})")
            raise _error(name, status, n, before + line, col, byte, rest)
        before += p.lines
    out, t = _join(parts, n)
    del parts
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
        raise MeasurementFileError(f"{path}: unknown basis letter {letters[bases == 255][0]!r} (use X, Y or Z)")
    outcomes = np.full(signs.shape, 255, dtype=np.int16)
    outcomes[(signs == "1") | (signs == "+1")] = 0
    outcomes[signs == "-1"] = 1
    if (outcomes == 255).any():
        raise MeasurementFileError(f"{path}: outcome must be 1 or -1 (or +1); got {signs[outcomes == 255][0]!r}")
    return ShadowBatch(bases=bases.astype(np.uint8), outcomes=outcomes.astype(np.uint8), **kw)
