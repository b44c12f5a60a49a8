"""Read and write the text formats of Huang, Kueng and Preskill's reference code
(github.com/hsinyuan-huang/predicting-quantum-properties).

* measurements: first line n; then one snapshot per line, ``B s B s ...`` for
  wires 0..n-1 with B in {X, Y, Z} and s in {1, -1} (the eigenvalue; ``+1`` is
  read as ``1``);
* observables: first line n; then ``k P q P q ...`` (k letters, 0-based wires,
  no wire twice), optionally followed by a positive weight, the relative number
  of measurements the reference's derandomization (and
  :func:`qsense.derandomized_bases`) plans for that observable;
* subsystems: first line n; then ``size q1 q2 ...``;
* measurement schemes (``data_acquisition_shadow``'s output): one basis per
  line, ``X Y Z ...``, no header.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from qsense.pauli import PauliObservable, PauliTerm
from qsense.records import ShadowBatch

__all__ = [
    "read_measurements", "write_measurements", "read_observables", "write_observables", "read_subsystems",
    "read_bases", "write_bases",
]

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
    """Read a measurement file into a :class:`ShadowBatch` backed by bit planes
    (:func:`qsense.streaming.reference_fast.read_measurements`: a compiled scan at
    disk speed, errors naming the line; ``ValueError`` subclass on bad contents)."""
    from .reference_fast import read_measurements as fast

    return fast(path, **kw)


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


def read_observables(path: str | os.PathLike, *, with_weights: bool = False):
    """Read an observable file: ``(n, observables)`` with positional wires, or
    ``(n, observables, weights)`` (float64, 1 where a line has no weight) with
    ``with_weights=True``.  Raises ``ValueError`` naming the line on bad input
    (a wire given twice, a wire outside 0..n-1, a non-positive weight, ...)."""
    lines = _lines(path)
    n = _header(path, lines)
    out = []
    weights = np.ones(len(lines) - 1)
    for i, ln in enumerate(lines[1:]):
        tok = ln.split()
        try:
            k = int(tok[0])
        except ValueError:
            raise ValueError(f"{path}: line {ln!r} must start with the number of Pauli letters") from None
        if k < 0 or len(tok) not in (1 + 2 * k, 2 + 2 * k):
            raise ValueError(f"{path}: line {ln!r} does not hold {k} (letter, wire) pairs and an optional weight")
        ops = []
        for letter, q in zip(tok[1 : 1 + 2 * k : 2], tok[2 : 2 + 2 * k : 2]):
            if letter not in _BASIS:
                raise ValueError(f"{path}: unknown Pauli letter {letter!r} in line {ln!r}")
            if not q.isdigit() or not 0 <= int(q) < n:
                raise ValueError(f"{path}: wire {q!r} outside 0..{n - 1} in line {ln!r}")
            ops.append((int(q), letter))
        if len({q for q, _ in ops}) != len(ops):
            raise ValueError(f"{path}: line {ln!r} names a wire twice")
        if len(tok) == 2 + 2 * k:
            try:
                weights[i] = float(tok[-1])
            except ValueError:
                raise ValueError(f"{path}: weight {tok[-1]!r} in line {ln!r} is not a number") from None
            if not (np.isfinite(weights[i]) and weights[i] > 0):
                raise ValueError(f"{path}: weight {tok[-1]!r} in line {ln!r} must be positive")
        term = PauliTerm(tuple(sorted(ops)), True)
        out.append(PauliObservable(((1.0, term),), str(term)))
    return (n, out, weights) if with_weights else (n, out)


def write_observables(
    path: str | os.PathLike, n: int, observables: Iterable[PauliObservable], weights: Iterable[float] | None = None
) -> None:
    """Write single-term observables in the reference format (with a trailing
    weight per line when ``weights`` are given)."""
    obs = list(observables)
    w = None if weights is None else [float(x) for x in weights]
    if w is not None and len(w) != len(obs):
        raise ValueError(f"weights must hold one number per observable ({len(obs)}); got {len(w)}")
    with open(path, "w") as f:
        f.write(f"{n}\n")
        for i, o in enumerate(obs):
            if len(o.terms) != 1:
                raise ValueError("the reference format holds single Pauli words only")
            term = o.terms[0][1]
            line = f"{term.weight} " + " ".join(f"{p} {w}" for w, p in term.ops)
            f.write(line.rstrip() + (f" {w[i]!r}" if w is not None else "") + "\n")


def write_bases(path: str | os.PathLike, bases: np.ndarray) -> None:
    """Write a measurement scheme (uint8 (B, n) bases, 0 = X, 1 = Y, 2 = Z) as
    ``data_acquisition_shadow`` prints it: one basis per line, ``X Y Z ...``."""
    bases = np.asarray(bases)
    if bases.ndim != 2 or (bases.size and (bases.min() < 0 or bases.max() > 2)):
        raise ValueError("bases must be a (B, n) array of 0 (X), 1 (Y), 2 (Z)")
    letters = np.array(list("XYZ"))[bases]
    with open(path, "w") as f:
        f.writelines(" ".join(row) + "\n" for row in letters)


def read_bases(path: str | os.PathLike) -> np.ndarray:
    """Read a measurement scheme (``X Y Z ...`` per line, no header) into uint8 (B, n)."""
    text = Path(path).read_text()
    rows = [ln.split() for ln in text.splitlines() if ln.strip()]
    if not rows:
        raise ValueError(f"{path}: empty file")
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"{path}: every line must hold the same number of bases")
    letters = np.array(rows)
    out = np.full(letters.shape, 255, dtype=np.int16)
    for k, v in _BASIS.items():
        out[letters == k] = v
    if (out == 255).any():
        raise ValueError(f"{path}: unknown basis letter {letters[out == 255][0]!r} (use X, Y, Z)")
    return out.astype(np.uint8)


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
