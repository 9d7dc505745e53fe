"""The classic worker's name for :mod:`disco.worker.modutil` (Disco had both)."""
from __future__ import annotations

from disco.worker.modutil import (ModUtilImportError, find_modules, locate_modules,
                                  parse_function, user_paths)

__all__ = ["ModUtilImportError", "find_modules", "locate_modules", "parse_function",
           "user_paths"]
