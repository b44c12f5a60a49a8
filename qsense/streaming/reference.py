"""Read and write the text formats of Huang, Kueng and Preskill's reference code
(github.com/hsinyuan-huang/predicting-quantum-properties).

* measurements: first line n; then one snapshot per line, ``B s B s ...`` for
  wires 0..n-1 with B in {X, Y, Z} and s in {1, -1} (the eigenvalue);
* observables: first line n; then ``k P q P q ...`` (k letters, 0-based wires);
* subsystems: first line n; then ``size q1 q2 ...``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from qsense.pauli import PauliObservable, PauliTerm
from qsense.records import ShadowBatch

__all__ = ["read_measurements", "write_measurements", "read_observables", "write_observables", "read_subsystems"]

_BASIS = {"X": 0, "Y": 1, "Z": 2}


def _lines(path: str | os.PathLike) -> list[str]:
    text = Path(path).read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: empty file")
    return lines


def _header(path, lines) -> int:
    try:
        n = int(lines[0])
    except ValueError:
        raise ValueError(f"{path}: first line must be the number of qubits; got {lines[0]!r}") from None
    if n < 1:
        raise ValueError(f"{path}: number of qubits must be positive; got {n}")
    return n


def read_measurements(path: str | os.PathLike, **kw) -> ShadowBatch:
    """Read a measurement file into a :class:`ShadowBatch` (vectorised parse)."""
    lines = _lines(path)
    n = _header(path, lines)
    body = lines[1:]
    tokens = np.array(" ".join(body).split())
    if tokens.size != len(body) * 2 * n:
        raise ValueError(f"{path}: expected {2 * n} tokens per line for n={n}")
    tokens = tokens.reshape(len(body), n, 2)
    letters, signs = tokens[:, :, 0], tokens[:, :, 1]
    bases = np.full(letters.shape, 255, dtype=np.int16)
    for k, v in _BASIS.items():
        bases[letters == k] = v
    if (bases == 255).any():
        bad = letters[bases == 255][0]
        raise ValueError(f"{path}: unknown basis letter {bad!r} (use X, Y, Z)")
    outcomes = np.full(signs.shape, 255, dtype=np.int16)
    outcomes[signs == "1"] = 0
    outcomes[signs == "-1"] = 1
    if (outcomes == 255).any():
        bad = signs[outcomes == 255][0]
        raise ValueError(f"{path}: outcome must be 1 or -1; got {bad!r}")
    return ShadowBatch(bases=bases.astype(np.uint8), outcomes=outcomes.astype(np.uint8), **kw)


def write_measurements(path: str | os.PathLike, batch: ShadowBatch) -> None:
    """Write a :class:`ShadowBatch` in the reference measurement format."""
    letters = np.array(list("XYZ"))[batch.bases]
    signs = np.where(batch.outcomes == 0, "1", "-1")
    inter = np.empty((batch.T, 2 * batch.n), dtype=object)
    inter[:, 0::2] = letters
    inter[:, 1::2] = signs
    with open(path, "w") as f:
        f.write(f"{batch.n}\n")
        for row in inter:
            f.write(" ".join(row) + " \n")


def read_observables(path: str | os.PathLike) -> tuple[int, list[PauliObservable]]:
    """Read an observable file: returns (n, observables) with positional wires."""
    lines = _lines(path)
    n = _header(path, lines)
    out = []
    for ln in lines[1:]:
        tok = ln.split()
        k = int(tok[0])
        if len(tok) != 1 + 2 * k:
            raise ValueError(f"{path}: line {ln!r} does not hold {k} (letter, wire) pairs")
        ops = []
        for letter, q in zip(tok[1::2], tok[2::2]):
            if letter not in _BASIS:
                raise ValueError(f"{path}: unknown Pauli letter {letter!r}")
            if not 0 <= int(q) < n:
                raise ValueError(f"{path}: wire {q} outside 0..{n - 1}")
            ops.append((int(q), letter))
        term = PauliTerm(tuple(sorted(ops)), True)
        out.append(PauliObservable(((1.0, term),), str(term)))
    return n, out


def write_observables(path: str | os.PathLike, n: int, observables: Iterable[PauliObservable]) -> None:
    """Write single-term observables in the reference format."""
    with open(path, "w") as f:
        f.write(f"{n}\n")
        for o in observables:
            if len(o.terms) != 1:
                raise ValueError("the reference format holds single Pauli words only")
            term = o.terms[0][1]
            f.write(f"{term.weight} " + " ".join(f"{p} {w}" for w, p in term.ops) + "\n")


def read_subsystems(path: str | os.PathLike) -> tuple[int, list[tuple[int, ...]]]:
    """Read a subsystem file: returns (n, subsystems)."""
    lines = _lines(path)
    n = _header(path, lines)
    subs = []
    for ln in lines[1:]:
        tok = [int(x) for x in ln.split()]
        if len(tok) != 1 + tok[0]:
            raise ValueError(f"{path}: line {ln!r} does not hold {tok[0]} wires")
        subs.append(tuple(tok[1:]))
    return n, subs
