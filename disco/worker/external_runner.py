"""Running a task of a Disco job pack: the pack's own program, over Disco's worker protocol.

Theory of operation
-------------------
A job pack made from a Disco job pack (disco/discopack.py) has ``header["worker"] =
{"protocol": "disco", "path": P}``: its tasks run the program ``P`` of the pack's job home,
written in any language. :func:`for_task` tells the worker runtime whether a task is one of
those. For each task, :class:`Session`

1. unpacks the job home ZIP once per node per job into ``<data>/jobs/<job>/home/`` (under a
   file lock, so several workers of the job may start at once; ``.disco/unpacked`` marks it
   done) and writes Disco's job pack there, for the ``jobfile`` a program may read;
2. starts ``P`` (made executable; a ``.py`` file is run by this node's Python) in the job home,
   with the job's ``jobenvs``, stdin and stderr piped to us, stdout kept as stray output;
3. answers every request frame the program writes on stderr with one reply on its stdin
   (see docs/worker-protocol.md) until ``DONE``, ``ERROR`` or ``FATAL``;
4. moves each file the program reported with ``OUTPUT`` into ``<data>/vol0/jobs/<job>/`` and
   reports it as a ``disco://`` URL with its label (``TaskDone``), or reports the failure
   (``TaskFailed``: ``ERROR`` may be retried elsewhere, ``FATAL`` ends the job).

A program that breaks the framing, sends a request it may not, or exits before ``DONE`` fails
its task with an error naming what it did, and the last 100 KB of what it printed outside the
protocol as the traceback. The program dies with its worker (``PR_SET_PDEATHSIG``).
"""
from __future__ import annotations

import ctypes
import fcntl
import io
import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import msgpack

from disco import discopack
from disco.error import DiscoError
from disco.worker import protocol, task as task_mod
from disco.worker.external_inputs import Inputs
from mesh import message as m

HANDSHAKE_S = 30.0
EXIT_GRACE_S = 5.0
STRAY_BYTES = 100 * 1024
MESSAGES_PER_S = 10
MESSAGE_CHARS = 4096
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
_jobs: dict[str, "ExternalJob | None"] = {}


class WorkerProtocolError(DiscoError):
    """The worker program broke the protocol: its code is wrong, a retry would not help."""
    retryable = False


class WorkerExited(DiscoError):
    """The worker program ended before ``DONE`` (it may have crashed: try again elsewhere)."""
    retryable = True


def for_task(data_dir: Path, address: str, task: dict) -> "ExternalJob | None":
    """The task's job if its pack runs a program over the protocol, else None (cached)."""
    digest = task.get("jobpack", "")
    if digest not in _jobs:
        blob = task_mod._jobpack(Path(data_dir), digest, address, task.get("jobpack_urls", ()))
        _jobs[digest] = ExternalJob.of(blob, Path(data_dir), task["job"])
    return _jobs[digest]


def _header_only(blob: bytes):
    """The pack's header without unpacking its (maybe large) code and files."""
    unpacker = msgpack.Unpacker(io.BytesIO(blob), raw=False, max_buffer_size=len(blob) + 1)
    try:
        for _ in range(unpacker.read_map_header()):
            if unpacker.unpack() == "header":
                return unpacker.unpack()
            unpacker.skip()
    except (ValueError, msgpack.UnpackException, msgpack.ExtraData):
        return None
    return None


class ExternalJob:
    def __init__(self, name: str, header: dict, disco: dict, data_dir: Path):
        self.name, self.header, self.disco, self.data_dir = name, header, disco, data_dir
        self.root = data_dir / "jobs" / name
        self.home = self.root / "home"
        self.jobfile = self.root / "jobpack.disco"
        self.worker_path = header["worker"]["path"]

    @classmethod
    def of(cls, blob: bytes, data_dir: Path, name: str) -> "ExternalJob | None":
        header = _header_only(blob)
        worker = header.get("worker") if isinstance(header, dict) else None
        if not (isinstance(worker, dict) and worker.get("protocol") == discopack.PROTOCOL):
            return None
        pack = msgpack.unpackb(blob, raw=False)
        return cls(name, header, pack.get("disco") or {}, data_dir)

    def run(self, task: dict, worker) -> m.TaskDone | m.TaskFailed:
        """Run one task for the worker runtime (``worker``: its node, address, send, parent)."""
        return Session(self, task, worker).run()

    def unpack_home(self) -> None:
        """The job home, unpacked once per node: the first worker does it, the others wait."""
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.home / ".disco" / "unpacked"
        if marker.exists():
            return
        with open(self.root / "home.lock", "wb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if marker.exists():
                return
            self._extract()
            pack = discopack.JobPack(self.disco.get("version", 2), self.disco.get("jobdict", {}),
                                     self.disco.get("jobenvs", {}), self.disco.get("jobhome", b""),
                                     self.disco.get("jobdata", b""))
            self.jobfile.write_bytes(pack.dumps())
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_bytes(b"")

    def _extract(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(self.disco.get("jobhome", b""))) as z:
            for info in z.infolist():
                discopack.check_member(info.filename)
                target = self.home / info.filename
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(info))
                mode = (info.external_attr >> 16) & 0o777
                os.chmod(target, mode | 0o600 if mode else 0o644)
        program = self.home / self.worker_path
        os.chmod(program, program.stat().st_mode | 0o755)

    def environment(self, task_dir: Path) -> dict:
        """The program's environment: ours without Disco's settings, plus the jobenvs."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCO_", "DDFS_"))}
        jobenvs = dict(self.disco.get("jobenvs") or {})
        paths = [jobenvs.pop("PYTHONPATH", ""), _PROJECT_ROOT, env.get("PYTHONPATH", "")]
        env.update(jobenvs)
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env.update(DISCO_PYTHON=sys.executable, DISCO_TASK_DIR=str(task_dir))
        return env


try:
    _PRCTL = ctypes.CDLL(None).prctl
except (OSError, AttributeError):  # not Linux: the program may outlive a SIGKILLed worker
    _PRCTL = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


class _Stray:
    """The last STRAY_BYTES of what the program wrote outside the protocol."""

    def __init__(self):
        self.data = bytearray()
        self.lock = threading.Lock()

    def add(self, chunk: bytes) -> None:
        with self.lock:
            self.data += chunk
            if len(self.data) > STRAY_BYTES:
                del self.data[:len(self.data) - STRAY_BYTES]

    def text(self) -> str:
        with self.lock:
            return self.data.decode("utf-8", "replace")

    def drain(self, pipe) -> None:  # a thread: the program must never block on its stdout
        for chunk in iter(lambda: pipe.read1(65536), b""):
            self.add(chunk)


class _Ended(Exception):
    """The session is over (carries its TaskDone or TaskFailed)."""

    def __init__(self, result):
        self.result = result


class Session:
    """One task: one run of the program and its side of the conversation."""

    def __init__(self, job: ExternalJob, task: dict, worker):
        self.job, self.task, self.worker = job, task, worker
        self.data_dir = Path(worker.data_dir)
        self.task_dir = self.data_dir / "jobs" / job.name / "tasks" / (
            f"{_safe(task.get('stage', 'task'))}-{task.get('index', 0)}-"
            f"{task.get('attempt', 0)}-{os.getpid()}")
        self.inputs = Inputs(task, worker.address, self.data_dir, self.task_dir)
        self.decoder = protocol.FrameDecoder()
        self.stray = _Stray()
        self.outputs: list[tuple[int, object, int]] = []  # (label, Path or URL, size)
        self.greeted = self.ending = False
        self.drain: threading.Thread | None = None
        self.proc: subprocess.Popen | None = None
        self._window, self._sent = 0.0, 0
        self.started = time.monotonic()

    # -- the task's life --

    def run(self):
        try:
            self.job.unpack_home()
            self.task_dir.mkdir(parents=True, exist_ok=True)
            self._start()
            self._converse()
        except _Ended as end:
            return end.result
        except (DiscoError, OSError, zipfile.BadZipFile) as exc:
            return self._failed(exc, retryable=getattr(exc, "retryable", True),
                                lost=getattr(exc, "lost_url", ""))
        finally:
            self._stop()
        return self._failed(WorkerExited("the worker program ended"), True)

    def _start(self) -> None:
        program = self.job.home / self.job.worker_path
        argv = [sys.executable, str(program)] if program.suffix == ".py" else [str(program)]
        self.proc = subprocess.Popen(argv, cwd=self.job.home, env=self.job.environment(self.task_dir),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
        self.drain = threading.Thread(target=self.stray.drain, args=(self.proc.stdout,),
                                      daemon=True)
        self.drain.start()
        os.set_blocking(self.proc.stderr.fileno(), False)

    def _stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(EXIT_GRACE_S if self.ending else 0.05)
        except subprocess.TimeoutExpired:
            pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()

    def _converse(self) -> None:
        fd = self.proc.stderr.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                if not sel.select(1.0):
                    self._check_time()
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    self._exited()
                try:
                    frames = self.decoder.feed(chunk)
                except protocol.FrameError as exc:
                    self.stray.add(self.decoder.pending)
                    raise WorkerProtocolError(
                        f"the worker program broke the protocol: {exc}") from None
                for frame in frames:
                    self._reply(self._handle(frame))

    def _check_time(self) -> None:
        if os.getppid() != self.worker.parent:
            raise WorkerExited("the node daemon is gone")
        if not self.greeted and time.monotonic() - self.started > HANDSHAKE_S:
            raise WorkerProtocolError(f"the worker program sent no WORKER message within "
                                      f"{HANDSHAKE_S:.0f} s")

    def _exited(self) -> None:
        code = self.proc.wait()
        if self.drain is not None:
            self.drain.join(2.0)
        self.stray.add(self.decoder.pending)
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise WorkerExited(f"the worker program {how} before sending DONE")

    def _reply(self, frame: tuple[str, object] | None) -> None:
        if frame is None:
            return
        try:
            self.proc.stdin.write(protocol.encode(*frame))
            self.proc.stdin.flush()
        except (BrokenPipeError, ConnectionResetError):
            if not self.ending:  # after DONE, ERROR or FATAL the program may be gone already
                self._exited()

    # -- one handler per request --

    def _handle(self, frame: protocol.Frame):
        if frame.type not in protocol.REQUESTS:
            raise WorkerProtocolError(f"the worker program sent an unknown message "
                                      f"{frame.type} (known: {', '.join(sorted(protocol.REQUESTS))})")
        if not self.greeted and frame.type != "WORKER":
            raise WorkerProtocolError(f"the worker program sent {frame.type} before WORKER")
        try:
            return getattr(self, "_on_" + frame.type.lower())(frame.payload)
        except ValueError as exc:
            raise WorkerProtocolError(f"bad {frame.type} message: {exc}") from None

    def _on_worker(self, payload):
        if self.greeted:
            raise ValueError("WORKER was sent twice")
        version = payload.get("version") if isinstance(payload, dict) else None
        if version != protocol.VERSION:
            raise ValueError(f"protocol version {version!r} is not supported (this node "
                             f"speaks {protocol.VERSION}); the payload is "
                             '{"version": "1.1", "pid": PID}')
        self.greeted = True
        return "OK", "ok"

    def _on_task(self, payload):
        t, address = self.task, self.worker.address
        grouping = t.get("grouping", "split")
        port = int(address.rsplit(":", 1)[1])
        return "TASK", {
            "host": self.worker.node, "master": t.get("master", ""), "jobname": t["job"],
            "taskid": t.get("index", 0), "stage": t.get("stage", ""), "grouping": grouping,
            "group": [t.get("label", 0), self.worker.node if grouping.startswith("group_node")
                      else ""],
            "disco_port": port, "put_port": port, "disco_data": str(self.data_dir),
            "ddfs_data": str(self.data_dir), "jobfile": str(self.job.jobfile),
            "id": t["id"], "attempt": t.get("attempt", 0), "taskdir": str(self.task_dir)}

    def _on_input(self, payload):
        try:
            return "INPUT", self.inputs.listing(payload)
        except DiscoError as exc:
            raise _Ended(self._failed(exc, True, getattr(exc, "lost_url", ""))) from None

    def _on_input_err(self, payload):
        replicas = self.inputs.retry(payload)
        return ("FAIL", "") if replicas is None else ("RETRY", replicas)

    def _on_msg(self, payload):
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window, self._sent = now, 0
        if self._sent >= MESSAGES_PER_S:  # too many: the reply waits for the next second
            time.sleep(max(0.0, 1.0 - (now - self._window)))
            self._window, self._sent = time.monotonic(), 0
        self._sent += 1
        text = payload if isinstance(payload, str) else str(payload)
        self.worker.send(m.TaskMessage(task=self.task["id"], msg=text[:MESSAGE_CHARS]))
        return "OK", "ok"

    def _on_output(self, payload):
        if not (isinstance(payload, list) and len(payload) in (2, 3)
                and isinstance(payload[0], int) and not isinstance(payload[0], bool)
                and payload[0] >= 0 and isinstance(payload[1], str) and payload[1]):
            raise ValueError(f"OUTPUT payload must be [label, path, size] with a label of 0 or "
                             f"more, not {payload!r:.80}")
        label, where = payload[0], payload[1]
        size = payload[2] if len(payload) == 3 and isinstance(payload[2], int) else 0
        if "://" in where:  # a URL: recorded as it is
            self.outputs.append((label, where, size))
            return "OK", "ok"
        path = self._output_path(where)
        if any(p == path for _, p, _ in self.outputs):
            raise ValueError(f"OUTPUT {where!r} was reported twice")
        self.outputs.append((label, path, size))
        return "OK", "ok"

    def _output_path(self, where: str) -> Path:
        home, tdir = self.job.home.resolve(), self.task_dir.resolve()
        candidates = [Path(where)] if os.path.isabs(where) else [home / where, tdir / where]
        for cand in candidates:
            real = cand.resolve()
            inside = real.is_relative_to(home) or real.is_relative_to(tdir)
            if inside and real.is_file() and not real.is_relative_to(home / ".disco"):
                return real
        raise ValueError(f"OUTPUT {where!r} is not a file in the job home ({home}) or the "
                         f"task dir ({tdir})")

    def _on_done(self, payload):
        self.ending = True
        self._reply(("OK", "ok"))
        raise _Ended(self._finished())

    def _on_error(self, payload):
        self.ending = True
        self._reply(("OK", "ok"))
        lost = self.inputs.lost()
        raise _Ended(self._failed(WorkerError(payload), True, lost))

    def _on_fatal(self, payload):
        self.ending = True
        self._reply(("OK", "ok"))
        raise _Ended(self._failed(WorkerFatal(payload), False))

    def _on_ping(self, payload):
        return "OK", "pong"

    # -- results --

    def _finished(self):
        out_dir = self.data_dir / "vol0" / "jobs" / self.job.name
        out_dir.mkdir(parents=True, exist_ok=True)
        outputs, stem = [], f"{_safe(self.task.get('stage', 'task'))}-{self.task.get('index', 0)}"
        for n, (label, where, size) in enumerate(self.outputs):
            if isinstance(where, str):
                outputs.append({"label": label, "url": where, "size": size, "records": 0})
                continue
            suffix = where.suffix if len(where.suffix) <= 10 else ""
            final = out_dir / f"{stem}-{label}-{n}{suffix}"
            shutil.move(where, final)
            outputs.append({"label": label, "url": f"disco://{self.worker.address}/"
                            f"{final.relative_to(self.data_dir).as_posix()}",
                            "size": final.stat().st_size, "records": 0})
        stats = {"seconds": round(time.monotonic() - self.started, 4), "records": 0}
        return m.TaskDone(task=self.task["id"], outputs=outputs, stats=stats)

    def _failed(self, exc: BaseException, retryable: bool, lost: str = ""):
        text = str(exc).strip().splitlines()
        error = f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
        stray = self.stray.text()
        trace = f"{exc}\n\nthe worker program's other output (last {STRAY_BYTES // 1024} KB):\n" \
                f"{stray}" if stray.strip() else str(exc)
        return m.TaskFailed(task=self.task["id"], error=error[:1000], traceback=trace,
                            retryable=bool(retryable), lost=lost)


class WorkerError(DiscoError):
    """An error the worker program reported with ``ERROR``, in its words (retried)."""

    def __init__(self, payload):
        super().__init__(payload if isinstance(payload, str) else repr(payload))

    def __str__(self) -> str:
        return f"the worker program reported: {self.args[0]}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name))[:64] or "task"


class WorkerFatal(WorkerError):
    """An error the worker program reported with ``FATAL``: the job ends."""
