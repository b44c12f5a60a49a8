"""Bridge MQTT detection events into the ZeroMQ data plane of an estimation daemon.

Detector hardware often speaks MQTT; the daemon's high-rate input is ZeroMQ.
This bridge subscribes to detector topics with the MQTT driver
(``drivers/mqtt_detectors.py``: JSON or binary payloads, reconnects with
backoff, username/password and TLS), and forwards every batch through a reliable
RecordPublisher (DEALER; every batch kept until acknowledged), keeping each
source's sequence numbers and epoch so the daemon still detects gaps end to end.

Needs an MQTT broker on --mqtt-host/--mqtt-port (e.g. ``mosquitto -p 1883``
running locally; ``apt-get install mosquitto``).  ``--simulate`` also runs a
fake detector that publishes JSON events of a 4-qubit GHZ state (the register
the example daemon's ``ghz`` estimator is pinned to), so with a broker the
script is self-contained:

    mosquitto -p 1883 &
    qsense daemon --config examples/daemon_config.toml &          # or qsense record --from ...
    python examples/mqtt_detector_bridge.py --simulate --seconds 5 \\
        --mqtt-port 1883 --topic 'lab1/detectors/+/events' --zmq tcp://127.0.0.1:5555
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import numpy as np

from qsense import sims
from qsense.drivers.mqtt_detectors import MqttDetectorSource, event_json
from qsense.streaming.transport import MqttSettings, RecordPublisher


async def fake_detector(settings: MqttSettings, topic: str, rate: float, seconds: float) -> int:
    """Publish single shadow events of a 4-qubit GHZ state as JSON, ``rate`` per second."""
    rng = np.random.default_rng(1)
    state = sims.ghz_state(4)
    sent = 0
    loop = asyncio.get_running_loop()
    async with settings.client(client_id_suffix="-fake-detector") as client:
        end = loop.time() + seconds
        while loop.time() < end:
            b = sims.sample_shadows(state, 50, rng)
            for i in range(b.T):
                await client.publish(topic, event_json("shadow", b.outcomes[i], b.bases[i], t=loop.time(), source="ghz-det"), qos=1)
            sent += b.T
            await asyncio.sleep(50 / rate)
    return sent


async def bridge(args: argparse.Namespace) -> int:
    settings = MqttSettings(host=args.mqtt_host, port=args.mqtt_port, username=args.username, password=args.password,
                            ca_file=args.ca_file, reconnect_min=0.1, reconnect_max=5.0)
    out = RecordPublisher(args.zmq)
    forwarded = 0
    async with MqttDetectorSource(settings, [args.topic], batch_size=args.batch_size, flush_interval=0.05) as src:
        await src.wait_subscribed(timeout=10)
        fake = None
        if args.simulate:
            fake = asyncio.create_task(fake_detector(settings, args.topic.replace("+", "sim").replace("#", "sim"),
                                                     args.rate, args.seconds))

        async def forward() -> None:
            nonlocal forwarded
            async for item in src:
                # keep the driver's numbering and epoch: the daemon checks them
                await out.send(item.batch, epoch=item.epoch)
                forwarded += item.batch.T

        fwd = asyncio.create_task(forward())
        await asyncio.sleep(args.seconds)
        if fake is not None:
            await fake
        await asyncio.sleep(0.2)  # the last loose events close into a batch
        fwd.cancel()
        try:
            await fwd
        except asyncio.CancelledError:
            pass
    while (item := src.get_nowait()) is not None:  # what close() flushed
        await out.send(item.batch, epoch=item.epoch)
        forwarded += item.batch.T
    out.close()
    print(f"forwarded {forwarded} records in {src.batches} batches; driver counters: {src.stats()}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mqtt-host", default="127.0.0.1")
    ap.add_argument("--mqtt-port", type=int, default=1883)
    ap.add_argument("--username")
    ap.add_argument("--password")
    ap.add_argument("--ca-file", help="CA certificate: connect with TLS and verify the broker")
    ap.add_argument("--topic", default="lab1/detectors/+/events", help="MQTT topic filter to bridge")
    ap.add_argument("--zmq", default="tcp://127.0.0.1:5555", help="the daemon's ZeroMQ input endpoint")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=10.0, help="how long to run")
    ap.add_argument("--simulate", action="store_true", help="also run a fake detector publishing JSON events")
    ap.add_argument("--rate", type=float, default=5000.0, help="fake detector events per second")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(asyncio.run(bridge(args)))
