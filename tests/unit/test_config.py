"""Settings resolved in one place (disco/settings.py): flag > env > config file > default."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from disco import settings as st
from disco.cli import cli
from disco.error import UsageError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for s in st.SETTINGS:
        monkeypatch.delenv(s.env, raising=False)
    monkeypatch.delenv("DISCO_CONFIG", raising=False)
    monkeypatch.setattr(st, "USER_CONFIG", tmp_path / "no-user.toml")
    monkeypatch.setattr(st, "SYSTEM_CONFIG", tmp_path / "no-system.toml")


def write(tmp_path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_flag_beats_env_beats_file_beats_default(tmp_path, monkeypatch):
    path = write(tmp_path, "workers = 3\nmax_failures = 4\nddfs_gc_delay_s = 5\n")
    monkeypatch.setenv("DISCO_MAX_FAILURES", "6")
    got = st.resolve({"workers": 9}, str(path))
    assert got["workers"] == (9, "flag")
    assert got["max_failures"] == (6, "env DISCO_MAX_FAILURES")
    assert got["ddfs_gc_delay_s"] == (5.0, f"file {path}")
    assert got["ddfs_blob_replicas"] == (3, "default")


def test_node_settings_take_the_file(tmp_path):
    path = write(tmp_path, 'workers = 3\njoin = ["10.0.0.1:8989"]\nhttp_port = 0\n'
                           'ddfs_repair_mbps = 2\nport = 7000\n')
    s = st.node_settings(config=str(path))
    assert (s.workers, s.join, s.http_port, s.port) == (3, ("10.0.0.1:8989",), 0, 7000)
    assert s.repair_bytes_s == 2 << 20
    assert s.data_dir.name == "node-7000"


def test_the_config_file_is_found_by_env_then_user_then_system(tmp_path, monkeypatch):
    user = tmp_path / "user.toml"
    system = tmp_path / "system.toml"
    system.write_text("workers = 1\n")
    monkeypatch.setattr(st, "SYSTEM_CONFIG", system)
    monkeypatch.setattr(st, "USER_CONFIG", user)
    assert st.config_path() == system
    user.write_text("workers = 2\n")
    assert st.config_path() == user
    other = write(tmp_path, "workers = 5\n")
    monkeypatch.setenv("DISCO_CONFIG", str(other))
    assert st.config_path() == other and st.resolve()["workers"][0] == 5


@pytest.mark.parametrize("text,why", [
    ("bogus = 1\n", "unknown key 'bogus'"),
    ('workers = "many"\n', "workers = 'many': expected a whole number"),
    ("insecure = 3\n", "insecure = 3: expected true or false"),
    ("join = 5\n", "expected a list"),
    ("workers = [\n", "not valid TOML"),
])
def test_bad_files_are_one_line_naming_file_and_key(tmp_path, text, why):
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as info:
        st.resolve(config=str(path))
    assert why in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_an_explicit_config_must_exist(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        st.resolve(config=str(tmp_path / "nope.toml"))


def test_bad_env_values_are_refused(monkeypatch):
    monkeypatch.setenv("DISCO_WORKERS", "lots")
    with pytest.raises(UsageError, match="DISCO_WORKERS"):
        st.resolve()


def test_every_node_flag_and_ddfs_setting_has_a_key():
    keys = {s.key for s in st.SETTINGS}
    assert {"host", "port", "http_port", "data", "join", "workers", "name", "secret_file",
            "insecure", "max_failures", "ddfs_blob_replicas", "ddfs_tag_replicas",
            "ddfs_gc_delay_s"} <= keys
    assert all(s.env.startswith(("DISCO_", "DDFS_")) for s in st.SETTINGS)


def test_the_client_reads_master_from_the_file(tmp_path, monkeypatch):
    path = write(tmp_path, 'master = "10.0.0.9:8989"\n')
    monkeypatch.setenv("DISCO_CONFIG", str(path))
    assert st.client_master() == "10.0.0.9:8989"
    monkeypatch.setenv("DISCO_MASTER", "local")
    assert st.client_master() == "local"


def test_disco_config_show_prints_values_and_sources(tmp_path, monkeypatch):
    path = write(tmp_path, "workers = 3\n")
    monkeypatch.setenv("DISCO_PORT", "7000")
    out = CliRunner().invoke(cli, ["config", "show", "--config", str(path), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["workers"] == {"value": 3, "source": f"file {path}"}
    assert data["port"] == {"value": 7000, "source": "env DISCO_PORT"}
    out = CliRunner().invoke(cli, ["config", "show", "--config", str(path)])
    assert "7002 (port+2)" in out.output and f"file {path}" in out.output
    bad = write(tmp_path, "nope = 1\n")
    out = CliRunner().invoke(cli, ["config", "show", "--config", str(bad)])
    assert out.exit_code == 1 and "unknown key 'nope'" in out.output


def test_shell_completion_scripts_come_from_click():
    import os
    import subprocess
    import sys
    for module, var in (("disco.cli", "_DISCO_COMPLETE"), ("disco.ddfs_cli", "_DDFS_COMPLETE")):
        out = subprocess.run([sys.executable, "-c", f"from {module} import main; main()"],
                             env={**os.environ, var: "bash_source"}, capture_output=True,
                             text=True, timeout=60)
        assert "complete" in out.stdout and var in out.stdout, (module, out.stderr)
