"""The message schema (mesh/message.py): every type round-trips; anything malformed is a
ProtocolError, never another exception, whatever bytes arrive."""
from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from disco.error import ProtocolError
from mesh import message as m

SAMPLES = [
    m.Hello(1, "3.11.4"),
    m.Hello(2, "3.12.0", client="disco-cli"),
    m.SubmitJob(3, "WordCount", b"\x00\x01jobpack\xff", "3.11.4"),
    m.GetJobStatus(4, "Job@1"),
    m.WaitJob(5, "Job@1"),
    m.WaitJob(6, "Job@1", timeout_s=2.5),
    m.GetEvents(7, "Job@1", offset=12),
    m.ListJobs(8),
    m.RemakeResult(9, "J@1", "disco://127.0.0.1:1/vol0/jobs/J@1/reduce-0-0.drec", 5.0),
    m.KillJob(9, "Job@1"),
    m.PurgeJob(10, "Job@1"),
    m.GetJobDict(11, "Job@1"),
    m.GetNodeInfo(12),
    m.Blacklist(13, "h1:8989"),
    m.Whitelist(14, "h1:8989"),
    m.GetStatus(15),
    m.Reply(16),
    m.Reply(17, body={"jobs": [{"job": "j", "status": "active"}], "n": 1.5, "raw": b"\x00"}),
    m.Error(18, "no_such_job", "no job named 'x'"),
    m.WorkerReady("w1", "Job@1", 4242),
    m.RunTask({"id": "j:map:0", "inputs": ["raw://x"], "label": 0, "attempt": 0}),
    m.TaskDone("j:map:0", [{"label": 0, "url": "dir://h:1/x", "size": 3}]),
    m.TaskDone("j:map:0", [], stats={"records": 10}),
    m.TaskFailed("j:map:0", "ValueError: x"),
    m.TaskFailed("j:map:0", "ImportError", traceback="Traceback...", retryable=False),
    m.TaskMessage("j:map:0", "half way"),
    m.SkipTask("j:map:1"),
    m.TaskSkipped("j:map:1"),
    m.Shutdown(),
    m.Shutdown("idle"),
    m.Fetch(19, "vol0/blob/x", 0, 1 << 20),
    m.Chunk(19, 0, 1 << 20, False),
    m.Chunk(20, 1 << 20, 7, True),
    m.TaskFailed("j:reduce:0", "CommError: gone", lost="disco://h:1/vol0/x"),
    m.Gossip("h1:8989", "3.11", {"kind": "ping", "seq": 3, "updates": [
        ["h1:8989", "h1:8989", 1, "alive", {"slots": 2}, ""]]}),
    m.Assign(3, "h1:8989", {"id": "j:map:0", "job": "j", "inputs": ["raw://x"]}),
    m.Cancel(3, "h1:8989", "j:map:0"),
    m.Report(3, "h2:8989", "j", "j:map:0", "done", outputs=[{"label": 0, "url": "u", "size": 1}]),
    m.Report(3, "h2:8989", "j", "j:map:0", "failed", error="E", traceback="T", lost="u"),
    m.Report(3, "h2:8989", "j", "j:map:0", "message", msg="hi"),
    m.PutJobpack(3, "h1:8989", "ab" * 32, b"pack"),
    m.JobpackStored(3, "n2", "ab" * 32),
    m.JobEnded(3, "j", purge=True),
    m.Raft("append", "h1:8989", {"term": 3, "prev_index": 0, "prev_term": 0, "entries": [],
                                  "commit": 0}),
    m.TagGet(21, "data:logs"),
    m.TagList(22, prefix="data:"),
    m.TagWrite(23, "add", "data:logs", urls=[["disco://h:1/vol0/blob/ab/x$1"]], update=True,
               op="c1/7"),
    m.TagWrite(24, "setattr", "data:logs", attr="owner", value="ops"),
    m.TagWrite(25, "delattr", "data:logs", attr="owner"),
    m.BlobPlace(26, "logs.txt", replicas=2, exclude=["h:1"]),
    m.DdfsStatus(27),
    m.BlobReport(3, "h2:8989", True, added=[["x$1", 3, "ab", "vol0/blob/ab/x$1", 1.5]]),
    m.BlobReport(3, "h2:8989", False, removed=["x$1"]),
    m.CopyBlob(3, "h1:8989", "x$1", 3, "ab", ["disco://h2:8989/vol0/blob/ab/x$1"]),
    m.CopyDone(3, "h3:8989", "x$1", error="disk full"),
    m.DropBlob(3, "h1:8989", "x$1"),
    m.PutStart(28, "x$1", 3),
    m.PutData(28, 0),
    m.PutEnd(28, 3, "ab"),
    m.PutAck(28, 3),
    m.Stored(28, "vol0/blob/ab/x$1", 3, "ab"),
]


def raw(type_: str, /, **fields) -> bytes:
    return msgpack.packb({"v": m.VERSION, "t": type_, **fields}, use_bin_type=True)


def body_of(msg) -> dict:
    return {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}


def test_samples_cover_every_type():
    assert sorted({s.TYPE for s in SAMPLES}) == m.type_names()


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda s: type(s).__name__)
def test_round_trip(msg):
    frame = m.encode(msg)
    assert m.decode(frame) == msg
    assert type(m.decode(frame)) is type(msg)
    body = msgpack.unpackb(frame, raw=False)
    assert body["v"] == m.VERSION and body["t"] == msg.TYPE


def test_defaults_fill_omitted_optional_fields():
    assert m.decode(raw("hello", rid=1, python="3.11")) == m.Hello(1, "3.11", "client")
    assert m.decode(raw("task_done", task="t", outputs=[])).stats == {}
    assert m.decode(raw("wait_job", rid=1, job="j", timeout_s=3)) == m.WaitJob(1, "j", 3)


def problem(frame: bytes, **kw) -> str:
    with pytest.raises(ProtocolError) as info:
        m.decode(frame, **kw)
    return str(info.value)


@pytest.mark.parametrize("v", [0, 2, None, "1", [1], True, 1.0])
def test_wrong_version(v):
    frame = msgpack.packb({"v": v, "t": "hello", "rid": 1, "python": "3"})
    assert "version" in problem(frame)


def test_missing_version():
    assert "version" in problem(msgpack.packb({"t": "hello", "rid": 1, "python": "3"}))


@pytest.mark.parametrize("t", ["nope", "", None, 7, b"hello", ["hello"]])
def test_unknown_type(t):
    frame = msgpack.packb({"v": m.VERSION, "t": t, "rid": 1}, use_bin_type=True)
    assert "unknown message type" in problem(frame)


def test_missing_type():
    assert "unknown message type" in problem(msgpack.packb({"v": m.VERSION, "rid": 1}))


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda s: type(s).__name__)
def test_every_missing_required_field(msg):
    required = [f.name for f in dataclasses.fields(msg)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for name in required:
        body = {k: v for k, v in body_of(msg).items() if k != name}
        assert f"missing fields ['{name}']" in problem(raw(msg.TYPE, **body))


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda s: type(s).__name__)
def test_extra_field(msg):
    assert "unexpected fields ['zzz']" in problem(raw(msg.TYPE, **body_of(msg), zzz=1))


def test_extra_non_string_keys():
    frame = msgpack.packb({"v": m.VERSION, "t": "list_jobs", "rid": 1, 5: "x", "y": 2, b"b": 1},
                          use_bin_type=True)
    assert "unexpected fields" in problem(frame)


WRONG = {  # a value of the wrong type for each kind of field
    "str": [1, b"bytes", None, ["x"]],
    "int": ["1", 1.5, None, True, [1]],
    "float": ["1.5", None, True, [1.0]],
    "bool": [1, 0, "true", None],
    "bytes": ["text", 1, None],
    "dict": [[], "x", 1, None],
    "list": [{}, "x", 1, None],
    "str | None": [1, b"x", []],
}


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda s: type(s).__name__)
def test_mistyped_fields(msg):
    for f in dataclasses.fields(msg):
        for bad in WRONG.get(str(f.type), []):
            body = {**body_of(msg), f.name: bad}
            assert f"field '{f.name}'" in problem(raw(msg.TYPE, **body)), (f.name, bad)


@pytest.mark.parametrize("frame", [
    b"", b"\xc1", b"\x81", b"\x92\x01", b"\xd9\x05ab", b"\xff" * 10, b"\x81\xa1v\x01\xc1",
    msgpack.packb({"v": 1, "t": "hello"}) + b"\x00",  # trailing bytes
    b"\xa2\xff\xfe",  # a str that is not UTF-8
    b"\x91" * 5000 + b"\x90",  # nested too deep
])
def test_not_msgpack(frame):
    assert "msgpack" in problem(frame)


@pytest.mark.parametrize("value", [1, "hello", [1, 2], None, b"x", 1.5])
def test_not_a_map(value):
    assert "not a msgpack map" in problem(msgpack.packb(value, use_bin_type=True))


def test_oversized_frame():
    frame = m.encode(m.SubmitJob(1, "p", b"x" * 1000, "3.11"))
    assert "exceeds the limit of 100" in problem(frame, max_bytes=100)
    assert m.decode(frame, max_bytes=len(frame)) == m.SubmitJob(1, "p", b"x" * 1000, "3.11")
    assert "exceeds" in problem(b"\x00" * (m.MAX_FRAME_BYTES + 1))


def test_protocol_error_is_not_retryable():
    assert ProtocolError.retryable is False


# ---- arbitrary input --------------------------------------------------------------------------

leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                   st.floats(allow_nan=False), st.text(max_size=8), st.binary(max_size=8))
values = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=8)
field_names = st.sampled_from(sorted({f.name for s in SAMPLES for f in dataclasses.fields(s)}))
keys = st.one_of(field_names, st.text(max_size=5), st.integers(-5, 5), st.binary(max_size=3))


def decodes_or_rejects(frame: bytes) -> None:
    try:
        msg = m.decode(frame)
    except ProtocolError:
        return
    # accepted: a registered message whose fields have their declared types; encodes again
    assert type(msg).TYPE in m.type_names()
    assert m.decode(m.encode(msg)) == msg


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes(frame):
    decodes_or_rejects(frame)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(m.type_names() + ["nope"]), st.sampled_from([m.VERSION, m.VERSION, 0, None]),
       st.dictionaries(keys, values, max_size=6))
def test_arbitrary_maps(tag, version, fields):
    body = {"v": version, "t": tag, **fields}
    decodes_or_rejects(msgpack.packb(body, use_bin_type=True))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_valid_messages_with_one_field_replaced(msg, data):
    name = data.draw(st.sampled_from([f.name for f in dataclasses.fields(msg)]))
    body = {**body_of(msg), name: data.draw(values)}
    decodes_or_rejects(raw(msg.TYPE, **body))
