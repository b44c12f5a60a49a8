"""ZeroMQ transport on real sockets (127.0.0.1 tcp and ipc): data plane, estimates, CURVE."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
import zmq
import zmq.asyncio

from qsense import ShadowBatch
from qsense.streaming.transport import (
    CurveClientKeys,
    CurveServerKeys,
    EstimatePublisher,
    EstimateSubscriber,
    RecordPublisher,
    RecordReceiver,
    SequenceTracker,
    SeqVerdict,
    generate_keypair,
    start_authenticator,
)

pytestmark = pytest.mark.timeout(30)


def _batch(T=100, n=6, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return ShadowBatch(rng.integers(0, 3, (T, n)), rng.integers(0, 2, (T, n)), **kw)


@pytest.fixture
async def ctx():
    c = zmq.asyncio.Context()
    yield c
    c.destroy(linger=0)


# -- data plane ----------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
async def test_push_pull_in_order_and_lossless(ctx, tmp_path, scheme):
    ep = "tcp://127.0.0.1:*" if scheme == "tcp" else f"ipc://{tmp_path}/records.sock"
    rx = RecordReceiver(ep, context=ctx)
    tx = RecordPublisher(rx.endpoint, source="det", context=ctx)
    sent = [_batch(50 + i, 6, seed=i) for i in range(40)]

    async def produce():
        for b in sent:
            await tx.send(b)

    prod = asyncio.create_task(produce())
    got = [await asyncio.wait_for(rx.recv(), 5) for _ in sent]
    await prod
    assert [m.batch.seq for m in got] == list(range(40))
    assert {m.batch.source for m in got} == {"det"} and {m.epoch for m in got} == {tx.epoch}
    for a, m in zip(sent, got):
        np.testing.assert_array_equal(a.bases, m.batch.bases)
        np.testing.assert_array_equal(a.outcomes, m.batch.outcomes)
    tx.close()
    rx.close()


@pytest.mark.parametrize("reliable", [False, True])
async def test_backpressure_blocks_the_sender_and_drops_nothing(ctx, reliable):
    rx = RecordReceiver("tcp://127.0.0.1:*", hwm=2, context=ctx)
    tx = RecordPublisher(rx.endpoint, source="det", hwm=2, reliable=reliable, context=ctx)
    big = _batch(20000, 16)  # 640 kB per message: socket buffers fill quickly
    sent = 0
    with pytest.raises(asyncio.TimeoutError):
        while True:  # nobody reads: sooner or later send must wait, not drop
            await tx.send(big, timeout=0.5)
            sent += 1
            assert sent < 1000, "send never blocked: no backpressure"
    seqs = []
    while True:
        try:
            seqs.append((await asyncio.wait_for(rx.recv(), 1.0)).batch.seq)
        except asyncio.TimeoutError:
            break
    # every batch send() returned for arrived (reliable: maybe more than once, when
    # the ack timeout passed while it sat in the queues); the timed-out one was not sent
    assert sorted(set(seqs)) == list(range(sent))
    assert reliable or len(seqs) == sent
    if reliable:
        await tx.flush(timeout=5)
    tx.close()
    rx.close()


async def test_malformed_messages_counted_and_skipped(ctx, caplog):
    rx = RecordReceiver("tcp://127.0.0.1:*", context=ctx, name="in0")
    tx = RecordPublisher(rx.endpoint, context=ctx)
    good = _batch(10, 4, source="a", seq=0)
    await tx.send_frames([b"\x00garbage"])
    await tx.send(good)
    await tx.send_frames([b"\x91\x01", b"x"])
    with caplog.at_level(logging.WARNING, logger="qsense.streaming.transport"):
        m = await asyncio.wait_for(rx.recv(), 5)
        assert m.batch.seq == 0
        await asyncio.sleep(0.1)
        assert await rx.recv_nowait() is None
    assert rx.malformed_total == 2 and rx.malformed["header"] == 2
    assert any("rejected malformed message" in r.getMessage() for r in caplog.records)
    tx.close()
    rx.close()


async def test_receiver_refuses_oversized_frames(ctx):
    rx = RecordReceiver("tcp://127.0.0.1:*", max_message_bytes=10_000, context=ctx)
    tx = RecordPublisher(rx.endpoint, context=ctx)
    # 50,000 records on 4 qubits: ~75 kB of bit planes in wire v2 (200 kB of tables in v1)
    small, big = _batch(10, 4, source="s", seq=0), _batch(50_000, 4, source="s", seq=1)
    await tx.send(big)  # ZeroMQ drops the connection of a peer exceeding maxmsgsize
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(rx.recv(), 0.5)  # (and again for each reliable resend after the reconnect)
    assert tx.unacked == 1 and tx.disconnects >= 1
    tx.close(0)
    tx2 = RecordPublisher(rx.endpoint, context=ctx)
    await tx2.send(small)
    m = await asyncio.wait_for(rx.recv(), 5)
    assert m.batch.T == 10
    tx2.close()
    rx.close()


# -- sequence tracking ----------------------------------------------------------------------------
def test_sequence_tracker_gaps_duplicates_restarts(caplog):
    tr = SequenceTracker()
    with caplog.at_level(logging.INFO, logger="qsense.streaming.transport"):
        assert tr.observe("a", 0, epoch=7, records=10) is SeqVerdict.FIRST
        assert tr.observe("a", 1, epoch=7, records=10) is SeqVerdict.OK
        assert tr.observe("a", 4, epoch=7, records=10) is SeqVerdict.GAP
        assert tr.observe("a", 4, epoch=7, records=10) is SeqVerdict.DUPLICATE
        assert tr.observe("a", 2, epoch=7, records=10) is SeqVerdict.LATE  # fills one hole of the gap, once
        assert tr.observe("a", 2, epoch=7, records=10) is SeqVerdict.DUPLICATE
        assert tr.observe("a", 0, epoch=8, records=10) is SeqVerdict.RESTART
        assert tr.observe("a", 1, epoch=7, records=10) is SeqVerdict.DUPLICATE  # a replay of the old run
        assert tr.observe("b", 5, records=3) is SeqVerdict.FIRST
    s = tr.as_dict()["a"]
    assert (s["batches"], s["records"], s["gaps"], s["missing"], s["duplicates"], s["restarts"], s["late"]) == (5, 50, 1, 1, 3, 1, 1)
    assert tr.totals()["records"] == 53
    text = caplog.text
    assert "gap on source 'a': 2 batch(es) missing (seq 2..3)" in text and "duplicate" in text and "restarted" in text


def test_sequence_tracker_gap_across_restart(caplog):
    before = SequenceTracker()
    for s in range(5):
        before.observe("det", s, epoch=3)
    after = SequenceTracker()
    after.restore(before.marks())
    with caplog.at_level(logging.WARNING, logger="qsense.streaming.transport"):
        assert after.observe("det", 3, epoch=3) is SeqVerdict.DUPLICATE  # already counted before the restart
        assert after.observe("det", 9, epoch=3) is SeqVerdict.GAP
    assert after.as_dict()["det"]["missing"] == 4
    assert "across the daemon restart" in caplog.text


# -- estimates: PUB/SUB with snapshot ------------------------------------------------------------------
async def test_late_joiner_gets_snapshot_then_live_updates(ctx):
    pub = EstimatePublisher("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", context=ctx)
    pub.start()
    for i in range(3):
        await pub.publish("qsense/estimates/a", {"v": i})
    await pub.publish("qsense/estimates/b", {"v": 10})
    await pub.publish("other/x", {"v": -1})
    # joins after everything was published: PUB/SUB alone would give it nothing
    sub = EstimateSubscriber(pub.endpoint, pub.snapshot_endpoint, ["qsense/estimates/"], context=ctx)
    await asyncio.sleep(0.2)  # let the subscription reach the publisher
    snap = await sub.snapshot(timeout=5)
    assert {k: v["v"] for k, v in snap.items()} == {"qsense/estimates/a": 2, "qsense/estimates/b": 10}
    await pub.publish("other/x", {"v": -2})
    await pub.publish("qsense/estimates/a", {"v": 3})
    topic, body = await sub.recv(timeout=5)
    assert (topic, body["v"]) == ("qsense/estimates/a", 3) and body["pub_seq"] > sub.snapshot_seq
    sub.close()
    await pub.close()


async def test_json_bodies_stay_valid_with_nonfinite_values(ctx):
    pub = EstimatePublisher("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", context=ctx)
    pub.start()
    await pub.publish("t", {"stderr": float("inf"), "value": float("nan")})
    sub = EstimateSubscriber(pub.endpoint, pub.snapshot_endpoint, ["t"], context=ctx)
    snap = await sub.snapshot()
    assert snap["t"]["stderr"] is None and snap["t"]["value"] is None
    sub.close()
    await pub.close()


# -- CURVE -----------------------------------------------------------------------------------------------
@pytest.fixture
def keys(tmp_path):
    generate_keypair(tmp_path / "server", "server")
    generate_keypair(tmp_path / "authorized", "alice")
    generate_keypair(tmp_path / "intruders", "mallory")
    server = CurveServerKeys(tmp_path / "server" / "server.key_secret", tmp_path / "authorized")
    alice = CurveClientKeys(tmp_path / "authorized" / "alice.key_secret", tmp_path / "server" / "server.key")
    mallory = CurveClientKeys(tmp_path / "intruders" / "mallory.key_secret", tmp_path / "server" / "server.key")
    return server, alice, mallory


async def test_curve_data_plane_rejects_unknown_client(keys, ctx):
    server, alice, mallory = keys
    server_ctx = zmq.asyncio.Context()
    auth = start_authenticator(server_ctx, server.authorized_keys)
    try:
        rx = RecordReceiver("tcp://127.0.0.1:*", curve=server, context=server_ctx)
        bad = RecordPublisher(rx.endpoint, source="mallory", curve=mallory, context=ctx)
        plain = RecordPublisher(rx.endpoint, source="plain", context=ctx)  # no CURVE at all
        good = RecordPublisher(rx.endpoint, source="alice", curve=alice, context=ctx)
        with pytest.raises(asyncio.TimeoutError):  # the handshake never completes: nowhere to send
            await bad.send(_batch(), timeout=1.0)
        with pytest.raises(asyncio.TimeoutError):
            await plain.send(_batch(), timeout=0.5)
        await good.send(_batch(), timeout=5)
        m = await asyncio.wait_for(rx.recv(), 5)
        assert m.batch.source == "alice"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(rx.recv(), 0.5)
        for s in (bad, plain, good, rx):
            s.close(0) if s is not rx else s.close()
    finally:
        auth.stop()
        server_ctx.destroy(linger=0)


async def test_curve_estimates_reach_only_authorized_subscribers(keys, ctx):
    server, alice, mallory = keys
    server_ctx = zmq.asyncio.Context()
    auth = start_authenticator(server_ctx, server.authorized_keys)
    try:
        pub = EstimatePublisher("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", curve=server, context=server_ctx)
        pub.start()
        await pub.publish("qsense/estimates/a", {"v": 1})
        good = EstimateSubscriber(pub.endpoint, pub.snapshot_endpoint, ["qsense/"], curve=alice, context=ctx)
        bad = EstimateSubscriber(pub.endpoint, pub.snapshot_endpoint, ["qsense/"], curve=mallory, context=ctx)
        assert (await good.snapshot(timeout=5))["qsense/estimates/a"]["v"] == 1
        with pytest.raises(asyncio.TimeoutError):
            await bad.snapshot(timeout=1.0)
        await asyncio.sleep(0.2)
        await pub.publish("qsense/estimates/a", {"v": 2})
        assert (await good.recv(timeout=5))[1]["v"] == 2
        with pytest.raises(asyncio.TimeoutError):
            await bad.recv(timeout=0.5)
        good.close()
        bad.close()
        await pub.close()
    finally:
        auth.stop()
        server_ctx.destroy(linger=0)
