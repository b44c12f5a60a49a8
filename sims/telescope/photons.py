"""Heralded photons as collected: arrival times, dark counts and atmospheric piston.

:class:`Photons` is the record that :class:`~qsense.sims.telescope.TelescopeSim`
emits, the telescope driver streams, and the backend turns back into stored
copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Photons"]


@dataclass
class Photons:
    """A batch of T heralded copies as collected (before storage).

    ``t``       float64 (T,)   arrival time, seconds (simulation clock)
    ``dark``    bool (T,)      herald came from a detector dark count
    ``site``    int64 (T,)     telescope of a dark count (-1 for real photons)
    ``piston``  float64 (T, M) atmospheric piston phase of each telescope at arrival
    """

    t: np.ndarray
    dark: np.ndarray
    site: np.ndarray
    piston: np.ndarray

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def __getitem__(self, idx: Any) -> Photons:
        if isinstance(idx, (int, np.integer)):
            idx = slice(int(idx), int(idx) + 1 if int(idx) != -1 else None)
        return Photons(self.t[idx], self.dark[idx], self.site[idx], self.piston[idx])

    @staticmethod
    def concatenate(items: Sequence[Photons]) -> Photons:
        """Join batches in order."""
        items = list(items)
        if not items:
            raise ValueError("nothing to concatenate")
        return Photons(
            np.concatenate([p.t for p in items]),
            np.concatenate([p.dark for p in items]),
            np.concatenate([p.site for p in items]),
            np.concatenate([p.piston for p in items]),
        )
