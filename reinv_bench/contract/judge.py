"""Judges: independent judges of attack success."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from reinv_bench.contract.config import Configurable
from reinv_bench.contract.data import Scenario
from reinv_bench.contract.docs import docstring

if TYPE_CHECKING:
    from reinv_bench.contract.metric import EvalContext


@dataclass(frozen=True)
class Verdicts:
    """A judge's answers for one cell: ``answers[i]`` for reconstruction i of ``ctx.inversion``
    (True: yes, False: no, None: no answer); ``note``: how it decided, in one line (threshold and
    measured rates, model name), stored with the row."""

    answers: list[bool | None]
    note: str = ""


class Judge(Configurable):
    """Answers, per reconstruction, "does it show the same identity (digit, object) as the private
    images of its class?" without the target or the evaluation model (``reinv_bench.results.judging``
    stores the answers and derives the leaderboard's confirmed accuracy and the evaluation model's
    false-positive rate). Options are declared ``Param``s: ``--judge "NAME[key=value]"``.
    ``external``: the answers come from outside the run (people: ``reinv-bench judge import``)
    and ``judge`` is never called."""

    external: ClassVar[bool] = False
    # the Params that say how answers are fetched, not what they are (an endpoint's URL, timeouts,
    # retries, a rate): kept out of the cell's identity and the column's label
    transport: ClassVar[tuple[str, ...]] = ()

    def check(self, scenario: Scenario | None) -> dict[str, Any]:
        """At plan time (``scenario`` None: once per request, else once per scenario): raise a
        one-line ``ConfigError``/``ValueError`` when the judge cannot work; return the values it
        reads from elsewhere (the environment) that belong to its identity, ``{param: value}``
        (default: none)."""
        return {}

    def weights(self, scenario: Scenario) -> tuple[str, ...]:
        """The registered weights files the judge reads on ``scenario`` (the dry run's checklist
        lists those missing; default: none)."""
        return ()

    def public_arch(self, scenario: Scenario) -> str | None:
        """The architecture of a classifier the judge wants trained on ``scenario``'s labelled
        public data (``ScenarioData.pretrain``, disjoint from the private data: a cached
        ``pretrain`` step, the one TL-DMI starts from), handed to ``judge`` as
        ``ctx.public_model``; None (default): none."""
        return None

    def judge(self, ctx: EvalContext) -> Verdicts:
        """One answer per reconstruction of ``ctx.inversion`` (``ctx.inversion.map(fn)``: ``fn`` of
        each chunk of reconstructions, concatenated). Never reads ``ctx.target`` or
        ``ctx.eval_model``. Raise when it cannot answer at all: the cell stores null with the reason."""
        raise NotImplementedError

    def protocol_note(self, scenario: Scenario) -> str:
        """What the judge does on ``scenario``, for its protocol card (default: the docstring's
        first paragraph)."""
        return " ".join(docstring(self).split("\n\n")[0].split())
