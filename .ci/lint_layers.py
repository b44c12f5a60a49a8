#!/usr/bin/env python
"""Check qsense's layer contract with import-linter, on the layout that installs.

The repository keeps ``sims/`` and ``drivers/`` at its top level and setuptools
maps them to ``qsense.sims`` and ``qsense.drivers``; import-linter (grimp) walks
package folders, so it would not see them under ``qsense``.  This script copies
the three folders into a temporary tree shaped like the installed package and
runs ``lint-imports`` with the contracts in ``pyproject.toml`` on it.  A broken
contract exits non-zero and import-linter prints the offending import chain.

    python .ci/lint_layers.py            # what .ci/run does
    python .ci/lint_layers.py --extra qsense/estimators/bad.py='from qsense.streaming import wire'

``--extra PATH=SOURCE`` adds a module to the staged tree only (the test of the
linter itself uses it to prove a wrong import fails).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: installed package path -> repository folder
LAYOUT = {"qsense": "qsense", "qsense/sims": "sims", "qsense/drivers": "drivers"}


def stage(dest: Path, root: Path = ROOT) -> Path:
    """Copy the package folders into ``dest`` as they install; returns ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg, folder in LAYOUT.items():
        shutil.copytree(root / folder, dest / pkg, ignore=ignore, dirs_exist_ok=True)
    return dest


def lint(extra: dict[str, str] | None = None, root: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run import-linter on a staged copy; ``extra`` maps staged paths to source text."""
    with tempfile.TemporaryDirectory(prefix="qsense-layers-") as tmp:
        staged = stage(Path(tmp) / "src", root)
        for rel, text in (extra or {}).items():
            path = staged / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        shutil.copy(root / "pyproject.toml", Path(tmp) / "pyproject.toml")
        env = dict(os.environ, PYTHONPATH=str(staged), PYTHONDONTWRITEBYTECODE="1")
        # run in the staging folder so that neither the repository nor an
        # editable install of it shadows the staged copy
        return subprocess.run(
            [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"],
            cwd=tmp, env=env, capture_output=True, text=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", action="append", default=[], metavar="PATH=SOURCE",
                        help="add a module to the staged tree (for testing the contract)")
    args = parser.parse_args(argv)
    extra = dict(e.split("=", 1) for e in args.extra)
    res = lint(extra)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
