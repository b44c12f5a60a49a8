"""JSON ``events`` messages longer than one conversion chunk (``_EVENT_CHUNK`` events):
the rows come back whole and in order, at and across the chunk boundaries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qsense.drivers.mqtt_detectors import _EVENT_CHUNK, PayloadError, batch_json, parse_payload
from qsense.records import BellBatch, ShadowBatch


@pytest.mark.parametrize("T", [_EVENT_CHUNK, _EVENT_CHUNK + 1, 2 * _EVENT_CHUNK + 5])
def test_long_event_lists_parse_whole_across_chunks(T):
    rng = np.random.default_rng(T)
    sh = ShadowBatch(rng.integers(0, 3, (T, 5), dtype=np.uint8), rng.integers(0, 2, (T, 5), dtype=np.uint8),
                     t=np.arange(T, dtype=np.float64), source="det", seq=1)
    p = parse_payload(batch_json(sh), "t")
    np.testing.assert_array_equal(p.batch.bases, sh.bases)
    np.testing.assert_array_equal(p.batch.outcomes, sh.outcomes)
    np.testing.assert_array_equal(p.batch.t, sh.t)
    bell = BellBatch(rng.integers(0, 4, (T, 3), dtype=np.uint8), t=np.arange(T, dtype=np.float64), source="pair",
                     seq=2, wait=rng.random(T))
    q = parse_payload(batch_json(bell), "t")
    np.testing.assert_array_equal(q.batch.outcomes, bell.outcomes)
    np.testing.assert_allclose(q.batch.wait, bell.wait)


def test_a_width_change_after_the_first_chunk_is_refused():
    T = _EVENT_CHUNK + 3
    events = [{"bases": "XXXX", "outcomes": "0101"}] * (T - 1) + [{"bases": "XXX", "outcomes": "010"}]
    doc = json.dumps({"kind": "shadow", "events": events}).encode()  # only the last event narrower
    with pytest.raises(PayloadError, match=f"event {T - 1} has 3 qubits, earlier ones 4"):
        parse_payload(doc, "t")
