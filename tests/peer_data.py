"""Where the tests find data a peer published, and what they do when it is absent.

The Huang-Kueng-Preskill reference files are not ours to redistribute, so they
live beside the checkout (``../shared/reference/``), which CI provides and a
user's clone of the repository does not.  Tests that compare with them skip
with a reason outside CI and fail in CI (``CI=true``), so CI never skips them
silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REFERENCE_ROOT = Path(__file__).resolve().parents[2] / "shared" / "reference"


def in_ci() -> bool:
    """True when the environment variable ``CI`` says so (as ``.ci/run`` sets it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def reference_dir(name: str) -> Path:
    """``../shared/reference/<name>``; skip (fail in CI) when it is not there."""
    path = REFERENCE_ROOT / name
    if path.is_dir():
        return path
    msg = f"peer reference data {path} is not beside this checkout (it is provided to CI, not redistributed)"
    if in_ci():
        pytest.fail(msg + " -- CI=true, refusing to skip", pytrace=False)
    pytest.skip(msg)
