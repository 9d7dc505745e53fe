"""disco.job.JobChain without a cluster: which jobs it runs and how it reports a failure."""
from __future__ import annotations

import pytest

from disco.error import JobError
from disco.job import JobChain


class FakeJob:
    """What JobChain uses of a Job: ``name``, ``run``, ``results``, ``wait``."""

    def __init__(self, name=None, status="ready"):
        self.name, self.status, self.runs = name, status, 0

    def run(self, input=None):
        self.runs += 1
        self.name = f"Fake@{self.runs}"
        return self

    def results(self):
        return self.status, []

    def wait(self, timeout=None, **_):
        if self.status == "dead":
            raise JobError(self.name, "ValueError: the task's own error")
        return []


def test_wait_does_not_run_again_a_job_that_ran():
    a, b = FakeJob(), FakeJob()
    JobChain({a: ["raw://x"], b: ["raw://y"]}).wait(poll_interval=0)
    assert (a.runs, b.runs) == (1, 1)
    JobChain({a: ["raw://x"], b: ["raw://y"]}).wait(poll_interval=0)  # Disco's test_waitmany
    assert (a.runs, b.runs) == (1, 1)


def test_a_failed_job_reports_its_task_error():
    with pytest.raises(JobError, match="the task's own error"):
        JobChain({FakeJob(status="dead"): ["raw://x"]}).wait(poll_interval=0)
