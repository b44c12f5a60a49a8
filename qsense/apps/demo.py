"""Simulated telescope array observing a binary star, end to end through the real chain.

``qsense demo`` runs, in one process and with no external services::

    TelescopeSim ─▶ TelescopeDriver ─▶ QuantumMemory + Scheduler ─▶ TelescopeBackend
      (photons)       (async, paced)     (pairs photons for Bell)     (O(M) samplers)
                                                                          │ records
     table, fits, PNGs ◀── estimates ◀── EstimationDaemon ◀── ZeroMQ DEALER/ROUTER + acks (127.0.0.1)

A heralded photon collected by M telescopes is stored as M memory qubits.  Some
photons are measured at once in random Pauli bases (single-copy shadows: signed
complex visibilities V_jk); others wait in memory for the next photon and the two
are Bell-measured site by site (two-copy: |V_jk|^2, insensitive to atmospheric
piston).  The daemon estimates the Pauli expectations; the demo turns them into
visibilities with error bars (``qsense.estimators.interferometry``), fits the source, prints
a table of true vs estimated values and writes two plots:

* ``visibilities.png``: visibility amplitude and phase vs (projected) baseline,
  truth curve vs both estimates with error bars;
* ``convergence.png``: error vs copies consumed, single-copy vs two-copy;
* ``uvplane.png``: the (u, v) plane, true |V| as the background and each
  baseline's estimate (at ±B/λ) in the same colours.

Large arrays (more than :data:`SUMMARY_BASELINES` baselines; ``-M 64`` has 2,016)
get a summary instead of one table row per baseline: median and worst pulls of each
family, the worst baselines and a few representative ones (``--full-table`` prints
every row; ``results.json`` always holds every baseline), and the visibility plot
shows points coloured by baseline angle instead of error-bar forests.  The demo
warns when the driver delivered clearly fewer copies than ``--rate`` × ``--duration``
(the process is CPU-bound) and says how long each fit took.

It also writes ``results.json``.  With ``--archive DIR`` the in-process daemon
gets an ``[archive]`` table: it stores every batch there (fsync-ed) before
folding it, and the demo ends by saying how to ask the archive later
(``qsense estimate DIR -o ...``, ``qsense replay DIR --to ...``).  Physics: ``docs/telescope.md``.  The wiring is a
:class:`qsense.apps.chain.Chain` (plugins by name, an in-process daemon fed over
ZeroMQ, a monitor for the progress bar); :func:`run_demo` is its worked example.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qsense.estimators.interferometry import (
    MAS,
    SquaredVisibilityEstimate,
    VisibilityEstimate,
    all_pairs,
    fit_binary,
    fit_disk,
    fit_gaussian,
    squared_visibilities_from_paulis,
    squared_visibility_observables,
    visibilities_from_paulis,
    visibility_observables,
)

if TYPE_CHECKING:  # run_demo imports the chain (and the acquisition layer) when it runs
    from .chain import Chain, RunningChain

__all__ = ["DemoResult", "add_arguments", "run", "run_demo"]

log = logging.getLogger(__name__)

SOURCES = ("binary", "disk", "gaussian", "point")
#: above this many baselines the table is a summary (``--full-table`` prints every row)
SUMMARY_BASELINES = 30
#: warn when fewer than this fraction of the requested copies arrived (beyond Poisson noise)
RATE_SHORTFALL = 0.9
#: above this many baselines a binary fit's grid search runs on this many of them (see _binary_seed)
FIT_SEED_BASELINES = 200
#: baseline lengths of the demo's six hand-picked telescopes, in units of ``--scale``
#: (``sims.telescope.demo_array``; checked by tests/test_demo.py so the help cannot drift)
BASELINE_RANGE_6 = (0.4924, 2.6401)
POLICIES = ("fixed", "shadow", "bell", "adaptive")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``qsense demo``."""
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of observation (wall time; default 15)")
    parser.add_argument("--out", type=Path, default=Path("qsense-demo"), help="output folder for PNGs and results.json (default ./qsense-demo)")
    parser.add_argument("--telescopes", "-M", type=int, default=6, help="number of telescopes (default 6; the simulator handles >= 64)")
    parser.add_argument("--source", choices=SOURCES, default="binary", help="what the array observes (default binary)")
    parser.add_argument("--separation", type=float, default=3.0, help="binary separation, mas (default 3)")
    parser.add_argument("--position-angle", type=float, default=60.0, help="binary position angle, deg East of North (default 60)")
    parser.add_argument("--flux-ratio", type=float, default=0.5, help="binary flux ratio I2/I1 (default 0.5)")
    parser.add_argument("--diameter", type=float, default=1.5, help="disk diameter or Gaussian FWHM, mas (default 1.5)")
    parser.add_argument("--wavelength", type=float, default=800.0, help="wavelength, nm (default 800)")
    lo, hi = BASELINE_RANGE_6
    parser.add_argument("--scale", type=float, default=60.0,
                        help=f"array size scale, m (default 60); the first 6 telescopes' baselines span "
                             f"{lo:.2f}-{hi:.2f} x scale ({lo * 60:.1f}-{hi * 60:.1f} m at 60), extra telescopes add "
                             "baselines from ~0.1 to ~3 x scale")
    parser.add_argument("--rate", type=float, default=4000.0, help="heralded photons per second (default 4000)")
    parser.add_argument("--policy", choices=POLICIES, default="fixed", help="scheduler policy (default fixed)")
    parser.add_argument("--pair-fraction", type=float, default=0.5, help="fraction of photons paired for Bell with --policy fixed (default 0.5)")
    parser.add_argument("--tol", type=float, default=0.05, help="visibility tolerance (|V|^2 and Re V) for --policy adaptive (default 0.05)")
    parser.add_argument("--memory", type=int, default=4, help="quantum memory slots (default 4)")
    parser.add_argument("--t2", type=float, default=0.02, help="memory dephasing time T2, s (default 0.02; 0 = perfect memory)")
    parser.add_argument("--dark", type=float, default=0.01, help="fraction of heralds that are dark counts (default 0.01; corrected for)")
    parser.add_argument("--piston", type=float, default=0.0, help="atmospheric piston diffusion, rad^2/s per telescope (default 0)")
    parser.add_argument("--seed", type=int, default=2024, help="random seed (default 2024)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNGs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, no fit timing lines (stderr)")
    parser.add_argument("--full-table", action="store_true",
                        help=f"print one row per baseline even above {SUMMARY_BASELINES} baselines (default there: a summary)")
    parser.add_argument("--archive", type=Path, metavar="DIR",
                        help="keep every record batch in a record archive at DIR (a new or empty directory) for later questions")
    parser.add_argument("--verbose", action="store_true", help="keep the pipeline's and daemon's INFO logs (default: warnings only)")
    parser.add_argument("--array", metavar="NAME", help="a real layout instead of the demo's: chara, vlti-ut, vlti-small, "
                        "vlti-medium, vlti-large, vlti-at, or SITE:ST1,ST2,... (overrides --telescopes and --scale)")
    parser.add_argument("--oifits", action="store_true", help="also write OUT/visibilities.oifits (OIFITS2: OI_VIS, OI_VIS2)")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``qsense demo``."""
    quiet = ("qsense.acquisition.pipeline", "qsense.acquisition.scheduler", "qsense.streaming.daemon", "qsense.acquisition.memory", "qsense.streaming.transport", "qsense.sequence")
    saved = {name: logging.getLogger(name).level for name in quiet}
    if not getattr(args, "verbose", False):
        # the components log every plan and lifecycle step at INFO, which would
        # interleave with the progress bar; the demo prints its own summary
        for name in quiet:
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        result = asyncio.run(run_demo(args))
    except KeyboardInterrupt:  # pragma: no cover - interactive
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        # leave the process's logging as we found it (the demo also runs in-process)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
    return 0 if result.ok else 1


# ---------------------------------------------------------------------------------------
@dataclass
class DemoResult:
    """What a demo run produced (also written to ``results.json``)."""

    ok: bool
    truth: np.ndarray
    single: VisibilityEstimate | None
    double: SquaredVisibilityEstimate | None
    fits: dict[str, Any]
    counters: dict[str, int]
    files: list[Path] = field(default_factory=list)
    history: dict[str, list] = field(default_factory=dict)
    chain: list[str] = field(default_factory=list)


def _make_source(args: argparse.Namespace, tel: Any) -> Any:
    if args.source == "binary":
        return tel.BinaryStar(args.separation * MAS, math.radians(args.position_angle), args.flux_ratio)
    if args.source == "disk":
        return tel.UniformDisk(args.diameter * MAS)
    if args.source == "gaussian":
        return tel.GaussianSource(args.diameter * MAS)
    return tel.PointSource((1.0 * MAS, 0.5 * MAS))


def _truth_params(args: argparse.Namespace) -> dict[str, float]:
    if args.source == "binary":
        return {"separation": args.separation, "position_angle": args.position_angle % 360.0, "flux_ratio": args.flux_ratio}
    if args.source == "disk":
        return {"diameter": args.diameter}
    if args.source == "gaussian":
        return {"fwhm": args.diameter}
    return {}


def _usage_error(message: str) -> None:
    """One line on stderr and exit status 2, like argparse's own errors."""
    print(f"qsense demo: {message}", file=sys.stderr)
    raise SystemExit(2)


def _check_args(args: argparse.Namespace) -> None:
    if not args.duration > 0:
        _usage_error("--duration must be positive")
    if getattr(args, "array", None):
        from qsense.sims.telescope.stations import UnknownArrayError, named_array

        try:
            args._layout = named_array(args.array)
        except UnknownArrayError as exc:
            _usage_error(f"--array: {exc}")
        args.telescopes = args._layout.M
    if args.telescopes < 2:
        _usage_error("need at least 2 telescopes")
    if not 0 <= args.pair_fraction <= 1:
        _usage_error("--pair-fraction must lie in [0, 1]")
    if not 0 <= args.dark < 0.5:
        _usage_error("--dark must lie in [0, 0.5)")
    if not args.rate > 0:
        _usage_error("--rate must be positive")
    archive = getattr(args, "archive", None)
    if archive is not None and archive.exists() and (not archive.is_dir() or any(archive.iterdir())):
        # an old archive would be replayed into the daemon's estimates and mix two observations
        _usage_error(f"--archive {archive}: exists and is not empty; give a new or empty directory")


def _values(body: dict, labels: list[str]) -> np.ndarray | None:
    est = body.get("estimates") or {}
    try:
        return np.array([est[lab]["value"] for lab in labels], dtype=np.float64)
    except KeyError:
        return None


class _Watch:
    """The demo's monitor: convergence points for the plot, and the progress bar."""

    def __init__(self, args: argparse.Namespace, pairs: np.ndarray, truth: np.ndarray, dark: float,
                 shadow_labels: list[str], bell_labels: list[str]) -> None:
        self.pairs, self.M, self.truth, self.dark = pairs, int(args.telescopes), truth, dark
        self.shadow_labels, self.bell_labels = shadow_labels, bell_labels
        self.history: dict[str, list] = {"single": [], "double": [], "single_v2": []}
        # a convergence point builds every estimate (O(M^2) labels): at -M 64 sampling it every 0.25 s
        # took ~12 s of the event loop the driver needs; large arrays sample it once a second
        self.sample_every = 0.25 if len(pairs) <= SUMMARY_BASELINES else 1.0
        self._last_sample = -math.inf
        # pacing: (wall seconds, copies arrived in them) while the driver runs; the driver never
        # drops a copy, so a CPU-bound run shows as a late one, not a short one
        self.pace: tuple[float, int] | None = None
        self.progress = None
        if not args.no_progress:
            from tqdm import tqdm

            self.progress = tqdm(total=round(args.duration, 1), unit="s", desc="observing", file=sys.stderr,
                                 bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s{postfix}")

    def __call__(self, live: RunningChain) -> None:
        """Record convergence points and refresh the progress bar (``live``: the running chain)."""
        pairs, M, truth, dark, history = self.pairs, self.M, self.truth, self.dark, self.history
        now = time.perf_counter()
        self._pacing(live, now)
        if now - self._last_sample < self.sample_every:
            self._refresh(live)
            return
        self._last_sample = now
        bodies = live.daemon.estimates()
        sb, bb = bodies.get("visibility", {}), bodies.get("visibility2", {})
        ns, nb = int(sb.get("count", 0)), int(bb.get("count", 0))
        if ns > 50:
            v = _values(sb, self.shadow_labels)
            if v is not None:
                # pooled normalisation (the default): bounded however few photons each telescope has
                e = visibilities_from_paulis(pairs, M, v, count=ns)
                vv = e.values / (1 - dark)
                history["single"].append((ns, float(np.sqrt(np.mean(np.abs(vv - truth) ** 2))),
                                          float(np.sqrt(np.mean(e.stderr_re**2 + e.stderr_im**2))) / (1 - dark)))
                v2 = e.squared_amplitude / (1 - dark) ** 2
                history["single_v2"].append((ns, float(np.sqrt(np.mean((v2 - np.abs(truth) ** 2) ** 2)))))
        if nb > 50:
            v = _values(bb, self.bell_labels)
            if v is not None:
                e2 = squared_visibilities_from_paulis(pairs, M, v, count=nb)
                history["double"].append((2 * nb, float(np.sqrt(np.mean((e2.values / (1 - dark) ** 2 - np.abs(truth) ** 2) ** 2))),
                                          float(np.sqrt(np.mean(e2.stderr**2))) / (1 - dark) ** 2))
        self._refresh(live)

    def _pacing(self, live: RunningChain, now: float) -> None:
        """The copy rate in wall time between the first and the latest arrival (the
        pipeline's ``arrival_span``; the monitors are called once more after the run)."""
        span = live.pipeline.arrival_span
        if span is not None and span[1] > span[0]:
            self.pace = (span[1] - span[0], span[2])
        log.debug("pacing: %s at clock %.3f", self.pace, live.clock())

    def _refresh(self, live: RunningChain) -> None:
        """Move the progress bar (cheap: counters only, no estimates)."""
        if self.progress is not None:
            c = live.pipeline.counters
            self.progress.n = min(round(live.clock(), 1), self.progress.total)
            self.progress.set_postfix_str(
                f"copies {c['arrived']}, shadows {c['records.shadow']}, Bell pairs {c['records.bell']}", refresh=False)
            self.progress.refresh()

    def finish(self) -> None:
        """The observation is over: show the bar full."""
        if self.progress is not None:
            self.progress.n = self.progress.total
            self.progress.refresh()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()


def _set_policy(chain: Chain, args: argparse.Namespace, pairs: np.ndarray, t2: float) -> None:
    """The scheduler of ``--policy`` (and, for ``adaptive``, its targets as an estimator)."""
    M = int(args.telescopes)
    if args.policy == "adaptive":
        from qsense.acquisition.targets import Expval, TargetSet, visibility_squared

        # |V|^2 = M^2 |rho|^2 (either family) and the signed Re V = M <XX>/2 (shadows
        # only), both to --tol in visibility units
        targets = [visibility_squared(int(j), int(k), tol=args.tol / M**2) for j, k in pairs]
        targets += [Expval(f"X{j} X{k}", tol=2 * args.tol / M) for j, k in pairs]
        # the piston between a pair's photons costs visibility per unit wait, as T2 does: the adaptive
        # scheduler's wait cap takes both (docs/scheduler.md)
        ts = TargetSet(targets, tol=args.tol / M**2, t2=t2 if math.isfinite(t2) else None, piston_diffusion=args.piston)
        chain.scheduler("adaptive", targets=ts, replan_every=2000).estimator(ts)
    elif args.policy == "fixed":
        chain.scheduler("fixed", ratio=args.pair_fraction)
    else:
        chain.scheduler(args.policy)


async def run_demo(args: argparse.Namespace) -> DemoResult:
    """The whole demo (``args`` as parsed by :func:`add_arguments`)."""
    _check_args(args)
    # the app layer composes sims directly; imported here so that `qsense --help`
    # does not pay for them (nor for the acquisition layer the chain imports)
    from qsense.acquisition.memory import ManualClock
    from qsense.sims import telescope as tel

    from .chain import Chain

    t_start = time.perf_counter()
    M = int(args.telescopes)
    lam = args.wavelength * 1e-9
    layout = getattr(args, "_layout", None)
    array = tel.TelescopeArray(layout.positions if layout is not None else tel.demo_array(M, scale=args.scale), lam)
    source = _make_source(args, tel)
    bin_time = 1e-9
    t2 = math.inf if args.t2 <= 0 else float(args.t2)
    sim = tel.TelescopeSim(
        array, source, epsilon=args.rate * (1 - args.dark) * bin_time, dark_prob=args.rate * args.dark * bin_time,
        bin_time=bin_time, t2=t2, piston_diffusion=args.piston, seed=args.seed,
    )
    pairs = all_pairs(M)
    truth = sim.true_visibilities(pairs)
    shadow_labels = visibility_observables(pairs, M)
    bell_labels = squared_visibility_observables(pairs)
    dark = sim.dark_fraction

    config = {
        "daemon": {"name": "demo", "publish_interval": 0.5, "drain_timeout": 5.0},
        "inputs": {"zmq": [{"name": "records", "endpoint": "tcp://127.0.0.1:*", "bind": True}]},
        "estimators": [
            {"name": "visibility", "type": "shadow", "observables": shadow_labels, "wires": M},
            {"name": "visibility2", "type": "bell", "observables": bell_labels, "wires": M,
             **({"t2": t2} if math.isfinite(t2) else {})},
        ],
    }
    if getattr(args, "archive", None) is not None:
        # the daemon stores (and fsyncs) every batch before folding it; stopping it seals the archive
        config["archive"] = {"path": str(args.archive)}
    stages = [
        "TelescopeSim (qsense.sims.telescope)",
        "TelescopeDriver (qsense.drivers.telescope, async, paced)",
        f"SlotMemory ({args.memory} slots, T2 = {args.t2:g} s) + Scheduler (policy {args.policy})",
        "TelescopeBackend (O(M) single-excitation samplers)",
        "ZeroMQ DEALER -> ROUTER on 127.0.0.1 (acknowledged)",
        "EstimationDaemon (in-process; shadow + Bell estimators)" + (f" + record archive {args.archive}"
                                                                     if getattr(args, "archive", None) is not None else ""),
    ]
    # event time: the clock follows the photons' arrival times, which the driver
    # paces in wall time.  Reproducibility with a seed: arrivals come from the
    # driver's own generator (the backend's outcomes from the simulation's), and
    # partial plans are flushed on event time, so every batch, and the order the
    # daemon folds them in, is a function of the seed, not of how the event loop
    # happened to schedule the driver, the flushes and the publisher.
    chain = (Chain(name="telescope", clock=ManualClock(), batch_size=512, flush_interval=0.05,
                   pipeline_options={"flush_clock": "event"})
             .driver("telescope", sim=sim, rate=args.rate, duration=args.duration, realtime=True,
                     seed=[int(args.seed), 1])
             .memory("slots", capacity=args.memory, coherence=tel.TelescopeCoherence(t2), name="telescope-memory")
             .backend("telescope", sim=sim)
             # window=1: the daemon acknowledges a batch after folding it, so it never holds two
             # at once and never joins them into one update (joined or not changes the float
             # summation order of the Bell sums in the last bits)
             .daemon(config, resume=False, window=1))
    _set_policy(chain, args, pairs, t2)
    watch = _Watch(args, pairs, truth, dark, shadow_labels, bell_labels)
    chain.monitor(watch, interval=0.25)
    try:
        # no wall-clock cap: the driver stops after --duration of simulation time, and a
        # cap would cut a slow run at a scheduling-dependent copy
        res = await chain.run()
        watch.finish()
    finally:
        watch.close()
    report, bodies, zstats, history = res.report, res.estimates, res.stats, watch.history

    counters = dict(report.counters)
    counters["daemon.records.shadow"] = int(bodies["visibility"].get("count", 0))
    counters["daemon.records.bell"] = int(bodies["visibility2"].get("count", 0))
    counters["zmq.messages"] = int(sum(v["messages"] for v in zstats["inputs"]["zmq"].values()))
    counters["zmq.malformed"] = int(zstats["totals"].get("malformed", 0))
    single = double = None
    ns, nb = counters["daemon.records.shadow"], counters["daemon.records.bell"]
    if ns > 1:
        e = visibilities_from_paulis(pairs, M, _values(bodies["visibility"], shadow_labels), count=ns)
        # correct for the known dark-count fraction (a dark count carries no coherence)
        s = 1.0 / (1 - dark)
        single = VisibilityEstimate(e.pairs, e.values * s, e.cov * s**2, e.count, None if e.full_cov is None else e.full_cov * s**2,
                                    e.norm_var)  # a relative variance: unchanged by the scale
    if nb > 1:
        e2 = squared_visibilities_from_paulis(pairs, M, _values(bodies["visibility2"], bell_labels), count=nb)
        s2 = 1.0 / (1 - dark) ** 2
        double = SquaredVisibilityEstimate(e2.pairs, e2.values * s2, e2.stderr * s2, e2.count)
    fits = _fits(args, array.uv(pairs), single, double)
    # ok: no errors, every arrival accounted for, every record folded by the daemon
    ok = res.ok and (single is not None or double is not None)
    result = DemoResult(ok, truth, single, double, fits, counters, history=history, chain=stages)
    _print_report(args, sim, array, pairs, result, time.perf_counter() - t_start, watch.pace)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.no_plot:
        result.files += _plots(args, sim, array, pairs, result)
    result.files.append(_write_json(args, array, pairs, result))
    if getattr(args, "oifits", False) and (single is not None or double is not None):
        from .oifits import export

        result.files.append(export(args.out / "visibilities.oifits", array.positions, lam, single, double, layout=layout,
                                   target=f"simulated {args.source}", int_time=args.duration))
    for f in result.files:
        print(f"wrote {f}")
    if getattr(args, "archive", None) is not None:
        _print_archive_hint(args.archive, shadow_labels, bell_labels)
    if res.errors:
        print(f"errors: {res.errors}", file=sys.stderr)
    return result


def _print_archive_hint(path: Path, shadow_labels: list[str], bell_labels: list[str]) -> None:
    """Where the records are, and how to ask them later."""
    from qsense.streaming.archive import ArchiveError, open_archive

    try:
        s = open_archive(path).summary()
        held = f"{s['batches']} batches: {s['records'].get('shadow', 0)} shadow snapshots, {s['records'].get('bell', 0)} Bell shots"
    except ArchiveError as exc:  # the daemon refused it or it is unreadable: say so, the demo itself is done
        print(f"archive {path}: {exc}")
        return
    print(f"archive {path} ({held}); ask it later, e.g.:")
    print(f"  qsense estimate {path} -o '{shadow_labels[0]}' -s 0,1 --kind shadow")
    print(f"  qsense estimate {path} -o '{bell_labels[0]}' --bell-purity --kind bell")


# ---------------------------------------------------------------------------------------
def _fits(args: argparse.Namespace, uv: np.ndarray, single: VisibilityEstimate | None,
          double: SquaredVisibilityEstimate | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    """Fit the source model to each family (timed; a line on stderr per fit unless ``--no-progress``)."""
    out: dict[str, Any] = {}
    fitter = {"binary": fit_binary, "disk": fit_disk, "gaussian": fit_gaussian}.get(args.source)
    if fitter is None:
        return out
    seed = _binary_seed if args.source == "binary" and len(uv) > FIT_SEED_BASELINES else None
    def start(values: np.ndarray, err: np.ndarray, kind: str) -> dict[str, Any]:
        return {"p0": seed(uv, values, err, kind)} if seed else {}

    jobs: list[tuple[str, Any]] = []
    if single is not None:
        jobs.append(("single-copy", lambda: fitter(uv, single.values, single.stderr, kind="complex", cov=single.full_cov,
                                                   norm_var=single.norm_var, **start(single.values, single.stderr, "complex"))))
    if double is not None and np.all(double.stderr > 0):
        jobs.append(("two-copy", lambda: fitter(uv, double.values, double.stderr, kind="squared",
                                                **start(double.values, double.stderr, "squared"))))
    show = not getattr(args, "no_progress", False)
    for name, job in jobs:
        # a large array's fits take seconds to minutes with nothing else on screen: say what is running
        if show:
            print(f"fitting {args.source} to {name} ({len(uv)} baselines)...", end="", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            out[name] = job()
        except (ValueError, np.linalg.LinAlgError) as exc:  # a degenerate short run must still print its table
            if show:
                print(" failed", file=sys.stderr)
            log.warning("%s fit failed: %s", name, exc)
            continue
        dt = time.perf_counter() - t0
        if show:
            print(f" {dt:.1f} s", file=sys.stderr, flush=True)
        log.debug("%s fit: %.2f s", name, dt)
    return out


def _binary_seed(uv: np.ndarray, data: np.ndarray, err: np.ndarray, kind: str) -> list[float] | None:
    """A binary fit's starting point from :data:`FIT_SEED_BASELINES` baselines spread over |B|.

    ``fit_binary``'s grid search costs grid × baselines (11,520 × 2,016 complex exponentials per
    flux ratio at -M 64: ~40 s of the 53 s run); the same grid on a subset that keeps the shortest
    and the longest baseline (so the same separation range) finds the basin, and the full fit
    then starts there.
    """
    q = np.hypot(uv[:, 0], uv[:, 1])
    sub = np.argsort(q, kind="stable")[np.unique(np.linspace(0, len(q) - 1, FIT_SEED_BASELINES).round().astype(int))]
    f = fit_binary(uv[sub], data[sub], err[sub], kind=kind)
    return [float(v) for v in f.values] if f.constrained and np.all(np.isfinite(f.values)) else None


def _fmt(v: float, e: float, digits: int = 3) -> str:
    return f"{v:.{digits}f} ± {e:.{digits}f}"


#: the memory's eviction reasons as the report names them (``memory.evicted_<reason>`` counters)
_LOSS_REASONS = {
    "memory.evicted_drain": "unpaired opener(s) still in memory at the end",
    "memory.evicted_expired": "waited past the memory cap",
    "memory.evicted_cap": "waited past the memory cap",
    "memory.evicted_full": "memory full",
    "dropped_arrival": "dropped on arrival (queue full)",
    "copies_failed.shadow": "failed shadow measurements",
    "copies_failed.bell": "failed Bell measurements",
}


def _lost_text(c: dict[str, int]) -> str:
    """``lost N`` with what the N copies were: stored copies never measured, or failed measurements."""
    parts: dict[str, int] = {}
    for key, why in _LOSS_REASONS.items():
        if c.get(key, 0):
            parts[why] = parts.get(why, 0) + int(c[key])
    for key, v in c.items():  # an eviction reason this table does not know yet is still shown
        if key.startswith("memory.evicted_") and key not in _LOSS_REASONS and v:
            parts[key.removeprefix("memory.evicted_")] = parts.get(key, 0) + int(v)
    lost = int(c.get("lost", 0))
    if not lost:
        return "lost 0"
    return f"lost {lost} (" + ", ".join(f"{n} {why}" for why, n in parts.items()) + ")"


def _rate_shortfall(args: argparse.Namespace, pace: tuple[float, int] | None) -> str | None:
    """A warning when the copies arrived clearly slower than ``--rate`` asked for, else ``None``.

    ``pace``: (wall seconds between the first and the latest arrival, copies that arrived
    after the first), from the pipeline's ``arrival_span``.  The driver emits every copy of ``--duration`` simulated seconds, so a
    process that cannot keep up does not lose copies: it runs late, and the wall-clock rate says so.
    """
    if pace is None or pace[0] <= 0:
        return None
    wall, arrived = pace
    expected = args.rate * wall
    # arrivals are Poisson (and come in blocks): only a shortfall well beyond that is a slow process
    if arrived >= RATE_SHORTFALL * expected - 3 * math.sqrt(expected):
        return None
    achieved = arrived / wall
    return (f"warning: achieved {achieved:.0f} copies/s, {100 * achieved / args.rate:.0f}% of the requested "
            f"--rate {args.rate:g} "
            f"({arrived} copies in {wall:.1f} s of wall time, {expected:.0f} requested): the process is CPU-bound "
            f"(simulating, scheduling and estimating {args.telescopes} telescopes costs more than the pacing allows), so the "
            f"{args.duration:g} s observation ran late; every copy is still counted; lower --rate or -M for real time")


def _pulls(res: DemoResult) -> dict[str, np.ndarray]:
    """Per-baseline pulls (estimate − truth) / error of each family, as arrays over the pairs."""
    out: dict[str, np.ndarray] = {}
    s, d, truth = res.single, res.double, res.truth
    with np.errstate(divide="ignore", invalid="ignore"):
        if s is not None:
            out["re"] = (s.values.real - truth.real) / s.stderr_re
            out["im"] = (s.values.imag - truth.imag) / s.stderr_im
        if d is not None:
            out["v2"] = (d.values - np.abs(truth) ** 2) / d.stderr
    return out


def _worst_pull(pulls: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Each baseline's largest |pull| over the families (NaN-safe; 0 where nothing was estimated)."""
    if not pulls:
        return np.zeros(n)
    a = np.abs(np.vstack(list(pulls.values())))
    return np.max(np.where(np.isfinite(a), a, 0.0), axis=0)


def _print_report(args, sim, array, pairs, res: DemoResult, elapsed: float, pace: tuple[float, int] | None = None) -> None:
    """The run's summary on stdout: chain, counters, the table (or its summary for large arrays), fits."""
    c = res.counters
    B = array.baselines(pairs)
    L = np.hypot(B[:, 0], B[:, 1])
    truth = res.truth
    print()
    print(f"qsense demo: {args.source} observed by {array.M} telescopes at {args.wavelength:g} nm for {args.duration:g} s "
          f"({args.rate:g} photons/s, policy {args.policy})")
    print("chain: " + " -> ".join(res.chain))
    arrived = int(c.get("arrived", 0))
    print(f"copies {arrived}: {c.get('scheduler.shadow_copies', 0)} single-copy shadows, "
          f"{c.get('scheduler.bell_pairs', 0)} Bell pairs; {_lost_text(c)}; "
          f"ZeroMQ batches {c['zmq.messages']} (malformed {c['zmq.malformed']}); daemon records "
          f"{c['daemon.records.shadow']} shadow + {c['daemon.records.bell']} Bell")
    shortfall = _rate_shortfall(args, pace)
    if shortfall is not None:
        print(shortfall)
    elif pace is not None and pace[0] > 0:
        print(f"paced: {pace[1] / pace[0]:.0f} copies/s of wall time while observing (--rate {args.rate:g})")
    if sim.dark_fraction > 0:
        print(f"estimates corrected for the known dark-count fraction {sim.dark_fraction:.3g}")
    print()
    hdr = (f"{'pair':>6} {'|B| m':>7} {'|V| true':>8} {'|V| single-copy':>16} {'phase true':>10} {'phase single-copy':>18} "
           f"{'|V|^2 true':>10} {'|V|^2 two-copy':>16}")
    s, d = res.single, res.double

    def row(p: int) -> str:
        j, k = pairs[p]
        amp = _fmt(s.amplitude[p], s.amplitude_err[p]) if s is not None else "-"
        ph = f"{math.degrees(s.phase[p]):7.1f} ± {math.degrees(s.phase_err[p]):5.1f}" if s is not None else "-"
        v2 = _fmt(d.values[p], d.stderr[p]) if d is not None else "-"
        return (f"{f'{j}-{k}':>6} {L[p]:7.1f} {abs(truth[p]):8.3f} {amp:>16} {math.degrees(np.angle(truth[p])):10.1f} "
                f"{ph:>18} {abs(truth[p]) ** 2:10.3f} {v2:>16}")

    pulls = _pulls(res)
    n = len(pairs)
    if n <= SUMMARY_BASELINES or getattr(args, "full_table", False):
        print(hdr)
        print("-" * len(hdr))
        for p in range(n):
            print(row(p))
    else:
        # thousands of rows are unreadable: the pull statistics say whether the estimates agree
        # with the truth, and a few rows show what they look like
        print(f"{n} baselines, |B| {L.min():.1f}-{L.max():.1f} m: summary (--full-table prints every row; "
              f"results.json holds every baseline)")
        print(f"{'family':>24} {'values':>7} {'median |pull|':>14} {'worst |pull| (pair)':>22} {'within 2 sigma':>15}")
        for name, keys in (("single-copy Re/Im V", ("re", "im")), ("two-copy |V|^2", ("v2",))):
            if not all(k in pulls for k in keys):
                continue
            z = np.abs(np.concatenate([pulls[k] for k in keys]))
            z = z[np.isfinite(z)]
            if not len(z):
                continue
            w = int(np.argmax(_worst_pull({k: pulls[k] for k in keys}, n)))
            print(f"{name:>24} {len(z):7d} {np.median(z):14.2f} {f'{z.max():.2f} ({pairs[w][0]}-{pairs[w][1]})':>22} "
                  f"{np.mean(z < 2) * 100:14.0f}%")
        # for unit Gaussian pulls: median |z| 0.674, 95.4% within 2 sigma, the worst of N grows like sqrt(2 ln N)
        print(f"{'(Gaussian pulls)':>24} {'':7} {0.674:14.2f} {f'~{math.sqrt(2 * math.log(2 * n)):.1f}':>22} {95.4:14.1f}%")
        worst = np.argsort(-_worst_pull(pulls, n), kind="stable")[:5]
        order = np.argsort(L, kind="stable")
        rep = [int(order[round(q * (n - 1))]) for q in (0.0, 0.25, 0.5, 0.75, 1.0)]
        print()
        print(hdr)
        print("-" * len(hdr))
        print("worst (largest |pull|):")
        for p in worst:
            print(row(int(p)))
        print("representative (shortest, quartiles of |B|, longest):")
        for p in rep:
            print(row(p))
    if "re" in pulls:
        z = np.concatenate([pulls["re"], pulls["im"]])
        print(f"single-copy: {np.mean(np.abs(z) < 2) * 100:.0f}% of Re/Im within 2 sigma of the truth")
    if "v2" in pulls:
        print(f"two-copy:    {np.mean(np.abs(pulls['v2']) < 2) * 100:.0f}% of |V|^2 within 2 sigma of the truth")
    truth_p = _truth_params(args)
    if res.fits:
        print()
        names = next(iter(res.fits.values())).names
        units = next(iter(res.fits.values())).units
        print(f"{'parameter':>22} {'truth':>10} " + " ".join(f"{k + ' fit':>22}" for k in res.fits))
        for i, n_ in enumerate(names):
            row_ = f"{n_ + (' (' + units[i] + ')' if units[i] else ''):>22} {truth_p.get(n_, float('nan')):10.3f} "
            # a refused fit (dof <= 0) has no values: say so rather than print NaN or a fake 0.000 error
            row_ += " ".join(f"{(_fmt(f.values[i], f.stderr[i]) if f.constrained else 'unconstrained'):>22}"
                             for f in res.fits.values())
            print(row_)
        print("chi2/dof: " + ", ".join(f"{k} {f.chi2:.1f}/{f.dof}" if f.constrained else f"{k} -/{f.dof} (unconstrained)"
                                       for k, f in res.fits.items()))
        for k, f in res.fits.items():
            if not f.constrained:
                print(f"{k} fit refused: {f.message}")
            for flag in f.flags:
                print(f"{k} fit: {flag}")
    print(f"\nfinished in {elapsed:.1f} s")


def _projection(args: argparse.Namespace, B: np.ndarray) -> tuple[np.ndarray, str]:
    """x-axis of the visibility plot: baseline projected on the binary axis, or |B|."""
    if args.source == "binary":
        pa = math.radians(args.position_angle)
        return B @ np.array([math.sin(pa), math.cos(pa)]), "baseline projected on the binary axis (m)"
    if args.source == "point":
        off = np.array([1.0, 0.5]) / math.hypot(1.0, 0.5)
        return B @ off, "baseline projected on the source offset (m)"
    return np.hypot(B[:, 0], B[:, 1]), "baseline length |B| (m)"


def _plots(args, sim, array, pairs, res: DemoResult) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    lam = array.wavelength
    B = array.baselines(pairs)
    x, xlabel = _projection(args, B)
    # the truth curve along the projection axis (exact for binary/point; radial for disks)
    xmax = max(np.abs(x).max() * 1.08, 1.0)
    xs = np.linspace(0 if args.source in ("disk", "gaussian") else -xmax, xmax, 600)
    if args.source == "binary":
        pa = math.radians(args.position_angle)
        direction = np.array([math.sin(pa), math.cos(pa)])
    elif args.source == "point":
        direction = np.array([1.0, 0.5]) / math.hypot(1.0, 0.5)
    else:
        direction = np.array([1.0, 0.0])
    curve = sim.source.visibility(np.outer(xs, direction) / lam)
    if args.source in ("binary", "point"):
        # fold to non-negative projections: V(-B) = conj V(B)
        x = np.abs(x)
        keep = xs >= 0
        xs, curve = xs[keep], curve[keep]
        sign = np.sign(B @ direction)
    else:
        sign = np.ones(len(x))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8.5, 8), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    ax1.plot(xs, np.abs(curve), color="0.3", lw=1.5, label="truth |V|")
    s, d = res.single, res.double
    large = len(pairs) > SUMMARY_BASELINES
    if large:
        # thousands of error bars are a solid band: points coloured by baseline angle (mod 180°, a
        # cyclic map), two-copy offset below, one grey error bar scale in the legend
        angle = np.degrees(np.arctan2(B[:, 0], B[:, 1])) % 180.0
        kw = {"c": angle, "cmap": "twilight", "vmin": 0.0, "vmax": 180.0, "s": 7, "linewidths": 0}
        sc = None
        if s is not None:
            sc = ax1.scatter(x, s.amplitude, marker="o", label=f"single-copy shadows ({s.count} photons; "
                             f"median error {np.median(s.amplitude_err):.2f})", **kw)
        if d is not None:
            sc = ax1.scatter(x, d.amplitude - 1.1 if s is not None else d.amplitude, marker="s",
                             label=f"two-copy Bell, √|V|² ({d.count} pairs; median error {np.median(d.amplitude_err):.2f})"
                             + ("; shifted by −1.1" if s is not None else ""), **kw)
            if s is not None:
                ax1.plot(xs, np.abs(curve) - 1.1, color="0.3", lw=1.5)
        if sc is not None:
            fig.colorbar(sc, ax=[ax1, ax2], label="baseline angle (deg E of N, mod 180)", fraction=0.04, pad=0.02)
        # one baseline's estimate is noisy at large M (error ~0.5 at -M 64): binned means along the
        # axis show the curve.  V depends on the plotted projection only (folded: conj for B·s < 0),
        # so complex V and |V|^2 (both unbiased) are averaged before the amplitude is taken
        edges = np.linspace(0.0, float(x.max()) * 1.0001, 31)
        which = np.digitize(x, edges) - 1
        centre = 0.5 * (edges[1:] + edges[:-1])
        filled = np.array([np.any(which == b) for b in range(len(centre))])
        if s is not None:
            folded = np.where(sign < 0, np.conj(s.values), s.values)
            mean = np.array([folded[which == b].mean() if filled[b] else np.nan for b in range(len(centre))])
            ax1.plot(centre[filled], np.abs(mean[filled]), "o", color="black", ms=5, mfc="white", mew=1.5,
                     label="single-copy, binned mean")
            ax2.plot(centre[filled], np.degrees(np.angle(mean[filled])), "o", color="black", ms=5, mfc="white", mew=1.5,
                     label="binned mean")
        if d is not None:
            m2 = np.array([d.values[which == b].mean() if filled[b] else np.nan for b in range(len(centre))])
            ax1.plot(centre[filled], np.sqrt(np.clip(m2[filled], 0.0, None)) - (1.1 if s is not None else 0.0), "s",
                     color="black", ms=5, mfc="white", mew=1.5, label="two-copy, √(binned mean |V|²)")
        if s is not None:
            ax2.scatter(x, np.degrees(np.angle(s.values)) * np.where(sign < 0, -1.0, 1.0), marker="o",
                        label="single-copy shadows", **kw)
    elif s is not None:
        ax1.errorbar(x - 0.6, s.amplitude, yerr=s.amplitude_err, fmt="o", ms=5, capsize=3, color="tab:blue",
                     label=f"single-copy shadows ({s.count} photons)")
    if d is not None and not large:
        ax1.errorbar(x + 0.6, d.amplitude, yerr=d.amplitude_err, fmt="s", ms=5, capsize=3, color="tab:orange",
                     label=f"two-copy Bell, √|V|² ({d.count} pairs)")
    ax1.set_ylabel("visibility amplitude |V|")
    ax1.set_ylim(-1.2 if large and s is not None and d is not None else -0.02, 1.08)
    ax1.grid(alpha=0.3)
    ax1.legend(loc="lower left", fontsize=9)
    title = {"binary": f"binary: separation {args.separation:g} mas, PA {args.position_angle:g}°, flux ratio {args.flux_ratio:g}",
             "disk": f"uniform disk: diameter {args.diameter:g} mas", "gaussian": f"Gaussian: FWHM {args.diameter:g} mas",
             "point": "off-axis point source"}[args.source]
    ax1.set_title(f"{array.M} telescopes, λ = {args.wavelength:g} nm — {title}", fontsize=11)
    ax2.plot(xs, np.degrees(np.angle(curve)), color="0.3", lw=1.5, label="truth arg V")
    if s is not None and not large:
        # folded baselines: V(-B) = conj V(B), so the phase changes sign
        ax2.errorbar(x, np.degrees(np.angle(s.values)) * np.where(sign < 0, -1.0, 1.0), yerr=np.degrees(s.phase_err), fmt="o", ms=5, capsize=3, color="tab:blue", label="single-copy shadows")
    ax2.set_ylabel("phase arg V (deg)")
    ax2.set_xlabel(xlabel)
    ax2.set_ylim(-200, 200)
    ax2.set_yticks([-180, -90, 0, 90, 180])
    ax2.grid(alpha=0.3)
    ax2.legend(loc="lower left", fontsize=9)
    if not large:  # tight_layout does not know the shared colour bar
        fig.tight_layout()
    f1 = args.out / "visibilities.png"
    fig.savefig(f1, dpi=110)
    plt.close(fig)
    files.append(f1)

    fig, ax = plt.subplots(figsize=(7.5, 5))
    # only finite points: a plot must not be scaled by one degenerate early estimate
    h = {k: [row for row in rows if all(math.isfinite(x) for x in row)] for k, rows in res.history.items()}
    if h.get("single_v2"):
        a = np.array(h["single_v2"])
        ax.loglog(a[:, 0], a[:, 1], "o-", ms=3, color="tab:blue", label="single-copy shadows: |V|² RMS error")
    if h.get("double"):
        a = np.array(h["double"])
        ax.loglog(a[:, 0], a[:, 1], "s-", ms=3, color="tab:orange", label="two-copy Bell: |V|² RMS error")
        ax.loglog(a[:, 0], a[:, 2], "--", color="tab:orange", alpha=0.7, label="two-copy Bell: mean error bar")
    if h.get("single"):
        a = np.array(h["single"])
        ax.loglog(a[:, 0], a[:, 1], "^-", ms=3, color="tab:green", alpha=0.8, label="single-copy shadows: complex V RMS error")
        ax.loglog(a[:, 0], a[:, 2], "--", color="tab:green", alpha=0.6, label="single-copy shadows: mean error bar")
        n = a[:, 0]
        ax.loglog(n, a[-1, 2] * np.sqrt(n[-1] / n), ":", color="0.5", label="∝ 1/√copies")
    ax.set_xlabel("copies consumed (photons)")
    ax.set_ylabel("RMS error over baselines")
    ax.set_title(f"convergence: {array.M} telescopes, {args.source}", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    f2 = args.out / "convergence.png"
    fig.savefig(f2, dpi=110)
    plt.close(fig)
    files.append(f2)
    files.append(_uv_plot(args, sim, array, pairs, res, plt))
    return files


def _uv_plot(args: argparse.Namespace, sim: Any, array: Any, pairs: np.ndarray, res: DemoResult, plt: Any) -> Path:
    """``uvplane.png``: true |V| over the (u, v) plane, each baseline's estimate at ±B in the same colours."""
    B = array.baselines(pairs)
    lim = float(np.abs(B).max()) * 1.1
    g = np.linspace(-lim, lim, 161)
    U, V = np.meshgrid(g, g)
    # the axes are baseline metres (East, North); the source takes spatial frequencies B/λ
    img = np.abs(sim.source.visibility(np.stack([U.ravel(), V.ravel()], axis=-1) / array.wavelength)).reshape(U.shape)
    panels = [(name, est) for name, est in (("single-copy |V|", None if res.single is None else res.single.amplitude),
                                            ("two-copy √|V|²", None if res.double is None else res.double.amplitude))
              if est is not None]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(6 * max(len(panels), 1) + 1, 5.6), squeeze=False)
    size = 40 if len(pairs) <= SUMMARY_BASELINES else 9
    im = None
    for ax, (name, amp) in zip(axes[0], panels or [("truth", None)]):
        im = ax.imshow(img, origin="lower", extent=(-lim, lim, -lim, lim), cmap="viridis", vmin=0.0, vmax=1.0, alpha=0.85)
        if amp is not None:
            for sgn in (1.0, -1.0):  # V(-B) = conj V(B): the same amplitude at the mirrored point
                ax.scatter(sgn * B[:, 0], sgn * B[:, 1], c=np.clip(amp, 0.0, 1.0), cmap="viridis", vmin=0.0, vmax=1.0, s=size,
                           edgecolors="white", linewidths=0.4)
        ax.set_title(f"{name} at ±B (points) over the true |V|", fontsize=10)
        ax.set_xlabel("u: baseline East (m)")
        ax.set_ylabel("v: baseline North (m)")
        ax.set_aspect("equal")
    if im is not None:
        fig.colorbar(im, ax=list(axes[0]), label="|V|", fraction=0.04, pad=0.02)
    fig.suptitle(f"uv plane: {array.M} telescopes, {len(pairs)} baselines, λ = {args.wavelength:g} nm, {args.source}",
                 fontsize=11)
    path = args.out / "uvplane.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _baseline_rows(array: Any, pairs: np.ndarray, res: DemoResult) -> list[dict[str, Any]]:
    """One dict per baseline: pair, geometry, truth, both estimates and their pulls (JSON-safe: NaN -> None)."""
    B = array.baselines(pairs)
    pulls = _pulls(res)
    s, d, truth = res.single, res.double, res.truth

    def num(v: float) -> float | None:
        return float(v) if math.isfinite(v) else None

    rows = []
    for p, (j, k) in enumerate(pairs):
        r: dict[str, Any] = {"pair": [int(j), int(k)], "length_m": float(np.hypot(*B[p])),
                             "angle_deg": float(np.degrees(np.arctan2(B[p, 0], B[p, 1])) % 180.0),
                             "v_true_re": float(truth[p].real), "v_true_im": float(truth[p].imag)}
        if s is not None:
            r.update(v_re=num(s.values[p].real), v_im=num(s.values[p].imag), amplitude=num(s.amplitude[p]),
                     amplitude_err=num(s.amplitude_err[p]), pull_re=num(pulls["re"][p]), pull_im=num(pulls["im"][p]))
        if d is not None:
            r.update(v2=num(d.values[p]), v2_err=num(d.stderr[p]), pull_v2=num(pulls["v2"][p]))
        rows.append(r)
    return rows


def _write_json(args, array, pairs, res: DemoResult) -> Path:
    s, d = res.single, res.double
    doc = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("_") and not callable(v)},
        "telescopes": array.positions.tolist(),
        "wavelength_m": array.wavelength,
        "pairs": pairs.tolist(),
        "truth": {"re": res.truth.real.tolist(), "im": res.truth.imag.tolist()},
        "single_copy": None if s is None else s.as_dict(),
        "two_copy": None if d is None else d.as_dict(),
        "fits": {k: f.as_dict() for k, f in res.fits.items()},
        "truth_parameters": _truth_params(args),
        "counters": res.counters,
        "chain": res.chain,
        "history": res.history,
        # every baseline, one row each (the printed table is a summary above SUMMARY_BASELINES)
        "baselines": _baseline_rows(array, pairs, res),
    }
    path = args.out / "results.json"
    path.write_text(json.dumps(doc, indent=1))
    return path
