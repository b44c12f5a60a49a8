"""Start-up cost: ``import qsense`` and each ``qsense`` command import only what they use.

Every check runs in a fresh interpreter and reads its ``sys.modules``: the
daemon, ZeroMQ, MQTT, PennyLane, matplotlib and Dask cost seconds of a short
command's time (``docs/benchmarks.md``, readers), so none of them may load on
the paths that do not need them.  The lazy exports of ``qsense`` must still be
the very objects of their defining modules, and numba kernels must be loaded
(from numba's cache) at their first call, never at import.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import qsense
from qsense.apps.cli import COMMANDS, requested_command

#: top-level packages that no estimate path, nor ``import qsense``, may load
HEAVY = ("zmq", "pennylane", "matplotlib", "dask", "distributed", "paho", "qiskit", "astropy", "prometheus_client")
#: qsense modules that belong to other commands or to purity only
OTHER_COMMANDS = ("qsense.streaming.daemon", "qsense.apps.daemon", "qsense.apps.demo", "qsense.apps.chain",
                  "qsense.streaming.transport", "qsense.distributed", "qsense.sims", "qsense.drivers")
PURITY = ("qsense.estimators.purity", "qsense.estimators.class_kernels")


def _modules_after(code: str) -> tuple[set[str], str]:
    """Run ``code`` in a fresh interpreter; (the modules it ended with, what it printed before)."""
    tail = "\nimport sys as _s, json as _j\nprint('@@' + _j.dumps(sorted(_s.modules)))\n"
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code) + tail], capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    out, _, mods = res.stdout.rpartition("@@")
    return set(json.loads(mods)), out


def _loaded(mods: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in mods if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_import_qsense_is_light():
    mods, _ = _modules_after("import qsense")
    assert _loaded(mods, HEAVY + ("numpy", "numba", "scipy", "pyarrow")) == []
    assert [m for m in mods if m.startswith("qsense")] == ["qsense"]


def test_help_imports_no_command():
    mods, out = _modules_after("""
        from qsense.apps.cli import main
        try:
            main(["--help"])
        except SystemExit as e:
            assert e.code == 0
    """)
    assert "estimate" in out and "daemon" in out  # every command is listed, none imported
    assert _loaded(mods, tuple(f"qsense.apps.{k}" for k in COMMANDS)) == []
    assert _loaded(mods, HEAVY + ("numpy", "numba")) == []


def test_estimate_parser_imports_only_its_module():
    mods, _ = _modules_after("from qsense.apps.cli import build_parser\nbuild_parser(['estimate'])")
    assert "qsense.apps.estimate" in mods
    assert _loaded(mods, HEAVY + OTHER_COMMANDS + PURITY + ("numba", "pyarrow")) == []
    assert _loaded(mods, tuple(f"qsense.apps.{k}" for k in COMMANDS if k != "estimate")) == []


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    """A reference text file of 3,000 random snapshots on 4 qubits, and its batch."""
    from qsense.streaming import reference

    rng = np.random.default_rng(7)
    bases, outcomes = rng.integers(0, 3, (3000, 4)), rng.integers(0, 2, (3000, 4))
    batch = qsense.ShadowBatch(bases=bases, outcomes=outcomes)
    path = tmp_path_factory.mktemp("startup") / "measurement.txt"
    reference.write_measurements(path, batch)
    return path, batch


def _fit(est, batch):
    est.update(batch)
    return est


def _values(out: str) -> list[float]:
    return [float(line.split()[-2]) for line in out.splitlines()[1:] if line.strip()]


def test_estimate_text_file_and_archive_load_no_daemon_no_purity(tmp_path, snapshots):
    """One interpreter estimates from the text file, then from an archive of the same records."""
    path, batch = snapshots
    with qsense.ArchiveWriter(tmp_path / "a") as w:
        w.append(batch.with_meta(source="s", seq=0), epoch=1)
    mods, out = _modules_after(f"""
        from qsense.apps.cli import main
        assert main(["estimate", {str(path)!r}, "-o", "XZII", "-o", "Y1 Z3", "--quiet"]) == 0
        print("@archive")
        assert main(["estimate", {str(tmp_path / 'a')!r}, "-o", "XZII", "--quiet"]) == 0
    """)
    assert _loaded(mods, HEAVY + OTHER_COMMANDS + PURITY) == []
    text_out, archive_out = out.split("@archive\n")
    # the lazy paths compute what the library computes
    want = _fit(qsense.ShadowEstimator(["XZII", "Y1 Z3"]), batch).estimate().values
    np.testing.assert_allclose(_values(text_out), want, atol=1e-6)
    assert abs(_values(archive_out)[0] - want[0]) < 1e-6


def test_estimate_with_subsystems_loads_purity_only(snapshots):
    path, batch = snapshots
    mods, out = _modules_after(f"""
        from qsense.apps.cli import main
        assert main(["estimate", {str(path)!r}, "-s", "0,1", "--quiet"]) == 0
    """)
    assert "qsense.estimators.purity" in mods
    assert _loaded(mods, HEAVY + OTHER_COMMANDS) == []
    want = float(_fit(qsense.ShadowPurity([(0, 1)]), batch).purity().values[0])
    purity_column = float(out.splitlines()[1].split()[-4])  # subsystem, purity, stderr, S2, stderr
    assert abs(purity_column - want) < 1e-6


def test_lazy_exports_are_the_defining_modules_objects():
    from qsense.estimators import bell, purity, shadow
    from qsense.streaming import archive, wire

    for name in qsense.__all__:
        obj = getattr(qsense, name)
        assert name in dir(qsense)
        home = sys.modules[qsense._EXPORTS[name].join(("qsense.", ""))]
        assert getattr(home, name) is obj, name
    assert qsense.ShadowPurity is purity.ShadowPurity and qsense.BellEstimator is bell.BellEstimator
    assert qsense.shadow_expval is shadow.shadow_expval and qsense.encode is wire.encode
    assert qsense.open_archive is archive.open_archive
    for sub in ("estimators", "packing", "pauli", "records", "streaming"):
        assert getattr(qsense, sub) is sys.modules[f"qsense.{sub}"]
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        qsense.nonsense  # noqa: B018
    # star-import and from-import in a fresh interpreter (nothing imported beforehand)
    mods, out = _modules_after("from qsense import *\nfrom qsense import sims, ShadowPurity\nprint(ShadowBatch.__module__)")
    assert out.strip() == "qsense.records" and "qsense.sims" in mods


@pytest.mark.parametrize("argv, want", [
    ([], None),
    (["--help"], None),
    (["estimate", "f.txt", "-o", "X"], "estimate"),
    (["--log-level", "DEBUG", "daemon", "c.toml"], "daemon"),
    (["--log-level=DEBUG", "watch"], "watch"),
    (["--log", "ERROR", "record"], "record"),  # argparse's unambiguous prefix of --log-level
    (["--", "replay"], "replay"),
    (["bogus"], "bogus"),
])
def test_requested_command(argv, want):
    assert requested_command(argv) == want


def test_numba_kernels_load_at_first_call_not_import():
    """Importing a module of ``@njit(cache=True)`` kernels compiles and loads none of them."""
    _, out = _modules_after("""
        import json
        from numba.core.registry import CPUDispatcher
        import qsense.estimators._jit, qsense.estimators.class_kernels, qsense.estimators._derandomize_jit
        import qsense.streaming._reference_scan, qsense.sims.pure_tree
        mods = [qsense.estimators._jit, qsense.estimators.class_kernels, qsense.estimators._derandomize_jit,
                qsense.streaming._reference_scan, qsense.sims.pure_tree]
        found = {m.__name__ + "." + k: len(v.overloads) for m in mods for k, v in vars(m).items()
                 if isinstance(v, CPUDispatcher)}
        print(json.dumps(found))
    """)
    found = json.loads(out)
    assert len(found) >= 10  # the kernels were found at all
    assert {k: n for k, n in found.items() if n} == {}
