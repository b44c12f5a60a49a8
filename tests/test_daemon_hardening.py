"""Hardening of the estimation daemon (issue 12, issue 14 item 3), over real sockets and a real broker.

* one MQTT payload never ends MQTT ingestion (a property-based fuzz test through mosquitto),
  and a driver task that dies anyway is restarted;
* every start-up failure (address in use, absurd ``hwm``, a public key as the secret key)
  exits 2 quickly with one line naming the setting;
* a peer cannot silence a source with one huge ``seq``; an operator can reset a source;
* resuming from a checkpoint is visible, and a checkpoint made by another configuration is refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest_broker import broker, tls_material  # noqa: F401  (fixtures)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qsense import ShadowBatch
from qsense.drivers.mqtt_detectors import MqttDetectorSource, binary_payload
from qsense.streaming.daemon import DaemonError, EstimationDaemon
from qsense.streaming.transport import RecordPublisher

pytestmark = pytest.mark.timeout(60)


def _shadow(T: int, n: int, seed: int, **kw) -> ShadowBatch:
    rng = np.random.default_rng(seed)
    return ShadowBatch(rng.integers(0, 3, (T, n)), rng.integers(0, 2, (T, n)), t=np.arange(T) * 1e-3, **kw)


# -- 1. one MQTT payload never ends MQTT ingestion ---------------------------------------------
_KEYS = ["kind", "source", "bases", "outcomes", "t", "wait", "seq", "epoch", "wires", "events"]
_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
            | st.text("XYZxyz0123456789²³٣߂ ,", max_size=8) | st.text(max_size=8))
_json_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                            | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=4), inner, max_size=5),
                            max_leaves=20)
_payloads = st.one_of(
    st.dictionaries(st.sampled_from(_KEYS), _json_values, max_size=8).map(lambda d: json.dumps(d).encode()),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(lambda n: b'{"events":' + b"[" * n + b"]" * n + b"}"),
    st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.binary(max_size=64).map(lambda b: b"QSNS" + b),
    st.binary(max_size=64),
)


class _LoopThread:
    """An event loop in a thread, so that hypothesis (synchronous) can drive an async daemon."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def _mqtt_config(broker, **extra) -> dict:  # noqa: F811
    return {
        "daemon": {"name": "fuzz", "publish_interval": 5.0},
        "inputs": {"mqtt": [{"topics": ["lab/#"], "flush_interval": 0.02, "batch_size": 64, "name": "detectors"}]},
        "estimators": [{"name": "z", "type": "shadow", "observables": ["Z0"]}],
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "reconnect_min": 0.05, "reconnect_max": 0.5},
        **extra,
    }


def test_fuzzed_mqtt_payloads_never_stop_ingestion(broker):  # noqa: F811
    """After every fuzzed payload a valid sentinel batch still gets through the broker into the daemon."""
    t0 = time.monotonic()
    lt = _LoopThread()
    state: dict = {}

    async def setup() -> None:
        d = EstimationDaemon(_mqtt_config(broker), resume=False)
        await d.start()
        await d._mqtt_sources[0].wait_subscribed()
        client = broker.settings().client(client_id_suffix="-fuzz")
        await client.__aenter__()
        state.update(daemon=d, client=client, seq=0)

    async def one(payload: bytes) -> None:
        d, client = state["daemon"], state["client"]
        k = state["seq"] = state["seq"] + 1
        await client.publish("lab/fuzz", payload, qos=1)
        await client.publish("lab/sentinel", binary_payload(_shadow(2, 1, k, source="sentinel", seq=k), epoch=7), qos=1)
        async with asyncio.timeout(5):
            while d.tracker.sources.get("sentinel") is None or d.tracker.sources["sentinel"].last_seq < k:
                await asyncio.sleep(0.002)

    async def teardown() -> None:
        await state["client"].__aexit__(None, None, None)
        await state["daemon"].stop()

    lt.run(setup())
    try:
        @settings(max_examples=200, deadline=None, database=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
        @given(_payloads)
        def check(payload: bytes) -> None:
            lt.run(one(payload))

        check()
        d = state["daemon"]
        src = d._mqtt_sources[0]
        assert src.connected and src.task_restarts == 0 and d.task_restarts == {}
        assert src.messages >= 2 * state["seq"] and d.tracker.sources["sentinel"].last_seq == state["seq"]
        assert sum(src.invalid.values()) > 0  # the fuzzer did reach the error paths
    finally:
        lt.run(teardown())
        lt.close()
    assert time.monotonic() - t0 < 20


@pytest.mark.parametrize("payload, reason", [
    (b'{"bases":"X\xc2\xb2","outcomes":"10"}', "values"),           # '²'.isdigit() but int('²') fails
    (b'{"events":' + b"[" * 1000 + b"]" * 1000 + b"}", None),       # nested 1,000 deep
    (b'{"a":' * 1000 + b"1" + b"}" * 1000, None),
], ids=["superscript-digit", "deep-list", "deep-object"])
async def test_issue_payloads_are_counted_and_ingestion_goes_on(broker, payload, reason, caplog):  # noqa: F811
    async with EstimationDaemon(_mqtt_config(broker), resume=False) as d:
        src = d._mqtt_sources[0]
        await src.wait_subscribed()
        async with broker.settings().client(client_id_suffix="-pub") as c:
            await c.publish("lab/bad", payload, qos=1)
            await c.publish("lab/good", binary_payload(_shadow(5, 1, 0, source="good", seq=0)), qos=1)
        async with asyncio.timeout(5):
            while d.slots[0].count < 5:
                await asyncio.sleep(0.01)
        assert sum(src.invalid.values()) == 1 and (reason is None or src.invalid == {reason: 1})
        assert src.connected and src.task_restarts == 0
        assert d.stats()["inputs"]["mqtt"]["detectors"]["connected"] is True
    assert any("invalid message" in r.getMessage() for r in caplog.records)


async def test_driver_task_that_dies_is_restarted(broker, caplog):  # noqa: F811
    settings_ = broker.settings()
    src = MqttDetectorSource(settings_, ["lab/d"], flush_interval=0.05)
    real = settings_.client
    calls = []

    def flaky(**kw):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected driver bug")
        return real(**kw)

    object.__setattr__(settings_, "client", flaky)
    caplog.set_level(logging.ERROR)
    async with src:
        await src.wait_subscribed(timeout=10)
        async with real(client_id_suffix="-pub") as c:
            await c.publish("lab/d", binary_payload(_shadow(4, 2, 0, source="d", seq=0)), qos=1)
        async with asyncio.timeout(5):
            item = await src.get()
    assert item.batch.T == 4 and src.task_restarts == 1 and src.stats()["task_restarts"] == 1
    assert any("task died" in r.getMessage() and "injected driver bug" in r.getMessage() for r in caplog.records)
