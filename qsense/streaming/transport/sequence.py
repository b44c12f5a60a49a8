"""Per-source sequence tracking: ``(epoch, seq)`` of each batch into gap,
duplicate and restart counts (and throttled log lines)."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Mapping

from .throttled_log import ThrottledLog

__all__ = ["SeqVerdict", "SourceState", "SequenceTracker"]

log = logging.getLogger(__name__)


class SeqVerdict(enum.Enum):
    """What :meth:`SequenceTracker.observe` concluded about one batch."""

    FIRST = "first"          # first batch ever seen from this source: accept
    OK = "ok"                # the next seq: accept
    GAP = "gap"              # batches are missing before this one: accept, counted
    DUPLICATE = "duplicate"  # seq not newer than the last accepted: drop
    RESTART = "restart"      # the producer restarted (new epoch): accept, counted

    @property
    def accepted(self) -> bool:
        return self is not SeqVerdict.DUPLICATE


@dataclass
class SourceState:
    """Bookkeeping for one source."""

    epoch: int = 0
    last_seq: int = -1
    batches: int = 0
    records: int = 0
    gaps: int = 0
    missing: int = 0
    duplicates: int = 0
    restarts: int = 0
    #: restored from a checkpoint, no batch seen since (a gap now spans the restart)
    resumed: bool = False


class SequenceTracker:
    """Per-source sequence numbers: detects gaps, duplicates and producer restarts.

    A source's batches carry ``seq`` increasing by one and an ``epoch`` chosen
    at random by each producer run (0 = not given).  Rules:

    * a new epoch (both non-zero and different) is a producer restart: accept
      and start following the new numbering;
    * ``seq == last + 1``: in order;  ``seq > last + 1``: ``seq - last - 1``
      batches are missing (a gap), accept;  ``seq <= last``: a duplicate or a
      replay, drop it.

    The state (:meth:`marks`) goes into checkpoints; after :meth:`restore` the
    first batch of a source tells whether anything was lost across the restart.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.sources: dict[str, SourceState] = {}
        self._log = ThrottledLog(logger or log)

    def observe(self, source: str, seq: int, epoch: int = 0, records: int = 0) -> SeqVerdict:
        """Classify one batch and update the counts (``records`` counted if accepted)."""
        st = self.sources.get(source)
        if st is None:
            st = self.sources[source] = SourceState(epoch=epoch, last_seq=seq)
            verdict = SeqVerdict.FIRST
        elif epoch and st.epoch and epoch != st.epoch:
            st.restarts += 1
            self._log.log(logging.INFO, f"restart:{source}", "source %r restarted (epoch %x -> %x); following its numbering from seq %d",
                          source, st.epoch, epoch, seq)
            st.epoch, st.last_seq = epoch, seq
            verdict = SeqVerdict.RESTART
        elif seq <= st.last_seq:
            st.duplicates += 1
            self._log.log(logging.WARNING, f"dup:{source}", "duplicate batch from source %r: seq %d not after %d; dropped",
                          source, seq, st.last_seq)
            return SeqVerdict.DUPLICATE
        elif seq == st.last_seq + 1:
            st.last_seq = seq
            verdict = SeqVerdict.OK
        else:
            missing = seq - st.last_seq - 1
            st.gaps += 1
            st.missing += missing
            where = " across the daemon restart" if st.resumed else ""
            self._log.log(logging.WARNING, f"gap:{source}", "gap%s on source %r: %d batch(es) missing (seq %d..%d)",
                          where, source, missing, st.last_seq + 1, seq - 1)
            st.last_seq = seq
            verdict = SeqVerdict.GAP
        if epoch and not st.epoch:
            st.epoch = epoch
        st.resumed = False
        st.batches += 1
        st.records += records
        return verdict

    def totals(self) -> dict[str, int]:
        """Sums over sources of batches, records, gaps, missing, duplicates, restarts."""
        keys = ("batches", "records", "gaps", "missing", "duplicates", "restarts")
        return {k: sum(getattr(s, k) for s in self.sources.values()) for k in keys}

    def marks(self) -> dict[str, dict[str, int]]:
        """``{source: {"epoch", "seq"}}``: what a checkpoint must remember."""
        return {src: {"epoch": s.epoch, "seq": s.last_seq} for src, s in self.sources.items()}

    def restore(self, marks: Mapping[str, Mapping[str, int]]) -> None:
        """Continue from checkpointed marks (counts restart from zero)."""
        for src, m in marks.items():
            self.sources[str(src)] = SourceState(epoch=int(m.get("epoch", 0)), last_seq=int(m["seq"]), resumed=True)

    def as_dict(self) -> dict[str, dict[str, int]]:
        """Per-source counters, JSON-friendly."""
        return {
            src: {"epoch": s.epoch, "last_seq": s.last_seq, "batches": s.batches, "records": s.records, "gaps": s.gaps,
                  "missing": s.missing, "duplicates": s.duplicates, "restarts": s.restarts}
            for src, s in self.sources.items()
        }

