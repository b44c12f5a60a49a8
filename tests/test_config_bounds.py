"""Every numeric configuration field has a documented range; careless values and
files are one-line errors, exit 2 (issue 12, item 9; item 10's secret files).

``groups = 10**9`` made estimate() take 23.7 s and 6.3 GB, ``publish_interval =
1e-9``, ``kernel_threads = 64`` and port 99999 were accepted, and ``--config
/dev/zero`` ended in a MemoryError traceback.  Each bad value below must be
refused naming its key; the boundary values must still be accepted (so the
bounds are not simply refusing everything).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qsense.streaming.config import MAX_CONFIG_BYTES, MAX_GROUPS, ConfigError, load_config

CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

EST = "[[estimators]]\nname = 'e'\ntype = 'shadow'\nobservables = ['Z0']\nwires = 2\n"


def _toml(**sections: str) -> str:
    """The base document with extra TOML text per table, e.g. daemon="publish_interval = 1"."""
    out = EST
    for table, body in sections.items():
        head = {"zmq_in": "[[inputs.zmq]]", "mqtt_in": "[[inputs.mqtt]]", "zmq_out": "[outputs.zmq]",
                "prom": "[outputs.prometheus]"}.get(table, f"[{table}]")
        out += f"{head}\n{body}\n"
    return out


ZMQ = "endpoint = 'tcp://127.0.0.1:5555'\n"
MQTT = "topics = ['lab/#']\n"

# (toml, key the message must name, a fragment of the message)
BAD = [
    (_toml(daemon="publish_interval = 1e-9"), "daemon.publish_interval", "0.001..86400"),
    (_toml(daemon="publish_interval = 1e6"), "daemon.publish_interval", "0.001..86400"),
    (_toml(daemon="publish_interval = nan"), "daemon.publish_interval", "seconds"),
    (_toml(daemon="drain_timeout = -1"), "daemon.drain_timeout", "0..3600"),
    (_toml(daemon="drain_timeout = 1e9"), "daemon.drain_timeout", "0..3600"),
    (_toml(daemon="coalesce_records = 0"), "daemon.coalesce_records", "1..16777216"),
    (_toml(daemon=f"kernel_threads = {CPUS + 1}"), "daemon.kernel_threads", f"1..{CPUS}"),
    (_toml(daemon="kernel_threads = 64" if CPUS < 64 else "kernel_threads = 0"), "daemon.kernel_threads", "threads"),
    (_toml(daemon="max_seq_jump = -1"), "daemon.max_seq_jump", "batches"),
    (_toml(daemon="name = ''"), "daemon.name", "non-empty"),
    (_toml(zmq_in="endpoint = 'tcp://127.0.0.1:99999'"), "inputs.zmq[0].endpoint", "1..65535"),
    (_toml(zmq_in="endpoint = 'tcp://127.0.0.1:-1'"), "inputs.zmq[0].endpoint", "1..65535"),
    (_toml(zmq_in="endpoint = 'tcp://127.0.0.1'"), "inputs.zmq[0].endpoint", "host:port"),
    (_toml(zmq_in="endpoint = 'udp://127.0.0.1:5'"), "inputs.zmq[0].endpoint", "ZeroMQ endpoint"),
    (_toml(zmq_in=ZMQ + "hwm = 0"), "inputs.zmq[0].hwm", "1..1000000"),
    (_toml(zmq_in=ZMQ + "hwm = 1099511627776"), "inputs.zmq[0].hwm", "1..1000000"),
    (_toml(zmq_in=ZMQ + "max_message_bytes = 10"), "inputs.zmq[0].max_message_bytes", "1 KiB .. 1 GiB"),
    (_toml(zmq_in=ZMQ + "max_message_bytes = 1099511627776"), "inputs.zmq[0].max_message_bytes", "1 KiB .. 1 GiB"),
    (_toml(mqtt_in=MQTT + "qos = 3"), "inputs.mqtt[0].qos", "0..2"),
    (_toml(mqtt_in=MQTT + "batch_size = 0"), "inputs.mqtt[0].batch_size", "1..1048576"),
    (_toml(mqtt_in=MQTT + "batch_size = 1000000000"), "inputs.mqtt[0].batch_size", "1..1048576"),
    (_toml(mqtt_in=MQTT + "flush_interval = 1e-9"), "inputs.mqtt[0].flush_interval", "0.001..3600"),
    (_toml(mqtt_in=MQTT + "max_queued_batches = 10000000"), "inputs.mqtt[0].max_queued_batches", "1..65536"),
    (EST.replace("wires = 2\n", "wires = 2\ngroups = 1000000000\n"), "estimators[0].groups", f"1..{MAX_GROUPS}"),
    (EST.replace("wires = 2\n", "wires = 2\ngroups = 0\n"), "estimators[0].groups", "positive integer"),
    (EST.replace("wires = 2\n", "wires = 100000\n"), "estimators[0].wires", "number of qubits"),
    ("[[estimators]]\nname = 'b'\ntype = 'bell'\nt2 = -1.0\n", "estimators[0].t2", "seconds"),
    ("[[estimators]]\nname = 'b'\ntype = 'bell'\nt2 = inf\n", "estimators[0].t2", "seconds"),
    ("[[estimators]]\nname = 'a'\ntype = 'all_pauli_squares'\nmax_qubits = 13\n", "estimators[0].max_qubits", "at most 12"),
    (_toml(zmq_out="endpoint = 'tcp://127.0.0.1:70000'"), "outputs.zmq.endpoint", "1..65535"),
    (_toml(zmq_out="endpoint = 'tcp://127.0.0.1:5556'\nsnapshot_endpoint = 'tcp://127.0.0.1:65536'"),
     "outputs.zmq.snapshot_endpoint", "1..65535"),
    (_toml(zmq_out="endpoint = 'tcp://127.0.0.1:5556'\nhwm = 0"), "outputs.zmq.hwm", "1..1000000"),
    (_toml(prom="port = 99999"), "outputs.prometheus.port", "0..65535"),
    (_toml(mqtt="port = 0"), "mqtt.port", "1..65535"),
    (_toml(mqtt="port = 99999"), "mqtt.port", "1..65535"),
    (_toml(mqtt="keepalive = 1"), "mqtt.keepalive", "5..3600"),
    (_toml(mqtt="reconnect_min = 0"), "mqtt.reconnect_min", "0.01..3600"),
    (_toml(mqtt="reconnect_max = 1e9"), "mqtt.reconnect_max", "0.01..3600"),
    (_toml(checkpoint="path = 'c.ckpt'\nperiod = 0.001"), "checkpoint.period", "0.1..86400"),
    (_toml(checkpoint="path = 'c.ckpt'\nperiod = 1e9"), "checkpoint.period", "0.1..86400"),
    (_toml(archive="path = 'ar'\ncommit_interval = 11"), "archive.commit_interval", "at most 10"),
    (_toml(archive="path = 'ar'\nsegment_mb = 0.0001"), "archive.segment_mb", "0.01..65536"),
    (_toml(archive="path = 'ar'\nsegment_mb = 1e9"), "archive.segment_mb", "0.01..65536"),
    (_toml(archive="path = 'ar'\nsegment_seconds = 0.1"), "archive.segment_seconds", "1..2.592e+06"),
    (_toml(archive="path = 'ar'\ncapacity_gb = 1e12"), "archive.capacity_gb", "1e-06..1.04858e+06"),
    (_toml(archive="path = 'ar'\nretention_days = 1e9", checkpoint="path = 'c.ckpt'"), "archive.retention_days", "days"),
]


@pytest.mark.parametrize("doc,key,fragment", BAD, ids=[f"{k}-{i}" for i, (_, k, _) in enumerate(BAD)])
def test_out_of_range_value_is_one_line_naming_the_key(tmp_path, doc, key, fragment):
    p = tmp_path / "d.toml"
    p.write_text(doc)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{p}: {key}: ") and fragment in msg, msg


GOOD = [
    _toml(daemon=f"publish_interval = 0.001\ndrain_timeout = 0\nkernel_threads = {CPUS}"),
    _toml(daemon="publish_interval = 86400\ndrain_timeout = 3600"),
    _toml(zmq_in="endpoint = 'tcp://127.0.0.1:65535'\nhwm = 1000000\nmax_message_bytes = 1024"),
    _toml(zmq_in="endpoint = 'tcp://127.0.0.1:*'"),
    _toml(zmq_in="endpoint = 'tcp://127.0.0.1:0'"),
    _toml(zmq_in="endpoint = 'tcp://[::1]:5555'"),
    _toml(zmq_in="endpoint = 'ipc:///tmp/qsense.sock'"),
    EST.replace("wires = 2\n", f"wires = 2\ngroups = {MAX_GROUPS}\n"),
    _toml(mqtt_in=MQTT + "batch_size = 1048576\nflush_interval = 0.001\nmax_queued_batches = 65536", mqtt="port = 65535"),
    _toml(checkpoint="path = 'c.ckpt'\nperiod = 0.1"),
    _toml(archive="path = 'ar'\nsegment_mb = 0.01\nsegment_seconds = 1\ncapacity_gb = 0.000001"),
]


@pytest.mark.parametrize("doc", GOOD)
def test_boundary_values_are_accepted(tmp_path, doc):
    p = tmp_path / "d.toml"
    p.write_text(doc)
    load_config(p)


# -- files --------------------------------------------------------------------------------------------
def test_config_file_size_limit(tmp_path):
    p = tmp_path / "big.toml"
    p.write_text(EST + "# " + "x" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError, match=rf"bytes; a config file may have at most {MAX_CONFIG_BYTES}"):
        load_config(p)


@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "directory"])
def test_special_files_are_refused_without_reading(tmp_path, kind):
    if kind == "dev_zero":
        p = Path("/dev/zero")
    elif kind == "fifo":
        p = tmp_path / "fifo"
        os.mkfifo(p)  # nobody writes: reading it would block forever
    else:
        p = tmp_path
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(p)
    assert time.perf_counter() - t0 < 1.0


def _pw_doc(tmp_path: Path, mode: int) -> Path:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    pw.chmod(mode)
    p = tmp_path / "d.toml"
    p.write_text(_toml(mqtt_in=MQTT, mqtt="username = 'u'\npassword_file = 'pw'"))
    return p


@pytest.mark.parametrize("mode", [0o666, 0o644, 0o620, 0o604])
def test_password_file_readable_or_writable_by_others_is_refused(tmp_path, mode):
    p = _pw_doc(tmp_path, mode)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    msg = str(info.value)
    assert "mqtt.password_file" in msg and f"mode {mode:04o}" in msg and f"chmod 600 {tmp_path / 'pw'}" in msg, msg
    assert "s3cret" not in msg


def test_private_password_file_is_read(tmp_path):
    cfg = load_config(_pw_doc(tmp_path, 0o600))
    assert cfg.broker.password == "s3cret"
    assert "s3cret" not in repr(cfg) and "s3cret" not in repr(cfg.broker.settings())


def test_password_file_that_is_not_text_or_too_large(tmp_path):
    p = _pw_doc(tmp_path, 0o600)
    (tmp_path / "pw").write_bytes(b"\xff\xfe secret bytes")
    with pytest.raises(ConfigError, match="is not UTF-8 text") as info:
        load_config(p)
    assert "secret bytes" not in str(info.value) and "xff" not in str(info.value)
    (tmp_path / "pw").write_bytes(b"a" * 10000)
    with pytest.raises(ConfigError, match="more than 4096 bytes"):
        load_config(p)


@pytest.mark.parametrize("value", ["12345", "['hunter2']", "''", "{ p = 'hunter2' }"])
def test_mistyped_password_is_never_echoed(tmp_path, value):
    p = tmp_path / "d.toml"
    p.write_text(_toml(mqtt_in=MQTT, mqtt=f"username = 'u'\npassword = {value}"))
    with pytest.raises(ConfigError) as info:
        load_config(p)
    msg = str(info.value)
    assert "mqtt.password" in msg and "value not shown" in msg
    assert "12345" not in msg and "hunter2" not in msg


def test_secret_key_file_readable_by_others_is_refused(tmp_path):
    from qsense.streaming.transport import generate_keypair

    _, secret = generate_keypair(tmp_path / "server", "server")
    generate_keypair(tmp_path / "authorized", "alice")
    assert secret.stat().st_mode & 0o777 == 0o600  # generate_keypair writes it private
    p = tmp_path / "d.toml"
    p.write_text(_toml(curve="server_secret_key = 'server/server.key_secret'\nauthorized_keys = 'authorized'"))
    load_config(p)
    secret.chmod(0o646)
    with pytest.raises(ConfigError, match=r"curve.server_secret_key: secret key file .* \(mode 0646\); run: chmod 600"):
        load_config(p)


def test_generate_keypair_makes_an_existing_secret_private(tmp_path):
    from qsense.streaming.transport import generate_keypair

    (tmp_path / "k.key_secret").write_text("old")
    (tmp_path / "k.key_secret").chmod(0o666)
    public, secret = generate_keypair(tmp_path, "k")
    assert secret.stat().st_mode & 0o777 == 0o600 and "secret-key" in secret.read_text()


def test_checkpoint_key_file_readable_by_others_is_refused(tmp_path):
    (tmp_path / "k").write_text("00" * 32 + "\n")
    (tmp_path / "k").chmod(0o640)
    p = tmp_path / "d.toml"
    p.write_text(_toml(checkpoint="path = 'c.ckpt'\nkey_file = 'k'"))
    with pytest.raises(ConfigError, match=r"checkpoint.key_file: checkpoint key file .* \(mode 0640\); run: chmod 600"):
        load_config(p)
    (tmp_path / "k").chmod(0o600)
    assert load_config(p).checkpoint.key_file == tmp_path / "k"


# -- the command line: exit 2, one line ----------------------------------------------------------------
def _cli_exit_2_one_line(paths: dict[str, Path]) -> None:
    procs = {name: subprocess.Popen([sys.executable, "-m", "qsense", "daemon", "--config", str(p)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name, p in paths.items()}
    for name, proc in procs.items():  # in parallel: each run is an interpreter start
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        lines = err.strip().splitlines()
        assert proc.returncode == 2, (name, err)
        assert len(lines) == 1 and lines[0].startswith("qsense daemon: ") and "Traceback" not in err, (name, err)


def test_cli_dev_zero_and_bad_port_exit_2(tmp_path):
    (tmp_path / "port.toml").write_text(_toml(zmq_in="endpoint = 'tcp://127.0.0.1:99999'"))
    _cli_exit_2_one_line({"dev_zero": Path("/dev/zero"), "port": tmp_path / "port.toml"})


@pytest.mark.slow
def test_cli_config_errors_exit_2_with_one_line(tmp_path):
    cases = {
        "groups": EST.replace("wires = 2\n", "wires = 2\ngroups = 1000000000\n"),
        "port": _toml(zmq_in="endpoint = 'tcp://127.0.0.1:99999'"),
        "publish": _toml(daemon="publish_interval = 1e-9"),
        "threads": _toml(daemon=f"kernel_threads = {max(64, CPUS + 1)}"),
    }
    paths = {}
    for name, doc in cases.items():
        paths[name] = tmp_path / f"{name}.toml"
        paths[name].write_text(doc)
    os.mkfifo(tmp_path / "fifo")
    paths["fifo"], paths["directory"] = tmp_path / "fifo", tmp_path
    _cli_exit_2_one_line(paths)


def test_default_checkpoint_key_file_is_checked_by_check(tmp_path):
    """``qsense daemon --check`` finds what the start would refuse: the default ``<path>.key`` too."""
    p = tmp_path / "d.toml"
    p.write_text(_toml(checkpoint="path = 'c.ckpt'"))
    load_config(p)  # no key yet: it is created at the first checkpoint
    (tmp_path / "c.ckpt.key").write_text("00" * 32 + "\n")
    (tmp_path / "c.ckpt.key").chmod(0o604)
    with pytest.raises(ConfigError, match=r"checkpoint.key_file: checkpoint key file .*c.ckpt.key .*\(mode 0604\)"):
        load_config(p)


def test_deeply_nested_toml_is_one_line(tmp_path):
    p = tmp_path / "deep.toml"
    p.write_text(EST + "x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(p)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="only root can give a file away")
def test_secret_file_owned_by_another_user_is_refused(tmp_path):
    p = _pw_doc(tmp_path, 0o600)
    os.chown(tmp_path / "pw", 12345, 12345)  # someone else's file, however private: they chose its content
    with pytest.raises(ConfigError, match=r"mqtt.password_file: password file .* is owned by uid 12345"):
        load_config(p)
