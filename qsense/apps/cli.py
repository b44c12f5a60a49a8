"""The ``qsense`` command line.

Each sub-command lives in its own module, which provides
``add_arguments(parser)`` and ``run(args) -> int``; this file only wires them up,
so ``qsense --help`` and ``qsense COMMAND --help`` always describe every option.
"""

from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType
from typing import Sequence

from qsense import __version__

from . import daemon, demo, estimate, oifits, record, reduce, replay, watch

#: sub-command name -> (module, one-line help); each module provides
#: ``add_arguments(parser)`` and ``run(args) -> int``
COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "demo": (demo, "simulated telescope array end to end: memory, scheduler, ZeroMQ, daemon, plot"),
    "daemon": (daemon, "online estimation daemon configured by a TOML file"),
    "estimate": (estimate, "estimate observables / entropies from a record archive or a recorded file"),
    "reduce": (reduce, "merge several daemons' estimator states (live shards) into one estimate stream"),
    "record": (record, "receive record batches over ZeroMQ into a record archive (fsync, then acknowledge)"),
    "replay": (replay, "send an archive's batches again, reliably, with their original (source, epoch, seq)"),
    "oifits": (oifits, "a daemon's visibility estimates as an OIFITS2 file (--check: validate a file)"),
    "watch": (watch, "live view of a running daemon's estimates (snapshot, then updates; --json for scripts)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="qsense",
        description="Quantum sensing on streams: classical shadows and two-copy Bell measurements, estimated online.",
    )
    parser.add_argument("--version", action="version", version=f"qsense {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level (default INFO)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (mod, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip().splitlines()[0])
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qsense`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
