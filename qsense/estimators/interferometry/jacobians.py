"""Analytic derivatives of the source models and the binary grid search, for the fits.

:func:`binary_model_jac`, :func:`symmetric_model_jac`: a model's complex
visibilities and their derivatives with respect to the fitted parameters (in the
fits' units: mas, degrees), so least squares whitens one Jacobian per iteration
instead of finite differences.  :func:`binary_grid_chi2`: chi^2 of the binary
model on a (separation, position angle) x flux-ratio grid, written as matrix
products (the chi^2 of ``(1 + r f)/(1 + r)`` is a quadratic in ``cos`` / ``sin``
of the phases), in chunks of grid points so the (grid x baselines) trigonometric
tables stay small.
"""

from __future__ import annotations

import math

import numpy as np

from .models import MAS

__all__ = ["binary_grid_chi2", "binary_model_jac", "kind_jac", "symmetric_model_jac"]

#: grid points per chunk of the grid search: (chunk x baselines) float32 tables that stay in
#: cache between the trigonometry and the products (128 is ~20% faster than 512 at M = 64)
_GRID_CHUNK = 128


def binary_model_jac(uv: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binary with the primary at the phase centre, ``p = (separation mas, PA deg, r)``:
    ``m = (1 + r f)/(1 + r)``, ``f = exp(2 pi i uv.s)``.  Returns ``m`` (P,) complex and
    ``dm/dp`` (P, 3) complex."""
    sep, pa, r = float(p[0]), math.radians(float(p[1])), float(p[2])
    sn, cs = math.sin(pa), math.cos(pa)
    along = uv[:, 0] * sn + uv[:, 1] * cs  # uv . (unit vector towards the secondary)
    across = uv[:, 0] * cs - uv[:, 1] * sn  # d(along)/d(pa)
    f = np.exp(2j * np.pi * sep * MAS * along)
    k = r / (1.0 + r)
    m = (1.0 + r * f) / (1.0 + r)
    J = np.empty((uv.shape[0], 3), dtype=np.complex128)
    J[:, 0] = k * 2j * np.pi * MAS * along * f
    J[:, 1] = k * 2j * np.pi * sep * MAS * math.radians(1.0) * across * f
    J[:, 2] = (f - 1.0) / (1.0 + r) ** 2
    return m, J


def symmetric_model_jac(uv: np.ndarray, size_mas: float, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Centred uniform disk (``model="disk"``, size = diameter) or circular Gaussian
    (``"gaussian"``, size = FWHM): real visibilities (P,) and d/d(size in mas) (P, 1)."""
    q = np.hypot(uv[:, 0], uv[:, 1])
    if model == "disk":
        from scipy.special import j1, jv

        x = np.pi * q * size_mas * MAS
        safe = np.where(x == 0, 1.0, x)
        m = np.where(x == 0, 1.0, 2.0 * j1(safe) / safe)
        # d/dx [2 J1(x)/x] = -2 J2(x)/x
        d = np.where(x == 0, 0.0, -2.0 * jv(2, safe) / safe) * np.pi * q * MAS
    elif model == "gaussian":
        k = (np.pi * MAS * q) ** 2 / (4.0 * math.log(2.0))
        m = np.exp(-k * size_mas**2)
        d = -2.0 * k * size_mas * m
    else:
        raise ValueError(f"model must be 'disk' or 'gaussian'; got {model!r}")
    return m.astype(np.complex128), d.astype(np.complex128)[:, None]


def kind_jac(m: np.ndarray, J: np.ndarray, kind: str) -> np.ndarray:
    """Jacobian of the fitted real vector (``[Re, Im]``, ``|m|^2`` or ``|m|``) from the
    complex model ``m`` (P,) and its derivatives ``J`` (P, K)."""
    if kind == "complex":
        return np.concatenate([J.real, J.imag], axis=0)
    g = (m.conj()[:, None] * J).real  # Re(conj(m) dm) = d|m|^2 / 2
    if kind == "squared":
        return 2.0 * g
    if kind == "amplitude":
        a = np.abs(m)
        return np.where(a[:, None] > 0, g / np.where(a > 0, a, 1.0)[:, None], 0.0)
    raise ValueError(f"kind must be 'complex', 'squared' or 'amplitude'; got {kind!r}")


def _cos_sin(turns: np.ndarray, need_sin: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """cos and sin of ``2 pi turns`` for a table of phases in turns (overwritten), evaluated
    in float32 after an exact float64 reduction to [-1/2, 1/2] turn (float32 trigonometry
    is 4x faster than float64, absolute error ~1e-7, immaterial for a start-point search;
    ``rint`` reduces 3x faster than ``remainder`` of radians), returned as float32."""
    turns -= np.rint(turns)
    r32 = turns.astype(np.float32)
    r32 *= np.float32(2.0 * np.pi)
    return np.cos(r32), (np.sin(r32) if need_sin else None)


def binary_grid_chi2(
    uv: np.ndarray, y: np.ndarray, e: np.ndarray, kind: str, svec: np.ndarray, rs: np.ndarray, mirrored: bool = False
) -> np.ndarray:
    """chi^2 (G, R) of the binary model at secondary offsets ``svec`` (G, 2) radians and
    flux ratios ``rs`` (R,) against data ``y`` with one-sigma ``e`` (the fits' real
    vectors, diagonal errors).  With ``mirrored`` the result is (2G, R): rows G..2G-1
    are the offsets ``-svec`` (position angle + 180 deg), which reuse the same cosines
    (``cos`` is even, ``sin`` odd) for half the trigonometry.

    complex: with ``a = 1 - (1 + r) y`` and phases ``phi``,
    ``(1 + r)^2 chi^2 = sum w_re (a_re + r cos phi)^2 + w_im (a_im + r sin phi)^2``;
    squared: with ``b = 1 + r^2 - (1 + r)^2 y``,
    ``(1 + r)^4 chi^2 = sum w (b + 2 r cos phi)^2``.  Expanded, every term is a
    product of a (G, P) table of cos / sin (or their squares) with a (P, R) matrix.
    ``amplitude`` (|V|, not quadratic) is evaluated directly.
    """
    if kind not in ("complex", "squared", "amplitude"):
        raise ValueError(f"kind must be 'complex', 'squared' or 'amplitude'; got {kind!r}")
    P = uv.shape[0]
    G = svec.shape[0]
    rs = np.asarray(rs, dtype=np.float64)
    out = np.empty((2 * G if mirrored else G, rs.size))
    if kind == "complex":
        yr, yi = y[:P], y[P:]
        wr, wi = 1.0 / e[:P] ** 2, 1.0 / e[P:] ** 2
        a_re = 1.0 - (1.0 + rs)[None, :] * yr[:, None]  # (P, R)
        a_im = -(1.0 + rs)[None, :] * yi[:, None]
        const = (wr[:, None] * a_re**2 + wi[:, None] * a_im**2).sum(axis=0)  # (R,)
        # the products with the float32 cos/sin tables run in float32 too (3x faster than
        # float64, chi^2 within ~1e-3 of the float64 products, 1e-4 near the minimum)
        lin_c, lin_s = (wr[:, None] * a_re).astype(np.float32), (wi[:, None] * a_im).astype(np.float32)
        dw, swr = (wi - wr).astype(np.float32), float(wr.sum())
        scale = (1.0 + rs) ** 2
    elif kind == "squared":
        w = 1.0 / e**2
        b = 1.0 + rs[None, :] ** 2 - (1.0 + rs[None, :]) ** 2 * y[:, None]
        const = (w[:, None] * b**2).sum(axis=0)
        lin_c, w32 = (w[:, None] * b).astype(np.float32), w.astype(np.float32)
        scale = (1.0 + rs) ** 4
    for lo in range(0, G, _GRID_CHUNK):
        hi = min(G, lo + _GRID_CHUNK)
        c, s = _cos_sin(svec[lo:hi] @ uv.T, kind != "squared")  # phases (g, P) in turns
        if kind == "amplitude":  # |V| is even in the offset: the mirror rows repeat
            f = c.astype(np.float64) + 1j * s
            for i, r in enumerate(rs):
                mv = np.abs((1.0 + r * f) / (1.0 + r))
                out[lo:hi, i] = np.sum(((mv - y) / e) ** 2, axis=1)
            if mirrored:
                out[G + lo : G + hi] = out[lo:hi]
            continue
        if kind == "complex":
            lc, ls = (c @ lin_c).astype(np.float64), (s @ lin_s).astype(np.float64)  # (g, R)
            s *= s
            quad = ((s @ dw).astype(np.float64) + swr)[:, None]  # sum w_re cos^2 + w_im sin^2
            out[lo:hi] = (const[None, :] + 2.0 * rs[None, :] * (lc + ls) + (rs**2)[None, :] * quad) / scale
            if mirrored:
                out[G + lo : G + hi] = (const[None, :] + 2.0 * rs[None, :] * (lc - ls) + (rs**2)[None, :] * quad) / scale
        else:
            lin = (c @ lin_c).astype(np.float64)
            quad = ((c * c) @ w32).astype(np.float64)
            out[lo:hi] = (const[None, :] + 4.0 * rs[None, :] * lin + 4.0 * (rs**2)[None, :] * quad[:, None]) / scale
            if mirrored:
                out[G + lo : G + hi] = out[lo:hi]
    return out
