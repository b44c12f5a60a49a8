"""Per-source sequence tracking: each ``(source, epoch, seq)`` is accepted at most once.

A producer numbers its batches ``seq = 0, 1, 2, ...`` under an ``epoch`` chosen at
random per producer run (0 = not given).  The transport delivers at least once
(:class:`~qsense.streaming.transport.RecordPublisher` resends what was not
acknowledged) and may reorder around reconnects; :class:`SequenceTracker` turns
that into exactly-once folding: a batch seen before is a duplicate, a batch that
arrives late fills its hole once, and gaps, late arrivals and producer restarts
are counted (and logged, throttled).

State per source and epoch (a bounded number of epochs per source, least
recently used forgotten first): ``floor`` (every seq below it is decided),
the accepted seqs at or above ``floor`` and ``high`` (the largest accepted).
Holes more than ``window`` batches below ``high`` are given up.  :meth:`marks`
captures this exactly for checkpoints, :meth:`restore` brings it back.
``docs/reliable-delivery.md`` states the rules and what they guarantee.
"""

from __future__ import annotations

import bisect
import enum
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .throttled_log import ThrottledLog

__all__ = ["SeqVerdict", "SourceState", "SequenceTracker", "DEFAULT_WINDOW", "DEFAULT_MAX_EPOCHS", "DEFAULT_MAX_SEQ_JUMP",
           "DEFAULT_MAX_SOURCES", "MARKS_VERSION"]

log = logging.getLogger(__name__)

#: Batches below the highest accepted seq that may still arrive late and be accepted.
DEFAULT_WINDOW = 4096
#: Epochs (producer runs) remembered per source.
DEFAULT_MAX_EPOCHS = 64
#: The furthest one batch may move a source's sequence state (see :class:`SequenceTracker`).
DEFAULT_MAX_SEQ_JUMP = 1_000_000
#: Distinct sources tracked; a batch from a new source beyond it is refused (see :class:`SequenceTracker`).
DEFAULT_MAX_SOURCES = 1024
#: ``"v"`` of the marks :meth:`SequenceTracker.marks` writes (absent in the old ``{"epoch", "seq"}`` form).
MARKS_VERSION = 2


class SeqVerdict(enum.Enum):
    """What :meth:`SequenceTracker.observe` concluded about one batch."""

    FIRST = "first"          # first batch ever seen from this source: accept
    OK = "ok"                # the next seq of its epoch: accept
    GAP = "gap"              # seqs were skipped before this one: accept, the skipped ones counted missing
    LATE = "late"            # fills a hole below the highest seq: accept, one fewer missing
    DUPLICATE = "duplicate"  # accepted before, or below the decided floor: drop
    RESTART = "restart"      # a new epoch (the producer restarted): accept, counted
    REFUSED = "refused"      # seq jumps further than max_seq_jump from the source's state: drop, counted, state untouched
    TOO_MANY_SOURCES = "too_many_sources"  # a new source beyond max_sources: drop, counted, nothing remembered

    @property
    def accepted(self) -> bool:
        return self is SeqVerdict.FIRST or self is SeqVerdict.OK or self is SeqVerdict.GAP or self is SeqVerdict.LATE \
            or self is SeqVerdict.RESTART

    @property
    def refused(self) -> bool:
        """Dropped before anything is stored (not a duplicate: the sender is not acknowledged)."""
        return self is SeqVerdict.REFUSED or self is SeqVerdict.TOO_MANY_SOURCES


@dataclass
class SourceState:
    """Counters of one source (``epoch``/``last_seq``: its current epoch and the highest seq accepted in it)."""

    epoch: int = 0
    last_seq: int = -1
    batches: int = 0
    records: int = 0
    gaps: int = 0
    missing: int = 0
    duplicates: int = 0
    restarts: int = 0
    #: batches accepted below the highest seq of their epoch (filling a hole)
    late: int = 0
    #: holes counted missing and then given up (more than ``window`` below the highest seq)
    given_up: int = 0
    #: batches refused because their seq jumped more than ``max_seq_jump`` (not accepted, state untouched)
    refused: int = 0
    #: restored from a checkpoint, no batch accepted since (a gap now spans the restart)
    resumed: bool = False


_COUNTERS = ("batches", "records", "gaps", "missing", "duplicates", "restarts", "late", "given_up", "refused")


class _Window:
    """Dedup state of one epoch: ``floor``, the accepted seqs >= floor (sorted), ``high``.

    ``counted_from``: holes at or above it were counted as missing by this tracker
    (below it they were not: before the epoch's first batch, or counted by the
    process that wrote the checkpoint), so filling one only then lowers ``missing``.
    A sorted list, not a set: giving up a prefix and counting holes are bisections,
    and an in-order stream keeps it empty.
    """

    __slots__ = ("floor", "high", "seen", "counted_from")

    def __init__(self, floor: int, high: int, seen: list[int], counted_from: int) -> None:
        self.floor = floor
        self.high = high
        self.seen = seen
        self.counted_from = counted_from

    @classmethod
    def starting_at(cls, seq: int, window: int) -> "_Window":
        # seqs up to `window` below the first one may still come (reordered at the
        # start of a run); they are accepted but were never counted missing
        w = cls(floor=max(0, seq - window), high=seq, seen=[seq], counted_from=seq)
        w._compact()
        return w

    def contains(self, seq: int) -> bool:
        if seq < self.floor:
            return True
        i = bisect.bisect_left(self.seen, seq)
        return i < len(self.seen) and self.seen[i] == seq

    def add(self, seq: int) -> None:
        if not self.seen or seq > self.seen[-1]:
            self.seen.append(seq)
        else:
            bisect.insort(self.seen, seq)
        if seq > self.high:
            self.high = seq
        self._compact()

    def _compact(self) -> None:
        # the accepted run starting at floor is decided: move floor past it
        seen, i = self.seen, 0
        while i < len(seen) and seen[i] == self.floor + i:
            i += 1
        if i:
            self.floor += i
            del seen[:i]

    def give_up(self, window: int) -> int:
        """Raise ``floor`` to ``high - window``; returns how many counted holes that gave up."""
        new_floor = self.high - window
        if new_floor <= self.floor:
            return 0
        lo = max(self.floor, self.counted_from)
        cut = bisect.bisect_left(self.seen, new_floor)
        lost = 0
        if new_floor > lo:
            accepted = cut - bisect.bisect_left(self.seen, lo)
            lost = (new_floor - lo) - accepted
        del self.seen[:cut]
        self.floor = new_floor
        self._compact()
        return lost

    def runs(self) -> list[list[int]]:
        """The accepted seqs >= floor as inclusive ``[first, last]`` runs."""
        out: list[list[int]] = []
        for s in self.seen:
            if out and s == out[-1][1] + 1:
                out[-1][1] = s
            else:
                out.append([s, s])
        return out


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an int; got {value!r}")
    return value


class SequenceTracker:
    """Exactly-once acceptance of ``(source, epoch, seq)``, with gap, late, duplicate and restart counts.

    Rules for a batch ``(source, epoch, seq)``:

    * a source never seen: FIRST;
    * ``epoch`` 0 (not given) or the source's current epoch: judged in the current
      epoch's window; another epoch still remembered (an earlier run whose batches
      arrive late): judged in that epoch's window, the current epoch stays;
      a source whose current epoch is 0 adopts the first non-zero epoch it sees;
      any other epoch is a RESTART: accepted, it becomes the current epoch;
    * in a window: below ``floor`` or accepted before: DUPLICATE (dropped);
      ``high + 1``: OK; above: GAP (the skipped seqs are counted missing);
      a hole between ``floor`` and ``high``: LATE (accepted, one fewer missing).

    ``window``: when ``high - floor`` would exceed it, the holes below
    ``high - window`` are given up (they stay counted as missing, and a batch for
    one of them arriving even later is a duplicate).  The first batch of an epoch
    opens the window ``window`` seqs below itself, so batches reordered at the
    start of a run are still accepted (they were never counted missing).
    ``max_epochs``: epochs remembered per source; the least recently used one is
    forgotten first (never the current one), after which a replay of that epoch
    would be taken for a restart and accepted again.

    ``max_seq_jump`` (None: unbounded) bounds how far one batch may move a
    source's state, so that one forged batch (``seq = 2**63 - 1``) cannot make
    every later real batch a duplicate: a batch more than that above the highest
    seq of its epoch, or more than that below its floor, is REFUSED (dropped,
    counted, nothing changes); a source whose batches came without an epoch
    adopts a new epoch's numbering only within that distance, beyond it the new
    epoch gets a window of its own (as at a restart).  The first batch of a
    source is not bounded (a long-running producer may be anywhere in its
    numbering): :meth:`forget` is the operator's reset for a source already
    poisoned.  ``docs/daemon.md`` (trust model) says what this does and does not stop.

    ``max_sources`` (None: unbounded) bounds the sources remembered, so a flood
    of batches under new names cannot grow the state (and every scrape and
    status body built from it) without limit: a batch from a new source beyond
    it is TOO_MANY_SOURCES (dropped, counted in :attr:`refused_sources`, nothing
    remembered); :meth:`forget` frees a place.
    """

    def __init__(self, logger: logging.Logger | None = None, *, window: int = DEFAULT_WINDOW,
                 max_epochs: int = DEFAULT_MAX_EPOCHS, max_seq_jump: int | None = DEFAULT_MAX_SEQ_JUMP,
                 max_sources: int | None = DEFAULT_MAX_SOURCES) -> None:
        if window < 1 or max_epochs < 1 or (max_seq_jump is not None and max_seq_jump < 1) or (max_sources is not None and max_sources < 1):
            raise ValueError("window, max_epochs, max_seq_jump and max_sources must be positive")
        self.max_sources = None if max_sources is None else int(max_sources)
        #: batches refused because they came from a new source beyond ``max_sources``
        self.refused_sources = 0
        self.window = int(window)
        self.max_epochs = int(max_epochs)
        self.max_seq_jump = None if max_seq_jump is None else int(max_seq_jump)
        self.sources: dict[str, SourceState] = {}
        # per source: epoch -> window, least recently used first
        self._epochs: dict[str, OrderedDict[int, _Window]] = {}
        self._log = ThrottledLog(logger or log)

    # -- judging ----------------------------------------------------------------------------
    def observe(self, source: str, seq: int, epoch: int = 0, records: int = 0) -> SeqVerdict:
        """Classify one batch and update the counts (``records`` counted if accepted)."""
        st = self.sources.get(source)
        if st is None:
            if self.max_sources is not None and len(self.sources) >= self.max_sources:
                self.refused_sources += 1
                self._log.log(logging.WARNING, "max_sources", "refused a batch from new source %r: %d sources are tracked "
                              "already (max_sources); a flood of source names, or raise [daemon] max_sources",
                              source[:80], len(self.sources))
                return SeqVerdict.TOO_MANY_SOURCES
            st = self.sources[source] = SourceState(epoch=epoch, last_seq=seq)
            self._epochs[source] = OrderedDict({epoch: _Window.starting_at(seq, self.window)})
            return self._accepted(st, SeqVerdict.FIRST, records)
        epochs = self._epochs[source]
        if epoch == 0 or epoch == st.epoch:
            epoch = st.epoch
            win = epochs[epoch]
        elif epoch in epochs:
            win = epochs[epoch]  # an earlier run of the producer, still remembered
        elif st.epoch == 0 and not self._too_far(seq, epochs[0]):
            # the source's batches so far came without an epoch: this is its epoch
            win = epochs.pop(0)
            epochs[epoch] = win
            st.epoch = epoch
        else:
            st.restarts += 1
            self._log.log(logging.INFO, f"restart:{source}", "source %r restarted (epoch %x -> %x); following its numbering from seq %d",
                          source, st.epoch, epoch, seq)
            epochs[epoch] = _Window.starting_at(seq, self.window)
            st.epoch, st.last_seq = epoch, seq
            self._forget_old_epochs(source, epochs, keep=epoch)
            return self._accepted(st, SeqVerdict.RESTART, records)
        epochs.move_to_end(epoch)
        if self._too_far(seq, win):
            st.refused += 1
            self._log.log(logging.WARNING, f"jump:{source}", "source %r: refused a batch with seq %d (epoch %x): more than "
                          "max_seq_jump %d from seqs %d..%d accepted so far; a forged or broken sender? (an operator reset "
                          "of the source accepts it)", source, seq, epoch, self.max_seq_jump, win.floor, win.high)
            return SeqVerdict.REFUSED
        if win.contains(seq):
            st.duplicates += 1
            self._log.log(logging.WARNING, f"dup:{source}", "duplicate batch from source %r: seq %d (epoch %x) already accepted; dropped",
                          source, seq, epoch)
            return SeqVerdict.DUPLICATE
        if seq == win.high + 1:
            verdict = SeqVerdict.OK
        elif seq > win.high:
            missing = seq - win.high - 1
            st.gaps += 1
            st.missing += missing
            where = " across the daemon restart" if st.resumed else ""
            self._log.log(logging.WARNING, f"gap:{source}", "gap%s on source %r: %d batch(es) missing (seq %d..%d)",
                          where, source, missing, win.high + 1, seq - 1)
            verdict = SeqVerdict.GAP
        else:
            st.late += 1
            if seq >= win.counted_from:
                st.missing -= 1
            self._log.log(logging.INFO, f"late:{source}", "late batch from source %r: seq %d (highest %d) accepted, filling its gap",
                          source, seq, win.high)
            verdict = SeqVerdict.LATE
        win.add(seq)
        lost = win.give_up(self.window)
        if lost:
            st.given_up += lost
            self._log.log(logging.WARNING, f"giveup:{source}", "source %r: gave up waiting for %d batch(es) more than %d below seq %d",
                          source, lost, self.window, win.high)
        if epoch == st.epoch:
            st.last_seq = win.high
        return self._accepted(st, verdict, records)

    def _too_far(self, seq: int, win: _Window) -> bool:
        if self.max_seq_jump is None:
            return False
        return seq > win.high + self.max_seq_jump or seq < win.floor - self.max_seq_jump

    @staticmethod
    def _accepted(st: SourceState, verdict: SeqVerdict, records: int) -> SeqVerdict:
        st.resumed = False
        st.batches += 1
        st.records += records
        return verdict

    def _forget_old_epochs(self, source: str, epochs: OrderedDict[int, _Window], keep: int) -> None:
        while len(epochs) > self.max_epochs:
            oldest = next(e for e in epochs if e != keep)
            del epochs[oldest]
            self._log.log(logging.INFO, f"forget:{source}", "source %r: forgot epoch %x (more than %d epochs); a replay of it "
                          "would be accepted again", source, oldest, self.max_epochs)

    def forget(self, source: str) -> bool:
        """Drop everything known about ``source`` (an operator reset); its next batch is FIRST again.

        Returns whether the source was known."""
        self._epochs.pop(source, None)
        return self.sources.pop(source, None) is not None

    # -- reading ----------------------------------------------------------------------------
    def totals(self) -> dict[str, int]:
        """Sums over sources of batches, records, gaps, missing, duplicates, restarts, late, given_up."""
        return {k: sum(getattr(s, k) for s in self.sources.values()) for k in _COUNTERS}

    def as_dict(self) -> dict[str, dict[str, int]]:
        """Per-source counters, JSON-friendly."""
        return {src: {"epoch": s.epoch, "last_seq": s.last_seq, **{k: getattr(s, k) for k in _COUNTERS}}
                for src, s in self.sources.items()}

    # -- checkpoints ------------------------------------------------------------------------
    def marks(self) -> dict[str, dict[str, Any]]:
        """What a checkpoint must remember, JSON- and msgpack-friendly (string keys, ints, lists)::

            {source: {"epoch": current epoch, "seq": highest seq accepted in it,
                      "v": 2,
                      "epochs": [{"epoch": e, "floor": f, "high": h, "seen": [[a, b], ...]}, ...]}}

        ``epochs`` lists every remembered epoch, least recently used first;
        ``seen`` are the accepted seqs >= ``floor`` as inclusive runs (empty for an
        in-order stream).  Counters are not part of it: they restart with the process.
        """
        out: dict[str, dict[str, Any]] = {}
        for src, st in self.sources.items():
            eps = [{"epoch": e, "floor": w.floor, "high": w.high, "seen": w.runs()} for e, w in self._epochs[src].items()]
            out[src] = {"epoch": st.epoch, "seq": st.last_seq, "v": MARKS_VERSION, "epochs": eps}
        return out

    def restore(self, marks: Mapping[str, Mapping[str, Any]]) -> None:
        """Continue from checkpointed marks (counts restart from zero).

        Accepts :meth:`marks` output and the old form ``{"epoch": e, "seq": s}``
        (every seq <= s of epoch e was accepted).  A source whose dedup state is
        unusable falls back to the old reading of its ``epoch``/``seq``, which
        never accepts anything twice (late holes are then given up); with no
        usable ``seq`` either, :class:`ValueError` names the source.
        """
        for src, m in marks.items():
            src = str(src)
            try:
                epoch = _int(m.get("epoch", 0), "epoch")
                seq = _int(m["seq"], "seq")
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                raise ValueError(f"sequence marks of source {src!r} are unusable: {exc}") from None
            epochs: OrderedDict[int, _Window] | None = None
            if "epochs" in m:
                try:
                    epochs = self._parse_epochs(m["epochs"], current=epoch)
                except (TypeError, ValueError, KeyError, AttributeError) as exc:
                    log.warning("sequence marks of source %r: unusable dedup state (%s); treating every seq <= %d of epoch %x as "
                                "accepted", src, exc, seq, epoch)
                    epochs = None
            if epochs is None:
                epochs = OrderedDict({epoch: _Window(floor=seq + 1, high=seq, seen=[], counted_from=seq + 1)})
            high = epochs[epoch].high
            self.sources[src] = SourceState(epoch=epoch, last_seq=high, resumed=True)
            self._epochs[src] = epochs

    def _parse_epochs(self, items: Iterable[Mapping[str, Any]], current: int) -> OrderedDict[int, _Window]:
        epochs: OrderedDict[int, _Window] = OrderedDict()
        for item in items:
            e = _int(item["epoch"], "epoch")
            floor, high = _int(item["floor"], "floor"), _int(item["high"], "high")
            if floor < 0 or high < floor - 1:
                raise ValueError(f"epoch {e}: floor {floor}, high {high}")
            # a checkpoint written with a larger window: give up the excess now, silently
            floor = max(floor, high - self.window)
            seen: list[int] = []
            for run in item["seen"]:
                a, b = (_int(x, "seen") for x in run)
                if a > b or b > high:
                    raise ValueError(f"epoch {e}: seen run {run} outside ..{high}")
                seen.extend(range(max(a, floor), b + 1))
            seen = sorted(set(seen))
            # holes below high were counted (or given up) by the process that wrote the marks
            epochs[e] = w = _Window(floor=floor, high=high, seen=seen, counted_from=high + 1)
            w._compact()
        if current not in epochs:
            raise ValueError(f"current epoch {current} not among the epochs")
        while len(epochs) > self.max_epochs:  # a tracker remembering fewer epochs than the writer
            del epochs[next(e for e in epochs if e != current)]
        return epochs
