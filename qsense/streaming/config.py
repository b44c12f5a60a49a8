"""The estimation daemon's configuration: a TOML file, validated up front.

Every key is checked (type, range, unknown keys are refused so that a typo does
not silently fall back to a default) and every error names the file and the
key path, e.g. ``daemon.toml: estimators[1].groups: expected a positive
integer, got 'ten'``.  Relative paths are resolved against the config file's
directory.  The schema, with defaults, is documented in ``docs/daemon.md`` and
exercised by ``examples/daemon_config.toml``::

    [daemon]          name, publish_interval, drain_timeout, coalesce_records,
                      kernel_threads, max_seq_jump (0 = unbounded), max_sources,
                      max_peers, byte_budget
    [[inputs.zmq]]    endpoint, bind, hwm, max_message_bytes, curve, name
    [[inputs.mqtt]]   topics, qos, kind, batch_size, flush_interval,
                      max_queued_batches, max_payload_bytes, name
    [[estimators]]    name, type = "shadow" | "bell" | "purity" | "all_pauli_squares", sources, wires, and
                      shadow: observables, groups, method
                      bell:   observables, t2, purity_subsystems, decoherence
                              ("depolarizing" default | "dephasing"; needs t2)
                      purity: subsystems
                      all_pauli_squares: max_qubits (default 6; at most 12)
    [outputs.zmq]     endpoint, snapshot_endpoint, topic_prefix, curve, hwm, states
    [outputs.mqtt]    topic_prefix, qos, retain
    [outputs.prometheus]  host, port
    [mqtt]            broker for inputs.mqtt and outputs.mqtt: host, port,
                      username, password | password_file, tls, ca_file,
                      cert_file, key_file, tls_insecure, client_id, keepalive,
                      reconnect_min, reconnect_max
    [curve]           server_secret_key, authorized_keys
    [curve.sources]   source name = [client key names in authorized_keys]
    [checkpoint]      path, period, key_file (HMAC key; default <path>.key, created 0600)
    [archive]         path, fsync = "group" | "batch", commit_interval,
                      segment_mb, segment_seconds, retention_gb,
                      retention_days, capacity_gb
"""

from __future__ import annotations

import math
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .transport import MqttSettings

__all__ = [
    "ConfigError",
    "DaemonConfig",
    "ZmqInputConfig",
    "MqttInputConfig",
    "EstimatorConfig",
    "ZmqOutputConfig",
    "MqttOutputConfig",
    "PrometheusConfig",
    "BrokerConfig",
    "CurveConfig",
    "CheckpointConfig",
    "ArchiveConfig",
    "load_config",
    "parse_config",
    "ESTIMATOR_TYPES",
]

ESTIMATOR_TYPES = ("shadow", "bell", "purity", "all_pauli_squares")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file and key."""


# -- the schema -------------------------------------------------------------------------
@dataclass(frozen=True)
class ZmqInputConfig:
    """A ROUTER socket receiving (and acknowledging) record batches (see :class:`qsense.streaming.transport.RecordReceiver`)."""

    endpoint: str
    bind: bool = True
    hwm: int = 64
    max_message_bytes: int = 256 * 1024 * 1024
    curve: bool = False
    name: str = "zmq"


@dataclass(frozen=True)
class MqttInputConfig:
    """MQTT detection-event topics (see ``drivers/mqtt_detectors.py`` for payloads)."""

    topics: tuple[str, ...]
    qos: int = 1
    kind: str = "shadow"
    batch_size: int = 4096
    flush_interval: float = 0.1
    max_queued_batches: int = 256
    #: MQTT messages larger than this are dropped and counted (parsed off the event loop below it)
    max_payload_bytes: int = 1 << 20
    name: str = "mqtt"


@dataclass(frozen=True)
class EstimatorConfig:
    """One online estimator. ``sources`` empty means every source of its record kind."""

    name: str
    type: str
    observables: tuple[str, ...] = ()
    groups: int = 1
    method: str = "mean"
    t2: float | None = None
    #: bell: the memory model the t2 reweighting follows (qsense.estimators.decoherence)
    decoherence: str = "depolarizing"
    purity_subsystems: tuple[tuple[int, ...], ...] = ()
    subsystems: tuple[tuple[int, ...], ...] = ()
    #: all_pauli_squares: refuse registers above this size (4^n published values)
    max_qubits: int = 6
    sources: tuple[str, ...] = ()
    #: if set, only batches on exactly these wires are accepted (an int n means 0..n-1),
    #: so a misconfigured producer cannot bind the estimator to the wrong register
    wires: tuple | None = None

    @property
    def record_kind(self) -> str:
        """The record kind it consumes: ``"bell"`` or ``"shadow"``."""
        return "bell" if self.type in ("bell", "all_pauli_squares") else "shadow"

    def fingerprint(self) -> dict:
        """What must match for a checkpointed state to be resumed."""
        return {
            "type": self.type, "observables": list(self.observables), "groups": self.groups, "method": self.method,
            "t2": self.t2, "purity_subsystems": [list(s) for s in self.purity_subsystems],
            "subsystems": [list(s) for s in self.subsystems], "max_qubits": self.max_qubits,
            "wires": None if self.wires is None else list(self.wires),
            # only when not the default, so checkpoints written before the key still resume
            **({"decoherence": self.decoherence} if self.decoherence != "depolarizing" else {}),
        }


@dataclass(frozen=True)
class ZmqOutputConfig:
    """Estimates on a PUB socket, plus a snapshot ROUTER for late joiners."""

    endpoint: str
    snapshot_endpoint: str | None = None
    topic_prefix: str = "qsense"
    curve: bool = False
    hwm: int = 10000
    #: also publish each estimator's mergeable state on ``{topic_prefix}/state/{name}`` (for ``qsense reduce``)
    states: bool = True


@dataclass(frozen=True)
class MqttOutputConfig:
    """Retained estimates on ``{topic_prefix}/estimates/{name}``, status on ``{topic_prefix}/status``."""

    topic_prefix: str = "qsense"
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class PrometheusConfig:
    """``/metrics`` over HTTP (port 0 picks a free port)."""

    port: int
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class BrokerConfig(MqttSettings):
    """The ``[mqtt]`` broker used by MQTT inputs and the MQTT output: exactly the
    transport's :class:`~qsense.streaming.transport.MqttSettings`, so the fields live in one place."""

    def settings(self) -> MqttSettings:
        """As :class:`qsense.streaming.transport.MqttSettings` (the same fields)."""
        return self


@dataclass(frozen=True)
class CurveConfig:
    """CURVE for the sockets marked ``curve = true``."""

    server_secret_key: Path
    authorized_keys: Path
    #: source name -> the client public key files allowed to send under it (``[curve.sources]``)
    sources: tuple[tuple[str, tuple[Path, ...]], ...] = ()


@dataclass(frozen=True)
class CheckpointConfig:
    """``[checkpoint]``: where state is written every ``period`` seconds, signed with the key in ``key_file``."""

    path: Path
    period: float = 10.0
    #: the HMAC key authenticating the checkpoint (None: ``<path>.key``, created 0600 on first use)
    key_file: Path | None = None


@dataclass(frozen=True)
class ArchiveConfig:
    """``[archive]``: every accepted batch is stored here before it is acknowledged."""

    path: Path
    #: "group": one fsync per commit_interval for everything received meanwhile;
    #: "batch": one fsync per received message (slower, lower latency per batch)
    fsync: str = "group"
    commit_interval: float = 0.05
    segment_bytes: int = 256 << 20
    segment_seconds: float = 3600.0
    retention_bytes: int | None = None
    retention_seconds: float | None = None
    capacity_bytes: int | None = None


@dataclass(frozen=True)
class DaemonConfig:
    """The whole configuration (see the module docstring)."""

    name: str = "qsense"
    publish_interval: float = 1.0
    drain_timeout: float = 5.0
    coalesce_records: int = 65536
    kernel_threads: int | None = None
    #: the furthest one batch may move a source's sequence state (None: unbounded); see docs/daemon.md, trust model
    max_seq_jump: int | None = 1_000_000
    #: distinct source names the daemon keeps state for; a batch from a new source beyond it is refused and counted
    max_sources: int = 1024
    #: connected record peers across all ZeroMQ inputs; a new peer beyond it is refused and counted
    max_peers: int = 256
    #: bytes of record batches received but not yet folded (queued + in flight), all inputs together; beyond it
    #: the daemon stops reading its inputs (back-pressure: ZeroMQ queues, then the producers' windows, fill)
    byte_budget: int = 1 << 30
    zmq_inputs: tuple[ZmqInputConfig, ...] = ()
    mqtt_inputs: tuple[MqttInputConfig, ...] = ()
    estimators: tuple[EstimatorConfig, ...] = ()
    zmq_output: ZmqOutputConfig | None = None
    mqtt_output: MqttOutputConfig | None = None
    prometheus: PrometheusConfig | None = None
    broker: BrokerConfig | None = None
    curve: CurveConfig | None = None
    checkpoint: CheckpointConfig | None = None
    archive: ArchiveConfig | None = None
    source_file: Path | None = field(default=None, compare=False)


# -- validation helpers -----------------------------------------------------------------------
class _Table:
    """One TOML table being read: typed getters, then :meth:`done` refuses leftovers."""

    def __init__(self, data: Any, path: str, where: str, base: Path) -> None:
        self.where, self.path, self.base = where, path, base
        if not isinstance(data, Mapping):
            self.fail(f"expected a table, got {_show(data)}")
        self.data = dict(data)
        self.used: set[str] = set()

    def fail(self, msg: str, key: str | None = None) -> None:
        at = self.path if key is None else (f"{self.path}.{key}" if self.path else key)
        raise ConfigError(f"{self.where}: {at or '<top level>'}: {msg}")

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, check: Callable[[Any], Any], default: Any = ..., required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required or default is ...:
                self.fail("is required", key)
            return default
        try:
            return check(self.data[key])
        except _Bad as exc:
            self.fail(str(exc), key)

    def sub(self, key: str, required: bool = False) -> "_Table | None":
        self.used.add(key)
        if key not in self.data:
            if required:
                self.fail("is required", key)
            return None
        return _Table(self.data[key], f"{self.path}.{key}" if self.path else key, self.where, self.base)

    def subs(self, key: str) -> list["_Table"]:
        """An array of tables (``[[key]]``)."""
        self.used.add(key)
        items = self.data.get(key, [])
        if isinstance(items, Mapping):
            items = [items]
        if not isinstance(items, list):
            self.fail(f"expected an array of tables, got {_show(items)}", key)
        p = f"{self.path}.{key}" if self.path else key
        return [_Table(it, f"{p}[{i}]", self.where, self.base) for i, it in enumerate(items)]

    def done(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            self.fail(f"unknown key(s) {', '.join(map(repr, extra))}")

    def path_value(self, value: Any) -> Path:
        p = Path(_string(value)).expanduser()
        return p if p.is_absolute() else (self.base / p)


class _Bad(Exception):
    pass


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) < 60 else s[:57] + "..."


def _string(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise _Bad(f"expected a non-empty string, got {_show(v)}")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad(f"expected true or false, got {_show(v)}")
    return v


def _int_in(lo: int, hi: int | None = None, what: str = "an integer") -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            rng = f" in {lo}..{hi}" if hi is not None else (" >= %d" % lo)
            raise _Bad(f"expected {what}{rng}, got {_show(v)}")
        return v

    return check


#: ZeroMQ high-water marks: each queued message may be up to max_message_bytes, so a bound keeps memory sane
_HWM = _int_in(1, 1_000_000, "a number of messages")
#: transports an endpoint may use
_ZMQ_SCHEMES = ("tcp", "ipc", "inproc", "ws", "wss")
#: the documented ranges (docs/daemon.md, configuration reference)
#: median of means needs about 2 ln(2M/delta) groups (about 500 for a million observables at delta = 1e-100);
#: an update costs O(groups) Python work per batch, so 10**4 groups already took seconds per 50k-snapshot batch
MAX_GROUPS = 1000
MAX_OBSERVABLES = 65_536
#: a configuration file larger than this is refused before it is read
MAX_CONFIG_BYTES = 1 << 20


def _positive_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _Bad(f"expected a positive integer, got {_show(v)}")
    return v


def _seconds(v: Any, allow_zero: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise _Bad(f"expected a {'non-negative' if allow_zero else 'positive'} number of seconds, got {_show(v)}")
    return float(v)


def _seconds_in(lo: float, hi: float) -> Callable[[Any], float]:
    """A number of seconds in ``lo..hi`` (``lo`` = 0 allows zero)."""

    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
            raise _Bad(f"expected a number of seconds in {lo:g}..{hi:g}, got {_show(v)}")
        return float(v)

    return check


def _number_in(lo: float, hi: float, what: str) -> Callable[[Any], float]:
    """A number in ``lo..hi`` (for sizes given in MB/GB and the like)."""

    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
            raise _Bad(f"expected {what} in {lo:g}..{hi:g}, got {_show(v)}")
        return float(v)

    return check


def _cpu_count() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _positive_number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise _Bad(f"expected a positive number, got {_show(v)}")
    return float(v)


def _strings(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
        raise _Bad(f"expected a list of non-empty strings, got {_show(v)}")
    return tuple(v)


def _subsystems(v: Any) -> tuple[tuple[int, ...], ...]:
    if not isinstance(v, list) or not all(
        isinstance(s, list) and s and all(isinstance(q, int) and not isinstance(q, bool) and q >= 0 for q in s) for s in v
    ):
        raise _Bad(f"expected a list of lists of qubit positions, e.g. [[0, 1], [2]], got {_show(v)}")
    out = tuple(tuple(s) for s in v)
    for s in out:
        if len(set(s)) != len(s):
            raise _Bad(f"subsystem {list(s)} repeats a qubit")
    return out


def _wires(v: Any) -> tuple:
    if isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 4096:
        return tuple(range(v))
    if isinstance(v, list) and v and all(isinstance(w, (int, str)) and not isinstance(w, bool) for w in v) and len(set(v)) == len(v):
        return tuple(v)
    raise _Bad(f"expected a number of qubits or a list of distinct wire labels, got {_show(v)}")


def _endpoint(v: Any) -> str:
    s = _string(v)
    scheme, sep, rest = s.partition("://")
    if not sep or scheme not in _ZMQ_SCHEMES or not rest or len(s) > 1024:
        raise _Bad(f"expected a ZeroMQ endpoint such as 'tcp://127.0.0.1:5555' ({', '.join(_ZMQ_SCHEMES)}), got {_show(v)}")
    if scheme in ("tcp", "ws", "wss"):
        host, colon, port = rest.split("/", 1)[0].rpartition(":")
        # '*' and 0: any free port (bind); libzmq would otherwise fail only when the socket is made
        if not colon or not host or not (port in ("*", "!") or (port.isdigit() and 0 <= int(port) <= 65535)):
            raise _Bad(f"expected host:port with a port in 1..65535 (or * for any free port), got {_show(v)}")
    return s


def _choice(*options: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in options:
            raise _Bad(f"expected one of {', '.join(map(repr, options))}, got {_show(v)}")
        return v

    return check


def _topic_filter(v: Any) -> str:
    s = _string(v)
    parts = s.split("/")
    for i, p in enumerate(parts):
        if ("#" in p and (p != "#" or i != len(parts) - 1)) or ("+" in p and p != "+"):
            raise _Bad(f"invalid MQTT topic filter {s!r}")
    return s


def _topic_name(v: Any) -> str:
    s = _string(v)
    if "+" in s or "#" in s:
        raise _Bad(f"a topic prefix may not contain wildcards, got {s!r}")
    return s.rstrip("/")


# -- sections -------------------------------------------------------------------------------
def _zmq_input(t: _Table, i: int) -> ZmqInputConfig:
    c = ZmqInputConfig(
        endpoint=t.get("endpoint", _endpoint, required=True),
        bind=t.get("bind", _bool, True),
        hwm=t.get("hwm", _HWM, 64),
        max_message_bytes=t.get("max_message_bytes", _int_in(1024, 1 << 30, "a number of bytes (1 KiB .. 1 GiB)"),
                                 256 * 1024 * 1024),
        curve=t.get("curve", _bool, False),
        name=t.get("name", _string, f"zmq{i}"),
    )
    t.done()
    return c


def _mqtt_input(t: _Table, i: int) -> MqttInputConfig:
    c = MqttInputConfig(
        topics=t.get("topics", lambda v: tuple(_topic_filter(x) for x in _strings(v)), required=True),
        qos=t.get("qos", _int_in(0, 2, "a QoS level"), 1),
        kind=t.get("kind", _choice("shadow", "bell"), "shadow"),
        batch_size=t.get("batch_size", _int_in(1, 1 << 20, "a number of records"), 4096),
        flush_interval=t.get("flush_interval", _seconds_in(0.001, 3600), 0.1),
        max_queued_batches=t.get("max_queued_batches", _int_in(1, 65_536, "a number of batches"), 256),
        max_payload_bytes=t.get("max_payload_bytes", _int_in(64, 256 << 20, "a number of bytes (64 .. 256 MiB)"), 1 << 20),
        name=t.get("name", _string, f"mqtt{i}"),
    )
    t.done()
    return c


def _estimator(t: _Table, i: int) -> EstimatorConfig:
    from qsense.pauli import parse_observable

    name = t.get("name", _string, required=True)
    if "/" in name or "+" in name or "#" in name:
        t.fail(f"estimator names become topic levels; {name!r} may not contain '/', '+' or '#'", "name")
    typ = t.get("type", _choice(*ESTIMATOR_TYPES), required=True)
    kw: dict[str, Any] = {"name": name, "type": typ, "sources": t.get("sources", _strings, ()),
                          "wires": t.get("wires", _wires, None)}
    if typ in ("shadow", "bell"):
        obs = t.get("observables", _strings, required=(typ == "shadow")) if typ == "shadow" else t.get("observables", _strings, ())
        if len(obs) > MAX_OBSERVABLES:
            t.fail(f"{len(obs)} observables; at most {MAX_OBSERVABLES}", "observables")
        for o in obs:
            try:
                parse_observable(o)
            except ValueError as exc:
                t.fail(f"observable {o!r}: {exc}", "observables")
        kw["observables"] = obs
    if typ == "shadow":
        # estimate() is O(groups x observables): 10**9 groups took 23.7 s and 6.3 GB
        kw["groups"] = t.get("groups", _int_in(1, MAX_GROUPS, "a positive integer"), 1)
        kw["method"] = t.get("method", _choice("mean", "matched"), "mean")
    elif typ == "bell":
        kw["t2"] = t.get("t2", _seconds_in(1e-12, 1e9), None)
        # "t1t2" needs a T1, which has no key yet: build BellEstimator(decoherence=T1T2(...)) in code
        kw["decoherence"] = t.get("decoherence", _choice("depolarizing", "dephasing"), "depolarizing")
        if kw["decoherence"] != "depolarizing" and kw["t2"] is None:
            t.fail(f"decoherence {kw['decoherence']!r} reweights waited copies and needs t2", "decoherence")
        kw["purity_subsystems"] = t.get("purity_subsystems", _subsystems, ())
    elif typ == "all_pauli_squares":
        from qsense.estimators.bell import MAX_ALL_PAULI_QUBITS

        kw["max_qubits"] = t.get("max_qubits", _positive_int, 6)
        if kw["max_qubits"] > MAX_ALL_PAULI_QUBITS:
            t.fail(f"at most {MAX_ALL_PAULI_QUBITS} (4^n values are kept and published)", "max_qubits")
    else:
        from qsense.estimators.purity import MAX_SUBSYSTEM

        subs = t.get("subsystems", _subsystems, required=True)
        if not subs:
            t.fail("needs at least one subsystem", "subsystems")
        for s in subs:
            if len(s) > MAX_SUBSYSTEM:
                t.fail(f"subsystem {list(s)} has {len(s)} qubits; the limit is {MAX_SUBSYSTEM}", "subsystems")
        kw["subsystems"] = subs
    t.done()
    return EstimatorConfig(**kw)


def _broker(t: _Table) -> BrokerConfig:
    password = t.get("password", _secret, None)
    if t.has("password_file"):
        if password is not None:
            t.fail("give password or password_file, not both")
        pw_path = t.get("password_file", t.path_value)
        if (why := _private_file_problem(pw_path, "password file")) is not None:
            t.fail(why, "password_file")
        try:
            with open(pw_path, "rb") as f:
                raw = f.read(4097)
            if len(raw) > 4096:
                t.fail(f"{pw_path}: more than 4096 bytes; not a password file", "password_file")
            password = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            t.fail(f"{pw_path} is not UTF-8 text", "password_file")  # the decoder's message would quote bytes of it
        except OSError as exc:
            t.fail(f"cannot read {pw_path}: {exc.strerror or exc}", "password_file")
        if not password:
            t.fail(f"{pw_path} is empty", "password_file")
    opt_path = lambda v: str(t.path_value(v))  # noqa: E731
    c = BrokerConfig(
        host=t.get("host", _string, "127.0.0.1"),
        port=t.get("port", _int_in(1, 65535, "a port"), 1883),
        username=t.get("username", _string, None),
        password=password,
        tls=t.get("tls", _bool, False),
        ca_file=t.get("ca_file", opt_path, None),
        cert_file=t.get("cert_file", opt_path, None),
        key_file=t.get("key_file", opt_path, None),
        tls_insecure=t.get("tls_insecure", _bool, False),
        client_id=t.get("client_id", _string, None),
        keepalive=t.get("keepalive", _int_in(5, 3600, "seconds"), 30),
        reconnect_min=t.get("reconnect_min", _seconds_in(0.01, 3600), 0.2),
        reconnect_max=t.get("reconnect_max", _seconds_in(0.01, 3600), 10.0),
    )
    if c.password is not None and c.username is None:
        t.fail("a password needs a username")
    if c.reconnect_max < c.reconnect_min:
        t.fail("reconnect_max must be >= reconnect_min")
    for f in (c.ca_file, c.cert_file, c.key_file):
        if f is not None and not Path(f).is_file():
            t.fail(f"file {f} does not exist")
    t.done()
    return c


def _secret(v: Any) -> str:
    """A non-empty string; the message never shows the value (a mistyped password must not reach a log)."""
    if not isinstance(v, str) or not v:
        raise _Bad(f"expected a non-empty string (got a {type(v).__name__}; value not shown)")
    return v


def _private_file_problem(path: Path, what: str) -> str | None:
    """Why ``path`` may not hold a secret (missing, not a regular file, group/world accessible), or None."""
    from .checkpoint import private_file_problem

    return private_file_problem(path, what)


def _string_list(v: Any) -> list[str]:
    if not isinstance(v, list) or not v:
        raise _Bad(f"expected a non-empty list of strings, got {_show(v)}")
    return [_string(x) for x in v]


def _secret_key_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable ``.key_secret`` certificate, or None if it is."""
    import zmq.auth

    try:
        _, secret = zmq.auth.load_certificate(str(path))
    except Exception as exc:  # noqa: BLE001 -- whatever makes it unreadable, it is a configuration error
        return f"{path} is not a CURVE certificate: {exc}"
    if not secret:
        return f"{path} holds no secret key (a public .key file? use the .key_secret file)"
    return None


def parse_config(data: Mapping[str, Any], base_dir: str | Path = ".", where: str = "<config>") -> DaemonConfig:
    """Validate a parsed TOML document (a dict) into a :class:`DaemonConfig`."""
    base = Path(base_dir)
    top = _Table(data, "", where, base)
    kw: dict[str, Any] = {}
    d = top.sub("daemon")
    if d is not None:
        kw["name"] = d.get("name", _topic_name, "qsense")
        kw["publish_interval"] = d.get("publish_interval", _seconds_in(0.001, 86400), 1.0)
        kw["drain_timeout"] = d.get("drain_timeout", _seconds_in(0, 3600), 5.0)
        kw["coalesce_records"] = d.get("coalesce_records", _int_in(1, 1 << 24, "a number of records"), 65536)
        # more counting threads than cores only adds contention
        kw["kernel_threads"] = d.get("kernel_threads", _int_in(1, _cpu_count(), "a number of threads (at most the cores)"), None)
        kw["max_seq_jump"] = d.get("max_seq_jump", _int_in(0, 2**63, "a number of batches (0: unbounded)"), 1_000_000) or None
        kw["max_sources"] = d.get("max_sources", _int_in(1, 1_000_000, "a number of sources"), 1024)
        kw["max_peers"] = d.get("max_peers", _int_in(1, 65_536, "a number of peers"), 256)
        kw["byte_budget"] = d.get("byte_budget", _int_in(1 << 20, 1 << 40, "a number of bytes (1 MiB .. 1 TiB)"), 1 << 30)
        d.done()
    inputs = top.sub("inputs")
    zin: list[ZmqInputConfig] = []
    min_: list[MqttInputConfig] = []
    if inputs is not None:
        zin = [_zmq_input(t, i) for i, t in enumerate(inputs.subs("zmq"))]
        min_ = [_mqtt_input(t, i) for i, t in enumerate(inputs.subs("mqtt"))]
        inputs.done()
    kw["zmq_inputs"], kw["mqtt_inputs"] = tuple(zin), tuple(min_)
    names = [x.name for x in (*zin, *min_)]
    if len(set(names)) != len(names):
        top.fail(f"input names must be distinct; got {names}", "inputs")
    ests = tuple(_estimator(t, i) for i, t in enumerate(top.subs("estimators")))
    if not ests:
        top.fail("at least one [[estimators]] table is needed", "estimators")
    en = [e.name for e in ests]
    if len(set(en)) != len(en):
        top.fail(f"estimator names must be distinct; got {en}", "estimators")
    kw["estimators"] = ests
    outputs = top.sub("outputs")
    if outputs is not None:
        z = outputs.sub("zmq")
        if z is not None:
            kw["zmq_output"] = ZmqOutputConfig(
                endpoint=z.get("endpoint", _endpoint, required=True),
                snapshot_endpoint=z.get("snapshot_endpoint", _endpoint, None),
                topic_prefix=z.get("topic_prefix", _topic_name, "qsense"),
                curve=z.get("curve", _bool, False),
                hwm=z.get("hwm", _HWM, 10000),
                states=z.get("states", _bool, True),
            )
            z.done()
        m = outputs.sub("mqtt")
        if m is not None:
            kw["mqtt_output"] = MqttOutputConfig(
                topic_prefix=m.get("topic_prefix", _topic_name, "qsense"),
                qos=m.get("qos", _int_in(0, 2, "a QoS level"), 1),
                retain=m.get("retain", _bool, True),
            )
            m.done()
        p = outputs.sub("prometheus")
        if p is not None:
            kw["prometheus"] = PrometheusConfig(
                port=p.get("port", _int_in(0, 65535, "a port"), required=True), host=p.get("host", _string, "127.0.0.1")
            )
            p.done()
        outputs.done()
    b = top.sub("mqtt")
    if b is not None:
        kw["broker"] = _broker(b)
    elif min_ or "mqtt_output" in kw:
        kw["broker"] = BrokerConfig()
    c = top.sub("curve")
    if c is not None:
        kw["curve"] = CurveConfig(
            server_secret_key=c.get("server_secret_key", c.path_value, required=True),
            authorized_keys=c.get("authorized_keys", c.path_value, required=True),
        )
        if not kw["curve"].server_secret_key.is_file():
            c.fail(f"{kw['curve'].server_secret_key} does not exist", "server_secret_key")
        if (why := _private_file_problem(kw["curve"].server_secret_key, "secret key file")) is not None:
            c.fail(why, "server_secret_key")
        if (why := _secret_key_problem(kw["curve"].server_secret_key)) is not None:
            c.fail(why, "server_secret_key")
        if not kw["curve"].authorized_keys.is_dir():
            c.fail(f"{kw['curve'].authorized_keys} is not a directory", "authorized_keys")
        cs = c.sub("sources")
        if cs is not None:
            bound = []
            for src in sorted(cs.data):
                names = cs.get(src, _string_list, required=True)
                files = []
                for n in names:
                    f = kw["curve"].authorized_keys / (n if n.endswith(".key") else f"{n}.key")
                    if not f.is_file():
                        cs.fail(f"{f} does not exist (key names are files in authorized_keys)", src)
                    files.append(f)
                bound.append((src, tuple(files)))
            cs.done()
            kw["curve"] = CurveConfig(kw["curve"].server_secret_key, kw["curve"].authorized_keys, tuple(bound))
        c.done()
    wants_curve = any(x.curve for x in zin) or (kw.get("zmq_output") is not None and kw["zmq_output"].curve)
    if wants_curve and c is None:
        top.fail("a socket has curve = true but there is no [curve] table", "curve")
    ck = top.sub("checkpoint")
    if ck is not None:
        kw["checkpoint"] = CheckpointConfig(
            path=ck.get("path", ck.path_value, required=True), period=ck.get("period", _seconds_in(0.1, 86400), 10.0),
            key_file=ck.get("key_file", ck.path_value, None),
        )
        # the default key file too: --check must find what the start would refuse
        kf = kw["checkpoint"].key_file or kw["checkpoint"].path.with_name(kw["checkpoint"].path.name + ".key")
        if os.path.lexists(kf) and (why := _private_file_problem(kf, "checkpoint key file")) is not None:
            ck.fail(why, "key_file")
        if kw["checkpoint"].path.is_dir():
            ck.fail(f"{kw['checkpoint'].path} is a directory", "path")
        ck.done()
    ar = top.sub("archive")
    if ar is not None:
        size = lambda unit, lo, hi: (lambda v: int(_number_in(lo, hi, "a size")(v) * unit))  # noqa: E731
        kw["archive"] = ArchiveConfig(
            path=ar.get("path", ar.path_value, required=True),
            fsync=ar.get("fsync", _choice("group", "batch"), "group"),
            commit_interval=ar.get("commit_interval", lambda v: _seconds(v, allow_zero=True), 0.05),
            segment_bytes=ar.get("segment_mb", size(1 << 20, 0.01, 65536), 256 << 20),
            segment_seconds=ar.get("segment_seconds", _seconds_in(1, 30 * 86400), 3600.0),
            retention_bytes=ar.get("retention_gb", size(1 << 30, 1e-6, 1 << 20), None),
            retention_seconds=ar.get("retention_days", lambda v: _number_in(0.0001, 36500, "a number of days")(v) * 86400.0, None),
            capacity_bytes=ar.get("capacity_gb", size(1 << 30, 1e-6, 1 << 20), None),
        )
        if (kw["archive"].retention_bytes or kw["archive"].retention_seconds) and top.sub("checkpoint") is None:
            ar.fail("retention needs a [checkpoint]: a restart without one rebuilds the estimates from the whole archive, "
                    "so nothing could ever be deleted", "retention_gb")
        if kw["archive"].commit_interval > 10:
            ar.fail("at most 10 seconds (acknowledgements wait for the commit)", "commit_interval")
        if kw["archive"].path.exists() and not kw["archive"].path.is_dir():
            ar.fail(f"{kw['archive'].path} exists and is not a directory", "path")
        ar.done()
    top.done()
    # no inputs at all is legal: in-process users feed EstimationDaemon.ingest()
    if zin or min_:
        # an unpinned estimator binds to the register of the first batch it folds: from a network input that
        # would let any peer's one-record batch fix it (and the checkpoint keep it) -- unless only CURVE-bound
        # sources can reach it
        bound_sources = {src for src, _ in kw["curve"].sources} if kw.get("curve") is not None else set()
        for i, e in enumerate(ests):
            if e.wires is None and not (e.sources and set(e.sources) <= bound_sources):
                top.fail(f"estimator {e.name!r} is fed from network inputs and does not declare its wires; add e.g. "
                         "wires = 4 (qubits 0..3) or wires = [0, 1, 2], or restrict its sources to names bound in "
                         "[curve.sources] (otherwise the first batch any peer sends fixes its register)",
                         f"estimators[{i}].wires")
    return DaemonConfig(**kw, source_file=None)


def load_config(path: str | Path) -> DaemonConfig:
    """Read and validate a TOML config file (raises :class:`ConfigError`)."""
    p = Path(path)
    try:
        # O_NONBLOCK: a FIFO must not hang the start; fstat before reading: /dev/zero, a directory or a huge
        # file is refused without reading it
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise ConfigError(f"{p}: not a regular file")
        with os.fdopen(fd, "rb") as f:
            if st.st_size > MAX_CONFIG_BYTES:
                raise ConfigError(f"{p}: {st.st_size} bytes; a config file may have at most {MAX_CONFIG_BYTES}")
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}: more than {MAX_CONFIG_BYTES} bytes; refused")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses per nesting level: [[[[... a million deep
        raise ConfigError(f"{p}: not valid TOML: arrays or tables nested too deeply") from None
    cfg = parse_config(data, p.resolve().parent, str(p))
    return DaemonConfig(**{**cfg.__dict__, "source_file": p})
