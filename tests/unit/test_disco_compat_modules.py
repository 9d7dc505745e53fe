"""Disco's modules that its own tests import: disco.json, disco.comm, disco.dPickle, disco.func,
disco.events, disco.task, JobPack's header helpers, and urlsplit/netloc in Disco's shapes."""
from __future__ import annotations

import functools
import http.server
import io
import os
import re
import struct
import threading
from datetime import datetime

import pytest

from disco import comm, dPickle, events, func, json, task, util
from disco.error import CommError, DataError
from disco.job import JobPack


def test_json_takes_bytes_both_ways():
    assert json.loads(b'["ok", "job@1"]') == ["ok", "job@1"]
    assert json.loads(bytearray(b"{}")) == {}
    assert json.dumps({b"k": [b"v", 1, "s"]}) == '{"k": ["v", 1, "s"]}'
    assert json.loads(json.dumps(b"\xff\xfe")) == "\xff\xfe"  # not UTF-8: one char per byte
    out = io.BytesIO()
    json.dump([1], out)
    assert json.load(io.BytesIO(out.getvalue())) == [1]


def _h(*args, **kwargs):
    return args, kwargs


def test_dpickle_pickles_functions_partials_and_patterns():
    def outer():
        def inner(x):
            return x * 2
        return inner
    assert dPickle.loads(dPickle.dumps(outer()))(21) == 42
    assert dPickle.loads(dPickle.dumps(lambda x: x + 1, -1))(1) == 2
    p = functools.partial(_h, 1, extra="d")
    assert dPickle.loads(dPickle.dumps(p))("a", b="b") == p("a", b="b")
    pattern = re.compile(r"pattern.*!")
    assert dPickle.loads(dPickle.dumps(pattern)) == pattern
    now = datetime.now()
    assert dPickle.loads(dPickle.dumps(now)) == now


def test_func_has_the_classic_functions_and_discos_old_names():
    from disco.worker.classic import func as classic
    for name in classic.__all__:
        assert getattr(func, name) is getattr(classic, name)
    assert func.map_input_stream is func.task_input_stream
    assert func.reduce_output_stream is func.task_output_stream
    buf = io.BytesIO()
    func.object_writer(buf, {"PI": 3.14}, datetime(2002, 12, 12), None)
    func.object_writer(buf, "k", None, None)
    size = buf.tell()
    buf.seek(0)
    assert list(func.object_reader(buf, size, "u")) == [({"PI": 3.14}, datetime(2002, 12, 12)),
                                                        ("k", None)]
    with pytest.raises(DataError, match="truncated"):
        list(func.object_reader(io.BytesIO(b"12 abc"), None, "u"))


def _records(pairs) -> bytes:
    from disco.fileutils import DiscoOutputStream
    buf = io.BytesIO()
    out = DiscoOutputStream(buf)
    for k, v in pairs:
        out.add(k, v)
    out.close()
    return buf.getvalue()


def test_classic_func_disco_input_stream_and_ignore_corrupt():
    from disco.worker.classic.func import disco_input_stream, string_input_stream
    pairs = [(f"k{i}", i) for i in range(500)]
    data = _records(pairs)
    assert list(disco_input_stream(io.BytesIO(data), len(data), "u")) == pairs
    bad = bytearray(data)
    bad[-20] ^= 0xFF
    with pytest.raises(DataError):
        list(disco_input_stream(io.BytesIO(bytes(bad)), len(bad), "u"))
    kept = list(disco_input_stream(io.BytesIO(bytes(bad)), len(bad), "u", ignore_corrupt=True))
    assert kept == pairs[:len(kept)]
    assert string_input_stream("ab", None, "u", None)[1] == 2


def test_events_round_trip_through_event_record(capsys):
    record = events.EventRecord(str(events.Event("message", tags=["mem", "cpu", "bad-"])))
    assert (record.type, record.tags, record.message) == ("EV", ["mem", "cpu"], "message")
    assert record.time <= datetime.now()
    record = events.EventRecord(str(events.Message("line\n $#!%")))
    assert (record.type, record.message) == ("MSG", "line\n $#!%")
    assert events.EventRecord(str(events.AnnouncePID(666))).message == "666"
    t = task.Task()
    record = events.EventRecord(str(events.OOBData("key", t)))
    assert record.message == "key " + os.path.join(t.home, "oob", "key")
    assert "**<MSG>" in capsys.readouterr().err  # creating an event logs it, as Disco's did
    with pytest.raises(TypeError):
        events.EventRecord("not an event")


def test_task_defaults_and_jobdata():
    t = task.Task()
    assert t.home == os.getcwd() and t.taskid == -1 and t.host == ""
    assert dPickle.loads(task.jobdata(1, "a")) == (1, "a")


def test_jobpack_header_and_discos_four_argument_form():
    size = JobPack.HEADER_SIZE
    assert size == 128
    head = JobPack.header([size, size + 1, size + 2, size + 3], magic=0)
    assert len(head) == size and struct.unpack("!IIIII", head[:20]) == (0, 128, 129, 130, 131)
    assert JobPack.header([size] * 4)[:4] == b"\xd5\xc0\x00\x01"
    pack = JobPack({"prefix": "P"}, {}, "", "data")
    assert (pack.version, pack.jobdict, pack.jobhome, pack.jobdata) == (1, {"prefix": "P"},
                                                                        b"", b"data")
    blob = pack.dumps()
    assert blob[:size] == JobPack.header([size, size + 15, size + 17, size + 17])
    assert JobPack.loads(blob) == pack


def test_urlsplit_in_discos_shapes():
    port = "8989"
    assert util.urlsplit("http://host/path") == ("http", ("host", ""), "path")
    assert util.urlsplit("http://host:port/path") == ("http", ("host", "port"), "path")
    assert util.urlsplit("disco://master/long/path", disco_port=port) == \
        ("http", ("master", port), "long/path")
    assert util.urlsplit("disco://localhost/ddfs/path", localhost="localhost",
                         ddfs_data="/dd") == ("file", ("", ""), "/dd/path")
    assert util.urlsplit("disco://localhost/data/path", localhost="localhost",
                         disco_data="/da") == ("file", ("", ""), "/da/path")
    assert util.urlsplit("tag://tag", "") == ("tag", ("", ""), "tag")
    assert util.urlsplit("tag://host:port/tag", "") == ("tag", ("host", "port"), "tag")
    # this project's node URLs (host:port) keep their scheme and their string form
    scheme, loc, path = util.urlsplit("disco://n1:4000/vol0/x")
    assert (scheme, loc, path) == ("disco", ("n1", "4000"), "vol0/x") and loc == "n1:4000"
    assert str(loc) == f"{loc}" == "n1:4000" and not util.netloc.parse("")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path == "/missing":
            self.send_error(404, "no such thing")
            return
        body = f"{self.path} {self.headers.get('Range')} {self.headers.get('Authorization')}"
        self._reply(body.encode())

    def do_PUT(self):  # noqa: N802
        self._reply(b"got " + self.rfile.read(int(self.headers["Content-Length"])))

    def _reply(self, body: bytes):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def test_comm_over_http(server):
    assert comm.download(f"{server}/a", offset=(2, 5), token="t") == \
        b"/a bytes=2-5 Basic dG9rZW46dA=="
    assert comm.upload([f"{server}/x", f"{server}/y"], io.BytesIO(b"blob")) == [b"got blob"] * 2
    fd = comm.open_remote(f"{server}/b")
    assert fd.read() == b"/b None None" and len(fd) == 12
    with pytest.raises(comm.HTTPError) as err:
        comm.download(f"{server}/missing")
    assert err.value.code == 404 and isinstance(err.value, CommError)
    with pytest.raises(comm.CommException):
        comm.download("http://127.0.0.1:9/refused")


def test_comm_over_local_schemes(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    assert comm.download(str(path)) == b"0123456789"
    assert comm.download(f"file://{path}", offset=(2, 4)) == b"234"
    fd = comm.open_url(str(path))
    assert len(fd) == 10 and fd.url == f"file://{path}" and list(fd) == [b"0123456789"]
    assert comm.download("raw://hello") == b"hello"
