"""Every setting, resolved in one place: flags beat environment beat defaults (SPEC §2, §11).

Cores never read the environment; the daemon and the client build these frozen dataclasses
once and pass them in. The dataclasses and address rules themselves live with the package that
uses them (``mesh.settings``) and are re-exported here under their old names.
"""
from __future__ import annotations

import os
from pathlib import Path

from common.error import UsageError
from mesh.settings import (DEFAULT_PORT, LOOPBACK_PREFIXES, PYTHON, NodeSettings,
                           default_data_dir, is_loopback, parse_address)

__all__ = ["DEFAULT_PORT", "PYTHON", "LOOPBACK_PREFIXES", "NodeSettings", "default_data_dir",
           "parse_address", "is_loopback", "node_settings", "client_master"]


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a whole number") from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a number") from None


def node_settings(host=None, port=None, data=None, join=(), workers=None, name=None,
                  secret_file=None, insecure=False, http_port=None) -> NodeSettings:
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
        http_port=http_port if http_port is not None else (
            _env_int("DISCO_HTTP_PORT", -1) if env.get("DISCO_HTTP_PORT") else None),
        blob_replicas=_env_int("DDFS_BLOB_REPLICAS", 3),
        tag_replicas=_env_int("DDFS_TAG_REPLICAS", 3),
        gc_delay_s=_env_float("DDFS_GC_DELAY_S", 3600.0),
        repair_bytes_s=int(_env_float("DDFS_REPAIR_MBPS", 64.0) * (1 << 20)),
        scrub_bytes_s=int(_env_float("DDFS_SCRUB_MBPS", 8.0) * (1 << 20)),
    )


def client_master() -> str | None:
    """The DISCO_MASTER setting: host:port, 'local', 'local:N', or None when unset."""
    return os.environ.get("DISCO_MASTER") or None
