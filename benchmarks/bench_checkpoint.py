"""What authenticating and validating checkpoints costs, next to the unauthenticated way.

One run builds realistic estimator states (a shadow estimator with ``--obs``
random 2-local observables on 16 qubits and ``--groups`` groups, fed 200,000
snapshots; ``all_pauli_squares`` on ``--apq-qubits`` qubits) and times, on the
very same :class:`~qsense.streaming.checkpoint.Checkpoint`:

1. **write** -- :func:`~qsense.streaming.checkpoint.write_checkpoint` (msgpack,
   HMAC-SHA256 under the key read from the 0600 key file, temp file, fsync,
   rename) next to the earlier format's write (msgpack, plain SHA-256, the same
   temp file + fsync + rename);
2. **restore** -- what a daemon does at start: read + MAC + schema/range
   validation + every ``from_bytes`` with bounded unpacking and count checks +
   the configuration comparison, next to the earlier path (SHA-256 check,
   msgpack decode, ``np.load`` of every array without limits or checks).

Checkpoints are written in a worker thread (``asyncio.to_thread``), so (1) is
time off the event loop, not off the ingest rate.  Usage::

    python benchmarks/bench_checkpoint.py            # ~20 s
    python benchmarks/bench_checkpoint.py --quick
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import tempfile
import time

import msgspec
import numpy as np

from qsense import BellBatch, ShadowBatch, ShadowEstimator
from qsense.estimators.bell import AllPauliSquares
from qsense.estimators.serial import configuration
from qsense.streaming.checkpoint import LEGACY_MAGIC, Checkpoint, EstimatorState, read_checkpoint, write_checkpoint


def _observables(n: int, M: int, rng: np.random.Generator) -> list[str]:
    out = set()
    while len(out) < M:
        a, b = sorted(rng.choice(n, 2, replace=False))
        out.add(f"{'XYZ'[rng.integers(3)]}{a} {'XYZ'[rng.integers(3)]}{b}")
    return sorted(out)


def _old_write(path: str, ckpt: Checkpoint) -> int:
    """The earlier format's write: SHA-256 anyone can recompute, same atomic replace."""
    body = msgspec.msgpack.encode(ckpt)
    data = LEGACY_MAGIC + body + hashlib.sha256(body).digest()
    tmp = path + ".old.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(data)


def _old_restore(path: str) -> int:
    """The earlier restore: checksum, decode, np.load every array (no limits, no checks)."""
    data = open(path, "rb").read()
    body, digest = data[8:-32], data[-32:]
    assert hashlib.sha256(body).digest() == digest
    ck = msgspec.msgpack.Decoder(Checkpoint).decode(body)
    total = 0
    for st in ck.estimators.values():
        z = np.load(io.BytesIO(st.state), allow_pickle=False)
        total += sum(z[k].nbytes for k in z.files)
    return total


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--obs", type=int, default=1000)
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--apq-qubits", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.obs, args.apq_qubits, args.repeat = 100, 6, 2
    rng = np.random.default_rng(0)
    obs = _observables(16, args.obs, rng)
    shadow = ShadowEstimator(obs, groups=args.groups)
    for _ in range(4):
        shadow.update(ShadowBatch(rng.integers(0, 3, (50_000, 16)), rng.integers(0, 2, (50_000, 16))))
    apq = AllPauliSquares(max_qubits=args.apq_qubits)
    apq.update(BellBatch(rng.integers(0, 4, (50_000, args.apq_qubits))))
    ests = {"shadow": shadow, "apq": apq}
    ckpt = Checkpoint(daemon="bench", written_at=time.time(), sources={"s": {"epoch": 1, "seq": 99}},
                      estimators={k: EstimatorState(type=k, fingerprint={}, state=e.to_bytes()) for k, e in ests.items()})
    with tempfile.TemporaryDirectory() as tmp:
        new_path, old_path = os.path.join(tmp, "new.ckpt"), os.path.join(tmp, "old.ckpt")
        size = write_checkpoint(new_path, ckpt)  # creates the key file
        _old_write(old_path, ckpt)
        fresh = {"shadow": lambda: ShadowEstimator(obs, groups=args.groups), "apq": lambda: AllPauliSquares(max_qubits=args.apq_qubits)}

        def new_restore() -> None:
            ck = read_checkpoint(new_path)
            for name, st in ck.estimators.items():
                est = type(ests[name]).from_bytes(st.state)
                assert configuration(est) == configuration(fresh[name]())

        t_new_w = _best(lambda: write_checkpoint(new_path, ckpt), args.repeat)
        t_old_w = _best(lambda: _old_write(old_path, ckpt), args.repeat)
        t_new_r = _best(new_restore, args.repeat)
        t_old_r = _best(lambda: _old_restore(old_path), args.repeat)
    print(f"checkpoint: {size / 1e6:.1f} MB ({args.obs} observables x {args.groups} groups shadow state, "
          f"all_pauli_squares on {args.apq_qubits} qubits); best of {args.repeat}; load {os.getloadavg()[0]:.2f}")
    print(f"{'':34s}{'qsense (signed, validated)':>28s}{'earlier (sha256, unchecked)':>30s}{'ratio':>8s}")
    print(f"{'write (worker thread)':34s}{t_new_w * 1e3:25.1f} ms{t_old_w * 1e3:27.1f} ms{t_new_w / t_old_w:8.2f}")
    print(f"{'restore at start':34s}{t_new_r * 1e3:25.1f} ms{t_old_r * 1e3:27.1f} ms{t_new_r / t_old_r:8.2f}")


if __name__ == "__main__":
    main()
