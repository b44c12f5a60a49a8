"""Whitening by a full data covariance for the fits: one Cholesky factorisation, built in place.

At 64 telescopes the covariance of ``[Re V..., Im V...]`` is 4,032 x 4,032 (130 MB) and
its factorisation is most of a fit's time, so :class:`CovarianceWhitener` makes exactly
one copy of it, applies the optional rank-one downdate ``- kappa y y^T`` (``norm_var``)
and the round-off jitter in that buffer, and factorises it there (``dpotrf``, no
clean-up of the unused triangle).  Like ``np.linalg.cholesky`` it reads the lower
triangle of ``cov``: the row-major copy, seen column-major as LAPACK sees it, is
``cov^T``, whose upper triangle that is; so LAPACK factorises ``U^T U`` and every later
solve is one ``dtrtrs`` with ``U^T = L``.

:class:`MixedCovariance` does the same in float32 (half the time and memory) for the
large fits, and gives float64-exact ``C0^-1 B`` by iterative refinement against the
caller's float64 ``cov``, so that a fit steered by the float32 factor can be finished
on the exact chi^2 (:func:`.fits._fit_mixed`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["CovarianceWhitener", "MixedCovariance", "NeedsDouble"]

#: jitter added to the diagonal, relative to the mean variance: keeps a covariance that
#: is singular in round-off factorisable and moves nothing else (1e-15 relative)
_JITTER = 1e-15


class CovarianceWhitener:
    """``solve(B) = L^-1 B`` for ``L L^T = cov - kappa outer(y, y) + jitter``.

    ``cov`` (n, n) symmetric positive definite (it is copied once and never modified);
    ``downdate = (kappa, y)`` takes ``kappa y y^T`` out before the factorisation.  Raises
    ``ValueError`` for a wrong shape, non-finite entries or a matrix that is not positive
    definite.
    """

    def __init__(self, cov: np.ndarray, n: int, downdate: tuple[float, np.ndarray] | None = None) -> None:
        from scipy.linalg import blas, lapack

        C = np.asarray(cov, dtype=np.float64)
        if C.shape != (n, n):
            raise ValueError(f"cov must be ({n}, {n}); got {C.shape}")
        A = np.array(C, order="C").T  # column-major view of a plain memcpy of C: cov^T
        if downdate is not None:
            kappa, y = downdate
            # dsyr updates one triangle in place (np.outer would be another 130 MB)
            A = blas.dsyr(-float(kappa), np.ascontiguousarray(y, dtype=np.float64), lower=0, a=A, overwrite_a=1)
        diag = A.reshape(-1, order="F")[:: n + 1]  # a view of the diagonal
        diag += _JITTER * float(diag.sum()) / n
        U, info = lapack.dpotrf(A, lower=0, clean=0, overwrite_a=1)
        # a NaN or inf in the triangle read reaches a later pivot through the updates, so the
        # factor's diagonal shows it without a separate pass over the matrix
        if info != 0 or not np.isfinite(np.diagonal(U)).all():
            if not np.isfinite(np.tril(C)).all():
                raise ValueError("cov has non-finite entries")
            raise ValueError("cov is not positive definite" + (" once norm_var * outer(data, data) is taken out" if downdate is not None else ""))
        self._U = U
        self._trtrs = lapack.dtrtrs
        self.n = n

    def solve(self, B: np.ndarray) -> np.ndarray:
        """``L^-1 B`` for ``B`` (n,) or (n, m); one pass over ``L`` for all columns."""
        B = np.asarray(B, dtype=np.float64)
        one = B.ndim == 1
        X, info = self._trtrs(self._U, B[:, None] if one else B, lower=0, trans=1)
        if info != 0:
            raise ValueError("the covariance factor is singular")
        return X[:, 0] if one else X


class NeedsDouble(Exception):
    """:class:`MixedCovariance` cannot serve this covariance to float64 accuracy (float32
    cannot factorise it, or the refinement does not converge): use :class:`CovarianceWhitener`."""


#: refinement stops when the estimated error left is below this fraction of ||X|| (per column)
_REFINE_RTOL = 1e-12
_REFINE_MAX = 6


class MixedCovariance:
    """``C0 = cov - kappa outer(y, y)`` through a float32 Cholesky factor, with exact solves.

    The float32 factorisation (``spotrf``) costs half the float64 one (0.3 s against 0.6 s
    at 4,032 data on one core) in half the memory.  :meth:`solve` whitens with that factor
    (float32 accuracy: enough to steer an optimiser to within ~1e-2 sigma of the optimum);
    :meth:`cinv` returns ``C0^-1 B`` to float64 accuracy by iterative refinement --
    residuals ``B - C0 X`` in float64 against the caller's symmetric ``cov`` (read, never
    copied or modified), corrections through the float32 factor, each shrinking the error
    ~1e6-fold for a well-conditioned covariance.  Raises :class:`NeedsDouble` when
    float32 cannot factorise ``C0`` or the refinement does not converge.
    """

    def __init__(self, cov: np.ndarray, n: int, downdate: tuple[float, np.ndarray] | None = None) -> None:
        from scipy.linalg import blas, lapack

        C = np.asarray(cov, dtype=np.float64)
        if C.shape != (n, n):
            raise ValueError(f"cov must be ({n}, {n}); got {C.shape}")
        B = np.empty((n, n), dtype=np.float32)
        B[...] = C
        A = B.T  # column-major: cov^T, whose upper triangle is cov's lower (as CovarianceWhitener)
        self._kappa, self._y = 0.0, np.zeros(n)
        if downdate is not None:
            self._kappa, self._y = float(downdate[0]), np.ascontiguousarray(downdate[1], dtype=np.float64)
            A = blas.ssyr(-self._kappa, self._y.astype(np.float32), lower=0, a=A, overwrite_a=1)
        U, info = lapack.spotrf(A, lower=0, clean=0, overwrite_a=1)
        if info != 0 or not np.isfinite(np.diagonal(U)).all():
            raise NeedsDouble("float32 factorisation failed")
        self._C, self._U, self._trtrs, self.n = C, U, lapack.strtrs, n

    def solve(self, B: np.ndarray) -> np.ndarray:
        """``L~^-1 B`` through the float32 factor (float32 accuracy), as float64."""
        B = np.asarray(B, dtype=np.float64)
        one = B.ndim == 1
        X, _ = self._trtrs(self._U, (B[:, None] if one else B).astype(np.float32), lower=0, trans=1)
        X = X.astype(np.float64)
        return X[:, 0] if one else X

    def _approx_inv(self, R: np.ndarray) -> np.ndarray:
        Z, _ = self._trtrs(self._U, R.astype(np.float32), lower=0, trans=1)
        Z, _ = self._trtrs(self._U, Z, lower=0, trans=0)
        return Z.astype(np.float64)

    def cinv(self, B: np.ndarray) -> np.ndarray:
        """``C0^-1 B`` for ``B`` (n, m) to float64 accuracy.

        The first correction ``dX`` estimates the contraction ``rho = ||dX|| / ||X||`` of the
        float32 factor; the error left after a correction is ~``rho ||dX||``, and refinement
        stops once that is below 1e-12 of ``||X||`` -- usually after one float64 residual."""
        B = np.asarray(B, dtype=np.float64)
        X = self._approx_inv(B)
        prev = np.linalg.norm(X, axis=0)
        for _ in range(_REFINE_MAX):
            R = B - self._C @ X + self._kappa * np.outer(self._y, self._y @ X)
            dX = self._approx_inv(R)
            X += dX
            step = np.linalg.norm(dX, axis=0)
            rho = step / np.maximum(prev, 1e-300)
            if np.all(rho < 0.1) and np.all(rho * step <= _REFINE_RTOL * np.maximum(np.linalg.norm(X, axis=0), 1e-300)):
                return X
            prev = step
        raise NeedsDouble("iterative refinement did not converge")
