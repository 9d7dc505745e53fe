"""Record files by path: written atomically, read back pair by pair (the codec is
``shuffle.record``, which touches no files)."""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from shuffle.record import CODEC_LZ4, RecordWriter, iter_records

__all__ = ["read_file", "write_file"]


def write_file(path: str | os.PathLike, pairs: Iterable[tuple], *, fsync: bool = False,
               codec: int = CODEC_LZ4) -> int:
    """Write ``pairs`` to ``path`` atomically (temp file, optional fsync, rename); returns the
    record count. Readers never see a partly written file under ``path``."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.urandom(6).hex()}"
    try:
        with open(tmp, "wb") as f:
            writer = RecordWriter(f, codec)
            writer.add_many(pairs)
            writer.close()
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    return writer.records


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read_file(path: str | os.PathLike) -> Iterator[tuple]:
    """Each pair in the record file at ``path``; the file is closed when iteration ends."""
    with open(path, "rb") as f:
        yield from iter_records(f)
