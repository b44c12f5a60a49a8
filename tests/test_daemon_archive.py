"""The daemon with an [archive]: store first, exactly once, replay after restarts, back-fill, refusals, kill -9.

Real ZeroMQ sockets on 127.0.0.1, reliable publishers, real archives on disk;
the crash test runs ``python -m qsense daemon`` as a subprocess and kills it
with SIGKILL again and again while a producer streams.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from qsense import ShadowBatch, ShadowEstimator, ShadowPurity
from qsense.streaming.archive import ArchiveError, open_archive
from qsense.streaming.checkpoint import read_checkpoint
from qsense.streaming.config import parse_config
from qsense.streaming.daemon import EstimationDaemon
from qsense.streaming.transport import RecordPublisher

pytestmark = pytest.mark.timeout(120)

OBS = ["Z0 Z1", "X0 X1 X2", "Y1", "Z3", "X2 Y3"]


def _batch(rng, T=500, n=4):
    return ShadowBatch(rng.integers(0, 3, (T, n)), rng.integers(0, 2, (T, n)), t=np.sort(rng.random(T)))


def _config(tmp_path, **archive):
    return parse_config({
        "daemon": {"name": "arch", "publish_interval": 0.2, "drain_timeout": 2.0},
        "inputs": {"zmq": [{"endpoint": "tcp://127.0.0.1:0", "name": "in"}]},
        "estimators": [{"name": "obs", "type": "shadow", "observables": OBS, "wires": 4},
                       {"name": "ent", "type": "purity", "subsystems": [[0, 1]], "wires": 4}],
        "checkpoint": {"path": str(tmp_path / "state.ckpt"), "period": 3600},
        "archive": {"path": str(tmp_path / "archive"), "commit_interval": 0.01, **archive},
    })


def _offline(batches, obs=OBS):
    est = ShadowEstimator(obs)
    for b in batches:
        est.update(b)
    return est.estimate().values


async def _send_all(endpoint, batches, *, epoch=None, timeout=20.0):
    pub = RecordPublisher(endpoint, source="lab", epoch=epoch)
    try:
        for b in batches:
            await pub.send(b)
        await pub.flush(timeout=timeout)
        return pub.epoch
    finally:
        pub.close()


async def test_store_then_fold_restart_replays_after_the_checkpoint(tmp_path):
    rng = np.random.default_rng(1)
    batches = [_batch(rng) for _ in range(30)]
    cfg = _config(tmp_path)
    d = EstimationDaemon(cfg)
    await d.start()
    ep = d.endpoints["input.in"]
    epoch = await _send_all(ep, batches[:15])
    assert d.folded_pos == 14 and d.archive_counts["stored"] == 15
    await d.checkpoint()  # the checkpoint covers archive positions 0..14
    pub = RecordPublisher(ep, source="lab", epoch=epoch)
    pub.next_seq = 15
    for b in batches[15:]:
        await pub.send(b)
    await pub.flush(timeout=20)
    pub.close()
    got = np.array([v["value"] for v in d.estimates()["obs"]["estimates"].values()])
    assert np.allclose(got, _offline(batches), atol=1e-12)
    # stop without a final checkpoint: as if the daemon died after the last commit
    d.config = dataclasses.replace(d.config, checkpoint=None)
    await d.stop()
    assert read_checkpoint(tmp_path / "state.ckpt").archive_pos == 14
    d2 = EstimationDaemon(cfg)
    await d2.start()
    try:
        assert d2.archive_counts["replayed"] == 15  # 15..29 from the archive, 0..14 from the checkpoint
        got = np.array([v["value"] for v in d2.estimates()["obs"]["estimates"].values()])
        assert np.allclose(got, _offline(batches), atol=1e-12)
        assert d2.slots[0].count == 30 * 500
        # resending everything (same epoch) is recognised: acknowledged, nothing folded twice
        await _send_all(d2.endpoints["input.in"], batches, epoch=epoch)
        assert d2.archive_counts["duplicates"] == 30 and d2.slots[0].count == 30 * 500
    finally:
        await d2.stop()
    keys = [(b.source, b.seq) for b in open_archive(tmp_path / "archive").batches()]
    assert keys == [("lab", i) for i in range(30)]


async def test_new_estimator_is_back_filled_from_the_archive(tmp_path):
    rng = np.random.default_rng(2)
    batches = [_batch(rng) for _ in range(24)]
    d = EstimationDaemon(_config(tmp_path))
    await d.start()
    try:
        ep = d.endpoints["input.in"]
        pub = RecordPublisher(ep, source="lab")
        for b in batches[:16]:
            await pub.send(b)
        await pub.flush(timeout=20)
        new_obs = ["Z0 Z2", "Y0 Y1 Y2 Y3"]
        doc = {
            "daemon": {"name": "arch", "publish_interval": 0.2, "drain_timeout": 2.0},
            "inputs": {"zmq": [{"endpoint": "tcp://127.0.0.1:0", "name": "in"}]},
            "estimators": [{"name": "obs", "type": "shadow", "observables": OBS, "wires": 4},
                           {"name": "late", "type": "shadow", "observables": new_obs, "wires": 4}],
            "checkpoint": {"path": str(tmp_path / "state.ckpt"), "period": 3600},
            "archive": {"path": str(tmp_path / "archive"), "commit_interval": 0.01},
        }
        # sending goes on while the new estimator back-fills
        sender = asyncio.ensure_future(_send_rest(pub, batches[16:]))
        changes = await d.reload(doc)
        await sender
        assert changes == {"added": ["late"], "removed": ["ent"], "replaced": []}
        late = np.array([v["value"] for v in d.estimates()["late"]["estimates"].values()])
        assert np.allclose(late, _offline(batches, new_obs), atol=1e-12)
        assert "ent" not in d.estimates()
        assert d.slots[-1].count == 24 * 500
    finally:
        pub.close()
        await d.stop()


async def _send_rest(pub, batches):
    for b in batches:
        await pub.send(b)
        await asyncio.sleep(0.005)
    await pub.flush(timeout=20)


async def test_full_archive_stops_acknowledging_and_folds_nothing_it_could_not_keep(tmp_path):
    rng = np.random.default_rng(3)
    batches = [_batch(rng, T=2000) for _ in range(12)]
    d = EstimationDaemon(_config(tmp_path, capacity_gb=60_000 / 2**30))
    await d.start()
    try:
        pub = RecordPublisher(d.endpoints["input.in"], source="lab", ack_timeout=0.3)
        for b in batches:
            await pub.send(b)
        with pytest.raises(TimeoutError, match="unacknowledged"):
            await pub.flush(timeout=2.0)
        stored = d.archive_counts["stored"]
        assert 0 < stored < 12 and d.archive_counts["refused"] > 0
        assert d.slots[0].count == stored * 2000  # only what is durable was folded
        assert pub.unacked == 12 - stored
        pub.close()
    finally:
        await d.stop()
    assert [b.seq for b in open_archive(tmp_path / "archive").batches()] == list(range(stored))


def test_archive_config_errors():
    from qsense.streaming.config import ConfigError

    base = {"estimators": [{"name": "a", "type": "purity", "subsystems": [[0]]}]}
    with pytest.raises(ConfigError, match="archive.path: is required"):
        parse_config({**base, "archive": {}})
    with pytest.raises(ConfigError, match="archive.fsync: expected one of"):
        parse_config({**base, "archive": {"path": "x", "fsync": "never"}})
    with pytest.raises(ConfigError, match="retention needs a \\[checkpoint\\]"):
        parse_config({**base, "archive": {"path": "x", "retention_gb": 1}})
    with pytest.raises(ConfigError, match="archive: unknown key"):
        parse_config({**base, "archive": {"path": "x", "fsnyc": "batch"}})


def test_not_an_archive_path_refuses_to_start(tmp_path):
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "notes.txt").write_text("my thesis")
    cfg = tmp_path / "d.toml"
    cfg.write_text(f"""
[[inputs.zmq]]
endpoint = "tcp://127.0.0.1:0"
[[estimators]]
name = "a"
type = "purity"
subsystems = [[0]]
wires = 4
[archive]
path = "{tmp_path / 'archive'}"
""")
    r = subprocess.run([sys.executable, "-m", "qsense", "daemon", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "not a qsense archive" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "archive" / "notes.txt").read_text() == "my thesis"


# -- kill -9 again and again while a reliable producer streams --------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_daemon(cfg: Path, ready: Path) -> subprocess.Popen:
    ready.unlink(missing_ok=True)
    p = subprocess.Popen([sys.executable, "-m", "qsense", "--log-level", "WARNING", "daemon", "--config", str(cfg),
                          "--ready-file", str(ready)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if p.poll() is not None:
            raise AssertionError(f"daemon exited {p.returncode}: {p.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("daemon did not start")
        time.sleep(0.02)
    return p


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_kill_9_ten_times_nothing_lost_nothing_twice(tmp_path):
    port = _free_port()
    cfg = tmp_path / "daemon.toml"
    cfg.write_text(f"""
[daemon]
name = "crash"
publish_interval = 0.5
drain_timeout = 2.0
[[inputs.zmq]]
endpoint = "tcp://127.0.0.1:{port}"
name = "in"
[[estimators]]
name = "obs"
type = "shadow"
observables = {json.dumps(OBS)}
wires = 4
[[estimators]]
name = "ent"
type = "purity"
subsystems = [[0, 1], [2]]
wires = 4
[checkpoint]
path = "{tmp_path / 'state.ckpt'}"
period = 0.25
[archive]
path = "{tmp_path / 'archive'}"
commit_interval = 0.02
segment_mb = 0.5
""")
    ready = tmp_path / "ready.json"
    proc = _start_daemon(cfg, ready)
    rng = np.random.default_rng(2026)
    made: list[ShadowBatch] = []
    pub = RecordPublisher(f"tcp://127.0.0.1:{port}", source="prod", ack_timeout=0.5, window=32)
    stop = asyncio.Event()
    kills = 0

    async def produce() -> None:
        while not stop.is_set():
            b = _batch(rng, T=int(rng.integers(200, 3000)))
            made.append(b)
            await pub.send(b)
            await asyncio.sleep(0.002)

    async def killer() -> None:
        nonlocal proc, kills
        r = random.Random(7)
        t_end = time.monotonic() + 32
        while time.monotonic() < t_end or kills < 10:
            await asyncio.sleep(r.uniform(0.8, 2.6))
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            kills += 1
            proc = await asyncio.to_thread(_start_daemon, cfg, ready)
        stop.set()

    producer = asyncio.ensure_future(produce())
    await killer()
    await producer
    await pub.flush(timeout=60)  # every batch acknowledged by some incarnation
    pub.close()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait) == 0
    assert kills >= 10 and len(made) > 300
    ckpt = read_checkpoint(tmp_path / "state.ckpt")
    est = ShadowEstimator.from_bytes(ckpt.estimators["obs"].state)
    assert est.count == sum(b.T for b in made)  # nothing lost, nothing counted twice
    assert np.allclose(est.estimate().values, _offline(made), atol=1e-12, rtol=0)
    pur = ShadowPurity.from_bytes(ckpt.estimators["ent"].state)
    off = ShadowPurity([[0, 1], [2]])
    for b in made:
        off.update(b)
    assert np.allclose(pur.purity().values, off.purity().values, atol=1e-12, rtol=0)
    seqs = [b.seq for b in open_archive(tmp_path / "archive").batches()]
    assert sorted(seqs) == list(range(len(made)))  # the archive holds each batch once
    print(f"kills={kills} batches={len(made)}")


async def test_replay_reproduces_the_daemon_and_estimate_agrees(tmp_path, capsys):
    """Archive A (a daemon's) replayed into a fresh daemon B gives A's estimates exactly;
    ``qsense estimate A`` prints the same numbers (to its 6 decimals)."""
    from qsense.apps.cli import main
    from qsense.drivers.replay import ArchiveReplaySource

    rng = np.random.default_rng(4)
    batches = [_batch(rng, T=int(rng.integers(50, 900))) for _ in range(25)]
    a = EstimationDaemon(_config(tmp_path / "a"))
    await a.start()
    try:
        await _send_all(a.endpoints["input.in"], batches)
        want = a.estimates()
    finally:
        await a.stop()
    b = EstimationDaemon(_config(tmp_path / "b"))
    await b.start()
    try:
        pub = RecordPublisher(b.endpoints["input.in"])  # each batch's own (source, seq), epoch passed per batch
        await ArchiveReplaySource(tmp_path / "a" / "archive").publish(pub, flush_timeout=20)
        pub.close()
        got = b.estimates()
    finally:
        await b.stop()
    for name in ("obs", "ent"):
        w, g = want[name]["estimates"], got[name]["estimates"]
        assert w.keys() == g.keys() and w
        for k in w:
            assert g[k]["value"] == pytest.approx(w[k]["value"], abs=1e-12)
            assert g[k]["stderr"] == pytest.approx(w[k]["stderr"], abs=1e-12)
    # the same (source, epoch, seq) in both archives
    ka = [e.key for e in open_archive(tmp_path / "a" / "archive").entries()]
    kb = [e.key for e in open_archive(tmp_path / "b" / "archive").entries()]
    assert ka == kb and len(ka) == 25
    # ask later from the shell
    rc = main(["estimate", str(tmp_path / "a" / "archive"), *[x for o in OBS for x in ("-o", o)], "-s", "0,1", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    printed = {}
    for line in out.strip().splitlines()[1:]:  # kind quantity target... value stderr
        kind, quantity, rest = line.split(None, 2)
        target, value, _ = rest.rsplit(None, 2)
        printed[(kind, quantity, target)] = float(value)
    for o in OBS:
        assert printed[("shadow", "expval", o)] == pytest.approx(want["obs"]["estimates"][o]["value"], abs=5e-7)
    assert printed[("shadow", "purity", "[0, 1]")] == pytest.approx(want["ent"]["estimates"]["purity[0, 1]"]["value"], abs=5e-7)


async def test_failed_fsync_holds_folding_and_acks_until_a_later_one_succeeds(tmp_path):
    rng = np.random.default_rng(5)
    batches = [_batch(rng) for _ in range(6)]
    d = EstimationDaemon(_config(tmp_path))
    await d.start()
    try:
        real_sync = d.archive.sync
        failing = {"on": True}

        def flaky_sync():
            if failing["on"]:
                raise ArchiveError("fsync failed: Input/output error (simulated)")
            return real_sync()

        d.archive.sync = flaky_sync
        pub = RecordPublisher(d.endpoints["input.in"], source="lab", ack_timeout=5.0)
        for b in batches:
            await pub.send(b)
        await asyncio.sleep(0.5)
        # fsync failing: stored, but nothing may be folded or acknowledged
        assert d.slots[0].count == 0 and pub.acked == 0 and d.archive_counts["sync_failures"] >= 1
        failing["on"] = False
        await pub.flush(timeout=20)  # a later fsync succeeded: everything folded once and acknowledged
        pub.close()
        assert d.archive_counts["sync_failures"] >= 1
        assert d.slots[0].count == 6 * 500
        got = np.array([v["value"] for v in d.estimates()["obs"]["estimates"].values()])
        assert np.allclose(got, _offline(batches), atol=1e-12)
    finally:
        await d.stop()


async def test_archive_counters_reach_prometheus(tmp_path):
    import urllib.request

    doc = {
        "inputs": {"zmq": [{"endpoint": "tcp://127.0.0.1:0", "name": "in"}]},
        "estimators": [{"name": "obs", "type": "shadow", "observables": OBS, "wires": 4}],
        "outputs": {"prometheus": {"port": 0}},
        "archive": {"path": str(tmp_path / "archive"), "commit_interval": 0.01},
    }
    d = EstimationDaemon(doc)
    await d.start()
    try:
        rng = np.random.default_rng(6)
        await _send_all(d.endpoints["input.in"], [_batch(rng) for _ in range(4)])
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(d.endpoints["metrics"], timeout=5).read().decode())
    finally:
        await d.stop()
    assert "qsense_archive_stored_batches_total 4.0" in text
    assert "qsense_archive_refused_batches_total 0.0" in text and "qsense_archive_position 3.0" in text
