"""Pauli observables: parsing user input into a compact table the kernels use.

Accepted forms (the conventions of docs/estimators.md):

* dense strings ``"XIZY"``: letter i acts on wire position i;
* sparse strings ``"X0 Z3"`` (also ``"X0 @ Z3"``, ``"X0*Z3"``); ``"I"`` or ``""`` is
  the identity;
* PennyLane operators with a Pauli representation: ``qml.X(0) @ qml.Y(1)``,
  ``0.5 * qml.Z(0)``, ``qml.Hamiltonian``/sums with real coefficients.

A parsed observable is a :class:`PauliObservable`: a list of ``(coeff, term)``
with each term a :class:`PauliTerm` (sorted tuple of ``(wire, letter)``).  String
wires are *positions* (0..n-1); PennyLane wires are *labels* and are resolved
against the record's ``wires`` when data arrives.

:class:`PauliTable` is the compiled, deduplicated set of terms used by the
vectorised kernels: ``support`` int64 (M, kmax) column positions padded with -1,
``letters`` uint8 (M, kmax) with 1 = X, 2 = Y, 3 = Z (0 for padding).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Hashable, Iterable, Sequence

import numpy as np

__all__ = [
    "PauliTerm",
    "PauliObservable",
    "PauliTable",
    "parse_observable",
    "compile_observables",
    "LETTER_CODE",
    "CODE_LETTER",
    "SumMoments",
]

LETTER_CODE = {"I": 0, "X": 1, "Y": 2, "Z": 3}
CODE_LETTER = "IXYZ"

_SPARSE_TOKEN = re.compile(r"([A-Za-z])\s*(\d+)")


@dataclass(frozen=True)
class PauliTerm:
    """A Pauli word without coefficient: sorted ``((wire, letter), ...)``.

    ``positional`` says whether the wires are column positions (from strings) or
    wire labels (from PennyLane operators).
    """

    ops: tuple[tuple[Hashable, str], ...]
    positional: bool = True

    def __post_init__(self) -> None:
        # a wire named twice ("X0 X0") is not a Pauli word of that weight: the
        # kernels would count it as weight 2 and scale by 9 (2.97 for the identity)
        wires = [w for w, _ in self.ops]
        if len(set(wires)) != len(wires):
            twice = next(w for w in wires if wires.count(w) > 1)
            raise ValueError(f"Pauli term names wire {twice} twice")

    @property
    def weight(self) -> int:
        """Number of non-identity factors."""
        return len(self.ops)

    def __str__(self) -> str:
        if not self.ops:
            return "I"
        return " ".join(f"{p}{w}" for w, p in self.ops)

    def resolve(self, wires: Sequence[Hashable]) -> tuple[tuple[int, int], ...]:
        """Map to ``((column, letter_code), ...)`` for data on ``wires``."""
        n = len(wires)
        out = []
        if self.positional:
            for w, p in self.ops:
                if not 0 <= int(w) < n:
                    raise ValueError(f"Pauli '{self}' acts on wire {w}, outside the data's {n} wires")
                out.append((int(w), LETTER_CODE[p]))
        else:
            index = {w: i for i, w in enumerate(wires)}
            for w, p in self.ops:
                if w not in index:
                    raise ValueError(f"Pauli '{self}' acts on wire {w!r}, not among the data's wires {tuple(wires)}")
                out.append((index[w], LETTER_CODE[p]))
        return tuple(sorted(out))


@dataclass(frozen=True)
class PauliObservable:
    """A real linear combination of Pauli terms, as given by the user."""

    terms: tuple[tuple[float, PauliTerm], ...]
    label: str

    def __str__(self) -> str:
        return self.label


def _term(ops: Iterable[tuple[Hashable, str]], positional: bool, text: str) -> PauliTerm:
    seen: dict = {}
    for w, p in ops:
        if w in seen:
            raise ValueError(f"Pauli '{text}' names wire {w} twice")
        seen[w] = p
    kept = [(w, p) for w, p in seen.items() if p != "I"]
    if positional:
        kept.sort()
    else:  # labels of mixed types: order by type name, then text
        kept.sort(key=lambda x: (str(type(x[0])), str(x[0])))
    return PauliTerm(tuple(kept), positional)


@lru_cache(maxsize=1 << 16)
def _parse_string(s: str) -> PauliTerm:
    # cached: the same observable lists are parsed again and again by callers of
    # the batch API; PauliTerm is immutable, and errors are not cached
    text = s.strip()
    if text in ("", "I"):
        return PauliTerm((), True)
    if any(ch.isdigit() for ch in text):
        tokens = text.replace("@", " ").replace("*", " ").split()
        if all(len(t) > 1 and t[1:].isdigit() for t in tokens):  # fast path: "X0 Z12"
            pairs = [(t[0], t[1:]) for t in tokens]
        else:
            rest = _SPARSE_TOKEN.sub("", text)
            if rest.replace("@", "").replace("*", "").strip():
                raise ValueError(f"cannot parse Pauli string '{s}': unexpected '{rest.strip()}'")
            pairs = _SPARSE_TOKEN.findall(text)
        ops = []
        for letter, wire in pairs:
            if letter not in LETTER_CODE:
                raise ValueError(f"unknown Pauli letter '{letter}' in '{s}' (use I, X, Y, Z)")
            ops.append((int(wire), letter))
        return _term(ops, True, s)
    ops = []
    for i, letter in enumerate(text):
        if letter not in LETTER_CODE:
            raise ValueError(f"unknown Pauli letter '{letter}' in '{s}' (use I, X, Y, Z)")
        ops.append((i, letter))
    return _term(ops, True, s)


def _parse_pennylane(op: Any) -> list[tuple[float, PauliTerm]]:
    try:
        rep = op.pauli_rep
    except Exception as exc:  # pragma: no cover - defensive: exotic operators
        raise ValueError(f"cannot read a Pauli representation from {op!r}: {exc}") from exc
    if rep is None:
        raise ValueError(f"{op!r} is not a Pauli observable (no Pauli representation)")
    out = []
    for word, coeff in rep.items():
        c = complex(coeff)
        if abs(c.imag) > 1e-12 * max(1.0, abs(c.real)):
            raise ValueError(f"{op!r} has a complex coefficient {c} on {word}; observables must be Hermitian")
        ops = [(w, str(p)) for w, p in word.items()]
        out.append((float(c.real), _term(ops, False, repr(op))))
    return out


def parse_observable(obs: Any) -> PauliObservable:
    """Parse one user observable into a :class:`PauliObservable` (raises ``ValueError``)."""
    if isinstance(obs, PauliObservable):
        return obs
    if isinstance(obs, PauliTerm):
        return PauliObservable(((1.0, obs),), str(obs))
    if isinstance(obs, str):
        return PauliObservable(((1.0, _parse_string(obs)),), obs)
    if hasattr(obs, "pauli_rep") or hasattr(obs, "wires"):
        return PauliObservable(tuple(_parse_pennylane(obs)), repr(obs))
    raise ValueError(f"cannot interpret {obs!r} ({type(obs).__name__}) as a Pauli observable")


@dataclass
class PauliTable:
    """Deduplicated Pauli terms resolved to columns, plus how observables recombine.

    ``support``/``letters``: (M, kmax) as described in the module docstring.
    ``obs_index``/``term_index``/``coeff``: the sparse (n_obs x M) coefficient
    matrix in coordinate form (a dense one would be n_obs * M floats: 600 MB for
    10,000 observables); :meth:`combine` applies it.
    """

    support: np.ndarray
    letters: np.ndarray
    weight: np.ndarray
    obs_index: np.ndarray
    term_index: np.ndarray
    coeff: np.ndarray
    n_obs: int
    terms: list[tuple[tuple[int, int], ...]]
    n: int

    def combine(self, term_values: np.ndarray, squared: bool = False) -> np.ndarray:
        """Observable values ``sum_j c_ij v_j`` (or ``sum_j c_ij^2 v_j`` with ``squared``,
        for combining variances)."""
        c = self.coeff**2 if squared else self.coeff
        return np.bincount(self.obs_index, weights=c * term_values[self.term_index], minlength=self.n_obs)

    def combine_matrix(self) -> np.ndarray:
        """The dense (n_obs, M) coefficient matrix (for inspection and tests)."""
        out = np.zeros((self.n_obs, self.M))
        np.add.at(out, (self.obs_index, self.term_index), self.coeff)
        return out

    @property
    def M(self) -> int:
        """Number of distinct terms."""
        return int(self.support.shape[0])

    def dense_codes(self) -> np.ndarray:
        """uint8 (M, n) with 0 = I, 1 = X, 2 = Y, 3 = Z (PennyLane word = codes - 1)."""
        out = np.zeros((self.M, self.n), dtype=np.uint8)
        rows = np.repeat(np.arange(self.M), self.support.shape[1])
        cols = self.support.ravel()
        keep = cols >= 0
        out[rows[keep], cols[keep]] = self.letters.ravel()[keep]
        return out


def compile_observables(observables: Sequence[PauliObservable], wires: Sequence[Hashable]) -> PauliTable:
    """Resolve observables against data on ``wires`` into a :class:`PauliTable`."""
    n = len(wires)
    index: dict[tuple, int] = {}
    terms: list[tuple[tuple[int, int], ...]] = []
    entries: list[tuple[int, int, float]] = []
    for i, obs in enumerate(observables):
        for coeff, term in obs.terms:
            key = term.resolve(wires)
            j = index.get(key)
            if j is None:
                j = index[key] = len(terms)
                terms.append(key)
            entries.append((i, j, coeff))
    M = len(terms)
    kmax = max([len(t) for t in terms] + [1])
    weight = np.fromiter((len(t) for t in terms), dtype=np.int64, count=M)
    flat = [op for t in terms for op in t]
    rows = np.repeat(np.arange(M), weight)
    slots = np.arange(len(flat)) - np.repeat(np.cumsum(weight) - weight, weight)
    support = np.full((M, kmax), -1, dtype=np.int64)
    letters = np.zeros((M, kmax), dtype=np.uint8)
    if flat:
        cols_codes = np.array(flat, dtype=np.int64)
        support[rows, slots] = cols_codes[:, 0]
        letters[rows, slots] = cols_codes[:, 1]
    ent = np.array(entries, dtype=np.float64).reshape(-1, 3)
    return PauliTable(
        support, letters, weight, ent[:, 0].astype(np.int64), ent[:, 1].astype(np.int64), ent[:, 2],
        len(observables), terms, n,
    )


class SumMoments:
    """Per-record second moments of the observables that are sums of several terms.

    Terms of one sum are measured on the same records, so their errors are
    correlated; the honest error bar of ``sum_j c_j P_j`` needs
    ``Q = sum_t (sum_j c_j x_t(P_j))^2``.  Only those observables are tracked
    (``obs``: their indices; ``terms``: the term ids they use; ``C``: dense
    coefficients (len(obs), len(terms))), so single-term observables cost nothing.
    """

    def __init__(self, table: PauliTable) -> None:
        counts = np.bincount(table.obs_index, minlength=table.n_obs)
        self.obs = np.flatnonzero(counts > 1)
        mask = np.isin(table.obs_index, self.obs)
        self.terms = np.unique(table.term_index[mask])
        self.C = np.zeros((len(self.obs), len(self.terms)))
        np.add.at(
            self.C,
            (np.searchsorted(self.obs, table.obs_index[mask]), np.searchsorted(self.terms, table.term_index[mask])),
            table.coeff[mask],
        )
        self.Q = np.zeros(len(self.obs))

    def __bool__(self) -> bool:
        return bool(len(self.obs))

    def add(self, term_values: np.ndarray) -> None:
        """Fold in per-record values of ``self.terms``, shape (T, len(terms))."""
        v = term_values @ self.C.T
        self.Q += np.einsum("ij,ij->j", v, v)

    def stderr(self, means: np.ndarray, n: int) -> np.ndarray:
        """One-sigma error of the plain mean for each tracked observable, given
        the observables' plain means over ``n`` records."""
        if n < 2:
            return np.full(len(self.obs), np.inf)
        var = np.maximum(self.Q / n - means[self.obs] ** 2, 0.0) * n / (n - 1)
        return np.sqrt(var / n)
