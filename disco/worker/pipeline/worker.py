"""Disco 0.5's pipeline model: a job as a list of ``(grouping, Stage)`` pairs.

Use it by giving a job a ``pipeline``::

    from disco.core import Job
    from disco.worker.pipeline.worker import Stage

    def split_words(interface, state, label, inp):
        out = interface.output(0)
        for line in inp:
            for word in line.split():
                out.add(word, 1)

    def count(interface, state, label, inp):
        out = interface.output(0)
        for word, ones in kvgroup(inp):
            out.add(word, sum(ones))

    class WordCount(Job):
        pipeline = [("split", Stage("map", process=split_words)),
                    ("group_label", Stage("reduce", process=count, combine=True, sort=True))]

Each stage's tasks are made by its grouping (``split``: one task per input; ``group_label``:
one per label; ``group_node``: one per node holding inputs; ``group_node_label``: one per node
and label; ``group_all``: one task) from the outputs of the stage before it, the first stage's
from the job's inputs (label 0 each). A task calls, in order: ``state = init(interface,
params)``; for each label that ``input_hook(state, labels)`` returns, ``process(interface,
state, label, inp)`` once per input with that label, or once over all of them concatenated
when the stage has ``combine=True`` (sorted by key with ``sort=True``); then ``done(interface,
state)``. ``interface.output(label).add(key, value)`` writes the task's output of that label;
those outputs are the next stage's inputs, or the job's results after the last stage.

The first stage reads its inputs with the default reader (lines, or the records of an earlier
job's results); later stages read records, ``(key, value)`` pairs. A stage's ``input_chain``
and ``output_chain`` replace those, as in Disco.
"""
from __future__ import annotations

from collections import namedtuple

__all__ = ["DiscoTask", "Stage", "TaskInfo", "Worker", "input_hook"]

GROUPINGS = ("split", "group_label", "group_node", "group_node_label", "group_all")

TaskInfo = namedtuple("TaskInfo", ["jobname", "host", "stage", "group", "label"])
DiscoTask = namedtuple("DiscoTask", ["output"])


def input_hook(state, input_labels):
    """The default order of a task's input labels: ascending."""
    return sorted(input_labels)


class Stage:
    """One stage of a pipeline: the functions its tasks call (see the module's docstring)."""

    def __init__(self, name: str = "", init=None, process=None, done=None,
                 input_hook=input_hook, input_chain=(), output_chain=(), combine: bool = False,
                 sort: bool = False):
        self.name = name
        self.init, self.process, self.done = init, process, done
        self.input_hook = input_hook
        self.input_chain, self.output_chain = list(input_chain), list(output_chain)
        self.combine, self.sort = bool(combine or sort), bool(sort)
        self.taskinfo: TaskInfo | None = None  # set in the task, before init is called

    def __repr__(self) -> str:
        return f"Stage({self.name!r})"

    def _callables(self) -> list:
        return [f for f in (self.init, self.input_hook, self.process, self.done,
                            *self.input_chain, *self.output_chain) if callable(f)]


class Worker:
    """The pipeline worker: a job whose ``worker`` is ``Worker()`` (or that has a ``pipeline``)
    runs its pipeline. ``Worker(pipeline=[...])`` also carries the pipeline itself."""

    group_ops = set(GROUPINGS)

    def __init__(self, **defaults):
        self.defaults = defaults

    def __repr__(self) -> str:
        return "disco.worker.pipeline.worker.Worker()"


def check(pipeline) -> list:
    """``pipeline`` as ``[(grouping, Stage), ...]``, or a ``UsageError`` saying what is wrong."""
    from disco.error import UsageError
    if not isinstance(pipeline, (list, tuple)) or not pipeline:
        raise UsageError("a pipeline is a non-empty list of (grouping, Stage) pairs")
    out, names = [], set()
    for item in pipeline:
        if not isinstance(item, (list, tuple)) or len(item) not in (2, 3) \
                or not isinstance(item[1], Stage):
            raise UsageError(f"a pipeline item is (grouping, Stage(...)), not {item!r:.80}")
        grouping, stage = item[0], item[1]
        if grouping not in GROUPINGS:
            raise UsageError(f"stage {stage.name!r}: unknown grouping {grouping!r}; one of "
                             f"{', '.join(GROUPINGS)}")
        if not stage.name or not all(c.isalnum() or c in "_-" for c in stage.name):
            raise UsageError(f"stage name {stage.name!r} must be letters, digits, '_' or '-'")
        if stage.name in names:
            raise UsageError(f"stage {stage.name!r} appears twice; stage names must be unique")
        names.add(stage.name)
        out.append((grouping, stage, bool(item[2]) if len(item) == 3 else False))
    return out
