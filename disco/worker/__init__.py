"""Disco's workers: ``disco.worker.classic`` (map/reduce), ``disco.worker.pipeline`` (stages),
``disco.worker.simple``, and the language-neutral protocol (``protocol_worker``; see
docs/worker-protocol.md). ``Params`` is the attribute bag handed to job functions."""
from __future__ import annotations

__all__ = ["Params"]


def __getattr__(name: str):
    if name == "Params":
        from disco.worker.classic.worker import Params
        return Params
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
