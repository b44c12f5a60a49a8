"""The bit-packed record layout (qsense.packing): exact bits, round trips, validation, timestamps."""

from __future__ import annotations

import numpy as np
import pytest

from qsense import packing
from qsense.estimators.kernels import pack_columns

SIZES = [(0, 0), (0, 3), (5, 0), (1, 1), (63, 2), (64, 1), (65, 3), (130, 16), (1000, 5), (4096, 9), (200, 65)]


def _random_shadow(rng, T, n):
    return rng.integers(0, 3, (T, n), dtype=np.uint8), rng.integers(0, 2, (T, n), dtype=np.uint8)


@pytest.mark.parametrize("T,n", SIZES)
def test_shadow_round_trip_and_bits(T, n):
    rng = np.random.default_rng(T * 100 + n)
    bases, outcomes = _random_shadow(rng, T, n)
    planes = packing.pack_shadow(bases, outcomes)
    W = packing.n_words(T)
    assert planes.dtype == np.uint64 and planes.shape == (3, n, W)
    assert planes.nbytes == packing.packed_nbytes("shadow", T, n) == 8 * 3 * n * W
    b2, o2 = packing.unpack_shadow(planes, T)
    assert b2.dtype == o2.dtype == np.uint8 and b2.flags.c_contiguous and o2.flags.c_contiguous
    np.testing.assert_array_equal(b2, bases)
    np.testing.assert_array_equal(o2, outcomes)
    # bit r % 64 of word r // 64 is record r, per plane; padding 1, 1, 0
    bits = np.unpackbits(planes.astype("<u8").view(np.uint8), axis=-1, bitorder="little").reshape(3, n, 64 * W)
    np.testing.assert_array_equal(bits[0, :, :T], (bases & 1).T)
    np.testing.assert_array_equal(bits[1, :, :T], (bases >> 1).T)
    np.testing.assert_array_equal(bits[2, :, :T], outcomes.T)
    assert np.all(bits[0, :, T:] == 1) and np.all(bits[1, :, T:] == 1) and np.all(bits[2, :, T:] == 0)


@pytest.mark.parametrize("T,n", SIZES)
def test_bell_round_trip_and_bits(T, n):
    rng = np.random.default_rng(T * 100 + n + 1)
    codes = rng.integers(0, 4, (T, n), dtype=np.uint8)
    planes = packing.pack_bell(codes)
    W = packing.n_words(T)
    assert planes.shape == (2, n, W) and planes.nbytes == packing.packed_nbytes("bell", T, n)
    np.testing.assert_array_equal(packing.unpack_bell(planes, T), codes)
    bits = np.unpackbits(planes.astype("<u8").view(np.uint8), axis=-1, bitorder="little").reshape(2, n, 64 * W)
    np.testing.assert_array_equal(bits[0, :, :T], (codes >> 1).T)
    np.testing.assert_array_equal(bits[1, :, :T], (codes & 1).T)
    assert not bits[:, :, T:].any()


def test_planes_are_the_kernels_packing():
    """The layout is what ``kernels.pack_columns`` (packbits, little bit order) gives."""
    rng = np.random.default_rng(3)
    bases, outcomes = _random_shadow(rng, 128, 4)
    planes = packing.pack_shadow(bases, outcomes)
    np.testing.assert_array_equal(planes[2], pack_columns(np.ascontiguousarray(outcomes.T.astype(bool))))
    np.testing.assert_array_equal(planes[1], pack_columns(np.ascontiguousarray((bases == 2).T)))


def test_byte_level_layout():
    """Record r of column q is bit r % 8 of byte r // 8 of that column's words (little endian)."""
    bases = np.zeros((70, 2), np.uint8)
    outcomes = np.zeros((70, 2), np.uint8)
    bases[0, 0] = 1  # Y: b0 of record 0, column 0
    bases[9, 1] = 2  # Z: b1 of record 9, column 1
    outcomes[65, 1] = 1
    raw = packing.pack_shadow(bases, outcomes).astype("<u8").tobytes()
    assert len(raw) == 3 * 2 * 2 * 8
    plane = [raw[i * 32 : (i + 1) * 32] for i in range(3)]
    # plane 0, column 0, word 0: record 0 set, word 1: records 64..69 real (0), padding 70..127 set
    assert plane[0][0:8] == bytes([0x01, 0, 0, 0, 0, 0, 0, 0])
    assert plane[0][8:16] == bytes([0xC0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
    # plane 1, column 1, word 0: record 9 = bit 1 of byte 1
    assert plane[1][16:24] == bytes([0x00, 0x02, 0, 0, 0, 0, 0, 0])
    # plane 2, column 1, word 1: record 65 = bit 1 of byte 0; padding outcome bits 0
    assert plane[2][24:32] == bytes([0x02, 0, 0, 0, 0, 0, 0, 0])


def test_shadow_validation():
    rng = np.random.default_rng(4)
    bases, outcomes = _random_shadow(rng, 100, 3)
    good = packing.pack_shadow(bases, outcomes)
    cases = []
    bad = good.copy()
    bad[0, 1, 0] |= np.uint64(1 << 5)
    bad[1, 1, 0] |= np.uint64(1 << 5)  # record 5 of column 1: code 3
    cases.append((bad, "code 3"))
    bad = good.copy()
    bad[0, 2, 1] |= np.uint64(1 << 3)
    bad[1, 2, 1] |= np.uint64(1 << 3)  # record 67 in the last word
    cases.append((bad, "code 3"))
    bad = good.copy()
    bad[0, 0, 1] &= ~np.uint64(1 << 63)  # padding record 127 lost its b0
    cases.append((bad, "padding"))
    bad = good.copy()
    bad[2, 0, 1] |= np.uint64(1 << 40)  # padding outcome bit
    cases.append((bad, "outcome bit 0"))
    cases += [(good[:2], "shape"), (good[:, :, :1], "shape"), (good.astype(np.int64), "uint64"), (good[0], "shape")]
    for planes, msg in cases:
        with pytest.raises(ValueError, match=msg):
            packing.unpack_shadow(planes, 100)
        with pytest.raises(ValueError, match=msg):
            packing.check_shadow_planes(planes, 100)
    for T in (-1, 1.5, True, None):
        with pytest.raises(ValueError, match="T must"):
            packing.unpack_shadow(good, T)
    with pytest.raises(ValueError, match="shape"):
        packing.unpack_shadow(good, 200)
    with pytest.raises(ValueError, match="0..2"):
        packing.pack_shadow(np.full((2, 2), 3, np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        packing.pack_shadow(np.zeros((2, 2)), np.zeros((2, 2)))
    # big-endian words are accepted and read by value
    b2, _ = packing.unpack_shadow(good.astype(">u8"), 100)
    np.testing.assert_array_equal(b2, bases)


def test_bell_validation():
    codes = np.random.default_rng(5).integers(0, 4, (70, 2), dtype=np.uint8)
    good = packing.pack_bell(codes)
    for plane in (0, 1):
        bad = good.copy()
        bad[plane, 1, 1] |= np.uint64(1 << 6)  # record 70: padding
        with pytest.raises(ValueError, match="padding"):
            packing.unpack_bell(bad, 70)
    with pytest.raises(ValueError, match="shape"):
        packing.unpack_bell(good[:1], 70)
    with pytest.raises(ValueError, match="0..3"):
        packing.pack_bell(np.full((1, 1), 4, np.uint8))
    assert packing.check_bell_planes(packing.pack_bell(codes[:64]), 64).shape == (2, 2, 1)


def test_valid_words_and_sizes():
    np.testing.assert_array_equal(packing.valid_words(0), np.zeros(0, np.uint64))
    np.testing.assert_array_equal(packing.valid_words(64), [np.uint64(2**64 - 1)])
    np.testing.assert_array_equal(packing.valid_words(66), [np.uint64(2**64 - 1), np.uint64(3)])
    assert packing.packed_nbytes("shadow", 65536, 16) == 65536 * 16 * 3 // 8
    assert packing.packed_nbytes("bell", 1, 1) == 16
    with pytest.raises(ValueError, match="kind"):
        packing.packed_nbytes("nope", 1, 1)


@pytest.mark.parametrize(
    "t,regular",
    [
        (np.zeros(1000), True),
        (np.full(1000, 12.5), True),
        (1.7e9 + np.arange(1000) * 1e-6, True),  # a clock: start + i * period in float64
        (100.0 + 0.1 * np.arange(777), True),
        (np.arange(5.0), True),
        (np.array([3.0]), True),
        (np.zeros(0), True),
        (np.sort(np.random.default_rng(6).random(1000)), False),
        (np.full(10, -0.0), False),  # -0.0 + 0.0 is +0.0: not bit-exact, so stored raw
        (np.array([0.0, 1.0, 2.0, 3.0000000000000004]), False),
    ],
)
def test_times_are_lossless(t, regular):
    t0, dt, raw = packing.encode_times(t)
    assert (raw is None) == regular
    back = packing.decode_times(len(t), t0, dt, raw)
    assert back.dtype == np.float64 and back.shape == t.shape
    assert np.array_equal(back.view(np.uint64), t.view(np.uint64))


def test_decode_times_checks_raw():
    with pytest.raises(ValueError, match="shape"):
        packing.decode_times(3, 0.0, 0.0, np.zeros(2))
    with pytest.raises(ValueError, match="1-D"):
        packing.encode_times(np.zeros((2, 2)))
