"""Disco's DDFS client: ``DDFS(master).push(tag, files)``, tags, blobs, attributes.

A *blob* is an immutable file stored on k nodes (the first k clockwise of its name's hash on
the cluster's ring); a *tag* is a named, mutable list of replica sets (each the URLs of one
blob's copies, or a ``tag://NAME`` link to another tag) with attributes. Tags are kept in the
cluster's replicated journal, so a write that returned survives the loss of any node, the
master included; concurrent writers of one tag lose nothing.

    from disco.ddfs import DDFS
    ddfs = DDFS()                                  # DISCO_MASTER, as for jobs
    ddfs.push("data:logs", ["./a.log", "./b.log"])  # each file: k copies, fsynced, then tagged
    for replicas in ddfs.blobs("data:logs"):       # [[url, url, url], ...]
        ...
    ddfs.setattr("data:logs", "owner", "ops")
    ddfs.delete("data:logs")

A push returns only once every copy is fsynced on its node, or raises: a node that fails is
replaced by another, and a blob is tagged only when all its copies are stored. Tag names are
1 to 511 of ``A-Z a-z 0-9 _ - @ : .``; ``tag://NAME`` is accepted wherever a name is.
"""
from __future__ import annotations

import io
import os
import random
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from common.error import Unauthorized
from disco.error import CommError, DataNotFound, DiscoError, InputError, UsageError
from mesh import message as m

__all__ = ["DDFS", "canonizetag", "istag", "tagname", "relativizetag"]

PUSH_ATTEMPTS = 3
PLACE_WAIT_S = 12.0  # a crashed node is marked dead within 5 s (SPEC §11); this is ample
SPOOL_BYTES = 16 << 20  # a blob read for checking stays in memory up to this, then on disk
REQUEST_TIMEOUT_S = 3.0
TOKEN_ATTRS = ("ddfs:read-token", "ddfs:write-token")


class TagMissing(DataNotFound, CommError):
    """A tag (or attribute) that does not exist: ``DataNotFound`` here, Disco's CommError 404."""

    status = 404


class ReservedAttribute(CommError):
    """A ``ddfs:`` attribute name other than the two tokens: Disco's CommError 404."""

    status = 404


def _carries_token(cls) -> bool:
    """Whether the node's schema has a ``token`` field for ``cls`` (tags' read/write tokens)."""
    return "token" in getattr(cls, "__dataclass_fields__", {})


def istag(url) -> bool:
    return isinstance(url, str) and url.startswith("tag://")


def tagname(tag: str) -> str:
    """``tag://[HOST/]NAME`` or ``NAME`` -> ``NAME`` (names may hold ``@`` and ``:``, as
    ``disco:results:Job@...`` does, so there is no ``user:token@`` part)."""
    if istag(tag):
        return tag[len("tag://"):].rsplit("/", 1)[-1]
    return tag


def canonizetag(tag: str) -> str:
    return f"tag://{tagname(tag)}"


def relativizetag(tag: str, parent: str) -> str:
    return canonizetag(tag)


class DDFS:
    """A handle on the cluster's DDFS through one node (``master``: ``host:port`` or None)."""

    def __init__(self, master: str | None = None, proxy: str | None = None, settings=None):
        from disco.core import Disco
        self.disco = Disco(proxy or master)
        self.master = self.disco.master

    def _request(self, cls, **fields):
        # DDFS requests are answered in milliseconds, and a retried write is applied once (its
        # ``op``), so a master cut off from us is given up on sooner than a job request
        try:
            return self.disco.request(cls, wait_s=REQUEST_TIMEOUT_S, **fields)
        except DataNotFound as exc:
            if isinstance(exc, TagMissing):
                raise
            raise TagMissing(str(exc)) from None

    def _token(self, token, write: bool) -> dict:
        """The ``token`` field to send: ``token``, else ``DDFS_WRITE_TOKEN`` for writes /
        ``DDFS_READ_TOKEN`` for reads (Disco's order)."""
        if token is None:
            token = os.environ.get("DDFS_WRITE_TOKEN" if write else "DDFS_READ_TOKEN")
        cls = m.TagWrite if write else m.TagGet
        return {"token": token} if token is not None and _carries_token(cls) else {}

    # -- tags --

    def get(self, tag, token=None) -> dict:
        """The tag object: ``id``, ``version``, ``last-modified``, ``urls``, ``user-data``
        (and the tokens, for a caller holding the write token). Unauthorized (401) without the
        tag's read token, TagMissing (DataNotFound, Disco's 404) when there is no such tag."""
        tag = tag[0] if isinstance(tag, (list, tuple)) else tag
        return self._request(m.TagGet, tag=tagname(tag), **self._token(token, False))

    def urls(self, tag, token=None) -> list:
        return self.get(tag, token)["urls"]

    def exists(self, tag, token=None) -> bool:
        """Whether the tag exists; True also for one this caller may not read (Disco)."""
        try:
            self.get(tag, token)
            return True
        except Unauthorized:
            return True
        except DataNotFound:
            return False

    def list(self, prefix: str = "") -> list:
        return self._request(m.TagList, prefix=prefix)

    def _write(self, kind: str, tag: str, token=None, **fields) -> dict:
        result = self._request(m.TagWrite, kind=kind, tag=tagname(tag), op=uuid.uuid4().hex,
                               **self._token(token, True), **fields)
        if isinstance(result, dict) and result.get("error") == "unauthorized":
            # refused when applied: an earlier write in the journal changed the token
            raise Unauthorized(f"tag {tagname(tag)!r}: this write needs the tag's write token")
        return result

    def tag(self, tag: str, urls, token=None, delayed: bool = False, update: bool = False):
        """Add replica sets (lists of URLs, or single URLs) to ``tag``, creating it if needed
        (with ``token`` as its read and write token); ``update=True`` skips blobs the tag
        holds already."""
        return self._write("add", tag, token, urls=_replica_sets(urls), update=bool(update))

    def put(self, tag: str, urls, token=None):
        """Replace the tag's replica sets."""
        return self._write("put", tag, token, urls=_replica_sets(urls))

    def touch(self, tag: str, token=None) -> dict:
        return self._write("add", tag, token, urls=[])

    def delete(self, tag: str, token=None) -> None:
        """Delete the tag; deleting one that does not exist succeeds, as in Disco."""
        self._write("delete", tag, token)

    def setattr(self, tag: str, attr: str, value, token=None) -> None:
        _check_attr_name(attr)
        if attr in TOKEN_ATTRS and not _carries_token(m.TagWrite):
            # a token no request can present would lock the tag for good
            raise UsageError(f"{attr}: this client's protocol cannot send tag tokens")
        self._write("setattr", tag, token, attr=attr, value=str(value))

    def delattr(self, tag: str, attr: str, token=None) -> None:
        _check_attr_name(attr)
        self._write("delattr", tag, token, attr=attr)

    def attrs(self, tag: str, token=None) -> dict:
        return self.get(tag, token)["user-data"]

    def getattr(self, tag: str, attr: str, token=None):
        """The attribute's value; for ``ddfs:read-token`` / ``ddfs:write-token`` the token or
        None (seen only with the write token, or on a tag without one)."""
        _check_attr_name(attr)
        got = self.get(tag, token)
        if attr in TOKEN_ATTRS:
            key = attr[len("ddfs:"):]
            if key not in got:
                raise Unauthorized(f"tag {tagname(tag)!r}: its tokens are shown only with "
                                   "the tag's write token")
            return got[key]
        value = got["user-data"].get(attr)
        if value is None:
            raise TagMissing(f"tag {tagname(tag)!r} has no attribute {attr!r}")
        return value

    # -- walking the tag graph --

    def walk(self, tag: str, ignore_missing: bool = True, tagpath=(), seen=None):
        """Depth first: ``(tagpath, subtags, blobs)`` for ``tag`` and every tag it links."""
        seen = set() if seen is None else seen
        name = tagname(tag)
        if name in seen:
            return
        seen.add(name)
        path = tagpath + (name,)
        try:
            urls = self.urls(name)
        except DataNotFound:
            if not ignore_missing:
                raise
            yield path, None, None
            return
        subtags = [tagname(s[0]) for s in urls if s and istag(s[0])]
        blobs = [s for s in urls if s and not istag(s[0])]
        yield path, subtags, blobs
        for sub in subtags:
            yield from self.walk(sub, ignore_missing, path, seen)

    def findtags(self, tags, ignore_missing: bool = True):
        """Breadth first, each tag once: ``(tag, subtags, blobs)``."""
        queue, seen = [tagname(t) for t in ([tags] if isinstance(tags, str) else tags)], set()
        while queue:
            name = queue.pop(0)
            if name in seen:
                continue
            seen.add(name)
            try:
                urls = self.urls(name)
            except DataNotFound:
                if not ignore_missing:
                    raise
                continue
            subtags = [tagname(s[0]) for s in urls if s and istag(s[0])]
            yield name, subtags, [s for s in urls if s and not istag(s[0])]
            queue.extend(subtags)

    def blobs(self, tag: str, ignore_missing: bool = True) -> list:
        """Every blob's replica set reachable from ``tag``, in the tags' order."""
        out = []
        for _, _, blobs in self.walk(tag, ignore_missing):
            out.extend(blobs or ())
        return out

    def pull(self, tag: str, blobfilter=lambda url: True):
        """Yield ``(fileobj, size, url)`` for each blob, trying its replicas in random order.

        Each file holds the whole blob, already checked against its checksum (``open_blob``):
        a corrupt or unreachable copy is passed over for the next replica."""
        for replicas in self.blobs(tag):
            if blobfilter(replicas[0]):
                yield open_blob(random.sample(replicas, len(replicas)))

    # -- blobs --

    def push(self, tag: str, files, replicas: int | None = None, forceon=(), exclude=(),
             retries: int = PUSH_ATTEMPTS, delayed: bool = False, update: bool = False,
             token=None, progress=None):
        """Store each file (a path, ``(path, name)`` or ``(fileobj, name)``) as a blob with k
        copies, then add them all to ``tag``. Returns ``(tag's URL, [replica set, ...])``."""
        sets = [self.put_blob(source, replicas=replicas, exclude=exclude, attempts=retries,
                              progress=progress) for source in _sources(files)]
        self.tag(tag, sets, token=token, update=update)
        return canonizetag(tag), sets

    @staticmethod
    def blob_name(url: str) -> str:
        """The name a blob was pushed under: its URL's last part without the ``$...`` stamp
        (``disco://h/vol0/blob/ab/data$5f-1-2`` -> ``data``)."""
        return url.rstrip("/").rsplit("/", 1)[-1].split("$", 1)[0]

    def put_blob(self, source, replicas: int | None = None, exclude=(), attempts=PUSH_ATTEMPTS,
                 progress=None, name: str | None = None) -> list:
        """Store one blob; returns its replica set (URLs, the ring's order).

        A node that fails is left out of the next attempt, which writes every copy again under
        a new name (the failed attempt's copies were abandoned). When too few nodes are left
        because one seems to have died, placement is asked again until the master sees it
        dead (k is then what the live nodes allow) or ``PLACE_WAIT_S`` passes. A node that
        fails after taking every byte, when the others have committed their copies, leaves
        those copies: if they are as many as the next placement asks for, they are the blob's
        replica set, and nothing is written again."""
        from mesh.transfer import push_blob
        fileobj, name, size, reopen = _open_source(source, name)
        failed_nodes: set = set(exclude)
        reasons: list[str] = []
        lost = False  # a node's connection dropped or it went silent: it may be dying
        kept: list = []
        try:
            for attempt in range(max(1, attempts)):
                try:
                    place = self._place(name, replicas, failed_nodes, lost)
                except (CommError, UsageError) as exc:
                    if not reasons:
                        raise
                    reasons.append(str(exc))  # no nodes left to try: say why each failed
                    break
                if kept and len(kept) >= len(place["nodes"]):
                    return kept  # the failed attempt's committed copies are enough now
                if attempt:
                    fileobj.close()
                    fileobj = reopen()
                stored, failed, _ = push_blob(fileobj, place["name"], size, place["nodes"],
                                              progress=progress, all_or_none=True)
                if not failed:
                    return [f"disco://{a}/{stored[a]}" for a in place["nodes"]]
                # committed before another node failed (it took every byte, then died)
                kept = [f"disco://{a}/{stored[a]}" for a in place["nodes"] if a in stored]
                failed_nodes |= set(failed)
                reasons += [f"{a}: {why}" for a, why in sorted(failed.items())]
                lost = lost or any(_lost(why) for why in failed.values())
                if all(_permanent(why) for why in failed.values()):
                    break
        finally:
            fileobj.close()
        raise CommError(f"could not store {name!r} ({size} bytes) on enough nodes: "
                        + "; ".join(reasons))

    def _place(self, name: str, replicas, exclude: set, wait: bool) -> dict:
        """The master's ``BlobPlace``; with ``wait``, asked again while it finds too few nodes."""
        deadline = time.monotonic() + (PLACE_WAIT_S if wait else 0)
        while True:
            try:
                return self._request(m.BlobPlace, prefix=name, replicas=int(replicas or 0),
                                     exclude=sorted(exclude))
            except UsageError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def chunk(self, tag: str, urls, replicas: int | None = None, forceon=(), retries=PUSH_ATTEMPTS,
              delayed: bool = False, update: bool = False, token=None,
              chunk_size: int | None = None, max_record_size: int | None = None,
              progress=None, **kwargs):
        """Read each input's lines and store them as record-format chunks of at most
        ``chunk_size`` stored bytes, never splitting a record; tag them all."""
        from shuffle import chunk as ck
        from disco.worker.task_io import open_input
        _register_disco_scheme()
        sets = []
        for url in ([urls] if isinstance(urls, str) else urls):
            fd, _, real = open_input(url if "://" in str(url) else os.path.abspath(url))
            base = _safe_name(os.path.basename(real.rstrip("/")) or "chunk")
            try:
                size = chunk_size or ck.DEFAULT_CHUNK_BYTES
                record = min(max_record_size or ck.DEFAULT_MAX_RECORD_BYTES,
                             size - ck.CHUNK_OVERHEAD)
                if record < 1:
                    raise UsageError(f"chunk size {size} bytes is too small for any record")
                for chunk in ck.chunk_input(fd, chunk_bytes=size, max_record_bytes=record,
                                            name=real):
                    data = chunk.data if isinstance(chunk.data, bytes) else b"".join(chunk.data)
                    sets.append(self.put_blob((io.BytesIO(data), f"{base}-{chunk.index}"),
                                              replicas=replicas, attempts=retries,
                                              progress=progress))
            finally:
                fd.close()
        self.tag(tag, sets, token=token, update=update)
        return canonizetag(tag), sets

    def status(self) -> dict:
        """The master's view of DDFS: tags, blobs, copies, under-replicated blobs, repairs."""
        return self._request(m.DdfsStatus)


def open_blob(replicas, spool_bytes: int = SPOOL_BYTES):
    """``(fileobj, size, url)`` of one blob: read whole from the first of ``replicas`` (URLs,
    tried in turn) that gives every byte and whose bytes match their checksum.

    A copy's checksum is only known to be right once its last byte is read, and bytes handed
    on cannot be taken back; so a replica is read into a spool (memory up to ``spool_bytes``,
    then a temporary file) before anything is returned, and a replica that fails halfway,
    a corrupt one included, is followed by the next. InputError names every replica and why
    it failed when none could be read."""
    from disco.worker.task_io import open_url
    _register_disco_scheme()
    urls = [replicas] if isinstance(replicas, str) else list(replicas)
    if not urls:
        raise UsageError("a blob needs at least one replica URL")
    failures = []
    for url in urls:
        spool = tempfile.SpooledTemporaryFile(spool_bytes)
        try:
            fd, _, real = open_url(url)
            try:
                shutil.copyfileobj(fd, spool, 1 << 20)
            finally:
                fd.close()
        except (DiscoError, OSError) as exc:
            spool.close()
            failures.append((url, exc))
            continue
        size = spool.tell()
        spool.seek(0)
        return spool, size, real
    if len(failures) == 1 and isinstance(failures[0][1], InputError):
        raise failures[0][1]
    reasons = "; ".join(f"{url}: {_reason(url, exc)}" for url, exc in failures)
    raise InputError(f"none of {len(urls)} replicas could be read: {reasons}", url=urls[0])


def _check_attr_name(attr) -> None:
    if isinstance(attr, str) and attr.startswith("ddfs:") and attr not in TOKEN_ATTRS:
        raise ReservedAttribute(f"attribute names starting with ddfs: are reserved ({attr!r}); "
                                f"of them only {' and '.join(TOKEN_ATTRS)} may be used")


def _reason(url: str, exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[len(url) + 2:] if text.startswith(url + ": ") else text


def _replica_sets(urls) -> list:
    if isinstance(urls, str):
        urls = [urls]
    return [[u] if isinstance(u, str) else list(u) for u in urls]


def _safe_name(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "_-@:." else "_" for c in name)
    return (safe.lstrip(".") or "blob")[:200]


def _sources(files) -> list:
    """A path, or a list of paths, ``(path, name)`` or ``(fileobj, name)``."""
    return [files] if isinstance(files, (str, Path)) else list(files)


def _open_source(source, name):
    """(fileobj, blob name prefix, size, reopen) of a path, ``(path, name)`` or
    ``(fileobj, name)``."""
    if isinstance(source, tuple):
        obj, given = source
    else:
        obj, given = source, None
    if hasattr(obj, "read"):
        data = obj.read()
        if isinstance(data, str):
            data = data.encode()
        prefix = _safe_name(name or given or "blob")
        return io.BytesIO(data), prefix, len(data), lambda: io.BytesIO(data)
    path = Path(obj).expanduser()
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    size = os.fstat(f.fileno()).st_size
    prefix = _safe_name(name or given or path.name)
    return f, prefix, size, lambda: open(path, "rb")


def _permanent(why: str) -> bool:
    return "exists" in why


def _lost(why: str) -> bool:
    """A failure that a node's death explains (``mesh.transfer.push_blob``'s reasons)."""
    return "connection dropped" in why or "no answer within" in why


_registered = False


def _register_disco_scheme() -> None:
    """Let ``open_input`` read ``disco://`` blob URLs from this client."""
    global _registered
    if _registered:
        return
    from disco import embedded
    from disco.worker import task_io
    from mesh.transfer import open_disco

    def opener(url: str):
        address = url.split("/", 3)[2]
        data = embedded.data_dir_of(address)
        return open_disco(url, address if data else None, data)

    task_io.register_scheme("disco", opener)
    _registered = True

