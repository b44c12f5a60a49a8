"""``qsense daemon --config FILE``: the online estimation daemon from the command line.

Loads and validates the TOML configuration (:mod:`qsense.streaming.config`),
runs :class:`~qsense.streaming.daemon.EstimationDaemon` until SIGTERM/SIGINT,
re-reads its ``[[estimators]]`` on SIGHUP (:meth:`EstimationDaemon.reload`:
new estimators are back-filled from the archive before they go live), and
maps every configuration or start-up failure to one line on stderr and exit 2
(a checkpointed estimator of another configuration included, unless
``--reset-estimators``/``--allow-config-change``).  What was resumed from a
checkpoint is always said on stderr; ``--reset-source`` is the operator reset
of a source's sequence state.  A checkpoint that fails authentication or
validation is moved aside and the start fails (exit 2) unless
``--fresh-on-bad-checkpoint``; one of the earlier unsigned format needs
``--trust-unsigned-checkpoint`` once.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
from pathlib import Path

from qsense.streaming.checkpoint import CheckpointError
from qsense.streaming.config import ConfigError, DaemonConfig, load_config
from qsense.streaming.daemon import DaemonError, EstimationDaemon

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``qsense daemon``."""
    parser.add_argument("--config", required=True, metavar="FILE", help="daemon configuration (TOML); see docs/daemon.md")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    parser.add_argument("--no-resume", action="store_true",
                        help="ignore an existing checkpoint (it is overwritten at the next checkpoint)")
    parser.add_argument("--reset-estimators", action="append", default=[], metavar="NAME,...",
                        help="start these estimators from zero although the checkpoint has them (with an archive they "
                             "are back-filled from it); needed to resume when their configuration changed")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="start every estimator whose configuration changed since the checkpoint from zero instead "
                             "of refusing to start")
    parser.add_argument("--reset-source", action="append", default=[], metavar="NAME",
                        help="forget the sequence state of source NAME at start (repeatable), e.g. one silenced by a "
                             "forged sequence number; see docs/daemon.md, trust model")
    parser.add_argument("--fresh-on-bad-checkpoint", action="store_true",
                        help="if the checkpoint is refused (MAC mismatch, corrupt, inconsistent with the configuration), "
                             "move it aside to <path>.refused-<UTC time> and start from zero instead of exiting 2")
    parser.add_argument("--trust-unsigned-checkpoint", action="store_true",
                        help="accept once a checkpoint of the earlier unauthenticated format (QSCKPT01); it is still "
                             "validated, and the next checkpoint written is signed with the key file")
    parser.add_argument("--ready-file", metavar="PATH",
                        help="once running, write a JSON file with the pid and the bound endpoints (for supervisors/tests)")


async def _serve(cfg: DaemonConfig, args: argparse.Namespace) -> int:
    reset = [n.strip() for arg in args.reset_estimators for n in arg.split(",") if n.strip()]
    daemon = EstimationDaemon(cfg, resume=not args.no_resume, reset_sources=args.reset_source, reset_estimators=reset,
                              allow_config_change=args.allow_config_change)
    daemon.fresh_on_bad_checkpoint = args.fresh_on_bad_checkpoint
    daemon.trust_unsigned_checkpoint = args.trust_unsigned_checkpoint
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    reloads: set[asyncio.Task] = set()

    async def reload() -> None:
        try:
            await daemon.reload(args.config)
        except ConfigError as exc:  # a bad edit keeps the running configuration
            log.error("reload refused, running configuration kept: %s", exc)
        except Exception:  # noqa: BLE001 -- a failed reload must not stop the daemon
            log.exception("reload failed; running configuration kept")

    def on_hup() -> None:
        task = loop.create_task(reload(), name="qsense-reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    # SIGHUP: re-read [[estimators]]; new ones are back-filled from the archive before they go live
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        await daemon.start()
    except (DaemonError, CheckpointError, ConfigError) as exc:
        print(f"qsense daemon: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 -- a start-up failure is one line and exit 2, never a traceback
        print(f"qsense daemon: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if daemon.resume_summary is not None and not logging.getLogger("qsense.streaming.daemon").isEnabledFor(logging.WARNING):
        # the daemon logged it at WARNING; say it anyway when the log level hides that: resuming is never silent
        print(f"qsense daemon: {daemon.resume_summary}", file=sys.stderr)
    # everything imported and built so far (numpy, numba, scipy, the estimators) lives as long as the
    # process: move it out of the collector's way, so that a full collection triggered while a large
    # message is parsed does not hold the interpreter (and the event loop) for a scan of every module
    gc.collect()
    gc.freeze()
    if args.ready_file:
        tmp = Path(args.ready_file + ".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "endpoints": daemon.endpoints}))
        os.replace(tmp, args.ready_file)
    await daemon.serve()
    return 0


def run(args: argparse.Namespace) -> int:
    """``qsense daemon``: exit 0 after a clean stop, 2 on a configuration or startup error."""
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"qsense daemon: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 -- whatever a configuration makes fail, one line and exit 2, never a traceback
        print(f"qsense daemon: {args.config}: invalid configuration: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config}: OK ({len(cfg.estimators)} estimator(s), {len(cfg.zmq_inputs)} ZeroMQ and "
              f"{len(cfg.mqtt_inputs)} MQTT input(s))")
        return 0
    return asyncio.run(_serve(cfg, args))
