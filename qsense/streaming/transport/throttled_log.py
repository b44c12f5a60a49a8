"""Rate-limited logging, so that a garbage stream or a flapping broker cannot flood the log."""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["ThrottledLog"]


class ThrottledLog:
    """Log at most one line per key every ``interval`` seconds, reporting how many
    similar lines were suppressed -- a garbage stream must not flood the log."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        n = self._suppressed.pop(key, 0)
        if n:
            msg += f" ({n} similar messages suppressed)"
        self.logger.log(level, msg, *args)
