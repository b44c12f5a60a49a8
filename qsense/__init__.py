"""qsense: quantum sensing on streams.

Records (:class:`ShadowBatch`, :class:`BellBatch`) flow from drivers through a
quantum memory and a measurement scheduler into online estimators
(:class:`ShadowEstimator`, :class:`BellEstimator`, :class:`ShadowPurity`).
Conventions are in ``docs/estimators.md`` and the layer map in
``docs/architecture.md``; every array layout is documented where it is defined.

Every name in ``__all__`` is imported on first use (PEP 562): ``import qsense``
costs next to nothing, and ``qsense.ShadowPurity`` or ``from qsense import
ShadowPurity`` imports its module then (the purity kernels need numba, the
archive needs pyarrow), so a command pays only for what it uses.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: exported name -> the module that defines it (the objects are that module's own)
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("ShadowBatch", "BellBatch", "concatenate"), "records"),
    **dict.fromkeys(("PauliObservable", "PauliTerm", "parse_observable"), "pauli"),
    **dict.fromkeys(("ShadowEstimator", "shadow_expval", "matched_ratio_expval"), "estimators.shadow"),
    **dict.fromkeys(("BellEstimator", "AllPauliSquares", "all_pauli_squares", "pauli_square_labels"), "estimators.bell"),
    **dict.fromkeys(("T1T2", "DecoherenceMismatchWarning", "Dephasing", "Depolarizing"), "estimators.decoherence"),
    **dict.fromkeys(("DesignError", "derandomized_bases"), "estimators.derandomize"),
    "ShadowPurity": "estimators.purity",
    "reduced_state": "estimators.reconstruct",
    **dict.fromkeys(("NoiseCalibration", "RobustShadowEstimator"), "estimators.robust"),
    "Estimate": "estimators.result",
    **dict.fromkeys(("WireFormatError", "decode", "encode"), "streaming.wire"),
    **dict.fromkeys(("open_archive", "Archive", "ArchiveWriter", "ArchiveError"), "streaming.archive"),
}

#: subpackages that were attributes of ``qsense`` after a bare ``import qsense`` (before exports were lazy)
_SUBMODULES = ("estimators", "packing", "pauli", "records", "streaming")


def _module(where: str) -> ModuleType:
    """The module ``qsense.<where>``, imported now (import statements, never import strings).

    ``from qsense import x`` would ask this module's ``__getattr__`` for ``x`` before
    importing it, and so recurse; ``import qsense.x as m`` sets the attribute first.
    """
    loaded = sys.modules.get(f"{__name__}.{where}")  # also one still being initialised (import cycles)
    if loaded is not None:
        return loaded
    match where:
        case "records":
            import qsense.records as m
        case "pauli":
            import qsense.pauli as m
        case "packing":
            import qsense.packing as m
        case "estimators":
            import qsense.estimators as m
        case "streaming":
            import qsense.streaming as m
        case "estimators.shadow":
            import qsense.estimators.shadow as m
        case "estimators.bell":
            import qsense.estimators.bell as m
        case "estimators.decoherence":
            import qsense.estimators.decoherence as m
        case "estimators.derandomize":
            import qsense.estimators.derandomize as m
        case "estimators.purity":
            import qsense.estimators.purity as m
        case "estimators.reconstruct":
            import qsense.estimators.reconstruct as m
        case "estimators.robust":
            import qsense.estimators.robust as m
        case "estimators.result":
            import qsense.estimators.result as m
        case "streaming.wire":
            import qsense.streaming.wire as m
        case "streaming.archive":
            import qsense.streaming.archive as m
        case _:  # pragma: no cover - _EXPORTS and _SUBMODULES name only the cases above
            raise AssertionError(where)
    return m


__all__ = [
    "T1T2",
    "AllPauliSquares",
    "Archive",
    "ArchiveError",
    "ArchiveWriter",
    "BellBatch",
    "BellEstimator",
    "DecoherenceMismatchWarning",
    "Dephasing",
    "Depolarizing",
    "DesignError",
    "Estimate",
    "NoiseCalibration",
    "PauliObservable",
    "PauliTerm",
    "RobustShadowEstimator",
    "ShadowBatch",
    "ShadowEstimator",
    "ShadowPurity",
    "WireFormatError",
    "all_pauli_squares",
    "concatenate",
    "decode",
    "derandomized_bases",
    "encode",
    "matched_ratio_expval",
    "open_archive",
    "parse_observable",
    "pauli_square_labels",
    "reduced_state",
    "shadow_expval",
]


def __getattr__(name: str) -> Any:
    """Import an exported name's module on first use and keep the name (later lookups are plain globals)."""
    where = _EXPORTS.get(name)
    if where is not None:
        value = getattr(_module(where), name)
    elif name in _SUBMODULES:
        value = _module(name)
    else:
        raise AttributeError(f"module 'qsense' has no attribute {name!r}")
    globals()[name] = value
    return value


#: this module's own helpers, not part of what ``dir(qsense)`` lists
_PRIVATE = frozenset({"annotations", "sys", "ModuleType", "TYPE_CHECKING", "Any"})


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES} - _PRIVATE)


if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from qsense.estimators.bell import AllPauliSquares, BellEstimator, all_pauli_squares, pauli_square_labels
    from qsense.estimators.decoherence import T1T2, DecoherenceMismatchWarning, Dephasing, Depolarizing
    from qsense.estimators.derandomize import DesignError, derandomized_bases
    from qsense.estimators.purity import ShadowPurity
    from qsense.estimators.reconstruct import reduced_state
    from qsense.estimators.result import Estimate
    from qsense.estimators.robust import NoiseCalibration, RobustShadowEstimator
    from qsense.estimators.shadow import ShadowEstimator, matched_ratio_expval, shadow_expval
    from qsense.streaming.archive import Archive, ArchiveError, ArchiveWriter, open_archive
    from qsense.streaming.wire import WireFormatError, decode, encode

    from .pauli import PauliObservable, PauliTerm, parse_observable
    from .records import BellBatch, ShadowBatch, concatenate
