"""Least-squares fits of the source models to visibilities (complex, squared or
amplitude), with parameter errors from the Jacobian (:class:`FitResult`).

Fast at large arrays (2,016 baselines at M = 64 with the full 4,032 x 4,032
covariance in about half a second): analytic Jacobians (:mod:`.jacobians`), the
covariance factorised once per fit in a single copy (:mod:`.whitening`) -- from
2,048 data on in float32, the fit then finished by one Newton step on the exact
float64 chi^2 (:func:`_fit_mixed`) -- and the binary start found by a grid search
written as matrix products.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .jacobians import binary_grid_chi2, binary_model_jac, kind_jac, symmetric_model_jac
from .models import MAS, binary_visibility, disk_visibility, gaussian_visibility
from .whitening import CovarianceWhitener, MixedCovariance, NeedsDouble

__all__ = ["FitResult", "fit_model", "fit_binary", "fit_disk", "fit_gaussian"]


@dataclass(frozen=True)
class FitResult:
    """Best-fit parameters with one-sigma errors from the Jacobian.

    ``names``/``units`` per parameter, ``values``/``stderr`` (K,), ``cov`` (K, K),
    ``chi2`` at the optimum, ``dof`` = data - parameters.  Errors are absolute
    (the data's error bars are taken at face value); multiply by
    ``sqrt(chi2/dof)`` if they are doubted.

    ``constrained`` is False when the data cannot determine the parameters at
    all (``dof <= 0``: as many parameters as data or more, so any chi2 of 0 is
    meaningless); such a result carries NaN values and errors and is never a
    measurement.  ``flags`` name what the data cannot separate even when
    ``dof > 0``: exact model degeneracies (a |V|^2-only binary fit cannot tell
    PA from PA + 180 deg) and directions of parameter space the data leave flat
    (a null singular value of the whitened Jacobian; the parameters on such a
    direction get an infinite error rather than the pseudo-inverse's small one).
    """

    names: tuple[str, ...]
    units: tuple[str, ...]
    values: np.ndarray
    stderr: np.ndarray
    cov: np.ndarray
    chi2: float
    dof: int
    success: bool
    message: str = ""
    constrained: bool = True
    flags: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> tuple[float, float]:
        i = self.names.index(name)
        return float(self.values[i]), float(self.stderr[i])

    def as_dict(self) -> dict:
        """JSON-friendly view; NaN (refused fit) and infinite (flat direction) numbers become
        ``None``, since strict JSON has neither."""
        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "parameters": {n: {"value": num(v), "stderr": num(e), "unit": u} for n, u, v, e in zip(self.names, self.units, self.values, self.stderr)},
            "chi2": num(self.chi2),
            "dof": int(self.dof),
            "constrained": bool(self.constrained),
            "flags": list(self.flags),
        }

    def __str__(self) -> str:
        if not self.constrained:
            return f"unconstrained: {self.message}"
        body = ", ".join(f"{n} = {v:.4g} ± {e:.2g} {u}".rstrip() for n, u, v, e in zip(self.names, self.units, self.values, self.stderr))
        tail = f"; {'; '.join(self.flags)}" if self.flags else ""
        return f"{body} (chi2/dof = {self.chi2:.1f}/{self.dof}){tail}"


def _unconstrained(names: Sequence[str], units: Sequence[str] | None, n_data: int, flags: tuple[str, ...] = ()) -> FitResult:
    """The refusal of a fit with no degrees of freedom (``dof = n_data - K <= 0``)."""
    k = len(names)
    nan = np.full(k, np.nan)
    msg = f"{n_data} data for {k} parameters (dof {n_data - k} <= 0): the data cannot constrain this model"
    return FitResult(tuple(names), tuple(units or [""] * k), nan, nan.copy(), np.full((k, k), np.nan), math.nan,
                     int(n_data - k), False, msg, constrained=False, flags=flags)


#: singular values of the whitened Jacobian below this fraction of the largest are
#: treated as flat directions (float64 round-off on J^T J is ~1e-8 relative in s)
_FLAT_RTOL = 1e-7


def _data_vector(data: np.ndarray, err: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Stack data and one-sigma errors into real vectors for least squares."""
    if kind == "complex":
        d = np.asarray(data, dtype=np.complex128)
        e = np.asarray(err, dtype=np.float64)
        if e.ndim == 1:
            e = np.stack([e, e], axis=1)
        return np.concatenate([d.real, d.imag]), np.concatenate([e[:, 0], e[:, 1]])
    return np.asarray(data, dtype=np.float64), np.asarray(err, dtype=np.float64)


def _model_vector(v: np.ndarray, kind: str) -> np.ndarray:
    if kind == "complex":
        return np.concatenate([v.real, v.imag], axis=-1)
    if kind == "squared":
        return np.abs(v) ** 2
    if kind == "amplitude":
        return np.abs(v)
    raise ValueError(f"kind must be 'complex', 'squared' or 'amplitude'; got {kind!r}")


def fit_model(
    model: Callable[[np.ndarray], np.ndarray],
    data: np.ndarray,
    err: np.ndarray,
    p0: Sequence[float],
    names: Sequence[str],
    units: Sequence[str] | None = None,
    bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    cov: np.ndarray | None = None,
    jac: Callable[[np.ndarray], np.ndarray] | None = None,
    norm_var: float | None = None,
) -> FitResult:
    """Weighted least squares of a real model vector ``model(params)`` to ``data``.

    Residuals are whitened by the one-sigma ``err`` or, when given, by the
    Cholesky factor of the full data covariance ``cov`` (correlated data),
    factorised once per fit in a single copy of ``cov`` (:mod:`.whitening`; a
    symmetric matrix, of which the factorisation reads the lower triangle, as
    ``np.linalg.cholesky`` does); parameter covariance
    ``(J^T J)^-1`` of the whitened residuals.  With 2,048 data or more and an
    analytic ``jac`` (with ``norm_var``: also without one) the factor is float32
    and the result is moved onto the exact float64 minimum by one Newton step (:func:`_fit_mixed`; chi^2 and errors are
    then those of the float64 covariance to ~1e-6 sigma).
    ``jac(params)`` (data x parameters, optional) is the analytic Jacobian of
    ``model``: one whitening solve per iteration for residual and all parameters
    together instead of one per finite-difference step.

    A fit with ``dof = len(data) - len(p0) <= 0`` is refused: the result has
    ``constrained=False`` and NaN values (with as many parameters as data the
    optimiser reaches chi2 = 0 anywhere on a manifold of solutions, and the
    Jacobian errors are then meaningless).  The covariance comes from the SVD of
    the whitened Jacobian; parameters on a flat direction (singular value below
    ``_FLAT_RTOL`` of the largest) get an infinite error and a flag.

    ``norm_var`` (with ``cov``; ``VisibilityEstimate.norm_var``): ``cov`` holds a
    common-normalisation part ``norm_var * outer(data, data)``, evaluated at the
    noisy data, where it points along the data's own noise; it is taken out and
    modelled instead as a common scale ``s`` of the model with the prior
    ``s ~ N(1, norm_var)`` -- equivalent to the covariance ``C0 + norm_var
    outer(model, model)`` evaluated at the model -- and ``s`` is marginalised
    out of the reported errors (it is not reported).

    Raises ``ValueError`` for non-finite data, for a ``cov`` of the wrong shape,
    with non-finite entries or not positive definite, and for non-positive ``err``
    without ``cov``.
    """
    data = np.asarray(data, dtype=np.float64)
    err = np.asarray(err, dtype=np.float64)
    if data.size - len(p0) <= 0:
        return _unconstrained(names, units, data.size)
    if not np.isfinite(data).all():
        raise ValueError("data has non-finite entries")
    if cov is not None and norm_var is not None and norm_var > 0:
        return _fit_with_common_scale(model, data, p0, names, units, bounds, cov, jac, float(norm_var))
    if cov is not None and jac is not None and data.size >= _MIXED_MIN_N:
        try:
            lo, hi = _bounds_arrays(bounds, len(p0))
            return _fit_mixed(lambda p: (model(p) - data, jac(p)), lambda p: (np.zeros(0), np.zeros((0, len(p)))),
                              p0, lo, hi, names, units, data.size, MixedCovariance(cov, data.size))
        except NeedsDouble:
            pass  # the float64 factorisation below
    if cov is not None:
        wh = CovarianceWhitener(cov, data.size)
        if jac is None:
            fun = lambda p: wh.solve(model(p) - data)  # noqa: E731
            wjac = None
        else:
            # a triangular solve streams all of L (65 MB at 4032 data) whatever the number of
            # right-hand sides: whiten residual and Jacobian together, once per point
            point = _per_point(lambda p: wh.solve(np.column_stack([model(p) - data, jac(p)])))
            fun = lambda p: point(p)[:, 0].copy()  # noqa: E731
            wjac = lambda p: point(p)[:, 1:].copy()  # noqa: E731
    else:
        if np.any(~(err > 0)):
            raise ValueError("all error bars must be positive")
        fun = lambda p: (model(p) - data) / err  # noqa: E731
        wjac = None if jac is None else (lambda p: jac(p) / err[:, None])  # noqa: E731
    return _least_squares(fun, wjac, p0, bounds, names, units, data.size)


def _per_point(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """``f`` evaluated once per parameter point: least squares asks for the residual and the
    Jacobian at the same point in two calls, and both come from one whitening solve."""
    memo: dict = {}

    def at(p: np.ndarray) -> np.ndarray:
        key = np.asarray(p, dtype=np.float64).tobytes()
        if memo.get("key") != key:
            memo.update(key=key, value=f(p))
        return memo["value"]

    return at


def _least_squares(fun, wjac, p0, bounds, names, units, n_data: int) -> FitResult:
    """Minimise ``sum(fun(p)^2)`` (whitened residuals) and read the errors off the SVD of the
    whitened Jacobian at the optimum."""
    from scipy.optimize import least_squares

    lo, hi = bounds if bounds is not None else (-np.inf, np.inf)
    res = least_squares(fun, np.asarray(p0, dtype=np.float64), jac=wjac if wjac is not None else "2-point",
                        bounds=(lo, hi), x_scale="jac", method="trf")
    return _result(names, units, res.x, np.asarray(res.jac, dtype=np.float64), float(np.sum(res.fun**2)), n_data,
                   bool(res.success), str(res.message))


def _result(names, units, x, J, chi2: float, n_data: int, success: bool, message: str,
            H: np.ndarray | None = None) -> FitResult:
    """The :class:`FitResult` at ``x``: flat directions from the SVD of the whitened Jacobian
    ``J``; parameter covariance ``(J^T J)^-1`` on the others, or ``H^-1`` there when the exact
    curvature ``H = J^T C^-1 J`` is given (``J`` then only approximately whitened)."""
    # cov = V diag(1/s^2) V^T; a direction with s ~ 0 is one the data do not see, and a
    # pseudo-inverse would silently report tiny errors there
    _, sv, Vt = np.linalg.svd(J, full_matrices=False)
    flat = sv <= _FLAT_RTOL * max(float(sv.max(initial=0.0)), 1e-300)
    if H is None:
        inv_s2 = np.where(flat, 0.0, 1.0 / np.where(flat, 1.0, sv) ** 2)
        pcov = (Vt.T * inv_s2) @ Vt
    else:
        Vn = Vt[~flat].T
        pcov = Vn @ np.linalg.inv(Vn.T @ H @ Vn) @ Vn.T
    var = np.clip(np.diag(pcov), 0, None)
    flags: list[str] = []
    if flat.any():
        involved = np.any(np.abs(Vt[flat]) > 0.1, axis=0)  # parameters with weight on a flat direction
        var = np.where(involved, np.inf, var)
        flags.append("not separable by these data: " + ", ".join(n for n, b in zip(names, involved) if b))
    k = len(names)
    return FitResult(
        tuple(names), tuple(units or [""] * k), np.asarray(x, dtype=np.float64), np.sqrt(var), pcov, float(chi2),
        int(n_data - k), success, message, flags=tuple(flags),
    )


#: data vectors at least this long (with an analytic Jacobian, or any with ``norm_var``) are fitted through a float32
#: factor of the covariance and finished by one exact Newton step (:func:`_fit_mixed`; M >= 46 telescopes);
#: shorter ones, whose factorisation is cheap, are factorised in float64
_MIXED_MIN_N = 2048
#: the float32 optimum is trusted only this close (in sigma) to the exact Newton point
_MIXED_MAX_STEP = 0.05


def _fit_mixed(data_part, prior_part, q0, lo, hi, names, units, n_data: int, mc: MixedCovariance) -> FitResult:
    """Least squares steered by the float32 whitening of ``mc``, finished by one Newton step
    on the exact chi^2.

    ``data_part(q)``: unwhitened data residual ``r`` (n,) and Jacobian ``J`` (n, K);
    ``prior_part(q)``: rows already whitened and linear in ``q`` (the common scale's prior;
    none otherwise).  At the float32 optimum ``q`` one refined product ``u, X = C0^-1 [r, J]``
    gives the exact chi^2 ``r.u``, half-gradient ``g = J^T u`` and Gauss-Newton curvature
    ``H = J^T X``; the Newton step also needs the residual curvature ``sum_i u_i d2 r_i``,
    from central differences of ``data_part``'s Jacobian at +-0.1 sigma (model space only,
    no whitening).  Gauss-Newton alone converges only linearly on these large-residual
    problems (the step shrinks 0.1-0.4x per iteration), Newton quadratically: from the
    float32 optimum (<~1e-2 sigma away) one step leaves 3e-10..3e-8 sigma at M = 64.  chi^2 is moved along
    the quadratic model, the errors are ``H^-1`` at ``q`` (they change by ~step / (model
    scale), < 1e-4 relative).  Raises :class:`NeedsDouble` for a flat direction, a
    curvature that is not positive definite or a step over :data:`_MIXED_MAX_STEP` sigma,
    where the float64 path is the safe one."""
    from scipy.optimize import least_squares

    def whiten(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r, J = data_part(q)
        rp, Jp = prior_part(q)
        W = mc.solve(np.column_stack([r, J]))
        return np.concatenate([W[:, 0], rp]), np.vstack([W[:, 1:], Jp])

    point = _per_point(whiten)
    res = least_squares(lambda q: point(q)[0].copy(), np.asarray(q0, dtype=np.float64),
                        jac=lambda q: point(q)[1].copy(), bounds=(lo, hi), x_scale="jac", method="trf")
    q = np.asarray(res.x, dtype=np.float64).copy()
    G = point(q)[1]
    sv = np.linalg.svd(G, compute_uv=False)
    if np.any(sv <= _FLAT_RTOL * max(float(sv.max(initial=0.0)), 1e-300)):
        raise NeedsDouble("a flat direction")
    r, J = data_part(q)
    rp, Jp = prior_part(q)
    X = mc.cinv(np.column_stack([r, J]))
    u = X[:, 0]
    chi2 = float(r @ u + rp @ rp)
    g = J.T @ u + Jp.T @ rp
    H = J.T @ X[:, 1:] + Jp.T @ Jp
    H = 0.5 * (H + H.T)
    sigma = np.sqrt(np.clip(np.diag(np.linalg.inv(H)), 0.0, None))
    T = np.empty_like(H)
    for j in range(q.size):
        h = 0.1 * float(sigma[j])
        qp, qm = q.copy(), q.copy()
        qp[j] += h
        qm[j] -= h
        T[:, j] = (data_part(qp)[1] - data_part(qm)[1]).T @ u / (2.0 * h)
    Hf = H + 0.5 * (T + T.T)
    if np.linalg.eigvalsh(Hf).min() <= 0:
        raise NeedsDouble("the exact curvature is not positive definite here")
    step = _bounded_step(Hf, g, q, lo, hi)
    if np.any(np.abs(step) > _MIXED_MAX_STEP * sigma):
        raise NeedsDouble("the float32 optimum is too far from the exact one")
    chi2 -= 2.0 * float(g @ step) - float(step @ Hf @ step)
    return _result(names, units, np.clip(q - step, lo, hi), G, chi2, n_data, bool(res.success), str(res.message),
                   H=H)


def _bounded_step(H: np.ndarray, g: np.ndarray, q: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Newton step ``H^-1 g`` (to subtract from ``q``), with the parameters it would push
    across a bound held where they are."""
    free = np.ones(q.size, dtype=bool)
    step = np.zeros(q.size)
    while free.any():
        step[:] = 0.0
        step[free] = np.linalg.solve(H[np.ix_(free, free)], g[free])
        out = free & ((q - step < lo) | (q - step > hi))
        if not out.any():
            return step
        free &= ~out
    return step


def _fit_with_common_scale(model, data, p0, names, units, bounds, cov, jac, norm_var) -> FitResult:
    """:func:`fit_model` with a common model scale ``s ~ N(1, norm_var)`` and the covariance's
    ``norm_var * outer(data, data)`` part removed (see ``norm_var`` there).

    The prior on ``s`` is one more datum, ``(s - 1) / sd`` with unit error, uncorrelated
    with the data: the whitened system is the data's (``L0^-1`` of ``C0 = cov - norm_var
    y y^T``) with that row appended, so only ``C0`` is factorised.  The residual
    ``L0^-1 (s m - y) = s L0^-1 m - L0^-1 y`` reuses ``L0^-1 y``, whitened once."""
    n, k = data.size, len(p0)
    lo, hi = _bounds_arrays(bounds, k)
    lo, hi = np.append(lo, 1e-6), np.append(hi, np.inf)  # and s > 0

    def model_jac(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = model(p)
        return m, (jac(p) if jac is not None else _numeric_jac(model, p, m))

    args = (model_jac, data, [*p0, 1.0], [*names, "_scale"], [*(units or [""] * k), ""], lo, hi, cov, norm_var)
    full = None
    if n >= _MIXED_MIN_N:
        try:
            full = _common_scale_mixed(*args)
        except NeedsDouble:
            pass  # the float64 factorisation below
    if full is None:
        full = _common_scale_double(*args)
    # dof: one more datum (the prior) and one more parameter (s)
    return FitResult(
        tuple(names), tuple(units or [""] * k), full.values[:k], full.stderr[:k], full.cov[:k, :k], full.chi2,
        full.dof, full.success, full.message, constrained=full.constrained,
        flags=tuple(f.replace(", _scale", "").replace("_scale, ", "") for f in full.flags if f != "not separable by these data: _scale"),
    )


def _common_scale_mixed(model_jac, data, q0, names, units, lo, hi, cov, norm_var) -> FitResult:
    """The common-scale fit through :class:`MixedCovariance` (see :func:`_fit_mixed`); ``q0``,
    ``names``, ``units``, ``lo`` and ``hi`` include the scale, ``model_jac(p)`` is ``(model, jac)``."""
    n, k = data.size, len(q0) - 1
    sd = math.sqrt(norm_var)
    mc = MixedCovariance(cov, n, downdate=(norm_var, data))

    def data_part(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = float(q[k])
        m, Jp = model_jac(q[:k])
        return s * m - data, np.column_stack([s * Jp, m])

    def prior_part(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Jr = np.zeros((1, k + 1))
        Jr[0, k] = 1.0 / sd
        return np.array([(float(q[k]) - 1.0) / sd]), Jr

    return _fit_mixed(data_part, prior_part, q0, lo, hi, names, units, n + 1, mc)


def _common_scale_double(model_jac, data, q0, names, units, lo, hi, cov, norm_var) -> FitResult:
    """The common-scale fit whitened by the float64 factor of ``C0`` (:class:`CovarianceWhitener`;
    arguments as :func:`_common_scale_mixed`)."""
    n, k = data.size, len(q0) - 1
    sd = math.sqrt(norm_var)
    wh = CovarianceWhitener(cov, n, downdate=(norm_var, data))
    wy = wh.solve(data)

    def whiten(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = float(q[k])
        m, Jp = model_jac(q[:k])
        W = wh.solve(np.column_stack([m, Jp]))
        r = np.empty(n + 1)
        r[:n] = s * W[:, 0] - wy
        r[n] = (s - 1.0) / sd
        Jw = np.zeros((n + 1, k + 1))
        Jw[:n, :k] = s * W[:, 1:]
        Jw[:n, k] = W[:, 0]
        Jw[n, k] = 1.0 / sd
        return r, Jw

    point = _per_point(whiten)
    return _least_squares(lambda q: point(q)[0].copy(), lambda q: point(q)[1].copy(), q0, (lo, hi), names, units,
                          n + 1)


def _bounds_arrays(bounds, k: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = bounds if bounds is not None else (-np.inf, np.inf)
    return (np.broadcast_to(np.asarray(lo, dtype=np.float64), (k,)).copy(),
            np.broadcast_to(np.asarray(hi, dtype=np.float64), (k,)).copy())


def _numeric_jac(model, p: np.ndarray, m: np.ndarray) -> np.ndarray:
    cols = []
    for i in range(len(p)):
        h = 1e-6 * max(1.0, abs(float(p[i])))
        q = np.array(p, dtype=np.float64)
        q[i] += h
        cols.append((model(q) - m) / h)
    return np.column_stack(cols)


def fit_binary(
    uv: np.ndarray, data: np.ndarray, err: np.ndarray, kind: str = "complex", p0: Sequence[float] | None = None,
    max_separation: float | None = None, cov: np.ndarray | None = None, norm_var: float | None = None,
) -> FitResult:
    """Fit a binary (primary at the phase centre) to visibilities.

    ``kind``: ``"complex"`` (data complex V, err (P,) or (P, 2) for Re/Im),
    ``"squared"`` (data |V|^2) or ``"amplitude"`` (|V|).  Parameters:
    ``separation`` (mas), ``position_angle`` (deg East of North) and
    ``flux_ratio``.  Without ``p0`` a grid search over separation (log-spaced up to
    ``max_separation``, default 2 / min |uv|), position angle and flux ratio picks
    the start.  |V|^2 and |V| are unchanged by PA -> PA + 180 deg and r -> 1/r, so
    for those kinds PA is reported in [0, 180) and r <= 1.  ``cov``: full data
    covariance (for ``"complex"`` the (2P, 2P) ``VisibilityEstimate.full_cov``
    over ``[Re..., Im...]``), used for the final fit; ``norm_var``: the estimate's
    ``VisibilityEstimate.norm_var`` (pooled normalisation), so that the common
    normalisation's covariance is evaluated at the model (:func:`fit_model`).
    """
    uv = np.asarray(uv, dtype=np.float64)
    y, e = _data_vector(data, err, kind)
    names, units = ("separation", "position_angle", "flux_ratio"), ("mas", "deg", "")
    folded = kind != "complex"
    # |V|^2 and |V| are even in the secondary's offset: (PA, r) and (PA + 180, r) give the same
    # data exactly, whatever the baselines; say so instead of pretending PA is known mod 360
    fold_flag = ("position_angle known only modulo 180 deg (|V|^2 is even in the secondary's offset: "
                 "PA and PA + 180 deg fit equally)",) if folded else ()
    if y.size - len(names) <= 0:
        return _unconstrained(names, units, y.size, fold_flag)
    pa_hi = 180.0 if folded else 360.0
    r_hi = 1.0 if folded else 50.0

    def model(p: np.ndarray) -> np.ndarray:
        return _model_vector(binary_visibility(uv, p[0] * MAS, math.radians(p[1]), p[2]), kind)

    def jac(p: np.ndarray) -> np.ndarray:
        return kind_jac(*binary_model_jac(uv, p), kind)

    if p0 is None:
        if not np.all(e > 0):
            raise ValueError("all error bars must be positive (the grid search weights by them)")
        q = np.hypot(uv[:, 0], uv[:, 1])
        smax = max_separation / MAS if max_separation else 2.0 / max(q.min(), 1e-30) / MAS
        smin = 0.05 / max(q.max(), 1e-30) / MAS
        seps = np.geomspace(smin, smax, 160)
        # position angles 0, 5, ..., 175 deg; complex data also scan PA + 180 deg (the mirrored rows)
        pas = np.linspace(0.0, 180.0, 37)[:-1]
        rs = np.array([0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 1.0] + ([1.5, 2.5, 5.0] if not folded else []))
        S, A = np.meshgrid(seps, np.radians(pas), indexing="ij")
        svec = np.stack([S * np.sin(A), S * np.cos(A)], axis=-1).reshape(-1, 2) * MAS  # (G, 2)
        chi = binary_grid_chi2(uv, y, e, kind, svec, rs, mirrored=not folded)  # (G or 2G, R)
        if not np.isfinite(chi).any():
            raise ValueError("the binary grid search found no finite chi^2 (non-finite data?)")
        i, j = np.unravel_index(int(np.nanargmin(chi)), chi.shape)
        G = S.size
        p0 = (S.ravel()[i % G], math.degrees(A.ravel()[i % G]) + (180.0 if i >= G else 0.0), rs[j])
        rival = _rival_separation(chi, seps, len(pas), G)
        if rival is not None:
            fold_flag = fold_flag + (f"another separation fits about as well: {rival[0]:.3g} mas (grid chi2 within "
                                     f"{rival[1]:.1f} of the best); the error bars are those of one local minimum",)
    p0 = [float(p0[0]), float(p0[1]) % pa_hi, min(max(float(p0[2]), 1e-3), r_hi)]
    # let PA wander past its fold so the optimiser is not pinned at a bound
    fit = fit_model(model, y, e, p0, names, units, bounds=([0.0, -pa_hi, 1e-4], [np.inf, 2 * pa_hi, r_hi]), cov=cov,
                    jac=jac, norm_var=norm_var if kind == "complex" else None)
    vals = fit.values.copy()
    vals[1] %= pa_hi
    return FitResult(fit.names, fit.units, vals, fit.stderr, fit.cov, fit.chi2, fit.dof, fit.success, fit.message,
                     constrained=fit.constrained, flags=fold_flag + fit.flags)


#: a grid minimum this far (factor in separation) from the best is a different solution
_RIVAL_FACTOR = 1.5
#: ... and flagged when its chi^2 is within this of the best (a 3-sigma interval for one parameter)
_RIVAL_DCHI2 = 9.0


def _rival_separation(chi: np.ndarray, seps: np.ndarray, n_pa: int, G: int) -> tuple[float, float] | None:
    """The best grid separation outside the best one's basin, if its chi^2 is within :data:`_RIVAL_DCHI2`.

    A binary fit from few photons per baseline can land in a minimum far from the truth with a
    chi^2 as good (the Jacobian errors then describe that local minimum only); the grid search has
    already evaluated the whole range, so say when another separation is about as good."""
    c = np.where(np.isfinite(chi), chi, np.inf)
    per_sep = c[:G].reshape(len(seps), n_pa, -1).min(axis=(1, 2))
    if c.shape[0] > G:
        per_sep = np.minimum(per_sep, c[G:].reshape(len(seps), n_pa, -1).min(axis=(1, 2)))
    best = int(np.argmin(per_sep))
    far = np.abs(np.log(seps / seps[best])) > math.log(_RIVAL_FACTOR)
    if not far.any():
        return None
    # a rival must be a local minimum of its own, not the best basin's slope
    local = np.r_[True, per_sep[1:] <= per_sep[:-1]] & np.r_[per_sep[:-1] <= per_sep[1:], True]
    cand = np.flatnonzero(far & local)
    if cand.size == 0:
        return None
    k = int(cand[np.argmin(per_sep[cand])])
    d = float(per_sep[k] - per_sep[best])
    return (float(seps[k]), d) if d < _RIVAL_DCHI2 else None


def _fit_symmetric(uv, data, err, kind, fn, name, p0, cov, shape, norm_var=None) -> FitResult:
    uv = np.asarray(uv, dtype=np.float64)
    y, e = _data_vector(data, err, kind)
    if y.size <= 1:
        return _unconstrained((name,), ("mas",), y.size)

    def model(p: np.ndarray) -> np.ndarray:
        return _model_vector(fn(uv, p[0] * MAS).astype(np.complex128), kind)

    def jac(p: np.ndarray) -> np.ndarray:
        return kind_jac(*symmetric_model_jac(uv, float(p[0]), shape), kind)

    if p0 is None:
        if not np.all(e > 0):
            raise ValueError("all error bars must be positive (the grid search weights by them)")
        q = np.hypot(uv[:, 0], uv[:, 1])
        grid = np.geomspace(0.02 / q.max(), 3.0 / max(q.min(), 1e-30), 400) / MAS
        # the models broadcast over a column of sizes: the grid as (sizes x data) tables, in
        # chunks of ~4 M entries
        chi = np.empty(grid.size)
        step = max(1, (1 << 22) // max(y.size, 1))
        for lo in range(0, grid.size, step):
            g = grid[lo : lo + step, None] * MAS
            chi[lo : lo + step] = np.sum(((_model_vector(fn(uv, g).astype(np.complex128), kind) - y) / e) ** 2, axis=1)
        p0 = [grid[int(np.argmin(chi))]]
    return fit_model(model, y, e, [float(p0[0])], (name,), ("mas",), bounds=([0.0], [np.inf]), cov=cov, jac=jac,
                     norm_var=norm_var if kind == "complex" else None)


def fit_disk(
    uv: np.ndarray, data: np.ndarray, err: np.ndarray, kind: str = "complex", p0: Sequence[float] | None = None,
    cov: np.ndarray | None = None, norm_var: float | None = None,
) -> FitResult:
    """Fit a centred uniform disk: parameter ``diameter`` (mas); see :func:`fit_binary`
    for ``kind``, ``cov`` and ``norm_var``."""
    return _fit_symmetric(uv, data, err, kind, disk_visibility, "diameter", p0, cov, "disk", norm_var)


def fit_gaussian(
    uv: np.ndarray, data: np.ndarray, err: np.ndarray, kind: str = "complex", p0: Sequence[float] | None = None,
    cov: np.ndarray | None = None, norm_var: float | None = None,
) -> FitResult:
    """Fit a centred circular Gaussian: parameter ``fwhm`` (mas); see :func:`fit_binary` for ``norm_var``."""
    return _fit_symmetric(uv, data, err, kind, gaussian_visibility, "fwhm", p0, cov, "gaussian", norm_var)
