"""qsense: quantum sensing on streams.

Records (:class:`ShadowBatch`, :class:`BellBatch`) flow from drivers through a
quantum memory and a measurement scheduler into online estimators
(:class:`ShadowEstimator`, :class:`BellEstimator`, :class:`ShadowPurity`).
See DESIGN.md for conventions; every array layout is documented where defined.
"""

from __future__ import annotations

from .bell import AllPauliSquares, BellEstimator, all_pauli_squares, pauli_square_labels
from .estimate import Estimate
from .pauli import PauliObservable, PauliTerm, parse_observable
from .purity import ShadowPurity
from .records import BellBatch, ShadowBatch, concatenate
from .shadow import ShadowEstimator, matched_ratio_expval, shadow_expval
from .wire import WireFormatError, decode, encode

__version__ = "0.1.0"

__all__ = [
    "ShadowBatch",
    "BellBatch",
    "concatenate",
    "ShadowEstimator",
    "BellEstimator",
    "ShadowPurity",
    "Estimate",
    "shadow_expval",
    "matched_ratio_expval",
    "all_pauli_squares",
    "AllPauliSquares",
    "pauli_square_labels",
    "parse_observable",
    "PauliObservable",
    "PauliTerm",
    "encode",
    "decode",
    "WireFormatError",
]
