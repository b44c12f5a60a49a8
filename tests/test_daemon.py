"""The estimation daemon: config, robustness, checkpoints, signals, kill -9 and restart.

In-process tests drive :class:`EstimationDaemon` over real ZeroMQ sockets on
127.0.0.1; the lifecycle tests run ``python -m qsense daemon`` as a subprocess
and send it SIGTERM or SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import qsense
from qsense import BellBatch, BellEstimator, ShadowBatch, ShadowEstimator, ShadowPurity
from qsense.streaming.checkpoint import Checkpoint, CheckpointError, EstimatorState, read_checkpoint, write_checkpoint
from qsense.streaming.config import ConfigError, load_config, parse_config
from qsense.streaming.daemon import DaemonError, EstimationDaemon
from qsense.streaming.transport import EstimateSubscriber, RecordPublisher

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
OBS = ["Z0 Z1", "X0 X1 X2", "Y1", "Z3"]


def _shadow(T, n=4, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return ShadowBatch(rng.integers(0, 3, (T, n)), rng.integers(0, 2, (T, n)), **kw)


def _bell(T, n=4, seed=0, **kw):
    return BellBatch(np.random.default_rng(seed).integers(0, 4, (T, n)), **kw)


def _values(body):
    return np.array([v["value"] for v in body["estimates"].values()])


# -- configuration ------------------------------------------------------------------------------------
def test_example_config_is_valid():
    cfg = load_config(ROOT / "examples" / "daemon_config.toml")
    assert [e.name for e in cfg.estimators] == ["ghz", "entropy", "pairs"]
    assert cfg.checkpoint.path == Path("/tmp/qsense-example/lab1.ckpt")  # state never goes into the repository
    r = subprocess.run([sys.executable, "-m", "qsense", "daemon", "--config", str(ROOT / "examples" / "daemon_config.toml"),
                        "--check"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "OK" in r.stdout


@pytest.mark.parametrize(
    "doc, message",
    [
        ("estimators = []", "at least one [[estimators]]"),
        ("[[estimators]]\nname='a'\ntype='shadow'", "estimators[0].observables: is required"),
        ("[[estimators]]\nname='a'\ntype='shadow'\nobservables=['X0']\ngroups=0", "estimators[0].groups: expected a positive integer"),
        ("[[estimators]]\nname='a'\ntype='shadow'\nobservables=['Q0']", "observable 'Q0'"),
        ("[[estimators]]\nname='a'\ntype='tomography'", "estimators[0].type: expected one of"),
        ("[[estimators]]\nname='a'\ntype='purity'\nsubsystems=[[0,0]]", "repeats a qubit"),
        ("[[estimators]]\nname='a/b'\ntype='purity'\nsubsystems=[[0]]", "may not contain '/'"),
        ("[[estimators]]\nname='a'\ntype='purity'\nsubsystems=[[0]]\n[daemon]\npublish_intervall=1", "daemon: unknown key(s) 'publish_intervall'"),
        ("[[estimators]]\nname='a'\ntype='purity'\nsubsystems=[[0]]\n[[inputs.zmq]]\nendpoint='localhost:5'", "inputs.zmq[0].endpoint"),
        ("[[estimators]]\nname='a'\ntype='purity'\nsubsystems=[[0]]\n[[inputs.zmq]]\nendpoint='tcp://127.0.0.1:5'\ncurve=true", "no [curve] table"),
        ("[[estimators]]\nname='a'\ntype='purity'\nsubsystems=[[0]]\n[[inputs.mqtt]]\ntopics=['a/#/b']", "invalid MQTT topic filter"),
        # unpinned and fed from the network: any peer's first batch would fix its register (issue 12, item 5)
        ("[[estimators]]\nname='a'\ntype='purity'\nsubsystems=[[0]]\n[[inputs.zmq]]\nendpoint='tcp://127.0.0.1:5'",
         "estimators[0].wires: estimator 'a' is fed from network inputs and does not declare its wires"),
        ("[[estimators]]\nname='a'\ntype='purity'\nsubsystems=[[0]]\n[mqtt]\npassword='x'", "a password needs a username"),
        ("[[estimators]]\nname='a'\ntype='purity'\nsubsystems=[[0]]\n[checkpoint]\nperiod=-1\npath='x'", "checkpoint.period"),
        ("[[estimators]\nname='a'", "not valid TOML"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path, doc, message):
    p = tmp_path / "bad.toml"
    p.write_text(doc)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert message in str(info.value) and str(p) in str(info.value)
    if "groups" not in message:  # the command line path once is enough (a subprocess costs ~0.6 s)
        return
    r = subprocess.run([sys.executable, "-m", "qsense", "daemon", "--config", str(p)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and message in r.stderr


# -- checkpoints -------------------------------------------------------------------------------------------
def test_checkpoint_roundtrip_atomic_and_corruption_detected(tmp_path):
    est = ShadowEstimator(OBS, groups=3)
    est.update(_shadow(100))
    ck = Checkpoint(daemon="d", written_at=1.0, sources={"a": {"epoch": 5, "seq": 41}},
                    estimators={"e": EstimatorState("shadow", {"x": 1}, est.to_bytes())}, pub_seq=9)
    path = tmp_path / "sub" / "d.ckpt"
    write_checkpoint(path, ck)
    # no temporary left behind; the HMAC key was created next to it
    assert sorted(p.name for p in path.parent.iterdir()) == ["d.ckpt", "d.ckpt.key"]
    back = read_checkpoint(path)
    assert back.sources == {"a": {"epoch": 5, "seq": 41}} and back.pub_seq == 9
    np.testing.assert_array_equal(ShadowEstimator.from_bytes(back.estimators["e"].state).estimate().values, est.estimate().values)
    assert read_checkpoint(tmp_path / "missing") is None
    data = path.read_bytes()
    for broken in (data[:-1], data[:20], b"junk" + data[4:], data[:40] + bytes([data[40] ^ 1]) + data[41:]):
        path.write_bytes(broken)
        with pytest.raises(CheckpointError):
            read_checkpoint(path)


def test_daemon_refuses_corrupt_checkpoint(tmp_path):
    (tmp_path / "d.ckpt").write_bytes(b"QSCKPT01 definitely not msgpack" + bytes(32))
    cfg = tmp_path / "d.toml"
    cfg.write_text("[[estimators]]\nname='a'\ntype='shadow'\nobservables=['Z0']\n[checkpoint]\npath='d.ckpt'\n")
    r = subprocess.run([sys.executable, "-m", "qsense", "daemon", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "checksum mismatch" in r.stderr


# -- in-process robustness ---------------------------------------------------------------------------------
def _garbage(rng, valid_frames):
    """Messages that must be rejected: random bytes, truncations, broken headers, bad values."""
    out = []
    for i in range(30):
        kind = i % 6
        if kind == 0:
            out.append([rng.bytes(int(rng.integers(0, 64)))])
        elif kind == 1:
            out.append([bytes(f) for f in valid_frames[:-1]])
        elif kind == 2:
            f = [bytes(x) for x in valid_frames]
            f[1] = f[1][:-3]
            out.append(f)
        elif kind == 3:
            f = [bytes(x) for x in valid_frames]
            f[0] = f[0].replace(b"\xa1v\x01", b"\xa1v\x09")  # schema version 9
            out.append(f)
        elif kind == 4:
            f = [bytearray(bytes(x)) for x in valid_frames]
            f[1][0] = 7  # basis code 7
            out.append(f)
        else:
            out.append([rng.bytes(30), rng.bytes(100), rng.bytes(8)])
    for m in out:
        with pytest.raises(qsense.WireFormatError):
            qsense.decode(m)
    return out


async def test_garbage_mixed_with_valid_data_changes_nothing(tmp_path):
    cfg = {
        "daemon": {"publish_interval": 60},
        "inputs": {"zmq": [{"endpoint": "tcp://127.0.0.1:*", "name": "in"}]},
        "estimators": [
            {"name": "mom", "type": "shadow", "observables": OBS, "groups": 5, "wires": 4},
            {"name": "pur", "type": "purity", "subsystems": [[0], [1, 2]], "wires": 4},
            {"name": "bell", "type": "bell", "observables": ["XX", "ZIZI"], "purity_subsystems": [[0, 1]], "wires": 4},
            {"name": "only-a", "type": "shadow", "observables": ["Z0"], "sources": ["a"], "wires": 4},
        ],
        "outputs": {"prometheus": {"port": 0}},
    }
    rng = np.random.default_rng(11)
    valid = []
    for i in range(12):
        valid.append(_shadow(int(rng.integers(1, 400)), seed=100 + i, source="a", seq=i))
        valid.append(_bell(int(rng.integers(1, 300)), seed=200 + i, source="pairs", seq=i))
    garbage = _garbage(rng, qsense.encode(valid[0], packed=False))  # v1: the mutations below target its byte layout
    refs = {"mom": ShadowEstimator(OBS, groups=5), "pur": ShadowPurity([[0], [1, 2]]),
            "bell": BellEstimator(["XX", "ZIZI"], purity_subsystems=[[0, 1]]), "only-a": ShadowEstimator(["Z0"])}
    for b in valid:
        if b.kind == "shadow":
            for k in ("mom", "pur", "only-a"):
                refs[k].update(b)
        else:
            refs["bell"].update(b)

    async with EstimationDaemon(cfg) as d:
        tx = RecordPublisher(d.endpoints["input.in"])
        # garbage at random places between the valid batches (which keep their order)
        order: list = [("v", b) for b in valid]
        for g in garbage:
            order.insert(int(rng.integers(0, len(order) + 1)), ("g", g))
        order += [("v", valid[6]), ("v", valid[10])]  # replays of source 'a': dropped as duplicates
        # a decodable batch on the wrong register: refused by the bound estimator, others unaffected
        order += [("v", _shadow(5, n=3, seed=1, source="b", seq=0))]
        for kind, item in order:
            if kind == "v":
                await tx.send(item)
            else:
                await tx.send_frames(item)
        async with asyncio.timeout(10):
            while d.stats()["inputs"]["zmq"]["in"]["messages"] < len(order):
                await asyncio.sleep(0.01)
        est = d.estimates()
        stats = d.stats()
        metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(d.endpoints["metrics"], timeout=5).read().decode())
        tx.close()

    np.testing.assert_allclose(_values(est["mom"]), refs["mom"].estimate().values, atol=1e-12)
    assert est["mom"]["count"] == refs["mom"].count
    pur_ref = np.concatenate([refs["pur"].purity().values, refs["pur"].entropy().values])
    np.testing.assert_allclose(_values(est["pur"]), pur_ref, atol=1e-12)
    bell_ref = np.concatenate([refs["bell"].estimate().values, refs["bell"].purity().values, refs["bell"].purity([0, 1]).values])
    np.testing.assert_allclose(_values(est["bell"]), bell_ref, atol=1e-12)
    np.testing.assert_allclose(_values(est["only-a"]), refs["only-a"].estimate().values, atol=1e-12)
    assert stats["totals"]["malformed"] == len(garbage)
    assert stats["sources"]["a"]["duplicates"] == 2 and stats["sources"]["a"]["gaps"] == 0
    assert stats["estimators"]["only-a"]["rejected"] == {}  # source filter: 'b' never reached it
    assert stats["estimators"]["mom"]["rejected"] == {"wires": 1}  # n=3 vs bound n=4
    assert 'qsense_malformed_messages_total{input="in",reason="header"}' in metrics
    assert 'qsense_duplicate_batches_total{source="a"} 2.0' in metrics
    assert 'qsense_records_total{source="pairs"}' in metrics


async def test_pinned_wires_protect_a_fresh_estimator():
    cfg = {"estimators": [{"name": "e", "type": "shadow", "observables": ["Z0"], "wires": 4}]}
    async with EstimationDaemon(cfg) as d:
        d.ingest(_shadow(10, n=2, source="typo", seq=0))  # would otherwise bind the estimator to 2 qubits
        d.ingest(_shadow(10, n=4, source="good", seq=0))
        assert d.slots[0].count == 10 and d.slots[0].rejected == {"wires": 1}


async def test_late_joiner_and_status_from_the_daemon():
    cfg = {
        "daemon": {"name": "lab", "publish_interval": 0.05},
        "estimators": [{"name": "zz", "type": "shadow", "observables": ["Z0 Z1"]}],
        "outputs": {"zmq": {"endpoint": "tcp://127.0.0.1:*", "snapshot_endpoint": "tcp://127.0.0.1:*", "topic_prefix": "q"}},
    }
    async with EstimationDaemon(cfg) as d:
        d.ingest(_shadow(500, source="s", seq=0))
        d.ingest(_shadow(500, source="s", seq=3))  # two batches missing
        await asyncio.sleep(0.2)
        sub = EstimateSubscriber(d.endpoints["estimates"], d.endpoints["snapshot"], ["q/"])
        snap = await sub.snapshot(timeout=5)
        assert snap["q/estimates/zz"]["count"] == 1000 and snap["q/estimates/zz"]["sources"] == {"s": 3}
        assert snap["q/status"]["sources"]["s"]["missing"] == 2
        topic, body = await sub.recv(timeout=5)
        assert body["pub_seq"] > sub.snapshot_seq
        sub.close()


# -- the daemon as a process: SIGTERM, kill -9, restart -----------------------------------------------------
def _write_config(tmp_path: Path, period: float = 0.2) -> Path:
    cfg = tmp_path / "daemon.toml"
    cfg.write_text(f"""
[daemon]
name = "proc"
publish_interval = 0.1
[[inputs.zmq]]
name = "in"
endpoint = "ipc://{tmp_path}/records.sock"
[[estimators]]
name = "mom"
type = "shadow"
observables = {json.dumps(OBS)}
groups = 4
wires = 4
[outputs.zmq]
endpoint = "tcp://127.0.0.1:*"
snapshot_endpoint = "tcp://127.0.0.1:*"
topic_prefix = "p"
[checkpoint]
path = "state/d.ckpt"
period = {period}
""")
    return cfg


class _Proc:
    def __init__(self, cfg: Path, tmp_path: Path, tag: str) -> None:
        self.ready = tmp_path / f"ready-{tag}.json"
        self.log = tmp_path / f"daemon-{tag}.log"
        with open(self.log, "wb") as logf:
            self.p = subprocess.Popen(
                [sys.executable, "-m", "qsense", "--log-level", "INFO", "daemon", "--config", str(cfg), "--ready-file", str(self.ready)],
                stdout=logf, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while not self.ready.exists():
            if self.p.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"daemon did not start:\n{self.log.read_text()}")
            time.sleep(0.02)
        self.endpoints = json.loads(self.ready.read_text())["endpoints"]

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)


async def _wait_ckpt_seq(path: Path, seq: int, timeout: float = 10.0) -> Checkpoint:
    async with asyncio.timeout(timeout):
        while True:
            try:
                ck = read_checkpoint(path)
            except CheckpointError:
                ck = None
            if ck is not None and ck.sources.get("det", {}).get("seq", -1) >= seq:
                return ck
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_sigterm_drains_checkpoints_and_exits_zero(tmp_path, sig):
    cfg = _write_config(tmp_path, period=3600)  # only the shutdown checkpoint
    proc = _Proc(cfg, tmp_path, "a")
    try:
        batches = [_shadow(300, seed=i) for i in range(10)]
        async with RecordPublisher(f"ipc://{tmp_path}/records.sock", source="det") as tx:
            for b in batches:
                await tx.send(b, timeout=5)
            await asyncio.sleep(0.3)
            proc.p.send_signal(sig)
            rc = await asyncio.to_thread(proc.p.wait, 20)
    finally:
        proc.kill()
    assert rc == 0, proc.log.read_text()
    ck = read_checkpoint(tmp_path / "state" / "d.ckpt")
    assert ck.sources["det"]["seq"] == 9
    ref = ShadowEstimator(OBS, groups=4)
    for b in batches:
        ref.update(b)
    got = ShadowEstimator.from_bytes(ck.estimators["mom"].state)
    assert got.count == 3000
    np.testing.assert_allclose(got.estimate().values, ref.estimate().values, atol=1e-12)
    assert "stopped" in proc.log.read_text()


async def test_kill9_restart_loses_nothing_acknowledged_and_reports_the_gap(tmp_path):
    cfg = _write_config(tmp_path, period=0.5)
    ckpt_path = tmp_path / "state" / "d.ckpt"
    batches = [_shadow(200 + 10 * i, seed=i) for i in range(40)]
    first = _Proc(cfg, tmp_path, "1")
    try:
        tx = RecordPublisher(f"ipc://{tmp_path}/records.sock", source="det")
        for b in batches[:20]:
            await tx.send(b, timeout=5)
        await _wait_ckpt_seq(ckpt_path, 19)  # seq 0..19 acknowledged
        for b in batches[20:30]:  # received, but the process dies before (most of) them are checkpointed
            await tx.send(b, timeout=5)
        await asyncio.sleep(0.05)
        first.kill()  # SIGKILL: no shutdown code runs
    finally:
        first.kill()
    acked = read_checkpoint(ckpt_path).sources["det"]["seq"]
    assert 19 <= acked <= 29
    print("acknowledged up to seq", acked)

    second = _Proc(cfg, tmp_path, "2")
    try:
        sub = EstimateSubscriber(second.endpoints["estimates"], second.endpoints["snapshot"], ["p/"])
        restored = (await sub.snapshot(timeout=5))["p/estimates/mom"]
        assert restored["count"] == sum(b.T for b in batches[: acked + 1])  # nothing acknowledged was lost
        # the same producer (same epoch) goes on where it was: seq 30..39
        for b in batches[30:]:
            await tx.send(b, timeout=10)
        async with asyncio.timeout(10):
            while True:
                topic, body = await sub.recv(timeout=5)
                if topic == "p/status" and body["sources"].get("det", {}).get("last_seq") == 39:
                    break
        assert body["sources"]["det"]["missing"] == 29 - acked
        assert body["sources"]["det"]["gaps"] == (1 if acked < 29 else 0)
        sub.close()
        tx.close()
        second.p.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.p.wait, 20) == 0
    finally:
        second.kill()
    log = second.log.read_text()
    assert "resumed from checkpoint" in log
    if acked < 29:
        assert f"gap across the daemon restart on source 'det': {29 - acked} batch(es) missing" in log
    final = ShadowEstimator.from_bytes(read_checkpoint(ckpt_path).estimators["mom"].state)
    ref = ShadowEstimator(OBS, groups=4)
    for b in batches[: acked + 1] + batches[30:]:
        ref.update(b.with_meta(source="det"))
    assert final.count == ref.count
    np.testing.assert_allclose(final.estimate().values, ref.estimate().values, atol=1e-12)


async def test_checkpoint_failure_is_counted_not_fatal(tmp_path):
    blocker = tmp_path / "state"
    cfg = {"estimators": [{"name": "e", "type": "shadow", "observables": ["Z0"]}],
           "checkpoint": {"path": str(blocker / "c.ckpt"), "period": 3600}}
    async with EstimationDaemon(cfg) as d:
        blocker.write_text("a file where the checkpoint directory should be")  # e.g. a broken mount
        d.ingest(_shadow(10, source="s", seq=0))
        assert await d.checkpoint() is None
        assert d.stats()["checkpoint"]["failures"] == 1
        assert d.ingest(_shadow(10, source="s", seq=1))  # still running


async def test_changed_estimator_config_is_refused_unless_allowed(tmp_path, caplog):
    base = {"estimators": [{"name": "e", "type": "shadow", "observables": ["Z0"]}],
            "checkpoint": {"path": str(tmp_path / "c.ckpt"), "period": 3600}}
    async with EstimationDaemon(base) as d:
        d.ingest(_shadow(50, source="s", seq=0))
    async with EstimationDaemon(base) as d:
        assert d.slots[0].count == 50  # resumed
    changed = {**base, "estimators": [{"name": "e", "type": "shadow", "observables": ["Z0", "X1"]}]}
    with pytest.raises(DaemonError, match=r"estimator 'e' was checkpointed with another configuration \(observables \['Z0'\] -> "
                       r"\['Z0', 'X1'\]\).*--reset-estimators e"):
        await EstimationDaemon(changed).start()
    for kw in ({"allow_config_change": True}, {"reset_estimators": ["e"]}):
        async with EstimationDaemon(changed, **kw) as d:
            assert d.slots[0].count == 0
            assert not d.ingest(_shadow(50, source="s", seq=0))  # seq marks survive: a replay is still a duplicate
            assert "started from zero: e" in d.resume_summary


# -- the example ---------------------------------------------------------------------------------------------
def test_example_daemon_with_config_runs(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "daemon_with_config.py"), "--any-port", "--seconds", "1.5",
                        "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if line.strip().startswith(("Z0 Z1", "X0 X1 X2 X3"))]
    assert rows
    for row in rows:
        exact, est, se = map(float, row[-3:])
        assert abs(est - exact) < 5 * se + 1e-3
    assert (tmp_path / "lab1.ckpt").exists()


async def test_coalesced_updates_equal_batch_by_batch_updates():
    """ingest_many concatenates runs of small batches; every estimator must give
    exactly what batch-by-batch updates give (groups > 1 included)."""
    cfg = {"estimators": [
        {"name": "mom", "type": "shadow", "observables": OBS, "groups": 7},
        {"name": "pur", "type": "purity", "subsystems": [[0, 2]]},
        {"name": "bell", "type": "bell", "observables": ["XXZZ", "YI"], "t2": 0.5},
    ]}
    rng = np.random.default_rng(5)
    shadows = [_shadow(int(rng.integers(1, 90)), seed=i, source="s", seq=i) for i in range(60)]
    bells = [_bell(int(rng.integers(1, 90)), seed=i, source="b", seq=i) for i in range(30)]
    bells = [b.with_meta(wait=rng.random(b.T) * 0.01) for b in bells]
    mixed = [x for pair in zip(shadows[:30], bells) for x in pair] + shadows[30:]
    refs = [ShadowEstimator(OBS, groups=7), ShadowPurity([[0, 2]]), BellEstimator(["XXZZ", "YI"], t2=0.5)]
    for b in mixed:
        for r in (refs[:2] if b.kind == "shadow" else refs[2:]):
            r.update(b)
    async with EstimationDaemon(cfg) as d:
        assert d.ingest_many([(b, 0) for b in mixed[:50]]) == 50
        assert d.ingest_many([(b, 0) for b in mixed[45:]]) == len(mixed) - 50  # 5 replays dropped
        est = d.estimates()
        assert d.slots[0].updates == 60 and d.slots[2].updates == 30
    np.testing.assert_array_equal(_values(est["mom"]), refs[0].estimate().values)
    assert est["mom"]["count"] == refs[0].count
    np.testing.assert_allclose(_values(est["pur"])[:1], refs[1].purity().values, rtol=1e-12)
    np.testing.assert_allclose(_values(est["bell"])[:2], refs[2].estimate().values, rtol=1e-12, atol=1e-15)


async def test_daemon_with_curve_serves_only_authorized_keys(tmp_path):
    from qsense.streaming.transport import CurveClientKeys, generate_keypair

    generate_keypair(tmp_path / "server", "server")
    generate_keypair(tmp_path / "authorized", "alice")
    generate_keypair(tmp_path / "other", "mallory")
    (tmp_path / "d.toml").write_text("""
[[inputs.zmq]]
name = "in"
endpoint = "tcp://127.0.0.1:*"
curve = true
[[estimators]]
name = "z"
type = "shadow"
observables = ["Z0"]
wires = 4
[outputs.zmq]
endpoint = "tcp://127.0.0.1:*"
snapshot_endpoint = "tcp://127.0.0.1:*"
curve = true
[curve]
server_secret_key = "server/server.key_secret"
authorized_keys = "authorized"
""")
    alice = CurveClientKeys(tmp_path / "authorized" / "alice.key_secret", tmp_path / "server" / "server.key")
    mallory = CurveClientKeys(tmp_path / "other" / "mallory.key_secret", tmp_path / "server" / "server.key")
    async with EstimationDaemon(tmp_path / "d.toml") as d:
        good = RecordPublisher(d.endpoints["input.in"], source="alice", curve=alice)
        bad = RecordPublisher(d.endpoints["input.in"], source="mallory", curve=mallory)
        await good.send(_shadow(100), timeout=5)
        with pytest.raises(asyncio.TimeoutError):
            await bad.send(_shadow(100), timeout=1.0)
        async with asyncio.timeout(5):
            while d.slots[0].count < 100:
                await asyncio.sleep(0.01)
        await d.publish_estimates()
        ok = EstimateSubscriber(d.endpoints["estimates"], d.endpoints["snapshot"], ["qsense/"], curve=alice)
        assert (await ok.snapshot(timeout=5))["qsense/estimates/z"]["count"] == 100
        nope = EstimateSubscriber(d.endpoints["estimates"], d.endpoints["snapshot"], ["qsense/"], curve=mallory)
        with pytest.raises(asyncio.TimeoutError):
            await nope.snapshot(timeout=1.0)
        assert set(d.stats()["sources"]) == {"alice"}
        for s in (good, bad):
            s.close(0)
        ok.close()
        nope.close()


def test_broker_config_reads_password_file_and_checks_tls_files(tmp_path):
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "pw").chmod(0o600)  # a secret readable by others is refused
    (tmp_path / "ca.crt").write_text("not really a certificate")
    doc = {"estimators": [{"name": "a", "type": "shadow", "observables": ["Z0"], "wires": 1}],
           "inputs": {"mqtt": [{"topics": ["lab/#"]}]},
           "mqtt": {"username": "u", "password_file": "pw", "ca_file": "ca.crt", "port": 8883}}
    cfg = parse_config(doc, tmp_path)
    s = cfg.broker.settings()
    assert (s.username, s.password, s.port, s.uses_tls) == ("u", "s3cret", 8883, True)
    assert s.ca_file == str(tmp_path / "ca.crt")
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config({**doc, "mqtt": {"ca_file": "missing.crt"}}, tmp_path)
    with pytest.raises(ConfigError, match="not both"):
        parse_config({**doc, "mqtt": {"username": "u", "password": "x", "password_file": "pw"}}, tmp_path)


async def test_all_pauli_squares_estimator_in_the_daemon():
    cfg = {"estimators": [{"name": "all", "type": "all_pauli_squares", "max_qubits": 3}]}
    batches = [_bell(200, n=3, seed=i, source="b", seq=i) for i in range(5)]
    async with EstimationDaemon(cfg) as d:
        for b in batches:
            assert d.ingest(b)
        d.ingest(_bell(10, n=4, source="c", seq=0))  # bound to 3 wires: refused, counted
        est = d.estimates()["all"]
        assert d.slots[0].rejected == {"wires": 1}
    async with EstimationDaemon(cfg) as d:
        d.ingest(_bell(10, n=4, source="c", seq=0))  # 4^4 values: above max_qubits
        assert d.slots[0].rejected == {"invalid": 1} and d.slots[0].count == 0
    ref = qsense.all_pauli_squares(qsense.concatenate(batches))
    np.testing.assert_allclose(_values(est), ref, atol=1e-12)
    assert list(est["estimates"])[:3] == ["III", "IIX", "IIY"] and est["count"] == 1000
    with pytest.raises(ConfigError, match="max_qubits"):
        parse_config({"estimators": [{"name": "a", "type": "all_pauli_squares", "max_qubits": 13}]})
