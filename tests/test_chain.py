"""The chain builder end to end: simulated copies → memory → scheduler → backend →
ZeroMQ (127.0.0.1) → in-process daemon, with exact values from the density matrix;
and the errors a bad configuration gives."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from exact import expval

from qsense import ShadowEstimator, sims
from qsense.acquisition.memory import ManualClock, SlotMemory
from qsense.acquisition.pipeline import poisson_copies
from qsense.apps.chain import Chain, ChainError
from qsense.plugins import PluginError
from qsense.streaming.config import ConfigError
from qsense.streaming.daemon import EstimationDaemon

SHADOW = {"Z0": "ZII", "X1 Y2": "IXY", "Z0 Z1 Z2": "ZZZ", "X0 X1": "XXI"}
BELL = ["ZZZ", "XXI", "YIY"]


@pytest.fixture
def rho3():
    psi = sims.random_circuit_state(3, 3, seed=5)
    return 0.85 * sims.to_density_matrix(psi) + 0.15 * np.eye(8) / 8


def _config() -> dict:
    return {
        "daemon": {"name": "chain-test", "publish_interval": 0.2},
        "estimators": [
            {"name": "paulis", "type": "shadow", "observables": list(SHADOW), "wires": 3},
            {"name": "squares", "type": "bell", "observables": BELL, "wires": 3},
        ],
    }


def _no_task_left() -> bool:
    return not {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_chain_into_an_in_process_daemon_folds_every_record_and_agrees_with_exact_values(rho3):
    calls = []

    async def watch(live):
        calls.append(live.pipeline.counters["arrived"])

    chain = (Chain(name="lab", clock=ManualClock(), batch_size=128)
             .driver(poisson_copies(rho3, 1e4, 8000, seed=1), label="source")
             .memory("simulated", capacity=2, name="lab-memory")
             .scheduler("fixed", ratio=0.5)
             .backend("simulated", seed=2)
             .daemon(_config(), resume=False)
             .monitor(watch, interval=0.01))
    res = await asyncio.wait_for(chain.run(), 30)
    assert _no_task_left()
    rep, c = res.report, res.report.counters

    # every arrival is accounted for, every record sent went over ZeroMQ and was folded
    assert res.ok and res.complete and res.errors == []
    assert rep.unaccounted == 0 and c["arrived"] == c["arrived.source"] == 8000
    assert c["records.shadow"] + 2 * c["records.bell"] + c["lost"] == 8000 and c["lost"] <= 1
    assert res.sent == res.folded == {"lab.shadow": c["records.shadow"], "lab.bell": c["records.bell"]}
    assert c["records.shadow"] > 2000 and c["records.bell"] > 1000
    assert res.estimates["paulis"]["count"] == c["records.shadow"]
    assert res.estimates["squares"]["count"] == c["records.bell"]
    assert res.stats["totals"]["malformed"] == 0 and res.stats["totals"]["gaps"] == 0
    assert all(not e["rejected"] for e in res.stats["estimators"].values())
    # the monitor ran during the run and once more at the end, when everything had arrived
    assert len(calls) >= 2 and calls[-1] == 8000

    # the daemon's estimates agree with tr(P rho), tr(P rho)^2 and tr(rho^2)
    shadow = res.estimates["paulis"]["estimates"]
    for label, word in SHADOW.items():
        e = shadow[label]
        assert abs(e["value"] - expval(rho3, word)) < 4 * e["stderr"], (label, e, expval(rho3, word))
    bell = res.estimates["squares"]["estimates"]
    for word in BELL:
        e = bell[word]
        assert abs(e["value"] - expval(rho3, word) ** 2) < 4 * e["stderr"], (word, e, expval(rho3, word) ** 2)
    e = bell["purity"]
    assert abs(e["value"] - float(np.trace(rho3 @ rho3).real)) < 4 * e["stderr"]


async def test_keyword_form_to_an_external_endpoint_with_an_in_process_estimator(rho3):
    cfg = {"inputs": {"zmq": [{"name": "in", "endpoint": "tcp://127.0.0.1:*"}]},
           "estimators": [{"name": "z", "type": "shadow", "observables": ["Z0"], "wires": 3}]}
    est = ShadowEstimator(["Z0"])
    async with EstimationDaemon(cfg, resume=False) as daemon:
        chain = Chain(
            name="kw", clock=ManualClock(),
            drivers={"a": poisson_copies(rho3, 1e4, 1500, seed=3)},
            memory=("simulated", {"capacity": 1}), scheduler="shadow", backend=("simulated", {"seed": 4}),
            estimators=[est], endpoint=daemon.endpoints["input.in"],
        )
        res = await asyncio.wait_for(chain.run(), 30)
        # an external daemon is not waited for by the chain: the caller does
        for _ in range(250):
            if daemon.slots[0].count >= 1500:
                break
            await asyncio.sleep(0.02)
        assert daemon.slots[0].count == 1500
    assert res.ok and res.folded == {} and res.estimates == {}
    assert res.sent == {"kw.shadow": 1500} and est.count == 1500
    assert res.report["scheduler.shadow_copies"] == 1500


async def _discard(batch) -> None:
    pass


def _parts(**change) -> dict:
    """Keyword arguments of a small valid chain, with ``change`` applied (None removes a part)."""
    parts = {"clock": ManualClock(), "drivers": [poisson_copies(np.eye(2) / 2, 1e3, 10, seed=1)],
             "memory": ("slots", {"capacity": 1}), "scheduler": "shadow", "backend": "simulated", "sinks": [_discard]}
    parts.update(change)
    return {k: v for k, v in parts.items() if v is not None}


@pytest.mark.parametrize("change, error, message", [
    ({"backend": None}, ChainError, "no backend"),
    ({"drivers": ()}, ChainError, "no driver"),
    ({"memory": None}, ChainError, "no memory"),
    ({"sinks": ()}, ChainError, "records go nowhere"),
    ({"backend": "nonesuch"}, PluginError, r"unknown backend 'nonesuch'; installed: .*simulated"),
    ({"memory": ("nonesuch", {"capacity": 1})}, PluginError, r"unknown memory 'nonesuch'; installed: .*slots"),
    ({"drivers": ["nonesuch"]}, PluginError, r"unknown driver 'nonesuch'; installed: "),
    ({"scheduler": "sometimes"}, ValueError, r"unknown policy 'sometimes'"),
], ids=["no-backend", "no-driver", "no-memory", "no-destination", "unknown-backend", "unknown-memory",
        "unknown-driver", "unknown-policy"])
async def test_bad_configuration_gives_a_clear_error_before_anything_starts(change, error, message):
    assert Chain(**_parts()).open() is not None  # the unchanged parts are a valid chain
    with pytest.raises(error, match=message):
        await Chain(**_parts(**change)).run()
    assert _no_task_left()


def test_inconsistent_destinations_and_configs_are_refused():
    with pytest.raises(ChainError, match="not both"):
        Chain().daemon(_config()).endpoint("tcp://127.0.0.1:5555")
    with pytest.raises(ChainError, match="no ZeroMQ input 'other'"):
        Chain().daemon(_config(), input="other")
    with pytest.raises(ConfigError, match="estimators"):
        Chain().daemon({"daemon": {"name": "empty"}})
    with pytest.raises(ChainError, match="unknown Pipeline option"):
        Chain(pipeline_options={"batchsize": 3})
    with pytest.raises(ChainError, match="another clock"):
        Chain(**_parts(clock=ManualClock(), memory=SlotMemory(1, clock=ManualClock()))).open()
    chain = Chain(**_parts())
    chain.open()
    with pytest.raises(ChainError, match="already run"):
        chain.open()


def test_example_runs_as_its_docstring_says():
    """examples/acquisition_chain.py, run with the first command of its docstring."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "acquisition_chain.py"
    doc = script.read_text().split('"""')[1]
    cmd = next(line.strip() for line in doc.splitlines() if line.strip().startswith("python examples/acquisition_chain.py"))
    assert cmd == "python examples/acquisition_chain.py"
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=script.parents[1])
    assert res.returncode == 0, res.stdout + res.stderr
    sent, folded = map(int, re.search(r"records sent (\d+), folded by the daemon (\d+)", res.stdout).groups())
    assert sent == folded > 10_000
    assert "unaccounted 0" in res.stdout
    assert float(res.stdout.rsplit("largest |pull|:", 1)[1]) < 4.5, res.stdout
