"""Whitening by a full data covariance for the fits: one Cholesky factorisation, built in place.

At 64 telescopes the covariance of ``[Re V..., Im V...]`` is 4,032 x 4,032 (130 MB) and
its factorisation is most of a fit's time, so :class:`CovarianceWhitener` makes exactly
one copy of it, applies the optional rank-one downdate ``- kappa y y^T`` (``norm_var``)
and the round-off jitter in that buffer, and factorises it there (``dpotrf``, no
clean-up of the unused triangle).  Like ``np.linalg.cholesky`` it reads the lower
triangle of ``cov``: the row-major copy, seen column-major as LAPACK sees it, is
``cov^T``, whose upper triangle that is; so LAPACK factorises ``U^T U`` and every later
solve is one ``dtrtrs`` with ``U^T = L``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CovarianceWhitener"]

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
