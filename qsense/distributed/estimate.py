"""``qsense.distributed.estimate``: an archive reduced to estimates by one task per partition and a tree of merges.

The rule (what makes a median-of-means estimate well defined)
-------------------------------------------------------------
1. The archive is cut into partitions in position order (:func:`~qsense.distributed.partitions.plan`:
   runs of whole row groups of one sealed segment up to ``partition_bytes`` (at least one),
   or one open segment).  The cut depends on the archive and ``partition_bytes`` only.
2. Each partition is folded, in position order, into a fresh copy of every
   estimator: median-of-means blocks are formed *within* a partition.
3. The partial states are merged by a fixed balanced binary tree over the
   partitions in position order: level by level, partition pairs (0, 1),
   (2, 3), ... are merged (left first); an odd last one is
   carried up unchanged.  ``merge(other)`` treats other's data as coming after.

The result is a function of the data and the rule, never of the workers,
their number or the order in which tasks finish.  ``client=None`` runs the
very same tasks and the very same tree in this process: that is the single
process using the same rule, and the cluster's states equal its states bit
for bit.  For estimators whose merge is exact (``groups=1`` shadow
estimates, purities, visibilities: integer statistics) both also equal a
plain ``for b in archive.batches(): est.update(b)``; Bell estimators merge
float sums (equal to ~1e-15 relative).

What moves: partitions are archive references (a path, a segment id, a
row-group range); estimator templates are pickled empty estimators; results
are ``to_bytes()`` states.  Workers read the files themselves, so a shared
filesystem (the same archive path on every worker) is assumed.  Dask is
imported inside the functions that need it: ``import qsense`` never needs it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .partitions import DEFAULT_PARTITION_BYTES, Partition, plan
from .tasks import Partial, finish, merge_partials, pack_templates, run_partition, warm_worker

__all__ = ["WORKER_CONFIG", "DistributedError", "DistributedResult", "connect", "estimate", "local_cluster"]

log = logging.getLogger(__name__)


class DistributedError(RuntimeError):
    """A distributed run that cannot go on (no scheduler, a task failing for good): one-line message."""


@dataclass
class DistributedResult:
    """What :func:`estimate` returns."""

    #: the estimators, filled (same order as passed; the templates themselves are left empty)
    estimators: list[Any]
    #: per estimator: wire set -> estimator over that wire set's batches only
    by_wires: list[dict[tuple, Any]]
    #: per estimator: ``{"batches": n, "records": n}`` it refused (another wire set, wrong size)
    refused: list[dict[str, int]]
    #: per estimator: wire set -> batches a fresh estimator refused on those wires (a subsystem outside them, ...)
    refused_by_wires: list[dict[tuple, int]]
    #: (kind, wires) -> {"batches", "records"} of every selected batch, in order of first appearance
    groups: dict[tuple[str, tuple], dict[str, int]]
    sources: set[str]
    #: damage counters as :attr:`Archive.problems` (torn_tail, checksum, unreadable_*, missing_segment)
    problems: dict[str, int]
    partitions: list[Partition]
    #: per partition: (number, batches, records, seconds, worker)
    stats: list[tuple[int, int, int, float, str]] = field(default_factory=list)
    #: wall-clock seconds of the whole reduction (planning included)
    seconds: float = 0.0

    @property
    def batches(self) -> int:
        return sum(g["batches"] for g in self.groups.values())

    @property
    def records(self) -> int:
        return sum(g["records"] for g in self.groups.values())


def _tree(items: list[Any], merge: Callable[[Any, Any], Any]) -> Any:
    """The fixed balanced tree: adjacent pairs merged level by level, an odd last carried up."""
    while len(items) > 1:
        nxt = [merge(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
        if len(items) % 2:
            nxt.append(items[-1])
        items = nxt
    return items[0]


def _bar(total: int, progress: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="part", desc="partitions", file=sys.stderr, leave=False,
                disable=not progress or not sys.stderr.isatty())


def _probe(address: str, timeout: float) -> None:
    """Ask the scheduler at ``address`` who it is, within ``timeout`` seconds (raises on silence or refusal).

    ``distributed.Client(address, timeout=...)`` bounds the TCP connect only: a
    peer that accepts and never answers (a wrong port, a hung process) holds
    its handshake for minutes.  The probe runs in its own thread and event
    loop, so it also works from a caller that already runs one (a notebook).
    """
    import asyncio
    import threading

    from distributed.core import rpc

    async def ask() -> None:
        r = rpc(address, timeout=timeout)
        try:
            await asyncio.wait_for(r.identity(), timeout)
        finally:
            await r.close_rpc()

    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            asyncio.run(ask())
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller
            outcome.append(exc)

    th = threading.Thread(target=run, name="qsense-dask-probe", daemon=True)
    th.start()
    th.join(timeout + 2.0)
    if not outcome:
        raise TimeoutError("no reply")
    if outcome[0] is not None:
        raise outcome[0]


def connect(address: str, *, timeout: float = 10.0) -> Any:
    """A ``distributed.Client`` for the scheduler at ``address``; :class:`DistributedError` if none answers in ``timeout`` s."""
    from distributed import Client

    try:
        _probe(address, timeout)
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:  # refused, silent, malformed address
        raise DistributedError(f"no Dask scheduler answers at {address} within {timeout:g} s "
                               f"({type(exc).__name__}{': ' + str(exc).splitlines()[0] if str(exc) else ''})") from None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: The Dask settings :func:`local_cluster` starts its scheduler, nannies and workers with (each measured on a
#: 2-core machine, docs/scale-out.md "What speed to expect"); ``local_cluster(..., dask_config={...})`` overrides any.
WORKER_CONFIG: dict[str, Any] = {
    # the statistical profiler walks the task thread's stack every 10 ms under the GIL: 1.5-2.5% of a core per worker
    "distributed.worker.profile.enabled": False,
    # every event loop (scheduler, each nanny, each worker) wakes every 20 ms to time itself: ~5% of one core
    # for a 2-worker cluster, idle or busy; 1 s still catches a blocked loop (warned about after 3 s)
    "distributed.admin.tick.interval": "1s",
    # CPU/memory/network samples for the dashboard's system page, every 0.5 s in every process
    "distributed.admin.system-monitor.interval": "5s",
    # the nannies' and workers' memory checks (pause, spill, restart at 95%): 10/s -> 1/s
    "distributed.worker.memory.monitor-interval": "1s",
    # glibc's MALLOC_TRIM_THRESHOLD_ fixes its mmap threshold at 128 KiB: large NumPy temporaries then start
    # 16 bytes past a page, and copies from page-aligned Arrow planes into them ran ~6x slower (+40-60% CPU per
    # shadow update until the kernels aligned their scratch buffers; other temporaries remain); None: unset
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}


def local_cluster(n_workers: int, *, dashboard: bool = True, warm: bool = True,
                  dask_config: Mapping[str, Any] | None = None) -> tuple[Any, Any]:
    """A LocalCluster of ``n_workers`` single-threaded worker processes on 127.0.0.1 and its client: ``(cluster, client)``.

    Each worker's counting kernels get ``cores // n_workers`` threads (at least
    one: the processes, not threads inside them, share the cores; set
    ``QSENSE_THREADS`` to override), and with ``warm`` every worker loads the
    compiled kernels before this returns (:func:`~qsense.distributed.tasks.warm_worker`:
    ~2 s per fresh process, otherwise paid inside each worker's first task).

    The cluster runs with :data:`WORKER_CONFIG` (the profiler off, slower
    event-loop ticks and monitors, no ``MALLOC_TRIM_THRESHOLD_`` in the
    workers' environment); ``dask_config`` (dotted Dask keys) is applied over
    it, e.g. ``{"distributed.worker.profile.enabled": True}`` for the
    dashboard's profile page.  A ``pre-spawn-environ`` variable set to ``None``
    is kept from the workers even when this process has it.  The environment
    variables Dask's nannies put into this process's ``os.environ`` before
    spawning are taken out again once the workers run (they would reach every
    later subprocess and cluster; a worker the nanny restarts after a crash
    gets this process's environment of that moment).
    """
    import dask
    from distributed import Client, LocalCluster

    if int(n_workers) < 1:
        raise ValueError("need at least one worker")
    if dask_config is not None and not isinstance(dask_config, Mapping):
        raise ValueError(f"dask_config must be a mapping of Dask config keys, not {type(dask_config).__name__}")
    # set on each worker by a call, not through its environment: a spawned worker imports this process's
    # __main__ (and with it qsense's kernels) before Dask applies a worker's env
    threads = max(1, _cores() // int(n_workers))
    if os.environ.get("QSENSE_THREADS"):
        try:
            threads = max(1, int(os.environ["QSENSE_THREADS"]))
        except ValueError:  # said, as the kernels say it (they fall back to one thread; here the share above is kept)
            log.warning("QSENSE_THREADS=%r is not an integer; workers use %d kernel thread(s)",
                        os.environ["QSENSE_THREADS"], threads)
    config = {**WORKER_CONFIG, **(dict(dask_config) if dask_config else {})}
    with dask.config.set(config):
        pre_spawn = dict(dask.config.get("distributed.nanny.pre-spawn-environ") or {})
        saved = {k: os.environ.get(k) for k in set(pre_spawn) | {"PYTHONHASHSEED"}}
        for k, v in pre_spawn.items():
            if v is None:  # unset for the workers even when this process has it (an earlier Dask cluster puts it here)
                os.environ.pop(k, None)
        try:
            cluster = LocalCluster(n_workers=int(n_workers), threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address="127.0.0.1:0" if dashboard else None, silence_logs=40)
            try:
                client = Client(cluster, set_as_default=False)
            except BaseException:  # its worker processes would outlive the call
                cluster.close()
                raise
        finally:
            for k, v in saved.items():  # the nannies' os.environ.update(pre-spawn-environ), undone
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    try:
        client.run(warm_worker, threads, warm)
    except BaseException:
        client.close()
        cluster.close()
        raise
    return cluster, client


def estimate(archive: Any, estimators: Sequence[Any], *, client: Any = None, source: str | Iterable[str] | None = None,
             since: float | None = None, until: float | None = None, kind: str | None = None, wires: Sequence | None = None,
             after: int | None = None, upto: int | None = None, partition_bytes: int = DEFAULT_PARTITION_BYTES,
             verify: bool = True, progress: bool = True, retries: int = 2) -> DistributedResult:
    """Reduce ``archive`` (an :class:`Archive` or its path) into ``estimators`` (empty templates) by the rule above.

    ``client``: a ``distributed.Client`` (tasks on its workers) or ``None``
    (the same tasks and merge tree in this process).  The filters are those of
    :meth:`Archive.entries`.  ``retries``: resubmissions of a task that
    raised (a worker that dies is handled by Dask itself: its tasks are
    rescheduled).  Raises :class:`DistributedError` when a task fails for good.
    """
    from qsense.streaming.archive import open_archive

    t0 = time.perf_counter()
    arch = open_archive(archive) if isinstance(archive, (str, os.PathLike)) else archive
    root = str(arch.path.resolve())
    templates = pack_templates(list(estimators))
    parts, problems = plan(arch, partition_bytes=partition_bytes, source=source, since=since, until=until, after=after,
                           upto=upto)
    sel = {"source": source, "kind": kind, "since": since, "until": until,
           "wires": None if wires is None else tuple(wires), "after": after, "upto": upto}
    if not parts:
        total = Partial((0, 0), [{} for _ in estimators])
    elif client is None:
        leaves = []
        with _bar(len(parts), progress) as bar:
            for p in parts:
                leaves.append(run_partition(root, p, templates, sel, verify))
                bar.update(1)
        total = _tree(leaves, lambda a, b: merge_partials(templates, a, b))
    else:
        total = _on_cluster(client, root, parts, templates, sel, verify, progress, retries)
    for k, v in problems.items():
        total.problems[k] = total.problems.get(k, 0) + v
    ests, by_wires, refused, refused_by_wires = finish(templates, total)
    groups = {k: {"batches": v[0], "records": v[1]} for k, v in sorted(total.groups.items(), key=lambda kv: kv[1][2])}
    return DistributedResult(ests, by_wires, refused, refused_by_wires, groups, set(total.sources), dict(total.problems), parts,
                             sorted(total.stats), time.perf_counter() - t0)


def _on_cluster(client: Any, root: str, parts: list[Partition], templates: bytes, sel: dict[str, Any], verify: bool,
                progress: bool, retries: int) -> Partial:
    from distributed import as_completed

    # one small blob for every task instead of a copy per task in the graph; a key of its own per call
    # (hash=True would give equal templates the key of an earlier call's blob, which the scheduler may be
    # forgetting as that call's futures are released: "lost dependencies")
    tmpl = client.scatter(templates, broadcast=True, hash=False)
    leaves = [client.submit(run_partition, root, p, tmpl, sel, verify, retries=retries, pure=False,
                            key=f"qsense-partition-{p.number}-{os.urandom(4).hex()}") for p in parts]
    try:
        level = list(leaves)
        while len(level) > 1:  # the tree is fixed up front: merges start as soon as both children are done
            nxt = [client.submit(merge_partials, tmpl, level[i], level[i + 1], retries=retries, pure=False)
                   for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        with _bar(len(leaves), progress) as bar:
            if not bar.disable:  # no bar shown: nothing to do per finished task, the root's result is all we wait on
                for _ in as_completed(leaves, loop=client.loop):
                    bar.update(1)
        return level[0].result()
    except Exception as exc:
        raise DistributedError(f"distributed estimate failed: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    finally:
        for f in leaves:
            f.release()
