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
from qsense import BellBatch, ShadowBatch, WireFormatError, packing
from qsense.streaming.wire import (
    MAX_HEADER_BYTES,
    MAX_RECORDS,
    SCHEMA_VERSION,
    SCHEMA_VERSIONS,
    decode_message,
    pack,
    unpack,
)

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
def _same_batch(out, b):
    assert type(out) is type(b) and out.source == b.source and out.seq == b.seq and out.wires == b.wires
    np.testing.assert_array_equal(out.outcomes, b.outcomes)
    assert np.array_equal(out.t.view(np.uint64), b.t.view(np.uint64))  # bit for bit
    if isinstance(b, ShadowBatch):
        np.testing.assert_array_equal(out.bases, b.bases)
    else:
        assert np.array_equal(out.wait.view(np.uint64), b.wait.view(np.uint64))


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("make", [_shadow, _bell])
@pytest.mark.parametrize("T, n", [(7, 5), (0, 3), (1, 0), (0, 0), (64, 1), (1000, 16), (130, 65)])
def test_roundtrip(make, T, n, packed):
    b = make(T, n, source="src-1", seq=41)
    frames = qsense.encode(b, packed=packed)
    assert _header(frames)["v"] == (2 if packed else 1)
    out = qsense.decode(frames)
    _same_batch(out, b)
    # the single-blob form used over MQTT carries the same
    _same_batch(unpack(pack(b, packed=packed)), b)


def test_schema_versions():
    assert SCHEMA_VERSION == 2 and SCHEMA_VERSIONS == (1, 2)
    assert _header(qsense.encode(_shadow()))["v"] == SCHEMA_VERSION


@pytest.mark.parametrize("make", [_shadow, _bell])
@pytest.mark.parametrize("T", [1, 63, 64, 65, 1000, 4096])
def test_v2_timestamps_cost_nothing_when_regular(make, T):
    """Regular, constant or absent timestamps (and zero waits) travel as header floats;
    irregular ones as a raw float64 frame; both decode bit for bit."""
    rng = np.random.default_rng(T)
    kinds = {
        "regular": 1.7e9 + np.arange(T) * 1e-6, "zeros": np.zeros(T), "constant": np.full(T, 3.25),
        "random": np.sort(rng.random(T)),
    }
    for name, t in kinds.items():
        b = make(T, 4).with_meta(t=t, **({"wait": np.zeros(T)} if make is _bell else {}))
        frames = qsense.encode(b)
        names = [a[0] for a in _header(frames)["arrays"]]
        raw = name == "random" and T > 1
        assert names == (["planes", "t"] if raw else ["planes"]), (name, names)
        _same_batch(qsense.decode(frames), b)
    if make is _bell:
        b = make(T, 4)  # random waits: a raw wait frame
        frames = qsense.encode(b)
        assert [a[0] for a in _header(frames)["arrays"]] == (["planes", "t", "wait"] if T > 1 else ["planes"])
        _same_batch(qsense.decode(frames), b)


def test_v2_decodes_to_a_packed_batch_that_counts_without_unpacking():
    b = _shadow(640, 16)
    frames = qsense.encode(b)
    out = qsense.decode(frames)
    assert out.has_packed and not out.has_tables
    assert np.shares_memory(out.packed(), np.frombuffer(frames[1], np.uint8))  # a view on the frame
    assert not out.packed().flags.writeable
    est = qsense.ShadowEstimator(["X0 Z1", "Y3"])
    est.update(out)
    assert not out.has_tables
    ref = qsense.ShadowEstimator(["X0 Z1", "Y3"])
    ref.update(b)
    np.testing.assert_array_equal(est.estimate().values, ref.estimate().values)
    # an unaligned frame (as in a blob after a header of any length) is copied once, aligned
    buf = bytearray(len(frames[1]) + 1)
    buf[1:] = bytes(frames[1])
    out2 = qsense.decode([frames[0], memoryview(buf)[1:], frames[2]])
    assert out2.packed().ctypes.data % 8 == 0
    np.testing.assert_array_equal(out2.bases, b.bases)


def test_v1_messages_still_decode():
    """Frames written by the v1 encoder (the layout before v2) decode unchanged."""
    b = _bell(50, 3, source="old", seq=4)
    v1 = [bytes(f) for f in qsense.encode(b, packed=False)]
    assert _header(v1)["v"] == 1 and [a[0] for a in _header(v1)["arrays"]] == ["outcomes", "t", "wait"]
    _same_batch(qsense.decode(v1), b)
    _same_batch(unpack(pack(b, packed=False)), b)


def test_wire_labels_source_seq_epoch_overrides():
    b = _shadow(3, 3, wires=("a", 7, "c"))
    m = decode_message(qsense.encode(b, source="other", seq=2**62, epoch=99))
    assert m.batch.wires == ("a", 7, "c") and m.batch.source == "other" and m.batch.seq == 2**62 and m.epoch == 99
    assert _header(qsense.encode(_shadow()))["wires"] is None  # default labels are not spelled out


def test_frames_are_zero_copy_views_and_decoded_arrays_are_views():
    b = _shadow(2000, 16)
    frames = qsense.encode(b)
    assert isinstance(frames[0], bytes) and all(isinstance(f, memoryview) for f in frames[1:])
    assert np.shares_memory(np.frombuffer(frames[1], np.uint8), b.packed())  # v2: the cached planes
    assert np.shares_memory(np.frombuffer(frames[2], np.uint8), b.t)
    frames = qsense.encode(b, packed=False)
    assert isinstance(frames[0], bytes) and all(isinstance(f, memoryview) for f in frames[1:])
    assert np.shares_memory(np.frombuffer(frames[1], np.uint8), b.bases)
    assert np.shares_memory(np.frombuffer(frames[2], np.uint8), b.outcomes)
    out = qsense.decode(frames)
    assert np.shares_memory(out.bases, b.bases)  # decoding copies nothing either
    assert not out.bases.flags.writeable


def test_header_is_small_and_versioned():
    b = _shadow(10, 16, source="telescope-array", seq=12)
    frames = qsense.encode(b, packed=False)
    h = _header(frames)
    assert h["v"] == 1 and h["kind"] == "shadow" and h["T"] == 10 and h["n"] == 16
    assert h["arrays"] == [["bases", "|u1", [10, 16]], ["outcomes", "|u1", [10, 16]], ["t", "<f8", [10]]]
    assert len(frames[0]) < 150
    frames = qsense.encode(b)
    h = _header(frames)
    assert h["v"] == 2 and h["arrays"] == [["planes", "<u8", [3, 16, 1]], ["t", "<f8", [10]]]
    assert len(frames[0]) < 200
    frames = qsense.encode(_bell(130, 4))
    assert _header(frames)["arrays"] == [["planes", "<u8", [2, 4, 3]], ["t", "<f8", [130]], ["wait", "<f8", [130]]]


def test_bytes_per_snapshot():
    """n = 16, T = 65,536: v1 40 bytes per snapshot; v2 6 with regular timestamps
    (6.7x fewer), 14 with irregular ones (2.9x fewer)."""
    T, n = 65536, 16
    rng = np.random.default_rng(1)
    b = ShadowBatch(rng.integers(0, 3, (T, n)), rng.integers(0, 2, (T, n)), t=1.7e9 + np.arange(T) * 1e-6)
    size = {}
    for name, batch in (("regular", b), ("random", b.with_meta(t=np.sort(rng.random(T))))):
        for packed in (False, True):
            size[name, packed] = len(pack(batch, packed=packed)) / T
    assert 40 < size["regular", False] == size["random", False] < 40.01
    assert 6 < size["regular", True] < 6.01 and 14 < size["random", True] < 14.01


def test_byte_level_example_in_docs_is_exact():
    """docs/wire-format.md shows this exact header; keep them in sync."""
    b = ShadowBatch([[0, 2], [1, 1]], [[0, 1], [1, 0]], source="det", seq=7, t=[0.5, 1.0])
    frames = qsense.encode(b, epoch=1, packed=False)
    assert bytes(frames[0]).hex(" ") == (
        "89 a1 76 01 a4 6b 69 6e 64 a6 73 68 61 64 6f 77 a6 73 6f 75 72 63 65 a3 64 65 74 a3 73 65 71 07 "
        "a1 6e 02 a1 54 02 a5 77 69 72 65 73 c0 a6 61 72 72 61 79 73 93 93 a5 62 61 73 65 73 a3 7c 75 31 "
        "92 02 02 93 a8 6f 75 74 63 6f 6d 65 73 a3 7c 75 31 92 02 02 93 a1 74 a3 3c 66 38 91 02 a5 65 70 "
        "6f 63 68 01"
    )
    assert [bytes(f).hex(" ") for f in frames[1:]] == [
        "00 02 01 01", "00 01 01 00", "00 00 00 00 00 00 e0 3f 00 00 00 00 00 00 f0 3f",
    ]


def test_v2_byte_level_example_in_docs_is_exact():
    """docs/wire-format.md's v2 example: the same batch, bit planes and t0/dt."""
    b = ShadowBatch([[0, 2], [1, 1]], [[0, 1], [1, 0]], source="det", seq=7, t=[0.5, 1.0])
    frames = qsense.encode(b, epoch=1)
    assert bytes(frames[0]).hex(" ") == (
        "8b a1 76 02 a4 6b 69 6e 64 a6 73 68 61 64 6f 77 a6 73 6f 75 72 63 65 a3 64 65 74 a3 73 65 71 07 "
        "a1 6e 02 a1 54 02 a5 77 69 72 65 73 c0 a6 61 72 72 61 79 73 91 93 a6 70 6c 61 6e 65 73 a3 3c 75 "
        "38 93 03 02 01 a5 65 70 6f 63 68 01 a2 74 30 cb 3f e0 00 00 00 00 00 00 a2 64 74 cb 3f e0 00 00 "
        "00 00 00 00"
    )
    assert len(frames) == 2 and bytes(frames[1]).hex(" ") == (
        "fe ff ff ff ff ff ff ff  fe ff ff ff ff ff ff ff  fc ff ff ff ff ff ff ff  fd ff ff ff ff ff ff ff  "
        "02 00 00 00 00 00 00 00  01 00 00 00 00 00 00 00"
    ).replace("  ", " ")
    assert len(pack(b, epoch=1)) == 8 + len(frames[0]) + 48


# -- validation -------------------------------------------------------------------------------------
def _bad(frames, reason):
    with pytest.raises(WireFormatError) as info:
        qsense.decode(frames)
    assert info.value.reason == reason, str(info.value)
    return info.value


def test_rejections_with_reasons():
    f = qsense.encode(_shadow(4, 3), packed=False)
    _bad([], "frames")
    _bad(f[:-1], "frames")
    _bad([*f, b""], "frames")
    _bad([b"", *f[1:]], "header")
    _bad([b"\xc1", *f[1:]], "header")
    _bad(_reheader(f, v=3), "version")
    _bad(_reheader(f, v=0), "version")
    _bad(_reheader(f, v=2), "layout")  # v1 arrays under a v2 header
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
    fb = qsense.encode(_bell(3, 2), packed=False)
    _bad([fb[0], bytes([4]) + bytes(fb[1])[1:], fb[2], fb[3]], "values")  # Bell code 4
    _bad([fb[0], fb[1], fb[2], np.array([-1.0, 0, 0]).tobytes()], "values")  # negative wait


def _planes_frame(frames, change):
    words = np.frombuffer(bytes(frames[1]), dtype="<u8").copy()
    change(words)
    return [frames[0], words.tobytes(), *frames[2:]]


def test_v2_rejections_with_reasons():
    f = qsense.encode(_shadow(100, 3))  # planes (3, 3, 2) and a raw t frame
    assert [a[0] for a in _header(f)["arrays"]] == ["planes", "t"]
    _bad(_reheader(f, v=3), "version")
    _bad(_reheader(f, v=1), "layout")  # v2 arrays under a v1 header
    h = _header(f)
    for arrays in (
        [["planes", "<u8", [3, 3, 3]], h["arrays"][1]],  # wrong W
        [["planes", "<u8", [2, 3, 2]], h["arrays"][1]],  # Bell's plane count
        [["planes", "<u8", [3, 4, 2]], h["arrays"][1]],  # wrong n
        [["planes", "|u1", [3, 3, 2]], h["arrays"][1]],
        [["bases", "<u8", [3, 3, 2]], h["arrays"][1]],
        [h["arrays"][1], h["arrays"][0]],  # planes not first
        [],
        [h["arrays"][0], ["wait", "<f8", [100]]],  # shadows have no waits
        [h["arrays"][0], ["t", "<f8", [99]]],
        [h["arrays"][0], h["arrays"][1], h["arrays"][1]],  # t twice
    ):
        _bad([msgspec.msgpack.encode({**h, "arrays": arrays}), *f[1:]], "layout")
    _bad(_reheader(f, t0=1.0), "layout")  # raw t and t0/dt at once
    _bad(_reheader(f, wait0=1.0), "layout")  # a shadow with waits
    _bad([f[0], bytes(f[1])[:-1], f[2]], "size")  # planes frame one byte short
    _bad([f[0], bytes(f[1]) + b"\0", f[2]], "size")
    _bad([f[0], f[1], bytes(f[2])[:-1]], "size")
    _bad(f[:2], "frames")
    # planes content: padding bits and basis code 3
    _bad(_planes_frame(f, lambda w: w.__setitem__(1, w[1] & np.uint64(2**63 - 1))), "values")  # padding b0 cleared
    _bad(_planes_frame(f, lambda w: w.__setitem__(13, w[13] | np.uint64(1 << 50))), "values")  # padding outcome set
    code3 = np.uint64(1 << 7)
    _bad(_planes_frame(f, lambda w: (w.__setitem__(2, w[2] | code3), w.__setitem__(8, w[8] | code3))), "values")
    _bad([f[0], f[1], np.full(100, np.nan).tobytes()], "values")  # raw timestamps
    # regular timestamps: header floats, validated
    g = qsense.encode(_shadow(100, 3).with_meta(t=np.arange(100.0)))
    assert [a[0] for a in _header(g)["arrays"]] == ["planes"] and _header(g)["dt"] == 1.0
    for field in ("t0", "dt"):
        for value in (float("nan"), float("inf"), -float("inf")):
            _bad(_reheader(g, **{field: value}), "values")
        _bad(_reheader(g, **{field: "soon"}), "header")
    _bad(_reheader(g, dt=1e307), "values")  # finite fields, 99e307 overflows to inf
    bell = qsense.encode(_bell(70, 2).with_meta(wait=np.zeros(70)))
    assert [a[0] for a in _header(bell)["arrays"]] == ["planes", "t"]
    _bad(_reheader(bell, dwait=-1.0), "values")  # negative waits
    _bad(_reheader(bell, wait0=float("nan")), "values")
    _bad(_planes_frame(bell, lambda w: w.__setitem__(1, w[1] | np.uint64(1 << 63))), "values")  # Bell padding
    # n = 0 must send raw timestamps: T is otherwise not bounded by any frame
    e = qsense.encode(_shadow(5, 0))
    assert [a[0] for a in _header(e)["arrays"]] == ["planes", "t"]
    _bad([msgspec.msgpack.encode({**_header(e), "arrays": _header(e)["arrays"][:1]}), e[1]], "layout")


def test_v2_hostile_header_allocates_nothing():
    """Huge declared n and T with tiny frames: refused on the frame sizes, nothing allocated."""
    f = qsense.encode(_shadow(1, 1).with_meta(t=np.zeros(1)))
    h = _header(f)
    W = packing.n_words(MAX_RECORDS)
    h.update(T=MAX_RECORDS, n=4096, arrays=[["planes", "<u8", [3, 4096, W]]], dt=1.0)
    hostile = [msgspec.msgpack.encode(h), b"\x00" * 24]
    tracemalloc.start()
    try:
        _bad(hostile, "size")
        with pytest.raises(WireFormatError):
            unpack(b"QSNS" + struct.pack("<I", len(hostile[0])) + hostile[0] + b"\x00" * 24)
        h.update(n=0, arrays=[["planes", "<u8", [3, 0, W]]])  # no planes to bound T
        _bad([msgspec.msgpack.encode(h), b""], "layout")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_wire_format_error_is_a_value_error():
    assert issubclass(WireFormatError, ValueError)
    assert qsense.WireFormatError is WireFormatError


def test_hostile_header_allocates_nothing():
    """A header claiming 16 M records x 4096 qubits with tiny frames costs nothing."""
    f = qsense.encode(_shadow(1, 1), packed=False)
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
            "v": st.one_of(st.sampled_from(SCHEMA_VERSIONS), _value),
            "kind": st.one_of(st.sampled_from(["shadow", "bell"]), _value),
            "source": st.one_of(st.text(max_size=5), _value), "seq": st.one_of(st.integers(-5, 2**64 - 1), _value),
            "n": st.one_of(st.integers(-2, 6), _value), "T": st.one_of(st.integers(-2, 6), _value),
            "wires": st.one_of(st.none(), st.lists(st.one_of(st.integers(-3, 8), st.text(max_size=2)), max_size=7), _value),
            "arrays": st.one_of(
                st.lists(st.tuples(st.sampled_from(["bases", "outcomes", "t", "wait", "planes", "x"]),
                                   st.sampled_from(["|u1", "<f8", "<u8", "<u2", "O"]),
                                   st.lists(st.integers(-1, 7), max_size=3)), max_size=4),
                _value),
            "epoch": st.one_of(st.integers(-1, 2**64 - 1), _value),
            "t0": st.one_of(st.floats(), _value), "dt": st.one_of(st.floats(), _value),
            "wait0": st.one_of(st.floats(), _value), "dwait": st.one_of(st.floats(), _value),
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
@given(st.sampled_from(["shadow", "bell"]), st.integers(0, 70), st.integers(0, 5), st.booleans(), st.data())
def test_fuzz_mutated_valid_messages(kind, T, n, packed, data):
    b = _shadow(T, n) if kind == "shadow" else _bell(T, n)
    frames = [bytearray(bytes(f)) for f in qsense.encode(b, source="s", seq=3, packed=packed)]
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
        unpack(pack(out, packed=False))
    except WireFormatError:
        pytest.fail("a decoded batch must re-encode")


@_FUZZ
@given(st.sampled_from(["shadow", "bell"]), st.integers(1, 200), st.integers(1, 4), st.data())
def test_fuzz_random_bytes_in_v2_frames(kind, T, n, data):
    """Random bytes of the right length in the planes (and raw series) frames: either a
    valid batch (every table value in range, planes re-packing to the same words) or a
    WireFormatError about the values, never another exception."""
    b = _shadow(T, n) if kind == "shadow" else _bell(T, n)
    frames = qsense.encode(b)
    new = [frames[0]]
    for f in frames[1:]:
        size = len(f)
        new.append(data.draw(st.one_of(st.binary(min_size=size, max_size=size),
                                       st.just(bytes(f)), st.just(b"\xff" * size), st.just(b"\x00" * size))))
    try:
        out = qsense.decode(new)
    except WireFormatError as exc:
        assert exc.reason == "values", str(exc)
        return
    if isinstance(out, ShadowBatch):
        assert out.bases.max() <= 2 and out.outcomes.max() <= 1
        assert np.array_equal(packing.pack_shadow(out.bases, out.outcomes), out.packed())
    else:
        assert out.outcomes.max() <= 3
        assert np.array_equal(packing.pack_bell(out.outcomes), out.packed())
    assert np.all(np.isfinite(out.t))


@_FUZZ
@given(st.binary(max_size=300))
def test_fuzz_unpack(blob):
    for payload in (blob, b"QSNS" + blob):
        try:
            unpack(payload)
        except WireFormatError:
            pass
