"""``job.wait(show=True)``, ``disco wait --show``: per-stage progress and the job's messages.

On a terminal, a live display (``rich``): one bar per stage with done/total, running and
failed counts and the elapsed time, and the job's notable events (failures as they happen)
printed above it. Elsewhere (a pipe, a log file), plain lines: one whenever a stage's counts
change, plus the notable events. ``note(text)`` says something about the wait itself (the
master changed).
"""
from __future__ import annotations

import time

SHOWN = ("task_failed", "task_message", "task_requeued", "job_failed", "job_killed",
         "stage_done", "job_done", "master_changed")
ENDS = ("job_done", "job_failed", "job_killed")


def _event_line(job: str, event: dict) -> str:
    where = f" [{event['node']}]" if event.get("node") else ""
    return f"{job}: {event['type']}{where}: {event['msg']}"


class Progress:
    """Prints progress to ``out``; call ``show(reply)`` with each events reply, then
    ``close()``."""

    def __init__(self, job: str, out, live: bool | None = None):
        self.job, self.out = job, out
        self._last: dict = {}
        self._start = time.monotonic()
        if live is None:
            live = hasattr(out, "isatty") and out.isatty()
        self._live = _Live(job, out) if live else None

    def show(self, reply: dict) -> None:
        shown = [e for e in reply["events"] if e["type"] in SHOWN]
        # the job's end is said last, after the counts that led to it
        for event in (e for e in shown if e["type"] not in ENDS):
            self._print(_event_line(self.job, event))
        self._counts(reply.get("counts", {}))
        for event in (e for e in shown if e["type"] in ENDS):
            self._print(_event_line(self.job, event))
        self.out.flush()

    def _counts(self, counts: dict) -> None:
        if self._live is not None:
            self._live.update(counts)
            return
        for stage, c in counts.items():
            if c != self._last.get(stage):
                self._last[stage] = dict(c)
                total = sum(c[k] for k in ("pending", "running", "done"))
                self._print(f"{self.job}: {stage} {c['done']}/{total} done, "
                            f"{c['running']} running, {c['failed']} failed "
                            f"({time.monotonic() - self._start:.1f} s)")

    def note(self, text: str) -> None:
        self._print(f"{self.job}: {text}")

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()

    def _print(self, line: str) -> None:
        if self._live is not None:
            self._live.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.out)


class _Live:
    """The rich display: one task per stage, its fields the running and failed counts."""

    def __init__(self, job: str, out):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bars,
                                   TextColumn, TimeElapsedColumn)
        self.console = Console(file=out)
        self.bars = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TextColumn("{task.fields[running]} running, {task.fields[failed]} "
                                    "failed"), TimeElapsedColumn(), console=self.console,
                         transient=False, refresh_per_second=4)
        self.stages: dict[str, int] = {}
        self.job = job
        self.bars.start()

    def update(self, counts: dict) -> None:
        for stage, c in counts.items():
            total = sum(c[k] for k in ("pending", "running", "done"))
            if stage not in self.stages:
                self.stages[stage] = self.bars.add_task(f"{self.job} {stage}", total=total,
                                                        running=0, failed=0)
            self.bars.update(self.stages[stage], total=total, completed=c["done"],
                             running=c["running"], failed=c["failed"])

    def stop(self) -> None:
        self.bars.stop()


class Transfer:
    """Bytes moving (``ddfs push``, ``ddfs chunk``): a live bar with the rate on a terminal,
    nothing in between elsewhere (callers print a line per file). ``total`` None: unknown."""

    def __init__(self, label: str, total: int | None, out, live: bool | None = None):
        if live is None:
            live = hasattr(out, "isatty") and out.isatty()
        self._bars = None
        if live:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress as Bars,
                                       TextColumn, TimeElapsedColumn, TransferSpeedColumn)
            self._bars = Bars(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                              TransferSpeedColumn(), TimeElapsedColumn(),
                              console=Console(file=out), refresh_per_second=4)
            self._task = self._bars.add_task(label, total=total)
            self._bars.start()
        self.done = 0

    def advance(self, n: int) -> None:
        self.done += n
        if self._bars is not None:
            self._bars.update(self._task, advance=n)

    def note(self, text: str) -> None:
        if self._bars is not None:
            self._bars.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        if self._bars is not None:
            self._bars.stop()
