"""Disco's worker protocol: frame encoding and decoding, the Python client library over
in-memory streams, and how a task's inputs are handed to a program."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from disco.worker import protocol
from disco.worker.external_inputs import Inputs, InputsLost
from disco.worker.protocol import Frame, FrameDecoder, FrameError
from disco.worker.protocol_worker import Input, ProtocolFailure, Worker

pytestmark = pytest.mark.timeout(30)


def test_encode_is_type_length_json_newline():
    assert protocol.encode("WORKER", {"version": "1.1", "pid": 7}) == \
        b'WORKER 25 {"version":"1.1","pid":7}\n'
    assert protocol.encode("DONE") == b'DONE 2 ""\n'
    assert protocol.encode("MSG", "h\u00e9") == b'MSG 5 "h\xc3\xa9"\n'  # length in bytes


def test_decoder_reads_frames_split_anywhere_and_several_per_chunk():
    stream = protocol.encode("TASK") + protocol.encode("INPUT", ["exclude", [1]]) + \
        protocol.encode("MSG", "a b\nc")
    for cut in range(len(stream) + 1):
        d = FrameDecoder()
        frames = d.feed(stream[:cut]) + d.feed(stream[cut:])
        assert frames == [Frame("TASK", ""), Frame("INPUT", ["exclude", [1]]),
                          Frame("MSG", "a b\nc")], cut
        assert d.pending == b""


@pytest.mark.parametrize("data, words", [
    (b"hello world\n", "the type must be"),
    (b"Segmentation fault\n", "expected TYPE SP LEN SP JSON"),
    (b"Abort 2 \"\"\n", "the type must be"),
    (b"TOOLONGTYPENAME 2 \"\"\n", "expected TYPE SP LEN SP JSON"),
    (b"MSG x2 \"\"\n", "the length must be digits"),
    (b"MSG 3 \"\"\nX", "not followed by a newline"),
    (b"MSG 2 \"\"X", "not followed by a newline"),
    (b"MSG 3 {x}\n", "is not JSON"),
    (b"MSG 2 \xff\xfe\n", "is not JSON"),
    (b"MSG 999999999 ", "over the"),
    (b"MSG 12345678901", "length must be digits"),
])
def test_bad_frames_raise_naming_the_frame(data, words):
    d = FrameDecoder()
    with pytest.raises(FrameError, match=words) as err:
        d.feed(data)
    assert err.value.peer
    with pytest.raises(FrameError):  # a broken stream stays broken
        d.feed(protocol.encode("PING"))


def test_incomplete_frame_waits_for_more():
    d = FrameDecoder()
    assert d.feed(b"PING") == [] and d.feed(b" 2 \"") == [] and d.pending == b'PING 2 "'
    assert d.feed(b'"\n') == [Frame("PING", "")]


def test_encode_refuses_what_it_cannot_send():
    with pytest.raises(FrameError, match="bad message type") as err:
        protocol.encode("lower")
    assert not err.value.peer
    with pytest.raises(FrameError, match="not JSON"):
        protocol.encode("MSG", {1, 2})
    with pytest.raises(FrameError, match="bad message type"):
        Frame("", "")


def replies(*frames) -> io.BytesIO:
    return io.BytesIO(b"".join(protocol.encode(t, p) for t, p in frames))


def sent(out: io.BytesIO) -> list:
    return FrameDecoder().feed(out.getvalue())


def test_client_session_sends_each_message_and_reads_its_reply():
    out = io.BytesIO()
    inp = replies(("OK", "ok"), ("TASK", {"taskid": 3}), ("INPUT", ["done", [
        [1, "ok", 0, [[1, "file:///tmp/a%20b"]]]]]), ("RETRY", [[2, "file:///x"]]),
        ("FAIL", ""), ("OK", "ok"), ("OK", "ok"), ("OK", "pong"), ("OK", "ok"))
    w = Worker(out, inp)
    w.hello()
    assert w.task() == {"taskid": 3} and w.task() == {"taskid": 3}  # asked once
    [one] = w.inputs(exclude=[9])
    assert one == Input(1, "ok", 0, [[1, "file:///tmp/a%20b"]]) and one.paths() == ["/tmp/a b"]
    assert w.input_err(1, [1]) == [[2, "file:///x"]]
    assert w.input_err(1, [2]) is None
    w.msg("hi")
    w.output(0, "out.txt", 5)
    assert w.ping() == "pong"
    w.done()
    types = [(f.type, f.payload) for f in sent(out)]
    assert types[0][0] == "WORKER" and types[0][1]["version"] == "1.1"
    assert types[1:] == [("TASK", ""), ("INPUT", ["exclude", [9]]), ("INPUT_ERR", [1, [1]]),
                         ("INPUT_ERR", [1, [2]]), ("MSG", "hi"), ("OUTPUT", [0, "out.txt", 5]),
                         ("PING", ""), ("DONE", "")]


def test_client_refuses_an_unexpected_reply_and_a_closed_stream():
    w = Worker(io.BytesIO(), replies(("OK", "ok")))
    with pytest.raises(ProtocolFailure, match="TASK was answered OK"):
        w.task()
    with pytest.raises(ProtocolFailure, match="closed"):
        w.ping()


@pytest.mark.parametrize("exc, kind", [(OSError("disk"), "ERROR"), (KeyError("k"), "FATAL")])
def test_serve_reports_exceptions_as_error_or_fatal(exc, kind):
    out = io.BytesIO()

    def main(w):
        raise exc
    assert Worker(out, replies(("OK", "ok"), ("OK", "ok"))).serve(main) == 1
    last = sent(out)[-1]
    assert last.type == kind and type(exc).__name__ in last.payload


def test_serve_ends_with_done():
    out = io.BytesIO()
    assert Worker(out, replies(("OK", "ok"), ("OK", "ok"))).serve(lambda w: None) == 0
    assert [f.type for f in sent(out)] == ["WORKER", "DONE"]


# -- inputs as a program sees them --

def make_inputs(tmp_path: Path, inputs, labels=None) -> Inputs:
    task = {"inputs": inputs, **({"labels": labels} if labels is not None else {})}
    return Inputs(task, "127.0.0.1:1", tmp_path / "data", tmp_path / "task")


def test_inputs_raw_becomes_a_local_file_and_others_pass_through(tmp_path):
    local = tmp_path / "in.txt"
    local.write_text("x")
    ins = make_inputs(tmp_path, ["raw://hello", ["http://h/a", "raw://b"], str(local)], [0, 2, 1])
    flag, entries = ins.listing("")
    assert flag == "done" and [e[:3] for e in entries] == [[1, "ok", 0], [2, "ok", 2], [3, "ok", 1]]
    path = entries[0][3][0][1]
    assert path.startswith("file://") and Path(path[7:]).read_text() == "hello"
    assert entries[1][3] == [[1, "http://h/a"]]
    assert entries[2][3] == [[1, "file://" + str(local)]]
    assert [e[0] for e in ins.listing(["include", [2]])[1]] == [2]
    assert [e[0] for e in ins.listing(["exclude", [2]])[1]] == [1, 3]
    with pytest.raises(ValueError, match="INPUT payload must be"):
        ins.listing(["only", [1]])


def test_input_err_offers_the_next_replica_then_fail(tmp_path):
    ins = make_inputs(tmp_path, [["http://h/a", "raw://second"]])
    ins.listing("")
    rep, url = ins.retry([1, [1]])[0]
    assert rep == 2 and Path(url[7:]).read_text() == "second"
    assert ins.retry([1, [2]]) is None
    with pytest.raises(ValueError, match="input 5"):
        ins.retry([5, [1]])


def test_an_unreadable_disco_input_is_lost_with_its_url(tmp_path):
    url = "disco://127.0.0.1:1/vol0/jobs/j/map-0-0.drec"
    ins = make_inputs(tmp_path, [url])
    with pytest.raises(InputsLost, match="input 1 cannot be read") as err:
        ins.listing("")
    assert err.value.lost_url == url and err.value.retryable
