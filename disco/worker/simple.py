"""Disco's simple worker: a job whose stages are its own methods (see ``disco.job.SimpleJob``)."""
from __future__ import annotations

from disco.worker.pipeline.worker import Worker as _PipelineWorker

__all__ = ["Worker"]


class Worker(_PipelineWorker):
    """The worker of ``SimpleJob``: calls the job's method named after the stage."""
