"""Checkpoint serialisation shared by the estimators: npz arrays plus a JSON
header (``meta``), never pickle, so a checkpoint from an untrusted place can be
loaded safely (``np.load(..., allow_pickle=False)``)."""

from __future__ import annotations

import io
import json
from typing import Any, Iterable

import numpy as np

from qsense.pauli import PauliObservable, PauliTerm

__all__ = ["wires_to_json", "wires_from_json", "obs_to_json", "obs_from_json", "dump_npz", "load_npz"]


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


def load_npz(data: bytes, expected: str) -> tuple[Any, dict]:
    """Open checkpoint bytes, check that they hold an ``expected`` object;
    ``ValueError`` on anything malformed."""
    try:
        z = np.load(io.BytesIO(bytes(data)), allow_pickle=False)
        meta = json.loads(str(z["meta"]))
    except Exception as exc:
        raise ValueError(f"not a qsense {expected} checkpoint: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("type") != expected:
        got = meta.get("type") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"checkpoint holds a {got}, not a {expected}")
    return z, meta
