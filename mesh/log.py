"""structlog, configured once per process (SPEC §8).

Daemons write one JSON object per line to ``<data>/logs/<name>.jsonl``; a process attached to
a terminal also gets readable console lines on stderr. Bind ``node``, ``job``, ``task`` and
``stage`` with ``structlog.contextvars`` or ``log.bind``. ``disco.log`` re-exports this module's
names for code on the user's side.
"""
from __future__ import annotations

import sys
from pathlib import Path

import structlog

_configured = False


class _Tee:
    """Write each rendered JSON line to a file and, optionally, a console renderer to stderr."""

    def __init__(self, path: Path | None, console: bool):
        self._file = open(path, "a", buffering=1, encoding="utf-8") if path else None
        self._console = structlog.dev.ConsoleRenderer(colors=False) if console else None

    def __call__(self, logger, method, event_dict):
        if self._console is not None:
            sys.stderr.write(self._console(logger, method, dict(event_dict)) + "\n")
        if self._file is not None:
            return event_dict
        raise structlog.DropEvent


def configure(log_file: Path | None = None, console: bool | None = None, **context) -> None:
    """Set up logging for this process; later calls only rebind context."""
    global _configured
    if console is None:
        console = sys.stderr.isatty()
    if not _configured:
        tee = _Tee(log_file, console)
        out = tee._file if tee._file is not None else sys.stderr
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                tee,
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(out),
            cache_logger_on_first_use=True,
        )
        _configured = True
    structlog.contextvars.bind_contextvars(**context)


def get(**context):
    return structlog.get_logger().bind(**context)


__all__ = ["configure", "get"]
