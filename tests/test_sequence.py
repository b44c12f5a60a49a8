"""SequenceTracker: exactly-once acceptance of (source, epoch, seq) under duplication,
reordering, restarts and checkpoint round trips (property-based with hypothesis)."""

from __future__ import annotations

import json
import logging

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsense.streaming.transport import SequenceTracker, SeqVerdict

V = SeqVerdict


# -- properties -----------------------------------------------------------------------------------------
@st.composite
def deliveries(draw, window: int = 64, max_epochs: int = 4):
    """A set of distinct (epoch, seq) within ``window`` per epoch, delivered in any
    order with any duplicates: returns (distinct set, delivery list)."""
    n_epochs = draw(st.integers(1, max_epochs))
    epochs = draw(st.lists(st.integers(1, 2**62), min_size=n_epochs, max_size=n_epochs, unique=True))
    distinct = set()
    for e in epochs:
        base = draw(st.integers(0, 10_000))
        seqs = draw(st.sets(st.integers(base, base + window), min_size=1, max_size=40))
        distinct |= {(e, s) for s in seqs}
    items = sorted(distinct)
    dups = draw(st.lists(st.sampled_from(items), max_size=30))
    order = draw(st.permutations(items + dups))
    return distinct, order


@settings(max_examples=300, deadline=None)
@given(deliveries())
def test_any_interleaving_is_accepted_exactly_once(case):
    distinct, order = case
    tr = SequenceTracker(window=64, max_epochs=4)
    accepted = []
    for e, s in order:
        v = tr.observe("src", s, epoch=e, records=1)
        if v.accepted:
            accepted.append((e, s))
    assert sorted(accepted) == sorted(distinct)  # each once, none lost
    st_ = tr.sources["src"]
    assert st_.batches == st_.records == len(distinct)
    assert st_.duplicates == len(order) - len(distinct)
    assert st_.missing >= 0 and st_.given_up == 0


@settings(max_examples=200, deadline=None)
@given(deliveries(), st.integers(0, 1000), st.booleans())
def test_marks_restore_round_trip_preserves_decisions(case, cut_at, via_json):
    _, order = case
    cut = cut_at % (len(order) + 1)
    straight = SequenceTracker(window=64, max_epochs=4)
    want = [straight.observe("src", s, epoch=e) for e, s in order]

    first = SequenceTracker(window=64, max_epochs=4)
    got = [first.observe("src", s, epoch=e) for e, s in order[:cut]]
    marks = first.marks()
    # what a checkpoint does to it: JSON (status body) or msgpack (the checkpoint file)
    marks = json.loads(json.dumps(marks)) if via_json else msgspec.msgpack.decode(msgspec.msgpack.encode(marks))
    second = SequenceTracker(window=64, max_epochs=4)
    second.restore(marks)
    assert second.marks() == first.marks()
    got += [second.observe("src", s, epoch=e) for e, s in order[cut:]]
    assert got == want


# -- verdicts -------------------------------------------------------------------------------------------
def test_late_batch_fills_its_hole_once(caplog):
    tr = SequenceTracker()
    with caplog.at_level(logging.INFO, logger="qsense.streaming.transport"):
        assert [tr.observe("a", s, epoch=7, records=10) for s in (0, 1, 4)] == [V.FIRST, V.OK, V.GAP]
        assert tr.sources["a"].missing == 2
        assert tr.observe("a", 2, epoch=7, records=10) is V.LATE
        assert tr.observe("a", 2, epoch=7) is V.DUPLICATE
        assert tr.observe("a", 3, epoch=7, records=10) is V.LATE
        assert tr.observe("a", 5, epoch=7, records=10) is V.OK
    s = tr.as_dict()["a"]
    assert (s["batches"], s["records"], s["gaps"], s["missing"], s["late"], s["duplicates"]) == (6, 60, 1, 0, 2, 1)
    assert s["last_seq"] == 5
    assert "late batch from source 'a': seq 2" in caplog.text
    # the window is fully decided again: nothing kept but floor and high
    assert tr.marks()["a"]["epochs"] == [{"epoch": 7, "floor": 6, "high": 5, "seen": []}]


def test_batches_reordered_before_the_first_are_accepted_uncounted():
    tr = SequenceTracker()
    assert tr.observe("a", 3, epoch=1) is V.FIRST
    assert [tr.observe("a", s, epoch=1) for s in (1, 0, 2, 4)] == [V.LATE, V.LATE, V.LATE, V.OK]
    assert tr.sources["a"].missing == 0 and tr.sources["a"].late == 3


def test_replay_of_an_old_epoch_after_a_restart_is_a_duplicate():
    tr = SequenceTracker()
    for s in range(5):
        tr.observe("a", s, epoch=1)
    assert tr.observe("a", 0, epoch=2) is V.RESTART
    assert tr.observe("a", 3, epoch=1) is V.DUPLICATE  # the old tracker folded this twice
    # an old run's batch that was still in flight is new data of that run: accepted once
    assert tr.observe("a", 5, epoch=1) is V.OK
    assert tr.observe("a", 5, epoch=1) is V.DUPLICATE
    st_ = tr.sources["a"]
    assert (st_.epoch, st_.last_seq, st_.restarts) == (2, 0, 1)  # the current epoch stays the newest run
    assert tr.observe("a", 1, epoch=2) is V.OK


def test_epoch_zero_follows_the_current_epoch_and_is_adopted():
    tr = SequenceTracker()
    assert tr.observe("a", 0) is V.FIRST
    assert tr.observe("a", 1, epoch=9) is V.OK  # the first epoch given is the source's own: no restart
    assert tr.observe("a", 1) is V.DUPLICATE  # epoch 0 = "not given": judged in the current epoch
    assert (tr.sources["a"].epoch, tr.sources["a"].restarts) == (9, 0)


def test_window_gives_up_old_holes_and_keeps_them_missing(caplog):
    tr = SequenceTracker(window=8, max_seq_jump=None)  # unbounded: the huge jump below is bookkept, not refused
    tr.observe("a", 0, epoch=1)
    with caplog.at_level(logging.WARNING, logger="qsense.streaming.transport"):
        assert tr.observe("a", 3, epoch=1) is V.GAP  # 1, 2 missing
        for s in range(4, 10):
            assert tr.observe("a", s, epoch=1) is V.OK
        assert tr.sources["a"].given_up == 0  # high 9, floor 1: the window of 8 is full, not exceeded
        assert tr.observe("a", 2, epoch=1) is V.LATE  # still inside the window
        assert tr.observe("a", 10, epoch=1) is V.OK  # high 10: seq 1 is more than 8 below, given up
    st_ = tr.sources["a"]
    assert (st_.missing, st_.given_up, st_.late) == (1, 1, 1)
    assert tr.observe("a", 1, epoch=1) is V.DUPLICATE  # too late: decided
    assert "gave up waiting for 1 batch(es)" in caplog.text
    assert tr.marks()["a"]["epochs"][0]["floor"] == 11
    big = tr.observe("a", 10_000_000, epoch=1)  # a huge jump is bookkept arithmetically, not hole by hole
    assert big is V.GAP and tr.sources["a"].given_up == 1 + (10_000_000 - 8) - 11


def test_epoch_lru_forgets_the_least_recently_used():
    tr = SequenceTracker(max_epochs=3)
    for e in (1, 2, 3):
        tr.observe("a", 0, epoch=e)
    tr.observe("a", 1, epoch=1)  # epoch 1 used again: epoch 2 is now the least recent
    tr.observe("a", 0, epoch=4)  # a fourth run: epoch 2 forgotten
    assert [m["epoch"] for m in tr.marks()["a"]["epochs"]] == [3, 1, 4]
    assert tr.observe("a", 1, epoch=1) is V.DUPLICATE  # remembered
    assert tr.observe("a", 0, epoch=2) is V.RESTART  # forgotten: a replay now looks like a restart (documented)
    assert tr.sources["a"].epoch == 2


def test_old_form_marks_mean_everything_up_to_seq(caplog):
    tr = SequenceTracker()
    tr.restore({"det": {"epoch": 3, "seq": 4}})
    assert tr.sources["det"].resumed
    with caplog.at_level(logging.WARNING, logger="qsense.streaming.transport"):
        assert tr.observe("det", 3, epoch=3) is V.DUPLICATE
        assert tr.observe("det", 9, epoch=3) is V.GAP
        assert tr.observe("det", 7, epoch=3) is V.LATE
    assert "gap across the daemon restart on source 'det': 4 batch(es) missing (seq 5..8)" in caplog.text
    assert tr.sources["det"].missing == 3
    assert tr.marks()["det"]["seq"] == 9


def test_late_fill_after_restore_does_not_make_missing_negative():
    before = SequenceTracker()
    for s in (0, 1, 5):
        before.observe("a", s, epoch=1)
    after = SequenceTracker()
    after.restore(before.marks())
    assert after.observe("a", 3, epoch=1) is V.LATE  # counted missing by the previous process, not this one
    assert after.sources["a"].missing == 0 and after.sources["a"].late == 1
    assert [after.observe("a", s, epoch=1) for s in (2, 4, 3, 6)] == [V.LATE, V.LATE, V.DUPLICATE, V.OK]


def test_corrupt_dedup_state_falls_back_to_epoch_and_seq(caplog):
    tr = SequenceTracker()
    tr.restore({"a": {"epoch": 2, "seq": 10, "v": 2, "epochs": [{"epoch": 2, "floor": 3, "high": 10, "seen": [[9, 99]]}]}})
    assert "unusable dedup state" in caplog.text
    assert tr.observe("a", 10, epoch=2) is V.DUPLICATE and tr.observe("a", 11, epoch=2) is V.OK
    with pytest.raises(ValueError, match="source 'b'"):
        tr.restore({"b": {"epoch": 2}})


def test_forget_resets_a_source():
    tr = SequenceTracker()
    tr.observe("a", 5, epoch=1)
    assert tr.forget("a") and not tr.forget("a")
    assert tr.observe("a", 5, epoch=1) is V.FIRST


def test_marks_stay_small_for_in_order_streams():
    tr = SequenceTracker()
    for s in range(10_000):
        tr.observe("a", 100 + s, epoch=5)  # a stream starting at 100: the pre-start allowance fills up
    assert tr.marks()["a"] == {"epoch": 5, "seq": 10_099, "v": 2,
                               "epochs": [{"epoch": 5, "floor": 10_100, "high": 10_099, "seen": []}]}
    assert len(json.dumps(tr.marks())) < 200


def test_one_forged_batch_cannot_silence_a_source():
    """A batch with seq 2**63-1 under the victim's name is refused (counted), not adopted; later real batches go on."""
    tr = SequenceTracker(max_seq_jump=1000)
    for s in range(5):
        assert tr.observe("victim", s, epoch=7).accepted
    before = tr.marks()
    for epoch in (0, 7):  # without an epoch (judged in the current one) or with the victim's own
        assert tr.observe("victim", 2**63 - 1, epoch=epoch, records=0) is V.REFUSED
    assert tr.marks() == before and tr.sources["victim"].refused == 2  # state untouched: nothing to checkpoint
    assert tr.observe("victim", 5, epoch=7) is V.OK and tr.observe("victim", 1005, epoch=7) is V.GAP  # within the bound
    assert tr.totals()["refused"] == 2


def test_forged_first_batch_without_epoch_is_not_adopted_by_the_real_producer():
    tr = SequenceTracker(max_seq_jump=1000)
    assert tr.observe("victim", 2**63 - 1) is V.FIRST  # the forger got there first, without an epoch
    assert tr.observe("victim", 0, epoch=9) is V.RESTART  # too far to adopt that numbering: a window of its own
    assert [tr.observe("victim", s, epoch=9) for s in (1, 2)] == [V.OK, V.OK]
    assert tr.observe("victim", 3) is V.OK  # epoch-less batches now follow the real epoch


def test_forget_is_the_operator_reset():
    tr = SequenceTracker(max_seq_jump=1000)
    tr.observe("victim", 2**63 - 1, epoch=9)  # a forged first batch in the victim's own epoch
    assert tr.observe("victim", 0, epoch=9) is V.REFUSED  # visible (counted, logged) but still silenced
    assert tr.forget("victim") and not tr.forget("victim")
    assert tr.observe("victim", 0, epoch=9) is V.FIRST and tr.observe("victim", 1, epoch=9) is V.OK
