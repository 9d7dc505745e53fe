"""The cluster secret and CurveZMQ.

A cluster is defined by its secret: a file of 32 bytes or more (a trailing newline is ignored).
Every holder derives the same CurveZMQ key pair from it (BLAKE2b, keyed and personalised, as the
Curve25519 secret key; its public key from that). Every server socket (control, data, worker)
is a CURVE server with that pair; every client socket (clients, peers, workers, shuffle reads)
is a CURVE client presenting that same pair and expecting it of the server. A ZAP handler,
bound on the daemon's context before any other socket, admits a connection only when the
client's long-term public key is the cluster's: a peer without the secret cannot complete the
handshake, so its frames never reach application code. Traffic is then encrypted.

Without a secret, sockets use the NULL mechanism, and nodes bind loopback only unless started
with ``--insecure`` (``mesh.daemon``).
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

from common.error import UsageError

MIN_SECRET_BYTES = 32
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"disco"


@dataclass(frozen=True)
class Keys:
    public: bytes  # z85, 40 bytes
    secret: bytes  # z85, 40 bytes

    @property
    def public_raw(self) -> bytes:
        return z85.decode(self.public)


def read_secret(path: str | os.PathLike) -> bytes:
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the cluster secret {path}: {exc.strerror}") from None
    if data.endswith(b"\n"):
        data = data[:-1]
        if data.endswith(b"\r"):
            data = data[:-1]
    if len(data) < MIN_SECRET_BYTES:
        raise UsageError(f"the cluster secret in {path} has {len(data)} bytes; it needs "
                         f"{MIN_SECRET_BYTES} or more (e.g. `head -c 32 /dev/urandom > {path}`)")
    return data


def derive(secret: bytes) -> Keys:
    seed = hashlib.blake2b(secret, digest_size=32, person=b"disco-curve-v1").digest()
    secret_z85 = z85.encode(seed)
    return Keys(public=zmq.curve_public(secret_z85), secret=secret_z85)


@functools.lru_cache(maxsize=8)
def keys_from_file(path: str) -> Keys:
    return derive(read_secret(path))


def process_keys() -> Keys | None:
    """The keys named by ``DISCO_SECRET_FILE`` in this process's environment, if any."""
    path = os.environ.get("DISCO_SECRET_FILE")
    return keys_from_file(path) if path else None


def serve(sock: zmq.Socket, keys: Keys | None) -> None:
    """Make ``sock`` (before bind) a CURVE server checked by the ZAP handler."""
    if keys is None:
        return
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.zap_domain = ZAP_DOMAIN
    sock.curve_server = True


def dial(sock: zmq.Socket, keys: Keys | None) -> None:
    """Make ``sock`` (before connect) a CURVE client of a cluster server."""
    if keys is None:
        return
    sock.curve_serverkey = keys.public
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret


class ZapHandler:
    """ZAP (RFC 27) on the daemon's own loop: admit CURVE clients holding the cluster key."""

    def __init__(self, ctx: zmq.Context, keys: Keys, on_refused):
        self.keys, self.on_refused = keys, on_refused
        self.sock = ctx.socket(zmq.REP)
        self.sock.linger = 0
        self.sock.bind(ZAP_ENDPOINT)
        self.refused = 0

    def handle(self) -> None:
        frames = self.sock.recv_multipart()
        version, request_id, domain, address, _identity, mechanism = frames[:6]
        credentials = frames[6:]
        ok = (version == b"1.0" and mechanism == b"CURVE" and domain == ZAP_DOMAIN
              and credentials[:1] == [self.keys.public_raw])
        if ok:
            self.sock.send_multipart([version, request_id, b"200", b"OK", b"", b""])
            return
        self.refused += 1
        self.on_refused(address.decode(errors="replace"), mechanism.decode(errors="replace"))
        self.sock.send_multipart([version, request_id, b"400", b"not a cluster member", b"", b""])
