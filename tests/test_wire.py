"""Wire format: round trips, zero-copy frames, validation, and fuzzing of decode."""

from __future__ import annotations

import struct
import tracemalloc

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qsense
from qsense import BellBatch, ShadowBatch, WireFormatError
from qsense.streaming.wire import MAX_HEADER_BYTES, MAX_RECORDS, SCHEMA_VERSION, decode_message, pack, unpack

pytestmark = pytest.mark.timeout(60)


def _shadow(T=7, n=5, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return ShadowBatch(rng.integers(0, 3, (T, n)), rng.integers(0, 2, (T, n)), t=rng.random(T), **kw)


def _bell(T=6, n=3, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return BellBatch(rng.integers(0, 4, (T, n)), t=rng.random(T), wait=rng.random(T) * 1e-3, **kw)


def _header(frames):
    return msgspec.msgpack.decode(bytes(frames[0]))


def _reheader(frames, **changes):
    h = _header(frames)
    h.update(changes)
    return [msgspec.msgpack.encode(h), *frames[1:]]


# -- round trips ---------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [_shadow, _bell])
@pytest.mark.parametrize("T, n", [(7, 5), (0, 3), (1, 0), (1000, 16)])
def test_roundtrip(make, T, n):
    b = make(T, n, source="src-1", seq=41)
    out = qsense.decode(qsense.encode(b))
    assert type(out) is type(b) and out.source == "src-1" and out.seq == 41 and out.wires == b.wires
    np.testing.assert_array_equal(out.outcomes, b.outcomes)
    np.testing.assert_array_equal(out.t, b.t)
    if isinstance(b, ShadowBatch):
        np.testing.assert_array_equal(out.bases, b.bases)
    else:
        np.testing.assert_array_equal(out.wait, b.wait)
    # the single-blob form used over MQTT carries the same
    out2 = unpack(pack(b))
    np.testing.assert_array_equal(out2.outcomes, b.outcomes)


def test_wire_labels_source_seq_epoch_overrides():
    b = _shadow(3, 3, wires=("a", 7, "c"))
    m = decode_message(qsense.encode(b, source="other", seq=2**62, epoch=99))
    assert m.batch.wires == ("a", 7, "c") and m.batch.source == "other" and m.batch.seq == 2**62 and m.epoch == 99
    assert _header(qsense.encode(_shadow()))["wires"] is None  # default labels are not spelled out


def test_frames_are_zero_copy_views_and_decoded_arrays_are_views():
    b = _shadow(2000, 16)
    frames = qsense.encode(b)
    assert isinstance(frames[0], bytes) and all(isinstance(f, memoryview) for f in frames[1:])
    assert np.shares_memory(np.frombuffer(frames[1], np.uint8), b.bases)
    assert np.shares_memory(np.frombuffer(frames[2], np.uint8), b.outcomes)
    out = qsense.decode(frames)
    assert np.shares_memory(out.bases, b.bases)  # decoding copies nothing either
    assert not out.bases.flags.writeable


def test_header_is_small_and_versioned():
    frames = qsense.encode(_shadow(10, 16, source="telescope-array", seq=12))
    h = _header(frames)
    assert h["v"] == SCHEMA_VERSION and h["kind"] == "shadow" and h["T"] == 10 and h["n"] == 16
    assert h["arrays"] == [["bases", "|u1", [10, 16]], ["outcomes", "|u1", [10, 16]], ["t", "<f8", [10]]]
    assert len(frames[0]) < 150


def test_byte_level_example_in_docs_is_exact():
    """docs/wire-format.md shows this exact header; keep them in sync."""
    b = ShadowBatch([[0, 2], [1, 1]], [[0, 1], [1, 0]], source="det", seq=7, t=[0.5, 1.0])
    frames = qsense.encode(b, epoch=1)
    assert bytes(frames[0]).hex(" ") == (
        "89 a1 76 01 a4 6b 69 6e 64 a6 73 68 61 64 6f 77 a6 73 6f 75 72 63 65 a3 64 65 74 a3 73 65 71 07 "
        "a1 6e 02 a1 54 02 a5 77 69 72 65 73 c0 a6 61 72 72 61 79 73 93 93 a5 62 61 73 65 73 a3 7c 75 31 "
        "92 02 02 93 a8 6f 75 74 63 6f 6d 65 73 a3 7c 75 31 92 02 02 93 a1 74 a3 3c 66 38 91 02 a5 65 70 "
        "6f 63 68 01"
    )
    assert [bytes(f).hex(" ") for f in frames[1:]] == [
        "00 02 01 01", "00 01 01 00", "00 00 00 00 00 00 e0 3f 00 00 00 00 00 00 f0 3f",
    ]


# -- validation -------------------------------------------------------------------------------------
def _bad(frames, reason):
    with pytest.raises(WireFormatError) as info:
        qsense.decode(frames)
    assert info.value.reason == reason, str(info.value)
    return info.value


def test_rejections_with_reasons():
    f = qsense.encode(_shadow(4, 3))
    _bad([], "frames")
    _bad(f[:-1], "frames")
    _bad([*f, b""], "frames")
    _bad([b"", *f[1:]], "header")
    _bad([b"\xc1", *f[1:]], "header")
    _bad(_reheader(f, v=2), "version")
    _bad(_reheader(f, kind="qutrit"), "header")
    _bad(_reheader(f, seq=-1), "limits")
    _bad(_reheader(f, n=10**6), "limits")
    _bad(_reheader(f, T=MAX_RECORDS + 1), "limits")
    _bad(_reheader(f, source="x" * 300), "limits")
    _bad(_reheader(f, wires=[0, 1]), "layout")
    _bad(_reheader(f, wires=[0, 0, 1]), "values")
    _bad(_reheader(f, T=5), "layout")  # declared shapes no longer match T
    h = _header(f)
    h["arrays"][0][1] = "<u2"
    _bad([msgspec.msgpack.encode(h), *f[1:]], "layout")
    h = _header(f)
    h["arrays"][1], h["arrays"][0] = h["arrays"][0], h["arrays"][1]
    _bad([msgspec.msgpack.encode(h), *f[1:]], "layout")
    _bad([f[0], bytes(f[1])[:-1], f[2], f[3]], "size")
    _bad([f[0], bytes([3]) + bytes(f[1])[1:], f[2], f[3]], "values")  # basis code 3
    _bad([f[0], f[1], bytes([2]) + bytes(f[2])[1:], f[3]], "values")  # outcome bit 2
    _bad([f[0], f[1], f[2], np.array([np.nan, 0, 0, 0]).tobytes()], "values")
    _bad([msgspec.msgpack.encode("x" * (MAX_HEADER_BYTES + 1)), *f[1:]], "limits")
    _bad([object(), *f[1:]], "frames")
    _bad(None, "frames")
    fb = qsense.encode(_bell(3, 2))
    _bad([fb[0], bytes([4]) + bytes(fb[1])[1:], fb[2], fb[3]], "values")  # Bell code 4
    _bad([fb[0], fb[1], fb[2], np.array([-1.0, 0, 0]).tobytes()], "values")  # negative wait


def test_wire_format_error_is_a_value_error():
    assert issubclass(WireFormatError, ValueError)
    assert qsense.WireFormatError is WireFormatError


def test_hostile_header_allocates_nothing():
    """A header claiming 16 M records x 4096 qubits with tiny frames costs nothing."""
    f = qsense.encode(_shadow(1, 1))
    h = _header(f)
    h.update(T=MAX_RECORDS, n=4096, arrays=[["bases", "|u1", [MAX_RECORDS, 4096]], ["outcomes", "|u1", [MAX_RECORDS, 4096]],
                                            ["t", "<f8", [MAX_RECORDS]]])
    hostile = [msgspec.msgpack.encode(h), b"\x00", b"\x00", b"\x00" * 8]
    tracemalloc.start()
    try:
        _bad(hostile, "size")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    with pytest.raises(WireFormatError):
        unpack(b"QSNS" + struct.pack("<I", len(hostile[0])) + hostile[0] + b"\x00\x00")


def test_encode_refuses_unsendable_labels():
    with pytest.raises(WireFormatError):
        qsense.encode(_shadow(2, 2, wires=((0, 1), 2)))
    with pytest.raises(WireFormatError):
        qsense.encode("not a batch")


# -- fuzzing ------------------------------------------------------------------------------------------
_FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_fuzz_random_frames(frames):
    try:
        qsense.decode(frames)
    except WireFormatError:
        pass


_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=8),
                    st.binary(max_size=8))
_value = st.recursive(_scalar, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=6), c, max_size=4)),
                      max_leaves=12)


@_FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "v": st.one_of(st.just(SCHEMA_VERSION), _value), "kind": st.one_of(st.sampled_from(["shadow", "bell"]), _value),
            "source": st.one_of(st.text(max_size=5), _value), "seq": st.one_of(st.integers(-5, 2**64 - 1), _value),
            "n": st.one_of(st.integers(-2, 6), _value), "T": st.one_of(st.integers(-2, 6), _value),
            "wires": st.one_of(st.none(), st.lists(st.one_of(st.integers(-3, 8), st.text(max_size=2)), max_size=7), _value),
            "arrays": st.one_of(
                st.lists(st.tuples(st.sampled_from(["bases", "outcomes", "t", "wait", "x"]),
                                   st.sampled_from(["|u1", "<f8", "<u2", "O"]),
                                   st.lists(st.integers(-1, 7), max_size=3)), max_size=4),
                _value),
            "epoch": st.one_of(st.integers(-1, 2**64 - 1), _value),
        },
    ),
    st.lists(st.binary(max_size=64), min_size=0, max_size=5),
)
def test_fuzz_structured_headers(header, arrays):
    frames = [msgspec.msgpack.encode(header), *arrays]
    try:
        qsense.decode(frames)
    except WireFormatError:
        pass


@_FUZZ
@given(st.sampled_from(["shadow", "bell"]), st.integers(0, 6), st.integers(0, 5), st.data())
def test_fuzz_mutated_valid_messages(kind, T, n, data):
    b = _shadow(T, n) if kind == "shadow" else _bell(T, n)
    frames = [bytearray(bytes(f)) for f in qsense.encode(b, source="s", seq=3)]
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(frames) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "grow", "drop", "dup"]))
        if op == "flip" and frames[i]:
            j = data.draw(st.integers(0, len(frames[i]) - 1))
            frames[i][j] = data.draw(st.integers(0, 255))
        elif op == "cut":
            frames[i] = frames[i][: data.draw(st.integers(0, len(frames[i])))]
        elif op == "grow":
            frames[i] += data.draw(st.binary(min_size=1, max_size=16))
        elif op == "drop" and len(frames) > 1:
            frames.pop(i)
        elif op == "dup":
            frames.insert(i, bytearray(frames[i]))
    try:
        out = qsense.decode(frames)
    except WireFormatError:
        return
    # whatever decodes is a valid record: the constructors checked every value
    assert out.outcomes.max(initial=0) <= (1 if kind == "shadow" and isinstance(out, ShadowBatch) else 3)
    try:
        unpack(pack(out))
    except WireFormatError:
        pytest.fail("a decoded batch must re-encode")


@_FUZZ
@given(st.binary(max_size=300))
def test_fuzz_unpack(blob):
    for payload in (blob, b"QSNS" + blob):
        try:
            unpack(payload)
        except WireFormatError:
            pass
