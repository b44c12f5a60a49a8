"""qsense.distributed on a real Dask LocalCluster (worker processes on 127.0.0.1): same estimates as one process.

One cluster and one generated archive per module keep the file short; the
archive has small row groups (the writer's row-group size is lowered while it
is written) so that it splits into many partitions.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import qsense.streaming.archive.segments as segs
from qsense import distributed as qd
from qsense.estimators.bell import BellEstimator
from qsense.estimators.interferometry.squared import SquaredVisibilityEstimator
from qsense.estimators.interferometry.visibility import VisibilityEstimator
from qsense.estimators.purity import ShadowPurity
from qsense.estimators.shadow import ShadowEstimator
from qsense.pauli import parse_observable
from qsense.records import BellBatch, ShadowBatch
from qsense.streaming.archive import ArchiveWriter, open_archive

OBS4 = [parse_observable(s) for s in ("XIZI", "ZZII", "IIIY", "XXXX")]
OBS3 = [parse_observable(s) for s in ("XZ", "ZZI", "IIY")]


def _write(path, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    old = segs.ROW_GROUP_BYTES
    segs.ROW_GROUP_BYTES = 4000  # many row groups: many partitions from a small archive
    try:
        with ArchiveWriter(path, segment_bytes=40_000) as w:
            for i in range(72):
                T = int(rng.integers(50, 400))
                w.append(ShadowBatch(rng.integers(0, 3, (T, 4), dtype=np.uint8), rng.integers(0, 2, (T, 4), dtype=np.uint8),
                                     source="s", seq=i, t=np.full(T, float(i))), epoch=1)
                if i % 3 == 0:
                    w.append(BellBatch(rng.integers(0, 4, (150, 3)), source="b", seq=i, t=np.full(150, float(i))), epoch=1)
                if i % 10 == 5:  # another wire set: refused by estimators bound to the 4 wires
                    w.append(ShadowBatch(rng.integers(0, 3, (60, 3), dtype=np.uint8), rng.integers(0, 2, (60, 3), dtype=np.uint8),
                                         source="s3", seq=i), epoch=1)
                w.maybe_rotate()
                w.seal_pending()
    finally:
        segs.ROW_GROUP_BYTES = old


@pytest.fixture(scope="module")
def archive_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "a"
    _write(path)
    return path


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None)
    c = Client(cluster, set_as_default=False)
    yield c
    c.close()
    cluster.close()


def _templates():
    return [ShadowEstimator(OBS4), ShadowPurity([(0, 1), (2,)]), VisibilityEstimator(4), BellEstimator(OBS3, purity_subsystems=[(0, 1)]),
            SquaredVisibilityEstimator(3)]


def _sequential(path, templates):
    """The plain single-process path: every estimator updated in position order with the batches of its kind."""
    kinds = ["shadow", "shadow", "shadow", "bell", "bell"]
    refused = [0] * len(templates)
    for b in open_archive(path).batches():
        for i, (est, k) in enumerate(zip(templates, kinds)):
            if b.kind == k:
                try:
                    est.update(b)
                except ValueError:
                    refused[i] += 1
    return templates, refused


def test_cluster_equals_one_process(archive_path, client):
    seq, refused = _sequential(archive_path, _templates())
    t0 = time.perf_counter()
    res = qd.estimate(archive_path, _templates(), client=client, partition_bytes=1, progress=False)
    assert time.perf_counter() - t0 < 60
    assert len(res.partitions) > 8 and len({s[4] for s in res.stats}) == 2  # both workers took part
    assert [r["batches"] for r in res.refused] == refused and refused[0] > 0
    # integer statistics: the states are equal byte for byte
    for i in (0, 1, 2, 4):
        assert res.estimators[i].to_bytes() == seq[i].to_bytes(), type(seq[i]).__name__
    assert np.allclose(res.estimators[3].estimate().values, seq[3].estimate().values, rtol=0, atol=1e-12)
    assert np.allclose(res.estimators[3].purity((0, 1)).values, seq[3].purity((0, 1)).values, rtol=0, atol=1e-12)
    assert res.problems == {}
    assert res.records == sum(b.T for b in open_archive(archive_path).batches())


def test_median_of_means_same_rule_bit_identical(archive_path, client):
    mk = lambda: [ShadowEstimator(OBS4, groups=4), ShadowEstimator(OBS4, groups=3, method="matched")]
    local = qd.estimate(archive_path, mk(), client=None, partition_bytes=1, progress=False)
    remote = qd.estimate(archive_path, mk(), client=client, partition_bytes=1, progress=False)
    for a, b in zip(local.estimators, remote.estimators):
        assert a.to_bytes() == b.to_bytes()
        assert np.array_equal(a.estimate().values, b.estimate().values)
    # the rule is the partition plan's: another partition size is another (equally honest) set of blocks
    again = qd.estimate(archive_path, mk(), client=client, partition_bytes=1, progress=False)
    assert again.estimators[0].to_bytes() == local.estimators[0].to_bytes()


def _worker_state() -> tuple[int, bool]:
    from qsense.estimators import kernels

    return kernels.get_threads(), kernels._count_supports_jit is not None


@pytest.mark.slow
def test_local_cluster_shares_cores_and_warms_the_kernels(archive_path):
    from qsense.estimators import kernels

    cores = len(os.sched_getaffinity(0))
    env_before = {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "PYTHONHASHSEED")}
    # the user's settings over the defaults: the profiler back on, Dask's malloc trim threshold back
    cluster, client = qd.local_cluster(1, dashboard=False, warm=False, dask_config={
        "distributed.worker.profile.enabled": True, "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 65536})
    try:
        (threads, loaded), = client.run(_worker_state).values()
        assert threads == cores and not loaded  # not warmed: nothing compiled yet
        (callbacks, env), = client.run(_worker_settings).values()
        assert "profile" in callbacks and env["MALLOC_TRIM_THRESHOLD_"] == "65536"
        assert callbacks["tick"] == 1000  # the other defaults stay
    finally:
        client.close()
        cluster.close()
    # Dask's nannies write their pre-spawn environment into this process's os.environ: taken out again
    assert {k: os.environ.get(k) for k in env_before} == env_before
    # a second cluster in the same process sizes its own workers (an earlier cluster's environment must not leak)
    cluster, client = qd.local_cluster(2, dashboard=False)
    try:
        settings = client.run(_worker_settings)
        for callbacks, env in settings.values():  # qd.WORKER_CONFIG reached every worker
            assert "profile" not in callbacks and "profile-cycle" not in callbacks, callbacks
            assert callbacks["tick"] == 1000 and callbacks["monitor"] == 5000 and callbacks["memory_monitor"] == 1000, callbacks
            assert env["MALLOC_TRIM_THRESHOLD_"] is None and env["OMP_NUM_THREADS"] == "1", env
        assert all(n.periodic_callbacks["tick"].callback_time == 1000 for n in cluster.workers.values())  # the nannies
        assert cluster.scheduler.periodic_callbacks["tick"].callback_time == 1000
        state = client.run(_worker_state)  # before any task: the compiled kernels are already loaded
        assert len(state) == 2
        assert all(t == max(1, cores // 2) for t, _ in state.values()), state
        assert all(loaded for _, loaded in state.values()) == kernels.jit_available(), state
        res = qd.estimate(archive_path, [ShadowEstimator(OBS4)], client=client, partition_bytes=1, progress=False)
        local = qd.estimate(archive_path, [ShadowEstimator(OBS4)], client=None, partition_bytes=1, progress=False)
        assert res.estimators[0].to_bytes() == local.estimators[0].to_bytes()
    finally:
        client.close()
        cluster.close()


@pytest.mark.slow
def test_local_cluster_bad_qsense_threads_keeps_the_core_share(monkeypatch, caplog):
    """A QSENSE_THREADS that is not an integer: one warning, and the worker gets its share of the cores."""
    monkeypatch.setenv("QSENSE_THREADS", "lots")
    with caplog.at_level("WARNING", logger="qsense.distributed.estimate"):
        cluster, client = qd.local_cluster(1, dashboard=False, warm=False)
    try:
        (threads, _), = client.run(_worker_state).values()
        assert threads == max(1, len(os.sched_getaffinity(0)))
    finally:
        client.close()
        cluster.close()
    assert [r.getMessage() for r in caplog.records if "QSENSE_THREADS" in r.getMessage()] == [
        f"QSENSE_THREADS='lots' is not an integer; workers use {threads} kernel thread(s)"]


def test_local_cluster_closes_its_cluster_when_the_client_fails(monkeypatch):
    """A Client that cannot connect to the new cluster: the cluster (its worker processes) is closed, not leaked."""
    closed = []

    class Cluster:
        def __init__(self, **kwargs):
            pass

        def close(self):
            closed.append(True)

    def no_client(*args, **kwargs):
        raise OSError("timed out connecting")

    monkeypatch.setattr(distributed, "LocalCluster", Cluster)
    monkeypatch.setattr(distributed, "Client", no_client)
    with pytest.raises(OSError, match="timed out connecting"):
        qd.local_cluster(1, dashboard=False)
    assert closed == [True]


def _worker_settings(dask_worker):
    """On a worker: its periodic callbacks (name -> ms) and the environment variables Dask's nanny may set."""
    pcs = dask_worker.periodic_callbacks
    return ({k: pc.callback_time for k, pc in pcs.items()},
            {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")})


def test_local_cluster_bad_dask_config_is_a_clear_error():
    with pytest.raises(ValueError, match="dask_config must be a mapping"):
        qd.local_cluster(1, dask_config=["distributed.worker.profile.enabled"])


class SlowShadow(ShadowEstimator):
    """A shadow estimator that takes its time, so that a worker can be killed mid-job."""

    def update(self, batch) -> None:
        time.sleep(0.03)
        super().update(batch)


def test_worker_killed_mid_job_gives_exact_result(archive_path, client):
    ref = ShadowEstimator(OBS4)
    for b in open_archive(archive_path).batches(source="s"):
        ref.update(b)
    out: dict = {}
    th = threading.Thread(target=lambda: out.update(r=qd.estimate(archive_path, [SlowShadow(OBS4)], client=client, source="s",
                                                                  partition_bytes=1, progress=False)))
    th.start()
    deadline = time.monotonic() + 30
    while not any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # some partitions done, others running
    pids = client.run(os.getpid)
    victim = min(pids)
    assert th.is_alive()  # mid-job
    os.kill(pids[victim], signal.SIGKILL)
    th.join(90)
    assert not th.is_alive()
    res = out["r"]
    assert res.estimators[0].to_bytes() == ref.to_bytes()
    client.wait_for_workers(2, timeout=30)


def test_silent_scheduler_is_a_clear_error_in_bounded_time():
    with socket.socket() as s:  # listens, never accepts, never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        addr = f"tcp://127.0.0.1:{s.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(qd.DistributedError, match="no Dask scheduler answers"):
            qd.connect(addr, timeout=1.5)
        assert time.monotonic() - t0 < 15


def _damaged(archive_path, tmp_path, how: str):
    path = tmp_path / how
    shutil.copytree(archive_path, path)
    sealed = [p for _, p, s in open_archive(path).segments() if s]
    victim = path / "segments" / sealed[len(sealed) // 2].name
    if how == "missing":
        victim.unlink()
    else:  # a torn footer: the file is no Parquet any more
        data = victim.read_bytes()
        victim.write_bytes(data[: len(data) - 20] + b"\0" * 20)
    return path


@pytest.mark.parametrize("how", ["missing", "corrupt"])
def test_damaged_archive_reports_the_damage(archive_path, tmp_path, client, how):
    path = _damaged(archive_path, tmp_path, how)
    plain = open_archive(path)
    ref = ShadowEstimator(OBS4)
    for b in plain.batches(source="s"):
        ref.update(b)
    t0 = time.monotonic()
    local = qd.estimate(path, [ShadowEstimator(OBS4)], client=None, source="s", partition_bytes=1, progress=False)
    remote = qd.estimate(path, [ShadowEstimator(OBS4)], client=client, source="s", partition_bytes=1, progress=False)
    assert time.monotonic() - t0 < 60
    assert remote.problems == local.problems
    if how == "missing":  # the index lists it, the file is gone: every path says so
        assert remote.problems == plain.problems == {"missing_segment": 1}
    else:
        assert remote.problems == plain.problems == {"unreadable_segment": 1}
    assert remote.estimators[0].to_bytes() == ref.to_bytes()


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qsense", "estimate", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_cli_workers_output_equals_single_process(archive_path):
    args = [str(archive_path), "-o", "XZ", "-o", "0.5*ZZ + XI", "-s", "0,1", "--bell-purity"]
    one = _cli(*args)
    two = _cli(*args, "--workers", "2", "--partition-mib", "0.001")
    assert one.returncode == two.returncode == 0, two.stderr
    assert one.stdout == two.stdout and "shadow@0,1,2,3" in one.stdout
    assert "dashboard" in two.stderr and "Traceback" not in two.stderr
    assert one.stderr.strip().splitlines()[-1] == two.stderr.strip().splitlines()[-1]  # the summary line


def test_cli_bad_scale_out_input_is_one_line_exit_2(archive_path, tmp_path):
    f = tmp_path / "m.npz"
    np.savez(f, bases=np.zeros((4, 2), dtype=np.uint8), outcomes=np.zeros((4, 2), dtype=np.uint8))
    r = _cli(str(f), "-o", "XZ", "--workers", "2")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "need a record archive" in r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        t0 = time.monotonic()
        r = _cli(str(archive_path), "-o", "XZ", "--dask", f"tcp://127.0.0.1:{s.getsockname()[1]}", "--dask-timeout", "1.5")
        assert time.monotonic() - t0 < 30
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no Dask scheduler answers" in r.stderr, r.stderr
