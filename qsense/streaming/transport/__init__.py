"""Moving records and estimates between processes: ZeroMQ (and MQTT for estimates).

Socket patterns, all on pyzmq's asyncio API (``zmq.asyncio``) with no threads of
our own (ZeroMQ's I/O threads aside):

=====================  =========  =================================================
class                  socket     job
=====================  =========  =================================================
RecordPublisher        DEALER     driver side: send record batches. Reliable by
                                  default: keeps each batch until the receiver
                                  acknowledges it, resends after a timeout or a
                                  reconnect; a full window (or SNDHWM) makes
                                  ``send`` wait, so a fast producer is slowed
                                  down, never dropped (``IMMEDIATE``: nothing is
                                  queued for a peer without a completed handshake).
RecordReceiver         ROUTER     daemon side: receive, validate (wire.decode),
                                  count and log malformed messages, acknowledge
                                  (at once, or by the owner after a durable write).
EstimatePublisher      PUB +      publish estimates as ``[topic, JSON]``; keep the
                       ROUTER     latest body per topic and hand it to late
                                  joiners on request (the "clone" pattern).
EstimateSubscriber     SUB +      subscribe, ask for the snapshot, then follow
                       DEALER     live updates newer than the snapshot.
=====================  =========  =================================================

:class:`SequenceTracker` accepts each per-source ``(epoch, seq)`` at most once
(late batches within its window too) and counts gaps, late arrivals, duplicates
and restarts (and logs them): with the publisher's resends, batches are folded
exactly once (``docs/reliable-delivery.md``).  CURVE security is optional:
:func:`start_authenticator` runs pyzmq's ``AsyncioAuthenticator`` (a task on the
event loop) allowing only the public keys in a directory; a client with any
other key completes no handshake and so gets nothing.

:class:`MqttEstimatePublisher` publishes retained estimates to an MQTT broker
(aiomqtt), reconnecting with exponential backoff; :class:`MqttSettings` holds the
broker connection options shared with ``drivers/mqtt_detectors.py``.

Modules (everything public is re-exported here):

* :mod:`.records` -- :class:`RecordPublisher`, :class:`RecordReceiver`,
  :class:`ReceivedBatch`, ``DEFAULT_HWM``, ``DEFAULT_MAX_MESSAGE_BYTES`` (the
  DEALER/ROUTER data plane with acknowledgements);
* :mod:`.estimates` -- :class:`EstimatePublisher`, :class:`EstimateSubscriber`
  (PUB + ROUTER snapshot, SUB + DEALER);
* :mod:`.sharding` -- :class:`ShardedPublisher` (one reliable publisher per
  daemon; each batch routed once, resends to the same shard; ``docs/sharding.md``);
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
from .records import DEFAULT_HWM, DEFAULT_MAX_MESSAGE_BYTES, ReceivedBatch, RecordPublisher, RecordReceiver
from .sequence import SequenceTracker, SeqVerdict, SourceState
from .sharding import ShardedPublisher
from .supervise import supervise
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
    "ShardedPublisher",
    "ReceivedBatch",
    "EstimatePublisher",
    "EstimateSubscriber",
    "MqttSettings",
    "MqttEstimatePublisher",
    "Backoff",
    "ThrottledLog",
    "supervise",
    "DEFAULT_HWM",
    "DEFAULT_MAX_MESSAGE_BYTES",
]
