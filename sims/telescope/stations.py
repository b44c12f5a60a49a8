"""Real interferometer layouts by name: the station table ``stations.toml`` (CHARA,
VLTI; sources cited there) and :func:`named_array`, which turns a name such as
``"chara"``, ``"vlti-small"`` or an explicit ``"vlti:A0,G1,J2,K0"`` into a
:class:`StationLayout` (positions in metres East/North, station and telescope
names, diameters and the site), ready for :class:`~.array.TelescopeArray` and
the OIFITS writer."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from .array import TelescopeArray

__all__ = ["StationLayout", "UnknownArrayError", "array_names", "named_array"]


class UnknownArrayError(ValueError):
    """An array name (or a station of an explicit ``site:stations`` list) that the table does not hold."""


@dataclass(frozen=True)
class StationLayout:
    """A real array's stations in telescope order.

    ``positions`` float64 (M, 2) metres (East, North) from the site's reference
    point; ``up`` (M,) metres; ``stations`` / ``telescopes`` names; ``diameters``
    (M,) metres; ``site`` = (WGS84 latitude deg, longitude deg, height m);
    ``arrname`` the interferometer (OI_ARRAY's ARRNAME); ``reference`` the source.
    """

    name: str
    arrname: str
    positions: np.ndarray
    up: np.ndarray
    stations: tuple[str, ...]
    telescopes: tuple[str, ...]
    diameters: np.ndarray
    site: tuple[float, float, float]
    reference: str
    description: str = ""

    @property
    def M(self) -> int:
        """Number of telescopes."""
        return int(self.positions.shape[0])

    def telescope_array(self, wavelength: float, apertures: bool = False) -> TelescopeArray:
        """The layout observing at ``wavelength`` (m); ``apertures=True`` weights telescopes by
        collecting area (diameter^2), otherwise all count equally."""
        ap = self.diameters**2 if apertures else None
        return TelescopeArray(self.positions, wavelength, ap)

    def oifits_kwargs(self) -> dict[str, Any]:
        """Keyword arguments describing this array for
        :func:`qsense.estimators.interferometry.oifits.write_oifits`."""
        return {"station_names": list(self.stations), "telescope_names": list(self.telescopes),
                "diameters": self.diameters.tolist(), "site": self.site, "arrname": self.arrname,
                "telescop": self.arrname}


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    try:
        text = resources.files(__package__).joinpath("stations.toml").read_text(encoding="utf-8")
    except FileNotFoundError:
        # package data left out of the installation (pyproject's [tool.setuptools.package-data])
        raise UnknownArrayError("the station table stations.toml is missing from this qsense installation") from None
    return tomllib.loads(text)


def array_names() -> list[str]:
    """The named layouts (sorted); ``SITE:ST1,ST2,...`` picks stations of a site (``chara``, ``vlti``) freely."""
    return sorted(_table()["arrays"])


def _known() -> str:
    sites = ", ".join(sorted(_table()["sites"]))
    return f"known arrays: {', '.join(array_names())}; or SITE:STATION,... with SITE one of {sites}"


def named_array(name: str) -> StationLayout:
    """The layout called ``name`` (case-insensitive): one of :func:`array_names`, or
    ``"SITE:ST1,ST2,..."`` for chosen stations of a site (e.g. ``"vlti:A0,G1,J2,K0"``).

    Raises :class:`UnknownArrayError` (a ``ValueError``) naming the known arrays,
    or the known stations of the site.
    """
    table = _table()
    key = str(name).strip().lower()
    if ":" in key:
        site_key, _, rest = key.partition(":")
        wanted = [s.strip().upper() for s in rest.split(",") if s.strip()]
        description = f"{site_key.upper()} stations {'-'.join(wanted)}"
    elif key in table["arrays"]:
        entry = table["arrays"][key]
        site_key, wanted, description = entry["site"], list(entry["stations"]), entry.get("description", "")
    else:
        raise UnknownArrayError(f"unknown array {name!r}; {_known()}")
    if site_key not in table["sites"]:
        raise UnknownArrayError(f"unknown site {site_key!r} in {name!r}; {_known()}")
    site = table["sites"][site_key]
    stations = site["stations"]
    missing = [s for s in wanted if s not in stations]
    if missing:
        raise UnknownArrayError(f"{site['name']} has no station {', '.join(missing)}; its stations: {', '.join(stations)}")
    if len(wanted) < 2 or len(set(wanted)) != len(wanted):
        raise UnknownArrayError(f"{name!r}: need at least two distinct stations")
    rows = [stations[s] for s in wanted]
    return StationLayout(
        name=key, arrname=site["name"],
        positions=np.array([[r["east"], r["north"]] for r in rows], dtype=np.float64),
        up=np.array([r.get("up", 0.0) for r in rows], dtype=np.float64),
        stations=tuple(wanted), telescopes=tuple(r["telescope"] for r in rows),
        diameters=np.array([r["diameter"] for r in rows], dtype=np.float64),
        site=(float(site["latitude"]), float(site["longitude"]), float(site["height"])),
        reference=site["reference"], description=description,
    )
