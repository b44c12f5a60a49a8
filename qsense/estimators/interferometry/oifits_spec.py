"""What the OIFITS2 standard requires (Duvert, Young & Hummel 2017, A&A 597, A8:
mandatory primary keywords, per-table keywords and columns with their types
and units), the error every OIFITS function raises, opening a file without
trusting it, and the WGS84 frames of OI_ARRAY."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PRIMARY_KEYWORDS", "REQUIRED", "OIFITSError"]


class OIFITSError(ValueError):
    """An OIFITS file cannot be written, read or is not valid OIFITS2 (message: one line)."""


#: Keywords the OIFITS2 primary header must carry (Duvert et al. 2017, Table 2)
PRIMARY_KEYWORDS = ("ORIGIN", "DATE", "DATE-OBS", "CONTENT", "TELESCOP", "INSTRUME", "OBSERVER", "INSMODE", "OBJECT")

#: Per table: required header keywords and required columns ``name -> (TFORM type letter, unit)``;
#: a unit of None means the column has none.  Data columns of per-channel quantities are NWAVE wide.
#: ``revn``: the table's OI_REVN in OIFITS2 (2 unless given; OI_CORR is new in version 2, revision 1).
REQUIRED: dict[str, dict[str, Any]] = {
    "OI_TARGET": {
        "keywords": ("OI_REVN",),
        "columns": {
            "TARGET_ID": ("I", None), "TARGET": ("A", None), "RAEP0": ("D", "deg"), "DECEP0": ("D", "deg"),
            "EQUINOX": ("E", "yr"), "RA_ERR": ("D", "deg"), "DEC_ERR": ("D", "deg"), "SYSVEL": ("D", "m/s"),
            "VELTYP": ("A", None), "VELDEF": ("A", None), "PMRA": ("D", "deg/yr"), "PMDEC": ("D", "deg/yr"),
            "PMRA_ERR": ("D", "deg/yr"), "PMDEC_ERR": ("D", "deg/yr"), "PARALLAX": ("E", "deg"),
            "PARA_ERR": ("E", "deg"), "SPECTYP": ("A", None),
        },
    },
    "OI_ARRAY": {
        "keywords": ("OI_REVN", "ARRNAME", "FRAME", "ARRAYX", "ARRAYY", "ARRAYZ"),
        "columns": {
            "TEL_NAME": ("A", None), "STA_NAME": ("A", None), "STA_INDEX": ("I", None),
            "DIAMETER": ("E", "m"), "STAXYZ": ("D", "m"),
        },
    },
    "OI_CORR": {
        "keywords": ("OI_REVN", "CORRNAME", "NDATA"),
        "columns": {"IINDX": ("J", None), "JINDX": ("J", None), "CORR": ("D", None)},
        "revn": 1,
    },
    "OI_WAVELENGTH": {
        "keywords": ("OI_REVN", "INSNAME"),
        "columns": {"EFF_WAVE": ("E", "m"), "EFF_BAND": ("E", "m")},
    },
    "OI_VIS": {
        "keywords": ("OI_REVN", "DATE-OBS", "ARRNAME", "INSNAME"),
        "columns": {
            "TARGET_ID": ("I", None), "TIME": ("D", "s"), "MJD": ("D", "day"), "INT_TIME": ("D", "s"),
            "VISAMP": ("D", None), "VISAMPERR": ("D", None), "VISPHI": ("D", "deg"), "VISPHIERR": ("D", "deg"),
            "UCOORD": ("D", "m"), "VCOORD": ("D", "m"), "STA_INDEX": ("I", None), "FLAG": ("L", None),
        },
    },
    "OI_VIS2": {
        "keywords": ("OI_REVN", "DATE-OBS", "ARRNAME", "INSNAME"),
        "columns": {
            "TARGET_ID": ("I", None), "TIME": ("D", "s"), "MJD": ("D", "day"), "INT_TIME": ("D", "s"),
            "VIS2DATA": ("D", None), "VIS2ERR": ("D", None), "UCOORD": ("D", "m"), "VCOORD": ("D", "m"),
            "STA_INDEX": ("I", None), "FLAG": ("L", None),
        },
    },
}

#: columns holding one value per spectral channel (width NWAVE of the table's INSNAME)
_PER_CHANNEL = {"VISAMP", "VISAMPERR", "VISPHI", "VISPHIERR", "RVIS", "RVISERR", "IVIS", "IVISERR", "FLAG",
                "VIS2DATA", "VIS2ERR"}

#: WGS84 ellipsoid (the frame of OI_ARRAY's geocentric ARRAYX/Y/Z)
_WGS84_A = 6378137.0
_WGS84_F = 1.0 / 298.257223563


def _fits() -> Any:
    try:
        from astropy.io import fits
    except ImportError:  # pragma: no cover - astropy is in the [astro] and [test] extras
        raise OIFITSError("OIFITS needs astropy: pip install 'qsense-streams[astro]'") from None
    return fits


# -- geometry of the site ---------------------------------------------------------------------
def _enu_basis(lat_deg: float, lon_deg: float) -> np.ndarray:
    """(3, 3) rows: East, North, Up unit vectors in Earth-centred Earth-fixed coordinates."""
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    return np.array([
        [-math.sin(lon), math.cos(lon), 0.0],
        [-math.sin(lat) * math.cos(lon), -math.sin(lat) * math.sin(lon), math.cos(lat)],
        [math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)],
    ])


def _geocentric(lat_deg: float, lon_deg: float, height: float) -> np.ndarray:
    """WGS84 geodetic latitude, longitude (deg) and height (m) -> geocentric X, Y, Z (m)."""
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    e2 = _WGS84_F * (2.0 - _WGS84_F)
    n = _WGS84_A / math.sqrt(1.0 - e2 * math.sin(lat) ** 2)
    return np.array([(n + height) * math.cos(lat) * math.cos(lon), (n + height) * math.cos(lat) * math.sin(lon),
                     (n * (1.0 - e2) + height) * math.sin(lat)])


def _geodetic(xyz: np.ndarray) -> tuple[float, float]:
    """Geocentric X, Y, Z (m) -> WGS84 geodetic latitude and longitude (deg); iterative, mm-exact."""
    x, y, z = (float(c) for c in xyz)
    e2 = _WGS84_F * (2.0 - _WGS84_F)
    p = math.hypot(x, y)
    lat = math.atan2(z, p * (1.0 - e2))
    for _ in range(8):
        n = _WGS84_A / math.sqrt(1.0 - e2 * math.sin(lat) ** 2)
        h = p / max(math.cos(lat), 1e-12) - n
        lat = math.atan2(z, p * (1.0 - e2 * n / (n + h)))
    return math.degrees(lat), math.degrees(math.atan2(y, x))


def _open(path: str | Path) -> Any:
    fits = _fits()
    p = Path(path)
    if not p.is_file():
        raise OIFITSError(f"{p}: no such file")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # no memmap: a header that claims more data than the file holds fails here, not on first access
            hdul = fits.open(p, memmap=False, lazy_load_hdus=False)
            for h in hdul:
                _ = h.data  # force every table to be read and checked against its header
    except Exception as exc:  # noqa: BLE001 - astropy raises OSError, ValueError, TypeError, ... on hostile bytes
        raise OIFITSError(f"{p}: not a readable FITS file ({type(exc).__name__}: {_one_line(exc)})") from None
    short = [w for w in caught if "truncated" in str(w.message) or "corrupted" in str(w.message)]
    if short:
        # astropy only warns: it pads a truncated table with zeros (read as data) or drops a
        # broken trailing HDU (its data silently missing)
        hdul.close()
        raise OIFITSError(f"{p}: truncated or corrupted ({_one_line(short[0].message)})")
    return hdul


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")
