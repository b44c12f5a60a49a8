"""What the circuit-to-records drivers share: options, parameters, pacing and the stream loop.

:class:`RecordStreamDriver` is the common base of
:class:`qsense.drivers.pennylane_device.PennyLaneDriver` and
:class:`qsense.drivers.qiskit_device.QiskitDriver`.  A subclass implements one
method, ``_make_batch(args, kwargs, shots, seq, t)`` (it runs in a worker thread
and returns one :class:`qsense.ShadowBatch` or :class:`qsense.BellBatch`); the
base class checks the shared options, holds the circuit arguments (fixed, changed
with :meth:`~RecordStreamDriver.set_params`, or a function of stream time),
paces the stream, numbers the batches, counts records and copies, and supports
``async for``, :meth:`~RecordStreamDriver.collect`, the synchronous
:meth:`~RecordStreamDriver.sample` and cancellation.

It also holds the measurement bookkeeping both device modes need: the
state-mode sampler cache (:meth:`RecordStreamDriver._state_batch`) and Pauli
bases grouped by setting (:func:`draw_settings` for random ones,
:func:`group_settings` for chosen ones), so that a device runs one circuit per
distinct setting and the rows go back in measurement order.

Chosen bases (the ``bases=`` option, shadows only): a fixed uint8 (B, n) array
cycled row by row, or a basis policy -- anything with ``next_bases(count)``,
e.g. :class:`qsense.acquisition.scheduler.DerandomizedBasisPolicy`; a policy with
``update(batch)`` gets every batch before it is yielded, so the next batch's
bases follow the data measured so far.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from qsense.records import BellBatch, ShadowBatch
from qsense.sims.designed import sample_in_bases
from qsense.sims.samplers import BellSampler, ShadowSampler

__all__ = [
    "KINDS", "MODES", "RecordStreamDriver", "Settings", "check_bases", "draw_settings", "freeze", "group_settings",
    "normalize_params",
]

log = logging.getLogger(__name__)

MODES = ("state", "device")
KINDS = ("shadow", "bell")


def freeze(value: Any) -> Any:
    """A hashable, value-comparable key for circuit arguments (arrays by value)."""
    if isinstance(value, dict):
        return tuple(sorted((_key_id(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    try:
        a = np.asarray(value)
    except Exception:  # pragma: no cover - exotic objects compare by identity
        return ("id", id(value))
    if a.dtype == object:
        return ("id", id(value))
    return (a.dtype.str, a.shape, a.tobytes())


def _key_id(k: Any) -> tuple:
    # dict keys may be objects (Qiskit Parameters) that do not sort: their name orders
    # the key, and their identity tells two parameters of the same name apart
    return (str(k), type(k).__name__, k if isinstance(k, (str, int)) else id(k))


def normalize_params(p: Any) -> tuple[tuple, dict]:
    """Circuit arguments as ``(args, kwargs)``: a dict is keyword arguments, a tuple
    or list positional arguments, anything else a single positional argument."""
    if isinstance(p, dict):
        return (), dict(p)
    if isinstance(p, (tuple, list)):
        return tuple(p), {}
    return (p,), {}


def _is_count(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, np.integer))


@dataclass(frozen=True)
class Settings:
    """The Pauli bases of one batch, grouped by distinct setting.

    ``bases`` uint8 (shots, n) in draw (measurement) order; ``settings`` (S, n) the distinct
    rows; ``counts`` (S,) how many shots drew each; ``order`` the permutation that
    sorts shots by setting (``outcomes[order] = grouped`` puts rows measured
    setting by setting back in draw order).
    """

    bases: np.ndarray
    settings: np.ndarray
    counts: np.ndarray
    order: np.ndarray

    def ungroup(self, grouped: np.ndarray) -> np.ndarray:
        """Outcomes (shots, n) in draw order from rows concatenated setting by setting."""
        out = np.empty_like(grouped)
        out[self.order] = grouped
        return out


def draw_settings(rng: np.random.Generator, shots: int, n: int) -> Settings:
    """Draw every shot's bases i.i.d. uniform over X, Y, Z and group them by setting.

    Running each setting with exactly as many shots as drew it and ungrouping is
    exactly i.i.d. random-Pauli shadow sampling.
    """
    return group_settings(rng.integers(0, 3, size=(shots, n), dtype=np.uint8))


def group_settings(bases: np.ndarray) -> Settings:
    """Group given uint8 (shots, n) bases by distinct setting (one circuit each)."""
    settings, inverse = np.unique(bases, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.bincount(inverse, minlength=len(settings))
    order = np.argsort(inverse, kind="stable")
    return Settings(bases, settings, counts, order)


def check_bases(bases: Any, n: int | None, what: str = "bases", error: type[ValueError] = ValueError) -> np.ndarray:
    """``bases`` as uint8 (rows, n) after checking shape and values (``n=None``: any width)."""
    try:
        a = np.asarray(bases)
    except (TypeError, ValueError):  # ragged rows, objects numpy cannot read
        raise error(f"{what} must be an integer array of shape (rows, n); got {type(bases).__name__}") from None
    if a.ndim != 2 or (n is not None and a.shape[1] != n):
        want = "(rows, n)" if n is None else f"(rows, {n}) for the {n}-qubit register"
        raise error(f"{what} must have shape {want}; got {a.shape}")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise error(f"{what} must hold integers 0 (X), 1 (Y) or 2 (Z); got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() > 2):
        raise error(f"{what} must hold 0 (X), 1 (Y) or 2 (Z); got values from {a.min()} to {a.max()}")
    return a.astype(np.uint8)


class RecordStreamDriver:
    """Base of the circuit drivers: shared options, parameters, pacing and streaming.

    Parameters (keyword-only, as the subclasses document them)
    ----------------------------------------------------------
    kind, mode:
        ``"shadow"`` or ``"bell"``; ``"state"`` or ``"device"``.
    params:
        Initial circuit arguments (normalised by :func:`normalize_params`) or a
        callable ``params(t)`` evaluated at the start of every batch.
    batch_size, total, rate, realtime:
        Records per batch; records in all (``None``: endless); records per second
        (``None``: as fast as possible); whether to sleep to honour ``rate``.
    seed:
        An int, ``None`` or a ``numpy.random.Generator`` for the driver's own
        randomness (state-mode samplers, random bases).
    source, seq0, time_origin:
        Record metadata: source name, first ``seq``, offset added to timestamps.
    bases:
        Shadows only: ``None`` (every shot's bases uniformly random), a fixed
        uint8 (B, n) array (0 = X, 1 = Y, 2 = Z) whose rows are measured in
        turn and cycled, or a policy with ``next_bases(count)`` (and optionally
        ``update(batch)``, called with every batch before it is yielded).
    """

    #: the ValueError subclass bad input raises (a subclass may name its own)
    error: type[ValueError] = ValueError

    def __init__(
        self,
        *,
        kind: str,
        mode: str,
        params: Any,
        batch_size: int,
        total: int | None,
        rate: float | None,
        realtime: bool,
        seed: Any,
        source: str,
        seq0: int,
        time_origin: float,
        bases: Any = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        if not _is_count(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        if total is not None and (not _is_count(total) or total < 0):
            raise ValueError(f"total must be a non-negative integer or None; got {total!r}")
        if rate is not None:
            try:
                ok = bool(np.isfinite(rate) and rate > 0)
            except TypeError:
                ok = False
            if not ok:
                raise ValueError(f"rate must be a positive number of records per second or None; got {rate!r}")
        if not _is_count(seq0) or seq0 < 0:
            raise ValueError(f"seq0 must be a non-negative integer; got {seq0!r}")
        self.kind = kind
        self.mode = mode
        self.batch_size = int(batch_size)
        self.total = None if total is None else int(total)
        self.rate = None if rate is None else float(rate)
        self.realtime = bool(realtime)
        self.source = str(source)
        self.seq = int(seq0)
        self.time_origin = float(time_origin)
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self._params: Any = params if callable(params) else normalize_params(params)
        self._cache_key: Any = None
        self._sampler: ShadowSampler | BellSampler | None = None
        self._stop = False
        self.produced = 0
        self._bases: Any = None  # None, a checked (B, n) array, or a policy
        self._bases_pos = 0  # next row of a fixed array
        if bases is not None:
            if kind != "shadow":
                raise ValueError("bases= chooses single-copy shadow bases; Bell shots (kind='bell') have none")
            if callable(getattr(bases, "next_bases", None)):
                self._bases = bases
            else:
                self._bases = check_bases(bases, None)
                if len(self._bases) == 0:
                    raise ValueError("bases must have at least one row")

    # -- what a subclass provides --------------------------------------------------------
    def _make_batch(self, args: tuple, kwargs: dict, shots: int, seq: int, t: np.ndarray) -> ShadowBatch | BellBatch:
        raise NotImplementedError

    @property
    def copies(self) -> int:
        """Copies of the state measured so far: one per snapshot, two per Bell shot."""
        return self.produced * (2 if self.kind == "bell" else 1)

    # -- parameters -----------------------------------------------------------------------
    def set_params(self, *args: Any, **kwargs: Any) -> None:
        """Change the circuit arguments; takes effect from the next batch.

        ``set_params(0.3, w)`` sets positional arguments, ``set_params(theta=0.3)``
        keyword arguments, and ``set_params(fn)`` with a single callable makes
        them a function of stream time.
        """
        if len(args) == 1 and not kwargs and callable(args[0]):
            self._params = args[0]
        else:
            self._params = (tuple(args), dict(kwargs))
        log.debug("%s: parameters changed", self.source)

    def stop(self) -> None:
        """Finish the stream after the batch being produced (a clean end, no exception)."""
        self._stop = True

    def _args_at(self, t: float) -> tuple[tuple, dict]:
        p = self._params
        return normalize_params(p(t)) if callable(p) else p

    # -- state mode: exact samplers cached per parameter setting ---------------------------
    @property
    def wires(self) -> tuple | None:
        """The register's labels, wire 0 first (subclasses know them)."""
        raise NotImplementedError

    def _state_batch(self, key: Any, compute_state: Callable[[], np.ndarray], shots: int, seq: int,
                     t: np.ndarray) -> ShadowBatch | BellBatch:
        """Sample ``shots`` records from the state of this setting, computed once per
        ``key`` (``compute_state`` may fix :attr:`wires`, which label the records)."""
        if self._sampler is None or key != self._cache_key:
            st = compute_state()
            self._sampler = ShadowSampler(st) if self.kind == "shadow" else BellSampler(st)
            self._cache_key = key
            log.debug("%s: new %s state for seq %d", self.source, "density" if np.ndim(st) == 2 else "pure", seq)
        chosen = None if self.kind != "shadow" else self._chosen_bases(shots, self._sampler.n)
        if chosen is not None:
            b = sample_in_bases(self._sampler.state, chosen, self._rng)
            return ShadowBatch(b.bases, b.outcomes, wires=self.wires, source=self.source, seq=seq, t=t)
        return self._sampler.sample(shots, self._rng, wires=self.wires, source=self.source, seq=seq, t=t)

    # -- chosen bases ------------------------------------------------------------------------
    @property
    def basis_policy(self) -> Any:
        """The policy given as ``bases=`` (``None`` for a fixed array or random bases)."""
        return None if self._bases is None or isinstance(self._bases, np.ndarray) else self._bases

    def _check_bases_width(self, n: int) -> None:
        """Refuse chosen bases (or a policy) of another width than the ``n``-qubit register."""
        b = self._bases
        if isinstance(b, np.ndarray):
            if b.shape[1] != n:
                raise self.error(f"bases must have shape (rows, {n}) for the {n}-qubit register; got {b.shape}")
        elif b is not None:
            m = getattr(b, "n", None)
            if _is_count(m) and m != n:
                raise self.error(f"the basis policy {type(b).__name__} is for {m} qubits; the register has {n}")

    def _chosen_bases(self, shots: int, n: int) -> np.ndarray | None:
        """The next ``shots`` chosen bases uint8 (shots, n), or ``None`` for random ones."""
        b = self._bases
        if b is None:
            return None
        self._check_bases_width(n)
        if isinstance(b, np.ndarray):
            rows = (self._bases_pos + np.arange(shots)) % len(b)
            self._bases_pos = int((self._bases_pos + shots) % len(b))
            return b[rows]
        what = f"the basis policy {type(b).__name__}'s next_bases({shots})"
        try:
            out = b.next_bases(shots)
        except ValueError as exc:
            raise self.error(f"{what} failed: {exc}") from None
        out = check_bases(out, n, what, self.error)
        if len(out) != shots:
            raise self.error(f"{what} must return {shots} rows; got {len(out)}")
        return out

    def _settings(self, shots: int, n: int) -> Settings:
        """This batch's bases grouped by setting: chosen ones if ``bases=`` was given, else random."""
        chosen = self._chosen_bases(shots, n)
        return draw_settings(self._rng, shots, n) if chosen is None else group_settings(chosen)

    def _feed_back(self, batch: ShadowBatch | BellBatch) -> None:
        """Hand a produced batch to the basis policy (before anyone else sees it)."""
        update = getattr(self.basis_policy, "update", None)
        if callable(update):
            update(batch)

    # -- streaming ---------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[ShadowBatch | BellBatch]:
        return self.stream()

    async def stream(self) -> AsyncIterator[ShadowBatch | BellBatch]:
        """Yield batches until ``total`` records were produced or :meth:`stop` is called.

        Device work runs in a worker thread; cancelling the consumer or leaving the
        loop ends the stream at once (a call in flight finishes in its thread and
        is discarded).
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        virtual = 0.0  # stream time when the rate is honoured without sleeping
        self._stop = False
        log.info(
            "%s: streaming %s batches (%s mode, batch %d, total %s, rate %s/s)",
            self.source, self.kind, self.mode, self.batch_size, self.total, self.rate,
        )
        try:
            while not self._stop and (self.total is None or self.produced < self.total):
                shots = self.batch_size if self.total is None else min(self.batch_size, self.total - self.produced)
                if self.rate is not None:
                    now = virtual if not self.realtime else self.produced / self.rate
                    t = self.time_origin + (self.produced + np.arange(shots)) / self.rate
                else:
                    now = loop.time() - start
                    t = np.full(shots, self.time_origin + now)
                args, kwargs = self._args_at(now)
                batch = await asyncio.to_thread(self._make_batch, args, kwargs, shots, self.seq, t)
                self.seq += 1
                self.produced += shots
                self._feed_back(batch)
                log.debug("%s: batch seq=%d T=%d", self.source, batch.seq, batch.T)
                yield batch
                if self.rate is not None:
                    if self.realtime:
                        delay = start + self.produced / self.rate - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    else:
                        virtual = self.produced / self.rate
        finally:
            log.info("%s: stream ended after %d records (next seq %d)", self.source, self.produced, self.seq)

    def sample(self, shots: int, *args: Any, **kwargs: Any) -> ShadowBatch | BellBatch:
        """One batch of ``shots`` records, synchronously (no event loop needed).

        ``args``/``kwargs`` are the circuit's arguments for this batch (default:
        the driver's ``params``); numbering (``seq``) and ``produced`` advance as
        in the stream.
        """
        if not _is_count(shots) or shots < 1:
            raise ValueError(f"shots must be a positive integer; got {shots!r}")
        if not args and not kwargs:
            args, kwargs = self._args_at(0.0)
        t = self.time_origin + np.zeros(int(shots))
        batch = self._make_batch(tuple(args), dict(kwargs), int(shots), self.seq, t)
        self.seq += 1
        self.produced += int(shots)
        self._feed_back(batch)
        return batch

    async def collect(self, batches: int | None = None) -> list[ShadowBatch | BellBatch]:
        """Run the stream and return its batches (at most ``batches`` of them)."""
        out: list = []
        stream = self.stream()
        try:
            async for b in stream:
                out.append(b)
                if batches is not None and len(out) >= batches:
                    break
        finally:
            await stream.aclose()
        return out
