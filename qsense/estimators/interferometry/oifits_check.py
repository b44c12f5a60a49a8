"""Checking a file against the OIFITS2 standard's required keywords, columns,
types, units and cross references (:func:`check_oifits`, :func:`validate_oifits`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .oifits_spec import _PER_CHANNEL, PRIMARY_KEYWORDS, REQUIRED, OIFITSError, _open

__all__ = ["check_oifits", "validate_oifits"]


def check_oifits(path: str | Path) -> list[str]:
    """Problems that make a file invalid OIFITS2 (empty list: valid).

    Checks the primary header's mandatory keywords and ``CONTENT = 'OIFITS2'``;
    the presence of OI_TARGET, OI_ARRAY, OI_WAVELENGTH and at least one data
    table; every table's required keywords, columns, column types and units
    (:data:`REQUIRED`); per-channel widths against the referenced OI_WAVELENGTH;
    and the cross references (ARRNAME, INSNAME, CORRNAME, TARGET_ID, STA_INDEX).  A file
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
        corrs = {str(h.header.get("CORRNAME", "")).strip() for h in hdul if h.name == "OI_CORR"}
        target_ids: set[int] = set()
        for h in hdul:
            if h.name == "OI_TARGET" and "TARGET_ID" in h.columns.names:
                target_ids |= {int(i) for i in h.data["TARGET_ID"]}
        for h in hdul[1:]:
            if h.name in REQUIRED:
                probs += _check_table(h, arrays, waves, corrs, target_ids)
    return probs


def _check_table(h: Any, arrays: dict, waves: dict, corrs: set[str], target_ids: set[int]) -> list[str]:
    spec = REQUIRED[h.name]
    where = h.name + (f" {h.header['INSNAME']!r}" if "INSNAME" in h.header and h.name != "OI_WAVELENGTH" else "")
    probs = [f"{where}: missing keyword {k}" for k in spec["keywords"] if k not in h.header]
    revn, want = h.header.get("OI_REVN"), spec.get("revn", 2)
    if revn is not None and revn != want:
        probs.append(f"{where}: OI_REVN must be {want} for OIFITS2; got {revn!r}")
    cols = {c.name: c for c in h.columns}
    nwave = None
    if h.name in ("OI_VIS", "OI_VIS2"):
        ins, arr = str(h.header.get("INSNAME", "")).strip(), str(h.header.get("ARRNAME", "")).strip()
        if ins not in waves:
            probs.append(f"{where}: INSNAME {ins!r} matches no OI_WAVELENGTH table")
        else:
            nwave = len(waves[ins].data)
        corr = h.header.get("CORRNAME")
        if corr is not None and str(corr).strip() not in corrs:
            probs.append(f"{where}: CORRNAME {str(corr).strip()!r} matches no OI_CORR table")
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
