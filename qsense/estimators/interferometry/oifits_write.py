"""Writing qsense's visibility estimates as an OIFITS2 file (:func:`write_oifits`);
the conventions are in :mod:`.oifits`."""

from __future__ import annotations

import math
import time as _time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .oifits_spec import OIFITSError, _enu_basis, _fits, _geocentric
from .results import SquaredVisibilityEstimate, VisibilityEstimate

__all__ = ["write_oifits"]


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
    correlations: bool = True,
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

    Correlations: when ``vis.full_cov`` is set (the cross-pair covariance of
    ``[Re V_1..Re V_P, Im V_1..Im V_P]``) and ``correlations`` is True, an
    OI_CORR table (``CORRNAME = 'QSENSE_VIS'``) holds its correlation
    coefficients and OI_VIS points at it (``CORRINDX_RVIS = p + 1``,
    ``CORRINDX_IVIS = P + p + 1`` for row p), so a reader can rebuild it from
    the errors and fit with the full covariance.
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
        corr = _corr_hdu(fits, vis.full_cov, "QSENSE_VIS") if correlations and vis.full_cov is not None else None
        hdus.append(_vis_hdu(fits, pos, _pairs_of(vis, M), vis, mjd, int_time, common, corr is not None))
        if corr is not None:
            hdus.append(corr)
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


def _corr_hdu(fits, full: np.ndarray, name: str) -> Any | None:
    """OI_CORR of a covariance matrix: its off-diagonal correlation coefficients, 1-based indices (None if unusable)."""
    C = np.asarray(full, dtype=np.float64)
    sd = np.sqrt(np.diag(C))
    if C.ndim != 2 or C.shape[0] != C.shape[1] or not np.all(np.isfinite(C)) or np.any(~(sd > 0)):
        return None
    i, j = np.triu_indices(len(C), 1)
    r = C[i, j] / (sd[i] * sd[j])
    keep = r != 0.0  # OI_CORR lists the non-zero elements only
    hdu = fits.BinTableHDU.from_columns([
        fits.Column("IINDX", "1J", array=(i[keep] + 1).astype(np.int32)),
        fits.Column("JINDX", "1J", array=(j[keep] + 1).astype(np.int32)),
        fits.Column("CORR", "1D", array=np.clip(r[keep], -1.0, 1.0)),
    ], name="OI_CORR")
    hdu.header["OI_REVN"] = 1
    hdu.header["CORRNAME"] = name
    hdu.header["NDATA"] = len(C)
    return hdu


def _vis_hdu(fits, pos, pairs, vis: VisibilityEstimate, mjd, int_time, common, correlated: bool = False) -> Any:
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
    P = len(pairs)
    if correlated:
        # full_cov orders [Re_1..Re_P, Im_1..Im_P]: row p's RVIS is datum p + 1, its IVIS datum P + p + 1
        cols += [fits.Column("CORRINDX_RVIS", "1J", array=np.arange(1, P + 1, dtype=np.int32)),
                 fits.Column("CORRINDX_IVIS", "1J", array=np.arange(P + 1, 2 * P + 1, dtype=np.int32))]
    hdu = _headed(fits.BinTableHDU.from_columns(cols, name="OI_VIS"), common)
    if correlated:
        hdu.header["CORRNAME"] = "QSENSE_VIS"
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
