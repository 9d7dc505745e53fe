"""The ``ddfs`` command (SPEC §6).

DDFS, the replicated tag/blob store, is not in this release yet: every subcommand is listed so
that ``ddfs --help`` shows the plan, and each one says clearly that it is not available rather
than pretending to work.
"""
from __future__ import annotations

import sys

import click

SUBCOMMANDS = ("push", "chunk", "blobs", "cat", "xcat", "ls", "tag", "get", "rm", "exists",
               "attrs", "getattr", "setattr", "delattr", "urls", "cp", "touch", "stat")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """DDFS: the replicated tag/blob store (not in this release yet)."""


def _unavailable(name: str):
    @click.argument("args", nargs=-1)
    def command(args):
        click.echo(f"ddfs: error: `ddfs {name}` needs DDFS, which this release does not have "
                   "yet; job inputs can be paths, file://, raw://, http(s):// or disco:// URLs",
                   err=True)
        sys.exit(1)
    command.__doc__ = f"(not in this release) ddfs {name}"
    cli.command(name, context_settings={"ignore_unknown_options": True})(command)


for _name in SUBCOMMANDS:
    _unavailable(_name)


def main() -> None:
    cli(prog_name="ddfs")


if __name__ == "__main__":
    main()
