"""``qsense estimate SOURCE``: Pauli expectations, purities and entropies from recorded data.

SOURCE is one of

* a **record archive** (a directory holding ``archive.json``, written by
  ``qsense daemon`` with an ``[archive]``, ``qsense record`` or
  :class:`~qsense.streaming.archive.ArchiveWriter`): its batches are read one
  by one (memory bounded by a segment's row group, never the archive), filtered
  by ``--source``, ``--since``/``--until`` (record timestamps), ``--wires`` and
  ``--kind``, and folded into a :class:`~qsense.estimators.shadow.ShadowEstimator`
  / :class:`~qsense.estimators.purity.ShadowPurity` (shadow records) or a
  :class:`~qsense.estimators.bell.BellEstimator` (Bell records).  Works on an
  archive a daemon is writing right now (what is stored at the time of reading);
* a file in the Huang-Kueng-Preskill text format (``measurement.txt``) or an
  ``.npz`` holding ``bases`` and ``outcomes`` arrays (PennyLane's recipes and bits).

Output: a header, then one line per target ending in ``value stderr``.  For
an archive each line starts with the record kind it comes from and the
quantity: ``expval`` (shadow ``<P>``), ``square`` (Bell ``tr(P rho)^2``),
``purity`` and ``renyi2`` (Renyi-2 entropy in bits), then the target.  A
one-line summary (batches, snapshots, sources, damage counted) goes to stderr.

``--workers N`` (a local Dask cluster of N worker processes) or ``--dask
ADDRESS`` (an existing scheduler, refused within ``--dask-timeout`` seconds
if it does not answer) reduce an archive with :func:`qsense.distributed.estimate`:
one task per partition, the same table on stdout (with ``--groups`` > 1 the
median-of-means blocks follow the partitions, see ``docs/scale-out.md``), the
dashboard link and a progress bar over partitions on stderr.

Exit status: 0, 1 when nothing in the archive matches the selection, 2 for
bad input (one line on stderr, never a traceback).  The filter options are
shared with ``qsense replay`` (:func:`add_selection_arguments`, :func:`selection`).
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import qsense
from qsense.estimators.result import Estimate
from qsense.estimators.shadow import METHODS, ShadowEstimator
from qsense.pauli import PauliObservable, parse_observable
from qsense.records import BellBatch, ShadowBatch
from qsense.streaming import reference, reference_fast

__all__ = ["UsageError", "add_arguments", "add_selection_arguments", "parse_observable_text", "parse_wires", "run", "selection"]

log = logging.getLogger(__name__)

#: What marks a directory as a record archive.
MANIFEST = "archive.json"
KINDS = ("shadow", "bell")


class UsageError(ValueError):
    """Bad input: reported as one line on stderr with exit status 2."""


# The Bell and purity estimators are reached as ``qsense.BellEstimator`` / ``qsense.ShadowPurity``
# (lazy exports: their modules are imported at first use): the purity module imports numba and
# its class kernels at import time, which ``--help``, bad input and runs without -s/--subsystem
# need not pay for.
def _is_instance(obj: Any, module: str, name: str) -> bool:
    """``isinstance(obj, module.name)`` without importing ``module``: an instance exists only once it is loaded."""
    mod = sys.modules.get(module)
    return mod is not None and isinstance(obj, getattr(mod, name))


# -- options -------------------------------------------------------------------------------------
def add_selection_arguments(p: argparse.ArgumentParser) -> None:
    """The archive filters, shared by ``qsense estimate`` and ``qsense replay``."""
    g = p.add_argument_group("archive selection")
    g.add_argument("--source", action="append", default=[], metavar="NAME",
                   help="only batches of this producer source (repeatable; default: every source)")
    g.add_argument("--since", type=float, metavar="T", help="only records with timestamp t >= T (seconds, the records' clock)")
    g.add_argument("--until", type=float, metavar="T", help="only records with timestamp t < T (batches straddling a bound are cut)")
    g.add_argument("--wires", metavar="W1,W2,...", help="only batches on exactly these wires, in this order (labels; digits are integers)")
    g.add_argument("--kind", choices=KINDS, help="only shadow or only Bell records (default: both)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``qsense estimate``."""
    p.add_argument("measurements", metavar="SOURCE", type=Path,
                   help="record archive directory (holds archive.json), measurement file (reference text format) "
                        "or .npz with bases/outcomes")
    p.add_argument("-o", "--observable", action="append", default=[], metavar="PAULI",
                   help='Pauli string, dense "XIZ" or sparse "X0 Z2", or a real sum "0.5*X0 Z1 - Z2" (repeatable); '
                        "on Bell records each gives tr(P rho)^2 (sums: sum_j c_j tr(P_j rho)^2)")
    p.add_argument("--observables-file", type=Path, help="observables in the reference text format")
    p.add_argument("--subsystems-file", type=Path, help="subsystems in the reference text format (Renyi-2 entropies)")
    p.add_argument("-s", "--subsystem", action="append", default=[], metavar="Q1,Q2,...",
                   help="subsystem (comma-separated wire positions): purity and Renyi-2 entropy from shadow records, "
                        "purity from Bell records (repeatable)")
    p.add_argument("--groups", type=int, default=1, help="median-of-means groups K for shadow observables (default 1: plain mean)")
    p.add_argument("--method", choices=METHODS, default="mean",
                   help="shadow observables: mean = 3^k-weighted snapshot estimator; matched = Huang's matched-ratio estimator")
    b = p.add_argument_group("Bell records (archives)")
    b.add_argument("--bell-purity", action="store_true", help="purity tr(rho^2) of the whole register from Bell records")
    b.add_argument("--t2", type=float, metavar="S",
                   help="undo the memory decoherence of Bell pairs (local depolarizing with this T2, seconds, from each shot's wait)")
    add_selection_arguments(p)
    d = p.add_argument_group("scale-out (archives; see docs/scale-out.md)")
    x = d.add_mutually_exclusive_group()
    x.add_argument("--workers", type=int, metavar="N",
                   help="reduce the archive on a local Dask cluster of N worker processes (one task per partition)")
    x.add_argument("--dask", metavar="ADDRESS", help="reduce the archive on the Dask scheduler at ADDRESS (e.g. tcp://host:8786); "
                                                     "the workers must see the archive at the same path")
    d.add_argument("--dask-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the --dask scheduler to answer (default 10)")
    d.add_argument("--partition-mib", type=float, default=None, metavar="MIB",
                   help="target partition size in MiB of Parquet data (default: one 64 MiB row group); "
                        "with --groups > 1 the median-of-means blocks follow the partitions")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line on stderr")


# -- parsing ---------------------------------------------------------------------------------------
_COEFF = re.compile(r"^\s*((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*\*?\s*(.*)$", re.DOTALL)


def _split_sum(text: str) -> list[tuple[float, str]]:
    """``"0.5*X0 Z1 - Z2"`` -> ``[(1.0, "0.5*X0 Z1"), (-1.0, "Z2")]`` (signs outside, exponents kept)."""
    chunks: list[tuple[float, str]] = []
    sign, cur = 1.0, []
    for i, ch in enumerate(text):
        exponent = i >= 2 and text[i - 1] in "eE" and (text[i - 2].isdigit() or text[i - 2] == ".")
        if ch in "+-" and not exponent:
            if "".join(cur).strip():
                chunks.append((sign, "".join(cur)))
                sign = 1.0
            sign *= -1.0 if ch == "-" else 1.0
            cur = []
        else:
            cur.append(ch)
    if not "".join(cur).strip():
        raise UsageError(f"observable {text!r}: a sum may not end with a sign")
    chunks.append((sign, "".join(cur)))
    return chunks


def parse_observable_text(text: str) -> PauliObservable:
    """One ``-o`` value: a Pauli string, or a real linear combination of them (``"0.5*XZ + ZZ"``)."""
    if "+" not in text and "-" not in text and _COEFF.match(text) is None:  # one Pauli word: parsed as ever
        try:
            return parse_observable(text)
        except ValueError as exc:
            raise UsageError(f"observable {text!r}: {exc}") from None
    terms = []
    for sign, chunk in _split_sum(text):
        m = _COEFF.match(chunk)
        coeff, pauli = (float(m.group(1)), m.group(2)) if m else (1.0, chunk)
        pauli = pauli.strip() or "I"
        try:
            term = parse_observable(pauli).terms[0][1]
        except ValueError as exc:
            raise UsageError(f"observable {text!r}: {exc}") from None
        terms.append((sign * coeff, term))
    return PauliObservable(tuple(terms), text.strip())


def parse_wires(text: str) -> tuple:
    """``"0,1,2"`` -> ``(0, 1, 2)``; labels that are not integers stay strings."""
    labels = [w.strip() for w in text.split(",")]
    if not text.strip() or any(not w for w in labels):
        raise UsageError(f"--wires {text!r}: give comma-separated wire labels, e.g. 0,1,2")
    return tuple(int(w) if re.fullmatch(r"[+-]?\d+", w) else w for w in labels)


def _subsystem(text: str) -> tuple[int, ...]:
    try:
        qs = tuple(int(q) for q in text.split(","))
    except ValueError:
        raise UsageError(f"subsystem {text!r}: give comma-separated wire positions, e.g. 0,1") from None
    if any(q < 0 for q in qs) or len(set(qs)) != len(qs):
        raise UsageError(f"subsystem {text!r}: positions must be distinct and non-negative")
    return qs


def selection(args: argparse.Namespace) -> dict[str, Any]:
    """The archive filters of ``args`` as keyword arguments of :meth:`Archive.entries` (raises :class:`UsageError`)."""
    for name in ("since", "until"):
        v = getattr(args, name)
        if v is not None and not math.isfinite(v):
            raise UsageError(f"--{name} must be a finite number of seconds")
    if args.since is not None and args.until is not None and not args.since < args.until:
        raise UsageError(f"--since {args.since:g} must be before --until {args.until:g}")
    return {"source": list(args.source) or None, "since": args.since, "until": args.until,
            "wires": None if args.wires is None else parse_wires(args.wires), "kind": args.kind}


def _selection_given(args: argparse.Namespace) -> bool:
    return bool(args.source) or any(getattr(args, k) is not None for k in ("since", "until", "wires", "kind"))


def open_archive_or_fail(path: Path) -> Any:
    """:func:`qsense.streaming.archive.open_archive`, its refusals as :class:`UsageError`."""
    from qsense.streaming.archive import ArchiveError, open_archive

    try:
        return open_archive(path)
    except ArchiveError as exc:
        raise UsageError(str(exc)) from None


# -- file inputs ---------------------------------------------------------------------------------
#: array names an ``.npz`` may use for shadow snapshots: ours, and PennyLane's ``qml.ClassicalShadow`` names
_NPZ_SHADOW_NAMES = (("bases", "outcomes"), ("recipes", "bits"))


def _load(path: Path) -> ShadowBatch | BellBatch:
    """The records of a reference text file or an ``.npz`` (every failure a :class:`UsageError`).

    An ``.npz`` holds shadow snapshots as ``bases`` + ``outcomes`` (or PennyLane's
    ``recipes`` + ``bits``), or two-copy Bell records as ``bell`` (the codes,
    uint8 (T, n)) with an optional ``wait`` (seconds per shot).
    """
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                names = set(z.files)
                if "bell" in names:
                    return BellBatch(z["bell"], wait=z["wait"] if "wait" in names else None)
                for bases, outcomes in _NPZ_SHADOW_NAMES:
                    if {bases, outcomes} <= names:
                        return ShadowBatch(bases=z[bases], outcomes=z[outcomes])
                raise UsageError(f"{path}: holds {sorted(names)}; an .npz needs 'bases' and 'outcomes' (or PennyLane's "
                                 "'recipes' and 'bits') for shadows, or 'bell' (and optionally 'wait') for Bell records")
        return reference_fast.read_measurements(path)  # bytes to bit planes, bounded memory
    except UsageError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    except ValueError as exc:  # bad contents: wrong shapes or values, an npz that is not one, undecodable text
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


def _run_bell_file(args: argparse.Namespace, batch: BellBatch, observables: list, subsystems: list) -> int:
    """A file of Bell records: tr(P rho)^2 per ``-o``, purity per ``-s`` and of the whole register."""
    est = qsense.BellEstimator(observables, t2=args.t2, purity_subsystems=subsystems)
    try:
        est.update(batch)
    except ValueError as exc:
        raise UsageError(f"{args.measurements}: {exc}") from None
    print(f"{'target':<24} {'value':>12} {'stderr':>10}")
    if observables:
        r = est.estimate()
        for lab, v, s in zip(r.labels, r.values, r.stderr):
            print(f"{'tr(P rho)^2 ' + lab:<24} {v:>12.6f} {s:>10.6f}")
    for sub in [*subsystems, None]:
        p = est.purity(sub)
        label = "purity " + ("all" if sub is None else str(list(sub)))
        print(f"{label:<24} {float(p.values[0]):>12.6f} {float(p.stderr[0]):>10.6f}")
    return 0


def _targets(args: argparse.Namespace) -> tuple[list[PauliObservable], list[tuple[int, ...]]]:
    observables = [parse_observable_text(o) for o in args.observable]
    subsystems = [_subsystem(s) for s in args.subsystem]
    try:
        if args.observables_file:
            observables += reference.read_observables(args.observables_file)[1]
        if args.subsystems_file:
            subsystems += [tuple(s) for s in reference.read_subsystems(args.subsystems_file)[1]]
    except OSError as exc:
        raise UsageError(f"{exc.filename}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return observables, subsystems


def _scaled_out(args: argparse.Namespace) -> bool:
    return getattr(args, "workers", None) is not None or getattr(args, "dask", None) is not None


def _run_file(args: argparse.Namespace, observables: list, subsystems: list) -> int:
    if _scaled_out(args):
        raise UsageError(f"{args.measurements}: --workers/--dask need a record archive (a directory holding {MANIFEST})")
    if _selection_given(args) or args.bell_purity:
        raise UsageError(f"{args.measurements}: --source/--since/--until/--wires/--kind/--bell-purity need a record archive")
    batch = _load(args.measurements)
    if isinstance(batch, BellBatch):
        return _run_bell_file(args, batch, observables, subsystems)
    if args.t2 is not None:
        raise UsageError(f"{args.measurements}: --t2 applies to Bell records; this file holds shadow snapshots")
    log.info("read %d snapshots on %d qubits from %s", batch.T, batch.n, args.measurements)
    if observables:
        est = ShadowEstimator(observables, groups=args.groups, method=args.method)
        try:
            est.update(batch)
        except ValueError as exc:
            raise UsageError(f"{args.measurements}: {exc}") from None
        r = est.estimate()
        print(f"{'observable':<24} {'value':>12} {'stderr':>10}")
        for lab, v, s in zip(r.labels, r.values, r.stderr):
            print(f"{lab:<24} {v:>12.6f} {s:>10.6f}")
    if subsystems:
        p = qsense.ShadowPurity(subsystems)
        try:
            p.update(batch)
            pur, ent = p.purity(), p.entropy()
        except ValueError as exc:
            raise UsageError(f"{args.measurements}: {exc}") from None
        print(f"{'subsystem':<24} {'purity':>12} {'stderr':>10} {'S2 (bits)':>10} {'stderr':>10}")
        for lab, v, s, e, es in zip(pur.labels, pur.values, pur.stderr, ent.values, ent.stderr):
            print(f"{lab:<24} {v:>12.6f} {s:>10.6f} {e:>10.6f} {es:>10.6f}")
    return 0


# -- archives ------------------------------------------------------------------------------------
@dataclass
class _Group:
    """The estimators of one (kind, wires) group of batches: estimators bind to one wire set."""

    kind: str
    wires: tuple
    estimators: list[Any] = field(default_factory=list)
    batches: int = 0
    records: int = 0


def _make_group(kind: str, wires: tuple, args: argparse.Namespace, observables: list, subsystems: list) -> _Group:
    g = _Group(kind, wires)
    if kind == "shadow":
        if observables:
            g.estimators.append(ShadowEstimator(observables, groups=args.groups, method=args.method))
        if subsystems:
            g.estimators.append(qsense.ShadowPurity(subsystems))
    elif observables or subsystems or args.bell_purity:
        g.estimators.append(qsense.BellEstimator(observables, t2=args.t2, purity_subsystems=subsystems))
    return g


def _rows(g: _Group, label: str, args: argparse.Namespace, subsystems: list) -> Iterable[tuple[str, str, str, float, float]]:
    """``(kind, quantity, target, value, stderr)`` of one group's estimates."""
    nan = float("nan")
    for est in g.estimators:
        if isinstance(est, ShadowEstimator):
            r = est.estimate()
            for lab, v, s in zip(r.labels, r.values, r.stderr):
                yield label, "expval", lab, float(v), float(s)
        elif _is_instance(est, "qsense.estimators.purity", "ShadowPurity"):
            try:
                pur, ent = est.purity(), est.entropy()
            except ValueError:  # fewer than two snapshots: no U-statistic
                pur = ent = Estimate(np.full(len(subsystems), nan), np.full(len(subsystems), nan), est.count, est.labels)
            for lab, v, s in zip(pur.labels, pur.values, pur.stderr):
                yield label, "purity", lab, float(v), float(s)
            for lab, v, s in zip(ent.labels, ent.values, ent.stderr):
                yield label, "renyi2", lab, float(v), float(s)
        elif _is_instance(est, "qsense.estimators.bell", "BellEstimator"):
            if est.observables:
                r = est.estimate()
                for lab, v, s in zip(r.labels, r.values, r.stderr):
                    yield label, "square", lab, float(v), float(s)
            for sub in subsystems:
                p = est.purity(sub)
                yield label, "purity", f"{list(sub)}", float(p.values[0]), float(p.stderr[0])
            if args.bell_purity:
                p = est.purity()
                yield label, "purity", "all", float(p.values[0]), float(p.stderr[0])


def _progress(archive: Any, sel: dict[str, Any], args: argparse.Namespace, what: str = "batches") -> Any:
    """A tqdm bar over batches on stderr (disabled with --quiet or when stderr is no terminal)."""
    from tqdm import tqdm

    disable = bool(getattr(args, "quiet", False)) or not sys.stderr.isatty()
    total = None
    if not disable and sel.get("since") is None and sel.get("until") is None and sel.get("wires") is None \
            and sel.get("kind") is None:
        # metadata columns only: cheap next to reading the planes
        summ = archive.summary()
        total = sum(n for s, n in summ["sources"].items() if sel.get("source") is None or s in sel["source"])
    return tqdm(total=total, unit="batch", desc=what, file=sys.stderr, disable=disable, leave=False)


def _summary_line(path: Path, archive: Any, groups: dict, sources: set[str]) -> str:
    shadow = sum(g.records for g in groups.values() if g.kind == "shadow")
    bell = sum(g.records for g in groups.values() if g.kind == "bell")
    nb = sum(g.batches for g in groups.values())
    names = sorted(sources)
    shown = ", ".join(names[:5]) + (f", ... ({len(names) - 5} more)" if len(names) > 5 else "")
    problems = ", ".join(f"{k}={v}" for k, v in sorted(archive.problems.items()) if v) or "none"
    live = " (live: a writer holds it)" if archive.live else ""
    return (f"qsense estimate: {path}{live}: {nb} batches, {shadow} shadow snapshots, {bell} Bell shots from "
            f"{len(names)} source(s){': ' + shown if names else ''}; problems: {problems}")


def _distributed_groups(args: argparse.Namespace, archive: Any, sel: dict[str, Any], observables: list,
                        subsystems: list) -> tuple[dict[tuple[str, tuple], _Group], set[str]]:
    """The groups of :func:`_run_archive`, reduced by :func:`qsense.distributed.estimate` on a Dask cluster."""
    from qsense import distributed as qd

    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be a positive integer")
    if not (math.isfinite(args.dask_timeout) and args.dask_timeout > 0):
        raise UsageError("--dask-timeout must be a positive number of seconds")
    part_bytes = qd.DEFAULT_PARTITION_BYTES
    if args.partition_mib is not None:
        if not (math.isfinite(args.partition_mib) and args.partition_mib > 0):
            raise UsageError("--partition-mib must be a positive number")
        part_bytes = max(1, int(args.partition_mib * (1 << 20)))
    # the templates: what _make_group builds, per record kind (a wire set binds on the workers)
    templates = {k: _make_group(k, (), args, observables, subsystems).estimators for k in KINDS}
    flat = [(k, i) for k in KINDS for i in range(len(templates[k]))]
    cluster = client = None
    # Dask's INFO lines (scheduler and nanny start-up) would bury the summary; its errors still show
    _quiet_dask(logging.ERROR)
    try:
        if args.dask is not None:
            client = qd.connect(args.dask, timeout=args.dask_timeout)
        else:
            cluster, client = qd.local_cluster(args.workers)
        if not args.quiet:
            link = _dashboard(client)
            print(f"qsense estimate: Dask {'scheduler ' + args.dask if args.dask else f'LocalCluster of {args.workers} workers'}"
                  f"; dashboard: {link}", file=sys.stderr)
        res = qd.estimate(archive, [templates[k][i] for k, i in flat], client=client, partition_bytes=part_bytes,
                          progress=not args.quiet, **sel)
    except qd.DistributedError as exc:
        raise UsageError(str(exc)) from None
    finally:
        # tearing a LocalCluster down logs lost comms as CRITICAL: expected at shutdown, not news
        _quiet_dask(logging.CRITICAL + 1)
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    archive.problems = dict(res.problems)  # the summary line reports the workers' damage counters
    groups: dict[tuple[str, tuple], _Group] = {}
    for (kind, wires), counts in res.groups.items():
        g = groups[(kind, wires)] = _Group(kind, wires, batches=counts["batches"], records=counts["records"])
        for j, (k, _) in enumerate(flat):
            if k != kind:
                continue
            est = res.by_wires[j].get(wires)
            if est is None or res.refused_by_wires[j].get(wires, 0):
                raise UsageError(f"{kind} batches on wires {list(wires)}: refused by the {type(res.estimators[j]).__name__} "
                                 "(an observable or subsystem that does not fit these wires)"
                                 + ("; select one wire set with --wires" if len(res.groups) > 1 else ""))
            g.estimators.append(est)
    return groups, res.sources


def _quiet_dask(level: int) -> None:
    import distributed  # noqa: F401 -- it configures its loggers on import: set them after that

    for name in [n for n in logging.root.manager.loggerDict if n == "distributed" or n.startswith("distributed.")]:
        logging.getLogger(name).setLevel(level)


def _dashboard(client: Any) -> str:
    try:
        if "dashboard" in client.scheduler_info().get("services", {}):
            return str(client.dashboard_link)
    except Exception as exc:  # noqa: BLE001 -- a link is a convenience
        log.debug("no dashboard link: %s", exc)
    return "not available (install bokeh for the Dask dashboard)"


def _run_archive(args: argparse.Namespace, observables: list, subsystems: list) -> int:
    archive = open_archive_or_fail(args.measurements)
    sel = selection(args)
    if args.t2 is not None and not (math.isfinite(args.t2) and args.t2 > 0):
        raise UsageError("--t2 must be a positive number of seconds")
    if _scaled_out(args):
        groups, sources = _distributed_groups(args, archive, sel, observables, subsystems)
        return _report(args, archive, groups, sources, subsystems)
    groups: dict[tuple[str, tuple], _Group] = {}
    sources: set[str] = set()
    bar = _progress(archive, sel, args)
    try:
        for entry in archive.entries(**sel):
            b = entry.batch
            key = (b.kind, tuple(b.wires))
            g = groups.get(key)
            if g is None:
                g = groups[key] = _make_group(b.kind, key[1], args, observables, subsystems)
            try:
                for est in g.estimators:
                    est.update(b)
            except ValueError as exc:  # an observable or subsystem that does not fit these wires
                raise UsageError(f"{b.kind} batches of source {b.source!r} on wires {list(b.wires)}: {exc}"
                                 + ("; select one wire set with --wires" if len(groups) > 1 else "")) from None
            g.batches += 1
            g.records += b.T
            sources.add(b.source)
            bar.update(1)
    except OSError as exc:
        raise UsageError(f"{args.measurements}: read failed: {exc}") from None
    finally:
        bar.close()
    return _report(args, archive, groups, sources, subsystems)


def _report(args: argparse.Namespace, archive: Any, groups: dict[tuple[str, tuple], _Group], sources: set[str],
            subsystems: list) -> int:
    """The summary line and the table of :func:`_run_archive` (shared by the single-process and the Dask path)."""
    if not args.quiet:
        print(_summary_line(args.measurements, archive, groups, sources), file=sys.stderr)
    if not groups:
        print(f"qsense estimate: {args.measurements}: no batches match the selection", file=sys.stderr)
        return 1
    if not any(g.estimators for g in groups.values()):
        kinds = sorted({g.kind for g in groups.values()})
        print(f"qsense estimate: nothing to estimate from the selected {'/'.join(kinds)} records "
              "(--bell-purity needs Bell records)", file=sys.stderr)
        return 1
    ordered = sorted(groups.values(), key=lambda g: KINDS.index(g.kind))
    per_kind = {k: sum(1 for g in ordered if g.kind == k) for k in KINDS}
    print(f"{'kind':<8} {'quantity':<8} {'target':<24} {'value':>12} {'stderr':>10}")
    for g in ordered:
        if not g.estimators:
            continue
        # several wire sets of one kind: name the wires, since each has its own estimates
        label = g.kind if per_kind[g.kind] == 1 else f"{g.kind}@{','.join(str(w) for w in g.wires)}"
        for kind, quantity, target, v, s in _rows(g, label, args, subsystems):
            print(f"{kind:<8} {quantity:<8} {target:<24} {v:>12.6f} {s:>10.6f}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``qsense estimate``: print one line per target; 2 with one line on stderr for bad input."""
    try:
        observables, subsystems = _targets(args)
        if not observables and not subsystems and not args.bell_purity:
            raise UsageError("nothing to estimate: give -o/--observables-file, -s/--subsystems-file or --bell-purity")
        if args.groups < 1:
            raise UsageError("--groups must be a positive integer")
        if subsystems:
            try:
                qsense.ShadowPurity(subsystems)  # its limits (size, repeats) before any data is read
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        path: Path = args.measurements
        if path.is_dir():
            return _run_archive(args, observables, subsystems)
        if not path.exists():
            raise UsageError(f"{path}: no such file or directory")
        return _run_file(args, observables, subsystems)
    except UsageError as exc:
        print(f"qsense estimate: {exc}", file=sys.stderr)
        return 2
