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

import math
import time as _time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .results import SquaredVisibilityEstimate, VisibilityEstimate

__all__ = [
    "REQUIRED",
    "OIFITSData",
    "OIFITSError",
    "check_oifits",
    "read_oifits",
    "validate_oifits",
    "write_oifits",
]


class OIFITSError(ValueError):
    """An OIFITS file cannot be written, read or is not valid OIFITS2 (message: one line)."""


#: Keywords the OIFITS2 primary header must carry (Duvert et al. 2017, Table 2)
PRIMARY_KEYWORDS = ("ORIGIN", "DATE", "DATE-OBS", "CONTENT", "TELESCOP", "INSTRUME", "OBSERVER", "INSMODE", "OBJECT")

#: Per table: required header keywords and required columns ``name -> (TFORM type letter, unit)``;
#: a unit of None means the column has none.  Data columns of per-channel quantities are NWAVE wide.
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


# -- writing -----------------------------------------------------------------------------------
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qsense-streams")
    except PackageNotFoundError:  # pragma: no cover - a source tree without an install
        return "unknown"


def _mjd_now() -> float:
    return _time.time() / 86400.0 + 40587.0


def _iso(mjd: float) -> str:
    whole, ms = divmod(round((float(mjd) - 40587.0) * 86400000.0), 1000)
    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(whole)) + f".{ms:03d}"


def _pairs_of(est: Any, M: int) -> np.ndarray:
    p = np.asarray(est.pairs, dtype=np.int64).reshape(-1, 2)
    if p.size and (p.min() < 0 or p.max() >= M or np.any(p[:, 0] == p[:, 1])):
        raise OIFITSError(f"the estimate's pairs must be distinct telescope indices in 0..{M - 1}")
    return p


def _vis2_from_vis(vis: VisibilityEstimate) -> tuple[np.ndarray, np.ndarray]:
    """|V|^2 with the noise power removed and its delta-method error (Gaussian (Re, Im) errors)."""
    re, im = vis.values.real, vis.values.imag
    c = vis.cov
    var = 4.0 * (re**2 * c[:, 0, 0] + im**2 * c[:, 1, 1] + 2.0 * re * im * c[:, 0, 1])
    var += 2.0 * (c[:, 0, 0] ** 2 + c[:, 1, 1] ** 2 + 2.0 * c[:, 0, 1] ** 2)  # the noise power's own spread
    return vis.squared_amplitude, np.sqrt(var)


def write_oifits(
    path: str | Path,
    positions: np.ndarray,
    wavelength: float,
    vis: VisibilityEstimate | None = None,
    vis2: SquaredVisibilityEstimate | None = None,
    *,
    bandwidth: float | None = None,
    station_names: Sequence[str] | None = None,
    telescope_names: Sequence[str] | None = None,
    diameters: Sequence[float] | None = None,
    site: tuple[float, float, float] | None = None,
    arrname: str = "QSENSE",
    insname: str = "QSENSE",
    target: str = "qsense",
    ra: float = 0.0,
    dec: float = 0.0,
    mjd: float | None = None,
    int_time: float = 1.0,
    telescop: str | None = None,
    instrume: str = "QSENSE",
    observer: str = "qsense",
    insmode: str = "single-copy shadows + two-copy Bell",
    overwrite: bool = True,
) -> Path:
    """Write visibilities as an OIFITS2 file; returns its path.

    ``positions`` (M, 2) metres (East, North), ``wavelength`` metres.  ``vis``
    (complex V with its (Re, Im) covariance) becomes OI_VIS with VISAMP/VISPHI,
    RVIS/IVIS and their errors; ``vis2`` (two-copy |V|^2) becomes OI_VIS2, or,
    without it, OI_VIS2 holds ``vis``'s noise-debiased ``|V|^2``.  At least one is
    needed.  Data whose value or error is not finite, or whose error is not
    positive, are written with ``FLAG = T``.

    The array: ``station_names`` / ``telescope_names`` (default ``T1..TM``),
    ``diameters`` (m, default 1), and ``site = (latitude deg, longitude deg,
    height m)`` (WGS84).  With a site OI_ARRAY is ``FRAME = 'GEOCENTRIC'`` (the
    site's geocentric ARRAYX/Y/Z and each station's offset from it, rotated from
    East/North/Up); without one it is ``FRAME = 'SKY'`` with STAXYZ = (East,
    North, 0).  The target: ``target`` name at ``ra``/``dec`` (deg, J2000).
    Time: ``mjd`` (the middle of the observation, default now) and ``int_time``
    (s), the same for every row; TIME (deprecated by OIFITS2) is 0.
    """
    fits = _fits()
    if vis is None and vis2 is None:
        raise OIFITSError("nothing to write: give vis (complex visibilities) and/or vis2 (squared visibilities)")
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] < 2 or not np.all(np.isfinite(pos)):
        raise OIFITSError(f"positions must be finite (M, 2) metres with M >= 2; got shape {pos.shape}")
    M = pos.shape[0]
    if not (math.isfinite(wavelength) and wavelength > 0):
        raise OIFITSError(f"wavelength must be positive metres; got {wavelength!r}")
    if not (math.isfinite(int_time) and int_time > 0):
        raise OIFITSError(f"int_time must be positive seconds; got {int_time!r}")
    names = [f"T{i + 1}" for i in range(M)] if station_names is None else [str(s) for s in station_names]
    tels = list(names) if telescope_names is None else [str(s) for s in telescope_names]
    diam = np.ones(M) if diameters is None else np.asarray(diameters, dtype=np.float64)
    if len(names) != M or len(tels) != M or diam.shape != (M,) or np.any(~(diam > 0)):
        raise OIFITSError(f"station_names, telescope_names and diameters (> 0) need one entry per telescope ({M})")
    if len(set(names)) != M:
        raise OIFITSError("station names must be distinct")
    mjd = _mjd_now() if mjd is None else float(mjd)
    band = wavelength / 100.0 if bandwidth is None else float(bandwidth)
    date_obs = _iso(mjd - int_time / 2.0 / 86400.0)

    hdus = [_primary(fits, pos, wavelength, vis, vis2, target, ra, dec, mjd, int_time, date_obs,
                     telescop or arrname, instrume, observer, insmode, M)]
    hdus.append(_target_hdu(fits, target, ra, dec))
    hdus.append(_array_hdu(fits, pos, names, tels, diam, site, arrname))
    wl = fits.BinTableHDU.from_columns([
        fits.Column("EFF_WAVE", "1E", unit="m", array=np.array([wavelength], dtype=np.float32)),
        fits.Column("EFF_BAND", "1E", unit="m", array=np.array([band], dtype=np.float32)),
    ], name="OI_WAVELENGTH")
    wl.header["OI_REVN"] = 2
    wl.header["INSNAME"] = insname
    hdus.append(wl)
    common = {"DATE-OBS": date_obs, "ARRNAME": arrname, "INSNAME": insname}
    if vis is not None:
        hdus.append(_vis_hdu(fits, pos, _pairs_of(vis, M), vis, mjd, int_time, common))
    if vis2 is not None:
        p2 = _pairs_of(vis2, M)
        hdus.append(_vis2_hdu(fits, pos, p2, np.asarray(vis2.values, float), np.asarray(vis2.stderr, float), mjd, int_time, common))
    elif vis is not None:
        v2, e2 = _vis2_from_vis(vis)
        hdus.append(_vis2_hdu(fits, pos, _pairs_of(vis, M), v2, e2, mjd, int_time, common))
    out = Path(path)
    try:
        fits.HDUList(hdus).writeto(out, overwrite=overwrite, checksum=True)
    except OSError as exc:
        raise OIFITSError(f"cannot write {out}: {exc}") from None
    return out


def _primary(fits, pos, wavelength, vis, vis2, target, ra, dec, mjd, int_time, date_obs, telescop, instrume, observer,
             insmode, M) -> Any:
    ph = fits.PrimaryHDU()
    h = ph.header
    h["ORIGIN"] = ("qsense", "institution or software that wrote the file")
    h["DATE"] = (_time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime()), "UTC date the file was written")
    h["DATE-OBS"] = (date_obs, "UTC start of the observation")
    h["CONTENT"] = "OIFITS2"
    h["TELESCOP"] = telescop
    h["INSTRUME"] = instrume
    h["OBSERVER"] = observer
    h["INSMODE"] = insmode
    h["OBJECT"] = target
    h["PROCSOFT"] = f"qsense {_version()}"
    h["RA"] = (float(ra), "[deg] target right ascension")
    h["DEC"] = (float(dec), "[deg] target declination")
    h["EQUINOX"] = 2000.0
    h["MJD-OBS"] = mjd - int_time / 2.0 / 86400.0
    h["MJD-END"] = mjd + int_time / 2.0 / 86400.0
    h["TEXPTIME"] = (float(int_time), "[s] integration time")
    d = pos[:, None, :] - pos[None, :, :]
    lengths = np.hypot(d[..., 0], d[..., 1])[np.triu_indices(M, 1)]
    h["BASE_MIN"] = (float(lengths.min()), "[m] shortest baseline")
    h["BASE_MAX"] = (float(lengths.max()), "[m] longest baseline")
    h["WAVELMIN"] = (wavelength * 1e9, "[nm]")
    h["WAVELMAX"] = (wavelength * 1e9, "[nm]")
    h["NUM_CHAN"] = 1
    h["COMMENT"] = "Complex visibilities in the OIFITS convention V(u) = int I(s) exp(-2 pi i u.s / lambda),"
    h["COMMENT"] = "u = (UCOORD, VCOORD) = r(STA_INDEX[1]) - r(STA_INDEX[0])."
    return ph


def _target_hdu(fits, target: str, ra: float, dec: float) -> Any:
    def col(name, fmt, value, unit=None):
        return fits.Column(name, fmt, unit=unit, array=np.array([value]))

    hdu = fits.BinTableHDU.from_columns([
        col("TARGET_ID", "1I", np.int16(1)), col("TARGET", "32A", target), col("RAEP0", "1D", float(ra), "deg"),
        col("DECEP0", "1D", float(dec), "deg"), col("EQUINOX", "1E", np.float32(2000.0), "yr"),
        col("RA_ERR", "1D", 0.0, "deg"), col("DEC_ERR", "1D", 0.0, "deg"), col("SYSVEL", "1D", 0.0, "m/s"),
        col("VELTYP", "8A", "UNKNOWN"), col("VELDEF", "8A", "OPTICAL"), col("PMRA", "1D", 0.0, "deg/yr"),
        col("PMDEC", "1D", 0.0, "deg/yr"), col("PMRA_ERR", "1D", 0.0, "deg/yr"), col("PMDEC_ERR", "1D", 0.0, "deg/yr"),
        col("PARALLAX", "1E", np.float32(0.0), "deg"), col("PARA_ERR", "1E", np.float32(0.0), "deg"),
        col("SPECTYP", "32A", "UNKNOWN"), col("CATEGORY", "3A", "SCI"),
    ], name="OI_TARGET")
    hdu.header["OI_REVN"] = 2
    return hdu


def _array_hdu(fits, pos, names, tels, diam, site, arrname) -> Any:
    M = pos.shape[0]
    enu = np.concatenate([pos, np.zeros((M, 1))], axis=1)
    if site is not None:
        lat, lon, height = (float(v) for v in site)
        centre = _geocentric(lat, lon, height)
        xyz = enu @ _enu_basis(lat, lon)  # East/North/Up offsets -> geocentric offsets
        frame = "GEOCENTRIC"
    else:
        centre, xyz, frame = np.zeros(3), enu, "SKY"
    hdu = fits.BinTableHDU.from_columns([
        fits.Column("TEL_NAME", "16A", array=np.array(tels)),
        fits.Column("STA_NAME", "16A", array=np.array(names)),
        fits.Column("STA_INDEX", "1I", array=np.arange(1, M + 1, dtype=np.int16)),
        fits.Column("DIAMETER", "1E", unit="m", array=diam.astype(np.float32)),
        fits.Column("STAXYZ", "3D", unit="m", array=xyz),
        fits.Column("FOV", "1D", unit="arcsec", array=np.full(M, 1.0)),
        fits.Column("FOVTYPE", "6A", array=np.array(["RADIUS"] * M)),
    ], name="OI_ARRAY")
    h = hdu.header
    h["OI_REVN"] = 2
    h["ARRNAME"] = arrname
    h["FRAME"] = frame
    h["ARRAYX"], h["ARRAYY"], h["ARRAYZ"] = (float(c) for c in centre)
    return hdu


def _baseline_columns(fits, pos: np.ndarray, pairs: np.ndarray, mjd: float, int_time: float) -> list:
    P = len(pairs)
    u = pos[pairs[:, 1]] - pos[pairs[:, 0]]  # station 1 -> station 2 (see the module docstring)
    return [
        fits.Column("TARGET_ID", "1I", array=np.ones(P, dtype=np.int16)),
        fits.Column("TIME", "1D", unit="s", array=np.zeros(P)),
        fits.Column("MJD", "1D", unit="day", array=np.full(P, mjd)),
        fits.Column("INT_TIME", "1D", unit="s", array=np.full(P, float(int_time))),
        fits.Column("UCOORD", "1D", unit="m", array=u[:, 0]),
        fits.Column("VCOORD", "1D", unit="m", array=u[:, 1]),
        fits.Column("STA_INDEX", "2I", array=(pairs + 1).astype(np.int16)),
    ]


def _headed(hdu: Any, common: dict) -> Any:
    hdu.header["OI_REVN"] = 2
    for k, v in common.items():
        hdu.header[k] = v
    return hdu


def _vis_hdu(fits, pos, pairs, vis: VisibilityEstimate, mjd, int_time, common) -> Any:
    v = np.asarray(vis.values, dtype=np.complex128)
    err = vis.stderr
    amp_err, phi_err = vis.amplitude_err, np.degrees(vis.phase_err)
    bad = ~(np.isfinite(v) & np.all(np.isfinite(err), axis=1) & np.all(err > 0, axis=1))
    cols = _baseline_columns(fits, pos, pairs, mjd, int_time) + [
        fits.Column("VISAMP", "1D", array=np.abs(v)),
        fits.Column("VISAMPERR", "1D", array=amp_err),
        fits.Column("VISPHI", "1D", unit="deg", array=np.degrees(np.angle(v))),
        fits.Column("VISPHIERR", "1D", unit="deg", array=phi_err),
        fits.Column("RVIS", "1D", array=v.real),
        fits.Column("RVISERR", "1D", array=err[:, 0]),
        fits.Column("IVIS", "1D", array=v.imag),
        fits.Column("IVISERR", "1D", array=err[:, 1]),
        fits.Column("FLAG", "1L", array=bad),
    ]
    hdu = _headed(fits.BinTableHDU.from_columns(cols, name="OI_VIS"), common)
    hdu.header["AMPTYP"] = "absolute"
    hdu.header["PHITYP"] = "absolute"
    return hdu


def _vis2_hdu(fits, pos, pairs, v2: np.ndarray, e2: np.ndarray, mjd, int_time, common) -> Any:
    bad = ~(np.isfinite(v2) & np.isfinite(e2) & (e2 > 0))
    cols = _baseline_columns(fits, pos, pairs, mjd, int_time) + [
        fits.Column("VIS2DATA", "1D", array=v2),
        fits.Column("VIS2ERR", "1D", array=e2),
        fits.Column("FLAG", "1L", array=bad),
    ]
    return _headed(fits.BinTableHDU.from_columns(cols, name="OI_VIS2"), common)


# -- reading -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OIFITSData:
    """An OIFITS file's visibilities as qsense fit inputs (unflagged data only).

    Complex visibilities, one entry per (row, channel) of every OI_VIS table:
    ``uv`` float64 (N, 2) in wavelengths and ``vis`` complex128 (N,) in qsense's
    convention (``gamma(uv) = conj`` of the file's V, see the module docstring),
    ``vis_err`` (N, 2) one-sigma errors of (Re, Im), ``vis_wavelength`` (N,) m,
    ``vis_sta_index`` (N, 2) and ``vis_mjd`` (N,).  Squared visibilities from
    every OI_VIS2 table: ``uv2``, ``vis2``, ``vis2_err``, ``vis2_wavelength``,
    ``vis2_sta_index``, ``vis2_mjd``.  ``stations`` maps STA_INDEX to
    ``(station name, East m, North m)`` where the file's OI_ARRAY gives them;
    ``targets`` maps TARGET_ID to its name; ``header`` is the primary header
    as a dict.  Feed ``fit_binary(d.uv, d.vis, d.vis_err, kind="complex")`` or
    ``fit_binary(d.uv2, d.vis2, d.vis2_err, kind="squared")``.
    """

    uv: np.ndarray
    vis: np.ndarray
    vis_err: np.ndarray
    vis_wavelength: np.ndarray
    vis_sta_index: np.ndarray
    vis_mjd: np.ndarray
    uv2: np.ndarray
    vis2: np.ndarray
    vis2_err: np.ndarray
    vis2_wavelength: np.ndarray
    vis2_sta_index: np.ndarray
    vis2_mjd: np.ndarray
    stations: dict[int, tuple[str, float, float]] = field(default_factory=dict)
    targets: dict[int, str] = field(default_factory=dict)
    header: dict[str, Any] = field(default_factory=dict)
    flagged: int = 0


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
    short = [w for w in caught if "truncated" in str(w.message)]
    if short:
        # astropy pads a truncated table with zeros and only warns: those zeros would be read as data
        hdul.close()
        raise OIFITSError(f"{p}: truncated ({_one_line(short[0].message)})")
    return hdul


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _col(hdu: Any, name: str, where: str) -> np.ndarray:
    if name not in hdu.columns.names:
        raise OIFITSError(f"{where}: {hdu.name} has no {name} column")
    return np.asarray(hdu.data[name])


def _wavelengths(hdul: Any, where: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for h in hdul:
        if h.name == "OI_WAVELENGTH":
            ins = str(h.header.get("INSNAME", "")).strip()
            w = _col(h, "EFF_WAVE", where).astype(np.float64).reshape(-1)
            if w.size == 0 or not np.all(np.isfinite(w) & (w > 0)):
                raise OIFITSError(f"{where}: OI_WAVELENGTH {ins!r}: EFF_WAVE must be positive metres")
            out[ins] = w
    return out


def _per_channel(a: np.ndarray, nrows: int, nwave: int, name: str, where: str) -> np.ndarray:
    a = np.asarray(a)
    if a.shape in ((nrows,), (nrows, 1)) and nwave == 1:
        return a.reshape(nrows, 1)
    if a.shape != (nrows, nwave):
        raise OIFITSError(f"{where}: {name} has shape {a.shape}; expected ({nrows}, {nwave}) for NWAVE = {nwave}")
    return a


def _data_table(h: Any, waves: dict[str, np.ndarray], where: str) -> tuple[np.ndarray, ...]:
    """Common part of OI_VIS / OI_VIS2: per (row, channel) u, v (wavelengths), lambda, STA_INDEX, MJD, flag."""
    ins = str(h.header.get("INSNAME", "")).strip()
    if ins not in waves:
        raise OIFITSError(f"{where}: {h.name} refers to INSNAME {ins!r}, which no OI_WAVELENGTH table defines")
    lam = waves[ins]
    n, w = len(h.data), lam.size
    u = _col(h, "UCOORD", where).astype(np.float64).reshape(-1)
    v = _col(h, "VCOORD", where).astype(np.float64).reshape(-1)
    sta = _col(h, "STA_INDEX", where).astype(np.int64).reshape(n, -1)
    if sta.shape[1] != 2:
        raise OIFITSError(f"{where}: {h.name} STA_INDEX must hold two stations per row")
    mjd = _col(h, "MJD", where).astype(np.float64).reshape(-1)
    flag = _per_channel(_col(h, "FLAG", where), n, w, "FLAG", where).astype(bool)
    uu = (u[:, None] / lam[None, :]).reshape(-1)
    vv = (v[:, None] / lam[None, :]).reshape(-1)
    rep = lambda a: np.repeat(a, w, axis=0)
    return np.stack([uu, vv], axis=1), np.tile(lam, n), rep(sta), rep(mjd), flag.reshape(-1)


def read_oifits(path: str | Path) -> OIFITSData:
    """Read every OI_VIS and OI_VIS2 table of an OIFITS (v1 or v2) file into fit inputs.

    Complex data come from RVIS/IVIS with RVISERR/IVISERR when the table has
    them, else from VISAMP/VISPHI (errors by the delta method).  Rows flagged
    in FLAG, and data with non-finite values or non-positive errors, are dropped
    (counted in ``flagged``).  A file that is not FITS, lacks the tables or
    columns the data need, or whose shapes disagree raises :class:`OIFITSError`.
    """
    where = str(path)
    with _open(path) as hdul:
        waves = _wavelengths(hdul, where)
        vis_parts: list[tuple] = []
        vis2_parts: list[tuple] = []
        flagged = 0
        for h in hdul:
            if h.name not in ("OI_VIS", "OI_VIS2") or h.data is None or len(h.data) == 0:
                continue
            uv, lam, sta, mjd, flag = _data_table(h, waves, where)
            n, w = len(h.data), lam.size // max(len(h.data), 1)
            cols = h.columns.names
            if h.name == "OI_VIS":
                if all(c in cols for c in ("RVIS", "IVIS", "RVISERR", "IVISERR")):
                    re = _per_channel(_col(h, "RVIS", where), n, w, "RVIS", where).astype(np.float64).reshape(-1)
                    im = _per_channel(_col(h, "IVIS", where), n, w, "IVIS", where).astype(np.float64).reshape(-1)
                    er = _per_channel(_col(h, "RVISERR", where), n, w, "RVISERR", where).astype(np.float64).reshape(-1)
                    ei = _per_channel(_col(h, "IVISERR", where), n, w, "IVISERR", where).astype(np.float64).reshape(-1)
                else:
                    a = _per_channel(_col(h, "VISAMP", where), n, w, "VISAMP", where).astype(np.float64).reshape(-1)
                    ea = _per_channel(_col(h, "VISAMPERR", where), n, w, "VISAMPERR", where).astype(np.float64).reshape(-1)
                    ph = np.radians(_per_channel(_col(h, "VISPHI", where), n, w, "VISPHI", where).astype(np.float64).reshape(-1))
                    ep = np.radians(_per_channel(_col(h, "VISPHIERR", where), n, w, "VISPHIERR", where)
                                    .astype(np.float64).reshape(-1))
                    re, im = a * np.cos(ph), a * np.sin(ph)
                    er = np.hypot(np.cos(ph) * ea, a * np.sin(ph) * ep)
                    ei = np.hypot(np.sin(ph) * ea, a * np.cos(ph) * ep)
                good = ~flag & np.isfinite(re) & np.isfinite(im) & (er > 0) & (ei > 0) & np.isfinite(er) & np.isfinite(ei)
                good &= np.all(np.isfinite(uv), axis=1)
                flagged += int((~good).sum())
                # the file holds int I e^{-2 pi i u.s}; qsense's gamma is its conjugate at the same u
                vis_parts.append((uv[good], (re - 1j * im)[good], np.stack([er, ei], axis=1)[good], lam[good],
                                  sta[good], mjd[good]))
            else:
                d = _per_channel(_col(h, "VIS2DATA", where), n, w, "VIS2DATA", where).astype(np.float64).reshape(-1)
                e = _per_channel(_col(h, "VIS2ERR", where), n, w, "VIS2ERR", where).astype(np.float64).reshape(-1)
                good = ~flag & np.isfinite(d) & np.isfinite(e) & (e > 0) & np.all(np.isfinite(uv), axis=1)
                flagged += int((~good).sum())
                vis2_parts.append((uv[good], d[good], e[good], lam[good], sta[good], mjd[good]))
        if not vis_parts and not vis2_parts:
            raise OIFITSError(f"{where}: no OI_VIS or OI_VIS2 data")
        stations = _stations(hdul)
        targets: dict[int, str] = {}
        for h in hdul:
            if h.name == "OI_TARGET" and "TARGET_ID" in h.columns.names and "TARGET" in h.columns.names:
                targets.update({int(i): str(t).strip() for i, t in zip(h.data["TARGET_ID"], h.data["TARGET"])})
        header = {k: v for k, v in hdul[0].header.items() if k not in ("COMMENT", "HISTORY", "")}

    def cat(parts: list[tuple], i: int, shape: tuple, dtype: Any) -> np.ndarray:
        return np.concatenate([p[i] for p in parts]) if parts else np.zeros(shape, dtype)

    return OIFITSData(
        cat(vis_parts, 0, (0, 2), float), cat(vis_parts, 1, (0,), complex), cat(vis_parts, 2, (0, 2), float),
        cat(vis_parts, 3, (0,), float), cat(vis_parts, 4, (0, 2), np.int64), cat(vis_parts, 5, (0,), float),
        cat(vis2_parts, 0, (0, 2), float), cat(vis2_parts, 1, (0,), float), cat(vis2_parts, 2, (0,), float),
        cat(vis2_parts, 3, (0,), float), cat(vis2_parts, 4, (0, 2), np.int64), cat(vis2_parts, 5, (0,), float),
        stations, targets, header, flagged,
    )


def _stations(hdul: Any) -> dict[int, tuple[str, float, float]]:
    """STA_INDEX -> (name, East, North) from the OI_ARRAY tables (local East/North for a geocentric frame)."""
    out: dict[int, tuple[str, float, float]] = {}
    for h in hdul:
        if h.name != "OI_ARRAY" or not all(c in h.columns.names for c in ("STA_INDEX", "STA_NAME", "STAXYZ")):
            continue
        xyz = np.asarray(h.data["STAXYZ"], dtype=np.float64).reshape(len(h.data), -1)
        if xyz.shape[1] != 3:
            continue
        frame = str(h.header.get("FRAME", "")).strip().upper()
        centre = np.array([float(h.header.get(k, 0.0) or 0.0) for k in ("ARRAYX", "ARRAYY", "ARRAYZ")])
        if frame == "GEOCENTRIC" and np.linalg.norm(centre) > 1e6:
            en = xyz @ _enu_basis(*_geodetic(centre)).T[:, :2]
        else:
            en = xyz[:, :2]
        for i, name, (e, n) in zip(h.data["STA_INDEX"], h.data["STA_NAME"], en):
            out[int(i)] = (str(name).strip(), float(e), float(n))
    return out


# -- checking ----------------------------------------------------------------------------------
def check_oifits(path: str | Path) -> list[str]:
    """Problems that make a file invalid OIFITS2 (empty list: valid).

    Checks the primary header's mandatory keywords and ``CONTENT = 'OIFITS2'``;
    the presence of OI_TARGET, OI_ARRAY, OI_WAVELENGTH and at least one data
    table; every table's required keywords, columns, column types and units
    (:data:`REQUIRED`); per-channel widths against the referenced OI_WAVELENGTH;
    and the cross references (ARRNAME, INSNAME, TARGET_ID, STA_INDEX).  A file
    that is not FITS at all raises :class:`OIFITSError`.
    """
    probs: list[str] = []
    with _open(path) as hdul:
        ph = hdul[0].header
        for k in PRIMARY_KEYWORDS:
            if k not in ph or str(ph[k]).strip() == "":
                probs.append(f"primary header: missing mandatory keyword {k}")
        if str(ph.get("CONTENT", "")).strip() != "OIFITS2":
            probs.append(f"primary header: CONTENT must be 'OIFITS2'; got {ph.get('CONTENT')!r}")
        names = [h.name for h in hdul[1:]]
        for t in ("OI_TARGET", "OI_ARRAY", "OI_WAVELENGTH"):
            if t not in names:
                probs.append(f"missing table {t}")
        if not any(n in ("OI_VIS", "OI_VIS2", "OI_T3", "OI_FLUX") for n in names):
            probs.append("no data table (OI_VIS, OI_VIS2, OI_T3 or OI_FLUX)")
        arrays = {str(h.header.get("ARRNAME", "")).strip(): h for h in hdul if h.name == "OI_ARRAY"}
        waves = {str(h.header.get("INSNAME", "")).strip(): h for h in hdul if h.name == "OI_WAVELENGTH"}
        target_ids: set[int] = set()
        for h in hdul:
            if h.name == "OI_TARGET" and "TARGET_ID" in h.columns.names:
                target_ids |= {int(i) for i in h.data["TARGET_ID"]}
        for h in hdul[1:]:
            if h.name in REQUIRED:
                probs += _check_table(h, arrays, waves, target_ids)
    return probs


def _check_table(h: Any, arrays: dict, waves: dict, target_ids: set[int]) -> list[str]:
    spec = REQUIRED[h.name]
    where = h.name + (f" {h.header['INSNAME']!r}" if "INSNAME" in h.header and h.name != "OI_WAVELENGTH" else "")
    probs = [f"{where}: missing keyword {k}" for k in spec["keywords"] if k not in h.header]
    revn = h.header.get("OI_REVN")
    if revn is not None and revn != 2:
        probs.append(f"{where}: OI_REVN must be 2 for OIFITS2; got {revn!r}")
    cols = {c.name: c for c in h.columns}
    nwave = None
    if h.name in ("OI_VIS", "OI_VIS2"):
        ins, arr = str(h.header.get("INSNAME", "")).strip(), str(h.header.get("ARRNAME", "")).strip()
        if ins not in waves:
            probs.append(f"{where}: INSNAME {ins!r} matches no OI_WAVELENGTH table")
        else:
            nwave = len(waves[ins].data)
        if arr not in arrays:
            probs.append(f"{where}: ARRNAME {arr!r} matches no OI_ARRAY table")
        elif "STA_INDEX" in cols and "STA_INDEX" in arrays[arr].columns.names:
            known = {int(i) for i in arrays[arr].data["STA_INDEX"]}
            unknown = sorted({int(i) for i in np.asarray(h.data["STA_INDEX"]).reshape(-1)} - known)
            if unknown:
                probs.append(f"{where}: STA_INDEX {unknown[:5]} not in OI_ARRAY {arr!r}")
        if "TARGET_ID" in cols:
            missing = sorted({int(i) for i in h.data["TARGET_ID"]} - target_ids)
            if missing:
                probs.append(f"{where}: TARGET_ID {missing[:5]} not in OI_TARGET")
    for name, (letter, unit) in spec["columns"].items():
        if name not in cols:
            probs.append(f"{where}: missing column {name}")
            continue
        c = cols[name]
        fmt = str(c.format)
        if fmt.lstrip("0123456789")[:1] != letter:
            probs.append(f"{where}: column {name} must be of type {letter}; got {fmt}")
        if (c.unit or None) != unit and not (unit is None and (c.unit or "").strip() == ""):
            probs.append(f"{where}: column {name} must have unit {unit!r}; got {c.unit!r}")
        if nwave is not None and name in _PER_CHANNEL:
            width = int(np.prod(np.asarray(h.data[name]).shape[1:], dtype=np.int64)) if len(h.data) else nwave
            if width != nwave:
                probs.append(f"{where}: column {name} holds {width} channels; INSNAME has NWAVE = {nwave}")
        if (name == "STA_INDEX" and h.name != "OI_ARRAY" and len(h.data)
                and np.asarray(h.data[name]).reshape(len(h.data), -1).shape[1] != 2):
            probs.append(f"{where}: STA_INDEX must hold 2 stations per row")
        if name == "STAXYZ" and len(h.data) and np.asarray(h.data[name]).reshape(len(h.data), -1).shape[1] != 3:
            probs.append(f"{where}: STAXYZ must hold 3 coordinates per row")
    if h.name == "OI_ARRAY" and str(h.header.get("FRAME", "")).strip().upper() not in ("GEOCENTRIC", "SKY"):
        probs.append(f"{where}: FRAME must be 'GEOCENTRIC' or 'SKY'; got {h.header.get('FRAME')!r}")
    return probs


def validate_oifits(path: str | Path) -> None:
    """Raise :class:`OIFITSError` naming the first problem (and how many there are) unless the file is valid OIFITS2."""
    probs = check_oifits(path)
    if probs:
        more = f" (and {len(probs) - 1} more)" if len(probs) > 1 else ""
        raise OIFITSError(f"{path}: not valid OIFITS2: {probs[0]}{more}")
