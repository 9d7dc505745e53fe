"""Disco's error names: the product's one exception tree, defined in ``common.error``.

``disco.error.JobError is common.error.JobError``; see ``common.error`` for the tree, what each
class means, and the wire codes that carry errors between nodes and clients.
"""
from __future__ import annotations

from common.error import (CommError, DataError, DataNotFound, DiscoError, InputError, JobError,
                          LocalProtocolError, NoAnswer, NotMaster, ProtocolError,
                          RecordFormatError, RemoteProtocolError, UsageError)

__all__ = ["DiscoError", "CommError", "NoAnswer", "NotMaster", "JobError", "DataError", "InputError",
           "DataNotFound", "RecordFormatError", "ProtocolError", "RemoteProtocolError",
           "LocalProtocolError", "UsageError"]
