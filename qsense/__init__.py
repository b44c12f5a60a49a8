"""qsense: quantum sensing on streams.

Records (:class:`ShadowBatch`, :class:`BellBatch`) flow from drivers through a
quantum memory and a measurement scheduler into online estimators
(:class:`ShadowEstimator`, :class:`BellEstimator`, :class:`ShadowPurity`).
Conventions are in ``docs/estimators.md`` and the layer map in
``docs/architecture.md``; every array layout is documented where it is defined.
"""

from __future__ import annotations

from qsense.estimators.bell import AllPauliSquares, BellEstimator, all_pauli_squares, pauli_square_labels
from qsense.estimators.decoherence import T1T2, DecoherenceMismatchWarning, Dephasing, Depolarizing
from qsense.estimators.derandomize import DesignError, derandomized_bases
from qsense.estimators.purity import ShadowPurity
from qsense.estimators.reconstruct import reduced_state
from qsense.estimators.robust import NoiseCalibration, RobustShadowEstimator
from qsense.estimators.result import Estimate
from qsense.estimators.shadow import ShadowEstimator, matched_ratio_expval, shadow_expval
from qsense.streaming.wire import WireFormatError, decode, encode

from .pauli import PauliObservable, PauliTerm, parse_observable
from .records import BellBatch, ShadowBatch, concatenate

__version__ = "0.1.0"

#: Imported on first use: the archive needs pyarrow, which ``import qsense`` should not pay for.
_ARCHIVE_NAMES = ("open_archive", "Archive", "ArchiveWriter", "ArchiveError")


def __getattr__(name: str):
    if name in _ARCHIVE_NAMES:
        from qsense.streaming import archive

        value = getattr(archive, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qsense' has no attribute {name!r}")

__all__ = [
    "ShadowBatch",
    "BellBatch",
    "concatenate",
    "ShadowEstimator",
    "BellEstimator",
    "ShadowPurity",
    "reduced_state",
    "NoiseCalibration",
    "RobustShadowEstimator",
    "Estimate",
    "shadow_expval",
    "matched_ratio_expval",
    "derandomized_bases",
    "DesignError",
    "all_pauli_squares",
    "AllPauliSquares",
    "pauli_square_labels",
    "parse_observable",
    "PauliObservable",
    "PauliTerm",
    "encode",
    "decode",
    "WireFormatError",
    "Depolarizing",
    "Dephasing",
    "T1T2",
    "DecoherenceMismatchWarning",
    "open_archive",
    "Archive",
    "ArchiveWriter",
    "ArchiveError",
]
