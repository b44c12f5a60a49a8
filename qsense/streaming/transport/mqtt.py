"""Estimates over MQTT: broker settings, reconnect backoff and a retained-estimate publisher.

:class:`MqttSettings` holds the broker connection options shared with the MQTT
detector driver (:mod:`qsense.drivers.mqtt_detectors`), which also uses
:class:`Backoff`; :class:`MqttEstimatePublisher` publishes retained estimates
with aiomqtt, reconnecting with exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Mapping

from .estimates import encode_body
from .throttled_log import ThrottledLog

__all__ = ["Backoff", "MqttSettings", "MqttEstimatePublisher"]

log = logging.getLogger(__name__)


class Backoff:
    """Exponential backoff with jitter: ``min``, ``2 min``, ... up to ``max`` seconds."""

    def __init__(self, minimum: float = 0.2, maximum: float = 10.0, factor: float = 2.0, jitter: float = 0.1) -> None:
        self.minimum, self.maximum, self.factor, self.jitter = minimum, maximum, factor, jitter
        self._next = minimum

    def next(self) -> float:
        d = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return d * (1.0 + self.jitter * random.random())

    def reset(self) -> None:
        self._next = self.minimum


@dataclass(frozen=True)
class MqttSettings:
    """How to reach an MQTT broker (shared by the detector driver and the daemon).

    TLS is used when ``tls`` is true or any of ``ca_file``/``cert_file``/``key_file``
    is given; ``ca_file`` verifies the broker (system CAs otherwise),
    ``cert_file``/``key_file`` authenticate us by certificate.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    #: never in repr(): a settings object that reaches a log or an error message must not carry the password
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    client_id: str | None = None
    keepalive: int = 30
    connect_timeout: float = 5.0
    reconnect_min: float = 0.2
    reconnect_max: float = 10.0

    @property
    def uses_tls(self) -> bool:
        return bool(self.tls or self.ca_file or self.cert_file or self.key_file)

    def client(self, *, will: Any = None, client_id_suffix: str = "", **kw: Any) -> Any:
        """A fresh ``aiomqtt.Client`` for these settings (use it as ``async with``)."""
        import aiomqtt

        tls_params = None
        if self.uses_tls:
            tls_params = aiomqtt.TLSParameters(ca_certs=self.ca_file, certfile=self.cert_file, keyfile=self.key_file)
        ident = None if self.client_id is None else self.client_id + client_id_suffix
        return aiomqtt.Client(
            self.host, self.port, username=self.username, password=self.password, identifier=ident,
            tls_params=tls_params, tls_insecure=self.tls_insecure if self.uses_tls else None,
            keepalive=self.keepalive, timeout=self.connect_timeout, will=will, **kw,
        )

    def describe(self) -> str:
        scheme = "mqtts" if self.uses_tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


class MqttEstimatePublisher:
    """Publish the latest estimate per topic to MQTT, retained, surviving broker restarts.

    :meth:`publish` only records the newest body for a topic and wakes the
    sender task (it never waits on the network); :meth:`run` keeps a connection
    (exponential backoff on failure) and sends what is pending.  Retained
    messages mean a dashboard that subscribes later sees the current values, and
    after a reconnect only the newest value of each topic is sent.  An
    ``online_topic`` (retained) reads ``online`` while connected and ``offline``
    after a clean stop or, through the broker's last will, after a crash.
    """

    def __init__(self, settings: MqttSettings, *, qos: int = 1, retain: bool = True, online_topic: str | None = None) -> None:
        self.settings = settings
        self.qos = qos
        self.retain = retain
        self.online_topic = online_topic
        self.published = 0
        self.reconnects = 0
        self.connected = False
        self._pending: dict[str, bytes] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._log = ThrottledLog(log, interval=30.0)

    def publish(self, topic: str, body: Mapping[str, Any] | bytes) -> None:
        """Queue ``body`` (JSON-encoded if a mapping) as the newest value of ``topic``."""
        self._pending[topic] = body if isinstance(body, bytes) else encode_body(body)
        self._idle.clear()
        self._wake.set()

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued was sent; False on timeout (broker away)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def run(self) -> None:
        """Connection loop; run it as a task and cancel it (after :meth:`stop`) to end."""
        import aiomqtt

        backoff = Backoff(self.settings.reconnect_min, self.settings.reconnect_max)
        will = aiomqtt.Will(self.online_topic, b"offline", qos=1, retain=True) if self.online_topic else None
        while not self._stopping:
            try:
                async with self.settings.client(will=will, client_id_suffix="-estimates") as client:
                    self.connected = True
                    backoff.reset()
                    log.info("publishing estimates to %s", self.settings.describe())
                    if self.online_topic:
                        await client.publish(self.online_topic, b"online", qos=1, retain=True)
                    while True:
                        if not self._pending:
                            self._idle.set()
                            if self._stopping:
                                break
                            self._wake.clear()
                            await self._wake.wait()
                            continue
                        topic = next(iter(self._pending))
                        data = self._pending.pop(topic)
                        try:
                            await client.publish(topic, data, qos=self.qos, retain=self.retain)
                        except BaseException:
                            # keep it for the next connection unless a newer one came
                            self._pending.setdefault(topic, data)
                            raise
                        self.published += 1
                    if self.online_topic:
                        await client.publish(self.online_topic, b"offline", qos=1, retain=True)
                    return
            except aiomqtt.MqttError as exc:
                self.connected = False
                self.reconnects += 1
                delay = backoff.next()
                self._log.log(logging.WARNING, "conn", "MQTT estimates: %s unreachable (%s); retrying in %.1fs",
                              self.settings.describe(), exc, delay)
                await asyncio.sleep(delay)
            finally:
                self.connected = False

    def stop(self) -> None:
        """Ask :meth:`run` to send what is pending, mark offline and return."""
        self._stopping = True
        self._wake.set()
