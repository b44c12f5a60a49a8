"""The ``qsense`` command line.

Each sub-command lives in its own module, which provides
``add_arguments(parser)`` and ``run(args) -> int``; this file only wires them up,
so ``qsense --help`` and ``qsense COMMAND --help`` always describe every option.

Only the module of the command being run is imported (``qsense estimate``
never loads the daemon, ZeroMQ or the demo's plotting): start-up is a large
part of a short command's time.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType

from qsense import __version__

#: sub-command name (also its module's name under :mod:`qsense.apps`) -> one-line help; each module
#: provides ``add_arguments(parser)`` and ``run(args) -> int`` and is imported only when needed
COMMANDS: dict[str, str] = {
    "demo": "simulated telescope array end to end: memory, scheduler, ZeroMQ, daemon, plot",
    "daemon": "online estimation daemon configured by a TOML file",
    "estimate": "estimate observables / entropies from a record archive or a recorded file",
    "reduce": "merge several daemons' estimator states (live shards) into one estimate stream",
    "record": "receive record batches over ZeroMQ into a record archive (fsync, then acknowledge)",
    "replay": "send an archive's batches again, reliably, with their original (source, epoch, seq)",
    "oifits": "a daemon's visibility estimates as an OIFITS2 file (--check: validate a file)",
    "watch": "live view of a running daemon's estimates (snapshot, then updates; --json for scripts)",
}

#: top-level options that take a value (the word after them is not the command)
_VALUED = ("--log-level",)


def command_module(name: str) -> ModuleType:
    """The module implementing sub-command ``name``, imported now (import statements, never import strings)."""
    match name:
        case "demo":
            from . import demo as mod
        case "daemon":
            from . import daemon as mod
        case "estimate":
            from . import estimate as mod
        case "reduce":
            from . import reduce as mod
        case "record":
            from . import record as mod
        case "replay":
            from . import replay as mod
        case "oifits":
            from . import oifits as mod
        case "watch":
            from . import watch as mod
        case _:  # not in COMMANDS
            raise KeyError(name)
    return mod


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser listing every sub-command.

    ``commands``: the sub-commands whose options are added, which imports their
    modules (default: all of them); the others are listed with their one-line help
    only, which is all ``qsense --help`` shows of them.
    """
    full = set(COMMANDS) if commands is None else set(commands)
    parser = argparse.ArgumentParser(
        prog="qsense",
        description="Quantum sensing on streams: classical shadows and two-copy Bell measurements, estimated online.",
    )
    parser.add_argument("--version", action="version", version=f"qsense {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level (default INFO)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_ in COMMANDS.items():
        if name not in full:
            sub.add_parser(name, help=help_, description=help_)
            continue
        mod = command_module(name)
        p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip().splitlines()[0])
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def requested_command(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (the first word that is neither an option nor an
    option's value), or None; an unknown word is returned as is, for argparse to refuse."""
    it = iter(argv)
    for tok in it:
        if tok == "--":
            return next(it, None)
        if tok.startswith("-"):
            # argparse accepts unambiguous prefixes of long options (--log DEBUG)
            if "=" not in tok and len(tok) > 2 and any(v.startswith(tok) for v in _VALUED):
                next(it, None)
            continue
        return tok
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qsense`` console script; returns the exit status.

    Without ``argv`` (the console script: this process's own command line) the
    objects alive at the end are frozen out of the garbage collector
    (:func:`gc.freeze`) before returning, which makes the interpreter's exit
    about 0.3 CPU-seconds cheaper after numba has been loaded; exit handlers,
    thread joins and flushes still run as usual.
    """
    own_process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    name = requested_command(argv)
    parser = build_parser([name] if name in COMMANDS else [])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    rc = int(args._run(args) or 0)
    if own_process:
        # the final collections would walk every object the imports made (numba's
        # type registries above all); a process that ends next need not pay for that
        gc.freeze()
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
