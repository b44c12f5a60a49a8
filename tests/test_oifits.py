"""OIFITS2 export and import (qsense.estimators.interferometry.oifits), real arrays by
name (qsense.sims.telescope.stations), ``qsense oifits`` and ``qsense demo --array/--oifits``.

The file is read back with astropy directly and checked against the standard's
required keywords and columns as listed here (Duvert et al. 2017, A&A 597, A8),
independently of the writer's own table; the sign convention is checked against
the standard's formula V(u) = int I(s) e^{-2 pi i u.s/lambda} evaluated on the
file's own UCOORD/VCOORD."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from astropy.io import fits

from qsense.apps.cli import main
from qsense.estimators.interferometry import (
    MAS,
    SquaredVisibilityEstimate,
    SquaredVisibilityEstimator,
    VisibilityEstimate,
    VisibilityEstimator,
    all_pairs,
    fit_binary,
    squared_visibility_observables,
    visibility_observables,
)
from qsense.estimators.interferometry.oifits import OIFITSError, check_oifits, read_oifits, validate_oifits, write_oifits
from qsense.sims.telescope import BinaryStar, PointSource, TelescopeArray, TelescopeSim, demo_array, named_array
from qsense.sims.telescope.stations import UnknownArrayError, array_names

LAM = 800e-9

# The standard's mandatory primary keywords and, per table, required columns: TFORM letter and unit
PRIMARY = ["ORIGIN", "DATE", "DATE-OBS", "CONTENT", "TELESCOP", "INSTRUME", "OBSERVER", "INSMODE", "OBJECT"]
COLUMNS = {
    "OI_TARGET": [("TARGET_ID", "I", ""), ("TARGET", "A", ""), ("RAEP0", "D", "deg"), ("DECEP0", "D", "deg"),
                  ("EQUINOX", "E", "yr"), ("RA_ERR", "D", "deg"), ("DEC_ERR", "D", "deg"), ("SYSVEL", "D", "m/s"),
                  ("VELTYP", "A", ""), ("VELDEF", "A", ""), ("PMRA", "D", "deg/yr"), ("PMDEC", "D", "deg/yr"),
                  ("PMRA_ERR", "D", "deg/yr"), ("PMDEC_ERR", "D", "deg/yr"), ("PARALLAX", "E", "deg"),
                  ("PARA_ERR", "E", "deg"), ("SPECTYP", "A", "")],
    "OI_ARRAY": [("TEL_NAME", "A", ""), ("STA_NAME", "A", ""), ("STA_INDEX", "I", ""), ("DIAMETER", "E", "m"),
                 ("STAXYZ", "D", "m")],
    "OI_WAVELENGTH": [("EFF_WAVE", "E", "m"), ("EFF_BAND", "E", "m")],
    "OI_VIS": [("TARGET_ID", "I", ""), ("TIME", "D", "s"), ("MJD", "D", "day"), ("INT_TIME", "D", "s"),
               ("VISAMP", "D", ""), ("VISAMPERR", "D", ""), ("VISPHI", "D", "deg"), ("VISPHIERR", "D", "deg"),
               ("UCOORD", "D", "m"), ("VCOORD", "D", "m"), ("STA_INDEX", "I", ""), ("FLAG", "L", "")],
    "OI_VIS2": [("TARGET_ID", "I", ""), ("TIME", "D", "s"), ("MJD", "D", "day"), ("INT_TIME", "D", "s"),
                ("VIS2DATA", "D", ""), ("VIS2ERR", "D", ""), ("UCOORD", "D", "m"), ("VCOORD", "D", "m"),
                ("STA_INDEX", "I", ""), ("FLAG", "L", "")],
}
KEYWORDS = {"OI_ARRAY": ["ARRNAME", "FRAME", "ARRAYX", "ARRAYY", "ARRAYZ"], "OI_WAVELENGTH": ["INSNAME"],
            "OI_VIS": ["DATE-OBS", "ARRNAME", "INSNAME"], "OI_VIS2": ["DATE-OBS", "ARRNAME", "INSNAME"], "OI_TARGET": []}


def _sim(source, M=6, seed=0, positions=None):
    pos = demo_array(M) if positions is None else positions
    return TelescopeSim(TelescopeArray(pos, LAM), source, seed=seed)


def _single(sim, n=20000) -> VisibilityEstimate:
    est = VisibilityEstimator(sim.array.M)
    est.update(sim.shadows(sim.photons(count=n)))
    return est.estimate()


def _double(sim, n=20000) -> SquaredVisibilityEstimate:
    est = SquaredVisibilityEstimator(sim.array.M)
    ph = sim.photons(count=n)
    est.update(sim.bell(ph[0::2], ph[1::2]))
    return est.estimate()


def _file_truth(source, u_m: np.ndarray, v_m: np.ndarray, lam: float) -> np.ndarray:
    """The standard's V at the file's (UCOORD, VCOORD): int I e^{-2 pi i u.s / lambda} = gamma_qsense(-u / lambda)."""
    return source.visibility(-np.stack([u_m, v_m], axis=1) / lam)


# -- the file's contents ---------------------------------------------------------------------
def test_every_required_keyword_and_column_with_units_types_and_errors(tmp_path):
    src = BinaryStar(3.0 * MAS, math.radians(60.0), 0.5)
    sim = _sim(src, M=6, seed=1)
    single, double = _single(sim), _double(sim)
    f = write_oifits(tmp_path / "v.oifits", sim.array.positions, LAM, single, double, target="HD 1234", ra=10.5,
                     dec=-20.25, mjd=60300.25, int_time=12.0)
    with fits.open(f) as h:
        names = [x.name for x in h]
        assert names[0] == "PRIMARY" and set(COLUMNS) <= set(names)
        ph = h[0].header
        for k in PRIMARY:
            assert str(ph[k]).strip(), k
        assert ph["CONTENT"] == "OIFITS2"
        assert ph["OBJECT"] == "HD 1234" and ph["DATE-OBS"].startswith("2023-12-22T05:59:54")
        for table, cols in COLUMNS.items():
            t = h[table]
            assert t.header["OI_REVN"] == 2, table
            for k in KEYWORDS[table]:
                assert k in t.header, (table, k)
            for name, letter, unit in cols:
                c = t.columns[name]
                assert str(c.format).lstrip("0123456789")[0] == letter, (table, name, c.format)
                assert (c.unit or "") == unit, (table, name, c.unit)
        assert h["OI_ARRAY"].header["FRAME"] == "SKY"  # no site given: positions are (East, North, 0)
        vis, vis2, wl, tgt, arr = h["OI_VIS"].data, h["OI_VIS2"].data, h["OI_WAVELENGTH"].data, h["OI_TARGET"].data, h["OI_ARRAY"].data
        P = len(all_pairs(6))
        assert len(vis) == len(vis2) == P and len(arr) == 6
        assert h["OI_VIS"].columns["STA_INDEX"].format == "2I"
        assert np.isclose(wl["EFF_WAVE"][0], LAM, rtol=1e-6) and wl["EFF_BAND"][0] > 0
        assert tgt["TARGET"][0] == "HD 1234" and tgt["RAEP0"][0] == 10.5 and tgt["DECEP0"][0] == -20.25
        assert np.all(vis["MJD"] == 60300.25) and np.all(vis["INT_TIME"] == 12.0) and np.all(vis2["TARGET_ID"] == 1)
        # UCOORD/VCOORD in metres: station 2 minus station 1 of STA_INDEX (1-based into OI_ARRAY)
        sta = vis["STA_INDEX"]
        xyz = {int(i): p for i, p in zip(arr["STA_INDEX"], arr["STAXYZ"])}
        d = np.array([xyz[b][:2] - xyz[a][:2] for a, b in sta])
        assert np.allclose(np.stack([vis["UCOORD"], vis["VCOORD"]], axis=1), d)
        assert np.all(sta[:, 0] < sta[:, 1]) and sta.min() == 1 and sta.max() == 6
        # errors: present, positive, and the estimators' own
        assert np.allclose(vis["RVISERR"], single.stderr_re) and np.allclose(vis["IVISERR"], single.stderr_im)
        assert np.allclose(vis["VISAMPERR"], single.amplitude_err) and np.all(vis["VISPHIERR"] > 0)
        assert np.allclose(vis["VISAMP"], np.abs(single.values))
        assert np.allclose(vis2["VIS2DATA"], double.values) and np.allclose(vis2["VIS2ERR"], double.stderr)
        assert not vis["FLAG"].any() and not vis2["FLAG"].any()
    assert check_oifits(f) == []


def test_errors_cover_the_truth_at_the_stated_rate_in_the_files_convention(tmp_path):
    src = BinaryStar(2.5 * MAS, math.radians(200.0), 0.6)
    sim = _sim(src, M=9, seed=4)  # 36 baselines
    f = write_oifits(tmp_path / "v.oifits", sim.array.positions, LAM, _single(sim, 30000), _double(sim, 30000))
    with fits.open(f) as h:
        v, v2 = h["OI_VIS"].data, h["OI_VIS2"].data
        truth = _file_truth(src, v["UCOORD"], v["VCOORD"], LAM)
        z = np.concatenate([(v["RVIS"] - truth.real) / v["RVISERR"], (v["IVIS"] - truth.imag) / v["IVISERR"]])
        z2 = (v2["VIS2DATA"] - np.abs(_file_truth(src, v2["UCOORD"], v2["VCOORD"], LAM)) ** 2) / v2["VIS2ERR"]
    # one-sigma errors: ~95% within 2 sigma for 72 and 36 numbers
    assert np.mean(np.abs(z) < 2) > 0.85 and np.mean(np.abs(z) < 3) > 0.97
    assert np.mean(np.abs(z2) < 2) > 0.8
    # and not inflated: the pulls have unit spread
    assert 0.7 < np.std(z) < 1.3
    # without a two-copy estimate OI_VIS2 holds the single-copy |V|^2 (noise power removed) and its error
    g = write_oifits(tmp_path / "s.oifits", sim.array.positions, LAM, _single(sim, 30000))
    with fits.open(g) as h:
        v2 = h["OI_VIS2"].data
        z3 = (v2["VIS2DATA"] - np.abs(_file_truth(src, v2["UCOORD"], v2["VCOORD"], LAM)) ** 2) / v2["VIS2ERR"]
    # (pulls of pairs sharing a telescope are correlated, so their mean scatters more than 1/sqrt(36))
    assert np.mean(np.abs(z3) < 2) > 0.8 and 0.6 < np.std(z3) < 1.4 and abs(np.mean(z3)) < 0.6


def test_point_source_offset_gives_the_standards_phase_sign(tmp_path):
    off = (2.0 * MAS, 1.0 * MAS)  # East and North of the phase centre
    sim = _sim(PointSource(off), M=5, seed=2)
    exact = VisibilityEstimate(all_pairs(5), sim.true_visibilities(), np.tile(np.eye(2) * 1e-6, (10, 1, 1)), 10**6)
    f = write_oifits(tmp_path / "p.oifits", sim.array.positions, LAM, exact)
    with fits.open(f) as h:
        v = h["OI_VIS"].data
        u, w = v["UCOORD"], v["VCOORD"]
        # OIFITS: V = exp(-2 pi i (u alpha + v delta) / lambda), phase in degrees
        want = np.degrees(-2 * np.pi * (u * off[0] + w * off[1]) / LAM)
        dphi = (v["VISPHI"] - want + 180.0) % 360.0 - 180.0
        assert np.all(np.abs(dphi) < 1e-6)
        assert np.allclose(v["RVIS"] + 1j * v["IVIS"], np.exp(1j * np.radians(want)))
        # a baseline pointing East sees a source East of centre with a negative phase (the standard's sign)
        east = (u > 0) & (np.abs(w) < 0.3 * np.abs(u))
        if east.any():
            assert np.all(np.sin(np.radians(v["VISPHI"][east])) * np.sign(u[east] * off[0]) < 0)
    # and the same from a real estimate, within its errors
    f2 = write_oifits(tmp_path / "p2.oifits", sim.array.positions, LAM, _single(sim, 20000))
    with fits.open(f2) as h:
        v = h["OI_VIS"].data
        want = np.degrees(-2 * np.pi * (v["UCOORD"] * off[0] + v["VCOORD"] * off[1]) / LAM)
        dphi = (v["VISPHI"] - want + 180.0) % 360.0 - 180.0
        assert np.all(np.abs(dphi) < 4 * v["VISPHIERR"])


@pytest.mark.parametrize("pa", [60.0, 250.0])
def test_binary_position_angle_survives_export_and_fit_from_the_file(tmp_path, pa):
    src = BinaryStar(3.0 * MAS, math.radians(pa), 0.5)
    sim = _sim(src, M=6, seed=5)
    single = _single(sim, 25000)
    uv = sim.array.uv(single.pairs)
    mem = fit_binary(uv, single.values, single.stderr, kind="complex")
    f = write_oifits(tmp_path / "b.oifits", sim.array.positions, LAM, single)
    d = read_oifits(f)
    disk = fit_binary(d.uv, d.vis, d.vis_err, kind="complex")
    (s0, es), (p0, ep), (r0, er) = mem["separation"], mem["position_angle"], mem["flux_ratio"]
    assert abs(p0 - pa) < 4 * ep and abs(s0 - 3.0) < 4 * es and abs(r0 - 0.5) < 4 * er  # the fit from memory is right
    # the fit from the file is the same fit (float32 EFF_WAVE: 1e-7 relative)
    assert abs(disk["position_angle"][0] - p0) < 0.01 and abs(disk["separation"][0] - s0) < 1e-3
    assert abs(disk["flux_ratio"][0] - r0) < 1e-3
    # a reader that forgot the conjugation would put the companion on the other side: PA + 180
    wrong = fit_binary(d.uv, np.conj(d.vis), d.vis_err, kind="complex")
    assert abs((wrong["position_angle"][0] - p0) % 360.0 - 180.0) < 1.0


def test_cross_pair_correlations_travel_in_oi_corr(tmp_path):
    src = BinaryStar(3.0 * MAS, math.radians(60.0), 0.5)
    sim = _sim(src, M=6, seed=7)
    single = _single(sim, 20000)
    assert single.full_cov is not None
    f = write_oifits(tmp_path / "c.oifits", sim.array.positions, LAM, single)
    with fits.open(f) as h:
        c, v = h["OI_CORR"], h["OI_VIS"]
        assert c.header["OI_REVN"] == 1 and c.header["NDATA"] == 30 and v.header["CORRNAME"] == c.header["CORRNAME"]
        assert list(v.data["CORRINDX_RVIS"]) == list(range(1, 16)) and list(v.data["CORRINDX_IVIS"]) == list(range(16, 31))
        # the stored coefficients are the estimator's correlations
        sd = np.sqrt(np.diag(single.full_cov))
        R = single.full_cov / np.outer(sd, sd)
        assert np.allclose(c.data["CORR"], R[c.data["IINDX"] - 1, c.data["JINDX"] - 1])
        assert len(c.data) > 50  # pairs sharing a telescope are correlated
    assert check_oifits(f) == []
    d = read_oifits(f)
    flip = np.diag(np.r_[np.ones(15), -np.ones(15)])  # qsense's Im is minus the file's IVIS
    assert np.allclose(d.vis_cov, flip @ single.full_cov @ flip, rtol=1e-9, atol=1e-15)
    mem = fit_binary(sim.array.uv(single.pairs), single.values, single.stderr, cov=single.full_cov)
    disk = fit_binary(d.uv, d.vis, d.vis_err, cov=d.vis_cov)
    assert np.allclose(disk.stderr, mem.stderr, rtol=1e-4) and abs(disk["position_angle"][0] - mem["position_angle"][0]) < 0.01
    # without correlations the file has no OI_CORR and the reader none either
    g = write_oifits(tmp_path / "n.oifits", sim.array.positions, LAM, single, correlations=False)
    assert read_oifits(g).vis_cov is None
    # a hostile OI_CORR: indices outside NDATA
    with fits.open(f) as h:
        bad = h["OI_CORR"].copy()
        bad.data["IINDX"][0] = 999
        fits.HDUList([x.copy() for x in h if x.name != "OI_CORR"] + [bad]).writeto(tmp_path / "bad.oifits")
    with pytest.raises(OIFITSError, match="IINDX/JINDX outside 1..NDATA = 30"):
        read_oifits(tmp_path / "bad.oifits")


def test_squared_visibilities_round_trip_and_fit(tmp_path):
    src = BinaryStar(3.0 * MAS, math.radians(60.0), 0.5)
    sim = _sim(src, M=6, seed=6)
    double = _double(sim, 30000)
    f = write_oifits(tmp_path / "s.oifits", sim.array.positions, LAM, vis2=double)
    d = read_oifits(f)
    assert d.vis.size == 0 and np.allclose(d.vis2, double.values) and np.allclose(d.vis2_err, double.stderr)
    uv = sim.array.uv(double.pairs)
    a = fit_binary(uv, double.values, double.stderr, kind="squared")
    b = fit_binary(d.uv2, d.vis2, d.vis2_err, kind="squared")
    assert np.allclose(a.values, b.values, rtol=1e-4, atol=1e-3)


def test_flags_and_a_64_telescope_array(tmp_path):
    M = 64
    pos = demo_array(M)
    p = all_pairs(M)
    rng = np.random.default_rng(0)
    vals = np.exp(1j * rng.uniform(-np.pi, np.pi, len(p))) * 0.5
    cov = np.tile(np.eye(2) * 1e-3, (len(p), 1, 1))
    cov[7] = 0.0  # an unusable error bar
    vals[9] = np.nan
    f = write_oifits(tmp_path / "big.oifits", pos, LAM, VisibilityEstimate(p, vals, cov, 5000))
    with fits.open(f) as h:
        flag = h["OI_VIS"].data["FLAG"]
        assert len(flag) == 2016 and flag[7] and flag[9] and flag.sum() == 2
        assert h["OI_VIS2"].data["FLAG"][9]
    d = read_oifits(f)
    assert len(d.vis) == 2014 and d.flagged >= 2 and len(d.stations) == 64
    assert check_oifits(f) == []


def test_geocentric_array_table_gives_back_east_north(tmp_path):
    lay = named_array("vlti-large")
    sim = _sim(PointSource(), positions=lay.positions)
    f = write_oifits(tmp_path / "g.oifits", lay.positions, LAM, _single(sim, 3000), **lay.oifits_kwargs())
    with fits.open(f) as h:
        a = h["OI_ARRAY"]
        assert a.header["FRAME"] == "GEOCENTRIC" and a.header["ARRNAME"] == "VLTI"
        # ARRAYX/Y/Z: Paranal, 6375 km from the Earth's centre
        r = math.sqrt(sum(a.header[k] ** 2 for k in ("ARRAYX", "ARRAYY", "ARRAYZ")))
        assert 6.37e6 < r < 6.38e6
        assert [s.strip() for s in a.data["STA_NAME"]] == ["A0", "G1", "J2", "J3"]
        assert np.allclose(a.data["DIAMETER"], 1.8)
    st = read_oifits(f).stations
    en = np.array([[st[i + 1][1], st[i + 1][2]] for i in range(4)])
    assert np.allclose(en, lay.positions, atol=1e-3)
    assert check_oifits(f) == []


# -- real arrays -----------------------------------------------------------------------------------
def test_named_arrays_have_the_published_baselines():
    def lengths(name):
        p = named_array(name).positions
        d = p[:, None] - p[None]
        return np.hypot(d[..., 0], d[..., 1])[np.triu_indices(len(p), 1)]

    chara = named_array("CHARA")
    assert chara.stations == ("S1", "S2", "E1", "E2", "W1", "W2") and chara.M == 6
    # CHARA: shortest baseline 34 m (S1-S2), longest 331 m (S1-E1) (ten Brummelaar et al. 2005)
    assert abs(lengths("chara").min() - 34.1) < 0.1 and abs(lengths("chara").max() - 330.7) < 0.1
    # VLTI UTs: 47 m (U2-U3) to 130 m (U1-U4)
    assert abs(lengths("vlti-ut").min() - 46.6) < 0.1 and abs(lengths("vlti-ut").max() - 130.2) < 0.1
    assert named_array("vlti-at").M == 30 and set(named_array("vlti:A0,K0").stations) == {"A0", "K0"}
    assert {"chara", "vlti-ut", "vlti-small", "vlti-medium", "vlti-large"} <= set(array_names())
    with pytest.raises(UnknownArrayError, match="known arrays: chara"):
        named_array("keck")
    with pytest.raises(UnknownArrayError, match="no station ZZ; its stations: A0"):
        named_array("vlti:A0,ZZ")
    with pytest.raises(UnknownArrayError, match="two distinct"):
        named_array("vlti:A0,A0")
    arr = named_array("vlti-ut").telescope_array(LAM, apertures=True)
    assert arr.M == 4 and np.allclose(arr.apertures, 8.2**2)


@pytest.mark.slow  # a whole demo run (~6 s on a quiet machine)
def test_demo_with_a_real_array_writes_a_valid_oifits(tmp_path, capsys):
    out = tmp_path / "d"
    rc = main(["demo", "--duration", "1.5", "--array", "chara", "--oifits", "--out", str(out), "--seed", "3",
               "--no-plot", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "by 6 telescopes" in text and "visibilities.oifits" in text
    f = out / "visibilities.oifits"
    validate_oifits(f)
    lay = named_array("chara")
    with fits.open(f) as h:
        assert h["OI_ARRAY"].header["ARRNAME"] == "CHARA" and len(h["OI_VIS"].data) == 15
        assert [s.strip() for s in h["OI_ARRAY"].data["STA_NAME"]] == list(lay.stations)
        assert np.isclose(h["OI_VIS"].data["INT_TIME"][0], 1.5)
    doc = json.loads((out / "results.json").read_text())
    assert np.allclose(doc["telescopes"], lay.positions)
    d = read_oifits(f)
    # the file's visibilities, back in qsense's convention, are the demo's own estimates
    s = doc["single_copy"]
    idx = {tuple(p): i for i, p in enumerate(doc["pairs"])}
    order = [idx[(a - 1, b - 1)] for a, b in d.vis_sta_index]
    v_demo = np.array(s["re"])[order] + 1j * np.array(s["im"])[order]
    assert np.allclose(np.conj(d.vis), v_demo)  # same baseline, the file's u = -B: gamma(-B) = conj gamma(B)


def test_demo_unknown_array_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--array", "keck", "--duration", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown array 'keck'" in err and "chara" in err and "vlti-small" in err


# -- reading what others wrote, and hostile files ----------------------------------------------------
def _minimal_other_tool_file(path, nwave=3, amp_phase_only=True):
    """A file as another tool writes it: several channels, VISAMP/VISPHI only, its own baseline orientation."""
    src = BinaryStar(4.0 * MAS, math.radians(120.0), 0.4)
    rng = np.random.default_rng(3)
    lam = np.array([1.6e-6, 1.65e-6, 1.7e-6])[:nwave]
    B = rng.uniform(-100, 100, size=(12, 2))  # metres, arbitrary orientation
    V = np.stack([src.visibility(-B / lm) for lm in lam], axis=1)  # the standard's convention at +B
    err = 0.01
    noisy = V + err * (rng.standard_normal(V.shape) + 1j * rng.standard_normal(V.shape))
    cols = [fits.Column("TARGET_ID", "1I", array=np.ones(12, np.int16)), fits.Column("TIME", "1D", array=np.zeros(12)),
            fits.Column("MJD", "1D", array=np.full(12, 60000.0)), fits.Column("INT_TIME", "1D", array=np.ones(12)),
            fits.Column("VISAMP", f"{nwave}D", array=np.abs(noisy)), fits.Column("VISAMPERR", f"{nwave}D", array=np.full(V.shape, err)),
            fits.Column("VISPHI", f"{nwave}D", array=np.degrees(np.angle(noisy))),
            fits.Column("VISPHIERR", f"{nwave}D", array=np.degrees(err / np.abs(noisy))),
            fits.Column("UCOORD", "1D", array=B[:, 0]), fits.Column("VCOORD", "1D", array=B[:, 1]),
            fits.Column("STA_INDEX", "2I", array=np.tile(np.array([1, 2], np.int16), (12, 1))),
            fits.Column("FLAG", f"{nwave}L", array=np.zeros(V.shape, bool))]
    vis = fits.BinTableHDU.from_columns(cols, name="OI_VIS")
    vis.header["INSNAME"] = "OTHER"
    wl = fits.BinTableHDU.from_columns([fits.Column("EFF_WAVE", "1E", array=lam.astype(np.float32)),
                                        fits.Column("EFF_BAND", "1E", array=np.full(nwave, 5e-8, np.float32))],
                                       name="OI_WAVELENGTH")
    wl.header["INSNAME"] = "OTHER"
    fits.HDUList([fits.PrimaryHDU(), wl, vis]).writeto(path, overwrite=True)
    return src


def test_a_multichannel_file_from_another_tool_is_fitted(tmp_path):
    f = tmp_path / "other.fits"
    _minimal_other_tool_file(f)
    d = read_oifits(f)
    assert d.uv.shape == (36, 2) and np.allclose(d.vis_wavelength[:3], [1.6e-6, 1.65e-6, 1.7e-6], rtol=1e-6)
    fit = fit_binary(d.uv, d.vis, d.vis_err, kind="complex")
    assert abs(fit["position_angle"][0] - 120.0) < 3.0 and abs(fit["separation"][0] - 4.0) < 0.2
    probs = check_oifits(f)  # not OIFITS2: the checker says what is missing
    assert any("CONTENT" in p for p in probs) and any("missing table OI_TARGET" in p for p in probs)


def test_checker_names_a_missing_column_a_wrong_unit_and_a_bad_reference(tmp_path):
    sim = _sim(PointSource(), M=4)
    f = write_oifits(tmp_path / "ok.oifits", sim.array.positions, LAM, _single(sim, 2000))
    with fits.open(f) as h:
        cols = [c for c in h["OI_VIS"].columns if c.name != "VISPHIERR"]
        vis = fits.BinTableHDU.from_columns(cols, header=h["OI_VIS"].header, name="OI_VIS")
        vis.columns["UCOORD"].unit = "km"
        vis.header["INSNAME"] = "NOPE"
        hs = fits.HDUList([h[0].copy(), h["OI_TARGET"].copy(), h["OI_ARRAY"].copy(), h["OI_WAVELENGTH"].copy(), vis])
        hs[0].header["CONTENT"] = "OIFITS1"
        hs.writeto(tmp_path / "bad.oifits")
    probs = check_oifits(tmp_path / "bad.oifits")
    text = "\n".join(probs)
    assert "missing column VISPHIERR" in text and "UCOORD must have unit 'm'" in text
    assert "INSNAME 'NOPE' matches no OI_WAVELENGTH" in text and "CONTENT must be 'OIFITS2'" in text
    with pytest.raises(OIFITSError, match="not valid OIFITS2"):
        validate_oifits(tmp_path / "bad.oifits")
    assert main(["oifits", "--check", str(tmp_path / "bad.oifits")]) == 1
    assert main(["oifits", "--check", str(f)]) == 0


def _hostile(tmp_path):
    sim = _sim(PointSource(), M=3)
    good = write_oifits(tmp_path / "good.oifits", sim.array.positions, LAM, _single(sim, 2000))
    raw = good.read_bytes()
    files = {
        "random bytes": np.random.default_rng(0).bytes(5000),
        "truncated": raw[: len(raw) // 2 + 100],
        "empty": b"",
        "text": b"SIMPLE  = T\nnot fits at all\n",
    }
    # a header claiming far more rows than the file holds
    lie = bytearray(raw)
    i = lie.rfind(b"NAXIS2  =", 0, lie.find(b"EXTNAME = 'OI_VIS  '"))
    lie[i:i + 80] = f"NAXIS2  = {999999999:>20}".ljust(80).encode()
    files["lying header"] = bytes(lie)
    out = {}
    for name, data in files.items():
        p = tmp_path / (name.replace(" ", "_") + ".oifits")
        p.write_bytes(data)
        out[name] = p
    # valid FITS, but the data disagree with their wavelength table
    with fits.open(good) as h:
        wl = fits.BinTableHDU.from_columns([fits.Column("EFF_WAVE", "1E", array=np.array([1e-6, 2e-6], np.float32)),
                                            fits.Column("EFF_BAND", "1E", array=np.array([1e-8, 1e-8], np.float32))],
                                           header=h["OI_WAVELENGTH"].header, name="OI_WAVELENGTH")
        fits.HDUList([h[0].copy(), h["OI_TARGET"].copy(), h["OI_ARRAY"].copy(), wl, h["OI_VIS"].copy()]).writeto(
            tmp_path / "shape.oifits")
        fits.HDUList([h[0].copy(), h["OI_TARGET"].copy()]).writeto(tmp_path / "nodata.oifits")
    out["shape mismatch"] = tmp_path / "shape.oifits"
    out["no data tables"] = tmp_path / "nodata.oifits"
    out["missing"] = tmp_path / "does-not-exist.oifits"
    return out


def test_corrupt_or_hostile_files_give_one_line_errors(tmp_path, capsys):
    for name, path in _hostile(tmp_path).items():
        with pytest.raises(OIFITSError) as exc:
            read_oifits(path)
        msg = str(exc.value)
        assert "\n" not in msg and len(msg) < 400, (name, msg)
        assert str(path) in msg, (name, msg)
        rc = main(["oifits", "--check", str(path)])
        err = capsys.readouterr().err.strip()
        if name in ("shape mismatch", "no data tables"):
            continue  # readable FITS: --check lists its problems (exit 1)
        assert rc == 2 and err.count("\n") == 0 and err.startswith("qsense oifits:"), (name, err)


# -- a daemon's published estimates --------------------------------------------------------------
def _daemon_bodies(sim, n=20000):
    """The bodies the daemon publishes for the demo's two estimators (estimate_body, as the daemon calls it)."""
    import qsense
    from qsense.streaming.config import EstimatorConfig
    from qsense.streaming.daemon import estimate_body

    M, pairs = sim.array.M, all_pairs(sim.array.M)
    shadow_cfg = EstimatorConfig(name="visibility", type="shadow", observables=tuple(visibility_observables(pairs, M)))
    bell_cfg = EstimatorConfig(name="visibility2", type="bell", observables=tuple(squared_visibility_observables(pairs)))
    se = qsense.ShadowEstimator(list(shadow_cfg.observables))
    be = qsense.BellEstimator(list(bell_cfg.observables))
    ph = sim.photons(count=n)
    se.update(sim.shadows(ph[: n // 2]))
    rest = ph[n // 2:]
    be.update(sim.bell(rest[0::2], rest[1::2]))
    return [estimate_body(shadow_cfg, se, updated=1.7e9), estimate_body(bell_cfg, be, updated=1.7e9)]


def test_qsense_oifits_exports_a_daemons_bodies(tmp_path, capsys):
    src = BinaryStar(3.0 * MAS, math.radians(60.0), 0.5)
    lay = named_array("chara")
    sim = _sim(src, positions=lay.positions, seed=8)
    bodies = _daemon_bodies(sim)
    lines = tmp_path / "bodies.jsonl"  # what `qsense watch --json` prints
    lines.write_text("\n".join(json.dumps({"topic": f"qsense/estimate/{b['estimator']}", "body": b}) for b in bodies))
    out = tmp_path / "daemon.oifits"
    rc = main(["oifits", str(lines), "--array", "chara", "--wavelength", "800", "-o", str(out), "--target", "HD 5"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "15 OI_VIS rows" in text and "15 OI_VIS2 rows" in text
    validate_oifits(out)
    d = read_oifits(out)
    with fits.open(out) as h:
        assert h[0].header["OBJECT"] == "HD 5" and abs(h["OI_VIS"].data["MJD"][0] - (1.7e9 / 86400 + 40587)) < 1e-6
    fit = fit_binary(d.uv, d.vis, d.vis_err, kind="complex")
    assert abs(fit["position_angle"][0] - 60.0) < 4 * fit["position_angle"][1] + 0.5
    assert abs(fit["separation"][0] - 3.0) < 4 * fit["separation"][1] + 0.05
    # positions from a file give the same OI_VIS
    pos = tmp_path / "pos.json"
    pos.write_text(json.dumps(lay.positions.tolist()))
    out2 = tmp_path / "daemon2.oifits"
    assert main(["oifits", str(lines), "--positions", str(pos), "--wavelength", "800", "-o", str(out2)]) == 0
    assert np.allclose(read_oifits(out2).vis, d.vis)


def test_qsense_oifits_bad_input_is_one_line_exit_2(tmp_path, capsys):
    sim = _sim(PointSource(), positions=named_array("chara").positions)
    body = _daemon_bodies(sim, 4000)[0]
    del body["estimates"]["Z3"]
    f = tmp_path / "b.json"
    f.write_text(json.dumps(body))
    cases = [
        ([str(f), "--array", "chara", "--wavelength", "800"], "missing observable 'Z3'"),
        ([str(f), "--array", "chara"], "--wavelength"),
        ([str(f), "--array", "keck", "--wavelength", "800"], "known arrays"),
        ([str(f), "--wavelength", "800"], "--array NAME or --positions"),
        ([str(f), "--array", "vlti-ut", "--wavelength", "800"], "array has 4 telescopes"),
        ([str(f), "--array", "vlti-at", "--wavelength", "800"], "(6 telescopes), but the array has 30"),
        ([str(tmp_path / "none.json"), "--array", "chara", "--wavelength", "800"], "no such file"),
    ]
    (tmp_path / "junk.json").write_text("{not json")
    cases.append(([str(tmp_path / "junk.json"), "--array", "chara", "--wavelength", "800"], "not JSON"))
    for argv, want in cases:
        assert main(["oifits", *argv, "-o", str(tmp_path / "x.oifits")]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and want in err, (argv, err)
