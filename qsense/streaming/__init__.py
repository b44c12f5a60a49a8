"""Streaming: records and estimates on the wire, and the estimation daemon.

Layer 3 of 4 (data model < estimators < acquisition | **streaming** < apps).
The versioned ZeroMQ wire format (:mod:`.wire`), sockets and their patterns
(:mod:`.transport`: records on DEALER/ROUTER with acknowledgements, PUB + snapshot estimates, CURVE, MQTT
estimate publishing), the online estimation daemon (:mod:`.daemon`) with its
TOML configuration (:mod:`.config`), atomic checkpoints (:mod:`.checkpoint`)
and Prometheus metrics (:mod:`.metrics`), and readers of recorded files
(:mod:`.reference`).

May import: estimators and the data model.  Never: acquisition (independent
of it), apps, sims, drivers; the MQTT detector driver is found through its
entry point (:mod:`qsense.plugins`).
"""
