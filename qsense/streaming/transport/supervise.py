"""Keep a long-running task alive: restart it, with backoff and a log line, whenever it dies.

The loops it runs catch what one message can raise; this is the last line of
defence, so that an unforeseen bug costs a logged, counted restart instead of
ending ingestion silently for good.  The daemon's input loops and the MQTT
detector driver's tasks both run under it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from .mqtt import Backoff
from .throttled_log import ThrottledLog

__all__ = ["supervise"]


async def supervise(body: Callable[[], Awaitable[None]], *, what: str, log: ThrottledLog, backoff: Backoff,
                    on_restart: Callable[[], None], keep_going: Callable[[], bool] = lambda: True) -> None:
    """Await ``body()`` until it returns; if it raises, call ``on_restart`` (count it, reset
    state), log ``what`` died (throttled, per ``what``), wait ``backoff.next()`` and run it again,
    while ``keep_going()``.  Cancellation passes through."""
    while keep_going():
        try:
            await body()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 -- see the module docstring
            on_restart()
            delay = backoff.next()
            log.log(logging.ERROR, f"task:{what}", "%s: its task died (%s: %s); restarting it in %.2fs",
                    what, type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
