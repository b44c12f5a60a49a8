"""Async adapters that bring copies or records into qsense.

* :class:`qsense.drivers.pennylane_device.PennyLaneDriver` - stream shadow or Bell
  batches from any PennyLane quantum function and device (state or device mode).

Drivers are imported lazily so that ``import drivers`` does not pull in
PennyLane (or any other driver's dependencies) until a driver is used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PennyLaneDriver"]


def __getattr__(name: str) -> Any:
    if name == "PennyLaneDriver":
        from .pennylane_device import PennyLaneDriver

        return PennyLaneDriver
    raise AttributeError(f"module 'drivers' has no attribute {name!r}")
