"""``profile=True``: each task's cProfile stats, stored as out-of-band values, merged here.

A task run under the profiler stores its stats (``dump``: the profiler's stats table,
marshalled as ``pstats`` writes it) as the job's out-of-band value
``profile-<stage>-<task index>``. ``profile_stats(disco, job, mode)`` merges every dump whose key
starts with ``profile-<mode>`` (``""``: all; ``"map"``, ``"reduce"``, a pipeline stage's name;
``"map-3"``: one task) into one ``pstats.Stats`` sorted by cumulative time, as Disco did.
``Disco.profile_stats`` and ``Job.profile_stats`` call it.
"""
from __future__ import annotations

import marshal
import pstats
import sys

from disco.error import DataNotFound, JobError
from disco.oob import name_of, oob_get, oob_list

__all__ = ["dump", "profile_stats"]


def dump(profiler) -> bytes:
    """A finished ``cProfile.Profile``'s stats as bytes (the format of ``dump_stats``)."""
    profiler.create_stats()
    return marshal.dumps(profiler.stats)


class _Dump:
    """One stored dump, in the shape ``pstats.Stats`` loads from (``create_stats``, ``stats``)."""

    def __init__(self, data: bytes):
        self.stats = marshal.loads(data)

    def create_stats(self) -> None:
        pass


def profile_stats(disco, jobname, mode: str = "", stream=None) -> pstats.Stats:
    """The job's merged profile: ``JobError`` if it stored none under ``profile-<mode>``."""
    name = name_of(jobname)
    prefix = f"profile-{mode}"
    try:
        keys = [k for k in oob_list(disco, name) if k.startswith(prefix)]
    except DataNotFound:  # no out-of-band values at all
        keys = []
    if not keys:
        raise JobError(name, f"no profile data under {prefix!r} (was the job run with "
                             f"profile=True?)")
    stats = pstats.Stats(_Dump(oob_get(disco, name, keys[0])),
                         stream=stream if stream is not None else sys.stdout)
    for key in keys[1:]:
        stats.add(_Dump(oob_get(disco, name, key)))
    return stats.sort_stats("cumulative")
