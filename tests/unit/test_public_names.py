"""Disco's public names, pinned module by module (DISCO-REFERENCE sections 1.3, 1.5, 6, 7).

Each module must export (``__all__``) at least the names Disco 0.5.4 had there, and every
name it exports must exist."""
from __future__ import annotations

import importlib

import pytest

DISCO_NAMES = {
    "disco.util": {
        "kvgroup", "chainify", "flatten", "iterify", "listify", "ilen", "kvify", "iskv",
        "partition", "reify", "shuffled", "hexhash", "format_size", "urlsplit", "urlresolve",
        "urljoin", "schemesplit", "urltoken", "localize", "proxy_url", "netloc", "jobname",
        "parse_dir", "read_index", "inputlist", "inputexpand", "deref", "disk_sort", "dsorted",
        "save_oob", "load_oob", "external"},
    "disco.worker.task_io": {
        "task_input_stream", "disco_input_stream", "chain_reader", "task_output_stream",
        "disco_output_stream", "plain_output_stream", "gzip_reader", "gzip_line_reader",
        "re_reader", "old_netstr_reader", "string_input_stream", "default_stream",
        "chain_stream", "gzip_stream", "gzip_line_stream", "StreamCombiner", "call_reader",
        "line_reader", "default_map_reader", "line_range_reader"},
    "disco.fileutils": {
        "Chunker", "DiscoOutputStream", "DiscoOutputStream_v0", "DiscoOutputStream_v1",
        "DiscoOutput", "DiscoZipFile", "NonBlockingInput", "AtomicFile", "Wait", "sync",
        "ensure_path", "ensure_free_space", "files", "MB", "MIN_DISK_SPACE",
        "MAX_RECORD_SIZE", "HUNK_SIZE", "CHUNK_SIZE"},
    "disco.compat": {
        "basestring", "bytes_of_int", "int_of_byte", "str_to_bytes", "bytes_to_str",
        "force_utf8", "force_ascii", "StringIO", "BytesIO", "file", "pickle_loads",
        "pickle_dumps", "pickle_load", "pickle_dump", "UnpicklingError", "socket_server",
        "urlencode", "httplib", "http_server", "zip_longest", "sort_cmd", "integer_types"},
    "disco.worker.modutil": {"find_modules", "locate_modules", "parse_function",
                             "ModUtilImportError"},
    "disco.worker.classic.modutil": {"find_modules", "locate_modules", "parse_function",
                                     "ModUtilImportError"},
    "disco.error": {"DiscoError", "JobError", "DataError", "CommError", "ModUtilImportError",
                    "DecodeError"},
    "disco.settings": {"DiscoSettings"},
    "disco.test": {"DiscoJobTestFixture", "DiscoTestCase", "TestCase", "TestJob", "TestPipe",
                   "TestServer", "TestLoader", "TestRunner", "FailedReply", "InterruptTest",
                   "SkipTest", "handler"},
    "disco.core": {"Disco", "Job", "JobError", "Params", "result_iterator", "client_version",
                   "new_job", "classic_iterator"},
    "disco.job": {"Job", "JobChain", "JobPack", "SimpleJob", "JOBPACK_VERSION1",
                  "JOBPACK_VERSION2"},
    "disco.worker.pipeline.worker": {"Stage", "Worker", "TaskInfo", "DiscoTask", "input_hook"},
    "disco.worker.classic.func": {"nop_map", "nop_reduce", "sum_combiner", "sum_reduce",
                                  "string_input_stream", "task_input_stream",
                                  "task_output_stream", "disco_output_stream",
                                  "chain_reader", "gzip_reader", "gzip_line_reader",
                                  "default_partition", "disco_input_stream"},
    "disco.worker.simple": {"Worker"},
    "disco.json": {"dumps", "loads", "dump", "load"},
    "disco.comm": {"download", "upload", "open_url", "open_remote", "open_local", "request",
                   "range_header", "auth_header", "CommException", "HTTPError"},
    "disco.dPickle": {"dumps", "loads", "dump", "load"},
    "disco.func": {"nop_map", "nop_reduce", "sum_combiner", "sum_reduce", "chain_reader",
                   "map_input_stream", "map_output_stream", "reduce_input_stream",
                   "reduce_output_stream", "disco_output_stream", "string_input_stream",
                   "object_reader", "object_writer", "default_partition", "re_reader"},
    "disco.events": {"Event", "Message", "AnnouncePID", "DataUnavailable", "OutputURL",
                     "OOBData", "EventRecord", "TaskFailed", "WorkerDone", "Signal"},
    "disco.task": {"Task", "jobdata"},
    "disco.ddfs": {"DDFS", "canonizetag", "istag", "tagname", "relativizetag"},
    "disco.worker.classic.worker": {"Worker", "Params", "get", "put", "this_name",
                                    "this_master", "this_host", "this_partition",
                                    "this_inputs"},
    "disco.worker": {"Params"},
}

# Disco's methods, by class (DISCO-REFERENCE sections 1.1, 1.2, 1.4)
DISCO_METHODS = {
    ("disco.core", "Disco"): {
        "submit", "config", "master_version", "ddfs", "nodeinfo", "joblist", "blacklist",
        "whitelist", "kill", "purge", "clean", "jobpack", "events", "rawevents",
        "stageresults", "results", "jobinfo", "wait", "oob_get", "oob_list", "profile_stats",
        "new_job", "result_iterator", "mapresults"},
    ("disco.core", "Job"): {
        "run", "clean", "events", "kill", "jobinfo", "jobpack", "oob_get", "oob_list",
        "profile_stats", "purge", "results", "mapresults", "wait", "stageresults"},
    ("disco.job", "JobChain"): {"wait", "purge"},
    ("disco.job", "JobPack"): {"dumps", "load", "header", "HEADER_SIZE"},
    ("disco.ddfs", "DDFS"): {
        "push", "chunk", "tag", "put", "get", "urls", "delete", "exists", "list", "blobs",
        "walk", "findtags", "pull", "setattr", "getattr", "delattr", "attrs"},
}


@pytest.mark.parametrize("where", sorted(DISCO_METHODS))
def test_classes_have_discos_methods(where):
    module, name = where
    cls = getattr(importlib.import_module(module), name)
    missing = {m for m in DISCO_METHODS[where] if not hasattr(cls, m)}
    assert not missing, f"{module}.{name} lacks Disco's {sorted(missing)}"


@pytest.mark.parametrize("module", sorted(DISCO_NAMES))
def test_module_exports_disco_names(module):
    mod = importlib.import_module(module)
    missing = DISCO_NAMES[module] - set(mod.__all__)
    assert not missing, f"{module} lacks Disco's {sorted(missing)}"


@pytest.mark.parametrize("module", sorted(DISCO_NAMES))
def test_every_exported_name_exists(module):
    mod = importlib.import_module(module)
    assert [n for n in mod.__all__ if not hasattr(mod, n)] == []
    assert len(set(mod.__all__)) == len(mod.__all__)


def test_aliases_are_the_same_objects():
    from disco.worker import task_io
    from disco.worker import modutil
    from disco.worker.classic import modutil as classic
    import disco.error
    import common.error
    assert task_io.disco_input_stream is task_io.chain_reader
    assert task_io.chain_stream == (task_io.task_input_stream, task_io.chain_reader)
    assert task_io.default_stream == (task_io.task_input_stream,)
    assert task_io.gzip_stream == (task_io.task_input_stream, task_io.gzip_reader)
    assert task_io.gzip_line_stream == (task_io.task_input_stream, task_io.gzip_line_reader)
    assert classic.find_modules is modutil.find_modules
    assert modutil.ModUtilImportError is disco.error.ModUtilImportError \
        is common.error.ModUtilImportError


def test_disco_error_tree_keeps_disco_relations():
    from disco.error import (CommError, DataError, DecodeError, DiscoError, InputError,
                             JobError, ModUtilImportError, UsageError)
    assert all(issubclass(c, DiscoError) for c in (CommError, DataError, JobError))
    assert issubclass(DecodeError, InputError) and DecodeError.retryable is False
    assert issubclass(ModUtilImportError, ImportError) and issubclass(ModUtilImportError,
                                                                      UsageError)


def test_util_external_defers_to_the_classic_external_module(monkeypatch):
    import sys
    import types
    from disco import util
    fake = types.ModuleType("disco.worker.classic.external")
    fake.package = lambda files: ("packaged", tuple(files))
    monkeypatch.setitem(sys.modules, "disco.worker.classic.external", fake)
    import disco.worker.classic as classic
    monkeypatch.setattr(classic, "external", fake, raising=False)
    assert util.external(["a", "b"]) == ("packaged", ("a", "b"))


def test_shuffle_partition_exports_range_partition():
    from shuffle import partition
    assert {"default_partition", "key_bytes", "partition_pairs", "range_partition"} \
        <= set(partition.__all__)
    assert all(hasattr(partition, n) for n in partition.__all__)
