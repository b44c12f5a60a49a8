"""CURVE security for ZeroMQ sockets: key files, key generation and the authenticator.

Optional throughout: :class:`CurveServerKeys` / :class:`CurveClientKeys` make a
socket a CURVE server or client, :func:`generate_keypair` writes a key pair, and
:func:`start_authenticator` allows only the public keys in a directory; a client
with any other key completes no handshake and so gets nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

__all__ = ["CurveServerKeys", "CurveClientKeys", "generate_keypair", "start_authenticator", "public_key_id"]


def _load_key_pair(secret_key_file: Path) -> tuple[bytes, bytes]:
    """``(public, secret)`` from a ``.key_secret`` certificate; a public-only file is refused."""
    import zmq.auth

    public, secret = zmq.auth.load_certificate(str(secret_key_file))
    if not secret:
        raise ValueError(f"{secret_key_file} holds no secret key (use the .key_secret file)")
    return public, secret


@dataclass(frozen=True)
class CurveServerKeys:
    """Server side of CURVE: our key pair and the clients we accept.

    ``secret_key_file`` is a ``zmq.auth`` ``.key_secret`` certificate (it holds
    both keys); ``authorized_keys`` is a directory of client ``.key`` files
    (public keys).  Any other client key is refused during the handshake.
    """

    secret_key_file: Path
    authorized_keys: Path

    def load(self) -> tuple[bytes, bytes]:
        """Our ``(public, secret)`` key pair."""
        return _load_key_pair(self.secret_key_file)

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server (before bind/connect)."""
        public, secret = self.load()
        sock.curve_publickey = public
        sock.curve_secretkey = secret
        sock.curve_server = True


@dataclass(frozen=True)
class CurveClientKeys:
    """Client side of CURVE: our ``.key_secret`` file and the server's public ``.key``."""

    secret_key_file: Path
    server_public_key_file: Path

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the server (before connect)."""
        import zmq.auth

        public, secret = _load_key_pair(self.secret_key_file)
        server_public, _ = zmq.auth.load_certificate(str(self.server_public_key_file))
        sock.curve_publickey = public
        sock.curve_secretkey = secret
        sock.curve_serverkey = server_public


def generate_keypair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Create ``NAME.key`` (public) and ``NAME.key_secret`` (mode 0600) in ``directory``
    with ``zmq.auth.create_certificates``; returns both paths."""
    import zmq.auth

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    secret_path = d / f"{name}.key_secret"
    # the secret file exists with mode 0600 before the key is written into it (zmq would create it 0644 under
    # the usual umask, readable by every local user for good); O_NOFOLLOW: never write a secret through a link
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode on open: make it private too
    finally:
        os.close(fd)
    public, secret = zmq.auth.create_certificates(str(d), name)
    return Path(public), Path(secret)


def public_key_id(key_file: str | Path) -> str:
    """The ZAP ``User-Id`` of a client with the public key in ``key_file``.

    :func:`start_authenticator` keeps pyzmq's default mapping, the z85 text of
    the client's public key, which a ROUTER reads per message as the frame
    property ``"User-Id"``; the daemon binds source names to these.
    """
    import zmq.auth

    public, _ = zmq.auth.load_certificate(str(key_file))
    return public.decode("ascii")


def start_authenticator(context: zmq.asyncio.Context, authorized_keys: str | Path) -> Any:
    """Start ZAP authentication on ``context``: CURVE clients must present a public
    key found in ``authorized_keys`` (a directory of ``.key`` files).

    Uses ``zmq.auth.asyncio.AsyncioAuthenticator`` (a task on the running loop,
    not a thread).  One authenticator per context; call ``.stop()`` when done.
    Messages of authenticated peers carry ``User-Id``: the z85 text of their
    public key (:func:`public_key_id`).
    """
    from zmq.auth.asyncio import AsyncioAuthenticator

    d = Path(authorized_keys)
    if not d.is_dir():
        raise ValueError(f"authorized_keys {d} is not a directory of public .key files")
    auth = AsyncioAuthenticator(context, log=logging.getLogger(f"{__name__}.auth"))
    auth.start()
    auth.configure_curve(domain="*", location=str(d))
    return auth

