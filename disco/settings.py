"""Every setting, resolved in one place: flags beat environment beat defaults (SPEC §2, §11).

Cores never read the environment; the daemon and the client build these frozen dataclasses
once and pass them in.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from disco.error import UsageError

DEFAULT_PORT = 8989
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
LOOPBACK_PREFIXES = ("127.", "localhost", "::1")


def default_data_dir(port: int) -> Path:
    return Path.home() / ".local" / "share" / "disco" / f"node-{port}"


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` -> (host, port), with a clear error for anything else."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65535:
        raise UsageError(f"bad node address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8989")
    return host, int(port)


def is_loopback(host: str) -> bool:
    return host.startswith(LOOPBACK_PREFIXES)


@dataclass(frozen=True)
class NodeSettings:
    """What one node daemon needs to start."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path = field(default_factory=lambda: default_data_dir(DEFAULT_PORT))
    join: tuple[str, ...] = ()
    workers: int = os.cpu_count() or 1
    name: str = ""
    secret_file: str | None = None
    insecure: bool = False
    max_failures: int = 10
    spare_workers: int = 1
    dead_voter_s: float = 60.0  # a member dead this long stops being a Raft voter
    mesh_preset: str = ""  # membership timings: "loopback" or "lan"; "" picks by --host

    def __post_init__(self):
        if not 0 < self.port < 65534:
            raise UsageError(f"--port {self.port} is out of range (1-65533; the node also uses port+1)")
        if self.workers < 0:
            raise UsageError("--workers must be 0 or more")
        if self.max_failures < 1:
            raise UsageError("DISCO_MAX_FAILURES must be 1 or more")
        for seed in self.join:
            parse_address(seed)
        if not self.name:
            object.__setattr__(self, "name", f"{self.host}:{self.port}")
        if not self.mesh_preset:
            object.__setattr__(self, "mesh_preset", "loopback" if is_loopback(self.host) else "lan")
        if self.mesh_preset not in ("loopback", "lan"):
            raise UsageError(f"DISCO_MESH_PRESET={self.mesh_preset!r}: expected loopback or lan")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "disco.pid"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a whole number") from None


def node_settings(host=None, port=None, data=None, join=(), workers=None, name=None,
                  secret_file=None, insecure=False) -> NodeSettings:
    """Resolve a node's settings from flags (None = not given) and the environment."""
    env = os.environ
    host = host or env.get("DISCO_HOST") or "127.0.0.1"
    port = port or _env_int("DISCO_PORT", DEFAULT_PORT)
    data = data or env.get("DISCO_DATA") or default_data_dir(port)
    joins = tuple(join) or tuple(s for s in env.get("DISCO_JOIN", "").split(",") if s.strip())
    return NodeSettings(
        host=host, port=port, data_dir=Path(data).expanduser().absolute(), join=joins,
        workers=workers if workers is not None else _env_int("DISCO_WORKERS", os.cpu_count() or 1),
        name=name or env.get("DISCO_NODE_NAME") or "",
        secret_file=secret_file or env.get("DISCO_SECRET_FILE") or None,
        insecure=insecure, max_failures=_env_int("DISCO_MAX_FAILURES", 10),
        dead_voter_s=float(_env_int("DISCO_DEAD_VOTER_S", 60)),
        mesh_preset=env.get("DISCO_MESH_PRESET", ""),
    )


def client_master() -> str | None:
    """The DISCO_MASTER setting: host:port, 'local', 'local:N', or None when unset."""
    return os.environ.get("DISCO_MASTER") or None
