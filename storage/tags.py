"""DDFS tags: named, mutable lists of replica sets with attributes, as a replicated state machine.

Theory of operation
-------------------
A tag is the one mutable object of DDFS: a name, a list of replica sets (each a list of URLs to
copies of one blob, or one ``tag://NAME`` link to another tag), user attributes, a version that
counts its changes and the wall time of the last one. Tags live in the cluster's replicated
journal (``mesh.raft``): the master turns each client write into one entry, every node applies
every committed entry to its own ``TagStore`` in the same order, and a snapshot of the store is
part of the journal's snapshot. So

- concurrent writers lose nothing: their entries are applied one after another, and an ``add``
  merges into whatever the tag holds when it is applied, never into what a writer read;
- an acknowledged write (answered only once its entry is committed, on a majority) survives the
  loss of any minority, the master included;
- a deleted tag stays deleted: a node that was down during the delete catches up from the log
  or a snapshot that no longer holds the tag; nothing can resurrect it but a new write;
- reads at the master see every acknowledged write (the master holds a lease; see ``mesh.raft``).

Entries (plain maps with a ``type``; ``apply`` ignores unknown fields so later versions may add):

- ``tag_add``: ``tag``, ``urls`` (replica sets), ``update`` (set semantics: a set whose blob
  name, without its ``$`` stamp, is already in the tag, or twice in the request, is dropped),
  ``wall``. Creates the tag if needed;
  new sets come first (Disco's order); a change that changes nothing makes no new version;
- ``tag_put``: replace a tag's replica sets (creates it);
- ``tag_delete``: the tag is gone;
- ``tag_attr``: set (``value`` a string) or delete (``value`` None) one attribute; a set creates
  the tag;
- ``blob_moved``: ``blob``, ``urls``: every replica set holding blob ``blob`` becomes ``urls``
  (repair and rebalancing move copies; tags follow). The entry carries the new full set, so it
  is idempotent.

Every write entry may carry ``op``, the client's id for this write: applying it records the
result under that id (the last ``MAX_OPS``), so a client that retries after a lost reply is
answered with the first result instead of writing twice.

``check_write(...)`` validates a client write before the master proposes it (names, sizes,
replica shapes, the caller's token); ``apply`` never raises, so every node reaches the same state.

Tokens (Disco's ``ddfs_tag_util:check_token``): the attributes ``ddfs:read-token`` and
``ddfs:write-token`` protect a tag. A write needs the write token when the tag has one; a read
needs the read token or the write token when the tag has a read token. An empty token is no
token. A write that creates a tag with a token sets both tokens to it. A write entry carries the
caller's ``token``, and ``apply`` checks it again against the tag as it is then (a token changed
by an earlier entry in the log wins), answering ``{"error": "unauthorized"}`` without a change;
``read`` checks reads. Tokens are kept in the clear, as Disco kept them, and only a caller that
may write sees them (``read``).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field

TAG_NAME = re.compile(r"[A-Za-z0-9_\-@:.]{1,511}")
MAX_ATTR_NAME = 1024
MAX_ATTR_VALUE = 4096
MAX_ATTRS = 1000
MAX_URL = 4096
MAX_SETS_PER_WRITE = 100_000
MAX_OPS = 10_000
READ_TOKEN, WRITE_TOKEN = "ddfs:read-token", "ddfs:write-token"
SPECIAL_ATTRS = {READ_TOKEN, WRITE_TOKEN}
WRITES = ("add", "put", "delete", "setattr", "delattr")


class TagError(ValueError):
    """A client write that cannot be applied (the master refuses it with this message)."""


class TagNotFound(TagError):
    """The write needs a tag that does not exist."""


class TagUnauthorized(TagError):
    """The caller lacks the tag's read or write token (Disco's HTTP 401)."""


@dataclass
class Tag:
    name: str
    urls: list = field(default_factory=list)   # replica sets: lists of URLs
    attrs: dict = field(default_factory=dict)
    version: int = 0
    modified: float = 0.0
    created: float = 0.0

    def public(self, tokens: bool = False) -> dict:
        """Disco's tag object (``ddfs get``); with ``tokens``, also ``read-token`` and
        ``write-token`` (None when unset)."""
        out = {"id": self.name, "version": self.version, "last-modified": self.modified,
               "created": self.created, "urls": [list(s) for s in self.urls],
               "user-data": {k: v for k, v in self.attrs.items() if k not in SPECIAL_ATTRS}}
        if tokens:
            out["read-token"] = self.attrs.get(READ_TOKEN)
            out["write-token"] = self.attrs.get(WRITE_TOKEN)
        return out

    def may_read(self, token: str | None) -> bool:
        read = self.attrs.get(READ_TOKEN)
        return not read or (bool(token) and token in (read, self.attrs.get(WRITE_TOKEN)))

    def may_write(self, token: str | None) -> bool:
        write = self.attrs.get(WRITE_TOKEN)
        return not write or token == write


def blob_of(url: str) -> str | None:
    """The blob name a ``disco://HOST:PORT/volN/blob/HH/NAME`` URL names, else None."""
    if not url.startswith("disco://"):
        return None
    parts = url.split("/")
    if len(parts) >= 7 and parts[4] == "blob":
        return parts[-1]
    return None


def blob_name(prefix: str, wall_us: int, term: int, seq: int, replicas: int = 0) -> str:
    """A new blob's name: ``PREFIX$WALL-TERM-SEQ`` (hex), unique in the cluster; a push that
    asked for its own number of copies (``--replicas K``) keeps it in the name
    (``PREFIX$WALL-TERM-SEQ-kK``), so repair keeps that many and no more (``blob_replicas``)."""
    name = f"{prefix}${wall_us:x}-{term:x}-{seq:x}"
    return f"{name}-k{replicas}" if replicas > 0 else name


_REPLICAS = re.compile(r"\$[0-9a-f]+-[0-9a-f]+-[0-9a-f]+-k([1-9][0-9]{0,2})")


def blob_replicas(name: str) -> int | None:
    """The copies a blob's push asked for (see ``blob_name``), or None: the cluster's k."""
    found = _REPLICAS.search(name)
    return int(found[1]) if found and found.end() == len(name) else None


def set_key(replicas: list) -> str:
    """What identifies a replica set for ``update``: its blob's name, else its first URL."""
    first = replicas[0] if replicas else ""
    return blob_of(first) or first


def update_key(replicas: list) -> str:
    """What ``update`` compares (Disco's set semantics): the name the blob was pushed under,
    without its ``$...`` stamp, so a second push of ``data`` is dropped; else the first URL."""
    blob = blob_of(replicas[0]) if replicas else None
    return blob.split("$", 1)[0] if blob else set_key(replicas)


def tag_link(url: str) -> str | None:
    """The tag a ``tag://NAME`` URL links to, else None."""
    if url.startswith("tag://"):
        return url[len("tag://"):].rsplit("/", 1)[-1] or None
    return None


def check_name(name) -> str:
    if not isinstance(name, str) or not TAG_NAME.fullmatch(name):
        raise TagError(f"bad tag name {name!r}: 1 to 511 of A-Z a-z 0-9 _ - @ : .")
    return name


def check_urls(urls) -> list:
    """Replica sets as lists of strings (URLs or any other string, as Disco took them); a bare
    string is a set of one. A ``tag://`` entry must name a valid tag."""
    if not isinstance(urls, (list, tuple)):
        raise TagError("urls must be a list of replica sets (lists of URLs)")
    if len(urls) > MAX_SETS_PER_WRITE:
        raise TagError(f"{len(urls)} replica sets in one write; at most {MAX_SETS_PER_WRITE}")
    out = []
    for entry in urls:
        replicas = [entry] if isinstance(entry, str) else entry
        if not isinstance(replicas, (list, tuple)) or not replicas or not all(
                isinstance(u, str) and 0 < len(u) <= MAX_URL for u in replicas):
            raise TagError(f"bad replica set {entry!r:.200}: expected a list of 1 or more "
                           f"URLs (strings of 1 to {MAX_URL} characters)")
        for url in replicas:
            link = tag_link(url)
            if url.startswith("tag://") and (link is None or not TAG_NAME.fullmatch(link)):
                raise TagError(f"bad tag link {url!r}")
        out.append(list(replicas))
    return out


def check_attr(attr, value=None, setting: bool = True) -> None:
    if not isinstance(attr, str) or not 0 < len(attr.encode()) <= MAX_ATTR_NAME:
        raise TagError(f"bad attribute name {attr!r:.100}: 1 to {MAX_ATTR_NAME} bytes")
    if attr.startswith("ddfs:") and attr not in SPECIAL_ATTRS:
        raise TagError(f"attribute names starting with ddfs: are reserved ({attr!r})")
    if setting and (not isinstance(value, str) or len(value.encode()) > MAX_ATTR_VALUE):
        raise TagError(f"attribute {attr!r}: the value must be a string of at most "
                       f"{MAX_ATTR_VALUE} bytes")


class TagStore:
    """Every live tag, built by applying committed entries in order."""

    def __init__(self):
        self.tags: dict[str, Tag] = {}
        self.ops: OrderedDict[str, dict] = OrderedDict()  # write id -> its result
        self.by_blob: dict[str, set[str]] = {}  # blob name -> tags that hold it

    # -- validation at the master, before proposing --

    def check_write(self, kind: str, tag: str, urls=None, attr=None, value=None,
                    token: str | None = None) -> dict:
        """The entry for a client write (``kind`` in WRITES) with ``token`` (None: none), or
        TagError saying why not: TagUnauthorized without the tag's write token. Deleting a
        tag that does not exist is allowed, as in Disco (its entry changes nothing)."""
        check_name(tag)
        held = self.tags.get(tag)
        if held is not None and not held.may_write(token or None):
            raise TagUnauthorized(f"tag {tag!r}: this write needs the tag's write token")
        entry = self._entry(kind, tag, held, urls, attr, value)
        if token:
            entry["token"] = token
        return entry

    def _entry(self, kind: str, tag: str, held, urls, attr, value) -> dict:
        if kind in ("add", "put"):
            return {"type": "tag_" + kind, "tag": tag, "urls": check_urls(urls or [])}
        if kind == "delete":
            return {"type": "tag_delete", "tag": tag}
        if kind in ("setattr", "delattr"):
            check_attr(attr, value, setting=kind == "setattr")
            if kind == "setattr" and attr not in (held.attrs if held else {}) and \
                    len(held.attrs if held else ()) >= MAX_ATTRS:
                raise TagError(f"tag {tag!r} has {MAX_ATTRS} attributes, the most allowed")
            if kind == "delattr" and held is None:
                raise TagNotFound(f"tag {tag!r} does not exist")
            return {"type": "tag_attr", "tag": tag, "attr": attr,
                    "value": value if kind == "setattr" else None}
        raise TagError(f"unknown tag write {kind!r}; expected one of {', '.join(WRITES)}")

    def read(self, name: str, token: str | None = None) -> dict | None:
        """The tag object for a caller with ``token``, None if there is no such tag, or
        TagUnauthorized; a caller that may write also sees the tokens."""
        tag = self.tags.get(name)
        if tag is None:
            return None
        if not tag.may_read(token or None):
            raise TagUnauthorized(f"tag {name!r}: reading it needs the tag's read token")
        return tag.public(tokens=tag.may_write(token or None))

    # -- the state machine --

    def apply(self, entry: dict) -> dict:
        """Apply one committed entry; returns its result (also kept under its ``op``)."""
        op = entry.get("op") or ""
        if op and op in self.ops:
            return self.ops[op]  # a retried write applied once already
        handler = _APPLY.get(entry.get("type"))
        held = self.tags.get(entry.get("tag") or "")
        if held is not None and handler is not None and entry.get("type") != "blob_moved" \
                and not held.may_write(entry.get("token") or None):
            result = {"tag": held.name, "error": "unauthorized"}
        else:
            result = handler(self, entry) if handler else {"error": "unknown entry"}
        if op:
            self.ops[op] = result
            while len(self.ops) > MAX_OPS:
                self.ops.popitem(last=False)
        return result

    def _tag(self, name: str, wall: float, token: str | None = None) -> Tag:
        """The tag, created if needed; a tag created with a token gets it as both tokens."""
        tag = self.tags.get(name)
        if tag is None:
            tag = self.tags[name] = Tag(name, created=wall, modified=wall)
            if token:
                tag.attrs.update({READ_TOKEN: token, WRITE_TOKEN: token})
        return tag

    def _changed(self, tag: Tag, wall: float) -> dict:
        tag.version += 1
        tag.modified = wall
        return {"tag": tag.name, "version": tag.version}

    def _add(self, e: dict) -> dict:
        wall = float(e.get("wall", 0.0))
        new = e["tag"] not in self.tags
        tag = self._tag(e["tag"], wall, e.get("token"))
        sets = [list(s) for s in e.get("urls", ())]
        if e.get("update"):
            seen = {update_key(s) for s in tag.urls}
            kept = []
            for s in sets:
                key = update_key(s)
                if key not in seen:
                    seen.add(key)
                    kept.append(s)
            sets = kept
        if not sets and not new:
            return {"tag": tag.name, "version": tag.version}
        tag.urls = sets + tag.urls
        self._index(tag.name, sets)
        if new and not sets:
            tag.version = 1
            return {"tag": tag.name, "version": 1}
        return self._changed(tag, wall)

    def _put(self, e: dict) -> dict:
        wall = float(e.get("wall", 0.0))
        tag = self._tag(e["tag"], wall, e.get("token"))
        self._unindex(tag.name, tag.urls)
        tag.urls = [list(s) for s in e.get("urls", ())]
        self._index(tag.name, tag.urls)
        return self._changed(tag, wall)

    def _delete(self, e: dict) -> dict:
        tag = self.tags.pop(e["tag"], None)
        if tag is None:
            return {"tag": e["tag"], "deleted": False}
        self._unindex(tag.name, tag.urls)
        return {"tag": tag.name, "deleted": True}

    def _attr(self, e: dict) -> dict:
        wall = float(e.get("wall", 0.0))
        value = e.get("value")
        if value is None:
            tag = self.tags.get(e["tag"])
            if tag is None or e["attr"] not in tag.attrs:
                return {"tag": e["tag"], "version": tag.version if tag else 0}
            del tag.attrs[e["attr"]]
        else:
            tag = self._tag(e["tag"], wall, e.get("token"))
            if e["attr"] in SPECIAL_ATTRS and not value:  # an empty token is no token
                value = None
                if e["attr"] not in tag.attrs:
                    return {"tag": tag.name, "version": tag.version}
                del tag.attrs[e["attr"]]
                return self._changed(tag, wall)
            if tag.attrs.get(e["attr"]) == value:
                return {"tag": tag.name, "version": tag.version}
            tag.attrs[e["attr"]] = value
        return self._changed(tag, wall)

    def _moved(self, e: dict) -> dict:
        blob, urls = e["blob"], list(e.get("urls", ()))
        changed = 0
        if not urls:
            return {"blob": blob, "tags": 0}
        for name in sorted(self.by_blob.get(blob, ())):
            tag = self.tags.get(name)
            if tag is None:
                continue
            hit = False
            for i, s in enumerate(tag.urls):
                if set_key(s) == blob and s != urls:
                    tag.urls[i] = list(urls)
                    hit = True
            if hit:
                changed += 1
                tag.version += 1  # ``modified`` is the user's: a move is not their change
        return {"blob": blob, "tags": changed}

    def _index(self, name: str, sets) -> None:
        for s in sets:
            blob = blob_of(s[0]) if s else None
            if blob:
                self.by_blob.setdefault(blob, set()).add(name)

    def _unindex(self, name: str, sets) -> None:
        for s in sets:
            blob = blob_of(s[0]) if s else None
            holders = self.by_blob.get(blob) if blob else None
            if holders is not None:
                holders.discard(name)
                if not holders:
                    del self.by_blob[blob]

    # -- queries --

    def get(self, name: str) -> Tag | None:
        return self.tags.get(name)

    def names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self.tags if n.startswith(prefix))

    def referenced(self) -> dict[str, set[str]]:
        """Blob name -> the URLs that tags name for it (a copy elsewhere is not referenced)."""
        out: dict[str, set[str]] = {}
        for blob, names in self.by_blob.items():
            urls = out.setdefault(blob, set())
            for name in names:
                for s in self.tags[name].urls:
                    if set_key(s) == blob:
                        urls.update(s)
        return out

    def blob_sets(self, blob: str) -> list[list[str]]:
        """The distinct replica sets tags hold for ``blob``."""
        seen = []
        for name in sorted(self.by_blob.get(blob, ())):
            for s in self.tags[name].urls:
                if set_key(s) == blob and s not in seen:
                    seen.append(list(s))
        return seen

    # -- snapshots --

    def snapshot(self) -> dict:
        return {"tags": [[t.name, t.urls, t.attrs, t.version, t.modified, t.created]
                         for t in self.tags.values()],
                "ops": [[k, v] for k, v in self.ops.items()]}

    @classmethod
    def from_snapshot(cls, data: dict | None) -> "TagStore":
        store = cls()
        for name, urls, attrs, version, modified, created in (data or {}).get("tags", ()):
            store.tags[name] = Tag(name, [list(s) for s in urls], dict(attrs), version,
                                   modified, created)
            store._index(name, store.tags[name].urls)
        for key, value in (data or {}).get("ops", ()):
            store.ops[key] = value
        return store

    def check_invariants(self) -> None:
        for blob, names in self.by_blob.items():
            assert names, f"empty index entry for {blob}"
            for name in names:
                assert name in self.tags, f"index names missing tag {name}"
                assert any(set_key(s) == blob for s in self.tags[name].urls), (blob, name)
        for name, tag in self.tags.items():
            for s in tag.urls:
                blob = blob_of(s[0]) if s else None
                if blob:
                    assert name in self.by_blob.get(blob, ()), (name, blob)
        assert len(self.ops) <= MAX_OPS


_APPLY = {"tag_add": TagStore._add, "tag_put": TagStore._put, "tag_delete": TagStore._delete,
          "tag_attr": TagStore._attr, "blob_moved": TagStore._moved}
ENTRY_TYPES = frozenset(_APPLY)


def is_tag_entry(entry) -> bool:
    return isinstance(entry, dict) and entry.get("type") in ENTRY_TYPES
