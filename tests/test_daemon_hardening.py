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
        "estimators": [{"name": "z", "type": "shadow", "observables": ["Z0"], "wires": 1}],
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


# -- 2. every start-up failure exits 2 quickly, with one line naming the setting -------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml_value(v) -> str:
    return json.dumps(v) if isinstance(v, (str, int, float, list)) else str(v).lower()


def _write_toml(path: Path, doc: dict) -> Path:
    lines: list[str] = []
    for table, body in doc.items():
        for item in (body if isinstance(body, list) else [body]):
            lines.append(f"[[{table}]]" if isinstance(body, list) else f"[{table}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in item.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _base_doc(tmp_path: Path) -> dict:
    return {
        "inputs.zmq": [{"endpoint": f"tcp://127.0.0.1:{_free_port()}", "name": "records"}],
        "estimators": [{"name": "z", "type": "shadow", "observables": ["Z0"], "wires": 1}],
        "outputs.zmq": {"endpoint": f"tcp://127.0.0.1:{_free_port()}", "snapshot_endpoint": f"tcp://127.0.0.1:{_free_port()}"},
    }


def _run_cli(config: Path, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "qsense", "daemon", "--config", str(config), *extra],
                          capture_output=True, text=True, timeout=30)
    return proc, time.monotonic() - t0


@pytest.fixture(scope="module")
def import_seconds(tmp_path_factory) -> float:
    """What starting the interpreter, importing qsense and reading a config costs (``--check``)."""
    cfg = _write_toml(tmp_path_factory.mktemp("base") / "ok.toml", _base_doc(Path(".")))
    proc, elapsed = _run_cli(cfg, "--check")
    assert proc.returncode == 0, proc.stderr
    return elapsed


def _busy(endpoint: str) -> socket.socket:
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    s = socket.socket()
    s.bind((host, int(port)))
    s.listen()
    return s


def _public_key_as_secret(tmp_path: Path, doc: dict) -> str:
    from qsense.streaming.transport import generate_keypair

    public, _ = generate_keypair(tmp_path / "server", "server")
    generate_keypair(tmp_path / "authorized", "alice")
    doc["curve"] = {"server_secret_key": str(public), "authorized_keys": str(tmp_path / "authorized")}
    doc["inputs.zmq"][0]["curve"] = True
    return "curve.server_secret_key"


@pytest.mark.parametrize("case", ["input", "pub", "snapshot", "hwm", "output_hwm", "public_key", "metrics"])
def test_startup_failure_exits_2_fast_with_one_line(tmp_path, import_seconds, case):
    doc = _base_doc(tmp_path)
    busy = None
    if case == "input":
        busy, setting = _busy(doc["inputs.zmq"][0]["endpoint"]), "inputs.zmq[0].endpoint"
    elif case == "pub":
        busy, setting = _busy(doc["outputs.zmq"]["endpoint"]), "outputs.zmq.endpoint"
    elif case == "snapshot":
        busy, setting = _busy(doc["outputs.zmq"]["snapshot_endpoint"]), "outputs.zmq.snapshot_endpoint"
    elif case == "hwm":
        doc["inputs.zmq"][0]["hwm"], setting = 2**40, "inputs.zmq[0].hwm"
    elif case == "output_hwm":
        doc["outputs.zmq"]["hwm"], setting = 2**40, "outputs.zmq.hwm"
    elif case == "public_key":
        setting = _public_key_as_secret(tmp_path, doc)
    else:
        port = _free_port()
        busy, setting = _busy(f"tcp://127.0.0.1:{port}"), "metrics"
        doc["outputs.prometheus"] = {"port": port}
    try:
        proc, elapsed = _run_cli(_write_toml(tmp_path / "d.toml", doc))
    finally:
        if busy is not None:
            busy.close()
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and setting in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert elapsed - import_seconds < 2.0, (elapsed, import_seconds)


@pytest.mark.parametrize("case", ["input", "pub", "snapshot", "hwm", "public_key"])
async def test_startup_failure_raises_daemon_error_within_2s(tmp_path, case):
    """In-process too (settings that bypass the config checks, via dataclasses.replace), nothing hangs."""
    import dataclasses

    from qsense.streaming.config import CurveConfig, parse_config

    doc = {"inputs": {"zmq": [{"endpoint": "tcp://127.0.0.1:0", "name": "records"}]},
           "estimators": [{"name": "z", "type": "shadow", "observables": ["Z0"], "wires": 1}],
           "outputs": {"zmq": {"endpoint": "tcp://127.0.0.1:0", "snapshot_endpoint": "tcp://127.0.0.1:0"}}}
    cfg = parse_config(doc)
    busy = None
    port = _free_port()
    if case == "input":
        busy = _busy(f"tcp://127.0.0.1:{port}")
        cfg = dataclasses.replace(cfg, zmq_inputs=(dataclasses.replace(cfg.zmq_inputs[0], endpoint=f"tcp://127.0.0.1:{port}"),))
    elif case in ("pub", "snapshot"):
        busy = _busy(f"tcp://127.0.0.1:{port}")
        key = "endpoint" if case == "pub" else "snapshot_endpoint"
        cfg = dataclasses.replace(cfg, zmq_output=dataclasses.replace(cfg.zmq_output, **{key: f"tcp://127.0.0.1:{port}"}))
    elif case == "hwm":
        cfg = dataclasses.replace(cfg, zmq_inputs=(dataclasses.replace(cfg.zmq_inputs[0], hwm=2**40),))
    else:
        d2: dict = {"inputs.zmq": [{}]}
        _public_key_as_secret(tmp_path, d2)
        cfg = dataclasses.replace(cfg, curve=CurveConfig(Path(d2["curve"]["server_secret_key"]), tmp_path / "authorized"),
                                  zmq_inputs=(dataclasses.replace(cfg.zmq_inputs[0], curve=True),))
    t0 = time.monotonic()
    try:
        with pytest.raises(DaemonError):
            await asyncio.wait_for(EstimationDaemon(cfg, resume=False).start(), 2.0)
    finally:
        if busy is not None:
            busy.close()
    assert time.monotonic() - t0 < 2.0


# -- 3. a peer cannot silence a source ---------------------------------------------------------------
def _zmq_config(tmp_path: Path, archive: bool, **daemon) -> dict:
    cfg = {
        "daemon": {"name": "trust", "publish_interval": 5.0, **daemon},
        "inputs": {"zmq": [{"endpoint": "tcp://127.0.0.1:0", "name": "in"}]},
        "estimators": [{"name": "z", "type": "shadow", "observables": ["Z0"], "wires": 1}],
        "checkpoint": {"path": str(tmp_path / "d.ckpt"), "period": 60.0},
    }
    if archive:
        cfg["archive"] = {"path": str(tmp_path / "archive")}
    return cfg


async def _wait_count(d: EstimationDaemon, n: int) -> None:
    async with asyncio.timeout(10):
        while d.slots[0].count < n:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("archive", [False, True], ids=["no-archive", "archive"])
async def test_forged_huge_seq_is_refused_and_not_checkpointed(tmp_path, archive):
    from qsense.streaming.checkpoint import read_checkpoint

    epoch = 0x5EED
    async with EstimationDaemon(_zmq_config(tmp_path, archive, max_seq_jump=1000), resume=False) as d:
        ep = d.endpoints["input.in"]
        async with RecordPublisher(ep, source="victim", epoch=epoch) as victim:
            for i in range(3):
                await victim.send(_shadow(10, 1, i), timeout=5)
            await _wait_count(d, 30)
            # the forger knows the victim's name and epoch; one empty batch with the largest seq
            forger = RecordPublisher(ep, epoch=epoch, reliable=False)
            await forger.send(_shadow(0, 1, 0, source="victim", seq=2**63 - 1))
            async with asyncio.timeout(5):
                while d.tracker.sources["victim"].refused < 1:
                    await asyncio.sleep(0.01)
            forger.close()
            for i in range(3, 6):  # the real producer goes on
                await victim.send(_shadow(10, 1, i), timeout=5)
            await _wait_count(d, 60)
        stats = d.stats()
        assert stats["sources"]["victim"]["refused"] == 1 and stats["totals"]["refused"] == 1
        assert stats["sources"]["victim"]["last_seq"] == 5 and stats["sources"]["victim"]["duplicates"] == 0
        if archive:
            assert stats["archive"]["stored"] == 6  # the forged batch never reached the archive
    ckpt = read_checkpoint(tmp_path / "d.ckpt")
    assert ckpt.sources["victim"]["seq"] == 5
    assert max(e["high"] for e in ckpt.sources["victim"]["epochs"]) == 5


async def test_operator_reset_of_a_poisoned_source(tmp_path):
    """A forged first batch cannot be told from a real one; it shows (refused counts), and an operator reset clears it."""
    epoch = 0xBAD
    cfg = _zmq_config(tmp_path, False, max_seq_jump=1000)
    async with EstimationDaemon(cfg, resume=False) as d:
        forger = RecordPublisher(d.endpoints["input.in"], epoch=epoch, reliable=False)
        await forger.send(_shadow(0, 1, 0, source="victim", seq=2**62))
        async with asyncio.timeout(5):
            while "victim" not in d.tracker.sources:
                await asyncio.sleep(0.01)
        forger.close()
    # the poisoned mark was checkpointed (the first batch of a source is not bounded); restart with a reset
    async with EstimationDaemon(cfg, reset_sources=["victim"]) as d:
        assert "victim" not in d.tracker.sources
        async with RecordPublisher(d.endpoints["input.in"], source="victim", epoch=epoch) as victim:
            for i in range(3):
                await victim.send(_shadow(10, 1, i), timeout=5)
            await _wait_count(d, 30)
        assert d.tracker.sources["victim"].refused == 0 and d.tracker.sources["victim"].last_seq == 2


def test_reset_source_flag_is_accepted(tmp_path):
    cfg = _write_toml(tmp_path / "d.toml", {**_base_doc(tmp_path), "daemon": {"max_seq_jump": 10}})
    proc, _ = _run_cli(cfg, "--reset-source", "victim", "--check")
    assert proc.returncode == 0, proc.stderr


# -- 4. resuming is visible; a checkpoint of another configuration is refused -----------------------
def _resume_doc(tmp_path: Path, observables: list[str], archive: bool = False) -> dict:
    doc = {
        "inputs.zmq": [{"endpoint": f"tcp://127.0.0.1:{_free_port()}", "name": "records"}],
        "estimators": [{"name": "e", "type": "shadow", "observables": observables, "wires": 1},
                       {"name": "same", "type": "shadow", "observables": ["Z0"], "wires": 1}],
        "checkpoint": {"path": str(tmp_path / "c.ckpt"), "period": 3600},
    }
    if archive:
        doc["archive"] = {"path": str(tmp_path / "archive")}
    return doc


async def _seed_checkpoint(tmp_path: Path, archive: bool = False) -> None:
    from qsense.streaming.config import load_config

    cfg = load_config(_write_toml(tmp_path / "seed.toml", _resume_doc(tmp_path, ["Z0"], archive)))
    async with EstimationDaemon(cfg, resume=False) as d:
        d.ingest(_shadow(40, 1, 0, source="det", seq=0))


async def test_resume_is_logged_at_warning_with_counts_age_and_sources(tmp_path, caplog):
    await _seed_checkpoint(tmp_path)
    from qsense.streaming.config import load_config

    cfg = load_config(_write_toml(tmp_path / "d.toml", _resume_doc(tmp_path, ["Z0"])))
    caplog.set_level(logging.WARNING)
    async with EstimationDaemon(cfg) as d:
        assert d.slots[0].count == 40
    line = next(r for r in caplog.records if "resumed from checkpoint" in r.getMessage())
    assert line.levelno == logging.WARNING
    msg = line.getMessage()
    assert "e=40" in msg and "same=40" in msg and "s ago" in msg and "det@seq 0" in msg


def test_cli_prints_resume_line_and_refuses_a_changed_estimator(tmp_path):
    asyncio.run(_seed_checkpoint(tmp_path))
    # resuming, with the log level hiding warnings: the CLI still says so on stderr
    ok = _write_toml(tmp_path / "ok.toml", _resume_doc(tmp_path, ["Z0"]))
    rc, err = _run_until_ready(tmp_path, ok, "--log-level", "ERROR")
    assert rc == 0, err
    assert "qsense daemon: resumed from checkpoint" in err and "e=40" in err and "det@seq 0" in err
    # the configuration of 'e' changed: refused, one line naming it and what changed
    changed = _write_toml(tmp_path / "changed.toml", _resume_doc(tmp_path, ["Z0", "X0"]))
    proc2, _ = _run_cli(changed)
    lines = proc2.stderr.strip().splitlines()
    assert proc2.returncode == 2 and len(lines) == 1, proc2.stderr
    assert "estimator 'e'" in lines[0] and "observables ['Z0'] -> ['Z0', 'X0']" in lines[0] and "'same'" not in lines[0]
    # asked to start it from zero: runs, and says so
    rc, err = _run_until_ready(tmp_path, changed, "--log-level", "ERROR", extra=("--reset-estimators", "e"))
    assert rc == 0 and "started from zero: e (as asked)" in err and "same=40" in err, err


def _run_until_ready(tmp_path: Path, config: Path, *pre: str, extra: tuple = ()) -> tuple[int, str]:
    """Run ``qsense daemon`` until it is up, then SIGTERM it: ``(exit status, stderr)``."""
    import signal

    ready = tmp_path / f"ready-{time.monotonic_ns()}.json"
    proc = subprocess.Popen([sys.executable, "-m", "qsense", *pre, "daemon", "--config", str(config), "--ready-file", str(ready),
                             *extra], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=20)[1]
    finally:
        proc.kill()
    return proc.returncode, err


async def test_reset_estimator_is_back_filled_from_the_archive(tmp_path):
    from qsense.streaming.config import load_config

    await _seed_checkpoint(tmp_path, archive=True)
    cfg = load_config(_write_toml(tmp_path / "d.toml", _resume_doc(tmp_path, ["Z0", "X0"], archive=True)))
    with pytest.raises(DaemonError, match="estimator 'e'"):
        await EstimationDaemon(cfg).start()
    async with EstimationDaemon(cfg, reset_estimators=["e"]) as d:
        assert [s.count for s in d.slots] == [40, 40]  # 'e' from zero, then back-filled; 'same' resumed
        assert not d.slots[0].restored and d.slots[1].restored
        assert "started from zero: e (as asked)" in d.resume_summary
    with pytest.raises(DaemonError, match="no estimator named 'nope'"):
        await EstimationDaemon(cfg, reset_estimators=["nope"]).start()


async def test_curve_binds_source_names_to_client_keys(tmp_path):
    """[curve.sources]: 'victim' may be sent only by alice's key; mallory (also authorized) and a plain socket are refused."""
    from qsense.streaming.transport import CurveClientKeys, generate_keypair

    generate_keypair(tmp_path / "server", "server")
    generate_keypair(tmp_path / "authorized", "alice")
    generate_keypair(tmp_path / "authorized", "mallory")
    doc = {
        "inputs.zmq": [{"name": "secure", "endpoint": "tcp://127.0.0.1:0", "curve": True},
                       {"name": "plain", "endpoint": "tcp://127.0.0.1:0"}],
        "estimators": [{"name": "z", "type": "shadow", "observables": ["Z0"], "wires": 1}],
        "curve": {"server_secret_key": "server/server.key_secret", "authorized_keys": "authorized"},
        "curve.sources": {"victim": ["alice"]},
    }
    cfg = _write_toml(tmp_path / "d.toml", doc)
    keys = {n: CurveClientKeys(tmp_path / "authorized" / f"{n}.key_secret", tmp_path / "server" / "server.key")
            for n in ("alice", "mallory")}
    async with EstimationDaemon(cfg) as d:
        secure, plain = d.endpoints["input.secure"], d.endpoints["input.plain"]
        forgers = [RecordPublisher(secure, curve=keys["mallory"], reliable=False), RecordPublisher(plain, reliable=False)]
        for i, f in enumerate(forgers):
            await f.send(_shadow(7, 1, i, source="victim", seq=2**62 + i))
        async with asyncio.timeout(5):
            while sum(d.stats()["refused_identity"].values()) < 2:
                await asyncio.sleep(0.01)
        async with RecordPublisher(secure, source="victim", curve=keys["alice"]) as alice:
            await alice.send(_shadow(10, 1, 5), timeout=5)
        async with RecordPublisher(secure, source="other", curve=keys["mallory"]) as m:  # unbound names stay open
            await m.send(_shadow(3, 1, 6), timeout=5)
        await _wait_count(d, 13)
        for f in forgers:
            f.close()
        stats = d.stats()
    assert stats["refused_identity"] == {"victim": 2}
    assert stats["sources"]["victim"]["last_seq"] == 0 and stats["sources"]["victim"]["batches"] == 1
    assert stats["sources"]["other"]["batches"] == 1


def test_curve_sources_naming_a_missing_key_is_a_config_error(tmp_path):
    from qsense.streaming.transport import generate_keypair

    generate_keypair(tmp_path / "server", "server")
    generate_keypair(tmp_path / "authorized", "alice")
    doc = {**_base_doc(tmp_path), "curve": {"server_secret_key": "server/server.key_secret", "authorized_keys": "authorized"},
           "curve.sources": {"victim": ["bob"]}}
    proc, _ = _run_cli(_write_toml(tmp_path / "d.toml", doc), "--check")
    assert proc.returncode == 2 and "curve.sources.victim" in proc.stderr and "bob.key" in proc.stderr, proc.stderr
