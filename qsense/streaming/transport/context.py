"""The ZeroMQ context a socket is made on: the caller's, or the process-wide one."""

from __future__ import annotations

import zmq.asyncio

__all__ = ["context_or_default"]


def context_or_default(context: zmq.asyncio.Context | None) -> zmq.asyncio.Context:
    """``context``, or the shared ``zmq.asyncio.Context.instance()`` when it is ``None``."""
    return context if context is not None else zmq.asyncio.Context.instance()
