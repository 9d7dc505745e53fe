"""disco.settings.DiscoSettings and disco.worker.modutil."""
from __future__ import annotations

import pickle
import random

import pytest

from disco.error import ModUtilImportError, UsageError
from disco.settings import DEFAULT_PORT, DiscoSettings
from disco.worker import modutil


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("DISCO_PORT", "DISCO_MASTER", "DISCO_DATA", "DISCO_HOST", "DISCO_CONFIG",
                 "DISCO_TEST_PORT", "DISCO_EVENTS", "DDFS_BLOB_REPLICAS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no user config file


def test_defaults_follow_disco_table():
    s = DiscoSettings()
    assert s["DISCO_PORT"] == DEFAULT_PORT
    assert s["DISCO_MASTER"] == f"127.0.0.1:{DEFAULT_PORT}"
    assert s["DISCO_LOG_DIR"] == f"{s['DISCO_DATA']}/logs"
    assert s["DISCO_NAME"] == f"disco_{DEFAULT_PORT}"
    assert s["DDFS_PUT_PORT"] == DEFAULT_PORT + 1
    assert s["DISCO_TEST_PORT"] == 9444 and s["DISCO_TEST_PURGE"] == "purge"
    assert s["DISCO_EVENTS"] == "" and s["DISCO_LINES"] == "str"
    assert "DISCO_GC_AFTER" in s and "NOT_A_SETTING" not in s
    with pytest.raises(KeyError):
        s["NOT_A_SETTING"]
    assert s.get("NOT_A_SETTING", 5) == 5
    assert len(s) == len(s.keys()) >= 50


def test_environment_config_and_explicit_values(monkeypatch, tmp_path):
    monkeypatch.setenv("DISCO_PORT", "7000")
    monkeypatch.setenv("DISCO_TEST_PORT", "1234")
    assert DiscoSettings()["DISCO_PORT"] == 7000
    assert DiscoSettings()["DISCO_MASTER"] == "127.0.0.1:7000"
    assert DiscoSettings()["DISCO_TEST_PORT"] == 1234
    assert DiscoSettings(DISCO_PORT=5)["DISCO_PORT"] == 5
    config = tmp_path / "c.toml"
    config.write_text('master = "n1:9000"\nddfs_blob_replicas = 2\n')
    s = DiscoSettings(str(config))
    assert s["DISCO_MASTER"] == "n1:9000" and s["DDFS_BLOB_REPLICAS"] == 2
    monkeypatch.setenv("DISCO_TEST_PORT", "many")
    with pytest.raises(UsageError, match="DISCO_TEST_PORT"):
        DiscoSettings()["DISCO_TEST_PORT"]


def test_env_and_pickling_keep_explicit_values_only():
    s = DiscoSettings(DISCO_EVENTS="json")
    env = s.env
    assert env["DISCO_EVENTS"] == "json" and env["DISCO_PORT"] == str(DEFAULT_PORT)
    assert "DDFS_READ_TOKEN" not in env
    back = pickle.loads(pickle.dumps(s))
    assert dict.items(back) == dict.items(s) and back["DISCO_EVENTS"] == "json"


def _uses_modules(x):
    return random.random(), [pickle.dumps(i) for i in x]


def _uses_missing():
    return no_such_module_anywhere.thing  # noqa: F821


def test_parse_function_finds_dotted_globals_and_nested_code():
    assert sorted(modutil.parse_function(_uses_modules)) == ["pickle", "random"]
    assert modutil.parse_function(_uses_missing) == ["no_such_module_anywhere"]
    import functools
    assert modutil.parse_function(functools.partial(_uses_modules, [1])) == \
        modutil.parse_function(_uses_modules)


def test_find_modules_sends_local_modules_and_names_the_others(tmp_path, monkeypatch):
    (tmp_path / "localmod.py").write_text("import localdep\n\ndef f():\n    return localdep.X\n")
    (tmp_path / "localdep.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import importlib
    import os
    tmp_path = type(tmp_path)(os.path.realpath(tmp_path))

    def job_fn():
        return localmod.f(), random.random()  # noqa: F821 - a global set just below

    job_fn.__globals__["localmod"] = importlib.import_module("localmod")
    try:
        found = modutil.find_modules([job_fn])
        assert ("localmod", str(tmp_path / "localmod.py")) in found
        assert ("localdep", str(tmp_path / "localdep.py")) in found
        assert "random" in found
        assert sorted(modutil.find_modules([job_fn], send_modules=False)) == \
            ["localmod", "random"]
        assert ("localdep", str(tmp_path / "localdep.py")) not in \
            modutil.find_modules([job_fn], recurse=False)
        assert modutil.find_modules([job_fn], exclude=["random", "localmod"]) == []
    finally:
        del job_fn.__globals__["localmod"]


def test_find_modules_names_the_function_of_a_missing_module():
    with pytest.raises(ModUtilImportError, match="_uses_missing") as caught:
        modutil.find_modules([_uses_missing])
    assert isinstance(caught.value, ImportError)
