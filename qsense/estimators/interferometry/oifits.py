"""OIFITS v2 files of visibilities: write qsense's estimates, read any tool's file
back into fit inputs, and check a file against the standard's required keywords
and columns (Duvert, Young & Hummel 2017, A&A 597, A8).

Sign convention.  qsense's coherence is ``gamma(B) = int I(s) e^{+2 pi i B.s/lambda}``
with ``B = r_j - r_k`` for pair (j, k); OIFITS writes ``V(u) = int I(s)
e^{-2 pi i u.s/lambda}`` with ``u = (UCOORD, VCOORD) = r(STA_INDEX[1]) -
r(STA_INDEX[0])``, the baseline from station 1 to station 2.  Pair (j, k) is
written as ``STA_INDEX = (j+1, k+1)`` with ``u = r_k - r_j = -B``, so
``V(u) = gamma(B)``: the file's number equals qsense's, because the standard's
conjugation and its opposite baseline orientation cancel.  The reader conjugates
the file's value and keeps its (UCOORD, VCOORD), which is right for a file from
any tool whatever its baseline orientation: ``gamma(u) = conj V(u)`` for a real
sky.  A binary's position angle therefore survives write -> read -> fit
(``tests/test_oifits.py``).

One row per baseline, one spectral channel (qsense observes one wavelength);
the reader accepts any number of channels and tables.  astropy is imported on
first use (extra ``[astro]``); :class:`OIFITSError` (a ``ValueError``) names
what is wrong with a file in one line.
"""

from __future__ import annotations

from .oifits_check import check_oifits, validate_oifits
from .oifits_read import OIFITSData, read_oifits
from .oifits_spec import PRIMARY_KEYWORDS, REQUIRED, OIFITSError
from .oifits_write import write_oifits

__all__ = [
    "PRIMARY_KEYWORDS",
    "REQUIRED",
    "OIFITSData",
    "OIFITSError",
    "check_oifits",
    "read_oifits",
    "validate_oifits",
    "write_oifits",
]
