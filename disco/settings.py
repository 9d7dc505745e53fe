"""Every setting, resolved in one place: flag > environment > config file > default.

``SETTINGS`` is the one table: each setting's key (the config file's name for it: the long flag
for node flags, the environment name without ``DISCO_`` otherwise), its environment variable,
its type and default. ``resolve(flags)`` returns each setting's value and where it came from;
``node_settings(...)`` builds the daemon's frozen ``mesh.settings.NodeSettings`` from it, and
``disco config show`` prints it. ``DiscoSettings`` is Disco's dict-like view of the same
settings under Disco's names (``DiscoSettings()["DISCO_PORT"]``), with Disco's defaults for the
names this project has no setting for.

The config file is TOML, top-level keys only, found at ``--config F``, else ``$DISCO_CONFIG``,
else ``~/.config/disco/config.toml``, else ``/etc/disco/config.toml`` (the first that exists;
an explicit one must exist). An unknown key or a value of the wrong type is one line naming
the file and the key. Cores never read the environment: they get these values passed in.
"""
from __future__ import annotations

import getpass
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from common.error import UsageError
from mesh.settings import (DEFAULT_PORT, LOOPBACK_PREFIXES, PYTHON, NodeSettings,
                           default_data_dir, is_loopback, parse_address)

__all__ = ["DEFAULT_PORT", "PYTHON", "LOOPBACK_PREFIXES", "NodeSettings", "default_data_dir",
           "parse_address", "is_loopback", "node_settings", "client_master", "SETTINGS",
           "resolve", "config_path", "Setting", "DiscoSettings"]

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
    Setting("speculation", "DISCO_SPECULATION", bool, True, "backup attempts for tasks far "
            "slower than their stage's median (speculative execution)"),
    Setting("dead_voter_s", "DISCO_DEAD_VOTER_S", float, 60.0, "seconds dead before a member "
            "stops voting"),
    Setting("mesh_preset", "DISCO_MESH_PRESET", str, "", "membership timings: loopback or lan"),
    Setting("sort_mb", "DISCO_SORT_MB", int, 256, "sort memory of one reduce task, MiB"),
    Setting("fuse", "DISCO_FUSE", bool, True, "run a map generator fused with sum_combiner "
            "(no generator step a pair)"),
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


def is_local(master: str | None) -> bool:
    """Whether ``master`` asks for an embedded cluster: ``local`` or ``local:N`` (not a host
    whose name starts so, like ``localhost:8989``)."""
    return master is not None and (master == "local" or master.startswith("local:"))


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
        speculation=v["speculation"],
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


# -- Disco's names ------------------------------------------------------------------------------

_HUNDRED_YEARS_S = 100 * 365 * 24 * 3600
_REFERENCE = re.compile(r"\$(\w+)")
# Disco's name -> this project's setting key (resolve()): flag > environment > config file
PROJECT_KEYS = {"DISCO_PORT": "port", "DISCO_MASTER_HOST": "host", "DISCO_DATA": "data",
                "DISCO_MASTER": "master", "DDFS_BLOB_REPLICAS": "ddfs_blob_replicas",
                "DDFS_TAG_REPLICAS": "ddfs_tag_replicas"}


def _owner(_settings) -> str:
    return f"{_user(_settings)}@{os.uname().nodename}"


def _user(_settings) -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "user"


def _home(_settings) -> str:
    return str(Path(__file__).resolve().parent.parent)


def _config_file(settings) -> str:
    path = config_path(settings.filename)
    return str(path if path is not None else USER_CONFIG.expanduser())


# Disco's settings table (0.5.4): a value, a "$NAME" template, or a function of the settings.
# Names marked "unused" are accepted for scripts that read them; nothing here acts on them.
DISCO_DEFAULTS: dict = {
    "DISCO_HOME": _home,
    "DISCO_ROOT": str(Path("~/.local/share/disco").expanduser()),
    "DISCO_DATA": lambda s: str(default_data_dir(s["DISCO_PORT"])),
    "DISCO_MASTER_HOME": "$DISCO_HOME",
    "DISCO_MASTER_ROOT": "$DISCO_DATA",
    "DISCO_MASTER_CONFIG": _config_file,
    "DISCO_MASTER_HOST": "127.0.0.1",
    "DISCO_PORT": DEFAULT_PORT,
    "DISCO_MASTER": "$DISCO_MASTER_HOST:$DISCO_PORT",
    "DISCO_NAME": "disco_$DISCO_PORT",
    "DISCO_LOG_DIR": "$DISCO_DATA/logs",
    "DISCO_PID_DIR": "$DISCO_DATA",
    "DISCO_ROTATE_LOG": False,                     # unused: logs rotate by size (log_mb)
    "DISCO_USER": _user,
    "DISCO_JOB_OWNER": _owner,
    "DISCO_WWW_ROOT": "$DISCO_MASTER_HOME/mesh",   # unused: the status page is built in
    "DISCO_ERLANG": "erl",                         # unused
    "DISCO_HTTPD": "",                             # unused
    "DISCO_EVENTS": "",
    "DISCO_DEBUG": "off",
    "DISCO_FLAGS": "",
    "DISCO_GC_AFTER": _HUNDRED_YEARS_S,
    "DATA_GC_INTERVAL": 12,
    "DISCO_WORKER_MAX_MEM": "80%",
    "DISCO_ULIMIT": 16000000,                      # unused, as in Disco
    "DISCO_SETTINGS_FILE": _config_file,
    "DISCO_PROFILE": False,                        # unused
    "GRAPHITE_HOST": "localhost",                  # unused
    "SYSTEMD_ENABLED": False,                      # unused
    "DISCO_PROXY_ENABLED": "",
    "DISCO_PROXY_PORT": 8999,
    "DISCO_PROXY_PID": "$DISCO_DATA/proxy.pid",
    "DISCO_PROXY_CONFIG": "$DISCO_DATA/proxy.conf",
    "DISCO_PROXY": "",
    "DISCO_SCHEDULER": "fair",
    "DISCO_SCHEDULER_ALPHA": 0.001,
    "DISCO_TEST_DISCODB": "",
    "DISCO_TEST_HOST": "$DISCO_MASTER_HOST",
    "DISCO_TEST_PORT": 9444,
    "DISCO_TEST_PROFILE": "",
    "DISCO_TEST_PURGE": "purge",
    "DDFS_DATA": "$DISCO_DATA",
    "DDFS_PUT_PORT": lambda s: int(s["DISCO_PORT"]) + 1,   # the node's data port
    "DDFS_PUT_MAX": 3,
    "DDFS_GET_MAX": 3,
    "DDFS_READ_TOKEN": None,
    "DDFS_WRITE_TOKEN": None,
    "DDFS_TAG_MIN_REPLICAS": 1,
    "DDFS_TAG_REPLICAS": 3,
    "DDFS_BLOB_REPLICAS": 3,
    "DDFS_SPACE_AWARE": "",
    "DDFS_ABSOLUTE_SPACE": "",
    "DDFS_PARANOID_DELETE": "",
    "DDFS_GC_INITIAL_WAIT": "",
    "DDFS_GC_BALANCE_THRESHOLD": 0.1,
    "DISCO_LINES": "str",                          # this project's: default_map_reader's lines
}


class DiscoSettings(dict):
    """Disco's settings by Disco's names, read where this project keeps them.

    ``DiscoSettings(filename=None, **explicit)``; ``settings["DISCO_PORT"]``. Each value is,
    in order: given explicitly; for the names this project has a setting for (``DISCO_PORT``,
    ``DISCO_MASTER_HOST``, ``DISCO_DATA``, ``DISCO_MASTER``, ``DDFS_BLOB_REPLICAS``,
    ``DDFS_TAG_REPLICAS``) that setting from the environment or the config file
    (``filename``, else the usual places); for the others the environment variable; else
    Disco's default (``DISCO_DEFAULTS``; ``$NAME`` in a default is that setting's value).
    An environment value takes the type of the default (``"9444"`` -> 9444). ``env`` gives
    every setting as strings, for a child process's environment."""

    defaults = DISCO_DEFAULTS

    def __init__(self, filename: str | None = None, **explicit):
        super().__init__(explicit)
        self.filename = filename
        self._project: dict | None = None

    def __getitem__(self, key: str):
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        if key in PROJECT_KEYS:
            value = self._resolved()[PROJECT_KEYS[key]][0]
            if value is not None:
                return value
        elif os.environ.get(key) not in (None, ""):
            return _as_type_of(self.defaults.get(key), os.environ[key], key)
        if key not in self.defaults:
            raise KeyError(key)
        return self._default(key)

    def _resolved(self) -> dict:
        if self._project is None:
            self._project = resolve(config=self.filename)
        return self._project

    def _default(self, key: str):
        value = self.defaults[key]
        if callable(value):
            return value(self)
        if isinstance(value, str):
            return _REFERENCE.sub(lambda found: str(self[found[1]]), value)
        return value

    def get(self, key: str, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or key in self.defaults

    def keys(self):
        return list(dict.fromkeys([*self.defaults, *dict.keys(self)]))

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def items(self):
        return [(key, self[key]) for key in self.keys()]

    def values(self):
        return [self[key] for key in self.keys()]

    @property
    def env(self) -> dict:
        return {key: str(value) for key, value in self.items() if value is not None}

    def __repr__(self) -> str:
        return f"DiscoSettings({dict.__repr__(self)})"

    def __reduce__(self):
        # only what was given explicitly travels; the rest is read again where it arrives
        return (DiscoSettings, (self.filename,), None, None, iter(dict.items(self)))


def _as_type_of(default, text: str, key: str):
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes", "on")
    if isinstance(default, (int, float)):
        try:
            return type(default)(text)
        except ValueError:
            raise UsageError(f"{key}={text!r}: expected a "
                             f"{'whole number' if isinstance(default, int) else 'number'}") from None
    return text
