"""The ``disco`` command: node daemons and jobs.

Every command exits 0 on success and otherwise prints one line, ``disco: error: ...``, on
stderr (no traceback for user errors). Job commands talk to ``--master`` / ``DISCO_MASTER``
(``host:port``), or to the node on ``127.0.0.1:$DISCO_PORT`` when it is unset. Job names accept
Disco's history shorthands: ``@`` is the most recent job, ``@?TEXT`` the most recent whose name
contains TEXT.
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from common.error import PortInUse
from disco import error
from disco.settings import DEFAULT_PORT, is_local, node_settings, parse_address

VERSION = "0.1.0"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0
HELLO_TIMEOUT_S = 5.0


def _fail(msg: str, code: int = 1):
    click.echo(f"disco: error: {msg}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns our errors into one clear line instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except error.JobError as exc:
            _fail(str(exc).splitlines()[0] if exc.traceback else str(exc), 2)
        except PortInUse as exc:  # a status of its own: a starter may try other ports
            _fail(str(exc), PortInUse.EXIT_CODE)
        except error.DiscoError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:
            sys.stderr.close()  # `disco results JOB | head`: the reader went away
            sys.exit(0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="disco")
@click.option("--secret-file", "client_secret", type=click.Path(dir_okay=False),
              help="Cluster secret for talking to nodes [env DISCO_SECRET_FILE].")
def cli(client_secret):
    """Disco MapReduce over a ZeroMQ peer mesh.

    Start a node with `disco start`, run a job with Python (`from disco.core import Job`) or
    `disco run MODULE.JOBCLASS INPUT...`, and follow it with `disco events @`.
    """
    if client_secret:
        os.environ["DISCO_SECRET_FILE"] = os.path.abspath(client_secret)


# -- node daemons --------------------------------------------------------------------------

def _node_options(func):
    opts = [
        click.option("--host", help="Address to bind and advertise [env DISCO_HOST; 127.0.0.1]."),
        click.option("--port", type=int, help="Control port; the node also uses port+1 "
                     "(data) and port+2 (HTTP, unless --http-port) [env DISCO_PORT; 8989]."),
        click.option("--data", type=click.Path(file_okay=False), help="Data dir: volumes, job "
                     "data, logs, pid file [env DISCO_DATA; ~/.local/share/disco/node-PORT]."),
        click.option("--join", multiple=True, metavar="H:P", help="Seed node to join (repeatable) "
                     "[env DISCO_JOIN, comma-separated]."),
        click.option("--workers", type=int, help="Task slots [env DISCO_WORKERS; CPU count]."),
        click.option("--name", help="Node name [env DISCO_NODE_NAME; HOST:PORT]."),
        click.option("--secret-file", type=click.Path(dir_okay=False),
                     help="Cluster secret [env DISCO_SECRET_FILE]."),
        click.option("--insecure", is_flag=True, help="Allow binding a non-loopback address "
                     "without a secret."),
        click.option("--http-port", type=int, help="The status page, /metrics and /api/ "
                     "[env DISCO_HTTP_PORT; port+2; 0 turns it off]."),
        click.option("--config", type=click.Path(dir_okay=False), help="A TOML config file "
                     "[env DISCO_CONFIG; ~/.config/disco/config.toml, /etc/disco/config.toml]."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _settings(host, port, data, join, workers, name, secret_file, insecure, http_port, config):
    return node_settings(host=host, port=port, data=data, join=join, workers=workers, name=name,
                         secret_file=secret_file, insecure=insecure, http_port=http_port,
                         config=config)


@cli.command()
@_node_options
@click.option("--console/--no-console", default=True, hidden=True)
def nodaemon(console, **opts):
    """Run a node daemon in the foreground, logging to stderr."""
    s = _settings(**opts)
    from disco.settings import resolve
    resolved = resolve(config=opts["config"])
    for key in ("sort_mb", "fuse", "log_mb", "log_files"):  # read by the log and the workers
        os.environ.setdefault(f"DISCO_{key.upper()}", str(resolved[key][0]))
    s.log_dir.mkdir(parents=True, exist_ok=True)
    if s.secret_file:  # as the daemon sets it: its workers (and so the zygote) use it too
        os.environ["DISCO_SECRET_FILE"] = s.secret_path
    from mesh.spawner import start_early
    zygote = start_early(s.data_dir, s.name, s.address)  # its imports run beside the daemon's
    from disco import log as disco_log
    from mesh import daemon
    disco_log.configure(s.log_dir / "node.jsonl", console=console, node=s.name)
    sys.exit(daemon.main(s, zygote=zygote))


@cli.command()
@_node_options
def start(**opts):
    """Start a node daemon in the background; return once it answers.

    \b
    Examples:
      disco start                                    a new cluster on 127.0.0.1:8989
      disco start --port 9000 --data /tmp/n2 --join 127.0.0.1:8989
      disco start --host 10.0.0.5 --secret-file ~/.disco.secret
    """
    s = _settings(**opts)
    running = _running_pid(s.data_dir)
    if running:
        _fail(f"a node already runs from {s.data_dir} (pid {running}); `disco stop --data "
              f"{s.data_dir}` first")
    s.log_dir.mkdir(parents=True, exist_ok=True)
    err_path = s.log_dir / "daemon.err"
    argv = [sys.executable, "-P", "-m", "disco.cli", "nodaemon", "--no-console",
            "--host", s.host, "--port", str(s.port), "--data", str(s.data_dir),
            "--workers", str(s.workers), "--name", s.name, "--http-port", str(s.http_port)]
    for seed in s.join:
        argv += ["--join", seed]
    if opts.get("config"):
        argv += ["--config", os.path.abspath(opts["config"])]
    if s.secret_file:
        secret = os.path.abspath(s.secret_file)
        argv += ["--secret-file", secret]
        os.environ["DISCO_SECRET_FILE"] = secret  # so that we can ask the node if it is up
    if s.insecure:
        argv.append("--insecure")
    with open(err_path, "ab") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True, env=_child_env())
    from disco.client import await_started
    # our own process must answer: another node on that port answers too
    if await_started(proc, f"{_dial(s.host)}:{s.port}", s.pid_file,
                     time.monotonic() + START_TIMEOUT_S):
        click.echo(f"node {s.name} started at {s.address} (pid {proc.pid}, data {s.data_dir})")
        if s.http_port:
            click.echo(f"status page: {_page_url(s)}")
        same_secret = f" --secret-file {secret}" if s.secret_file else ""
        click.echo(f"join another node to it with: disco start --join {s.address} "
                   f"--port OTHER_PORT --data OTHER_DIR{same_secret}")
        return
    if proc.poll() is not None:
        _fail(f"the node exited with status {proc.returncode}: {_last_line(err_path)} "
              f"(log: {err_path})")
    proc.terminate()
    _fail(f"the node did not answer within {START_TIMEOUT_S:g} s (log: {s.log_dir})")


def _page_url(s) -> str:
    url = f"http://{_dial(s.host)}:{s.http_port}/"
    if s.secret_file:
        from mesh.httpserver import token_for
        from mesh.security import read_secret
        url += f"?token={token_for(read_secret(s.secret_file))}"
    return url


@cli.command()
@click.option("--port", type=int, help="Find the node by its control port [env DISCO_PORT].")
@click.option("--data", type=click.Path(file_okay=False), help="Find the node by its data dir.")
def stop(port, data):
    """Stop a node gracefully (SIGTERM) and wait until it has exited.

    \b
    Example: disco stop --port 9000
    """
    _stop(_find_data(port, data))


@cli.command()
@_node_options
@click.pass_context
def restart(ctx, **opts):
    """Stop the node (if it runs) and start it again with these settings."""
    s = _settings(**opts)
    if _running_pid(s.data_dir):
        _stop(s.data_dir)
    ctx.invoke(start, **opts)


@cli.command()
@click.option("--port", type=int, help="Ask the node on this control port [env DISCO_PORT].")
@click.option("--data", type=click.Path(file_okay=False), help="Ask the node of this data dir.")
@click.option("--host", help="Host of the node to ask [env DISCO_HOST; 127.0.0.1].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(port, data, host, as_json):
    """Show the cluster as one node sees it: members, states, slots, disk, master, term.

    Asks the node of --port/--data/--host, else the one DISCO_MASTER names, else
    127.0.0.1:8989.

    \b
    Examples: disco status;  disco status --port 9000 --json
    """
    from disco.client import Connection
    from mesh import message as m
    address = _node_address(port, data, host)
    state = Connection(address, 5.0).request(m.GetStatus)
    if as_json:
        click.echo(json.dumps(state))
        return
    click.echo(f"node {state['node']}   master {state['master'] or '-'}   term {state['term']}")
    rows = [("NAME", "ADDRESS", "STATE", "ROLE", "SLOTS BUSY/TOTAL", "DDFS DATA", "FS USED",
             "FS FREE")]
    for mem in state["members"]:
        gone = mem["state"] in ("dead", "left")
        rows.append((mem["name"], mem["address"], mem["state"],
                     "master" if mem["master"] else "-",
                     "-" if gone else f"{mem['slots']['busy']}/{mem['slots']['total']}",
                     "-" if gone else _size(mem.get("data", {}).get("blobs", 0)),
                     "-" if gone else _size(mem["disk"]["used"]),
                     "-" if gone else _size(mem["disk"]["free"])))
    _table(rows)
    click.echo("(DDFS DATA: the blob copies the node holds; FS USED/FREE: its data dir's "
               "filesystem)")


def _find_data(port, data) -> Path:
    if data:
        return Path(data).expanduser().absolute()
    if port is None and os.environ.get("DISCO_DATA"):
        return Path(os.environ["DISCO_DATA"]).expanduser().absolute()
    default = node_settings(port=port).data_dir
    if _running_pid(default) is None:  # started with --data elsewhere: ask the node itself
        from disco.client import Connection
        from disco.settings import PYTHON
        from mesh import message as m
        s = node_settings(port=port)
        try:
            hello = Connection(f"{_dial(s.host)}:{s.port}", 2.0).request(m.Hello, python=PYTHON)
            return Path(hello["data"])
        except (error.DiscoError, KeyError):
            pass
    return default


def _node_address(port, data, host) -> str:
    if data:
        info = _node_info(Path(data).expanduser().absolute())
        if info is None:
            _fail(f"no node runs from {data} (no node.json there)")
        host_, port_ = parse_address(info["address"])
        return f"{_dial(host_)}:{port_}"
    master = os.environ.get("DISCO_MASTER", "")
    if host is None and port is None and master and not is_local(master):
        parse_address(master)
        return master  # any node of the cluster shows the cluster
    s = node_settings(host=host, port=port)
    return f"{_dial(s.host)}:{s.port}"


def _dial(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def _node_info(data_dir: Path) -> dict | None:
    try:
        return json.loads((data_dir / "node.json").read_text())
    except (OSError, ValueError):
        return None


def _running_pid(data_dir: Path) -> int | None:
    """The pid in ``data_dir/disco.pid`` if that process is alive and is a disco node."""
    try:
        pid = int((data_dir / "disco.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"disco" in cmdline else None


def _stop(data_dir: Path) -> None:
    pid = _running_pid(data_dir)
    if pid is None:
        _fail(f"no node runs from {data_dir} (no live pid in {data_dir / 'disco.pid'})")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            click.echo(f"node (pid {pid}) stopped")
            return
        time.sleep(0.05)
    _fail(f"node (pid {pid}) did not stop within {STOP_TIMEOUT_S:g} s")


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _child_env() -> dict:
    root = str(Path(__file__).resolve().parent.parent)
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p))


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    last = lines[-1] if lines else "no output"
    return last.removeprefix("disco: error: ")  # the daemon's own one-line error


# -- jobs ----------------------------------------------------------------------------------

def _master_option(func):
    return click.option("--master", envvar="DISCO_MASTER", metavar="HOST:PORT",
                        help="Node to talk to [env DISCO_MASTER; 127.0.0.1:$DISCO_PORT].")(func)


def _disco(master):
    from disco.core import Disco
    if is_local(master):
        _fail("DISCO_MASTER=local starts a cluster that lives only as long as one process; "
              "start a node with `disco start` and point DISCO_MASTER at it")
    if not master:
        master = f"127.0.0.1:{os.environ.get('DISCO_PORT') or DEFAULT_PORT}"
    from disco.client import Connection
    from disco.settings import PYTHON
    from mesh import message as m
    Connection(master, HELLO_TIMEOUT_S).request(m.Hello, python=PYTHON)  # fail fast, clearly
    return Disco(master)


def _jobname(disco, name: str) -> str:
    """Resolve ``@`` and ``@?TEXT`` against the job history (most recent first)."""
    if not name.startswith("@"):
        return name
    jobs = sorted(disco.jobs(), key=lambda j: j["submitted"], reverse=True)
    text = name[2:] if name.startswith("@?") else None
    if name not in ("@",) and text is None:
        _fail(f"bad job reference {name!r}: use a job name, @ or @?TEXT")
    for job in jobs:
        if text is None or text in job["job"]:
            return job["job"]
    _fail("no jobs yet" if text is None else f"no job whose name contains {text!r}")


@cli.command()
@_master_option
@click.option("--wait", "wait_", is_flag=True, help="Wait for the job and print its results' URLs.")
@click.option("--partitions", type=int, help="Override the job class's partitions.")
@click.option("--name", help="Job name prefix (default: the class name).")
@click.argument("jobclass")
@click.argument("inputs", nargs=-1, required=True)
def run(master, wait_, partitions, name, jobclass, inputs):
    """Submit MODULE.JOBCLASS over INPUT... and print the job's name.

    MODULE is imported from the current directory, as Python would; JOBCLASS is a
    subclass of disco.core.Job whose attributes (map, reduce, partitions, ...) are the job.

    \b
    Examples (from the project's examples/ directory, whose wordcount.py has one):
      disco run wordcount.WordCount data.txt --wait
      disco run wordcount.WordCount tag://data:text --partitions 4
    """
    module_name, _, class_name = jobclass.rpartition(".")
    if not module_name:
        _fail(f"{jobclass!r}: expected MODULE.JOBCLASS, e.g. wordcount.WordCount")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        _fail(f"cannot import {module_name!r} from {os.getcwd()}: {exc}")
    klass = getattr(module, class_name, None)
    from disco.core import Job
    if klass is None:
        _fail(f"module {module_name!r} ({getattr(module, '__file__', '?')}) has no "
              f"{class_name!r}")
    if not (isinstance(klass, type) and issubclass(klass, Job)):
        _fail(f"{jobclass!r} is not a Job subclass (it is {klass!r:.80})")
    disco = _disco(master)
    job = klass(name=name)
    job._disco = disco
    extra = {"partitions": partitions} if partitions else {}
    job.run(input=list(inputs), **extra)
    click.echo(job.name)
    if wait_:
        _print_results(job.wait)


def _print_results(wait) -> None:
    """Print the results ``wait()`` returns, one per line; for a failed job its whole error
    (the task, node and traceback) on stderr, and exit 2."""
    try:
        urls = wait()
    except error.JobError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    for url in urls:
        click.echo(url)


@cli.command()
@_master_option
@click.option("--show", is_flag=True, help="Print progress while waiting.")
@click.option("--timeout", type=float, help="Give up after this many seconds.")
@click.argument("job")
def wait(master, show, timeout, job):
    """Wait for JOB; exit 0 if it finished, non-zero if it failed or was killed.

    JOB is a job name, @ (the most recent job) or @?TEXT (the most recent whose name contains TEXT).

    \b
    Examples: disco wait @ --show;  disco wait @?WordCount --timeout 60
    """
    disco = _disco(master)
    name = _jobname(disco, job)
    _print_results(lambda: disco.wait(name, timeout=timeout, show=show))


@cli.command()
@_master_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def jobs(master, as_json):
    """List jobs, most recent first."""
    rows = sorted(_disco(master).jobs(), key=lambda j: j["submitted"], reverse=True)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["submitted"]))
        click.echo(f"{row['status']:<9} {when}  {row['job']}")


@cli.command()
@_master_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.argument("job")
def events(master, as_json, job):
    """Print JOB's events: task starts (with their node), messages, failures, progress.

    JOB is a job name, @ (the most recent job) or @?TEXT (the most recent whose name contains TEXT).

    \b
    Examples: disco events @;  disco events @?WordCount --json
    """
    disco = _disco(master)
    name = _jobname(disco, job)
    offset = 0
    while True:
        from mesh import message as m
        reply = disco.request(m.GetEvents, job=name, offset=offset)
        for event in reply["events"]:
            if as_json:
                click.echo(json.dumps(event))
            else:
                when = time.strftime("%H:%M:%S", time.localtime(event["time"]))
                msg = event["msg"]
                where = " ".join(f"{k}={event[k]}" for k in ("stage", "task", "node")
                                 if k in event and str(event[k]) not in msg)
                click.echo(f"{when} {event['type']:<14} {where + ' ' if where else ''}{msg}")
        if reply["offset"] == offset or not reply["events"]:
            return
        offset = reply["offset"]


@cli.command()
@_master_option
@click.argument("job")
def results(master, job):
    """Print JOB's result URLs, one per line.

    JOB is a job name, @ (the most recent job) or @?TEXT (the most recent whose name contains TEXT).

    \b
    Example: disco results @ | head
    """
    disco = _disco(master)
    name = _jobname(disco, job)
    status = disco.status(name)
    state, urls = status["status"], status["results"]
    if state != "finished":
        how = {"failed": "has failed", "killed": "was killed"}.get(state, f"is {state}")
        _fail(f"job {name} {how}; it has no results (`disco events {name}` says why)"
              if state in ("failed", "killed") else f"job {name} {how}; it has no results yet")
    for url in urls:
        click.echo(url if isinstance(url, str) else " ".join(url))


def _job_action(verb: str, doc: str):
    @_master_option
    @click.argument("job")
    def command(master, job):
        disco = _disco(master)
        name = _jobname(disco, job)
        getattr(disco, verb)(name)
        click.echo(f"{verb}: {name}")
    command.__doc__ = doc
    cli.command(verb)(command)


JOB_NOTE = ("JOB is a job name, @ (the most recent job) or @?TEXT (the most recent whose "
            "name contains TEXT).")
_job_action("kill", f"Stop JOB's running tasks and mark it killed.\n\n{JOB_NOTE}\n\n"
            "\b\nExample: disco kill @")
_job_action("purge", "Delete JOB and all its data (kills it first if it runs).\n\n"
            f"{JOB_NOTE}\n\n\b\nExample: disco purge @?WordCount")


@cli.command()
@_master_option
@click.argument("job")
def jobdict(master, job):
    """Print JOB's job dict (inputs, functions, partitions...) as JSON.

    JOB is a job name, @ (the most recent job) or @?TEXT (the most recent whose name contains TEXT).
    """
    disco = _disco(master)
    click.echo(json.dumps(disco.jobdict(_jobname(disco, job)), indent=2, default=str))


@cli.command()
@_master_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def nodeinfo(master, as_json):
    """Show the nodes the master schedules on."""
    info = _disco(master).node_table()
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"master {info['master']}   term {info['term']}")
    rows = [("NAME", "ADDRESS", "STATE", "SLOTS", "BUSY", "BLACKLISTED")]
    for n in info["nodes"]:
        rows.append((n["name"], n["address"], n["state"], str(n["slots"]), str(n["busy"]),
                     "yes" if n["blacklisted"] else "no"))
    _table(rows)


def _node_action(verb: str, doc: str):
    @_master_option
    @click.argument("node")
    def command(master, node):
        getattr(_disco(master), verb)(node)
        click.echo(f"{verb}: {node}")
    command.__doc__ = doc
    cli.command(verb)(command)


_node_action("blacklist", "Stop scheduling new tasks on NODE.")
_node_action("whitelist", "Schedule tasks on NODE again.")


@cli.command()
@click.option("--port", type=int, help="This machine's node by its control port.")
@click.option("--data", type=click.Path(file_okay=False), help="This machine's node by its "
              "data dir.")
@click.option("--node", "node", metavar="HOST:PORT", help="Any node of the cluster (its "
              "HTTP port, PORT+2, is asked).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events.")
@click.option("--job", help="Only events of this job (JOB, or @ / @?TEXT: the latest job, "
              "or the latest whose name holds TEXT, on the node read).")
@click.option("--level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Only events at this level or above.")
@click.option("-n", "--lines", type=int, default=50, show_default=True,
              help="How many recent events to start with.")
@click.option("--json", "as_json", is_flag=True, help="The events as JSON lines.")
def logs(port, data, node, follow, job, level, lines, as_json):
    """A node's recent log events, readably.

    \b
    Examples:
      disco logs --port 8989 -n 20          the node on this machine's port 8989
      disco logs --node 10.0.0.2:8989 -f    follow another node of the cluster
      disco logs --job @ --level warning
    """
    if node:
        fetch = _remote_logs(node)
    else:
        data_dir = _find_data(port, data)
        fetch = _local_logs(data_dir / "logs" / "node.jsonl")
    if job and ("@" == job or job.startswith("@?")):
        job = _jobname(_disco(node or _node_address(port, data, None)), job)
    order = ["debug", "info", "warning", "error", "critical"]
    floor = order.index(level) if level else 0
    offset = -max(1, lines)
    while True:
        events, offset = fetch(offset)
        for e in events:
            if job and e.get("job") != job:
                continue
            lvl = e.get("level", "info")
            if lvl in order and order.index(lvl) < floor:
                continue
            click.echo(json.dumps(e) if as_json else _log_line(e))
        if not follow:
            return
        time.sleep(1.0)


def _log_line(e: dict) -> str:
    rest = " ".join(f"{k}={v}" for k, v in e.items()
                    if k not in ("timestamp", "level", "event", "node"))
    stamp = str(e.get("timestamp", ""))[:23].replace("T", " ")
    return f"{stamp} {e.get('level', ''):7} {e.get('event', '')} {rest}".rstrip()


def _local_logs(path: Path):
    from mesh.httpserver import NodeView
    view = NodeView("", lambda: {}, path)
    return lambda offset: (lambda r: (r["events"], r["offset"]))(view.logs(offset))


def _remote_logs(node: str):
    import urllib.error
    import urllib.request
    host, port = parse_address(node)
    headers = {}
    secret = os.environ.get("DISCO_SECRET_FILE")
    if secret:
        from mesh.httpserver import token_for
        from mesh.security import read_secret
        headers["X-Disco-Token"] = token_for(read_secret(secret))

    def fetch(offset):
        url = f"http://{host}:{port + 2}/api/logs?offset={offset}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                        timeout=10) as resp:
                body = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise error.CommError(f"cannot read the log of {node} over HTTP ({url}): "
                                  f"{getattr(exc, 'reason', exc)}") from None
        return body["events"], body["offset"]
    return fetch


@cli.group()
def config():
    """The settings in effect: `disco config show`."""


@config.command("show")
@click.option("--config", "path", type=click.Path(dir_okay=False),
              help="A TOML config file [env DISCO_CONFIG].")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: key -> value, source.")
def config_show(path, as_json):
    """Print every setting's effective value and where it came from (flag, env, file,
    default). Keys are those of the config file.

    \b
    Example ~/.config/disco/config.toml:
      workers = 4
      join = ["10.0.0.1:8989"]
      secret_file = "~/.disco.secret"
      ddfs_blob_replicas = 2
    """
    from disco.settings import SETTINGS, config_path, default_data_dir, resolve
    values = resolve(config=path)
    if as_json:
        click.echo(json.dumps({k: {"value": v, "source": src} for k, (v, src) in values.items()}))
        return
    where = config_path(path)
    click.echo(f"config file: {where or 'none (see --config, DISCO_CONFIG)'}")
    port = values["port"][0]
    derived = {"http_port": f"{port + 2} (port+2)", "data": str(default_data_dir(port)),
               "name": f"{values['host'][0]}:{port}", "mesh_preset": "by --host"}
    rows = [("KEY", "VALUE", "SOURCE", "ENV")]
    for st in SETTINGS:
        value, source = values[st.key]
        if source == "default" and st.key in derived and not value:
            value = derived[st.key]
        shown = ",".join(value) if isinstance(value, list) else ("" if value is None else value)
        rows.append((st.key, str(shown), source, st.env))
    _table(rows)


@cli.command()
def version():
    """Print the version of disco and of its Python."""
    from disco.settings import PYTHON
    from mesh.message import VERSION as PROTO
    click.echo(f"disco {VERSION} (protocol {PROTO}, Python {PYTHON})")


# -- output helpers ------------------------------------------------------------------------

def _table(rows: list[tuple]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def main() -> None:
    cli(prog_name="disco")


if __name__ == "__main__":
    main()
