"""What a node needs to start, as one frozen dataclass, and the address rules it follows.

These are the values, validated on construction; resolving them from flags and the
environment happens in one place only, ``disco.settings``, which builds a ``NodeSettings`` and
hands it to the daemon. Cores never read the environment.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from common.error import UsageError

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
    speculation: bool = True      # DISCO_SPECULATION: backup attempts for stragglers
    spare_workers: int = 1
    dead_voter_s: float = 60.0  # a member dead this long stops being a Raft voter
    mesh_preset: str = ""  # membership timings: "loopback" or "lan"; "" picks by --host
    http_port: int | None = None  # the status page, /metrics, /api/: None = port + 2, 0 = off
    blob_replicas: int = 3        # DDFS_BLOB_REPLICAS: copies of each blob kept (fewer nodes: all)
    tag_replicas: int = 3         # DDFS_TAG_REPLICAS: tags live in the journal, on every voter
    gc_delay_s: float = 3600.0    # DDFS_GC_DELAY_S: an unreferenced copy goes only this old
    repair_bytes_s: int = 64 << 20  # DDFS_REPAIR_MBPS: repair copies' bandwidth per node
    scrub_bytes_s: int = 8 << 20    # DDFS_SCRUB_MBPS: re-reading copies to find corrupt ones

    def __post_init__(self):
        if not 0 < self.port < 65534:
            raise UsageError(f"--port {self.port} is out of range (1-65533; the node also "
                            "uses port+1 and port+2)")
        if self.http_port is None:
            object.__setattr__(self, "http_port", self.port + 2)
        if not 0 <= self.http_port < 65536:
            raise UsageError(f"--http-port {self.http_port} is out of range (0 turns it off)")
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
        if self.blob_replicas < 1 or self.tag_replicas < 1:
            raise UsageError("DDFS_BLOB_REPLICAS and DDFS_TAG_REPLICAS must be 1 or more")
        if self.gc_delay_s < 0 or self.repair_bytes_s < 1 or self.scrub_bytes_s < 1:
            raise UsageError("DDFS_GC_DELAY_S must be 0 or more, DDFS_REPAIR_MBPS and "
                             "DDFS_SCRUB_MBPS above 0")
        if self.mesh_preset not in ("loopback", "lan"):
            raise UsageError(f"DISCO_MESH_PRESET={self.mesh_preset!r}: expected loopback or lan")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def secret_path(self) -> str | None:
        """``secret_file`` made absolute (the daemon's workers and clients read it too)."""
        return str(Path(self.secret_file).expanduser().absolute()) if self.secret_file else None

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "disco.pid"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"


__all__ = ["DEFAULT_PORT", "PYTHON", "LOOPBACK_PREFIXES", "default_data_dir", "parse_address",
           "is_loopback", "NodeSettings"]
