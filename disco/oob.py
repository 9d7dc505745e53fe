"""Out-of-band values of a job, read from the client: ``oob_get`` and ``oob_list``.

A task stores small values beside its job with ``disco.worker.classic.worker.put`` (or
``disco.util.save_oob``): each is a blob named after its key in the DDFS tag
``disco:job:oob:<job>``, newest first. ``Disco.oob_get`` / ``Disco.oob_list`` (and the same
methods of ``Job``) are these functions with the handle and the job name bound.
"""
from __future__ import annotations

from disco.error import DataNotFound
from disco.util import _oob_tag, load_oob, oob_key_of

__all__ = ["oob_get", "oob_list"]


def master_of(disco) -> str | None:
    """The address behind ``disco``: a ``Disco`` handle, an address, or None (the default)."""
    return getattr(disco, "master", disco)


def name_of(job) -> str:
    """A job's name, from a ``Job`` or the name itself."""
    return getattr(job, "name", None) or job


def oob_get(disco, jobname, key: str) -> bytes:
    """The latest value the job stored under ``key`` (bytes); ``DataNotFound`` if none."""
    return load_oob(master_of(disco), name_of(jobname), key)


def oob_list(disco, jobname) -> list[str]:
    """The keys of the job's out-of-band values, each once, in the order they were first
    stored; ``DataNotFound`` when the job stored none (as Disco answered 404)."""
    from disco.ddfs import DDFS
    name = name_of(jobname)
    try:
        blobs = DDFS(master_of(disco)).blobs(_oob_tag(name), ignore_missing=False)
    except DataNotFound:
        raise DataNotFound(f"job {name} has no out-of-band values") from None
    keys = dict.fromkeys(oob_key_of(replicas[0]) for replicas in reversed(list(blobs)))
    return list(keys)
