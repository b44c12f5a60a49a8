"""The ``qsense`` command line: help for every command, offline estimation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from peer_data import reference_dir

from qsense.apps.cli import COMMANDS, build_parser, main


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "qsense", "--help"], capture_output=True, text=True, check=True).stdout
    # every registered sub-command is importable and listed
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(COMMANDS)
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_help(name, capsys):
    parser = build_parser()
    if name not in parser._subparsers._group_actions[0].choices:
        pytest.fail(f"sub-command {name} is not available")
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert "usage: qsense" in capsys.readouterr().out


def test_estimate_reference_files(capsys):
    REF = reference_dir("huang2020")
    rc = main([
        "estimate", str(REF / "measurement.txt"), "--observables-file", str(REF / "observables.txt"),
        "--method", "matched", "-s", "0,1", "-s", "1,2",
    ])
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    expected = np.loadtxt(REF / "expected_observables.txt")
    values = [float(line.split()[-2]) for line in out[1:17]]
    np.testing.assert_allclose(values, expected, atol=1e-6)
    assert out[17].startswith("subsystem")
    s2 = [float(line.split()[-2]) for line in out[18:20]]
    assert abs(s2[0]) < 0.1 and abs(s2[1] - 2) < 0.1


def test_estimate_npz_and_errors(tmp_path, capsys):
    rng = np.random.default_rng(0)
    p = tmp_path / "s.npz"
    np.savez(p, bases=rng.integers(0, 3, (100, 2)), outcomes=rng.integers(0, 2, (100, 2)))
    assert main(["estimate", str(p), "-o", "XZ", "-o", "Y1"]) == 0
    assert "XZ" in capsys.readouterr().out
    np.savez(p, bases=rng.integers(0, 3, (100, 2)))
    # bad input is one line on stderr and exit status 2, never a traceback
    assert main(["estimate", str(p), "-o", "XZ"]) == 2
    err = capsys.readouterr().err
    assert "an .npz needs" in err and "outcomes" in err and len(err.strip().splitlines()) == 1


def test_estimate_npz_with_pennylane_names_and_bell_records(tmp_path, capsys):
    import numpy as np

    from qsense import sims
    from qsense.apps.cli import main

    shadow = sims.sample_shadows(sims.ghz_state(3), 4000, seed=1)
    np.savez(tmp_path / "pl.npz", recipes=shadow.bases, bits=shadow.outcomes)  # qml.ClassicalShadow's names
    assert main(["estimate", str(tmp_path / "pl.npz"), "-o", "XXX"]) == 0
    out = capsys.readouterr().out
    est = qsense_estimate_value(out, "XXX")
    assert abs(est - 1.0) < 0.3
    bell = sims.sample_bell(sims.ghz_state(2), 2000, seed=2)
    np.savez(tmp_path / "bell.npz", bell=bell.outcomes)
    assert main(["estimate", str(tmp_path / "bell.npz"), "-o", "XX", "-s", "0"]) == 0
    out = capsys.readouterr().out
    assert "tr(P rho)^2 XX" in out and "purity [0]" in out and "purity all" in out
    np.savez(tmp_path / "bad.npz", foo=np.zeros(3))
    assert main(["estimate", str(tmp_path / "bad.npz"), "-o", "X"]) == 2
    err = capsys.readouterr().err
    assert "'recipes' and 'bits'" in err and "Traceback" not in err


def qsense_estimate_value(out: str, label: str) -> float:
    line = next(ln for ln in out.splitlines() if ln.split()[:1] == [label])
    return float(line.split()[1])
