"""Crafted checkpoints are refused (issue 12, item 8; item 10's checkpoint parts).

Each crafted file -- forged MAC, truncated, missing keys, observables swapped
under a kept fingerprint, negative or float counts, inflated matches, a zip
bomb, unusable sequence marks -- must stop the daemon with one CheckpointError
line naming the problem, be moved aside (never overwritten), and let the daemon
start from zero only when told to.  The positive controls (a genuine checkpoint
resumes with the same estimates; an unsigned one resumes once when trusted)
make sure the refusals are not simply refusing everything.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import resource
import signal
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import msgspec
import numpy as np
import pytest

from qsense import ShadowBatch
from qsense.estimators.serial import dump_npz, load_npz, obs_to_json
from qsense.pauli import parse_observable
from qsense.streaming.checkpoint import (
    LEGACY_MAGIC,
    MAGIC,
    CheckpointError,
    UnsignedCheckpointError,
    default_key_file,
    load_key,
    read_checkpoint,
    write_checkpoint,
)
from qsense.streaming.config import ConfigError, parse_config
from qsense.streaming.daemon import EstimationDaemon

OBS = ["Z0", "X1"]


def _doc(tmp_path: Path) -> dict:
    return {"estimators": [{"name": "e", "type": "shadow", "observables": OBS, "groups": 2, "wires": 2}],
            "checkpoint": {"path": str(tmp_path / "d.ckpt"), "period": 3600}}


def _toml(tmp_path: Path) -> Path:
    p = tmp_path / "d.toml"
    p.write_text("[[estimators]]\nname = 'e'\ntype = 'shadow'\nobservables = ['Z0', 'X1']\ngroups = 2\nwires = 2\n"
                 "[checkpoint]\npath = 'd.ckpt'\nperiod = 3600\n")
    return p


def _batch(seq: int, T: int = 400) -> ShadowBatch:
    rng = np.random.default_rng(seq)
    return ShadowBatch(rng.integers(0, 3, (T, 2)), rng.integers(0, 2, (T, 2)), source="s", seq=seq)


async def _genuine(tmp_path: Path) -> dict:
    """Run a daemon on three batches; its shutdown checkpoint is the genuine file. Returns its estimates."""
    async with EstimationDaemon(_doc(tmp_path)) as d:
        for i in range(3):
            assert d.ingest(_batch(i))
        est = d.estimates()["e"]
    return est


def _resign(path: Path, body: bytes) -> None:
    """Write ``body`` as a checkpoint signed with the daemon's real key (a crafted body that passes the MAC)."""
    key = load_key(default_key_file(path), create=False)
    path.write_bytes(MAGIC + body + hmac.new(key, MAGIC + body, hashlib.sha256).digest())


def _edit_state(path: Path, edit) -> None:
    """Re-sign the checkpoint at ``path`` after ``edit(meta, arrays)`` changed estimator e's state."""
    ck = read_checkpoint(path)
    z, meta = load_npz(ck.estimators["e"].state, "ShadowEstimator")
    arrays = {k: np.array(z[k]) for k in z.files}
    meta = dict(meta)
    edit(meta, arrays)
    ck.estimators["e"].state = dump_npz(meta, **arrays)
    write_checkpoint(path, ck)


def _zip(members: list[tuple[str, int, int, bytes, int]]) -> bytes:
    """A zip archive built by hand: (name, method, crc, compressed bytes, uncompressed size) per member."""
    out = io.BytesIO()
    central = []
    for name, method, crc, comp, size in members:
        off, n = out.tell(), name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(comp), size, len(n), 0) + n + comp)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc, len(comp), size,
                                   len(n), 0, 0, 0, 0, 0, off) + n)
    start = out.tell()
    for c in central:
        out.write(c)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), out.tell() - start, start, 0))
    return out.getvalue()


def _bomb(meta: dict, nbytes: int = 1 << 30) -> bytes:
    """A valid npz whose deflated ``counts`` member unpacks to ``nbytes`` of zeros (about 1 MB on disk).

    Built from one repeated full-flush deflate block, so making it costs no
    gigabyte of compression work; the CRC is the true one of the unpacked data."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array(json.dumps(meta)), allow_pickle=False)
    meta_npy = buf.getvalue()
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(hdr, {"descr": "<i8", "fortran_order": False, "shape": ((nbytes - 128) // 8,)})
    head = hdr.getvalue()
    assert len(head) == 128
    chunk = bytes(8 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)  # identical for every further chunk: the state was reset
    k = (nbytes - 128) // len(chunk)
    tail_len = (nbytes - 128) - k * len(chunk)
    tail = c.compress(bytes(tail_len)) + c.flush()
    crc = zlib.crc32(head)
    for _ in range(k):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(bytes(tail_len), crc)
    return _zip([("meta.npy", 0, zlib.crc32(meta_npy), meta_npy, len(meta_npy)),
                 ("counts.npy", 8, crc, first + block * k + tail, nbytes)])


# -- the crafted files ------------------------------------------------------------------------------
def _wrong_mac(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _missing_field(path: Path) -> None:
    body = msgspec.msgpack.decode(path.read_bytes()[len(MAGIC):-32])
    del body["estimators"]
    _resign(path, msgspec.msgpack.encode(body))


def _missing_meta_key(path: Path) -> None:
    _edit_state(path, lambda meta, a: meta.pop("observables"))


def _swapped_observables(path: Path) -> None:
    # the attacker keeps the fingerprint (and the shapes: two observables) but the state estimates Y0, Y1
    _edit_state(path, lambda meta, a: meta.__setitem__("observables", [obs_to_json(parse_observable(o)) for o in ("Y0", "Y1")]))


def _negative_counts(path: Path) -> None:
    def edit(meta, a):
        a["counts"][0] = -5
    _edit_state(path, edit)


def _float_counts(path: Path) -> None:
    def edit(meta, a):
        a["counts"] = a["counts"].astype(np.float64) + 0.5
    _edit_state(path, edit)


def _inflated_matches(path: Path) -> None:
    def edit(meta, a):
        a["matched"][:] = a["counts"][:, None] * 10  # every snapshot "matched" ten times: |mean| could exceed 1
        a["odd"][:] = 0
    _edit_state(path, edit)


def _bomb_state(path: Path) -> None:
    ck = read_checkpoint(path)
    _, meta = load_npz(ck.estimators["e"].state, "ShadowEstimator")
    ck.estimators["e"].state = _bomb(dict(meta))
    write_checkpoint(path, ck)


def _bad_seq(path: Path) -> None:
    ck = read_checkpoint(path)
    ck.sources["s"]["seq"] = "x"
    write_checkpoint(path, ck)


def _negative_pub_seq(path: Path) -> None:
    ck = read_checkpoint(path)
    ck.pub_seq = -1
    write_checkpoint(path, ck)


CRAFTED = {
    "wrong_mac": (_wrong_mac, "authentication failed"),
    "truncated": (_truncated, "authentication failed"),
    "missing_field": (_missing_field, "missing required field `estimators`"),
    "missing_meta_key": (_missing_meta_key, "has no 'observables'"),
    "swapped_observables": (_swapped_observables, "the state's observables differ from the configuration"),
    "negative_counts": (_negative_counts, "checkpoint counts: negative"),
    "float_counts": (_float_counts, "counts must be integers, got dtype float64"),
    "inflated_matches": (_inflated_matches, "more matches than snapshots"),
    "zip_bomb": (_bomb_state, "bytes unpacked (limit"),
    "bad_seq": (_bad_seq, "sources['s'].seq"),
    "negative_pub_seq": (_negative_pub_seq, "pub_seq"),
}


def _refused(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".refused-*"))


@pytest.mark.parametrize("kind", sorted(CRAFTED))
async def test_crafted_checkpoint_is_refused_moved_aside_and_fresh_only_when_told(tmp_path, kind):
    craft, message = CRAFTED[kind]
    path = tmp_path / "d.ckpt"
    await _genuine(tmp_path)
    craft(path)
    crafted = path.read_bytes()
    with pytest.raises(CheckpointError) as info:
        async with EstimationDaemon(_doc(tmp_path)):
            pass
    text = str(info.value)
    assert message in text and "moved aside to" in text and "--fresh-on-bad-checkpoint" in text, text
    assert "\n" not in text
    [aside] = _refused(path)
    assert not path.exists() and aside.read_bytes() == crafted and str(aside) in text
    # the refusal is remembered: no silent fresh start on the next attempt either
    with pytest.raises(CheckpointError, match="earlier one was refused"):
        async with EstimationDaemon(_doc(tmp_path)):
            pass
    d = EstimationDaemon(_doc(tmp_path))
    d.fresh_on_bad_checkpoint = True
    async with d:
        assert d.resumed_from is None and d.slots[0].count == 0 and not d.slots[0].restored
        assert d.ingest(_batch(7))
    assert read_checkpoint(path).estimators["e"]  # the fresh run checkpointed normally
    assert _refused(path) == [aside]


async def test_fresh_flag_moves_a_bad_checkpoint_aside_at_once(tmp_path):
    path = tmp_path / "d.ckpt"
    await _genuine(tmp_path)
    _swapped_observables(path)
    d = EstimationDaemon(_doc(tmp_path))
    d.fresh_on_bad_checkpoint = True
    async with d:
        assert d.slots[0].count == 0
    assert len(_refused(path)) == 1


async def test_genuine_checkpoint_resumes_exactly(tmp_path):
    before = await _genuine(tmp_path)
    async with EstimationDaemon(_doc(tmp_path)) as d:
        assert d.resumed_from is not None and d.slots[0].restored
        after = d.estimates()["e"]
    assert after["count"] == before["count"] == 1200
    for k, v in before["estimates"].items():
        assert after["estimates"][k]["value"] == v["value"]


def test_zip_bomb_is_real_and_refused_before_inflating(tmp_path):
    meta = {"type": "ShadowEstimator", "version": 1, "groups": 2, "method": "mean", "capacity": 1,
            "observables": [obs_to_json(parse_observable(o)) for o in OBS], "wires": [0, 1]}
    bomb = _bomb(meta)
    import zipfile

    zf = zipfile.ZipFile(io.BytesIO(bomb))
    assert len(bomb) < 3 << 20 and zf.getinfo("counts.npy").file_size == 1 << 30
    with zf.open("counts.npy") as f:  # a genuine deflate stream: the start really unpacks (to zeros)
        assert f.read(128).startswith(b"\x93NUMPY") and f.read(1 << 20) == bytes(1 << 20)
    t0 = time.perf_counter()
    peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from qsense.estimators.shadow import ShadowEstimator

    with pytest.raises(ValueError, match=r"declares 10737\d+ bytes unpacked"):
        ShadowEstimator.from_bytes(bomb)
    assert time.perf_counter() - t0 < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak0 < 100 << 10  # KiB: nothing was inflated


def test_lying_npy_header_is_refused_before_allocating():
    """A member whose .npy header claims a 1 TB array in a few bytes never reaches numpy's allocation."""
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(hdr, {"descr": "<i8", "fortran_order": False, "shape": (1 << 37,)})
    npy = hdr.getvalue() + bytes(64)
    meta = io.BytesIO()
    np.lib.format.write_array(meta, np.array(json.dumps({"type": "ShadowEstimator"})))
    data = _zip([("meta.npy", 0, zlib.crc32(meta.getvalue()), meta.getvalue(), len(meta.getvalue())),
                 ("counts.npy", 0, zlib.crc32(npy), npy, len(npy))])
    with pytest.raises(ValueError, match="header declares 1099511627776 bytes"):
        load_npz(data, "ShadowEstimator")


async def test_unsigned_checkpoint_needs_trust_once_and_is_then_signed(tmp_path):
    path = tmp_path / "d.ckpt"
    before = await _genuine(tmp_path)
    body = path.read_bytes()[len(MAGIC):-32]
    # the earlier format: a SHA-256 anyone can recompute
    path.write_bytes(LEGACY_MAGIC + body + hashlib.sha256(body).digest())
    with pytest.raises(UnsignedCheckpointError, match="--trust-unsigned-checkpoint"):
        async with EstimationDaemon(_doc(tmp_path)):
            pass
    assert path.exists() and not _refused(path)  # kept in place so that the trusted start finds it
    d = EstimationDaemon(_doc(tmp_path))
    d.trust_unsigned_checkpoint = True
    async with d:
        assert d.slots[0].count == before["count"]
    assert path.read_bytes().startswith(MAGIC)  # what it wrote is signed
    async with EstimationDaemon(_doc(tmp_path)) as d:  # and resumes without the flag
        assert d.slots[0].count == before["count"]


async def test_key_file_created_0600_and_refused_when_readable(tmp_path):
    path = tmp_path / "d.ckpt"
    await _genuine(tmp_path)
    key = default_key_file(path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(bytes.fromhex(key.read_text().strip())) == 32
    cfg = parse_config(_doc(tmp_path))  # validated while the key was private ...
    key.chmod(0o644)
    fix = r"accessible by group or others \(mode 0644\); run: chmod 600"
    with pytest.raises(CheckpointError, match=fix):  # ... refused at start all the same
        async with EstimationDaemon(cfg):
            pass
    with pytest.raises(ConfigError, match="checkpoint.key_file: .*" + fix):  # and by the config check (--check)
        parse_config(_doc(tmp_path))
    assert path.exists() and not _refused(path)  # a key problem is not the checkpoint's fault


async def test_other_key_cannot_authenticate(tmp_path):
    path = tmp_path / "d.ckpt"
    await _genuine(tmp_path)
    key = default_key_file(path)
    key.unlink()  # a new key would be made by the next write; the old checkpoint cannot be authenticated
    with pytest.raises(CheckpointError, match="key file .* does not exist"):
        async with EstimationDaemon(_doc(tmp_path)):
            pass
    assert len(_refused(path)) == 1


async def test_configured_key_file_is_used(tmp_path):
    doc = _doc(tmp_path)
    doc["checkpoint"]["key_file"] = str(tmp_path / "keys" / "daemon.key")
    async with EstimationDaemon(doc) as d:
        assert d.ingest(_batch(0))
    assert stat.S_IMODE((tmp_path / "keys" / "daemon.key").stat().st_mode) == 0o600
    assert not default_key_file(tmp_path / "d.ckpt").exists()
    async with EstimationDaemon(doc) as d:
        assert d.slots[0].count == 400


async def test_stale_temporaries_are_removed_at_start(tmp_path, caplog):
    await _genuine(tmp_path)
    stale = [tmp_path / ".d.ckpt.999999.tmp", tmp_path / ".d.ckpt.12.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    other = tmp_path / ".other.1.tmp"
    other.write_bytes(b"not ours")
    caplog.set_level("WARNING")
    async with EstimationDaemon(_doc(tmp_path)) as d:
        assert d.slots[0].count == 1200
    assert not any(p.exists() for p in stale) and other.exists()
    assert any("removed 2 temporary file(s) left by an interrupted checkpoint write" in r.getMessage() for r in caplog.records)


async def test_no_resume_still_signs_and_cleans(tmp_path):
    await _genuine(tmp_path)
    (tmp_path / ".d.ckpt.4242.tmp").write_bytes(b"x")
    async with EstimationDaemon(_doc(tmp_path), resume=False) as d:
        assert d.slots[0].count == 0
    assert not (tmp_path / ".d.ckpt.4242.tmp").exists()
    assert read_checkpoint(tmp_path / "d.ckpt").estimators["e"]


# -- the command line -----------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qsense", "daemon", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("kinds", [pytest.param(["wrong_mac"], id="one"),
                                   pytest.param(["swapped_observables", "negative_counts", "zip_bomb", "missing_field"],
                                                id="more", marks=pytest.mark.slow)])
async def test_cli_refuses_crafted_checkpoints_with_exit_2_and_one_line(tmp_path, kinds):
    procs = {}
    for kind in kinds:
        d = tmp_path / kind
        d.mkdir()
        await _genuine(d)
        CRAFTED[kind][0](d / "d.ckpt")
    t0 = time.perf_counter()
    for kind in kinds:  # in parallel: each run is an interpreter start
        procs[kind] = _cli("--config", str(_toml(tmp_path / kind)))
    for kind, p in procs.items():
        out, err = p.communicate(timeout=60)
        lines = err.strip().splitlines()
        assert p.returncode == 2, err
        assert len(lines) == 1 and "Traceback" not in err and CRAFTED[kind][1] in lines[0], err
        assert lines[0].startswith("qsense daemon: checkpoint ") and "moved aside to" in lines[0]
        assert len(_refused(tmp_path / kind / "d.ckpt")) == 1
    assert time.perf_counter() - t0 < 45


async def test_cli_fresh_on_bad_checkpoint_starts_and_stops_cleanly(tmp_path):
    await _genuine(tmp_path)
    _wrong_mac(tmp_path / "d.ckpt")
    ready = tmp_path / "ready.json"
    p = _cli("--config", str(_toml(tmp_path)), "--fresh-on-bad-checkpoint", "--ready-file", str(ready))
    try:
        deadline = time.monotonic() + 45
        while not ready.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), p.stderr.read() if p.poll() is not None else "not ready"
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "refused" in err and "starting fresh" in err and "Traceback" not in err
    assert len(_refused(tmp_path / "d.ckpt")) == 1
    assert read_checkpoint(tmp_path / "d.ckpt").estimators["e"]  # the clean stop wrote a signed checkpoint


def test_cli_documents_the_flags():
    out = subprocess.run([sys.executable, "-m", "qsense", "daemon", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "--fresh-on-bad-checkpoint" in out and "--trust-unsigned-checkpoint" in out
