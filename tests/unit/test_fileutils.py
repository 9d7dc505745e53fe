"""disco.fileutils: Chunker, the output streams, AtomicFile, DiscoZipFile."""
from __future__ import annotations

import io
import os
import zipfile

import pytest

from disco import fileutils
from disco.fileutils import (AtomicFile, Chunker, DiscoOutput, DiscoOutputStream,
                             DiscoOutputStream_v0, DiscoOutputStream_v1, DiscoZipFile)
from disco.worker.task_io import chain_reader, old_netstr_reader
from shuffle.chunk import RecordTooLarge
from shuffle.record import iter_records


def test_output_stream_writes_the_record_format():
    buf = io.BytesIO()
    out = DiscoOutputStream(buf)
    assert isinstance(out, DiscoOutputStream_v1)
    out.add("a", 1)
    out.add(b"b", [2])
    out.append("a record that is no pair")
    out.close()
    assert out.size == len(buf.getvalue()) > 8
    assert list(chain_reader(io.BytesIO(buf.getvalue()))) == \
        [("a", 1), (b"b", [2]), "a record that is no pair"]


def test_uncompressed_and_record_limit():
    buf = io.BytesIO()
    out = DiscoOutputStream(buf, compression_level=0, max_record_size=100)
    out.add("k", "v" * 10)
    with pytest.raises(ValueError, match="max_record_size"):
        out.add("k", "v" * 500)
    out.close()
    assert list(iter_records(io.BytesIO(buf.getvalue()))) == [("k", "v" * 10)]


def test_version_0_is_disco_text_read_back_by_old_netstr_reader():
    buf = io.BytesIO()
    out = DiscoOutputStream(buf, version=0)
    assert isinstance(out, DiscoOutputStream_v0)
    out.add("key", "välue")
    out.add(1, "two words\nand a line")
    out.close()
    data = buf.getvalue()
    assert data.startswith(b"3 key 6 v\xc3\xa4lue\n")
    assert list(old_netstr_reader(io.BytesIO(data), len(data), "x")) == \
        [("key", "välue"), ("1", "two words\nand a line")]
    assert list(chain_reader(io.BytesIO(data), len(data), "x")) == \
        [("key", "välue"), ("1", "two words\nand a line")]


def test_chunker_chunks_are_record_files_of_bounded_size():
    lines = [f"line {i} {'x' * (i % 50)}\n" for i in range(5000)]
    chunks = list(Chunker(chunk_size=16 << 10).chunks(lines))
    assert len(chunks) > 3
    assert all(len(c) <= 16 << 10 for c in chunks)
    assert [r for c in chunks for r in chain_reader(io.BytesIO(c))] == lines


def test_chunker_record_limit():
    with pytest.raises(RecordTooLarge, match="record 1"):
        list(Chunker(chunk_size=1 << 20, max_record_size=100).chunks(["ok", "x" * 1000]))
    with pytest.raises(Exception, match="too small"):
        Chunker(chunk_size=10)


def test_atomic_file_appears_only_on_close(tmp_path):
    path = tmp_path / "sub" / "out"
    f = AtomicFile(str(path))
    f.write(b"half")
    assert not path.exists() and os.path.exists(f"{path}.partial")
    f.close()
    assert path.read_bytes() == b"half" and not os.path.exists(f"{path}.partial")
    f.close()  # a second close does nothing


def test_atomic_file_context_manager_drops_output_on_error(tmp_path):
    path = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with AtomicFile(f"file://{path}") as f:
            f.write(b"partial")
            raise RuntimeError("task failed")
    assert os.listdir(tmp_path) == []
    with AtomicFile(path) as f:
        f.write(b"whole")
    assert path.read_bytes() == b"whole"


def test_disco_output_renames_into_place(tmp_path):
    path = tmp_path / "r.drec"
    out = DiscoOutput(str(path))
    out.add("k", "v")
    assert not path.exists()
    out.close()
    with open(path, "rb") as f:
        assert list(chain_reader(f)) == [("k", "v")]


def test_ensure_free_space(monkeypatch, tmp_path):
    fileutils.ensure_free_space(str(tmp_path))
    monkeypatch.setattr(fileutils, "MIN_DISK_SPACE", 1 << 62)
    with pytest.raises(fileutils.DataError, match="disk space"):
        fileutils.ensure_free_space(str(tmp_path))


def test_files_and_zipfile(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.py").write_text("x = 1\n")
    (tmp_path / "a" / "y.pyc").write_bytes(b"\0")
    (tmp_path / "b.txt").write_text("b")
    assert list(fileutils.files(str(tmp_path))) == [str(tmp_path / "a" / "x.py"),
                                                    str(tmp_path / "a" / "y.pyc"),
                                                    str(tmp_path / "b.txt")]
    z = DiscoZipFile()
    z.writepath(str(tmp_path / "a"), exclude=(".pyc",))
    z.writemodule("disco.compat", "compat.py")
    data = z.dumps()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert names == [str(tmp_path / "a" / "x.py").lstrip("/"), "compat.py"]
    out = io.BytesIO()
    z.dump(out)
    assert out.getvalue() == data


def test_non_blocking_input_reads_and_times_out():
    r, w = os.pipe()
    with os.fdopen(r, "rb", buffering=0) as reader, os.fdopen(w, "wb", buffering=0) as writer:
        nb = fileutils.NonBlockingInput(reader, timeout=0.2)
        writer.write(b"hello\nrest")
        assert nb.t_read(3)[1] == b"hel"
        assert nb.t_read_until(b"\n")[1] == b"lo\n"
        assert nb.t_read(4)[1] == b"rest"
        with pytest.raises(OSError, match="timed out"):
            nb.t_read(1)


def test_wait_carries_retry_after():
    assert fileutils.Wait().retry_after == 1 and fileutils.Wait(5).retry_after == 5
