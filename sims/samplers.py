"""Exact, fast measurement samplers: random-Pauli shadows and two-copy Bell shots.

These functions turn a quantum state (a 2^n statevector or a 2^n x 2^n density
matrix, wire 0 = most significant bit, PennyLane's convention) into measurement
records whose distribution is *exactly* the Born-rule one:

* :func:`sample_shadows` -> :class:`qsense.ShadowBatch`: every qubit of every
  shot measured in an independent, uniformly random Pauli basis (X, Y, Z).
* :func:`sample_bell` / :func:`sample_bell_pair` -> :class:`qsense.BellBatch`:
  two copies (the same state twice, or two different states), qubit i of copy A
  Bell-measured with qubit i of copy B (CNOT(A_i -> B_i), H(A_i), code 2a + b).

Algorithms (all vectorised over shots, no per-shot Python loops)
---------------------------------------------------------------
Shadow *table* (small n, many shots).  A shot's random basis and outcome on one
qubit form a class ``d = 2*basis + bit`` in 0..5, so a whole shot is one of 6^n
classes with probability ``p(bases, bits) / 3^n``.  The table of all 6^n
probabilities is built by applying, on every wire axis of the state, the 6x2
matrix V whose rows are the measurement bras <b|U_basis (statevector: then
|amplitude|^2), or the 6x4 matrix W = V (x) conj(V) on the paired (row, col)
axes (density matrix).  Cost O(6^n) once; after that a shot costs one draw from
a categorical distribution (multinomial counts + repeat + shuffle when there are
many shots per class, else sorted uniforms from exponential spacings +
``searchsorted`` + shuffle) and a lookup-table decode of its base-6 digits.
Used when 6^n <= :data:`TABLE_MAX_CLASSES` (n <= 8) and the shots asked for so
far justify building it (6^n <= :data:`TABLE_SHOTS_FACTOR` x shots).

Shadow *tree* (large n, or few shots).  Shots that share a prefix of
(basis, outcome) on wires 0..q-1 share the collapsed state of wires q..n-1.  We
walk the wires in order keeping one branch per distinct prefix with its shot
count; at each wire the counts split over bases (binomials of 1/3, 1/2) and
outcomes (binomial of the Born marginal (1 + <sigma_b>)/2), and each non-empty
child carries the (unnormalised) post-measurement state of the remaining wires.
Statevectors go through the compiled version of this walk in
:mod:`qsense.sims.pure_tree` (bases drawn first and sorted, one uniform per shot
and wire, real/imaginary planes, Z children as views; about 20x faster than
the NumPy tree at n = 20); density matrices through the NumPy tree below.
This produces the exact multinomial counts of complete (bases, bits) strings;
the records are those strings repeated by their counts and randomly permuted,
which is exactly an i.i.d. sequence.  Work per wire is at most
min(6^q, shots) x 2^(n-q) (statevector) or x 4^(n-q) (density matrix).  Children
are built in chunks and finished depth first, so the working arrays stay within
:data:`TREE_BUDGET` complex numbers (64 MiB) beyond the state itself (see
``_Tree``): statevectors to n = 20 and beyond, and density matrices to n = 10-12,
run in bounded memory (the input state is the limit).

Bell *table*.  With the per-pair Bell projectors written in Paulis,
``|beta_c><beta_c| = 1/4 sum_s eps_s(c) s (x) s`` (eps_I = 1, eps_X = (-1)^a,
eps_Y = -(-1)^(a+b), eps_Z = (-1)^b), the code distribution of copy A (x) copy B
is ``p(c) = 4^-n sum_P eps_P(c) tr(P rho_A) tr(P rho_B)``: the two Pauli vectors
(O(n 4^n) each, per-wire 4x4 transforms), multiplied entrywise, then the 4x4
matrix eps/4 on every wire axis.  The table has 4^n entries, so Bell sampling is
limited to n <= :data:`MAX_BELL_QUBITS` (a 4^n-outcome measurement; the 2n-qubit
two-copy state would be as large).

Array layouts
-------------
* statevector: complex128 (2^n,), index bits wire 0 most significant.
* density matrix: complex128 (2^n, 2^n), same index order on rows and columns.
* shadow table: float64 (6^n,), base-6 digits ``2*basis + bit`` per wire, wire
  0 most significant; the 2^n entries of any one bases string sum to 1/3^n.
* Bell table: float64 (4^n,), base-4 digits = Bell codes, wire 0 most significant.
* Pauli vector: float64 (4^n,), base-4 digits I, X, Y, Z per wire (the order of
  :func:`qsense.all_pauli_squares`).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

from qsense.records import BellBatch, ShadowBatch

__all__ = [
    "sample_shadows",
    "sample_bell",
    "sample_bell_pair",
    "ShadowSampler",
    "BellSampler",
    "as_state",
    "to_density_matrix",
    "shadow_probabilities",
    "bell_probabilities",
    "pauli_vector",
    "TABLE_MAX_CLASSES",
    "TREE_BUDGET",
    "MAX_BELL_QUBITS",
    "set_threads",
]

log = logging.getLogger(__name__)

#: Largest shadow class table (6^n float64 entries) the table sampler builds: 6^8.
TABLE_MAX_CLASSES = 6**8
#: The table is built once the shots asked of one sampler reach 6^n / this factor.
TABLE_SHOTS_FACTOR = 32
#: Complex numbers the tree sampler holds per working array (2^22 = 64 MiB).
TREE_BUDGET = 1 << 22
#: Bell sampling builds the 4^n-outcome table (n = 11: 32 MiB, 4 M outcomes).
MAX_BELL_QUBITS = 11
#: Shots per pass when searching and decoding: small temporaries that stay in
#: cache and are reused by the allocator instead of fresh pages per call.
_CHUNK = 1 << 16

_SQ2 = 1.0 / math.sqrt(2.0)
#: rows: <b|U for class d = 2*basis + bit (X0, X1, Y0, Y1, Z0, Z1); columns: |0>, |1>.
#: Y eigenstates (|0> +- i|1>)/sqrt2 give bras (1, -+i)/sqrt2.
_V = np.array(
    [[_SQ2, _SQ2], [_SQ2, -_SQ2], [_SQ2, -1j * _SQ2], [_SQ2, 1j * _SQ2], [1, 0], [0, 1]], dtype=np.complex128
)
#: density-matrix version: W[d, 2r + c] = V[d, r] conj(V[d, c])
_W = np.einsum("dr,dc->drc", _V, _V.conj()).reshape(6, 4)
#: Pauli expectations from a qubit's (row, col) pair 2r + c: tr(s rho) = sum_rc s[c, r] rho[r, c]
_PAULI_FROM_RC = np.array(
    [[1, 0, 0, 1], [0, 1, 1, 0], [0, 1j, -1j, 0], [1, 0, 0, -1]], dtype=np.complex128
)
#: Bell eigenvalue table eps[code, sigma] with code = 2a + b, sigma in I, X, Y, Z
_EPS = np.array([[1, 1, -1, 1], [1, 1, 1, -1], [1, -1, 1, 1], [1, -1, -1, -1]], dtype=np.float64)


# ----------------------------------------------------------------------------------
# state handling
# ----------------------------------------------------------------------------------
def _num_qubits(dim: int, what: str) -> int:
    n = int(dim).bit_length() - 1
    if dim < 2 or (1 << n) != dim:
        raise ValueError(f"{what} dimension must be 2^n with n >= 1; got {dim}")
    return n


def as_state(state: Any, atol: float = 1e-6) -> tuple[np.ndarray, bool, int]:
    """Validate and normalise a state: returns ``(array, is_density, n)``.

    ``state`` is a statevector (2^n,) or a density matrix (2^n, 2^n) (anything
    ``np.asarray`` accepts, e.g. PennyLane results).  The norm (trace) must be 1
    within ``atol``; it is then renormalised exactly, and density matrices are
    made exactly Hermitian.  Raises ``ValueError`` otherwise.
    """
    a = np.asarray(state)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"state must be numeric; got dtype {a.dtype}")
    a = a.astype(np.complex128, copy=False)
    if a.ndim == 1:
        n = _num_qubits(a.shape[0], "statevector")
        if not np.all(np.isfinite(a)):
            raise ValueError("statevector contains NaN or infinite amplitudes")
        norm = float(np.vdot(a, a).real)
        if abs(norm - 1.0) > atol:
            raise ValueError(f"statevector must have norm 1; got norm^2 = {norm:.9g}")
        return a / math.sqrt(norm), False, n
    if a.ndim == 2 and a.shape[0] == a.shape[1]:
        n = _num_qubits(a.shape[0], "density matrix")
        if not np.all(np.isfinite(a)):
            raise ValueError("density matrix contains NaN or infinite entries")
        herm_err = float(np.max(np.abs(a - a.conj().T)))
        if herm_err > atol:
            raise ValueError(f"density matrix must be Hermitian; max |rho - rho^dagger| = {herm_err:.3g}")
        tr = float(np.trace(a).real)
        if abs(tr - 1.0) > atol:
            raise ValueError(f"density matrix must have trace 1; got {tr:.9g}")
        return (a + a.conj().T) / (2.0 * tr), True, n
    raise ValueError(f"state must be a 2^n statevector or a 2^n x 2^n density matrix; got shape {a.shape}")


def to_density_matrix(state: Any) -> np.ndarray:
    """The density matrix of a statevector or density matrix (validated, complex128)."""
    a, dens, _ = as_state(state)
    return a if dens else np.outer(a, a.conj())


def _per_axis(t: np.ndarray, mat: np.ndarray, n: int) -> np.ndarray:
    """Apply ``mat`` (k x m) along each of the n leading axes of t (shape (m,)*n)."""
    for axis in range(n):
        t = np.moveaxis(np.tensordot(mat, t, axes=([1], [axis])), 0, axis)
    return t


def _paired(rho: np.ndarray, n: int) -> np.ndarray:
    """Density matrix (2^n, 2^n) -> (4,)*n with axis q indexing (row_q, col_q) as 2r + c."""
    t = rho.reshape((2,) * (2 * n))
    order = [ax for q in range(n) for ax in (q, n + q)]
    return t.transpose(order).reshape((4,) * n)


def pauli_vector(state: Any) -> np.ndarray:
    """All 4^n Pauli expectation values tr(P rho), float64 (4^n,).

    Index: base-4 digits I=0, X=1, Y=2, Z=3 per wire, wire 0 most significant
    (the order of :func:`qsense.all_pauli_squares` / ``pauli_square_labels``).
    Cost O(n 4^n) time and 4^n complex memory.
    """
    rho = to_density_matrix(state)
    n = _num_qubits(rho.shape[0], "density matrix")
    v = _per_axis(_paired(rho, n), _PAULI_FROM_RC, n)
    return np.ascontiguousarray(v.real).reshape(-1)


def _shadow_table_pure(psi: np.ndarray, n: int) -> np.ndarray:
    """Unscaled class probabilities |<b|U|psi>|^2 (6^n,) of a statevector.

    Wires 0..n-2: amplitudes by batched matmuls with V, kept contiguous in wire
    order, shape (6^q, 6, 2^(n-q-1)).  The last wire needs no complex table:
    with a0, a1 its two amplitudes per prefix, the six probabilities are
    (N +- 2 Re c)/2 (X), (N -+ 2 Im c)/2 (Y) with c = conj(a0) a1 ... written
    straight into the real output.
    """
    t = psi.reshape(1, 2, -1)
    for _ in range(n - 1):
        t = np.matmul(_V, t).reshape(-1, 2, t.shape[2] // 2)
    a0, a1 = t[:, 0, 0], t[:, 1, 0]
    n0 = a0.real**2 + a0.imag**2
    n1 = a1.real**2 + a1.imag**2
    c = a0.conj() * a1
    half = 0.5 * (n0 + n1)
    out = np.empty((t.shape[0], 6))
    out[:, 0] = half + c.real  # X, +1: |a0 + a1|^2 / 2
    out[:, 1] = half - c.real
    out[:, 2] = half + c.imag  # Y, +1: |a0 - i a1|^2 / 2 = N/2 + Im(conj(a0) a1)
    out[:, 3] = half - c.imag
    out[:, 4] = n0
    out[:, 5] = n1
    return out.reshape(-1)


def _shadow_table_density(rho: np.ndarray, n: int) -> np.ndarray:
    """Unscaled class probabilities tr(rho (x)_q |b_q><b_q|) (6^n,) of a density matrix.

    Wires 0..n-2: W = V (x) conj(V) by batched matmuls on the paired (row, col)
    axes, kept contiguous, shape (6^q, 4, 4^(n-q-1)).  What is left on the last
    wire is a Hermitian 2x2 block (r00, r01, conj(r01), r11) per prefix, whose
    six probabilities are (r00 + r11)/2 +- Re r01 (X), (r00 + r11)/2 -+ Im r01
    (Y), r00 and r11 (Z), written straight into the real output.
    """
    t = _paired(rho, n).reshape(1, 4, -1)
    for _ in range(n - 1):
        t = np.matmul(_W, t).reshape(-1, 4, t.shape[2] // 4)
    r00 = t[:, 0, 0].real
    r01 = t[:, 1, 0]
    r11 = t[:, 3, 0].real
    half = 0.5 * (r00 + r11)
    out = np.empty((t.shape[0], 6))
    out[:, 0] = half + r01.real
    out[:, 1] = half - r01.real
    out[:, 2] = half - r01.imag
    out[:, 3] = half + r01.imag
    out[:, 4] = r00
    out[:, 5] = r11
    return out.reshape(-1)


def shadow_probabilities(state: Any) -> np.ndarray:
    """Exact joint probabilities of (bases, bits) of one random-Pauli snapshot.

    float64 (6^n,), index base-6 digits ``2*basis + bit`` per wire, wire 0 most
    significant; includes the 1/3^n of the uniformly random bases, so it sums to 1.
    """
    a, dens, n = as_state(state)
    if dens:
        p = _shadow_table_density(a, n)
    else:
        p = _shadow_table_pure(a, n)
    p *= 1.0 / 3.0**n
    if p.min() < -1e-9:
        raise ValueError(f"state is not positive semidefinite (a probability is {p.min():.3g})")
    return np.maximum(p, 0.0, out=p)


def bell_probabilities(state_a: Any, state_b: Any = None) -> np.ndarray:
    """Exact distribution of the n Bell codes of copy A (x) copy B (B = A if omitted).

    float64 (4^n,), base-4 digits = codes 2a + b per wire, wire 0 most significant.
    """
    va = pauli_vector(state_a)
    vb = va if state_b is None else pauli_vector(state_b)
    if va.shape != vb.shape:
        raise ValueError("the two copies must have the same number of qubits")
    n = _num_qubits(int(round(math.sqrt(va.size))), "state")
    p = _per_axis((va * vb).reshape((4,) * n), _EPS / 4.0, n).reshape(-1)
    if p.min() < -1e-9:
        raise ValueError(f"state is not positive semidefinite (a probability is {p.min():.3g})")
    return np.maximum(p, 0.0)


# ----------------------------------------------------------------------------------
# categorical sampling and decoding
# ----------------------------------------------------------------------------------
def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


class _Categorical:
    """Exact i.i.d. sampling from a fixed finite distribution (a probability table).

    Two exact methods, chosen per call by cost:

    * few categories compared to shots (K <= T / 4): multinomial counts of all K
      categories (O(K) binomial draws), each index repeated by its count, then a
      shuffle (O(T));
    * otherwise sorted uniforms from normalised cumulative exponential spacings
      (their exact joint law, O(T) without a sort), so ``searchsorted`` walks the
      cumulative table in order (cache friendly), then a shuffle.  The search runs
      in chunks of :data:`_CHUNK` so that temporaries stay small and are reused.

    Indices are int32 (int64 for tables of 2^31 entries or more).
    """

    def __init__(self, p: np.ndarray) -> None:
        total = float(p.sum())
        self.p = p / total
        self.cdf = np.cumsum(self.p)
        self.K = p.size
        self.dtype = np.int32 if self.K < 2**31 else np.int64

    def sample(self, shots: int, rng: np.random.Generator) -> np.ndarray:
        if 4 * self.K <= shots:
            counts = rng.multinomial(shots, self.p)
            idx = np.repeat(np.arange(self.K, dtype=self.dtype), counts)
        else:
            e = rng.standard_exponential(shots + 1)
            np.cumsum(e, out=e)
            e *= self.cdf[-1] / e[-1]
            idx = np.empty(shots, dtype=self.dtype)
            top = self.K - 1
            for lo in range(0, shots, _CHUNK):
                hi = min(shots, lo + _CHUNK)
                # the minimum guards the top end against rounding (u == cdf[-1])
                idx[lo:hi] = np.minimum(np.searchsorted(self.cdf, e[lo:hi], side="right"), top)
        rng.shuffle(idx)
        return idx


_LUT_CACHE: dict[int, np.ndarray] = {}


def _lut(base: int) -> np.ndarray:
    """uint32 (base^4,): the 4 base-``base`` digits of each value packed as bytes,
    most significant digit in the lowest-address byte."""
    if base not in _LUT_CACHE:
        vals = np.arange(base**4)
        digits = np.stack([(vals // base ** (3 - j)) % base for j in range(4)], axis=1).astype(np.uint8)
        _LUT_CACHE[base] = np.ascontiguousarray(digits).view(np.uint32).reshape(-1)
    return _LUT_CACHE[base]


def _decode_digits(idx: np.ndarray, n: int, base: int) -> np.ndarray:
    """uint8 (T, n): the base-``base`` digits of ``idx``, wire 0 most significant."""
    T = idx.shape[0]
    words = -(-n // 4)
    pad = 4 * words - n
    lut = _lut(base)
    chunk_div = base**4
    out = np.empty((T, words), dtype=np.uint32)
    rest = idx.astype(np.int32 if base**n < 2**31 else np.int64, copy=True)
    for w in range(words - 1, -1, -1):
        rest, digit = np.divmod(rest, chunk_div)
        out[:, w] = lut[digit]
    return np.ascontiguousarray(out.view(np.uint8).reshape(T, 4 * words)[:, pad:])


# ----------------------------------------------------------------------------------
# shadow tree sampler
# ----------------------------------------------------------------------------------
#: per class d = 2*basis + bit: child = alpha * (block 0) + beta * (block 1) (statevector),
#: i.e. the row V[d] = (alpha, beta).
_ALPHA = _V[:, 0].copy()
_BETA = _V[:, 1].copy()
#: X/Y children without the common 1/sqrt2: a0 + beta2 * a1
_BETA2 = np.sqrt(2.0) * _BETA


def _split_counts(counts: np.ndarray, ev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(B,) shot counts and (B, 3) expectations of X, Y, Z on the next wire ->
    (B, 6) counts per class 2*basis + bit."""
    B = counts.shape[0]
    c = np.empty((B, 6), dtype=np.int64)
    cx = rng.binomial(counts, 1.0 / 3.0)
    cy = rng.binomial(counts - cx, 0.5)
    cz = counts - cx - cy
    p0 = np.clip(0.5 * (1.0 + ev), 0.0, 1.0)
    for b, cb in enumerate((cx, cy, cz)):
        k0 = rng.binomial(cb, p0[:, b])
        c[:, 2 * b] = k0
        c[:, 2 * b + 1] = cb - k0
    return c


#: smallest chunk of children (complex numbers) the tree builds, so that deep levels
#: with an exhausted allowance are not cut into needlessly many pieces
_MIN_CHUNK = 1 << 15


class _Tree:
    """Depth-first prefix tree over wires (see the module docstring).

    Memory: a level with ``avail`` complex numbers of allowance builds its
    children in chunks of at most ``avail / 3`` (building one needs up to
    three times its size in temporaries, freed before descending) and hands
    ``avail - chunk`` to the chunk's subtree, finishing it (depth first) before
    building the next chunk.  So the arrays alive along the path stay within
    ``budget`` complex numbers plus the input state, up to two exceptions: a
    single child is never split (at the top of a very large register one child,
    half the state, may exceed the allowance), and chunks are never cut below
    :data:`_MIN_CHUNK` numbers (at most n of those extra).  When everything fits,
    a level is processed in one piece, breadth first.
    """

    def __init__(self, n: int, density: bool, rng: np.random.Generator, budget: int) -> None:
        self.n = n
        self.density = density
        self.rng = rng
        self.budget = max(int(budget), 1)
        self.leaves_b: list[np.ndarray] = []
        self.leaves_o: list[np.ndarray] = []
        self.leaves_c: list[np.ndarray] = []

    def run(self, state: np.ndarray, shots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Leaves of the tree: base-3 basis codes, bit codes (int64, wire 0 most
        significant) and shot counts, one entry per distinct (bases, bits) string."""
        zero = np.zeros(1, dtype=np.int64)
        self._descend(state[None, ...], np.array([shots], dtype=np.int64), zero, zero.copy(), 0, self.budget)
        return np.concatenate(self.leaves_b), np.concatenate(self.leaves_o), np.concatenate(self.leaves_c)

    def _marginals(self, states: np.ndarray, h: int) -> np.ndarray:
        """(B, 3) expectations of X, Y, Z on the leading wire of each (unnormalised) branch."""
        B = states.shape[0]
        if self.density:
            s = states.reshape(B, 2, h, 2, h)
            t00 = np.einsum("bii->b", s[:, 0, :, 0, :]).real
            t11 = np.einsum("bii->b", s[:, 1, :, 1, :]).real
            t01 = np.einsum("bii->b", s[:, 0, :, 1, :])
            ev = np.stack([2.0 * t01.real, -2.0 * t01.imag, t00 - t11], axis=1) / (t00 + t11)[:, None]
        else:
            s = states.reshape(B, 2, h)
            a0, a1 = s[:, 0], s[:, 1]
            c = np.vecdot(a0, a1)  # sum conj(a0) a1, without a conjugated copy
            n0 = np.vecdot(a0, a0).real
            n1 = np.vecdot(a1, a1).real
            ev = np.stack([2.0 * c.real, 2.0 * c.imag, n0 - n1], axis=1) / (n0 + n1)[:, None]
        if not np.all(np.abs(ev) <= 1.0 + 1e-6):
            raise ValueError("state is not positive semidefinite (a marginal probability lies outside [0, 1])")
        return ev

    def _children(self, states: np.ndarray, br: np.ndarray, cls: np.ndarray, h: int) -> np.ndarray:
        """Post-measurement states of the remaining wires for children (branch, class),
        Z classes first.  Unnormalised: the norm (trace) is the path probability, far
        above underflow for any path that is ever sampled; X/Y children also drop the
        common 1/sqrt2 (the marginals divide by the current norm anyway)."""
        B = states.shape[0]
        C = br.size
        nz = int(np.count_nonzero(cls >= 4))
        bz, bitz, bxy, cxy = br[:nz], cls[:nz] & 1, br[nz:], cls[nz:]
        if self.density:
            s = states.reshape(B, 2, h, 2, h)
            kids = np.empty((C, h, h), dtype=np.complex128)
            for bit in (0, 1):
                sel = np.nonzero(bitz == bit)[0]
                if sel.size:
                    kids[sel] = np.take(s[:, bit, :, bit, :], bz[sel], axis=0)
            if C > nz:
                # 2 (U rho U^dag)_{oo} = r00 + r11 + k r01 + conj(k) r10, k = 2 al conj(be)
                k = (2.0 * _ALPHA[cxy] * _BETA[cxy].conj())[:, None, None]
                x = kids[nz:]
                np.add(np.take(s[:, 0, :, 0, :], bxy, axis=0), np.take(s[:, 1, :, 1, :], bxy, axis=0), out=x)
                x += k * np.take(s[:, 0, :, 1, :], bxy, axis=0)
                x += k.conj() * np.take(s[:, 1, :, 0, :], bxy, axis=0)
            return kids
        rows = states.reshape(B * 2, h)  # row 2b: block a0 of branch b, row 2b + 1: a1
        kids = np.empty((C, h), dtype=np.complex128)
        np.take(rows, 2 * bz + bitz, axis=0, out=kids[:nz])
        if C > nz:
            x = kids[nz:]
            np.take(rows, 2 * bxy, axis=0, out=x)
            other = np.take(rows, 2 * bxy + 1, axis=0)
            other *= _BETA2[cxy][:, None]
            x += other
        return kids

    def _descend(self, states: np.ndarray, counts: np.ndarray, bcode: np.ndarray, ocode: np.ndarray, q: int, avail: int) -> None:
        m = self.n - q  # wires left, this one included
        h = 1 << (m - 1)
        ev = self._marginals(states, h)
        cc = _split_counts(counts, ev, self.rng)
        br, cls = np.nonzero(cc)  # children, grouped by branch (row-major order)
        if m > 1:
            zfirst = np.argsort(cls < 4, kind="stable")  # Z children first (plain gathers)
            br, cls = br[zfirst], cls[zfirst]
        ccount = cc[br, cls]
        nb = bcode[br] * 3 + (cls >> 1)
        no = ocode[br] * 2 + (cls & 1)
        if m == 1:
            self.leaves_b.append(nb)
            self.leaves_o.append(no)
            self.leaves_c.append(ccount)
            return
        child_size = h * h if self.density else h
        per_chunk = max(1, max(avail // 3, _MIN_CHUNK) // child_size)
        for lo in range(0, br.size, per_chunk):
            hi = min(br.size, lo + per_chunk)
            kids = self._children(states, br[lo:hi], cls[lo:hi], h)
            self._descend(kids, ccount[lo:hi], nb[lo:hi], no[lo:hi], q + 1, avail - kids.size)
            del kids


# ----------------------------------------------------------------------------------
# optional worker threads for large table draws
# ----------------------------------------------------------------------------------
_THREADS = 1
#: table draws of at least this many shots are split over the worker threads
PARALLEL_MIN_SHOTS = 1 << 18


def set_threads(k: int) -> int:
    """Use ``k`` worker threads for large table draws (>= :data:`PARALLEL_MIN_SHOTS`
    shots); returns the previous setting.  Default 1 (opt-in, like
    ``qsense.estimators.kernels.set_threads``).

    The shots are split into k contiguous parts, each drawn with its own child
    generator (``rng.spawn``), so records stay exactly i.i.d. and reproducible
    for a given seed *and* thread count (a different k gives different, equally
    valid, records).  NumPy releases the GIL in the heavy steps (random fills,
    search, shuffle, decode), so two threads on two cores give about 1.5-1.9x.
    """
    global _THREADS
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"threads must be a positive integer; got {k!r}")
    previous, _THREADS = _THREADS, int(k)
    return previous


def _child_rngs(rng: np.random.Generator, k: int) -> list[np.random.Generator]:
    try:
        return list(rng.spawn(k))
    except (AttributeError, TypeError, ValueError):  # a generator without a seed sequence
        return [np.random.default_rng(int(s)) for s in rng.integers(0, 2**63, size=k)]


def _run_split(fill: Any, shots: int, rng: np.random.Generator) -> None:
    """Call ``fill(lo, hi, generator)`` over [0, shots), split over the worker threads
    when the draw is large enough, else in one piece with ``rng`` itself."""
    k = _THREADS if shots >= PARALLEL_MIN_SHOTS else 1
    if k <= 1:
        fill(0, shots, rng)
        return
    from concurrent.futures import ThreadPoolExecutor

    bounds = [shots * i // k for i in range(k + 1)]
    rngs = _child_rngs(rng, k)
    with ThreadPoolExecutor(max_workers=k, thread_name_prefix="sims-sampler") as pool:
        futures = [pool.submit(fill, bounds[i], bounds[i + 1], rngs[i]) for i in range(k)]
        for f in futures:
            f.result()


# ----------------------------------------------------------------------------------
# public samplers
# ----------------------------------------------------------------------------------
def _timestamps(t: Any, shots: int) -> np.ndarray | None:
    if t is None:
        return None
    arr = np.asarray(t, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(shots, float(arr))
    return arr


class ShadowSampler:
    """Repeated exact random-Pauli shadow sampling of one fixed state.

    Holds the validated state and, once enough shots have been asked for
    (6^n <= ``TABLE_SHOTS_FACTOR`` x shots so far, and 6^n <=
    :data:`TABLE_MAX_CLASSES`), the 6^n class table and its cumulative sums, so
    that a stream of small batches costs O(shots) each.  Otherwise each call
    runs the prefix tree: for a statevector the compiled one of
    :mod:`qsense.sims.pure_tree` (two state-sized float64 planes and work
    buffers beyond the state, kept between calls; ``budget`` does not apply),
    for a density matrix the NumPy tree bounded by ``budget`` complex numbers.
    ``method`` forces ``"table"`` or ``"tree"``.
    """

    def __init__(self, state: Any, *, method: str = "auto", budget: int = TREE_BUDGET) -> None:
        if method not in ("auto", "table", "tree"):
            raise ValueError(f"method must be 'auto', 'table' or 'tree'; got {method!r}")
        self.state, self.density, self.n = as_state(state)
        if method == "table" and 6**self.n > TABLE_MAX_CLASSES:
            raise ValueError(f"the table method holds 6^n classes; n={self.n} is above its limit of 8 qubits")
        self.method = method
        self.budget = int(budget)
        self._table: _Categorical | None = None
        self._pure: Any = None  # the compiled statevector tree (qsense.sims.pure_tree), built on first use
        self._asked = 0

    def _use_table(self, shots: int) -> bool:
        if self.method != "auto":
            return self.method == "table"
        if self._table is not None:
            return True
        K = 6**self.n
        return K <= TABLE_MAX_CLASSES and K <= TABLE_SHOTS_FACTOR * (self._asked + shots)

    def sample_arrays(self, shots: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (shots, n) bases and outcomes."""
        shots = int(shots)
        if shots < 0:
            raise ValueError(f"shots must be non-negative; got {shots}")
        n = self.n
        if shots == 0:
            return np.zeros((0, n), np.uint8), np.zeros((0, n), np.uint8)
        use_table = self._use_table(shots)
        self._asked += shots
        if use_table:
            if self._table is None:
                self._table = _Categorical(shadow_probabilities(self.state))
            table = self._table
            bases = np.empty((shots, n), np.uint8)
            outcomes = np.empty((shots, n), np.uint8)

            def fill(lo: int, hi: int, g: np.random.Generator) -> None:
                idx = table.sample(hi - lo, g)
                for a in range(0, hi - lo, _CHUNK):
                    b = min(hi - lo, a + _CHUNK)
                    d = _decode_digits(idx[a:b], n, 6)
                    np.right_shift(d, 1, out=bases[lo + a : lo + b])
                    np.bitwise_and(d, 1, out=outcomes[lo + a : lo + b])

            _run_split(fill, shots, rng)
            return bases, outcomes
        if not self.density:
            if self._pure is None:
                from .pure_tree import PureShadowTree  # compiled (numba) on first use

                self._pure = PureShadowTree(self.state)
            return self._pure.sample(shots, rng)
        tree = _Tree(n, self.density, rng, self.budget)
        bcode, ocode, counts = tree.run(self.state, shots)
        order = rng.permutation(shots)
        bcode = np.repeat(bcode, counts)[order]
        ocode = np.repeat(ocode, counts)[order]
        return _decode_digits(bcode, n, 3), _decode_digits(ocode, n, 2)

    def sample(self, shots: int, seed: Any = None, *, wires: Sequence | None = None, source: str = "", seq: int = 0, t: Any = None) -> ShadowBatch:
        """A :class:`qsense.ShadowBatch` of ``shots`` snapshots."""
        rng = _rng(seed)
        bases, outcomes = self.sample_arrays(shots, rng)
        return ShadowBatch(bases, outcomes, wires=wires, source=source, seq=seq, t=_timestamps(t, shots))


class BellSampler:
    """Repeated exact two-copy Bell sampling of copy A (x) copy B (B = A if omitted).

    Builds the 4^n code distribution once (see the module docstring), so each
    batch costs O(shots); n <= :data:`MAX_BELL_QUBITS`.
    """

    def __init__(self, state_a: Any, state_b: Any = None) -> None:
        _, _, n = as_state(state_a)
        if state_b is not None:
            _, _, nb = as_state(state_b)
            if nb != n:
                raise ValueError(f"the two copies must have the same number of qubits; got {n} and {nb}")
        if n > MAX_BELL_QUBITS:
            raise ValueError(
                f"Bell sampling builds the 4^n-outcome distribution; n={n} exceeds the limit of {MAX_BELL_QUBITS} qubits"
            )
        self.n = n
        self._table = _Categorical(bell_probabilities(state_a, state_b))

    def sample_codes(self, shots: int, rng: np.random.Generator) -> np.ndarray:
        """uint8 (shots, n) Bell codes."""
        shots = int(shots)
        if shots < 0:
            raise ValueError(f"shots must be non-negative; got {shots}")
        if shots == 0:
            return np.zeros((0, self.n), np.uint8)
        table, n = self._table, self.n
        out = np.empty((shots, n), np.uint8)

        def fill(lo: int, hi: int, g: np.random.Generator) -> None:
            idx = table.sample(hi - lo, g)
            for a in range(0, hi - lo, _CHUNK):
                b = min(hi - lo, a + _CHUNK)
                out[lo + a : lo + b] = _decode_digits(idx[a:b], n, 4)

        _run_split(fill, shots, rng)
        return out

    def sample(self, shots: int, seed: Any = None, *, wires: Sequence | None = None, source: str = "", seq: int = 0, t: Any = None, wait: Any = None) -> BellBatch:
        """A :class:`qsense.BellBatch` of ``shots`` two-copy shots."""
        codes = self.sample_codes(shots, _rng(seed))
        w = None if wait is None else np.broadcast_to(np.asarray(wait, dtype=np.float64), (int(shots),))
        return BellBatch(codes, wires=wires, source=source, seq=seq, t=_timestamps(t, shots), wait=w)


def sample_shadows(state: Any, shots: int, seed: Any = None, *, wires: Sequence | None = None, source: str = "", seq: int = 0) -> ShadowBatch:
    """Exact random-Pauli classical-shadow snapshots of ``state``.

    Parameters
    ----------
    state:
        statevector (2^n,) or density matrix (2^n, 2^n), wire 0 most significant.
    shots:
        number of snapshots T.
    seed:
        int, ``None`` or a ``np.random.Generator`` (used in place, so successive
        calls with one generator give independent batches).
    wires, source, seq:
        metadata for the returned :class:`qsense.ShadowBatch`.

    Each snapshot measures every qubit in an independent uniformly random basis
    (0 = X, 1 = Y, 2 = Z) and records bit 0 for eigenvalue +1.  For repeated
    batches of the same state use :class:`ShadowSampler`, which caches its tables.
    """
    return ShadowSampler(state).sample(shots, seed, wires=wires, source=source, seq=seq)


def sample_bell(state: Any, shots: int, seed: Any = None, *, wires: Sequence | None = None, source: str = "", seq: int = 0) -> BellBatch:
    """Exact two-copy Bell measurements on two copies of ``state``.

    Per qubit pair i: CNOT(A_i -> B_i), H(A_i), bits (a, b), code 2a + b
    (0 = Phi+, 1 = Psi+, 2 = Phi-, 3 = Psi-).  n <= :data:`MAX_BELL_QUBITS`.
    """
    return BellSampler(state).sample(shots, seed, wires=wires, source=source, seq=seq)


def sample_bell_pair(state_a: Any, state_b: Any, shots: int, seed: Any = None, *, wires: Sequence | None = None, source: str = "", seq: int = 0, t: Any = None, wait: Any = None) -> BellBatch:
    """Exact two-copy Bell measurements on copy A (x) copy B of two different states
    (for example a decohered first copy and a fresh second copy).

    ``wait`` (seconds, scalar or (T,)) is stored in ``BellBatch.wait``.  Cost
    O(n 4^n) to build the distribution, then O(shots); n <= :data:`MAX_BELL_QUBITS`.
    """
    return BellSampler(state_a, state_b).sample(shots, seed, wires=wires, source=source, seq=seq, t=t, wait=wait)
