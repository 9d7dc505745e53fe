"""The classic worker's public names: ``Params``."""
from __future__ import annotations


class Params:
    """A bag of attributes handed to every job function as ``params``.

    ``Params(k=1)`` gives ``params.k == 1``; any picklable values work.
    """

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in sorted(self.__dict__.items()))
        return f"Params({inner})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Params) and self.__dict__ == other.__dict__
