"""The package layout: one import name, layers that hold, plugins found by entry point.

* An installed qsense adds exactly one import name, ``qsense``: ``sims`` and
  ``drivers`` (names of unrelated projects on the package index) are not
  importable from outside the repository, ``qsense.sims`` and
  ``qsense.drivers`` are.
* Every package folder is listed in ``pyproject.toml`` (a folder left out
  would be missing from a wheel while an editable install hides it).
* The layer contract passes import-linter, and a deliberately wrong import
  breaks it with the offending line named.
* Drivers, backends and memories are discovered through entry points; an
  unknown name is refused with the installed names; nothing in the package
  loads a module from an import string.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from qsense import plugins

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _outside_repo(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter whose working directory and path
    hold nothing of the repository (as a user's script elsewhere would)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_installed_import_names(tmp_path):
    code = (
        "import importlib.util as u, json\n"
        "from qsense import sims, drivers\n"
        "import qsense.drivers.telescope, qsense.sims.samplers\n"
        "print(json.dumps({'sims': u.find_spec('sims') is not None, 'drivers': u.find_spec('drivers') is not None,"
        " 'qsims': sims.__name__, 'qdrivers': drivers.__name__}))\n"
    )
    res = _outside_repo(code, tmp_path)
    assert res.returncode == 0, res.stderr
    import json

    got = json.loads(res.stdout)
    assert got == {"sims": False, "drivers": False, "qsims": "qsense.sims", "qdrivers": "qsense.drivers"}
    res = _outside_repo("import sims", tmp_path)
    assert res.returncode != 0 and "No module named 'sims'" in res.stderr


def test_importing_the_core_loads_no_sims_or_drivers(tmp_path):
    core = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for sub in ("estimators", "acquisition", "streaming")
        for p in (ROOT / "qsense" / sub).rglob("*.py")
    )
    code = (
        f"import importlib, sys\nfor m in {core!r}: importlib.import_module(m)\n"
        "import qsense\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('qsense.sims', 'qsense.drivers', 'qsense.apps', 'sims', 'drivers')))\n"
        "print(bad)\n"
    )
    res = _outside_repo(code, tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def _package_folders() -> set[str]:
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    found = set()
    for pkg, folder in mapping.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            found.add(".".join((pkg, *rel)))
    return found


def test_every_package_folder_is_listed():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert _package_folders() == listed
    # one import name: every listed package lives under qsense
    assert all(p == "qsense" or p.startswith("qsense.") for p in listed)
    assert PYPROJECT["project"]["name"] != "qsense"  # taken on the package index by another project


def test_every_subpackage_says_its_job_and_its_imports():
    for sub in ("estimators", "acquisition", "streaming", "apps", "sims", "drivers"):
        doc = importlib.import_module(f"qsense.{sub}").__doc__ or ""
        assert "May import" in doc, sub


def _lint_layers():
    spec = importlib.util.spec_from_file_location("lint_layers", ROOT / ".ci" / "lint_layers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_layer_contract_holds():
    res = _lint_layers().lint()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout
    # the staged tree really contains sims and drivers under qsense
    assert "qsense.sims" in PYPROJECT["tool"]["importlinter"]["contracts"][0]["layers"]


@pytest.mark.parametrize(
    "path, source, message",
    [
        ("qsense/estimators/bad.py", "from qsense.streaming import wire\n", "qsense.estimators is not allowed to import qsense.streaming"),
        ("qsense/streaming/bad.py", "import qsense.acquisition.memory\n", "qsense.streaming is not allowed to import qsense.acquisition"),
        ("qsense/acquisition/bad.py", "from qsense.sims import samplers\n", "qsense.acquisition is not allowed to import qsense.sims"),
        ("qsense/sims/bad.py", "from qsense.drivers import telescope\n", "qsense.sims is not allowed to import qsense.drivers"),
    ],
)
def test_layer_contract_catches_a_wrong_import(path, source, message):
    res = _lint_layers().lint({path: source})
    assert res.returncode != 0
    assert message in res.stdout
    assert f"{path.removesuffix('.py').replace('/', '.')} ->" in res.stdout  # the offending import is named


BUILTIN = {
    "driver": {"pennylane", "mqtt", "telescope"},
    "backend": {"simulated", "pennylane", "telescope"},
    "memory": {"slots", "simulated"},
}


@pytest.mark.parametrize("kind", sorted(BUILTIN))
def test_discovery_lists_and_loads_the_builtins(kind):
    found = plugins.available(kind)
    assert BUILTIN[kind] <= set(found)
    for name in BUILTIN[kind]:
        obj = plugins.load(kind, name)
        assert isinstance(obj, type), (kind, name, obj)
        assert obj.__module__.startswith("qsense."), obj.__module__


def test_unknown_plugin_names_are_refused_clearly():
    with pytest.raises(plugins.PluginError, match=r"unknown backend 'quantum-cloud'; installed: .*simulated"):
        plugins.load("backend", "quantum-cloud")
    with pytest.raises(ValueError, match="unknown plugin kind 'gadget'"):
        plugins.available("gadget")
    from qsense.acquisition.backends import make_backend
    from qsense.acquisition.memory import make_memory

    with pytest.raises(ValueError, match="unknown memory 'bucket'; installed: simulated, slots"):
        make_memory("bucket")
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend("quantum-cloud")
    m = make_memory("simulated", capacity=3, t2=1e-3)
    assert type(m).__module__ == "qsense.sims.memory_sim" and m.capacity == 3


def test_no_import_strings_in_the_package():
    """Modules are imported by import statements or entry points, never by name strings."""
    # import_module / __import__, or a "package.module:attribute" registry entry
    pattern = re.compile(r"import_module\(|__import__\(|[\"']qsense\.[\w.]+:\w+[\"']")
    offenders = [
        str(p.relative_to(ROOT))
        for folder in ("qsense", "sims", "drivers")
        for p in (ROOT / folder).rglob("*.py")
        if pattern.search(p.read_text())
    ]
    assert offenders == []


def test_plugin_conflicts_and_broken_plugins(monkeypatch, caplog):
    """Two distributions registering one name: the first wins, with a warning
    naming both (the same target twice, as a stale editable install shows, is
    silent); a plugin whose module cannot be imported is a PluginError with the cause."""
    from importlib.metadata import EntryPoint

    group = plugins.GROUPS["backend"]
    eps = [
        EntryPoint("lab", "qsense.sims.backend_sim:SimulatedBackend", group),
        EntryPoint("lab", "qsense.sims.backend_sim:SimulatedBackend", group),
        EntryPoint("lab", "other_pkg.backend:Other", group),
        EntryPoint("broken", "no_such_package_qsense_test.backend:Backend", group),
    ]
    monkeypatch.setattr(plugins, "entry_points", lambda group: [ep for ep in eps if ep.group == group])
    with caplog.at_level("WARNING", logger="qsense.plugins"):
        found = plugins.available("backend")
    assert list(found) == ["broken", "lab"]
    assert found["lab"].value == "qsense.sims.backend_sim:SimulatedBackend"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "other_pkg.backend:Other" in warnings[0]
    assert plugins.load("backend", "lab").__name__ == "SimulatedBackend"
    with pytest.raises(plugins.PluginError, match=r"backend 'broken' \(no_such_package_qsense_test.backend:Backend\) cannot be loaded"):
        plugins.load("backend", "broken")
    monkeypatch.setattr(plugins, "entry_points", lambda group: [])
    with pytest.raises(plugins.PluginError, match="no memory plugins are installed"):
        plugins.load("memory", "slots")
