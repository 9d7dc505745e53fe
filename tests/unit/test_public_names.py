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
    "disco.test": {"TestCase", "TestJob", "TestPipe", "TestServer", "TestLoader",
                   "TestRunner", "FailedReply", "InterruptTest", "SkipTest", "handler"},
}


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
