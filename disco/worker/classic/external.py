"""Disco's classic external interface: a map or reduce written as a program in any language.

``package(files)`` makes a callable to give as ``map=`` or ``reduce=`` to ``Job.run``; the
first file is the program, the others are files it needs. They travel inside the callable,
are written once per node into ``ext-<hash>/`` of the job home (the program made executable)
and the program runs there as ``op map`` or ``op reduce``. It talks over its pipes:

- stdin: first the parameters (``ext_params``), then key-value pairs;
- stdout: results, each a count ``<u32 n>`` and then ``n`` pairs;
- stderr: lines ``**<MSG> text`` (a task message) and ``**<ERR> text`` (the job fails).

A pair is ``<u32 len><key><u32 len><value>``, lengths little-endian. A map entry that is not
a ``(key, value)`` pair is sent as the value, with an empty key; after each entry the map
program writes one result list (maybe ``0``). A reduce program gets every pair of its
partition, writes result lists whenever it likes, and ends by exiting. Keys and values are
bytes on the pipes: ``str`` goes as UTF-8, anything else as ``str(x)``; results come back as
``str`` (bytes that are not UTF-8 survive as surrogate escapes).

``ext_params`` (``package(files, ext_params=...)``, or an ``ext_params`` entry of the job's
params) is written first: a dict of strings in Disco's netstring format (``TOTAL\\n`` then
``KLEN KEY VLEN VALUE\\n`` per entry, lengths in bytes), a string or bytes as it is, nothing
as ``0\\n``.

A map's program runs once per task: the map is called per entry, and a new task (its params
are a fresh copy) starts a new process, the previous one's stdin closed.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import queue
import struct
import subprocess
import threading
from pathlib import Path

from disco.error import DataError, DiscoError
from disco.worker.external_runner import _die_with_parent  # the program dies with its worker

__all__ = ["External", "ExternalError", "encode_params", "package"]

MAX_ITEM_BYTES = 1 << 30
_U32 = struct.Struct("<I")
MSG, ERR = "**<MSG>", "**<ERR>"


class ExternalError(DiscoError):
    """The external program reported an error (``**<ERR>``) or broke the interface."""
    retryable = False


class ExternalDied(DataError):
    """The external program ended unexpectedly (a crash may not recur elsewhere)."""


def package(files, ext_params=None, mode: str | None = None) -> "External":
    """A callable running ``files[0]`` as a map or reduce; ``files[1:]`` go next to it.

    ``mode`` ("map" or "reduce") is found from the call when not given: an iterator of pairs
    is a reduce's input, anything else a map's entry.
    """
    files = list(files)
    if not files:
        raise DiscoError("package() needs the external program as its first file")
    return External({os.path.basename(f): Path(f).read_bytes() for f in files[1:]},
                    Path(files[0]).read_bytes(), ext_params, mode)


def encode_params(params) -> bytes:
    if params is None or params == {} or params == "" or params == b"":
        return b"0\n"
    if isinstance(params, bytes):
        return params
    if isinstance(params, str):
        return params.encode()
    if isinstance(params, dict):
        body = b"".join(b"%d %s %d %s\n" % (len(k), k, len(v), v)
                        for k, v in ((_b(k), _b(v)) for k, v in params.items()))
        return b"%d\n%s" % (len(body), body)
    raise DiscoError(f"ext_params must be a dict of strings, a string or bytes, not "
                     f"{type(params).__name__}")


def _b(x) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode("utf-8")


def _s(x: bytes) -> str:
    return x.decode("utf-8", "surrogateescape")


def _pair(entry) -> bytes:
    k, v = entry if isinstance(entry, tuple) and len(entry) == 2 else ("", entry)
    k, v = _b(k), _b(v)
    return _U32.pack(len(k)) + k + _U32.pack(len(v)) + v


class External:
    """The program and its files, picklable; the running process is per worker, not pickled."""

    def __init__(self, files: dict, op: bytes, ext_params=None, mode: str | None = None):
        if mode not in (None, "map", "reduce"):
            raise DiscoError(f"mode must be 'map' or 'reduce', not {mode!r}")
        self.files, self.op, self.ext_params, self.mode = files, op, ext_params, mode
        self.digest = hashlib.sha256(op + b"".join(
            k.encode() + v for k, v in sorted(files.items()))).hexdigest()[:16]
        self._proc: _Process | None = None
        self._task_params = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_proc"], state["_task_params"] = None, None
        return state

    def __call__(self, data, params=None):
        mode = self.mode or ("reduce" if hasattr(data, "__next__") else "map")
        return self._map(data, params) if mode == "map" else self._reduce(data, params)

    def __repr__(self) -> str:
        return f"<external program {self.digest}>"

    # -- running --

    def home(self) -> Path:
        """``ext-<hash>/`` in the current dir (the job home), written once (atomically)."""
        where = Path.cwd() / f"ext-{self.digest}"
        ok = where / ".complete"
        if ok.exists():
            return where
        where.mkdir(exist_ok=True)
        for name, content in [*self.files.items(), ("op", self.op)]:
            tmp = where / f".{name}.{os.getpid()}.tmp"
            tmp.write_bytes(content)
            os.chmod(tmp, 0o755 if name == "op" else 0o644)
            os.replace(tmp, where / name)
        ok.write_bytes(b"")
        return where

    def _params(self, params):
        if self.ext_params is not None:
            return self.ext_params
        if isinstance(params, dict):
            return params.get("ext_params")
        return getattr(params, "ext_params", None)

    def _map(self, entry, params) -> list:
        if self._proc is None or self._task_params is not params:
            self.close()
            self._proc = _Process(self.home(), "map", encode_params(self._params(params)))
            self._task_params = params
        return self._proc.map_one(_pair(entry))

    def _reduce(self, pairs, params):
        proc = _Process(self.home(), "reduce", encode_params(self._params(params)))
        try:
            yield from proc.reduce_all(pairs)
        finally:
            proc.close()

    def close(self) -> None:
        if self._proc is not None:
            self._proc.close()
            self._proc = None


_running: set = set()
atexit.register(lambda: [p.close() for p in list(_running)])


class _Process:
    """One run of the program. Messages from its stderr are printed from the calling thread
    (task prints become task messages, and those may only be sent from there)."""

    def __init__(self, home: Path, mode: str, params: bytes):
        self.mode = mode
        try:
            self.proc = subprocess.Popen([str(home / "op"), mode], cwd=home,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
        except OSError as exc:
            raise ExternalError(f"the external program cannot start: {exc}") from None
        _running.add(self)
        self.lines: queue.Queue = queue.Queue()
        self.errors: list[str] = []
        self.reader = threading.Thread(target=self._read_stderr, daemon=True)
        self.reader.start()
        self._write(params)

    def _read_stderr(self) -> None:
        for raw in iter(self.proc.stderr.readline, b""):
            self.lines.put(_s(raw).rstrip("\n"))

    def relay(self) -> None:
        """Print its messages so far; raise its ``**<ERR>``."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line.startswith(ERR):
                self.errors.append(line[len(ERR):].strip())
            else:
                print(line[len(MSG):].strip() if line.startswith(MSG) else line)
        if self.errors:
            raise ExternalError(f"the external {self.mode} failed: {self.errors[0]}")

    def _write(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, ConnectionResetError):
            self._died()

    def _read(self, n: int) -> bytes | None:
        data = self.proc.stdout.read(n)
        if len(data) == n:
            return data
        if not data:
            return None
        self._died(f"it wrote {len(data)} of {n} bytes and ended")

    def _died(self, how: str = "") -> None:
        code = self.proc.wait()
        self.reader.join(5)
        self.relay()
        what = how or (f"it exited with code {code}" if code >= 0 else f"signal {-code}")
        raise ExternalDied(f"the external {self.mode} ended unexpectedly: {what}")

    def _u32(self) -> int | None:
        head = self._read(4)
        return None if head is None else _U32.unpack(head)[0]

    def _item(self) -> bytes:
        size = self._u32()
        if size is None:
            self._died("it ended inside a key-value pair")
        if size > MAX_ITEM_BYTES:
            raise ExternalError(f"the external {self.mode} wrote an item of {size} bytes "
                                f"(limit {MAX_ITEM_BYTES}): is it writing the format?")
        return self._read(size) if size else b""

    def _results(self, n: int) -> list:
        out = []
        for _ in range(n):
            k = self._item()
            out.append((_s(k), _s(self._item())))
        return out

    def map_one(self, pair: bytes) -> list:
        self._write(pair)
        n = self._u32()
        if n is None:
            self._died()
        results = self._results(n)
        self.relay()
        return results

    def reduce_all(self, pairs):
        feeder_error: list = []
        feeder = threading.Thread(target=self._feed, args=(pairs, feeder_error), daemon=True)
        feeder.start()
        while (n := self._u32()) is not None:
            yield from self._results(n)
            self.relay()
        code = self.proc.wait()
        feeder.join()
        self.reader.join(5)
        self.relay()
        if feeder_error:
            raise feeder_error[0]
        if code != 0:
            raise ExternalDied(f"the external reduce exited with code {code}")

    def _feed(self, pairs, errors: list) -> None:
        try:
            for pair in pairs:
                self.proc.stdin.write(_pair(tuple(pair)))
            self.proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it stopped reading: its exit status says the rest
        except BaseException as exc:  # the task's input failed: fail the task with it
            errors.append(exc)
            self.proc.kill()

    def close(self) -> None:
        _running.discard(self)
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        try:
            self.relay()
        except ExternalError:
            pass
