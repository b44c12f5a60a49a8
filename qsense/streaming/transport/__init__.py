"""Moving records and estimates between processes: ZeroMQ (and MQTT for estimates).

Socket patterns, all on pyzmq's asyncio API (``zmq.asyncio``) with no threads of
our own (ZeroMQ's I/O threads aside):

=====================  =========  =================================================
class                  socket     job
=====================  =========  =================================================
RecordPublisher        PUSH       driver side: send record batches, lossless. A
                                  full queue (SNDHWM) makes ``send`` wait, so a
                                  fast producer is slowed down, never dropped
                                  (``IMMEDIATE``: nothing is queued for a peer
                                  that has not completed its handshake).
RecordReceiver         PULL       daemon side: receive, validate (wire.decode),
                                  count and log malformed messages.
EstimatePublisher      PUB +      publish estimates as ``[topic, JSON]``; keep the
                       ROUTER     latest body per topic and hand it to late
                                  joiners on request (the "clone" pattern).
EstimateSubscriber     SUB +      subscribe, ask for the snapshot, then follow
                       DEALER     live updates newer than the snapshot.
=====================  =========  =================================================

:class:`SequenceTracker` turns per-source ``(epoch, seq)`` into gap, duplicate
and restart counts (and log lines).  CURVE security is optional:
:func:`start_authenticator` runs pyzmq's ``AsyncioAuthenticator`` (a task on the
event loop) allowing only the public keys in a directory; a client with any
other key completes no handshake and so gets nothing.

:class:`MqttEstimatePublisher` publishes retained estimates to an MQTT broker
(aiomqtt), reconnecting with exponential backoff; :class:`MqttSettings` holds the
broker connection options shared with ``drivers/mqtt_detectors.py``.

Modules (everything public is re-exported here):

* :mod:`.records` -- :class:`RecordPublisher`, :class:`RecordReceiver`,
  ``DEFAULT_HWM``, ``DEFAULT_MAX_MESSAGE_BYTES`` (the PUSH/PULL data plane);
* :mod:`.estimates` -- :class:`EstimatePublisher`, :class:`EstimateSubscriber`
  (PUB + ROUTER snapshot, SUB + DEALER);
* :mod:`.mqtt` -- :class:`MqttSettings`, :class:`Backoff`,
  :class:`MqttEstimatePublisher`;
* :mod:`.sequence` -- :class:`SequenceTracker`, :class:`SourceState`,
  :class:`SeqVerdict`;
* :mod:`.curve` -- :class:`CurveServerKeys`, :class:`CurveClientKeys`,
  :func:`generate_keypair`, :func:`start_authenticator`;
* :mod:`.throttled_log` -- :class:`ThrottledLog` (rate-limited log lines).
"""

from __future__ import annotations

from .curve import CurveClientKeys, CurveServerKeys, generate_keypair, start_authenticator
from .estimates import EstimatePublisher, EstimateSubscriber
from .mqtt import Backoff, MqttEstimatePublisher, MqttSettings
from .records import DEFAULT_HWM, DEFAULT_MAX_MESSAGE_BYTES, RecordPublisher, RecordReceiver
from .sequence import SequenceTracker, SeqVerdict, SourceState
from .throttled_log import ThrottledLog

__all__ = [
    "CurveServerKeys",
    "CurveClientKeys",
    "generate_keypair",
    "start_authenticator",
    "SequenceTracker",
    "SourceState",
    "SeqVerdict",
    "RecordPublisher",
    "RecordReceiver",
    "EstimatePublisher",
    "EstimateSubscriber",
    "MqttSettings",
    "MqttEstimatePublisher",
    "Backoff",
    "ThrottledLog",
    "DEFAULT_HWM",
    "DEFAULT_MAX_MESSAGE_BYTES",
]
