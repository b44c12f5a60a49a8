"""Reading any tool's OIFITS (v1 or v2) visibilities back into qsense fit inputs
(:func:`read_oifits`, :class:`OIFITSData`); the conventions are in :mod:`.oifits`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .oifits_spec import OIFITSError, _enu_basis, _geodetic, _open

__all__ = ["OIFITSData", "read_oifits"]


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
    as a dict.  ``vis_cov`` (2N, 2N) is the covariance of ``[Re vis..., Im
    vis...]`` when the file's OI_CORR gives the correlations of RVIS/IVIS (else
    None).  Feed ``fit_binary(d.uv, d.vis, d.vis_err, kind="complex",
    cov=d.vis_cov)`` or ``fit_binary(d.uv2, d.vis2, d.vis2_err, kind="squared")``.
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
    vis_cov: np.ndarray | None = None


#: OI_CORR is read into a dense (2N, 2N) covariance only up to this many complex data
MAX_CORRELATED = 1200


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
                corr = (None, None, None)
                if all(c in cols for c in ("RVIS", "IVIS", "RVISERR", "IVISERR")):
                    if "CORRNAME" in h.header and all(c in cols for c in ("CORRINDX_RVIS", "CORRINDX_IVIS")):
                        step = np.arange(w, dtype=np.int64)
                        ir = (_col(h, "CORRINDX_RVIS", where).astype(np.int64).reshape(n, 1) + step).reshape(-1)
                        ii = (_col(h, "CORRINDX_IVIS", where).astype(np.int64).reshape(n, 1) + step).reshape(-1)
                        corr = (str(h.header["CORRNAME"]).strip(), ir, ii)
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
                                  sta[good], mjd[good],
                                  (corr[0], None if corr[1] is None else corr[1][good], None if corr[2] is None else corr[2][good])))
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
        vis_cov = _covariance(hdul, vis_parts, where)

    def cat(parts: list[tuple], i: int, shape: tuple, dtype: Any) -> np.ndarray:
        return np.concatenate([p[i] for p in parts]) if parts else np.zeros(shape, dtype)

    return OIFITSData(
        cat(vis_parts, 0, (0, 2), float), cat(vis_parts, 1, (0,), complex), cat(vis_parts, 2, (0, 2), float),
        cat(vis_parts, 3, (0,), float), cat(vis_parts, 4, (0, 2), np.int64), cat(vis_parts, 5, (0,), float),
        cat(vis2_parts, 0, (0, 2), float), cat(vis2_parts, 1, (0,), float), cat(vis2_parts, 2, (0,), float),
        cat(vis2_parts, 3, (0,), float), cat(vis2_parts, 4, (0, 2), np.int64), cat(vis2_parts, 5, (0,), float),
        stations, targets, header, flagged, vis_cov,
    )


def _corr_tables(hdul: Any, where: str) -> dict[str, tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """CORRNAME -> (NDATA, IINDX, JINDX, CORR) of every OI_CORR table, checked."""
    out = {}
    for h in hdul:
        if h.name != "OI_CORR":
            continue
        name = str(h.header.get("CORRNAME", "")).strip()
        nd = h.header.get("NDATA")
        if not isinstance(nd, int) or not 0 < nd <= 10**7:
            raise OIFITSError(f"{where}: OI_CORR {name!r}: NDATA must be a positive integer; got {nd!r}")
        i = _col(h, "IINDX", where).astype(np.int64).reshape(-1)
        j = _col(h, "JINDX", where).astype(np.int64).reshape(-1)
        c = _col(h, "CORR", where).astype(np.float64).reshape(-1)
        if i.size and (min(i.min(), j.min()) < 1 or max(i.max(), j.max()) > nd):
            raise OIFITSError(f"{where}: OI_CORR {name!r}: IINDX/JINDX outside 1..NDATA = {nd}")
        if not np.all(np.isfinite(c) & (np.abs(c) <= 1.0 + 1e-9)):
            raise OIFITSError(f"{where}: OI_CORR {name!r}: CORR must be correlation coefficients in [-1, 1]")
        out[name] = (nd, i, j, c)
    return out


def _covariance(hdul: Any, parts: list[tuple], where: str) -> np.ndarray | None:
    """(2N, 2N) covariance of [Re..., Im...] of the kept complex data, from OI_CORR (None without correlations)."""
    if not any(p[6][0] is not None for p in parts):
        return None
    corrs = _corr_tables(hdul, where)
    err = np.concatenate([p[2] for p in parts])
    N = len(err)
    if N > MAX_CORRELATED:
        return None
    sd = np.concatenate([err[:, 0], err[:, 1]])
    # qsense's Im is minus the file's IVIS: flip the sign of every Re-Im correlation
    sign = np.concatenate([np.ones(N), -np.ones(N)])
    C = np.diag(sd**2)
    lo = 0
    for p in parts:
        name, ir, ii = p[6]
        k = len(p[2])
        if name is not None and k:
            if name not in corrs:
                raise OIFITSError(f"{where}: OI_VIS refers to CORRNAME {name!r}, which no OI_CORR table defines")
            nd, i, j, c = corrs[name]
            if min(ir.min(), ii.min()) < 1 or max(ir.max(), ii.max()) > nd:
                raise OIFITSError(f"{where}: CORRINDX_RVIS/IVIS outside 1..NDATA = {nd} of OI_CORR {name!r}")
            pos = np.full(nd + 1, -1, dtype=np.int64)
            g = np.arange(lo, lo + k)
            pos[ir], pos[ii] = g, N + g
            a, b = pos[i], pos[j]
            ok = (a >= 0) & (b >= 0) & (a != b)
            a, b, r = a[ok], b[ok], c[ok]
            v = r * sd[a] * sd[b] * sign[a] * sign[b]
            C[a, b] = v
            C[b, a] = v
        lo += k
    return C


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
