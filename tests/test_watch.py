"""``qsense watch``: the live view of a running daemon, against a real daemon over 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np

from qsense import ShadowBatch
from qsense.apps.watch import render
from qsense.streaming.daemon import EstimationDaemon
from qsense.streaming.transport import RecordPublisher

QSENSE = [sys.executable, "-m", "qsense"]


def _doc():
    return {
        "daemon": {"name": "watched", "publish_interval": 0.1},
        "inputs": {"zmq": [{"endpoint": "tcp://127.0.0.1:0", "name": "in"}]},
        "estimators": [{"name": "zz", "type": "shadow", "observables": ["Z0 Z1", "X0"], "wires": 2}],
        "outputs": {"zmq": {"endpoint": "tcp://127.0.0.1:0", "snapshot_endpoint": "tcp://127.0.0.1:0"}},
    }


async def test_watch_json_follows_a_real_daemon():
    d = EstimationDaemon(_doc())
    await d.start()
    try:
        rng = np.random.default_rng(1)
        pub = RecordPublisher(d.endpoints["input.in"], source="lab")
        for _ in range(3):
            await pub.send(ShadowBatch(rng.integers(0, 3, (400, 2)), rng.integers(0, 2, (400, 2)), t=np.full(400, 1.0)))
        await pub.flush(timeout=10)
        await asyncio.sleep(0.3)
        proc = await asyncio.create_subprocess_exec(
            *QSENSE, "watch", d.endpoints["estimates"], "--snapshot", d.endpoints["snapshot"], "--json", "--count", "6",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        pub.close()
    finally:
        await d.stop()
    assert proc.returncode == 0, err.decode()
    rows = [json.loads(line) for line in out.decode().splitlines()]
    assert len(rows) == 6
    est = [r for r in rows if r["topic"] == "qsense/estimates/zz"]
    assert est and est[0]["body"]["count"] == 1200  # the snapshot already holds everything folded
    assert set(est[0]["body"]["estimates"]) == {"Z0 Z1", "X0"}
    assert any(r["topic"] == "qsense/status" and r["body"]["totals"]["batches"] == 3 for r in rows)
    text = render({r["topic"]: r["body"] for r in rows}, {}, 2.0)
    assert "zz (shadow)  count 1200" in text and "Z0 Z1" in text and "newest record 1.0s old" in text


def test_watch_unreachable_daemon_exits_2_with_one_line():
    r = subprocess.run([*QSENSE, "watch", "tcp://127.0.0.1:9", "--snapshot", "tcp://127.0.0.1:9", "--timeout", "0.5"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "no answer from the snapshot endpoint" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([*QSENSE, "watch", "not-an-endpoint"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "cannot connect" in r.stderr and "Traceback" not in r.stderr
