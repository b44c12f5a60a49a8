"""The derandomization loop of :mod:`._derandomize_kernel`, compiled by numba
(cached on disk).  Importing this module fails cleanly (ImportError) where numba
is missing; :mod:`.derandomize` then runs the loop uncompiled."""

from __future__ import annotations

from numba import njit

from ._derandomize_kernel import design_loop

__all__ = ["design_loop_jit"]

design_loop_jit = njit(cache=True, nogil=True)(design_loop)
