"""Async adapters that bring copies or records into qsense.

The repository folder ``drivers/``, installed as ``qsense.drivers``.  Each
driver talks to one source and yields data; what happens to the data is the
pipeline's or the daemon's job.  Every driver has a simulated twin.

* :class:`qsense.drivers.pennylane_device.PennyLaneDriver` - stream shadow or
  Bell batches from any PennyLane quantum function and device (state or
  device mode; plugin ``pennylane``).
* :class:`qsense.drivers.qiskit_device.QiskitDriver` - the same for a Qiskit
  ``QuantumCircuit`` on ``qiskit.quantum_info``/Aer (state mode) or any Sampler
  V2 primitive or ``BackendV2`` (device mode; plugin ``qiskit``, extra ``[qiskit]``).
* :class:`qsense.drivers.mqtt_detectors.MqttDetectorSource` - detector events
  published over MQTT, as record batches (plugin ``mqtt``; the daemon's MQTT
  inputs use it).
* :class:`qsense.drivers.telescope.TelescopeDriver` - heralded photons of a
  simulated telescope array (:mod:`qsense.sims.telescope`), as copies (plugin
  ``telescope``).
* :class:`qsense.drivers.replay.ArchiveReplaySource` - the batches of a record
  archive again, with their original (source, epoch, seq), filtered and
  optionally paced; yields record batches or publishes them reliably (plugin
  ``replay``; ``qsense replay`` uses it).

Drivers are found by name through the ``qsense.drivers`` entry-point group
(:mod:`qsense.plugins`), and imported lazily so that ``import qsense.drivers``
does not pull in PennyLane (or any other driver's dependencies) until a driver
is used.

Layer: the highest below apps.  May import the core and :mod:`qsense.sims`;
nothing but :mod:`qsense.apps` imports drivers (import-linter,
``docs/architecture.md``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PennyLaneDriver", "QiskitDriver"]


def __getattr__(name: str) -> Any:
    if name == "PennyLaneDriver":
        from .pennylane_device import PennyLaneDriver

        return PennyLaneDriver
    if name == "QiskitDriver":
        from .qiskit_device import QiskitDriver

        return QiskitDriver
    raise AttributeError(f"module 'qsense.drivers' has no attribute {name!r}")
