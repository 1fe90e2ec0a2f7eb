"""Executors: how steps run."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from reinv_bench.contract.config import Configurable

if TYPE_CHECKING:
    pass


class Executor(Configurable):
    """Runs steps: ``submit(fn, *args)`` returns a ``concurrent.futures.Future`` of ``fn(*args)``.

    ``fn`` is a top-level function of picklable arguments (``reinv_bench.engine.steps.run_step`` /
    ``run_cell`` with a ``Step`` or ``Cell`` and an ``Env``), so any process that has
    reinv-bench and the same plugins installed can run it. The driver keeps at most ``slots``
    submissions in flight and alone writes the results database; each step writes its artifact.
    Options are declared ``Param``s, given as ``--executor "NAME[key=value]"``.
    """

    slots: int = 1  # submissions the driver keeps in flight

    def start(self, env: Any) -> None:
        """Called once before the first submission with the run's ``reinv_bench.engine.steps.Env``."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        raise NotImplementedError

    def lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the worker died (killed, out of memory, node lost): the driver
        then retries the step once before failing the cells that depend on it."""
        return False

    def close(self, cancel: bool = False) -> None:
        """Release workers; ``cancel``: stop what is running now (Ctrl-C, an error)."""
