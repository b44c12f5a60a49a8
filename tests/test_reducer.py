"""Live sharding: a ShardedPublisher feeding two daemons (each with its own archive) and a Reducer merging their states.

Real ZeroMQ sockets on 127.0.0.1 and real archives under tmp_path: the combined
estimates (shadow, purity, Bell) equal one daemon's over the same batches; a late or restarted reducer
recovers from the daemons' snapshots; a stopped daemon is marked stale and kept
in the total; a fingerprint mismatch is refused and reported; a resend after a
daemon restart goes to the same shard and is not counted twice.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from qsense import BellBatch, ShadowBatch, ShadowEstimator, ShadowPurity
from qsense.streaming.archive import open_archive
from qsense.streaming.config import parse_config
from qsense.streaming.daemon import EstimationDaemon
from qsense.streaming.reducer import Reducer
from qsense.streaming.transport import EstimateSubscriber, RecordPublisher, ShardedPublisher

pytestmark = pytest.mark.timeout(60)

OBS = ["Z0 Z1", "X0 X1 X2", "Y1", "Z3", "X2 Y3"]
T = 400


def _batch(rng, n=4, seq=0):
    return ShadowBatch(rng.integers(0, 3, (T, n)), rng.integers(0, 2, (T, n)), source="lab", seq=seq, t=np.sort(rng.random(T)))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path, name, *, obs=OBS, archive=True, bell=False, inp="tcp://127.0.0.1:0", pub="tcp://127.0.0.1:0",
            snap="tcp://127.0.0.1:0"):
    raw = {
        "daemon": {"name": name, "publish_interval": 0.1, "drain_timeout": 1.0},
        "inputs": {"zmq": [{"endpoint": inp, "name": "in"}]},
        "estimators": [{"name": "obs", "type": "shadow", "observables": obs, "wires": 4},
                       {"name": "ent", "type": "purity", "subsystems": [[0, 1], [2]], "wires": 4}],
        "outputs": {"zmq": {"endpoint": pub, "snapshot_endpoint": snap}},
        "checkpoint": {"path": str(tmp_path / f"{name}.ckpt"), "period": 3600},
    }
    if bell:
        raw["estimators"].append({"name": "bell", "type": "bell", "observables": ["XX", "ZIZI"],
                                  "purity_subsystems": [[0, 1]], "wires": 4})
    if archive:
        raw["archive"] = {"path": str(tmp_path / f"{name}-archive"), "commit_interval": 0.005}
    return parse_config(raw)


def _values(body):
    return np.array([v["value"] for v in body["estimates"].values()], dtype=float)


def _offline(batches):
    est, pur = ShadowEstimator(OBS), ShadowPurity([[0, 1], [2]])
    for b in batches:
        est.update(b)
        pur.update(b)
    return est.estimate().values, pur


async def _until(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _src(d):
    return d.endpoints["estimates"], d.endpoints["snapshot"]


async def test_two_daemons_and_reducer_equal_one_daemon_over_the_same_records(tmp_path):
    rng = np.random.default_rng(11)
    batches = [_batch(rng) for _ in range(20)] + [BellBatch(rng.integers(0, 4, (T, 4))) for _ in range(6)]
    a, b, one = (EstimationDaemon(_config(tmp_path, n, bell=True)) for n in ("a", "b", "one"))
    for d in (a, b, one):
        await d.start()
    try:
        async with ShardedPublisher([a.endpoints["input.in"], b.endpoints["input.in"]], source="lab") as sp:
            for x in batches:
                await sp.send(x)
            await sp.flush(timeout=20)
            assert [s["sent_batches"] for s in sp.stats()] == [13, 13] and sp.unacked == 0
        pub = RecordPublisher(one.endpoints["input.in"], source="lab")
        for x in batches:
            await pub.send(x)
        await pub.aclose(timeout=20)
        assert a.slots[0].count == b.slots[0].count == 10 * T and one.slots[0].count == 20 * T

        async with Reducer([_src(a), _src(b)], "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", publish_interval=0.1) as r:
            await _until(lambda: r.combined()[0].get("obs", {}).get("count") == 20 * T, what="the combined count")
            seen = r.published
            # the combined estimates as published by the reducer (its own snapshot), against the single daemon's
            sub = EstimateSubscriber(r.endpoints["estimates"], r.endpoints["snapshot"], ["qsense/estimates/", "qsense/status"])
            try:
                await _until(lambda: r.published > seen, what="a publication of the total")
                snap = await sub.snapshot(timeout=5)
            finally:
                sub.close()
            single = one.estimates()
            for name in ("obs", "ent", "bell"):
                got = snap[f"qsense/estimates/{name}"]
                assert got["count"] == single[name]["count"] == (6 if name == "bell" else 20) * T
                assert list(got["estimates"]) == list(single[name]["estimates"])
                np.testing.assert_allclose(_values(got), _values(single[name]), rtol=0, atol=1e-12)
                errs = [[v["stderr"] for v in body["estimates"].values()] for body in (got, single[name])]
                np.testing.assert_allclose(*errs, rtol=0, atol=1e-12)
                # the same body shape as a single daemon (plus pub_seq from the publisher)
                assert set(got) - {"pub_seq"} == set(single[name]) | {"daemon", "time"}
            status = snap["qsense/status"]
            assert [d["daemon"] for d in status["daemons"]] == ["a", "b"]
            assert not any(d["stale"] for d in status["daemons"]) and status["mismatches"] == []
            assert status["estimators"]["obs"] == {"count": 20 * T, "daemons": ["a", "b"], "stale": []}
            offline, _ = _offline(batches[:20])
            np.testing.assert_allclose(_values(snap["qsense/estimates/obs"]), offline, rtol=0, atol=1e-12)
            assert len(snap["qsense/estimates/bell"]["estimates"]) == 4  # XX, ZIZI, purity, purity[0, 1]

        # a reducer started late (and this is also what a restart is): the daemons' snapshots at once
        r2 = Reducer([_src(a), _src(b)], publish_interval=0.1)
        t0 = time.monotonic()
        await r2.start()
        try:
            await _until(lambda: r2.combined()[0].get("ent", {}).get("count") == 20 * T, timeout=3, what="recovery")
            assert time.monotonic() - t0 < 2.0
            bodies, status = r2.combined()
            assert all(d["from_snapshot"] for d in status["daemons"])
            np.testing.assert_allclose(_values(bodies["ent"]), _values(one.estimates()["ent"]), rtol=0, atol=1e-12)
        finally:
            await r2.stop()
    finally:
        for d in (a, b, one):
            await d.stop()


async def test_stopped_daemon_is_marked_stale_and_kept_in_the_total(tmp_path):
    rng = np.random.default_rng(12)
    batches = [_batch(rng, seq=i) for i in range(6)]
    a, b = EstimationDaemon(_config(tmp_path, "a", archive=False)), EstimationDaemon(_config(tmp_path, "b", archive=False))
    await a.start()
    await b.start()
    try:
        for i, x in enumerate(batches):
            (a if i % 2 == 0 else b).ingest(x)
        async with Reducer([_src(a), _src(b)], stale_after=0.5, publish_interval=0.1) as r:
            await _until(lambda: r.combined()[0].get("obs", {}).get("count") == 6 * T, what="the combined count")
            await b.stop()
            await _until(lambda: r.combined()[1]["daemons"][1]["stale"], timeout=5, what="b marked stale")
            bodies, status = r.combined()
            assert not status["daemons"][0]["stale"] and status["daemons"][1]["daemon"] == "b"
            assert status["daemons"][1]["counts"] == {"obs": 3 * T, "ent": 3 * T}
            assert status["estimators"]["obs"] == {"count": 6 * T, "daemons": ["a", "b"], "stale": ["b"]}
            np.testing.assert_allclose(_values(bodies["obs"]), _offline(batches)[0], rtol=0, atol=1e-12)
    finally:
        await a.stop()
        await b.stop()


async def test_fingerprint_mismatch_is_refused_and_reported(tmp_path):
    rng = np.random.default_rng(13)
    a = EstimationDaemon(_config(tmp_path, "a", archive=False))
    b = EstimationDaemon(_config(tmp_path, "b", archive=False, obs=OBS[:2]))
    await a.start()
    await b.start()
    try:
        a.ingest(_batch(rng))
        b.ingest(_batch(rng))
        async with Reducer([_src(a), _src(b)], publish_interval=0.1) as r:
            await _until(lambda: r.combined()[1]["mismatches"], what="the mismatch")
            bodies, status = r.combined()
            (m,) = status["mismatches"]
            assert m["daemon"] == "b" and m["estimator"] == "obs" and "configured differently" in m["reason"]
            assert bodies["obs"]["count"] == T and status["estimators"]["obs"]["daemons"] == ["a"]  # b's left out
            assert bodies["ent"]["count"] == 2 * T  # the matching estimator is still merged
    finally:
        await a.stop()
        await b.stop()


async def test_resend_after_a_daemon_restart_goes_to_the_same_shard(tmp_path):
    rng = np.random.default_rng(14)
    batches = [_batch(rng) for _ in range(12)]
    ports = {k: _port() for k in ("in", "pub", "snap")}
    ep = {k: f"tcp://127.0.0.1:{p}" for k, p in ports.items()}
    a = EstimationDaemon(_config(tmp_path, "a"))
    cfg_b = _config(tmp_path, "b", inp=ep["in"], pub=ep["pub"], snap=ep["snap"])
    b = EstimationDaemon(cfg_b)
    await a.start()
    await b.start()
    sp = ShardedPublisher([a.endpoints["input.in"], ep["in"]], source="lab", ack_timeout=0.2)
    b2 = None
    try:
        b._send_acks = lambda acks: None  # b stores and folds, but its acknowledgements are lost
        for x in batches:
            await sp.send(x)
        await _until(lambda: b.slots[0].count == 6 * T and sp.shards[0].unacked == 0, what="b folded, a acknowledged")
        assert sp.shards[1].unacked == 6
        await asyncio.sleep(0.5)
        assert sp.shards[1].resent > 0  # resent after the ack timeout: to b again, never to a
        await b.stop()
        b2 = EstimationDaemon(cfg_b)  # the same endpoints, archive and checkpoint
        await b2.start()
        await sp.flush(timeout=20)  # resent to the restarted b, which recognises them in its archive
        assert sp.shards[0].resent == 0 and sp.shards[0].sent_batches == 6
        assert b2.slots[0].count == 6 * T and a.slots[0].count == 6 * T
        assert b2.archive_counts["duplicates"] >= 6
        epochs = {d: {e.epoch for e in open_archive(tmp_path / f"{d}-archive").entries()} for d in ("a", "b")}
        assert epochs == {"a": {sp.epoch}, "b": {sp.epoch + 1}}
        async with Reducer([_src(a), (ep["pub"], ep["snap"])], publish_interval=0.1) as r:
            await _until(lambda: r.combined()[0].get("obs", {}).get("count") == 12 * T, what="the combined count")
            np.testing.assert_allclose(_values(r.combined()[0]["obs"]), _offline(batches)[0], rtol=0, atol=1e-12)
    finally:
        sp.close(linger_ms=0)
        await a.stop()
        await (b2 or b).stop()


def test_cli_bad_endpoints_exit_2_with_one_line():
    for argv in (["--from", "tcp://127.0.0.1:x", "--publish", "tcp://127.0.0.1:0"],
                 ["--from", "nonsense", "--publish", "tcp://127.0.0.1:0"],
                 ["--from", "tcp://127.0.0.1:5", "--publish", "tcp://999.0.0.1:0"]):
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "qsense", "reduce", *argv], capture_output=True, text=True, timeout=10,
                           check=False)
        assert p.returncode == 2 and time.monotonic() - t0 < 5
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("qsense reduce:") and "Traceback" not in p.stderr
