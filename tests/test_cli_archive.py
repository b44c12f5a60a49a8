"""The command line on record archives: ``qsense estimate ARCHIVE``, ``qsense record``, ``qsense replay``,
the replay driver and ``qsense demo --archive`` (real sockets on 127.0.0.1 only, subprocesses where exit
status and stderr matter)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from qsense import BellBatch, BellEstimator, ShadowBatch, ShadowEstimator, ShadowPurity
from qsense.apps.cli import main
from qsense.pauli import PauliObservable, parse_observable
from qsense.streaming.archive import FORMAT, FORMAT_VERSION, ArchiveWriter, open_archive

QSENSE = [sys.executable, "-m", "qsense"]
OBS = ["XZI", "Y0 Z2", "0.5*XX - Z1 + 0.25*ZZZ"]
#: the same observables built by hand (the sum as its terms)
PARSED = [parse_observable("XZI"), parse_observable("Y0 Z2"),
          PauliObservable(tuple((c, parse_observable(p).terms[0][1]) for c, p in ((0.5, "XX"), (-1.0, "Z1"), (0.25, "ZZZ"))),
                          OBS[2])]
SUMMARY = re.compile(r"(\d+) batches \((\d+) records\) stored into .*?, (\d+) duplicates, (\d+) malformed, (\d+) refused, "
                     r"(\d+) acknowledged")


# -- fixtures ------------------------------------------------------------------------------------
def _shadow(rng, T: int, n: int, source: str, seq: int, t0: float, wires=None) -> ShadowBatch:
    return ShadowBatch(bases=rng.integers(0, 3, (T, n)), outcomes=rng.integers(0, 2, (T, n)), source=source, seq=seq,
                       t=t0 + 0.01 * np.arange(T), wires=wires)


def _bell(rng, T: int, n: int, source: str, seq: int, t0: float) -> BellBatch:
    return BellBatch(outcomes=rng.integers(0, 4, (T, n)), source=source, seq=seq, t=t0 + 0.01 * np.arange(T),
                     wait=rng.uniform(0, 2e-3, T))


@pytest.fixture
def archive(tmp_path) -> tuple[Path, list[tuple[object, int]]]:
    """Seeded random batches: shadow sources a, b (3 qubits), c (2 qubits), Bell source p (3 pairs), in two appends."""
    rng = np.random.default_rng(2024)
    items: list[tuple[object, int]] = []
    for i in range(12):
        src = "ab"[i % 2]
        items.append((_shadow(rng, int(rng.integers(40, 160)), 3, src, i // 2, t0=float(i)), 11 if src == "a" else 22))
    items += [(_shadow(rng, 100, 2, "c", k, t0=20.0 + k), 33) for k in range(3)]
    items += [(_bell(rng, int(rng.integers(100, 300)), 3, "p", k, t0=float(2 * k)), 44) for k in range(4)]
    path = tmp_path / "night1"
    with ArchiveWriter(path) as w:
        w.append_many(items[:10])
        w.sync()
        w.append_many(items[10:])
        w.sync()
    return path, items


def _table(stdout: str) -> dict[tuple[str, str, str], tuple[float, float]]:
    """``(kind, quantity, target) -> (value, stderr)`` from estimate's archive output."""
    lines = stdout.strip().splitlines()
    assert lines[0].split() == ["kind", "quantity", "target", "value", "stderr"], lines[0]
    out = {}
    for line in lines[1:]:
        p = line.split()
        out[(p[0], p[1], " ".join(p[2:-2]))] = (float(p[-2]), float(p[-1]))
    return out


def _close(printed: float, exact: float) -> bool:
    """Equal to the printed precision (6 decimals)."""
    return (np.isnan(printed) and np.isnan(exact)) or abs(printed - exact) <= 5.1e-7


def _estimate(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["estimate", *args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*QSENSE, *args], capture_output=True, text=True, timeout=timeout, check=False)


def _in_process(capsys, *args: str) -> subprocess.CompletedProcess:
    """``qsense ARGS`` run by ``main`` in this process, as a CompletedProcess (an exception fails the test)."""
    rc = main(list(args))
    cap = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, cap.out, cap.err)


def _one_line_error(proc: subprocess.CompletedProcess, rc: int = 2) -> str:
    assert proc.returncode == rc, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


class _Recorder:
    """``qsense record`` in a subprocess on a free port of 127.0.0.1."""

    def __init__(self, tmp_path: Path, archive: Path, *extra: str) -> None:
        ready = tmp_path / f"ready-{uuid.uuid4().hex}.json"
        self.proc = subprocess.Popen([*QSENSE, "record", "--from", "tcp://127.0.0.1:*", str(archive), "--ready-file", str(ready),
                                      "--status-interval", "0", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 15
        while not ready.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"qsense record exited {self.proc.returncode}: {self.proc.stderr.read()}")
            assert time.monotonic() < deadline, "qsense record did not get ready"
            time.sleep(0.05)
        self.endpoint = json.loads(ready.read_text())["endpoint"]
        self.rc: int | None = None
        self.err = ""

    def stop(self, sig: int | None = signal.SIGINT) -> tuple[int, ...]:
        """Stop it (``sig=None``: wait until it stops by itself); returns the final summary's counts
        (stored, records, duplicates, malformed, refused, acked)."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        _, self.err = self.proc.communicate(timeout=20)
        self.rc = self.proc.returncode
        assert self.rc == 0, self.err
        assert "Traceback" not in self.err
        m = SUMMARY.search(self.err)
        assert m, self.err
        return tuple(int(x) for x in m.groups())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@contextlib.contextmanager
def recorder(tmp_path: Path, archive: Path, *extra: str):
    rec = _Recorder(tmp_path, archive, *extra)
    try:
        yield rec
    finally:
        rec.kill()


def _stored(path: Path) -> dict[tuple[str, int, int], tuple]:
    """``(source, epoch, seq) -> (kind, wires, arrays...)`` of everything in an archive."""
    out = {}
    for e in open_archive(path).entries():
        b = e.batch
        arrays = (b.bases, b.outcomes, b.t) if b.kind == "shadow" else (b.outcomes, b.t, b.wait)
        assert e.key not in out, f"{e.key} stored twice"
        out[e.key] = (b.kind, tuple(b.wires), *(np.array(a) for a in arrays))
    return out


def _same_archives(a: Path, b: Path) -> None:
    x, y = _stored(a), _stored(b)
    assert set(x) == set(y)
    for key in x:
        assert x[key][:2] == y[key][:2], key
        for u, v in zip(x[key][2:], y[key][2:]):
            np.testing.assert_array_equal(u, v)


# -- qsense estimate on archives -----------------------------------------------------------------
def test_estimate_archive_equals_the_estimators(archive, capsys):
    path, items = archive
    rc, out, err = _estimate(capsys, str(path), *[a for o in OBS for a in ("-o", o)], "-s", "0,1", "-s", "2",
                             "--bell-purity", "--wires", "0,1,2", "--t2", "0.01")
    assert rc == 0, err
    rows = _table(out)
    shadow = [b for b, _ in items if b.kind == "shadow" and b.n == 3]
    bell = [b for b, _ in items if b.kind == "bell"]
    se, sp = ShadowEstimator(PARSED), ShadowPurity([(0, 1), (2,)])
    be = BellEstimator(PARSED, t2=0.01, purity_subsystems=[(0, 1), (2,)])
    for b in shadow:
        se.update(b)
        sp.update(b)
    for b in bell:
        be.update(b)
    r, pur, ent, sq = se.estimate(), sp.purity(), sp.entropy(), be.estimate()
    for i, o in enumerate(OBS):
        assert _close(rows[("shadow", "expval", o)][0], r.values[i]) and _close(rows[("shadow", "expval", o)][1], r.stderr[i])
        assert _close(rows[("bell", "square", o)][0], sq.values[i]) and _close(rows[("bell", "square", o)][1], sq.stderr[i])
    for i, lab in enumerate(["[0, 1]", "[2]"]):
        assert _close(rows[("shadow", "purity", lab)][0], pur.values[i])
        assert _close(rows[("shadow", "renyi2", lab)][0], ent.values[i])
        assert _close(rows[("shadow", "renyi2", lab)][1], ent.stderr[i])
    assert _close(rows[("bell", "purity", "[0, 1]")][0], be.purity((0, 1)).values[0])
    assert _close(rows[("bell", "purity", "all")][0], be.purity().values[0])
    assert _close(rows[("bell", "purity", "all")][1], be.purity().stderr[0])
    # the summary: batches, snapshots, sources, problems
    assert f"{len(shadow) + len(bell)} batches, {sum(b.T for b in shadow)} shadow snapshots, {sum(b.T for b in bell)} Bell shots" in err
    assert "3 source(s): a, b, p" in err and "problems: none" in err


def test_estimate_median_of_means_and_matched(archive, capsys):
    path, items = archive
    shadow = [b for b, _ in items if b.kind == "shadow" and b.n == 3]
    for extra, kw in ((["--groups", "4"], {"groups": 4}), (["--method", "matched"], {"method": "matched"})):
        rc, out, err = _estimate(capsys, str(path), "-o", "XZI", "-o", "Z0", "--kind", "shadow", "--wires", "0,1,2", *extra)
        assert rc == 0, err
        est = ShadowEstimator(["XZI", "Z0"], **kw)
        for b in shadow:
            est.update(b)
        r, rows = est.estimate(), _table(out)
        assert _close(rows[("shadow", "expval", "XZI")][0], r.values[0]) and _close(rows[("shadow", "expval", "Z0")][1], r.stderr[1])


def test_estimate_filters_select_the_right_batches(archive, capsys):
    path, items = archive

    def expected(keep):
        est = ShadowEstimator(["Z0 X1"])
        for b in keep:
            if b.T:
                est.update(b)
        return est.estimate()

    # one source
    rc, out, err = _estimate(capsys, str(path), "-o", "Z0 X1", "--source", "a", "--kind", "shadow")
    assert rc == 0, err
    sel = [b for b, _ in items if b.source == "a"]
    assert _close(_table(out)[("shadow", "expval", "Z0 X1")][0], expected(sel).values[0])
    assert f"{len(sel)} batches, {sum(b.T for b in sel)} shadow snapshots" in err
    # a time window cuts the batches that straddle it (record timestamps, since <= t < until)
    rc, out, err = _estimate(capsys, str(path), "-o", "Z0 X1", "--source", "a", "--source", "b", "--since", "2.5", "--until", "7.3")
    assert rc == 0, err
    cut = [b[(b.t >= 2.5) & (b.t < 7.3)] for b, _ in items if b.source in "ab" and b.kind == "shadow"]
    cut = [b for b in cut if b.T]
    assert _close(_table(out)[("shadow", "expval", "Z0 X1")][0], expected(cut).values[0])
    assert f"{len(cut)} batches, {sum(b.T for b in cut)} shadow snapshots" in err
    # exactly these wires: only the 2-qubit source
    rc, out, err = _estimate(capsys, str(path), "-o", "Z0 X1", "--wires", "0,1")
    assert rc == 0, err
    sel = [b for b, _ in items if b.n == 2]
    assert _close(_table(out)[("shadow", "expval", "Z0 X1")][0], expected(sel).values[0])
    assert "1 source(s): c" in err
    # Bell only
    rc, out, err = _estimate(capsys, str(path), "-o", "XX", "--kind", "bell")
    assert rc == 0 and {k[0] for k in _table(out)} == {"bell"}
    # several wire sets of one kind: each its own lines, named by their wires
    rc, out, err = _estimate(capsys, str(path), "-o", "Z0 X1", "--kind", "shadow")
    assert rc == 0, err
    assert {k[0] for k in _table(out)} == {"shadow@0,1,2", "shadow@0,1"}
    # nothing selected: exit 1 and say so
    rc, out, err = _estimate(capsys, str(path), "-o", "Z0", "--source", "nobody")
    assert rc == 1 and "no batches match" in err


def test_estimate_bad_inputs_exit_2_with_one_line(archive, tmp_path, capsys):
    path, _ = archive
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "archive.json").write_text(json.dumps({"format": FORMAT, "version": FORMAT_VERSION + 1}))
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / "archive.json").write_text("{not json")
    plain = tmp_path / "plain"
    plain.mkdir()
    bad_npz = tmp_path / "bad.npz"
    bad_npz.write_bytes(b"this is not a zip file")
    cases = [
        ([str(tmp_path / "missing"), "-o", "Z0"], "no such file or directory"),
        ([str(plain), "-o", "Z0"], "not a qsense archive"),
        ([str(newer), "-o", "Z0"], "newer than this qsense reads"),
        ([str(garbled), "-o", "Z0"], "unreadable archive.json"),
        ([str(bad_npz), "-o", "Z0"], str(bad_npz)),
        ([str(path), "-o", "Z0", "--since", "5", "--until", "1"], "must be before"),
        ([str(path), "-o", "XQ"], "unknown Pauli letter"),
        ([str(path), "-o", "Z7", "--wires", "0,1,2"], "outside the data's 3 wires"),
        ([str(bad_npz), "-o", "Z0", "--source", "a"], "need a record archive"),
    ]
    for i, (args, message) in enumerate(cases):
        # two as real processes (exit status, no traceback), the rest in this process (faster)
        proc = _cli("estimate", *args) if i in (0, 2) else _in_process(capsys, "estimate", *args)
        line = _one_line_error(proc)
        assert line.startswith("qsense estimate: ") and message in line, (args, line)


# -- qsense record / qsense replay ----------------------------------------------------------------
def test_record_replay_round_trip_and_duplicates(archive, tmp_path, capsys):
    path, items = archive
    copy = tmp_path / "copy"
    with recorder(tmp_path, copy) as rec:
        first = _cli("replay", str(path), "--to", rec.endpoint, "--ack-timeout", "10")
        assert first.returncode == 0, first.stderr
        assert f"{len(items)} batches ({sum(b.T for b, _ in items)} records)" in first.stderr and "all acknowledged" in first.stderr
        # acknowledged means durable: estimate reads it back while the recorder still writes (a live archive)
        rc, out, err = _estimate(capsys, str(copy), "-o", "Z0", "--wires", "0,1,2")
        assert rc == 0 and "(live: a writer holds it)" in err, err
        assert f"{sum(1 for b, _ in items if b.n == 3)} batches" in err
        # replaying again stores nothing new: every batch is a recognised duplicate, and still acknowledged
        again = _cli("replay", str(path), "--to", rec.endpoint, "--ack-timeout", "10")
        assert again.returncode == 0, again.stderr
        stored, records, duplicates, malformed, refused, acked = rec.stop(signal.SIGTERM)
    assert (stored, records, duplicates, malformed, refused) == (len(items), sum(b.T for b, _ in items), len(items), 0, 0)
    assert acked == 2 * len(items)
    _same_archives(path, copy)
    assert {e.key: e.epoch for e in open_archive(copy).entries()} == {(b.source, ep, b.seq): ep for b, ep in items}
    assert not open_archive(copy).live  # closed: the lock is released and the open segment sealed
    assert all(sealed for _, _, sealed in open_archive(copy).segments())


def test_replay_filters_and_rate(archive, tmp_path):
    path, items = archive
    copy = tmp_path / "copy"
    sel = [b for b, _ in items if b.source == "a"]
    n = sum(b.T for b in sel)
    rate = n / 1.5  # about 1.5 s paced
    with recorder(tmp_path, copy, "--max-batches", str(len(sel))) as rec:
        t0 = time.monotonic()
        proc = _cli("replay", str(path), "--to", rec.endpoint, "--source", "a", "--rate", f"{rate:.3f}")
        elapsed = time.monotonic() - t0
        assert proc.returncode == 0, proc.stderr
        got = rec.stop(None)  # --max-batches: it stops by itself
    m = re.search(r"in ([\d.]+) s", proc.stderr)
    paced = float(m.group(1))
    assert 1.2 <= paced <= 3.0, proc.stderr  # N / R seconds, loosely
    assert elapsed >= paced
    assert got[:3] == (len(sel), n, 0)
    assert {k[0] for k in _stored(copy)} == {"a"}


def test_record_stops_by_itself_and_refuses_bad_input(tmp_path, capsys):
    # --duration with nothing received: a clean stop, an empty archive
    proc = _cli("record", "--from", "tcp://127.0.0.1:*", str(tmp_path / "empty"), "--duration", "0.5")
    assert proc.returncode == 0 and "0 batches (0 records)" in proc.stderr, proc.stderr
    assert open_archive(tmp_path / "empty").summary()["batches"] == 0
    with recorder(tmp_path, tmp_path / "busy") as rec:
        # the endpoint is taken, and the archive is locked by the running recorder
        line = _one_line_error(_cli("record", "--from", rec.endpoint, str(tmp_path / "other")))
        assert "cannot bind" in line and "in use" in line, line
        line = _one_line_error(_cli("record", "--from", "tcp://127.0.0.1:*", str(tmp_path / "busy")))
        assert line.startswith("qsense record: "), line
        rec.stop()
    (tmp_path / "afile").write_text("x")
    for args, message in (
        (["--from", "nonsense://x", str(tmp_path / "x")], "cannot bind"),
        (["--from", "tcp://127.0.0.1:*", str(tmp_path / "afile")], "not a directory"),
        (["--from", "tcp://127.0.0.1:*", str(tmp_path / "x"), "--commit-interval", "-1"], "--commit-interval"),
    ):
        line = _one_line_error(_in_process(capsys, "record", *args))
        assert message in line, line


def test_record_full_archive_stops_acknowledging_and_keeps_running(archive, tmp_path):
    path, items = archive
    with recorder(tmp_path, tmp_path / "small", "--capacity-mb", "0.004") as rec:
        proc = _cli("replay", str(path), "--to", rec.endpoint, "--ack-timeout", "1.5")
        assert proc.returncode == 1 and "unacknowledged" in proc.stderr, proc.stderr
        assert rec.proc.poll() is None  # still running: senders keep their batches
        stored, _, _, _, refused, acked = rec.stop()
    assert 0 < stored < len(items) and refused > 0 and acked == stored
    assert "archive full" in rec.err


def test_replay_into_a_daemon_twice_stores_each_batch_once(archive, tmp_path):
    path, _ = archive
    stored, cfg, ready = tmp_path / "daemon-archive", tmp_path / "d.toml", tmp_path / "ready.json"
    cfg.write_text(f"""
[daemon]
name = "replayed"
drain_timeout = 2.0
[[inputs.zmq]]
name = "records"
endpoint = "tcp://127.0.0.1:*"
[[estimators]]
name = "z"
type = "shadow"
observables = ["Z0"]
wires = 3
[archive]
path = "{stored}"
""")
    daemon = subprocess.Popen([*QSENSE, "--log-level", "WARNING", "daemon", "--config", str(cfg), "--ready-file", str(ready)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert daemon.poll() is None, daemon.stderr.read()
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.05)
        endpoint = json.loads(ready.read_text())["endpoints"]["input.records"]
        for _ in range(2):  # the second time every batch is a duplicate the daemon recognises (and acknowledges)
            proc = _cli("replay", str(path), "--to", endpoint, "--ack-timeout", "10")
            assert proc.returncode == 0, proc.stderr
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=20)
        assert daemon.returncode == 0, err
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    _same_archives(path, stored)  # each (source, epoch, seq) once, arrays unchanged


def test_replay_bad_input_and_no_receiver(archive, tmp_path, capsys):
    path, _ = archive
    for args, message in (
        ([str(tmp_path / "missing"), "--to", "tcp://127.0.0.1:9"], "no such archive"),
        ([str(path), "--to", "tcp://127.0.0.1:9", "--rate", "0"], "--rate"),
        ([str(path), "--to", "nonsense://x"], "cannot connect"),
        ([str(path), "--to", "tcp://127.0.0.1:9", "--wires", ","], "--wires"),
    ):
        line = _one_line_error(_in_process(capsys, "replay", *args))
        assert line.startswith("qsense replay: ") and message in line, line
    # nobody listening: gives up after --ack-timeout, exit 1, one line
    line = _one_line_error(_cli("replay", str(path), "--to", "tcp://127.0.0.1:9", "--ack-timeout", "0.5"), rc=1)
    assert "no receiver" in line or "unacknowledged" in line, line


async def test_replay_driver_yields_and_publishes_the_original_batches(archive):
    from qsense import plugins
    from qsense.drivers.replay import ArchiveReplaySource
    from qsense.streaming.transport import RecordPublisher, RecordReceiver

    path, items = archive
    assert plugins.load("driver", "replay") is ArchiveReplaySource
    want = [(b.source, ep, b.seq) for b, ep in items if b.kind == "bell"]
    got = [(e.batch.source, e.epoch, e.batch.seq) async for e in ArchiveReplaySource(path, kind="bell").entries()]
    assert got == want
    batches = [b async for b in ArchiveReplaySource(path, source=["c"])]
    assert [b.seq for b in batches] == [0, 1, 2] and all(b.wires == (0, 1) for b in batches)
    rx = RecordReceiver("tcp://127.0.0.1:*", auto_ack=True)
    pub = RecordPublisher(rx.endpoint)
    try:
        src = ArchiveReplaySource(path)
        received: list = []

        async def take() -> None:
            while len(received) < len(items):
                received.append(await rx.recv())

        taker = asyncio.create_task(take())
        sent = await src.publish(pub, flush_timeout=10)
        await asyncio.wait_for(taker, 10)
    finally:
        pub.close()
        rx.close()
    assert sent == len(items) == src.batches and src.records == sum(b.T for b, _ in items)
    assert [m.key for m in received] == [(b.source, ep, b.seq) for b, ep in items]
    for m, (b, _) in zip(received, items):
        np.testing.assert_array_equal(m.batch.outcomes, b.outcomes)
        np.testing.assert_array_equal(m.batch.t, b.t)
    with pytest.raises(ValueError, match="source=None"):
        await ArchiveReplaySource(path).publish(RecordPublisher("tcp://127.0.0.1:9", source="x"))


# -- the demo keeps its records ------------------------------------------------------------------
def test_demo_archive_can_be_asked_later(tmp_path, capsys):
    arch, out = tmp_path / "demo-archive", tmp_path / "out"
    proc = _cli("demo", "--duration", "3", "--archive", str(arch), "--out", str(out), "--no-plot", "--no-progress",
                "--telescopes", "4", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"archive {arch}" in proc.stdout and f"qsense estimate {arch} -o" in proc.stdout
    counters = json.loads((out / "results.json").read_text())["counters"]
    rc, text, err = _estimate(capsys, str(arch), "-o", "X0 X1", "-s", "0,1", "--bell-purity")
    assert rc == 0, err
    rows = _table(text)
    assert {("shadow", "expval", "X0 X1"), ("bell", "square", "X0 X1"), ("bell", "purity", "all")} <= set(rows)
    # every record the pipeline made was folded by the daemon (after its commit) and is in the archive
    assert counters["daemon.records.shadow"] == counters["records.shadow"] > 0
    assert counters["daemon.records.bell"] == counters["records.bell"] > 0
    assert f"{counters['daemon.records.shadow']} shadow snapshots, {counters['daemon.records.bell']} Bell shots" in err
    # a second demo into the same directory would mix two observations: refused
    line = _one_line_error(_cli("demo", "--duration", "1", "--archive", str(arch), "--out", str(out), "--no-plot",
                                "--no-progress"))
    assert "not empty" in line
