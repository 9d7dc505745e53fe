"""``job.wait(show=True)`` and ``disco wait --show``: per-stage progress and job messages."""
from __future__ import annotations

import time

SHOWN = ("task_failed", "task_message", "task_requeued", "job_failed", "job_killed",
         "stage_done", "job_done")


class Progress:
    """Prints a line whenever a stage's counts change, plus the job's notable events."""

    def __init__(self, job: str, out):
        self.job, self.out = job, out
        self._last: dict = {}
        self._start = time.monotonic()

    def show(self, reply: dict) -> None:
        for event in reply["events"]:
            if event["type"] in SHOWN:
                where = f" [{event['node']}]" if event.get("node") else ""
                print(f"{self.job}: {event['type']}{where}: {event['msg']}", file=self.out)
        for stage, counts in reply.get("counts", {}).items():
            if counts != self._last.get(stage):
                self._last[stage] = dict(counts)
                total = sum(counts[k] for k in ("pending", "running", "done"))
                print(f"{self.job}: {stage} {counts['done']}/{total} done, "
                      f"{counts['running']} running, {counts['failed']} failed "
                      f"({time.monotonic() - self._start:.1f} s)", file=self.out)
        self.out.flush()
