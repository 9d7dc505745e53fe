"""disco.worker.task_io: openers per URL scheme, alternatives, readers.

HTTP tests run a real http.server on 127.0.0.1 (ephemeral port) and contact nothing else.
"""
from __future__ import annotations

import gzip
import http.server
import io
import socket
import threading
import time

import pytest

from disco.error import InputError, UsageError
from disco.worker import task_io
from disco.worker.task_io import (chain_reader, default_map_reader, gzip_line_reader,
                                  line_reader, open_input, open_url, register_scheme)
from shuffle.recordfile import write_file

BODY = "first line\nsecond line é\nno newline at end".encode()
PAIRS = [("a", 1), (2, ["b"]), (b"c", {"d": 3.5})]


# -- a local HTTP server ------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.hits[self.path] = server.hits.get(self.path, 0) + 1
        count = server.hits[self.path]
        if self.path == "/data.txt":
            self._send(200, BODY)
        elif self.path == "/records":
            self._send(200, server.records)
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/data.txt")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/flaky" and count >= 2:
            self._send(200, BODY)
        elif self.path in ("/flaky", "/down"):
            self._send(503, b"busy")
        elif self.path == "/slow":
            if count == 1:
                time.sleep(0.4)
            self._send(200, BODY)
        else:
            self._send(404, b"no such thing")

    def _send(self, status: int, body: bytes):
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def sleeps(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(task_io, "_sleep", waits.append)
    return waits


@pytest.fixture
def server(request, tmp_path):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.hits = {}
    write_file(tmp_path / "r.drec", PAIRS)
    srv.records = (tmp_path / "r.drec").read_bytes()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()

    def stop():
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)
    request.addfinalizer(stop)
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    return srv


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read(opened) -> bytes:
    fd, _size, _url = opened
    with fd:
        return fd.read()


# -- files and raw ------------------------------------------------------------------------------

def test_bare_path_and_file_url(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(BODY)
    for url in (str(path), f"file://{path}"):
        fd, size, got = open_url(url)
        with fd:
            assert (fd.read(), size, got) == (BODY, len(BODY), url)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(InputError, match="nope.txt") as info:
        open_url(f"file://{missing}")
    assert str(missing) in str(info.value)
    with pytest.raises(InputError, match="nope.txt"):
        open_input(str(missing))


def test_raw_is_utf8_and_read_as_str_lines():
    fd, size, url = open_url("raw://héllo\nworld")
    assert size == len("héllo\nworld".encode())
    assert list(line_reader(fd, size, url, None)) == ["héllo\n", "world"]
    fd, size, url = open_url("raw://one line")
    assert list(default_map_reader(fd, size, url, None)) == ["one line"]


def test_unknown_scheme_lists_known_ones():
    with pytest.raises(InputError) as info:
        open_url("gopher://x/y")
    text = str(info.value)
    assert "gopher" in text and "raw://" in text and "file://" in text and "http://" in text


def test_register_scheme_adds_an_opener(monkeypatch):
    monkeypatch.setitem(task_io.SCHEMES, "mem", None)
    register_scheme("mem", lambda url: (io.BytesIO(b"x\n"), 2, url))
    assert _read(open_url("mem://anything")) == b"x\n"


# -- alternatives -------------------------------------------------------------------------------

def test_alternatives_first_good_one_wins(tmp_path):
    good = tmp_path / "good.txt"
    good.write_bytes(BODY)
    fd, size, url = open_input([str(tmp_path / "bad.txt"), f"file://{good}", "raw://unused"])
    with fd:
        assert url == f"file://{good}" and fd.read() == BODY


def test_alternatives_all_bad_names_every_url(tmp_path):
    urls = [str(tmp_path / "a.txt"), "nosuch://b", str(tmp_path / "c.txt")]
    with pytest.raises(InputError) as info:
        open_input(urls)
    for url in urls:
        assert url in str(info.value)


def test_empty_alternatives_is_a_usage_error():
    with pytest.raises(UsageError):
        open_input([])


# -- http ---------------------------------------------------------------------------------------

def test_http_200(server):
    fd, size, url = open_url(server.url + "/data.txt")
    with fd:
        assert (fd.read(), size) == (BODY, len(BODY))


def test_http_redirect_is_followed(server):
    assert _read(open_url(server.url + "/redirect")) == BODY
    assert server.hits == {"/redirect": 1, "/data.txt": 1}


def test_http_404_is_an_input_error_at_once(server, sleeps):
    url = server.url + "/missing"
    with pytest.raises(InputError) as info:
        open_url(url)
    assert url in str(info.value) and "404" in str(info.value)
    assert info.value.status == 404 and info.value.url == url
    assert server.hits["/missing"] == 1 and sleeps == []


def test_http_503_is_retried(server, sleeps):
    assert _read(open_url(server.url + "/flaky")) == BODY
    assert server.hits["/flaky"] == 2
    assert sleeps == [task_io.HTTP_BACKOFF_S]


def test_http_503_gives_up_after_the_attempts(server, sleeps):
    with pytest.raises(InputError) as info:
        open_url(server.url + "/down")
    assert info.value.status == 503 and "503" in str(info.value)
    assert server.hits["/down"] == task_io.HTTP_ATTEMPTS
    assert len(sleeps) == task_io.HTTP_ATTEMPTS - 1
    assert sleeps == sorted(sleeps)


def test_http_timeout_is_retried(server, sleeps, monkeypatch):
    monkeypatch.setattr(task_io, "HTTP_TIMEOUT_S", 0.1)
    assert _read(open_url(server.url + "/slow")) == BODY
    assert server.hits["/slow"] == 2


def test_connection_refused_is_retried_then_fails(sleeps):
    url = f"http://127.0.0.1:{_closed_port()}/x"
    with pytest.raises(InputError, match="127.0.0.1"):
        open_url(url)
    assert len(sleeps) == task_io.HTTP_ATTEMPTS - 1


def test_http_alternatives_skip_a_bad_first_url(server, sleeps):
    urls = [server.url + "/missing", f"http://127.0.0.1:{_closed_port()}/y",
            server.url + "/data.txt"]
    fd, _size, url = open_input(urls)
    with fd:
        assert url == urls[2] and fd.read() == BODY


def test_http_all_alternatives_bad(server, sleeps):
    urls = [server.url + "/missing", server.url + "/other"]
    with pytest.raises(InputError) as info:
        open_input(urls)
    assert all(url in str(info.value) for url in urls) and "404" in str(info.value)


def test_default_map_reader_over_http(server):
    fd, size, url = open_input(server.url + "/records")
    assert list(default_map_reader(fd, size, url, None)) == PAIRS
    fd, size, url = open_input(server.url + "/data.txt")
    assert list(default_map_reader(fd, size, url, None)) == BODY.decode().splitlines(True)


# -- readers ------------------------------------------------------------------------------------

def test_line_reader_keeps_newlines_and_only_splits_on_lf():
    data = "a\r\nb\rc\n\nlast".encode()
    assert list(line_reader(io.BytesIO(data), len(data), "x", None)) == \
        ["a\r\n", "b\rc\n", "\n", "last"]
    assert list(line_reader(io.BytesIO(b""), 0, "x", None)) == []


def test_chain_and_default_reader_on_a_record_file(tmp_path):
    path = tmp_path / "r.drec"
    write_file(path, PAIRS)
    fd, size, url = open_input(str(path))
    with fd:
        assert list(chain_reader(fd, size, url, None)) == PAIRS
    fd, size, url = open_input(str(path))
    with fd:
        assert list(default_map_reader(fd, size, url, None)) == PAIRS


class _Stream(io.RawIOBase):
    """A non-seekable stream handing out a few bytes per read, like a slow socket."""

    def __init__(self, data: bytes):
        self._data = data

    def readable(self):
        return True

    def readinto(self, buf):
        n = min(3, len(buf), len(self._data))
        buf[:n], self._data = self._data[:n], self._data[n:]
        return n


def test_default_reader_sniffs_non_seekable_streams(tmp_path):
    path = tmp_path / "r.drec"
    write_file(path, PAIRS)
    assert list(default_map_reader(_Stream(path.read_bytes()), None, "s", None)) == PAIRS
    assert list(default_map_reader(_Stream(b"DR\nx\n"), None, "s", None)) == ["DR\n", "x\n"]
    assert list(default_map_reader(_Stream(b"DR"), None, "s", None)) == ["DR"]


def test_gzip_line_reader():
    data = gzip.compress("α\nβ\n".encode())
    assert list(gzip_line_reader(io.BytesIO(data), len(data), "x.gz", None)) == ["α\n", "β\n"]
