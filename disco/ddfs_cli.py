"""The ``ddfs`` command: DDFS tags and blobs from a shell.

Every subcommand exits 0 on success and otherwise prints one line, ``ddfs: error: ...``, on
stderr. It talks to ``--master`` / ``DISCO_MASTER`` (``host:port``), as ``disco`` does.
Arguments that contain ``://`` are URLs; bare words are tag names (``tag://NAME`` also works).
"""
from __future__ import annotations

import json
import os
import shutil
import sys

import click

from disco import error

HELP = {"help_option_names": ["-h", "--help"]}


def _fail(msg: str, code: int = 1):
    click.echo(f"ddfs: error: {msg}", err=True)
    sys.exit(code)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except error.DiscoError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:
            sys.stderr.close()
            sys.exit(0)


@click.group(cls=_Group, context_settings=HELP)
@click.option("-M", "--master", envvar="DISCO_MASTER", metavar="HOST:PORT",
              help="Any node of the cluster [env DISCO_MASTER].")
@click.option("--secret-file", type=click.Path(dir_okay=False),
              help="Cluster secret [env DISCO_SECRET_FILE].")
@click.pass_context
def cli(ctx, master, secret_file):
    """DDFS, the cluster's replicated tag/blob store.

    \b
    Examples:
      ddfs push data:logs ./a.log ./b.log     store two files (k copies each), tag them
      ddfs chunk data:text big.txt -S 64      record-format chunks of at most 64 MB
      ddfs blobs data:logs                    one line per blob: its replica URLs
      ddfs cat data:logs | wc -l              the blobs' bytes
      ddfs ls data:                           tags whose names start with data:
      ddfs rm data:logs
    """
    if secret_file:
        os.environ["DISCO_SECRET_FILE"] = os.path.abspath(secret_file)
    ctx.obj = {"master": master}


def _ddfs(ctx):
    from disco.ddfs import DDFS
    obj = ctx.find_root().obj
    if "ddfs" not in obj:
        obj["ddfs"] = DDFS(_master(obj["master"]))
    return obj["ddfs"]


def _master(master):
    """The node to talk to, as ``disco``'s job commands find it: never an embedded cluster,
    whose data would be gone when this command exits."""
    from disco.settings import DEFAULT_PORT, is_local
    if is_local(master):
        _fail("DISCO_MASTER=local starts a cluster that lives only as long as one process, and "
              "its DDFS with it; start a node with `disco start` and point DISCO_MASTER at it")
    return master or f"127.0.0.1:{os.environ.get('DISCO_PORT') or DEFAULT_PORT}"


def _command(name):
    return cli.command(name, context_settings=HELP)


@_command("push")
@click.argument("tag")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("-n", "--replicas", type=int, help="Copies of each blob [DDFS_BLOB_REPLICAS].")
@click.option("-r", "--recursive", is_flag=True, help="Push the files of directories too.")
@click.option("-u", "--update", is_flag=True, help="Skip blobs the tag holds already.")
@click.pass_context
def push(ctx, tag, files, replicas, recursive, update):
    """Store FILES as blobs (k copies each, fsynced) and add them to TAG.

    \b
    Example: ddfs push data:logs ./a.log ./b.log
    """
    paths = []
    for f in files:
        if not os.path.exists(f):
            _fail(f"{f}: no such file or directory")
        if os.path.isdir(f):
            if not recursive:
                _fail(f"{f} is a directory (use -r to push its files)")
            paths += sorted(os.path.join(d, n) for d, _, ns in os.walk(f) for n in ns)
        else:
            paths.append(f)
    ddfs = _ddfs(ctx)
    from disco.progress import Transfer
    bar = Transfer(f"push {_name(tag)}", sum(os.path.getsize(p) for p in paths), sys.stderr)
    sets = []
    try:
        for path in paths:
            sets.append(ddfs.put_blob(path, replicas=replicas, progress=bar.advance))
            bar.note(f"{path}: {len(sets[-1])} copies")
    finally:
        bar.close()
    ddfs.tag(tag, sets, update=update)
    click.echo(f"pushed {len(sets)} blob{'s' * (len(sets) != 1)} to tag://{_name(tag)}",
               err=True)


@_command("chunk")
@click.argument("tag")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-n", "--replicas", type=int, help="Copies of each chunk [DDFS_BLOB_REPLICAS].")
@click.option("-S", "--size", "size_mb", type=float, default=64.0, show_default=True,
              help="Bound on each chunk's stored (compressed) size, in MB.")
@click.option("-Z", "--max-record-size", "record_mb", type=float, default=1.0,
              show_default=True, help="Largest record allowed, in MB.")
@click.option("-u", "--update", is_flag=True, help="Skip chunks the tag holds already.")
@click.pass_context
def chunk(ctx, tag, inputs, replicas, size_mb, record_mb, update):
    """Read INPUTS (paths or URLs) line by line into record-format chunks, store them as
    blobs and add them to TAG; a line is never split between chunks.

    \b
    Example: ddfs chunk data:text ./big.txt -S 16
    """
    from disco.progress import Transfer
    bar = Transfer(f"chunk {_name(tag)}", None, sys.stderr)
    try:
        _, sets = _ddfs(ctx).chunk(tag, list(inputs), replicas=replicas,
                                   chunk_size=int(size_mb * (1 << 20)),
                                   max_record_size=int(record_mb * (1 << 20)), update=update,
                                   progress=bar.advance)
    finally:
        bar.close()
    click.echo(f"stored {len(sets)} chunk{'s' * (len(sets) != 1)} in tag://{_name(tag)}",
               err=True)


def _name(tag: str) -> str:
    from disco.ddfs import tagname
    return tagname(tag)


def _sets_of(ddfs, what: str, ignore_missing: bool = False) -> list:
    """Replica sets of a tag (walking its links), or one URL as a set of one."""
    if "://" in what and not what.startswith("tag://"):
        return [[what]]
    try:
        return ddfs.blobs(what, ignore_missing=ignore_missing)
    except error.DataNotFound:
        _fail(f"tag {_name(what)!r} does not exist")


@_command("blobs")
@click.argument("tags", nargs=-1, required=True)
@click.option("-i", "--ignore-missing", is_flag=True, help="Skip linked tags that are gone.")
@click.option("--json", "as_json", is_flag=True, help="One JSON list of replica sets.")
@click.pass_context
def blobs(ctx, tags, ignore_missing, as_json):
    """Each blob reachable from TAGS: one line of its replica URLs, space-separated."""
    ddfs = _ddfs(ctx)
    out = [s for t in tags for s in _sets_of(ddfs, t, ignore_missing)]
    if as_json:
        click.echo(json.dumps(out))
    else:
        for replicas in out:
            click.echo(" ".join(replicas))


@_command("urls")
@click.argument("tags", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON list of replica sets.")
@click.pass_context
def urls(ctx, tags, as_json):
    """The replica sets TAGS hold themselves (links not followed), one per line."""
    ddfs = _ddfs(ctx)
    out = []
    for t in tags:
        try:
            out += ddfs.urls(t)
        except error.DataNotFound:
            _fail(f"tag {_name(t)!r} does not exist")
    if as_json:
        click.echo(json.dumps(out))
    else:
        for replicas in out:
            click.echo(" ".join(replicas))


def _open_any(replicas):
    """One blob's bytes, checked, from the first replica that has them right."""
    from disco.ddfs import open_blob
    return open_blob(replicas)


@_command("cat")
@click.argument("what", nargs=-1, required=True)
@click.option("-i", "--ignore-missing", is_flag=True, help="Skip linked tags that are gone.")
@click.pass_context
def cat(ctx, what, ignore_missing):
    """The bytes of each blob of TAG (or of URL), trying replicas in turn."""
    ddfs = _ddfs(ctx)
    out = sys.stdout.buffer
    for w in what:
        for replicas in _sets_of(ddfs, w, ignore_missing):
            fd, _, _ = _open_any(replicas)
            try:
                shutil.copyfileobj(fd, out, 1 << 20)
            finally:
                fd.close()
    out.flush()


@_command("xcat")
@click.argument("what", nargs=-1, required=True)
@click.option("-i", "--ignore-missing", is_flag=True, help="Skip linked tags that are gone.")
@click.pass_context
def xcat(ctx, what, ignore_missing):
    """Decode the record-format blobs of TAG (chunks, saved results): KEY<TAB>VALUE lines;
    a chunked line is printed as it was."""
    from disco.worker.task_io import chain_reader
    ddfs = _ddfs(ctx)
    for w in what:
        for replicas in _sets_of(ddfs, w, ignore_missing):
            fd, size, url = _open_any(replicas)
            try:
                for record in chain_reader(fd, size, url):
                    click.echo(_format_record(record), nl=False)
            finally:
                fd.close()


def _format_record(record) -> str:
    key, value = record if isinstance(record, tuple) and len(record) == 2 else (record, None)
    if value is None and isinstance(key, str):
        return key if key.endswith("\n") else key + "\n"
    return f"{key}\t{value}\n"


@_command("ls")
@click.argument("prefixes", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One JSON list of names.")
@click.pass_context
def ls(ctx, prefixes, as_json):
    """Tags whose names start with PREFIX (all tags without one)."""
    ddfs = _ddfs(ctx)
    names = sorted({n for p in (prefixes or ("",)) for n in ddfs.list(p)})
    click.echo(json.dumps(names)) if as_json else [click.echo(n) for n in names]


@_command("tag")
@click.argument("tag")
@click.argument("urls", nargs=-1, required=True)
@click.option("-u", "--update", is_flag=True, help="Skip blobs the tag holds already.")
@click.pass_context
def tag(ctx, tag, urls, update):
    """Add URLS to TAG (creating it). Each URL is one replica set; quote several URLs
    separated by spaces to give one blob's replicas, and use tag://NAME to link a tag."""
    sets = [u.split() for u in urls]
    result = _ddfs(ctx).tag(tag, sets, update=update)
    click.echo(f"tag://{_name(tag)} version {result.get('version')}", err=True)


@_command("put")
@click.argument("tag")
@click.argument("urls", nargs=-1)
@click.pass_context
def put(ctx, tag, urls):
    """Replace TAG's replica sets with URLS (see `ddfs tag`)."""
    _ddfs(ctx).put(tag, [u.split() for u in urls])


@_command("get")
@click.argument("tag")
@click.pass_context
def get(ctx, tag):
    """The tag object as JSON: id, version, last-modified, created, urls, user-data; to a
    caller who may write the tag (it has no write token, or DDFS_WRITE_TOKEN is it) also read-token
    and write-token (null when unset)."""
    click.echo(json.dumps(_get(ctx, tag), indent=1))


def _get(ctx, tag):
    try:
        return _ddfs(ctx).get(tag)
    except error.DataNotFound:
        _fail(f"tag {_name(tag)!r} does not exist")


@_command("stat")
@click.argument("tags", nargs=-1, required=True)
@click.pass_context
def stat(ctx, tags):
    """TAGS' metadata (everything but the URLs) as JSON, one line each."""
    for t in tags:
        obj = _get(ctx, t)
        urls = obj.pop("urls")
        obj["replica-sets"] = len(urls)
        click.echo(json.dumps(obj))


@_command("rm")
@click.argument("tags", nargs=-1, required=True)
@click.pass_context
def rm(ctx, tags):
    """Delete TAGS. Their blobs go once no tag names them, after DDFS_GC_DELAY_S."""
    ddfs = _ddfs(ctx)
    for t in tags:
        try:
            ddfs.delete(t)
        except error.DataNotFound:
            _fail(f"tag {_name(t)!r} does not exist")


@_command("exists")
@click.argument("tag")
@click.pass_context
def exists(ctx, tag):
    """Print True and exit 0 if TAG exists; print False and exit 1 if not."""
    found = _ddfs(ctx).exists(tag)
    click.echo("True" if found else "False")
    sys.exit(0 if found else 1)


@_command("touch")
@click.argument("tags", nargs=-1, required=True)
@click.pass_context
def touch(ctx, tags):
    """Create TAGS, empty, where they do not exist."""
    ddfs = _ddfs(ctx)
    for t in tags:
        ddfs.touch(t)


@_command("cp")
@click.argument("src")
@click.argument("dst")
@click.pass_context
def cp(ctx, src, dst):
    """Add the replica sets of tag SRC to tag DST (no data is copied)."""
    ddfs = _ddfs(ctx)
    ddfs.tag(dst, _get(ctx, src)["urls"])


@_command("attrs")
@click.argument("tag")
@click.pass_context
def attrs(ctx, tag):
    """TAG's attributes as a JSON object."""
    click.echo(json.dumps(_get(ctx, tag)["user-data"]))


@_command("getattr")
@click.argument("tag")
@click.argument("attr")
@click.pass_context
def getattr_(ctx, tag, attr):
    """The value of attribute ATTR of TAG."""
    value = _get(ctx, tag)["user-data"].get(attr)
    if value is None:
        _fail(f"tag {_name(tag)!r} has no attribute {attr!r}")
    click.echo(value)


@_command("setattr")
@click.argument("tag")
@click.argument("attr")
@click.argument("value")
@click.pass_context
def setattr_(ctx, tag, attr, value):
    """Set attribute ATTR of TAG to VALUE (creating the tag)."""
    _ddfs(ctx).setattr(tag, attr, value)


@_command("delattr")
@click.argument("tag")
@click.argument("attr")
@click.pass_context
def delattr_(ctx, tag, attr):
    """Remove attribute ATTR from TAG."""
    try:
        _ddfs(ctx).delattr(tag, attr)
    except error.DataNotFound:
        _fail(f"tag {_name(tag)!r} does not exist")


@_command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def status(ctx, as_json):
    """How DDFS stands: tags, blobs, copies, blobs below k copies, repairs in flight."""
    st = _ddfs(ctx).status()
    if as_json:
        click.echo(json.dumps(st))
        return
    click.echo(f"tags {st['tags']}  blobs {st['blobs']}  copies {st['copies']}  k {st['k']}  "
               f"bytes {st['bytes']}")
    click.echo(f"under-replicated {st['under_replicated']}  repairs in flight "
               f"{st['repairs_in_flight']}  retags in flight {st['retags_in_flight']}")


def main() -> None:
    cli(prog_name="ddfs")


if __name__ == "__main__":
    main()
