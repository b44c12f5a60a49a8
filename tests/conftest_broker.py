"""A real mosquitto broker for the tests, on 127.0.0.1 and random ports.

Three listeners: anonymous, username/password, and TLS (with password) using a
throw-away CA and server certificate made with the ``openssl`` CLI at test time.
If ``mosquitto`` or ``openssl`` is missing the tests *fail* when the environment
variable ``CI`` is true (CI must never skip them silently) and are skipped with
a clear reason otherwise.

Import the fixtures into a test module with
``from conftest_broker import broker, tls_material  # noqa: F401``.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from peer_data import in_ci

from qsense.streaming.transport import MqttSettings

USERNAME = "qsense"
PASSWORD = "correct horse battery staple"


def require_tool(name: str, *extra_paths: str) -> str:
    """Path of a binary; fail in CI, skip locally if it is missing."""
    path = shutil.which(name) or next((p for p in extra_paths if os.access(p, os.X_OK)), None)
    if path:
        return path
    msg = f"`{name}` is not installed (apt-get install {name}); the MQTT tests need a real broker"
    if in_ci():
        pytest.fail(msg + " -- CI=true, refusing to skip", pytrace=False)
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _password_line(user: str, password: str) -> str:
    # mosquitto's "$6$" format: base64(salt) and base64(sha512(password + salt))
    salt = os.urandom(12)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return f"{user}:$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}\n"


@dataclass
class TlsMaterial:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls_material(directory: Path) -> TlsMaterial:
    """A CA and a server certificate for 127.0.0.1/localhost (EC keys: fast)."""
    openssl = require_tool("openssl")
    d = directory
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=30)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=qsense test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    return TlsMaterial(d / "ca.crt", d / "server.crt", d / "server.key")


@dataclass
class Broker:
    """A mosquitto process; ``restart()`` keeps the ports (for reconnect tests)."""

    workdir: Path
    tls: TlsMaterial
    binary: str
    port: int = 0
    auth_port: int = 0
    tls_port: int = 0
    proc: subprocess.Popen | None = None
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.workdir / "mosquitto.log"

    def _write_config(self) -> Path:
        pw = self.workdir / "passwd"
        pw.write_text(_password_line(USERNAME, PASSWORD))
        pw.chmod(0o600)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            "per_listener_settings true\n"
            "persistence false\n"
            f"user {getpass.getuser()}\n"   # as root mosquitto would switch to 'mosquitto' and lose our files
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"listener {self.auth_port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {pw}\n"
            f"listener {self.tls_port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {pw}\n"
            f"cafile {self.tls.ca_file}\ncertfile {self.tls.cert_file}\nkeyfile {self.tls.key_file}\n"
        )
        return conf

    def start(self, timeout: float = 10.0) -> None:
        for attempt in range(3):
            if not self.port or attempt:
                self.port, self.auth_port, self.tls_port = free_port(), free_port(), free_port()
            if self._launch(timeout):
                return
        raise RuntimeError(f"mosquitto did not start; log:\n{self.log_file.read_text()}")

    def _launch(self, timeout: float) -> bool:
        conf = self._write_config()
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if all(_accepts(p) for p in (self.port, self.auth_port, self.tls_port)):
                return True
            time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, downtime: float = 0.0) -> None:
        """Stop, wait ``downtime`` seconds, start again on the same ports."""
        self.stop()
        time.sleep(downtime)
        if not self._launch(10.0):
            raise RuntimeError(f"mosquitto did not restart; log:\n{self.log_file.read_text()}")

    def settings(self, listener: str = "anonymous", **kw) -> MqttSettings:
        """Client settings for one listener: ``anonymous``, ``password`` or ``tls``."""
        base = dict(host="127.0.0.1", reconnect_min=0.05, reconnect_max=0.5, connect_timeout=3.0, keepalive=10)
        base.update(kw)
        creds = {"username": USERNAME, "password": PASSWORD}
        if listener == "anonymous":
            return MqttSettings(port=self.port, **base)
        if listener == "password":
            return MqttSettings(port=self.auth_port, **{**creds, **base})
        if listener == "tls":
            return MqttSettings(port=self.tls_port, ca_file=str(self.tls.ca_file), **{**creds, **base})
        raise ValueError(listener)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return make_tls_material(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def broker(tmp_path: Path, tls_material: TlsMaterial):
    """A fresh mosquitto with anonymous, password and TLS listeners."""
    binary = require_tool("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
    b = Broker(tmp_path, tls_material, binary)
    b.start()
    try:
        yield b
    finally:
        b.stop()
