"""Run a compiled per-shot sampler kernel over runs of shots on every core, reproducibly.

The single-excitation kernels (:mod:`~qsense.sims.telescope.kernels`) read one
float64 uniform per shot and qubit and release the GIL.  :func:`run_in_chunks`
cuts the shots into runs of about 2 MiB of uniforms, draws each run's uniforms
from the caller's generator *in order, in the calling thread*, and hands the
kernel calls to the shared worker pool of :func:`qsense.estimators.kernels.set_threads`
while the next run's uniforms are drawn.  The uniforms are therefore the same
stream, in the same order, whatever the number of threads — a seeded sampler
gives bit-identical records on one core or eight — and drawing them (about a
quarter of a shot's cost at 64 telescopes) overlaps the kernels.

Small jobs (fewer than two runs) stay in the calling thread: a per-copy caller
never pays a thread hand-off.  :func:`map_runs` does the same for work that
draws no random numbers (the per-copy phase rotations).
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np

__all__ = ["UNIFORM_RUN", "map_runs", "run_in_chunks"]

#: uniforms drawn per kernel call (float64: 2 MiB, cache-sized)
UNIFORM_RUN = 1 << 18


def run_in_chunks(
    T: int, M: int, rng: np.random.Generator, kernel: Callable[[int, int, np.ndarray], int]
) -> int:
    """Call ``kernel(lo, hi, u)`` for consecutive runs ``[lo, hi)`` of ``T`` shots, with
    ``u`` float64 ``(hi - lo, M)`` the next uniforms of ``rng``; returns the sum of the
    kernel's return values.

    ``kernel`` must write only rows ``lo:hi`` of its outputs and must not call
    Python objects shared with other runs (it runs in worker threads).  The
    uniforms are drawn exactly as ``rng.random((T, M))`` would draw them.
    """
    from qsense.estimators.kernels import get_threads

    step = max(1, UNIFORM_RUN // max(M, 1))
    pool = _pool_for(T, step)
    if pool is None:
        u = np.empty((min(T, step), M))
        total = 0
        for lo in range(0, T, step):
            hi = min(T, lo + step)
            uu = u[: hi - lo]
            rng.random(out=uu)
            total += int(kernel(lo, hi, uu))
        return total
    # one kernel queued beyond the pool's threads keeps every core busy while this
    # thread draws; threads + 2 buffers: those in flight and the one being filled
    depth = get_threads() + 1
    bufs = [np.empty((step, M)) for _ in range(depth + 1)]
    pending: deque = deque()
    total = 0
    try:
        for i, lo in enumerate(range(0, T, step)):
            while len(pending) >= depth:  # the oldest's buffer is the one about to be refilled
                total += int(pending.popleft().result())
            hi = min(T, lo + step)
            uu = bufs[i % len(bufs)][: hi - lo]
            rng.random(out=uu)
            pending.append(pool.submit(kernel, lo, hi, uu))
        while pending:
            total += int(pending.popleft().result())
    finally:
        _settle(pending)
    return total


def map_runs(T: int, run: int, fn: Callable[[int, int], None]) -> None:
    """Call ``fn(lo, hi)`` for consecutive runs of ``run`` rows of ``[0, T)``, on the
    worker pool when there are at least two runs (``fn`` writes only rows ``lo:hi``)."""
    run = max(1, int(run))
    pool = _pool_for(T, run)
    if pool is None:
        for lo in range(0, T, run):
            fn(lo, min(T, lo + run))
        return
    futures = [pool.submit(fn, lo, min(T, lo + run)) for lo in range(0, T, run)]
    try:
        for f in futures:
            f.result()
    finally:
        _settle(futures)


def _pool_for(T: int, run: int):
    """The shared worker pool when ``T`` rows make at least two runs of ``run`` and more
    than one thread is set, else None (the caller's thread does the work)."""
    from qsense.estimators.kernels import _get_pool, get_threads

    return _get_pool() if get_threads() > 1 and T > run else None


def _settle(futures) -> None:
    """Cancel the futures not yet started and wait out those running (after an
    exception: no run writes into the caller's arrays once we return)."""
    for f in futures:
        f.cancel()
    for f in futures:
        if not f.cancelled():
            f.exception()
