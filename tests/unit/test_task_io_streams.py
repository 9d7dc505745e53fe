"""disco.worker.task_io: Disco's streams, bytes lines, decode errors and byte ranges."""
from __future__ import annotations

import gzip
import http.server
import io
import threading

import pytest
from hypothesis import given, settings, strategies as st

from disco.error import DataError, DecodeError, InputError, UsageError
from disco.worker import task_io
from disco.worker.task_io import (StreamCombiner, call_reader, default_map_reader,
                                  line_range_reader, line_reader, open_url, range_url, re_reader,
                                  split_range)


# -- call_reader --------------------------------------------------------------------------------

def test_call_reader_passes_params_only_to_four_argument_readers():
    assert call_reader(lambda fd, size, url, params: params, 1, 2, 3, "P") == "P"
    assert call_reader(lambda fd, size, url: (fd, size, url), 1, 2, 3, "P") == (1, 2, 3)
    assert call_reader(lambda *args: args, 1, 2, 3, "P") == (1, 2, 3, "P")
    assert call_reader(line_reader, io.BytesIO(b"a\n"), 2, "u", None).__next__() == "a\n"


# -- lines as str or bytes ----------------------------------------------------------------------

def test_bytes_lines():
    data = b"one\n\xff two\nthree"
    assert list(line_reader(io.BytesIO(data), None, "u", None, lines="bytes")) == \
        [b"one\n", b"\xff two\n", b"three"]
    assert list(line_reader(io.BytesIO(data), None, "u", None, lines=bytes)) == \
        [b"one\n", b"\xff two\n", b"three"]
    assert list(default_map_reader(io.BytesIO(data), None, "u", None, lines="bytes")) == \
        [b"one\n", b"\xff two\n", b"three"]
    gz = gzip.compress(data)
    assert list(task_io.gzip_line_reader(io.BytesIO(gz), None, "u", None, lines="bytes"))[1] \
        == b"\xff two\n"


def test_disco_lines_setting_makes_bytes_the_default(monkeypatch):
    monkeypatch.setenv("DISCO_LINES", "bytes")
    assert list(default_map_reader(io.BytesIO(b"a\nb"), None, "u", None)) == [b"a\n", b"b"]
    monkeypatch.setenv("DISCO_LINES", "str")
    assert list(default_map_reader(io.BytesIO(b"a\nb"), None, "u", None)) == ["a\n", "b"]
    monkeypatch.setenv("DISCO_LINES", "words")
    with pytest.raises(UsageError, match="lines="):
        list(line_reader(io.BytesIO(b"a"), None, "u", None))


def test_errors_replace_reads_bad_bytes():
    got = list(line_reader(io.BytesIO(b"ok\nb\xffd\n"), None, "u", None, errors="replace"))
    assert got == ["ok\n", "b\ufffdd\n"]


@pytest.mark.parametrize("offset", [0, 5, 8191, 8192, 8193, 20000])
def test_decode_error_names_url_offset_and_the_ways_out(offset):
    data = bytearray(b"abc\n" * 6000)
    data[offset] = 0xFF
    with pytest.raises(DecodeError) as caught:
        list(line_reader(io.BytesIO(bytes(data)), None, "http://h/in.txt", None))
    err = caught.value
    assert err.offset == offset and err.url == "http://h/in.txt" and not err.retryable
    text = str(err)
    assert f"byte {offset}" in text and "http://h/in.txt" in text
    assert "errors='replace'" in text and "Job.lines = bytes" in text and "DISCO_LINES=bytes" in text


def test_multibyte_character_across_reads_is_fine_and_a_cut_one_is_named():
    data = b"x" * 8191 + "é\n".encode() + b"y\n"
    assert list(line_reader(io.BytesIO(data), None, "u", None))[-1] == "y\n"
    with pytest.raises(DecodeError) as caught:
        list(line_reader(io.BytesIO(b"ab\n\xc3"), None, "u", None))
    assert caught.value.offset == 3


def test_decode_error_in_a_range_names_the_file_offset(tmp_path):
    path = tmp_path / "t"
    path.write_bytes(b"aaaa\nbb\xfeb\ncc\n")
    url = range_url(f"file://{path}", 3, 9)
    fd, _size, _ = open_url(url)
    with fd, pytest.raises(DecodeError) as caught:
        list(default_map_reader(fd, None, url, None))
    assert caught.value.offset == 7


# -- byte ranges --------------------------------------------------------------------------------

def test_split_range_and_range_url():
    assert split_range("file:///x#range=3-9") == ("file:///x", 3, 9)
    assert split_range("/x#range=3-9") == ("/x#range=3-9", None, None)
    assert split_range("http://h/x") == ("http://h/x", None, None)
    assert range_url("file:///x#range=1-2", 4, 8) == "file:///x#range=4-8"
    with pytest.raises(UsageError):
        range_url("file:///x", 5, 4)
    with pytest.raises(InputError):
        split_range("file:///x#range=9-3")


def _ranges(size: int, cuts) -> list[tuple[int, int]]:
    points = sorted({0, size, *(c % (size + 1) for c in cuts)})
    return list(zip(points, points[1:])) or [(0, 0)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"bc", b"\n", "é".encode()]), max_size=60),
       st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_ranges_of_a_file_give_every_line_exactly_once(parts, cuts):
    data = b"".join(parts)
    got = []
    for start, end in _ranges(len(data), cuts):
        got.extend(line_range_reader(io.BytesIO(data), start, end, "u", lines="bytes"))
    assert got == data.splitlines(keepends=True)


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="ab\né", max_size=80), st.lists(st.integers(0, 200), max_size=5))
def test_ranged_file_urls_through_the_opener(tmp_path_factory, text, cuts):
    path = tmp_path_factory.mktemp("r") / "in.txt"
    data = text.encode()
    path.write_bytes(data)
    got = []
    for start, end in _ranges(len(data), cuts):
        url = range_url(f"file://{path}", start, end)
        fd, size, real = open_url(url)
        with fd:
            got.extend(default_map_reader(fd, size, real, None))
    assert got == text.splitlines(keepends=True)


def test_line_range_reader_bounds():
    with pytest.raises(UsageError):
        list(line_range_reader(io.BytesIO(b""), 3, 1))
    assert list(line_range_reader(io.BytesIO(b"ab\ncd\n"), 0, 0)) == []
    assert list(line_range_reader(io.BytesIO(b"ab\ncd\n"), 0, 1)) == ["ab\n"]
    assert list(line_range_reader(io.BytesIO(b"ab\ncd\n"), 3, 4)) == ["cd\n"]
    assert list(line_range_reader(io.BytesIO(b"ab\ncd\n"), 4, 6)) == []


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.server.body
        wanted = self.headers.get("Range")
        if wanted and self.server.honour_range:
            start = int(wanted.split("=")[1].rstrip("-"))
            self.send_response(206)
            body = body[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def range_server(request, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    srv.daemon_threads = True
    srv.body = b"".join(f"line {i}\n".encode() for i in range(300))
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.mark.parametrize("honour", [True, False], ids=["206", "200"])
def test_http_ranges_give_every_line_once(range_server, honour):
    range_server.honour_range = honour
    url = f"http://127.0.0.1:{range_server.server_address[1]}/data"
    size = len(range_server.body)
    got = []
    for start in range(0, size, 777):
        ranged = range_url(url, start, min(size, start + 777))
        fd, _size, real = open_url(ranged)
        with fd:
            got.extend(default_map_reader(fd, None, real, None))
    assert got == range_server.body.decode().splitlines(keepends=True)


# -- other readers ------------------------------------------------------------------------------

def test_re_reader_bytes_and_text():
    data = b"<a>1</a><a>2</a>tail"
    got = list(re_reader(rb"<a>(.*?)</a>", io.BytesIO(data), len(data), "u", output_tail=True,
                         read_buffer_size=3))
    assert got == [(b"1",), (b"2",), [b"tail"]]
    text = "<a>é</a><a>ü</a>".encode()
    assert list(re_reader(r"<a>(.*?)</a>", io.BytesIO(text), None, "u", read_buffer_size=1)) \
        == [("é",), ("ü",)]


def test_re_reader_errors(capsys):
    with pytest.raises(DataError, match="truncated"):
        list(re_reader(rb"(x)", io.BytesIO(b"xx"), 10, "u"))
    assert list(re_reader(rb"(x)", io.BytesIO(b"xxy"), None, "in.txt")) == [(b"x",), (b"x",)]
    assert "in.txt" in capsys.readouterr().err
    with pytest.raises(UsageError, match="empty"):
        list(re_reader(rb"(x*)", io.BytesIO(b"y"), None, "u"))


def test_old_netstr_reader_errors():
    good = b"1 a 2 bc\n"
    assert list(task_io.old_netstr_reader(io.BytesIO(good), None, "u")) == [("a", "bc")]
    assert list(task_io.old_netstr_reader(io.BytesIO(good[1:]), len(good), "u", head=b"1")) \
        == [("a", "bc")]
    with pytest.raises(DataError, match="truncated"):
        list(task_io.old_netstr_reader(io.BytesIO(b"1 a 5 bc"), None, "u"))
    with pytest.raises(DataError, match="no value length at byte 0"):
        list(task_io.old_netstr_reader(io.BytesIO(b"x a"), None, "u"))


# -- streams ------------------------------------------------------------------------------------

def test_string_and_task_input_streams(tmp_path):
    fd, size, url = task_io.string_input_stream("é\n", None, "u", None)
    assert (fd.read(), size, url) == ("é\n".encode(), 2 + 1, "u")
    path = tmp_path / "f"
    path.write_bytes(b"x\ny\n")
    fd, size, url = task_io.task_input_stream(None, None, str(path), None)
    with fd:
        assert (fd.read(), size) == (b"x\ny\n", 4)


def test_stream_combiner_applies_the_chain(tmp_path):
    path = tmp_path / "f.gz"
    path.write_bytes(gzip.compress(b"one\ntwo\n"))
    with StreamCombiner(str(path), task_io.gzip_line_stream, None) as chain:
        assert list(chain) == ["one\n", "two\n"]
    seen = []

    def three_args(fd, size, url):
        seen.append(url)
        return fd, size, url + "#seen"

    chain = StreamCombiner("raw://a\nb", (task_io.task_input_stream, three_args, line_reader),
                           "P")
    assert list(chain) == ["a\n", "b"] and seen == ["raw://a\nb"]
    chain.close()
    with pytest.raises(UsageError):
        StreamCombiner("raw://x", (), None)


def test_output_chain_writes_an_atomic_record_file(tmp_path):
    path = tmp_path / "out.drec"
    stream = task_io.task_output_stream(None, 0, str(path), None)
    out = task_io.disco_output_stream(stream, 0, str(path), None)
    out.add("k", 1)
    out.close()
    assert not path.exists()
    stream.close()
    with StreamCombiner(str(path), task_io.chain_stream, None) as chain:
        assert list(chain) == [("k", 1)]


def test_plain_output_stream_is_read_back_by_chain_reader():
    buf = io.BytesIO()
    out = task_io.plain_output_stream(buf, 0, "u", None)
    out.add("k", "v v")
    assert isinstance(out, task_io.DiscoPlainOut)
    assert list(task_io.chain_reader(io.BytesIO(buf.getvalue()))) == [("k", "v v")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "bc", "\n", "é", "\r", "\x0b", "\u2028"]), max_size=60).map("".join),
       st.lists(st.integers(min_value=0, max_value=200), max_size=6),
       st.sampled_from(["str", "bytes"]), st.integers(min_value=1, max_value=12))
def test_ranges_read_in_small_blocks_give_every_line_once_split_on_lf_only(text, cuts, kind, block):
    import disco.worker.task_io as task_io_module
    data = text.encode()
    want = [piece + b"\n" for piece in data.split(b"\n")]  # lines end at "\n" only, kept
    want[-1] = want[-1][:-1]
    want = [line for line in want if line]
    if kind == "str":
        want = [line.decode() for line in want]
    saved = task_io_module.RANGE_BLOCK_BYTES
    task_io_module.RANGE_BLOCK_BYTES = block  # many blocks, ranges ending inside them
    try:
        got = []
        for start, end in _ranges(len(data), cuts):
            got.extend(line_range_reader(io.BytesIO(data), start, end, "u", lines=kind))
    finally:
        task_io_module.RANGE_BLOCK_BYTES = saved
    assert got == want


def test_an_undecodable_line_in_a_later_block_names_its_byte_offset(monkeypatch):
    import disco.worker.task_io as task_io_module
    monkeypatch.setattr(task_io_module, "RANGE_BLOCK_BYTES", 8)
    data = b"aaaa\nbbbb\ncc\xffc\ndddd\n"
    with pytest.raises(DecodeError, match=r"u: byte 12 is not valid UTF-8"):
        list(line_range_reader(io.BytesIO(data), 0, len(data), "u"))
    assert list(line_range_reader(io.BytesIO(data), 0, len(data), "u", errors="replace"))[2] == "cc\ufffdc\n"


@pytest.mark.parametrize("offset", [0, 5, 17, 18, 23])
def test_a_decode_error_names_its_offset_in_any_block(monkeypatch, offset):
    """Lines are read and decoded a block at a time: the offset counts every block before."""
    monkeypatch.setattr(task_io, "RANGE_BLOCK_BYTES", 6)  # a block or two of 4-byte lines
    data = bytearray(b"abc\n" * 6)
    data[offset] = 0xFF
    for url in ("u", f"file://x#range=0-{len(data)}"):
        with pytest.raises(DecodeError) as caught:
            list(line_reader(io.BytesIO(bytes(data)), None, url, None))
        assert caught.value.offset == offset, url
    assert list(line_reader(io.BytesIO(bytes(data)), None, "u", None, errors="replace")) == \
        [bytes(data[i:i + 4]).decode(errors="replace") for i in range(0, 24, 4)]
