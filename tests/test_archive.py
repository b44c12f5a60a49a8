"""The record archive: round trips, filters, rotation, retention, damage, bad paths, crashes, foreign readers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import qsense
from qsense.records import BellBatch, ShadowBatch
from qsense.streaming.archive import ArchiveError, ArchiveFull, ArchiveWriter, open_archive
from qsense.streaming.archive.manifest import MANIFEST


def shadow(rng, T, n=5, source="s", seq=0, t=True, wires=None):
    return ShadowBatch(rng.integers(0, 3, (T, n)), rng.integers(0, 2, (T, n)), wires=wires, source=source, seq=seq,
                       t=np.sort(rng.random(T)) * 10 if t else None)


def same(a, b):
    assert type(a) is type(b)
    assert (a.source, a.seq, a.wires) == (b.source, b.seq, b.wires)
    assert np.array_equal(a.outcomes, b.outcomes) and np.array_equal(a.t, b.t)
    if isinstance(a, ShadowBatch):
        assert np.array_equal(a.bases, b.bases)
    else:
        assert np.array_equal(a.wait, b.wait)


@pytest.fixture
def rng():
    return np.random.default_rng(20261201)


def test_round_trip_every_shape(tmp_path, rng):
    batches = [shadow(rng, T, n=n, seq=i) for i, (T, n) in enumerate([(1, 1), (63, 2), (64, 3), (65, 16), (1000, 65), (0, 4)])]
    batches.append(shadow(rng, 10, n=3, seq=len(batches), wires=("a", "b", 7)))
    batches.append(shadow(rng, 100, n=3, seq=len(batches), t=False))  # absent timestamps cost nothing
    regular = shadow(rng, 256, n=2, seq=len(batches), t=False).with_meta(t=5.0 + 1e-3 * np.arange(256))
    batches.append(regular)
    bell = [BellBatch(rng.integers(0, 4, (T, 3)), source="b", seq=i, wait=rng.random(T) if i else None, t=rng.random(T))
            for i, T in enumerate([1, 64, 200])]
    with ArchiveWriter(tmp_path / "a") as w:
        for i, b in enumerate(batches + bell):
            assert w.append(b, epoch=11) == i
        w.sync()
        live = list(open_archive(tmp_path / "a").batches())  # readable while the writer holds it
        assert len(live) == len(batches) + len(bell)
    got = list(open_archive(tmp_path / "a").entries())
    assert [e.pos for e in got] == list(range(len(batches) + len(bell)))
    for e, b in zip(got, batches + bell):
        same(e.batch, b)
        assert e.epoch == 11
    # sealed: only Parquet files remain
    assert {p.suffix for p in (tmp_path / "a" / "segments").iterdir()} == {".parquet"}


def test_compact_layout_bytes_per_snapshot(tmp_path, rng):
    n, T = 16, 65536
    b = shadow(rng, T, n=n, t=False)
    with ArchiveWriter(tmp_path / "a") as w:
        for i in range(8):
            w.append(b.with_meta(seq=i))
    size = sum(p.stat().st_size for p in (tmp_path / "a" / "segments").iterdir())
    per_snapshot = size / (8 * T)
    assert per_snapshot <= 3 * n / 8 * 1.02 + 0.05  # 3 bits per qubit plus framing
    assert 2 * n / per_snapshot >= 5  # vs the uint8 bases + outcomes layout


def test_filters(tmp_path, rng):
    with ArchiveWriter(tmp_path / "a") as w:
        for i in range(6):
            w.append(shadow(rng, 50, source="x", seq=i).with_meta(t=i + np.linspace(0, 0.98, 50)), epoch=1)
            w.append(shadow(rng, 50, n=3, source="y", seq=i), epoch=2)
        w.append(BellBatch(rng.integers(0, 4, (5, 2)), source="x", seq=99), epoch=1)
    a = open_archive(tmp_path / "a")
    assert {b.source for b in a.batches(source="y")} == {"y"}
    assert sum(1 for _ in a.batches(source=["x", "y"], kind="shadow")) == 12
    assert [b.kind for b in a.batches(kind="bell")] == ["bell"]
    assert all(b.wires == (0, 1, 2) for b in a.batches(wires=(0, 1, 2)))
    cut = list(a.batches(source="x", since=2.5, until=4.25, kind="shadow"))
    t = np.concatenate([b.t for b in cut])
    assert t.min() >= 2.5 and t.max() < 4.25 and len(t) == 25 + 50 + 13
    assert [e.pos for e in a.entries(after=3, upto=6)] == [4, 5, 6]


def test_rotation_index_and_duplicates_across_reopen(tmp_path, rng):
    path = tmp_path / "a"
    with ArchiveWriter(path, segment_bytes=50_000) as w:
        for i in range(30):
            w.append(shadow(rng, 1000, seq=i), epoch=3)
            w.maybe_rotate()
            w.seal_pending()
        assert w.stats()["segments"] > 3
    w = ArchiveWriter(path)
    try:
        assert w.contains("s", 3, 0) and w.contains("s", 3, 29) and not w.contains("s", 3, 30) and not w.contains("s", 4, 0)
        assert w.next_pos == 30
        w.append(shadow(rng, 10, seq=30), epoch=3)
    finally:
        w.close()
    assert [e.pos for e in open_archive(path).entries()] == list(range(31))


def test_out_of_order_seqs_are_indexed_exactly(tmp_path, rng):
    with ArchiveWriter(tmp_path / "a") as w:
        for s in [5, 1, 2, 9, 3, 4, 0]:
            w.append(shadow(rng, 3, seq=s), epoch=1)
        assert all(w.contains("s", 1, s) for s in [0, 1, 2, 3, 4, 5, 9])
        assert not any(w.contains("s", 1, s) for s in [6, 7, 8, 10])


def test_retention_by_bytes_keeps_what_the_checkpoint_needs(tmp_path, rng):
    path = tmp_path / "a"
    with ArchiveWriter(path, segment_bytes=20_000, retention_bytes=60_000) as w:
        w.protect_pos = 10
        for i in range(40):
            w.append(shadow(rng, 1000, seq=i))
            w.maybe_rotate()
            w.seal_pending()
        kept_before = {e.pos for e in open_archive(path).entries()}
        assert set(range(11, 40)) <= kept_before  # nothing after the checkpointed position 10 is deleted
        assert 0 not in kept_before and w.deleted_segments > 0
        w.protect_pos = 39
        w.append(shadow(rng, 1000, seq=40))
        w.rotate()
        w.seal_pending()
        total = sum(p.stat().st_size for p in (path / "segments").iterdir())
        assert total <= 60_000 + 20_000
        assert w.contains("s", 0, 0)  # a deleted batch is still known: a late resend stays a duplicate


def test_capacity_refuses_and_stores_nothing_partial(tmp_path, rng):
    path = tmp_path / "a"
    w = ArchiveWriter(path, capacity_bytes=30_000)
    stored = 0
    with pytest.raises(ArchiveFull, match="capacity"):
        for i in range(100):
            w.append(shadow(rng, 1000, seq=i))
            stored += 1
    assert w.refused == 1
    w.sync()
    w.close()
    assert [b.seq for b in open_archive(path).batches()] == list(range(stored))


def test_real_write_failure_file_size_limit(tmp_path):
    """The OS refuses a write (RLIMIT_FSIZE, like a full disk) in the middle of a multi-message
    append: ArchiveFull, and the segment is cut back to before the call (all or nothing)."""
    script = textwrap.dedent(f"""
        import resource, signal, numpy as np
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from qsense.records import ShadowBatch
        from qsense.streaming.archive import ArchiveWriter, ArchiveFull, writer
        writer.MESSAGE_BYTES = 10_000  # several messages per call
        w = ArchiveWriter({str(tmp_path / 'a')!r})
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
        rng = np.random.default_rng(1)
        n = 0
        try:
            for i in range(0, 3000, 3):
                w.append_many([(ShadowBatch(rng.integers(0, 3, (2000, 8)), rng.integers(0, 2, (2000, 8)), source="s",
                                            seq=i + k), 0) for k in range(3)])
                n += 3
        except ArchiveFull as exc:
            print("FULL", n, exc)
        w.sync()
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        w.append(ShadowBatch(rng.integers(0, 3, (5, 8)), rng.integers(0, 2, (5, 8)), source="s", seq=n))  # still usable
        w.close()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("FULL"), out.stdout
    n = int(out.stdout.split()[1])
    assert n > 0
    a = open_archive(tmp_path / "a")
    assert [b.seq for b in a.batches()] == list(range(n + 1)) and not a.problems


def test_torn_tail_after_kill_is_detected_and_dropped(tmp_path, rng):
    path = tmp_path / "a"
    w = ArchiveWriter(path)
    for i in range(5):
        w.append(shadow(rng, 500, seq=i))
    w.sync()
    seg = w._seg.path  # noqa: SLF001 -- simulate the crash: no close, lock dropped with the process
    w._lock.release()  # noqa: SLF001
    size = seg.stat().st_size
    with open(seg, "r+b") as f:
        f.truncate(size - 100)  # the last message torn in half
    a = open_archive(path)
    assert [b.seq for b in a.batches()] == [0, 1, 2, 3] and a.problems == {"torn_tail": 1}
    w2 = ArchiveWriter(path)  # recovery seals the valid prefix
    assert w2.problems["torn_tail"] == 1 and w2.next_pos == 4
    w2.append(shadow(rng, 10, seq=4))
    w2.close()
    assert [b.seq for b in open_archive(path).batches()] == [0, 1, 2, 3, 4]


def test_flipped_bytes_are_counted_and_the_rest_stays_readable(tmp_path, rng, caplog):
    path = tmp_path / "a"
    with ArchiveWriter(path, segment_bytes=12_000) as w:
        for i in range(12):
            w.append(shadow(rng, 1000, seq=i, t=False))
            w.maybe_rotate()
            w.seal_pending()
    segs = sorted((path / "segments").iterdir())
    assert len(segs) >= 3
    # a flipped bit inside the planes of the second segment: the checksum catches it
    victim = segs[1]
    table = pq.read_table(victim)
    planes = bytearray(table.column("planes")[0].as_py())
    data = victim.read_bytes()
    at = data.find(bytes(planes[100:140]))
    assert at > 0
    corrupted = bytearray(data)
    corrupted[at + 5] ^= 0x10
    victim.write_bytes(bytes(corrupted))
    # and the footer of the third segment destroyed
    lost = set(pq.read_table(segs[2], columns=["seq"]).column("seq").to_pylist())
    bad_row = table.column("seq")[0].as_py()
    segs[2].write_bytes(segs[2].read_bytes()[:-20])
    a = open_archive(path)
    seqs = [b.seq for b in a.batches()]
    assert a.problems.get("checksum") == 1 and a.problems.get("unreadable_segment") == 1
    assert sorted(seqs) == sorted(set(range(12)) - lost - {bad_row})  # everything else still reads
    assert "checksum mismatch" in caplog.text


def test_not_an_archive_and_newer_versions_are_refused(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("hello")
    with pytest.raises(ArchiveError, match="not a qsense archive"):
        open_archive(tmp_path / "plain")
    with pytest.raises(ArchiveError, match="not empty and is not a qsense archive"):
        ArchiveWriter(tmp_path / "plain")
    with pytest.raises(ArchiveError, match="no such archive"):
        open_archive(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArchiveError, match="directory"):
        open_archive(tmp_path / "file")
    ArchiveWriter(tmp_path / "new").close()
    mf = tmp_path / "new" / MANIFEST
    mf.write_text(json.dumps({"format": "qsense-archive", "version": 99}))
    with pytest.raises(ArchiveError, match="version 99 is newer"):
        open_archive(tmp_path / "new")
    with pytest.raises(ArchiveError, match="newer"):
        ArchiveWriter(tmp_path / "new")
    mf.write_text(json.dumps({"format": "something-else", "version": 1}))
    with pytest.raises(ArchiveError, match="not a qsense-archive manifest"):
        open_archive(tmp_path / "new")
    mf.write_text("{not json")
    with pytest.raises(ArchiveError, match="unreadable"):
        open_archive(tmp_path / "new")


def test_one_writer_at_a_time(tmp_path):
    w = ArchiveWriter(tmp_path / "a")
    try:
        with pytest.raises(ArchiveError, match="in use by another writer"):
            ArchiveWriter(tmp_path / "a")
    finally:
        w.close()
    ArchiveWriter(tmp_path / "a").close()


def test_readable_without_qsense_pyarrow_and_duckdb(tmp_path, rng):
    """The documented schema is enough to rebuild the arrays (docs/archive.md)."""
    b = shadow(rng, 130, n=7, seq=4)
    bell = BellBatch(rng.integers(0, 4, (70, 3)), source="b", seq=0, wait=rng.random(70))
    with ArchiveWriter(tmp_path / "a") as w:
        w.append(b, epoch=5)
        w.append(bell, epoch=6)
    files = sorted(str(p) for p in (tmp_path / "a" / "segments").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    row = table.slice(0, 1).to_pylist()[0]
    T, n = row["T"], row["n"]
    W = (T + 63) // 64
    planes = np.frombuffer(row["planes"], dtype="<u8").reshape(3, n, W)
    bits = np.unpackbits(planes.view(np.uint8), axis=-1, bitorder="little")[..., :T]  # (3, n, T)
    bases = (bits[0] | (bits[1] << 1)).T
    outcomes = bits[2].T
    assert np.array_equal(bases, b.bases) and np.array_equal(outcomes, b.outcomes)
    assert np.array_equal(np.asarray(row["t"]), b.t) and (row["source"], row["epoch"], row["seq"]) == ("s", 5, 4)
    brow = table.slice(1, 1).to_pylist()[0]
    bp = np.frombuffer(brow["planes"], dtype="<u8").reshape(2, 3, 2)
    bb = np.unpackbits(bp.view(np.uint8), axis=-1, bitorder="little")[..., :70]
    assert np.array_equal(((bb[0] << 1) | bb[1]).T, bell.outcomes)
    assert np.allclose(brow["wait"], bell.wait)
    duckdb = pytest.importorskip("duckdb") if not os.environ.get("CI") else __import__("duckdb")
    con = duckdb.connect()
    glob = str(tmp_path / "a" / "segments" / "*.parquet")
    rows = con.execute(f"SELECT source, kind, seq, T, n FROM read_parquet('{glob}') ORDER BY pos").fetchall()
    assert rows == [("s", "shadow", 4, 130, 7), ("b", "bell", 0, 70, 3)]
    total = con.execute(f"SELECT sum(T) FROM read_parquet('{glob}') WHERE kind = 'shadow'").fetchone()[0]
    assert total == 130


def test_estimating_from_the_archive_equals_estimating_the_batches(tmp_path, rng):
    batches = [shadow(rng, int(T), n=6, seq=i) for i, T in enumerate(rng.integers(1, 3000, 20))]
    with ArchiveWriter(tmp_path / "a") as w:
        for b in batches:
            w.append(b)
    obs = ["ZZIIII", "XIXIII", "IYIYIZ", "ZIIIIZ"]
    direct = qsense.ShadowEstimator(obs)
    for b in batches:
        direct.update(b)
    arch = qsense.ShadowEstimator(obs)
    for b in qsense.open_archive(tmp_path / "a").batches():
        arch.update(b)
    assert np.array_equal(direct.estimate().values, arch.estimate().values)


KILL_WRITER = """
import sys, time, numpy as np
from qsense.records import ShadowBatch
from qsense.streaming.archive import ArchiveWriter
w = ArchiveWriter(sys.argv[1], segment_bytes=200_000)
rng = np.random.default_rng(int(sys.argv[2]))
seq = w.next_pos
while True:
    T = int(rng.integers(1, 3000))
    b = ShadowBatch(rng.integers(0, 3, (T, 6)), rng.integers(0, 2, (T, 6)), source="k", seq=seq)
    w.append(b, 1)
    w.sync()
    print(seq, flush=True)  # durable before it is reported
    seq += 1
    w.maybe_rotate()
    if w.pending_seals:
        w.seal_pending()
"""


def test_kill_9_mid_write_loses_nothing_durable(tmp_path):
    path = tmp_path / "a"
    rng = np.random.default_rng(3)
    durable: set[int] = set()
    for round_ in range(6):
        p = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(path), str(round_)], stdout=subprocess.PIPE, text=True)
        window = float(rng.uniform(0.6, 1.5))
        deadline = None  # from the first durable batch: start-up (imports) takes seconds on a loaded machine
        for line in p.stdout:  # type: ignore[union-attr]
            durable.add(int(line))
            deadline = deadline or time.monotonic() + window
            if time.monotonic() > deadline:
                break
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()  # type: ignore[union-attr]
    assert len(durable) > 20, "the writer never got going"
    w = ArchiveWriter(path)
    w.close()
    a = open_archive(path)
    stored = [b.seq for b in a.batches()]
    assert len(stored) == len(set(stored))  # each once
    assert durable <= set(stored)  # everything reported durable survived every kill
    assert stored == sorted(stored) and not a.problems


def test_retention_by_age(tmp_path, rng):
    path = tmp_path / "a"
    now = time.time()
    with ArchiveWriter(path, segment_bytes=10_000, retention_seconds=3600) as w:
        w.protect_pos = 10**9  # a checkpoint includes everything
        for i in range(6):  # two days old
            w.append(shadow(rng, 500, seq=i), received=now - 2 * 86400)
            w.rotate()
        for i in range(6, 9):  # fresh
            w.append(shadow(rng, 500, seq=i), received=now)
            w.rotate()
        w.seal_pending()
        assert [b.seq for b in open_archive(path).batches()] == [6, 7, 8]
        assert w.deleted_segments == 6


def test_a_missing_segment_file_is_reported(tmp_path, rng):
    path = tmp_path / "a"
    with ArchiveWriter(path, segment_bytes=10_000) as w:
        for i in range(4):
            w.append(shadow(rng, 500, seq=i))
            w.rotate()
    segs = sorted((path / "segments").glob("*.parquet"))
    segs[1].unlink()
    a = open_archive(path)
    assert [b.seq for b in a.batches()] == [0, 2, 3]
    assert a.problems == {"missing_segment": 1}
