"""``qsense oifits``: a daemon's visibility estimates as an OIFITS2 file, or a check of one.

The daemon publishes generic Pauli estimates; a shadow estimator configured with
``visibility_observables`` and a Bell estimator with
``squared_visibility_observables`` (as ``qsense demo`` configures them) hold
everything OI_VIS and OI_VIS2 need.  Save their bodies with ``qsense watch
--json`` (one ``{"topic", "body"}`` object per line; the last body of each
estimator counts) or pass a file holding one body or a list of bodies, give the
array (``--array chara`` or ``--positions FILE`` with [[east, north], ...] metres)
and the wavelength, and get the file:

    qsense watch tcp://127.0.0.1:5556 --snapshot tcp://127.0.0.1:5557 --json --count 2 > bodies.jsonl
    qsense oifits bodies.jsonl --array chara --wavelength 800 -o star.oifits
    qsense oifits --check star.oifits

Exit status 2 with one line on stderr for unusable input; ``--check`` exits 1
when the file is not valid OIFITS2 (every problem on stdout).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from qsense.estimators.interferometry import (
    SquaredVisibilityEstimate,
    VisibilityEstimate,
    squared_visibilities_from_paulis,
    squared_visibility_observables,
    visibilities_from_paulis,
    visibility_observables,
)
from qsense.estimators.interferometry.oifits import check_oifits, write_oifits

__all__ = [
    "add_arguments",
    "bodies_from_text",
    "export",
    "run",
    "squared_visibilities_from_body",
    "visibilities_from_body",
]

_PAIR = re.compile(r"^X(\d+) X(\d+)$")
_Z = re.compile(r"^Z(\d+)$")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``qsense oifits``."""
    p.add_argument("input", type=Path, help="daemon estimate bodies (JSON: one body, a list, or `qsense watch --json` "
                   "lines); with --check, the OIFITS file to check")
    p.add_argument("-o", "--output", type=Path, default=Path("visibilities.oifits"), help="file to write (default visibilities.oifits)")
    p.add_argument("--check", action="store_true", help="check INPUT against the OIFITS2 standard instead of writing")
    p.add_argument("--array", metavar="NAME", help="a real layout (chara, vlti-ut, vlti-small, ... or SITE:ST1,ST2,...)")
    p.add_argument("--positions", type=Path, metavar="FILE", help="JSON [[east, north], ...] metres, telescope order")
    p.add_argument("--wavelength", type=float, help="observing wavelength, nm (required to export)")
    p.add_argument("--vis", metavar="NAME", help="the shadow estimator holding the visibility observables (default: found)")
    p.add_argument("--vis2", metavar="NAME", help="the Bell estimator holding the squared-visibility observables (default: found)")
    p.add_argument("--dark", type=float, default=0.0, help="known dark-count fraction of the heralds to correct for (default 0)")
    p.add_argument("--target", default="qsense", help="target name (OI_TARGET, OBJECT; default qsense)")
    p.add_argument("--ra", type=float, default=0.0, help="target right ascension, deg (default 0)")
    p.add_argument("--dec", type=float, default=0.0, help="target declination, deg (default 0)")


def _fail(message: str) -> int:
    print(f"qsense oifits: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Entry point of ``qsense oifits``."""
    try:
        if args.check:
            probs = check_oifits(args.input)
            if probs:
                print("\n".join(f"{args.input}: {p}" for p in probs))
                return 1
            print(f"{args.input}: valid OIFITS2")
            return 0
        return _export(args)
    except (OSError, ValueError) as exc:  # OIFITSError, UnknownArrayError and bad JSON are ValueErrors
        return _fail(" ".join(str(exc).split()))


def _export(args: argparse.Namespace) -> int:
    if args.wavelength is None or not (math.isfinite(args.wavelength) and args.wavelength > 0):
        return _fail("--wavelength (nm, positive) is required to export")
    if not 0 <= args.dark < 0.5:
        return _fail("--dark must lie in [0, 0.5)")
    if (args.array is None) == (args.positions is None):
        return _fail("give the array: --array NAME or --positions FILE (one of them)")
    if not args.input.is_file():
        return _fail(f"{args.input}: no such file")
    bodies = bodies_from_text(args.input.read_text(encoding="utf-8", errors="replace"), str(args.input))
    layout = None
    if args.array is not None:
        from qsense.sims.telescope.stations import named_array

        layout = named_array(args.array)
        positions = layout.positions
    else:
        try:
            positions = np.asarray(json.loads(args.positions.read_text()), dtype=np.float64)
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"--positions {args.positions}: not a JSON list of [east, north] pairs ({exc})") from None
        if positions.ndim != 2 or positions.shape[1] != 2:
            raise ValueError(f"--positions {args.positions}: expected [[east, north], ...]; got shape {positions.shape}")
    M = positions.shape[0]
    vis_body = _pick(bodies, args.vis, "shadow")
    vis2_body = _pick(bodies, args.vis2, "bell")
    vis = visibilities_from_body(vis_body, M, dark=args.dark) if vis_body is not None else None
    vis2 = squared_visibilities_from_body(vis2_body, M, dark=args.dark) if vis2_body is not None else None
    if vis is None and vis2 is None:
        raise ValueError(f"{args.input}: no shadow or Bell body with visibility observables")
    updated = max(float(b.get("updated") or 0.0) for b in (vis_body, vis2_body) if b is not None)
    mjd = updated / 86400.0 + 40587.0 if updated > 0 else None
    path = export(args.output, positions, args.wavelength * 1e-9, vis, vis2, layout=layout, target=args.target,
                  ra=args.ra, dec=args.dec, mjd=mjd)
    rows = [f"{len(vis.pairs)} OI_VIS rows ({vis.count} snapshots)" if vis is not None else "",
            f"{len(vis2.pairs)} OI_VIS2 rows ({vis2.count} shots)" if vis2 is not None else
            "OI_VIS2 from the single-copy |V|^2"]
    print(f"wrote {path}: " + ", ".join(r for r in rows if r))
    return 0


def bodies_from_text(text: str, where: str = "input") -> list[dict]:
    """Estimate bodies from a JSON body, a JSON list of bodies, or ``qsense watch --json`` lines
    (``{"topic", "body"}``); later bodies of the same estimator replace earlier ones."""
    text = text.strip()
    try:
        docs: list[Any] = [json.loads(text)]
    except ValueError:
        try:
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise ValueError(f"{where}: not JSON nor JSON lines ({exc})") from None
    flat: list[Any] = []
    for d in docs:
        flat += d if isinstance(d, list) else [d]
    latest: dict[str, dict] = {}
    for i, d in enumerate(flat):
        body = d.get("body", d) if isinstance(d, dict) else None
        if not isinstance(body, dict) or not isinstance(body.get("estimates"), dict):
            continue
        latest[str(body.get("estimator", i))] = body
    if not latest:
        raise ValueError(f"{where}: no estimate body (an object with 'estimates') found")
    return list(latest.values())


def _pick(bodies: list[dict], name: str | None, kind: str) -> dict | None:
    """The body named ``name``, else the first of ``kind`` holding pair observables (None if none)."""
    if name is not None:
        for b in bodies:
            if b.get("estimator") == name:
                return b
        raise ValueError(f"no estimator {name!r} among {sorted(str(b.get('estimator')) for b in bodies)}")
    for b in bodies:
        keys = b["estimates"]
        has_z = any(_Z.match(k) for k in keys)
        if b.get("type") in (None, kind) and any(_PAIR.match(k) for k in keys) and has_z == (kind == "shadow"):
            return b
    return None


def _pairs(est: dict, M: int, where: str) -> np.ndarray:
    pairs = sorted({(int(m.group(1)), int(m.group(2))) for k in est if (m := _PAIR.match(k))})
    pairs = [(j, k) for j, k in pairs if j < k]
    if not pairs:
        raise ValueError(f"{where}: no 'X{{j}} X{{k}}' observables")
    top = max(max(p) for p in pairs)
    if top >= M:
        raise ValueError(f"{where}: observables reach telescope {top}, but the array has {M} telescopes")
    return np.asarray(pairs, dtype=np.int64)


def _values(est: dict, labels: list[str], where: str) -> np.ndarray:
    missing = [lab for lab in labels if lab not in est]
    if missing:
        raise ValueError(f"{where}: missing observable {missing[0]!r} ({len(missing)} missing)")
    try:
        v = np.array([float(est[lab]["value"]) for lab in labels])
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"{where}: an observable has no numeric 'value'") from None
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{where}: non-finite observable values")
    return v


def visibilities_from_body(body: dict, M: int, dark: float = 0.0) -> VisibilityEstimate:
    """Complex visibilities from a daemon shadow estimator's body (observables in
    :func:`visibility_observables` form for every pair it holds, and ``Z{j}`` for
    all M telescopes), corrected for a known dark-count fraction ``dark``."""
    where = f"estimator {body.get('estimator', '?')!r}"
    est = body["estimates"]
    pairs = _pairs(est, M, where)
    zs = sorted(int(m.group(1)) for k in est if (m := _Z.match(k)))
    if zs and zs[-1] + 1 != M:
        raise ValueError(f"{where}: holds Z0..Z{zs[-1]} ({zs[-1] + 1} telescopes), but the array has {M} telescopes")
    count = int(body.get("count") or 0)
    if count < 2:
        raise ValueError(f"{where}: needs at least 2 snapshots; has {count}")
    e = visibilities_from_paulis(pairs, M, _values(est, visibility_observables(pairs, M), where), count=count)
    s = 1.0 / (1.0 - dark)  # a dark count carries no coherence
    return VisibilityEstimate(e.pairs, e.values * s, e.cov * s**2, e.count, None if e.full_cov is None else e.full_cov * s**2)


def squared_visibilities_from_body(body: dict, M: int, dark: float = 0.0) -> SquaredVisibilityEstimate:
    """|V|^2 from a daemon Bell estimator's body (:func:`squared_visibility_observables` form)."""
    where = f"estimator {body.get('estimator', '?')!r}"
    est = body["estimates"]
    pairs = _pairs(est, M, where)
    count = int(body.get("count") or 0)
    if count < 2:
        raise ValueError(f"{where}: needs at least 2 shots; has {count}")
    e = squared_visibilities_from_paulis(pairs, M, _values(est, squared_visibility_observables(pairs), where), count=count)
    s2 = 1.0 / (1.0 - dark) ** 2
    return SquaredVisibilityEstimate(e.pairs, e.values * s2, e.stderr * s2, e.count)


def export(path: Path, positions: np.ndarray, wavelength: float, vis: VisibilityEstimate | None,
           vis2: SquaredVisibilityEstimate | None, *, layout: Any = None, **kw: Any) -> Path:
    """Write the OIFITS file, describing the array by ``layout`` (a
    :class:`~qsense.sims.telescope.StationLayout`) when given; ``kw`` go to
    :func:`~qsense.estimators.interferometry.oifits.write_oifits`."""
    extra = layout.oifits_kwargs() if layout is not None else {}
    return write_oifits(path, positions, wavelength, vis, vis2, **extra, **kw)
