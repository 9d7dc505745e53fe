"""Disco's binary job pack: the header checks, round trips, and the conversion to this
project's pack (pipelines from v2 and v1 jobdicts)."""
from __future__ import annotations

import io
import json
import struct
import zipfile

import msgpack
import pytest

from disco import discopack
from disco.discopack import JobPack, JobPackError

pytestmark = pytest.mark.timeout(30)


def home(**files) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in (files or {"worker": b"#!/bin/sh\n"}).items():
            z.writestr(name, data)
    return out.getvalue()


def v2(**extra) -> dict:
    return {"pipeline": [["map", "split"]], "inputs": [[0, 0, ["raw://a"]]], "worker": "worker",
            "prefix": "p", "owner": "me", **extra}


def raw_header(magic=0xD5C0, version=2, offsets=(128, 130, 132, 132)) -> bytes:
    return struct.pack("!HHIIII", magic, version, *offsets).ljust(128, b"\0")


def test_round_trip_keeps_every_part():
    pack = JobPack(2, v2(), {"A": "1"}, home(), b"\x00data")
    blob = pack.dumps()
    assert blob[:4] == b"\xd5\xc0\x00\x02" and len(blob) > 128
    assert struct.unpack_from("!I", blob, 4)[0] == 128
    assert JobPack.load(io.BytesIO(blob)) == pack
    assert JobPack.load(blob).jobdata == b"\x00data"


def test_header_is_disco_layout_big_endian_offsets():
    pack = JobPack(1, {"x": 1}, {}, b"HOME", b"DATA")
    blob = pack.dumps()
    magic, version, d, e, h, j = struct.unpack_from("!HHIIII", blob)
    assert (magic, version, d) == (0xD5C0, 1, 128)
    assert blob[d:e] == json.dumps({"x": 1}).encode() and blob[h:j] == b"HOME"
    assert blob[j:] == b"DATA" and blob[20:128] == b"\0" * 108


@pytest.mark.parametrize("blob, words", [
    (b"\xd5\xc0\x00\x02", "shorter than its 128-byte header"),
    (raw_header(magic=0xBEEF) + b"{}{}", "magic 0xbeef"),
    (raw_header(version=3) + b"{}{}", "version 3 is not supported"),
    (raw_header(offsets=(120, 130, 132, 132)) + b"{}{}", "jobdict offset is 120"),
    (raw_header(offsets=(128, 131, 130, 132)) + b"{}{}{}", "jobhome offset 130 is before jobenvs"),
    (raw_header(offsets=(128, 130, 132, 999)) + b"{}{}", "past the end"),
    (raw_header(offsets=(128, 130, 132, 132)) + b"{]{}", "jobdict is not JSON"),
    (raw_header(offsets=(128, 130, 132, 132)) + b"[]{}", "jobdict must be a JSON object"),
    (raw_header(offsets=(128, 130, 138, 138)) + b"{}" + b'{"a": 1}', "jobenvs must be"),
])
def test_bad_headers_are_refused_naming_what_is_wrong(blob, words):
    with pytest.raises(JobPackError, match=words.replace("(", r"\(")):
        JobPack.loads(blob)


def test_bad_version_is_refused_when_building_too():
    with pytest.raises(JobPackError, match="version 7"):
        JobPack(7, {})


def test_is_disco_pack_tells_disco_packs_from_msgpack_ones():
    assert discopack.is_disco_pack(JobPack(2, v2(), {}, home()).dumps())
    assert not discopack.is_disco_pack(msgpack.packb({"header": {}}))
    assert not discopack.is_disco_pack(b"\xd5\xc0\x00\x09" + b"\0" * 200)
    assert not discopack.is_disco_pack(b"") and not discopack.is_disco_pack("text")


def internal(jobdict, version=2, jobhome=None, jobenvs=None):
    blob, prefix = discopack.to_internal(JobPack(version, jobdict, jobenvs or {},
                                                 jobhome or home(), b"jd").dumps())
    return msgpack.unpackb(blob, raw=False), prefix


def test_to_internal_v2_pipeline_inputs_and_worker():
    jd = v2(pipeline=[["map", "split"], ["reduce", "group_label", True]],
            inputs=[[0, 10, ["raw://a", "raw://b"]], [3, 0, "raw://c"], [0, 0, ["raw://d"]]],
            save_results=True)
    pack, prefix = internal(jd, jobenvs={"E": "v"})
    h = pack["header"]
    assert prefix == "p" and h["prefix"] == "p" and h["owner"] == "me"
    assert h["pipeline"] == [["map", "split", False], ["reduce", "group_label", True]]
    assert h["inputs"] == [["raw://a", "raw://b"], "raw://c", "raw://d"]
    assert h["input_labels"] == [0, 3, 0]
    assert (h["has_map"], h["has_reduce"], h["partitions"], h["save_results"]) == (True, False, 1, True)
    assert h["worker"] == {"protocol": "disco", "path": "worker"}
    assert pack["code"] == b"" and pack["files"] == {}
    assert pack["disco"]["jobenvs"] == {"E": "v"} and pack["disco"]["jobdata"] == b"jd"
    assert zipfile.ZipFile(io.BytesIO(pack["disco"]["jobhome"])).namelist() == ["worker"]


@pytest.mark.parametrize("jobdict, pipeline", [
    ({"map?": True}, [["map", "split"], ["map_shuffle", "group_node"]]),
    ({"map?": True, "reduce?": True, "nr_reduces": 1},
     [["map", "split"], ["map_shuffle", "group_node"], ["reduce", "group_all"]]),
    ({"map?": True, "reduce?": True, "nr_reduces": 4},
     [["map", "split"], ["map_shuffle", "group_node"], ["reduce", "group_label"]]),
    ({"map?": True, "reduce?": True, "nr_reduces": 2, "reduce_shuffle?": True},
     [["map", "split"], ["map_shuffle", "group_node"], ["reduce", "group_label"],
      ["reduce_shuffle", "group_node"]]),
    ({"reduce?": True}, [["reduce", "group_all"]]),
    ({"reduce?": True, "nr_reduces": 3}, [["reduce", "group_label"]]),
])
def test_v1_jobdicts_become_disco_classic_pipelines(jobdict, pipeline):
    pack, _ = internal({"input": ["raw://a", ["raw://b", "raw://c"]], "worker": "worker",
                        "prefix": "old", **jobdict}, version=1)
    h = pack["header"]
    assert h["pipeline"] == [[name, grouping, False] for name, grouping in pipeline]
    assert h["inputs"] == ["raw://a", ["raw://b", "raw://c"]] and "input_labels" not in h


@pytest.mark.parametrize("jobdict, words", [
    (v2(pipeline=[]), "needs 'pipeline'"),
    (v2(pipeline=[["map", "shuffle_all"]]), "grouping 'shuffle_all' is not one of"),
    (v2(pipeline=[["map", "split"], ["map", "group_all"]]), "used twice"),
    (v2(pipeline=[["map"]]), "is not \\[name, grouping\\]"),
    (v2(inputs=[[0, 0, []]]), "has no URL"),
    (v2(inputs=[["x", 0, ["raw://a"]]]), "label of 0 or more"),
    (v2(inputs="raw://a"), "must be a list"),
    (v2(worker="/bin/sh"), "relative path"),
    (v2(worker="../x"), "relative path"),
    (v2(worker="missing"), "'missing' is not in the jobhome"),
    (v2(prefix="a b"), "letters, digits and _"),
])
def test_bad_jobdicts_are_refused(jobdict, words):
    with pytest.raises(JobPackError, match=words):
        internal(jobdict)


def test_v1_needs_map_or_reduce():
    with pytest.raises(JobPackError, match="'map\\?' or 'reduce\\?'"):
        internal({"input": [], "worker": "worker"}, version=1)


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", "a/../../b", ".disco/x", "C:/x"])
def test_jobhome_members_outside_the_home_are_refused(name):
    with pytest.raises(JobPackError, match="jobhome member"):
        internal(v2(), jobhome=home(**{"worker": b"x", name: b"y"}))


def test_jobhome_that_is_not_a_zip_is_refused():
    with pytest.raises(JobPackError, match="not a ZIP"):
        internal(v2(), jobhome=b"not a zip")
