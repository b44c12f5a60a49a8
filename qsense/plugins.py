"""Plugin discovery: drivers, measurement backends and quantum memories by name.

qsense finds its pluggable parts through Python entry points, the way PennyLane
finds device plugins, so a third-party package adds a driver, a backend or a
memory model by installing itself; nothing in qsense names it in a string.  A
distribution registers a plugin in its ``pyproject.toml``::

    [project.entry-points."qsense.backends"]
    my_backend = "my_package.backend:MyBackend"

The groups are :data:`GROUPS`; qsense's own plugins (the simulated backend and
memory from :mod:`qsense.sims`, the PennyLane, MQTT and telescope drivers from
:mod:`qsense.drivers`) are registered the same way in qsense's own metadata.
This module sits at the bottom of the layer stack: it imports nothing of qsense,
and loading a plugin imports only that plugin's module.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Any

__all__ = ["GROUPS", "PluginError", "available", "load", "create"]

log = logging.getLogger(__name__)

#: kind -> entry-point group
GROUPS: dict[str, str] = {
    "driver": "qsense.drivers",
    "backend": "qsense.backends",
    "memory": "qsense.memories",
}


class PluginError(ValueError):
    """An unknown plugin name, an unknown group, or a plugin that fails to load."""


def _group(kind: str) -> str:
    try:
        return GROUPS[kind]
    except KeyError:
        raise PluginError(f"unknown plugin kind {kind!r}; choose one of {sorted(GROUPS)}") from None


def available(kind: str) -> dict[str, EntryPoint]:
    """Installed plugins of one kind (``"driver"``, ``"backend"``, ``"memory"``), by name.

    When two installed distributions register the same name, the first found
    wins and a warning names both (the same module path twice, as an editable
    install next to a stale one can show, is not a conflict).
    """
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=_group(kind)):
        prev = found.get(ep.name)
        if prev is None:
            found[ep.name] = ep
        elif prev.value != ep.value:
            log.warning("%s plugin %r registered twice (%s and %s); using the first", kind, ep.name, prev.value, ep.value)
    return dict(sorted(found.items()))


def load(kind: str, name: str) -> Any:
    """The object (usually a class) registered as plugin ``name`` of ``kind``.

    Raises :class:`PluginError` with the installed names for an unknown name,
    and with the cause when the plugin's module cannot be imported (a missing
    optional dependency, for example).
    """
    plugins = available(kind)
    try:
        ep = plugins[name]
    except KeyError:
        if not plugins:
            hint = f"no {kind} plugins are installed (is qsense installed? `python -m pip install -e .`)"
        else:
            hint = f"installed: {', '.join(plugins)}"
        raise PluginError(f"unknown {kind} {name!r}; {hint}") from None
    try:
        return ep.load()
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"{kind} {name!r} ({ep.value}) cannot be loaded: {exc}") from exc


def create(kind: str, name: str, /, **kwargs: Any) -> Any:
    """``load(kind, name)(**kwargs)``: a plugin instance built from keyword options."""
    return load(kind, name)(**kwargs)
