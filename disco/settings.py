"""Every setting, resolved in one place: flag > environment > config file > default.

``SETTINGS`` is the one table: each setting's key (the config file's name for it: the long flag
for node flags, the environment name without ``DISCO_`` otherwise), its environment variable,
its type and default. ``resolve(flags)`` returns each setting's value and where it came from;
``node_settings(...)`` builds the daemon's frozen ``mesh.settings.NodeSettings`` from it, and
``disco config show`` prints it.

The config file is TOML, top-level keys only, found at ``--config F``, else ``$DISCO_CONFIG``,
else ``~/.config/disco/config.toml``, else ``/etc/disco/config.toml`` (the first that exists;
an explicit one must exist). An unknown key or a value of the wrong type is one line naming
the file and the key. Cores never read the environment: they get these values passed in.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from common.error import UsageError
from mesh.settings import (DEFAULT_PORT, LOOPBACK_PREFIXES, PYTHON, NodeSettings,
                           default_data_dir, is_loopback, parse_address)

__all__ = ["DEFAULT_PORT", "PYTHON", "LOOPBACK_PREFIXES", "NodeSettings", "default_data_dir",
           "parse_address", "is_loopback", "node_settings", "client_master", "SETTINGS",
           "resolve", "config_path", "Setting"]

USER_CONFIG = Path("~/.config/disco/config.toml")
SYSTEM_CONFIG = Path("/etc/disco/config.toml")


@dataclass(frozen=True)
class Setting:
    key: str
    env: str
    kind: type            # str, int, float, bool or list (of str)
    default: object
    help: str


SETTINGS = [
    Setting("host", "DISCO_HOST", str, "127.0.0.1", "address to bind and to advertise"),
    Setting("port", "DISCO_PORT", int, DEFAULT_PORT, "control port (data port+1, HTTP port+2)"),
    Setting("http_port", "DISCO_HTTP_PORT", int, None, "status page port (port+2; 0: off)"),
    Setting("data", "DISCO_DATA", str, None, "data dir (~/.local/share/disco/node-PORT)"),
    Setting("join", "DISCO_JOIN", list, [], "seed nodes, HOST:PORT"),
    Setting("workers", "DISCO_WORKERS", int, os.cpu_count() or 1, "task slots"),
    Setting("name", "DISCO_NODE_NAME", str, "", "the node's name (HOST:PORT)"),
    Setting("secret_file", "DISCO_SECRET_FILE", str, None, "the cluster secret"),
    Setting("insecure", "DISCO_INSECURE", bool, False, "bind non-loopback without a secret"),
    Setting("master", "DISCO_MASTER", str, None, "the node clients talk to"),
    Setting("max_failures", "DISCO_MAX_FAILURES", int, 10, "failures of a task before its job "
            "fails"),
    Setting("dead_voter_s", "DISCO_DEAD_VOTER_S", float, 60.0, "seconds dead before a member "
            "stops voting"),
    Setting("mesh_preset", "DISCO_MESH_PRESET", str, "", "membership timings: loopback or lan"),
    Setting("sort_mb", "DISCO_SORT_MB", int, 256, "sort memory of one reduce task, MiB"),
    Setting("log_mb", "DISCO_LOG_MB", float, 64.0, "size of one log file before it rotates, MiB"),
    Setting("log_files", "DISCO_LOG_FILES", int, 5, "log files kept per log"),
    Setting("ddfs_blob_replicas", "DDFS_BLOB_REPLICAS", int, 3, "copies of each blob"),
    Setting("ddfs_tag_replicas", "DDFS_TAG_REPLICAS", int, 3, "accepted; tags live on every "
            "voter"),
    Setting("ddfs_gc_delay_s", "DDFS_GC_DELAY_S", float, 3600.0, "age of an unreferenced copy "
            "before it goes"),
    Setting("ddfs_repair_mbps", "DDFS_REPAIR_MBPS", float, 64.0, "MiB/s of repair copies per "
            "node"),
    Setting("ddfs_scrub_mbps", "DDFS_SCRUB_MBPS", float, 8.0, "MiB/s of scrubbing per node"),
]
BY_KEY = {s.key: s for s in SETTINGS}
# settings whose flag and config key differ from their name on the command line
FLAG_OF = {"data": "--data", "join": "--join", "secret_file": "--secret-file",
           "http_port": "--http-port"}


def config_path(explicit: str | None = None) -> Path | None:
    """The config file in use, or None."""
    given = explicit or os.environ.get("DISCO_CONFIG")
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise UsageError(f"config file {path} does not exist "
                             f"({'--config' if explicit else 'DISCO_CONFIG'})")
        return path
    for path in (USER_CONFIG.expanduser(), SYSTEM_CONFIG):
        if path.is_file():
            return path
    return None


def _load(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    out = {}
    for key, value in data.items():
        setting = BY_KEY.get(key)
        if setting is None:
            known = ", ".join(s.key for s in SETTINGS)
            raise UsageError(f"{path}: unknown key {key!r} (known: {known})")
        out[key] = _typed(setting, value, f"{path}: {key}")
    return out


def _typed(setting: Setting, value, where: str):
    kind = setting.kind
    if kind is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{where} = {value!r}: expected a list of HOST:PORT strings")
        return value
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
            return value.lower() in ("1", "true", "yes")
        if not isinstance(value, bool):
            raise UsageError(f"{where} = {value!r}: expected true or false")
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            raise UsageError(f"{where} = {value!r}: expected a "
                             f"{'whole number' if kind is int else 'number'}") from None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise UsageError(f"{where} = {value!r}: expected a "
                         f"{ {int: 'whole number', float: 'number', str: 'string'}[kind] }")
    return value


def resolve(flags: dict | None = None, config: str | None = None) -> dict:
    """Every setting: key -> (value, source), source one of ``flag``, ``env NAME``,
    ``file PATH``, ``default``. ``flags`` holds the values given on the command line (None:
    not given)."""
    flags = flags or {}
    path = config_path(config)
    filed = _load(path)
    out = {}
    for s in SETTINGS:
        given = flags.get(s.key)
        if given is not None and given != () and given is not False:
            out[s.key] = (list(given) if s.kind is list else given, "flag")
        elif os.environ.get(s.env) not in (None, ""):
            out[s.key] = (_typed(s, os.environ[s.env], s.env), f"env {s.env}")
        elif s.key in filed:
            out[s.key] = (filed[s.key], f"file {path}")
        else:
            out[s.key] = (s.default, "default")
    return out


def node_settings(host=None, port=None, data=None, join=(), workers=None, name=None,
                  secret_file=None, insecure=False, http_port=None,
                  config: str | None = None) -> NodeSettings:
    """Resolve a node's settings from flags (None = not given), the environment and the
    config file."""
    v = {k: value for k, (value, _) in resolve(
        {"host": host, "port": port, "data": data, "join": join, "workers": workers,
         "name": name, "secret_file": secret_file, "insecure": insecure,
         "http_port": http_port}, config).items()}
    data_dir = v["data"] or default_data_dir(v["port"])
    return NodeSettings(
        host=v["host"], port=v["port"], data_dir=Path(data_dir).expanduser().absolute(),
        join=tuple(v["join"]), workers=v["workers"], name=v["name"],
        secret_file=v["secret_file"], insecure=v["insecure"], http_port=v["http_port"],
        max_failures=v["max_failures"], dead_voter_s=v["dead_voter_s"],
        mesh_preset=v["mesh_preset"], blob_replicas=v["ddfs_blob_replicas"],
        tag_replicas=v["ddfs_tag_replicas"], gc_delay_s=v["ddfs_gc_delay_s"],
        repair_bytes_s=int(v["ddfs_repair_mbps"] * (1 << 20)),
        scrub_bytes_s=int(v["ddfs_scrub_mbps"] * (1 << 20)),
    )


def client_master() -> str | None:
    """The DISCO_MASTER setting (environment, else the config file): host:port, 'local',
    'local:N', or None when unset."""
    if os.environ.get("DISCO_MASTER"):
        return os.environ["DISCO_MASTER"]
    try:
        return _load(config_path()).get("master")
    except UsageError:
        return None
