"""Reliable record delivery over real sockets on 127.0.0.1: acknowledgements, flush,
resends after a receiver restart, back-pressure of the window, hostile input, CURVE."""

from __future__ import annotations

import asyncio
import logging

import msgspec
import numpy as np
import pytest
import zmq
import zmq.asyncio

from qsense import ShadowBatch
from qsense.streaming.transport import (
    CurveClientKeys,
    CurveServerKeys,
    RecordPublisher,
    RecordReceiver,
    SequenceTracker,
    generate_keypair,
    start_authenticator,
)
from qsense.streaming.wire import encode

pytestmark = pytest.mark.timeout(30)


def _batch(T=100, n=6, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return ShadowBatch(rng.integers(0, 3, (T, n)), rng.integers(0, 2, (T, n)), **kw)


@pytest.fixture
async def ctx():
    c = zmq.asyncio.Context()
    yield c
    c.destroy(linger=0)


async def _collect(rx: RecordReceiver, out: list) -> None:
    while True:
        out.append(await rx.recv())


# -- acknowledgements and flush ---------------------------------------------------------------------
async def test_flush_returns_once_everything_is_acknowledged(ctx):
    rx = RecordReceiver("tcp://127.0.0.1:*", context=ctx)
    tx = RecordPublisher(rx.endpoint, source="det", context=ctx)
    got: list = []
    reader = asyncio.create_task(_collect(rx, got))
    sent = [_batch(20 + i, seed=i) for i in range(50)]
    for b in sent:
        await tx.send(b)
    await tx.flush(timeout=5)
    assert (tx.sent_batches, tx.sent_records, tx.acked, tx.unacked, tx.resent) == (50, sum(b.T for b in sent), 50, 0, 0)
    assert [m.batch.seq for m in got] == list(range(50)) and all(m.wants_ack for m in got)
    assert {m.peer for m in got} == {got[0].peer} and got[0].key == ("det", tx.epoch, 0)
    assert rx.acks_sent == 50 and rx.acks_dropped == 0
    reader.cancel()
    await tx.aclose(timeout=1)
    rx.close()


async def test_owner_acks_some_flush_names_the_rest(ctx):
    rx = RecordReceiver("tcp://127.0.0.1:*", auto_ack=False, context=ctx)
    tx = RecordPublisher(rx.endpoint, source="det", context=ctx)
    for i in range(10):
        await tx.send(_batch(10, seed=i))
    got = [await asyncio.wait_for(rx.recv(), 5) for _ in range(10)]
    # per batch and out of order: the newest first, then some of the older ones
    assert rx.ack(got[0].peer, [got[9].key, got[7].key, got[0].key]) == 3
    assert rx.ack(got[0].peer, [m.key for m in got[1:4]]) == 3
    with pytest.raises(TimeoutError, match=r"^4 batch\(es\) \(40 records\) still unacknowledged"):
        await tx.flush(timeout=0.5)
    assert tx.unacked == 4 and tx.acked == 6
    rx.ack(got[0].peer, [m.key for m in got if m.batch.seq in (4, 5, 6, 8)])
    await tx.flush(timeout=5)
    assert tx.acked == 10 and tx.unacked == 0
    tx.close()
    rx.close()


async def test_unreliable_mode_asks_for_no_acks(ctx):
    rx = RecordReceiver("tcp://127.0.0.1:*", context=ctx)
    tx = RecordPublisher(rx.endpoint, source="det", reliable=False, context=ctx)
    await tx.send(_batch())
    m = await asyncio.wait_for(rx.recv(), 5)
    assert not m.wants_ack and rx.acks_sent == 0
    await tx.flush(timeout=0)  # nothing is kept
    assert tx.unacked == 0 and tx.sent_batches == 1
    tx.close()
    rx.close()


async def test_async_with_waits_for_the_acks(ctx):
    rx = RecordReceiver("tcp://127.0.0.1:*", context=ctx)
    got: list = []
    reader = asyncio.create_task(_collect(rx, got))
    async with RecordPublisher(rx.endpoint, source="det", context=ctx) as tx:
        for i in range(5):
            await tx.send(_batch(seed=i))
    assert tx.acked == 5 and tx.unacked == 0 and len(got) == 5
    reader.cancel()
    rx.close()


async def test_close_with_unacked_batches_warns(ctx, caplog):
    rx = RecordReceiver("tcp://127.0.0.1:*", auto_ack=False, context=ctx)
    tx = RecordPublisher(rx.endpoint, source="det", context=ctx)
    await tx.send(_batch(7))
    await asyncio.wait_for(rx.recv(), 5)
    with pytest.raises(TimeoutError):
        await tx.aclose(timeout=0.2)  # flushes, fails, closes anyway
    assert "closed with 1 unacknowledged batch(es) (7 records): dropped" in caplog.text
    with pytest.raises(RuntimeError, match="closed"):
        await tx.send(_batch())
    rx.close()


async def test_publisher_binds_receiver_connects_and_several_publishers_share_a_receiver(ctx):
    tx0 = RecordPublisher("tcp://127.0.0.1:*", bind=True, source="a", context=ctx)
    rx = RecordReceiver(tx0.endpoint, bind=False, context=ctx)
    rx2 = RecordReceiver("tcp://127.0.0.1:*", context=ctx)
    txs = [RecordPublisher(rx2.endpoint, source=f"s{i}", context=ctx) for i in range(3)]
    got: list = []
    readers = [asyncio.create_task(_collect(r, got)) for r in (rx, rx2)]
    for i in range(20):
        await tx0.send(_batch(seed=i))
        for t in txs:
            await t.send(_batch(seed=i))
    for t in (tx0, *txs):
        await t.flush(timeout=5)
    assert all(t.acked == 20 for t in (tx0, *txs))
    by_source = {}
    for m in got:
        by_source.setdefault(m.batch.source, set()).add(m.peer)
    assert sorted(by_source) == ["a", "s0", "s1", "s2"]
    assert len({p for peers in by_source.values() for p in peers}) == 4  # one identity each: acks went to the right one
    for r in readers:
        r.cancel()
    for t in (tx0, *txs):
        t.close()
    rx.close()
    rx2.close()


# -- resends ---------------------------------------------------------------------------------------------
async def _bind_again(endpoint: str, ctx, **kw) -> RecordReceiver:
    """Bind a new receiver on the port a closed one used (the kernel may need a moment)."""
    for _ in range(100):
        try:
            return RecordReceiver(endpoint, context=ctx, **kw)
        except zmq.ZMQError:
            await asyncio.sleep(0.02)
    raise AssertionError(f"could not bind {endpoint} again")


async def test_receiver_restart_mid_stream_every_batch_accepted_exactly_once(ctx):
    """A daemon restart: the receiver goes away with batches queued (and acks in
    flight), a new one binds the same port; the publisher resends what was not
    acknowledged, and a tracker restored from the first one's marks folds each once."""
    rx1 = RecordReceiver("tcp://127.0.0.1:*", hwm=8, context=ctx)
    endpoint = rx1.endpoint
    tx = RecordPublisher(endpoint, source="det", ack_timeout=1.0, window=32, context=ctx)
    n = 120
    produced = asyncio.Event()

    async def produce():
        for i in range(n):
            await tx.send(_batch(200, seed=i), timeout=10)
        produced.set()

    prod = asyncio.create_task(produce())
    first = SequenceTracker()
    received = accepted = 0
    while received < 40:
        m = await asyncio.wait_for(rx1.recv(), 5)
        received += 1
        accepted += first.observe(m.batch.source, m.batch.seq, m.epoch, m.batch.T).accepted
    await asyncio.sleep(0.2)  # stop reading: batches pile up in rx1's queue, unacknowledged
    rx1.close()  # the daemon dies; what it had queued is lost
    second = SequenceTracker()
    second.restore(first.marks())  # its checkpoint
    await asyncio.sleep(0.3)
    rx2 = await _bind_again(endpoint, ctx, hwm=8)
    seqs = []
    while not (produced.is_set() and tx.unacked == 0):
        try:
            m = await asyncio.wait_for(rx2.recv(), 0.5)
        except asyncio.TimeoutError:
            continue
        received += 1
        if second.observe(m.batch.source, m.batch.seq, m.epoch, m.batch.T).accepted:
            accepted += 1
            seqs.append(m.batch.seq)
    await prod
    await tx.flush(timeout=5)
    assert accepted == n and sorted(seqs) == list(range(first.sources["det"].last_seq + 1, n))
    assert tx.resent > 0 and tx.disconnects >= 1 and tx.connections >= 2
    assert received >= n  # at least once across the two receivers ...
    assert second.sources["det"].duplicates == received - n  # ... and the extra copies dropped
    assert second.sources["det"].missing == 0
    tx.close()
    rx2.close()


async def test_unacknowledged_batch_is_resent_with_backoff(ctx):
    rx = RecordReceiver("tcp://127.0.0.1:*", auto_ack=False, context=ctx)
    tx = RecordPublisher(rx.endpoint, source="det", ack_timeout=0.15, context=ctx)
    await tx.send(_batch())
    loop = asyncio.get_running_loop()
    m = await asyncio.wait_for(rx.recv(), 5)
    arrivals = [loop.time()]
    while (left := arrivals[0] + 1.2 - loop.time()) > 0:
        try:
            m = await asyncio.wait_for(rx.recv(), left)
        except asyncio.TimeoutError:
            break
        arrivals.append(loop.time())
    # timeouts 0.15, 0.3, 0.6 (doubling): 3 resends in ~1.05 s, where a fixed timeout would give 8
    assert 2 <= tx.resent <= 4 and len(arrivals) == tx.resent + 1
    gaps = np.diff(arrivals)
    assert gaps[-1] > 1.5 * gaps[0]
    rx.ack(m.peer, [m.key])
    await tx.flush(timeout=2)
    tx.close()
    rx.close()


@pytest.mark.parametrize("copy", [True, False])
async def test_copied_frames_let_the_caller_reuse_its_arrays(ctx, copy):
    rx = RecordReceiver("tcp://127.0.0.1:*", auto_ack=False, context=ctx)
    tx = RecordPublisher(rx.endpoint, source="det", ack_timeout=0.1, copy=copy, context=ctx)
    # irregular timestamps travel as a raw frame, a view on the caller's array unless copied
    # (160 kB: above pyzmq's copy threshold, so pyzmq itself would not copy it either)
    b = _batch(20_000, 16, seed=3, t=np.sort(np.random.default_rng(3).random(20_000)))
    want = b.t.copy()
    await tx.send(b)
    b.t[:] = -1.0  # the caller reuses its buffer at once
    first = await asyncio.wait_for(rx.recv(), 5)
    again = await asyncio.wait_for(rx.recv(), 5)  # a resend, after the change
    if copy:
        np.testing.assert_array_equal(first.batch.t, want)
        np.testing.assert_array_equal(again.batch.t, want)
    else:  # zero-copy: the change shows (documented: do not touch the arrays until acknowledged)
        assert np.all(again.batch.t == -1.0)
    rx.ack(first.peer, [first.key])
    await tx.flush(timeout=2)
    tx.close()
    rx.close()


# -- back-pressure -------------------------------------------------------------------------------------
@pytest.mark.parametrize("limit", ["count", "bytes"])
async def test_full_window_blocks_send_and_drops_nothing(ctx, limit):
    rx = RecordReceiver("tcp://127.0.0.1:*", auto_ack=False, context=ctx)
    b = _batch(1000, 8)
    size = sum(len(memoryview(f).cast("B")) for f in encode(b, source="det", seq=0))
    opts = {"window": 4} if limit == "count" else {"window_bytes": 4 * size + size // 2}
    tx = RecordPublisher(rx.endpoint, source="det", context=ctx, **opts)
    for _ in range(4):
        await tx.send(b, timeout=2)
    with pytest.raises(TimeoutError):
        await tx.send(b, timeout=0.3)  # waits for room: never a drop
    assert (tx.unacked, tx.next_seq, tx.sent_batches) == (4, 4, 4)  # the refused batch took no number
    got = [await asyncio.wait_for(rx.recv(), 5) for _ in range(4)]
    blocked = asyncio.create_task(tx.send(b, timeout=5))
    await asyncio.sleep(0.2)
    assert not blocked.done()
    rx.ack(got[0].peer, [got[2].key])  # one free slot, out of order
    assert await blocked == 4
    got.append(await asyncio.wait_for(rx.recv(), 5))
    rx.ack(got[0].peer, [m.key for m in got])
    await tx.flush(timeout=5)
    assert [m.batch.seq for m in got] == [0, 1, 2, 3, 4] and tx.acked == 5 and tx.unknown_acks == 1
    tx.close()
    rx.close()


async def test_frames_are_as_documented(ctx):
    """docs/reliable-delivery.md: a bare DEALER speaking the envelope gets the ack bytes shown there."""
    rx = RecordReceiver("tcp://127.0.0.1:*", context=ctx)
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(rx.endpoint)
    await dealer.send_multipart([b"A", *encode(_batch(), source="det", seq=7, epoch=1)])
    m = await asyncio.wait_for(rx.recv(), 5)
    assert m.wants_ack and m.key == ("det", 1, 7) and len(m.peer) == 5 and m.peer[0] == 0  # ZeroMQ's automatic identity
    assert await asyncio.wait_for(dealer.recv_multipart(), 5) == [b"ACK", bytes.fromhex("91 93 a3 64 65 74 01 07")]
    dealer.close(0)
    rx.close()


# -- hostile input ---------------------------------------------------------------------------------------
async def test_malformed_envelopes_are_counted(ctx, caplog):
    rx = RecordReceiver("tcp://127.0.0.1:*", context=ctx, name="in0")
    tx = RecordPublisher(rx.endpoint, source="det", context=ctx)
    frames = encode(_batch(), source="x", seq=0)
    await tx.send_raw(frames)  # no flag frame: the header sits where the flag belongs
    await tx.send_raw([b"Z", *frames])  # unknown flag
    await tx.send_raw([b"A"])  # a flag and nothing else
    await tx.send_frames([b"\x00garbage"])  # a good envelope around a bad header
    await tx.send(_batch())
    with caplog.at_level(logging.WARNING, logger="qsense.streaming.transport"):
        m = await asyncio.wait_for(rx.recv(), 5)
    assert m.batch.source == "det"
    assert rx.malformed["frames"] == 3 and rx.malformed["header"] == 1 and rx.malformed_total == 4
    assert rx.received_messages == 5
    assert "unknown envelope flag" in caplog.text
    await tx.flush(timeout=5)
    tx.close()
    rx.close()


async def test_hostile_acks_are_counted_and_ignored(ctx):
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    tx = RecordPublisher(f"tcp://127.0.0.1:{port}", source="det", context=ctx)
    await tx.send(_batch(), timeout=5)
    peer, flag, *_ = await asyncio.wait_for(router.recv_multipart(), 5)
    assert flag == b"A"
    pack = msgspec.msgpack.encode
    for msg in (
        [b"NOPE", b""],
        [b"ACK"],
        [b"ACK", b"\xc1"],  # not msgpack
        [b"ACK", pack("not a list")],
        [b"ACK", pack([[1, 2, 3]])],  # wrong types
        [b"ACK", pack([["det", tx.epoch]])],  # too short
        [b"ACK", b"x", b"y"],
    ):
        await router.send_multipart([peer, *msg])
    await router.send_multipart([peer, b"ACK", pack([["det", tx.epoch, 99], ["other", 1, 0]])])  # nothing of ours
    await asyncio.sleep(0.2)
    assert tx.unacked == 1 and tx.bad_acks == 7 and tx.unknown_acks == 2
    await router.send_multipart([peer, b"ACK", pack([["det", tx.epoch, 0]])])
    await tx.flush(timeout=5)
    assert tx.acked == 1
    await tx.send(_batch(), timeout=5)  # the publisher is still fine
    tx.close()
    router.close(0)


async def test_ack_to_a_vanished_peer_is_dropped_and_counted(ctx):
    rx = RecordReceiver("tcp://127.0.0.1:*", auto_ack=False, context=ctx)
    tx = RecordPublisher(rx.endpoint, source="det", context=ctx)
    await tx.send(_batch())
    m = await asyncio.wait_for(rx.recv(), 5)
    tx.close(0)
    await asyncio.sleep(0.2)
    assert rx.ack(m.peer, [m.key]) == 0 and rx.ack(b"nobody", [("x", 1, 2)]) == 0  # never raises
    assert rx.acks_dropped == 2
    rx.close()


# -- CURVE -----------------------------------------------------------------------------------------------
async def test_curve_reliable_delivery(tmp_path, ctx):
    generate_keypair(tmp_path / "server", "server")
    generate_keypair(tmp_path / "authorized", "alice")
    generate_keypair(tmp_path / "intruders", "mallory")
    server = CurveServerKeys(tmp_path / "server" / "server.key_secret", tmp_path / "authorized")
    alice = CurveClientKeys(tmp_path / "authorized" / "alice.key_secret", tmp_path / "server" / "server.key")
    mallory = CurveClientKeys(tmp_path / "intruders" / "mallory.key_secret", tmp_path / "server" / "server.key")
    server_ctx = zmq.asyncio.Context()
    auth = start_authenticator(server_ctx, server.authorized_keys)
    try:
        rx = RecordReceiver("tcp://127.0.0.1:*", curve=server, context=server_ctx)
        got: list = []
        reader = asyncio.create_task(_collect(rx, got))
        good = RecordPublisher(rx.endpoint, source="alice", curve=alice, context=ctx)
        bad = RecordPublisher(rx.endpoint, source="mallory", curve=mallory, context=ctx)
        for i in range(20):
            await good.send(_batch(seed=i), timeout=5)
        await good.flush(timeout=5)  # acknowledgements came back over the authenticated connection
        with pytest.raises(TimeoutError):
            await bad.send(_batch(), timeout=0.5)  # no handshake: nowhere to send
        assert good.acked == 20 and bad.unacked == 0
        assert {m.batch.source for m in got} == {"alice"} and len(got) == 20
        reader.cancel()
        good.close()
        bad.close(0)
        rx.close()
    finally:
        auth.stop()
        server_ctx.destroy(linger=0)
