"""A protocol task's inputs, as a program in any language can read them.

Theory of operation
-------------------
Each input of the task (a URL, or a list of alternative URLs: replicas) gets an id, 1, 2, ...
in task order, and each replica an id 1, 2, ... within its input. An ``INPUT`` request is
answered with every input asked for, each with one replica the program can open with nothing
but a file system or an HTTP client:

- ``file://`` and ``http(s)://`` URLs are handed over as they are;
- a ``disco://`` or ``dir://`` URL of this node becomes ``file://`` + its path in the data dir;
- any other URL (``raw://``, another node's ``disco://``, a registered scheme) is read here
  once and written to ``<task dir>/inputs/``, then handed over as ``file://`` + that path.

The program reports a replica it cannot read with ``INPUT_ERR [id, [rep_id]]``; the next
untried replica is made readable the same way (``RETRY``), or, when none is left, ``FAIL``.
An input none of whose replicas can be made readable fails the task; a ``disco://`` input does
so with ``lost`` naming it, so the master re-runs the task that made it.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from disco.error import DataError, DiscoError, InputError
from disco.worker import task_io
from mesh.transfer import open_disco, split_disco_url

COPY_BYTES = 1 << 20


class InputsLost(DataError):
    """No replica of an input could be read; ``lost_url`` names a ``disco://`` one, if any."""

    def __init__(self, msg: str, lost_url: str = ""):
        super().__init__(msg)
        self.lost_url = lost_url


@dataclass
class Input:
    id: int
    label: int
    urls: list
    given: dict = field(default_factory=dict)   # rep_id -> URL handed to the program
    failed: set = field(default_factory=set)    # rep_ids that could not be made readable

    def lost_url(self) -> str:
        return next((u for u in self.urls if u.startswith(("disco://", "dir://"))), "")


class Inputs:
    def __init__(self, task: dict, address: str, data_dir: Path, task_dir: Path):
        raw = task.get("inputs") or []
        labels = task.get("labels") or [0] * len(raw)
        self.address, self.data_dir, self.task_dir = address, Path(data_dir), Path(task_dir)
        self.inputs = {i + 1: Input(i + 1, int(labels[i]) if i < len(labels) else 0,
                                    [inp] if isinstance(inp, str) else list(inp))
                       for i, inp in enumerate(raw)}

    # -- INPUT --

    def listing(self, payload) -> list:
        """The reply to ``INPUT payload``: ``["done", [[id, "ok", label, [[rep, url]]], ...]]``."""
        ids = self._selected(payload)
        return ["done", [self._entry(self.inputs[i]) for i in ids]]

    def _selected(self, payload) -> list:
        if payload in ("", None, []):
            return sorted(self.inputs)
        if not (isinstance(payload, list) and len(payload) == 2
                and payload[0] in ("include", "exclude") and isinstance(payload[1], list)
                and all(isinstance(i, int) for i in payload[1])):
            raise ValueError(f'INPUT payload must be "", ["include", [ids]] or '
                             f'["exclude", [ids]], not {payload!r:.80}')
        chosen = set(payload[1])
        keep = (lambda i: i in chosen) if payload[0] == "include" else (lambda i: i not in chosen)
        return [i for i in sorted(self.inputs) if keep(i)]

    def _entry(self, inp: Input) -> list:
        if not inp.given:
            rep, url = self._next_readable(inp)
            inp.given[rep] = url
        return [inp.id, "ok", inp.label, [[r, u] for r, u in sorted(inp.given.items())]]

    # -- INPUT_ERR --

    def retry(self, payload) -> list | None:
        """The replicas to try after ``INPUT_ERR [id, [rep_ids]]``, or None (``FAIL``)."""
        if not (isinstance(payload, list) and len(payload) == 2 and isinstance(payload[0], int)
                and isinstance(payload[1], list)):
            raise ValueError(f"INPUT_ERR payload must be [input_id, [replica_ids]], not "
                             f"{payload!r:.80}")
        inp = self.inputs.get(payload[0])
        if inp is None:
            raise ValueError(f"INPUT_ERR names input {payload[0]}, which this task does not "
                             f"have (ids 1 to {len(self.inputs)})")
        for rep in payload[1]:
            if rep in inp.given:
                inp.failed.add(rep)
                del inp.given[rep]
        try:
            rep, url = self._next_readable(inp)
        except InputsLost:
            return None
        inp.given[rep] = url
        return [[rep, url]]

    def lost(self) -> str:
        """A ``disco://`` input whose replicas all failed, if any (so its maker is re-run)."""
        for inp in self.inputs.values():
            if len(inp.failed) >= len(inp.urls) and inp.lost_url():
                return inp.lost_url()
        return ""

    # -- making a replica readable --

    def _next_readable(self, inp: Input) -> tuple[int, str]:
        reasons = []
        for rep, url in enumerate(inp.urls, 1):
            if rep in inp.failed or rep in inp.given:
                continue
            try:
                return rep, self.readable(url, f"in-{inp.id}-{rep}")
            except (DiscoError, OSError) as exc:
                inp.failed.add(rep)
                reasons.append(f"{url}: {exc}")
        raise InputsLost(f"input {inp.id} cannot be read: {'; '.join(reasons) or 'every replica failed'}",
                         inp.lost_url())

    def readable(self, url: str, name: str) -> str:
        if url.startswith(("http://", "https://", "file://")):
            return url
        if "://" not in url:
            return "file://" + str(Path(url).resolve())
        if url.startswith(("disco://", "dir://")):
            address, path = split_disco_url(url)
            if address == self.address:
                full = (self.data_dir / path).resolve()
                if not full.is_relative_to(self.data_dir.resolve()) or not full.is_file():
                    raise InputError(f"{url}: no such file on this node", url=url)
                return "file://" + str(full)
            fd, _, _ = open_disco(url.replace("dir://", "disco://", 1), self.address,
                                  self.data_dir)
        else:
            fd, _, _ = task_io.open_input(url)
        return "file://" + str(self._copy(fd, name))

    def _copy(self, fd, name: str) -> Path:
        folder = self.task_dir / "inputs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        tmp = path.with_name(name + ".partial")
        try:
            with fd, open(tmp, "wb") as out:
                shutil.copyfileobj(fd, out, COPY_BYTES)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path
