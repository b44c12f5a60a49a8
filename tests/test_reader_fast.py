"""The compiled reader of reference measurement files: same snapshots as the token
reader on every accepted layout, one-line errors naming the line on hostile files."""

from __future__ import annotations

import numpy as np
import pytest
from peer_data import reference_dir

import qsense
from qsense.apps.cli import main
from qsense.streaming import reference
from qsense.streaming.reference_fast import MeasurementFileError, read_measurements, read_measurements_tokens


def _text(rng, bases, outcomes, style: str) -> bytes:
    """A measurement file for these tables in one of several legal layouts."""
    T, n = bases.shape
    eol = "\r\n" if style == "crlf" else "\n"
    lines = [f"{n}"]
    for t in range(T):
        toks = []
        for q in range(n):
            s = "-1" if outcomes[t, q] else ("+1" if style == "plus" and rng.random() < 0.5 else "1")
            toks.append(f"{'XYZ'[bases[t, q]]}{' ' if style != 'spaces' else ' ' * int(rng.integers(1, 4))}{s}")
        sep = "\t" if style == "tabs" else " "
        line = sep.join(toks)
        if style in ("trailing", "spaces"):
            line = " " * int(rng.integers(0, 3)) + line + " " * int(rng.integers(0, 4))
        lines.append(line)
        if style == "empty" and rng.random() < 0.2:
            lines.append(" " * int(rng.integers(0, 3)))
    body = eol.join(lines)
    return (body + ("" if style == "no-final-newline" else eol)).encode()


STYLES = ["plain", "plus", "crlf", "trailing", "spaces", "tabs", "empty", "no-final-newline"]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("T,n", [(1, 1), (63, 3), (64, 5), (1000, 7), (129, 70)])
def test_fast_reader_equals_token_reader(tmp_path, style, T, n):
    rng = np.random.default_rng(T * 100 + n + len(style))
    bases = rng.integers(0, 3, (T, n), dtype=np.uint8)
    outcomes = rng.integers(0, 2, (T, n), dtype=np.uint8)
    p = tmp_path / "m.txt"
    p.write_bytes(_text(rng, bases, outcomes, style))
    ref = read_measurements_tokens(p)
    np.testing.assert_array_equal(ref.bases, bases)
    np.testing.assert_array_equal(ref.outcomes, outcomes)
    # tiny chunks put chunk boundaries inside tokens and lines
    for chunk in (1 << 24, 97, 1):
        got = read_measurements(p, chunk_bytes=chunk)
        assert got.T == T and got.n == n and got.has_packed
        np.testing.assert_array_equal(got.packed(), qsense.ShadowBatch(bases, outcomes).packed())
        np.testing.assert_array_equal(got.bases, bases)
        np.testing.assert_array_equal(got.outcomes, outcomes)


def test_reference_writer_round_trip_and_header_only(tmp_path):
    rng = np.random.default_rng(0)
    b = qsense.ShadowBatch(rng.integers(0, 3, (3000, 9), dtype=np.uint8), rng.integers(0, 2, (3000, 9), dtype=np.uint8))
    reference.write_measurements(tmp_path / "w.txt", b)
    got = read_measurements(tmp_path / "w.txt", wires=tuple("abcdefghi"), source="lab")
    np.testing.assert_array_equal(got.bases, b.bases)
    np.testing.assert_array_equal(got.outcomes, b.outcomes)
    assert got.wires == tuple("abcdefghi") and got.source == "lab"
    (tmp_path / "h.txt").write_bytes(b"\n  \n4\r\n\n")
    empty = read_measurements(tmp_path / "h.txt")
    assert empty.T == 0 and empty.n == 4


def test_reproduces_the_reference_program_on_its_own_data():
    """Huang's measurement.txt (20,000 snapshots) read by the fast reader gives the
    reference C++ program's matched-ratio values (its recorded output)."""
    REF = reference_dir("huang2020")
    data = read_measurements(REF / "measurement.txt")
    assert data.T == 20000 and data.n == 10
    old = read_measurements_tokens(REF / "measurement.txt")
    np.testing.assert_array_equal(data.bases, old.bases)
    _, obs = reference.read_observables(REF / "observables.txt")
    expected = np.loadtxt(REF / "expected_observables.txt")
    np.testing.assert_allclose(qsense.matched_ratio_expval(data, obs), expected, atol=1e-6, rtol=0)


HOSTILE = [
    (b"3\nX 1 Y 1 Z 1\nX 1 Q 1 Z 1\n", r"line 3, column 5: unknown basis letter 'Q'"),
    (b"3\nX 1 Y 1 Z 1\nX 1 Y 1\n", r"line 3: 4 tokens \(2 basis, outcome pairs\); n=3 needs 6"),
    (b"3\nX 1 Y 1 Z 1 X -1\n", r"line 2, column 13: more than 6 tokens \(n=3"),
    (b"2\nX 1 Y 2\n", r"line 2, column 7: outcome must be 1 or -1 \(or \+1\); got '2'"),
    (b"2\nX 1 Y 11\n", r"line 2, column 7: outcome must be 1 or -1 \(or \+1\); got '11'"),
    (b"2\nX 1 Y -1.0\n", r"line 2, column 7: outcome must be 1 or -1 \(or \+1\); got '-1.0'"),
    (b"2\nX 1 Y\n", r"line 2, column 6: a basis letter without its outcome \(an odd number of tokens\)"),
    (b"2\nXY 1 Z 1\n", r"line 2, column 2: unknown basis letter"),
    (b"2\nx 1 z 1\n", r"line 2, column 1: unknown basis letter.*'x'"),
    (b"2\n\n\nX 1 Z 1\n\x00\x93\xff junk\n", r"line 5, column 1: .*byte 0x00"),
    (b"\x89PNG\r\n\x1a\n", r"line 1: the first line must be the number of qubits"),
    (b"two\nX 1\n", r"line 1: the first line must be the number of qubits; got 'two'"),
    (b"0\n", r"line 1: number of qubits must be positive"),
    (b"-3\nX 1\n", r"line 1: number of qubits must be positive"),
    (b"1000000000000\nX 1\n", r"line 1: 1000000000000 qubits; the limit is 4096"),
    (b" 3 \r\n\x00\n", r"line 2, column 1: unknown basis letter byte 0x00"),
    (b"", r"empty file"),
    (b"\n \n\t\n", r"empty file"),
    (b"1\nX 1\nX\xe2\x88\x921\n", r"line 3, column 2: unknown basis letter byte 0xe2"),
]


@pytest.mark.parametrize("content,message", HOSTILE)
def test_hostile_files_give_one_line_errors_naming_the_line(tmp_path, content, message):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    for chunk in (1 << 24, 5):
        with pytest.raises(MeasurementFileError, match=message) as e:
            read_measurements(p, chunk_bytes=chunk)
        assert "\n" not in str(e.value) and str(e.value).startswith(str(p))
    assert issubclass(MeasurementFileError, ValueError)


def test_huge_lines(tmp_path):
    p = tmp_path / "huge.txt"
    # one line of 2 MB of blanks between two tokens: legal, and longer than a small chunk
    p.write_bytes(b"2\nX 1" + b" " * (2 << 20) + b"Z -1\nY 1 Y 1\n")
    with pytest.raises(MeasurementFileError, match=r"line 2: longer than \d+ bytes"):
        read_measurements(p, chunk_bytes=1 << 16)
    got = read_measurements(p, chunk_bytes=4 << 20)
    assert got.T == 2 and got.bases.tolist() == [[0, 2], [1, 1]] and got.outcomes.tolist() == [[0, 1], [0, 0]]
    # a line of junk far longer than any line n=3 allows is refused at its first byte
    p.write_bytes(b"3\n" + b"A" * (3 << 20) + b"\n")
    with pytest.raises(MeasurementFileError, match=r"line 2, column 1: unknown basis letter"):
        read_measurements(p)


def test_cli_reads_with_the_fast_reader_and_exits_2_on_bad_files(tmp_path, capsys):
    rng = np.random.default_rng(4)
    b = qsense.ShadowBatch(rng.integers(0, 3, (5000, 4), dtype=np.uint8), rng.integers(0, 2, (5000, 4), dtype=np.uint8))
    p = tmp_path / "m.txt"
    p.write_bytes(_text(rng, b.bases, b.outcomes, "crlf"))
    assert main(["estimate", str(p), "-o", "X0 Z1", "-o", "Y3", "--method", "matched"]) == 0
    out = capsys.readouterr().out.splitlines()
    want = qsense.matched_ratio_expval(b, ["X0 Z1", "Y3"])
    got = [float(line.split()[-2]) for line in out[1:]]
    np.testing.assert_allclose(got, want, atol=5e-7)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"4\nX 1 Y 1 Z 1 X 1\nX 1 Y 1 Z 1 W 1\n")
    assert main(["estimate", str(bad), "-o", "X0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 3, column 13" in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("threads", [2, 3, 7])
def test_parallel_parts_join_exactly_and_report_file_line_numbers(tmp_path, monkeypatch, threads):
    """Bodies split over threads (forced here with a tiny part size): parts whose
    snapshot counts are not multiples of 64 join by word shifts to the same planes,
    and an error in a later part names its line in the whole file."""
    import qsense.streaming.reference_fast as RF

    monkeypatch.setattr(RF, "PARALLEL_BYTES", 200)
    rng = np.random.default_rng(threads)
    T, n = 997, 5
    bases = rng.integers(0, 3, (T, n), dtype=np.uint8)
    outcomes = rng.integers(0, 2, (T, n), dtype=np.uint8)
    p = tmp_path / "m.txt"
    p.write_bytes(_text(rng, bases, outcomes, "empty"))
    got = read_measurements(p, threads=threads, chunk_bytes=333)
    np.testing.assert_array_equal(got.packed(), qsense.ShadowBatch(bases, outcomes).packed())
    lines = p.read_bytes().split(b"\n")
    bad = len(lines) * 3 // 4  # a line in a later part (0-based index)
    while not lines[bad].strip():
        bad += 1
    lines[bad] = lines[bad].replace(b"Z", b"W", 1).replace(b"X", b"W", 1).replace(b"Y", b"W", 1)
    p.write_bytes(b"\n".join(lines))
    with pytest.raises(MeasurementFileError, match=rf"line {bad + 1}, column \d+: unknown basis letter"):
        read_measurements(p, threads=threads)
    with pytest.raises(MeasurementFileError, match=rf"line {bad + 1}, column \d+: unknown basis letter"):
        read_measurements(p, threads=1)
