"""Compiled scanner of the reference measurement text format: bytes straight to bit planes.

One pass over a chunk of the file (a uint8 buffer) reads each snapshot line
``B s B s ...`` and sets the snapshot's bits in the shadow planes of
:mod:`qsense.packing` (b0 = Y, b1 = Z, outcome = 1 for eigenvalue -1), so no
token strings, no (T, n) tables and no transpose exist at any point.
:mod:`qsense.streaming.reference_fast` drives it chunk by chunk and turns its
status codes into error messages.  Importing this module needs numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["BAD_LETTER", "BAD_OUTCOME", "FULL", "MISSING_OUTCOME", "OK", "TOO_FEW", "TOO_MANY", "scan_measurements"]

OK = 0
BAD_LETTER = 1  # a byte where a basis letter X, Y or Z must start a token
BAD_OUTCOME = 2  # an outcome token that is not 1, +1 or -1
TOO_MANY = 3  # more than n (basis, outcome) pairs on a line
TOO_FEW = 4  # fewer than n pairs on a non-empty line
MISSING_OUTCOME = 5  # a basis letter with no outcome after it
FULL = 6  # more snapshots than the planes were sized for (cannot happen for a file of the measured size)


@njit(cache=True, nogil=True, inline="always")
def _blank(c):
    return c == 32 or c == 9 or c == 13  # space, tab, CR (CRLF files)


@njit(cache=True, nogil=True)
def scan_measurements(buf, L, final, n, planes, t, line):
    """Parse whole lines of ``buf[:L]`` into ``planes`` from snapshot ``t`` on.

    ``line`` is the number of lines before ``buf`` (for messages).  A last line
    without a newline is parsed only when ``final``; otherwise it is left for the
    next chunk.  Returns ``(status, consumed, t, line, col, byte)``: bytes consumed
    (on an error: the start of the bad line), the snapshot count and line count so
    far, and for an error its 1-based column and the offending byte (-1 at the end
    of a line; the number of pairs for TOO_FEW).  One pass: tokens are read up to
    each newline, no separate search for line ends.
    """
    cap = planes.shape[2] * 64
    end = L
    if not final:
        while end > 0 and buf[end - 1] != 10:
            end -= 1
    k = 0
    while k < end:
        line += 1
        ls = k
        q = 0
        w = t >> 6
        bit = np.uint64(1) << np.uint64(t & 63)
        if t < cap:
            # tight loop over a canonical line ("B 1 " / "B -1 ", single blanks): no
            # data-dependent branches, no per-token bookkeeping (measured 1.3-1.7x);
            # the first token it does not recognise goes to the general loop below
            while q < n and k + 5 < end:
                c = buf[k]
                neg = buf[k + 2] == 45
                o = k + 2 + np.int64(neg)
                sep = buf[o + 1]
                if not ((c >= 88) & (c <= 90) & (buf[k + 1] == 32) & (buf[o] == 49) & ((sep == 32) | (sep == 10) | (sep == 13))):
                    break
                planes[0, q, w] |= bit * np.uint64(c == 89)
                planes[1, q, w] |= bit * np.uint64(c == 90)
                planes[2, q, w] |= bit * np.uint64(neg)
                q += 1
                k = o + 1
                if sep != 32:
                    break
                k += 1
        while True:
            while k < end and _blank(buf[k]):
                k += 1
            if k == end or buf[k] == 10:
                break
            c = buf[k]
            if q == n:
                return TOO_MANY, ls, t, line, k - ls + 1, c
            if t >= cap:
                return FULL, ls, t, line, k - ls + 1, c
            if k + 5 < end:
                # fast path for the usual "B 1 " / "B -1 " token: no data-dependent
                # branches (random letters and signs would mispredict about half the time)
                c2 = buf[k + 2]
                neg = c2 == 45
                o = k + 2 + np.int64(neg)
                sep = buf[o + 1]
                good = (c >= 88) & (c <= 90) & (buf[k + 1] == 32) & (buf[o] == 49) & ((sep == 32) | (sep == 10) | (sep == 13))
                if good:
                    planes[0, q, w] |= bit * np.uint64(c == 89)
                    planes[1, q, w] |= bit * np.uint64(c == 90)
                    planes[2, q, w] |= bit * np.uint64(neg)
                    q += 1
                    k = o + 1
                    continue
            if c == 88:  # X
                pass
            elif c == 89:  # Y
                planes[0, q, w] |= bit
            elif c == 90:  # Z
                planes[1, q, w] |= bit
            else:
                return BAD_LETTER, ls, t, line, k - ls + 1, c
            k += 1
            if k < end and buf[k] != 10 and not _blank(buf[k]):
                return BAD_LETTER, ls, t, line, k - ls + 1, buf[k]
            while k < end and _blank(buf[k]):
                k += 1
            if k == end or buf[k] == 10:
                return MISSING_OUTCOME, ls, t, line, k - ls + 1, -1
            c = buf[k]
            start = k
            neg = c == 45  # '-'
            if neg or c == 43:  # '-' or '+'
                k += 1
            # exactly "1" next, then a blank or the end of the line
            if k == end or buf[k] != 49 or (k + 1 < end and buf[k + 1] != 10 and not _blank(buf[k + 1])):
                return BAD_OUTCOME, ls, t, line, start - ls + 1, buf[start]
            k += 1
            if neg:
                planes[2, q, w] |= bit
            q += 1
        if q:
            if q != n:
                return TOO_FEW, ls, t, line, k - ls + 1, q
            t += 1
        k += 1  # the newline
    return OK, min(k, L), t, line, 0, 0
