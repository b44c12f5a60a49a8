"""Checkpoint serialisation shared by the estimators: npz arrays plus a JSON
header (``meta``), never pickle, so a checkpoint from an untrusted place can be
loaded safely.

Reading is bounded: the zip directory's declared sizes and every array's
``.npy`` header are checked against :data:`MAX_STATE_BYTES` *before* anything
is decompressed or allocated, so a small crafted file cannot expand into
gigabytes.  Missing meta keys or arrays, wrong dtypes (float counts), negative
counts and non-finite sums are ``ValueError`` naming the field
(:func:`counts_array`, :func:`float_array`, :func:`meta_int`), never a
``KeyError`` traceback."""

from __future__ import annotations

import functools
import io
import json
import math
import zipfile
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from qsense.pauli import PauliObservable, PauliTerm

__all__ = ["wires_to_json", "wires_from_json", "obs_to_json", "obs_from_json", "dump_npz", "load_npz", "counts_array",
           "float_array", "meta_int", "configuration", "checked_state", "MAX_STATE_BYTES"]

#: the most one estimator state may hold once unpacked (all its arrays together); the largest
#: legitimate state, all_pauli_squares at 12 qubits, is 128 MiB
MAX_STATE_BYTES = 512 << 20
_MAX_MEMBERS = 4096
_MAX_HEADER = 10000


def wires_to_json(wires: Iterable) -> list:
    """Wire labels as JSON (int or str only; anything else is refused)."""
    out = []
    for w in wires:
        if isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, np.integer, str)):
            raise ValueError(f"only int or str wire labels can be serialised; got {w!r}")
        out.append(int(w) if isinstance(w, (int, np.integer)) else w)
    return out


def wires_from_json(wires: list) -> tuple:
    """Inverse of :func:`wires_to_json`."""
    return tuple(wires)


def obs_to_json(o: PauliObservable) -> dict:
    """A parsed observable as JSON: label and (coeff, positional, [(wire, letter)]) terms."""
    return {
        "label": o.label,
        "terms": [[c, t.positional, [[wires_to_json([w])[0], p] for w, p in t.ops]] for c, t in o.terms],
    }


def obs_from_json(d: dict) -> PauliObservable:
    """Inverse of :func:`obs_to_json`."""
    terms = tuple((float(c), PauliTerm(tuple((w, str(p)) for w, p in ops), bool(pos))) for c, pos, ops in d["terms"])
    return PauliObservable(terms, str(d["label"]))


def dump_npz(meta: dict, **arrays: np.ndarray) -> bytes:
    """``meta`` (JSON-able, must hold ``type``) and named arrays as npz bytes."""
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    return buf.getvalue()


class _Meta(dict):
    """The JSON header: a missing key is a ``ValueError`` naming it, not a ``KeyError``."""

    def __missing__(self, key: str) -> Any:
        raise ValueError(f"checkpoint state has no {key!r} in its header")


class _Arrays(Mapping):
    """The arrays of one npz, read eagerly within the size limit; ``files`` as ``np.load`` has it."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self._a = arrays
        self.files = list(arrays)

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return self._a[key]
        except KeyError:
            raise ValueError(f"checkpoint state has no array {key!r}") from None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._a)

    def __len__(self) -> int:
        return len(self._a)


def _read_members(data: bytes, limit: int) -> dict[str, np.ndarray]:
    """Every ``.npy`` member of the zip ``data``, refusing before decompression what would exceed ``limit`` bytes."""
    zf = zipfile.ZipFile(io.BytesIO(data))
    infos = zf.infolist()
    if len(infos) > _MAX_MEMBERS:
        raise ValueError(f"{len(infos)} arrays (at most {_MAX_MEMBERS})")
    declared = sum(i.file_size for i in infos)
    if declared > limit:  # the zip directory says how large each member unpacks: refuse before inflating anything
        raise ValueError(f"declares {declared} bytes unpacked (limit {limit})")
    out: dict[str, np.ndarray] = {}
    for info in infos:
        if not info.filename.endswith(".npy") or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ValueError(f"unexpected member {info.filename!r}")
        # zipfile never returns more than the declared file_size; the array header is checked against it before
        # numpy allocates the array, so neither a lying directory nor a lying header can allocate more
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=_MAX_HEADER)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=_MAX_HEADER)
            else:
                raise ValueError(f"{info.filename}: unsupported npy version {version}")
            if dtype.hasobject:
                raise ValueError(f"{info.filename}: object arrays are refused")
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > info.file_size:
                raise ValueError(f"{info.filename}: header declares {nbytes} bytes in a {info.file_size}-byte member")
            raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ValueError(f"{info.filename}: truncated array data")
        arr = np.frombuffer(raw, dtype=dtype)
        arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
        out[info.filename[:-4]] = arr.copy()  # writable, own memory (estimators update their arrays in place)
    return out


def load_npz(data: bytes, expected: str, limit: int = MAX_STATE_BYTES) -> tuple[Any, dict]:
    """Open checkpoint bytes, check that they hold an ``expected`` object;
    ``ValueError`` on anything malformed or larger than ``limit`` bytes unpacked.

    Returns ``(arrays, meta)``: a read-only mapping of array name to array (with
    ``.files``) and the JSON header; a missing key in either is a ``ValueError``."""
    try:
        z = _read_members(bytes(data), limit)
        meta = json.loads(str(z["meta"][()]))
    except Exception as exc:
        raise ValueError(f"not a qsense {expected} checkpoint: {exc}") from None
    if not isinstance(meta, dict) or meta.get("type") != expected:
        got = meta.get("type") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"checkpoint holds a {got}, not a {expected}")
    z.pop("meta")
    return _Arrays(z), _Meta(meta)


def counts_array(a: np.ndarray, name: str, shape: tuple[int, ...] | None = None, signed: bool = False) -> np.ndarray:
    """``a`` as int64 counts: integer dtype, non-negative (unless ``signed``: integer sums),
    of ``shape`` if given (else ``ValueError`` naming ``name``)."""
    if a.dtype.kind not in "iu":
        raise ValueError(f"checkpoint {name}: counts must be integers, got dtype {a.dtype}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"checkpoint {name}: shape {a.shape} does not match its configuration {tuple(shape)}")
    if a.size and ((a.min() < 0 and not signed) or (a.dtype.kind == "u" and a.max() > np.iinfo(np.int64).max)):
        raise ValueError(f"checkpoint {name}: negative or out-of-range counts")
    return a.astype(np.int64)


def float_array(a: np.ndarray, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``a`` as float64: a real numeric dtype, finite, of ``shape`` if given (else ``ValueError`` naming ``name``)."""
    if a.dtype.kind not in "fiu":
        raise ValueError(f"checkpoint {name}: expected real numbers, got dtype {a.dtype}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"checkpoint {name}: shape {a.shape} does not match its configuration {tuple(shape)}")
    out = a.astype(np.float64)
    if not np.isfinite(out).all():
        raise ValueError(f"checkpoint {name}: non-finite values")
    return out


def meta_int(meta: Mapping[str, Any], key: str, lo: int = 0) -> int:
    """An integer ``>= lo`` from the JSON header (``ValueError`` naming ``key`` otherwise)."""
    v = meta[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"checkpoint {key}: expected an integer >= {lo}, got {str(v)[:40]!r}")
    return v


#: header keys that are accumulated state, not configuration
_STATE_KEYS = frozenset({"version", "count", "capacity", "wires", "decay_sum"})


def configuration(est: Any) -> dict:
    """What configures ``est`` (observables, groups, subsystems, ...), as its own
    checkpoint header minus the accumulated state, so that a restored estimator
    can be compared with one built from the configuration."""
    _, meta = load_npz(est.to_bytes(), type(est).__name__)
    return {k: v for k, v in meta.items() if k not in _STATE_KEYS}


def checked_state(from_bytes: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a ``from_bytes`` classmethod body: whatever a malformed header makes
    the constructor raise (``TypeError`` for a string where a number belongs, ...)
    becomes the ``ValueError`` the method promises."""

    @functools.wraps(from_bytes)
    def wrapper(cls: Any, data: bytes) -> Any:
        try:
            return from_bytes(cls, data)
        except ValueError:
            raise
        except (KeyError, TypeError, IndexError, AttributeError, OverflowError) as exc:
            raise ValueError(f"malformed {cls.__name__} checkpoint: {type(exc).__name__}: {exc}") from None

    return wrapper
