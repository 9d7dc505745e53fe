"""The exception tree and its wire codes (common/error.py): codes are stable names, every error
survives the trip through ``Error{code, msg}``, and Disco's old names are the same classes."""
from __future__ import annotations

import pytest

import disco.error
from common import error as e
from mesh import message as m

WIRE = {  # the codes nodes send today: never rename one
    "protocol", "internal", "NotMaster", "UsageError", "DataNotFound", "JobError",
    "ProtocolError", "DataError", "InputError", "RecordFormatError", "CommError", "DiscoError",
    "Unauthorized", "JobNotFound"}

SENT = [
    e.RemoteProtocolError("frame is not a msgpack map"),
    e.ProtocolError("job pack is malformed"),
    e.NotMaster("127.0.0.1:8990"),
    e.NotMaster(""),
    e.UsageError("no such flag"),
    e.JobNotFound("no job named 'x' (see `disco jobs`)"),
    e.DataNotFound("vol0/x does not exist on n1"),
    e.JobError("Job@1", "boom", task="Job@1:map:0", node="n1", traceback="Traceback..."),
    e.InputError("raw://x: gone"),
    e.RecordFormatError("bad frame checksum"),
    e.DataError("corrupt"),
    e.CommError("no answer"),
    e.Unauthorized("tag 't': this write needs the tag's write token"),
    e.DiscoError("plain"),
]


def test_codes_are_the_stable_wire_names():
    assert set(e.CODES) == WIRE
    assert all(issubclass(cls, e.DiscoError) for cls in e.CODES.values())


@pytest.mark.parametrize("exc", SENT, ids=lambda x: type(x).__name__)
def test_every_error_survives_the_wire(exc):
    sent = m.decode(m.encode(m.Error(7, e.code_of(exc), e.message_of(exc))))
    got = e.error_for(sent.code, sent.msg)
    assert type(got) is type(exc) and str(got) == str(exc)
    assert got.retryable == exc.retryable


def test_a_missing_job_is_a_usage_error_and_a_lookup_error():
    exc = e.error_for(e.code_of(e.JobNotFound("no job named 'x'")), "no job named 'x'")
    assert isinstance(exc, e.UsageError) and isinstance(exc, LookupError)
    assert disco.error.JobNotFound is e.JobNotFound


def test_codes_say_who_broke_the_protocol():
    assert e.code_of(e.RemoteProtocolError("x")) == "protocol"
    assert e.code_of(e.LocalProtocolError("x")) == "internal"  # our bug, not the peer's
    assert e.code_of(ValueError("x")) == "internal"
    assert e.message_of(ValueError("x")) == "ValueError: x"
    assert type(e.error_for("internal", "x")) is e.DiscoError
    assert type(e.error_for("no_such_code", "x")) is e.DiscoError


def test_not_master_carries_the_address():
    exc = e.error_for("NotMaster", "127.0.0.1:8990")
    assert isinstance(exc, e.CommError) and exc.master == "127.0.0.1:8990"
    assert exc.args == ("127.0.0.1:8990",) and "127.0.0.1:8990" in str(exc)
    assert e.error_for("NotMaster", "").master == ""


def test_data_not_found_is_a_data_error():
    assert issubclass(e.DataNotFound, e.DataError) and e.DataNotFound.retryable


def test_a_job_error_without_its_usual_text_still_names_the_cause():
    assert "it broke" in str(e.error_for("JobError", "it broke"))


def test_encode_refuses_what_decode_would():
    with pytest.raises(e.LocalProtocolError, match="field 'rid'"):
        m.encode(m.Hello(rid="1", python="3.11"))
    with pytest.raises(e.LocalProtocolError, match="field 'eof'"):
        m.encode(m.Chunk(1, 0, 1, eof=1))
    with pytest.raises(e.LocalProtocolError, match="cannot be packed"):
        m.encode(m.Reply(1, body={1, 2}))
    with pytest.raises(e.LocalProtocolError, match="not a message"):
        m.encode(object())
    with pytest.raises(e.RemoteProtocolError):
        m.decode(b"\xc1")


@pytest.mark.parametrize("name", disco.error.__all__)
def test_disco_error_names_are_the_common_classes(name):
    assert getattr(disco.error, name) is getattr(e, name)
