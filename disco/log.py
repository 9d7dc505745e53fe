"""structlog, configured once per process: ``mesh.log``, under Disco's old name.

``from disco import log`` then ``log.configure(...)`` and ``log.get(...)`` work as before; the
one configuration lives in ``mesh.log``.
"""
from __future__ import annotations

from mesh.log import configure, get

__all__ = ["configure", "get"]
