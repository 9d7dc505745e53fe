"""Disco's error names: the product's one exception tree, defined in ``common.error``.

``disco.error.JobError is common.error.JobError``; see ``common.error`` for the tree, what each
class means, and the wire codes that carry errors between nodes and clients. Disco's own names
are all here: ``DiscoError``, ``JobError``, ``DataError``, ``CommError`` and
``ModUtilImportError`` (also importable from ``disco.worker.modutil``, where Disco had it).
``DecodeError`` is what a text reader raises for bytes that are not UTF-8.
"""
from __future__ import annotations

from common.error import (CommError, DataError, DataNotFound, DecodeError, DiscoError,
                          InputError, JobError, JobNotFound, LocalProtocolError,
                          ModUtilImportError, NoAnswer, NotMaster, ProtocolError,
                          RecordFormatError, RemoteProtocolError, Unauthorized, UsageError)

__all__ = ["DiscoError", "CommError", "NoAnswer", "NotMaster", "JobError", "DataError", "InputError",
           "DecodeError", "DataNotFound", "RecordFormatError", "ProtocolError",
           "RemoteProtocolError", "LocalProtocolError", "UsageError", "JobNotFound",
           "ModUtilImportError", "Unauthorized"]
