"""disco.compat: Disco's Python 2/3 names, Python 3 only."""
from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess

import pytest

from disco import compat


def test_text_and_bytes():
    assert compat.str_to_bytes("é") == b"\xc3\xa9" and compat.str_to_bytes(b"x") == b"x"
    assert compat.bytes_to_str(b"\xc3\xa9") == "é" and compat.bytes_to_str("x") == "x"
    with pytest.raises(UnicodeDecodeError):
        compat.bytes_to_str(b"\xff")
    assert compat.force_utf8(b"a\xffb") == "a\ufffdb" and compat.force_utf8("s") == "s"
    assert compat.force_ascii("héllo") == "h?llo"
    assert compat.bytes_of_int(65) == b"A"
    assert compat.int_of_byte(b"A"[0]) == 65 and compat.int_of_byte(b"A") == 65
    with pytest.raises(ValueError):
        compat.int_of_byte(b"AB")


def test_aliases():
    assert compat.basestring is str and compat.integer_types == (int,)
    assert compat.file is io.FileIO and compat.BytesIO is io.BytesIO
    assert compat.StringIO is io.StringIO
    assert compat.pickle_loads(compat.pickle_dumps({"a": 1})) == {"a": 1}
    assert compat.UnpicklingError is pickle.UnpicklingError
    buf = io.BytesIO()
    compat.pickle_dump([1], buf)
    buf.seek(0)
    assert compat.pickle_load(buf) == [1]
    assert list(compat.zip_longest([1], [2, 3])) == [(1, 2), (None, 3)]
    assert compat.urlencode({"a": "b c"}) == "a=b+c"
    assert compat.httplib.OK == 200 and compat.http_server.HTTPServer
    assert compat.socket_server.TCPServer


@pytest.mark.skipif(shutil.which("sort") is None, reason="needs Unix sort")
def test_sort_cmd_sorts_nul_records_by_key(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(b"b\xffone\x00a\xfftwo\x00c\xffthree\x00a\xffzero\x00")
    argv, shell = compat.sort_cmd(str(path), "1M")
    assert shell is False and all(isinstance(a, bytes) for a in argv)
    subprocess.run(argv, check=True, cwd=tmp_path, env={**os.environ, "LC_ALL": "C"},
                   timeout=30)
    records = path.read_bytes().split(b"\x00")[:-1]
    assert [r.split(b"\xff")[0] for r in records] == [b"a", b"a", b"b", b"c"]
