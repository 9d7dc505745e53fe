"""Who is master, and in which term: a pure, deterministic rule (SPEC §2, §9).

Theory of operation
-------------------
Each member holds ``(term, master)``. Terms only grow. A master is sticky: while the member we
follow is alive in our view, nothing changes, even when a member with a smaller name joins.
When there is no master, or ours is no longer alive, the alive member with the smallest name
is the candidate. Only the candidate acts: it claims ``term + 1`` for itself. Everyone else waits
for that claim, which reaches them piggybacked on gossip (``Claim``). A claim is adopted when
its term is higher than ours, or equal with a smaller master name (two simultaneous claims
resolve the same way everywhere).

A member started with seeds does not claim anything before it has heard from the cluster, so
a joining node can never found a second cluster by racing its seed. Every command a master
sends carries its term; members refuse commands whose term is older than the newest they know
(``accepts``).

This rule elects a single master whenever gossip has converged; under a network partition each
side may elect its own. The quorum election that rules that out replaces this module (issue 4).

Events in: ``View(alive, heard_cluster)``, ``Claim(term, master)``. Actions out:
``MasterChanged(term, master, previous)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import singledispatchmethod


@dataclass(frozen=True)
class View:
    alive: tuple  # names of the members alive (or suspect) in our view, ourselves included
    heard_cluster: bool


@dataclass(frozen=True)
class Claim:
    term: int
    master: str


@dataclass(frozen=True)
class MasterChanged:
    term: int
    master: str | None
    previous: str | None


class Election:
    def __init__(self, name: str, founder: bool, term: int = 0):
        self.name, self.founder = name, founder
        self.term, self.master = term, None
        self._out: list = []

    @property
    def is_master(self) -> bool:
        return self.master == self.name

    def step(self, event) -> list:
        self._out = []
        self._on(event)
        return self._out

    def accepts(self, term: int) -> bool:
        """May a command sent in ``term`` be carried out?"""
        return term >= self.term

    @singledispatchmethod
    def _on(self, event):
        raise TypeError(f"election has no handler for {type(event).__name__}")

    @_on.register
    def _(self, ev: View):
        if self.master is not None and self.master in ev.alive:
            return
        if self.master is not None:
            self._change(self.term, None)  # our master is gone; wait for (or make) a claim
        if not ev.alive or min(ev.alive) != self.name:
            return
        if self.founder or ev.heard_cluster:
            self._change(self.term + 1, self.name)

    @_on.register
    def _(self, ev: Claim):
        newer = ev.term > self.term
        tie = ev.term == self.term and (self.master is None or ev.master < self.master)
        if newer or tie:
            self._change(ev.term, ev.master)

    def _change(self, term: int, master: str | None) -> None:
        if (term, master) != (self.term, self.master):
            self._out.append(MasterChanged(term, master, self.master))
            self.term, self.master = term, master

    def check_invariants(self) -> None:
        assert self.term >= 0
        assert self.master is None or self.term > 0
